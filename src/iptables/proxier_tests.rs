//! Planner goldens and proxier behaviour against the iptables twin.
//!
//! Goldens are the exact restore input of a first sync (empty kernel) and
//! live in `src/iptables/testdata/`. After an intended change, regenerate
//! with `KPROXY_BLESS=1 cargo test iptables::` and review the diff.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::IptablesProxier;
use super::planner::{self, endpoint_chain, service_chain};
use crate::cluster::*;
use crate::config::Config;
use crate::kernel::iptables::Iptables;
use crate::kernel::iptables::IptablesTwin;
use crate::netfilter::chains::is_service_chain;
use crate::netfilter::cleanup::{Leftovers, cleanup_iptables_leftovers};
use crate::sync::{Proxier, SyncError};

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(super) fn cidr(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A ClusterIP Service with one TCP port `port` → `target`.
pub(super) fn service(
    ns: &str,
    name: &str,
    cluster_ip: &str,
    port_name: &str,
    port: u16,
) -> Service {
    Service {
        name: ServiceName::new(ns, name),
        service_type: ServiceType::ClusterIp,
        cluster_ips: vec![ip(cluster_ip)],
        headless: false,
        has_selector: true,
        ports: vec![ServicePort {
            name: port_name.into(),
            protocol: Protocol::Tcp,
            port,
            target_port: TargetPort::Number(8080),
            node_port: None,
        }],
        external_ips: vec![],
        load_balancer_ingress: vec![],
        load_balancer_source_ranges: vec![],
        affinity_timeout: None,
        external_traffic_policy: TrafficPolicy::Cluster,
        internal_traffic_policy: TrafficPolicy::Cluster,
        health_check_node_port: None,
        publish_not_ready_addresses: false,
        traffic_distribution: None,
    }
}

/// A slice for `svc` with ready endpoints `(address, node)` on port 8080.
pub(super) fn slice(svc: &Service, name: &str, eps: &[(&str, &str)]) -> EndpointSlice {
    let v6 = eps.first().is_some_and(|(a, _)| a.contains(':'));
    EndpointSlice {
        namespace: svc.name.namespace.clone(),
        name: name.into(),
        service: svc.name.name.clone(),
        address_type: if v6 { AddressType::V6 } else { AddressType::V4 },
        ports: vec![EndpointPort {
            name: svc.ports[0].name.clone(),
            protocol: svc.ports[0].protocol,
            port: 8080,
        }],
        endpoints: eps
            .iter()
            .map(|(a, n)| Endpoint {
                addr: ip(a),
                ready: true,
                serving: true,
                terminating: false,
                node_name: Some(n.to_string()),
                zone: None,
                zone_hints: vec![],
                node_hints: vec![],
            })
            .collect(),
        mirrored: false,
        trigger_time: None,
    }
}

pub(super) fn config() -> Config {
    Config {
        hostname: "node-1".into(),
        cluster_cidrs: vec![cidr("10.244.0.0/16"), cidr("fd00:244::/56")],
        ..Config::default()
    }
}

fn node() -> Node {
    Node {
        name: "node-1".into(),
        addresses: vec![ip("10.0.1.1"), ip("fd00:1::1")],
        zone: None,
        ..Default::default()
    }
}

pub(super) fn cluster(services: Vec<(Service, Vec<(&str, &str)>)>) -> StaticCluster {
    let mut c = StaticCluster {
        node: Some(node()),
        ..Default::default()
    };
    for (svc, eps) in services {
        if !eps.is_empty() {
            c.put_slice(slice(&svc, &format!("{}-abc", svc.name.name), &eps));
        }
        c.add_service(svc);
    }
    c
}

fn proxier(families: Vec<IpFamily>) -> IptablesProxier<IptablesTwin> {
    IptablesProxier::new(IptablesTwin::new(), config(), families)
}

pub(super) fn first_restore(c: &StaticCluster, family: IpFamily) -> String {
    let mut p = proxier(vec![family]);
    let out = p.sync_view(c, None);
    assert!(out.ok(), "{:?}", out.errors);
    p.last_restore(family).unwrap().to_string()
}

fn golden(name: &str, actual: &str) {
    if let Err(e) = crate::testing::golden(&format!("src/iptables/testdata/{name}.golden"), actual)
    {
        panic!("{e}");
    }
}

pub(super) const TEN_EP: [(&str, &str); 3] = [
    ("10.244.1.1", "node-1"),
    ("10.244.2.1", "node-2"),
    ("10.244.3.1", "node-3"),
];

#[test]
fn chain_names_are_upstreams() {
    // Values from upstream kube-proxy's own tests.
    let spn = ServicePortName {
        service: ServiceName::new("ns1", "svc1"),
        port: "p80".into(),
        protocol: Protocol::Tcp,
    };
    assert_eq!(
        service_chain("KUBE-SVC-", &spn),
        "KUBE-SVC-XPGD46QRK7WJZT7O"
    );
    assert_eq!(
        service_chain("KUBE-EXT-", &spn),
        "KUBE-EXT-XPGD46QRK7WJZT7O"
    );
    assert_eq!(
        endpoint_chain(&spn, "10.180.0.1:80"),
        "KUBE-SEP-SXIVWICOYRO3J4NJ"
    );
}

#[test]
fn golden_clusterip_three_endpoints() {
    let c = cluster(vec![(
        service("default", "web", "10.96.0.10", "http", 80),
        TEN_EP.to_vec(),
    )]);
    golden("clusterip", &first_restore(&c, IpFamily::V4));
}

#[test]
fn golden_no_endpoints_rejects() {
    let mut s = service("default", "empty", "10.96.0.20", "", 80);
    s.service_type = ServiceType::NodePort;
    s.ports[0].node_port = Some(30020);
    s.external_ips = vec![ip("198.51.100.20")];
    let text = first_restore(&cluster(vec![(s, vec![])]), IpFamily::V4);
    assert!(
        !text.contains("KUBE-SVC-"),
        "no nat chains without endpoints"
    );
    golden("no_endpoints", &text);
}

#[test]
fn golden_nodeport() {
    let mut s = service("default", "np", "10.96.0.30", "http", 80);
    s.service_type = ServiceType::NodePort;
    s.ports[0].node_port = Some(30080);
    let c = cluster(vec![(s, TEN_EP[..2].to_vec())]);
    golden("nodeport", &first_restore(&c, IpFamily::V4));
}

#[test]
fn golden_nodeport_addresses() {
    let mut s = service("default", "np", "10.96.0.30", "http", 80);
    s.service_type = ServiceType::NodePort;
    s.ports[0].node_port = Some(30080);
    let c = cluster(vec![(s, TEN_EP[..1].to_vec())]);
    let mut cfg = config();
    cfg.nodeport_addresses = crate::config::NodePortAddresses::Cidrs(vec![cidr("10.0.0.0/8")]);
    let mut p = IptablesProxier::new(IptablesTwin::new(), cfg, vec![IpFamily::V4]).with_addresses(
        Box::new(|| {
            Ok(vec![
                ip("127.0.0.1"),
                ip("10.0.1.1"),
                ip("192.168.9.9"),
                ip("10.0.2.1"),
            ])
        }),
    );
    assert!(p.sync_view(&c, None).ok());
    let text = p.last_restore(IpFamily::V4).unwrap();
    let tails: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with("-j KUBE-NODEPORTS") && l.starts_with("-A KUBE-SERVICES"))
        .collect();
    assert_eq!(tails.len(), 2, "{tails:?}");
    assert!(tails[0].contains("-d 10.0.1.1 ") && tails[1].contains("-d 10.0.2.1 "));
    golden("nodeport_addresses", text);
}

