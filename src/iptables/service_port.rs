//! The rules of one Service port: the entries in the top-level chains
//! (cluster IP, external IPs, load-balancer IPs, NodePort, health-check
//! node port) and its own chains (KUBE-EXT-, KUBE-FW-, KUBE-SVC-,
//! KUBE-SVL-, KUBE-SEP-), built from a `PortPlan` that settles everything
//! the rules depend on once.

use std::net::IpAddr;

use ipnet::IpNet;

use super::planner::{Builder, endpoint_chain, service_chain};
use crate::cluster::topology::{Categorized, NoLocalEndpoints, PolicyScope, PortEndpoint};
use crate::cluster::{
    IpFamily, IpMode, Service, ServicePort, ServicePortName, ServiceType, TrafficPolicy,
};
use crate::netfilter::chains::{KUBE_MARK_MASQ, quoted};
use crate::netfilter::ruleset::Chain;

/// What the filter table does with traffic a policy has no endpoint for:
/// the target and the comment.
type Refusal = Option<(&'static str, String)>;

/// One Service port in one family, with its names, endpoints and policy
/// decisions.
pub(super) struct PortPlan<'a> {
    svc: &'a Service,
    spn: ServicePortName,
    /// `ns/name:port`, as the comments name it.
    name: String,
    proto: &'static str,
    port: u16,
    cluster_ip: IpAddr,
    external_ips: Vec<IpAddr>,
    /// Load-balancer IPs in VIP mode (those in Proxy mode deliver to the
    /// node and are not programmed: upstream's LoadBalancerIPMode).
    lb_vips: Vec<IpAddr>,
    source_ranges: Vec<IpNet>,
    /// Only NodePort and LoadBalancer Services open their node port.
    node_port: Option<u16>,
    svc_chain: String,
    svl_chain: String,
    ext_chain: String,
    fw_chain: String,
    cluster_eps: &'a [PortEndpoint],
    local_eps: &'a [PortEndpoint],
    has_endpoints: bool,
    internal_local: bool,
    external_local: bool,
    /// The internal (external) policy has endpoints to send traffic to.
    has_internal: bool,
    has_external: bool,
    uses_ext_chain: bool,
    uses_fw_chain: bool,
    int_filter: Refusal,
    ext_filter: Refusal,
}

impl<'a> PortPlan<'a> {
    pub(super) fn new(
        svc: &'a Service,
        port: &ServicePort,
        cluster_ip: IpAddr,
        cat: &'a Categorized,
        family: IpFamily,
    ) -> Self {
        let spn = ServicePortName {
            service: svc.name.clone(),
            port: port.name.clone(),
            protocol: port.protocol,
        };
        let name = spn.to_string();
        let external_ips: Vec<IpAddr> = svc
            .external_ips
            .iter()
            .copied()
            .filter(|ip| IpFamily::of(ip) == family)
            .collect();
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
                ServiceType::NodePort | ServiceType::LoadBalancer
            )
        });
        let externally_accessible =
            node_port.is_some() || !external_ips.is_empty() || !lb_vips.is_empty();
        // Upstream's ExternalPolicyLocal is the Service's (pkg/api/v1/service
        // util.go), not this family's: it decides the count below even when
        // the port has no external destination in this family.
        let external_local =
            svc.is_external() && svc.external_traffic_policy == TrafficPolicy::Local;
        let internal_local = svc.internal_traffic_policy == TrafficPolicy::Local;

        let has_endpoints = cat.has_any;
        let has_local = has_endpoints && !cat.local.is_empty();
        let has_internal = if internal_local {
            has_local
        } else {
            has_endpoints
        };
        let has_external = if external_local {
            has_local
        } else {
            has_endpoints
        };
        let uses_fw_chain = has_endpoints && !lb_vips.is_empty() && !source_ranges.is_empty();

        let (mut int_filter, mut ext_filter) = (None, None);
        if !has_endpoints {
            let c = quoted(&format!("{name} has no endpoints"));
            int_filter = Some(("REJECT", c.clone()));
            ext_filter = Some(("REJECT", c));
        } else {
            let c = quoted(&format!("{name} has no local endpoints"));
            if !has_internal {
                int_filter = Some(("DROP", c.clone()));
            }
            if !has_external {
                ext_filter = Some(("DROP", c));
            }
        }

        Self {
            svc,
            svc_chain: service_chain("KUBE-SVC-", &spn),
            svl_chain: service_chain("KUBE-SVL-", &spn),
            ext_chain: service_chain("KUBE-EXT-", &spn),
            fw_chain: service_chain("KUBE-FW-", &spn),
            spn,
            name,
            proto: port.protocol.lower(),
            port: port.port,
            cluster_ip,
            external_ips,
            lb_vips,
            source_ranges,
            node_port,
            cluster_eps: &cat.cluster,
            local_eps: &cat.local,
            has_endpoints,
            internal_local,
            external_local,
            has_internal,
            has_external,
            uses_ext_chain: has_endpoints && externally_accessible,
            uses_fw_chain,
            int_filter,
            ext_filter,
        }
    }

    /// Count this port under each Local policy it has no local endpoint
    /// for, when it has endpoints elsewhere (upstream's iptables proxier
    /// counts per Service port, where it writes the DROP rules).
    pub(super) fn count_no_local_endpoints(&self, family: IpFamily, out: &mut NoLocalEndpoints) {
        if !self.has_endpoints {
            return;
        }
        if !self.has_internal {
            out.add(PolicyScope::Internal, family, 1);
        }
        if !self.has_external {
            out.add(PolicyScope::External, family, 1);
        }
    }

    fn internal_chain(&self) -> &str {
        if self.internal_local {
            &self.svl_chain
        } else {
            &self.svc_chain
        }
    }

    fn external_policy_chain(&self) -> &str {
        if self.external_local {
            &self.svl_chain
        } else {
            &self.svc_chain
        }
    }

    /// Where load-balancer traffic goes first.
    fn lb_chain(&self) -> &str {
        if self.uses_fw_chain {
            &self.fw_chain
        } else {
            &self.ext_chain
        }
    }

    fn dst(&self, ip: &IpAddr, port: u16) -> String {
        let proto = self.proto;
        format!("-m {proto} -p {proto} -d {ip} --dport {port}")
    }

    fn cluster_match(&self) -> String {
        format!(
            "-m comment --comment {} {}",
            quoted(&format!("{} cluster IP", self.name)),
            self.dst(&self.cluster_ip, self.port)
        )
    }

    fn chain(&self, name: String, rules: Vec<String>) -> Chain {
        Chain {
            name,
            rules,
            owner: Some(self.svc.name.clone()),
        }
    }
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

