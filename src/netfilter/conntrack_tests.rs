//! The stale-entry decision, with the cases of upstream's
//! pkg/proxy/conntrack/cleanup_test.go (v1.36.3): the same Service, the
//! same endpoints, the same entries, the same expectations for UDP. SCTP
//! follows the UDP expectations (kproxy cleans both; upstream only UDP).

use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::cluster::convert::ConvertOptions;
use crate::cluster::{ClusterState, Kind, Object, SourceEvent};
use crate::kernel::conntrack::Tuple;
use crate::kernel::conntrack::twin::ConntrackTwin;
use crate::source::manifests::parse_text;

// upstream's constants
const CLUSTER_IP: &str = "172.30.1.1";
const EXTERNAL_IP: &str = "192.168.99.100";
const LB_IP: &str = "1.2.3.4";
const SERVING: &str = "10.240.0.4";
const NON_SERVING: &str = "10.240.1.5";
const DELETED: &str = "10.240.2.6";
const OLD_ENDPOINT_PORT: u16 = 8080;
const ENDPOINT_PORT: u16 = 9090;
const SERVICE_PORT: u16 = 8000;
const NODE_PORT: u16 = 32000;
const NON_SERVICE_PORT: u16 = 3000;
/// Upstream leaves the original destination of NodePort entries unset (it
/// is not matched); any address of the node will do here.
const NODE_IP: &str = "192.168.58.2";
const CLIENT: &str = "10.0.0.99";

/// upstream's TestCleanStaleEntries Service and EndpointSlice.
const UPSTREAM: &str = "
apiVersion: v1
kind: Service
metadata: {name: cleanup-test, namespace: test}
spec:
  type: LoadBalancer
  clusterIP: 172.30.1.1
  externalIPs: [192.168.99.100]
  selector: {app: x}
  ports:
  - {name: test-tcp, port: 8000, protocol: TCP, nodePort: 32000}
  - {name: test-udp, port: 8000, protocol: UDP, nodePort: 32000}
  - {name: test-sctp, port: 8000, protocol: SCTP, nodePort: 32000}
status:
  loadBalancer:
    ingress: [{ip: 1.2.3.4}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: cleanup-test-0, namespace: test, labels: {kubernetes.io/service-name: SERVICE}}
addressType: IPv4
endpoints:
- {addresses: [10.240.0.4], conditions: {serving: true}}
- {addresses: [10.240.1.5], conditions: {serving: false}}
ports:
- {name: test-tcp, port: 9090, protocol: TCP}
- {name: test-udp, port: 9090, protocol: UDP}
- {name: test-sctp, port: 9090, protocol: SCTP}
";

pub(crate) fn cluster(yaml: &str) -> ClusterState {
    let objects = parse_text(Path::new("fixture.yaml"), yaml).unwrap();
    let mut state = ClusterState::new(ConvertOptions {
        node_name: "node-1".into(),
    });
    let mut by_kind: BTreeMap<Kind, Vec<Object>> = BTreeMap::new();
    for obj in objects {
        by_kind.entry(obj.kind()).or_default().push(obj);
    }
    for (kind, objs) in by_kind {
        let problems = state.apply(SourceEvent::Replace(kind, objs));
        assert!(problems.is_empty(), "{problems:?}");
    }
    state
}

fn upstream(slice_owner: &str) -> ClusterState {
    cluster(&UPSTREAM.replace("SERVICE", slice_owner))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// upstream's generateConntrackEntry, with the client side filled in: a
/// source port of its own, since the kernel keeps one entry per original
/// tuple (and the twin, like the kernel, deletes by it).
fn entry(orig_dst: &str, orig_port: u16, reply_src: &str, reply_port: u16, p: Protocol) -> Flow {
    static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1024);
    let client_port = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Flow {
        protocol: p,
        orig: Tuple {
            src: ip(CLIENT),
            dst: ip(orig_dst),
            src_port: client_port,
            dst_port: orig_port,
        },
        reply: Tuple {
            src: ip(reply_src),
            dst: ip(CLIENT),
            src_port: reply_port,
            dst_port: client_port,
        },
        zone: 0,
        id: None,
    }
}

