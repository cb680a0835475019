//! Which endpoints a Service port sends traffic to, on this node.
//!
//! This is Kubernetes' own rule set (the same for the IPVS and iptables
//! modes): ready endpoints; when none is ready, serving endpoints that are
//! terminating; traffic policy Local keeps this node's endpoints only, with
//! the same fallback; topology hints narrow the cluster-wide set when every
//! ready endpoint carries them and one matches this node or its zone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::model::{EndpointSlice, Service, ServicePort, TrafficPolicy};
use super::object::{Kind, ObjectRef, Problem};
use crate::net::IpFamily;

/// One endpoint of one Service port, resolved to an address and a port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortEndpoint {
    pub addr: IpAddr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub is_local: bool,
    pub zone_hints: Vec<String>,
    pub node_hints: Vec<String>,
}

impl PortEndpoint {
    fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// Where this node stands, for Local policies and topology.
#[derive(Clone, Debug, Default)]
pub struct NodeView<'a> {
    pub name: &'a str,
    pub zone: Option<&'a str>,
}

/// The endpoints of `port` of `svc` in family `family`, from its slices:
/// slice ports are matched by the Service port's name and protocol (the
/// EndpointSlice controller has already resolved named target ports per pod
/// into those numbers). Duplicates (the same address and port in two slices or
/// twice in one) are kept once. Endpoints of the wrong family are reported.
pub fn port_endpoints(
    svc: &Service,
    port: &ServicePort,
    family: IpFamily,
    slices: &[&EndpointSlice],
    node: &NodeView<'_>,
    problems: &mut Vec<Problem>,
) -> Vec<PortEndpoint> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for slice in slices {
        if slice.family() != Some(family) {
            continue;
        }
        let Some(sp) = slice.port_for(port) else {
            continue;
        };
        for ep in &slice.endpoints {
            if IpFamily::of(&ep.addr) != family {
                problems.push(Problem {
                    object: slice_ref(slice),
                    reason: format!(
                        "endpoint {} is not {} as the slice's addressType says; skipped for Service {}",
                        ep.addr, family, svc.name
                    ),
                });
                continue;
            }
            if !seen.insert((ep.addr, sp.port)) {
                continue;
            }
            out.push(PortEndpoint {
                addr: ep.addr,
                port: sp.port,
                ready: ep.ready || svc.publish_not_ready_addresses,
                // Upstream keeps the slice's serving as it reads it
                // (endpointslicecache.go addEndpoints): only the
                // serving-terminating fallback looks at it.
                serving: ep.serving,
                terminating: ep.terminating,
                is_local: ep.node_name.as_deref() == Some(node.name) && !node.name.is_empty(),
                zone_hints: ep.zone_hints.clone(),
                node_hints: ep.node_hints.clone(),
            });
        }
    }
    out.sort();
    out
}

fn slice_ref(slice: &EndpointSlice) -> ObjectRef {
    let kind = if slice.mirrored {
        Kind::Endpoints
    } else {
        Kind::EndpointSlice
    };
    ObjectRef::new(kind, &slice.namespace, &slice.name)
}

/// The endpoints a Service port uses, split the way its policies need them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Categorized {
    /// For traffic policy Cluster.
    pub cluster: Vec<PortEndpoint>,
    /// For traffic policy Local (only this node's).
    pub local: Vec<PortEndpoint>,
    /// Whether any usable endpoint exists anywhere (REJECT vs. DROP decisions).
    pub has_any: bool,
}

impl Categorized {
    /// The endpoints for traffic arriving on the cluster IP, where only the
    /// local ones count under policy Local.
    #[cfg(test)]
    pub fn internal<'a>(&'a self, svc: &Service) -> &'a [PortEndpoint] {
        match svc.internal_traffic_policy {
            TrafficPolicy::Cluster => &self.cluster,
            TrafficPolicy::Local => &self.local,
        }
    }

    /// The endpoints for traffic arriving on a NodePort, external IP or LB IP.
    #[cfg(test)]
    pub fn external<'a>(&'a self, svc: &Service) -> &'a [PortEndpoint] {
        match svc.external_traffic_policy {
            TrafficPolicy::Cluster => &self.cluster,
            TrafficPolicy::Local => &self.local,
        }
    }
}