impl Builder {
    pub(super) fn service_port(&mut self, p: &PortPlan<'_>) {
        self.cluster_ip_rules(p);
        self.external_ip_rules(p);
        self.load_balancer_rules(p);
        self.node_port_rules(p);
        if let Some(chain) = self.ext_chain(p) {
            self.service_chains.push(chain);
        }
        if let Some(chain) = self.fw_chain(p) {
            self.service_chains.push(chain);
        }
        self.policy_chains(p);
        self.endpoint_chains(p);
    }

    fn cluster_ip_rules(&mut self, p: &PortPlan<'_>) {
        let cluster_match = p.cluster_match();
        if p.has_internal {
            self.nat_services
                .push(format!("{cluster_match} -j {}", p.internal_chain()));
        } else if let Some((target, c)) = &p.int_filter {
            self.filter_services.push(format!(
                "-m comment --comment {c} {} -j {target}",
                p.dst(&p.cluster_ip, p.port)
            ));
        }
    }

    fn external_ip_rules(&mut self, p: &PortPlan<'_>) {
        for ip in &p.external_ips {
            if p.has_endpoints {
                self.nat_services.push(format!(
                    "-m comment --comment {} {} -j {}",
                    quoted(&format!("{} external IP", p.name)),
                    p.dst(ip, p.port),
                    p.ext_chain
                ));
            }
            if let Some((target, c)) = &p.ext_filter {
                self.filter_external.push(format!(
                    "-m comment --comment {c} {} -j {target}",
                    p.dst(ip, p.port)
                ));
            }
        }
    }

    fn load_balancer_rules(&mut self, p: &PortPlan<'_>) {
        for ip in &p.lb_vips {
            if p.has_endpoints {
                self.nat_services.push(format!(
                    "-m comment --comment {} {} -j {}",
                    quoted(&format!("{} loadbalancer IP", p.name)),
                    p.dst(ip, p.port),
                    p.lb_chain()
                ));
            }
            if p.uses_fw_chain {
                self.filter_firewall.push(format!(
                    "-m comment --comment {} {} -j DROP",
                    quoted(&format!(
                        "{} traffic not accepted by {}",
                        p.name, p.fw_chain
                    )),
                    p.dst(ip, p.port)
                ));
            }
        }
        if let Some((target, c)) = &p.ext_filter {
            for ip in &p.lb_vips {
                self.filter_external.push(format!(
                    "-m comment --comment {c} {} -j {target}",
                    p.dst(ip, p.port)
                ));
            }
        }
    }

    fn node_port_rules(&mut self, p: &PortPlan<'_>) {
        let proto = p.proto;
        if let Some(np) = p.node_port {
            if p.has_endpoints {
                self.nat_nodeports.push(format!(
                    "-m comment --comment {} -m {proto} -p {proto} --dport {np} -j {}",
                    comment(&p.name),
                    p.ext_chain
                ));
            }
            if let Some((target, c)) = &p.ext_filter {
                self.filter_external.push(format!(
                    "-m comment --comment {c} -m addrtype --dst-type LOCAL -m {proto} -p {proto} --dport {np} -j {target}"
                ));
            }
        }
        // Health-check node port: accepted whether or not endpoints are local.
        if let Some(hc) = p.svc.health_check_node_port {
            self.filter_nodeports.push(format!(
                "-m comment --comment {} -m tcp -p tcp --dport {hc} -j ACCEPT",
                quoted(&format!("{} health check node port", p.name))
            ));
        }
    }

