//! Command-line flags, named as upstream kube-proxy names them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;

use super::{Config, LogFormat, NodePortAddresses, ProxyMode, parse_cidrs, parse_duration};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Ipvs,
    Iptables,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

/// kproxy: programs this node's kernel so that Kubernetes Service IPs reach
/// their pods, with IPVS (default) or iptables NAT rules. A drop-in
/// replacement for kube-proxy: same flags, same kernel object names.
#[derive(Debug, Parser, Default)]
#[command(name = "kproxy", version, about, long_about = None)]
pub struct Flags {
    /// Which proxy mode to use: ipvs or iptables. Unset: ipvs, falling back to
    /// iptables (with a warning saying why) when the kernel has no IPVS.
    #[arg(long, value_enum)]
    pub proxy_mode: Option<ModeArg>,

    /// Path to a kubeconfig file with the API server's address and credentials.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// The address of the API server (overrides the kubeconfig's).
    #[arg(long)]
    pub master: Option<String>,

    /// Read Services/EndpointSlices/Endpoints/Node from YAML/JSON files in this
    /// directory instead of the API server (reloaded on change).
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,

    /// This node's name, as used by endpoints' nodeName (default: the hostname).
    #[arg(long)]
    pub hostname_override: Option<String>,

    /// Pod CIDRs of the cluster, comma-separated; traffic to Services from
    /// outside them is masqueraded.
    #[arg(long, value_parser = parse_cidr_list)]
    pub cluster_cidr: Option<CidrList>,

    /// CIDRs whose local addresses accept NodePort traffic, comma-separated
    /// (default: every local address).
    #[arg(long, value_parser = parse_cidr_list)]
    pub nodeport_addresses: Option<CidrList>,

    /// Range of NodePorts (`LOW-HIGH`), the API server's
    /// --service-node-port-range; used to decide which node-address virtual
    /// servers kproxy owns.
    #[arg(long, value_parser = parse_port_range)]
    pub nodeport_range: Option<(u16, u16)>,

    /// SNAT all traffic sent via Service cluster IPs.
    #[arg(long)]
    pub masquerade_all: bool,

    /// Which bit of the fwmark marks packets to masquerade (0-31).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=31))]
    pub iptables_masquerade_bit: Option<u8>,

    /// IPVS scheduler (rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq, mh).
    #[arg(long)]
    pub ipvs_scheduler: Option<String>,

    /// Longest time between full resyncs in IPVS mode (e.g. 30s, 1m).
    #[arg(long, value_parser = parse_duration)]
    pub ipvs_sync_period: Option<Duration>,

    /// Shortest time between syncs in IPVS mode (0s: as soon as anything changes).
    #[arg(long, value_parser = parse_duration)]
    pub ipvs_min_sync_period: Option<Duration>,

    /// Longest time between full resyncs in iptables mode.
    #[arg(long, value_parser = parse_duration)]
    pub iptables_sync_period: Option<Duration>,

    /// Shortest time between syncs in iptables mode.
    #[arg(long, value_parser = parse_duration)]
    pub iptables_min_sync_period: Option<Duration>,

    /// Set arp_ignore=1 and arp_announce=2 so kube-ipvs0's addresses are not
    /// answered for on other links (needed by some LoadBalancer setups).
    #[arg(long)]
    pub ipvs_strict_arp: bool,

    /// Idle timeout of IPVS TCP connections (0: leave the kernel's value).
    #[arg(long, value_parser = parse_duration)]
    pub ipvs_tcp_timeout: Option<Duration>,

    /// Timeout of IPVS TCP connections after a FIN (0: leave the kernel's value).
    #[arg(long, value_parser = parse_duration)]
    pub ipvs_tcpfin_timeout: Option<Duration>,

    /// Timeout of IPVS UDP flows (0: leave the kernel's value).
    #[arg(long, value_parser = parse_duration)]
    pub ipvs_udp_timeout: Option<Duration>,

    /// CIDRs whose IPVS virtual servers kproxy never touches, comma-separated.
    #[arg(long, value_parser = parse_cidr_list)]
    pub ipvs_exclude_cidrs: Option<CidrList>,