/// Upstream's UsesClusterEndpoints (serviceport.go): an externally
/// reachable Service needs its cluster-wide endpoints even with both
/// policies Local, for the pod and node traffic that short-circuits to them.
fn uses_cluster(svc: &Service) -> bool {
    svc.internal_traffic_policy == TrafficPolicy::Cluster || svc.is_external()
}

fn uses_local(svc: &Service) -> bool {
    svc.internal_traffic_policy == TrafficPolicy::Local
        || (svc.is_external() && svc.external_traffic_policy == TrafficPolicy::Local)
}

/// Which of a Service's two traffic policies, as upstream's metric labels
/// `traffic_policy` name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyScope {
    Internal,
    External,
}

impl PolicyScope {
    pub const ALL: [PolicyScope; 2] = [PolicyScope::Internal, PolicyScope::External];

    pub fn label(self) -> &'static str {
        match self {
            PolicyScope::Internal => "internal",
            PolicyScope::External => "external",
        }
    }
}

/// How many Services (IPVS mode) or Service ports (iptables mode) have a
/// Local policy without a local endpoint while endpoints exist elsewhere,
/// per policy and family: upstream's
/// `kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy, ip_family}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoLocalEndpoints(BTreeMap<(PolicyScope, IpFamily), u64>);

impl NoLocalEndpoints {
    pub fn add(&mut self, scope: PolicyScope, family: IpFamily, n: u64) {
        *self.0.entry((scope, family)).or_default() += n;
    }

    pub fn get(&self, scope: PolicyScope, family: IpFamily) -> u64 {
        self.0.get(&(scope, family)).copied().unwrap_or(0)
    }

