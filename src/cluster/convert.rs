//! Conversion from k8s-openapi objects to the model, and validation.
//!
//! An object-level error (a Service whose clusterIP does not parse, a port
//! of 0 or 70000, a nodePort outside the range, a missing required field)
//! refuses the whole object: `Err(Problem)`. A part-level error (one endpoint
//! with a bad address, a duplicate endpoint) drops that part and is returned
//! next to the accepted object.
//!
//! The rules are Kubernetes' own (API validation and defaulting, plus what
//! kube-proxy itself filters), because kproxy may read objects that never went
//! through an API server: the manifests source hands over whatever an operator
//! wrote. Every reason names the field (`spec.ports[1].port`) so that it can
//! be found in the manifest.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::model::{
    AddressType, DEFAULT_AFFINITY_TIMEOUT, Endpoint, EndpointPort, EndpointSlice, IpMode,
    LoadBalancerIngress, Node, Service, ServiceName, ServicePort, ServiceType, TO_BE_DELETED_TAINT,
    TargetPort, TrafficPolicy,
};
use super::object::{Kind, ObjectRef, Problem};
use crate::net::{IpFamily, Protocol};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// On a v1 Endpoints object: do not mirror it into slices.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// When the change that produced these endpoints happened (for latency metrics).
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The older spelling of `spec.loadBalancerSourceRanges`, still honoured upstream.
pub const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
/// The node's zone, for topology-aware routing.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Upper bound of `sessionAffinityConfig.clientIP.timeoutSeconds` (one day).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86400;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Inclusive NodePort range (the API server's --service-node-port-range).
    pub nodeport_range: (u16, u16),
    /// This node's name; Node objects of other nodes are ignored.
    pub node_name: String,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            nodeport_range: (30000, 32767),
            node_name: String::new(),
        }
    }
}

pub type Converted<T> = Result<(T, Vec<Problem>), Problem>;

/// What is wrong with one object, gathered while converting it, so that an
/// operator sees every mistake of a refused object at once rather than one
/// per edit.
struct Report {
    object: ObjectRef,
    /// Object-level: any of these refuses the object.
    errors: Vec<String>,
    /// Part-level: the part was dropped, the object kept.
    dropped: Vec<Problem>,
}

impl Report {
    fn new(kind: Kind, meta: &ObjectMeta) -> Self {
        Self {
            object: ObjectRef::new(
                kind,
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            ),
            errors: Vec::new(),
            dropped: Vec::new(),
        }
    }

    fn error(&mut self, reason: impl Into<String>) {
        self.errors.push(reason.into());
    }

    fn drop_part(&mut self, reason: impl Into<String>) {
        self.dropped.push(Problem {
            object: self.object.clone(),
            reason: reason.into(),
        });
    }

    /// name (and namespace, for namespaced kinds) are what the store keys on.
    fn require_meta(&mut self, meta: &ObjectMeta, namespaced: bool) {
        if meta.name.as_deref().unwrap_or("").is_empty() {
            self.error("metadata.name: required");
        }
        if namespaced && meta.namespace.as_deref().unwrap_or("").is_empty() {
            self.error("metadata.namespace: required");
        }
    }

    fn into_problem(self) -> Problem {
        Problem {
            object: self.object,
            reason: self.errors.join("; "),
        }
    }

    fn finish<T>(self, value: T) -> Converted<T> {
        if self.errors.is_empty() {
            Ok((value, self.dropped))
        } else {
            Err(self.into_problem())
        }
    }

    /// A port number in 1..=65535, or an error naming `field`.
    fn port(&mut self, field: &str, value: i32) -> Option<u16> {
        match u16::try_from(value) {
            Ok(p) if p != 0 => Some(p),
            _ => {
                self.error(format!("{field}: {value} is not a valid port (1-65535)"));
                None
            }
        }
    }

    /// Protocol, defaulting to TCP as the API server does.
    fn protocol(&mut self, field: &str, value: Option<&str>) -> Protocol {
        match value {
            None | Some("") | Some("TCP") => Protocol::Tcp,
            Some("UDP") => Protocol::Udp,
            Some("SCTP") => Protocol::Sctp,
            Some(other) => {
                self.error(format!(
                    "{field}: unsupported protocol {other:?} (TCP, UDP or SCTP)"
                ));
                Protocol::Tcp
            }
        }
    }

