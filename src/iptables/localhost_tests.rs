//! NodePorts on 127.0.0.1 (`--iptables-localhost-nodeports`): the rules
//! against upstream's, and KUBE-FIREWALL's life in the twin.
//!
//! Expectations are upstream v1.36's pkg/proxy/iptables: proxier_test.go's
//! expected tables (which run with localhostNodePorts true) and
//! TestNodePorts' cases, and, where its tests set the field directly,
//! proxier.go's NewProxier (localhostNodePorts turned off without IPv4
//! loopback in the NodePort addresses) and syncProxyRules.

use super::IptablesProxier;
use super::proxier_tests::{TEN_EP, cidr, cluster, config, first_restore, ip, service};
use crate::cluster::{IpFamily, ServiceType, StaticCluster};
use crate::config::{Config, NodePortAddresses};
use crate::kernel::iptables::{Iptables, IptablesTwin};
use crate::netfilter::cleanup::{Leftovers, cleanup_iptables_leftovers};
use crate::sync::Proxier;

const TAIL: &str = "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";
/// Upstream's KUBE-FIREWALL rule, as TestNodePorts expects it.
const GUARD: &str = "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP";

/// A NodePort Service on 30080 (upstream's TestNodePorts has one on 3001),
/// dual-stack so that both families have it.
fn nodeport() -> StaticCluster {
    let mut s = service("default", "np", "10.96.0.30", "http", 80);
    s.service_type = ServiceType::NodePort;
    s.ports[0].node_port = Some(30080);
    cluster(vec![(s, TEN_EP[..2].to_vec())])
}

fn restore(cfg: Config, family: IpFamily) -> String {
    let mut p = IptablesProxier::new(IptablesTwin::new(), cfg, vec![family]).with_addresses(
        Box::new(|| {
            Ok(vec![
                ip("127.0.0.1"),
                ip("::1"),
                ip("192.168.0.1"),
                ip("10.0.1.1"),
                ip("2001:db8::1"),
            ])
        }),
    );
    let out = p.sync_view(&nodeport(), None);
    assert!(out.ok(), "{:?}", out.errors);
    p.last_restore(family).unwrap().to_string()
}

fn with(flag: bool, cidrs: &[&str]) -> Config {
    Config {
        iptables_localhost_nodeports: flag,
        nodeport_addresses: if cidrs.is_empty() {
            NodePortAddresses::All
        } else {
            NodePortAddresses::Cidrs(cidrs.iter().map(|c| cidr(c)).collect())
        },
        ..config()
    }
}

fn tails(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with(TAIL)).collect()
}

fn has_guard(text: &str) -> bool {
    text.contains("KUBE-FIREWALL")
}

#[test]
fn the_default_serves_nodeports_on_localhost_as_upstream() {
    let text = first_restore(&nodeport(), IpFamily::V4);
    // proxier_test.go's expected nat table: no `! -d 127.0.0.0/8`.
    assert_eq!(
        tails(&text),
        [format!(
            "{TAIL} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
        )]
    );
    // Its expected filter table: KUBE-FIREWALL with one rule.
    assert!(text.contains(":KUBE-FIREWALL - [0:0]\n"), "{text}");
    let guard: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("-A KUBE-FIREWALL "))
        .collect();
    assert_eq!(guard, [GUARD]);
    // iptablesKubeletJumpChains: no comment, no match, prepended.
    assert!(text.contains("\n-I INPUT 1 -j KUBE-FIREWALL\n"), "{text}");
    assert!(text.contains("\n-I OUTPUT 1 -j KUBE-FIREWALL\n"), "{text}");
    assert_eq!(text.matches("-j KUBE-FIREWALL").count(), 2);
    // Without its nfacct counter upstream writes no per-NodePort
    // `-d 127.0.0.0/8` rule: KUBE-NODEPORTS has the one rule per NodePort.
    let nodeports: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("-A KUBE-NODEPORTS "))
        .collect();
    assert_eq!(nodeports.len(), 1, "{nodeports:?}");
    assert!(!nodeports[0].contains("127.0.0.0/8"));
}

#[test]
fn the_flag_false_keeps_loopback_out_and_writes_no_guard() {
    // TestNodePorts "ipv4, localhost-nodeports disabled": no firewall rule;
    // syncProxyRules keeps `! -d 127.0.0.0/8` on the tail.
    let text = restore(with(false, &[]), IpFamily::V4);
    assert_eq!(
        tails(&text),
        [format!(
            "{TAIL} -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS"
        )]
    );
    assert!(!has_guard(&text), "{text}");
}

#[test]
fn ipv6_never_serves_nodeports_on_localhost() {
    // TestNodePorts "ipv6, localhost-nodeports enabled": no firewall; the
    // tail keeps `! -d ::1/128`.
    for flag in [true, false] {
        let text = restore(with(flag, &[]), IpFamily::V6);
        assert_eq!(
            tails(&text),
            [format!(
                "{TAIL} -m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS"
            )]
        );
        assert!(!has_guard(&text), "{text}");
    }
    // An explicit ::1 is skipped (logged by upstream), the guard stays out.
    let text = restore(with(true, &["2001:db8::/64", "::1/128"]), IpFamily::V6);
    assert_eq!(
        tails(&text),
        [format!("{TAIL} -d 2001:db8::1 -j KUBE-NODEPORTS")]
    );
    assert!(!has_guard(&text), "{text}");
}

