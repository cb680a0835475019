use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use super::*;
use crate::config::{LocalMode, LogFormat, NodePortAddresses, ProxyMode, parse_cidrs};

fn flags(args: &[&str]) -> Flags {
    let mut v = vec!["kproxy"];
    v.extend_from_slice(args);
    Flags::try_parse_from(v).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn parse(args: &[&str]) -> Config {
    flags(args).apply_to(Config::default()).unwrap()
}

fn refused(args: &[&str]) -> String {
    let mut v = vec!["kproxy"];
    v.extend_from_slice(args);
    match Flags::try_parse_from(v) {
        Err(e) => e.to_string(),
        Ok(f) => format!("{:#}", f.apply_to(Config::default()).unwrap_err()),
    }
}

fn sa(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
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
    let want = Config {
        hostname: "n".into(),
        hostname_override: "n".into(),
        ..Config::default()
    };
    assert_eq!(c, want);
    assert_eq!(c.mode, None);
    assert_eq!(c.ipvs_scheduler, "rr");
    assert_eq!(c.ipvs_sync_period, Duration::from_secs(30));
    assert_eq!(
        c.ipvs_min_sync_period,
        Duration::from_secs(1),
        "kube-proxy --help: default 1s"
    );
    assert_eq!(c.healthz_bind_address, sa("0.0.0.0:10256"));
    assert_eq!(c.metrics_bind_address, sa("127.0.0.1:10249"));
    assert_eq!(c.oom_score_adj, -999);
    assert_eq!(c.conntrack.max_per_core, 32768);
    assert_eq!(c.nodeport_range, (30000, 32767));
    assert_eq!(c.detect_local_mode, LocalMode::ClusterCidr);
    assert!(c.iptables_localhost_nodeports);
    assert!(flags(&[]).notes().is_empty());
}

#[test]
fn booleans_follow_pflag() {
    assert!(parse(&["--masquerade-all"]).masquerade_all);
    assert!(parse(&["--masquerade-all=true"]).masquerade_all);
    assert!(parse(&["--masquerade-all=T"]).masquerade_all);
    assert!(!parse(&["--masquerade-all=false"]).masquerade_all);
    assert!(!parse(&["--masquerade-all=0"]).masquerade_all);
    assert!(!parse(&["--iptables-localhost-nodeports=false"]).iptables_localhost_nodeports);
    // pflag never takes the next argument as a boolean's value.
    let e = refused(&["--masquerade-all", "false"]);
    assert!(e.contains("unexpected argument 'false'"), "{e}");
    let e = refused(&["--masquerade-all=maybe"]);
    assert!(e.contains("--masquerade-all") && e.contains("maybe"), "{e}");
}

#[test]
fn values_follow_pflag() {
    for args in [
        &["-v", "4"][..],
        &["-v=4"],
        &["-v4"],
        &["--v=4"],
        &["--v", "4"],
    ] {
        assert_eq!(parse(args).verbosity, 4, "{args:?}");
    }
    assert_eq!(parse(&["--oom-score-adj", "-500"]).oom_score_adj, -500);
    assert_eq!(parse(&["--oom-score-adj=-1000"]).oom_score_adj, -1000);
    assert_eq!(parse(&["--conntrack-min=0x100"]).conntrack.min, 256);
    // Underscores in names are dashes, as component-base normalises them.
    assert_eq!(
        parse(&["--hostname_override=n2", "--ipvs_scheduler", "sh"]).hostname,
        "n2"
    );
    // The last of a repeated flag wins; list flags add up.
    assert_eq!(
        parse(&["--ipvs-scheduler=lc", "--ipvs-scheduler=sh"]).ipvs_scheduler,
        "sh"
    );
    let c = parse(&[
        "--ipvs-exclude-cidrs=10.0.0.0/8",
        "--ipvs-exclude-cidrs=11.0.0.0/8,12.0.0.0/8",
        "--feature-gates=A=true",
        "--feature-gates=B=false,A=false",
        "--vmodule=a=1",
        "--vmodule=b=2",
    ]);
    assert_eq!(
        c.ipvs_exclude_cidrs,
        parse_cidrs("10.0.0.0/8,11.0.0.0/8,12.0.0.0/8").unwrap()
    );
    assert_eq!(c.unused.feature_gates.len(), 2);
    assert!(!c.unused.feature_gates["A"]);
    assert_eq!(c.logging.vmodule, vec![("a".into(), 1), ("b".into(), 2)]);
    assert!(refused(&["surplus"]).contains("unexpected argument"));
    assert_eq!(parse(&["--log-format=json"]).log_format, LogFormat::Json);
    assert_eq!(
        parse(&["--logging-format", "json"]).log_format,
        LogFormat::Json
    );
}

#[test]
fn bad_values_are_refused_with_the_flag_named() {
    let cases: &[(&[&str], &str)] = &[
        (&["--ipvs-sync-period", "soon"], "--ipvs-sync-period"),
        (&["--ipvs-sync-period=7"], "missing unit"),
        (
            &["--proxy-mode", "userspace"],
            "--proxy-mode: \"userspace\" is not a proxy mode",
        ),
        (&["--proxy-mode=nftables"], "not supported by kproxy"),
        (&["--nodeport-range", "40000-30000"], "40000-30000"),
        (
            &["--ipvs-sync-period", "0s"],
            "--ipvs-sync-period (ipvs.syncPeriod): must be greater than 0",
        ),
        (
            &["--iptables-masquerade-bit=32"],
            "--iptables-masquerade-bit: must be within the range [0, 31]",
        ),
        (&["--oom-score-adj=-1001"], "--oom-score-adj (oomScoreAdj)"),
        (
            &["--conntrack-max-per-core=lots"],
            "--conntrack-max-per-core",
        ),
        (&["--bind-address=node-1"], "--bind-address"),
        (&["--healthz-bind-address=:10256"], "--healthz-bind-address"),
        (
            &["--metrics-bind-address=localhost:10249"],
            "--metrics-bind-address",
        ),
        (
            &["--cluster-cidr=10.0.0.0/8,banana"],
            "--cluster-cidr: \"banana\"",
        ),
        (
            &["--cluster-cidr="],
            "--cluster-cidr: \"\" is not a valid CIDR",
        ),
        (
            &["--cluster-cidr=10.0.0.0/8,11.0.0.0/8"],
            "--cluster-cidr (clusterCIDR)",
        ),
        (
            &["--nodeport-addresses=primary,10.0.0.0/8"],
            "--nodeport-addresses: can't use both 'primary' and CIDRs",
        ),
        (
            &["--detect-local-mode=Pods"],
            "--detect-local-mode: unsupported value \"Pods\"",
        ),
        (
            &["--detect-local-mode=BridgeInterface"],
            "--pod-bridge-interface (detectLocal.bridgeInterface)",
        ),
        (
            &["--hostname-override= "],
            "--hostname-override: empty hostname-override is invalid",
        ),
        (&["--feature-gates=A"], "--feature-gates"),
        (&["--vmodule=x"], "--vmodule"),
        (
            &["--log-text-split-stream"],
            "feature LoggingAlphaOptions is disabled",
        ),
        (&["--logging-format=xml"], "--logging-format"),
        (
            &["--show-hidden-metrics-for-version=1.20"],
            "--show-hidden-metrics-for-version",
        ),
        (
            &["--healthz-bind-address=1.2.3.4", "--healthz-port=70000"],
            "--healthz-port: 70000 is not a valid port",
        ),
    ];
    for (args, want) in cases {
        let e = refused(args);
        assert!(e.contains(want), "{args:?}: got {e:?}, want {want:?}");
    }
}

#[test]
fn deprecated_ports_complete_bare_ips_without_config() {
    let c = parse(&["--healthz-bind-address=10.0.0.1", "--healthz-port=9999"]);
    assert_eq!(c.healthz_bind_address, sa("10.0.0.1:9999"));
    // An address with a port keeps it (upstream's AppendPortIfNeeded).
    let c = parse(&["--healthz-port=9999", "--metrics-port=9998"]);
    assert_eq!(c.healthz_bind_address, sa("0.0.0.0:10256"));
    assert_eq!(c.metrics_bind_address, sa("127.0.0.1:10249"));
    let c = parse(&["--healthz-port=0", "--metrics-port=0"]);
    assert_eq!(
        (c.healthz_bind_address, c.metrics_bind_address),
        (None, None)
    );
    let c = parse(&["--metrics-bind-address=::", "--healthz-bind-address="]);
    assert_eq!(
        (c.healthz_bind_address, c.metrics_bind_address),
        (None, sa("[::]:10249"))
    );
    let f = flags(&["--healthz-port=0", "--write-config-to=/x"]);
    assert_eq!(
        f.apply_to(Config::default()).unwrap().healthz_bind_address,
        sa("0.0.0.0:10256")
    );
    assert_eq!(
        f.notes()[0].message,
        "flag --healthz-port is ignored with --write-config-to, as kube-proxy does"
    );
}

#[test]
fn every_remaining_flag_maps() {
    let c = parse(&[
        "--bind-address=10.0.0.5",
        "--bind-address-hard-fail",
        "--config-sync-period=1m",
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-be-liberal",
        "--conntrack-tcp-timeout-close-wait=10s",
        "--conntrack-tcp-timeout-established=1h",
        "--conntrack-udp-timeout=5s",
        "--conntrack-udp-timeout-stream=6s",
        "--detect-local-mode=InterfaceNamePrefix",
        "--pod-interface-name-prefix=veth",
        "--pod-bridge-interface=cbr0",
        "--init-only",
        "--kube-api-burst=20",
        "--kube-api-qps=7.5",
        "--kube-api-content-type=application/json",
        "--kubeconfig=/k",
        "--master=https://api:6443",
        "--nodeport-addresses=primary",
        "--profiling",
        "--show-hidden-metrics-for-version=1.35",
        "--ipvs-strict-arp=true",
        "--ipvs-tcp-timeout=1s",
        "--ipvs-tcpfin-timeout=2s",
        "--ipvs-udp-timeout=3s",
        "--iptables-sync-period=40s",
        "--iptables-min-sync-period=0s",
        "--log-flush-frequency=2s",
        "--cleanup",
        "--once",
        "--dry-run",
        "--manifests=/m",
    ]);
    assert_eq!(c.bind_address.to_string(), "10.0.0.5");
    assert!(c.bind_address_hard_fail && c.init_only && c.cleanup && c.once && c.dry_run);
    assert_eq!(c.config_sync_period, Duration::from_secs(60));
    let ct = &c.conntrack;
    assert_eq!((ct.max_per_core, ct.tcp_be_liberal), (0, true));
    assert_eq!(ct.tcp_close_wait_timeout, Duration::from_secs(10));
    assert_eq!(ct.tcp_established_timeout, Duration::from_secs(3600));
    assert_eq!(
        (ct.udp_timeout, ct.udp_stream_timeout),
        (Duration::from_secs(5), Duration::from_secs(6))
    );
    assert_eq!(
        c.local_detector(),
        crate::config::LocalDetector::InterfaceNamePrefix("veth".into())
    );
    assert_eq!(c.pod_bridge_interface, "cbr0");
    assert_eq!((c.kube_api.burst, c.kube_api.qps), (20, 7.5));
    assert_eq!(c.kube_api.content_type, "application/json");
    assert_eq!(c.kubeconfig.as_deref(), Some(std::path::Path::new("/k")));
    assert_eq!(c.master.as_deref(), Some("https://api:6443"));
    assert!(c.nodeport_primary);
    assert!(c.unused.enable_profiling);
    assert_eq!(c.unused.show_hidden_metrics_for_version, "1.35");
    assert!(c.ipvs_strict_arp);
    assert_eq!(
        (
            c.ipvs_tcp_timeout,
            c.ipvs_tcpfin_timeout,
            c.ipvs_udp_timeout
        ),
        (
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(3)
        )
    );
    assert_eq!(
        (c.iptables_sync_period, c.iptables_min_sync_period),
        (Duration::from_secs(40), Duration::ZERO)
    );
    assert_eq!(c.logging.flush_frequency, Duration::from_secs(2));
    assert_eq!(c.manifests.as_deref(), Some(std::path::Path::new("/m")));
}

#[test]
fn explicitly_given_is_what_counts_not_the_value() {
    let f = flags(&["--proxy-mode=", "--ipvs-scheduler="]);
    assert!(f.given("proxy-mode") && f.given("ipvs-scheduler"));
    assert!(!f.given("masquerade-all"));
    assert_eq!(
        f.given_flags().collect::<Vec<_>>(),
        ["ipvs-scheduler", "proxy-mode"]
    );
}

fn config_file(body: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        f.path(),
        format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n{body}"
        ),
    )
    .unwrap();
    f
}