    fn traffic_policy(&mut self, field: &str, value: Option<&str>) -> TrafficPolicy {
        match value {
            None | Some("") | Some("Cluster") => TrafficPolicy::Cluster,
            Some("Local") => TrafficPolicy::Local,
            Some(other) => {
                self.error(format!(
                    "{field}: unsupported value {other:?} (Cluster or Local)"
                ));
                TrafficPolicy::Cluster
            }
        }
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    // Rust's parser is as strict as the API server's validation: no leading
    // zeros, no surrounding spaces, no zone suffix.
    s.parse().ok()
}

/// RFC 1123 label: what a Service port name must be.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// IANA service name: what a named targetPort (a container port name) must be.
fn is_iana_svc_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--")
}

/// `endpoints.kubernetes.io/last-change-trigger-time` as unix milliseconds.
fn trigger_time(r: &mut Report, meta: &ObjectMeta) -> Option<i64> {
    let raw = meta.annotations.as_ref()?.get(TRIGGER_TIME_ANNOTATION)?;
    match raw.parse::<k8s_openapi::jiff::Timestamp>() {
        Ok(t) => Some(t.as_millisecond()),
        Err(_) => {
            // Only metrics read it: not a reason to refuse the endpoints.
            r.drop_part(format!(
                "metadata.annotations[{TRIGGER_TIME_ANNOTATION:?}]: {raw:?} is not an RFC 3339 time; ignored"
            ));
            None
        }
    }
}

pub fn service(s: &core::Service, o: &ConvertOptions) -> Converted<Service> {
    let mut r = Report::new(Kind::Service, &s.metadata);
    r.require_meta(&s.metadata, true);
    let Some(spec) = &s.spec else {
        r.error("spec: required");
        return Err(r.into_problem());
    };

    let service_type = match spec.type_.as_deref() {
        None | Some("") | Some("ClusterIP") => ServiceType::ClusterIp,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => ServiceType::ExternalName,
        Some(other) => {
            r.error(format!(
                "spec.type: unsupported value {other:?} (ClusterIP, NodePort, LoadBalancer or ExternalName)"
            ));
            ServiceType::ClusterIp
        }
    };

    let (cluster_ips, headless) = if service_type == ServiceType::ExternalName {
        // A DNS alias: the proxy has nothing to program, and any clusterIP
        // left over from an earlier type is meaningless.
        if spec.external_name.as_deref().unwrap_or("").is_empty() {
            r.error("spec.externalName: required for type ExternalName");
        }
        (Vec::new(), false)
    } else {
        cluster_ips(&mut r, spec, service_type)
    };
    if headless
        && matches!(
            service_type,
            ServiceType::NodePort | ServiceType::LoadBalancer
        )
    {
        r.error(format!(
            "spec.clusterIP: may not be \"None\" for type {}",
            spec.type_.as_deref().unwrap_or_default()
        ));
    }
    let families: Vec<IpFamily> = cluster_ips.iter().map(IpFamily::of).collect();
    let proxied = !headless && service_type != ServiceType::ExternalName;

    let ports = service_ports(&mut r, spec, service_type, headless, o);
    let external_ips = external_ips(&mut r, spec, proxied, &families);
    let load_balancer_ingress = lb_ingress(&mut r, s, proxied, &families);
    let load_balancer_source_ranges = source_ranges(&mut r, s, spec, service_type);

    let affinity_timeout = match spec.session_affinity.as_deref() {
        None | Some("") | Some("None") => None,
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            match timeout {
                None => Some(DEFAULT_AFFINITY_TIMEOUT),
                Some(t) if t >= 1 && t as u32 <= MAX_AFFINITY_TIMEOUT => Some(t as u32),
                Some(t) => {
                    r.error(format!(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds: {t} is outside 1-{MAX_AFFINITY_TIMEOUT}"
                    ));
                    None
                }
            }
        }
        Some(other) => {
            r.error(format!(
                "spec.sessionAffinity: unsupported value {other:?} (None or ClientIP)"
            ));
            None
        }
    };

    let external_traffic_policy = r.traffic_policy(
        "spec.externalTrafficPolicy",
        spec.external_traffic_policy.as_deref(),
    );
    let internal_traffic_policy = r.traffic_policy(
        "spec.internalTrafficPolicy",
        spec.internal_traffic_policy.as_deref(),
    );

    let health_check_node_port = match spec.health_check_node_port {
        None | Some(0) => None,
        Some(p) => r.port("spec.healthCheckNodePort", p),
    };

    let traffic_distribution = match spec.traffic_distribution.as_deref() {
        None | Some("") => None,
        Some(v @ ("PreferClose" | "PreferSameZone" | "PreferSameNode")) => Some(v.to_string()),
        Some(other) => {
            // Newer API servers may add values; routing without the hint is
            // always correct, so this is not worth refusing the Service.
            r.drop_part(format!(
                "spec.trafficDistribution: unknown value {other:?}; ignored"
            ));
            None
        }
    };

    let mut svc = Service {
        name: ServiceName::new(&r.object.namespace, &r.object.name),
        service_type,
        cluster_ips,
        headless,
        has_selector: spec.selector.as_ref().is_some_and(|m| !m.is_empty()),
        ports,
        external_ips,
        load_balancer_ingress,
        load_balancer_source_ranges,
        affinity_timeout,
        external_traffic_policy,
        internal_traffic_policy,
        health_check_node_port,
        publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
        traffic_distribution,
    };
    // externalTrafficPolicy (and with it the health-check port) means
    // something only for traffic that enters from outside; normalising it
    // keeps planners from acting on a stale value left after a type change.
    if !svc.is_external() {
        svc.external_traffic_policy = TrafficPolicy::Cluster;
    }
    if !(svc.service_type == ServiceType::LoadBalancer
        && svc.external_traffic_policy == TrafficPolicy::Local)
    {
        svc.health_check_node_port = None;
    }
    r.finish(svc)
}

