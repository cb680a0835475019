//! Which flags take effect, as kube-proxy v1.36.3 decides
//! (cmd/kube-proxy/app/options.go):
//!
//! - `Complete`: with `--config FILE`, the configuration becomes the file's
//!   (`o.config = c`): every flag bound into the configuration is dropped,
//!   except the logging flags, copied over the file's logging section
//!   first (`copyLogsFromFlags`, vmodule entries from flags before the
//!   file's). Without a file, the flags were parsed straight into the
//!   defaults, and `processV1Alpha1Flags` adds the sync periods and
//!   `--cluster-cidr`.
//! - `processHostnameOverrideFlag` runs either way: a non-empty
//!   `--hostname-override` wins over the file's hostnameOverride.
//! - `--healthz-port` / `--metrics-port` count only without `--config` and
//!   without `--write-config-to` (`addressFromDeprecatedFlags`): port 0
//!   disables the server, another port completes a bare-IP address.
//! - The flags upstream keeps outside the configuration always apply:
//!   `--config`, `--write-config-to`, `--cleanup`, `--init-only`,
//!   `--master`, `--version`; and so do kproxy's own extensions.
//!
//! Each flag given but without effect is named once in a warning.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};

use super::flags::{Flags, Note};
use super::values::{BindValue, split_list};
use super::{Config, HEALTHZ_PORT, LocalMode, METRICS_PORT, NodePortAddresses, parse_mode};

/// Kept by upstream outside the configuration, or kproxy's own: always apply.
const ALWAYS: &[&str] = &[
    "config",
    "write-config-to",
    "cleanup",
    "init-only",
    "master",
    "version",
    "help",
    "boot-id-file",
    "machine-id-file",
    "manifests",
    "once",
    "dry-run",
    "nodeport-range",
];

/// Copied over the file's logging settings (copyLogsFromFlags).
const LOGGING: &[&str] = &[
    "logging-format",
    "v",
    "vmodule",
    "log-flush-frequency",
    "log-json-info-buffer-size",
    "log-json-split-stream",
    "log-text-info-buffer-size",
    "log-text-split-stream",
];

const DEPRECATED_PORTS: &[&str] = &["healthz-port", "metrics-port"];

/// Accepted, and without effect in kproxy whatever the precedence.
const NO_EFFECT: &[(&str, &str)] = &[
    ("boot-id-file", "kproxy reads no boot id"),
    ("machine-id-file", "kproxy reads no machine id"),
    ("profiling", "kproxy has no profiling endpoint"),
    ("show-hidden-metrics-for-version", "kproxy hides no metrics"),
    (
        "feature-gates",
        "no kproxy behaviour depends on a feature gate (the logging gates are validated)",
    ),
    ("log-flush-frequency", "kproxy writes each log line at once"),
    (
        "vmodule",
        "kproxy's log levels are per module: see -v and RUST_LOG",
    ),
    ("log-json-split-stream", "kproxy logs to stderr only"),
    ("log-text-split-stream", "kproxy logs to stderr only"),
    ("log-json-info-buffer-size", "kproxy does not buffer logs"),
    ("log-text-info-buffer-size", "kproxy does not buffer logs"),
];

/// Whether `--name` is bound into the configuration (dropped with --config).
fn in_configuration(name: &str) -> bool {
    !(ALWAYS.contains(&name)
        || LOGGING.contains(&name)
        || DEPRECATED_PORTS.contains(&name)
        || name == "hostname-override")
}

pub(super) fn notes(flags: &Flags) -> Vec<Note> {
    let file = flags.config.is_some();
    let mut notes = Vec::new();
    for name in flags.given_flags() {
        if file && (in_configuration(name) || DEPRECATED_PORTS.contains(&name)) {
            notes.push(Note::warn(format!(
                "flag --{name} is ignored because --config is given, as kube-proxy does"
            )));
        } else if DEPRECATED_PORTS.contains(&name) && flags.write_config_to.is_some() {
            notes.push(Note::warn(format!(
                "flag --{name} is ignored with --write-config-to, as kube-proxy does"
            )));
        } else if DEPRECATED_PORTS.contains(&name) {
            let instead = name.replace("-port", "-bind-address");
            notes.push(Note::warn(format!(
                "flag --{name} is deprecated: use --{instead}"
            )));
        } else if let Some((_, why)) = NO_EFFECT.iter().find(|(n, _)| *n == name) {
            notes.push(Note::info(format!(
                "flag --{name} is accepted but has no effect in kproxy: {why}"
            )));
        }
    }
    if let Some(v) = &flags.version
        && super::values::parse_go_bool(v).is_err()
        && v != "raw"
    {
        notes.push(Note::info(format!(
            "flag --version={v} is accepted but has no effect in kproxy: it reports its own version"
        )));
    }
    notes
}

