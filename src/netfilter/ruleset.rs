//! The desired iptables state as chains of rules, its rendering into
//! `iptables-restore` input, and the reading of `iptables-save` output.
//!
//! Rules are kept as the argument text that follows `-A CHAIN`, written the
//! way upstream kube-proxy writes them. `iptables-save` prints the same rule
//! differently (options reordered, `/32` added, `--or-mark` shown as
//! `--set-xmark`, probabilities rounded to the kernel's 31-bit fixed point),
//! so comparing the two goes through `normalize`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::chains::CANARY;
use super::staged::{self, SECTION_BUDGET};
use crate::cluster::ServiceName;
use crate::kernel::iptables::split_args;

/// One chain kproxy owns, with all of its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<String>,
    /// The Service whose port produced this chain; None for the top-level
    /// chains, which are written on every sync.
    pub owner: Option<ServiceName>,
}

/// A jump from a built-in chain into one of ours: inserted at the top when
/// missing, never by flushing the built-in chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jump {
    pub table: &'static str,
    pub from: &'static str,
    /// The rule's arguments, ending in `-j CHAIN`.
    pub rule: String,
}

/// One table's chains, in the order they are written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn get(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

/// Everything the planner wants in the kernel for one family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub filter: Table,
    pub nat: Table,
    /// In the order upstream lists them; each is inserted at position 1 when
    /// missing, so the last one listed ends up first, as with upstream.
    pub jumps: Vec<Jump>,
}

/// What one restore should write, for one family.
#[derive(Clone, Debug, Default)]
pub struct RestorePlan<'a> {
    /// Chains (per table) to declare (create or flush) and fill.
    pub filter: Vec<&'a Chain>,
    pub nat: Vec<&'a Chain>,
    /// Jump rules missing from built-in chains.
    pub jumps: Vec<&'a Jump>,
    /// Stale nat chains to flush and delete (only the nat table has
    /// per-Service chains).
    pub delete_nat: Vec<String>,
    /// Tables (mangle, nat, filter) that need the empty canary chain.
    pub canary: Vec<&'static str>,
}

impl RestorePlan<'_> {
    /// `iptables-restore --noflush` input: per table, the chain lines (which
    /// create or flush), the missing jumps, the rules, then the deletions.
    pub fn render(&self) -> String {
        self.render_in(None)
    }

    /// As `render`, with a large nat table split into several transactions
    /// in dependency order (`staged.rs`): the form iptables-nft-restore
    /// takes fastest. Small restores come out exactly as `render` writes them.
    pub fn render_staged(&self) -> String {
        self.render_in(Some(SECTION_BUDGET))
    }

    fn render_in(&self, budget: Option<usize>) -> String {
        let mut out = String::new();
        if self.canary.contains(&"mangle") {
            let _ = writeln!(out, "*mangle\n:{CANARY} - [0:0]\nCOMMIT");
        }
        let none = Vec::new();
        for (table, chains, deletes) in [
            ("filter", &self.filter, &none),
            ("nat", &self.nat, &self.delete_nat),
        ] {
            let jumps: Vec<&Jump> = self
                .jumps
                .iter()
                .filter(|j| j.table == table)
                .copied()
                .collect();
            let canary = self.canary.contains(&table);
            if chains.is_empty() && deletes.is_empty() && jumps.is_empty() && !canary {
                continue;
            }
            let sections = match budget {
                Some(budget) if table == "nat" => staged::sections(chains, budget),
                _ => vec![chains.clone()],
            };
            let last = sections.len() - 1;
            for (i, chains) in sections.iter().enumerate() {
                // The roots, the jumps into them and the deletions go in the
                // last transaction.
                let section = if i == last {
                    Section {
                        chains,
                        deletes,
                        jumps: &jumps,
                        canary,
                    }
                } else {
                    Section {
                        chains,
                        deletes: &none,
                        jumps: &[],
                        canary: false,
                    }
                };
                section.write(table, &mut out);
            }
        }
        out
    }
}

/// One `*table ... COMMIT` block of a restore.
struct Section<'s, 'a> {
    chains: &'s [&'a Chain],
    deletes: &'s [String],
    jumps: &'s [&'a Jump],
    canary: bool,
}