    /// Address for /healthz and /livez (empty to disable).
    #[arg(long)]
    pub healthz_bind_address: Option<String>,

    /// Address for /metrics (empty to disable).
    #[arg(long)]
    pub metrics_bind_address: Option<String>,

    /// A KubeProxyConfiguration file; flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Remove every IPVS service, address, link, ipset and iptables rule
    /// kproxy (or kube-proxy) owns, then exit.
    #[arg(long)]
    pub cleanup: bool,

    /// Sync once, then exit: 0 when everything was applied, non-zero with the reason.
    #[arg(long)]
    pub once: bool,

    /// Print the changes a sync would make to the live kernel, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Log verbosity (0-10; 2 and up logs each sync, 4 and up each kernel operation).
    #[arg(short = 'v', long = "v", value_name = "LEVEL")]
    pub verbosity: Option<u8>,

    /// Log output format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
}

/// A comma-separated list of CIDRs given as one flag value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrList(pub Vec<IpNet>);

fn parse_cidr_list(s: &str) -> Result<CidrList, String> {
    parse_cidrs(s).map(CidrList)
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a port range like 30000-32767"))?;
    let lo: u16 = lo.trim().parse().map_err(|_| format!("bad port {lo:?}"))?;
    let hi: u16 = hi.trim().parse().map_err(|_| format!("bad port {hi:?}"))?;
    if lo == 0 || lo > hi {
        return Err(format!("{s:?} is not a valid range (1 <= low <= high)"));
    }
    Ok((lo, hi))
}

fn parse_bind(s: &str, what: &str) -> anyhow::Result<Option<SocketAddr>> {
    if s.is_empty() {
        return Ok(None);
    }
    // Upstream accepts a bare IP (port taken from the default) or IP:port.
    s.parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| anyhow::anyhow!("--{what} {s:?} is not an address like 0.0.0.0:10256"))
}

impl Flags {
    /// Apply the flags that were given on top of `base` (defaults or a config file).
    pub fn apply_to(&self, mut c: Config) -> anyhow::Result<Config> {
        if let Some(m) = self.proxy_mode {
            c.mode = Some(match m {
                ModeArg::Ipvs => ProxyMode::Ipvs,
                ModeArg::Iptables => ProxyMode::Iptables,
            });
        }
        if let Some(v) = &self.kubeconfig {
            c.kubeconfig = Some(v.clone());
        }
        if let Some(v) = &self.master {
            c.master = Some(v.clone());
        }
        if let Some(v) = &self.manifests {
            c.manifests = Some(v.clone());
        }
        if let Some(v) = &self.hostname_override {
            c.hostname = v.trim().to_lowercase();
        }
        if let Some(v) = &self.cluster_cidr {
            c.cluster_cidrs = v.0.clone();
        }
        if let Some(v) = &self.nodeport_addresses {
            c.nodeport_addresses = if v.0.is_empty() {
                NodePortAddresses::All
            } else {
                NodePortAddresses::Cidrs(v.0.clone())
            };
        }
        if let Some(v) = self.nodeport_range {
            c.nodeport_range = v;
        }
        c.masquerade_all |= self.masquerade_all;
        if let Some(v) = self.iptables_masquerade_bit {
            c.masquerade_bit = v;
        }
        if let Some(v) = self.ipvs_scheduler.as_ref().filter(|v| !v.is_empty()) {
            c.ipvs_scheduler = v.clone();
        }
        let durations = [
            (self.ipvs_sync_period, &mut c.ipvs_sync_period),
            (self.ipvs_min_sync_period, &mut c.ipvs_min_sync_period),
            (self.iptables_sync_period, &mut c.iptables_sync_period),
            (
                self.iptables_min_sync_period,
                &mut c.iptables_min_sync_period,
            ),
            (self.ipvs_tcp_timeout, &mut c.ipvs_tcp_timeout),
            (self.ipvs_tcpfin_timeout, &mut c.ipvs_tcpfin_timeout),
            (self.ipvs_udp_timeout, &mut c.ipvs_udp_timeout),
        ];
        for (flag, field) in durations {
            if let Some(v) = flag {
                *field = v;
            }
        }
        c.ipvs_strict_arp |= self.ipvs_strict_arp;
        if let Some(v) = &self.ipvs_exclude_cidrs {
            c.ipvs_exclude_cidrs = v.0.clone();
        }
        if let Some(v) = &self.healthz_bind_address {
            c.healthz_bind_address = parse_bind(v, "healthz-bind-address")?;
        }
        if let Some(v) = &self.metrics_bind_address {
            c.metrics_bind_address = parse_bind(v, "metrics-bind-address")?;
        }
        c.cleanup |= self.cleanup;
        c.once |= self.once;
        c.dry_run |= self.dry_run;
        if let Some(v) = self.verbosity {
            c.verbosity = v;
        }
        if let Some(f) = self.log_format {
            c.log_format = match f {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            };
        }
        if c.hostname.is_empty() {
            c.hostname = local_hostname();
        }
        if c.ipvs_sync_period.is_zero() {
            anyhow::bail!("--ipvs-sync-period must be greater than 0");
        }
        if c.iptables_sync_period.is_zero() {
            anyhow::bail!("--iptables-sync-period must be greater than 0");
        }
        Ok(c)
    }
}

