//! What the health-check node port servers need after a sync: every
//! Service that asks for one, per IP family it has, with the count of its
//! ready endpoints on this node. Mode-independent: both proxy modes leave
//! the same list, computed from the cluster state alone.
//!
//! Upstream's per-family proxier computes the same pair from its maps
//! (`ServicePortMap.HealthCheckNodePorts` in pkg/proxy/servicechangetracker.go,
//! `EndpointsMap.LocalReadyEndpoints` in pkg/proxy/endpointschangetracker.go,
//! the endpoint map built by pkg/proxy/endpointslicecache.go).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::cluster::{ClusterView, Endpoint, EndpointSlice, Protocol, ServiceName};
use crate::net::IpFamily;

/// One Service's health-check node port in one family.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HealthCheck {
    pub service: ServiceName,
    pub family: IpFamily,
    pub port: u16,
    /// Distinct addresses of the Service's ready endpoints on this node.
    pub local_endpoints: usize,
}

/// The health checks the cluster asks this node (`node_name`) to serve.
/// The model keeps `health_check_node_port` only on a LoadBalancer with
/// externalTrafficPolicy Local (upstream's `NeedsHealthCheck`); a Service
/// with no port has no entry in upstream's port map, so no server either.
pub fn health_checks(view: &dyn ClusterView, node_name: &str) -> Vec<HealthCheck> {
    let mut out = Vec::new();
    for svc in view.services() {
        let Some(port) = svc.health_check_node_port else {
            continue;
        };
        if !svc.is_proxied() || svc.ports.is_empty() {
            continue;
        }
        let slices = view.slices_for(&svc.name);
        for family in svc.families() {
            out.push(HealthCheck {
                service: svc.name.clone(),
                family,
                port,
                local_endpoints: local_ready(&slices, family, node_name),
            });
        }
    }
    out
}

/// One slice port's endpoints, by address and port.
type ByAddress<'a> = BTreeMap<(IpAddr, u16), &'a Endpoint>;

