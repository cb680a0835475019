//! Health and metrics state fed by the sync loop (`SyncObserver`) and read
//! by the HTTP handlers.
//!
//! Health follows kube-proxy's proxier health server: healthy while starting
//! (no sync completed yet) and while no update is pending; unhealthy once an
//! update has been queued and not applied for longer than the timeout
//! (kube-proxy uses 2 × sync period). A failed sync (a restore, ipset or
//! link operation) does not clear a pending update, so a kernel that keeps
//! refusing changes turns the node unhealthy; a sync whose only failures
//! are refused IPVS operations counts as done, as upstream counts it
//! (`SyncError::leaves_sync_done`), and is retried.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;

use crate::cluster::IpFamily;
use crate::cluster::topology::PolicyScope;
use crate::config::{Config, ProxyMode};
use crate::sync::{SyncObserver, SyncReport};

type Labels = Vec<(String, String)>;

/// A histogram per `ip_family`, with fixed buckets.
type ByFamily = Family<Labels, Histogram, fn() -> Histogram>;
type TimestampByFamily = Family<Labels, Gauge<f64, AtomicU64>>;

fn sync_buckets() -> Histogram {
    // kube-proxy: ExponentialBuckets(0.001, 2, 15), 1 ms .. 16.384 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn programming_buckets() -> Histogram {
    // kube-proxy: 0, 0.25, 0.5, 1..59 s, 60..115 s by 5, 120..300 s by 30.
    Histogram::new(
        std::iter::once(0.0)
            .chain(linear_buckets(0.25, 0.25, 2))
            .chain(linear_buckets(1.0, 1.0, 59))
            .chain(linear_buckets(60.0, 5.0, 12))
            .chain(linear_buckets(120.0, 30.0, 7)),
    )
}

/// kube-proxy's metrics, under its names and labels (the sync metrics by
/// `ip_family`: kproxy programs both families in one sync, so each of its
/// syncs is recorded once per family the node programs), plus kproxy's own.
struct Metrics {
    sync_duration: ByFamily,
    last_sync: TimestampByFamily,
    last_queued: TimestampByFamily,
    network_programming: ByFamily,
    endpoint_changes: Counter,
    service_changes: Counter,
    no_local_endpoints: Family<Labels, Gauge>,
    healthz: Family<Labels, Counter>,
    livez: Family<Labels, Counter>,
    invalid_objects: Gauge,
    /// The two parts of `invalid_objects`: objects the store refused (told
    /// by the caller) and objects the last sync's planning skipped.
    refused: AtomicI64,
    skipped: AtomicI64,
    kernel_ops: Family<Labels, Counter>,
    sync_errors: Family<Labels, Counter>,
    syncs: Family<Labels, Counter>,
    source_connected: Gauge,
    healthcheck_bind_errors: Counter,
}

