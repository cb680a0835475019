//! iptables/ip6tables through their `-save` and `-restore` programs.
//!
//! Thousands of rules go into the kernel as one `iptables-restore --noflush -w`
//! transaction per family, fed on stdin: one process, atomic per table, and
//! `--noflush` leaves every chain the input does not name alone. Snapshots are
//! read with `iptables-save -t TABLE`.
//!
//! The twin (`IptablesTwin`) implements the same restore semantics in memory,
//! records every restore input, and can be told to fail.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use super::KernelError;
use crate::net::IpFamily;

/// Which iptables implementation the node's other components use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-nft*`: the nf_tables kernel API with iptables syntax.
    Nft,
    /// `iptables-legacy*`: the x_tables kernel API.
    Legacy,
    /// Plain `iptables*`, whatever the distribution's alternatives point at.
    Default,
}

impl Backend {
    fn suffix(self) -> &'static str {
        match self {
            Backend::Nft => "-nft",
            Backend::Legacy => "-legacy",
            Backend::Default => "",
        }
    }
}

/// The iptables kernel boundary.
pub trait Iptables: Send {
    /// `iptables-save` (or ip6tables-save) output for every table. One dump
    /// rather than one per table: the nft backend reads the whole ruleset
    /// for any dump, so per-table calls would pay that cost each time.
    fn save(&mut self, family: IpFamily) -> Result<String, KernelError>;
    /// Whether `chain` exists in `table` (cheap: no dump of the ruleset).
    /// Any failure counts as "no", which only makes the caller do more.
    fn chain_exists(&mut self, family: IpFamily, table: &str, chain: &str) -> bool;
    /// Feed `input` to `iptables-restore --noflush -w` (or ip6tables-restore).
    fn restore(&mut self, family: IpFamily, input: &str) -> Result<(), KernelError>;
    /// Whether the programs write through nf_tables, where a large restore
    /// is fastest split into transactions (`netfilter/staged.rs`).
    fn nf_tables(&self) -> bool {
        false
    }
}

/// A shared adapter (tests keep a handle to look inside a twin).
impl<T: Iptables> Iptables for std::sync::Arc<std::sync::Mutex<T>> {
    fn save(&mut self, family: IpFamily) -> Result<String, KernelError> {
        self.lock().unwrap().save(family)
    }
    fn chain_exists(&mut self, family: IpFamily, table: &str, chain: &str) -> bool {
        self.lock().unwrap().chain_exists(family, table, chain)
    }
    fn restore(&mut self, family: IpFamily, input: &str) -> Result<(), KernelError> {
        self.lock().unwrap().restore(family, input)
    }
    fn nf_tables(&self) -> bool {
        self.lock().unwrap().nf_tables()
    }
}

fn family_prefix(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "iptables",
        IpFamily::V6 => "ip6tables",
    }
}

/// The real adapter: runs the programs of one backend.
#[derive(Clone, Debug)]
pub struct IptablesCmd {
    pub backend: Backend,
    /// The programs write through nf_tables (settled once: for the plain
    /// programs it takes running `iptables --version`).
    nf_tables: bool,
}

