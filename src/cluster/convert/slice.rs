//! EndpointSlices, and legacy v1 Endpoints mirrored into slices.

use std::collections::HashSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::report::{Report, parse_ip};
use super::{
    ConvertOptions, Converted, SERVICE_NAME_LABEL, SKIP_MIRROR_LABEL, TRIGGER_TIME_ANNOTATION,
};
use crate::cluster::model::{AddressType, Endpoint, EndpointPort, EndpointSlice};
use crate::cluster::object::Kind;
use crate::net::IpFamily;

/// An EndpointSlice, with the endpoints dropped from it, or why it is refused.
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

/// `endpoints.kubernetes.io/last-change-trigger-time` as unix milliseconds.
pub(super) fn trigger_time(r: &mut Report, meta: &ObjectMeta) -> Option<i64> {
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