#[test]
fn golden_loadbalancer_source_ranges() {
    let mut s = service("default", "lb", "10.96.0.40", "http", 80);
    s.service_type = ServiceType::LoadBalancer;
    s.ports[0].node_port = Some(30040);
    s.load_balancer_ingress = vec![
        LoadBalancerIngress {
            ip: ip("192.0.2.100"),
            ip_mode: IpMode::Vip,
        },
        LoadBalancerIngress {
            ip: ip("192.0.2.101"),
            ip_mode: IpMode::Proxy,
        },
    ];
    s.load_balancer_source_ranges = vec![cidr("10.0.1.0/24"), cidr("203.0.113.0/24")];
    let c = cluster(vec![(s, TEN_EP[..2].to_vec())]);
    let text = first_restore(&c, IpFamily::V4);
    assert!(
        !text.contains("192.0.2.101"),
        "ipMode Proxy addresses are not programmed"
    );
    golden("loadbalancer_source_ranges", &text);
}

#[test]
fn golden_external_ips() {
    let mut s = service("default", "ext", "10.96.0.50", "http", 80);
    s.external_ips = vec![ip("198.51.100.7"), ip("2001:db8::7")];
    let c = cluster(vec![(s, TEN_EP[..2].to_vec())]);
    let text = first_restore(&c, IpFamily::V4);
    assert!(!text.contains("2001:db8::7"), "other family's externalIP");
    golden("external_ips", &text);
}

#[test]
fn golden_client_ip_affinity() {
    let mut s = service("default", "sticky", "10.96.0.60", "http", 80);
    s.affinity_timeout = Some(10800);
    let c = cluster(vec![(s, TEN_EP[..2].to_vec())]);
    golden("client_ip_affinity", &first_restore(&c, IpFamily::V4));
}

#[test]
fn golden_external_traffic_policy_local() {
    let mut s = service("default", "local", "10.96.0.70", "http", 80);
    s.service_type = ServiceType::NodePort;
    s.ports[0].node_port = Some(30070);
    s.external_traffic_policy = TrafficPolicy::Local;
    s.health_check_node_port = Some(32000);
    let c = cluster(vec![(s, TEN_EP[..2].to_vec())]);
    let text = first_restore(&c, IpFamily::V4);
    golden("external_traffic_policy_local", &text);
}