    /// KUBE-EXT-*: masquerade (or, with policy Local, short-circuit pod and
    /// node traffic), then the external policy chain.
    fn ext_chain(&self, p: &PortPlan<'_>) -> Option<Chain> {
        if !p.uses_ext_chain {
            return None;
        }
        let name = &p.name;
        let svc_chain = &p.svc_chain;
        let mut rules = Vec::new();
        if !p.external_local {
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
        if p.has_external {
            rules.push(format!("-j {}", p.external_policy_chain()));
        }
        Some(p.chain(p.ext_chain.clone(), rules))
    }

    /// KUBE-FW-*: load-balancer traffic from the source ranges goes on to
    /// KUBE-EXT-*; the rest falls through to KUBE-PROXY-FIREWALL's DROP.
    fn fw_chain(&self, p: &PortPlan<'_>) -> Option<Chain> {
        if !p.uses_fw_chain {
            return None;
        }
        let head = format!(
            "-m comment --comment {}",
            quoted(&format!("{} loadbalancer IP", p.name))
        );
        let ext_chain = &p.ext_chain;
        let mut rules = Vec::new();
        let mut allow_from_node = false;
        for cidr in &p.source_ranges {
            rules.push(format!("{head} -s {cidr} -j {ext_chain}"));
            if self.node_ip.is_some_and(|ip| cidr.contains(&ip)) {
                allow_from_node = true;
            }
        }
        // A VIP bound locally makes the node's own requests arrive with
        // the VIP as source; let them through when the node is allowed.
        if allow_from_node {
            for ip in &p.lb_vips {
                rules.push(format!("{head} -s {ip} -j {ext_chain}"));
            }
        }
        rules.push(format!(
            "-m comment --comment {}",
            quoted(&format!(
                "other traffic to {} will be dropped by KUBE-PROXY-FIREWALL",
                p.name
            ))
        ));
        Some(p.chain(p.fw_chain.clone(), rules))
    }

    /// KUBE-SVC-* and KUBE-SVL-*, the internal one headed by its
    /// masquerade rule.
    fn policy_chains(&mut self, p: &PortPlan<'_>) {
        let mut internal_head = Vec::new();
        if p.has_internal {
            let cluster_match = p.cluster_match();
            if self.masquerade_all {
                internal_head.push(format!("{cluster_match} -j {KUBE_MARK_MASQ}"));
            } else if let Some(not_local) = self.local.if_not_local() {
                // Off-cluster traffic to a cluster IP (a static route to any
                // node) may leave the node again: masquerade it.
                internal_head.push(format!("{cluster_match} {not_local} -j {KUBE_MARK_MASQ}"));
            }
        }
        for (local, chain, eps) in [
            (false, &p.svc_chain, p.cluster_eps),
            (true, &p.svl_chain, p.local_eps),
        ] {
            if eps.is_empty() {
                continue;
            }
            let mut rules = if p.internal_local == local {
                internal_head.clone()
            } else {
                Vec::new()
            };
            self.endpoint_rules(&mut rules, p, eps);
            self.service_chains.push(p.chain(chain.clone(), rules));
        }
    }

    /// Affinity checks first (an existing client sticks to its endpoint),
    /// then the random spread: rule i of n matches with probability
    /// 1/(n-i), so each endpoint gets 1/n overall; the last is unconditional.
    fn endpoint_rules(
        &self,
        rules: &mut Vec<String>,
        p: &PortPlan<'_>,
        endpoints: &[PortEndpoint],
    ) {
        let name = &p.name;
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
        if let Some(timeout) = p.svc.affinity_timeout {
            for ep in endpoints {
                let eps = endpoint_string(ep);
                let chain = endpoint_chain(&p.spn, &eps);
                rules.push(format!(
                    "{}-m recent --name {chain} --rcheck --seconds {timeout} --reap -j {chain}",
                    head(&eps)
                ));
            }
        }
        let n = endpoints.len();
        for (i, ep) in endpoints.iter().enumerate() {
            let eps = endpoint_string(ep);
            let chain = endpoint_chain(&p.spn, &eps);
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

    /// One KUBE-SEP-* per endpoint reachable by either policy.
    fn endpoint_chains(&mut self, p: &PortPlan<'_>) {
        let proto = p.proto;
        let mut reachable: Vec<&PortEndpoint> =
            p.cluster_eps.iter().chain(p.local_eps.iter()).collect();
        reachable.sort();
        reachable.dedup();
        for ep in reachable {
            let eps = endpoint_string(ep);
            let chain = endpoint_chain(&p.spn, &eps);
            let head = if self.large {
                String::new()
            } else {
                format!("-m comment --comment {} ", comment(&p.name))
            };
            let mut rules = vec![format!("{head}-s {} -j {KUBE_MARK_MASQ}", ep.addr)];
            let affinity = if p.svc.affinity_timeout.is_some() {
                format!("-m recent --name {chain} --set ")
            } else {
                String::new()
            };
            rules.push(format!(
                "{head}{affinity}-m {proto} -p {proto} -j DNAT --to-destination {eps}"
            ));
            self.service_chains.push(p.chain(chain, rules));
        }
    }
}
