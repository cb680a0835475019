//! The sync loop: source events mark the state dirty; a bounded-frequency
//! runner applies at most once per min-sync-period and at least once per
//! sync-period. Every sync re-reads the live kernel, so drift made by hand is
//! repaired by the next periodic sync.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::UnboundedReceiver;

use crate::cluster::{ClusterState, Kind, Node, Problem, ServiceName, SourceEvent};

pub use error::SyncError;
pub use health_checks::{HealthCheck, health_checks};
pub use schedule::{Schedule, SyncKind};

mod error;
mod health_checks;
mod schedule;
use crate::config::ProxyMode;

/// What one sync did.
#[derive(Clone, Debug, Default)]
pub struct SyncOutcome {
    /// Kernel operations applied, by kind (`add_virtual_server`, `restore_rules`, ...).
    pub ops: BTreeMap<&'static str, u64>,
    /// Operations the kernel refused, and anything else that kept the sync
    /// from being complete; each names the object and the reason.
    pub errors: Vec<SyncError>,
    /// Objects skipped while planning (bad input), each with its reason.
    pub problems: Vec<Problem>,
    /// Local traffic policies without a local endpoint, by policy and family.
    pub no_local_endpoints: crate::cluster::NoLocalEndpoints,
    /// Real servers left at weight 0 until their connections end: the loop
    /// looks again within `DRAIN_CHECK` while there are any.
    pub draining: u64,
}

/// How often draining real servers are checked at the least (upstream's
/// rsCheckDeleteInterval, pkg/proxy/ipvs/graceful_termination.go).
pub const DRAIN_CHECK: Duration = Duration::from_secs(60);

impl SyncOutcome {
    /// Complete: nothing failed. An incomplete sync is retried.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Done as far as health goes: every error is one upstream only logs
    /// (`SyncError::leaves_sync_done`).
    pub fn done(&self) -> bool {
        self.errors.iter().all(SyncError::leaves_sync_done)
    }

    pub fn total_ops(&self) -> u64 {
        self.ops.values().sum()
    }
}

/// One proxy mode's way of programming the kernel.
pub trait Proxier: Send {
    fn mode(&self) -> ProxyMode;
    /// Bring the kernel to the plan for `state`. `changed` lists the Services
    /// changed since the last sync, or is None when everything must be
    /// considered (first sync, periodic resync, node change).
    fn sync(
        &mut self,
        state: &ClusterState,
        changed: Option<&BTreeSet<ServiceName>>,
    ) -> SyncOutcome;
    /// The operations a sync would perform now, as readable text, each piece
    /// printed on its own line(s) (a piece may hold many lines). Changes nothing.
    fn dry_run(&mut self, state: &ClusterState) -> anyhow::Result<Vec<String>>;
    /// Remove everything this mode owns in the kernel; keeps going after an
    /// error and returns all of them.
    fn cleanup(&mut self) -> Vec<crate::kernel::KernelError>;
}

/// A completed sync, as observers see it.
#[derive(Clone, Debug)]
pub struct SyncReport {
    pub started: SystemTime,
    pub duration: Duration,
    pub full: bool,
    pub outcome: SyncOutcome,
    /// Service/endpoint changes folded into this sync.
    pub service_changes: u64,
    pub endpoint_changes: u64,
    /// Endpoint change trigger times (unix ms) of the slices applied by this sync.
    pub trigger_times: Vec<i64>,
    /// API objects the store currently refuses as invalid.
    pub rejected_objects: u64,
    /// The health-check node ports the cluster now asks for, with their
    /// local endpoint counts (the same in both modes).
    pub health_checks: Vec<HealthCheck>,
}

/// Health and metrics hook into the loop.
pub trait SyncObserver: Send + Sync {
    /// State changed; a sync is pending.
    fn queued(&self) {}
    fn synced(&self, _report: &SyncReport) {}
    /// The source lost or regained its connection.
    fn source_connected(&self, _connected: bool) {}
    /// This node's Node object changed (None: unknown or deleted).
    fn node(&self, _node: Option<&Node>) {}
}

/// An observer that ignores everything.
pub struct NoObserver;
impl SyncObserver for NoObserver {}