/// Every entry of the cleaner's tables after it ran on `entries`.
fn clean(state: &ClusterState, entries: Vec<Flow>) -> (Cleaned, ConntrackTwin) {
    let twin = std::sync::Arc::new(std::sync::Mutex::new(ConntrackTwin::new(entries)));
    let mut cleaner = Cleaner::new(Box::new(twin.clone()));
    let out = cleaner.clean(state, &[IpFamily::V4], true);
    let twin = std::mem::take(&mut *twin.lock().unwrap());
    (out, twin)
}

#[test]
fn upstream_clean_stale_entries() {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    // Endpoints that changed port but not address: cleared.
    for dst in [CLUSTER_IP, LB_IP, EXTERNAL_IP] {
        before.push(entry(
            dst,
            SERVICE_PORT,
            SERVING,
            OLD_ENDPOINT_PORT,
            Protocol::Udp,
        ));
        before.push(entry(
            dst,
            SERVICE_PORT,
            SERVING,
            OLD_ENDPOINT_PORT,
            Protocol::Sctp,
        ));
    }
    // 3 endpoints x 3 protocols x (3 Service IPs x 2 ports + 1 NodePort).
    for dnat in [SERVING, NON_SERVING, DELETED] {
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            let cleaned = p != Protocol::Tcp && dnat != SERVING;
            for dst in [CLUSTER_IP, LB_IP, EXTERNAL_IP] {
                for port in [SERVICE_PORT, NON_SERVICE_PORT] {
                    let e = entry(dst, port, dnat, ENDPOINT_PORT, p);
                    before.push(e);
                    if !(cleaned && port == SERVICE_PORT) {
                        after.push(e);
                    }
                }
            }
            let e = entry(NODE_IP, NODE_PORT, dnat, ENDPOINT_PORT, p);
            before.push(e);
            if !cleaned {
                after.push(e);
            }
        }
    }
    // Entries that were never translated (no DROP/REJECT for a Service
    // without endpoints): cleared on the Service port.
    for dst in [CLUSTER_IP, LB_IP, EXTERNAL_IP] {
        for port in [SERVICE_PORT, NON_SERVICE_PORT] {
            let e = entry(dst, port, dst, 0, Protocol::Udp);
            before.push(e);
            if port != SERVICE_PORT {
                after.push(e);
            }
        }
    }
    let state = upstream("cleanup-test");
    let (out, twin) = clean(&state, before.clone());
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    // upstream's 3 + 63 + 6 entries, and the 3 SCTP entries to an old port.
    assert_eq!(before.len(), 3 + 63 + 6 + 3);
    assert_eq!(out.deleted as usize, before.len() - after.len());
    let mut left = twin.entries.clone();
    left.sort();
    after.sort();
    assert_eq!(left, after);
    // TCP is not dumped; UDP and SCTP once each, deleted in one batch each.
    let mut dumps = twin.dumps.clone();
    dumps.sort();
    assert_eq!(
        dumps,
        vec![
            (IpFamily::V4, Protocol::Udp),
            (IpFamily::V4, Protocol::Sctp)
        ]
    );
    assert_eq!(twin.batches.len(), 2);
}

#[test]
fn upstream_service_without_endpoints_keeps_its_entries() {
    // TestServiceWithoutEndpoints: the slice belongs to another Service.
    let state = upstream("non-existing-service");
    let entries = vec![
        entry(
            EXTERNAL_IP,
            SERVICE_PORT,
            SERVING,
            ENDPOINT_PORT,
            Protocol::Udp,
        ),
        entry(
            EXTERNAL_IP,
            SERVICE_PORT,
            DELETED,
            ENDPOINT_PORT,
            Protocol::Udp,
        ),
    ];
    let (out, twin) = clean(&state, entries.clone());
    assert_eq!(out.deleted, 0);
    assert_eq!(twin.entries, entries);
}

