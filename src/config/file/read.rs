//! Reading a KubeProxyConfiguration into `Config`, with upstream's v1alpha1
//! defaulting (pkg/proxy/apis/config/v1alpha1/defaults.go) and the Linux
//! platform defaults (server_linux.go platformApplyDefaults).
//!
//! Go decodes `null` into a field as "leave it as it is", and defaulting
//! then fills in zero values (a zero `syncPeriod`, an empty
//! `healthzBindAddress`): both keep this reader's defaults.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Map, Value};

use super::{API_VERSION, FieldError, KIND, err};
use crate::config::values::{
    BindValue, parse_bind, parse_cidr_sloppy, parse_go_duration, parse_ip_sloppy, parse_quantity,
};
use crate::config::{Config, HEALTHZ_PORT, LocalMode, LogFormat, METRICS_PORT, parse_mode};

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
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

fn object<'a>(path: &str, v: &'a Value) -> Result<&'a Map<String, Value>, FieldError> {
    v.as_object()
        .ok_or_else(|| err(path, format!("expected a mapping, found {}", describe(v))))
}

fn string<'a>(path: &str, v: &'a Value) -> Result<&'a str, FieldError> {
    v.as_str()
        .ok_or_else(|| err(path, format!("expected a string, found {}", describe(v))))
}

/// A boolean; the YAML 1.1 words kube-proxy's YAML reader takes as
/// booleans (`yes`, `off`, ...) too.
fn boolean(path: &str, v: &Value) -> Result<bool, FieldError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.as_str() {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Ok(true),
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Ok(false),
            _ => Err(err(path, format!("expected true or false, found {s:?}"))),
        },
        _ => Err(err(
            path,
            format!("expected true or false, found {}", describe(v)),
        )),
    }
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

fn int32(path: &str, v: &Value) -> Result<i32, FieldError> {
    integer(path, v, i32::MIN.into(), i32::MAX.into()).map(|n| n as i32)
}

/// A metav1.Duration: a Go duration string (`30s`, `1m30s`, `500ms`).
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
    parse_go_duration(s).map_err(|e| err(path, format!("{s:?} is not a duration ({e})")))
}

/// A duration whose zero value means `default` (upstream's defaulting).
fn duration_or(path: &str, v: &Value, default: Duration) -> Result<Duration, FieldError> {
    let d = duration(path, v)?;
    Ok(if d.is_zero() { default } else { d })
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
    parse_cidr_sloppy(s).map_err(|e| err(path, e))
}

struct Walker {
    c: Config,
    unknown: Vec<String>,
    healthz: Option<String>,
    metrics: Option<String>,
}

impl Walker {
    /// The non-null fields of a mapping, with their paths.
    fn fields<'a>(
        path: &str,
        v: &'a Value,
    ) -> Result<Vec<(String, &'a str, &'a Value)>, FieldError> {
        Ok(object(path, v)?
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (join(path, k), k.as_str(), v))
            .collect())
    }

    fn unknown(&mut self, path: String) {
        self.unknown.push(path);
    }
}

/// Walk a whole document; returns the Config and the unknown fields.
pub(super) fn document(doc: &Value) -> Result<(Config, Vec<String>), FieldError> {
    let top = object("", doc)?;
    check_type(top)?;
    let mut w = Walker {
        c: Config::file_defaults(),
        unknown: Vec::new(),
        healthz: None,
        metrics: None,
    };
    for (p, key, v) in Walker::fields("", doc)? {
        w.top_field(&p, key, v)?;
    }
    w.bind_addresses()?;
    Ok((w.c, w.unknown))
}

fn check_type(top: &Map<String, Value>) -> Result<(), FieldError> {
    for (field, want) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        match top.get(field).map(|v| string(field, v)) {
            Some(Ok(s)) if s == want => {}
            Some(Ok(other)) if field == "apiVersion" => {
                return Err(err(
                    field,
                    format!("{other:?} is not supported (use {API_VERSION})"),
                ));
            }
            Some(Ok(other)) => return Err(err(field, format!("{other:?} is not {KIND}"))),
            Some(Err(e)) => return Err(e),
            None => return Err(err(field, format!("missing (use {want})"))),
        }
    }
    Ok(())
}