impl Metrics {
    fn new() -> (Self, Registry) {
        let m = Metrics {
            sync_duration: Family::new_with_constructor(sync_buckets as fn() -> Histogram),
            last_sync: Family::default(),
            last_queued: Family::default(),
            network_programming: Family::new_with_constructor(
                programming_buckets as fn() -> Histogram,
            ),
            endpoint_changes: Counter::default(),
            service_changes: Counter::default(),
            no_local_endpoints: Family::default(),
            healthz: Family::default(),
            livez: Family::default(),
            invalid_objects: Gauge::default(),
            refused: AtomicI64::new(0),
            skipped: AtomicI64::new(0),
            kernel_ops: Family::default(),
            sync_errors: Family::default(),
            syncs: Family::default(),
            source_connected: Gauge::default(),
            healthcheck_bind_errors: Counter::default(),
        };
        m.source_connected.set(1);
        for kind in crate::sync::SyncError::KINDS {
            let _ = m
                .sync_errors
                .get_or_create(&vec![("kind".to_string(), kind.to_string())]);
        }
        let mut r = Registry::default();
        r.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued.clone(),
        );
        r.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming.clone(),
        );
        // Counters get their `_total` suffix from the encoder.
        r.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            m.endpoint_changes.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_changes.clone(),
        );
        // A gauge despite the name, as in kube-proxy.
        r.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            m.no_local_endpoints.clone(),
        );
        r.register(
            "kubeproxy_proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            m.healthz.clone(),
        );
        r.register(
            "kubeproxy_proxy_livez",
            "Cumulative proxy livez HTTP status",
            m.livez.clone(),
        );
        r.register(
            "kproxy_invalid_objects",
            "Objects refused or skipped as invalid in the last sync",
            m.invalid_objects.clone(),
        );
        r.register(
            "kproxy_kernel_operations",
            "Kernel operations applied, by kind",
            m.kernel_ops.clone(),
        );
        r.register(
            "kproxy_sync_errors",
            "Errors that kept a sync from completing, by kind (refused: a kernel operation; rules: a restore; ...)",
            m.sync_errors.clone(),
        );
        r.register(
            "kproxy_syncs",
            "Syncs run, by result (ok; partial: IPVS operations refused, retried; error)",
            m.syncs.clone(),
        );
        r.register(
            "kproxy_source_connected",
            "1 while the source of Services and EndpointSlices is connected, 0 while it is not",
            m.source_connected.clone(),
        );
        r.register(
            "kproxy_healthcheck_bind_errors",
            "Health-check node port servers that could not listen on their port (retried at the next sync)",
            m.healthcheck_bind_errors.clone(),
        );
        (m, r)
    }

    /// The per-family series exist (at zero) from the start, so that a
    /// scrape before the first sync already finds them.
    fn create_series(&self, families: &[&'static str]) {
        for f in family_labels(families) {
            let _ = self.sync_duration.get_or_create(&f);
            let _ = self.network_programming.get_or_create(&f);
        }
        for (scope, family) in no_local_labels(families) {
            let _ = self
                .no_local_endpoints
                .get_or_create(&no_local_series(scope, family));
        }
    }

    fn update_invalid(&self) {
        self.invalid_objects
            .set(self.refused.load(Ordering::Relaxed) + self.skipped.load(Ordering::Relaxed));
    }
}

#[derive(Debug, Default)]
struct Health {
    /// Wall-clock time of the last successful sync; None while starting.
    last_updated: Option<SystemTime>,
    /// Monotonic time of the oldest update queued and not yet applied.
    oldest_pending: Option<Instant>,
    /// The Node is known and not being removed (not deleted, not tainted
    /// for removal).
    node_eligible: bool,
    /// The source is an API server, which always has a Node for us.
    node_required: bool,
    /// This node's name, once its Node object is known.
    node: Option<String>,
    source_connected: bool,
    /// "IPv4", "IPv6": one entry each in the body's `status`.
    families: Vec<&'static str>,
}

/// A health report, as served on /healthz and /livez.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    pub healthy: bool,
    /// When unhealthy, the last successful sync (or the Unix epoch if none);
    /// when healthy, `current_time`, as kube-proxy reports it.
    pub last_updated: SystemTime,
    pub current_time: SystemTime,
    pub node_eligible: bool,
    pub source_connected: bool,
    /// When the last sync completed (None while starting), for `status`.
    pub last_synced: Option<SystemTime>,
    pub families: Vec<&'static str>,
}

/// Observes the sync loop; serves /healthz, /livez and /metrics.
pub struct Telemetry {
    health_timeout: Duration,
    health: Mutex<Health>,
    metrics: Metrics,
    registry: Registry,
    mode: Mutex<Option<ProxyMode>>,
}

impl Telemetry {
    /// `health_timeout`: how long a queued update may stay unapplied before
    /// /healthz fails.
    pub fn new(health_timeout: Duration) -> Self {
        let (metrics, registry) = Metrics::new();
        let t = Self {
            health_timeout,
            health: Mutex::new(Health {
                node_eligible: true,
                source_connected: true,
                families: vec!["IPv4"],
                ..Health::default()
            }),
            metrics,
            registry,
            mode: Mutex::new(None),
        };
        t.metrics.create_series(&["IPv4"]);
        t
    }

    /// kube-proxy's choice: twice the sync period of the mode in use.
    pub fn for_config(cfg: &Config, mode: ProxyMode) -> Self {
        let t = Self::new(2 * cfg.sync_periods(mode).1);
        t.set_proxy_mode(mode);
        t
    }

