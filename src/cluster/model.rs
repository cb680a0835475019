//! The validated, typed view of the cluster that the planners read.
//!
//! Everything here has already been checked by `convert`: addresses parse,
//! ports are in range, families agree. Planners never see raw API objects.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::net::{IpFamily, Protocol};

/// `namespace/name` of a Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl ServiceName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `namespace/name:port-name`, upstream's ServicePortName (the port part may be empty).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    pub service: ServiceName,
    pub port: String,
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}", self.service)
        } else {
            write!(f, "{}:{}", self.service, self.port)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalName,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// May be empty for a single-port Service.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: TargetPort,
    pub node_port: Option<u16>,
}

/// `status.loadBalancer.ingress[].ipMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum IpMode {
    /// Traffic arrives with the LB IP as destination: program it on the node.
    #[default]
    Vip,
    /// The load balancer proxies to the node: do not bind the LB IP locally.
    Proxy,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoadBalancerIngress {
    pub ip: IpAddr,
    pub ip_mode: IpMode,
}

/// The API server's default `--service-node-port-range`, inclusive.
pub(crate) const DEFAULT_NODEPORT_RANGE: (u16, u16) = (30000, 32767);

/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub(crate) const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// A Service that kproxy has accepted. Headless and ExternalName Services
/// are kept (so that their endpoints are not mistaken for orphans) but
/// produce no kernel state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    pub name: ServiceName,
    pub service_type: ServiceType,
    /// `spec.clusterIPs`, primary first; empty for headless and ExternalName.
    pub cluster_ips: Vec<IpAddr>,
    pub headless: bool,
    /// Whether `spec.selector` is set (Endpoints are mirrored only without one).
    pub has_selector: bool,
    pub ports: Vec<ServicePort>,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_ingress: Vec<LoadBalancerIngress>,
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// ClientIP affinity timeout in seconds; None for sessionAffinity None.
    pub affinity_timeout: Option<u32>,
    pub external_traffic_policy: TrafficPolicy,
    pub internal_traffic_policy: TrafficPolicy,
    pub health_check_node_port: Option<u16>,
    pub publish_not_ready_addresses: bool,
    /// `spec.trafficDistribution` (PreferClose, PreferSameZone, PreferSameNode).
    pub traffic_distribution: Option<String>,
}

impl Service {
    /// Families this Service serves, from its cluster IPs (primary first).
    pub fn families(&self) -> Vec<IpFamily> {
        let mut v: Vec<IpFamily> = self.cluster_ips.iter().map(IpFamily::of).collect();
        v.dedup();
        v
    }

    /// Whether traffic from outside the cluster reaches it (NodePort/LB/externalIPs).
    pub(crate) fn is_external(&self) -> bool {
        matches!(
            self.service_type,
            ServiceType::NodePort | ServiceType::LoadBalancer
        ) || !self.external_ips.is_empty()
    }

    /// Headless and ExternalName Services are not proxied.
    pub(crate) fn is_proxied(&self) -> bool {
        !self.headless && self.service_type != ServiceType::ExternalName
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressType {
    V4,
    V6,
    Fqdn,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointPort {
    /// Matches the Service port's name (may be empty).
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The first of the endpoint's addresses (upstream uses only that one).
    pub addr: IpAddr,
    /// `conditions.ready` (nil means true).
    pub ready: bool,
    /// `conditions.serving` (nil means true, whatever ready says).
    pub serving: bool,
    /// `conditions.terminating` (nil means false).
    pub terminating: bool,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    /// `hints.forZones[].name`.
    pub zone_hints: Vec<String>,
    /// `hints.forNodes[].name`.
    pub node_hints: Vec<String>,
}

/// One EndpointSlice (or a mirrored legacy Endpoints object).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: String,
    /// The owning Service (label `kubernetes.io/service-name`).
    pub service: String,
    pub address_type: AddressType,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
    /// True when mirrored from a v1 Endpoints object.
    pub mirrored: bool,
    /// `endpoints.kubernetes.io/last-change-trigger-time`, unix milliseconds.
    pub trigger_time: Option<i64>,
}

impl EndpointSlice {
    pub(crate) fn service_name(&self) -> ServiceName {
        ServiceName::new(&self.namespace, &self.service)
    }

    /// The IP family of the slice's addresses; None for FQDN slices, which
    /// a proxy ignores.
    pub(crate) fn family(&self) -> Option<IpFamily> {
        match self.address_type {
            AddressType::V4 => Some(IpFamily::V4),
            AddressType::V6 => Some(IpFamily::V6),
            AddressType::Fqdn => None,
        }
    }

    /// The slice's port for Service port `port`: the one of the same name
    /// and protocol, as upstream pairs them.
    pub(crate) fn port_for(&self, port: &ServicePort) -> Option<&EndpointPort> {
        self.ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
    }
}

/// This node, as far as the proxy cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    /// Label `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `spec.podCIDRs` (or the older `spec.podCIDR`), for
    /// `--detect-local-mode NodeCIDR`.
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// The Node is being deleted, or the cluster autoscaler has tainted it
    /// `ToBeDeletedByClusterAutoscaler`: `/healthz` then fails so that load
    /// balancers stop sending new traffic here, as upstream's does.
    pub being_removed: bool,
}

/// The taint the cluster autoscaler puts on a node before removing it.
pub(crate) const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

impl Node {
    /// Whether load balancers should keep sending traffic to this node.
    pub(crate) fn eligible(&self) -> bool {
        !self.being_removed
    }
}
