//! This node: its addresses, zone, labels, pod CIDRs, and whether it is
//! being removed.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;

use super::ZONE_LABEL;
use super::report::{Report, parse_ip};
use crate::cluster::model::{Node, TO_BE_DELETED_TAINT};
use crate::cluster::object::{Kind, Problem};

/// This node as the proxy needs it, or why the Node is refused.
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
