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
//! `loadBalancerSourceRanges`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::cluster::topology::{self, NodeView, PortEndpoint};
use crate::cluster::{
    ClusterView, IpFamily, IpMode, Problem, Service, ServiceName, ServicePort, ServicePortName,
    TrafficPolicy,
};
use crate::config::{Config, NodePortAddresses};
use crate::netfilter::chains::{
    FORWARDING_RULES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_MARK_MASQ, KUBE_NODEPORTS,
    KUBE_PROXY_FIREWALL, KUBE_SERVICES, SERVICE_PORTALS, forward, jump, mark_masq, nat_jumps,
    postrouting, quoted, top_chain,
};
use crate::netfilter::local::LocalMatch;
use crate::netfilter::ruleset::{Chain, Jump, Ruleset, Table};

/// Above this many endpoints (all Service ports together) the per-endpoint
/// comments are left out, as upstream does, to keep the restore input small.
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// Where this node stands.
#[derive(Clone, Debug, Default)]
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
    pub no_local_endpoints: u64,
    /// Services with at least one port programmed in this family.
    pub services: BTreeSet<ServiceName>,
    pub endpoints: usize,
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

fn endpoint_string(ep: &PortEndpoint) -> String {
    std::net::SocketAddr::new(ep.addr, ep.port).to_string()
}

/// `1/n` with upstream's formatting (`%0.10f`).
fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// A comment argument as upstream writes it: quoted only when it must be
/// (the per-endpoint comments are bare `ns/name:port`).
fn comment(s: &str) -> String {
    if s.contains(char::is_whitespace) {
        quoted(s)
    } else {
        s.to_string()
    }
}

/// The iptables mode's jump rules, in upstream's order.
pub fn jumps() -> Vec<Jump> {
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
    jumps
}

struct Builder {
    family: IpFamily,
    mark: u32,
    masquerade_all: bool,
    /// `--cluster-cidr` of this family: tells pod traffic from the rest.
    /// Pod traffic, as `--detect-local-mode` recognises it.
    local: LocalMatch,
    node_ip: Option<IpAddr>,
    large: bool,
    nat_services: Vec<String>,
    nat_nodeports: Vec<String>,
    filter_services: Vec<String>,
    filter_external: Vec<String>,
    filter_nodeports: Vec<String>,
    filter_firewall: Vec<String>,
    service_chains: Vec<Chain>,
}

/// Plan the chains for `family`.
pub fn plan(
    state: &dyn ClusterView,
    node: &NodeContext,
    config: &Config,
    family: IpFamily,
) -> Plan {
    let mut out = Plan::default();
    let view = NodeView {
        name: &node.name,
        zone: node.zone.as_deref(),
    };

    // Resolve endpoints first: the total decides the comment policy.
    struct Port<'a> {
        svc: &'a Service,
        port: &'a ServicePort,
        cluster_ip: IpAddr,
        endpoints: Vec<PortEndpoint>,
    }
    let mut ports = Vec::new();
    for svc in state.services() {
        if !svc.is_proxied() {
            continue;
        }
        let Some(cluster_ip) = svc
            .cluster_ips
            .iter()
            .copied()
            .find(|ip| IpFamily::of(ip) == family)
        else {
            continue;
        };
        let slices = state.slices_for(&svc.name);
        for port in &svc.ports {
            let endpoints =
                topology::port_endpoints(svc, port, family, &slices, &view, &mut out.problems);
            out.endpoints += endpoints.len();
            ports.push(Port {
                svc,
                port,
                cluster_ip,
                endpoints,
            });
        }
    }

    let mut b = Builder {
        family,
        mark: config.masquerade_mark(),
        masquerade_all: config.masquerade_all,
        local: LocalMatch::resolve(&config.local_detector(), &node.pod_cidrs, family),
        node_ip: node.node_ip(family),
        large: out.endpoints > LARGE_CLUSTER_ENDPOINTS,
        nat_services: Vec::new(),
        nat_nodeports: Vec::new(),
        filter_services: Vec::new(),
        filter_external: Vec::new(),
        filter_nodeports: Vec::new(),
        filter_firewall: Vec::new(),
        service_chains: Vec::new(),
    };

    for p in &ports {
        out.services.insert(p.svc.name.clone());
        let cat = topology::categorize(p.svc, &p.endpoints, &view);
        b.service_port(
            p.svc,
            p.port,
            p.cluster_ip,
            &cat,
            &mut out.no_local_endpoints,
        );
    }

    b.nodeports_tail(node);
    out.ruleset = b.finish(node);
    out
}