    /// The mode in use, served on /proxyMode.
    pub fn set_proxy_mode(&self, mode: ProxyMode) {
        *lock(&self.mode) = Some(mode);
    }

    pub fn proxy_mode(&self) -> Option<ProxyMode> {
        *lock(&self.mode)
    }

    /// With the API server as source, a Node that is not known (yet, or
    /// any more) makes the node ineligible, as upstream's health server
    /// does; with manifests, a Node is optional and its absence is not news.
    pub fn require_node(&self, required: bool) {
        let mut h = lock(&self.health);
        h.node_required = required;
        if h.node.is_none() {
            h.node_eligible = !required;
        }
    }

    /// This node's Node object changed: /healthz (not /livez) fails for a
    /// node that is unknown, deleted or tainted `ToBeDeletedByClusterAutoscaler`,
    /// so load balancers drain it first.
    pub fn set_node(&self, node: Option<&crate::cluster::Node>) {
        let mut h = lock(&self.health);
        h.node = node.map(|n| n.name.clone());
        h.node_eligible = match node {
            Some(n) => n.eligible(),
            None => !h.node_required,
        };
    }

    /// The IP families the proxy programs, keys of the health body's `status`.
    pub fn set_families(&self, families: Vec<&'static str>) {
        self.metrics.create_series(&families);
        lock(&self.health).families = families;
    }

    /// Objects the store currently refuses as invalid (`ClusterState::rejected`).
    /// Added to the objects the last sync's planning skipped to make
    /// `kproxy_invalid_objects`.
    pub fn set_refused_objects(&self, n: u64) {
        self.metrics.refused.store(n as i64, Ordering::Relaxed);
        self.metrics.update_invalid();
    }

    /// The proxier's health, ignoring the node (as /livez).
    pub fn health(&self) -> HealthReport {
        let now = SystemTime::now();
        let h = lock(&self.health);
        // Healthy while starting up: nothing has been applied yet, and the
        // first sync of a large cluster may legitimately take long.
        let late = match (h.last_updated, h.oldest_pending) {
            (Some(_), Some(queued)) => queued.elapsed() >= self.health_timeout,
            _ => false,
        };
        HealthReport {
            healthy: !late,
            last_updated: if late {
                h.last_updated.unwrap_or(UNIX_EPOCH)
            } else {
                now
            },
            current_time: now,
            node_eligible: h.node_eligible,
            source_connected: h.source_connected,
            last_synced: h.last_updated,
            families: h.families.clone(),
        }
    }

    /// A health-check node port server could not be started.
    pub fn count_healthcheck_bind_error(&self) {
        self.metrics.healthcheck_bind_errors.inc();
    }

    pub(crate) fn count_probe(&self, livez: bool, code: u16) {
        let family = if livez {
            &self.metrics.livez
        } else {
            &self.metrics.healthz
        };
        family
            .get_or_create(&vec![("code".to_string(), code.to_string())])
            .inc();
    }

