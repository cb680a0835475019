//! Conversion rules, one case per rule. Inputs are written as JSON patches
//! over a known-good object so that each case shows exactly what it breaks.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde_json::{Value, json};

use super::service::{is_dns_label, is_iana_svc_name};
use super::*;
use crate::cluster::*;

/// Merge `patch` into `base`: objects merge key by key, `null` deletes, and
/// anything else replaces.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn base_service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
        }
    })
}

fn service_from(patch: Value) -> core::Service {
    let mut v = base_service();
    merge(&mut v, &patch);
    serde_json::from_value(v).expect("test input is a valid Service shape")
}

fn convert_service(patch: Value) -> Converted<Service> {
    service(&service_from(patch), &ConvertOptions::default())
}

/// Accepted, with no part-level problems.
fn accepted(patch: Value) -> Service {
    match convert_service(patch) {
        Ok((s, problems)) => {
            assert!(problems.is_empty(), "unexpected problems: {problems:?}");
            s
        }
        Err(p) => panic!("refused: {p}"),
    }
}

fn reasons(problems: &[Problem]) -> Vec<String> {
    problems.iter().map(|p| p.reason.clone()).collect()
}

#[test]
fn service_defaults() {
    let s = accepted(json!({"spec": {"ports": [{"port": 80}]}}));
    assert_eq!(s.name, ServiceName::new("shop", "web"));
    assert_eq!(s.service_type, ServiceType::ClusterIp);
    assert_eq!(s.cluster_ips, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
    assert!(!s.headless);
    assert!(s.has_selector);
    assert_eq!(
        s.ports,
        vec![ServicePort {
            name: String::new(),
            protocol: Protocol::Tcp,
            port: 80,
            target_port: TargetPort::Number(80),
            node_port: None,
        }]
    );
    assert_eq!(s.affinity_timeout, None);
    assert_eq!(s.external_traffic_policy, TrafficPolicy::Cluster);
    assert_eq!(s.internal_traffic_policy, TrafficPolicy::Cluster);
    assert!(!s.publish_not_ready_addresses);
    assert_eq!(s.traffic_distribution, None);
    assert_eq!(s.health_check_node_port, None);
}

#[test]
fn service_type_defaults_to_cluster_ip_and_selector_is_optional() {
    let s = accepted(json!({"spec": {"type": null, "selector": null}}));
    assert_eq!(s.service_type, ServiceType::ClusterIp);
    assert!(!s.has_selector);
    // (A JSON patch cannot express "replace with an empty map".)
    let mut input = service_from(json!({}));
    input.spec.as_mut().unwrap().selector = Some(Default::default());
    let (s, _) = service(&input, &ConvertOptions::default()).unwrap();
    assert!(!s.has_selector, "an empty selector selects nothing");
}

#[test]
fn target_port_forms() {
    let cases = [
        (json!(8080), TargetPort::Number(8080)),
        (json!("http-alt"), TargetPort::Name("http-alt".into())),
        (json!(0), TargetPort::Number(80)),
        (json!(""), TargetPort::Number(80)),
        (json!(null), TargetPort::Number(80)),
    ];
    for (tp, want) in cases {
        let s =
            accepted(json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": tp}]}}));
        assert_eq!(s.ports[0].target_port, want, "targetPort {tp}");
    }
}

#[test]
fn protocols() {
    for (p, want) in [
        ("TCP", Protocol::Tcp),
        ("UDP", Protocol::Udp),
        ("SCTP", Protocol::Sctp),
    ] {
        let s = accepted(json!({"spec": {"ports": [{"port": 53, "protocol": p}]}}));
        assert_eq!(s.ports[0].protocol, want);
    }
}

#[test]
fn same_port_number_on_two_protocols_is_fine() {
    let s = accepted(json!({"spec": {"ports": [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"}
    ]}}));
    assert_eq!(s.ports.len(), 2);
}

#[test]
fn dual_stack_cluster_ips() {
    let s = accepted(json!({"spec": {
        "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:10:96::10"],
        "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack"
    }}));
    assert_eq!(s.families(), vec![IpFamily::V4, IpFamily::V6]);
    // IPv6 primary.
    let s = accepted(json!({"spec": {
        "clusterIP": "fd00:10:96::10", "clusterIPs": ["fd00:10:96::10", "10.96.0.10"],
        "ipFamilies": ["IPv6", "IPv4"]
    }}));
    assert_eq!(s.families(), vec![IpFamily::V6, IpFamily::V4]);
    // clusterIPs alone is enough.
    let s = accepted(json!({"spec": {"clusterIP": null, "clusterIPs": ["10.96.0.11"]}}));
    assert_eq!(s.cluster_ips, vec!["10.96.0.11".parse::<IpAddr>().unwrap()]);
    // clusterIP alone too.
    let s = accepted(json!({"spec": {"clusterIPs": null}}));
    assert_eq!(s.cluster_ips, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
}

#[test]
fn headless() {
    let s = accepted(json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": null}}));
    assert!(s.headless);
    assert!(s.cluster_ips.is_empty());
    assert!(!s.is_proxied());
    let s = accepted(json!({"spec": {"clusterIP": "None", "clusterIPs": null}}));
    assert!(s.headless);
    assert_eq!(s.ports.len(), 1);
}

#[test]
fn external_name_needs_no_ips() {
    let s = accepted(json!({"spec": {
        "type": "ExternalName", "externalName": "db.example.com",
        "clusterIP": null, "clusterIPs": null, "selector": null, "ports": null
    }}));
    assert_eq!(s.service_type, ServiceType::ExternalName);
    assert!(s.cluster_ips.is_empty());
    assert!(!s.headless);
    assert!(!s.is_proxied());
    // A clusterIP left over from an earlier type is not used.
    let s = accepted(json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}}));
    assert!(s.cluster_ips.is_empty());
}