impl Builder {
    fn service_port(
        &mut self,
        svc: &Service,
        port: &ServicePort,
        cluster_ip: IpAddr,
        cat: &topology::Categorized,
        no_local: &mut u64,
    ) {
        let family = self.family;
        let spn = ServicePortName {
            service: svc.name.clone(),
            port: port.name.clone(),
            protocol: port.protocol,
        };
        let name = spn.to_string();
        let proto = port.protocol.lower();
        let owner = Some(svc.name.clone());

        let external_ips: Vec<IpAddr> = svc
            .external_ips
            .iter()
            .copied()
            .filter(|ip| IpFamily::of(ip) == family)
            .collect();
        // Load balancers in Proxy mode deliver to the node: their IPs are
        // not programmed (upstream's LoadBalancerIPMode).
        let lb_vips: Vec<IpAddr> = svc
            .load_balancer_ingress
            .iter()
            .filter(|i| i.ip_mode == IpMode::Vip && IpFamily::of(&i.ip) == family)
            .map(|i| i.ip)
            .collect();
        let source_ranges: Vec<IpNet> = svc
            .load_balancer_source_ranges
            .iter()
            .copied()
            .filter(|c| IpFamily::of(&c.addr()) == family)
            .collect();
        let node_port = port.node_port.filter(|_| {
            matches!(
                svc.service_type,
                crate::cluster::ServiceType::NodePort | crate::cluster::ServiceType::LoadBalancer
            )
        });
        let externally_accessible =
            node_port.is_some() || !external_ips.is_empty() || !lb_vips.is_empty();
        let external_local =
            externally_accessible && svc.external_traffic_policy == TrafficPolicy::Local;
        let internal_local = svc.internal_traffic_policy == TrafficPolicy::Local;

        let svc_chain = service_chain("KUBE-SVC-", &spn);
        let svl_chain = service_chain("KUBE-SVL-", &spn);
        let ext_chain = service_chain("KUBE-EXT-", &spn);
        let fw_chain = service_chain("KUBE-FW-", &spn);

        let has_endpoints = cat.has_any;
        let cluster_eps = &cat.cluster;
        let local_eps = &cat.local;
        let uses_cluster_chain = !cluster_eps.is_empty();
        let uses_local_chain = !local_eps.is_empty();

        let (internal_chain, has_internal) = if internal_local {
            (&svl_chain, has_endpoints && !local_eps.is_empty())
        } else {
            (&svc_chain, has_endpoints)
        };
        let (external_policy_chain, has_external) = if external_local {
            (&svl_chain, has_endpoints && !local_eps.is_empty())
        } else {
            (&svc_chain, has_endpoints)
        };
        let uses_ext_chain = has_endpoints && externally_accessible;
        let uses_fw_chain = has_endpoints && !lb_vips.is_empty() && !source_ranges.is_empty();
        let lb_chain = if uses_fw_chain { &fw_chain } else { &ext_chain };

        let (mut int_filter, mut ext_filter) = (None, None);
        if !has_endpoints {
            let c = quoted(&format!("{name} has no endpoints"));
            int_filter = Some(("REJECT", c.clone()));
            ext_filter = Some(("REJECT", c));
        } else {
            let c = quoted(&format!("{name} has no local endpoints"));
            if !has_internal {
                int_filter = Some(("DROP", c.clone()));
                *no_local += 1;
            }
            if !has_external {
                ext_filter = Some(("DROP", c));
                *no_local += 1;
            }
        }

        let dst = |ip: &IpAddr, p: u16| format!("-m {proto} -p {proto} -d {ip} --dport {p}");

        // Cluster IP.
        let cluster_match = format!(
            "-m comment --comment {} {}",
            quoted(&format!("{name} cluster IP")),
            dst(&cluster_ip, port.port)
        );
        if has_internal {
            self.nat_services
                .push(format!("{cluster_match} -j {internal_chain}"));
        } else if let Some((target, c)) = &int_filter {
            self.filter_services.push(format!(
                "-m comment --comment {c} {} -j {target}",
                dst(&cluster_ip, port.port)
            ));
        }

        // External IPs.
        for ip in &external_ips {
            if has_endpoints {
                self.nat_services.push(format!(
                    "-m comment --comment {} {} -j {ext_chain}",
                    quoted(&format!("{name} external IP")),
                    dst(ip, port.port)
                ));
            }
            if let Some((target, c)) = &ext_filter {
                self.filter_external.push(format!(
                    "-m comment --comment {c} {} -j {target}",
                    dst(ip, port.port)
                ));
            }
        }

        // Load-balancer IPs.
        for ip in &lb_vips {
            if has_endpoints {
                self.nat_services.push(format!(
                    "-m comment --comment {} {} -j {lb_chain}",
                    quoted(&format!("{name} loadbalancer IP")),
                    dst(ip, port.port)
                ));
            }
            if uses_fw_chain {
                self.filter_firewall.push(format!(
                    "-m comment --comment {} {} -j DROP",
                    quoted(&format!("{name} traffic not accepted by {fw_chain}")),
                    dst(ip, port.port)
                ));
            }
        }
        if let Some((target, c)) = &ext_filter {
            for ip in &lb_vips {
                self.filter_external.push(format!(
                    "-m comment --comment {c} {} -j {target}",
                    dst(ip, port.port)
                ));
            }
        }

        // NodePort.
        if let Some(np) = node_port {
            if has_endpoints {
                self.nat_nodeports.push(format!(
                    "-m comment --comment {} -m {proto} -p {proto} --dport {np} -j {ext_chain}",
                    comment(&name)
                ));
            }
            if let Some((target, c)) = &ext_filter {
                self.filter_external.push(format!(
                    "-m comment --comment {c} -m addrtype --dst-type LOCAL -m {proto} -p {proto} --dport {np} -j {target}"
                ));
            }
        }

        // Health-check node port: accepted whether or not endpoints are local.
        if let Some(hc) = svc.health_check_node_port {
            self.filter_nodeports.push(format!(
                "-m comment --comment {} -m tcp -p tcp --dport {hc} -j ACCEPT",
                quoted(&format!("{name} health check node port"))
            ));
        }

        // Masquerade rule at the head of the internal policy chain.
        let mut internal_head = Vec::new();
        if has_internal {
            if self.masquerade_all {
                internal_head.push(format!("{cluster_match} -j {KUBE_MARK_MASQ}"));
            } else if let Some(not_local) = self.local.if_not_local() {
                // Off-cluster traffic to a cluster IP (a static route to any
                // node) may leave the node again: masquerade it.
                internal_head.push(format!("{cluster_match} {not_local} -j {KUBE_MARK_MASQ}"));
            }
        }

        if uses_ext_chain {
            let mut rules = Vec::new();
            if !external_local {
                rules.push(format!(
                    "-m comment --comment {} -j {KUBE_MARK_MASQ}",
                    quoted(&format!(
                        "masquerade traffic for {name} external destinations"
                    ))
                ));
            } else {
                if let Some(local) = self.local.if_local() {
                    // Pods reaching an external destination are treated as
                    // if they went out to the load balancer and came back:
                    // no traffic policy applies.
                    rules.push(format!(
                        "-m comment --comment {} {local} -j {svc_chain}",
                        quoted(&format!("pod traffic for {name} external destinations"))
                    ));
                }
                // The node itself picks the VIP (a local address) as source:
                // masquerade, and let it use every endpoint.
                rules.push(format!(
                    "-m comment --comment {} -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}",
                    quoted(&format!(
                        "masquerade LOCAL traffic for {name} external destinations"
                    ))
                ));
                rules.push(format!(
                    "-m comment --comment {} -m addrtype --src-type LOCAL -j {svc_chain}",
                    quoted(&format!(
                        "route LOCAL traffic for {name} external destinations"
                    ))
                ));
            }
            if has_external {
                rules.push(format!("-j {external_policy_chain}"));
            }
            self.service_chains.push(Chain {
                name: ext_chain.clone(),
                rules,
                owner: owner.clone(),
            });
        }

        if uses_fw_chain {
            let head = format!(
                "-m comment --comment {}",
                quoted(&format!("{name} loadbalancer IP"))
            );
            let mut rules = Vec::new();
            let mut allow_from_node = false;
            for cidr in &source_ranges {
                rules.push(format!("{head} -s {cidr} -j {ext_chain}"));
                if self.node_ip.is_some_and(|ip| cidr.contains(&ip)) {
                    allow_from_node = true;
                }
            }
            // A VIP bound locally makes the node's own requests arrive with
            // the VIP as source; let them through when the node is allowed.
            if allow_from_node {
                for ip in &lb_vips {
                    rules.push(format!("{head} -s {ip} -j {ext_chain}"));
                }
            }
            rules.push(format!(
                "-m comment --comment {}",
                quoted(&format!(
                    "other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL"
                ))
            ));
            self.service_chains.push(Chain {
                name: fw_chain.clone(),
                rules,
                owner: owner.clone(),
            });
        }

        if uses_cluster_chain {
            let mut rules = if internal_chain == &svc_chain {
                internal_head.clone()
            } else {
                Vec::new()
            };
            self.endpoint_rules(&mut rules, &spn, svc, cluster_eps);
            self.service_chains.push(Chain {
                name: svc_chain.clone(),
                rules,
                owner: owner.clone(),
            });
        }
        if uses_local_chain {
            let mut rules = if internal_chain == &svl_chain {
                internal_head
            } else {
                Vec::new()
            };
            self.endpoint_rules(&mut rules, &spn, svc, local_eps);
            self.service_chains.push(Chain {
                name: svl_chain.clone(),
                rules,
                owner: owner.clone(),
            });
        }

        // One endpoint chain per endpoint reachable by either policy.
        let mut reachable: Vec<&PortEndpoint> =
            cluster_eps.iter().chain(local_eps.iter()).collect();
        reachable.sort();
        reachable.dedup();
        for ep in reachable {
            let eps = endpoint_string(ep);
            let chain = endpoint_chain(&spn, &eps);
            let head = if self.large {
                String::new()
            } else {
                format!("-m comment --comment {} ", comment(&name))
            };
            let mut rules = vec![format!("{head}-s {} -j {KUBE_MARK_MASQ}", ep.addr)];
            let affinity = if svc.affinity_timeout.is_some() {
                format!("-m recent --name {chain} --set ")
            } else {
                String::new()
            };
            rules.push(format!(
                "{head}{affinity}-m {proto} -p {proto} -j DNAT --to-destination {eps}"
            ));
            self.service_chains.push(Chain {
                name: chain,
                rules,
                owner: owner.clone(),
            });
        }
    }

