//! iptables mode: planner, rule rendering and diff (upstream's chain layout).