#[test]
fn node_ports() {
    let s = accepted(json!({"spec": {"type": "NodePort",
        "ports": [{"port": 80, "nodePort": 30080}]}}));
    assert_eq!(s.ports[0].node_port, Some(30080));
    for np in [30000, 32767] {
        let s = accepted(
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": np}]}}),
        );
        assert_eq!(s.ports[0].node_port, Some(np as u16), "range is inclusive");
    }
    // Any nodePort the API server accepted, whatever kproxy's
    // --nodeport-range: the range is the API server's
    // (--service-node-port-range; upstream's proxier never checks it).
    for np in [80, 20001, 40000, 65535] {
        let s = accepted(
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": np}]}}),
        );
        assert_eq!(s.ports[0].node_port, Some(np as u16));
    }
    for np in [-1, 65536] {
        let bad = service_from(
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": np}]}}),
        );
        let e = service(&bad, &ConvertOptions::default()).unwrap_err();
        assert_eq!(
            e.reason,
            format!("spec.ports[0].nodePort: {np} is not a valid port (1-65535)")
        );
    }
}

#[test]
fn missing_node_port_is_a_part_level_problem() {
    let (s, problems) =
        convert_service(json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}})).unwrap();
    assert_eq!(s.ports[0].node_port, None);
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0]
            .reason
            .starts_with("spec.ports[0].nodePort: not set"),
        "{problems:?}"
    );
    assert_eq!(
        problems[0].object,
        ObjectRef::new(Kind::Service, "shop", "web")
    );
    // A LoadBalancer that asked for no node ports gets none, and no warning.
    let s = accepted(
        json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
        "ports": [{"port": 80}]}}),
    );
    assert_eq!(s.ports[0].node_port, None);
}

#[test]
fn load_balancer_ingress() {
    let (s, problems) = convert_service(json!({
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 31080}]},
        "status": {"loadBalancer": {"ingress": [
            {"ip": "203.0.113.10"},
            {"ip": "203.0.113.11", "ipMode": "Proxy"},
            {"hostname": "lb.example.com"},
            {"ip": "203.0.113.300"},
            {"ip": "2001:db8::10"},
            {"ip": "2001:db8::11", "ipMode": "Proxy"},
            {"ip": "203.0.113.12", "ipMode": "Sideways"},
            {"ip": "203.0.113.10"}
        ]}}
    }))
    .unwrap();
    assert_eq!(
        s.load_balancer_ingress,
        vec![
            LoadBalancerIngress {
                ip: "203.0.113.10".parse().unwrap(),
                ip_mode: IpMode::Vip
            },
            LoadBalancerIngress {
                ip: "203.0.113.11".parse().unwrap(),
                ip_mode: IpMode::Proxy
            },
            // A proxying load balancer may translate families.
            LoadBalancerIngress {
                ip: "2001:db8::11".parse().unwrap(),
                ip_mode: IpMode::Proxy
            },
        ]
    );
    assert_eq!(
        reasons(&problems),
        vec![
            "status.loadBalancer.ingress[3].ip: \"203.0.113.300\" is not a valid IP address; ignored",
            "status.loadBalancer.ingress[4].ip: 2001:db8::10 is IPv6 but the Service has no IPv6 cluster IP; ignored",
            "status.loadBalancer.ingress[6].ipMode: unsupported value \"Sideways\" (VIP or Proxy); ingress 203.0.113.12 ignored",
        ]
    );
}

#[test]
fn external_ips() {
    let (s, problems) = convert_service(json!({"spec": {
        "externalIPs": ["192.0.2.10", "2001:db8::1", "192.0.2.10", "192.0.2.11"],
        "externalTrafficPolicy": "Local"
    }}))
    .unwrap();
    assert_eq!(
        s.external_ips,
        vec![
            "192.0.2.10".parse::<IpAddr>().unwrap(),
            "192.0.2.11".parse().unwrap()
        ]
    );
    assert_eq!(
        reasons(&problems),
        vec![
            "spec.externalIPs[1]: 2001:db8::1 is IPv6 but the Service has no IPv6 cluster IP; ignored"
        ]
    );
    // A ClusterIP Service with external IPs is externally reachable: Local holds.
    assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
    // Dual-stack takes both families.
    let s = accepted(json!({"spec": {
        "clusterIPs": ["10.96.0.10", "fd00::10"],
        "externalIPs": ["192.0.2.10", "2001:db8::1"]
    }}));
    assert_eq!(s.external_ips.len(), 2);
}

