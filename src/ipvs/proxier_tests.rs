//! The IPVS proxier end to end on the in-memory kernel twins.

use std::sync::{Arc, Mutex};

use super::planner_tests::{fixture, state_from_yaml};
use super::{DUMMY_LINK, IpvsProxier};
use crate::config::Config;
use crate::kernel::ipvs::twin::IpvsTwin;
use crate::kernel::ipvs::{
    DestKey, DestStats, ForwardMethod, Ipvs, IpvsOp, RealServer, ServiceEntry, ServiceKey,
    VirtualServer,
};
use crate::kernel::link::twin::LinksTwin;
use crate::net::Protocol;
use crate::sync::{Proxier, SyncError};

type Shared<T> = Arc<Mutex<T>>;

struct Node {
    ipvs: Shared<IpvsTwin>,
    links: Shared<LinksTwin>,
    proxier: IpvsProxier,
    config: Config,
}

fn node() -> Node {
    let config = Config {
        hostname: "node-1".into(),
        ..Config::default()
    };
    let ipvs: Shared<IpvsTwin> = Shared::default();
    let links = Arc::new(Mutex::new(LinksTwin::node(&["192.168.58.2"
        .parse()
        .unwrap()])));
    let proxier = IpvsProxier::new(Box::new(ipvs.clone()), Box::new(links.clone()), &config);
    Node {
        ipvs,
        links,
        proxier,
        config,
    }
}

fn key(addr: &str, port: u16) -> ServiceKey {
    ServiceKey {
        addr: addr.parse().unwrap(),
        protocol: Protocol::Tcp,
        port,
    }
}

#[test]
fn first_sync_programs_everything_and_the_second_changes_nothing() {
    let mut n = node();
    let (state, _) = state_from_yaml(&fixture("nodeport.yaml"), &n.config);
    let out = n.proxier.sync(&state, None);
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(out.ops.get("create_link"), Some(&1));
    assert_eq!(out.ops.get("add_address"), Some(&1));
    assert_eq!(
        out.ops.get("add_virtual_server"),
        Some(&2),
        "cluster IP, eth0 (no NodePort on loopback, as upstream)"
    );
    let table = n.ipvs.lock().unwrap().table.clone();
    assert!(!table.services.contains_key(&key("127.0.0.1", 30080)));
    assert!(table.services.contains_key(&key("192.168.58.2", 30080)));
    let bound = n.links.lock().unwrap().links[DUMMY_LINK].clone();
    assert_eq!(bound.len(), 1);

    let again = n.proxier.sync(&state, None);
    assert!(again.ok());
    assert_eq!(again.total_ops(), 0, "{:?}", again.ops);
}

#[test]
fn drift_is_repaired_by_the_next_sync() {
    let mut n = node();
    let (state, _) = state_from_yaml(&fixture("clusterip.yaml"), &n.config);
    n.proxier.sync(&state, None);
    let programmed = n.ipvs.lock().unwrap().table.clone();

    // ipvsadm -C, and kube-ipvs0 deleted by hand.
    n.ipvs.lock().unwrap().flush().unwrap();
    n.links.lock().unwrap().links.remove(DUMMY_LINK);
    let out = n.proxier.sync(&state, None);
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(n.ipvs.lock().unwrap().table, programmed);
    assert!(n.links.lock().unwrap().links[DUMMY_LINK].contains(&"10.96.0.10".parse().unwrap()));
}

#[test]
fn a_refused_operation_is_reported_and_the_rest_still_applies() {
    let mut n = node();
    let mut config = n.config.clone();
    config.ipvs_scheduler = "no-such-scheduler".into();
    n.proxier = IpvsProxier::new(Box::new(n.ipvs.clone()), Box::new(n.links.clone()), &config);
    let (state, _) = state_from_yaml(&fixture("clusterip.yaml"), &n.config);
    let out = n.proxier.sync(&state, None);
    assert!(!out.ok());
    // The virtual server is refused (unknown scheduler): its error names
    // what was attempted, and its real servers, which then fail too, are
    // summarised in one line instead of one error each.
    assert!(
        matches!(&out.errors[0], SyncError::Refused(e) if e.op.starts_with("add virtual server TCP 10.96.0.10:80")),
        "{:?}",
        out.errors
    );
    assert_eq!(out.errors.len(), 2, "{:?}", out.errors);
    assert_eq!(
        out.errors[1],
        SyncError::RealServersOrphaned {
            service: ServiceKey {
                addr: "10.96.0.10".parse().unwrap(),
                protocol: Protocol::Tcp,
                port: 80
            },
            count: 3
        }
    );
    // The address was still bound: everything not refused went in.
    assert_eq!(out.ops.get("add_address"), Some(&1));
    // Incomplete, so retried, but done as upstream counts a sync whose only
    // failures are refused IPVS operations (health stays good).
    assert!(out.done());
}

