//! The iptables planner: cluster state → the chains upstream kube-proxy's
//! iptables mode would program, for one IP family. Pure: no I/O.
//!
//! Layout (nat): PREROUTING/OUTPUT → KUBE-SERVICES, which matches each
//! Service VIP and jumps to its KUBE-SVC-* (policy Cluster) or KUBE-SVL-*
//! (policy Local) chain, or for external destinations (NodePorts, external
//! IPs, load-balancer IPs) to KUBE-EXT-*, which marks for masquerade or
//! short-circuits local traffic, then jumps to the policy chain; KUBE-FW-*
//! filters load-balancer traffic by source range. Policy chains pick a
//! KUBE-SEP-* endpoint chain with `-m statistic` (and `-m recent` for ClientIP
//! affinity); endpoint chains DNAT. KUBE-MARK-MASQ sets the mark that
//! KUBE-POSTROUTING masquerades. filter: REJECT/DROP for Services without
//! (local) endpoints, KUBE-FORWARD, health-check node ports, and
//! KUBE-PROXY-FIREWALL dropping load-balancer traffic from outside
//! `loadBalancerSourceRanges`; with NodePorts on 127.0.0.1
//! (`Config::localhost_nodeports`, IPv4), KUBE-FIREWALL's localnet guard.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::plan_cache::PlanCache;
use super::service_port::PortPlan;
use crate::cluster::topology::{self, NoLocalEndpoints, NodeView, PortEndpoint};
use crate::cluster::{
    ClusterView, IpFamily, Problem, Service, ServiceName, ServicePort, ServicePortName,
};
use crate::config::{Config, NodePortAddresses};
use crate::netfilter::chains::{
    FORWARDING_RULES, KUBE_EXTERNAL_SERVICES, KUBE_FIREWALL, KUBE_FORWARD, KUBE_NODEPORTS,
    KUBE_PROXY_FIREWALL, KUBE_SERVICES, SERVICE_PORTALS, forward, jump, mark_masq, nat_jumps,
    postrouting, quoted, top_chain,
};
use crate::netfilter::local::LocalMatch;
use crate::netfilter::ruleset::{Chain, Jump, Ruleset, Table};

/// Above this many endpoints (all Service ports together) the per-endpoint
/// comments are left out, as upstream does, to keep the restore input small.
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// Where this node stands.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeContext {
    pub name: String,
    pub zone: Option<String>,
    /// Addresses on the node's interfaces (loopback may be included). Used
    /// for `--nodeport-addresses` CIDRs and to recognise the node's own IP
    /// inside `loadBalancerSourceRanges`.
    pub addresses: Vec<IpAddr>,
    /// `net.netfilter.nf_conntrack_tcp_be_liberal` is set: no DROP of
    /// conntrack-INVALID packets is needed.
    pub conntrack_tcp_liberal: bool,
    /// The Node's podCIDRs (`--detect-local-mode NodeCIDR`).
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// The NodePort addresses in effect (`primary` resolved from the Node).
    pub nodeport_addresses: NodePortAddresses,
}

impl NodeContext {
    /// The node's primary IP of `family`: the first non-loopback address.
    fn node_ip(&self, family: IpFamily) -> Option<IpAddr> {
        self.addresses
            .iter()
            .copied()
            .find(|a| IpFamily::of(a) == family && !a.is_loopback())
    }
}

/// The plan for one family, plus what planning noticed.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub ruleset: Ruleset,
    pub problems: Vec<Problem>,
    /// Service ports with a Local policy in use and no local endpoint.
    pub no_local_endpoints: NoLocalEndpoints,
    /// Services with at least one port programmed in this family.
    pub services: BTreeSet<ServiceName>,
}

/// Upstream's chain-name hash: base32(sha256(input)), first 16 characters.
fn hash16(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let enc = base32::encode(base32::Alphabet::Rfc4648 { padding: true }, &digest);
    enc[..16].to_string()
}

/// `KUBE-SVC-…` and friends: prefix + hash of `ns/name:port` + protocol.
pub fn service_chain(prefix: &str, spn: &ServicePortName) -> String {
    format!(
        "{prefix}{}",
        hash16(&format!("{spn}{}", spn.protocol.lower()))
    )
}

/// `KUBE-SEP-…`: the hash also covers the endpoint as `ip:port` (`[ip]:port`).
pub fn endpoint_chain(spn: &ServicePortName, endpoint: &str) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&format!("{spn}{}{endpoint}", spn.protocol.lower()))
    )
}

