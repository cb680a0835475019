//! Configuration: upstream kube-proxy's command line (pflag syntax) and
//! KubeProxyConfiguration file, resolved into one `Config` that every stage
//! reads.
//!
//! - `args`: the flags, as clap declares them (names, types, defaults).
//! - `flags`: parsing (pflag semantics) and upstream's precedence between
//!   the command line and `--config FILE`.
//! - `file`: reading and writing KubeProxyConfiguration (v1alpha1).
//! - `validate`: upstream's validation of the resolved configuration.
//! - `values`: Go/pflag value syntaxes (durations, CIDRs, bind addresses).
//! - `system`: the few process-level actions a flag asks for
//!   (`--oom-score-adj`), node-IP and CPU detection.

mod apply;
pub(crate) mod args;
pub mod file;
pub mod flags;
pub mod system;
pub(crate) mod validate;
pub(crate) mod values;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::cluster::DEFAULT_NODEPORT_RANGE;

pub use flags::{Flags, Note, NoteLevel, Resolved, resolve};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    Ipvs,
    Iptables,
}

impl std::fmt::Display for ProxyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProxyMode::Ipvs => "ipvs",
            ProxyMode::Iptables => "iptables",
        })
    }
}

/// `--proxy-mode` / `mode`: empty is kproxy's default (IPVS, falling back
/// to iptables); nftables and kernelspace are upstream modes kproxy lacks.
pub(crate) fn parse_mode(s: &str) -> Result<Option<ProxyMode>, String> {
    match s {
        "" => Ok(None),
        "ipvs" => Ok(Some(ProxyMode::Ipvs)),
        "iptables" => Ok(Some(ProxyMode::Iptables)),
        "nftables" => Err("\"nftables\" is not supported by kproxy (ipvs or iptables)".into()),
        other => Err(format!(
            "{other:?} is not a proxy mode: must be ipvs, iptables or blank"
        )),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "{other:?} is an unsupported log format (text or json)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Which addresses NodePorts listen on.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum NodePortAddresses {
    /// Every local address (loopback left out in IPVS mode, as upstream's
    /// isValidForSet; in iptables mode see --iptables-localhost-nodeports).
    #[default]
    All,
    /// Addresses inside these CIDRs (loopback left out unless the iptables
    /// mode serves NodePorts on it, `Config::localhost_nodeports`).
    Cidrs(Vec<IpNet>),
}

impl NodePortAddresses {
    /// Whether the IPv4 NodePort addresses take in loopback, as upstream's
    /// ContainsIPv4Loopback decides: every address does (so does a list
    /// with no IPv4 CIDR, which leaves IPv4 unrestricted), and a CIDR does
    /// when its network is a loopback address or it contains 127.0.0.0.
    pub fn contains_ipv4_loopback(&self) -> bool {
        let lo = Ipv4Addr::new(127, 0, 0, 0);
        match self {
            NodePortAddresses::All => true,
            NodePortAddresses::Cidrs(cidrs) => {
                let v4: Vec<ipnet::Ipv4Net> = cidrs
                    .iter()
                    .filter_map(|c| match c {
                        IpNet::V4(n) => Some(n.trunc()),
                        IpNet::V6(_) => None,
                    })
                    .collect();
                v4.is_empty() || v4.iter().any(|n| n.addr().is_loopback() || n.contains(&lo))
            }
        }
    }
}

/// `--detect-local-mode` / `detectLocalMode`: how traffic from this
/// cluster's pods is told apart from the rest. Upstream's default (also
/// for an empty value) is ClusterCIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LocalMode {
    #[default]
    ClusterCidr,
    NodeCidr,
    BridgeInterface,
    InterfaceNamePrefix,
}

impl LocalMode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" | "ClusterCIDR" => Ok(LocalMode::ClusterCidr),
            "NodeCIDR" => Ok(LocalMode::NodeCidr),
            "BridgeInterface" => Ok(LocalMode::BridgeInterface),
            "InterfaceNamePrefix" => Ok(LocalMode::InterfaceNamePrefix),
            other => Err(format!(
                "unsupported value {other:?}: supported values are \"ClusterCIDR\", \"NodeCIDR\", \"BridgeInterface\", \"InterfaceNamePrefix\", \"\""
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LocalMode::ClusterCidr => "ClusterCIDR",
            LocalMode::NodeCidr => "NodeCIDR",
            LocalMode::BridgeInterface => "BridgeInterface",
            LocalMode::InterfaceNamePrefix => "InterfaceNamePrefix",
        }
    }
}