/// `spec.clusterIP` / `spec.clusterIPs` (primary first) and whether the
/// Service is headless.
fn cluster_ips(
    r: &mut Report,
    spec: &core::ServiceSpec,
    service_type: ServiceType,
) -> (Vec<IpAddr>, bool) {
    let single = spec.cluster_ip.as_deref().filter(|s| !s.is_empty());
    let list: &[String] = spec.cluster_ips.as_deref().unwrap_or(&[]);
    if let (Some(one), Some(first)) = (single, list.first())
        && one != first
    {
        r.error(format!(
            "spec.clusterIPs[0]: {first:?} must equal spec.clusterIP {one:?}"
        ));
    }
    // Name each value by the field it came from, for the messages.
    let raw: Vec<(String, &str)> = if list.is_empty() {
        single
            .map(|s| ("spec.clusterIP".to_string(), s))
            .into_iter()
            .collect()
    } else {
        list.iter()
            .enumerate()
            .map(|(i, s)| (format!("spec.clusterIPs[{i}]"), s.as_str()))
            .collect()
    };

    check_ip_families(r, spec);

    let Some((_, first)) = raw.first() else {
        let kind = match service_type {
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            _ => "ClusterIP",
        };
        r.error(format!(
            "spec.clusterIP: required for type {kind} (kproxy does not allocate cluster IPs: \
             give the address the API server assigned, or \"None\" for a headless Service)"
        ));
        return (Vec::new(), false);
    };
    if *first == "None" {
        if raw.len() > 1 {
            r.error("spec.clusterIPs: \"None\" must be the only value of a headless Service");
        }
        return (Vec::new(), true);
    }
    if raw.len() > 2 {
        r.error(format!(
            "spec.clusterIPs: at most two addresses (one per family), got {}",
            raw.len()
        ));
    }
    let mut ips = Vec::with_capacity(raw.len());
    for (field, s) in &raw {
        match parse_ip(s) {
            Some(ip) => ips.push(ip),
            None => r.error(format!("{field}: {s:?} is not a valid IP address")),
        }
    }
    if ips.len() == 2 && IpFamily::of(&ips[0]) == IpFamily::of(&ips[1]) {
        r.error(format!(
            "spec.clusterIPs: both addresses are {}; a dual-stack Service needs one IPv4 and one IPv6",
            IpFamily::of(&ips[0])
        ));
    }
    if ips.len() == 2 && spec.ip_family_policy.as_deref() == Some("SingleStack") {
        r.error("spec.clusterIPs: two addresses, but spec.ipFamilyPolicy is SingleStack");
    }
    if let Some(fams) = &spec.ip_families
        && ips.len() == raw.len()
    {
        for (i, (ip, fam)) in ips.iter().zip(fams).enumerate() {
            let actual = IpFamily::of(ip);
            if fam != &actual.to_string() && matches!(fam.as_str(), "IPv4" | "IPv6") {
                r.error(format!(
                    "spec.ipFamilies[{i}]: {fam} does not match {} {ip} ({actual})",
                    raw[i].0
                ));
            }
        }
    }
    (ips, false)
}