/// Upstream's count: endpoints grouped by slice port (name, protocol) and
/// keyed by address and port, where a later duplicate replaces an earlier
/// one unless it is terminating; then the distinct addresses among those
/// that are ready (`conditions.ready`, terminating ones are not) and on
/// this node. Counting addresses, not address-port pairs, makes a pod that
/// serves two ports one endpoint.
fn local_ready(slices: &[&EndpointSlice], family: IpFamily, node_name: &str) -> usize {
    let mut by_port: BTreeMap<(&str, Protocol), ByAddress<'_>> = BTreeMap::new();
    for slice in slices {
        if slice.family() != Some(family) {
            continue;
        }
        for sp in slice.ports.iter().filter(|p| p.port != 0) {
            let eps = by_port.entry((sp.name.as_str(), sp.protocol)).or_default();
            for ep in slice.endpoints.iter() {
                if IpFamily::of(&ep.addr) != family {
                    continue;
                }
                let key = (ep.addr, sp.port);
                if !eps.contains_key(&key) || !ep.terminating {
                    eps.insert(key, ep);
                }
            }
        }
    }
    let local = |ep: &Endpoint| !node_name.is_empty() && ep.node_name.as_deref() == Some(node_name);
    by_port
        .values()
        .flat_map(|eps| eps.values())
        .filter(|ep| ep.ready && local(ep))
        .map(|ep| ep.addr)
        .collect::<BTreeSet<_>>()
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{
        AddressType, EndpointPort, Service, ServicePort, ServiceType, StaticCluster, TargetPort,
        TrafficPolicy,
    };

    const NODE: &str = "node-1";

    fn lb_local(name: &str, hc: Option<u16>, ips: &[&str]) -> Service {
        Service {
            name: ServiceName::new("default", name),
            service_type: ServiceType::LoadBalancer,
            cluster_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            headless: false,
            has_selector: true,
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                target_port: TargetPort::Number(8080),
                node_port: Some(30080),
            }],
            external_ips: vec![],
            load_balancer_ingress: vec![],
            load_balancer_source_ranges: vec![],
            affinity_timeout: None,
            external_traffic_policy: TrafficPolicy::Local,
            internal_traffic_policy: TrafficPolicy::Cluster,
            health_check_node_port: hc,
            publish_not_ready_addresses: false,
            traffic_distribution: None,
        }
    }

    fn ep(addr: &str, node: &str, ready: bool, terminating: bool) -> Endpoint {
        Endpoint {
            addr: addr.parse().unwrap(),
            ready,
            serving: ready,
            terminating,
            node_name: Some(node.into()),
            zone: None,
            zone_hints: vec![],
            node_hints: vec![],
        }
    }

    fn slice(svc: &str, name: &str, ports: &[(&str, u16)], eps: Vec<Endpoint>) -> EndpointSlice {
        let v6 = eps.first().is_some_and(|e| e.addr.is_ipv6());
        EndpointSlice {
            namespace: "default".into(),
            name: name.into(),
            service: svc.into(),
            address_type: if v6 { AddressType::V6 } else { AddressType::V4 },
            ports: ports
                .iter()
                .map(|(n, p)| EndpointPort {
                    name: n.to_string(),
                    protocol: Protocol::Tcp,
                    port: *p,
                })
                .collect(),
            endpoints: eps,
            mirrored: false,
            trigger_time: None,
        }
    }

    fn counts(c: &StaticCluster) -> Vec<(String, IpFamily, u16, usize)> {
        health_checks(c, NODE)
            .into_iter()
            .map(|h| (h.service.name, h.family, h.port, h.local_endpoints))
            .collect()
    }

    #[test]
    fn only_services_with_a_health_check_port_and_ports_get_a_server() {
        let mut c = StaticCluster::default();
        c.add_service(lb_local("web", Some(32000), &["10.96.0.10"]));
        c.add_service(lb_local("plain", None, &["10.96.0.11"]));
        let mut portless = lb_local("portless", Some(32001), &["10.96.0.12"]);
        portless.ports.clear();
        c.add_service(portless);
        let mut headless = lb_local("headless", Some(32002), &[]);
        headless.headless = true;
        c.add_service(headless);
        assert_eq!(counts(&c), vec![("web".into(), IpFamily::V4, 32000, 0)]);
    }

    #[test]
    fn a_local_address_behind_several_ports_counts_once() {
        // Upstream's expectation in TestUpdateEndpointsMap, case "multiple
        // subsets, IPs and ports" (pkg/proxy/endpointschangetracker_test.go):
        // ns1/ep1 has local 1.1.1.2 on p11 and p12 and local 1.1.1.4 on p13
        // and p14, in two slices: 2; ns2/ep2 has local 2.2.2.2 on p21 and p22: 1.
        let mut c = StaticCluster::default();
        c.add_service(lb_local("ep1", Some(32001), &["10.96.0.1"]));
        c.add_service(lb_local("ep2", Some(32002), &["10.96.0.2"]));
        let pair = |remote: &str, local: &str| {
            vec![
                ep(remote, "node-2", true, false),
                ep(local, NODE, true, false),
            ]
        };
        c.put_slice(slice(
            "ep1",
            "ep1-1",
            &[("p11", 11), ("p12", 12)],
            pair("1.1.1.1", "1.1.1.2"),
        ));
        c.put_slice(slice(
            "ep1",
            "ep1-2",
            &[("p13", 13), ("p14", 14)],
            pair("1.1.1.3", "1.1.1.4"),
        ));
        c.put_slice(slice(
            "ep2",
            "ep2-1",
            &[("p21", 21), ("p22", 22)],
            pair("2.2.2.1", "2.2.2.2"),
        ));
        assert_eq!(
            counts(&c),
            vec![
                ("ep1".into(), IpFamily::V4, 32001, 2),
                ("ep2".into(), IpFamily::V4, 32002, 1)
            ]
        );
    }

    #[test]
    fn not_ready_and_terminating_local_endpoints_do_not_count() {
        // Upstream's TestHealthCheckNodePortWhenTerminating
        // (pkg/proxy/nftables/proxier_test.go): three ready local endpoints
        // and a not-ready one count 3; once all are not ready (serving and
        // terminating or not), none is left.
        let mut c = StaticCluster::default();
        c.add_service(lb_local("svc1", Some(32000), &["172.30.1.1"]));
        let cond = |addr: &str, ready: bool, terminating: bool| {
            let mut e = ep(addr, NODE, ready, terminating);
            e.serving = ready || terminating;
            e
        };
        c.put_slice(slice(
            "svc1",
            "svc1-1",
            &[("", 80)],
            vec![
                cond("10.0.1.1", true, false),
                cond("10.0.1.2", true, false),
                cond("10.0.1.3", true, false),
                cond("10.0.1.4", false, false),
            ],
        ));
        assert_eq!(counts(&c)[0].3, 3);
        c.put_slice(slice(
            "svc1",
            "svc1-1",
            &[("", 80)],
            vec![
                cond("10.0.1.1", false, false),
                cond("10.0.1.2", false, true),
                cond("10.0.1.3", false, true),
                cond("10.0.1.4", false, true),
            ],
        ));
        assert_eq!(counts(&c)[0].3, 0);
        // A remote ready endpoint does not make it healthy either.
        c.put_slice(slice(
            "svc1",
            "svc1-2",
            &[("", 80)],
            vec![ep("10.0.2.1", "node-2", true, false)],
        ));
        assert_eq!(counts(&c)[0].3, 0);
    }

    #[test]
    fn a_terminating_duplicate_does_not_replace_the_running_one() {
        let mut c = StaticCluster::default();
        c.add_service(lb_local("web", Some(32000), &["10.96.0.10"]));
        c.put_slice(slice(
            "web",
            "web-1",
            &[("http", 8080)],
            vec![
                ep("10.244.1.1", NODE, true, false),
                ep("10.244.1.1", NODE, false, true),
            ],
        ));
        assert_eq!(counts(&c)[0].3, 1);
    }

    #[test]
    fn each_family_counts_its_own_slices() {
        let mut c = StaticCluster::default();
        c.add_service(lb_local("web", Some(32000), &["10.96.0.10", "fd00::10"]));
        c.put_slice(slice(
            "web",
            "web-v4",
            &[("http", 8080)],
            vec![ep("10.244.1.1", NODE, true, false)],
        ));
        c.put_slice(slice(
            "web",
            "web-v6",
            &[("http", 8080)],
            vec![
                ep("fd00:244::1", NODE, true, false),
                ep("fd00:244::2", NODE, true, false),
            ],
        ));
        assert_eq!(
            counts(&c),
            vec![
                ("web".into(), IpFamily::V4, 32000, 1),
                ("web".into(), IpFamily::V6, 32000, 2)
            ]
        );
    }

    #[test]
    fn with_no_node_name_nothing_is_local() {
        let mut c = StaticCluster::default();
        c.add_service(lb_local("web", Some(32000), &["10.96.0.10"]));
        let mut e = ep("10.244.1.1", "", true, false);
        e.node_name = Some(String::new());
        c.put_slice(slice("web", "web-1", &[("http", 8080)], vec![e]));
        assert_eq!(health_checks(&c, "")[0].local_endpoints, 0);
    }
}
