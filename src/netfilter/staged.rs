//! A large nat restore split into several transactions, for the nf_tables
//! backend.
//!
//! iptables-nft-restore (1.8.9) keeps, per transaction, a sorted linked
//! list of every chain name its commands mention (each rule's chain and its
//! jump target) and inserts each name by walking that list from the head
//! (`cache_chain_list_insert` in iptables/nft-cache.c). One transaction of
//! R rules naming N chains therefore costs R × N string comparisons: for
//! 10,000 Services × 10 endpoints (110,000 chains, 330,000 rules) that is
//! minutes. Several smaller transactions cost R × (chains per section), at
//! the price of a fixed cost per commit (the kernel re-validates the table)
//! that grows with the table. Measured on this project's build machine
//! (iptables 1.8.9, fresh namespace, the same rules):
//!
//! | Services × 10 | one transaction | sections of ~3,000 rules + chains |
//! |---|---|---|
//! | 2,000 | 4.0 s | 1.2-1.5 s |
//! | 10,000 | 220 s (loaded machine) | 11-12 s |
//!
//! Why the split keeps every packet on a consistent path: chains are
//! written in dependency order (a chain only after every chain its rules
//! jump to), each chain is flushed and refilled inside one transaction, the
//! chains nothing else references (KUBE-SERVICES and the other roots) go in
//! the last one together with the jumps from built-in chains and the
//! deletions. Until that last commit, packets follow the old top-level rules
//! into chains that are either unchanged or already rewritten whole for
//! their Service. The legacy backend replaces the whole table on every
//! commit, so there one transaction stays the cheapest and nothing is split.

use std::collections::{HashMap, HashSet};

use super::ruleset::Chain;
use crate::kernel::iptables::jump_target;

/// Rules plus chains one section holds before it is closed. Chosen from the
/// measurements above: 1,000-3,000 gave the same time at 10,000 Services,
/// 600 was 1.6x slower (more commits), 9,000 was 10x slower.
pub const SECTION_BUDGET: usize = 3000;

/// The chains in the order of their sections: each inner list is one
/// transaction, every chain after the chains it jumps to. Returns one
/// section (the input order) when everything fits the budget.
pub fn sections<'a>(chains: &[&'a Chain], budget: usize) -> Vec<Vec<&'a Chain>> {
    let size = |c: &Chain| 1 + c.rules.len();
    if chains.iter().map(|c| size(c)).sum::<usize>() <= budget {
        return vec![chains.to_vec()];
    }
    let levels = levels(chains);
    let top = levels.values().copied().max().unwrap_or(0);
    let mut by_level: Vec<Vec<&'a Chain>> = vec![Vec::new(); top + 1];
    for c in chains {
        by_level[levels[c.name.as_str()]].push(c);
    }
    let mut out: Vec<Vec<&'a Chain>> = Vec::new();
    for (level, group) in by_level.into_iter().enumerate() {
        // The top level holds the roots: one transaction, whatever its size.
        if level == top {
            out.push(group);
            continue;
        }
        let mut section: Vec<&'a Chain> = Vec::new();
        let mut used = 0;
        for c in group {
            if !section.is_empty() && used + size(c) > budget {
                out.push(std::mem::take(&mut section));
                used = 0;
            }
            used += size(c);
            section.push(c);
        }
        if !section.is_empty() {
            out.push(section);
        }
    }
    out
}

/// Each chain's depth: 0 when its rules jump to no chain written in this
/// restore, otherwise one more than the deepest chain it jumps to. Chains
/// outside the restore already exist, so they impose no order.
fn levels<'a>(chains: &[&'a Chain]) -> HashMap<&'a str, usize> {
    let by_name: HashMap<&str, &Chain> = chains.iter().map(|c| (c.name.as_str(), *c)).collect();
    let mut level: HashMap<&'a str, usize> = HashMap::with_capacity(chains.len());
    for c in chains {
        // Iterative depth-first walk (chains nest a few levels deep, but an
        // explicit stack keeps a malformed plan from overflowing ours).
        let mut stack: Vec<(&'a Chain, bool)> = vec![(c, false)];
        let mut on_path: HashSet<&str> = HashSet::new();
        while let Some((chain, children_done)) = stack.pop() {
            let name = chain.name.as_str();
            if level.contains_key(name) {
                continue;
            }
            let targets = targets(chain)
                .filter_map(|t| by_name.get(t).copied())
                .filter(|t| t.name != chain.name);
            if children_done {
                on_path.remove(name);
                let depth = targets
                    .map(|t| level.get(t.name.as_str()).map_or(0, |l| l + 1))
                    .max()
                    .unwrap_or(0);
                level.insert(name, depth);
                continue;
            }
            on_path.insert(name);
            stack.push((chain, true));
            for t in targets {
                // A loop (which the kernel refuses anyway) is cut here rather
                // than walked forever.
                if !level.contains_key(t.name.as_str()) && !on_path.contains(t.name.as_str()) {
                    stack.push((t, false));
                }
            }
        }
    }
    level
}

