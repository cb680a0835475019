//! The applier: runs the diff's operations in order against the adapters,
//! batched per adapter, and counts what went in and what the kernel refused.
//! It stops at nothing: each failure is reported and the rest still go in,
//! except where a later operation depends on a refused one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::live::Companions;
use super::ops::Op;
use super::planner::DUMMY_LINK;
use super::sets::{SetOp, restore_script};
use crate::kernel::KernelError;
use crate::kernel::ipvs::{Ipvs, IpvsOp, ServiceKey};
use crate::kernel::link::Links;
use crate::net::IpFamily;
use crate::netfilter::cleanup;
use crate::sync::{SyncError, SyncOutcome};

/// The adapters an apply writes through.
pub struct Adapters<'a> {
    pub ipvs: &'a mut dyn Ipvs,
    pub links: &'a mut dyn Links,
    pub companions: Option<&'a mut Companions>,
}

/// What happened beyond the counts, for the proxier's bookkeeping.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// Some ipset operation failed (part of a batch may have run).
    pub sets_failed: bool,
    /// Families whose companion chains failed to be written.
    pub chains_failed: BTreeSet<IpFamily>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Link,
    AddAddr,
    DelAddr,
    Ipvs,
    Ipset,
    Chains,
    Leftovers,
}

fn class_of(op: &Op) -> Class {
    match op {
        Op::CreateLink => Class::Link,
        Op::AddAddress(_) => Class::AddAddr,
        Op::DelAddress(_) => Class::DelAddr,
        Op::Ipvs(_) => Class::Ipvs,
        Op::Ipset(_) => Class::Ipset,
        Op::Chains(_) => Class::Chains,
        Op::RemoveLeftovers(..) => Class::Leftovers,
    }
}

/// Apply `ops` in order, one batch per run of operations on one adapter.
/// An address is bound before the virtual servers that use it and unbound
/// after them (the diff orders them so). Chains are written only if every
/// set they may name exists; leftovers of a family are removed only after
/// its chains went in.
pub fn apply(k: &mut Adapters<'_>, ops: &[Op], outcome: &mut SyncOutcome) -> Applied {
    let mut applied = Applied::default();
    let mut i = 0;
    while i < ops.len() {
        let start = i;
        let class = class_of(&ops[i]);
        while i < ops.len() && class_of(&ops[i]) == class {
            i += 1;
        }
        let batch = &ops[start..i];
        match class {
            Class::Ipset => apply_sets(k, batch, outcome, &mut applied),
            Class::Chains => apply_chains(k, batch, outcome, &mut applied),
            Class::Leftovers => apply_leftovers(k, batch, outcome, &applied),
            _ => {
                let results = apply_core(k, class, batch);
                count_core(batch, results, outcome);
            }
        }
    }
    applied
}

fn apply_core(k: &mut Adapters<'_>, class: Class, batch: &[Op]) -> Vec<Result<(), KernelError>> {
    match class {
        Class::Link => batch
            .iter()
            .map(|_| k.links.ensure_dummy(DUMMY_LINK).map(|_| ()))
            .collect(),
        Class::AddAddr => k.links.add_addresses(DUMMY_LINK, &addrs(batch)),
        Class::DelAddr => k.links.del_addresses(DUMMY_LINK, &addrs(batch)),
        _ => {
            let ipvs_ops: Vec<IpvsOp> = batch
                .iter()
                .filter_map(|o| match o {
                    Op::Ipvs(op) => Some(op.clone()),
                    _ => None,
                })
                .collect();
            k.ipvs.apply(&ipvs_ops)
        }
    }
}