impl Section<'_, '_> {
    fn write(&self, table: &str, out: &mut String) {
        let _ = writeln!(out, "*{table}");
        // Declarations sorted by name: iptables-nft-restore keeps its
        // chain list sorted and inserts each declared chain in place,
        // so an unsorted run costs a list walk per chain. For 1,000
        // Services x 10 endpoints (11,000 chains) that is 6.8-7.6 s
        // unsorted against 1.8-2.2 s sorted, same rules (this host,
        // iptables 1.8.9 nf_tables, in a fresh namespace). The order of
        // declarations means nothing to either backend.
        let mut declared: Vec<&str> = self
            .chains
            .iter()
            .map(|c| c.name.as_str())
            .chain(self.deletes.iter().map(String::as_str))
            .chain(self.canary.then_some(CANARY))
            .collect();
        declared.sort_unstable();
        declared.dedup();
        for name in declared {
            let _ = writeln!(out, ":{name} - [0:0]");
        }
        for j in self.jumps {
            let _ = writeln!(out, "-I {} 1 {}", j.from, j.rule);
        }
        for c in self.chains {
            for r in &c.rules {
                let _ = writeln!(out, "-A {} {}", c.name, r);
            }
        }
        for c in self.deletes {
            let _ = writeln!(out, "-X {c}");
        }
        out.push_str("COMMIT\n");
    }
}

/// One table as `iptables-save` printed it: chain → rules (without `-A CHAIN`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedTable {
    pub chains: BTreeMap<String, Vec<String>>,
}

impl SavedTable {
    /// Parse `iptables-save -t TABLE` output. Lines of other tables (when a
    /// whole dump is passed) are ignored.
    pub fn parse(save: &str, table: &str) -> Self {
        let mut t = SavedTable::default();
        let mut in_table = false;
        for line in save.lines() {
            if let Some(name) = line.strip_prefix('*') {
                in_table = name.trim() == table;
                continue;
            }
            if !in_table {
                continue;
            }
            if let Some(rest) = line.strip_prefix(':') {
                if let Some(name) = rest.split_whitespace().next() {
                    t.chains.entry(name.to_string()).or_default();
                }
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, rule) = rest.split_once(' ').unwrap_or((rest, ""));
                t.chains
                    .entry(chain.to_string())
                    .or_default()
                    .push(rule.to_string());
            }
        }
        t
    }

    pub fn has(&self, chain: &str) -> bool {
        self.chains.contains_key(chain)
    }

    /// Whether `chain` holds exactly `rules` (compared in normalized form).
    pub fn matches(&self, chain: &str, rules: &[String]) -> bool {
        match self.chains.get(chain) {
            None => false,
            Some(have) => {
                have.len() == rules.len()
                    && have
                        .iter()
                        .zip(rules)
                        .all(|(h, w)| normalize(h) == normalize(w))
            }
        }
    }

    /// Whether `chain` contains a rule equal to `rule` (normalized).
    pub fn contains_rule(&self, chain: &str, rule: &str) -> bool {
        let want = normalize(rule);
        self.chains
            .get(chain)
            .is_some_and(|rs| rs.iter().any(|r| normalize(r) == want))
    }
}

/// One family's nat, filter and mangle tables as `iptables-save` printed them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedTables {
    pub nat: SavedTable,
    pub filter: SavedTable,
    pub mangle: SavedTable,
}

impl SavedTables {
    pub fn parse(save: &str) -> Self {
        Self {
            nat: SavedTable::parse(save, "nat"),
            filter: SavedTable::parse(save, "filter"),
            mangle: SavedTable::parse(save, "mangle"),
        }
    }

    /// The table named `name` (filter for anything else).
    pub fn get(&self, name: &str) -> &SavedTable {
        match name {
            "nat" => &self.nat,
            "mangle" => &self.mangle,
            _ => &self.filter,
        }
    }
}