#[test]
fn source_ranges_field_and_annotation() {
    let lb = json!({"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 31080}]});
    let mut patch = json!({"spec": lb.clone()});
    merge(
        &mut patch,
        &json!({"spec": {"loadBalancerSourceRanges": ["203.0.113.0/24", " 198.51.100.7/16 "]}}),
    );
    let s = accepted(patch);
    assert_eq!(
        s.load_balancer_source_ranges,
        vec![
            "203.0.113.0/24".parse::<IpNet>().unwrap(),
            // Host bits are cleared as Go's ParseCIDR does.
            "198.51.0.0/16".parse().unwrap()
        ]
    );
    // The annotation counts when the field is empty...
    let ann = json!({"metadata": {"annotations": {SOURCE_RANGES_ANNOTATION: "10.0.0.0/8, 192.168.0.0/16"}},
        "spec": lb.clone()});
    let s = accepted(ann.clone());
    assert_eq!(s.load_balancer_source_ranges.len(), 2);
    // ...and not when the field is set.
    let mut both = ann;
    merge(
        &mut both,
        &json!({"spec": {"loadBalancerSourceRanges": ["203.0.113.0/24"]}}),
    );
    let s = accepted(both);
    assert_eq!(
        s.load_balancer_source_ranges,
        vec!["203.0.113.0/24".parse::<IpNet>().unwrap()]
    );
    // Only a LoadBalancer reads the annotation.
    let s =
        accepted(json!({"metadata": {"annotations": {SOURCE_RANGES_ANNOTATION: "10.0.0.0/8"}}}));
    assert!(s.load_balancer_source_ranges.is_empty());
    // A bad CIDR in the annotation refuses the Service, like one in the field.
    let e = convert_service(
        json!({"metadata": {"annotations": {SOURCE_RANGES_ANNOTATION: "10.0.0.0/8,banana"}},
        "spec": lb}),
    )
    .unwrap_err();
    assert_eq!(
        e.reason,
        format!(
            "metadata.annotations[{SOURCE_RANGES_ANNOTATION:?}][1]: \"banana\" is not a CIDR (like 203.0.113.0/24)"
        )
    );
}

#[test]
fn session_affinity() {
    let s = accepted(json!({"spec": {"sessionAffinity": "ClientIP"}}));
    assert_eq!(s.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
    assert_eq!(DEFAULT_AFFINITY_TIMEOUT, 10800);
    for t in [1, 600, 86400] {
        let s = accepted(json!({"spec": {"sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": t}}}}));
        assert_eq!(s.affinity_timeout, Some(t));
    }
    let s = accepted(json!({"spec": {"sessionAffinity": "None"}}));
    assert_eq!(s.affinity_timeout, None);
}

#[test]
fn traffic_policies() {
    // Local external policy on a NodePort stays Local, with no health-check port.
    let s = accepted(
        json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 32000, "ports": [{"port": 80, "nodePort": 30080}]}}),
    );
    assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(s.health_check_node_port, None);
    // A LoadBalancer with Local keeps its health-check port.
    let s = accepted(
        json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 32000, "ports": [{"port": 80, "nodePort": 30080}]}}),
    );
    assert_eq!(s.health_check_node_port, Some(32000));
    // On an internal-only Service the external policy means nothing.
    let s = accepted(json!({"spec": {"externalTrafficPolicy": "Local"}}));
    assert_eq!(s.external_traffic_policy, TrafficPolicy::Cluster);
    let s = accepted(json!({"spec": {"internalTrafficPolicy": "Local"}}));
    assert_eq!(s.internal_traffic_policy, TrafficPolicy::Local);
}

#[test]
fn publish_not_ready_and_traffic_distribution() {
    let s = accepted(json!({"spec": {"publishNotReadyAddresses": true,
        "trafficDistribution": "PreferClose"}}));
    assert!(s.publish_not_ready_addresses);
    assert_eq!(s.traffic_distribution.as_deref(), Some("PreferClose"));
    let (s, problems) =
        convert_service(json!({"spec": {"trafficDistribution": "PreferMars"}})).unwrap();
    assert_eq!(s.traffic_distribution, None);
    assert_eq!(
        reasons(&problems),
        vec!["spec.trafficDistribution: unknown value \"PreferMars\"; ignored"]
    );
}