impl IptablesCmd {
    pub fn new(backend: Backend) -> Self {
        let nf_tables = match backend {
            Backend::Nft => true,
            Backend::Legacy => false,
            // `iptables --version` names its backend: "v1.8.9 (nf_tables)".
            Backend::Default => Command::new("iptables")
                .arg("--version")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("nf_tables")),
        };
        Self { backend, nf_tables }
    }

    /// Use the backend the rest of the node uses, detected as Kubernetes'
    /// iptables-wrappers do it (kube-proxy images ship that logic):
    /// 1. kubelet (1.17+) leaves `KUBE-IPTABLES-HINT` or `KUBE-KUBELET-CANARY`
    ///    in the mangle table of the backend it uses: look in nft first
    ///    (cheap and the more common), then in legacy. Legacy is read with a
    ///    full `iptables-legacy-save`, because `-t mangle` would make the
    ///    kernel create that table.
    /// 2. Otherwise count rule lines (`^-`) in `iptables-legacy-save` plus
    ///    `ip6tables-legacy-save` against the nft pair: more legacy rules means
    ///    legacy, anything else nft.
    ///
    /// When neither variant is installed, plain `iptables` is used.
    pub fn detect() -> Self {
        let run = |prog: &str, args: &[&str]| -> String {
            Command::new(prog)
                .args(args)
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let have = |prog: &str| {
            Command::new(prog)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let (nft, legacy) = (have("iptables-nft-save"), have("iptables-legacy-save"));
        let backend = match (nft, legacy) {
            (false, false) => Backend::Default,
            (true, false) => Backend::Nft,
            (false, true) => Backend::Legacy,
            (true, true) => {
                let nft_mangle = run("iptables-nft-save", &["-t", "mangle"])
                    + &run("ip6tables-nft-save", &["-t", "mangle"]);
                if has_kubelet_hint(&nft_mangle) {
                    Backend::Nft
                } else {
                    let legacy_all =
                        run("iptables-legacy-save", &[]) + &run("ip6tables-legacy-save", &[]);
                    if has_kubelet_hint(&legacy_all) {
                        Backend::Legacy
                    } else {
                        let nft_all =
                            run("iptables-nft-save", &[]) + &run("ip6tables-nft-save", &[]);
                        if rule_lines(&legacy_all) > rule_lines(&nft_all) {
                            Backend::Legacy
                        } else {
                            Backend::Nft
                        }
                    }
                }
            }
        };
        tracing::debug!(?backend, "iptables backend");
        Self::new(backend)
    }

    fn program(&self, family: IpFamily, tool: &str) -> String {
        format!("{}{}{}", family_prefix(family), self.backend.suffix(), tool)
    }

    /// The families to program: IPv4, plus IPv6 when the kernel has it and
    /// ip6tables is installed.
    pub fn families(&self) -> Vec<IpFamily> {
        let mut v = vec![IpFamily::V4];
        if std::path::Path::new("/proc/net/if_inet6").exists() && self.available(IpFamily::V6) {
            v.push(IpFamily::V6);
        }
        v
    }

    /// Whether the `-restore` program for `family` can be run at all.
    pub fn available(&self, family: IpFamily) -> bool {
        Command::new(self.program(family, "-restore"))
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

fn has_kubelet_hint(save: &str) -> bool {
    save.lines()
        .any(|l| l.starts_with(":KUBE-IPTABLES-HINT ") || l.starts_with(":KUBE-KUBELET-CANARY "))
}

fn rule_lines(save: &str) -> usize {
    save.lines().filter(|l| l.starts_with('-')).count()
}

impl Iptables for IptablesCmd {
    fn save(&mut self, family: IpFamily) -> Result<String, KernelError> {
        let prog = self.program(family, "-save");
        let op = prog.clone();
        let out = Command::new(&prog)
            .output()
            .map_err(|e| KernelError::new(&op, e.to_string()))?;
        if !out.status.success() {
            return Err(KernelError::new(
                op,
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        String::from_utf8(out.stdout).map_err(|e| KernelError::new(op, e.to_string()))
    }

    fn chain_exists(&mut self, family: IpFamily, table: &str, chain: &str) -> bool {
        Command::new(self.program(family, ""))
            .args(["-w", "-t", table, "-S", chain])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn restore(&mut self, family: IpFamily, input: &str) -> Result<(), KernelError> {
        let prog = self.program(family, "-restore");
        let op = format!("{prog} --noflush -w");
        let mut child = Command::new(&prog)
            .args(["--noflush", "-w"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| KernelError::new(&op, e.to_string()))?;
        // A write error (the program died early) is reported through its
        // exit status and stderr below, which say more than EPIPE.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| KernelError::new(&op, e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Err(KernelError::new(op, explain_restore_error(&stderr, input)))
        }
    }

    fn nf_tables(&self) -> bool {
        self.nf_tables
    }
}

/// iptables-restore names the failing line by number; quote it, so that the
/// error says which rule (and so which Service) the kernel refused.
fn explain_restore_error(stderr: &str, input: &str) -> String {
    // "line 3 failed" (older) or "Error occurred at line: 3".
    let line_no = stderr.rfind("line").and_then(|idx| {
        let rest = stderr[idx + 4..].trim_start_matches(|c: char| !c.is_ascii_digit());
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse::<usize>()
            .ok()
    });
    // nft reports the COMMIT line for errors found when committing; quoting
    // it adds nothing.
    match line_no
        .and_then(|n: usize| input.lines().nth(n.checked_sub(1)?))
        .filter(|l| *l != "COMMIT")
    {
        Some(line) => format!("{} (input line: {line})", stderr.replace('\n', " ")),
        None => stderr.replace('\n', " "),
    }
}

/// One table of the twin: chains in creation order, built-ins included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TwinTable {
    pub chains: BTreeMap<String, Vec<String>>,
}

impl TwinTable {
    /// A table as the kernel creates it: its built-in chains, empty.
    fn with_builtins(table: &str) -> Self {
        let mut t = TwinTable::default();
        for (name, chains) in BUILTIN {
            if *name == table {
                for c in *chains {
                    t.chains.insert(c.to_string(), Vec::new());
                }
            }
        }
        t
    }
}

const BUILTIN: &[(&str, &[&str])] = &[
    ("nat", &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]),
    ("filter", &["INPUT", "FORWARD", "OUTPUT"]),
    (
        "mangle",
        &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
    ),
];

const TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "MARK",
];

fn is_builtin(table: &str, chain: &str) -> bool {
    BUILTIN
        .iter()
        .any(|(t, cs)| *t == table && cs.contains(&chain))
}

/// An in-memory iptables that applies restore input with `--noflush`
/// semantics and refuses what the kernel refuses (rules in or jumps to chains
/// that do not exist, deleting a chain that is still referenced).
#[derive(Clone, Debug, Default)]
pub struct IptablesTwin {
    pub tables: BTreeMap<(IpFamily, String), TwinTable>,
    /// Every restore input, in order, per family.
    pub restores: Vec<(IpFamily, String)>,
    /// The next `n` restores fail without changing anything.
    pub fail_restores: usize,
    /// Saves fail while set.
    pub fail_saves: bool,
    /// Answer `nf_tables()` with this (the backend a test pretends to be).
    pub nf_tables: bool,
}

impl IptablesTwin {
    pub fn new() -> Self {
        Self::default()
    }

    fn table_mut(&mut self, family: IpFamily, table: &str) -> &mut TwinTable {
        self.tables
            .entry((family, table.to_string()))
            .or_insert_with(|| TwinTable::with_builtins(table))
    }

    /// The rules of one chain, as `-A` arguments (without `-A CHAIN`).
    pub fn chain(&self, family: IpFamily, table: &str, chain: &str) -> Option<&Vec<String>> {
        self.tables
            .get(&(family, table.to_string()))
            .and_then(|t| t.chains.get(chain))
    }

    /// Replace a chain's rules by hand.
    pub fn set_chain(&mut self, family: IpFamily, table: &str, chain: &str, rules: Vec<String>) {
        self.table_mut(family, table)
            .chains
            .insert(chain.to_string(), rules);
    }

    /// One table in iptables-save's layout.
    fn save_table(&self, family: IpFamily, table: &str) -> String {
        let t = &self.tables[&(family, table.to_string())];
        let mut out = format!("*{table}\n");
        let builtin: Vec<&String> = t.chains.keys().filter(|c| is_builtin(table, c)).collect();
        for c in &builtin {
            out.push_str(&format!(":{c} ACCEPT [0:0]\n"));
        }
        for c in t.chains.keys().filter(|c| !is_builtin(table, c)) {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        for (c, rules) in &t.chains {
            for r in rules {
                out.push_str(&format!("-A {c} {r}\n"));
            }
        }
        out.push_str("COMMIT\n");
        out
    }

    pub fn last_restore(&self, family: IpFamily) -> Option<&str> {
        self.restores
            .iter()
            .rev()
            .find(|(f, _)| *f == family)
            .map(|(_, s)| s.as_str())
    }

    fn apply(&mut self, family: IpFamily, input: &str) -> Result<(), String> {
        let mut staged = self.tables.clone();
        let mut table: Option<String> = None;
        for (i, line) in input.lines().enumerate() {
            let err = |m: &str| format!("line {}: {m}: {line}", i + 1);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(t) = line.strip_prefix('*') {
                table = Some(t.to_string());
                continue;
            }
            let Some(tname) = table.clone() else {
                return Err(err("no table selected"));
            };
            if line == "COMMIT" {
                // Each COMMIT is its own transaction, as with the real
                // programs: what came before stays when a later one fails.
                self.tables = staged.clone();
                table = None;
                continue;
            }
            let t = staged
                .entry((family, tname.clone()))
                .or_insert_with(|| TwinTable::with_builtins(&tname));
            if let Some(rest) = line.strip_prefix(':') {
                let name = rest.split_whitespace().next().unwrap_or_default();
                if is_builtin(&tname, name) {
                    continue;
                }
                // --noflush: declaring a chain creates it or empties it.
                t.chains.insert(name.to_string(), Vec::new());
                continue;
            }
            let words = split_args(line);
            let (cmd, chain) = match (words.first(), words.get(1)) {
                (Some(c), Some(ch)) => (c.as_str(), ch.clone()),
                _ => return Err(err("malformed line")),
            };
            match cmd {
                "-X" => {
                    if !t.chains.contains_key(&chain) {
                        return Err(err("no such chain"));
                    }
                    let referenced = t
                        .chains
                        .values()
                        .flatten()
                        .any(|r| jump_target(r) == Some(&chain));
                    if referenced {
                        return Err(err("chain is still referenced"));
                    }
                    t.chains.remove(&chain);
                }
                "-A" | "-I" | "-D" => {
                    let mut rest = &words[2..];
                    let mut pos = None;
                    if cmd == "-I"
                        && let Some(n) = rest.first().and_then(|w| w.parse::<usize>().ok())
                    {
                        pos = Some(n);
                        rest = &rest[1..];
                    }
                    let rule = join_args(rest);
                    if let Some(target) = jump_target(&rule)
                        && !TARGETS.contains(&target)
                        && !t.chains.contains_key(target)
                    {
                        return Err(err("jump to a chain that does not exist"));
                    }
                    let Some(rules) = t.chains.get_mut(&chain) else {
                        return Err(err("no such chain"));
                    };
                    match cmd {
                        "-A" => rules.push(rule),
                        "-I" => {
                            let at = pos.unwrap_or(1).saturating_sub(1).min(rules.len());
                            rules.insert(at, rule);
                        }
                        _ => {
                            let Some(at) = rules.iter().position(|r| *r == rule) else {
                                return Err(err("no such rule"));
                            };
                            rules.remove(at);
                        }
                    }
                }
                _ => return Err(err("unknown command")),
            }
        }
        if table.is_some() {
            return Err("input ends without COMMIT".into());
        }
        Ok(())
    }
}

/// The `-j` target of a rule, if any.
pub fn jump_target(rule: &str) -> Option<&str> {
    let mut it = rule.split_whitespace();
    while let Some(w) = it.next() {
        if w == "-j" {
            return it.next();
        }
    }
    None
}

/// Split a rule into words, keeping a double-quoted string as one word
/// (quotes included, as iptables-save prints them).
pub fn split_args(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_word = false;
    let mut escaped = false;
    for c in line.chars() {
        if escaped {
            // iptables-save escapes quotes inside a quoted comment
            // (`\'hash ip:port\'`); the character itself is what counts.
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => {
                quoted = !quoted;
                cur.push(c);
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

fn join_args(words: &[String]) -> String {
    words.join(" ")
}

impl Iptables for IptablesTwin {
    fn save(&mut self, family: IpFamily) -> Result<String, KernelError> {
        if self.fail_saves {
            return Err(KernelError::new(
                format!("{}-save", family_prefix(family)),
                "twin told to fail",
            ));
        }
        let tables: Vec<String> = self
            .tables
            .keys()
            .filter(|(f, _)| *f == family)
            .map(|(_, t)| t.clone())
            .collect();
        Ok(tables.iter().map(|t| self.save_table(family, t)).collect())
    }

    fn chain_exists(&mut self, family: IpFamily, table: &str, chain: &str) -> bool {
        self.chain(family, table, chain).is_some()
    }

    fn restore(&mut self, family: IpFamily, input: &str) -> Result<(), KernelError> {
        self.restores.push((family, input.to_string()));
        let op = format!("{}-restore --noflush -w", family_prefix(family));
        if self.fail_restores > 0 {
            self.fail_restores -= 1;
            return Err(KernelError::new(op, "twin told to fail"));
        }
        self.apply(family, input)
            .map_err(|reason| KernelError::new(op, reason))
    }

    fn nf_tables(&self) -> bool {
        self.nf_tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twin_applies_noflush_restore_and_refuses_what_the_kernel_refuses() {
        let mut t = IptablesTwin::new();
        t.restore(
            IpFamily::V4,
            "*nat\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-A KUBE-A -m comment --comment \"x y\" -j KUBE-B\n-I PREROUTING 1 -j KUBE-A\nCOMMIT\n",
        )
        .unwrap();
        assert_eq!(
            t.chain(IpFamily::V4, "nat", "KUBE-A").unwrap(),
            &vec!["-m comment --comment \"x y\" -j KUBE-B".to_string()]
        );
        // Deleting a referenced chain fails and changes nothing.
        let e = t
            .restore(IpFamily::V4, "*nat\n-X KUBE-B\nCOMMIT\n")
            .unwrap_err();
        assert!(e.reason.contains("referenced"), "{e}");
        assert!(t.chain(IpFamily::V4, "nat", "KUBE-B").is_some());
        // Re-declaring flushes, then the chain can go.
        t.restore(IpFamily::V4, "*nat\n:KUBE-A - [0:0]\n-X KUBE-B\nCOMMIT\n")
            .unwrap();
        assert!(t.chain(IpFamily::V4, "nat", "KUBE-B").is_none());
        assert!(t.chain(IpFamily::V4, "nat", "KUBE-A").unwrap().is_empty());
        // A jump to a missing chain is refused.
        assert!(
            t.restore(IpFamily::V4, "*nat\n-A KUBE-A -j KUBE-NOPE\nCOMMIT\n")
                .is_err()
        );
        // Failing on demand records the input but applies nothing.
        t.fail_restores = 1;
        assert!(
            t.restore(IpFamily::V4, "*nat\n:KUBE-C - [0:0]\nCOMMIT\n")
                .is_err()
        );
        assert!(t.chain(IpFamily::V4, "nat", "KUBE-C").is_none());
        assert_eq!(t.restores.len(), 5);
    }

    #[test]
    fn twin_save_round_trips_through_restore() {
        let mut t = IptablesTwin::new();
        t.restore(
            IpFamily::V6,
            "*filter\n:KUBE-X - [0:0]\n-A KUBE-X -j DROP\n-A INPUT -j KUBE-X\nCOMMIT\n",
        )
        .unwrap();
        let saved = t.save(IpFamily::V6).unwrap();
        assert!(saved.contains(":KUBE-X - [0:0]\n"), "{saved}");
        assert!(saved.contains("-A INPUT -j KUBE-X\n"), "{saved}");
        assert!(
            t.save(IpFamily::V4)
                .unwrap()
                .lines()
                .all(|l| !l.contains("KUBE-X"))
        );
    }

    #[test]
    fn split_args_keeps_quoted_comments_whole() {
        assert_eq!(
            split_args(r#"-m comment --comment "a b: c" -j X"#),
            vec!["-m", "comment", "--comment", "\"a b: c\"", "-j", "X"]
        );
        // iptables-save escapes single quotes inside the comment; the rule
        // written without the escapes is the same rule.
        assert_eq!(
            split_args(r#"--comment "type \'hash ip:port\'" -j X"#),
            split_args(r#"--comment "type 'hash ip:port'" -j X"#),
        );
    }

    #[test]
    fn restore_errors_quote_the_failing_line() {
        let input = "*nat\n:A - [0:0]\n-A A -j NOPE\nCOMMIT\n";
        for stderr in [
            "iptables-restore: line 3 failed",
            "iptables-restore v1.8.9 (legacy): Couldn't load target `NOPE'\n\nError occurred at line: 3",
        ] {
            let msg = explain_restore_error(stderr, input);
            assert!(msg.contains("(input line: -A A -j NOPE)"), "{msg}");
        }
        let msg = explain_restore_error(
            "Chain 'NOPE' does not exist\nError occurred at line: 4",
            input,
        );
        assert!(!msg.contains("input line"), "{msg}");
    }

    #[test]
    fn kubelet_hint_and_rule_counting() {
        assert!(has_kubelet_hint(
            "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"
        ));
        assert!(!has_kubelet_hint("*mangle\n:KUBE-PROXY-CANARY - [0:0]\n"));
        assert_eq!(
            rule_lines("*nat\n:A - [0:0]\n-A A -j B\n-A A -j C\nCOMMIT\n"),
            2
        );
    }
}