    /// Affinity checks first (an existing client sticks to its endpoint),
    /// then the random spread: rule i of n matches with probability
    /// 1/(n-i), so each endpoint gets 1/n overall; the last is unconditional.
    fn endpoint_rules(
        &self,
        rules: &mut Vec<String>,
        spn: &ServicePortName,
        svc: &Service,
        endpoints: &[PortEndpoint],
    ) {
        let name = spn.to_string();
        let head = |eps: &str| {
            if self.large {
                String::new()
            } else {
                format!(
                    "-m comment --comment {} ",
                    quoted(&format!("{name} -> {eps}"))
                )
            }
        };
        if let Some(timeout) = svc.affinity_timeout {
            for ep in endpoints {
                let eps = endpoint_string(ep);
                let chain = endpoint_chain(spn, &eps);
                rules.push(format!(
                    "{}-m recent --name {chain} --rcheck --seconds {timeout} --reap -j {chain}",
                    head(&eps)
                ));
            }
        }
        let n = endpoints.len();
        for (i, ep) in endpoints.iter().enumerate() {
            let eps = endpoint_string(ep);
            let chain = endpoint_chain(spn, &eps);
            let stat = if i + 1 < n {
                format!(
                    "-m statistic --mode random --probability {} ",
                    probability(n - i)
                )
            } else {
                String::new()
            };
            rules.push(format!("{}{stat}-j {chain}", head(&eps)));
        }
    }

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
            // Loopback NodePorts would need route_localnet, which kproxy
            // does not turn on: keep them out explicitly.
            let not_lo = match self.family {
                IpFamily::V4 => "! -d 127.0.0.0/8",
                IpFamily::V6 => "! -d ::1/128",
            };
            self.nat_services.push(format!(
                "-m comment --comment {c} -m addrtype --dst-type LOCAL {not_lo} -j {KUBE_NODEPORTS}"
            ));
        } else {
            let mut ips: Vec<IpAddr> = node
                .addresses
                .iter()
                .copied()
                .filter(|a| {
                    IpFamily::of(a) == self.family
                        && !a.is_loopback()
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
        let filter = Table {
            chains: vec![
                top_chain(KUBE_SERVICES, self.filter_services),
                top_chain(KUBE_EXTERNAL_SERVICES, self.filter_external),
                forward(self.mark, !node.conntrack_tcp_liberal),
                top_chain(KUBE_NODEPORTS, self.filter_nodeports),
                top_chain(KUBE_PROXY_FIREWALL, self.filter_firewall),
            ],
        };
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
            jumps: jumps(),
        }
    }
}