/// Every object-level rule: the Service is refused with a reason that names
/// the field and says what is wrong.
#[test]
fn service_refusals() {
    let np = |ports: Value| json!({"spec": {"type": "NodePort", "ports": ports}});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "invalid clusterIP",
            json!({"spec": {"clusterIP": "10.96.0.300", "clusterIPs": null}}),
            "spec.clusterIP: \"10.96.0.300\" is not a valid IP address",
        ),
        (
            "invalid clusterIPs",
            json!({"spec": {"clusterIP": "banana", "clusterIPs": ["banana"]}}),
            "spec.clusterIPs[0]: \"banana\" is not a valid IP address",
        ),
        (
            "leading zeros",
            json!({"spec": {"clusterIP": null, "clusterIPs": ["010.96.0.10"]}}),
            "spec.clusterIPs[0]: \"010.96.0.10\" is not a valid IP address",
        ),
        (
            "clusterIPs disagree",
            json!({"spec": {"clusterIPs": ["10.96.0.11"]}}),
            "spec.clusterIPs[0]: \"10.96.0.11\" must equal spec.clusterIP \"10.96.0.10\"",
        ),
        (
            "same family twice",
            json!({"spec": {"clusterIPs": ["10.96.0.10", "10.96.0.11"]}}),
            "spec.clusterIPs: both addresses are IPv4; a dual-stack Service needs one IPv4 and one IPv6",
        ),
        (
            "three cluster IPs",
            json!({"spec": {"clusterIPs": ["10.96.0.10", "fd00::1", "fd00::2"]}}),
            "spec.clusterIPs: at most two addresses (one per family), got 3",
        ),
        (
            "families disagree",
            json!({"spec": {"ipFamilies": ["IPv6"]}}),
            "spec.ipFamilies[0]: IPv6 does not match spec.clusterIPs[0] 10.96.0.10 (IPv4)",
        ),
        (
            "bad family",
            json!({"spec": {"ipFamilies": ["IPv5"]}}),
            "spec.ipFamilies[0]: unsupported value \"IPv5\" (IPv4 or IPv6)",
        ),
        (
            "single stack, two IPs",
            json!({"spec": {"clusterIPs": ["10.96.0.10", "fd00::10"], "ipFamilyPolicy": "SingleStack"}}),
            "spec.clusterIPs: two addresses, but spec.ipFamilyPolicy is SingleStack",
        ),
        (
            "None among others",
            json!({"spec": {"clusterIP": "None", "clusterIPs": ["None", "10.96.0.10"]}}),
            "spec.clusterIPs: \"None\" must be the only value of a headless Service",
        ),
        (
            "no cluster IP",
            json!({"spec": {"clusterIP": null, "clusterIPs": null}}),
            "spec.clusterIP: required for type ClusterIP (kproxy does not allocate cluster IPs: give the address the API server assigned, or \"None\" for a headless Service)",
        ),
        (
            "headless NodePort",
            json!({"spec": {"type": "NodePort", "clusterIP": "None", "clusterIPs": null}}),
            "spec.clusterIP: may not be \"None\" for type NodePort",
        ),
        (
            "unknown type",
            json!({"spec": {"type": "Ingress"}}),
            "spec.type: unsupported value \"Ingress\" (ClusterIP, NodePort, LoadBalancer or ExternalName)",
        ),
        (
            "ExternalName without a name",
            json!({"spec": {"type": "ExternalName"}}),
            "spec.externalName: required for type ExternalName",
        ),
        (
            "no ports",
            json!({"spec": {"ports": null}}),
            "spec.ports: required (at least one port)",
        ),
        (
            "port 0",
            json!({"spec": {"ports": [{"port": 0}]}}),
            "spec.ports[0].port: 0 is not a valid port (1-65535)",
        ),
        (
            "port 70000",
            json!({"spec": {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 70000}]}}),
            "spec.ports[1].port: 70000 is not a valid port (1-65535)",
        ),
        (
            "negative port",
            json!({"spec": {"ports": [{"port": -1}]}}),
            "spec.ports[0].port: -1 is not a valid port (1-65535)",
        ),
        (
            "targetPort 70000",
            json!({"spec": {"ports": [{"port": 80, "targetPort": 70000}]}}),
            "spec.ports[0].targetPort: 70000 is not a valid port (1-65535)",
        ),
        (
            "targetPort bad name",
            json!({"spec": {"ports": [{"port": 80, "targetPort": "Web_Port"}]}}),
            "spec.ports[0].targetPort: \"Web_Port\" is not a valid port name: at most 15 lower-case letters, digits and '-', with at least one letter",
        ),
        (
            "targetPort name too long",
            json!({"spec": {"ports": [{"port": 80, "targetPort": "a-very-long-port-name"}]}}),
            "spec.ports[0].targetPort: \"a-very-long-port-name\" is not a valid port name",
        ),
        (
            "targetPort quoted number",
            json!({"spec": {"ports": [{"port": 80, "targetPort": "8080"}]}}),
            "(a quoted number is a name; write the number without quotes)",
        ),
        (
            "nodePort not a port",
            np(json!([{"port": 80, "nodePort": 70000}])),
            "spec.ports[0].nodePort: 70000 is not a valid port (1-65535)",
        ),
        (
            "nodePort on ClusterIP",
            json!({"spec": {"ports": [{"port": 80, "nodePort": 30080}]}}),
            "spec.ports[0].nodePort: 30080 may only be used with type NodePort or LoadBalancer",
        ),
        (
            "duplicate nodePort",
            np(
                json!([{"name": "a", "port": 80, "nodePort": 30080}, {"name": "b", "port": 81, "nodePort": 30080}]),
            ),
            "spec.ports[1].nodePort: duplicate nodePort 30080/TCP",
        ),
        (
            "duplicate port name",
            json!({"spec": {"ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}]}}),
            "spec.ports[1].name: duplicate port name \"http\"",
        ),
        (
            "duplicate port",
            json!({"spec": {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}}),
            "spec.ports[1]: duplicate port 80/TCP",
        ),
        (
            "multi-port without names",
            json!({"spec": {"ports": [{"name": "a", "port": 80}, {"port": 81}]}}),
            "spec.ports[1].name: required when a Service has more than one port",
        ),
        (
            "bad port name",
            json!({"spec": {"ports": [{"name": "HTTP", "port": 80}]}}),
            "spec.ports[0].name: \"HTTP\" is not a valid port name",
        ),
        (
            "bad protocol",
            json!({"spec": {"ports": [{"port": 80, "protocol": "ICMP"}]}}),
            "spec.ports[0].protocol: unsupported protocol \"ICMP\" (TCP, UDP or SCTP)",
        ),
        (
            "invalid externalIP",
            json!({"spec": {"externalIPs": ["192.0.2.10", "192.0.2.256"]}}),
            "spec.externalIPs[1]: \"192.0.2.256\" is not a valid IP address",
        ),
        (
            "bad source range",
            json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 31000}],
            "loadBalancerSourceRanges": ["10.0.0.0/33"]}}),
            "spec.loadBalancerSourceRanges[0]: \"10.0.0.0/33\" is not a CIDR (like 203.0.113.0/24)",
        ),
        (
            "source range on ClusterIP",
            json!({"spec": {"loadBalancerSourceRanges": ["10.0.0.0/8"]}}),
            "spec.loadBalancerSourceRanges: may only be used with type LoadBalancer",
        ),
        (
            "affinity timeout 0",
            json!({"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}}),
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is outside 1-86400",
        ),
        (
            "affinity timeout too long",
            json!({"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}}}}),
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: 86401 is outside 1-86400",
        ),
        (
            "bad affinity",
            json!({"spec": {"sessionAffinity": "Cookie"}}),
            "spec.sessionAffinity: unsupported value \"Cookie\" (None or ClientIP)",
        ),
        (
            "bad external policy",
            json!({"spec": {"externalTrafficPolicy": "Nearby"}}),
            "spec.externalTrafficPolicy: unsupported value \"Nearby\" (Cluster or Local)",
        ),
        (
            "bad internal policy",
            json!({"spec": {"internalTrafficPolicy": "local"}}),
            "spec.internalTrafficPolicy: unsupported value \"local\" (Cluster or Local)",
        ),
        (
            "bad health-check port",
            json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "healthCheckNodePort": 65536, "ports": [{"port": 80, "nodePort": 31000}]}}),
            "spec.healthCheckNodePort: 65536 is not a valid port (1-65535)",
        ),
        ("no spec", json!({"spec": null}), "spec: required"),
        (
            "no name",
            json!({"metadata": {"name": null}}),
            "metadata.name: required",
        ),
        (
            "no namespace",
            json!({"metadata": {"namespace": null}}),
            "metadata.namespace: required",
        ),
    ];
    for (what, patch, want) in cases {
        let input = service_from(patch);
        match service(&input, &ConvertOptions::default()) {
            Ok((s, _)) => panic!("{what}: accepted {s:?}"),
            Err(p) => {
                assert!(
                    p.reason.contains(want),
                    "{what}: reason {:?} lacks {want:?}",
                    p.reason
                );
                assert_eq!(p.object.kind, Kind::Service, "{what}");
                assert_eq!(
                    p.object.name,
                    input.metadata.name.clone().unwrap_or_default(),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn refusal_names_the_object_and_every_mistake() {
    let e = convert_service(
        json!({"spec": {"clusterIP": "10.96.0.300", "clusterIPs": null,
        "ports": [{"port": 0}]}}),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Service shop/web: spec.clusterIP: \"10.96.0.300\" is not a valid IP address; \
         spec.ports[0].port: 0 is not a valid port (1-65535)"
    );
}

// ---- EndpointSlice ----

fn base_slice() -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc12", "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": "node-1", "zone": "zone-a"}]
    })
}

fn slice_from(patch: Value) -> discovery::EndpointSlice {
    let mut v = base_slice();
    merge(&mut v, &patch);
    serde_json::from_value(v).expect("test input is a valid EndpointSlice shape")
}

fn convert_slice(patch: Value) -> Converted<EndpointSlice> {
    endpoint_slice(&slice_from(patch), &ConvertOptions::default())
}

fn ep(addr: &str) -> Value {
    json!({"addresses": [addr]})
}

#[test]
fn slice_basics() {
    let (s, problems) = convert_slice(json!({})).unwrap();
    assert!(problems.is_empty());
    assert_eq!(s.namespace, "shop");
    assert_eq!(s.name, "web-abc12");
    assert_eq!(s.service, "web");
    assert_eq!(s.service_name(), ServiceName::new("shop", "web"));
    assert_eq!(s.address_type, AddressType::V4);
    assert!(!s.mirrored);
    assert_eq!(s.trigger_time, None);
    assert_eq!(
        s.ports,
        vec![EndpointPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080
        }]
    );
    assert_eq!(
        s.endpoints,
        vec![Endpoint {
            addr: "10.244.1.5".parse().unwrap(),
            ready: true,
            serving: true,
            terminating: false,
            node_name: Some("node-1".into()),
            zone: Some("zone-a".into()),
            zone_hints: vec![],
            node_hints: vec![],
        }]
    );
}

