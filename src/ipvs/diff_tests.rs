//! Diff tests: ordering, ownership, idempotence, minimal edits.

use std::net::IpAddr;

use super::diff::{Ownership, diff};
use super::live::LiveState;
use super::ops::Op;
use super::planner::IpvsPlan;
use crate::kernel::ipvs::twin::IpvsTwin;
use crate::kernel::ipvs::{
    DestKey, DestStats, ForwardMethod, Ipvs, IpvsOp, Persistence, RealServer, ServiceEntry,
    ServiceKey, VirtualServer,
};
use crate::net::Protocol;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(addr: &str, port: u16) -> ServiceKey {
    ServiceKey {
        addr: ip(addr),
        protocol: Protocol::Tcp,
        port,
    }
}

fn vs(addr: &str, port: u16, sched: &str) -> VirtualServer {
    VirtualServer {
        key: key(addr, port),
        scheduler: sched.into(),
        persistence: None,
        sched_flags: 0,
    }
}

fn rs(addr: &str, port: u16, weight: u32) -> RealServer {
    RealServer {
        key: DestKey {
            addr: ip(addr),
            port,
        },
        weight,
        forward: ForwardMethod::Masq,
    }
}

fn entry(v: VirtualServer, dests: &[RealServer]) -> ServiceEntry {
    let mut e = ServiceEntry::new(v);
    for d in dests {
        e.dests.insert(d.key, *d);
    }
    e
}

/// A plan with one ClusterIP virtual server bound to kube-ipvs0.
fn plan_of(entries: Vec<ServiceEntry>, nodeports: &[ServiceKey]) -> IpvsPlan {
    let mut p = IpvsPlan::default();
    for e in entries {
        if !nodeports.contains(&e.service.key) {
            p.bound.insert(e.service.key.addr);
        }
        p.table.services.insert(e.service.key, e);
    }
    p
}

/// What the kernel would read back after applying `ops` to `live`.
fn apply(live: &LiveState, ops: &[Op]) -> LiveState {
    let mut twin = IpvsTwin::new();
    twin.table = live.table.clone();
    let mut next = live.clone();
    for op in ops {
        match op {
            Op::CreateLink => next.link_exists = true,
            Op::AddAddress(a) => assert!(next.bound.insert(*a), "{a} bound twice"),
            Op::DelAddress(a) => assert!(next.bound.remove(a), "{a} was not bound"),
            Op::Ipvs(o) => twin.apply(std::slice::from_ref(o))[0]
                .clone()
                .unwrap_or_else(|e| panic!("kernel refused {o}: {e}")),
            other => panic!("the IPVS diff made a companion operation: {other}"),
        }
    }
    next.table = twin.dump().unwrap();
    next
}

fn node_live() -> LiveState {
    LiveState {
        node_addresses: [ip("192.168.58.2"), ip("127.0.0.1")].into_iter().collect(),
        ..Default::default()
    }
}

#[test]
fn adds_link_addresses_services_then_real_servers() {
    let desired = plan_of(
        vec![entry(
            vs("10.96.0.10", 80, "rr"),
            &[rs("10.244.1.2", 8080, 1), rs("10.244.2.2", 8080, 1)],
        )],
        &[],
    );
    let ops = diff(&desired, &node_live(), &Ownership::default());
    let kinds: Vec<&str> = ops.iter().map(Op::kind).collect();
    assert_eq!(
        kinds,
        [
            "create_link",
            "add_address",
            "add_virtual_server",
            "add_real_server",
            "add_real_server"
        ]
    );
    let after = apply(&node_live(), &ops);
    assert!(
        diff(&desired, &after, &Ownership::default()).is_empty(),
        "applying the diff converges"
    );
}

#[test]
fn removal_runs_real_servers_then_services_then_addresses() {
    let old = plan_of(
        vec![entry(
            vs("10.96.0.10", 80, "rr"),
            &[rs("10.244.1.2", 8080, 1)],
        )],
        &[],
    );
    let live = apply(
        &node_live(),
        &diff(&old, &node_live(), &Ownership::default()),
    );
    let ops = diff(&IpvsPlan::default(), &live, &Ownership::default());
    let kinds: Vec<&str> = ops.iter().map(Op::kind).collect();
    // Deleting a virtual server takes its real servers along; what matters
    // is that the address goes last, after nothing uses it.
    assert_eq!(kinds, ["delete_virtual_server", "delete_address"]);
    let after = apply(&live, &ops);
    assert!(after.table.services.is_empty() && after.bound.is_empty());
}

