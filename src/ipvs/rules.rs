//! IPVS mode's iptables companions: the few fixed rules that masquerade,
//! accept and filter Service traffic around IPVS, each matching one of the
//! ipsets in `sets.rs`. Pure: the chains follow from the sets and settings.
//!
//! The rules do not grow with the cluster (the sets do). Chain names,
//! jumps, comments and the mark are upstream kube-proxy's
//! (pkg/proxy/ipvs/proxier.go, writeIptablesRules), so `iptables-save`
//! reads the same as under it.

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::sets::{DesiredSets, Set};
use crate::config::{Config, LocalDetector};
use crate::net::IpFamily;
use crate::netfilter::chains::{
    FORWARDING_RULES, KUBE_FORWARD, KUBE_IPVS_FILTER, KUBE_IPVS_OUT_FILTER, KUBE_LOAD_BALANCER,
    KUBE_MARK_MASQ, KUBE_NODE_PORT, KUBE_PROXY_FIREWALL, KUBE_SERVICES,
    KUBE_SOURCE_RANGES_FIREWALL, forward, jump, mark_masq, nat_jumps, postrouting, quoted as q,
    top_chain,
};
use crate::netfilter::local::LocalMatch;
use crate::netfilter::ruleset::{Jump, Ruleset, Table};

/// What the rules depend on besides the sets.
#[derive(Clone, Debug, Default)]
pub struct RuleConfig {
    pub masquerade_all: bool,
    /// `--detect-local-mode` and its settings.
    pub local: LocalDetector,
    /// The Node's podCIDRs, for `--detect-local-mode NodeCIDR` (filled in
    /// from the Node at each plan).
    pub node_pod_cidrs: Vec<IpNet>,
    pub mark: u32,
}

impl From<&Config> for RuleConfig {
    fn from(c: &Config) -> Self {
        Self {
            masquerade_all: c.masquerade_all,
            local: c.local_detector(),
            node_pod_cidrs: Vec::new(),
            mark: c.masquerade_mark(),
        }
    }
}

impl RuleConfig {
    fn local(&self, family: IpFamily) -> LocalMatch {
        LocalMatch::resolve(&self.local, &self.node_pod_cidrs, family)
    }
}

/// The companion rules of each family in `families`.
pub fn companion_rules(
    families: &[IpFamily],
    sets: &DesiredSets,
    cfg: &RuleConfig,
) -> BTreeMap<IpFamily, Ruleset> {
    families
        .iter()
        .map(|&f| (f, ruleset(f, sets, cfg)))
        .collect()
}

/// Helpers over one family's sets.
struct Sets<'a> {
    family: IpFamily,
    sets: &'a DesiredSets,
}

impl Sets<'_> {
    fn name(&self, s: Set) -> String {
        s.name(self.family)
    }

    fn has(&self, s: Set) -> bool {
        !self.sets.is_empty(self.family, s)
    }

    /// `-m comment --comment "…" -m set --match-set NAME FLAGS TAIL`.
    fn commented(&self, s: Set, flags: &str, tail: &str) -> String {
        format!(
            "-m comment --comment {} -m set --match-set {} {flags} {tail}",
            q(s.comment()),
            self.name(s)
        )
    }
}

/// The companion rules for `family`. A rule whose set is empty is left out,
/// as upstream does, except the filters that must always hold.
pub fn ruleset(family: IpFamily, sets: &DesiredSets, cfg: &RuleConfig) -> Ruleset {
    let s = Sets { family, sets };
    let loopback = s
        .has(Set::LoopBack)
        .then(|| s.commented(Set::LoopBack, "dst,dst,src", "-j MASQUERADE"));
    Ruleset {
        nat: Table {
            chains: vec![
                top_chain(KUBE_SERVICES, services(&s, cfg)),
                postrouting(cfg.mark, loopback),
                top_chain(KUBE_NODE_PORT, node_port(&s)),
                top_chain(KUBE_LOAD_BALANCER, load_balancer(&s)),
                mark_masq(cfg.mark),
            ],
        },
        filter: Table {
            chains: vec![
                forward(cfg.mark, false),
                top_chain(
                    KUBE_NODE_PORT,
                    vec![s.commented(Set::HealthCheckNodePort, "dst", "-j ACCEPT")],
                ),
                top_chain(KUBE_PROXY_FIREWALL, proxy_firewall(&s)),
                top_chain(KUBE_SOURCE_RANGES_FIREWALL, source_ranges(&s)),
                top_chain(KUBE_IPVS_FILTER, ipvs_filter(&s)),
                top_chain(KUBE_IPVS_OUT_FILTER, ipvs_out_filter(&s)),
            ],
        },
        jumps: jumps(),
    }
}

