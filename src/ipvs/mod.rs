//! IPVS mode: planner and diff.
