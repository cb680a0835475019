//! `--config FILE`: a KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1),
//! YAML or JSON, read into a base `Config` that command-line flags then
//! override, as with kube-proxy.
//!
//! The document is walked by hand rather than through derived structs so
//! that every error names the field path (`ipvs.syncPeriod: "soon" is not
//! a duration`) and so fields kube-proxy knows but kproxy has no use for
//! (conntrack tuning, Windows settings, ...) are accepted and reported as
//! ignored instead of breaking an existing config file.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use ipnet::IpNet;
use serde_json::{Map, Value};

use super::{Config, LogFormat, NodePortAddresses, ProxyMode, parse_cidrs, parse_duration};

pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
pub const KIND: &str = "KubeProxyConfiguration";

/// A problem with one field of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `ipvs.syncPeriod`, `nodePortAddresses[1]`, or empty for the document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

fn err(path: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Read `path` into a base Config (defaults for everything the file leaves
/// out), logging the fields that have no effect at debug level.
pub fn load(path: impl AsRef<Path>) -> anyhow::Result<Config> {
    let loaded = read(path)?;
    loaded.log_ignored();
    Ok(loaded.config)
}

/// `load` without the logging, for callers that set up logging from the
/// file's own settings first and call `Loaded::log_ignored` afterwards.
pub fn read(path: impl AsRef<Path>) -> anyhow::Result<Loaded> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    parse(&text).with_context(|| format!("config file {}", path.display()))
}

/// The result of parsing a file: the Config, and the fields that were
/// accepted but have no effect in kproxy.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub ignored: Vec<String>,
}

impl Loaded {
    pub fn log_ignored(&self) {
        for field in &self.ignored {
            tracing::debug!(field = %field, "config file field accepted but not used by kproxy");
        }
    }
}

/// Parse a KubeProxyConfiguration document (YAML or JSON).
pub fn parse(text: &str) -> Result<Loaded, FieldError> {
    // YAML is a superset of JSON, so one parser reads both.
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| err("", format!("not YAML: {e}")))?;
    let mut w = Walker {
        config: Config::default(),
        ignored: Vec::new(),
    };
    w.document(&doc)?;
    Ok(Loaded {
        config: w.config,
        ignored: w.ignored,
    })
}

struct Walker {
    config: Config,
    ignored: Vec<String>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn object<'a>(path: &str, v: &'a Value) -> Result<&'a Map<String, Value>, FieldError> {
    v.as_object()
        .ok_or_else(|| err(path, format!("expected a mapping, found {}", describe(v))))
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn string<'a>(path: &str, v: &'a Value) -> Result<&'a str, FieldError> {
    v.as_str()
        .ok_or_else(|| err(path, format!("expected a string, found {}", describe(v))))
}

fn boolean(path: &str, v: &Value) -> Result<bool, FieldError> {
    v.as_bool().ok_or_else(|| {
        err(
            path,
            format!("expected true or false, found {}", describe(v)),
        )
    })
}

fn integer(path: &str, v: &Value, lo: i64, hi: i64) -> Result<i64, FieldError> {
    match v.as_i64() {
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        Some(n) => Err(err(path, format!("{n} is out of range {lo}..{hi}"))),
        None => Err(err(
            path,
            format!("expected an integer, found {}", describe(v)),
        )),
    }
}

/// Durations are Go duration strings (`30s`, `1m30s`, `500ms`), as in
/// metav1.Duration.
fn duration(path: &str, v: &Value) -> Result<Duration, FieldError> {
    let s = v.as_str().ok_or_else(|| {
        err(
            path,
            format!(
                "{} is not a duration (write it as a string like \"30s\")",
                describe(v)
            ),
        )
    })?;
    parse_duration(s).map_err(|e| err(path, format!("{s:?} is not a duration ({e})")))
}

fn string_list<'a>(path: &str, v: &'a Value) -> Result<Vec<(String, &'a str)>, FieldError> {
    let items = v
        .as_array()
        .ok_or_else(|| err(path, format!("expected a list, found {}", describe(v))))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let p = format!("{path}[{i}]");
            let s = string(&p, item)?;
            Ok((p, s))
        })
        .collect()
}

fn cidr(path: &str, s: &str) -> Result<IpNet, FieldError> {
    parse_cidrs(s)
        .map_err(|e| err(path, e))
        .and_then(|v| match v.as_slice() {
            [one] => Ok(*one),
            _ => Err(err(path, format!("{s:?} is not one CIDR"))),
        })
}