#[test]
fn local_policy_without_local_endpoints_drops_external_traffic() {
    let mut s = service("default", "local", "10.96.0.70", "http", 80);
    s.service_type = ServiceType::NodePort;
    s.ports[0].node_port = Some(30070);
    s.external_traffic_policy = TrafficPolicy::Local;
    let c = cluster(vec![(s, vec![("10.244.2.1", "node-2")])]);
    let mut p = proxier(vec![IpFamily::V4]);
    let out = p.sync_view(&c, None);
    // Upstream counts it under external/IPv4 only (iptables/proxier.go,
    // serviceNoLocalEndpointsTotalExternal).
    assert_eq!(out.no_local_endpoints.to_string(), "external/IPv4=1");
    let text = p.last_restore(IpFamily::V4).unwrap();
    assert!(text.contains(
        "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"default/local:http has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30070 -j DROP"
    ), "{text}");
    // Cluster-IP traffic still reaches the remote endpoint; the EXT chain
    // keeps its short circuits for pods and the node but has no fall-through.
    let ext = service_chain(
        "KUBE-EXT-",
        &ServicePortName {
            service: ServiceName::new("default", "local"),
            port: "http".into(),
            protocol: Protocol::Tcp,
        },
    );
    let ext_rules: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("-A {ext} ")))
        .collect();
    assert_eq!(ext_rules.len(), 3, "{ext_rules:?}");
    assert!(!text.contains("KUBE-SVL-"));
}

#[test]
fn both_policies_local_without_local_endpoints() {
    // Upstream's iptables proxier (syncProxyRules): a NodePort Service uses
    // its Cluster endpoints even with both policies Local
    // (serviceport.go UsesClusterEndpoints), for KUBE-EXT's short circuits;
    // the cluster IP is dropped (internal Local), outside traffic to the
    // node port too (external Local), and each policy is counted.
    let mut s = service("default", "local", "10.96.0.71", "http", 80);
    s.service_type = ServiceType::NodePort;
    s.ports[0].node_port = Some(30071);
    s.external_traffic_policy = TrafficPolicy::Local;
    s.internal_traffic_policy = TrafficPolicy::Local;
    let c = cluster(vec![(s, vec![("10.244.2.1", "node-2")])]);
    let mut p = proxier(vec![IpFamily::V4]);
    let out = p.sync_view(&c, None);
    assert_eq!(
        out.no_local_endpoints.to_string(),
        "internal/IPv4=1 external/IPv4=1"
    );
    let text = p.last_restore(IpFamily::V4).unwrap();
    for rule in [
        "-A KUBE-SERVICES -m comment --comment \"default/local:http has no local endpoints\" -m tcp -p tcp -d 10.96.0.71 --dport 80 -j DROP",
        "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"default/local:http has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30071 -j DROP",
    ] {
        assert!(text.contains(rule), "{rule} missing:\n{text}");
    }
    let spn = ServicePortName {
        service: ServiceName::new("default", "local"),
        port: "http".into(),
        protocol: Protocol::Tcp,
    };
    let svc = service_chain("KUBE-SVC-", &spn);
    let ext = service_chain("KUBE-EXT-", &spn);
    assert!(
        text.contains(&format!("-A {ext} -m comment --comment \"route LOCAL traffic for default/local:http external destinations\" -m addrtype --src-type LOCAL -j {svc}")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("-A {svc} ")) && l.contains("KUBE-SEP-")),
        "the Cluster chain must reach the remote endpoint:\n{text}"
    );
    assert!(!text.contains("KUBE-SVL-"));
}

#[test]
fn golden_ipv6() {
    let mut s = service("default", "web6", "fd00::10", "http", 80);
    s.service_type = ServiceType::NodePort;
    s.ports[0].node_port = Some(30090);
    let c = cluster(vec![(
        s,
        vec![("fd00:244::1", "node-1"), ("fd00:244::2", "node-2")],
    )]);
    let text = first_restore(&c, IpFamily::V6);
    assert!(
        text.contains("--to-destination [fd00:244::1]:8080"),
        "{text}"
    );
    golden("ipv6", &text);
}

#[test]
fn dual_stack_service_gets_one_ruleset_per_family() {
    let mut s = service("default", "dual", "10.96.0.80", "http", 80);
    s.cluster_ips.push(ip("fd00::80"));
    let mut c = cluster(vec![(s.clone(), TEN_EP[..1].to_vec())]);
    c.put_slice(slice(&s, "dual-v6", &[("fd00:244::1", "node-1")]));
    let mut p = proxier(vec![IpFamily::V4, IpFamily::V6]);
    assert!(p.sync_view(&c, None).ok());
    let v4 = p.last_restore(IpFamily::V4).unwrap();
    let v6 = p.last_restore(IpFamily::V6).unwrap();
    assert!(v4.contains("-d 10.96.0.80 ") && !v4.contains("fd00"));
    assert!(v6.contains("-d fd00::80 ") && !v6.contains("10.96.0.80"));
    assert!(v6.contains("! -s fd00:244::/56 -j KUBE-MARK-MASQ"));
}