fn flag_err(name: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("--{name}: {e}")
}

pub(super) fn apply(flags: &Flags, base: Config) -> anyhow::Result<Config> {
    let mut c = base;
    let given = |n: &str| flags.given(n);
    if given("cleanup") {
        c.cleanup = flags.cleanup;
    }
    if given("init-only") {
        c.init_only = flags.init_only;
    }
    if given("write-config-to") {
        c.write_config_to = flags.write_config_to.clone();
    }
    if given("master") && !flags.master.is_empty() {
        c.master = Some(flags.master.clone());
    }
    if given("manifests") {
        c.manifests = flags.manifests.clone();
    }
    if given("once") {
        c.once = flags.once;
    }
    if given("dry-run") {
        c.dry_run = flags.dry_run;
    }
    if let Some(r) = flags.nodeport_range {
        c.nodeport_range = r;
    }
    apply_logging(flags, &mut c);
    if flags.config.is_none() {
        apply_configuration(flags, &mut c)?;
        apply_bind_addresses(flags, &mut c)?;
    }
    if !flags.hostname_override.is_empty() {
        let name = flags.hostname_override.trim();
        if name.is_empty() {
            return Err(flag_err(
                "hostname-override",
                "empty hostname-override is invalid",
            ));
        }
        c.hostname_override = name.to_lowercase();
    }
    if !c.hostname_override.is_empty() {
        c.hostname = c.hostname_override.clone();
    } else if c.hostname.is_empty() {
        c.hostname = super::system::local_hostname();
    }
    super::validate::validate(&c)?;
    Ok(c)
}

fn apply_logging(flags: &Flags, c: &mut Config) {
    let given = |n: &str| flags.given(n);
    if given("logging-format") {
        c.log_format = flags.logging_format;
    }
    if given("v") {
        c.verbosity = flags.verbosity.min(u32::from(u8::MAX)) as u8;
    }
    if given("vmodule") {
        let mut v: Vec<_> = flags.vmodule.iter().flat_map(|m| m.0.clone()).collect();
        v.append(&mut c.logging.vmodule);
        c.logging.vmodule = v;
    }
    let l = &mut c.logging;
    if given("log-flush-frequency") {
        l.flush_frequency = flags.log_flush_frequency;
    }
    if given("log-json-info-buffer-size") {
        l.json_info_buffer_size = flags.log_json_info_buffer_size.0.clone();
    }
    if given("log-json-split-stream") {
        l.json_split_stream = flags.log_json_split_stream;
    }
    if given("log-text-info-buffer-size") {
        l.text_info_buffer_size = flags.log_text_info_buffer_size.0.clone();
    }
    if given("log-text-split-stream") {
        l.text_split_stream = flags.log_text_split_stream;
    }
}