#[test]
fn diffing_a_state_against_itself_yields_nothing() {
    let desired = plan_of(
        vec![
            entry(vs("10.96.0.10", 80, "rr"), &[rs("10.244.1.2", 8080, 1)]),
            entry(
                vs("192.168.58.2", 30080, "rr"),
                &[rs("10.244.1.2", 8080, 1)],
            ),
        ],
        &[key("192.168.58.2", 30080)],
    );
    let live = apply(
        &node_live(),
        &diff(&desired, &node_live(), &Ownership::default()),
    );
    assert_eq!(diff(&desired, &live, &Ownership::default()), vec![]);
}

#[test]
fn scheduler_affinity_and_weight_changes_are_edits_not_recreations() {
    let base = plan_of(
        vec![entry(
            vs("10.96.0.10", 80, "rr"),
            &[rs("10.244.1.2", 8080, 1), rs("10.244.1.3", 8080, 1)],
        )],
        &[],
    );
    let live = apply(
        &node_live(),
        &diff(&base, &node_live(), &Ownership::default()),
    );

    let mut sched = base.clone();
    sched
        .table
        .services
        .get_mut(&key("10.96.0.10", 80))
        .unwrap()
        .service
        .scheduler = "wrr".into();
    let ops = diff(&sched, &live, &Ownership::default());
    assert_eq!(
        ops,
        vec![Op::Ipvs(IpvsOp::EditService(vs("10.96.0.10", 80, "wrr")))]
    );

    let mut sticky = base.clone();
    let p = Persistence {
        timeout: 10800,
        netmask: 0xffff_ffff,
    };
    sticky
        .table
        .services
        .get_mut(&key("10.96.0.10", 80))
        .unwrap()
        .service
        .persistence = Some(p);
    let ops = diff(&sticky, &live, &Ownership::default());
    assert!(matches!(&ops[..], [Op::Ipvs(IpvsOp::EditService(v))] if v.persistence == Some(p)));

    let mut weight = base.clone();
    let e = weight
        .table
        .services
        .get_mut(&key("10.96.0.10", 80))
        .unwrap();
    e.dests
        .insert(rs("10.244.1.3", 8080, 0).key, rs("10.244.1.3", 8080, 0));
    let ops = diff(&weight, &live, &Ownership::default());
    assert_eq!(
        ops,
        vec![Op::Ipvs(IpvsOp::EditDest(
            key("10.96.0.10", 80),
            rs("10.244.1.3", 8080, 0)
        ))]
    );
}

#[test]
fn one_changed_endpoint_is_one_operation_and_counters_survive() {
    let base = plan_of(
        vec![entry(
            vs("10.96.0.10", 80, "rr"),
            &[rs("10.244.1.2", 8080, 1), rs("10.244.1.3", 8080, 1)],
        )],
        &[],
    );
    let mut twin = IpvsTwin::new();
    let ops = diff(&base, &node_live(), &Ownership::default());
    let ipvs_ops: Vec<IpvsOp> = ops
        .iter()
        .filter_map(|o| {
            if let Op::Ipvs(o) = o {
                Some(o.clone())
            } else {
                None
            }
        })
        .collect();
    assert!(twin.apply(&ipvs_ops).iter().all(Result::is_ok));
    let conns = DestStats {
        active_conns: 3,
        inactive_conns: 7,
    };
    twin.set_stats(
        &IpvsOp::AddDest(key("10.96.0.10", 80), rs("10.244.1.2", 8080, 1)),
        conns,
    );
    let mut live = node_live();
    live.link_exists = true;
    live.bound.insert(ip("10.96.0.10"));
    live.table = twin.dump().unwrap();

    let mut next = base.clone();
    let e = next.table.services.get_mut(&key("10.96.0.10", 80)).unwrap();
    e.dests
        .insert(rs("10.244.1.4", 8080, 1).key, rs("10.244.1.4", 8080, 1));
    let ops = diff(&next, &live, &Ownership::default());
    assert_eq!(
        ops,
        vec![Op::Ipvs(IpvsOp::AddDest(
            key("10.96.0.10", 80),
            rs("10.244.1.4", 8080, 1)
        ))]
    );
    twin.apply(&[IpvsOp::AddDest(
        key("10.96.0.10", 80),
        rs("10.244.1.4", 8080, 1),
    )]);
    let after = twin.dump().unwrap();
    let stats = &after.services[&key("10.96.0.10", 80)].stats;
    assert_eq!(
        stats[&rs("10.244.1.2", 8080, 1).key],
        conns,
        "untouched real server kept its connections"
    );
}

