//! What the two modes' iptables rules share: the rule-text model and its
//! comparison with `iptables-save`, the chain names, the chains and jumps
//! both modes write, local-traffic detection, and removal of chains.
//! `ipvs/` and `iptables/` both stand on this; neither imports the other.

pub mod chains;
pub mod cleanup;
pub mod conntrack;
pub(crate) mod local;
pub(crate) mod ruleset;
pub(crate) mod staged;