/// With --config, upstream replaces the flags' configuration by the
/// file's: only logging flags, --hostname-override and the flags kept
/// outside the configuration (and kproxy's own) still apply.
#[test]
fn with_a_config_file_most_flags_are_ignored_and_named() {
    let file = config_file(
        "mode: iptables\nhostnameOverride: from-file\nlogging: {format: json, verbosity: 1, vmodule: [{filePattern: file, verbosity: 1}]}\nipvs:\n  scheduler: wlc\n  syncPeriod: 1m\n  strictARP: true\niptables:\n  masqueradeAll: true\n",
    );
    let path = file.path().to_str().unwrap();
    let f = flags(&[
        "--config",
        path,
        "--proxy-mode=ipvs",
        "--ipvs-sync-period=10s",
        "--masquerade-all=false",
        "--healthz-port=0",
        "--hostname-override=From-Flag",
        "-v=5",
        "--vmodule=flag=2",
        "--logging-format=text",
        "--master=https://api:6443",
        "--once",
        "--nodeport-range=30000-31000",
        "--cleanup",
        "--init-only",
        "--write-config-to=/tmp/out",
    ]);
    let r = resolve(&f).unwrap();
    let c = &r.config;
    assert_eq!(c.mode, Some(ProxyMode::Iptables), "--proxy-mode ignored");
    assert_eq!(
        c.ipvs_sync_period,
        Duration::from_secs(60),
        "--ipvs-sync-period ignored"
    );
    assert!(c.masquerade_all, "--masquerade-all ignored");
    assert_eq!(
        c.healthz_bind_address,
        sa("0.0.0.0:10256"),
        "--healthz-port ignored"
    );
    assert_eq!(c.ipvs_scheduler, "wlc");
    assert!(c.ipvs_strict_arp);
    assert_eq!(
        c.hostname, "from-flag",
        "--hostname-override wins over the file"
    );
    assert_eq!(
        (c.verbosity, c.log_format),
        (5, LogFormat::Text),
        "logging flags win"
    );
    assert_eq!(
        c.logging.vmodule,
        vec![("flag".into(), 2), ("file".into(), 1)]
    );
    assert_eq!(c.master.as_deref(), Some("https://api:6443"));
    assert!(c.once && c.cleanup && c.init_only);
    assert_eq!(c.nodeport_range, (30000, 31000));
    assert_eq!(
        c.write_config_to.as_deref(),
        Some(std::path::Path::new("/tmp/out"))
    );
    let warned: Vec<&str> = r
        .notes
        .iter()
        .filter(|n| n.level == NoteLevel::Warn)
        .map(|n| n.message.as_str())
        .collect();
    assert_eq!(
        warned,
        [
            "flag --healthz-port is ignored because --config is given, as kube-proxy does",
            "flag --ipvs-sync-period is ignored because --config is given, as kube-proxy does",
            "flag --masquerade-all is ignored because --config is given, as kube-proxy does",
            "flag --proxy-mode is ignored because --config is given, as kube-proxy does",
        ]
    );
}