    pub fn merge(&mut self, other: &NoLocalEndpoints) {
        for (&(scope, family), &n) in &other.0 {
            self.add(scope, family, n);
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

impl std::fmt::Display for NoLocalEndpoints {
    /// `internal/IPv4=1 external/IPv4=2`, non-zero counts only; `0` when none.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|((scope, family), n)| format!("{}/{family}={n}", scope.label()))
            .collect();
        if parts.is_empty() {
            write!(f, "0")
        } else {
            write!(f, "{}", parts.join(" "))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TopologyMode {
    None,
    SameNode,
    SameZone,
}

/// Hints count only when every ready endpoint has them and one is for us.
fn topology_mode(endpoints: &[PortEndpoint], node: &NodeView<'_>) -> TopologyMode {
    let ready = endpoints.iter().filter(|e| e.ready);
    let (mut all_node, mut for_node, mut all_zone, mut for_zone) = (true, false, true, false);
    let mut any = false;
    for ep in ready {
        any = true;
        if ep.node_hints.is_empty() {
            all_node = false;
        } else if ep.node_hints.iter().any(|n| n == node.name) {
            for_node = true;
        }
        if ep.zone_hints.is_empty() {
            all_zone = false;
        } else if node
            .zone
            .is_some_and(|z| ep.zone_hints.iter().any(|h| h == z))
        {
            for_zone = true;
        }
    }
    if !any {
        return TopologyMode::None;
    }
    if all_node && for_node {
        TopologyMode::SameNode
    } else if all_zone && for_zone {
        TopologyMode::SameZone
    } else {
        TopologyMode::None
    }
}

fn topology_allows(ep: &PortEndpoint, mode: TopologyMode, node: &NodeView<'_>) -> bool {
    match mode {
        TopologyMode::None => true,
        TopologyMode::SameNode => ep.node_hints.iter().any(|n| n == node.name),
        TopologyMode::SameZone => node
            .zone
            .is_some_and(|z| ep.zone_hints.iter().any(|h| h == z)),
    }
}

/// Split `endpoints` into the cluster-wide and local sets, as upstream does.
pub fn categorize(svc: &Service, endpoints: &[PortEndpoint], node: &NodeView<'_>) -> Categorized {
    let mut out = Categorized::default();
    if uses_cluster(svc) {
        let mode = topology_mode(endpoints, node);
        out.cluster = endpoints
            .iter()
            .filter(|e| e.ready && topology_allows(e, mode, node))
            .cloned()
            .collect();
        if out.cluster.is_empty() {
            out.cluster = endpoints
                .iter()
                .filter(|e| e.serving_terminating())
                .cloned()
                .collect();
        }
        out.has_any = !out.cluster.is_empty();
    }
    if !uses_local(svc) {
        return out;
    }
    let usable = |e: &&PortEndpoint| e.ready || e.serving_terminating();
    out.has_any |= endpoints.iter().any(|e| usable(&e));
    let local_ready: Vec<PortEndpoint> = endpoints
        .iter()
        .filter(|e| e.is_local && e.ready)
        .cloned()
        .collect();
    out.local = if local_ready.is_empty() {
        endpoints
            .iter()
            .filter(|e| e.is_local && e.serving_terminating())
            .cloned()
            .collect()
    } else {
        local_ready
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::model::*;

    fn svc(itp: TrafficPolicy, etp: TrafficPolicy, t: ServiceType) -> Service {
        Service {
            name: ServiceName::new("default", "web"),
            service_type: t,
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            headless: false,
            has_selector: true,
            ports: vec![],
            external_ips: vec![],
            load_balancer_ingress: vec![],
            load_balancer_source_ranges: vec![],
            affinity_timeout: None,
            external_traffic_policy: etp,
            internal_traffic_policy: itp,
            health_check_node_port: None,
            publish_not_ready_addresses: false,
            traffic_distribution: None,
        }
    }

    fn ep(last: u8, ready: bool, serving: bool, terminating: bool, local: bool) -> PortEndpoint {
        PortEndpoint {
            addr: IpAddr::from([10, 244, 0, last]),
            port: 8080,
            ready,
            serving,
            terminating,
            is_local: local,
            zone_hints: vec![],
            node_hints: vec![],
        }
    }

    fn addrs(v: &[PortEndpoint]) -> Vec<u8> {
        v.iter()
            .map(|e| match e.addr {
                IpAddr::V4(a) => a.octets()[3],
                _ => 0,
            })
            .collect()
    }

    const NODE: NodeView<'static> = NodeView {
        name: "node-1",
        zone: Some("zone-a"),
    };

    #[test]
    fn ready_endpoints_win_over_terminating() {
        let s = svc(
            TrafficPolicy::Cluster,
            TrafficPolicy::Cluster,
            ServiceType::ClusterIp,
        );
        let eps = [
            ep(1, true, true, false, false),
            ep(2, false, true, true, false),
        ];
        let c = categorize(&s, &eps, &NODE);
        assert_eq!(addrs(&c.cluster), vec![1]);
        assert!(c.has_any);
    }

    #[test]
    fn serving_terminating_used_when_nothing_is_ready() {
        let s = svc(
            TrafficPolicy::Cluster,
            TrafficPolicy::Cluster,
            ServiceType::ClusterIp,
        );
        let eps = [
            ep(1, false, false, true, false), // terminating, not serving: never
            ep(2, false, true, true, false),
            ep(3, false, false, false, false), // not ready, not terminating
        ];
        let c = categorize(&s, &eps, &NODE);
        assert_eq!(addrs(&c.cluster), vec![2]);
    }

    #[test]
    fn local_policy_keeps_only_this_nodes_endpoints_without_cluster_fallback() {
        let s = svc(
            TrafficPolicy::Cluster,
            TrafficPolicy::Local,
            ServiceType::NodePort,
        );
        let eps = [
            ep(1, true, true, false, false),
            ep(2, true, true, false, true),
        ];
        let c = categorize(&s, &eps, &NODE);
        assert_eq!(addrs(c.external(&s)), vec![2]);
        assert_eq!(addrs(c.internal(&s)), vec![1, 2]);

        let remote_only = [ep(1, true, true, false, false)];
        let c = categorize(&s, &remote_only, &NODE);
        assert!(c.external(&s).is_empty());
        assert!(
            c.has_any,
            "remote endpoints exist: traffic is dropped, not rejected"
        );
    }

    #[test]
    fn local_policy_falls_back_to_local_serving_terminating() {
        let s = svc(
            TrafficPolicy::Local,
            TrafficPolicy::Cluster,
            ServiceType::ClusterIp,
        );
        let eps = [
            ep(1, true, true, false, false),
            ep(2, false, true, true, true),
        ];
        let c = categorize(&s, &eps, &NODE);
        assert_eq!(addrs(c.internal(&s)), vec![2]);
    }

    #[test]
    fn a_terminating_endpoint_without_serving_is_the_fallback() {
        // Upstream reads an unset serving as true (endpointslicecache.go
        // addEndpoints: `Serving == nil || *Serving`), so a terminating pod
        // whose slice leaves serving out takes traffic when nothing is ready
        // (topology.go CategorizeEndpoints: IsServing && IsTerminating).
        let raw: k8s_openapi::api::discovery::v1::EndpointSlice =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-1", "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.244.0.1"], "nodeName": "node-1",
                        "conditions": {"ready": false, "terminating": true}},
                    {"addresses": ["10.244.0.2"], "nodeName": "node-2",
                        "conditions": {"ready": false, "serving": false, "terminating": true}}
                ]
            }))
            .unwrap();
        let (slice, _) =
            crate::cluster::convert::endpoint_slice(&raw, &Default::default()).unwrap();
        let mut s = svc(
            TrafficPolicy::Local,
            TrafficPolicy::Cluster,
            ServiceType::ClusterIp,
        );
        let port = ServicePort {
            name: "http".into(),
            protocol: crate::net::Protocol::Tcp,
            port: 80,
            target_port: TargetPort::Number(8080),
            node_port: None,
        };
        s.ports = vec![port.clone()];
        let eps = port_endpoints(&s, &port, IpFamily::V4, &[&slice], &NODE, &mut Vec::new());
        let c = categorize(&s, &eps, &NODE);
        assert_eq!(addrs(c.internal(&s)), vec![1]);
        s.internal_traffic_policy = TrafficPolicy::Cluster;
        let c = categorize(&s, &eps, &NODE);
        assert_eq!(addrs(&c.cluster), vec![1]);
    }

