//! The IPVS proxier deletes stale conntrack entries after a sync (twins).

use std::sync::{Arc, Mutex};

use super::IpvsProxier;
use crate::config::Config;
use crate::kernel::conntrack::twin::ConntrackTwin;
use crate::kernel::conntrack::{Flow, Tuple};
use crate::kernel::ipvs::twin::IpvsTwin;
use crate::kernel::link::twin::LinksTwin;
use crate::net::{IpFamily, Protocol};
use crate::netfilter::conntrack::tests::cluster;
use crate::sync::{Proxier, SyncError};

const DNS: &str = "
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.10
  selector: {app: dns}
  ports: [{name: dns, protocol: UDP, port: 53, targetPort: 5353}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dns-1, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports: [{name: dns, protocol: UDP, port: 5353}]
endpoints:
";
const POD_A: &str = "- {addresses: [10.244.1.5], conditions: {ready: true}}\n";
const POD_B: &str = "- {addresses: [10.244.1.6], conditions: {ready: true}}\n";

/// A client's flow to the DNS Service, answered by `pod`.
fn flow_to(pod: &str) -> Flow {
    Flow {
        protocol: Protocol::Udp,
        orig: Tuple {
            src: "10.244.9.9".parse().unwrap(),
            dst: "10.96.0.10".parse().unwrap(),
            src_port: 40001,
            dst_port: 53,
        },
        reply: Tuple {
            src: pod.parse().unwrap(),
            dst: "10.244.9.9".parse().unwrap(),
            src_port: 5353,
            dst_port: 40001,
        },
        zone: 0,
        id: Some(7),
    }
}

fn proxier(ct: &Arc<Mutex<ConntrackTwin>>) -> IpvsProxier {
    let config = Config {
        hostname: "node-1".into(),
        ..Config::default()
    };
    let links = LinksTwin::node(&["192.168.58.2".parse().unwrap()]);
    IpvsProxier::new(Box::new(IpvsTwin::new()), Box::new(links), &config)
        .with_conntrack(Box::new(ct.clone()))
}

#[test]
fn a_removed_endpoints_flow_is_deleted_after_the_sync_that_removes_it() {
    let ct = Arc::new(Mutex::new(ConntrackTwin::new(vec![flow_to("10.244.1.5")])));
    let mut p = proxier(&ct);
    let out = p.sync(&cluster(&format!("{DNS}{POD_A}{POD_B}")), None);
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(out.ops.get("delete_conntrack_entries"), None, "A serves");
    assert_eq!(
        ct.lock().unwrap().dumps,
        vec![(IpFamily::V4, Protocol::Udp)]
    );

    let only_b = cluster(&format!("{DNS}{POD_B}"));
    let out = p.sync(&only_b, None);
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(out.ops.get("delete_conntrack_entries"), Some(&1));
    assert_eq!(out.ops.get("delete_real_server"), Some(&1), "UDP at once");
    assert!(ct.lock().unwrap().entries.is_empty());

    // Nothing changed since: the table is not dumped again.
    let out = p.sync(&only_b, None);
    assert_eq!(out.total_ops(), 0, "{:?}", out.ops);
    assert_eq!(ct.lock().unwrap().dumps.len(), 2);
}

#[test]
fn a_refused_delete_is_a_conntrack_error_and_is_retried() {
    let ct = Arc::new(Mutex::new(ConntrackTwin::new(vec![flow_to("10.244.1.5")])));
    let mut p = proxier(&ct);
    ct.lock().unwrap().refuse_delete = Some(libc::EPERM);
    let out = p.sync(&cluster(&format!("{DNS}{POD_B}")), None);
    assert!(matches!(&out.errors[..], [SyncError::Conntrack(e)] if e.errno == Some(libc::EPERM)));
    assert_eq!(out.errors[0].kind(), "conntrack");
    ct.lock().unwrap().refuse_delete = None;
    let out = p.sync(&cluster(&format!("{DNS}{POD_B}")), None);
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(out.ops.get("delete_conntrack_entries"), Some(&1));
}
