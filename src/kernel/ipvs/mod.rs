//! IPVS: the types shared by the planner, the diff and the adapters, the
//! `Ipvs` trait, and its implementations (the generic-netlink client and an
//! in-memory twin).
//!
//! - `wire`: the generic-netlink IPVS messages and attributes, bytes only;
//! - `mapping`: between those and the types here;
//! - `netlink`: the client, request builders over `crate::kernel::netlink`;
//! - `twin`: the in-memory twin.

pub mod mapping;
pub mod netlink;
pub mod twin;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use super::KernelError;
pub use crate::net::Protocol;

/// `IP_VS_SVC_F_PERSISTENT` from `linux/ip_vs.h`.
pub const SVC_F_PERSISTENT: u32 = 0x0001;
/// `IP_VS_SVC_F_HASHED`: set by the kernel on every listed service.
pub const SVC_F_HASHED: u32 = 0x0002;

/// Identity of a virtual server: what `ipvsadm -A -t ADDR:PORT` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub addr: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{} {}:{}", self.protocol, a, self.port),
            IpAddr::V6(a) => write!(f, "{} [{}]:{}", self.protocol, a, self.port),
        }
    }
}

/// Persistence ("sticky" scheduling): what sessionAffinity ClientIP becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Persistence {
    /// Seconds a client stays on its real server after its last connection.
    pub timeout: u32,
    /// Netmask applied to the client address (0xffffffff for IPv4, 128 for IPv6).
    pub netmask: u32,
}

/// A virtual server's settings (everything but its real servers).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VirtualServer {
    pub key: ServiceKey,
    /// Scheduler name as the kernel knows it: rr, wrr, lc, sh, mh, ...
    pub scheduler: String,
    pub persistence: Option<Persistence>,
    /// Scheduler flags (IP_VS_SVC_F_SCHED1..3), e.g. for `sh`/`mh`.
    pub sched_flags: u32,
}

impl VirtualServer {
    /// The `flags` word sent to the kernel (without `HASHED`, which the kernel owns).
    pub fn flags(&self) -> u32 {
        let mut f = self.sched_flags;
        if self.persistence.is_some() {
            f |= SVC_F_PERSISTENT;
        }
        f
    }
}

/// How packets reach a real server. kproxy only ever programs `Masq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ForwardMethod {
    Masq,
    Local,
    Tunnel,
    Route,
    Bypass,
}

impl ForwardMethod {
    /// `IP_VS_CONN_F_*` value.
    pub fn as_flag(self) -> u32 {
        match self {
            ForwardMethod::Masq => 0,
            ForwardMethod::Local => 1,
            ForwardMethod::Tunnel => 2,
            ForwardMethod::Route => 3,
            ForwardMethod::Bypass => 4,
        }
    }

    pub fn from_flag(v: u32) -> Self {
        match v & 0x7 {
            1 => ForwardMethod::Local,
            2 => ForwardMethod::Tunnel,
            3 => ForwardMethod::Route,
            4 => ForwardMethod::Bypass,
            _ => ForwardMethod::Masq,
        }
    }

    /// As `ipvsadm -Ln` prints it.
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            ForwardMethod::Masq => "Masq",
            ForwardMethod::Local => "Local",
            ForwardMethod::Tunnel => "Tunnel",
            ForwardMethod::Route => "Route",
            ForwardMethod::Bypass => "Bypass",
        }
    }
}

/// Identity of a real server within its virtual server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestKey {
    pub addr: IpAddr,
    pub port: u16,
}

impl fmt::Display for DestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{}:{}", a, self.port),
            IpAddr::V6(a) => write!(f, "[{}]:{}", a, self.port),
        }
    }
}

/// A real server (IPVS "destination").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RealServer {
    pub key: DestKey,
    pub weight: u32,
    pub forward: ForwardMethod,
}

/// Live counters the kernel reports with a destination; never desired state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestStats {
    pub active_conns: u32,
    pub inactive_conns: u32,
}