/// How local traffic is recognised, once the mode and its settings are
/// combined (see `Config::local_detector`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum LocalDetector {
    /// Source address inside the cluster CIDRs (first one of each family).
    ClusterCidr(Vec<IpNet>),
    /// Source address inside the Node's spec.podCIDRs, known once the Node
    /// object has been read.
    NodeCidr,
    /// Packets arriving on this bridge.
    BridgeInterface(String),
    /// Packets arriving on an interface whose name starts with this.
    InterfaceNamePrefix(String),
    /// Nothing is local (ClusterCIDR mode without a cluster CIDR), as
    /// upstream's no-op detector.
    #[default]
    None,
}

/// `conntrack.*` / `--conntrack-*`: the netfilter conntrack sysctls
/// kube-proxy sets at start-up (0 leaves a value as it is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conntrack {
    pub max_per_core: i32,
    pub min: i32,
    pub tcp_established_timeout: Duration,
    pub tcp_close_wait_timeout: Duration,
    pub tcp_be_liberal: bool,
    pub udp_timeout: Duration,
    pub udp_stream_timeout: Duration,
}

impl Default for Conntrack {
    fn default() -> Self {
        Self {
            max_per_core: 32 * 1024,
            min: 128 * 1024,
            tcp_established_timeout: Duration::from_secs(24 * 3600),
            tcp_close_wait_timeout: Duration::from_secs(3600),
            tcp_be_liberal: false,
            udp_timeout: Duration::ZERO,
            udp_stream_timeout: Duration::ZERO,
        }
    }
}

/// `clientConnection.*` / `--kube-api-*`: how the API client talks.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeApi {
    pub qps: f32,
    pub burst: i32,
    pub content_type: String,
    pub accept_content_types: String,
}

impl Default for KubeApi {
    fn default() -> Self {
        Self {
            qps: 5.0,
            burst: 10,
            content_type: "application/vnd.kubernetes.protobuf".into(),
            accept_content_types: String::new(),
        }
    }
}

/// The logging settings besides format and verbosity. Accepted and kept
/// (so `--write-config-to` writes them back), validated as upstream
/// validates them, not acted on: kproxy's logger writes each line at once
/// to one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggingExtras {
    pub flush_frequency: Duration,
    pub vmodule: values::VModule,
    pub text_split_stream: bool,
    pub text_info_buffer_size: String,
    pub json_split_stream: bool,
    pub json_info_buffer_size: String,
}

impl Default for LoggingExtras {
    fn default() -> Self {
        Self {
            flush_frequency: Duration::from_secs(5),
            vmodule: Vec::new(),
            text_split_stream: false,
            text_info_buffer_size: "0".into(),
            json_split_stream: false,
            json_info_buffer_size: "0".into(),
        }
    }
}

/// `winkernel.*`: Windows settings, accepted and kept, no effect on Linux.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Winkernel {
    pub network_name: String,
    pub source_vip: String,
    pub enable_dsr: bool,
    pub root_hns_endpoint_name: String,
    pub forward_health_check_vip: bool,
}

/// `nftables.*`: the nftables mode's settings, accepted and kept; kproxy
/// has no nftables mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NfTables {
    pub masquerade_all: bool,
    pub masquerade_bit: i32,
    pub sync_period: Duration,
    pub min_sync_period: Duration,
}

impl Default for NfTables {
    fn default() -> Self {
        Self {
            masquerade_all: false,
            masquerade_bit: 14,
            sync_period: Duration::from_secs(30),
            min_sync_period: Duration::from_secs(1),
        }
    }
}

/// Settings kube-proxy has and kproxy accepts without acting on them; kept
/// so that `--write-config-to` writes what it was given.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Unused {
    pub feature_gates: BTreeMap<String, bool>,
    pub enable_profiling: bool,
    pub show_hidden_metrics_for_version: String,
    pub port_range: String,
    pub windows_run_as_service: bool,
    pub winkernel: Winkernel,
    pub nftables: NfTables,
}