/// `spec.ipFamilies` and `spec.ipFamilyPolicy` values on their own.
fn check_ip_families(r: &mut Report, spec: &core::ServiceSpec) {
    if let Some(fams) = &spec.ip_families {
        if fams.len() > 2 {
            r.error(format!(
                "spec.ipFamilies: at most two families, got {}",
                fams.len()
            ));
        }
        for (i, f) in fams.iter().enumerate() {
            if !matches!(f.as_str(), "IPv4" | "IPv6") {
                r.error(format!(
                    "spec.ipFamilies[{i}]: unsupported value {f:?} (IPv4 or IPv6)"
                ));
            } else if fams[..i].contains(f) {
                r.error(format!("spec.ipFamilies[{i}]: duplicate family {f}"));
            }
        }
    }
    if let Some(p) = spec.ip_family_policy.as_deref()
        && !matches!(
            p,
            "" | "SingleStack" | "PreferDualStack" | "RequireDualStack"
        )
    {
        r.error(format!(
            "spec.ipFamilyPolicy: unsupported value {p:?} (SingleStack, PreferDualStack or RequireDualStack)"
        ));
    }
}

fn service_ports(
    r: &mut Report,
    spec: &core::ServiceSpec,
    service_type: ServiceType,
    headless: bool,
    o: &ConvertOptions,
) -> Vec<ServicePort> {
    let raw = spec.ports.as_deref().unwrap_or(&[]);
    if raw.is_empty() && !headless && service_type != ServiceType::ExternalName {
        r.error("spec.ports: required (at least one port)");
    }
    let takes_node_ports = matches!(
        service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    );
    // The API server allocates nodePorts for these; kproxy cannot, so a
    // manifest without one gets a warning rather than a silent gap.
    let expects_node_ports = service_type == ServiceType::NodePort
        || (service_type == ServiceType::LoadBalancer
            && spec.allocate_load_balancer_node_ports != Some(false));
    let (lo, hi) = o.nodeport_range;

    let mut names = HashSet::new();
    let mut ports_seen = HashSet::new();
    let mut node_ports_seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, p) in raw.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        let name = p.name.clone().unwrap_or_default();
        if name.is_empty() {
            if raw.len() > 1 {
                r.error(format!(
                    "{f}.name: required when a Service has more than one port"
                ));
            }
        } else if !is_dns_label(&name) {
            r.error(format!(
                "{f}.name: {name:?} is not a valid port name (lower-case letters, digits and '-', at most 63)"
            ));
        } else if !names.insert(name.clone()) {
            r.error(format!("{f}.name: duplicate port name {name:?}"));
        }
        let protocol = r.protocol(&format!("{f}.protocol"), p.protocol.as_deref());
        let port = r.port(&format!("{f}.port"), p.port);
        if let Some(port) = port
            && !ports_seen.insert((port, protocol))
        {
            r.error(format!("{f}: duplicate port {port}/{protocol}"));
        }

        let target_port = match &p.target_port {
            // The API server defaults an absent (or zero/empty) targetPort to port.
            None | Some(IntOrString::Int(0)) => port.map(TargetPort::Number),
            Some(IntOrString::String(s)) if s.is_empty() => port.map(TargetPort::Number),
            Some(IntOrString::Int(n)) => r
                .port(&format!("{f}.targetPort"), *n)
                .map(TargetPort::Number),
            Some(IntOrString::String(s)) if is_iana_svc_name(s) => {
                Some(TargetPort::Name(s.clone()))
            }
            Some(IntOrString::String(s)) => {
                let hint = if s.parse::<u32>().is_ok() {
                    " (a quoted number is a name; write the number without quotes)"
                } else {
                    ""
                };
                r.error(format!(
                    "{f}.targetPort: {s:?} is not a valid port name: at most 15 lower-case letters, \
                     digits and '-', with at least one letter{hint}"
                ));
                None
            }
        };

        let node_port = match p.node_port {
            None | Some(0) => {
                if expects_node_ports {
                    r.drop_part(format!(
                        "{f}.nodePort: not set (kproxy does not allocate NodePorts); port {} is served on its cluster IP only",
                        p.port
                    ));
                }
                None
            }
            Some(n) if !takes_node_ports => {
                r.error(format!(
                    "{f}.nodePort: {n} may only be used with type NodePort or LoadBalancer"
                ));
                None
            }
            Some(n) => match u16::try_from(n) {
                Ok(np) if np >= lo && np <= hi => {
                    if !node_ports_seen.insert((np, protocol)) {
                        r.error(format!("{f}.nodePort: duplicate nodePort {np}/{protocol}"));
                    }
                    Some(np)
                }
                _ => {
                    r.error(format!(
                        "{f}.nodePort: {n} is outside the NodePort range {lo}-{hi}"
                    ));
                    None
                }
            },
        };

        if let (Some(port), Some(target_port)) = (port, target_port) {
            out.push(ServicePort {
                name,
                protocol,
                port,
                target_port,
                node_port,
            });
        }
    }
    out
}