/// Several observers, each told everything, in order.
pub struct Observers(pub Vec<Arc<dyn SyncObserver>>);

impl SyncObserver for Observers {
    fn queued(&self) {
        self.0.iter().for_each(|o| o.queued());
    }
    fn synced(&self, report: &SyncReport) {
        self.0.iter().for_each(|o| o.synced(report));
    }
    fn source_connected(&self, connected: bool) {
        self.0.iter().for_each(|o| o.source_connected(connected));
    }
    fn node(&self, node: Option<&Node>) {
        self.0.iter().for_each(|o| o.node(node));
    }
}

/// How the loop ends.
#[derive(Debug)]
pub enum Exit {
    /// `--once`: the outcome of the single sync.
    Once(SyncOutcome),
    /// The sources went away (channel closed).
    SourcesClosed,
}

pub struct SyncLoop<P: Proxier> {
    pub proxier: P,
    pub state: ClusterState,
    pub schedule: Schedule,
    pub observer: Arc<dyn SyncObserver>,
    /// Sync once after the sources report `Synced`, then return.
    pub once: bool,
}

impl<P: Proxier> SyncLoop<P> {
    /// Fold one event into the state; returns true when the state changed
    /// in a way that needs a sync.
    fn absorb(&mut self, ev: SourceEvent) -> bool {
        match ev {
            SourceEvent::Synced => {
                self.schedule.on_ready();
                true
            }
            SourceEvent::Connected(c) => {
                // Under the source's target: the loop's own info lines are
                // held back at the default verbosity, these two are not.
                if !c {
                    tracing::warn!(
                        target: "kproxy::source",
                        "source disconnected: keeping the programmed rules and repairing drift from the last known state"
                    );
                } else {
                    tracing::info!(target: "kproxy::source", "source connected again");
                }
                self.observer.source_connected(c);
                false
            }
            ev => {
                let about_node = ev.kind() == Some(Kind::Node);
                for p in self.state.apply(ev) {
                    tracing::warn!(object = %p.object, "{}", p.reason);
                }
                if about_node {
                    self.observer.node(self.state.node());
                }
                true
            }
        }
    }

    fn run_sync(&mut self, full: bool) -> SyncReport {
        let started = SystemTime::now();
        let t0 = Instant::now();
        let (svc0, ep0) = (self.state.service_changes, self.state.endpoint_changes);
        let changes = self.state.take_changes();
        let changed = if full { None } else { changes.as_ref() };
        let outcome = self.proxier.sync(&self.state, changed);
        let trigger_times = changes
            .iter()
            .flatten()
            .flat_map(|svc| self.state.slices_for(svc))
            .filter_map(|s| s.trigger_time)
            .collect();
        let report = SyncReport {
            started,
            duration: t0.elapsed(),
            full,
            service_changes: self.state.service_changes - svc0,
            endpoint_changes: self.state.endpoint_changes - ep0,
            trigger_times,
            rejected_objects: self.state.rejected().count() as u64,
            health_checks: health_checks(&self.state, &self.state.options.node_name),
            outcome,
        };
        for e in &report.outcome.errors {
            tracing::error!("{e}");
        }
        let by_kind: Vec<String> = report
            .outcome
            .ops
            .iter()
            .map(|(kind, n)| format!("{kind}:{n}"))
            .collect();
        tracing::info!(
            mode = %self.proxier.mode(),
            full,
            ops = report.outcome.total_ops(),
            kinds = by_kind.join(","),
            errors = report.outcome.errors.len(),
            elapsed_ms = report.duration.as_secs_f64() * 1e3,
            "sync done"
        );
        self.observer.synced(&report);
        report
    }