#[test]
fn explicit_cidrs_with_loopback_get_its_address() {
    let cidrs = ["192.168.0.0/24", "127.0.0.1/32"];
    // Flag true: 127.0.0.1/32 is IPv4 loopback, so NewProxier keeps
    // localhostNodePorts, and syncProxyRules writes one tail per node IP,
    // loopback included.
    let text = restore(with(true, &cidrs), IpFamily::V4);
    let mut got = tails(&text);
    got.sort();
    assert_eq!(
        got,
        [
            format!("{TAIL} -d 127.0.0.1 -j KUBE-NODEPORTS"),
            format!("{TAIL} -d 192.168.0.1 -j KUBE-NODEPORTS"),
        ]
    );
    assert!(text.contains(GUARD), "{text}");
    // TestNodePorts "localhost-nodeports disabled, localhost in
    // nodeport-addresses": loopback skipped, no firewall.
    let text = restore(with(false, &cidrs), IpFamily::V4);
    assert_eq!(
        tails(&text),
        [format!("{TAIL} -d 192.168.0.1 -j KUBE-NODEPORTS")]
    );
    assert!(!has_guard(&text), "{text}");
}

#[test]
fn explicit_cidrs_without_loopback_turn_it_off() {
    // NewProxier: no IPv4 loopback in the NodePort addresses, so
    // localhostNodePorts is false whatever the flag says.
    let text = restore(with(true, &["192.168.0.0/24", "10.0.0.0/8"]), IpFamily::V4);
    let mut got = tails(&text);
    got.sort();
    assert_eq!(
        got,
        [
            format!("{TAIL} -d 10.0.1.1 -j KUBE-NODEPORTS"),
            format!("{TAIL} -d 192.168.0.1 -j KUBE-NODEPORTS"),
        ]
    );
    assert!(!has_guard(&text), "{text}");
    // Only IPv6 CIDRs leave IPv4 at 0.0.0.0/0 (NewNodePortAddresses):
    // match-all, with loopback.
    let text = restore(with(true, &["2001:db8::/64"]), IpFamily::V4);
    assert_eq!(
        tails(&text),
        [format!(
            "{TAIL} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
        )]
    );
    assert!(text.contains(GUARD), "{text}");
}

#[test]
fn kubelets_chain_is_shared_and_never_removed() {
    // kubelet already wrote KUBE-FIREWALL and its jumps (its own rule,
    // the same as upstream's) next to an operator's rule.
    let mut twin = IptablesTwin::new();
    twin.restore(
        IpFamily::V4,
        &format!(
            "*filter\n:KUBE-FIREWALL - [0:0]\n{GUARD}\n-A INPUT -j KUBE-FIREWALL\n-A OUTPUT -j KUBE-FIREWALL\n-A INPUT -j ACCEPT\nCOMMIT\n"
        ),
    )
    .unwrap();
    let mut p = IptablesProxier::new(twin, config(), vec![IpFamily::V4]);
    assert!(p.sync_view(&nodeport(), None).ok());
    let guard = GUARD.trim_start_matches("-A KUBE-FIREWALL ").to_string();
    let t = p.iptables();
    assert_eq!(
        t.chain(IpFamily::V4, "filter", "KUBE-FIREWALL").unwrap(),
        &vec![guard.clone()]
    );
    for from in ["INPUT", "OUTPUT"] {
        let rules = t.chain(IpFamily::V4, "filter", from).unwrap();
        // EnsureRule: present once, so not inserted again.
        assert_eq!(
            rules.iter().filter(|r| *r == "-j KUBE-FIREWALL").count(),
            1,
            "{from}: {rules:?}"
        );
    }
    // A second full sync changes no jump.
    assert!(p.sync_view(&nodeport(), None).ok());
    assert!(!p.last_restore(IpFamily::V4).unwrap().contains("-I "));

    // --cleanup (and a switch to the IPVS mode) leaves it, as upstream's
    // CleanupLeftovers does, and removes every chain of kproxy's.
    assert!(p.cleanup().is_empty());
    let t = p.iptables_mut();
    assert!(cleanup_iptables_leftovers(t, &[IpFamily::V4], Leftovers::All).is_empty());
    assert_eq!(
        t.chain(IpFamily::V4, "filter", "KUBE-FIREWALL").unwrap(),
        &vec![guard]
    );
    assert_eq!(
        t.chain(IpFamily::V4, "filter", "INPUT").unwrap(),
        &vec!["-j KUBE-FIREWALL".to_string(), "-j ACCEPT".to_string()]
    );
    assert_eq!(
        t.chain(IpFamily::V4, "filter", "OUTPUT").unwrap(),
        &vec!["-j KUBE-FIREWALL".to_string()]
    );
    assert!(t.chain(IpFamily::V4, "filter", "KUBE-FORWARD").is_none());
    assert!(t.chain(IpFamily::V4, "nat", "KUBE-SERVICES").is_none());
}

#[test]
fn on_an_empty_kernel_the_jumps_come_first() {
    // Upstream ensures the kubelet jumps after its own, each prepended.
    let mut p = IptablesProxier::new(IptablesTwin::new(), config(), vec![IpFamily::V4]);
    assert!(p.sync_view(&nodeport(), None).ok());
    let t = p.iptables();
    for from in ["INPUT", "OUTPUT"] {
        let rules = t.chain(IpFamily::V4, "filter", from).unwrap();
        assert_eq!(rules[0], "-j KUBE-FIREWALL", "{from}: {rules:?}");
    }
}
