//! iptables mode: planner and proxier (upstream's chain layout).
//!
//! Each sync, per family: plan the desired chains, read the live nat, filter
//! and mangle tables with `iptables-save`, decide what to write, and apply it
//! in one `iptables-restore --noflush` transaction.
//!
//! - Full sync (first sync, periodic resync, after a failure, or when the
//!   canary chain has vanished, meaning someone flushed the tables): every
//!   chain kproxy owns is written.
//! - Partial sync: the top-level chains, plus the chains of the Services that
//!   changed, plus those of any Service whose chains in the kernel differ
//!   from the plan (edited or deleted by hand: drift).
//! - Either way, per-Service chains in the kernel that the plan no longer
//!   has are flushed and deleted, and missing jumps from the built-in chains
//!   are inserted (never by flushing a built-in chain).
//!
//! Only chains named KUBE-* that this mode owns are ever written or deleted;
//! an operator's own chains and rules are left alone.

pub mod planner;
pub mod proxier;

pub use proxier::{AddressSource, IptablesProxier};

#[cfg(test)]
mod proxier_tests;
