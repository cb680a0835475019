//! Removing chains and jumps: what `--cleanup` does, and what a mode does to
//! the other mode's leftovers.
//!
//! Deciding what to remove is pure (`leftovers`, from a saved table);
//! removing it is one restore per table (`remove`), retried piece by piece
//! when the kernel refuses the batch. Chains and rules that are not the
//! iptables mode's, or not named in the removal, are never touched.

use super::chains::{
    CANARY, IPTABLES_FILTER_TOP_CHAINS, IPTABLES_NAT_TOP_CHAINS, is_service_chain,
};
use super::ruleset::{Ruleset, SavedTable, normalize};
use crate::kernel::KernelError;
use crate::kernel::iptables::{Iptables, jump_target};
use crate::net::IpFamily;

/// How much of the iptables mode's state `leftovers` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leftovers<'a> {
    /// Everything: jumps from the built-in chains, the top-level chains, every
    /// per-Service chain and the canaries (`--cleanup`, or before another
    /// mode's first sync).
    All,
    /// Only the per-Service chains (KUBE-SVC/SVL/EXT/FW/SEP).
    ServiceChainsOnly,
    /// Everything except the chains and jumps of this ruleset: what the IPVS
    /// mode removes once it has rewritten the chains the two modes share
    /// (KUBE-SERVICES, KUBE-POSTROUTING, ...), so those never go missing and
    /// nothing refers to the per-Service chains any more.
    AllBut(&'a Ruleset),
}

/// Jumps are only ever added to (and so only removed from) these.
const BUILTIN_CHAINS: &[&str] = &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// The tables the iptables mode writes to.
pub const TABLES: [&str; 3] = ["nat", "filter", "mangle"];

/// What to take out of one table: jump rules (`-D CHAIN ARGS`), then chains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removal {
    pub table: &'static str,
    pub unlink: Vec<String>,
    pub doomed: Vec<String>,
}

impl Removal {
    pub fn is_empty(&self) -> bool {
        self.unlink.is_empty() && self.doomed.is_empty()
    }

    /// One restore: flush the doomed chains (so nothing of ours refers to
    /// another), delete the jumps, then delete the chains.
    fn script(&self, unlink: &[String], doomed: &[String]) -> String {
        let table = self.table;
        let mut s = format!("*{table}\n");
        for c in doomed {
            s.push_str(&format!(":{c} - [0:0]\n"));
        }
        for u in unlink {
            s.push_str(u);
            s.push('\n');
        }
        for c in doomed {
            s.push_str(&format!("-X {c}\n"));
        }
        s.push_str("COMMIT\n");
        s
    }
}

/// The iptables mode's chains and jumps in `saved` (table `table`) that
/// `scope` selects.
pub fn leftovers(saved: &SavedTable, table: &'static str, scope: Leftovers<'_>) -> Removal {
    let keep = match scope {
        Leftovers::AllBut(rs) => Some(rs),
        _ => None,
    };
    let all = scope != Leftovers::ServiceChainsOnly;
    let owned_top: &[&str] = match table {
        "nat" => IPTABLES_NAT_TOP_CHAINS,
        "filter" => IPTABLES_FILTER_TOP_CHAINS,
        _ => &[],
    };
    let kept_chain = |c: &str| {
        keep.is_some_and(|k| match table {
            "nat" => k.nat.get(c).is_some(),
            "filter" => k.filter.get(c).is_some(),
            _ => false,
        })
    };
    let kept_jump = |from: &str, rule: &str| {
        keep.is_some_and(|k| {
            k.jumps.iter().any(|j| {
                j.table == table && j.from == from && normalize(&j.rule) == normalize(rule)
            })
        })
    };
    let mut unlink = Vec::new();
    if all {
        for (chain, rules) in &saved.chains {
            if !BUILTIN_CHAINS.contains(&chain.as_str()) {
                continue;
            }
            for r in rules {
                if jump_target(r).is_some_and(|t| owned_top.contains(&t)) && !kept_jump(chain, r) {
                    unlink.push(format!("-D {chain} {r}"));
                }
            }
        }
    }
    let doomed = saved
        .chains
        .keys()
        .filter(|c| {
            is_service_chain(c) || (all && (owned_top.contains(&c.as_str()) || *c == CANARY))
        })
        .filter(|c| !kept_chain(c))
        .cloned()
        .collect();
    Removal {
        table,
        unlink,
        doomed,
    }
}

/// Apply `removal` in one restore. When the kernel refuses the batch
/// (another component's rule still refers to a chain), remove what can be
/// removed one at a time and return the rest as errors.
pub fn remove(ipt: &mut dyn Iptables, family: IpFamily, removal: &Removal) -> Vec<KernelError> {
    let mut errors = Vec::new();
    if removal.is_empty() {
        return errors;
    }
    let table = removal.table;
    let Err(e) = ipt.restore(family, &removal.script(&removal.unlink, &removal.doomed)) else {
        return errors;
    };
    tracing::warn!(%family, table, "cleanup batch refused ({e}); retrying one by one");
    for u in &removal.unlink {
        if let Err(e) = ipt.restore(family, &removal.script(std::slice::from_ref(u), &[])) {
            errors.push(KernelError {
                op: format!("{family} {table}: removing jump `{u}`"),
                ..e
            });
        }
    }
    for c in &removal.doomed {
        let flush = format!("*{table}\n:{c} - [0:0]\nCOMMIT\n");
        let _ = ipt.restore(family, &flush);
    }
    for c in &removal.doomed {
        if let Err(e) = ipt.restore(family, &format!("*{table}\n-X {c}\nCOMMIT\n")) {
            errors.push(KernelError {
                op: format!("{family} {table}: deleting chain {c}"),
                ..e
            });
        }
    }
    errors
}

/// Remove what the iptables mode (kproxy's or kube-proxy's) left in the
/// kernel, for each family. Keeps going after an error and returns them all.
pub fn cleanup_iptables_leftovers(
    ipt: &mut dyn Iptables,
    families: &[IpFamily],
    scope: Leftovers<'_>,
) -> Vec<KernelError> {
    let mut errors = Vec::new();
    for &family in families {
        let dump = match ipt.save(family) {
            Ok(s) => s,
            Err(e) => {
                errors.push(KernelError {
                    op: format!("{family} cleanup: {}", e.op),
                    ..e
                });
                continue;
            }
        };
        for table in TABLES {
            let removal = leftovers(&SavedTable::parse(&dump, table), table, scope);
            errors.extend(remove(ipt, family, &removal));
        }
    }
    errors
}