    /// The metrics in Prometheus/OpenMetrics text.
    pub fn encode_metrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking handler must not take health reporting down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn family_labels(families: &[&'static str]) -> Vec<Labels> {
    families
        .iter()
        .map(|f| vec![("ip_family".to_string(), f.to_string())])
        .collect()
}

/// Upstream sets both policies' series for every family its proxiers run
/// (ipvs/proxier.go and iptables/proxier.go, syncProxyRules' end).
fn no_local_labels(families: &[&'static str]) -> Vec<(PolicyScope, &'static str)> {
    families
        .iter()
        .flat_map(|f| PolicyScope::ALL.into_iter().map(move |s| (s, *f)))
        .collect()
}

/// Labels in the order upstream's Prometheus client prints them (sorted).
fn no_local_series(scope: PolicyScope, family: &str) -> Labels {
    vec![
        ("ip_family".to_string(), family.to_string()),
        ("traffic_policy".to_string(), scope.label().to_string()),
    ]
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl SyncObserver for Telemetry {
    fn queued(&self) {
        let mut h = lock(&self.health);
        // Only the oldest pending update counts, as in kube-proxy.
        h.oldest_pending.get_or_insert_with(Instant::now);
        let now = unix_seconds(SystemTime::now());
        for f in family_labels(&h.families) {
            self.metrics.last_queued.get_or_create(&f).set(now);
        }
    }

    fn synced(&self, report: &SyncReport) {
        self.set_refused_objects(report.rejected_objects);
        let m = &self.metrics;
        let outcome = &report.outcome;
        let families = family_labels(&lock(&self.health).families);
        for f in &families {
            m.sync_duration
                .get_or_create(f)
                .observe(report.duration.as_secs_f64());
        }
        m.endpoint_changes.inc_by(report.endpoint_changes);
        m.service_changes.inc_by(report.service_changes);
        for (scope, family) in no_local_labels(&lock(&self.health).families) {
            let n = [IpFamily::V4, IpFamily::V6]
                .into_iter()
                .find(|f| f.name() == family)
                .map_or(0, |f| outcome.no_local_endpoints.get(scope, f));
            m.no_local_endpoints
                .get_or_create(&no_local_series(scope, family))
                .set(n as i64);
        }
        for (kind, n) in &outcome.ops {
            m.kernel_ops
                .get_or_create(&vec![("kind".to_string(), kind.to_string())])
                .inc_by(*n);
        }
        for e in &outcome.errors {
            m.sync_errors
                .get_or_create(&vec![("kind".to_string(), e.kind().to_string())])
                .inc();
        }
        let distinct: BTreeSet<_> = outcome.problems.iter().map(|p| &p.object).collect();
        m.skipped.store(distinct.len() as i64, Ordering::Relaxed);
        m.update_invalid();
        // partial: done, with operations refused (retried).
        let result = if outcome.ok() {
            "ok"
        } else if outcome.done() {
            "partial"
        } else {
            "error"
        };
        m.syncs
            .get_or_create(&vec![("result".to_string(), result.to_string())])
            .inc();
        if !outcome.done() {
            // The pending update (if any) stays pending.
            return;
        }
        let now = SystemTime::now();
        for f in &families {
            m.last_sync.get_or_create(f).set(unix_seconds(now));
        }
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        for t in &report.trigger_times {
            // A trigger time ahead of our clock is skew, not a latency.
            if *t <= now_ms {
                for f in &families {
                    m.network_programming
                        .get_or_create(f)
                        .observe((now_ms - t) as f64 / 1000.0);
                }
            }
        }
        let mut h = lock(&self.health);
        h.oldest_pending = None;
        h.last_updated = Some(now);
    }

    fn source_connected(&self, connected: bool) {
        lock(&self.health).source_connected = connected;
        self.metrics.source_connected.set(i64::from(connected));
    }

    fn node(&self, node: Option<&crate::cluster::Node>) {
        self.set_node(node);
    }
}

/// A time as Go's encoding/json writes a `time.Time` (RFC 3339 with
/// nanoseconds, trailing zeros dropped), which is what kube-proxy's health
/// JSON carries: `2023-11-14T22:13:20.12Z`.
pub fn go_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, mo, da) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar, by counting 400-year eras that start on March 1st.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_report() -> SyncReport {
        SyncReport {
            started: SystemTime::now(),
            duration: Duration::from_millis(3),
            full: true,
            outcome: Default::default(),
            service_changes: 0,
            endpoint_changes: 0,
            trigger_times: vec![],
            rejected_objects: 0,
            health_checks: vec![],
        }
    }

    #[test]
    fn go_time_format() {
        assert_eq!(go_time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(go_time(t), "2023-11-14T22:13:20.12Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(go_time(t), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn healthy_while_starting_even_with_an_update_queued() {
        let t = Telemetry::new(Duration::ZERO);
        t.queued();
        assert!(t.health().healthy);
    }

    #[test]
    fn a_failed_sync_keeps_the_update_pending() {
        let t = Telemetry::new(Duration::ZERO);
        let ok = empty_report();
        t.synced(&ok);
        assert!(t.health().healthy);
        t.queued();
        let mut failed = ok.clone();
        failed.outcome.errors.push(crate::sync::SyncError::Rules {
            family: IpFamily::V4,
            services: 3,
            source: crate::kernel::KernelError::new("iptables-restore", "line 7 failed"),
        });
        t.synced(&failed);
        let h = t.health();
        assert!(!h.healthy);
        assert!(h.last_updated < h.current_time);
        t.synced(&ok);
        assert!(t.health().healthy);
    }

    #[test]
    fn a_refused_virtual_server_leaves_the_sync_done() {
        // Upstream's IPVS proxier logs a virtual server the kernel refuses
        // and still updates its health server (pkg/proxy/ipvs/proxier.go
        // syncProxyRules); a dummy-link failure returns before that.
        let t = Telemetry::new(Duration::ZERO);
        let mut report = empty_report();
        t.synced(&report);
        t.queued();
        let refused =
            crate::kernel::KernelError::errno("add virtual server TCP 10.0.0.1:80", libc::EEXIST);
        report.outcome.errors = vec![
            crate::sync::SyncError::Refused(refused.clone()),
            crate::sync::SyncError::RealServersOrphaned {
                service: crate::kernel::ipvs::ServiceKey {
                    addr: "10.0.0.1".parse().unwrap(),
                    protocol: crate::net::Protocol::Tcp,
                    port: 80,
                },
                count: 2,
            },
        ];
        t.synced(&report);
        assert!(t.health().healthy);
        let m = t.encode_metrics();
        assert!(
            m.contains("kproxy_syncs_total{result=\"partial\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("kproxy_sync_errors_total{kind=\"refused\"} 1"),
            "{m}"
        );
        t.queued();
        report.outcome.errors = vec![crate::sync::SyncError::Link(refused)];
        t.synced(&report);
        assert!(!t.health().healthy);
    }

    #[test]
    fn sync_metrics_have_a_series_per_family_the_node_programs() {
        let t = Telemetry::new(Duration::from_secs(60));
        t.set_families(vec!["IPv4", "IPv6"]);
        t.queued();
        let m = t.encode_metrics();
        for f in ["IPv4", "IPv6"] {
            for name in [
                "kubeproxy_sync_proxy_rules_duration_seconds_count",
                "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            ] {
                let series = format!("{name}{{ip_family=\"{f}\"}}");
                assert!(m.contains(&series), "{series} missing:\n{m}");
            }
        }
    }

    #[test]
    fn no_local_endpoints_by_policy_and_family() {
        // Upstream's series: traffic_policy internal/external × ip_family,
        // one pair per family (metrics.go SyncProxyRulesNoLocalEndpointsTotal).
        let t = Telemetry::new(Duration::from_secs(60));
        t.set_families(vec!["IPv4", "IPv6"]);
        let mut report = empty_report();
        report
            .outcome
            .no_local_endpoints
            .add(PolicyScope::External, IpFamily::V4, 2);
        report
            .outcome
            .no_local_endpoints
            .add(PolicyScope::Internal, IpFamily::V6, 1);
        t.synced(&report);
        let m = t.encode_metrics();
        let name = "kubeproxy_sync_proxy_rules_no_local_endpoints_total";
        for (policy, family, n) in [
            ("internal", "IPv4", 0),
            ("external", "IPv4", 2),
            ("internal", "IPv6", 1),
            ("external", "IPv6", 0),
        ] {
            let series =
                format!("{name}{{ip_family=\"{family}\",traffic_policy=\"{policy}\"}} {n}\n");
            assert!(m.contains(&series), "{series} missing:\n{m}");
        }
    }

    #[test]
    fn a_node_being_removed_or_unknown_is_not_eligible() {
        let t = Telemetry::new(Duration::from_secs(60));
        assert!(t.health().node_eligible, "manifests: no Node needed");
        t.require_node(true);
        assert!(!t.health().node_eligible, "API source: Node not seen yet");
        let mut node = crate::cluster::Node {
            name: "n".into(),
            being_removed: true,
            ..Default::default()
        };
        t.set_node(Some(&node));
        assert!(!t.health().node_eligible);
        node.being_removed = false;
        t.set_node(Some(&node));
        assert!(t.health().node_eligible);
        t.set_node(None);
        assert!(!t.health().node_eligible, "deleted Node");
    }
}
