//! Upstream's validation of the resolved configuration
//! (pkg/proxy/apis/config/validation and component-base's logging
//! validation), on kproxy's `Config`. Each error names the flag and the
//! config file field it can come from; all errors are reported at once.

use std::net::SocketAddr;

use super::values::{gate_enabled, parse_quantity};
use super::{Config, LocalMode, LogFormat};

/// The minor version kube-proxy v1.36 lets --show-hidden-metrics-for-version name.
pub const SHOW_HIDDEN_METRICS_VERSION: &str = "1.35";

struct Errors(Vec<String>);

impl Errors {
    fn add(&mut self, flag: &str, field: &str, message: impl std::fmt::Display) {
        self.0.push(format!("--{flag} ({field}): {message}"));
    }
}

/// Check `c` as kube-proxy's Validate checks its configuration.
pub fn validate(c: &Config) -> anyhow::Result<()> {
    let mut e = Errors(Vec::new());
    periods(c, &mut e);
    if c.config_sync_period.is_zero() {
        e.add(
            "config-sync-period",
            "configSyncPeriod",
            "must be greater than 0",
        );
    }
    conntrack(c, &mut e);
    if !(-1000..=1000).contains(&c.oom_score_adj) {
        e.add(
            "oom-score-adj",
            "oomScoreAdj",
            format!("{} must be within the range [-1000, 1000]", c.oom_score_adj),
        );
    }
    if c.kube_api.burst < 0 {
        e.add(
            "kube-api-burst",
            "clientConnection.burst",
            "must be greater than or equal to 0",
        );
    }
    if c.masquerade_bit > 31 {
        e.add(
            "iptables-masquerade-bit",
            "iptables.masqueradeBit",
            "must be within the range [0, 31]",
        );
    }
    for (flag, field, addr) in [
        (
            "healthz-bind-address",
            "healthzBindAddress",
            c.healthz_bind_address,
        ),
        (
            "metrics-bind-address",
            "metricsBindAddress",
            c.metrics_bind_address,
        ),
    ] {
        if let Some(a) = addr {
            port(flag, field, a, &mut e);
        }
    }
    let v = &c.unused.show_hidden_metrics_for_version;
    if !v.is_empty() && v != SHOW_HIDDEN_METRICS_VERSION {
        e.add(
            "show-hidden-metrics-for-version",
            "showHiddenMetricsForVersion",
            format!("{v:?} must be omitted or have the value '{SHOW_HIDDEN_METRICS_VERSION}'; only the previous minor version is allowed"),
        );
    }
    detect_local(c, &mut e);
    logging(c, &mut e);
    if e.0.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("invalid configuration: {}", e.0.join("; ")))
    }
}

fn periods(c: &Config, e: &mut Errors) {
    let modes = [
        ("ipvs", c.ipvs_sync_period, c.ipvs_min_sync_period),
        (
            "iptables",
            c.iptables_sync_period,
            c.iptables_min_sync_period,
        ),
    ];
    for (mode, sync, min) in modes {
        let flag = format!("{mode}-sync-period");
        let field = format!("{mode}.syncPeriod");
        if sync.is_zero() {
            e.add(&flag, &field, "must be greater than 0");
        } else if min > sync {
            e.add(
                &flag,
                &field,
                format!("must be greater than or equal to --{mode}-min-sync-period ({mode}.minSyncPeriod)"),
            );
        }
    }
}

fn conntrack(c: &Config, e: &mut Errors) {
    if c.conntrack.max_per_core < 0 {
        e.add(
            "conntrack-max-per-core",
            "conntrack.maxPerCore",
            "must be greater than or equal to 0",
        );
    }
    if c.conntrack.min < 0 {
        e.add(
            "conntrack-min",
            "conntrack.min",
            "must be greater than or equal to 0",
        );
    }
}

fn port(flag: &str, field: &str, a: SocketAddr, e: &mut Errors) {
    if a.port() == 0 {
        e.add(flag, field, format!("{a}: port must be 1-65535"));
    }
}

fn detect_local(c: &Config, e: &mut Errors) {
    match c.detect_local_mode {
        LocalMode::BridgeInterface if c.pod_bridge_interface.is_empty() => e.add(
            "pod-bridge-interface",
            "detectLocal.bridgeInterface",
            "must not be empty with detect-local-mode BridgeInterface",
        ),
        LocalMode::InterfaceNamePrefix if c.pod_interface_name_prefix.is_empty() => e.add(
            "pod-interface-name-prefix",
            "detectLocal.interfaceNamePrefix",
            "must not be empty with detect-local-mode InterfaceNamePrefix",
        ),
        LocalMode::ClusterCidr => {
            let cidrs = &c.cluster_cidrs;
            let dual = cidrs.len() == 2 && cidrs[0].addr().is_ipv4() != cidrs[1].addr().is_ipv4();
            if cidrs.len() > 2 || (cidrs.len() == 2 && !dual) {
                e.add(
                    "cluster-cidr",
                    "clusterCIDR",
                    "must be a either a single CIDR or dual-stack pair of CIDRs (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)",
                );
            }
        }
        _ => {}
    }
}