/// `IP:port`, `[IPv6]:port`, or a bare IP (the port then is the default's,
/// as kube-proxy appends it). Empty keeps the default.
fn bind_address(
    path: &str,
    v: &Value,
    default: Option<SocketAddr>,
) -> Result<Option<SocketAddr>, FieldError> {
    let s = string(path, v)?.trim();
    if s.is_empty() {
        return Ok(default);
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(Some(a));
    }
    let port = default.map(|d| d.port()).unwrap_or(0);
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| Some(SocketAddr::new(ip, port)))
        .map_err(|_| err(path, format!("{s:?} is not an address like 0.0.0.0:10256")))
}

/// Field names kube-proxy defines whose values kproxy has no use for.
/// Each list is per section; a misspelling is still an unknown field.
const IGNORED_TOP: &[&str] = &[
    "bindAddress",
    "bindAddressHardFail",
    "enableProfiling",
    "showHiddenMetricsForVersion",
    "featureGates",
    "oomScoreAdj",
    "configSyncPeriod",
    "portRange",
    "windowsRunAsService",
];
const CLIENT_CONNECTION_IGNORED: &[&str] = &["acceptContentTypes", "contentType", "qps", "burst"];
const IPTABLES_IGNORED: &[&str] = &["localhostNodePorts", "snatNodeInternalIP"];
const LOGGING_IGNORED: &[&str] = &["flushFrequency", "vmodule", "options"];
/// Sections kproxy ignores as a whole, with their known fields.
const IGNORED_SECTIONS: &[(&str, &[&str])] = &[
    (
        "conntrack",
        &[
            "maxPerCore",
            "min",
            "tcpEstablishedTimeout",
            "tcpCloseWaitTimeout",
            "tcpBeLiberal",
            "udpTimeout",
            "udpStreamTimeout",
        ],
    ),
    (
        "nftables",
        &[
            "masqueradeBit",
            "masqueradeAll",
            "syncPeriod",
            "minSyncPeriod",
        ],
    ),
    (
        "winkernel",
        &[
            "networkName",
            "sourceVip",
            "enableDSR",
            "rootHnsEndpointName",
            "forwardHealthCheckVip",
        ],
    ),
    ("detectLocal", &["bridgeInterface", "interfaceNamePrefix"]),
];

impl Walker {
    fn ignore(&mut self, path: String) {
        self.ignored.push(path);
    }

    fn document(&mut self, doc: &Value) -> Result<(), FieldError> {
        let top = object("", doc)?;
        match top.get("apiVersion").map(|v| string("apiVersion", v)) {
            Some(Ok(API_VERSION)) => {}
            Some(Ok(other)) => {
                return Err(err(
                    "apiVersion",
                    format!("{other:?} is not supported (use {API_VERSION})"),
                ));
            }
            Some(Err(e)) => return Err(e),
            None => return Err(err("apiVersion", format!("missing (use {API_VERSION})"))),
        }
        match top.get("kind").map(|v| string("kind", v)) {
            Some(Ok(KIND)) => {}
            Some(Ok(other)) => {
                return Err(err("kind", format!("{other:?} is not {KIND}")));
            }
            Some(Err(e)) => return Err(e),
            None => return Err(err("kind", format!("missing (use {KIND})"))),
        }
        for (key, v) in top {
            // An explicit null means "not set", as in kube-proxy's decoding.
            if v.is_null() {
                continue;
            }
            let p = key.as_str();
            match p {
                "apiVersion" | "kind" => {}
                "mode" => self.config.mode = mode(p, v)?,
                "hostnameOverride" => {
                    let s = string(p, v)?.trim().to_lowercase();
                    if !s.is_empty() {
                        self.config.hostname = s;
                    }
                }
                "healthzBindAddress" => {
                    self.config.healthz_bind_address =
                        bind_address(p, v, Config::default().healthz_bind_address)?;
                }
                "metricsBindAddress" => {
                    self.config.metrics_bind_address =
                        bind_address(p, v, Config::default().metrics_bind_address)?;
                }
                "clusterCIDR" => {
                    self.config.cluster_cidrs =
                        parse_cidrs(string(p, v)?).map_err(|e| err(p, e))?;
                }
                "nodePortAddresses" => {
                    self.config.nodeport_addresses = nodeport_addresses(p, v)?;
                }
                "detectLocalMode" => match string(p, v)? {
                    "" | "ClusterCIDR" => {}
                    other => {
                        // Accepted so the file still loads, but the
                        // difference matters: say so above debug level.
                        tracing::warn!(
                            "detectLocalMode {other:?} is not supported; kproxy detects local traffic by clusterCIDR"
                        );
                        self.ignore(p.to_string());
                    }
                },
                "clientConnection" => self.client_connection(p, v)?,
                "logging" => self.logging(p, v)?,
                "iptables" => self.iptables(p, v)?,
                "ipvs" => self.ipvs(p, v)?,
                _ if IGNORED_TOP.contains(&p) => self.ignore(p.to_string()),
                _ => match IGNORED_SECTIONS.iter().find(|(name, _)| *name == p) {
                    Some((_, known)) => self.ignored_section(p, v, known)?,
                    None => return Err(err(p, "unknown field")),
                },
            }
        }
        Ok(())
    }