#[test]
fn foreign_virtual_servers_survive() {
    // An operator's own virtual server on an address kproxy never bound, and
    // one on a node address outside the NodePort range.
    let mut live = node_live();
    live.link_exists = true;
    for e in [
        entry(vs("10.99.0.1", 80, "rr"), &[rs("10.0.0.5", 80, 1)]),
        entry(vs("192.168.58.2", 8080, "rr"), &[]),
    ] {
        live.table.services.insert(e.service.key, e);
    }
    let ops = diff(&IpvsPlan::default(), &live, &Ownership::default());
    assert_eq!(ops, vec![]);
}

#[test]
fn stale_nodeport_on_a_node_address_is_owned_and_removed() {
    let mut live = node_live();
    let e = entry(vs("192.168.58.2", 30080, "rr"), &[]);
    live.table.services.insert(e.service.key, e);
    let ops = diff(&IpvsPlan::default(), &live, &Ownership::default());
    assert_eq!(
        ops,
        vec![Op::Ipvs(IpvsOp::DelService(key("192.168.58.2", 30080)))]
    );
}

#[test]
fn excluded_cidrs_are_never_touched() {
    let own = Ownership {
        exclude: vec!["10.96.100.0/24".parse().unwrap()],
        ..Default::default()
    };
    let mut live = node_live();
    live.link_exists = true;
    live.bound.insert(ip("10.96.100.5"));
    let e = entry(vs("10.96.100.5", 80, "rr"), &[rs("10.0.0.9", 80, 1)]);
    live.table.services.insert(e.service.key, e);
    assert_eq!(diff(&IpvsPlan::default(), &live, &own), vec![]);

    // Even a plan that wants that address does not edit what is there.
    let want = plan_of(vec![entry(vs("10.96.100.5", 80, "wrr"), &[])], &[]);
    let ops = diff(&want, &live, &own);
    assert!(ops.is_empty(), "{ops:?}");
}

#[test]
fn a_deleted_link_is_recreated_with_every_address() {
    let desired = plan_of(
        vec![
            entry(vs("10.96.0.10", 80, "rr"), &[]),
            entry(vs("10.96.0.11", 80, "rr"), &[]),
        ],
        &[],
    );
    let live = apply(
        &node_live(),
        &diff(&desired, &node_live(), &Ownership::default()),
    );
    // Someone ran `ip link del kube-ipvs0`: the virtual servers are still
    // in the table, the addresses are gone with the link.
    let mut drifted = live.clone();
    drifted.link_exists = false;
    drifted.bound.clear();
    let ops = diff(&desired, &drifted, &Ownership::default());
    assert_eq!(
        ops,
        vec![
            Op::CreateLink,
            Op::AddAddress(ip("10.96.0.10")),
            Op::AddAddress(ip("10.96.0.11"))
        ]
    );
}

#[test]
fn ipv6_entries_diff_like_ipv4() {
    let desired = plan_of(
        vec![entry(
            vs("fd00:10:96::10", 80, "rr"),
            &[rs("fd00:10:244::2", 8080, 1)],
        )],
        &[],
    );
    let ops = diff(&desired, &node_live(), &Ownership::default());
    let after = apply(&node_live(), &ops);
    assert!(after.bound.contains(&ip("fd00:10:96::10")));
    assert!(diff(&desired, &after, &Ownership::default()).is_empty());
}

/// Upstream's graceful termination (pkg/proxy/ipvs/graceful_termination.go,
/// GracefulDeleteRS and deleteRsFunc): a TCP real server with connections
/// goes to weight 0 and stays until ActiveConn + InActConn reach 0.
#[test]
fn a_tcp_real_server_with_connections_drains_at_weight_zero() {
    let v = vs("10.96.0.10", 80, "rr");
    let (a, b) = (rs("10.244.1.2", 8080, 1), rs("10.244.2.2", 8080, 1));
    let desired = plan_of(vec![entry(v.clone(), &[b])], &[]);
    let with = |weight: u32, active: u32, inactive: u32| {
        let mut live = node_live();
        live.link_exists = true;
        live.bound.insert(ip("10.96.0.10"));
        let mut e = entry(v.clone(), &[RealServer { weight, ..a }, b]);
        e.stats.insert(
            a.key,
            DestStats {
                active_conns: active,
                inactive_conns: inactive,
            },
        );
        live.table.services.insert(v.key, e);
        live
    };
    let own = Ownership::default();
    // Open connections: weight 0, nothing deleted.
    assert_eq!(
        diff(&desired, &with(1, 1, 0), &own),
        [Op::Ipvs(IpvsOp::EditDest(
            v.key,
            RealServer { weight: 0, ..a }
        ))]
    );
    // Draining and still busy (also only TIME_WAIT ones): leave it.
    assert!(diff(&desired, &with(0, 1, 0), &own).is_empty());
    assert!(diff(&desired, &with(0, 0, 3), &own).is_empty());
    // The last connection gone: deleted, at the first sync that sees it.
    assert_eq!(
        diff(&desired, &with(0, 0, 0), &own),
        [Op::Ipvs(IpvsOp::DelDest(v.key, a.key))]
    );
    // Idle from the start: deleted at once.
    assert_eq!(
        diff(&desired, &with(1, 0, 0), &own),
        [Op::Ipvs(IpvsOp::DelDest(v.key, a.key))]
    );
    // Back in the plan while draining: its weight back, in place.
    let both = plan_of(vec![entry(v.clone(), &[a, b])], &[]);
    assert_eq!(
        diff(&both, &with(0, 2, 0), &own),
        [Op::Ipvs(IpvsOp::EditDest(v.key, a))]
    );
}