/// A rule in a form where kproxy's rendering and iptables-save's printing
/// of the same rule compare equal: options grouped with their values
/// (negations attached), values canonicalized, groups sorted.
pub fn normalize(rule: &str) -> Vec<(String, Vec<String>)> {
    let words = split_args(rule);
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut negate = false;
    for w in words {
        if w == "!" {
            negate = true;
            continue;
        }
        if w.starts_with('-') && w.len() > 1 && !w[1..].starts_with(|c: char| c.is_ascii_digit()) {
            let flag = if negate { format!("!{w}") } else { w };
            negate = false;
            groups.push((flag, Vec::new()));
        } else if let Some(g) = groups.last_mut() {
            g.1.push(w.trim_matches('"').to_string());
        }
    }
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut target = String::new();
    for (flag, mut vals) in groups {
        match flag.as_str() {
            "-s" | "-d" | "!-s" | "!-d" | "--source" | "--destination" => {
                if let Some(v) = vals.first_mut()
                    && !v.contains('/')
                {
                    let bits = if v.contains(':') { 128 } else { 32 };
                    *v = format!("{v}/{bits}");
                }
            }
            "-j" => target = vals.first().cloned().unwrap_or_default(),
            "--probability" => {
                if let Some(p) = vals.first().and_then(|v| v.parse::<f64>().ok()) {
                    // xt_statistic keeps the probability as a 31-bit fraction.
                    let fixed = (p * 2147483648.0).round() as u64;
                    vals = vec![format!("{fixed}")];
                }
            }
            // Defaults iptables-save prints for `-m recent`.
            "--rsource" => continue,
            "--mask" if vals.iter().all(|v| is_all_ones_mask(v)) => continue,
            "--reject-with"
                if matches!(
                    vals.first().map(String::as_str),
                    Some("icmp-port-unreachable" | "icmp6-port-unreachable")
                ) =>
            {
                continue;
            }
            _ => {}
        }
        out.push((flag, vals));
    }
    // MARK's --or-mark/--xor-mark are printed as --set-xmark.
    if target == "MARK" {
        for g in out.iter_mut() {
            match g.0.as_str() {
                "--or-mark" => {
                    let m = g.1.first().cloned().unwrap_or_default();
                    *g = ("--set-xmark".into(), vec![format!("{m}/{m}")]);
                }
                "--xor-mark" => {
                    let m = g.1.first().cloned().unwrap_or_default();
                    *g = ("--set-xmark".into(), vec![format!("{m}/0x0")]);
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

fn is_all_ones_mask(v: &str) -> bool {
    v == "255.255.255.255" || v == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs of (what kproxy writes, what iptables-save 1.8.9 printed for it,
    /// both backends alike).
    const SAVED_FORMS: &[(&str, &str)] = &[
        (
            r#"-m comment --comment "ns/svc:p80 cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-AAAA"#,
            r#"-d 10.96.0.10/32 -p tcp -m comment --comment "ns/svc:p80 cluster IP" -m tcp --dport 80 -j KUBE-SVC-AAAA"#,
        ),
        (
            "-j MARK --or-mark 0x4000",
            "-j MARK --set-xmark 0x4000/0x4000",
        ),
        (
            "-j MARK --xor-mark 0x4000",
            "-j MARK --set-xmark 0x4000/0x0",
        ),
        (
            r#"-m comment --comment "ns/svc:p80 -> 10.244.1.1:8080" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-BBBB"#,
            r#"-m comment --comment "ns/svc:p80 -> 10.244.1.1:8080" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-BBBB"#,
        ),
        (
            "-m comment --comment ns/svc:p80 -m recent --name KUBE-SEP-BBBB --set -m tcp -p tcp -j DNAT --to-destination 10.244.1.1:8080",
            r#"-p tcp -m comment --comment "ns/svc:p80" -m recent --set --name KUBE-SEP-BBBB --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.1.1:8080"#,
        ),
        (
            r#"-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS"#,
            r#"! -d 127.0.0.0/8 -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"#,
        ),
        (
            r#"-m comment --comment "ns/svc:p80 has no endpoints" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j REJECT"#,
            r#"-d 10.96.0.10/32 -p tcp -m comment --comment "ns/svc:p80 has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable"#,
        ),
    ];

    #[test]
    fn written_and_saved_forms_normalize_alike() {
        for (written, saved) in SAVED_FORMS {
            assert_eq!(normalize(written), normalize(saved), "{written}\n{saved}");
        }
    }

    #[test]
    fn different_rules_stay_different() {
        let a = "-m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-AAAA";
        for b in [
            "-m tcp -p tcp -d 10.96.0.11 --dport 80 -j KUBE-SVC-AAAA",
            "-m tcp -p tcp -d 10.96.0.10 --dport 81 -j KUBE-SVC-AAAA",
            "-m tcp -p tcp ! -d 10.96.0.10 --dport 80 -j KUBE-SVC-AAAA",
            "-m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-BBBB",
            "-m statistic --mode random --probability 0.5000000000 -j KUBE-SVC-AAAA",
        ] {
            assert_ne!(normalize(a), normalize(b), "{b}");
        }
        assert_ne!(
            normalize("-m statistic --mode random --probability 0.5000000000 -j X"),
            normalize("-m statistic --mode random --probability 0.3333333333 -j X")
        );
    }

    #[test]
    fn parse_save_and_match() {
        let save = "# Generated\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-EMPTY - [0:0]\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A KUBE-SVC-A -j MARK --set-xmark 0x4000/0x4000\nCOMMIT\n*filter\n:KUBE-F - [0:0]\nCOMMIT\n";
        let nat = SavedTable::parse(save, "nat");
        assert!(nat.has("KUBE-EMPTY"));
        assert!(!nat.has("KUBE-F"));
        assert!(nat.matches("KUBE-SVC-A", &["-j MARK --or-mark 0x4000".to_string()]));
        assert!(!nat.matches("KUBE-SVC-A", &[]));
        assert!(nat.matches("KUBE-EMPTY", &[]));
        assert!(!nat.matches("KUBE-MISSING", &[]));
        assert!(nat.contains_rule(
            "PREROUTING",
            "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        ));
        assert!(SavedTable::parse(save, "filter").has("KUBE-F"));
    }

    #[test]
    fn render_orders_declarations_rules_and_deletions() {
        let a = Chain {
            name: "KUBE-SERVICES".into(),
            rules: vec!["-j KUBE-SVC-X".into()],
            owner: None,
        };
        let j = Jump {
            table: "nat",
            from: "PREROUTING",
            rule: "-j KUBE-SERVICES".into(),
        };
        let plan = RestorePlan {
            nat: vec![&a],
            jumps: vec![&j],
            delete_nat: vec!["KUBE-SEP-OLD".into()],
            canary: vec!["mangle", "nat"],
            ..Default::default()
        };
        assert_eq!(
            plan.render(),
            // Declarations sorted by name, whatever declares them.
            "*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n*nat\n:KUBE-PROXY-CANARY - [0:0]\n:KUBE-SEP-OLD - [0:0]\n:KUBE-SERVICES - [0:0]\n-I PREROUTING 1 -j KUBE-SERVICES\n-A KUBE-SERVICES -j KUBE-SVC-X\n-X KUBE-SEP-OLD\nCOMMIT\n"
        );
    }

    /// A rule as iptables-save prints one: options, values, a quoted comment.
    fn rule() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let word = prop_oneof![
            prop::sample::select(vec![
                "-j",
                "-d",
                "!",
                "-s",
                "-m",
                "--probability",
                "--or-mark",
                "--xor-mark",
                "MARK",
                "--mask",
                "--rsource",
                "--reject-with",
                "-p",
                "tcp",
                "--dport",
                "-1",
                "0.5",
                "NaN",
                "1e308",
                "10.0.0.1",
                "fd00::1",
                "\\",
                "\"",
            ])
            .prop_map(String::from),
            "[!-~]{1,12}",
            "\"[ -~]{0,20}\"",
        ];
        prop::collection::vec(word, 0..12).prop_map(|w| w.join(" "))
    }

    fn table() -> impl proptest::strategy::Strategy<Value = SavedTable> {
        use proptest::prelude::*;
        prop::collection::btree_map(
            "[A-Z][A-Z0-9-]{0,20}",
            prop::collection::vec(rule(), 0..5),
            0..5,
        )
        .prop_map(|chains| SavedTable { chains })
    }

    fn save_text(tables: &[(&str, &SavedTable)], comments: &[String]) -> String {
        let mut out = String::new();
        for (i, (name, t)) in tables.iter().enumerate() {
            if let Some(c) = comments.get(i) {
                out.push_str(&format!("# {c}\n"));
            }
            out.push_str(&format!("*{name}\n"));
            for chain in t.chains.keys() {
                out.push_str(&format!(":{chain} - [0:0]\n"));
            }
            for (chain, rules) in &t.chains {
                for r in rules {
                    out.push_str(&format!("-A {chain} {r}\n"));
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    #[test]
    fn fuzz_iptables_save_reads_back_each_table_whatever_else_it_holds() {
        use proptest::prelude::*;
        let input = (
            table(),
            table(),
            table(),
            table(),
            prop::collection::vec("[ -~]{0,30}", 0..5),
        );
        crate::testing::fuzz(
            "iptables-save text",
            1_000,
            input,
            |(nat, filter, mangle, raw, comments)| {
                let text = save_text(
                    &[
                        ("raw", &raw),
                        ("nat", &nat),
                        ("filter", &filter),
                        ("mangle", &mangle),
                    ],
                    &comments,
                );
                let saved = SavedTables::parse(&text);
                prop_assert_eq!(&saved.nat, &nat);
                prop_assert_eq!(&saved.filter, &filter);
                prop_assert_eq!(&saved.mangle, &mangle);
                for (chain, rules) in &nat.chains {
                    prop_assert!(saved.nat.matches(chain, rules));
                    for r in rules {
                        prop_assert!(saved.nat.contains_rule(chain, r));
                    }
                }
                Ok(())
            },
        );
    }

    #[test]
    fn fuzz_iptables_text_of_any_kind_parses_without_panic() {
        use proptest::prelude::*;
        let line = prop_oneof![
            rule().prop_map(|r| format!("-A X {r}")),
            "[*:#-]?\\PC{0,30}",
        ];
        crate::testing::fuzz(
            "iptables text",
            1_500,
            prop::collection::vec(line, 0..20),
            |lines| {
                let text = lines.join("\n");
                let saved = SavedTables::parse(&text);
                for rule in saved.nat.chains.values().flatten() {
                    let _ = normalize(rule);
                }
                for l in &lines {
                    let _ = normalize(l);
                    let _ = crate::kernel::iptables::jump_target(l);
                }
                Ok(())
            },
        );
    }
}
