//! The process- and node-level facts and actions some settings need:
//! the hostname, `--oom-score-adj`, the CPU count for conntrack sizing,
//! the node's primary IPs (`--bind-address`, `--nodeport-addresses
//! primary`).

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::{Config, NodePortAddresses};

/// The kernel's hostname, lower-cased, as upstream's default node name.
pub(crate) fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_default()
}

/// `--oom-score-adj` / `oomScoreAdj`: write this process's
/// /proc/self/oom_score_adj. A failure is logged and otherwise ignored, as
/// kube-proxy does (it logs at verbosity 2; kproxy warns, since the
/// operator asked for it).
pub fn apply_oom_score_adj(value: i32) {
    match write_oom_score_adj(Path::new("/proc/self/oom_score_adj"), value) {
        Ok(()) => tracing::debug!("set oom_score_adj to {value}"),
        Err(e) => tracing::warn!("failed to apply oom_score_adj {value}: {e}"),
    }
}

/// Upstream's applyOOMScoreAdj: two tries, a missing file is final.
pub(crate) fn write_oom_score_adj(path: &Path, value: i32) -> std::io::Result<()> {
    let mut last = None;
    for attempt in 0..2 {
        match std::fs::write(path, value.to_string()) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(e),
            Err(e) => last = Some(e),
        }
        if attempt == 0 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    Err(last.expect("an error after two failed tries"))
}

/// The number of online logical CPUs, as upstream counts them for
/// conntrack sizing (from sysfs, falling back to what the runtime sees).
pub(crate) fn detect_num_cpu() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Count the CPUs of a sysfs list such as `0-3,6,8-9`.
pub(crate) fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    Some(n)
}

/// The node's IPs as the proxy uses them (upstream's detectNodeIPs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NodeIps {
    /// The primary family: IPv4 unless the first Node address, or the bind
    /// address, is IPv6.
    pub primary_is_ipv6: bool,
    pub ipv4: IpAddr,
    pub ipv6: IpAddr,
}

/// From the Node object's addresses (its first one, and a second of the
/// other family) and `--bind-address`, which overrides the primary IP
/// unless it is 0.0.0.0 or ::. Loopback fills in what is unknown.
pub(crate) fn node_ips(node_addresses: &[IpAddr], bind_address: IpAddr) -> NodeIps {
    let mut ips = NodeIps {
        primary_is_ipv6: false,
        ipv4: IpAddr::from([127, 0, 0, 1]),
        ipv6: IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    };
    let set = |ip: IpAddr, ips: &mut NodeIps| match ip {
        IpAddr::V4(_) => ips.ipv4 = ip,
        IpAddr::V6(_) => ips.ipv6 = ip,
    };
    if let Some(first) = node_addresses.first() {
        ips.primary_is_ipv6 = first.is_ipv6();
        set(*first, &mut ips);
        if let Some(second) = node_addresses.get(1) {
            set(*second, &mut ips);
        }
    }
    if !bind_address.is_unspecified() {
        ips.primary_is_ipv6 = bind_address.is_ipv6();
        set(bind_address, &mut ips);
    }
    ips
}

/// `nodePortAddresses: [primary]` as upstream resolves it at start-up: the
/// node IP of each family as a /32 or /128, loopback left out; none at all
/// means every local address.
pub(crate) fn primary_nodeport_addresses(ips: &NodeIps) -> NodePortAddresses {
    let cidrs: Vec<IpNet> = [ips.ipv4, ips.ipv6]
        .into_iter()
        .filter(|ip| !ip.is_loopback())
        .map(IpNet::from)
        .collect();
    if cidrs.is_empty() {
        NodePortAddresses::All
    } else {
        NodePortAddresses::Cidrs(cidrs)
    }
}

/// The NodePort addresses in effect on a node with these addresses (its
/// Node object's): `primary` (with `bind_address`) resolved as upstream
/// resolves it at start-up, anything else as configured.
pub(crate) fn nodeport_addresses_in_effect(
    configured: &NodePortAddresses,
    primary: bool,
    bind_address: IpAddr,
    node_addresses: &[IpAddr],
) -> NodePortAddresses {
    if primary {
        primary_nodeport_addresses(&node_ips(node_addresses, bind_address))
    } else {
        configured.clone()
    }
}

/// `nodeport_addresses_in_effect` for a whole `Config`.
pub(crate) fn nodeport_addresses_for(
    config: &Config,
    node_addresses: &[IpAddr],
) -> NodePortAddresses {
    nodeport_addresses_in_effect(
        &config.nodeport_addresses,
        config.nodeport_primary,
        config.bind_address,
        node_addresses,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3\n"), Some(4));
        assert_eq!(parse_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert!(detect_num_cpu() >= 1);
    }

    #[test]
    fn oom_score_adj_is_written_and_failures_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("oom_score_adj");
        std::fs::write(&p, "0").unwrap();
        write_oom_score_adj(&p, -999).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "-999");
        let missing = dir.path().join("no/such/file");
        assert_eq!(
            write_oom_score_adj(&missing, 1).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
    }

    #[test]
    fn node_ips_as_upstream_detects_them() {
        let n = node_ips(&[], ip("0.0.0.0"));
        assert!(!n.primary_is_ipv6);
        assert_eq!((n.ipv4, n.ipv6), (ip("127.0.0.1"), ip("::1")));
        let n = node_ips(&[ip("fd00::5"), ip("10.0.0.5")], ip("0.0.0.0"));
        assert!(n.primary_is_ipv6);
        assert_eq!((n.ipv4, n.ipv6), (ip("10.0.0.5"), ip("fd00::5")));
        let n = node_ips(&[ip("10.0.0.5")], ip("192.168.1.9"));
        assert!(!n.primary_is_ipv6);
        assert_eq!(n.ipv4, ip("192.168.1.9"));
        let n = node_ips(&[ip("10.0.0.5")], ip("fd00::9"));
        assert!(n.primary_is_ipv6);
        assert_eq!((n.ipv4, n.ipv6), (ip("10.0.0.5"), ip("fd00::9")));
    }

    #[test]
    fn primary_nodeport_addresses_resolve() {
        let c = Config {
            nodeport_primary: true,
            nodeport_addresses: NodePortAddresses::Cidrs(vec![]),
            ..Config::default()
        };
        assert_eq!(
            nodeport_addresses_for(&c, &[ip("10.0.0.5"), ip("fd00::5")]),
            NodePortAddresses::Cidrs(vec![
                "10.0.0.5/32".parse().unwrap(),
                "fd00::5/128".parse().unwrap()
            ])
        );
        assert_eq!(nodeport_addresses_for(&c, &[]), NodePortAddresses::All);
        let configured = Config {
            nodeport_addresses: NodePortAddresses::Cidrs(vec!["10.0.0.0/8".parse().unwrap()]),
            ..Config::default()
        };
        assert_eq!(
            nodeport_addresses_for(&configured, &[ip("10.0.0.5")]),
            configured.nodeport_addresses
        );
    }
}