#[test]
fn slice_conditions() {
    // (conditions, ready, serving, terminating), as upstream reads them
    // (pkg/proxy/endpointslicecache.go, v1.36.3: ready and serving are true
    // unless set false, terminating is false unless set true).
    let cases = [
        (json!(null), true, true, false),
        (json!({}), true, true, false),
        (json!({"ready": false}), false, true, false),
        (json!({"ready": true, "serving": null}), true, true, false),
        // A terminating pod whose slice leaves serving out still serves.
        (
            json!({"ready": false, "terminating": true}),
            false,
            true,
            true,
        ),
        (json!({"serving": false}), true, false, false),
        (
            json!({"ready": false, "serving": true, "terminating": true}),
            false,
            true,
            true,
        ),
        (
            json!({"ready": false, "serving": false, "terminating": true}),
            false,
            false,
            true,
        ),
    ];
    for (cond, ready, serving, terminating) in cases {
        let (s, _) = convert_slice(
            json!({"endpoints": [{"addresses": ["10.244.1.5"], "conditions": cond}]}),
        )
        .unwrap();
        let e = &s.endpoints[0];
        assert_eq!(
            (e.ready, e.serving, e.terminating),
            (ready, serving, terminating),
            "{cond}"
        );
    }
}

#[test]
fn slice_ports_defaults_and_nil_port() {
    let (s, problems) = convert_slice(json!({"ports": [
        {"port": 8080},
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "all"}
    ]}))
    .unwrap();
    assert!(problems.is_empty());
    assert_eq!(
        s.ports,
        vec![
            EndpointPort {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 8080
            },
            EndpointPort {
                name: "dns".into(),
                protocol: Protocol::Udp,
                port: 53
            },
        ]
    );
}