/// Everything kproxy needs to know, after flags (and the config file) are merged.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// None: the operator did not choose; IPVS with a fallback to iptables.
    pub mode: Option<ProxyMode>,
    pub kubeconfig: Option<PathBuf>,
    pub master: Option<String>,
    pub manifests: Option<PathBuf>,
    /// This node's name: the override, or the kernel's hostname.
    pub hostname: String,
    /// `--hostname-override` / `hostnameOverride` as given (lower-cased),
    /// empty when not overridden.
    pub hostname_override: String,
    /// `--bind-address` / `bindAddress`: overrides the node's primary IP
    /// (unspecified: take it from the Node object).
    pub bind_address: IpAddr,
    pub bind_address_hard_fail: bool,
    /// DetectLocal's cluster CIDRs (`--cluster-cidr`, `clusterCIDR`).
    pub cluster_cidrs: Vec<IpNet>,
    pub detect_local_mode: LocalMode,
    pub pod_bridge_interface: String,
    pub pod_interface_name_prefix: String,
    pub nodeport_addresses: NodePortAddresses,
    /// `--nodeport-addresses primary`: NodePorts on the node's primary IPs
    /// only. Until `system::nodeport_addresses_for` has turned
    /// them into CIDRs, `nodeport_addresses` is an empty list (no NodePort
    /// address at all, rather than every address).
    pub nodeport_primary: bool,
    /// Inclusive range of ports that are NodePorts (for ownership decisions).
    pub nodeport_range: (u16, u16),
    pub masquerade_all: bool,
    pub masquerade_bit: u8,
    pub iptables_localhost_nodeports: bool,
    pub ipvs_scheduler: String,
    pub ipvs_sync_period: Duration,
    pub ipvs_min_sync_period: Duration,
    pub iptables_sync_period: Duration,
    pub iptables_min_sync_period: Duration,
    pub ipvs_strict_arp: bool,
    pub ipvs_tcp_timeout: Duration,
    pub ipvs_tcpfin_timeout: Duration,
    pub ipvs_udp_timeout: Duration,
    pub ipvs_exclude_cidrs: Vec<IpNet>,
    pub healthz_bind_address: Option<SocketAddr>,
    pub metrics_bind_address: Option<SocketAddr>,
    pub conntrack: Conntrack,
    pub oom_score_adj: i32,
    /// How often informers re-list (`--config-sync-period`).
    pub config_sync_period: Duration,
    pub kube_api: KubeApi,
    pub cleanup: bool,
    /// `--init-only`: set up the kernel (sysctls), then exit.
    pub init_only: bool,
    /// `--write-config-to FILE`: write this configuration and exit.
    pub write_config_to: Option<PathBuf>,
    pub once: bool,
    pub dry_run: bool,
    pub verbosity: u8,
    pub log_format: LogFormat,
    pub logging: LoggingExtras,
    pub unused: Unused,
}

impl Default for Config {
    /// Upstream's defaults as the command line sees them (no `--config`).
    fn default() -> Self {
        Self {
            mode: None,
            kubeconfig: None,
            master: None,
            manifests: None,
            hostname: String::new(),
            hostname_override: String::new(),
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            bind_address_hard_fail: false,
            cluster_cidrs: Vec::new(),
            detect_local_mode: LocalMode::ClusterCidr,
            pod_bridge_interface: String::new(),
            pod_interface_name_prefix: String::new(),
            nodeport_addresses: NodePortAddresses::All,
            nodeport_primary: false,
            nodeport_range: DEFAULT_NODEPORT_RANGE,
            masquerade_all: false,
            masquerade_bit: 14,
            iptables_localhost_nodeports: true,
            ipvs_scheduler: "rr".into(),
            ipvs_sync_period: Duration::from_secs(30),
            // kube-proxy's flags share one min-sync default, 1s (`kube-proxy
            // --help` shows it for --ipvs-min-sync-period too); a config
            // file leaves ipvs.minSyncPeriod at 0 (see `file_defaults`).
            ipvs_min_sync_period: Duration::from_secs(1),
            iptables_sync_period: Duration::from_secs(30),
            iptables_min_sync_period: Duration::from_secs(1),
            ipvs_strict_arp: false,
            ipvs_tcp_timeout: Duration::ZERO,
            ipvs_tcpfin_timeout: Duration::ZERO,
            ipvs_udp_timeout: Duration::ZERO,
            ipvs_exclude_cidrs: Vec::new(),
            healthz_bind_address: Some(SocketAddr::from(([0, 0, 0, 0], 10256))),
            metrics_bind_address: Some(SocketAddr::from(([127, 0, 0, 1], 10249))),
            conntrack: Conntrack::default(),
            oom_score_adj: -999,
            config_sync_period: Duration::from_secs(15 * 60),
            kube_api: KubeApi::default(),
            cleanup: false,
            init_only: false,
            write_config_to: None,
            once: false,
            dry_run: false,
            verbosity: 0,
            log_format: LogFormat::Text,
            logging: LoggingExtras::default(),
            unused: Unused::default(),
        }
    }
}

