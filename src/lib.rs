//! kproxy: Kubernetes Services to kernel load-balancing state.
//!
//! Pipeline: `source` → `cluster` (validated model) → planner (`ipvs` or
//! `iptables`, pure) → diff against a snapshot of the live kernel → ops →
//! `kernel` adapters. `sync` runs it.

pub mod app;
pub mod cluster;
pub mod config;
pub mod events;
pub mod http;
pub mod iptables;
pub mod ipvs;
pub mod kernel;
pub mod logging;
pub mod net;
pub mod netfilter;
pub mod source;
pub mod sync;

#[cfg(test)]
mod testing;
