//! What the two modes' iptables rules share.

pub mod local;
