//! `--write-config-to`: the configuration as a KubeProxyConfiguration, in
//! the shape `kube-proxy --write-config-to` writes: every field, keys in
//! alphabetical order, Go durations (`30s`, `15m0s`), YAML quoting as Go's
//! YAML encoder quotes (`""`, `"0"`, `'[::]:10256'`).
//!
//! Two things upstream's file cannot say are written as upstream would
//! read them back: an unset mode is `mode: ""` (kproxy: IPVS, falling back
//! to iptables), and a disabled health or metrics server is written as the
//! empty address, which reads back as the default address.

use std::path::Path;

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use super::{API_VERSION, KIND};
use crate::config::values::format_go_duration as dur;
use crate::config::{Config, NodePortAddresses, ProxyMode};

/// Write `c` to `path` as YAML (what `--write-config-to` does).
pub fn write_config(c: &Config, path: impl AsRef<Path>) -> anyhow::Result<()> {
    let path = path.as_ref();
    std::fs::write(path, to_yaml(c)).with_context(|| format!("writing {}", path.display()))
}

/// The KubeProxyConfiguration document for `c`, as YAML text.
pub(crate) fn to_yaml(c: &Config) -> String {
    let mut out = String::new();
    emit_map(to_value(c).as_object().expect("a mapping"), 0, &mut out);
    out
}

fn addr(a: Option<std::net::SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_default()
}

/// f32 as Go prints it: `5`, `5.5` (never `5.0`).
fn number(f: f32) -> Value {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        json!(f as i64)
    } else {
        f.to_string()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number)
    }
}

/// The document as a JSON value with v1alpha1's field names.
pub fn to_value(c: &Config) -> Value {
    let u = &c.unused;
    let mut doc = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "bindAddress": c.bind_address.to_string(),
        "bindAddressHardFail": c.bind_address_hard_fail,
        "clientConnection": {
            "acceptContentTypes": c.kube_api.accept_content_types,
            "burst": c.kube_api.burst,
            "contentType": c.kube_api.content_type,
            "kubeconfig": c.kubeconfig.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "qps": number(c.kube_api.qps),
        },
        "clusterCIDR": c.cluster_cidrs.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
        "configSyncPeriod": dur(c.config_sync_period),
        "conntrack": {
            "maxPerCore": c.conntrack.max_per_core,
            "min": c.conntrack.min,
            "tcpBeLiberal": c.conntrack.tcp_be_liberal,
            "tcpCloseWaitTimeout": dur(c.conntrack.tcp_close_wait_timeout),
            "tcpEstablishedTimeout": dur(c.conntrack.tcp_established_timeout),
            "udpStreamTimeout": dur(c.conntrack.udp_stream_timeout),
            "udpTimeout": dur(c.conntrack.udp_timeout),
        },
        "detectLocal": {
            "bridgeInterface": c.pod_bridge_interface,
            "interfaceNamePrefix": c.pod_interface_name_prefix,
        },
        "detectLocalMode": c.detect_local_mode.as_str(),
        "enableProfiling": u.enable_profiling,
        "healthzBindAddress": addr(c.healthz_bind_address),
        "hostnameOverride": c.hostname_override,
        "iptables": {
            "localhostNodePorts": c.iptables_localhost_nodeports,
            "masqueradeAll": c.masquerade_all,
            "masqueradeBit": c.masquerade_bit,
            "minSyncPeriod": dur(c.iptables_min_sync_period),
            "syncPeriod": dur(c.iptables_sync_period),
        },
        "ipvs": {
            "excludeCIDRs": cidr_list(&c.ipvs_exclude_cidrs),
            "minSyncPeriod": dur(c.ipvs_min_sync_period),
            "scheduler": c.ipvs_scheduler,
            "strictARP": c.ipvs_strict_arp,
            "syncPeriod": dur(c.ipvs_sync_period),
            "tcpFinTimeout": dur(c.ipvs_tcpfin_timeout),
            "tcpTimeout": dur(c.ipvs_tcp_timeout),
            "udpTimeout": dur(c.ipvs_udp_timeout),
        },
        "logging": logging(c),
        "metricsBindAddress": addr(c.metrics_bind_address),
        "mode": match c.mode {
            None => "",
            Some(ProxyMode::Ipvs) => "ipvs",
            Some(ProxyMode::Iptables) => "iptables",
        },
        "nftables": {
            "masqueradeAll": u.nftables.masquerade_all,
            "masqueradeBit": u.nftables.masquerade_bit,
            "minSyncPeriod": dur(u.nftables.min_sync_period),
            "syncPeriod": dur(u.nftables.sync_period),
        },
        "nodePortAddresses": match (&c.nodeport_addresses, c.nodeport_primary) {
            (_, true) => json!(["primary"]),
            (NodePortAddresses::All, false) => Value::Null,
            (NodePortAddresses::Cidrs(v), false) => cidr_list(v),
        },
        "oomScoreAdj": c.oom_score_adj,
        "portRange": u.port_range,
        "showHiddenMetricsForVersion": u.show_hidden_metrics_for_version,
        "winkernel": {
            "enableDSR": u.winkernel.enable_dsr,
            "forwardHealthCheckVip": u.winkernel.forward_health_check_vip,
            "networkName": u.winkernel.network_name,
            "rootHnsEndpointName": u.winkernel.root_hns_endpoint_name,
            "sourceVip": u.winkernel.source_vip,
        },
    });
    let top = doc.as_object_mut().expect("a mapping");
    // omitempty fields, as upstream's json tags have them.
    if !u.feature_gates.is_empty() {
        top.insert("featureGates".into(), json!(u.feature_gates));
    }
    if u.windows_run_as_service {
        top.insert("windowsRunAsService".into(), json!(true));
    }
    doc
}

