//! Services: type, cluster IPs and families, ports, external and
//! load-balancer addresses, source ranges, affinity and policies.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::report::{Report, parse_ip};
use super::{ConvertOptions, Converted, MAX_AFFINITY_TIMEOUT, SOURCE_RANGES_ANNOTATION};
use crate::cluster::model::{
    DEFAULT_AFFINITY_TIMEOUT, IpMode, LoadBalancerIngress, Service, ServiceName, ServicePort,
    ServiceType, TargetPort, TrafficPolicy,
};
use crate::cluster::object::Kind;
use crate::net::IpFamily;

/// A Service, with the parts dropped from it, or why it is refused.
pub fn service(s: &core::Service, _o: &ConvertOptions) -> Converted<Service> {
    let mut r = Report::new(Kind::Service, &s.metadata);
    r.require_meta(&s.metadata, true);
    let Some(spec) = &s.spec else {
        r.error("spec: required");
        return Err(r.into_problem());
    };

    let service_type = service_type(&mut r, spec);

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

    let ports = service_ports(&mut r, spec, service_type, headless);
    let external_ips = external_ips(&mut r, spec, proxied, &families);
    let load_balancer_ingress = lb_ingress(&mut r, s, proxied, &families);
    let load_balancer_source_ranges = source_ranges(&mut r, s, spec, service_type);

    let affinity_timeout = affinity_timeout(&mut r, spec);
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

    let traffic_distribution = traffic_distribution(&mut r, spec);

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

/// `spec.type`, defaulting to ClusterIP.
fn service_type(r: &mut Report, spec: &core::ServiceSpec) -> ServiceType {
    match spec.type_.as_deref() {
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
    }
}

/// `spec.sessionAffinity` and its timeout: None for no affinity.
fn affinity_timeout(r: &mut Report, spec: &core::ServiceSpec) -> Option<u32> {
    match spec.session_affinity.as_deref() {
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
    }
}

/// `spec.trafficDistribution`, when it is a value kproxy knows.
fn traffic_distribution(r: &mut Report, spec: &core::ServiceSpec) -> Option<String> {
    match spec.traffic_distribution.as_deref() {
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
    }
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
            // Any port: the range is the API server's to enforce.
            Some(n) => {
                let np = r.port(&format!("{f}.nodePort"), n);
                if let Some(np) = np
                    && !node_ports_seen.insert((np, protocol))
                {
                    r.error(format!("{f}.nodePort: duplicate nodePort {np}/{protocol}"));
                }
                np
            }
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

/// RFC 1123 label: what a Service port name must be.
pub(super) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// IANA service name: what a named targetPort (a container port name) must be.
pub(super) fn is_iana_svc_name(s: &str) -> bool {
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
