//! /healthz, /livez and /metrics over real HTTP on ephemeral ports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kproxy::cluster::{IpFamily, Kind, NoLocalEndpoints, ObjectRef, PolicyScope, Problem};
use kproxy::config::{Config, ProxyMode};
use kproxy::http::{self, Telemetry};
use kproxy::kernel::KernelError;
use kproxy::sync::{SyncError, SyncObserver, SyncOutcome, SyncReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One GET over a fresh connection; returns (status, headers+body text).
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

fn local_config() -> Config {
    Config {
        healthz_bind_address: Some("127.0.0.1:0".parse().unwrap()),
        metrics_bind_address: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    }
}

fn report(outcome: SyncOutcome) -> SyncReport {
    SyncReport {
        started: SystemTime::now(),
        duration: Duration::from_millis(40),
        full: false,
        outcome,
        service_changes: 3,
        endpoint_changes: 5,
        trigger_times: vec![],
        rejected_objects: 0,
        health_checks: vec![],
    }
}

/// A metric sample's value from the text exposition (`name{labels} value`).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn healthz_turns_503_when_a_queued_update_outlives_the_timeout() {
    // A tiny timeout so the test need not wait; the sleep below only has to
    // be longer than it.
    let t = Arc::new(Telemetry::new(Duration::from_millis(1)));
    let running = http::start(&local_config(), t.clone()).await.unwrap();
    let hz = running.healthz.unwrap();

    let (code, head, body) = get(hz, "/healthz").await;
    assert_eq!(code, 200, "{body}");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/json")
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["lastUpdated"], v["currentTime"],
        "healthy: lastUpdated is now"
    );
    assert!(v["currentTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["healthy"], true);
    assert!(
        v.get("status").is_none(),
        "no family has synced yet: {body}"
    );
    assert_eq!(v["nodeEligible"], true);

    t.synced(&report(SyncOutcome::default()));
    t.queued();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (code, _, body) = get(hz, "/healthz").await;
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(
        v["lastUpdated"], v["currentTime"],
        "unhealthy: the last sync's time"
    );
    assert_eq!(v["healthy"], false);
    assert_eq!(v["status"]["IPv4"]["healthy"], false, "{body}");
    assert_eq!(v["status"]["IPv4"]["lastUpdated"], v["lastUpdated"]);
    let (code, _, _) = get(hz, "/livez").await;
    assert_eq!(code, 503);

    // Applying the update makes it healthy again.
    t.synced(&report(SyncOutcome::default()));
    assert_eq!(get(hz, "/healthz").await.0, 200);
    assert_eq!(get(hz, "/livez").await.0, 200);
}

#[tokio::test]
async fn a_queued_update_within_the_timeout_is_healthy() {
    let t = Arc::new(Telemetry::new(Duration::from_secs(3600)));
    let running = http::start(&local_config(), t.clone()).await.unwrap();
    t.synced(&report(SyncOutcome::default()));
    t.queued();
    assert_eq!(get(running.healthz.unwrap(), "/healthz").await.0, 200);
}

#[tokio::test]
async fn source_outage_is_reported_without_failing_the_probe() {
    let t = Arc::new(Telemetry::new(Duration::from_secs(3600)));
    let running = http::start(&local_config(), t.clone()).await.unwrap();
    t.source_connected(false);
    let (code, _, body) = get(running.healthz.unwrap(), "/healthz").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    // Upstream's fields and nothing more: the outage is a metric.
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["currentTime", "healthy", "lastUpdated", "nodeEligible"]
    );
    let (_, _, m) = get(running.metrics.unwrap(), "/metrics").await;
    assert_eq!(sample(&m, "kproxy_source_connected"), Some(0.0));
}

#[tokio::test]
async fn a_node_being_deleted_fails_healthz_but_not_livez() {
    let t = Arc::new(Telemetry::new(Duration::from_secs(3600)));
    let running = http::start(&local_config(), t.clone()).await.unwrap();
    let node = kproxy::cluster::Node {
        name: "n1".into(),
        being_removed: true,
        ..Default::default()
    };
    t.set_node(Some(&node));
    let hz = running.healthz.unwrap();
    let (code, _, body) = get(hz, "/healthz").await;
    assert_eq!(code, 503);
    assert!(body.contains("\"nodeEligible\":false"), "{body}");
    assert_eq!(get(hz, "/livez").await.0, 200);
}

