//! When to sync, as a value: upstream's bounded-frequency runner (min,
//! retry and max intervals) kept apart from the work and from the clock,
//! so every rule is unit-tested without tokio.
//!
//! - Nothing runs before the source has delivered its initial state.
//! - A change runs a sync no sooner than `min` after the previous one ended.
//! - A full sync runs at least once per `max` (the sync period).
//! - A failed sync is retried in full after a backoff that starts at
//!   `FIRST_RETRY` (or `min`, if longer) and doubles up to `max`; changes
//!   arriving meanwhile are folded into that retry instead of running the
//!   failing sync again at once.

use std::time::{Duration, Instant};

/// The kind of sync that is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// Only what changed since the last sync.
    Partial,
    /// Everything, re-read from the kernel.
    Full,
}

#[derive(Clone, Debug)]
pub struct Schedule {
    min: Duration,
    max: Duration,
    retry: Duration,
    /// The source has delivered its initial state.
    ready: bool,
    /// Something changed since the last sync.
    dirty: bool,
    /// When the last sync ended; None before the first.
    last_end: Option<Instant>,
    /// Failed syncs in a row.
    failures: u32,
    /// The last sync left work the kernel finishes on its own (real servers
    /// draining): look again within this long, even when nothing changes.
    recheck: Option<Duration>,
}

/// The first retry after a failure comes after this long (or after `min`,
/// when that is longer): a kernel that refuses every change must not be
/// asked again in a tight loop.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

impl Schedule {
    /// `min`: the min-sync-period; `max`: the sync period (also the longest
    /// retry backoff).
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            retry: FIRST_RETRY.max(min).min(max),
            ready: false,
            dirty: false,
            last_end: None,
            failures: 0,
            recheck: None,
        }
    }

    /// The source has delivered its initial state: syncing may begin.
    pub fn on_ready(&mut self) {
        self.ready = true;
    }

    /// The cluster state changed.
    pub fn on_event(&mut self) {
        self.dirty = true;
    }

    /// A sync ended at `now`.
    pub fn on_sync(&mut self, now: Instant, ok: bool) {
        self.last_end = Some(now);
        self.dirty = false;
        self.recheck = None;
        self.failures = if ok {
            0
        } else {
            self.failures.saturating_add(1)
        };
    }

    /// The sync that just ended wants a full sync again within `within`
    /// (or the sync period, if sooner). Cleared by the next sync.
    pub fn recheck_within(&mut self, within: Duration) {
        self.recheck = Some(within);
    }

    /// The longest wait for a full sync after the last one.
    fn period(&self) -> Duration {
        self.recheck.map_or(self.max, |r| r.min(self.max))
    }

    /// How long after the last (failed) sync the retry comes.
    pub fn retry_delay(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(16);
        self.retry.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// When the next sync is due if nothing else happens; None while
    /// waiting for the source.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.ready {
            return None;
        }
        let Some(end) = self.last_end else {
            // Ready and never synced: now.
            return Some(Instant::now());
        };
        let periodic = end + self.period();
        Some(if self.failures > 0 {
            (end + self.retry_delay()).min(periodic)
        } else if self.dirty {
            (end + self.min).min(periodic)
        } else {
            periodic
        })
    }

    /// What sync, if any, is due at `now`.
    pub fn due(&self, now: Instant) -> Option<SyncKind> {
        if !self.ready {
            return None;
        }
        let Some(end) = self.last_end else {
            return Some(SyncKind::Full);
        };
        if now >= end + self.period() {
            return Some(SyncKind::Full);
        }
        if self.failures > 0 {
            return (now >= end + self.retry_delay()).then_some(SyncKind::Full);
        }
        (self.dirty && now >= end + self.min).then_some(SyncKind::Partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_recheck_brings_the_next_full_sync_forward_once() {
        let t0 = Instant::now();
        let mut s = Schedule::new(S, 300 * S);
        s.on_ready();
        s.on_sync(t0, true);
        s.recheck_within(60 * S);
        assert_eq!(s.deadline(), Some(t0 + 60 * S));
        assert_eq!(s.due(t0 + 59 * S), None);
        assert_eq!(s.due(t0 + 60 * S), Some(SyncKind::Full));
        // Never later than the sync period.
        s.recheck_within(900 * S);
        assert_eq!(s.deadline(), Some(t0 + 300 * S));
        // The next sync clears it: back to the sync period.
        let t1 = t0 + 60 * S;
        s.on_sync(t1, true);
        assert_eq!(s.deadline(), Some(t1 + 300 * S));
    }

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn nothing_is_due_before_the_source_is_ready() {
        let t0 = Instant::now();
        let mut s = Schedule::new(S, 30 * S);
        s.on_event();
        assert_eq!(s.due(at(t0, 100)), None);
        assert_eq!(s.deadline(), None);
        s.on_ready();
        assert_eq!(s.due(at(t0, 100)), Some(SyncKind::Full));
    }

    #[test]
    fn a_change_waits_for_min_after_the_last_sync() {
        let t0 = Instant::now();
        let mut s = Schedule::new(2 * S, 30 * S);
        s.on_ready();
        s.on_sync(t0, true);
        assert_eq!(s.due(at(t0, 1)), None, "nothing changed");
        s.on_event();
        assert_eq!(s.due(at(t0, 1)), None, "within min");
        assert_eq!(s.deadline(), Some(at(t0, 2)));
        assert_eq!(s.due(at(t0, 2)), Some(SyncKind::Partial));
    }

    #[test]
    fn the_sync_period_brings_a_full_sync_without_changes() {
        let t0 = Instant::now();
        let mut s = Schedule::new(S, 30 * S);
        s.on_ready();
        s.on_sync(t0, true);
        assert_eq!(s.deadline(), Some(at(t0, 30)));
        assert_eq!(s.due(at(t0, 29)), None);
        assert_eq!(s.due(at(t0, 30)), Some(SyncKind::Full));
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_sync_period() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Duration::ZERO, 30 * S);
        s.on_ready();
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..7 {
            s.on_sync(now, false);
            // Changes keep arriving: they do not cut the backoff short.
            s.on_event();
            let just_before = now + s.retry_delay() - Duration::from_millis(1);
            assert_eq!(s.due(just_before), None);
            let next = s.deadline().unwrap();
            assert_eq!(s.due(next), Some(SyncKind::Full));
            delays.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        s.on_sync(now, true);
        assert_eq!(s.retry_delay(), S, "a success resets the backoff");
        assert_eq!(s.due(now), None);
    }

    #[test]
    fn a_long_min_period_is_also_the_first_retry() {
        let t0 = Instant::now();
        let mut s = Schedule::new(5 * S, 60 * S);
        s.on_ready();
        s.on_sync(t0, false);
        assert_eq!(s.deadline(), Some(at(t0, 5)));
        assert_eq!(s.due(at(t0, 5)), Some(SyncKind::Full));
    }
}