fn external_ips(
    r: &mut Report,
    spec: &core::ServiceSpec,
    proxied: bool,
    families: &[IpFamily],
) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for (i, s) in spec.external_ips.iter().flatten().enumerate() {
        let Some(ip) = parse_ip(s) else {
            r.error(format!(
                "spec.externalIPs[{i}]: {s:?} is not a valid IP address"
            ));
            continue;
        };
        // A single-stack Service cannot be reached on the other family; the
        // rest of the Service is fine (kube-proxy filters these the same way).
        if proxied && !families.contains(&IpFamily::of(&ip)) {
            r.drop_part(format!(
                "spec.externalIPs[{i}]: {ip} is {} but the Service has no {} cluster IP; ignored",
                IpFamily::of(&ip),
                IpFamily::of(&ip)
            ));
            continue;
        }
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

fn lb_ingress(
    r: &mut Report,
    s: &core::Service,
    proxied: bool,
    families: &[IpFamily],
) -> Vec<LoadBalancerIngress> {
    let ingress = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or(&[]);
    let mut out: Vec<LoadBalancerIngress> = Vec::new();
    for (i, ing) in ingress.iter().enumerate() {
        let f = format!("status.loadBalancer.ingress[{i}]");
        // Hostname-only ingress (some cloud load balancers) has nothing for
        // the node to program.
        let Some(raw) = ing.ip.as_deref().filter(|s| !s.is_empty()) else {
            continue;
        };
        // Status is written by controllers, not by the Service's owner: a bad
        // entry loses that entry only.
        let Some(ip) = parse_ip(raw) else {
            r.drop_part(format!(
                "{f}.ip: {raw:?} is not a valid IP address; ignored"
            ));
            continue;
        };
        let ip_mode = match ing.ip_mode.as_deref() {
            None | Some("") | Some("VIP") => IpMode::Vip,
            Some("Proxy") => IpMode::Proxy,
            Some(other) => {
                r.drop_part(format!(
                    "{f}.ipMode: unsupported value {other:?} (VIP or Proxy); ingress {ip} ignored"
                ));
                continue;
            }
        };
        // In Proxy mode the load balancer may translate families itself.
        if ip_mode == IpMode::Vip && proxied && !families.contains(&IpFamily::of(&ip)) {
            r.drop_part(format!(
                "{f}.ip: {ip} is {} but the Service has no {} cluster IP; ignored",
                IpFamily::of(&ip),
                IpFamily::of(&ip)
            ));
            continue;
        }
        if !out.iter().any(|e| e.ip == ip) {
            out.push(LoadBalancerIngress { ip, ip_mode });
        }
    }
    out
}

fn source_ranges(
    r: &mut Report,
    s: &core::Service,
    spec: &core::ServiceSpec,
    service_type: ServiceType,
) -> Vec<IpNet> {
    let field = spec.load_balancer_source_ranges.as_deref().unwrap_or(&[]);
    let is_lb = service_type == ServiceType::LoadBalancer;
    let (label, raw): (String, Vec<&str>) = if !field.is_empty() {
        if !is_lb {
            r.error("spec.loadBalancerSourceRanges: may only be used with type LoadBalancer");
            return Vec::new();
        }
        (
            "spec.loadBalancerSourceRanges".into(),
            field.iter().map(|s| s.trim()).collect(),
        )
    } else {
        // As upstream: the annotation counts only when the field is empty,
        // and only for a LoadBalancer.
        let ann = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SOURCE_RANGES_ANNOTATION));
        match ann {
            Some(a) if is_lb => (
                format!("metadata.annotations[{SOURCE_RANGES_ANNOTATION:?}]"),
                a.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect(),
            ),
            _ => return Vec::new(),
        }
    };
    let mut out = Vec::with_capacity(raw.len());
    for (i, c) in raw.iter().enumerate() {
        match c.parse::<IpNet>() {
            // Host bits set ("10.1.2.3/8") mean the network, as Go's ParseCIDR reads it.
            Ok(net) => out.push(net.trunc()),
            Err(_) => r.error(format!(
                "{label}[{i}]: {c:?} is not a CIDR (like 203.0.113.0/24)"
            )),
        }
    }
    out
}