    fn ignored_section(&mut self, path: &str, v: &Value, known: &[&str]) -> Result<(), FieldError> {
        for (key, _) in object(path, v)? {
            let p = join(path, key);
            if !known.contains(&key.as_str()) {
                return Err(err(&p, "unknown field"));
            }
            self.ignore(p);
        }
        Ok(())
    }

    fn client_connection(&mut self, path: &str, v: &Value) -> Result<(), FieldError> {
        for (key, v) in object(path, v)? {
            let p = join(path, key);
            if v.is_null() {
                continue;
            }
            match key.as_str() {
                "kubeconfig" => {
                    let s = string(&p, v)?;
                    if !s.is_empty() {
                        self.config.kubeconfig = Some(s.into());
                    }
                }
                k if CLIENT_CONNECTION_IGNORED.contains(&k) => self.ignore(p),
                _ => return Err(err(&p, "unknown field")),
            }
        }
        Ok(())
    }

    fn logging(&mut self, path: &str, v: &Value) -> Result<(), FieldError> {
        for (key, v) in object(path, v)? {
            let p = join(path, key);
            if v.is_null() {
                continue;
            }
            match key.as_str() {
                "format" => {
                    self.config.log_format = match string(&p, v)? {
                        "" | "text" => LogFormat::Text,
                        "json" => LogFormat::Json,
                        other => {
                            return Err(err(&p, format!("{other:?} is not text or json")));
                        }
                    }
                }
                "verbosity" => self.config.verbosity = integer(&p, v, 0, 255)? as u8,
                k if LOGGING_IGNORED.contains(&k) => self.ignore(p),
                _ => return Err(err(&p, "unknown field")),
            }
        }
        Ok(())
    }

    fn iptables(&mut self, path: &str, v: &Value) -> Result<(), FieldError> {
        for (key, v) in object(path, v)? {
            let p = join(path, key);
            if v.is_null() {
                continue;
            }
            let c = &mut self.config;
            match key.as_str() {
                "masqueradeAll" => c.masquerade_all = boolean(&p, v)?,
                "masqueradeBit" => c.masquerade_bit = integer(&p, v, 0, 31)? as u8,
                "syncPeriod" => c.iptables_sync_period = duration(&p, v)?,
                "minSyncPeriod" => c.iptables_min_sync_period = duration(&p, v)?,
                k if IPTABLES_IGNORED.contains(&k) => self.ignore(p),
                _ => return Err(err(&p, "unknown field")),
            }
        }
        Ok(())
    }

    fn ipvs(&mut self, path: &str, v: &Value) -> Result<(), FieldError> {
        for (key, v) in object(path, v)? {
            let p = join(path, key);
            if v.is_null() {
                continue;
            }
            let c = &mut self.config;
            match key.as_str() {
                "scheduler" => {
                    let s = string(&p, v)?.trim();
                    // Empty means the default (rr), as in kube-proxy.
                    if !s.is_empty() {
                        c.ipvs_scheduler = s.to_string();
                    }
                }
                "syncPeriod" => c.ipvs_sync_period = duration(&p, v)?,
                "minSyncPeriod" => c.ipvs_min_sync_period = duration(&p, v)?,
                "strictARP" => c.ipvs_strict_arp = boolean(&p, v)?,
                "tcpTimeout" => c.ipvs_tcp_timeout = duration(&p, v)?,
                "tcpFinTimeout" => c.ipvs_tcpfin_timeout = duration(&p, v)?,
                "udpTimeout" => c.ipvs_udp_timeout = duration(&p, v)?,
                "excludeCIDRs" => {
                    c.ipvs_exclude_cidrs = string_list(&p, v)?
                        .into_iter()
                        .map(|(p, s)| cidr(&p, s))
                        .collect::<Result<_, _>>()?;
                }
                _ => return Err(err(&p, "unknown field")),
            }
        }
        Ok(())
    }
}

