//! Configuration: command-line flags (upstream kube-proxy's names), resolved
//! into one `Config` that every stage reads.

pub mod file;
pub mod flags;
pub mod values;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

pub use flags::Flags;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Which addresses NodePorts listen on.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum NodePortAddresses {
    /// Every local address (loopback included in IPVS mode, as upstream).
    #[default]
    All,
    /// Addresses inside these CIDRs (loopback excluded).
    Cidrs(Vec<IpNet>),
}

/// Everything kproxy needs to know, after flags (and the config file) are merged.
#[derive(Clone, Debug)]
pub struct Config {
    /// None: the operator did not choose; IPVS with a fallback to iptables.
    pub mode: Option<ProxyMode>,
    pub kubeconfig: Option<PathBuf>,
    pub master: Option<String>,
    pub manifests: Option<PathBuf>,
    pub hostname: String,
    pub cluster_cidrs: Vec<IpNet>,
    pub nodeport_addresses: NodePortAddresses,
    /// Inclusive range of ports that are NodePorts (for ownership decisions).
    pub nodeport_range: (u16, u16),
    pub masquerade_all: bool,
    pub masquerade_bit: u8,
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
    pub cleanup: bool,
    pub once: bool,
    pub dry_run: bool,
    pub verbosity: u8,
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: None,
            kubeconfig: None,
            master: None,
            manifests: None,
            hostname: String::new(),
            cluster_cidrs: Vec::new(),
            nodeport_addresses: NodePortAddresses::All,
            nodeport_range: (30000, 32767),
            masquerade_all: false,
            masquerade_bit: 14,
            ipvs_scheduler: "rr".into(),
            ipvs_sync_period: Duration::from_secs(30),
            ipvs_min_sync_period: Duration::ZERO,
            iptables_sync_period: Duration::from_secs(30),
            iptables_min_sync_period: Duration::from_secs(1),
            ipvs_strict_arp: false,
            ipvs_tcp_timeout: Duration::ZERO,
            ipvs_tcpfin_timeout: Duration::ZERO,
            ipvs_udp_timeout: Duration::ZERO,
            ipvs_exclude_cidrs: Vec::new(),
            healthz_bind_address: Some("0.0.0.0:10256".parse().unwrap()),
            metrics_bind_address: Some("127.0.0.1:10249".parse().unwrap()),
            cleanup: false,
            once: false,
            dry_run: false,
            verbosity: 0,
            log_format: LogFormat::Text,
        }
    }
}

impl Config {
    /// The mode actually in use, given whether the kernel has IPVS.
    pub fn sync_periods(&self, mode: ProxyMode) -> (Duration, Duration) {
        match mode {
            ProxyMode::Ipvs => (self.ipvs_min_sync_period, self.ipvs_sync_period),
            ProxyMode::Iptables => (self.iptables_min_sync_period, self.iptables_sync_period),
        }
    }

    /// The masquerade mark (`1 << masquerade_bit`, 0x4000 by default).
    pub fn masquerade_mark(&self) -> u32 {
        1u32 << self.masquerade_bit
    }
}

/// Parse `30s`, `1m`, `500ms`, `1h30m`, `2.5s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs, s);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} lacks a unit (ms, s, m, h)"))?;
        if num_end == 0 {
            return Err(format!("duration {s:?}: expected a number at {rest:?}"));
        }
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("duration {s:?}: bad number {:?}", &rest[..num_end]))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => {
                return Err(format!(
                    "duration {s:?}: unknown unit {u:?} (use ms, s, m, h)"
                ));
            }
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    secs_to_duration(total, s)
}

fn secs_to_duration(secs: f64, s: &str) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("duration {s:?} must be a non-negative time"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parse a comma-separated CIDR list (`10.0.0.0/8,fd00::/8`); bare addresses are host routes.
pub fn parse_cidrs(s: &str) -> Result<Vec<IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{p:?} is not a CIDR (like 10.0.0.0/8 or fd00::/64)"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn cidrs() {
        let v = parse_cidrs("10.0.0.0/8, fd00::/64,192.168.1.1").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].to_string(), "192.168.1.1/32");
        let e = parse_cidrs("10.0.0.0/8,banana").unwrap_err();
        assert!(e.contains("banana"), "{e}");
    }
}