/// One virtual server with its real servers, as desired or as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub service: VirtualServer,
    pub dests: BTreeMap<DestKey, RealServer>,
    /// Counters as read from the kernel (empty for desired state).
    pub stats: BTreeMap<DestKey, DestStats>,
}

impl ServiceEntry {
    pub fn new(service: VirtualServer) -> Self {
        Self {
            service,
            dests: BTreeMap::new(),
            stats: BTreeMap::new(),
        }
    }
}

/// A whole IPVS table (desired or live).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpvsTable {
    pub services: BTreeMap<ServiceKey, ServiceEntry>,
}

/// Kernel-wide IPVS connection timeouts (`ipvsadm --set tcp tcpfin udp`), seconds;
/// 0 means "leave as is".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

/// One change to the IPVS table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpvsOp {
    AddService(VirtualServer),
    EditService(VirtualServer),
    DelService(ServiceKey),
    AddDest(ServiceKey, RealServer),
    EditDest(ServiceKey, RealServer),
    DelDest(ServiceKey, DestKey),
}

impl fmt::Display for IpvsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpvsOp::AddService(vs) => write!(f, "add virtual server {} {}", vs.key, describe(vs)),
            IpvsOp::EditService(vs) => {
                write!(f, "edit virtual server {} {}", vs.key, describe(vs))
            }
            IpvsOp::DelService(k) => write!(f, "delete virtual server {k}"),
            IpvsOp::AddDest(k, rs) => write!(
                f,
                "add real server {} -> {} {} weight {}",
                k,
                rs.key,
                rs.forward.ipvsadm_name(),
                rs.weight
            ),
            IpvsOp::EditDest(k, rs) => write!(
                f,
                "edit real server {} -> {} {} weight {}",
                k,
                rs.key,
                rs.forward.ipvsadm_name(),
                rs.weight
            ),
            IpvsOp::DelDest(k, d) => write!(f, "delete real server {k} -> {d}"),
        }
    }
}

fn describe(vs: &VirtualServer) -> String {
    match vs.persistence {
        Some(p) => format!("{} persistent {}", vs.scheduler, p.timeout),
        None => vs.scheduler.clone(),
    }
}

/// The IPVS kernel boundary.
///
/// `apply` gets a whole batch so that a real implementation can pipeline it
/// over one socket; it returns one result per operation, in order, and keeps
/// going after a failure (one refused object must not stop the others).
pub trait Ipvs: Send {
    /// Every virtual server with its real servers.
    fn dump(&mut self) -> Result<IpvsTable, KernelError>;
    fn apply(&mut self, ops: &[IpvsOp]) -> Vec<Result<(), KernelError>>;
    /// Remove every virtual server (`ipvsadm -C`). Only for tests and drills:
    /// kproxy itself deletes only what it owns.
    fn flush(&mut self) -> Result<(), KernelError>;
    fn set_timeouts(&mut self, t: Timeouts) -> Result<(), KernelError>;
    fn timeouts(&mut self) -> Result<Timeouts, KernelError>;
}

/// A shared adapter (tests keep a handle to look inside a twin, or to make drift).
impl<T: Ipvs> Ipvs for std::sync::Arc<std::sync::Mutex<T>> {
    fn dump(&mut self) -> Result<IpvsTable, KernelError> {
        self.lock().unwrap().dump()
    }
    fn apply(&mut self, ops: &[IpvsOp]) -> Vec<Result<(), KernelError>> {
        self.lock().unwrap().apply(ops)
    }
    fn flush(&mut self) -> Result<(), KernelError> {
        self.lock().unwrap().flush()
    }
    fn set_timeouts(&mut self, t: Timeouts) -> Result<(), KernelError> {
        self.lock().unwrap().set_timeouts(t)
    }
    fn timeouts(&mut self) -> Result<Timeouts, KernelError> {
        self.lock().unwrap().timeouts()
    }
}

#[cfg(test)]
mod tests;