/// component-base's logging validation, with kube-proxy's feature gates.
fn logging(c: &Config, e: &mut Errors) {
    let gates = &c.unused.feature_gates;
    let l = &c.logging;
    if l.flush_frequency.is_zero() {
        e.add(
            "log-flush-frequency",
            "logging.flushFrequency",
            "must be greater than zero",
        );
    }
    if c.log_format == LogFormat::Json && !gate_enabled(gates, "LoggingBetaOptions", true, false) {
        e.add(
            "logging-format",
            "logging.format",
            "log format json is disabled, see the LoggingBetaOptions feature",
        );
    }
    if !l.vmodule.is_empty() && c.log_format != LogFormat::Text {
        e.add(
            "vmodule",
            "logging.vmodule",
            "only supported for the text log format",
        );
    }
    for (pattern, _) in &l.vmodule {
        if pattern.is_empty() || pattern.contains(['=', ',']) {
            e.add(
                "vmodule",
                "logging.vmodule",
                format!("file pattern {pattern:?} must not be empty nor contain '=' or ','"),
            );
        }
    }
    let alpha = gate_enabled(gates, "LoggingAlphaOptions", false, true);
    let routing = [
        ("text", l.text_split_stream, &l.text_info_buffer_size),
        ("json", l.json_split_stream, &l.json_info_buffer_size),
    ];
    for (name, split, buffer) in routing {
        if split && !alpha {
            e.add(
                &format!("log-{name}-split-stream"),
                &format!("logging.options.{name}.splitStream"),
                "feature LoggingAlphaOptions is disabled",
            );
        }
        if parse_quantity(buffer) == Ok(false) && !alpha {
            e.add(
                &format!("log-{name}-info-buffer-size"),
                &format!("logging.options.{name}.infoBufferSize"),
                "feature LoggingAlphaOptions is disabled",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn error(f: impl FnOnce(&mut Config)) -> String {
        let mut c = Config::default();
        f(&mut c);
        validate(&c).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid() {
        validate(&Config::default()).unwrap();
        validate(&Config::file_defaults()).unwrap();
    }

    #[test]
    fn each_error_names_flag_and_field() {
        type Change = Box<dyn FnOnce(&mut Config)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|c| c.ipvs_sync_period = Duration::ZERO),
                "--ipvs-sync-period (ipvs.syncPeriod): must be greater than 0",
            ),
            (
                Box::new(|c| c.iptables_min_sync_period = Duration::from_secs(60)),
                "--iptables-sync-period (iptables.syncPeriod): must be greater than or equal to --iptables-min-sync-period",
            ),
            (
                Box::new(|c| c.config_sync_period = Duration::ZERO),
                "--config-sync-period (configSyncPeriod)",
            ),
            (
                Box::new(|c| c.conntrack.min = -1),
                "--conntrack-min (conntrack.min)",
            ),
            (
                Box::new(|c| c.conntrack.max_per_core = -1),
                "--conntrack-max-per-core (conntrack.maxPerCore)",
            ),
            (
                Box::new(|c| c.oom_score_adj = 1001),
                "--oom-score-adj (oomScoreAdj): 1001 must be within the range [-1000, 1000]",
            ),
            (
                Box::new(|c| c.kube_api.burst = -1),
                "--kube-api-burst (clientConnection.burst)",
            ),
            (
                Box::new(|c| c.healthz_bind_address = Some("0.0.0.0:0".parse().unwrap())),
                "--healthz-bind-address (healthzBindAddress)",
            ),
            (
                Box::new(|c| c.unused.show_hidden_metrics_for_version = "1.20".into()),
                "only the previous minor version is allowed",
            ),
            (
                Box::new(|c| c.detect_local_mode = LocalMode::BridgeInterface),
                "--pod-bridge-interface (detectLocal.bridgeInterface): must not be empty",
            ),
            (
                Box::new(|c| c.detect_local_mode = LocalMode::InterfaceNamePrefix),
                "--pod-interface-name-prefix",
            ),
            (
                Box::new(|c| {
                    c.cluster_cidrs = crate::config::parse_cidrs("10.0.0.0/8,11.0.0.0/8").unwrap()
                }),
                "--cluster-cidr (clusterCIDR): must be a either a single CIDR or dual-stack pair",
            ),
            (
                Box::new(|c| c.logging.flush_frequency = Duration::ZERO),
                "--log-flush-frequency (logging.flushFrequency)",
            ),
            (
                Box::new(|c| c.logging.text_split_stream = true),
                "--log-text-split-stream (logging.options.text.splitStream): feature LoggingAlphaOptions is disabled",
            ),
            (
                Box::new(|c| c.logging.json_info_buffer_size = "1Mi".into()),
                "--log-json-info-buffer-size",
            ),
            (
                Box::new(|c| {
                    c.log_format = LogFormat::Json;
                    c.logging.vmodule = vec![("x".into(), 2)];
                }),
                "--vmodule (logging.vmodule): only supported for the text log format",
            ),
            (
                Box::new(|c| {
                    c.log_format = LogFormat::Json;
                    c.unused
                        .feature_gates
                        .insert("LoggingBetaOptions".into(), false);
                }),
                "--logging-format (logging.format)",
            ),
        ];
        for (f, want) in cases {
            let got = error(f);
            assert!(got.contains(want), "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn dual_stack_pairs_and_gated_options_pass() {
        let mut c = Config {
            cluster_cidrs: crate::config::parse_cidrs("10.0.0.0/8,fd00::/48").unwrap(),
            ..Config::default()
        };
        c.logging.text_split_stream = true;
        c.logging.json_info_buffer_size = "2Ki".into();
        c.unused
            .feature_gates
            .insert("LoggingAlphaOptions".into(), true);
        c.unused.show_hidden_metrics_for_version = "1.35".into();
        c.detect_local_mode = LocalMode::NodeCidr;
        validate(&c).unwrap();
        c.metrics_bind_address = None;
        c.healthz_bind_address = None;
        validate(&c).unwrap();
    }

    #[test]
    fn all_errors_at_once() {
        let e = error(|c| {
            c.conntrack.min = -1;
            c.oom_score_adj = -1001;
        });
        assert!(
            e.contains("conntrack.min") && e.contains("oomScoreAdj"),
            "{e}"
        );
    }
}
