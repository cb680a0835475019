//! Kernel adapters: the only code that talks to the kernel.
//!
//! Every adapter sits behind a small trait so that the planner/diff/sync code
//! can be exercised against an in-memory twin that behaves like the kernel
//! (it refuses what the kernel refuses), and so that the real adapter stays
//! thin: encode, send, decode, report.

pub mod conntrack;
pub mod conntrack_sysctl;
pub mod ipset;
pub mod ipset_netlink;
pub mod iptables;
pub mod ipvs;
pub mod link;
pub mod modules;
pub mod netlink;
pub mod sysctl;

use std::fmt;

/// An error from a kernel adapter: what was attempted and why it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct KernelError {
    /// What was attempted, e.g. `add virtual server TCP 10.96.0.1:443`.
    pub op: String,
    /// The kernel's (or tool's) errno, when there is one.
    pub errno: Option<i32>,
    /// Human-readable reason.
    pub reason: String,
}

impl KernelError {
    pub fn new(op: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            op: op.into(),
            errno: None,
            reason: reason.into(),
        }
    }

    pub fn errno(op: impl Into<String>, errno: i32) -> Self {
        let reason = std::io::Error::from_raw_os_error(errno).to_string();
        Self {
            op: op.into(),
            errno: Some(errno),
            reason,
        }
    }

    /// The error the kernel reports when a module or family is missing.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self.errno,
            Some(libc::ENOENT) | Some(libc::EPROTONOSUPPORT) | Some(libc::EAFNOSUPPORT)
        )
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.reason)
    }
}