/// The iptables mode's jump rules, in upstream's order; `localhost`: also
/// the two into KUBE-FIREWALL, which upstream ensures last (so they end up
/// first in INPUT and OUTPUT).
fn jumps(localhost: bool) -> Vec<Jump> {
    let ext = "kubernetes externally-visible service portals";
    let fw = "kubernetes load balancer firewall";
    let new = "-m conntrack --ctstate NEW ";
    let health = "kubernetes health check service ports";
    let mut jumps = vec![
        jump("filter", "INPUT", new, ext, KUBE_EXTERNAL_SERVICES),
        jump("filter", "FORWARD", new, ext, KUBE_EXTERNAL_SERVICES),
        jump("filter", "INPUT", "", health, KUBE_NODEPORTS),
        jump("filter", "FORWARD", new, SERVICE_PORTALS, KUBE_SERVICES),
        jump("filter", "OUTPUT", new, SERVICE_PORTALS, KUBE_SERVICES),
        jump("filter", "FORWARD", "", FORWARDING_RULES, KUBE_FORWARD),
        jump("filter", "INPUT", new, fw, KUBE_PROXY_FIREWALL),
        jump("filter", "OUTPUT", new, fw, KUBE_PROXY_FIREWALL),
        jump("filter", "FORWARD", new, fw, KUBE_PROXY_FIREWALL),
    ];
    jumps.extend(nat_jumps());
    if localhost {
        for from in ["INPUT", "OUTPUT"] {
            jumps.push(Jump {
                table: "filter",
                from,
                rule: format!("-j {KUBE_FIREWALL}"),
            });
        }
    }
    jumps
}

/// KUBE-FIREWALL as upstream writes it (kubelet writes the same rule):
/// with route_localnet on, a packet from outside addressed to 127.0.0.0/8
/// would be routed; only the node's own traffic and what KUBE-NODEPORTS
/// DNATed may reach a loopback address.
fn localnet_guard() -> Chain {
    top_chain(
        KUBE_FIREWALL,
        vec![format!(
            "-m comment --comment {} -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
            quoted("block incoming localnet connections")
        )],
    )
}

/// The rules of one family as they accumulate, Service port by Service
/// port (see `service_port`), and what every port's rules depend on.
pub(super) struct Builder {
    family: IpFamily,
    mark: u32,
    pub(super) masquerade_all: bool,
    /// Pod traffic, as `--detect-local-mode` recognises it.
    pub(super) local: LocalMatch,
    pub(super) node_ip: Option<IpAddr>,
    /// Leave out per-endpoint comments (`LARGE_CLUSTER_ENDPOINTS`).
    pub(super) large: bool,
    /// NodePorts are served on 127.0.0.1 (`Config::localhost_nodeports`,
    /// IPv4 only).
    localhost: bool,
    pub(super) nat_services: Vec<String>,
    pub(super) nat_nodeports: Vec<String>,
    pub(super) filter_services: Vec<String>,
    pub(super) filter_external: Vec<String>,
    pub(super) filter_nodeports: Vec<String>,
    pub(super) filter_firewall: Vec<String>,
    pub(super) service_chains: Vec<Chain>,
}

/// Plan the chains for `family`, every Service from scratch.
pub fn plan(
    state: &dyn ClusterView,
    node: &NodeContext,
    config: &Config,
    family: IpFamily,
) -> Plan {
    PlanCache::default().plan(state, node, config, family, None)
}

/// One Service port with its endpoints resolved for this node.
pub(super) struct ResolvedPort<'a> {
    pub(super) port: &'a ServicePort,
    pub(super) cluster_ip: IpAddr,
    pub(super) endpoints: Vec<PortEndpoint>,
}

/// `svc`'s ports in `family`, endpoints resolved; none when the Service is
/// not proxied or has no cluster IP of the family.
pub(super) fn resolve<'a>(
    svc: &'a Service,
    state: &dyn ClusterView,
    view: &NodeView<'_>,
    family: IpFamily,
    problems: &mut Vec<Problem>,
) -> Vec<ResolvedPort<'a>> {
    if !svc.is_proxied() {
        return Vec::new();
    }
    let Some(cluster_ip) = svc
        .cluster_ips
        .iter()
        .copied()
        .find(|ip| IpFamily::of(ip) == family)
    else {
        return Vec::new();
    };
    let slices = state.slices_for(&svc.name);
    svc.ports
        .iter()
        .map(|port| ResolvedPort {
            port,
            cluster_ip,
            endpoints: topology::port_endpoints(svc, port, family, &slices, view, problems),
        })
        .collect()
}

