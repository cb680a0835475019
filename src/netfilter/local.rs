//! Which traffic comes from this cluster's pods, as iptables matches:
//! upstream's local-traffic detectors (`--detect-local-mode`,
//! pkg/proxy/util/localdetector.go and cmd/kube-proxy/app/server_linux.go
//! getLocalDetectors), one per IP family.
//!
//! - ClusterCIDR: the first `--cluster-cidr` of the family (`-s CIDR`);
//! - NodeCIDR: the first of the Node's `spec.podCIDRs` of the family;
//! - BridgeInterface: `-i BRIDGE`, both families;
//! - InterfaceNamePrefix: `-i PREFIX+`, both families;
//! - otherwise (ClusterCIDR without a CIDR, NodeCIDR before the Node has
//!   podCIDRs): nothing is detected, and the rules that need it are left out.

use ipnet::IpNet;

use crate::config::LocalDetector;
use crate::net::IpFamily;

/// The detector for one family, resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LocalMatch {
    /// Nothing tells pod traffic apart.
    #[default]
    None,
    Source(IpNet),
    /// An interface name, `+` ending a prefix as iptables writes it.
    Interface(String),
}

impl LocalMatch {
    /// `detector` for `family`; `node_pod_cidrs` are the Node's podCIDRs.
    pub fn resolve(detector: &LocalDetector, node_pod_cidrs: &[IpNet], family: IpFamily) -> Self {
        let first = |cidrs: &[IpNet]| {
            cidrs
                .iter()
                .copied()
                .find(|c| IpFamily::of(&c.addr()) == family)
                .map_or(LocalMatch::None, LocalMatch::Source)
        };
        match detector {
            LocalDetector::None => LocalMatch::None,
            LocalDetector::ClusterCidr(cidrs) => first(cidrs),
            LocalDetector::NodeCidr => first(node_pod_cidrs),
            LocalDetector::BridgeInterface(name) => LocalMatch::Interface(name.clone()),
            LocalDetector::InterfaceNamePrefix(prefix) => {
                LocalMatch::Interface(format!("{prefix}+"))
            }
        }
    }

    /// The match for pod traffic (`-s CIDR`, `-i cni0`), if any.
    pub fn if_local(&self) -> Option<String> {
        match self {
            LocalMatch::None => None,
            LocalMatch::Source(c) => Some(format!("-s {c}")),
            LocalMatch::Interface(i) => Some(format!("-i {i}")),
        }
    }

    /// The match for everything else (`! -s CIDR`, `! -i cni0`), if any.
    pub fn if_not_local(&self) -> Option<String> {
        self.if_local().map(|m| format!("! {m}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn each_mode_gives_upstreams_matches() {
        let cluster = LocalDetector::ClusterCidr(vec![
            cidr("10.244.0.0/16"),
            cidr("10.245.0.0/16"),
            cidr("fd00:244::/56"),
        ]);
        let v4 = LocalMatch::resolve(&cluster, &[], IpFamily::V4);
        assert_eq!(v4.if_not_local().as_deref(), Some("! -s 10.244.0.0/16"));
        let v6 = LocalMatch::resolve(&cluster, &[], IpFamily::V6);
        assert_eq!(v6.if_local().as_deref(), Some("-s fd00:244::/56"));

        let node = LocalDetector::NodeCidr;
        assert_eq!(
            LocalMatch::resolve(&node, &[], IpFamily::V4),
            LocalMatch::None
        );
        let m = LocalMatch::resolve(&node, &[cidr("10.244.3.0/24")], IpFamily::V4);
        assert_eq!(m.if_not_local().as_deref(), Some("! -s 10.244.3.0/24"));
        assert_eq!(
            LocalMatch::resolve(&node, &[cidr("10.244.3.0/24")], IpFamily::V6),
            LocalMatch::None
        );

        let bridge = LocalDetector::BridgeInterface("cni0".into());
        assert_eq!(
            LocalMatch::resolve(&bridge, &[], IpFamily::V6)
                .if_not_local()
                .as_deref(),
            Some("! -i cni0")
        );
        let prefix = LocalDetector::InterfaceNamePrefix("veth".into());
        assert_eq!(
            LocalMatch::resolve(&prefix, &[], IpFamily::V4)
                .if_local()
                .as_deref(),
            Some("-i veth+")
        );

        assert_eq!(
            LocalMatch::resolve(&LocalDetector::None, &[], IpFamily::V4),
            LocalMatch::None
        );
    }
}