fn cidr_list(v: &[ipnet::IpNet]) -> Value {
    if v.is_empty() {
        Value::Null
    } else {
        json!(v.iter().map(|n| n.to_string()).collect::<Vec<_>>())
    }
}

fn logging(c: &Config) -> Value {
    let l = &c.logging;
    let routing = |split: bool, buffer: &str| {
        let mut m = Map::new();
        m.insert("infoBufferSize".into(), json!(buffer));
        if split {
            m.insert("splitStream".into(), json!(true));
        }
        Value::Object(m)
    };
    let mut v = json!({
        "flushFrequency": dur(l.flush_frequency),
        "format": c.log_format.as_str(),
        "options": {
            "json": routing(l.json_split_stream, &l.json_info_buffer_size),
            "text": routing(l.text_split_stream, &l.text_info_buffer_size),
        },
        "verbosity": c.verbosity,
    });
    if !l.vmodule.is_empty() {
        let items: Vec<Value> = l
            .vmodule
            .iter()
            .map(|(p, n)| json!({"filePattern": p, "verbosity": n}))
            .collect();
        v.as_object_mut()
            .expect("a mapping")
            .insert("vmodule".into(), Value::Array(items));
    }
    v
}

fn pad(n: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// A block mapping, keys sorted, nested mappings indented by two and
/// sequences not indented (as Go's YAML encoder lays them out).
fn emit_map(m: &Map<String, Value>, indent: usize, out: &mut String) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    for k in keys {
        pad(indent, out);
        out.push_str(&scalar_string(k));
        out.push(':');
        match &m[k] {
            Value::Object(o) if !o.is_empty() => {
                out.push('\n');
                emit_map(o, indent + 2, out);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                emit_seq(a, indent, out);
            }
            v => {
                out.push(' ');
                out.push_str(&scalar(v));
                out.push('\n');
            }
        }
    }
}