/// The flags bound into the configuration (no --config).
fn apply_configuration(f: &Flags, c: &mut Config) -> anyhow::Result<()> {
    let given = |n: &str| f.given(n);
    if given("proxy-mode") {
        c.mode = parse_mode(&f.proxy_mode).map_err(|e| flag_err("proxy-mode", e))?;
    }
    if given("kubeconfig") {
        c.kubeconfig = (!f.kubeconfig.is_empty()).then(|| PathBuf::from(&f.kubeconfig));
    }
    if let (true, Some(ip)) = (given("bind-address"), f.bind_address.0) {
        c.bind_address = ip;
    }
    if given("bind-address-hard-fail") {
        c.bind_address_hard_fail = f.bind_address_hard_fail;
    }
    if given("cluster-cidr") {
        // Split as upstream splits it: an empty value is one empty CIDR.
        c.cluster_cidrs = f
            .cluster_cidr
            .split(',')
            .map(super::values::parse_cidr_sloppy)
            .collect::<Result<_, _>>()
            .map_err(|e| flag_err("cluster-cidr", e))?;
    }
    if given("config-sync-period") {
        c.config_sync_period = f.config_sync_period;
    }
    apply_conntrack(f, c);
    if given("detect-local-mode") {
        c.detect_local_mode =
            LocalMode::parse(&f.detect_local_mode).map_err(|e| flag_err("detect-local-mode", e))?;
    }
    if given("pod-bridge-interface") {
        c.pod_bridge_interface = f.pod_bridge_interface.clone();
    }
    if given("pod-interface-name-prefix") {
        c.pod_interface_name_prefix = f.pod_interface_name_prefix.clone();
    }
    if given("feature-gates") {
        let mut gates = BTreeMap::new();
        for g in &f.feature_gates {
            gates.extend(g.0.clone());
        }
        c.unused.feature_gates = gates;
    }
    if given("iptables-localhost-nodeports") {
        c.iptables_localhost_nodeports = f.iptables_localhost_nodeports;
    }
    if given("iptables-masquerade-bit") {
        c.masquerade_bit = u8::try_from(f.iptables_masquerade_bit)
            .ok()
            .filter(|b| *b <= 31)
            .ok_or_else(|| {
                flag_err(
                    "iptables-masquerade-bit",
                    "must be within the range [0, 31]",
                )
            })?;
    }
    if given("masquerade-all") {
        c.masquerade_all = f.masquerade_all;
    }
    apply_periods(f, c);
    apply_ipvs(f, c)?;
    if given("kube-api-burst") {
        c.kube_api.burst = f.kube_api_burst;
    }
    if given("kube-api-content-type") {
        c.kube_api.content_type = f.kube_api_content_type.clone();
    }
    if given("kube-api-qps") {
        c.kube_api.qps = f.kube_api_qps;
    }
    if given("nodeport-addresses") {
        let items: Vec<&str> = f
            .nodeport_addresses
            .iter()
            .flat_map(|s| split_list(s))
            .collect();
        (c.nodeport_addresses, c.nodeport_primary) =
            nodeport_addresses(&items).map_err(|(_, e)| flag_err("nodeport-addresses", e))?;
    }
    if given("oom-score-adj") {
        c.oom_score_adj = f.oom_score_adj;
    }
    if given("profiling") {
        c.unused.enable_profiling = f.profiling;
    }
    if given("show-hidden-metrics-for-version") {
        c.unused.show_hidden_metrics_for_version = f.show_hidden_metrics_for_version.clone();
    }
    Ok(())
}

fn apply_conntrack(f: &Flags, c: &mut Config) {
    let given = |n: &str| f.given(n);
    let ct = &mut c.conntrack;
    if given("conntrack-max-per-core") {
        ct.max_per_core = f.conntrack_max_per_core;
    }
    if given("conntrack-min") {
        ct.min = f.conntrack_min;
    }
    if given("conntrack-tcp-be-liberal") {
        ct.tcp_be_liberal = f.conntrack_tcp_be_liberal;
    }
    if given("conntrack-tcp-timeout-close-wait") {
        ct.tcp_close_wait_timeout = f.conntrack_tcp_timeout_close_wait;
    }
    if given("conntrack-tcp-timeout-established") {
        ct.tcp_established_timeout = f.conntrack_tcp_timeout_established;
    }
    if given("conntrack-udp-timeout") {
        ct.udp_timeout = f.conntrack_udp_timeout;
    }
    if given("conntrack-udp-timeout-stream") {
        ct.udp_stream_timeout = f.conntrack_udp_timeout_stream;
    }
}

/// Upstream has one sync period, set from the flag of the mode in use
/// (processV1Alpha1Flags); kproxy keeps one per mode and uses the one of
/// the mode it runs, which comes to the same.
fn apply_periods(f: &Flags, c: &mut Config) {
    let given = |n: &str| f.given(n);
    if given("iptables-sync-period") {
        c.iptables_sync_period = f.iptables_sync_period;
    }
    if given("iptables-min-sync-period") {
        c.iptables_min_sync_period = f.iptables_min_sync_period;
    }
    if given("ipvs-sync-period") {
        c.ipvs_sync_period = f.ipvs_sync_period;
    }
    if given("ipvs-min-sync-period") {
        c.ipvs_min_sync_period = f.ipvs_min_sync_period;
    }
}