#[test]
fn slice_hints_and_trigger_time() {
    let (s, problems) = convert_slice(json!({
        "metadata": {"annotations": {TRIGGER_TIME_ANNOTATION: "2026-11-22T03:00:00Z"}},
        "endpoints": [{"addresses": ["10.244.1.5", "10.244.1.99"],
            "hints": {"forZones": [{"name": "zone-a"}, {"name": "zone-b"}], "forNodes": [{"name": "node-1"}]}}]
    }))
    .unwrap();
    assert!(problems.is_empty());
    assert_eq!(s.trigger_time, Some(1_795_316_400_000));
    let e = &s.endpoints[0];
    assert_eq!(
        e.addr,
        "10.244.1.5".parse::<IpAddr>().unwrap(),
        "only the first address counts"
    );
    assert_eq!(e.zone_hints, vec!["zone-a", "zone-b"]);
    assert_eq!(e.node_hints, vec!["node-1"]);
    assert_eq!(e.node_name, None);

    let (s, problems) = convert_slice(json!({
        "metadata": {"annotations": {TRIGGER_TIME_ANNOTATION: "yesterday"}}}))
    .unwrap();
    assert_eq!(s.trigger_time, None);
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0]
            .reason
            .contains("\"yesterday\" is not an RFC 3339 time")
    );
}

#[test]
fn ipv6_slice() {
    let (s, problems) = convert_slice(json!({"addressType": "IPv6",
        "endpoints": [ep("fd00:10:244:1::5"), ep("10.244.1.5")]}))
    .unwrap();
    assert_eq!(s.address_type, AddressType::V6);
    assert_eq!(s.endpoints.len(), 1);
    assert_eq!(
        reasons(&problems),
        vec!["endpoints[1].addresses[0]: 10.244.1.5 is IPv4 in an IPv6 slice; endpoint skipped"]
    );
}

#[test]
fn fqdn_slice_has_no_endpoints() {
    let (s, problems) = convert_slice(json!({"addressType": "FQDN",
        "endpoints": [ep("db.example.com")]}))
    .unwrap();
    assert!(problems.is_empty());
    assert_eq!(s.address_type, AddressType::Fqdn);
    assert!(s.endpoints.is_empty());
    assert_eq!(s.ports.len(), 1);
}

/// Bad endpoints are dropped one by one; the slice and its good endpoints stay.
#[test]
fn slice_part_level_problems() {
    let (s, problems) = convert_slice(json!({"endpoints": [
        ep("10.244.1.5"),
        ep("10.244.1.300"),
        ep("fd00:10:244::5"),
        ep("10.244.1.6"),
        {"addresses": ["10.244.1.5"], "conditions": {"ready": false}},
        {"addresses": []},
        ep("not-an-ip")
    ]}))
    .unwrap();
    let addrs: Vec<String> = s.endpoints.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(addrs, vec!["10.244.1.5", "10.244.1.6"]);
    assert!(s.endpoints[0].ready, "the first of two duplicates is kept");
    assert_eq!(
        reasons(&problems),
        vec![
            "endpoints[1].addresses[0]: \"10.244.1.300\" is not a valid IP address; endpoint skipped",
            "endpoints[2].addresses[0]: fd00:10:244::5 is IPv6 in an IPv4 slice; endpoint skipped",
            "endpoints[4]: duplicate endpoint 10.244.1.5; the first one is kept",
            "endpoints[5].addresses: empty; endpoint skipped",
            "endpoints[6].addresses[0]: \"not-an-ip\" is not a valid IP address; endpoint skipped",
        ]
    );
    for p in &problems {
        assert_eq!(
            p.object,
            ObjectRef::new(Kind::EndpointSlice, "shop", "web-abc12")
        );
    }
}