/// The default healthz and metrics ports (upstream's ports package).
pub(crate) const HEALTHZ_PORT: u16 = 10256;
pub(crate) const METRICS_PORT: u16 = 10249;

impl Config {
    /// Upstream's v1alpha1 defaults, the base a config file is read onto:
    /// the command line's, except that ipvs.minSyncPeriod stays 0.
    pub fn file_defaults() -> Self {
        Self {
            ipvs_min_sync_period: Duration::ZERO,
            ..Self::default()
        }
    }

    /// The mode actually in use, given whether the kernel has IPVS.
    pub(crate) fn sync_periods(&self, mode: ProxyMode) -> (Duration, Duration) {
        match mode {
            ProxyMode::Ipvs => (self.ipvs_min_sync_period, self.ipvs_sync_period),
            ProxyMode::Iptables => (self.iptables_min_sync_period, self.iptables_sync_period),
        }
    }

    /// The iptables mode serves IPv4 NodePorts on 127.0.0.1 (route_localnet
    /// and the KUBE-FIREWALL guard): `--iptables-localhost-nodeports` with
    /// NodePort addresses that take in loopback, as upstream's NewProxier
    /// decides once at start-up. `primary` stands for the node IP, which is
    /// never loopback; kproxy resolves it from the Node only after start-up,
    /// so it counts as no loopback.
    pub fn localhost_nodeports(&self) -> bool {
        self.iptables_localhost_nodeports
            && !self.nodeport_primary
            && self.nodeport_addresses.contains_ipv4_loopback()
    }

    /// The masquerade mark (`1 << masquerade_bit`, 0x4000 by default).
    pub(crate) fn masquerade_mark(&self) -> u32 {
        1u32 << self.masquerade_bit
    }

    /// The local-traffic detector upstream would build from these settings
    /// (its getLocalDetectors): ClusterCIDR without CIDRs detects nothing.
    pub(crate) fn local_detector(&self) -> LocalDetector {
        match self.detect_local_mode {
            LocalMode::ClusterCidr if self.cluster_cidrs.is_empty() => LocalDetector::None,
            LocalMode::ClusterCidr => LocalDetector::ClusterCidr(self.cluster_cidrs.clone()),
            LocalMode::NodeCidr => LocalDetector::NodeCidr,
            LocalMode::BridgeInterface => {
                LocalDetector::BridgeInterface(self.pod_bridge_interface.clone())
            }
            LocalMode::InterfaceNamePrefix => {
                LocalDetector::InterfaceNamePrefix(self.pod_interface_name_prefix.clone())
            }
        }
    }
}

