//! ipsets through the `ipset` program: `ipset list -t` for every set's type
//! and size, `ipset save SET` for one set's members, and one `ipset restore`
//! per sync to write, however many entries change.
//!
//! The twin (`IpsetTwin`) applies the same restore commands in memory and
//! refuses what the kernel refuses: adding to a set that does not exist,
//! re-creating a set with another type, destroying a set that a rule still
//! uses (the caller tells the twin which sets are referenced).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use super::KernelError;

/// One set as `ipset save` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveSet {
    /// `hash:ip,port`, `bitmap:port`, ...
    pub set_type: String,
    /// The create options after the type (`family inet hashsize 1024 ...`).
    pub options: Vec<String>,
    pub entries: BTreeSet<String>,
}

/// A set's header as `ipset list -t` shows it: no members, so cheap to
/// read however large the set is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetHeader {
    pub set_type: String,
    pub entries: usize,
}

/// The ipset kernel boundary.
pub trait Ipsets: Send {
    /// Every set's type and member count, without the members.
    fn headers(&mut self) -> Result<BTreeMap<String, SetHeader>, KernelError>;
    /// One set with its members.
    fn save_set(&mut self, name: &str) -> Result<LiveSet, KernelError>;
    /// Run `script` (ipset restore commands, one per line) with `-exist`, so
    /// that creating an existing set, adding a present entry or deleting an
    /// absent one are not errors.
    fn restore(&mut self, script: &str) -> Result<(), KernelError>;
}

impl<T: Ipsets> Ipsets for std::sync::Arc<std::sync::Mutex<T>> {
    fn headers(&mut self) -> Result<BTreeMap<String, SetHeader>, KernelError> {
        self.lock().unwrap().headers()
    }
    fn save_set(&mut self, name: &str) -> Result<LiveSet, KernelError> {
        self.lock().unwrap().save_set(name)
    }
    fn restore(&mut self, script: &str) -> Result<(), KernelError> {
        self.lock().unwrap().restore(script)
    }
}

/// Parse `ipset list -t` output.
pub fn parse_headers(text: &str) -> BTreeMap<String, SetHeader> {
    let mut out = BTreeMap::new();
    let mut name: Option<String> = None;
    let mut header = SetHeader::default();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("Name: ") {
            if let Some(prev) = name.replace(n.trim().to_string()) {
                out.insert(prev, std::mem::take(&mut header));
            }
        } else if let Some(t) = line.strip_prefix("Type: ") {
            header.set_type = t.trim().to_string();
        } else if let Some(n) = line.strip_prefix("Number of entries: ") {
            header.entries = n.trim().parse().unwrap_or(0);
        }
    }
    if let Some(n) = name {
        out.insert(n, header);
    }
    out
}

/// Parse `ipset save` output.
pub fn parse_save(text: &str) -> BTreeMap<String, LiveSet> {
    let mut sets: BTreeMap<String, LiveSet> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("create"), Some(name)) => {
                let set_type = words.next().unwrap_or_default().to_string();
                sets.insert(
                    name.to_string(),
                    LiveSet {
                        set_type,
                        options: words.map(String::from).collect(),
                        entries: BTreeSet::new(),
                    },
                );
            }
            (Some("add"), Some(name)) => {
                if let (Some(set), Some(entry)) = (sets.get_mut(name), words.next()) {
                    set.entries.insert(entry.to_string());
                }
            }
            _ => {}
        }
    }
    sets
}

/// The real adapter.
#[derive(Clone, Copy, Debug, Default)]
pub struct IpsetCmd;