#[test]
fn slice_refusals() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "no service label",
            json!({"metadata": {"labels": null}}),
            "metadata.labels[\"kubernetes.io/service-name\"]: required (the slice must name its Service)",
        ),
        (
            "empty service label",
            json!({"metadata": {"labels": {"kubernetes.io/service-name": ""}}}),
            "metadata.labels[\"kubernetes.io/service-name\"]: required",
        ),
        (
            "no addressType",
            json!({"addressType": ""}),
            "addressType: required",
        ),
        (
            "bad addressType",
            json!({"addressType": "IPv5"}),
            "addressType: unsupported value \"IPv5\" (IPv4, IPv6 or FQDN)",
        ),
        (
            "port 0",
            json!({"ports": [{"name": "http", "port": 0}]}),
            "ports[0].port: 0 is not a valid port (1-65535)",
        ),
        (
            "port 70000",
            json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 70000}]}),
            "ports[1].port: 70000 is not a valid port (1-65535)",
        ),
        (
            "duplicate port name",
            json!({"ports": [{"port": 80}, {"port": 81}]}),
            "ports[1].name: duplicate port name \"\"",
        ),
        (
            "bad protocol",
            json!({"ports": [{"port": 80, "protocol": "tcp"}]}),
            "ports[0].protocol: unsupported protocol \"tcp\"",
        ),
        (
            "no name",
            json!({"metadata": {"name": null}}),
            "metadata.name: required",
        ),
        (
            "no namespace",
            json!({"metadata": {"namespace": null}}),
            "metadata.namespace: required",
        ),
    ];
    for (what, patch, want) in cases {
        match convert_slice(patch) {
            Ok((s, _)) => panic!("{what}: accepted {s:?}"),
            Err(p) => {
                assert!(
                    p.reason.contains(want),
                    "{what}: reason {:?} lacks {want:?}",
                    p.reason
                );
                assert_eq!(p.object.kind, Kind::EndpointSlice, "{what}");
            }
        }
    }
}

fn big_slice(n: usize, duplicate_every: Option<usize>) -> discovery::EndpointSlice {
    let endpoints: Vec<Value> = (0..n)
        .map(|i| {
            let i = match duplicate_every {
                Some(k) if i % k == k - 1 => i - 1,
                _ => i,
            };
            json!({"addresses": [format!("10.244.{}.{}", i / 250, i % 250 + 1)],
                "nodeName": format!("node-{}", i % 7)})
        })
        .collect();
    slice_from(json!({"endpoints": endpoints}))
}

#[test]
fn ten_thousand_endpoints() {
    let input = big_slice(10_000, None);
    let (s, problems) = endpoint_slice(&input, &ConvertOptions::default()).unwrap();
    assert!(problems.is_empty());
    assert_eq!(s.endpoints.len(), 10_000);
    assert_eq!(s.endpoints[0].addr.to_string(), "10.244.0.1");
    assert_eq!(s.endpoints[9_999].addr.to_string(), "10.244.39.250");
    // Every fourth one repeats its predecessor: each repeat is reported once.
    let input = big_slice(10_000, Some(4));
    let (s, problems) = endpoint_slice(&input, &ConvertOptions::default()).unwrap();
    assert_eq!(s.endpoints.len(), 7_500);
    assert_eq!(problems.len(), 2_500);
}

// ---- Endpoints (legacy, mirrored) ----

fn base_endpoints() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "legacy-db", "namespace": "shop"},
        "subsets": [{
            "addresses": [{"ip": "192.168.10.5", "nodeName": "node-1"}, {"ip": "fd00:192:168::5"}],
            "notReadyAddresses": [{"ip": "192.168.10.6"}],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
        }]
    })
}

fn convert_endpoints(patch: Value) -> Converted<Vec<EndpointSlice>> {
    let mut v = base_endpoints();
    merge(&mut v, &patch);
    let e: core::Endpoints = serde_json::from_value(v).unwrap();
    endpoints(&e, &ConvertOptions::default())
}

#[test]
fn endpoints_mirroring() {
    let (slices, problems) = convert_endpoints(json!({})).unwrap();
    assert!(problems.is_empty());
    assert_eq!(slices.len(), 2, "one slice per family");
    let v4 = &slices[0];
    assert_eq!(v4.address_type, AddressType::V4);
    assert!(v4.mirrored);
    assert_eq!(v4.service, "legacy-db");
    assert_eq!(v4.name, "legacy-db");
    assert_eq!(v4.namespace, "shop");
    assert_eq!(
        v4.ports,
        vec![EndpointPort {
            name: "pg".into(),
            protocol: Protocol::Tcp,
            port: 5432
        }]
    );
    let got: Vec<(String, bool, bool, Option<String>)> = v4
        .endpoints
        .iter()
        .map(|e| (e.addr.to_string(), e.ready, e.serving, e.node_name.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("192.168.10.5".into(), true, true, Some("node-1".into())),
            ("192.168.10.6".into(), false, false, None),
        ]
    );
    assert_eq!(slices[1].address_type, AddressType::V6);
    assert_eq!(slices[1].endpoints.len(), 1);
    assert_eq!(slices[1].ports, v4.ports);
}

#[test]
fn endpoints_subsets_keep_their_own_ports() {
    let (slices, _) = convert_endpoints(json!({"subsets": [
        {"addresses": [{"ip": "192.168.10.5"}], "ports": [{"port": 5432}]},
        {"addresses": [{"ip": "192.168.10.7"}], "ports": [{"port": 6432, "protocol": "UDP"}]},
        {"ports": [{"port": 7432}]}
    ]}))
    .unwrap();
    assert_eq!(slices.len(), 2, "a subset without addresses gives no slice");
    assert_eq!(slices[0].ports[0].port, 5432);
    assert_eq!(slices[1].ports[0].port, 6432);
    assert_eq!(slices[1].ports[0].protocol, Protocol::Udp);
    assert_eq!(slices[1].endpoints[0].addr.to_string(), "192.168.10.7");
}