impl Walker {
    fn top_field(&mut self, p: &str, key: &str, v: &Value) -> Result<(), FieldError> {
        let c = &mut self.c;
        match key {
            "apiVersion" | "kind" => {}
            "mode" => c.mode = parse_mode(string(p, v)?).map_err(|e| err(p, e))?,
            "hostnameOverride" => {
                let raw = string(p, v)?;
                if !raw.is_empty() && raw.trim().is_empty() {
                    return Err(err(p, "empty hostname is invalid"));
                }
                c.hostname_override = raw.trim().to_lowercase();
                c.hostname = c.hostname_override.clone();
            }
            "bindAddress" => {
                let s = string(p, v)?;
                if !s.is_empty() {
                    c.bind_address = parse_ip_sloppy(s).ok_or_else(|| {
                        err(
                            p,
                            format!("{s:?} is not a valid textual representation of an IP address"),
                        )
                    })?;
                }
            }
            "healthzBindAddress" => self.healthz = Some(string(p, v)?.to_string()),
            "metricsBindAddress" => self.metrics = Some(string(p, v)?.to_string()),
            "bindAddressHardFail" => c.bind_address_hard_fail = boolean(p, v)?,
            "enableProfiling" => c.unused.enable_profiling = boolean(p, v)?,
            "showHiddenMetricsForVersion" => {
                c.unused.show_hidden_metrics_for_version = string(p, v)?.to_string();
            }
            "portRange" => c.unused.port_range = string(p, v)?.to_string(),
            "windowsRunAsService" => c.unused.windows_run_as_service = boolean(p, v)?,
            "featureGates" => {
                for (fp, k, v) in Walker::fields(p, v)? {
                    c.unused
                        .feature_gates
                        .insert(k.to_string(), boolean(&fp, v)?);
                }
            }
            "clusterCIDR" => {
                let s = string(p, v)?;
                if !s.is_empty() {
                    c.cluster_cidrs = s
                        .split(',')
                        .map(|item| cidr(p, item))
                        .collect::<Result<_, _>>()?;
                }
            }
            "nodePortAddresses" => {
                let items = string_list(p, v)?;
                let strs: Vec<&str> = items.iter().map(|(_, s)| *s).collect();
                (c.nodeport_addresses, c.nodeport_primary) =
                    crate::config::apply::nodeport_addresses(&strs)
                        .map_err(|(i, e)| err(&items[i].0, e))?;
            }
            "detectLocalMode" => {
                c.detect_local_mode = LocalMode::parse(string(p, v)?).map_err(|e| err(p, e))?;
            }
            "oomScoreAdj" => c.oom_score_adj = int32(p, v)?,
            "configSyncPeriod" => {
                c.config_sync_period = duration_or(p, v, Duration::from_secs(15 * 60))?;
            }
            "clientConnection" => self.client_connection(p, v)?,
            "logging" => self.logging(p, v)?,
            "iptables" => self.iptables(p, v)?,
            "ipvs" => self.ipvs(p, v)?,
            "nftables" => self.nftables(p, v)?,
            "conntrack" => self.conntrack(p, v)?,
            "winkernel" => self.winkernel(p, v)?,
            "detectLocal" => self.detect_local(p, v)?,
            _ => self.unknown(p.to_string()),
        }
        Ok(())
    }

    /// healthzBindAddress / metricsBindAddress: empty means the default of
    /// bindAddress's family, a bare IP takes the default port.
    fn bind_addresses(&mut self) -> Result<(), FieldError> {
        let v4 = self.c.bind_address.is_ipv4();
        let (healthz_ip, metrics_ip): (IpAddr, IpAddr) = if v4 {
            ([0, 0, 0, 0].into(), [127, 0, 0, 1].into())
        } else {
            (
                std::net::Ipv6Addr::UNSPECIFIED.into(),
                std::net::Ipv6Addr::LOCALHOST.into(),
            )
        };
        let servers = [
            (
                "healthzBindAddress",
                self.healthz.take(),
                healthz_ip,
                HEALTHZ_PORT,
            ),
            (
                "metricsBindAddress",
                self.metrics.take(),
                metrics_ip,
                METRICS_PORT,
            ),
        ];
        for (field, raw, ip, port) in servers {
            let addr = match raw.as_deref() {
                None | Some("") => SocketAddr::new(ip, port),
                Some(s) => match parse_bind(s).map_err(|e| err(field, e))? {
                    BindValue::Ip(ip) => SocketAddr::new(ip, port),
                    BindValue::Addr(a) => a,
                    BindValue::Empty => SocketAddr::new(ip, port),
                },
            };
            if field == "healthzBindAddress" {
                self.c.healthz_bind_address = Some(addr);
            } else {
                self.c.metrics_bind_address = Some(addr);
            }
        }
        Ok(())
    }

