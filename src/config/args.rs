//! The command line, declared for clap: every flag of upstream kube-proxy
//! v1.36.3 on Linux (options.go `AddFlags`, component-base's logging flags,
//! `--version`, and the `--boot-id-file` / `--machine-id-file` Go flags it
//! inherits), with pflag's types and defaults, plus kproxy's extensions.
//!
//! pflag semantics kept: `--flag=value` and `--flag value`; a boolean is
//! `--flag` or `--flag=true|false` (never `--flag false`); a value may start
//! with `-` (`--oom-score-adj -999`); the last of a repeated flag wins,
//! except list flags, which add up. Values are checked here as pflag's
//! types check them; what upstream checks later (validation) is checked
//! once the configuration is resolved.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args};

use super::LogFormat;
use super::values::{
    BindValue, VModule, parse_bind, parse_feature_gates, parse_go_bool, parse_go_duration,
    parse_go_i32, parse_ip_sloppy, parse_quantity, parse_vmodule,
};
use crate::cluster::DEFAULT_NODEPORT_RANGE;

/// `--bind-address`: an IP, or empty (which leaves the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpFlag(pub Option<std::net::IpAddr>);

/// One `--feature-gates` occurrence.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GatesFlag(pub std::collections::BTreeMap<String, bool>);

/// One `--vmodule` occurrence.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct VModuleFlag(pub VModule);

/// A quantity flag, kept as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantityFlag(pub String);

fn ip_flag(s: &str) -> Result<IpFlag, String> {
    if s.is_empty() {
        return Ok(IpFlag(None));
    }
    parse_ip_sloppy(s)
        .map(|ip| IpFlag(Some(ip)))
        .ok_or_else(|| format!("{s:?} is not a valid IP address"))
}

fn gates_flag(s: &str) -> Result<GatesFlag, String> {
    parse_feature_gates(s).map(GatesFlag)
}

fn vmodule_flag(s: &str) -> Result<VModuleFlag, String> {
    parse_vmodule(s).map(VModuleFlag)
}

fn quantity_flag(s: &str) -> Result<QuantityFlag, String> {
    parse_quantity(s).map(|_| QuantityFlag(s.to_string()))
}

fn verbosity(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|v| *v <= i32::MAX as u32)
        .ok_or_else(|| format!("{s:?} is not a verbosity level (0 or more)"))
}

fn f32_flag(s: &str) -> Result<f32, String> {
    s.parse::<f32>()
        .map_err(|_| format!("{s:?} is not a number"))
}

fn log_format(s: &str) -> Result<LogFormat, String> {
    LogFormat::parse(s)
}

pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s.split_once('-').ok_or_else(|| {
        let (lo, hi) = DEFAULT_NODEPORT_RANGE;
        format!("{s:?} is not a port range like {lo}-{hi}")
    })?;
    let lo: u16 = lo.trim().parse().map_err(|_| format!("bad port {lo:?}"))?;
    let hi: u16 = hi.trim().parse().map_err(|_| format!("bad port {hi:?}"))?;
    if lo == 0 || lo > hi {
        return Err(format!("{s:?} is not a valid range (1 <= low <= high)"));
    }
    Ok((lo, hi))
}

// The flags' values. Which of them were given on the command line is
// recorded by `Flags` (clap's value source), not by Option-ness. (A doc
// comment here would replace the command's about text.)
#[derive(Debug, Clone, Args)]
pub struct FlagValues {
    /// The node's primary IP, overriding the Node object's (kube-proxy binds
    /// no socket to it, despite the name). Ignored with --config.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0", value_parser = ip_flag, allow_hyphen_values = true)]
    pub bind_address: IpFlag,

    /// Exit when the health or metrics server cannot bind its port.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub bind_address_hard_fail: bool,

