use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use super::write::to_yaml;
use super::*;
use crate::config::{LocalMode, LogFormat, NodePortAddresses, ProxyMode};

const HEADER: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";
/// Written by upstream kube-proxy v1.36.3 (see tests/fixtures/config/README.md).
const UPSTREAM_DEFAULTS: &str =
    include_str!("../../../tests/fixtures/config/upstream-defaults.yaml");
/// kubeadm v1.36.3's config.conf (same README).
const KUBEADM: &str = include_str!("../../../tests/fixtures/config/kubeadm-config.conf");

fn parse_body(body: &str) -> Result<Loaded, FieldError> {
    parse(&format!("{HEADER}{body}"))
}

fn config_of(body: &str) -> Config {
    parse_body(body).unwrap().config
}

fn error_of(body: &str) -> String {
    parse_body(body).unwrap_err().to_string()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn sa(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

/// Every field kproxy maps, each set to a non-default value.
const EVERY_MAPPED_FIELD: &str = r#"
mode: iptables
hostnameOverride: Worker-7
bindAddress: 10.0.0.7
bindAddressHardFail: true
healthzBindAddress: 127.0.0.1:20256
metricsBindAddress: 0.0.0.0:20249
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
detectLocalMode: InterfaceNamePrefix
detectLocal: {bridgeInterface: cbr0, interfaceNamePrefix: veth}
nodePortAddresses: [192.168.0.0/16, 10.0.0.0/8]
oomScoreAdj: -500
configSyncPeriod: 5m
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  acceptContentTypes: application/json
  contentType: application/json
  qps: 7.5
  burst: 20
conntrack:
  maxPerCore: 0
  min: 1000
  tcpEstablishedTimeout: 2h
  tcpCloseWaitTimeout: 0s
  tcpBeLiberal: true
  udpTimeout: 30s
  udpStreamTimeout: 2m
logging:
  format: json
  verbosity: 4
iptables:
  masqueradeAll: true
  masqueradeBit: 12
  localhostNodePorts: false
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
"#;

/// Every field kproxy maps lands in its Config field.
#[test]
fn every_mapped_field_is_mapped() {
    let c = config_of(EVERY_MAPPED_FIELD);
    assert_eq!(c.mode, Some(ProxyMode::Iptables));
    assert_eq!(
        (c.hostname.as_str(), c.hostname_override.as_str()),
        ("worker-7", "worker-7")
    );
    assert_eq!(
        c.bind_address,
        "10.0.0.7".parse::<std::net::IpAddr>().unwrap()
    );
    assert!(c.bind_address_hard_fail);
    assert_eq!(c.healthz_bind_address, sa("127.0.0.1:20256"));
    assert_eq!(c.metrics_bind_address, sa("0.0.0.0:20249"));
    assert_eq!(
        c.cluster_cidrs,
        vec![net("10.244.0.0/16"), net("fd00:10:244::/56")]
    );
    assert_eq!(c.detect_local_mode, LocalMode::InterfaceNamePrefix);
    assert_eq!(
        (
            c.pod_bridge_interface.as_str(),
            c.pod_interface_name_prefix.as_str()
        ),
        ("cbr0", "veth")
    );
    assert_eq!(
        c.nodeport_addresses,
        NodePortAddresses::Cidrs(vec![net("192.168.0.0/16"), net("10.0.0.0/8")])
    );
    assert_eq!(c.oom_score_adj, -500);
    assert_eq!(c.config_sync_period, Duration::from_secs(300));
    assert_eq!(
        c.kubeconfig.as_deref(),
        Some(Path::new("/var/lib/kube-proxy/kubeconfig.conf"))
    );
    assert_eq!(c.kube_api.accept_content_types, "application/json");
    assert_eq!(c.kube_api.content_type, "application/json");
    assert_eq!((c.kube_api.qps, c.kube_api.burst), (7.5, 20));
    let ct = &c.conntrack;
    assert_eq!(
        (ct.max_per_core, ct.min),
        (0, 1000),
        "an explicit 0 stays 0"
    );
    assert_eq!(ct.tcp_established_timeout, Duration::from_secs(7200));
    assert_eq!(ct.tcp_close_wait_timeout, Duration::ZERO);
    assert!(ct.tcp_be_liberal);
    assert_eq!(
        (ct.udp_timeout, ct.udp_stream_timeout),
        (Duration::from_secs(30), Duration::from_secs(120))
    );
    assert_eq!((c.log_format, c.verbosity), (LogFormat::Json, 4));
    assert!(c.masquerade_all);
    assert_eq!(c.masquerade_mark(), 0x1000);
    assert!(!c.iptables_localhost_nodeports);
    assert_eq!(
        (c.iptables_sync_period, c.iptables_min_sync_period),
        (Duration::from_secs(45), Duration::from_secs(2))
    );
    assert_eq!(c.ipvs_scheduler, "wlc");
    assert_eq!(
        (c.ipvs_sync_period, c.ipvs_min_sync_period),
        (Duration::from_secs(60), Duration::from_millis(500))
    );
    assert!(c.ipvs_strict_arp);
    assert_eq!(c.ipvs_tcp_timeout, Duration::from_secs(900));
    assert_eq!(c.ipvs_tcpfin_timeout, Duration::from_secs(120));
    assert_eq!(c.ipvs_udp_timeout, Duration::from_secs(10));
    assert_eq!(
        c.ipvs_exclude_cidrs,
        vec![net("10.99.0.0/16"), net("172.16.0.0/12")]
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

/// Zero values and nulls are defaulted as upstream's v1alpha1 defaulting
/// does: this is how `ipvs.syncPeriod: 0s` in kube-proxy's own written
/// file (for the mode not in use) is accepted.
#[test]
fn zero_values_and_nulls_take_upstream_defaults() {
    let c = config_of(
        "mode: \"\"\nipvs:\n  scheduler: \"\"\n  syncPeriod: 0s\n  minSyncPeriod: 0s\niptables:\n  syncPeriod: 0s\n  minSyncPeriod: 0s\n  masqueradeBit: null\n  localhostNodePorts: null\nnftables: {syncPeriod: 0s, minSyncPeriod: 0s}\nhealthzBindAddress: \"\"\nmetricsBindAddress: \"\"\nnodePortAddresses: []\nconntrack: {maxPerCore: null, min: null, tcpEstablishedTimeout: null}\noomScoreAdj: null\nconfigSyncPeriod: 0s\nclientConnection: {qps: 0, burst: 0, contentType: \"\"}\nlogging: {flushFrequency: 0, format: \"\"}\ndetectLocalMode: \"\"\n",
    );
    let d = Config::file_defaults();
    assert_eq!(c, d);
    assert_eq!(c.mode, None);
    assert_eq!(c.ipvs_sync_period, Duration::from_secs(30));
    assert_eq!(
        c.ipvs_min_sync_period,
        Duration::ZERO,
        "ipvs.minSyncPeriod has no default"
    );
    assert_eq!(c.iptables_min_sync_period, Duration::from_secs(1));
    assert_eq!(c.unused.nftables.sync_period, Duration::from_secs(30));
    assert_eq!(c.healthz_bind_address, sa("0.0.0.0:10256"));
    assert_eq!(c.metrics_bind_address, sa("127.0.0.1:10249"));
    assert_eq!(c.conntrack.max_per_core, 32768);
    assert_eq!(c.oom_score_adj, -999);
    assert_eq!(c.config_sync_period, Duration::from_secs(900));
    assert_eq!(c.logging.flush_frequency, Duration::from_secs(5));
    assert_eq!(c.detect_local_mode, LocalMode::ClusterCidr);
}

#[test]
fn bind_addresses_default_by_family_and_take_default_ports() {
    let c = config_of("healthzBindAddress: 10.1.2.3\nmetricsBindAddress: \"::1\"\n");
    assert_eq!(c.healthz_bind_address, sa("10.1.2.3:10256"));
    assert_eq!(c.metrics_bind_address, sa("[::1]:10249"));
    let c = config_of("bindAddress: \"::\"\n");
    assert_eq!(c.healthz_bind_address, sa("[::]:10256"));
    assert_eq!(c.metrics_bind_address, sa("[::1]:10249"));
    let c = config_of("metricsBindAddress: \"[::]:10249\"\n");
    assert_eq!(c.metrics_bind_address, sa("[::]:10249"));
}

#[test]
fn nodeport_addresses_are_cidrs_or_primary_alone() {
    let c = config_of("nodePortAddresses: [primary]\n");
    assert!(c.nodeport_primary);
    assert_eq!(c.nodeport_addresses, NodePortAddresses::Cidrs(vec![]));
    assert_eq!(
        error_of("nodePortAddresses: [10.0.0.0/8, primary]\n"),
        "nodePortAddresses[1]: can't use both 'primary' and CIDRs"
    );
    assert!(
        error_of("nodePortAddresses: [primary, 10.0.0.0/8]\n").starts_with("nodePortAddresses[0]")
    );
    for keyword in ["all", "localhost", "10.1.2.3"] {
        let e = error_of(&format!("nodePortAddresses: [{keyword}]\n"));
        assert!(
            e.starts_with("nodePortAddresses[0]:") && e.contains("not a valid CIDR"),
            "{e}"
        );
    }
}

#[test]
fn unused_fields_with_non_default_values_are_listed() {
    let loaded = parse_body(
        r#"
bindAddress: 0.0.0.0
featureGates: {SomeGate: true}
enableProfiling: true
showHiddenMetricsForVersion: "1.35"
portRange: 30000-32767
windowsRunAsService: true
winkernel: {enableDSR: true, networkName: ""}
nftables: {masqueradeBit: 15, syncPeriod: 0s}
logging:
  flushFrequency: 1s
  vmodule: [{filePattern: "proxier*", verbosity: 4}]
  options:
    text: {splitStream: true, infoBufferSize: "1Mi"}
    json: {infoBufferSize: "0"}
"#,
    )
    .unwrap();
    assert_eq!(
        loaded.ignored,
        [
            "featureGates",
            "enableProfiling",
            "showHiddenMetricsForVersion",
            "portRange",
            "windowsRunAsService",
            "logging.flushFrequency",
            "logging.vmodule",
            "logging.options.text.splitStream",
            "logging.options.text.infoBufferSize",
            "nftables.masqueradeBit",
            "winkernel.enableDSR",
        ]
    );
    assert!(loaded.unknown.is_empty());
    let c = &loaded.config;
    assert_eq!(c.unused.feature_gates.get("SomeGate"), Some(&true));
    assert_eq!(c.logging.vmodule, vec![("proxier*".to_string(), 4)]);
    assert_eq!(c.logging.text_info_buffer_size, "1Mi");
}

/// Upstream decodes leniently when strict decoding fails: unknown fields
/// are accepted (with a warning), wrong types are not.
#[test]
fn unknown_fields_are_accepted_and_named() {
    let loaded = parse_body("mdoe: ipvs\nipvs:\n  sycnPeriod: 30s\nconntrack: {maxPerCpu: 1}\nlogging: {options: {xml: {}}}\n").unwrap();
    assert_eq!(
        loaded.unknown,
        [
            "conntrack.maxPerCpu",
            "ipvs.sycnPeriod",
            "logging.options.xml",
            "mdoe"
        ]
    );
    let notes = loaded.notes();
    assert!(
        notes[0].message.contains("conntrack.maxPerCpu"),
        "{notes:?}"
    );
    assert_eq!(loaded.config, Config::file_defaults());
}

#[test]
fn invalid_values_are_named() {
    let cases = [
        (
            "ipvs:\n  syncPeriod: soon\n",
            "ipvs.syncPeriod: \"soon\" is not a duration",
        ),
        (
            "ipvs:\n  syncPeriod: 30\n",
            "ipvs.syncPeriod: 30 is not a duration (write it as a string like \"30s\")",
        ),
        (
            "iptables:\n  minSyncPeriod: 5s5\n",
            "iptables.minSyncPeriod: \"5s5\" is not a duration (missing unit",
        ),
        (
            "iptables:\n  masqueradeBit: 32\n",
            "iptables.masqueradeBit: 32 is out of range 0..31",
        ),
        (
            "iptables:\n  masqueradeAll: \"maybe\"\n",
            "iptables.masqueradeAll: expected true or false, found \"maybe\"",
        ),
        (
            "ipvs:\n  excludeCIDRs: [10.0.0.0/8, banana]\n",
            "ipvs.excludeCIDRs[1]: \"banana\" is not a valid CIDR",
        ),
        (
            "mode: nftables\n",
            "mode: \"nftables\" is not supported by kproxy (ipvs or iptables)",
        ),
        (
            "mode: kernelspace\n",
            "mode: \"kernelspace\" is not a proxy mode",
        ),
        (
            "clusterCIDR: 10.0.0.0/33\n",
            "clusterCIDR: \"10.0.0.0/33\" is not a valid CIDR",
        ),
        (
            "metricsBindAddress: localhost:10249\n",
            "metricsBindAddress: \"localhost\" is not a valid IP address",
        ),
        (
            "healthzBindAddress: \":10256\"\n",
            "healthzBindAddress: \"\" is not a valid IP address",
        ),
        (
            "bindAddress: node-1\n",
            "bindAddress: \"node-1\" is not a valid textual representation of an IP address",
        ),
        ("ipvs: fast\n", "ipvs: expected a mapping, found \"fast\""),
        (
            "logging:\n  format: xml\n",
            "logging.format: \"xml\" is an unsupported log format",
        ),
        (
            "detectLocalMode: Pods\n",
            "detectLocalMode: unsupported value \"Pods\"",
        ),
        ("oomScoreAdj: lots\n", "oomScoreAdj: expected an integer"),
        (
            "clientConnection: {qps: fast}\n",
            "clientConnection.qps: expected a number",
        ),
        (
            "hostnameOverride: \"  \"\n",
            "hostnameOverride: empty hostname is invalid",
        ),
        (
            "featureGates: {A: maybe}\n",
            "featureGates.A: expected true or false",
        ),
        (
            "logging: {options: {text: {infoBufferSize: lots}}}\n",
            "logging.options.text.infoBufferSize: \"lots\" is not a quantity",
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
    let e = parse("apiVersion: kubeproxy.config.k8s.io/v1beta9\nkind: KubeProxyConfiguration\n")
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

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kp.yaml");
    std::fs::write(&path, format!("{HEADER}ipvs:\n  syncPeriod: soon\n")).unwrap();
    let e = format!("{:#}", load(&path).unwrap_err());
    assert!(e.contains("kp.yaml"), "{e}");
    assert!(e.contains("ipvs.syncPeriod: \"soon\""), "{e}");
    assert!(load(dir.path().join("missing.yaml")).is_err());
}

#[test]
fn upstreams_own_default_file_is_read_as_its_defaults() {
    let loaded = parse(UPSTREAM_DEFAULTS).unwrap();
    assert!(loaded.unknown.is_empty(), "{:?}", loaded.unknown);
    assert!(loaded.ignored.is_empty(), "{:?}", loaded.ignored);
    let want = Config {
        mode: Some(ProxyMode::Iptables),
        ..Config::file_defaults()
    };
    assert_eq!(loaded.config, want);
}

#[test]
fn kubeadms_config_conf_is_read() {
    let loaded = parse(KUBEADM).unwrap();
    assert!(
        loaded.unknown.is_empty() && loaded.ignored.is_empty(),
        "{loaded:?}"
    );
    let want = Config {
        cluster_cidrs: vec![net("10.244.0.0/16")],
        kubeconfig: Some("/var/lib/kube-proxy/kubeconfig.conf".into()),
        ..Config::file_defaults()
    };
    assert_eq!(loaded.config, want);
}

/// A file written by kproxy reads back as the same configuration, for
/// every field a file can hold.
#[test]
fn written_files_read_back_the_same() {
    for base in [Config::default(), Config::file_defaults()] {
        let back = parse(&to_yaml(&base)).unwrap().config;
        assert_eq!(back, base);
    }
    let c = config_of(
        r#"
mode: ipvs
hostnameOverride: node-9
bindAddress: fd00::9
healthzBindAddress: "[fd00::9]:1234"
metricsBindAddress: "[::]:2345"
clusterCIDR: 10.244.0.0/16,fd00:244::/56
nodePortAddresses: [primary]
featureGates: {LoggingAlphaOptions: true, Other: false}
logging:
  format: text
  verbosity: 7
  flushFrequency: 1500ms
  vmodule: [{filePattern: "a*", verbosity: 3}]
  options: {text: {splitStream: true, infoBufferSize: 2Ki}, json: {infoBufferSize: "1M"}}
clientConnection: {qps: 0.5, burst: 3, acceptContentTypes: "a,b", contentType: application/json, kubeconfig: /k}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 90s, tcpBeLiberal: true, udpTimeout: 1s, udpStreamTimeout: 1h1m1s}
winkernel: {networkName: net1, sourceVip: 10.0.0.1, enableDSR: true, rootHnsEndpointName: root, forwardHealthCheckVip: true}
nftables: {masqueradeAll: true, masqueradeBit: 3, syncPeriod: 2m, minSyncPeriod: 3s}
portRange: "1-2"
showHiddenMetricsForVersion: "1.35"
enableProfiling: true
windowsRunAsService: true
ipvs: {excludeCIDRs: ["10.0.0.0/8"], scheduler: "mh", minSyncPeriod: 1ms}
"#,
    );
    let text = to_yaml(&c);
    assert_eq!(parse(&text).unwrap().config, c, "{text}");
}

/// kproxy writes upstream's own default file byte for byte, but for the
/// values kproxy fills in where upstream leaves a zero for a mode not in use.
#[test]
fn the_written_layout_is_upstreams() {
    let c = parse(UPSTREAM_DEFAULTS).unwrap().config;
    let want = UPSTREAM_DEFAULTS
        .replace("  scheduler: \"\"\n", "  scheduler: rr\n")
        .replace(
            "  strictARP: false\n  syncPeriod: 0s\n",
            "  strictARP: false\n  syncPeriod: 30s\n",
        )
        .replace(
            "  minSyncPeriod: 0s\n  syncPeriod: 0s\nnodePortAddresses",
            "  minSyncPeriod: 1s\n  syncPeriod: 30s\nnodePortAddresses",
        );
    assert_eq!(to_yaml(&c), want);
}