    fn client_connection(&mut self, path: &str, v: &Value) -> Result<(), FieldError> {
        for (p, key, v) in Walker::fields(path, v)? {
            let k = &mut self.c.kube_api;
            match key {
                "kubeconfig" => {
                    let s = string(&p, v)?;
                    self.c.kubeconfig = (!s.is_empty()).then(|| s.into());
                }
                "acceptContentTypes" => k.accept_content_types = string(&p, v)?.to_string(),
                "contentType" => {
                    let s = string(&p, v)?;
                    if !s.is_empty() {
                        k.content_type = s.to_string();
                    }
                }
                "qps" => {
                    let q = v.as_f64().ok_or_else(|| {
                        err(&p, format!("expected a number, found {}", describe(v)))
                    })?;
                    if q != 0.0 {
                        k.qps = q as f32;
                    }
                }
                "burst" => {
                    let b = int32(&p, v)?;
                    if b != 0 {
                        k.burst = b;
                    }
                }
                _ => self.unknown(p),
            }
        }
        Ok(())
    }

    fn logging(&mut self, path: &str, v: &Value) -> Result<(), FieldError> {
        for (p, key, v) in Walker::fields(path, v)? {
            match key {
                "format" => {
                    self.c.log_format = LogFormat::parse(string(&p, v)?).map_err(|e| err(&p, e))?;
                }
                "verbosity" => {
                    let n = integer(&p, v, 0, i32::MAX.into())?;
                    self.c.verbosity = n.min(255) as u8;
                }
                "flushFrequency" => {
                    // A Go duration string, or a number of nanoseconds.
                    let d = match v.as_u64() {
                        Some(ns) => Duration::from_nanos(ns),
                        None => duration(&p, v)?,
                    };
                    if !d.is_zero() {
                        self.c.logging.flush_frequency = d;
                    }
                }
                "vmodule" => self.vmodule(&p, v)?,
                "options" => self.logging_options(&p, v)?,
                _ => self.unknown(p),
            }
        }
        Ok(())
    }

    fn vmodule(&mut self, path: &str, v: &Value) -> Result<(), FieldError> {
        let items = v
            .as_array()
            .ok_or_else(|| err(path, format!("expected a list, found {}", describe(v))))?;
        for (i, item) in items.iter().enumerate() {
            let ip = format!("{path}[{i}]");
            let (mut pattern, mut level) = (String::new(), 0u32);
            for (p, key, v) in Walker::fields(&ip, item)? {
                match key {
                    "filePattern" => pattern = string(&p, v)?.to_string(),
                    "verbosity" => level = integer(&p, v, 0, i32::MAX.into())? as u32,
                    _ => self.unknown(p),
                }
            }
            self.c.logging.vmodule.push((pattern, level));
        }
        Ok(())
    }

    fn logging_options(&mut self, path: &str, v: &Value) -> Result<(), FieldError> {
        for (fp, format, v) in Walker::fields(path, v)? {
            if format != "text" && format != "json" {
                self.unknown(fp);
                continue;
            }
            for (p, key, v) in Walker::fields(&fp, v)? {
                let l = &mut self.c.logging;
                let (split, buffer) = if format == "text" {
                    (&mut l.text_split_stream, &mut l.text_info_buffer_size)
                } else {
                    (&mut l.json_split_stream, &mut l.json_info_buffer_size)
                };
                match key {
                    "splitStream" => *split = boolean(&p, v)?,
                    "infoBufferSize" => {
                        let s = match v {
                            Value::Number(n) => n.to_string(),
                            _ => string(&p, v)?.to_string(),
                        };
                        parse_quantity(&s).map_err(|e| err(&p, e))?;
                        *buffer = s;
                    }
                    _ => self.unknown(p),
                }
            }
        }
        Ok(())
    }
}

mod sections;
pub(super) use sections::ignored_fields;