    /// Boot-id files to try, comma-separated (a Go flag kube-proxy
    /// inherits from cAdvisor; accepted, ignored).
    #[arg(
        long,
        value_name = "FILES",
        default_value = "/proc/sys/kernel/random/boot_id",
        allow_hyphen_values = true
    )]
    pub boot_id_file: String,

    /// Remove every IPVS service, address, link, ipset and iptables rule
    /// kproxy (or kube-proxy) owns, then exit.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub cleanup: bool,

    /// Pod CIDRs of the cluster: one, or a dual-stack pair, comma-separated.
    /// Traffic from them is local for --detect-local-mode=ClusterCIDR.
    /// Ignored with --config.
    #[arg(
        long,
        value_name = "CIDRS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub cluster_cidr: String,

    /// A KubeProxyConfiguration file. With it, most flags are ignored, as
    /// kube-proxy ignores them (each is named in a warning).
    #[arg(long, value_name = "FILE", allow_hyphen_values = true)]
    pub config: Option<PathBuf>,

    /// How often the API informers re-list (must be greater than 0).
    #[arg(long, value_name = "DURATION", default_value = "15m0s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    pub config_sync_period: Duration,

    /// Conntrack entries to allow per CPU (0: leave nf_conntrack_max and
    /// ignore --conntrack-min).
    #[arg(long, value_name = "INT", default_value = "32768", value_parser = parse_go_i32, allow_hyphen_values = true)]
    pub conntrack_max_per_core: i32,

    /// Lower bound for nf_conntrack_max, whatever the CPU count.
    #[arg(long, value_name = "INT", default_value = "131072", value_parser = parse_go_i32, allow_hyphen_values = true)]
    pub conntrack_min: i32,

    /// Set nf_conntrack_tcp_be_liberal to 1.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub conntrack_tcp_be_liberal: bool,

    /// Conntrack timeout of TCP connections in CLOSE_WAIT (0: leave as is).
    #[arg(long, value_name = "DURATION", default_value = "1h0m0s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    pub conntrack_tcp_timeout_close_wait: Duration,

    /// Conntrack idle timeout of established TCP connections (0: leave as is).
    #[arg(long, value_name = "DURATION", default_value = "24h0m0s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    pub conntrack_tcp_timeout_established: Duration,

    /// Conntrack timeout of unreplied UDP flows (0: leave as is).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    pub conntrack_udp_timeout: Duration,

    /// Conntrack timeout of assured UDP streams (0: leave as is).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    pub conntrack_udp_timeout_stream: Duration,

    /// How traffic from local pods is recognised: ClusterCIDR (default),
    /// NodeCIDR, BridgeInterface or InterfaceNamePrefix. Ignored with --config.
    #[arg(
        long,
        value_name = "MODE",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub detect_local_mode: String,

    /// kproxy: print the changes a sync would make to the live kernel, change nothing.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub dry_run: bool,

    /// Feature gates, `Name=true,Other=false` (accepted and kept; kproxy's
    /// behaviour depends on none, except the logging gates' validation).
    /// Ignored with --config.
    #[arg(long, value_name = "NAME=BOOL,...", action = ArgAction::Append, value_parser = gates_flag, allow_hyphen_values = true)]
    pub feature_gates: Vec<GatesFlag>,

    /// IP:port of the health server (/healthz, /livez); a bare IP takes port
    /// 10256 (or --healthz-port); empty disables it. Ignored with --config.
    #[arg(long, value_name = "IP[:PORT]", default_value = "0.0.0.0:10256", value_parser = parse_bind, allow_hyphen_values = true)]
    pub healthz_bind_address: BindValue,

    /// Deprecated (use --healthz-bind-address): the health server's port
    /// when --healthz-bind-address is a bare IP; 0 disables the server.
    #[arg(long, value_name = "PORT", default_value = "10256", value_parser = parse_go_i32, allow_hyphen_values = true)]
    pub healthz_port: i32,

    /// This node's name, as used by endpoints' nodeName (default: the
    /// hostname). Applies even with --config.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub hostname_override: String,

    /// Set up what needs full privileges (sysctls), then exit.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub init_only: bool,

    /// iptables mode, IPv4: accept NodePort connections to 127.0.0.1 (set
    /// false to refuse them).
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", value_parser = parse_go_bool)]
    pub iptables_localhost_nodeports: bool,

    /// Which fwmark bit marks packets to masquerade (0-31).
    #[arg(long, value_name = "BIT", default_value = "14", value_parser = parse_go_i32, allow_hyphen_values = true)]
    pub iptables_masquerade_bit: i32,

    /// Shortest time between syncs in iptables mode (0: at every change).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    pub iptables_min_sync_period: Duration,

    /// Longest time between full resyncs in iptables mode (greater than 0).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    pub iptables_sync_period: Duration,

    /// CIDRs whose IPVS virtual servers kproxy never touches, comma-separated.
    #[arg(long, value_name = "CIDRS", action = ArgAction::Append, allow_hyphen_values = true)]
    pub ipvs_exclude_cidrs: Vec<String>,

    /// Shortest time between syncs in IPVS mode (0: at every change).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    pub ipvs_min_sync_period: Duration,

    /// IPVS scheduler (rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq, mh;
    /// empty: rr).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub ipvs_scheduler: String,

    /// Set arp_ignore=1 and arp_announce=2 so kube-ipvs0's addresses are not
    /// answered for on other links.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub ipvs_strict_arp: bool,

    /// Longest time between full resyncs in IPVS mode (greater than 0).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    pub ipvs_sync_period: Duration,

    /// Idle timeout of IPVS TCP connections (0: leave the kernel's value).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    pub ipvs_tcp_timeout: Duration,

    /// Timeout of IPVS TCP connections after a FIN (0: leave the kernel's value).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    pub ipvs_tcpfin_timeout: Duration,

    /// Timeout of IPVS UDP flows (0: leave the kernel's value).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    pub ipvs_udp_timeout: Duration,

    /// Burst of requests allowed to the API server.
    #[arg(long, value_name = "INT", default_value = "10", value_parser = parse_go_i32, allow_hyphen_values = true)]
    pub kube_api_burst: i32,

    /// Content type of requests to the API server.
    #[arg(
        long,
        value_name = "TYPE",
        default_value = "application/vnd.kubernetes.protobuf",
        allow_hyphen_values = true
    )]
    pub kube_api_content_type: String,

    /// Sustained requests per second to the API server.
    #[arg(long, value_name = "QPS", default_value = "5", value_parser = f32_flag, allow_hyphen_values = true)]
    pub kube_api_qps: f32,

    /// Path to a kubeconfig file with the API server's address and credentials.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub kubeconfig: String,

    /// Longest time between log flushes (accepted, ignored: kproxy writes
    /// each line at once). Applies even with --config.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_go_duration, allow_hyphen_values = true)]
    pub log_flush_frequency: Duration,

    /// JSON format, split streams: info buffer size (alpha; accepted, ignored;
    /// needs --feature-gates=LoggingAlphaOptions=true).
    #[arg(long, value_name = "QUANTITY", default_value = "0", value_parser = quantity_flag, allow_hyphen_values = true)]
    pub log_json_info_buffer_size: QuantityFlag,

    /// JSON format: errors to stderr, info to stdout (alpha; accepted,
    /// ignored; needs --feature-gates=LoggingAlphaOptions=true).
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub log_json_split_stream: bool,

    /// Text format, split streams: info buffer size (alpha; accepted,
    /// ignored; needs --feature-gates=LoggingAlphaOptions=true).
    #[arg(long, value_name = "QUANTITY", default_value = "0", value_parser = quantity_flag, allow_hyphen_values = true)]
    pub log_text_info_buffer_size: QuantityFlag,

    /// Text format: errors to stderr, info to stdout (alpha; accepted,
    /// ignored; needs --feature-gates=LoggingAlphaOptions=true).
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub log_text_split_stream: bool,

    /// Log format: text or json (--log-format is kproxy's older name).
    /// Applies even with --config.
    #[arg(long, visible_alias = "log-format", value_name = "FORMAT", default_value = "text", value_parser = log_format, allow_hyphen_values = true)]
    pub logging_format: LogFormat,

    /// Machine-id files to try, comma-separated (a Go flag kube-proxy
    /// inherits from cAdvisor; accepted, ignored).
    #[arg(
        long,
        value_name = "FILES",
        default_value = "/etc/machine-id,/var/lib/dbus/machine-id",
        allow_hyphen_values = true
    )]
    pub machine_id_file: String,

    /// kproxy: read Services/EndpointSlices/Node from YAML/JSON files in
    /// this directory instead of the API server (reloaded on change).
    #[arg(long, value_name = "DIR", allow_hyphen_values = true)]
    pub manifests: Option<PathBuf>,

    /// SNAT all traffic sent via Service cluster IPs.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub masquerade_all: bool,

    /// The API server's address (overrides the kubeconfig's). Applies even
    /// with --config.
    #[arg(
        long,
        value_name = "URL",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub master: String,

    /// IP:port of the metrics server (/metrics); a bare IP takes port 10249
    /// (or --metrics-port); empty disables it. Ignored with --config.
    #[arg(long, value_name = "IP[:PORT]", default_value = "127.0.0.1:10249", value_parser = parse_bind, allow_hyphen_values = true)]
    pub metrics_bind_address: BindValue,

    /// Deprecated (use --metrics-bind-address): the metrics server's port
    /// when --metrics-bind-address is a bare IP; 0 disables the server.
    #[arg(long, value_name = "PORT", default_value = "10249", value_parser = parse_go_i32, allow_hyphen_values = true)]
    pub metrics_port: i32,

    /// CIDRs whose local addresses accept NodePort connections,
    /// comma-separated, or `primary` (the node's primary IPs); unset: every
    /// local address. Ignored with --config.
    #[arg(long, value_name = "CIDRS|primary", action = ArgAction::Append, allow_hyphen_values = true)]
    pub nodeport_addresses: Vec<String>,

    /// kproxy: range of NodePorts (`LOW-HIGH`), the API server's
    /// --service-node-port-range; used to decide which node-address virtual
    /// servers kproxy owns.
    #[arg(long, value_name = "LOW-HIGH", value_parser = parse_port_range)]
    pub nodeport_range: Option<(u16, u16)>,

    /// kproxy: sync once, then exit: 0 when everything was applied,
    /// non-zero with the reason.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub once: bool,

    /// oom_score_adj of the kproxy process (-1000 to 1000). Ignored with --config.
    #[arg(long, value_name = "INT", default_value = "-999", value_parser = parse_go_i32, allow_hyphen_values = true)]
    pub oom_score_adj: i32,

    /// The bridge for --detect-local-mode=BridgeInterface.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub pod_bridge_interface: String,

    /// The interface name prefix for --detect-local-mode=InterfaceNamePrefix.
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub pod_interface_name_prefix: String,

    /// Serve /debug/pprof (accepted, ignored: kproxy has no profiling
    /// endpoint). Ignored with --config.
    #[arg(long, value_name = "BOOL", action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub profiling: bool,

    /// Which proxy mode to use: ipvs or iptables. Unset: ipvs, falling back
    /// to iptables (with a warning saying why) when the kernel has no IPVS.
    /// Ignored with --config.
    #[arg(
        long,
        value_name = "MODE",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub proxy_mode: String,

    /// Show metrics hidden in this previous minor version (only 1.35 is
    /// accepted, as by kube-proxy v1.36; kproxy hides none). Ignored with --config.
    #[arg(
        long,
        value_name = "VERSION",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub show_hidden_metrics_for_version: String,

    /// Log verbosity (0-10; 2 and up logs each sync, 4 and up each kernel
    /// operation). Applies even with --config.
    #[arg(short = 'v', long = "v", value_name = "LEVEL", default_value = "0", value_parser = verbosity, allow_hyphen_values = true)]
    pub verbosity: u32,

    /// Print the version and exit (`--version`, `--version=raw`).
    #[arg(long, value_name = "true|raw", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub version: Option<String>,

    /// Per-file log levels, `pattern=N,...` (accepted, ignored: kproxy
    /// logs by module, see -v). Applies even with --config.
    #[arg(long, value_name = "PATTERN=N,...", action = ArgAction::Append, value_parser = vmodule_flag, allow_hyphen_values = true)]
    pub vmodule: Vec<VModuleFlag>,

    /// Write the effective configuration to this file as a
    /// KubeProxyConfiguration, then exit without touching the kernel.
    #[arg(long, value_name = "FILE", allow_hyphen_values = true)]
    pub write_config_to: Option<PathBuf>,
}