#[test]
fn probabilities_spread_evenly_and_the_last_rule_is_unconditional() {
    let s = service("default", "web", "10.96.0.10", "http", 80);
    let eps: Vec<(String, &str)> = (1..=4).map(|i| (format!("10.244.0.{i}"), "n")).collect();
    let eps: Vec<(&str, &str)> = eps.iter().map(|(a, n)| (a.as_str(), *n)).collect();
    let text = first_restore(&cluster(vec![(s, eps)]), IpFamily::V4);
    let probs: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SVC-"))
        .map(|l| {
            l.split("--probability ")
                .nth(1)
                .map(|r| r.split(' ').next().unwrap())
                .unwrap_or("-")
        })
        .collect();
    assert_eq!(
        probs,
        vec!["-", "0.2500000000", "0.3333333333", "0.5000000000", "-"],
        "masquerade rule first, then 1/4, 1/3, 1/2, unconditional"
    );
}

#[test]
fn large_clusters_drop_per_endpoint_comments() {
    let mut c = cluster(vec![]);
    for i in 0..110u32 {
        let s = service(
            "ns",
            &format!("s{i}"),
            &format!("10.96.{}.{}", i / 200, i % 200 + 1),
            "p",
            80,
        );
        let eps: Vec<String> = (0..10).map(|j| format!("10.244.{i}.{}", j + 1)).collect();
        let eps: Vec<(&str, &str)> = eps.iter().map(|a| (a.as_str(), "n")).collect();
        c.put_slice(slice(&s, &format!("s{i}-x"), &eps));
        c.add_service(s);
    }
    let text = first_restore(&c, IpFamily::V4);
    let sep_rule = text
        .lines()
        .find(|l| l.starts_with("-A KUBE-SEP-"))
        .unwrap();
    assert!(!sep_rule.contains("--comment"), "{sep_rule}");
    let svc_rule = text
        .lines()
        .find(|l| l.starts_with("-A KUBE-SERVICES"))
        .unwrap();
    assert!(svc_rule.contains("cluster IP"), "{svc_rule}");
}

/// Three Services, synced once in full.
fn three_services() -> StaticCluster {
    cluster(vec![
        (
            service("default", "a", "10.96.0.1", "http", 80),
            TEN_EP.to_vec(),
        ),
        (
            service("default", "b", "10.96.0.2", "http", 80),
            TEN_EP[..2].to_vec(),
        ),
        (
            service("default", "c", "10.96.0.3", "http", 80),
            TEN_EP[..1].to_vec(),
        ),
    ])
}

fn svc_chain_of(name: &str) -> String {
    service_chain(
        "KUBE-SVC-",
        &ServicePortName {
            service: ServiceName::new("default", name),
            port: "http".into(),
            protocol: Protocol::Tcp,
        },
    )
}

fn declared_chains(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn partial_sync_writes_only_the_changed_service() {
    let mut c = three_services();
    let mut p = proxier(vec![IpFamily::V4]);
    assert!(p.sync_view(&c, None).ok());

    // One endpoint added to b.
    let b = c.services[&ServiceName::new("default", "b")].clone();
    c.put_slice(slice(&b, "b-abc", &TEN_EP));
    let changed = BTreeSet::from([ServiceName::new("default", "b")]);
    let out = p.sync_view(&c, Some(&changed));
    assert!(out.ok(), "{:?}", out.errors);
    let text = p.last_restore(IpFamily::V4).unwrap();
    let chains = declared_chains(text);
    assert!(chains.contains(&svc_chain_of("b")), "{text}");
    assert!(!chains.contains(&svc_chain_of("a")), "{text}");
    assert!(!chains.contains(&svc_chain_of("c")), "{text}");
    let seps: Vec<&String> = chains
        .iter()
        .filter(|c| c.starts_with("KUBE-SEP-"))
        .collect();
    assert_eq!(seps.len(), 3, "b's three endpoint chains only: {seps:?}");
    // b's endpoints changed, not what KUBE-SERVICES says about b: the
    // top-level chains, which grow with the cluster, are left as written.
    for top in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        assert!(!chains.contains(top), "{top} rewritten unchanged:\n{text}");
    }
    // a's chains are still in the kernel, untouched, and referenced.
    let twin = p.iptables();
    assert_eq!(
        twin.chain(IpFamily::V4, "nat", &svc_chain_of("a"))
            .unwrap()
            .len(),
        4
    );
    assert!(p.sync_view(&c, Some(&BTreeSet::new())).ok());
    let chains = declared_chains(p.last_restore(IpFamily::V4).unwrap());
    assert!(
        chains.iter().all(|c| !is_service_chain(c)),
        "nothing changed, nothing drifted: no Service chain rewritten: {chains:?}"
    );
}