/// The chains a chain's rules jump to.
fn targets(chain: &Chain) -> impl Iterator<Item = &str> + '_ {
    chain.rules.iter().filter_map(|rule| jump_target(rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(name: &str, rules: &[&str]) -> Chain {
        Chain {
            name: name.into(),
            rules: rules.iter().map(|r| r.to_string()).collect(),
            owner: None,
        }
    }

    fn names(sections: &[Vec<&Chain>]) -> Vec<Vec<String>> {
        sections
            .iter()
            .map(|s| s.iter().map(|c| c.name.clone()).collect())
            .collect()
    }

    #[test]
    fn a_restore_within_the_budget_is_one_section_in_its_own_order() {
        let svc = chain("KUBE-SVC-A", &["-j KUBE-SEP-A"]);
        let sep = chain("KUBE-SEP-A", &["-j DNAT --to-destination 10.0.0.1:80"]);
        let all = [&svc, &sep];
        assert_eq!(names(&sections(&all, 100)), [["KUBE-SVC-A", "KUBE-SEP-A"]]);
    }

    #[test]
    fn chains_come_after_the_chains_they_jump_to_and_roots_come_last() {
        let services = chain(
            "KUBE-SERVICES",
            &[
                "-d 10.96.0.1/32 -j KUBE-SVC-A",
                "-d 10.96.0.2/32 -j KUBE-SVC-B",
                "-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
            ],
        );
        let nodeports = chain("KUBE-NODEPORTS", &["-p tcp --dport 30080 -j KUBE-EXT-B"]);
        let ext = chain("KUBE-EXT-B", &["-j KUBE-MARK-MASQ", "-j KUBE-SVC-B"]);
        let svc_a = chain("KUBE-SVC-A", &["-j KUBE-SEP-A1", "-j KUBE-SEP-A2"]);
        let svc_b = chain("KUBE-SVC-B", &["-j KUBE-SEP-B1"]);
        let mark = chain("KUBE-MARK-MASQ", &["-j MARK --or-mark 0x4000"]);
        let sep = |n: &str| {
            chain(
                n,
                &[
                    "-j KUBE-MARK-MASQ",
                    "-p tcp -j DNAT --to-destination 10.0.0.1:80",
                ],
            )
        };
        let (a1, a2, b1) = (sep("KUBE-SEP-A1"), sep("KUBE-SEP-A2"), sep("KUBE-SEP-B1"));
        // Written in an order that breaks every dependency.
        let all = [
            &services, &nodeports, &ext, &svc_a, &svc_b, &a1, &a2, &b1, &mark,
        ];
        let got = names(&sections(&all, 6));
        assert_eq!(
            got,
            [
                vec!["KUBE-MARK-MASQ"],
                vec!["KUBE-SEP-A1", "KUBE-SEP-A2"],
                vec!["KUBE-SEP-B1"],
                vec!["KUBE-SVC-A", "KUBE-SVC-B"],
                vec!["KUBE-EXT-B"],
                vec!["KUBE-NODEPORTS"],
                vec!["KUBE-SERVICES"],
            ]
        );
    }

    #[test]
    fn a_chain_larger_than_the_budget_gets_a_section_of_its_own() {
        let rules: Vec<String> = (0..10).map(|i| format!("-j KUBE-SEP-{i}")).collect();
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        let big = chain("KUBE-SVC-BIG", &rules);
        let small = chain("KUBE-SVC-SMALL", &["-j DNAT --to-destination 10.0.0.1:80"]);
        let root = chain("KUBE-SERVICES", &["-j KUBE-SVC-BIG", "-j KUBE-SVC-SMALL"]);
        let all = [&small, &big, &root];
        assert_eq!(
            names(&sections(&all, 5)),
            [
                vec!["KUBE-SVC-SMALL"],
                vec!["KUBE-SVC-BIG"],
                vec!["KUBE-SERVICES"]
            ]
        );
    }

    #[test]
    fn a_loop_in_a_malformed_plan_ends() {
        let a = chain("A", &["-j B", "-j X", "-j X", "-j X"]);
        let b = chain("B", &["-j A", "-j X", "-j X", "-j X"]);
        let all = [&a, &b];
        let got = sections(&all, 2);
        assert_eq!(got.iter().map(Vec::len).sum::<usize>(), 2);
    }
}