pub fn endpoint_slice(
    s: &discovery::EndpointSlice,
    _o: &ConvertOptions,
) -> Converted<EndpointSlice> {
    let mut r = Report::new(Kind::EndpointSlice, &s.metadata);
    r.require_meta(&s.metadata, true);
    let address_type = match s.address_type.as_str() {
        "IPv4" => AddressType::V4,
        "IPv6" => AddressType::V6,
        "FQDN" => AddressType::Fqdn,
        "" => {
            r.error("addressType: required");
            AddressType::Fqdn
        }
        other => {
            r.error(format!(
                "addressType: unsupported value {other:?} (IPv4, IPv6 or FQDN)"
            ));
            AddressType::Fqdn
        }
    };
    let service = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|v| !v.is_empty())
        .cloned();
    if service.is_none() {
        r.error(format!(
            "metadata.labels[{SERVICE_NAME_LABEL:?}]: required (the slice must name its Service)"
        ));
    }

    let ports = slice_ports(&mut r, s.ports.as_deref().unwrap_or(&[]));
    let raw_endpoints = s.endpoints.as_deref().unwrap_or(&[]);
    let endpoints = match address_type {
        AddressType::V4 => slice_endpoints(&mut r, raw_endpoints, IpFamily::V4),
        AddressType::V6 => slice_endpoints(&mut r, raw_endpoints, IpFamily::V6),
        // Names, not addresses: nothing a proxy can program (kube-proxy
        // ignores FQDN slices too). The slice is kept so that it still
        // counts as belonging to its Service.
        AddressType::Fqdn => Vec::new(),
    };
    let trigger_time = trigger_time(&mut r, &s.metadata);

    let slice = EndpointSlice {
        namespace: r.object.namespace.clone(),
        name: r.object.name.clone(),
        service: service.unwrap_or_default(),
        address_type,
        ports,
        endpoints,
        mirrored: false,
        trigger_time,
    };
    r.finish(slice)
}