fn mode(path: &str, v: &Value) -> Result<Option<ProxyMode>, FieldError> {
    match string(path, v)? {
        "" => Ok(None),
        "ipvs" => Ok(Some(ProxyMode::Ipvs)),
        "iptables" => Ok(Some(ProxyMode::Iptables)),
        other => Err(err(
            path,
            format!("{other:?} is not supported by kproxy (ipvs or iptables)"),
        )),
    }
}

/// CIDRs and kube-proxy's keywords: `all` (every local address, the same
/// as leaving the list empty) and `localhost`. `primary` needs the Node's
/// primary IPs, which kproxy does not resolve: refused rather than guessed.
fn nodeport_addresses(path: &str, v: &Value) -> Result<NodePortAddresses, FieldError> {
    let mut cidrs = Vec::new();
    for (p, s) in string_list(path, v)? {
        match s.trim() {
            "all" => return Ok(NodePortAddresses::All),
            "localhost" => {
                cidrs.push("127.0.0.0/8".parse().expect("literal CIDR"));
                cidrs.push("::1/128".parse().expect("literal CIDR"));
            }
            "primary" => {
                return Err(err(
                    &p,
                    "keyword \"primary\" is not supported by kproxy; list the CIDRs instead",
                ));
            }
            s => cidrs.push(cidr(&p, s)?),
        }
    }
    Ok(if cidrs.is_empty() {
        NodePortAddresses::All
    } else {
        NodePortAddresses::Cidrs(cidrs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Flags;
    use clap::Parser;

    const HEADER: &str =
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

    fn parse_body(body: &str) -> Result<Loaded, FieldError> {
        parse(&format!("{HEADER}{body}"))
    }

    fn error_of(body: &str) -> String {
        parse_body(body).unwrap_err().to_string()
    }

    /// Every mapped field set to a non-default value lands in its Config field.
    #[test]
    fn every_field_is_mapped() {
        let c = parse_body(
            r#"
mode: iptables
hostnameOverride: Worker-7
healthzBindAddress: 127.0.0.1:20256
metricsBindAddress: 0.0.0.0:20249
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
nodePortAddresses: [192.168.0.0/16, 10.0.0.0/8]
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
logging:
  format: json
  verbosity: 4
iptables:
  masqueradeAll: true
  masqueradeBit: 12
  syncPeriod: 45s
  minSyncPeriod: 2s
ipvs:
  scheduler: wlc
  syncPeriod: 1m
  minSyncPeriod: 500ms
  strictARP: true
  tcpTimeout: 900s
  tcpFinTimeout: 2m
  udpTimeout: 10s
  excludeCIDRs:
  - 10.99.0.0/16
  - 172.16.0.0/12
"#,
        )
        .unwrap()
        .config;
        assert_eq!(c.mode, Some(ProxyMode::Iptables));
        assert_eq!(c.hostname, "worker-7");
        assert_eq!(
            c.healthz_bind_address,
            Some("127.0.0.1:20256".parse().unwrap())
        );
        assert_eq!(
            c.metrics_bind_address,
            Some("0.0.0.0:20249".parse().unwrap())
        );
        assert_eq!(
            c.cluster_cidrs,
            vec![
                "10.244.0.0/16".parse::<IpNet>().unwrap(),
                "fd00:10:244::/56".parse().unwrap()
            ]
        );
        assert_eq!(
            c.nodeport_addresses,
            NodePortAddresses::Cidrs(vec![
                "192.168.0.0/16".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap()
            ])
        );
        assert_eq!(
            c.kubeconfig.as_deref(),
            Some(Path::new("/var/lib/kube-proxy/kubeconfig.conf"))
        );
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.verbosity, 4);
        assert!(c.masquerade_all);
        assert_eq!(c.masquerade_bit, 12);
        assert_eq!(c.masquerade_mark(), 0x1000);
        assert_eq!(c.iptables_sync_period, Duration::from_secs(45));
        assert_eq!(c.iptables_min_sync_period, Duration::from_secs(2));
        assert_eq!(c.ipvs_scheduler, "wlc");
        assert_eq!(c.ipvs_sync_period, Duration::from_secs(60));
        assert_eq!(c.ipvs_min_sync_period, Duration::from_millis(500));
        assert!(c.ipvs_strict_arp);
        assert_eq!(c.ipvs_tcp_timeout, Duration::from_secs(900));
        assert_eq!(c.ipvs_tcpfin_timeout, Duration::from_secs(120));
        assert_eq!(c.ipvs_udp_timeout, Duration::from_secs(10));
        assert_eq!(
            c.ipvs_exclude_cidrs,
            vec![
                "10.99.0.0/16".parse::<IpNet>().unwrap(),
                "172.16.0.0/12".parse().unwrap()
            ]
        );
    }

    #[test]
    fn json_is_read_too() {
        let c = parse(
            r#"{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
                "mode": "ipvs", "ipvs": {"scheduler": "sh", "syncPeriod": "20s"}}"#,
        )
        .unwrap()
        .config;
        assert_eq!(c.mode, Some(ProxyMode::Ipvs));
        assert_eq!(c.ipvs_scheduler, "sh");
        assert_eq!(c.ipvs_sync_period, Duration::from_secs(20));
    }

    #[test]
    fn left_out_and_empty_fields_keep_the_defaults() {
        let c = parse_body(
            "mode: \"\"\nipvs:\n  scheduler: \"\"\n  syncPeriod: null\nhealthzBindAddress: \"\"\nnodePortAddresses: []\n",
        )
        .unwrap()
        .config;
        let d = Config::default();
        assert_eq!(c.mode, None);
        assert_eq!(c.ipvs_scheduler, d.ipvs_scheduler);
        assert_eq!(c.ipvs_sync_period, d.ipvs_sync_period);
        assert_eq!(c.healthz_bind_address, d.healthz_bind_address);
        assert_eq!(c.nodeport_addresses, NodePortAddresses::All);
    }

    #[test]
    fn bare_bind_ip_takes_the_default_port() {
        let c = parse_body("healthzBindAddress: 10.1.2.3\nmetricsBindAddress: \"::1\"\n")
            .unwrap()
            .config;
        assert_eq!(
            c.healthz_bind_address,
            Some("10.1.2.3:10256".parse().unwrap())
        );
        assert_eq!(c.metrics_bind_address, Some("[::1]:10249".parse().unwrap()));
    }

    #[test]
    fn nodeport_keywords() {
        let c = parse_body("nodePortAddresses: [localhost]\n")
            .unwrap()
            .config;
        assert_eq!(
            c.nodeport_addresses,
            NodePortAddresses::Cidrs(vec![
                "127.0.0.0/8".parse().unwrap(),
                "::1/128".parse().unwrap()
            ])
        );
        let c = parse_body("nodePortAddresses: [10.0.0.0/8, all]\n")
            .unwrap()
            .config;
        assert_eq!(c.nodeport_addresses, NodePortAddresses::All);
        assert_eq!(
            error_of("nodePortAddresses: [10.0.0.0/8, primary]\n"),
            "nodePortAddresses[1]: keyword \"primary\" is not supported by kproxy; list the CIDRs instead"
        );
    }

    #[test]
    fn known_unused_fields_are_accepted_and_listed() {
        let loaded = parse_body(
            r#"
bindAddress: 0.0.0.0
featureGates: {SomeGate: true}
oomScoreAdj: -999
configSyncPeriod: 15m
clientConnection: {qps: 5, burst: 10, kubeconfig: ""}
conntrack:
  maxPerCore: 32768
  tcpEstablishedTimeout: 24h
iptables: {localhostNodePorts: true}
winkernel: {enableDSR: false}
detectLocalMode: ClusterCIDR
"#,
        )
        .unwrap();
        let mut ignored = loaded.ignored.clone();
        ignored.sort();
        assert_eq!(
            ignored,
            [
                "bindAddress",
                "clientConnection.burst",
                "clientConnection.qps",
                "configSyncPeriod",
                "conntrack.maxPerCore",
                "conntrack.tcpEstablishedTimeout",
                "featureGates",
                "iptables.localhostNodePorts",
                "oomScoreAdj",
                "winkernel.enableDSR",
            ]
        );
        // An empty kubeconfig leaves the in-cluster default.
        assert_eq!(loaded.config.kubeconfig, None);
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            (
                "ipvs:\n  sycnPeriod: 30s\n",
                "ipvs.sycnPeriod: unknown field",
            ),
            ("mdoe: ipvs\n", "mdoe: unknown field"),
            (
                "conntrack:\n  maxPerCpu: 1\n",
                "conntrack.maxPerCpu: unknown field",
            ),
            (
                "ipvs:\n  syncPeriod: soon\n",
                "ipvs.syncPeriod: \"soon\" is not a duration",
            ),
            (
                "iptables:\n  minSyncPeriod: 5\n",
                "iptables.minSyncPeriod: 5 is not a duration (write it as a string like \"30s\")",
            ),
            (
                "iptables:\n  masqueradeBit: 32\n",
                "iptables.masqueradeBit: 32 is out of range 0..31",
            ),
            (
                "iptables:\n  masqueradeAll: \"yes\"\n",
                "iptables.masqueradeAll: expected true or false, found \"yes\"",
            ),
            (
                "ipvs:\n  excludeCIDRs: [10.0.0.0/8, banana]\n",
                "ipvs.excludeCIDRs[1]: \"banana\" is not a CIDR",
            ),
            (
                "mode: nftables\n",
                "mode: \"nftables\" is not supported by kproxy (ipvs or iptables)",
            ),
            (
                "clusterCIDR: 10.0.0.0/33\n",
                "clusterCIDR: \"10.0.0.0/33\" is not a CIDR",
            ),
            (
                "metricsBindAddress: localhost:99999\n",
                "metricsBindAddress: \"localhost:99999\" is not an address",
            ),
            ("ipvs: fast\n", "ipvs: expected a mapping, found \"fast\""),
            (
                "logging:\n  format: xml\n",
                "logging.format: \"xml\" is not text or json",
            ),
        ];
        for (body, want) in cases {
            let got = error_of(body);
            assert!(
                got.starts_with(want),
                "{body:?}: got {got:?}, want {want:?}…"
            );
        }
    }

    #[test]
    fn the_document_must_be_a_kube_proxy_configuration() {
        let e =
            parse("apiVersion: kubeproxy.config.k8s.io/v1beta9\nkind: KubeProxyConfiguration\n")
                .unwrap_err();
        assert_eq!(e.path, "apiVersion");
        let e = parse("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n")
            .unwrap_err();
        assert_eq!(e.path, "kind");
        let e = parse("kind: KubeProxyConfiguration\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("apiVersion: missing (use {API_VERSION})")
        );
        assert!(parse("- a\n- b\n").is_err());
        assert!(parse("ipvs: [unclosed\n").is_err());
    }

    /// Flags given on the command line win over the file; the file wins
    /// over the defaults; flags not given leave the file's values.
    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            format!(
                "{HEADER}mode: iptables\nhostnameOverride: from-file\nipvs:\n  scheduler: wlc\n  syncPeriod: 1m\n  strictARP: true\niptables:\n  masqueradeAll: true\n"
            ),
        )
        .unwrap();
        let base = load(&path).unwrap();
        let flags = Flags::try_parse_from([
            "kproxy",
            "--config",
            path.to_str().unwrap(),
            "--proxy-mode",
            "ipvs",
            "--ipvs-sync-period",
            "10s",
        ])
        .unwrap();
        let c = flags.apply_to(base).unwrap();
        assert_eq!(c.mode, Some(ProxyMode::Ipvs), "flag wins");
        assert_eq!(c.ipvs_sync_period, Duration::from_secs(10), "flag wins");
        assert_eq!(c.ipvs_scheduler, "wlc", "file value kept");
        assert_eq!(c.hostname, "from-file", "file value kept");
        assert!(
            c.ipvs_strict_arp,
            "an absent boolean flag does not reset the file"
        );
        assert!(c.masquerade_all);
        assert_eq!(
            c.iptables_sync_period,
            Config::default().iptables_sync_period
        );
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kp.yaml");
        std::fs::write(&path, format!("{HEADER}ipvs:\n  sycnPeriod: 30s\n")).unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(e.contains("kp.yaml"), "{e}");
        assert!(e.contains("ipvs.sycnPeriod: unknown field"), "{e}");
        assert!(load(dir.path().join("missing.yaml")).is_err());
    }
}
