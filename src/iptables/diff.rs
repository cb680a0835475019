//! The diff: one family's plan against what the reader found → the restore
//! that brings the kernel there. Pure.
//!
//! - Full: every chain kproxy owns is written; chains that differed are
//!   counted as repaired drift.
//! - Partial (trusted): the top-level chains and the changed Services'
//!   chains are written, and the per-Service chains written last time that
//!   the plan no longer has are deleted.
//! - Dry run: the top-level chains and the chains of any Service whose
//!   chains differ from the dump.
//!
//! With a dump, per-Service chains in it that the plan no longer has are
//! deleted, missing jumps from the built-in chains are inserted and missing
//! canaries created. Only per-Service KUBE-* chains are ever deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use super::live::{CANARY_TABLES, Live};
use crate::cluster::ServiceName;
use crate::netfilter::chains::{CANARY, is_service_chain};
use crate::netfilter::ruleset::SavedTables;
use crate::netfilter::ruleset::{Chain, RestorePlan, Ruleset, SavedTable};

/// A per-Service chain whose kernel copy is not the plan's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub chain: String,
    pub service: ServiceName,
    /// The chain is there with other rules (edited by hand). A chain that
    /// is simply missing, as after a restart, is not drift worth counting.
    pub edited: bool,
}

/// What one family's restore writes, and what it amounts to.
#[derive(Clone, Debug)]
pub struct Changes<'a> {
    pub restore: RestorePlan<'a>,
    /// Every owned chain is written.
    pub full: bool,
    /// Per-Service chains that differ from the dump (none without a dump).
    pub drift: Vec<Drift>,
    /// The per-Service chains in the kernel once the restore is applied.
    pub chains: BTreeSet<String>,
    /// The top-level chains' content once the restore is applied.
    pub top: TopHashes,
}

/// Each top-level chain's rules as a hash, by (table, chain): what a
/// partial sync compares with to leave an unchanged top-level chain alone.
pub type TopHashes = BTreeMap<(&'static str, String), u64>;

fn rules_hash(c: &Chain) -> u64 {
    let mut h = DefaultHasher::new();
    c.rules.hash(&mut h);
    h.finish()
}

/// The top-level chains of `plan`, hashed.
pub fn top_hashes(plan: &Ruleset) -> TopHashes {
    let tables = [("nat", &plan.nat.chains), ("filter", &plan.filter.chains)];
    tables
        .into_iter()
        .flat_map(|(t, chains)| {
            chains
                .iter()
                .filter(|c| c.owner.is_none())
                .map(move |c| ((t, c.name.clone()), rules_hash(c)))
        })
        .collect()
}

/// Drop from a partial sync's restore the top-level chains whose rules are
/// what the last restore wrote (`last`). KUBE-SERVICES and KUBE-NODEPORTS
/// grow with the cluster: rewriting them for one changed endpoint would make
/// every small change cost as much as the cluster is large. The kernel is
/// trusted to still hold them, as the partial sync trusts it for every
/// chain it does not write; the canary catches a flush.
pub fn skip_unchanged_top(restore: &mut RestorePlan<'_>, last: &TopHashes) {
    let unchanged = |t: &'static str, c: &Chain| {
        c.owner.is_none() && last.get(&(t, c.name.clone())) == Some(&rules_hash(c))
    };
    restore.nat.retain(|c| !unchanged("nat", c));
    restore.filter.retain(|c| !unchanged("filter", c));
}

impl Changes<'_> {
    /// The restore input for a backend: split into transactions on
    /// nf_tables when large (`netfilter/staged.rs`), one otherwise.
    pub fn render_for(&self, nf_tables: bool) -> String {
        if nf_tables {
            self.restore.render_staged()
        } else {
            self.restore.render()
        }
    }

    /// Chains declared and filled.
    pub fn written(&self) -> usize {
        self.restore.nat.len() + self.restore.filter.len()
    }

    /// Chains edited by hand that this restore puts back.
    pub fn repaired(&self) -> usize {
        self.drift.iter().filter(|d| d.edited).count()
    }
}

/// The restore that brings `live` to `plan`. `written` is the set of
/// per-Service chains the last successful restore left in the kernel.
pub fn diff<'a>(plan: &'a Ruleset, live: &Live<'_>, written: &BTreeSet<String>) -> Changes<'a> {
    let planned: BTreeSet<&str> = plan.nat.chains.iter().map(|c| c.name.as_str()).collect();
    let chains = planned
        .iter()
        .filter(|c| is_service_chain(c))
        .map(|c| c.to_string())
        .collect();
    let mut restore = RestorePlan {
        filter: plan.filter.chains.iter().collect(),
        ..Default::default()
    };
    let (snapshot, full) = match live {
        Live::Trusted(changed) => {
            restore.nat = plan
                .nat
                .chains
                .iter()
                .filter(|c| c.owner.as_ref().is_none_or(|o| changed.contains(o)))
                .collect();
            restore.delete_nat = written
                .iter()
                .filter(|c| !planned.contains(c.as_str()))
                .cloned()
                .collect();
            return Changes {
                restore,
                full: false,
                drift: Vec::new(),
                chains,
                top: top_hashes(plan),
            };
        }
        Live::Full(s) => (s, true),
        Live::Diff(s) => (s, false),
    };
    let drift = drift(plan, &snapshot.nat);
    let differs: BTreeSet<&ServiceName> = drift.iter().map(|d| &d.service).collect();
    restore.nat = plan
        .nat
        .chains
        .iter()
        .filter(|c| full || c.owner.as_ref().is_none_or(|o| differs.contains(o)))
        .collect();
    compare_dump(plan, snapshot, &planned, &mut restore);
    Changes {
        restore,
        full,
        drift,
        chains,
        top: top_hashes(plan),
    }
}

/// The planned per-Service chains that `nat` does not hold as planned.
fn drift(plan: &Ruleset, nat: &SavedTable) -> Vec<Drift> {
    plan.nat
        .chains
        .iter()
        .filter_map(|c| {
            let owner = c.owner.as_ref()?;
            (!nat.matches(&c.name, &c.rules)).then(|| Drift {
                chain: c.name.clone(),
                service: owner.clone(),
                edited: nat.has(&c.name),
            })
        })
        .collect()
}

/// What only a dump shows: missing jumps, stale per-Service chains and
/// missing canaries.
fn compare_dump<'a>(
    plan: &'a Ruleset,
    snapshot: &SavedTables,
    planned: &BTreeSet<&str>,
    restore: &mut RestorePlan<'a>,
) {
    for j in &plan.jumps {
        let saved = if j.table == "nat" {
            &snapshot.nat
        } else {
            &snapshot.filter
        };
        if !saved.contains_rule(j.from, &j.rule) {
            restore.jumps.push(j);
        }
    }
    restore.delete_nat = snapshot
        .nat
        .chains
        .keys()
        .filter(|c| is_service_chain(c) && !planned.contains(c.as_str()))
        .cloned()
        .collect();
    for table in CANARY_TABLES {
        if !snapshot.get(table).has(CANARY) {
            restore.canary.push(table);
        }
    }
}