fn emit_seq(a: &[Value], indent: usize, out: &mut String) {
    for item in a {
        pad(indent, out);
        out.push_str("- ");
        match item {
            Value::Object(o) if !o.is_empty() => {
                let mut inner = String::new();
                emit_map(o, indent + 2, &mut inner);
                out.push_str(&inner[indent + 2..]);
            }
            v => {
                out.push_str(&scalar(v));
                out.push('\n');
            }
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// Would a plain scalar read back as something other than this string?
fn resolves_to_non_string(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "", "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
        "true", "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
        ".inf", ".Inf", ".INF", "-.inf", "+.inf", ".nan", ".NaN", ".NAN",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    let digits = s.trim_start_matches(['-', '+']).replace('_', "");
    let numeric = !digits.is_empty()
        && digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && (digits.parse::<f64>().is_ok()
            || digits.starts_with("0x")
            || digits.starts_with("0o")
            || digits.starts_with("0b"));
    numeric || is_base60(s)
}

/// YAML 1.1 sexagesimal numbers (`1:20`, `190:20:30.15`), which Go's YAML
/// encoder quotes.
fn is_base60(s: &str) -> bool {
    let s = s.trim_start_matches(['-', '+']);
    let mut parts = s.split(':');
    let first = parts.next().unwrap_or("");
    if !first.starts_with(|c: char| c.is_ascii_digit())
        || !first.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return false;
    }
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        return false;
    }
    rest.iter().enumerate().all(|(i, p)| {
        let (digits, frac) = match p.split_once('.') {
            Some((d, f)) if i == rest.len() - 1 => (d, f),
            Some(_) => return false,
            None => (*p, ""),
        };
        let sixty = match digits.as_bytes() {
            [d] => d.is_ascii_digit(),
            [a, b] => (b'0'..=b'5').contains(a) && b.is_ascii_digit(),
            _ => false,
        };
        sixty && frac.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    })
}

fn scalar_string(s: &str) -> String {
    if resolves_to_non_string(s) || s.chars().any(|c| c.is_control()) {
        return serde_json::to_string(s).expect("a string serializes");
    }
    let indicator = s.starts_with([
        '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@',
        '`', ' ',
    ]);
    if indicator || s.ends_with([' ', ':']) || s.contains(": ") || s.contains(" #") {
        return format!("'{}'", s.replace('\'', "''"));
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_quoted_as_go_quotes_them() {
        assert_eq!(scalar_string(""), "\"\"");
        assert_eq!(scalar_string("0"), "\"0\"");
        assert_eq!(scalar_string("1.35"), "\"1.35\"");
        assert_eq!(scalar_string("true"), "\"true\"");
        assert_eq!(scalar_string("1:20"), "\"1:20\"");
        assert_eq!(scalar_string("190:20:30.5"), "\"190:20:30.5\"");
        assert_eq!(scalar_string("1:60"), "1:60");
        assert_eq!(scalar_string("n"), "\"n\"");
        assert_eq!(scalar_string("[::]:10256"), "'[::]:10256'");
        assert_eq!(scalar_string("*"), "'*'");
        assert_eq!(scalar_string("0.0.0.0:10256"), "0.0.0.0:10256");
        assert_eq!(scalar_string("10.244.0.0/16"), "10.244.0.0/16");
        assert_eq!(scalar_string("15m0s"), "15m0s");
        assert_eq!(
            scalar_string("application/vnd.kubernetes.protobuf"),
            "application/vnd.kubernetes.protobuf"
        );
    }

    #[test]
    fn layout_is_go_yaml_layout() {
        let mut out = String::new();
        let v = json!({"b": {"w": [], "x": ["1.2.3.0/24"], "z": [{"k": 1, "j": "a"}]}, "a": null, "c": {}});
        emit_map(v.as_object().unwrap(), 0, &mut out);
        assert_eq!(
            out,
            "a: null\nb:\n  w: []\n  x:\n  - 1.2.3.0/24\n  z:\n  - j: a\n    k: 1\nc: {}\n"
        );
    }

    #[test]
    fn numbers_print_as_go_prints_them() {
        assert_eq!(number(5.0), json!(5));
        assert_eq!(number(5.5).to_string(), "5.5");
        assert_eq!(number(0.1).to_string(), "0.1");
    }
}