impl IpsetCmd {
    /// Whether the `ipset` program can be run.
    pub fn available() -> bool {
        Command::new("ipset")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

fn run_ipset(args: &[&str]) -> Result<String, KernelError> {
    let op = format!("ipset {}", args.join(" "));
    let out = Command::new("ipset")
        .args(args)
        .output()
        .map_err(|e| KernelError::new(&op, e.to_string()))?;
    if !out.status.success() {
        return Err(KernelError::new(
            op,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Ipsets for IpsetCmd {
    fn headers(&mut self) -> Result<BTreeMap<String, SetHeader>, KernelError> {
        Ok(parse_headers(&run_ipset(&["list", "-t"])?))
    }

    fn save_set(&mut self, name: &str) -> Result<LiveSet, KernelError> {
        parse_save(&run_ipset(&["save", name])?)
            .remove(name)
            .ok_or_else(|| KernelError::new(format!("ipset save {name}"), "no such set"))
    }

    fn restore(&mut self, script: &str) -> Result<(), KernelError> {
        let op = "ipset restore -exist";
        let mut child = Command::new("ipset")
            .args(["restore", "-exist"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| KernelError::new(op, e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| KernelError::new(op, e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            // "ipset v7.17: Error in line 3: ..." names the line; it already
            // says which set and entry were refused.
            let stderr = String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', " ");
            Err(KernelError::new(op, stderr))
        }
    }
}

/// An in-memory ipset with restore semantics (`-exist`), stopping at the
/// first refused command as `ipset restore` does.
#[derive(Clone, Debug, Default)]
pub struct IpsetTwin {
    pub sets: BTreeMap<String, LiveSet>,
    /// Every restore script, in order.
    pub restores: Vec<String>,
    /// Sets a rule refers to: destroying them is refused (EBUSY).
    pub in_use: BTreeSet<String>,
    /// The next `n` restores fail without changing anything.
    pub fail_restores: usize,
    /// Sets whose members were read (`save_set`), in order.
    pub member_reads: Vec<String>,
}

impl IpsetTwin {
    pub fn new() -> Self {
        Self::default()
    }

    fn apply_line(&mut self, line: &str) -> Result<(), String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => Ok(()),
            ["create", name, set_type, options @ ..] => match self.sets.get(*name) {
                Some(s) if s.set_type != *set_type => Err(format!(
                    "set {name} exists with type {}, not {set_type}",
                    s.set_type
                )),
                Some(_) => Ok(()),
                None => {
                    self.sets.insert(
                        name.to_string(),
                        LiveSet {
                            set_type: set_type.to_string(),
                            options: options.iter().map(|o| o.to_string()).collect(),
                            entries: BTreeSet::new(),
                        },
                    );
                    Ok(())
                }
            },
            ["add", name, entry] => {
                let set = self
                    .sets
                    .get_mut(*name)
                    .ok_or(format!("set {name} does not exist"))?;
                set.entries.insert(entry.to_string());
                Ok(())
            }
            ["del", name, entry] => {
                let set = self
                    .sets
                    .get_mut(*name)
                    .ok_or(format!("set {name} does not exist"))?;
                set.entries.remove(*entry);
                Ok(())
            }
            ["flush", name] => {
                if let Some(set) = self.sets.get_mut(*name) {
                    set.entries.clear();
                }
                Ok(())
            }
            ["destroy", name] => {
                if self.in_use.contains(*name) {
                    return Err(format!("set {name} is in use by a kernel component"));
                }
                self.sets.remove(*name);
                Ok(())
            }
            _ => Err(format!("unknown command: {line}")),
        }
    }
}

impl Ipsets for IpsetTwin {
    fn headers(&mut self) -> Result<BTreeMap<String, SetHeader>, KernelError> {
        Ok(self
            .sets
            .iter()
            .map(|(n, s)| {
                let h = SetHeader {
                    set_type: s.set_type.clone(),
                    entries: s.entries.len(),
                };
                (n.clone(), h)
            })
            .collect())
    }

    fn save_set(&mut self, name: &str) -> Result<LiveSet, KernelError> {
        self.member_reads.push(name.to_string());
        self.sets
            .get(name)
            .cloned()
            .ok_or_else(|| KernelError::new(format!("ipset save {name}"), "no such set"))
    }

    fn restore(&mut self, script: &str) -> Result<(), KernelError> {
        self.restores.push(script.to_string());
        if self.fail_restores > 0 {
            self.fail_restores -= 1;
            return Err(KernelError::new("ipset restore -exist", "refused (twin)"));
        }
        for (n, line) in script.lines().enumerate() {
            self.apply_line(line).map_err(|e| {
                KernelError::new(
                    "ipset restore -exist",
                    format!("Error in line {}: {e}", n + 1),
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_output_is_parsed_into_sets_with_their_entries() {
        let text = "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x5d4e3f2a\n\
                    add KUBE-CLUSTER-IP 10.96.0.1,tcp:443\n\
                    add KUBE-CLUSTER-IP 10.96.0.10,udp:53\n\
                    create KUBE-NODE-PORT-TCP bitmap:port range 0-65535\n\
                    add KUBE-NODE-PORT-TCP 30080\n";
        let sets = parse_save(text);
        assert_eq!(sets.len(), 2);
        let c = &sets["KUBE-CLUSTER-IP"];
        assert_eq!(c.set_type, "hash:ip,port");
        assert_eq!(c.options[..2], ["family".to_string(), "inet".to_string()]);
        assert_eq!(
            c.entries.iter().collect::<Vec<_>>(),
            ["10.96.0.1,tcp:443", "10.96.0.10,udp:53"]
        );
        assert!(sets["KUBE-NODE-PORT-TCP"].entries.contains("30080"));
    }

    #[test]
    fn terse_listing_gives_type_and_count_per_set() {
        let text = "Name: KUBE-CLUSTER-IP\nType: hash:ip,port\nRevision: 6\n\
                    Header: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1\n\
                    Size in memory: 504\nReferences: 2\nNumber of entries: 10000\n\
                    Name: KUBE-NODE-PORT-TCP\nType: bitmap:port\nRevision: 3\n\
                    Header: range 0-65535\nSize in memory: 8268\nReferences: 1\nNumber of entries: 0\n";
        let h = parse_headers(text);
        assert_eq!(
            h["KUBE-CLUSTER-IP"],
            SetHeader {
                set_type: "hash:ip,port".into(),
                entries: 10000
            }
        );
        assert_eq!(h["KUBE-NODE-PORT-TCP"].entries, 0);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn the_twin_refuses_what_the_kernel_refuses_and_stops_there() {
        let mut t = IpsetTwin::new();
        t.restore("create A hash:ip family inet\nadd A 10.0.0.1\n")
            .unwrap();
        // Another type under the same name: refused; the line after it is not run.
        let err = t
            .restore("add A 10.0.0.2\ncreate A bitmap:port range 0-65535\nadd A 10.0.0.3\n")
            .unwrap_err();
        assert!(err.reason.contains("line 2"), "{err}");
        assert!(t.sets["A"].entries.contains("10.0.0.2"));
        assert!(!t.sets["A"].entries.contains("10.0.0.3"));
        // Adding to a missing set, destroying a referenced one: refused.
        assert!(t.restore("add B 1.2.3.4\n").is_err());
        t.in_use.insert("A".into());
        assert!(t.restore("destroy A\n").is_err());
        assert!(t.sets.contains_key("A"));
    }

    /// A word as `ipset save` prints one: no whitespace.
    fn word() -> impl proptest::strategy::Strategy<Value = String> {
        "[A-Za-z0-9:,./_-]{1,20}"
    }

    fn sets() -> impl proptest::strategy::Strategy<Value = BTreeMap<String, LiveSet>> {
        use proptest::prelude::*;
        let set = (
            word(),
            prop::collection::vec(word(), 0..6),
            prop::collection::btree_set(word(), 0..8),
        )
            .prop_map(|(set_type, options, entries)| LiveSet {
                set_type,
                options,
                entries,
            });
        prop::collection::btree_map("KUBE-[A-Z0-9-]{1,20}", set, 0..5)
    }

    /// A line that is neither a create nor an add (a comment, a header, junk).
    fn other_line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        "\\PC{0,40}".prop_filter("not a create or add", |l| {
            !matches!(l.split_whitespace().next(), Some("create" | "add"))
        })
    }

    #[test]
    fn fuzz_ipset_save_text_reads_back_whatever_lines_lie_between() {
        use proptest::prelude::*;
        let input = (
            sets(),
            prop::collection::vec(other_line(), 0..10),
            any::<u64>(),
        );
        crate::testing::fuzz("ipset save text", 1_500, input, |(sets, junk, seed)| {
            let mut lines = Vec::new();
            for (name, s) in &sets {
                lines.push(format!(
                    "create {name} {} {}",
                    s.set_type,
                    s.options.join(" ")
                ));
                lines.extend(s.entries.iter().map(|e| format!("add {name} {e}")));
            }
            // Junk goes in at positions the seed picks.
            for (i, j) in junk.iter().enumerate() {
                let at = (seed as usize).wrapping_add(i * 7919) % (lines.len() + 1);
                lines.insert(at, j.clone());
            }
            let text = lines.join("\n");
            prop_assert_eq!(parse_save(&text), sets.clone());
            let _ = parse_headers(&text);
            let listing: String = sets
                .iter()
                .map(|(n, s)| {
                    format!(
                        "Name: {n}\nType: {}\nHeader: x\nNumber of entries: {}\n",
                        s.set_type,
                        s.entries.len()
                    )
                })
                .collect();
            let headers = parse_headers(&listing);
            prop_assert_eq!(headers.len(), sets.len());
            for (n, s) in &sets {
                prop_assert_eq!(headers[n].entries, s.entries.len());
                prop_assert_eq!(&headers[n].set_type, &s.set_type);
            }
            Ok(())
        });
    }

    #[test]
    fn fuzz_ipset_text_of_any_kind_parses_without_panic() {
        crate::testing::fuzz(
            "ipset text",
            1_500,
            "(create|add|Name: |Type: |Number of entries: |\\PC|\\s){0,60}",
            |text| {
                let _ = parse_save(&text);
                let _ = parse_headers(&text);
                Ok(())
            },
        );
    }
}