    #[test]
    fn zone_hints_narrow_cluster_endpoints_only_when_complete() {
        let s = svc(
            TrafficPolicy::Cluster,
            TrafficPolicy::Cluster,
            ServiceType::ClusterIp,
        );
        let mut a = ep(1, true, true, false, false);
        a.zone_hints = vec!["zone-a".into()];
        let mut b = ep(2, true, true, false, false);
        b.zone_hints = vec!["zone-b".into()];
        let c = categorize(&s, &[a.clone(), b.clone()], &NODE);
        assert_eq!(addrs(&c.cluster), vec![1]);

        let bare = ep(3, true, true, false, false);
        let c = categorize(&s, &[a, b, bare], &NODE);
        assert_eq!(
            addrs(&c.cluster),
            vec![1, 2, 3],
            "one endpoint without hints disables them"
        );
    }

    #[test]
    fn node_hints_take_precedence() {
        let s = svc(
            TrafficPolicy::Cluster,
            TrafficPolicy::Cluster,
            ServiceType::ClusterIp,
        );
        let mut a = ep(1, true, true, false, true);
        a.node_hints = vec!["node-1".into()];
        a.zone_hints = vec!["zone-a".into()];
        let mut b = ep(2, true, true, false, false);
        b.node_hints = vec!["node-2".into()];
        b.zone_hints = vec!["zone-a".into()];
        let c = categorize(&s, &[a, b], &NODE);
        assert_eq!(addrs(&c.cluster), vec![1]);
    }
}
