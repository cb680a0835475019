//! The diff: desired IPVS-mode state vs a snapshot of the live kernel → the
//! smallest ordered list of operations. Pure.
//!
//! Ownership: kproxy deletes a virtual server only when it sits on an address
//! bound to kube-ipvs0 (or one it is about to bind), or on a node address
//! with a port in the NodePort range, and never inside `--ipvs-exclude-cidrs`.
//! Everything else in the table belongs to someone else and is left alone.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::planner::{DUMMY_LINK, IpvsPlan};
use crate::kernel::ipvs::{IpvsOp, IpvsTable, ServiceEntry, ServiceKey, VirtualServer};

/// What was read from the kernel before a sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveState {
    pub table: IpvsTable,
    pub link_exists: bool,
    /// Addresses on kube-ipvs0.
    pub bound: BTreeSet<IpAddr>,
    /// The node's own addresses (kube-ipvs0's excluded).
    pub node_addresses: BTreeSet<IpAddr>,
}

/// Which live objects kproxy may change or delete.
#[derive(Clone, Debug)]
pub struct Ownership {
    pub nodeport_range: (u16, u16),
    pub exclude: Vec<IpNet>,
}

impl Default for Ownership {
    fn default() -> Self {
        Self {
            nodeport_range: (30000, 32767),
            exclude: Vec::new(),
        }
    }
}

impl Ownership {
    pub fn excluded(&self, a: &IpAddr) -> bool {
        self.exclude.iter().any(|c| c.contains(a))
    }

    /// Whether a live virtual server is kproxy's to change or delete.
    pub fn owns(&self, key: &ServiceKey, live: &LiveState, desired: &IpvsPlan) -> bool {
        if self.excluded(&key.addr) {
            return false;
        }
        let (lo, hi) = self.nodeport_range;
        live.bound.contains(&key.addr)
            || desired.bound.contains(&key.addr)
            || (live.node_addresses.contains(&key.addr) && (lo..=hi).contains(&key.port))
    }
}

/// One change to the IPVS-mode kernel state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    CreateLink,
    AddAddress(IpAddr),
    Ipvs(IpvsOp),
    DelAddress(IpAddr),
}

impl Op {
    /// A stable name for metrics (`kproxy_kernel_operations_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::CreateLink => "create_link",
            Op::AddAddress(_) => "add_address",
            Op::DelAddress(_) => "delete_address",
            Op::Ipvs(IpvsOp::AddService(_)) => "add_virtual_server",
            Op::Ipvs(IpvsOp::EditService(_)) => "edit_virtual_server",
            Op::Ipvs(IpvsOp::DelService(_)) => "delete_virtual_server",
            Op::Ipvs(IpvsOp::AddDest(..)) => "add_real_server",
            Op::Ipvs(IpvsOp::EditDest(..)) => "edit_real_server",
            Op::Ipvs(IpvsOp::DelDest(..)) => "delete_real_server",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateLink => write!(f, "create dummy link {DUMMY_LINK}"),
            Op::AddAddress(a) => write!(f, "add address {a} to {DUMMY_LINK}"),
            Op::DelAddress(a) => write!(f, "delete address {a} from {DUMMY_LINK}"),
            Op::Ipvs(op) => op.fmt(f),
        }
    }
}

/// Settings equal as far as kproxy cares (the kernel adds HASHED, and
/// counters are not settings).
fn same_settings(a: &VirtualServer, b: &VirtualServer) -> bool {
    a.scheduler == b.scheduler && a.persistence == b.persistence && a.sched_flags == b.sched_flags
}

/// The operations that turn `live` into `desired`, in the order they must run:
/// link, addresses, virtual servers, real servers on the way up; real
/// servers, virtual servers, addresses on the way down.
pub fn diff(desired: &IpvsPlan, live: &LiveState, own: &Ownership) -> Vec<Op> {
    let mut up_link = Vec::new();
    let mut up_addrs = Vec::new();
    let mut up_services = Vec::new();
    let mut up_dests = Vec::new();
    let mut down_dests = Vec::new();
    let mut down_services = Vec::new();
    let mut down_addrs = Vec::new();

    if !live.link_exists && !desired.bound.is_empty() {
        up_link.push(Op::CreateLink);
    }
    // A re-created link has lost its addresses.
    let bound_now: &BTreeSet<IpAddr> = if live.link_exists {
        &live.bound
    } else {
        &BTreeSet::new()
    };
    for a in desired.bound.difference(bound_now) {
        up_addrs.push(Op::AddAddress(*a));
    }
    for a in bound_now.difference(&desired.bound) {
        if !own.excluded(a) {
            down_addrs.push(Op::DelAddress(*a));
        }
    }

    for (key, want) in &desired.table.services {
        match live.table.services.get(key) {
            None => {
                up_services.push(Op::Ipvs(IpvsOp::AddService(want.service.clone())));
                for rs in want.dests.values() {
                    up_dests.push(Op::Ipvs(IpvsOp::AddDest(*key, *rs)));
                }
            }
            Some(have) => {
                if !own.owns(key, live, desired) {
                    // Someone else's virtual server sits where a Service
                    // wants one (e.g. inside the excluded CIDRs): leave it.
                    continue;
                }
                if !same_settings(&want.service, &have.service) {
                    up_services.push(Op::Ipvs(IpvsOp::EditService(want.service.clone())));
                }
                diff_dests(key, want, have, &mut up_dests, &mut down_dests);
            }
        }
    }
    for key in live.table.services.keys() {
        if !desired.table.services.contains_key(key) && own.owns(key, live, desired) {
            down_services.push(Op::Ipvs(IpvsOp::DelService(*key)));
        }
    }

    let mut ops = up_link;
    ops.extend(up_addrs);
    ops.extend(up_services);
    ops.extend(up_dests);
    ops.extend(down_dests);
    ops.extend(down_services);
    ops.extend(down_addrs);
    ops
}

fn diff_dests(
    key: &ServiceKey,
    want: &ServiceEntry,
    have: &ServiceEntry,
    up: &mut Vec<Op>,
    down: &mut Vec<Op>,
) {
    for (dk, rs) in &want.dests {
        match have.dests.get(dk) {
            None => up.push(Op::Ipvs(IpvsOp::AddDest(*key, *rs))),
            Some(cur) if cur.weight != rs.weight || cur.forward != rs.forward => {
                up.push(Op::Ipvs(IpvsOp::EditDest(*key, *rs)))
            }
            Some(_) => {}
        }
    }
    for dk in have.dests.keys() {
        if !want.dests.contains_key(dk) {
            down.push(Op::Ipvs(IpvsOp::DelDest(*key, *dk)));
        }
    }
}