#[test]
fn upstream_performance_case_deletes_only_the_service_port_in_one_batch() {
    // TestPerformanceCleanStaleEntries, with every port instead of a
    // million random ones: entries from a deleted endpoint to the external
    // IP on every port; only the Service port's go, plus the one stale entry.
    let state = upstream("cleanup-test");
    let mut entries = vec![
        entry(
            EXTERNAL_IP,
            SERVICE_PORT,
            SERVING,
            ENDPOINT_PORT,
            Protocol::Udp,
        ),
        entry(
            EXTERNAL_IP,
            SERVICE_PORT,
            DELETED,
            ENDPOINT_PORT,
            Protocol::Udp,
        ),
    ];
    for port in 1..=u16::MAX {
        entries.push(entry(
            EXTERNAL_IP,
            port,
            DELETED,
            ENDPOINT_PORT,
            Protocol::Udp,
        ));
    }
    let (out, twin) = clean(&state, entries.clone());
    // The Service port twice (the stale entry and its sibling), and the
    // NodePort: upstream matches a NodePort on any address.
    assert_eq!(out.deleted, 3);
    assert_eq!(twin.entries.len(), entries.len() - 3);
    assert_eq!(
        twin.batches,
        vec![3],
        "one batch, not one request per entry"
    );
}

#[test]
fn nothing_is_dumped_when_no_service_has_udp_or_sctp_ports() {
    let yaml = UPSTREAM.replace("SERVICE", "cleanup-test");
    let tcp_only: String = yaml
        .lines()
        .filter(|l| !l.contains("UDP") && !l.contains("SCTP"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (out, twin) = clean(&cluster(&tcp_only), vec![]);
    assert_eq!(out.dumps, 0);
    assert!(twin.dumps.is_empty());
}

/// A cleaner over `entries` that has cleaned once for `first`.
fn cleaned_once(
    first: &ClusterState,
    entries: Vec<Flow>,
) -> (Cleaner, std::sync::Arc<std::sync::Mutex<ConntrackTwin>>) {
    let twin = std::sync::Arc::new(std::sync::Mutex::new(ConntrackTwin::new(entries)));
    let mut cleaner = Cleaner::new(Box::new(twin.clone()));
    let out = cleaner.clean(first, &[IpFamily::V4], true);
    assert!(out.errors.is_empty());
    (cleaner, twin)
}

#[test]
fn an_unchanged_cluster_is_not_dumped_again() {
    let state = upstream("cleanup-test");
    let (mut cleaner, twin) = cleaned_once(&state, vec![]);
    assert_eq!(twin.lock().unwrap().dumps.len(), 2);
    let out = cleaner.clean(&state, &[IpFamily::V4], true);
    assert_eq!(out.dumps, 0);
    assert_eq!(twin.lock().unwrap().dumps.len(), 2);
}

#[test]
fn an_endpoint_leaving_the_slice_takes_its_entries_at_the_next_cleanup() {
    let state = upstream("cleanup-test");
    let to_serving = entry(
        CLUSTER_IP,
        SERVICE_PORT,
        SERVING,
        ENDPOINT_PORT,
        Protocol::Udp,
    );
    let (mut cleaner, twin) = cleaned_once(&state, vec![to_serving]);
    assert_eq!(twin.lock().unwrap().entries, vec![to_serving]);
    // The serving endpoint becomes not serving; another one serves.
    let moved = UPSTREAM
        .replace("SERVICE", "cleanup-test")
        .replace(
            "10.240.0.4], conditions: {serving: true}",
            "10.240.0.4], conditions: {serving: false}",
        )
        .replace(
            "10.240.1.5], conditions: {serving: false}",
            "10.240.1.5], conditions: {serving: true}",
        );
    let out = cleaner.clean(&cluster(&moved), &[IpFamily::V4], true);
    assert_eq!(out.deleted, 1);
    assert!(twin.lock().unwrap().entries.is_empty());
}

#[test]
fn a_deleted_service_takes_its_entries_beyond_upstream() {
    let state0 = upstream("cleanup-test");
    let to_ip = entry(
        CLUSTER_IP,
        SERVICE_PORT,
        SERVING,
        ENDPOINT_PORT,
        Protocol::Udp,
    );
    let to_node_port = entry(NODE_IP, NODE_PORT, SERVING, ENDPOINT_PORT, Protocol::Sctp);
    let other = entry(
        "172.30.9.9",
        SERVICE_PORT,
        SERVING,
        ENDPOINT_PORT,
        Protocol::Udp,
    );
    let (mut cleaner, twin) = cleaned_once(&state0, vec![to_ip, to_node_port, other]);
    assert_eq!(twin.lock().unwrap().entries.len(), 3, "all served");
    // Then the node's own flow to some server's port 32000, never translated.
    let own = entry(
        "198.51.100.7",
        NODE_PORT,
        "198.51.100.7",
        NODE_PORT,
        Protocol::Udp,
    );
    twin.lock().unwrap().entries.push(own);
    let empty = cluster("");
    let out = cleaner.clean(&empty, &[IpFamily::V4], true);
    assert!(out.errors.is_empty());
    assert_eq!(out.deleted, 2);
    assert_eq!(twin.lock().unwrap().entries, vec![other, own]);
    // Both tables are forgotten: nothing left to compare with.
    let out = cleaner.clean(&empty, &[IpFamily::V4], true);
    assert_eq!(out.dumps, 0);
}

#[test]
fn a_failed_or_unsettled_cleanup_is_tried_again() {
    let state = upstream("cleanup-test");
    let stale_entry = entry(
        CLUSTER_IP,
        SERVICE_PORT,
        DELETED,
        ENDPOINT_PORT,
        Protocol::Udp,
    );
    let twin = std::sync::Arc::new(std::sync::Mutex::new(ConntrackTwin::new(vec![stale_entry])));
    let mut cleaner = Cleaner::new(Box::new(twin.clone()));
    twin.lock().unwrap().refuse_delete = Some(libc::EPERM);
    let out = cleaner.clean(&state, &[IpFamily::V4], true);
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].errno, Some(libc::EPERM));
    twin.lock().unwrap().refuse_delete = None;
    // The UDP table again (SCTP went through); not settled: cleaned, but it
    // will be looked at again.
    let out = cleaner.clean(&state, &[IpFamily::V4], false);
    assert_eq!((out.deleted, out.dumps), (1, 1));
    let out = cleaner.clean(&state, &[IpFamily::V4], true);
    assert_eq!((out.deleted, out.dumps), (0, 1));
    let out = cleaner.clean(&state, &[IpFamily::V4], true);
    assert_eq!(out.dumps, 0);
}