#[test]
fn endpoints_skip_mirror() {
    let (slices, problems) =
        convert_endpoints(json!({"metadata": {"labels": {SKIP_MIRROR_LABEL: "true"}}})).unwrap();
    assert!(slices.is_empty());
    assert!(problems.is_empty());
    let (slices, _) =
        convert_endpoints(json!({"metadata": {"labels": {SKIP_MIRROR_LABEL: "false"}}})).unwrap();
    assert_eq!(slices.len(), 2);
}

#[test]
fn endpoints_bad_parts_and_refusals() {
    let (slices, problems) = convert_endpoints(json!({"subsets": [{
        "addresses": [{"ip": "192.168.10.5"}, {"ip": "192.168.10.500"}],
        "notReadyAddresses": [{"ip": "192.168.10.5"}],
        "ports": [{"port": 5432}]
    }]}))
    .unwrap();
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].endpoints.len(), 1);
    assert!(
        slices[0].endpoints[0].ready,
        "ready wins over a notReady duplicate"
    );
    assert_eq!(
        reasons(&problems),
        vec![
            "subsets[0].addresses[1].ip: \"192.168.10.500\" is not a valid IP address; skipped",
            "subsets[0].notReadyAddresses[0].ip: duplicate address 192.168.10.5; the first one is kept",
        ]
    );
    assert_eq!(
        problems[0].object,
        ObjectRef::new(Kind::Endpoints, "shop", "legacy-db")
    );

    let e = convert_endpoints(json!({"subsets": [{"addresses": [{"ip": "192.168.10.5"}],
        "ports": [{"port": 0}]}]}))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Endpoints shop/legacy-db: subsets[0].ports[0].port: 0 is not a valid port (1-65535)"
    );
    let e = convert_endpoints(json!({"metadata": {"namespace": null}})).unwrap_err();
    assert_eq!(e.reason, "metadata.namespace: required");
}

// ---- Node ----

#[test]
fn node_removal_and_pod_cidrs() {
    let n: core::Node = serde_json::from_value(json!({
        "metadata": {"name": "n", "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:244:1::/64"]}
    }))
    .unwrap();
    let deleting = node(&n).unwrap();
    assert!(!deleting.eligible(), "being deleted");
    assert_eq!(deleting.pod_cidrs.len(), 2);
    let n: core::Node = serde_json::from_value(json!({
        "metadata": {"name": "n"},
        "spec": {"podCIDR": "10.244.2.0/24",
                 "taints": [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]}
    }))
    .unwrap();
    let node = node(&n).unwrap();
    assert!(!node.eligible(), "tainted for removal");
    assert_eq!(
        node.pod_cidrs,
        vec!["10.244.2.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
}

#[test]
fn node_conversion() {
    let n: core::Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1", "labels": {ZONE_LABEL: "zone-a", "kubernetes.io/os": "linux"}},
        "status": {"addresses": [
            {"type": "InternalIP", "address": "172.18.0.2"},
            {"type": "Hostname", "address": "node-1"},
            {"type": "ExternalIP", "address": "198.51.100.2"},
            {"type": "InternalIP", "address": "fd00:172:18::2"},
            {"type": "InternalIP", "address": "172.18.0.2"},
            {"type": "InternalIP", "address": "garbage"}
        ]}
    }))
    .unwrap();
    let node = node(&n).unwrap();
    assert_eq!(node.name, "node-1");
    // InternalIPs first, as upstream's GetNodeHostIPs (component-helpers
    // node/util) orders them.
    assert_eq!(
        node.addresses,
        vec![
            "172.18.0.2".parse::<IpAddr>().unwrap(),
            "fd00:172:18::2".parse().unwrap(),
            "198.51.100.2".parse().unwrap()
        ]
    );
    assert!(node.eligible());
    assert!(node.pod_cidrs.is_empty());
    assert_eq!(node.zone.as_deref(), Some("zone-a"));
    assert_eq!(
        node.labels.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );

    let bare: core::Node = serde_json::from_value(json!({"metadata": {"name": "node-2"}})).unwrap();
    let n2 = super::node(&bare).unwrap();
    assert!(n2.addresses.is_empty());
    assert_eq!(n2.zone, None);

    let unnamed: core::Node = serde_json::from_value(json!({"metadata": {}})).unwrap();
    assert_eq!(
        super::node(&unnamed).unwrap_err().reason,
        "metadata.name: required"
    );
}

#[test]
fn name_rules() {
    for ok in ["http", "h2c", "web-8080", "a"] {
        assert!(is_iana_svc_name(ok), "{ok}");
    }
    for bad in [
        "",
        "8080",
        "-http",
        "http-",
        "ht--tp",
        "HTTP",
        "http_alt",
        "sixteen-chars-xx",
    ] {
        assert!(!is_iana_svc_name(bad), "{bad}");
    }
    for ok in ["http", "8080", "a-b", &"x".repeat(63)] {
        assert!(is_dns_label(ok), "{ok}");
    }
    for bad in ["", "-a", "a-", "A", "a.b", &"x".repeat(64)] {
        assert!(!is_dns_label(bad), "{bad}");
    }
}
