//! The applier: one `iptables-restore --noflush` per family, what the
//! proxier must remember of it for the next sync, and the counts.

use std::collections::{BTreeMap, BTreeSet};

use super::diff::{Changes, TopHashes};
use crate::cluster::IpFamily;
use crate::kernel::iptables::Iptables;
use crate::sync::{SyncError, SyncOutcome};

/// What one sync leaves for the next, per family.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// Families whose next sync must be full (never synced, or a read or
    /// restore failed, so the kernel may not hold what was written last).
    pub needs_full: BTreeSet<IpFamily>,
    /// The last restore input written (or, by a dry run, computed), when
    /// at most `KEEP_RESTORE_BYTES` (see `Ledger::keep`).
    pub last_restore: BTreeMap<IpFamily, String>,
    /// Per-Service chains in the kernel after the last successful restore.
    pub written: BTreeMap<IpFamily, BTreeSet<String>>,
    /// The top-level chains as the last successful restore left them.
    pub top: BTreeMap<IpFamily, TopHashes>,
}

/// Restore inputs up to this size are kept for inspection. A full restore
/// at 10,000 Services is ~50 MB that no sync reads again (partial syncs
/// compare hashes, `top`), so a large one is not kept.
pub const KEEP_RESTORE_BYTES: usize = 8 << 20;

impl Ledger {
    pub fn new(families: &[IpFamily]) -> Self {
        Self {
            needs_full: families.iter().copied().collect(),
            ..Default::default()
        }
    }

    /// Remember `text` as the last restore input for `family`, if small.
    pub fn keep(&mut self, family: IpFamily, text: String) {
        if text.len() <= KEEP_RESTORE_BYTES {
            self.last_restore.insert(family, text);
        } else {
            self.last_restore.remove(&family);
        }
    }
}

/// Write `changes` for `family` in one restore and count them into
/// `outcome`. `services` is how many Services the plan programs (for the
/// error, which says what did not go in).
pub fn apply<I: Iptables + ?Sized>(
    ipt: &mut I,
    family: IpFamily,
    changes: &Changes<'_>,
    services: usize,
    ledger: &mut Ledger,
    outcome: &mut SyncOutcome,
) {
    let text = changes.render_for(ipt.nf_tables());
    if text.is_empty() {
        // A partial sync where nothing the kernel holds has to change.
        ledger.keep(family, text);
        ledger.written.insert(family, changes.chains.clone());
        ledger.top.insert(family, changes.top.clone());
        return;
    }
    tracing::debug!(%family, full = changes.full, bytes = text.len(), "iptables-restore input:\n{text}");
    let result = ipt.restore(family, &text);
    ledger.keep(family, text);
    if let Err(source) = result {
        ledger.needs_full.insert(family);
        ledger.top.remove(&family);
        outcome.errors.push(SyncError::Rules {
            family,
            services,
            source,
        });
        return;
    }
    ledger.needs_full.remove(&family);
    ledger.written.insert(family, changes.chains.clone());
    ledger.top.insert(family, changes.top.clone());
    let mut count = |op: &'static str, n: usize, always: bool| {
        if always || n > 0 {
            *outcome.ops.entry(op).or_default() += n as u64;
        }
    };
    count("restore_rules", 1, true);
    count("write_chains", changes.written(), true);
    count("delete_chains", changes.restore.delete_nat.len(), false);
    count("insert_jumps", changes.restore.jumps.len(), false);
    count("repair_chains", changes.repaired(), false);
}