#[test]
fn removed_endpoints_and_services_lose_their_chains() {
    let mut c = three_services();
    let mut p = proxier(vec![IpFamily::V4]);
    assert!(p.sync_view(&c, None).ok());
    let a = c.services[&ServiceName::new("default", "a")].clone();
    c.put_slice(slice(&a, "a-abc", &TEN_EP[..1]));
    c.services.remove(&ServiceName::new("default", "c"));
    let changed = BTreeSet::from([
        ServiceName::new("default", "a"),
        ServiceName::new("default", "c"),
    ]);
    assert!(p.sync_view(&c, Some(&changed)).ok());
    let text = p.last_restore(IpFamily::V4).unwrap();
    let deleted: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("-X ")).collect();
    // a lost two endpoints; c lost its SVC and SEP chains.
    assert_eq!(deleted.len(), 4, "{text}");
    assert!(deleted.contains(&svc_chain_of("c").as_str()));
    let twin = p.iptables();
    assert!(
        twin.chain(IpFamily::V4, "nat", &svc_chain_of("c"))
            .is_none()
    );
    let nat_chains: Vec<&String> = twin.tables[&(IpFamily::V4, "nat".to_string())]
        .chains
        .keys()
        .filter(|c| c.starts_with("KUBE-SEP-"))
        .collect();
    assert_eq!(
        nat_chains.len(),
        1 + 2,
        "a's one and b's two endpoints remain"
    );
}

#[test]
fn failed_restore_is_reported_and_forces_a_full_sync() {
    let c = three_services();
    let mut p = proxier(vec![IpFamily::V4]);
    assert!(p.sync_view(&c, None).ok());
    p.iptables_mut().fail_restores = 1;
    let changed = BTreeSet::from([ServiceName::new("default", "a")]);
    let out = p.sync_view(&c, Some(&changed));
    assert_eq!(out.errors.len(), 1);
    assert!(
        matches!(
            &out.errors[0],
            SyncError::Rules {
                family: IpFamily::V4,
                services: 3,
                ..
            }
        ),
        "{}",
        out.errors[0]
    );
    assert!(out.errors[0].to_string().contains("next sync is full"));
    // Next sync, though "partial" with nothing changed, writes everything.
    assert!(p.sync_view(&c, Some(&BTreeSet::new())).ok());
    let chains = declared_chains(p.last_restore(IpFamily::V4).unwrap());
    for s in ["a", "b", "c"] {
        assert!(chains.contains(&svc_chain_of(s)), "{s}");
    }
}