fn apply_ipvs(f: &Flags, c: &mut Config) -> anyhow::Result<()> {
    let given = |n: &str| f.given(n);
    if given("ipvs-scheduler") {
        c.ipvs_scheduler = match f.ipvs_scheduler.trim() {
            "" => "rr".into(),
            s => s.to_string(),
        };
    }
    if given("ipvs-strict-arp") {
        c.ipvs_strict_arp = f.ipvs_strict_arp;
    }
    if given("ipvs-tcp-timeout") {
        c.ipvs_tcp_timeout = f.ipvs_tcp_timeout;
    }
    if given("ipvs-tcpfin-timeout") {
        c.ipvs_tcpfin_timeout = f.ipvs_tcpfin_timeout;
    }
    if given("ipvs-udp-timeout") {
        c.ipvs_udp_timeout = f.ipvs_udp_timeout;
    }
    if given("ipvs-exclude-cidrs") {
        c.ipvs_exclude_cidrs = f
            .ipvs_exclude_cidrs
            .iter()
            .flat_map(|s| split_list(s))
            .map(super::values::parse_cidr_sloppy)
            .collect::<Result<_, _>>()
            .map_err(|e| flag_err("ipvs-exclude-cidrs", e))?;
    }
    Ok(())
}

/// `--healthz-bind-address` / `--metrics-bind-address`, completed by the
/// deprecated port flags as upstream's addressFromDeprecatedFlags does. An
/// empty address disables the server (the documented meaning; upstream's
/// pflag type actually ignores an empty value).
fn apply_bind_addresses(f: &Flags, c: &mut Config) -> anyhow::Result<()> {
    let ports_apply = f.write_config_to.is_none();
    let servers = [
        (
            "healthz",
            f.given("healthz-bind-address")
                .then_some(f.healthz_bind_address),
            f.healthz_port,
            HEALTHZ_PORT,
        ),
        (
            "metrics",
            f.given("metrics-bind-address")
                .then_some(f.metrics_bind_address),
            f.metrics_port,
            METRICS_PORT,
        ),
    ];
    for (server, flag_value, port_flag, default_port) in servers {
        let slot = if server == "healthz" {
            &mut c.healthz_bind_address
        } else {
            &mut c.metrics_bind_address
        };
        let value = flag_value.unwrap_or(match *slot {
            Some(a) => BindValue::Addr(a),
            None => BindValue::Empty,
        });
        let port = if ports_apply {
            port_flag
        } else {
            i32::from(default_port)
        };
        *slot = with_port(value, port).with_context(|| format!("--{server}-port"))?;
    }
    Ok(())
}

fn with_port(value: BindValue, port: i32) -> anyhow::Result<Option<SocketAddr>> {
    if port == 0 {
        return Ok(None);
    }
    match value {
        BindValue::Empty => Ok(None),
        BindValue::Addr(a) => Ok(Some(a)),
        BindValue::Ip(ip) => {
            let p = u16::try_from(port).map_err(|_| anyhow!("{port} is not a valid port"))?;
            Ok(Some(SocketAddr::new(ip, p)))
        }
    }
}

/// `nodePortAddresses` / `--nodeport-addresses`: CIDRs, or `primary`
/// alone. Returns the addresses and whether `primary` was asked for; an
/// error carries the index of the bad item.
pub(super) fn nodeport_addresses(
    items: &[&str],
) -> Result<(NodePortAddresses, bool), (usize, String)> {
    if items.first() == Some(&"primary") && items.len() == 1 {
        return Ok((NodePortAddresses::Cidrs(Vec::new()), true));
    }
    let mut cidrs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if *item == "primary" {
            return Err((i, "can't use both 'primary' and CIDRs".into()));
        }
        cidrs.push(super::values::parse_cidr_sloppy(item).map_err(|e| (i, e))?);
    }
    Ok(if cidrs.is_empty() {
        (NodePortAddresses::All, false)
    } else {
        (NodePortAddresses::Cidrs(cidrs), false)
    })
}