impl Builder {
    /// A builder with no rules yet, for `large` (`LARGE_CLUSTER_ENDPOINTS`).
    pub(super) fn new(config: &Config, node: &NodeContext, family: IpFamily, large: bool) -> Self {
        Builder {
            family,
            mark: config.masquerade_mark(),
            masquerade_all: config.masquerade_all,
            local: LocalMatch::resolve(&config.local_detector(), &node.pod_cidrs, family),
            node_ip: node.node_ip(family),
            large,
            localhost: family == IpFamily::V4 && config.localhost_nodeports(),
            nat_services: Vec::new(),
            nat_nodeports: Vec::new(),
            filter_services: Vec::new(),
            filter_external: Vec::new(),
            filter_nodeports: Vec::new(),
            filter_firewall: Vec::new(),
            service_chains: Vec::new(),
        }
    }

    /// Add one Service's ports; counts its ports without local endpoints.
    pub(super) fn service(
        &mut self,
        svc: &Service,
        ports: &[ResolvedPort<'_>],
        view: &NodeView<'_>,
        no_local: &mut NoLocalEndpoints,
    ) {
        for p in ports {
            let cat = topology::categorize(svc, &p.endpoints, view);
            let port = PortPlan::new(svc, p.port, p.cluster_ip, &cat, self.family);
            port.count_no_local_endpoints(self.family, no_local);
            self.service_port(&port);
        }
    }

    /// Finish the plan: the tail of KUBE-SERVICES, then every chain.
    pub(super) fn into_ruleset(mut self, node: &NodeContext) -> Ruleset {
        self.nodeports_tail(node);
        self.finish(node)
    }
}

impl Builder {
    /// The jump to KUBE-NODEPORTS must be the last rule of KUBE-SERVICES.
    fn nodeports_tail(&mut self, node: &NodeContext) {
        let c =
            quoted("kubernetes service nodeports; NOTE: this must be the last rule in this chain");
        let cidrs: Vec<IpNet> = match &node.nodeport_addresses {
            NodePortAddresses::All => Vec::new(),
            NodePortAddresses::Cidrs(v) => v
                .iter()
                .copied()
                .filter(|c| IpFamily::of(&c.addr()) == self.family)
                .collect(),
        };
        let match_all = cidrs.is_empty() || cidrs.iter().any(|c| c.prefix_len() == 0);
        if match_all {
            // addrtype LOCAL takes in loopback: keep it out where NodePorts
            // on it do not work (IPv6 never routes ::1 off the host; IPv4
            // only with route_localnet, set when `localhost`).
            let not_lo = match self.family {
                IpFamily::V4 if self.localhost => "",
                IpFamily::V4 => "! -d 127.0.0.0/8 ",
                IpFamily::V6 => "! -d ::1/128 ",
            };
            self.nat_services.push(format!(
                "-m comment --comment {c} -m addrtype --dst-type LOCAL {not_lo}-j {KUBE_NODEPORTS}"
            ));
        } else {
            let mut ips: Vec<IpAddr> = node
                .addresses
                .iter()
                .copied()
                .filter(|a| {
                    IpFamily::of(a) == self.family
                        && (!a.is_loopback() || self.localhost)
                        && cidrs.iter().any(|c| c.contains(a))
                })
                .collect();
            ips.sort();
            ips.dedup();
            for ip in ips {
                self.nat_services.push(format!(
                    "-m comment --comment {c} -d {ip} -j {KUBE_NODEPORTS}"
                ));
            }
        }
    }

    fn finish(self, node: &NodeContext) -> Ruleset {
        let mut filter = Table {
            chains: vec![
                top_chain(KUBE_SERVICES, self.filter_services),
                top_chain(KUBE_EXTERNAL_SERVICES, self.filter_external),
                forward(self.mark, !node.conntrack_tcp_liberal),
                top_chain(KUBE_NODEPORTS, self.filter_nodeports),
                top_chain(KUBE_PROXY_FIREWALL, self.filter_firewall),
            ],
        };
        if self.localhost {
            filter.chains.push(localnet_guard());
        }
        let mut nat_chains = vec![
            top_chain(KUBE_SERVICES, self.nat_services),
            top_chain(KUBE_NODEPORTS, self.nat_nodeports),
            postrouting(self.mark, None),
            mark_masq(self.mark),
        ];
        nat_chains.extend(self.service_chains);
        Ruleset {
            filter,
            nat: Table { chains: nat_chains },
            jumps: jumps(self.localhost),
        }
    }
}