/// nat KUBE-SERVICES: masquerade what needs it, accept external IPs, hand
/// node-local destinations to KUBE-NODE-PORT.
fn services(s: &Sets<'_>, cfg: &RuleConfig) -> Vec<String> {
    let mut rules = vec![match s.family {
        IpFamily::V4 => "-s 127.0.0.0/8 -j RETURN".to_string(),
        IpFamily::V6 => "-s ::1/128 -j RETURN".to_string(),
    }];
    if s.has(Set::LoadBalancer) {
        rules.push(s.commented(
            Set::LoadBalancer,
            "dst,dst",
            &format!("-j {KUBE_LOAD_BALANCER}"),
        ));
    }
    if s.has(Set::ClusterIp) {
        let local = cfg.local(s.family);
        let masq = format!("-j {KUBE_MARK_MASQ}");
        rules.push(match (cfg.masquerade_all, local.if_not_local()) {
            (true, _) => s.commented(Set::ClusterIp, "dst,dst", &masq),
            // Traffic from outside the pod network to a cluster IP.
            (false, Some(not_local)) => format!(
                "{not_local} {}",
                s.commented(Set::ClusterIp, "dst,dst", &masq)
            ),
            // Without a local detector only the node's own traffic sourced
            // from a Service VIP needs it.
            (false, None) => s.commented(Set::ClusterIp, "src,dst", &masq),
        });
    }
    for (set, masq) in [(Set::ExternalIp, true), (Set::ExternalIpLocal, false)] {
        if !s.has(set) {
            continue;
        }
        if masq {
            rules.push(s.commented(set, "dst,dst", &format!("-j {KUBE_MARK_MASQ}")));
        }
        // Accept external IPs arriving from outside (not bridged, not from
        // the node itself) and those sent to a local address.
        rules.push(s.commented(
            set,
            "dst,dst",
            "-m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT",
        ));
        rules.push(s.commented(set, "dst,dst", "-m addrtype --dst-type LOCAL -j ACCEPT"));
    }
    rules.push(format!("-m addrtype --dst-type LOCAL -j {KUBE_NODE_PORT}"));
    for set in [Set::ClusterIp, Set::LoadBalancer] {
        if s.has(set) {
            rules.push(format!(
                "-m set --match-set {} dst,dst -j ACCEPT",
                s.name(set)
            ));
        }
    }
    rules
}

/// nat KUBE-LOAD-BALANCER: masquerade unless the policy is Local.
fn load_balancer(s: &Sets<'_>) -> Vec<String> {
    let mut rules = Vec::new();
    if s.has(Set::LoadBalancerLocal) {
        rules.push(s.commented(Set::LoadBalancerLocal, "dst,dst", "-j RETURN"));
    }
    rules.push(format!("-j {KUBE_MARK_MASQ}"));
    rules
}

/// nat KUBE-NODE-PORT: per protocol, leave Local-policy clients alone and
/// masquerade the rest.
fn node_port(s: &Sets<'_>) -> Vec<String> {
    let mut rules = Vec::new();
    for (proto, plain, local, flags) in [
        ("tcp", Set::NodePortTcp, Set::NodePortLocalTcp, "dst"),
        ("udp", Set::NodePortUdp, Set::NodePortLocalUdp, "dst"),
        ("sctp", Set::NodePortSctp, Set::NodePortLocalSctp, "dst,dst"),
    ] {
        if s.has(local) {
            rules.push(format!(
                "-p {proto} {}",
                s.commented(local, flags, "-j RETURN")
            ));
        }
        if s.has(plain) {
            rules.push(format!(
                "-p {proto} {}",
                s.commented(plain, flags, &format!("-j {KUBE_MARK_MASQ}"))
            ));
        }
    }
    rules
}