#[test]
fn ignored_flags_are_not_validated_with_a_config_file() {
    let file = config_file("mode: ipvs\n");
    let path = file.path().to_str().unwrap();
    // Upstream's ProxyMode and LocalMode flags take any string; only the
    // configuration in use is validated.
    let c = resolve(&flags(&[
        "--config",
        path,
        "--proxy-mode=userspace",
        "--detect-local-mode=Pods",
    ]))
    .unwrap()
    .config;
    assert_eq!(c.mode, Some(ProxyMode::Ipvs));
    // A value pflag's type refuses is refused even so.
    assert!(Flags::try_parse_from(["kproxy", "--config", path, "--conntrack-min=x"]).is_err());
    // The file's own values are validated.
    let bad = config_file("ipvs: {syncPeriod: 10s, minSyncPeriod: 1m}\n");
    let e = format!(
        "{:#}",
        resolve(&flags(&["--config", bad.path().to_str().unwrap()])).unwrap_err()
    );
    assert!(e.contains("ipvs.syncPeriod"), "{e}");
}

#[test]
fn flags_without_effect_are_noted_once() {
    let f = flags(&[
        "--profiling",
        "--boot-id-file=/x",
        "--version=v9.9.9",
        "--feature-gates=A=true",
    ]);
    let notes: Vec<String> = f.notes().into_iter().map(|n| n.message).collect();
    assert_eq!(notes.len(), 4, "{notes:?}");
    assert!(
        notes.iter().all(|n| n.contains("has no effect in kproxy")),
        "{notes:?}"
    );
    assert!(notes[0].starts_with("flag --boot-id-file"), "{notes:?}");
}

#[test]
fn version_flag() {
    assert_eq!(
        flags(&["--version"]).version_text(),
        Some(format!("kproxy {}\n", env!("CARGO_PKG_VERSION")))
    );
    assert!(
        flags(&["--version=raw"])
            .version_text()
            .unwrap()
            .contains("kube-proxy")
    );
    assert_eq!(flags(&["--version=false"]).version_text(), None);
    assert_eq!(flags(&["--version=v1.2.3"]).version_text(), None);
    assert_eq!(flags(&[]).version_text(), None);
}

#[test]
fn normalisation_leaves_values_and_positionals_alone() {
    let v = normalize_args(["kproxy_bin", "--a_b=c_d", "-v", "x_y", "--", "--e_f"]);
    let v: Vec<&str> = v.iter().map(|s| s.to_str().unwrap()).collect();
    assert_eq!(v, ["kproxy_bin", "--a-b=c_d", "-v", "x_y", "--", "--e_f"]);
}