fn slice_ports(r: &mut Report, raw: &[discovery::EndpointPort]) -> Vec<EndpointPort> {
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, p) in raw.iter().enumerate() {
        let f = format!("ports[{i}]");
        let name = p.name.clone().unwrap_or_default();
        if !names.insert(name.clone()) {
            r.error(format!("{f}.name: duplicate port name {name:?}"));
        }
        let protocol = r.protocol(&format!("{f}.protocol"), p.protocol.as_deref());
        // A nil port means "all ports", which a proxy cannot translate to a
        // destination; kube-proxy skips such ports as well.
        let Some(n) = p.port else { continue };
        if let Some(port) = r.port(&format!("{f}.port"), n) {
            out.push(EndpointPort {
                name,
                protocol,
                port,
            });
        }
    }
    out
}

fn slice_endpoints(r: &mut Report, raw: &[discovery::Endpoint], family: IpFamily) -> Vec<Endpoint> {
    // Hashing keeps a slice of many thousand endpoints linear.
    let mut seen: HashSet<IpAddr> = HashSet::with_capacity(raw.len());
    let mut out = Vec::with_capacity(raw.len());
    for (i, ep) in raw.iter().enumerate() {
        let f = format!("endpoints[{i}]");
        // Upstream uses only the first address; the others are for DNS.
        let Some(first) = ep.addresses.first() else {
            r.drop_part(format!("{f}.addresses: empty; endpoint skipped"));
            continue;
        };
        let Some(addr) = parse_ip(first) else {
            r.drop_part(format!(
                "{f}.addresses[0]: {first:?} is not a valid IP address; endpoint skipped"
            ));
            continue;
        };
        if IpFamily::of(&addr) != family {
            r.drop_part(format!(
                "{f}.addresses[0]: {addr} is {} in an {family} slice; endpoint skipped",
                IpFamily::of(&addr)
            ));
            continue;
        }
        if !seen.insert(addr) {
            r.drop_part(format!(
                "{f}: duplicate endpoint {addr}; the first one is kept"
            ));
            continue;
        }
        let cond = ep.conditions.as_ref();
        let ready = cond.and_then(|c| c.ready).unwrap_or(true);
        // Unset conditions read as upstream reads them (endpointslicecache.go):
        // ready and serving true, terminating false.
        let serving = cond.and_then(|c| c.serving).unwrap_or(true);
        let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
        let hints = ep.hints.as_ref();
        out.push(Endpoint {
            addr,
            ready,
            serving,
            terminating,
            node_name: ep.node_name.clone().filter(|n| !n.is_empty()),
            zone: ep.zone.clone().filter(|z| !z.is_empty()),
            zone_hints: hints
                .and_then(|h| h.for_zones.as_ref())
                .map(|z| z.iter().map(|z| z.name.clone()).collect())
                .unwrap_or_default(),
            node_hints: hints
                .and_then(|h| h.for_nodes.as_ref())
                .map(|n| n.iter().map(|n| n.name.clone()).collect())
                .unwrap_or_default(),
        });
    }
    out
}