#[test]
fn a_kernel_without_conntrack_is_reported_once_then_skipped() {
    let state = upstream("cleanup-test");
    let twin = std::sync::Arc::new(std::sync::Mutex::new(ConntrackTwin::default()));
    twin.lock().unwrap().refuse_list = Some(libc::EPROTONOSUPPORT);
    let mut cleaner = Cleaner::new(Box::new(twin.clone()));
    let out = cleaner.clean(&state, &[IpFamily::V4], true);
    assert!(out.errors.is_empty());
    twin.lock().unwrap().refuse_list = None;
    let out = cleaner.clean(&state, &[IpFamily::V4], true);
    assert_eq!(out.dumps, 0);
    assert!(twin.lock().unwrap().dumps.is_empty());
}

#[test]
fn frontends_follow_upstreams_service_port_map() {
    let t = targets(&upstream("cleanup-test"), &[IpFamily::V4, IpFamily::V6]);
    assert_eq!(
        t.0.keys().copied().collect::<Vec<_>>(),
        vec![
            (IpFamily::V4, Protocol::Udp),
            (IpFamily::V4, Protocol::Sctp)
        ],
        "no TCP table, nothing in IPv6 for an IPv4 Service"
    );
    let udp = &t.0[&(IpFamily::V4, Protocol::Udp)];
    let serving: Backends = [(ip(SERVING), ENDPOINT_PORT)].into();
    for a in [CLUSTER_IP, EXTERNAL_IP, LB_IP] {
        assert_eq!(udp.ips[&(ip(a), SERVICE_PORT)], serving, "{a}");
    }
    assert_eq!(udp.ips.len(), 3);
    assert_eq!(udp.node_ports[&NODE_PORT], serving);
}
