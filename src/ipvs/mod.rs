//! IPVS mode, one pipeline stage per file:
//!
//! - `planner`: cluster state → the desired virtual servers, kube-ipvs0
//!   addresses and ipset members (pure), with `sets` (the ipsets) and
//!   `rules` (the companion iptables chains that match them);
//! - `live`: the snapshot of the kernel the diff compares against;
//! - `diff` → `ops`: the operations that turn the snapshot into the plan;
//! - `apply`: runs them through the kernel adapters;
//! - `proxier`: one sync (or dry run, or cleanup) from end to end;
//! - `render`: `ipvsadm -Ln` text for a table.

pub(crate) mod apply;
pub(crate) mod diff;
pub(crate) mod live;
pub(crate) mod ops;
pub mod planner;
pub mod proxier;
pub(crate) mod render;
pub mod rules;
pub mod sets;

pub use diff::{Changes, Ownership, changes, diff};
pub use live::{Companions, LiveState};
pub use ops::Op;
pub use planner::{DUMMY_LINK, IpvsPlan, NodeContext, PlanConfig, plan};
pub use proxier::IpvsProxier;

#[cfg(test)]
mod companions_tests;

#[cfg(test)]
mod diff_tests;

#[cfg(test)]
mod planner_tests;

#[cfg(test)]
mod proxier_tests;