/// A legacy v1 Endpoints object, mirrored into one slice per address family
/// as the EndpointSlice mirroring controller would.
///
/// Each subset (a set of addresses × a set of ports) becomes one slice per
/// family present in it. Every mirrored slice carries the Endpoints' own name,
/// so that a problem found later in one of them points at the object an
/// operator can edit. `addresses` are ready; `notReadyAddresses` are neither
/// ready nor serving (the mirroring controller sets only `ready`).
pub fn endpoints(e: &core::Endpoints, _o: &ConvertOptions) -> Converted<Vec<EndpointSlice>> {
    let mut r = Report::new(Kind::Endpoints, &e.metadata);
    r.require_meta(&e.metadata, true);
    let skip = e
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SKIP_MIRROR_LABEL))
        .is_some_and(|v| v == "true");
    if skip {
        return r.finish(Vec::new());
    }
    let trigger_time = trigger_time(&mut r, &e.metadata);
    let mut out = Vec::new();
    for (si, subset) in e.subsets.iter().flatten().enumerate() {
        let f = format!("subsets[{si}]");
        let mut names = HashSet::new();
        let mut ports = Vec::new();
        for (pi, p) in subset.ports.iter().flatten().enumerate() {
            let pf = format!("{f}.ports[{pi}]");
            let name = p.name.clone().unwrap_or_default();
            if !names.insert(name.clone()) {
                r.error(format!("{pf}.name: duplicate port name {name:?}"));
            }
            let protocol = r.protocol(&format!("{pf}.protocol"), p.protocol.as_deref());
            if let Some(port) = r.port(&format!("{pf}.port"), p.port) {
                ports.push(EndpointPort {
                    name,
                    protocol,
                    port,
                });
            }
        }

        let mut seen: HashSet<IpAddr> = HashSet::new();
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        let lists = [
            ("addresses", true, subset.addresses.as_deref()),
            (
                "notReadyAddresses",
                false,
                subset.not_ready_addresses.as_deref(),
            ),
        ];
        for (field, ready, list) in lists {
            for (ai, a) in list.unwrap_or(&[]).iter().enumerate() {
                let Some(addr) = parse_ip(&a.ip) else {
                    r.drop_part(format!(
                        "{f}.{field}[{ai}].ip: {:?} is not a valid IP address; skipped",
                        a.ip
                    ));
                    continue;
                };
                // Ready addresses are read first, so a ready duplicate wins.
                if !seen.insert(addr) {
                    r.drop_part(format!(
                        "{f}.{field}[{ai}].ip: duplicate address {addr}; the first one is kept"
                    ));
                    continue;
                }
                let ep = Endpoint {
                    addr,
                    ready,
                    serving: ready,
                    terminating: false,
                    node_name: a.node_name.clone().filter(|n| !n.is_empty()),
                    zone: None,
                    zone_hints: Vec::new(),
                    node_hints: Vec::new(),
                };
                match IpFamily::of(&addr) {
                    IpFamily::V4 => v4.push(ep),
                    IpFamily::V6 => v6.push(ep),
                }
            }
        }
        for (address_type, endpoints) in [(AddressType::V4, v4), (AddressType::V6, v6)] {
            if endpoints.is_empty() {
                continue;
            }
            out.push(EndpointSlice {
                namespace: r.object.namespace.clone(),
                name: r.object.name.clone(),
                service: r.object.name.clone(),
                address_type,
                ports: ports.clone(),
                endpoints,
                mirrored: true,
                trigger_time,
            });
        }
    }
    r.finish(out)
}

pub fn node(n: &core::Node) -> Result<Node, Problem> {
    let mut r = Report::new(Kind::Node, &n.metadata);
    r.require_meta(&n.metadata, false);
    if !r.errors.is_empty() {
        return Err(r.into_problem());
    }
    let mut addresses: Vec<IpAddr> = Vec::new();
    let raw = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or(&[]);
    // InternalIPs before ExternalIPs, as upstream's GetNodeHostIPs orders
    // them: the first is the node's primary IP. Hostname and DNS entries
    // are names; an address that does not parse is skipped: the node's own
    // addresses matter only as a hint here (NodePorts use the local
    // interfaces) and refusing the Node would lose its zone and labels too.
    for kind in ["InternalIP", "ExternalIP"] {
        for a in raw.iter().filter(|a| a.type_ == kind) {
            if let Some(ip) = parse_ip(&a.address)
                && !addresses.contains(&ip)
            {
                addresses.push(ip);
            }
        }
    }
    let labels = n.metadata.labels.clone().unwrap_or_default();
    let spec = n.spec.as_ref();
    let tainted = spec
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == TO_BE_DELETED_TAINT));
    // podCIDRs wins over the older single podCIDR, as in the API's own
    // defaulting; a CIDR that does not parse is skipped like an address.
    let pod_cidrs = spec
        .and_then(|s| {
            s.pod_cidrs
                .clone()
                .or_else(|| s.pod_cidr.clone().map(|c| vec![c]))
        })
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    Ok(Node {
        name: r.object.name.clone(),
        addresses,
        zone: labels.get(ZONE_LABEL).filter(|z| !z.is_empty()).cloned(),
        labels,
        pod_cidrs,
        being_removed: n.metadata.deletion_timestamp.is_some() || tainted,
    })
}

#[cfg(test)]
#[path = "tests/convert.rs"]
mod tests;