const NAMES: &[&str] = &[
    "kubeproxy_sync_proxy_rules_duration_seconds",
    "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
    "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
    "kubeproxy_network_programming_duration_seconds",
    "kubeproxy_sync_proxy_rules_endpoint_changes_total",
    "kubeproxy_sync_proxy_rules_service_changes_total",
    "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
    "kproxy_invalid_objects",
    "kproxy_kernel_operations_total",
    "kproxy_sync_errors_total",
];

#[tokio::test]
async fn metrics_are_named_as_upstream_and_move_after_a_sync() {
    let t = Arc::new(Telemetry::for_config(&Config::default(), ProxyMode::Ipvs));
    let running = http::start(&local_config(), t.clone()).await.unwrap();
    let m = running.metrics.unwrap();

    let (code, head, before) = get(m, "/metrics").await;
    assert_eq!(code, 200);
    assert!(head.contains("openmetrics-text"), "{head}");
    for name in [
        "kubeproxy_sync_proxy_rules_duration_seconds",
        "kubeproxy_sync_proxy_rules_endpoint_changes_total",
        "kubeproxy_sync_proxy_rules_service_changes_total",
        "kproxy_sync_errors_total",
    ] {
        assert!(
            before.contains(name),
            "{name} missing before any sync:\n{before}"
        );
    }
    assert_eq!(
        sample(
            &before,
            "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}"
        ),
        Some(0.0)
    );
    // Upstream's buckets (1 ms doubling, 15 of them) and label (ip_family,
    // pkg/proxy/metrics/metrics.go).
    for bucket in [
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\",ip_family=\"IPv4\"}",
        "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"16.384\",ip_family=\"IPv4\"}",
        "kubeproxy_network_programming_duration_seconds_bucket{le=\"0.25\",ip_family=\"IPv4\"}",
        "kubeproxy_network_programming_duration_seconds_bucket{le=\"300.0\",ip_family=\"IPv4\"}",
    ] {
        assert!(before.contains(bucket), "{bucket} missing:\n{before}");
    }

    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut ops = BTreeMap::new();
    ops.insert("add_virtual_server", 4u64);
    ops.insert("add_real_server", 7u64);
    let bad = ObjectRef::new(Kind::Service, "default", "broken");
    let outcome = SyncOutcome {
        ops,
        errors: vec![],
        problems: vec![
            Problem {
                object: bad.clone(),
                reason: "port 0".into(),
            },
            Problem {
                object: bad,
                reason: "clusterIP \"x\"".into(),
            },
        ],
        no_local_endpoints: no_local(PolicyScope::External, 2),
        draining: 0,
    };
    let mut r = report(outcome);
    // Changed 1.5 s ago by the EndpointSlice controller's account.
    r.trigger_times = vec![now_ms - 1500];
    t.queued();
    t.synced(&r);
    let mut failed = report(SyncOutcome::default());
    let refused = SyncError::Refused(KernelError::new("add virtual server TCP 10.0.0.1:80", "no"));
    failed.outcome.errors = vec![refused.clone(), refused];
    t.synced(&failed);

    let (_, _, after) = get(m, "/metrics").await;
    for name in NAMES {
        assert!(after.contains(name), "{name} missing:\n{after}");
    }
    assert_eq!(
        sample(
            &after,
            "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}"
        ),
        Some(2.0)
    );
    // 40 ms falls in the 0.064 bucket, not the 0.032 one.
    assert_eq!(
        sample(
            &after,
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.032\",ip_family=\"IPv4\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &after,
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.064\",ip_family=\"IPv4\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&after, "kubeproxy_sync_proxy_rules_service_changes_total"),
        Some(6.0)
    );
    assert_eq!(
        sample(&after, "kubeproxy_sync_proxy_rules_endpoint_changes_total"),
        Some(10.0)
    );
    assert_eq!(
        sample(
            &after,
            "kubeproxy_network_programming_duration_seconds_count{ip_family=\"IPv4\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"1.0\",ip_family=\"IPv4\"}"
        ),
        Some(0.0),
        "1.5 s is above the 1 s bucket"
    );
    assert_eq!(
        sample(
            &after,
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"300.0\",ip_family=\"IPv4\"}"
        ),
        Some(1.0)
    );
    let last = sample(
        &after,
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}",
    )
    .unwrap();
    assert!(
        last * 1000.0 >= now_ms as f64,
        "last sync {last} is this sync"
    );
    assert!(
        sample(
            &after,
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family=\"IPv4\"}"
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        sample(
            &after,
            "kproxy_kernel_operations_total{kind=\"add_virtual_server\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &after,
            "kproxy_kernel_operations_total{kind=\"add_real_server\"}"
        ),
        Some(7.0)
    );
    assert_eq!(
        sample(&after, "kproxy_sync_errors_total{kind=\"refused\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&after, "kproxy_sync_errors_total{kind=\"rules\"}"),
        Some(0.0)
    );
    // The failed sync reported no problems: the gauge follows the last sync.
    assert_eq!(sample(&after, "kproxy_invalid_objects"), Some(0.0));
    assert_eq!(
        sample(&after, "kproxy_syncs_total{result=\"partial\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"external\"}"
        ),
        Some(0.0)
    );

    // /proxyMode as kube-proxy serves it on the metrics port.
    let (code, _, mode) = get(m, "/proxyMode").await;
    assert_eq!((code, mode.as_str()), (200, "ipvs"));
}

fn no_local(scope: PolicyScope, n: u64) -> NoLocalEndpoints {
    let mut c = NoLocalEndpoints::default();
    c.add(scope, IpFamily::V4, n);
    c
}

#[tokio::test]
async fn invalid_objects_counts_distinct_objects() {
    let t = Arc::new(Telemetry::new(Duration::from_secs(60)));
    let running = http::start(&local_config(), t.clone()).await.unwrap();
    let p = |name: &str| Problem {
        object: ObjectRef::new(Kind::EndpointSlice, "ns", name),
        reason: "bad".into(),
    };
    let outcome = SyncOutcome {
        problems: vec![p("a"), p("a"), p("b")],
        no_local_endpoints: no_local(PolicyScope::Internal, 3),
        ..Default::default()
    };
    t.synced(&report(outcome));
    let (_, _, m) = get(running.metrics.unwrap(), "/metrics").await;
    assert_eq!(sample(&m, "kproxy_invalid_objects"), Some(2.0));
    assert_eq!(
        sample(
            &m,
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"internal\"}"
        ),
        Some(3.0)
    );
    // Objects the store refused add to those the planner skipped.
    t.set_refused_objects(5);
    let (_, _, m) = get(running.metrics.unwrap(), "/metrics").await;
    assert_eq!(sample(&m, "kproxy_invalid_objects"), Some(7.0));
    // Each sync reports the store's refused objects itself.
    let mut r = report(SyncOutcome::default());
    r.rejected_objects = 5;
    t.synced(&r);
    let (_, _, m) = get(running.metrics.unwrap(), "/metrics").await;
    assert_eq!(sample(&m, "kproxy_invalid_objects"), Some(5.0));
}

#[tokio::test]
async fn one_address_serves_both() {
    // Reserve a port, free it, and ask for both servers on it.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let cfg = Config {
        healthz_bind_address: Some(addr),
        metrics_bind_address: Some(addr),
        ..Config::default()
    };
    let t = Arc::new(Telemetry::new(Duration::from_secs(60)));
    let running = http::start(&cfg, t).await.unwrap();
    assert_eq!(running.healthz, running.metrics);
    assert_eq!(get(addr, "/livez").await.0, 200);
    assert_eq!(get(addr, "/metrics").await.0, 200);
}

#[tokio::test]
async fn a_taken_address_is_reported_naming_it_and_the_other_server_still_serves() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let cfg = Config {
        healthz_bind_address: Some(addr),
        metrics_bind_address: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    let running = http::start(&cfg, Arc::new(Telemetry::new(Duration::from_secs(1))))
        .await
        .unwrap();
    assert_eq!(running.failed.len(), 1);
    let (server, e) = &running.failed[0];
    assert_eq!(*server, http::Server::Healthz);
    assert!(format!("{e:#}").contains(&addr.to_string()), "{e:#}");
    assert!(running.healthz.is_none());
    let (code, _, _) = get(running.metrics.unwrap(), "/metrics").await;
    assert_eq!(code, 200);
}