#[test]
fn drift_is_repaired_and_reported_by_the_periodic_sync() {
    let c = three_services();
    let mut p = proxier(vec![IpFamily::V4]);
    assert!(p.sync_view(&c, None).ok());
    let want_a = p
        .iptables()
        .chain(IpFamily::V4, "nat", &svc_chain_of("a"))
        .unwrap()
        .clone();
    // An operator edits a's chain and empties b's.
    p.iptables_mut().set_chain(
        IpFamily::V4,
        "nat",
        &svc_chain_of("a"),
        vec!["-j DROP".into()],
    );
    p.iptables_mut()
        .set_chain(IpFamily::V4, "nat", &svc_chain_of("b"), vec![]);
    // The dry run shows exactly those two Services' chains.
    let lines = dry_run_lines(&mut p, &c);
    let shown: BTreeSet<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(":KUBE-SVC-"))
        .map(|l| format!("KUBE-SVC-{}", l.split(' ').next().unwrap()))
        .collect();
    assert_eq!(
        shown,
        BTreeSet::from([svc_chain_of("a"), svc_chain_of("b")])
    );
    // The periodic (full) sync repairs and reports them.
    let out = p.sync_view(&c, None);
    assert!(out.ok());
    assert_eq!(out.ops.get("repair_chains"), Some(&2));
    assert_eq!(
        p.iptables()
            .chain(IpFamily::V4, "nat", &svc_chain_of("a"))
            .unwrap(),
        &want_a
    );
    assert_eq!(
        p.iptables()
            .chain(IpFamily::V4, "nat", &svc_chain_of("b"))
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn partial_sync_reads_no_dump_and_deletes_what_it_wrote_before() {
    let mut c = three_services();
    let mut p = proxier(vec![IpFamily::V4]);
    assert!(p.sync_view(&c, None).ok());
    // Dumps fail from now on: a partial sync must not need one.
    p.iptables_mut().fail_saves = true;
    c.services.remove(&ServiceName::new("default", "c"));
    let changed = BTreeSet::from([ServiceName::new("default", "c")]);
    let out = p.sync_view(&c, Some(&changed));
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(out.ops.get("delete_chains"), Some(&2), "c's SVC and SEP");
    assert!(
        p.iptables()
            .chain(IpFamily::V4, "nat", &svc_chain_of("c"))
            .is_none()
    );
    // A full sync cannot go without its dump: reported, retried in full.
    let out = p.sync_view(&c, None);
    assert!(!out.ok());
    assert!(
        matches!(
            &out.errors[0],
            SyncError::Snapshot {
                family: IpFamily::V4,
                ..
            }
        ),
        "{:?}",
        out.errors
    );
}

#[test]
fn flushed_tables_are_detected_by_the_canary_and_rebuilt() {
    let c = three_services();
    let mut p = proxier(vec![IpFamily::V4]);
    assert!(p.sync_view(&c, None).ok());
    // Someone wipes everything (iptables -F; iptables -X in every table).
    p.iptables_mut().tables.clear();
    let out = p.sync_view(&c, Some(&BTreeSet::new()));
    assert!(out.ok(), "{:?}", out.errors);
    let text = p.last_restore(IpFamily::V4).unwrap();
    assert!(text.starts_with("*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n"));
    // Upstream's 9 filter and 3 nat jumps, and the 2 into KUBE-FIREWALL.
    assert_eq!(out.ops.get("insert_jumps"), Some(&14));
    assert_eq!(
        p.iptables()
            .chain(IpFamily::V4, "nat", "PREROUTING")
            .unwrap()
            .len(),
        1
    );
    // After that, a quiet partial sync inserts no jump twice.
    assert!(p.sync_view(&c, Some(&BTreeSet::new())).ok());
    assert!(!p.last_restore(IpFamily::V4).unwrap().contains("-I "));
}

#[test]
fn foreign_chains_and_rules_are_never_touched() {
    let c = three_services();
    let mut twin = IptablesTwin::new();
    twin.restore(
        IpFamily::V4,
        "*nat\n:OPERATOR - [0:0]\n:KUBE-SEP-STALE0000000000 - [0:0]\n-A OPERATOR -j RETURN\n-A PREROUTING -j OPERATOR\nCOMMIT\n*filter\n:KUBE-FIREWALL - [0:0]\n-A INPUT -j KUBE-FIREWALL\nCOMMIT\n",
    )
    .unwrap();
    // Without localhost NodePorts, kubelet's KUBE-FIREWALL is foreign.
    let cfg = Config {
        iptables_localhost_nodeports: false,
        ..config()
    };
    let mut p = IptablesProxier::new(twin, cfg, vec![IpFamily::V4]);
    assert!(p.sync_view(&c, None).ok());
    let text = p.last_restore(IpFamily::V4).unwrap().to_string();
    assert!(
        text.contains("-X KUBE-SEP-STALE0000000000"),
        "stale service chain goes"
    );
    assert!(!text.contains("OPERATOR"));
    assert!(!text.contains("KUBE-FIREWALL"));
    let t = p.iptables();
    assert_eq!(
        t.chain(IpFamily::V4, "nat", "OPERATOR").unwrap(),
        &vec!["-j RETURN".to_string()]
    );
    assert!(
        t.chain(IpFamily::V4, "nat", "PREROUTING")
            .unwrap()
            .contains(&"-j OPERATOR".to_string())
    );

    // Cleanup removes everything of ours and nothing else.
    let errors = p.cleanup();
    assert!(errors.is_empty(), "{errors:?}");
    let t = p.iptables();
    for ((_, table), tt) in &t.tables {
        for (chain, rules) in &tt.chains {
            assert!(
                !chain.starts_with("KUBE-") || chain == "KUBE-FIREWALL",
                "{table} {chain} left behind"
            );
            for r in rules {
                assert!(
                    !r.contains("KUBE-") || r.contains("KUBE-FIREWALL"),
                    "{table} {chain}: {r}"
                );
            }
        }
    }
    assert_eq!(
        t.chain(IpFamily::V4, "nat", "PREROUTING").unwrap(),
        &vec!["-j OPERATOR".to_string()]
    );
    assert_eq!(
        t.chain(IpFamily::V4, "filter", "INPUT").unwrap(),
        &vec!["-j KUBE-FIREWALL".to_string()]
    );
}

#[test]
fn cleanup_keeps_going_when_a_chain_is_still_referenced() {
    let mut twin = IptablesTwin::new();
    twin.restore(
        IpFamily::V4,
        "*nat\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]\n:OTHER - [0:0]\n-A OTHER -j KUBE-MARK-MASQ\nCOMMIT\n",
    )
    .unwrap();
    let errors = cleanup_iptables_leftovers(&mut twin, &[IpFamily::V4], Leftovers::All);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].to_string().contains("KUBE-MARK-MASQ"),
        "{}",
        errors[0]
    );
    assert!(
        twin.chain(IpFamily::V4, "nat", "KUBE-SVC-AAAAAAAAAAAAAAAA")
            .is_none()
    );
    assert!(twin.chain(IpFamily::V4, "nat", "OTHER").is_some());
}