#[test]
fn operators_virtual_servers_survive_sync_and_cleanup() {
    let mut n = node();
    let foreign = VirtualServer {
        key: key("10.99.0.1", 80),
        scheduler: "rr".into(),
        persistence: None,
        sched_flags: 0,
    };
    n.ipvs
        .lock()
        .unwrap()
        .table
        .services
        .insert(foreign.key, ServiceEntry::new(foreign.clone()));
    let (state, _) = state_from_yaml(&fixture("nodeport.yaml"), &n.config);
    n.proxier.sync(&state, None);
    n.proxier.sync(&state, None);
    assert!(
        n.ipvs
            .lock()
            .unwrap()
            .table
            .services
            .contains_key(&foreign.key)
    );

    let errors = n.proxier.cleanup();
    assert!(errors.is_empty(), "{errors:?}");
    let left: Vec<ServiceKey> = n
        .ipvs
        .lock()
        .unwrap()
        .table
        .services
        .keys()
        .copied()
        .collect();
    assert_eq!(
        left,
        vec![foreign.key],
        "only the operator's virtual server is left"
    );
    assert!(!n.links.lock().unwrap().links.contains_key(DUMMY_LINK));
}

#[test]
fn a_bad_update_keeps_what_is_programmed() {
    let mut n = node();
    let good = fixture("clusterip.yaml");
    let (mut state, _) = state_from_yaml(&good, &n.config);
    n.proxier.sync(&state, None);
    let before = n.ipvs.lock().unwrap().table.clone();

    // The same Service updated with an impossible port: refused, the last
    // good version stays, and nothing is removed from the kernel.
    let bad = good.replace(
        "port: 80, targetPort: 8080",
        "port: 70000, targetPort: 8080",
    );
    let (bad_state, problems) = state_from_yaml(&bad, &n.config);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("Service default/web") && p.contains("70000"))
    );
    assert!(bad_state.services().next().is_none());
    let docs =
        crate::source::manifests::parse_text(std::path::Path::new("bad.yaml"), &bad).unwrap();
    let svc = docs[0].clone();
    let problems = state.apply(crate::cluster::SourceEvent::Apply(svc));
    assert_eq!(problems.len(), 1);
    let out = n.proxier.sync(&state, None);
    assert_eq!(out.total_ops(), 0);
    assert_eq!(n.ipvs.lock().unwrap().table, before);
}

#[test]
fn dry_run_lists_operations_and_changes_nothing() {
    let mut n = node();
    let (state, _) = state_from_yaml(&fixture("affinity.yaml"), &n.config);
    let lines = n.proxier.dry_run(&state).unwrap();
    assert!(
        lines.contains(&"add virtual server TCP 10.96.0.80:80 rr persistent 10800".to_string()),
        "{lines:#?}"
    );
    assert!(lines.contains(&"add address 10.96.0.81 to kube-ipvs0".to_string()));
    assert!(n.ipvs.lock().unwrap().table.services.is_empty());
    assert!(!n.links.lock().unwrap().links.contains_key(DUMMY_LINK));
}

/// An endpoint leaving its Service drains: weight 0 while IPVS holds
/// connections to it, deleted once they are gone; a restarted proxier
/// finds the draining real server in the kernel and carries on.
#[test]
fn a_removed_endpoint_drains_across_a_restart_and_then_goes() {
    let mut n = node();
    let text = fixture("clusterip.yaml");
    let (state, _) = state_from_yaml(&text, &n.config);
    assert!(n.proxier.sync(&state, None).ok());
    let vip = key("10.96.0.10", 80);
    let a = RealServer {
        key: DestKey {
            addr: "10.244.1.5".parse().unwrap(),
            port: 8080,
        },
        weight: 1,
        forward: ForwardMethod::Masq,
    };
    let open = DestStats {
        active_conns: 1,
        inactive_conns: 0,
    };
    n.ipvs
        .lock()
        .unwrap()
        .set_stats(&IpvsOp::AddDest(vip, a), open);

    let without_a = text.replace(
        "- {addresses: [10.244.1.5], conditions: {ready: true}, nodeName: node-1}\n",
        "",
    );
    assert_ne!(without_a, text);
    let (state, _) = state_from_yaml(&without_a, &n.config);
    let out = n.proxier.sync(&state, None);
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(out.ops.get("edit_real_server"), Some(&1), "{:?}", out.ops);
    assert_eq!(out.draining, 1);
    let weight = |n: &Node| {
        n.ipvs.lock().unwrap().table.services[&vip]
            .dests
            .get(&a.key)
            .map(|d| d.weight)
    };
    assert_eq!(weight(&n), Some(0));

    // A new process: the same kernel, nothing to do while the connection lasts.
    let mut restarted = IpvsProxier::new(
        Box::new(n.ipvs.clone()),
        Box::new(n.links.clone()),
        &n.config,
    );
    let out = restarted.sync(&state, None);
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(out.total_ops(), 0, "{:?}", out.ops);
    assert_eq!(out.draining, 1);

    // The connection ends: the next sync deletes it.
    n.ipvs
        .lock()
        .unwrap()
        .set_stats(&IpvsOp::AddDest(vip, a), DestStats::default());
    let out = restarted.sync(&state, None);
    assert_eq!(out.ops.get("delete_real_server"), Some(&1), "{:?}", out.ops);
    assert_eq!(out.draining, 0);
    assert_eq!(weight(&n), None);
}