    /// Run until the sources close (or, with `once`, until one sync is done).
    /// The loop is plumbing: `Schedule` decides when to sync; events are
    /// read and folded into the state between syncs, however long a sync
    /// or a retry backoff takes.
    pub async fn run(mut self, mut events: UnboundedReceiver<SourceEvent>) -> Exit {
        loop {
            // tokio's clock, so tests can run the loop on a paused clock.
            let now = tokio::time::Instant::now().into_std();
            if let Some(kind) = self.schedule.due(now) {
                let full = kind == SyncKind::Full;
                // Kernel I/O is blocking; keep the runtime's other tasks
                // (sources, HTTP) moving while it runs.
                let report = match tokio::runtime::Handle::current().runtime_flavor() {
                    tokio::runtime::RuntimeFlavor::CurrentThread => self.run_sync(full),
                    _ => tokio::task::block_in_place(|| self.run_sync(full)),
                };
                let ok = report.outcome.ok();
                self.schedule
                    .on_sync(tokio::time::Instant::now().into_std(), ok);
                if report.outcome.draining > 0 {
                    self.schedule.recheck_within(DRAIN_CHECK);
                }
                if !ok {
                    tracing::warn!(
                        retry_in_ms = self.schedule.retry_delay().as_millis() as u64,
                        "sync incomplete; retrying in full after a backoff"
                    );
                }
                if self.once {
                    return Exit::Once(report.outcome);
                }
                continue;
            }
            let ev = match self.schedule.deadline() {
                Some(d) => {
                    let d = tokio::time::Instant::from_std(d);
                    match tokio::time::timeout_at(d, events.recv()).await {
                        Ok(ev) => ev,
                        Err(_) => continue,
                    }
                }
                None => events.recv().await,
            };
            let Some(ev) = ev else {
                return Exit::SourcesClosed;
            };
            let mut changed = self.absorb(ev);
            // Drain what is already queued so a burst becomes one sync.
            while let Ok(ev) = events.try_recv() {
                changed |= self.absorb(ev);
            }
            if changed {
                self.schedule.on_event();
                self.observer.queued();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Kind, ObjectRef};
    use crate::kernel::KernelError;
    use std::sync::Mutex;
    use tokio::sync::mpsc;
    use tokio::time::{Instant as TokioInstant, advance};

    /// Records when each sync ran and whether it was full; fails on demand.
    #[derive(Clone, Default)]
    struct Recorder {
        syncs: Arc<Mutex<Vec<(Duration, bool)>>>,
        fail_next: Arc<Mutex<u32>>,
        start: Option<TokioInstant>,
    }

    impl Proxier for Recorder {
        fn mode(&self) -> ProxyMode {
            ProxyMode::Ipvs
        }
        fn sync(
            &mut self,
            _s: &ClusterState,
            changed: Option<&BTreeSet<ServiceName>>,
        ) -> SyncOutcome {
            let at = self.start.unwrap().elapsed();
            self.syncs.lock().unwrap().push((at, changed.is_none()));
            let mut out = SyncOutcome::default();
            let mut f = self.fail_next.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                out.errors
                    .push(SyncError::Refused(KernelError::new("op", "kernel said no")));
            }
            out
        }
        fn dry_run(&mut self, _s: &ClusterState) -> anyhow::Result<Vec<String>> {
            Ok(vec![])
        }
        fn cleanup(&mut self) -> Vec<KernelError> {
            vec![]
        }
    }

    fn poke() -> SourceEvent {
        SourceEvent::Delete(ObjectRef::new(Kind::Service, "default", "gone"))
    }

    fn start(
        rec: &Recorder,
        min: u64,
        max: u64,
        once: bool,
    ) -> (
        mpsc::UnboundedSender<SourceEvent>,
        tokio::task::JoinHandle<Exit>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let lp = SyncLoop {
            proxier: rec.clone(),
            state: ClusterState::default(),
            schedule: Schedule::new(Duration::from_secs(min), Duration::from_secs(max)),
            observer: Arc::new(NoObserver),
            once,
        };
        (tx, tokio::spawn(lp.run(rx)))
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    fn times(rec: &Recorder) -> Vec<(u64, bool)> {
        rec.syncs
            .lock()
            .unwrap()
            .iter()
            .map(|(d, full)| (d.as_secs(), *full))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_syncs_before_the_source_has_delivered_its_initial_state() {
        let rec = Recorder {
            start: Some(TokioInstant::now()),
            ..Default::default()
        };
        let (tx, _h) = start(&rec, 1, 30, false);
        tx.send(poke()).unwrap();
        settle().await;
        advance(Duration::from_secs(100)).await;
        settle().await;
        assert!(times(&rec).is_empty());
        tx.send(SourceEvent::Synced).unwrap();
        settle().await;
        assert_eq!(times(&rec), vec![(100, true)]);
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_coalesce_and_min_period_bounds_the_rate() {
        let rec = Recorder {
            start: Some(TokioInstant::now()),
            ..Default::default()
        };
        let (tx, _h) = start(&rec, 2, 30, false);
        tx.send(SourceEvent::Synced).unwrap();
        settle().await;
        for _ in 0..50 {
            tx.send(poke()).unwrap();
        }
        settle().await;
        assert_eq!(
            times(&rec).len(),
            1,
            "a burst right after a sync waits for min period"
        );
        advance(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(
            times(&rec),
            vec![(0, true), (2, false)],
            "fifty events, one sync"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_full_resync_runs_without_events() {
        let rec = Recorder {
            start: Some(TokioInstant::now()),
            ..Default::default()
        };
        let (tx, _h) = start(&rec, 1, 30, false);
        tx.send(SourceEvent::Synced).unwrap();
        settle().await;
        for _ in 0..3 {
            advance(Duration::from_secs(30)).await;
            settle().await;
        }
        assert_eq!(
            times(&rec),
            vec![(0, true), (30, true), (60, true), (90, true)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_sync_is_retried_in_full_after_min_period() {
        let rec = Recorder {
            start: Some(TokioInstant::now()),
            fail_next: Arc::new(Mutex::new(1)),
            ..Default::default()
        };
        let (tx, _h) = start(&rec, 5, 60, false);
        tx.send(SourceEvent::Synced).unwrap();
        settle().await;
        advance(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(times(&rec), vec![(0, true), (5, true)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_changes_with_no_min_period_fold_into_one_sync() {
        let rec = Recorder {
            start: Some(TokioInstant::now()),
            ..Default::default()
        };
        let (tx, _h) = start(&rec, 0, 30, false);
        tx.send(SourceEvent::Synced).unwrap();
        settle().await;
        for _ in 0..1000 {
            tx.send(poke()).unwrap();
        }
        settle().await;
        assert_eq!(times(&rec), vec![(0, true), (0, false)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sync_that_keeps_failing_backs_off_while_events_keep_coming() {
        let rec = Recorder {
            start: Some(TokioInstant::now()),
            fail_next: Arc::new(Mutex::new(u32::MAX)),
            ..Default::default()
        };
        let (tx, h) = start(&rec, 0, 30, false);
        tx.send(SourceEvent::Synced).unwrap();
        settle().await;
        // 1,000 changes over 20 s, one every 20 ms, each read as it comes.
        for _ in 0..1000 {
            tx.send(poke()).unwrap();
            settle().await;
            advance(Duration::from_millis(20)).await;
        }
        settle().await;
        // Retries at 1, 2, 4 and 8 s after each failure: 0, 1, 3, 7, 15.
        assert_eq!(
            times(&rec),
            vec![(0, true), (1, true), (3, true), (7, true), (15, true)]
        );
        assert!(!h.is_finished(), "the loop is still reading events");
    }

    #[tokio::test(start_paused = true)]
    async fn once_returns_the_outcome_of_the_first_sync() {
        let rec = Recorder {
            start: Some(TokioInstant::now()),
            fail_next: Arc::new(Mutex::new(1)),
            ..Default::default()
        };
        let (tx, h) = start(&rec, 0, 30, true);
        tx.send(poke()).unwrap();
        tx.send(SourceEvent::Synced).unwrap();
        match h.await.unwrap() {
            Exit::Once(out) => assert_eq!(
                out.errors,
                vec![SyncError::Refused(KernelError::new("op", "kernel said no"))]
            ),
            other => panic!("expected Once, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_ends_when_every_source_is_gone() {
        let rec = Recorder {
            start: Some(TokioInstant::now()),
            ..Default::default()
        };
        let (tx, h) = start(&rec, 0, 30, false);
        drop(tx);
        assert!(matches!(h.await.unwrap(), Exit::SourcesClosed));
    }
}