#[test]
fn service_chains_only_cleanup_leaves_shared_top_level_chains() {
    let c = three_services();
    let mut p = proxier(vec![IpFamily::V4]);
    assert!(p.sync_view(&c, None).ok());
    // Another mode takes KUBE-SERVICES over (rewrites it without our jumps).
    p.iptables_mut()
        .set_chain(IpFamily::V4, "nat", "KUBE-SERVICES", vec![]);
    let errors = cleanup_iptables_leftovers(
        p.iptables_mut(),
        &[IpFamily::V4],
        Leftovers::ServiceChainsOnly,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let nat = &p.iptables().tables[&(IpFamily::V4, "nat".to_string())];
    assert!(nat.chains.keys().all(|c| !is_service_chain(c)));
    assert!(nat.chains.contains_key("KUBE-SERVICES"));
    assert!(
        nat.chains["PREROUTING"]
            .iter()
            .any(|r| r.contains("KUBE-SERVICES"))
    );
}

#[test]
fn dry_run_changes_nothing_and_shows_the_diff() {
    let c = three_services();
    let mut p = proxier(vec![IpFamily::V4]);
    let lines = dry_run_lines(&mut p, &c);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!(":{}", svc_chain_of("a"))))
    );
    assert!(p.iptables().restores.is_empty());
    assert!(p.sync_view(&c, None).ok());
    let lines = dry_run_lines(&mut p, &c);
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with(":KUBE-SVC-") || l.starts_with(":KUBE-SEP-")),
        "in sync: only top-level chains: {lines:#?}"
    );
}

#[test]
fn headless_and_other_family_services_are_skipped() {
    let mut h = service("default", "headless", "10.96.0.9", "http", 80);
    h.headless = true;
    h.cluster_ips.clear();
    let v6 = service("default", "v6only", "fd00::9", "http", 80);
    let c = cluster(vec![(h, TEN_EP.to_vec()), (v6, vec![])]);
    let plan = planner::plan(&c, &Default::default(), &config(), IpFamily::V4);
    assert!(plan.services.is_empty());
    assert_eq!(plan.ruleset.nat.chains.len(), 4, "top-level chains only");
}

#[test]
fn a_flush_of_the_nat_table_alone_is_noticed() {
    let c = three_services();
    let mut p = proxier(vec![IpFamily::V4]);
    assert!(p.sync_view(&c, None).ok());
    // iptables -t nat -F; iptables -t nat -X: mangle and filter untouched.
    let nat = p
        .iptables_mut()
        .tables
        .get_mut(&(IpFamily::V4, "nat".to_string()))
        .unwrap();
    nat.chains.retain(|c, _| !c.starts_with("KUBE-"));
    nat.chains.values_mut().for_each(Vec::clear);
    let out = p.sync_view(&c, Some(&BTreeSet::new()));
    assert!(out.ok(), "{:?}", out.errors);
    let chains = declared_chains(p.last_restore(IpFamily::V4).unwrap());
    assert!(
        chains.contains(&svc_chain_of("a")),
        "full sync after the flush"
    );
    assert_eq!(out.ops.get("insert_jumps"), Some(&3), "the three nat jumps");
}

/// Upstream's iptables proxier puts its local detector's IfNotLocal on the
/// cluster-IP masquerade rule and IfLocal on the "pod traffic" rule of a
/// Local-policy Service's external chain (proxier.go syncProxyRules).
#[test]
fn detect_local_modes_shape_the_masquerade_and_pod_traffic_rules() {
    let mut s = service("default", "lb", "10.96.0.40", "http", 80);
    s.service_type = ServiceType::NodePort;
    s.ports[0].node_port = Some(30040);
    s.external_traffic_policy = crate::cluster::TrafficPolicy::Local;
    let with = |mode: crate::config::LocalMode, node_cidrs: Vec<IpNet>| {
        let mut c = cluster(vec![(s.clone(), TEN_EP.to_vec())]);
        c.node.as_mut().unwrap().pod_cidrs = node_cidrs;
        let mut cfg = config();
        cfg.detect_local_mode = mode;
        cfg.pod_bridge_interface = "cni0".into();
        cfg.pod_interface_name_prefix = "veth".into();
        let mut p = IptablesProxier::new(IptablesTwin::new(), cfg, vec![IpFamily::V4]);
        assert!(p.sync_view(&c, None).ok());
        p.last_restore(IpFamily::V4).unwrap().to_string()
    };
    use crate::config::LocalMode;
    let cases = [
        (
            LocalMode::ClusterCidr,
            vec![],
            "! -s 10.244.0.0/16",
            "-s 10.244.0.0/16",
        ),
        (
            LocalMode::NodeCidr,
            vec![cidr("10.244.5.0/24")],
            "! -s 10.244.5.0/24",
            "-s 10.244.5.0/24",
        ),
        (LocalMode::BridgeInterface, vec![], "! -i cni0", "-i cni0"),
        (
            LocalMode::InterfaceNamePrefix,
            vec![],
            "! -i veth+",
            "-i veth+",
        ),
    ];
    for (mode, node_cidrs, not_local, local) in cases {
        let text = with(mode, node_cidrs);
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("{not_local} -j KUBE-MARK-MASQ"))),
            "{mode:?}: no masquerade rule with {not_local:?}\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.contains("pod traffic for")
                    && l.contains(&format!(" {local} -j KUBE-SVC-"))),
            "{mode:?}: no pod-traffic rule with {local:?}\n{text}"
        );
    }
    // NodeCIDR before the Node has podCIDRs: neither rule.
    let text = with(LocalMode::NodeCidr, vec![]);
    assert!(!text.contains("pod traffic for"), "{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.contains("! -s") && !l.starts_with("-A KUBE-FIREWALL ")),
        "{text}"
    );
}