/// Parse a comma-separated CIDR list (`10.0.0.0/8,fd00::/8`), each as
/// upstream's ParseCIDRSloppy reads it; empty items are refused. Tests
/// write cluster CIDRs with it; the flags and the file parse their own lists.
#[cfg(test)]
pub(crate) fn parse_cidrs(s: &str) -> Result<Vec<IpNet>, String> {
    values::split_list(s)
        .into_iter()
        .map(values::parse_cidr_sloppy)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_loopback_in_nodeport_addresses_as_upstream_decides() {
        // Upstream's TestContainsIPv4Loopback
        // (pkg/proxy/util/nodeport_addresses_test.go), IPv4 family.
        let cases: [(&[&str], bool); 8] = [
            (&[], true),
            (
                &[
                    "224.0.0.0/24",
                    "192.168.0.0/16",
                    "fd00:1:d::/64",
                    "0.0.0.0/0",
                ],
                true,
            ),
            (
                &["224.0.0.0/24", "192.168.0.0/16", "fd00:1:d::/64", "::/0"],
                false,
            ),
            (
                &[
                    "224.0.0.0/24",
                    "192.168.0.0/16",
                    "fd00:1:d::/64",
                    "127.0.0.0/8",
                ],
                true,
            ),
            (
                &["224.0.0.0/24", "192.168.0.0/16", "fd00:1:d::/64", "::1/128"],
                false,
            ),
            (
                &[
                    "224.0.0.0/24",
                    "192.168.0.0/16",
                    "fd00:1:d::/64",
                    "127.0.2.0/28",
                ],
                true,
            ),
            (
                &[
                    "224.0.0.0/24",
                    "192.168.0.0/16",
                    "fd00:1:d::/64",
                    "64.0.0.0/2",
                ],
                true,
            ),
            (
                &[
                    "128.0.2.0/28",
                    "224.0.0.0/24",
                    "192.168.0.0/16",
                    "fd00:1:d::/64",
                ],
                false,
            ),
        ];
        for (cidrs, want) in cases {
            let a = NodePortAddresses::Cidrs(cidrs.iter().map(|c| c.parse().unwrap()).collect());
            assert_eq!(a.contains_ipv4_loopback(), want, "{cidrs:?}");
        }
        assert!(NodePortAddresses::All.contains_ipv4_loopback());
        // Only IPv6 CIDRs leave IPv4 unrestricted (upstream adds 0.0.0.0/0).
        let v6 = NodePortAddresses::Cidrs(vec!["2001:db8::/64".parse().unwrap()]);
        assert!(v6.contains_ipv4_loopback());
        // A loopback host address (upstream: the CIDR's IP IsLoopback).
        let one = NodePortAddresses::Cidrs(vec!["127.0.0.1/32".parse().unwrap()]);
        assert!(one.contains_ipv4_loopback());
    }

    #[test]
    fn localhost_nodeports_needs_the_flag_and_loopback_addresses() {
        // Upstream's NewProxier: localhostNodePorts is turned off when the
        // NodePort addresses hold no IPv4 loopback.
        let mut c = Config::default();
        assert!(c.iptables_localhost_nodeports && c.localhost_nodeports());
        c.nodeport_addresses = NodePortAddresses::Cidrs(vec!["192.168.0.0/24".parse().unwrap()]);
        assert!(!c.localhost_nodeports());
        c.nodeport_addresses = NodePortAddresses::Cidrs(vec!["127.0.0.1/32".parse().unwrap()]);
        assert!(c.localhost_nodeports());
        c.iptables_localhost_nodeports = false;
        assert!(!c.localhost_nodeports());
        // primary: the node IP, never loopback.
        let c = Config {
            nodeport_primary: true,
            nodeport_addresses: NodePortAddresses::Cidrs(vec![]),
            ..Config::default()
        };
        assert!(!c.localhost_nodeports());
    }

    #[test]
    fn durations() {
        assert_eq!(
            values::parse_go_duration("30s"),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(values::parse_go_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(
            values::parse_go_duration("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(
            values::parse_go_duration("1h30m"),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(
            values::parse_go_duration("2.5s"),
            Ok(Duration::from_millis(2500))
        );
        assert_eq!(values::parse_go_duration("0"), Ok(Duration::ZERO));
        assert!(values::parse_go_duration("7").is_err(), "Go needs a unit");
        assert!(values::parse_go_duration("5 parsecs").is_err());
        assert!(values::parse_go_duration("-1s").is_err());
        assert!(values::parse_go_duration("s").is_err());
    }

    #[test]
    fn cidrs() {
        let v = parse_cidrs("10.0.0.0/8, fd00::/64,192.168.1.1/32").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].to_string(), "192.168.1.1/32");
        let e = parse_cidrs("10.0.0.0/8,banana").unwrap_err();
        assert!(e.contains("banana"), "{e}");
        assert!(
            parse_cidrs("192.168.1.1").is_err(),
            "a bare address is not a CIDR"
        );
        assert_eq!(parse_cidrs(""), Ok(vec![]));
    }

    #[test]
    fn modes_and_local_detectors() {
        assert_eq!(parse_mode(""), Ok(None));
        assert_eq!(parse_mode("ipvs"), Ok(Some(ProxyMode::Ipvs)));
        assert!(parse_mode("nftables").unwrap_err().contains("kproxy"));
        assert!(parse_mode("userspace").unwrap_err().contains("userspace"));
        assert_eq!(LocalMode::parse(""), Ok(LocalMode::ClusterCidr));
        assert!(LocalMode::parse("Pods").is_err());
        let mut c = Config::default();
        assert_eq!(c.local_detector(), LocalDetector::None);
        c.cluster_cidrs = parse_cidrs("10.244.0.0/16").unwrap();
        assert_eq!(
            c.local_detector(),
            LocalDetector::ClusterCidr(c.cluster_cidrs.clone())
        );
        c.detect_local_mode = LocalMode::BridgeInterface;
        c.pod_bridge_interface = "cbr0".into();
        assert_eq!(
            c.local_detector(),
            LocalDetector::BridgeInterface("cbr0".into())
        );
        c.detect_local_mode = LocalMode::NodeCidr;
        assert_eq!(c.local_detector(), LocalDetector::NodeCidr);
    }
}