/// The kernel's hostname, lower-cased, as upstream's default node name.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut v = vec!["kproxy"];
        v.extend_from_slice(args);
        Flags::try_parse_from(v)
            .unwrap()
            .apply_to(Config::default())
            .unwrap()
    }

    #[test]
    fn upstream_flag_names_parse() {
        let c = parse(&[
            "--proxy-mode",
            "iptables",
            "--hostname-override",
            "Node-1",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--nodeport-addresses",
            "192.168.0.0/16",
            "--ipvs-scheduler",
            "lc",
            "--ipvs-sync-period",
            "1m",
            "--ipvs-min-sync-period",
            "500ms",
            "--ipvs-exclude-cidrs",
            "10.99.0.0/16",
            "--masquerade-all",
            "--v=4",
        ]);
        assert_eq!(c.mode, Some(ProxyMode::Iptables));
        assert_eq!(c.hostname, "node-1");
        assert_eq!(c.cluster_cidrs[0].to_string(), "10.244.0.0/16");
        assert!(matches!(c.nodeport_addresses, NodePortAddresses::Cidrs(ref v) if v.len() == 1));
        assert_eq!(c.ipvs_scheduler, "lc");
        assert_eq!(c.ipvs_sync_period, Duration::from_secs(60));
        assert_eq!(c.ipvs_min_sync_period, Duration::from_millis(500));
        assert!(c.masquerade_all);
        assert_eq!(c.verbosity, 4);
        assert_eq!(c.masquerade_mark(), 0x4000);
    }

    #[test]
    fn defaults_match_upstream() {
        let c = parse(&["--hostname-override", "n"]);
        assert_eq!(c.mode, None);
        assert_eq!(c.ipvs_scheduler, "rr");
        assert_eq!(c.ipvs_sync_period, Duration::from_secs(30));
        assert_eq!(
            c.healthz_bind_address,
            Some("0.0.0.0:10256".parse().unwrap())
        );
        assert_eq!(
            c.metrics_bind_address,
            Some("127.0.0.1:10249".parse().unwrap())
        );
        assert_eq!(c.nodeport_range, (30000, 32767));
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let e = Flags::try_parse_from(["kproxy", "--ipvs-sync-period", "soon"]).unwrap_err();
        assert!(e.to_string().contains("--ipvs-sync-period"), "{e}");
        let e = Flags::try_parse_from(["kproxy", "--proxy-mode", "userspace"]).unwrap_err();
        assert!(e.to_string().contains("userspace"), "{e}");
        let e = Flags::try_parse_from(["kproxy", "--nodeport-range", "40000-30000"]).unwrap_err();
        assert!(e.to_string().contains("40000-30000"), "{e}");
        let flags = Flags::try_parse_from(["kproxy", "--ipvs-sync-period", "0s"]).unwrap();
        assert!(flags.apply_to(Config::default()).is_err());
    }
}
