//! The iptables proxier deletes stale conntrack entries after a sync (twins).

use std::sync::{Arc, Mutex};

use super::IptablesProxier;
use crate::config::Config;
use crate::kernel::conntrack::twin::ConntrackTwin;
use crate::kernel::conntrack::{Flow, Tuple};
use crate::kernel::iptables::IptablesTwin;
use crate::net::{IpFamily, Protocol};
use crate::netfilter::conntrack::tests::cluster;
use crate::sync::Proxier;

const DNS: &str = "
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: kube-system}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  selector: {app: dns}
  ports: [{name: dns, protocol: UDP, port: 53, targetPort: 5353, nodePort: 30053}]
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

/// A client's flow to `dst:port`, answered by `pod`.
fn flow(dst: &str, port: u16, pod: &str) -> Flow {
    Flow {
        protocol: Protocol::Udp,
        orig: Tuple {
            src: "10.244.9.9".parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port: 40001,
            dst_port: port,
        },
        reply: Tuple {
            src: pod.parse().unwrap(),
            dst: "10.244.9.9".parse().unwrap(),
            src_port: 5353,
            dst_port: 40001,
        },
        zone: 0,
        id: None,
    }
}

#[test]
fn a_removed_endpoints_flows_are_deleted_after_the_restore() {
    let to_ip = flow("10.96.0.10", 53, "10.244.1.5");
    let to_node_port = flow("10.0.1.1", 30053, "10.244.1.5");
    let to_b = flow("10.96.0.10", 53, "10.244.1.6");
    let mut to_b = to_b;
    to_b.orig.src_port = 40002;
    let ct = Arc::new(Mutex::new(ConntrackTwin::new(vec![
        to_ip,
        to_node_port,
        to_b,
    ])));
    let config = Config {
        hostname: "node-1".into(),
        ..Config::default()
    };
    let mut p = IptablesProxier::new(IptablesTwin::new(), config, vec![IpFamily::V4])
        .with_conntrack(Box::new(ct.clone()));
    let out = p.sync(&cluster(&format!("{DNS}{POD_A}{POD_B}")), None);
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(out.ops.get("delete_conntrack_entries"), None);

    let out = p.sync(&cluster(&format!("{DNS}{POD_B}")), None);
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(out.ops.get("delete_conntrack_entries"), Some(&2));
    assert_eq!(ct.lock().unwrap().entries, vec![to_b]);
    assert_eq!(ct.lock().unwrap().batches, vec![2], "one batch");
}
