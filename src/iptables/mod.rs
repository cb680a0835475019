//! iptables mode (upstream's chain layout), one pipeline stage per file:
//!
//! - `planner`: cluster state → the chains upstream's iptables mode would
//!   program, for one family (pure), with `service_port` building each
//!   Service port's rules;
//! - `live`: the reader, what a sync compares against (`iptables-save`
//!   for full syncs and dry runs, the canary chains for partial ones);
//! - `diff`: plan against that → the restore plan (pure);
//! - `apply`: one `iptables-restore --noflush` transaction per family, and
//!   what it leaves for the next sync;
//! - `proxier`: one sync (or dry run, or cleanup) from end to end.
//!
//! Each sync, per family:
//!
//! - Full sync (first sync, periodic resync, after a failure, or when the
//!   canary chain has vanished, meaning someone flushed the tables): every
//!   chain kproxy owns is written.
//! - Partial sync: the top-level chains, plus the chains of the Services
//!   that changed; no dump of the ruleset.
//! - Per-Service chains that the plan no longer has are flushed and
//!   deleted, and missing jumps from the built-in chains are inserted
//!   (never by flushing a built-in chain).
//!
//! Only chains named KUBE-* that this mode owns are ever written or deleted;
//! an operator's own chains and rules are left alone.

pub mod apply;
pub mod diff;
pub mod live;
pub mod plan_cache;
pub mod planner;
pub mod proxier;
mod service_port;

pub use diff::{Changes, Drift, diff};
pub use live::{Live, SyncMode};
pub use proxier::{AddressSource, IptablesProxier};

#[cfg(test)]
mod diff_tests;

#[cfg(test)]
mod localhost_tests;

#[cfg(test)]
mod plan_cache_tests;
#[cfg(test)]
mod proxier_staged_tests;
#[cfg(test)]
mod proxier_tests;
