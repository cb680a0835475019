//! The diff: desired IPVS-mode state vs a snapshot of the live kernel → the
//! smallest ordered list of operations, for IPVS, kube-ipvs0, the ipsets and
//! the companion chains. Pure.
//!
//! Ownership: kproxy deletes a virtual server only when it sits on an address
//! bound to kube-ipvs0 (or one it is about to bind), or on a node address
//! with a port in the NodePort range or listed in kproxy's KUBE-NODE-PORT-*
//! sets (or one a Service wants), and never inside `--ipvs-exclude-cidrs`.
//! Everything else in the table belongs to someone else and is left alone.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::live::{LiveCompanions, LiveState};
use super::ops::{ChainWrite, Op};
use super::planner::IpvsPlan;
use super::sets::diff_sets;
use crate::kernel::ipvs::{
    DestStats, IpvsOp, Protocol, RealServer, ServiceEntry, ServiceKey, VirtualServer,
};
use crate::net::IpFamily;
use crate::netfilter::cleanup::{Leftovers, TABLES, leftovers};
use crate::netfilter::ruleset::{Chain, SavedTable};
use crate::sync::SyncError;

/// Which live objects kproxy may change or delete.
#[derive(Clone, Debug)]
pub struct Ownership {
    pub nodeport_range: (u16, u16),
    pub exclude: Vec<IpNet>,
}

impl Default for Ownership {
    fn default() -> Self {
        Self {
            nodeport_range: crate::cluster::DEFAULT_NODEPORT_RANGE,
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
        // A nodePort outside the range (the API server's may be wider) is
        // known as kproxy's by the set member written with it: the sets
        // outlive a restart, so its virtual server still goes with its
        // Service after one.
        live.bound.contains(&key.addr)
            || desired.bound.contains(&key.addr)
            || (live.node_addresses.contains(&key.addr)
                && ((lo..=hi).contains(&key.port)
                    || live.in_node_port_set(key)
                    || desired.table.services.contains_key(key)))
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
    for (dk, cur) in &have.dests {
        if want.dests.contains_key(dk) {
            continue;
        }
        match drain_step(key, cur, have.stats.get(dk)) {
            Drain::Delete => down.push(Op::Ipvs(IpvsOp::DelDest(*key, *dk))),
            Drain::Start => down.push(Op::Ipvs(IpvsOp::EditDest(
                *key,
                RealServer { weight: 0, ..*cur },
            ))),
            Drain::Wait => {}
        }
    }
}

/// What to do with a real server the plan no longer has.
#[derive(Debug, PartialEq, Eq)]
enum Drain {
    Delete,
    /// Weight 0: no new connections, the open ones carry on.
    Start,
    /// Already at weight 0 with connections open.
    Wait,
}

/// Graceful termination, as upstream's (pkg/proxy/ipvs/graceful_termination.go):
/// a TCP real server leaves only once IPVS holds no connection to it
/// (ActiveConn + InActConn = 0; a closed connection lingers in TIME_WAIT
/// for about two minutes); UDP and SCTP ones go at once
/// (IsRsGracefulTerminationNeeded). The state lives in the kernel, so a
/// restarted kproxy resumes draining where the last one left off.
fn drain_step(key: &ServiceKey, cur: &RealServer, stats: Option<&DestStats>) -> Drain {
    let open = stats.map_or(0, |s| s.active_conns + s.inactive_conns);
    if key.protocol != Protocol::Tcp || open == 0 {
        Drain::Delete
    } else if cur.weight != 0 {
        Drain::Start
    } else {
        Drain::Wait
    }
}

/// Real servers kproxy no longer wants that stay (at weight 0) after this
/// diff's operations, until their connections end.
pub fn draining(desired: &IpvsPlan, live: &LiveState, own: &Ownership) -> usize {
    let mut n = 0;
    for (key, want) in &desired.table.services {
        let Some(have) = live.table.services.get(key) else {
            continue;
        };
        if !own.owns(key, live, desired) {
            continue;
        }
        n += have
            .dests
            .iter()
            .filter(|(dk, cur)| {
                !want.dests.contains_key(dk)
                    && drain_step(key, cur, have.stats.get(dk)) != Drain::Delete
            })
            .count();
    }
    n
}

/// Everything a sync would change, and what it cannot change as things are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub ops: Vec<Op>,
    /// Objects in the way (an ipset of kproxy's name with another type).
    pub conflicts: Vec<SyncError>,
    /// See `draining`.
    pub draining: usize,
}

/// The whole diff: IPVS and kube-ipvs0 first, then the sets (a rule may only
/// name a set that exists and should find its members in place), then the
/// chains, then, when `remove_leftovers`, the iptables mode's chains that the
/// rewritten shared chains no longer reach.
pub fn changes(
    desired: &IpvsPlan,
    live: &LiveState,
    own: &Ownership,
    remove_leftovers: bool,
) -> Changes {
    let mut c = Changes {
        ops: diff(desired, live, own),
        conflicts: Vec::new(),
        draining: draining(desired, live, own),
    };
    if let Some(companions) = &live.companions {
        diff_companions(desired, companions, remove_leftovers, &mut c);
    }
    c
}

fn diff_companions(
    desired: &IpvsPlan,
    live: &LiveCompanions,
    remove_leftovers: bool,
    c: &mut Changes,
) {
    let families: Vec<IpFamily> = live.tables.keys().copied().collect();
    let (set_ops, conflicts) = diff_sets(&desired.sets, &live.sets, &families);
    c.ops.extend(set_ops.into_iter().map(Op::Ipset));
    c.conflicts
        .extend(conflicts.into_iter().map(|k| SyncError::SetConflict {
            name: k.name,
            found: k.found,
            wanted: k.wanted.to_string(),
        }));
    for (&family, saved) in &live.tables {
        let Some(rs) = desired.rules.get(&family) else {
            continue;
        };
        let differing = |saved: &SavedTable, chains: &[Chain]| -> Vec<Chain> {
            chains
                .iter()
                .filter(|ch| !saved.matches(&ch.name, &ch.rules))
                .cloned()
                .collect()
        };
        let write = ChainWrite {
            family,
            nat: differing(&saved.nat, &rs.nat.chains),
            filter: differing(&saved.filter, &rs.filter.chains),
            jumps: rs
                .jumps
                .iter()
                .filter(|j| !saved.get(j.table).contains_rule(j.from, &j.rule))
                .cloned()
                .collect(),
        };
        if write.size() > 0 {
            c.ops.push(Op::Chains(write));
        }
    }
    if !remove_leftovers {
        return;
    }
    for (&family, saved) in &live.tables {
        let Some(rs) = desired.rules.get(&family) else {
            continue;
        };
        for table in TABLES {
            let r = leftovers(saved.get(table), table, Leftovers::AllBut(rs));
            if !r.is_empty() {
                c.ops.push(Op::RemoveLeftovers(family, r));
            }
        }
    }
}