/// filter KUBE-PROXY-FIREWALL: load balancers with source ranges go through
/// KUBE-SOURCE-RANGES-FIREWALL.
fn proxy_firewall(s: &Sets<'_>) -> Vec<String> {
    if !s.has(Set::LoadBalancerFw) {
        return Vec::new();
    }
    vec![s.commented(
        Set::LoadBalancerFw,
        "dst,dst",
        &format!("-j {KUBE_SOURCE_RANGES_FIREWALL}"),
    )]
}

/// filter KUBE-SOURCE-RANGES-FIREWALL: allowed sources return, the rest drop.
fn source_ranges(s: &Sets<'_>) -> Vec<String> {
    let mut rules = Vec::new();
    for set in [Set::LoadBalancerSourceCidr, Set::LoadBalancerSourceIp] {
        if s.has(set) {
            rules.push(s.commented(set, "dst,dst,src", "-j RETURN"));
        }
    }
    rules.push("-j DROP".to_string());
    rules
}

/// filter KUBE-IPVS-FILTER: new connections to a kube-ipvs0 address on a
/// port no Service serves would otherwise reach whatever listens on the node.
fn ipvs_filter(s: &Sets<'_>) -> Vec<String> {
    let reject = match s.family {
        IpFamily::V4 => "icmp-port-unreachable",
        IpFamily::V6 => "icmp6-port-unreachable",
    };
    let mut rules: Vec<String> = [
        (Set::LoadBalancer, "dst,dst"),
        (Set::ClusterIp, "dst,dst"),
        (Set::ExternalIp, "dst,dst"),
        (Set::ExternalIpLocal, "dst,dst"),
        (Set::HealthCheckNodePort, "dst"),
    ]
    .iter()
    .map(|(set, f)| format!("-m set --match-set {} {f} -j RETURN", s.name(*set)))
    .collect();
    rules.push(format!(
        "-m conntrack --ctstate NEW -m set --match-set {} dst -j REJECT --reject-with {reject}",
        s.name(Set::IpvsIps)
    ));
    rules
}

/// filter KUBE-IPVS-OUT-FILTER: a load balancer whose source ranges leave
/// the node out: the node's own connections to it (IPVS makes the LB IP
/// their source too) are dropped explicitly, where an allowed node gets a
/// KUBE-LOAD-BALANCER-SOURCE-IP member instead (upstream:
/// lbNoNodeAccessIPPortProtocolEntries in pkg/proxy/ipvs/proxier.go).
/// Written as iptables-save prints it.
fn ipvs_out_filter(s: &Sets<'_>) -> Vec<String> {
    let node_allowed = s.sets.get(s.family, Set::LoadBalancerSourceIp);
    let host = match s.family {
        IpFamily::V4 => 32,
        IpFamily::V6 => 128,
    };
    let mut rules = Vec::new();
    for entry in s
        .sets
        .get(s.family, Set::LoadBalancerFw)
        .into_iter()
        .flatten()
    {
        let Some((ip, proto_port)) = entry.split_once(',') else {
            continue;
        };
        if node_allowed.is_some_and(|m| m.contains(&format!("{entry},{ip}"))) {
            continue;
        }
        let Some((proto, port)) = proto_port.split_once(':') else {
            continue;
        };
        let vproto = match proto {
            "tcp" => 6,
            "udp" => 17,
            "sctp" => 132,
            _ => continue,
        };
        rules.push(format!(
            "-s {ip}/{host} -m ipvs --vproto {vproto} --vaddr {ip} --vport {port} -j DROP"
        ));
    }
    rules
}

/// Jumps from the built-in chains, in upstream's order; each missing one is
/// inserted at the top, so the last listed ends up first.
fn jumps() -> Vec<Jump> {
    let filter = |from, comment: &str, to: &str| jump("filter", from, "", comment, to);
    let mut jumps = nat_jumps().to_vec();
    jumps.extend([
        filter("FORWARD", FORWARDING_RULES, KUBE_FORWARD),
        filter("INPUT", "kubernetes health check rules", KUBE_NODE_PORT),
        filter("INPUT", "kube-proxy firewall rules", KUBE_PROXY_FIREWALL),
        filter("FORWARD", "kube-proxy firewall rules", KUBE_PROXY_FIREWALL),
        filter("INPUT", "kubernetes ipvs access filter", KUBE_IPVS_FILTER),
        filter(
            "OUTPUT",
            "kubernetes ipvs access filter",
            KUBE_IPVS_OUT_FILTER,
        ),
    ]);
    jumps
}