/// Upstream's IsRsGracefulTerminationNeeded: UDP and SCTP real servers are
/// deleted at once, whatever their counters say.
#[test]
fn udp_and_sctp_real_servers_are_deleted_at_once() {
    for protocol in [Protocol::Udp, Protocol::Sctp] {
        let mut v = vs("10.96.0.10", 53, "rr");
        v.key.protocol = protocol;
        let a = rs("10.244.1.2", 53, 1);
        let mut live = node_live();
        live.link_exists = true;
        live.bound.insert(ip("10.96.0.10"));
        let mut e = entry(v.clone(), &[a]);
        e.stats.insert(
            a.key,
            DestStats {
                active_conns: 4,
                inactive_conns: 9,
            },
        );
        live.table.services.insert(v.key, e);
        let desired = plan_of(vec![entry(v.clone(), &[])], &[]);
        assert_eq!(
            diff(&desired, &live, &Ownership::default()),
            [Op::Ipvs(IpvsOp::DelDest(v.key, a.key))],
            "{protocol}"
        );
    }
}

#[test]
fn a_nodeport_outside_the_range_is_owned_through_its_set_member() {
    // After a restart kproxy knows only the kernel: a virtual server on a
    // node address with a port outside --nodeport-range is its own when
    // its KUBE-NODE-PORT-* set lists that port (kproxy wrote it there with
    // the virtual server), and goes when its Service has gone.
    use crate::kernel::ipset::LiveSet;
    let with_member = |set: &str, member: &str| {
        let mut live = node_live();
        let mut sets = std::collections::BTreeMap::new();
        sets.insert(
            set.to_string(),
            LiveSet {
                set_type: "bitmap:port".into(),
                options: Vec::new(),
                entries: [member.to_string()].into_iter().collect(),
            },
        );
        live.companions = Some(crate::ipvs::live::LiveCompanions {
            sets,
            tables: Default::default(),
        });
        let e = entry(vs("192.168.58.2", 8080, "rr"), &[rs("10.0.0.5", 8080, 1)]);
        live.table.services.insert(e.service.key, e);
        live
    };
    let live = with_member("KUBE-NODE-PORT-TCP", "8080");
    let ops = diff(&IpvsPlan::default(), &live, &Ownership::default());
    assert!(
        ops.contains(&Op::Ipvs(IpvsOp::DelService(key("192.168.58.2", 8080)))),
        "{ops:?}"
    );
    // Another port in the set, or the same port in another protocol's set:
    // someone else's virtual server, left alone.
    for (set, member) in [
        ("KUBE-NODE-PORT-TCP", "8081"),
        ("KUBE-NODE-PORT-UDP", "8080"),
    ] {
        let live = with_member(set, member);
        let ops = diff(&IpvsPlan::default(), &live, &Ownership::default());
        assert!(
            !ops.iter()
                .any(|o| matches!(o, Op::Ipvs(IpvsOp::DelService(_)))),
            "{set} {member}: {ops:?}"
        );
    }
    // A plan that wants it edits it even before the set lists the port.
    let live = with_member("KUBE-NODE-PORT-TCP", "9999");
    let want = plan_of(vec![entry(vs("192.168.58.2", 8080, "rr"), &[])], &[]);
    let ops = diff(&want, &live, &Ownership::default());
    assert!(
        ops.iter()
            .any(|o| matches!(o, Op::Ipvs(IpvsOp::DelDest(..)))),
        "{ops:?}"
    );
}