/// Count IPVS and link results. When the kernel refuses a virtual server,
/// every real server sent after it fails too (ESRCH): those follow-on
/// failures are summarised in one error rather than reported one by one.
fn count_core(batch: &[Op], results: Vec<Result<(), KernelError>>, outcome: &mut SyncOutcome) {
    let mut refused: BTreeSet<ServiceKey> = BTreeSet::new();
    let mut orphaned: BTreeMap<ServiceKey, usize> = BTreeMap::new();
    for (op, r) in batch.iter().zip(results) {
        match (r, op) {
            (Ok(()), _) => *outcome.ops.entry(op.kind()).or_default() += 1,
            (Err(_), Op::Ipvs(IpvsOp::AddDest(k, _) | IpvsOp::EditDest(k, _)))
                if refused.contains(k) =>
            {
                *orphaned.entry(*k).or_default() += 1;
            }
            (Err(e), Op::Ipvs(ipvs_op)) => {
                if let IpvsOp::AddService(vs) = ipvs_op {
                    refused.insert(vs.key);
                }
                outcome.errors.push(SyncError::Refused(e));
            }
            (Err(e), _) => outcome.errors.push(SyncError::Link(e)),
        }
    }
    for (service, count) in orphaned {
        outcome
            .errors
            .push(SyncError::RealServersOrphaned { service, count });
    }
}

fn addrs(batch: &[Op]) -> Vec<IpAddr> {
    batch
        .iter()
        .filter_map(|o| match o {
            Op::AddAddress(a) | Op::DelAddress(a) => Some(*a),
            _ => None,
        })
        .collect()
}

/// One `ipset restore` for the whole batch.
fn apply_sets(
    k: &mut Adapters<'_>,
    batch: &[Op],
    outcome: &mut SyncOutcome,
    applied: &mut Applied,
) {
    let Some(c) = k.companions.as_deref_mut() else {
        return;
    };
    let set_ops: Vec<&SetOp> = batch
        .iter()
        .filter_map(|o| match o {
            Op::Ipset(op) => Some(op),
            _ => None,
        })
        .collect();
    match c.ipsets.restore(&restore_script(set_ops.iter().copied())) {
        Ok(()) => {
            for op in set_ops {
                *outcome.ops.entry(op.kind()).or_default() += 1;
            }
        }
        Err(e) => {
            applied.sets_failed = true;
            // Rules naming a set that was not created would be refused as a
            // whole: the chains wait for the next sync.
            if set_ops.iter().any(|o| matches!(o, SetOp::Create { .. })) {
                applied.chains_failed.extend(c.families.iter().copied());
            }
            outcome.errors.push(SyncError::Ipsets(e));
        }
    }
}

/// One restore per family.
fn apply_chains(
    k: &mut Adapters<'_>,
    batch: &[Op],
    outcome: &mut SyncOutcome,
    applied: &mut Applied,
) {
    let Some(c) = k.companions.as_deref_mut() else {
        return;
    };
    // A failed set creation has already marked every family.
    let skip = applied.chains_failed.clone();
    for op in batch {
        let Op::Chains(w) = op else { continue };
        if skip.contains(&w.family) {
            continue;
        }
        for ch in w.nat.iter().chain(&w.filter) {
            tracing::debug!(family = %w.family, chain = %ch.name, "writing companion chain");
        }
        match c.ipt.restore(w.family, &w.render()) {
            Ok(()) => *outcome.ops.entry(op.kind()).or_default() += w.size() as u64,
            Err(source) => {
                applied.chains_failed.insert(w.family);
                outcome.errors.push(SyncError::CompanionRules {
                    family: w.family,
                    source,
                });
            }
        }
    }
}

fn apply_leftovers(
    k: &mut Adapters<'_>,
    batch: &[Op],
    outcome: &mut SyncOutcome,
    applied: &Applied,
) {
    let Some(c) = k.companions.as_deref_mut() else {
        return;
    };
    for op in batch {
        let Op::RemoveLeftovers(family, removal) = op else {
            continue;
        };
        // The old chains stay reachable until the shared ones are rewritten.
        if applied.chains_failed.contains(family) {
            continue;
        }
        let errors = cleanup::remove(c.ipt.as_mut(), *family, removal);
        if errors.is_empty() {
            *outcome.ops.entry(op.kind()).or_default() += 1;
        }
        outcome
            .errors
            .extend(errors.into_iter().map(SyncError::Leftovers));
    }
}