/// `nodePortAddresses: [primary]`: the Node's first address of each family
/// (or `--bind-address`, when set) as a /32 or /128, as upstream's
/// server.go resolves it.
#[test]
fn primary_nodeport_addresses_come_from_the_node_and_bind_address() {
    let mut s = service("default", "np", "10.96.0.31", "http", 80);
    s.service_type = ServiceType::NodePort;
    s.ports[0].node_port = Some(30081);
    let mut c = cluster(vec![(s, TEN_EP[..1].to_vec())]);
    // The Node object names 10.0.2.1 first; the interfaces have both.
    c.node.as_mut().unwrap().addresses = vec![ip("10.0.2.1"), ip("fd00:1::1")];
    let restore = |bind: &str| {
        let mut cfg = config();
        cfg.nodeport_primary = true;
        cfg.nodeport_addresses = crate::config::NodePortAddresses::Cidrs(vec![]);
        cfg.bind_address = ip(bind);
        let mut p = IptablesProxier::new(IptablesTwin::new(), cfg, vec![IpFamily::V4])
            .with_addresses(Box::new(|| Ok(vec![ip("10.0.1.1"), ip("10.0.2.1")])));
        assert!(p.sync_view(&c, None).ok());
        p.last_restore(IpFamily::V4).unwrap().to_string()
    };
    let nodeport_jumps = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.ends_with("-j KUBE-NODEPORTS") && l.starts_with("-A KUBE-SERVICES"))
            .map(|l| l.split(" -d ").nth(1).unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        nodeport_jumps(&restore("0.0.0.0")),
        ["10.0.2.1 -j KUBE-NODEPORTS"]
    );
    assert_eq!(
        nodeport_jumps(&restore("10.0.1.1")),
        ["10.0.1.1 -j KUBE-NODEPORTS"]
    );
}

/// A partial sync writes a top-level chain exactly when its rules change:
/// a new Service adds its KUBE-SERVICES jump, so KUBE-SERVICES is written,
/// while KUBE-POSTROUTING and KUBE-MARK-MASQ, unchanged, are not. The chain
/// written whole is the plan's, so the kernel ends up as a full sync leaves it.
#[test]
fn a_partial_sync_rewrites_a_top_level_chain_only_when_it_changes() {
    let mut c = three_services();
    let mut p = proxier(vec![IpFamily::V4]);
    assert!(p.sync_view(&c, None).ok());
    let d = service("default", "d", "10.96.0.4", "http", 80);
    c.put_slice(slice(&d, "d-abc", &TEN_EP[..1]));
    c.add_service(d);
    let changed = BTreeSet::from([ServiceName::new("default", "d")]);
    let out = p.sync_view(&c, Some(&changed));
    assert!(out.ok(), "{:?}", out.errors);
    let text = p.last_restore(IpFamily::V4).unwrap().to_string();
    let chains = declared_chains(&text);
    assert!(chains.contains("KUBE-SERVICES"), "{text}");
    assert!(chains.contains(&svc_chain_of("d")), "{text}");
    for unchanged in ["KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KUBE-FORWARD"] {
        assert!(
            !chains.contains(unchanged),
            "{unchanged} rewritten:\n{text}"
        );
    }
    // What the partial syncs built is what one full sync builds.
    let mut fresh = proxier(vec![IpFamily::V4]);
    assert!(fresh.sync_view(&c, None).ok());
    let save = |p: &mut IptablesProxier<IptablesTwin>| p.iptables_mut().save(IpFamily::V4).unwrap();
    assert_eq!(save(&mut p), save(&mut fresh));
}

/// A dry run's output, one line per element.
fn dry_run_lines(p: &mut IptablesProxier<IptablesTwin>, c: &StaticCluster) -> Vec<String> {
    let pieces = p.dry_run_view(c).unwrap();
    pieces.join("\n").lines().map(str::to_string).collect()
}
