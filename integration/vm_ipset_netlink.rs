//! The ipset nfnetlink client against a real kernel, checked against the
//! `ipset` program's own view of the same sets.
//!
//! Ignored on the host (the VM runner passes `--include-ignored
//! --test-threads=1`). Each test works on its own `KPTEST-*` sets and
//! removes them first.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use kproxy::kernel::ipset::{IpsetCmd, Ipsets, parse_headers, parse_save};
use kproxy::kernel::ipset_netlink::IpsetNetlink;

fn ipset_restore(script: &str) {
    let mut child = Command::new("ipset")
        .args(["restore", "-exist"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run ipset");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ipset restore:\n{script}");
}

fn destroy_test_sets() {
    let text = Command::new("ipset").args(["list", "-n"]).output().unwrap();
    for name in String::from_utf8_lossy(&text.stdout).lines() {
        if name.starts_with("KPTEST-") {
            let _ = Command::new("ipset").args(["destroy", name]).status();
        }
    }
}

/// Sets of every type kproxy uses, both families, with members of each form.
fn populate() -> Vec<&'static str> {
    let _ = Command::new("modprobe").arg("ip_set").status();
    destroy_test_sets();
    let mut script = String::from(
        "create KPTEST-IP hash:ip family inet hashsize 1024 maxelem 65536\n\
         add KPTEST-IP 10.96.0.10\n\
         create KPTEST-6-IP hash:ip family inet6 hashsize 1024 maxelem 65536\n\
         add KPTEST-6-IP fd00::a\n\
         create KPTEST-IPPORT hash:ip,port family inet hashsize 1024 maxelem 65536\n\
         add KPTEST-IPPORT 10.96.0.10,tcp:80\n\
         add KPTEST-IPPORT 10.96.0.10,udp:53\n\
         add KPTEST-IPPORT 192.168.58.2,sctp:30868\n\
         create KPTEST-6-IPPORT hash:ip,port family inet6 hashsize 1024 maxelem 65536\n\
         add KPTEST-6-IPPORT fd00::10,tcp:443\n\
         create KPTEST-IPPORTIP hash:ip,port,ip family inet hashsize 1024 maxelem 65536\n\
         add KPTEST-IPPORTIP 10.244.1.5,tcp:8080,10.244.1.5\n\
         create KPTEST-6-IPPORTIP hash:ip,port,ip family inet6 hashsize 1024 maxelem 65536\n\
         add KPTEST-6-IPPORTIP fd00:10:244::5,udp:53,fd00:10:244::5\n\
         create KPTEST-IPPORTNET hash:ip,port,net family inet hashsize 1024 maxelem 65536\n\
         add KPTEST-IPPORTNET 203.0.113.7,tcp:443,10.0.0.0/8\n\
         add KPTEST-IPPORTNET 203.0.113.7,tcp:443,192.0.2.1\n\
         create KPTEST-6-IPPORTNET hash:ip,port,net family inet6 hashsize 1024 maxelem 65536\n\
         add KPTEST-6-IPPORTNET fd00::7,tcp:443,fd00:1::/64\n\
         add KPTEST-6-IPPORTNET fd00::7,sctp:9,fd00::1\n\
         create KPTEST-PORT bitmap:port range 0-65535\n\
         add KPTEST-PORT 30080\n\
         add KPTEST-PORT 0\n\
         create KPTEST-BIG hash:ip,port family inet hashsize 1024 maxelem 65536\n\
         create KPTEST-EMPTY hash:ip family inet hashsize 1024 maxelem 65536\n",
    );
    // Enough members that the dump spans many messages.
    for i in 0..5000u32 {
        script.push_str(&format!(
            "add KPTEST-BIG 10.{}.{}.{},tcp:{}\n",
            i >> 16 & 255,
            i >> 8 & 255,
            i & 255,
            1 + i % 60000
        ));
    }
    ipset_restore(&script);
    vec![
        "KPTEST-IP",
        "KPTEST-6-IP",
        "KPTEST-IPPORT",
        "KPTEST-6-IPPORT",
        "KPTEST-IPPORTIP",
        "KPTEST-6-IPPORTIP",
        "KPTEST-IPPORTNET",
        "KPTEST-6-IPPORTNET",
        "KPTEST-PORT",
        "KPTEST-BIG",
        "KPTEST-EMPTY",
    ]
}

fn tool_output(args: &[&str]) -> String {
    let out = Command::new("ipset").args(args).output().unwrap();
    assert!(out.status.success(), "ipset {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[ignore = "needs ip_set (VM)"]
fn headers_over_netlink_equal_ipset_list_t() {
    populate();
    let mut nl = IpsetNetlink::connect().expect("connect");
    let ours = nl.headers().unwrap();
    let tools = parse_headers(&tool_output(&["list", "-t"]));
    // Every set, not only ours: the whole listing must agree.
    assert_eq!(ours, tools);
    assert_eq!(ours["KPTEST-BIG"].entries, 5000);
    assert_eq!(ours["KPTEST-PORT"].set_type, "bitmap:port");
    assert_eq!(ours["KPTEST-EMPTY"].entries, 0);
    // And the adapter on the program says the same.
    assert_eq!(IpsetCmd.headers().unwrap(), ours);
    destroy_test_sets();
}

#[test]
#[ignore = "needs ip_set (VM)"]
fn members_over_netlink_equal_ipset_save() {
    let names = populate();
    let mut nl = IpsetNetlink::connect().expect("connect");
    let mut compared = BTreeMap::new();
    for name in names {
        let ours = nl.save_set(name).unwrap();
        let tools = parse_save(&tool_output(&["save", name]))
            .remove(name)
            .unwrap();
        assert_eq!(ours.set_type, tools.set_type, "{name}");
        assert_eq!(ours.entries, tools.entries, "{name}");
        // What kproxy compares on: the options it writes are a prefix of
        // what the tool shows.
        assert_eq!(
            ours.options[..],
            tools.options[..ours.options.len()],
            "{name}"
        );
        compared.insert(name, ours.entries.len());
    }
    assert_eq!(compared["KPTEST-BIG"], 5000);
    assert_eq!(compared["KPTEST-IPPORTNET"], 2);
    assert_eq!(compared["KPTEST-EMPTY"], 0);
    let missing = nl.save_set("KPTEST-NONE").unwrap_err();
    assert!(missing.reason.contains("no such set"), "{missing}");
    destroy_test_sets();
}

/// A script of every line form kproxy writes, on sets named `prefix*`.
fn write_script(prefix: &str) -> String {
    let mut s = String::new();
    for (suffix, set_type, family, entries) in [
        ("IP", "hash:ip", "inet", vec!["10.96.0.10", "10.96.0.11"]),
        ("6-IP", "hash:ip", "inet6", vec!["fd00::a"]),
        (
            "IPPORT",
            "hash:ip,port",
            "inet",
            vec![
                "10.96.0.10,tcp:80",
                "192.168.58.2,sctp:30868",
                "10.96.0.10,udp:53",
            ],
        ),
        (
            "6-IPPORT",
            "hash:ip,port",
            "inet6",
            vec!["fd00::10,tcp:443"],
        ),
        (
            "IPPORTIP",
            "hash:ip,port,ip",
            "inet",
            vec!["10.244.1.5,tcp:8080,10.244.1.5"],
        ),
        (
            "6-IPPORTIP",
            "hash:ip,port,ip",
            "inet6",
            vec!["fd00:10:244::5,udp:53,fd00:10:244::5"],
        ),
        (
            "IPPORTNET",
            "hash:ip,port,net",
            "inet",
            vec![
                "203.0.113.7,tcp:443,10.0.0.0/8",
                "203.0.113.7,tcp:443,192.0.2.1",
            ],
        ),
        (
            "6-IPPORTNET",
            "hash:ip,port,net",
            "inet6",
            vec!["fd00::7,tcp:443,fd00:1::/64", "fd00::7,sctp:9,fd00::1"],
        ),
    ] {
        s.push_str(&format!(
            "create {prefix}{suffix} {set_type} family {family} hashsize 1024 maxelem 65536 bucketsize 12\n"
        ));
        for e in entries {
            s.push_str(&format!("add {prefix}{suffix} {e}\n"));
        }
    }
    s.push_str(&format!("create {prefix}PORT bitmap:port range 0-65535\nadd {prefix}PORT 30080\nadd {prefix}PORT 30081\n"));
    s.push_str(&format!(
        "create {prefix}BIG hash:ip,port family inet hashsize 1024 maxelem 65536\n"
    ));
    for i in 0..5000u32 {
        s.push_str(&format!(
            "add {prefix}BIG 10.{}.{}.{},tcp:{}\n",
            i >> 16 & 255,
            i >> 8 & 255,
            i & 255,
            1 + i % 60000
        ));
    }
    // Deletes of present and absent entries, a flush, a destroy.
    s.push_str(&format!(
        "del {prefix}IP 10.96.0.11\ndel {prefix}IP 10.96.0.99\n"
    ));
    for i in 0..100u32 {
        s.push_str(&format!(
            "del {prefix}BIG 10.0.{}.{},tcp:{}\n",
            i >> 8 & 255,
            i & 255,
            1 + i
        ));
    }
    s.push_str(&format!("create {prefix}GONE hash:ip family inet\nadd {prefix}GONE 1.2.3.4\nflush {prefix}GONE\ndestroy {prefix}GONE\n"));
    s.push_str(&format!("create {prefix}EMPTIED hash:ip family inet\nadd {prefix}EMPTIED 1.2.3.4\nflush {prefix}EMPTIED\n"));
    s
}

/// `ipset save` of every set named `prefix*`, with the prefix taken off and
/// the kernel's random initval and its hashsize left out (a hash grows when
/// a bucket fills, which depends on the initval).
fn saved(prefix: &str) -> BTreeMap<String, String> {
    let text = tool_output(&["save"]);
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 2 || !words[1].starts_with(prefix) {
            continue;
        }
        for option in ["initval", "hashsize"] {
            if let Some(i) = words.iter().position(|w| *w == option) {
                words.drain(i..i + 2);
            }
        }
        let name = words[1].trim_start_matches(prefix).to_string();
        words[1] = "SET";
        let body = out.entry(name).or_default();
        body.push_str(&words.join(" "));
        body.push('\n');
    }
    // Member order is the hash table's: compare sorted.
    out.into_iter()
        .map(|(k, v)| {
            let mut lines: Vec<&str> = v.lines().collect();
            lines.sort();
            (k, lines.join("\n"))
        })
        .collect()
}

#[test]
#[ignore = "needs ip_set (VM)"]
fn restore_over_netlink_leaves_what_ipset_restore_leaves() {
    let _ = Command::new("modprobe").arg("ip_set").status();
    destroy_test_sets();
    let mut nl = IpsetNetlink::connect().expect("connect");
    nl.restore(&write_script("KPTEST-N-"))
        .expect("netlink restore");
    ipset_restore(&write_script("KPTEST-T-"));
    let ours = saved("KPTEST-N-");
    assert_eq!(ours, saved("KPTEST-T-"));
    assert_eq!(ours.len(), 11, "{:?}", ours.keys());
    assert!(!ours.contains_key("GONE"));
    assert_eq!(nl.headers().unwrap()["KPTEST-N-BIG"].entries, 4900);
    // Again: existing sets, present entries and absent deletes are no errors,
    // and nothing changes.
    nl.restore(&write_script("KPTEST-N-"))
        .expect("netlink restore again");
    assert_eq!(saved("KPTEST-N-"), ours);
    destroy_test_sets();
}

/// The line an error names.
fn line_of(e: &kproxy::kernel::KernelError) -> String {
    let r = &e.reason;
    let at = r.find("line ").expect("names a line");
    r[at..].split(':').next().unwrap().to_string()
}

#[test]
#[ignore = "needs ip_set (VM)"]
fn restore_over_netlink_stops_where_ipset_restore_stops() {
    let _ = Command::new("modprobe").arg("ip_set").status();
    destroy_test_sets();
    let mut nl = IpsetNetlink::connect().expect("connect");
    for (script, refused_line, left) in [
        // Another type under an existing name.
        (
            "create SET hash:ip family inet\nadd SET 10.0.0.1\nadd SET 10.0.0.2\n\
             create SET bitmap:port range 0-65535\nadd SET 10.0.0.3\n",
            "line 4",
            &["10.0.0.1", "10.0.0.2"][..],
        ),
        // A full set in the middle of a batch of adds.
        (
            "create SET hash:ip family inet maxelem 3\nadd SET 10.0.0.1\nadd SET 10.0.0.2\n\
             add SET 10.0.0.3\nadd SET 10.0.0.4\nadd SET 10.0.0.5\n",
            "line 5",
            &["10.0.0.1", "10.0.0.2", "10.0.0.3"][..],
        ),
        // Adding to a set that does not exist. (`ipset` finds this before
        // it sends the adds it holds, so it leaves 10.0.0.1 out; here every
        // line before the refused one is applied, the same either way for a
        // restore that is retried from what the kernel holds.)
        (
            "create SET hash:ip family inet\nadd SET 10.0.0.1\nadd NOSET 10.0.0.2\nadd SET 10.0.0.3\n",
            "line 3",
            &["10.0.0.1"][..],
        ),
        // An address of the other family.
        (
            "create SET hash:ip family inet\nadd SET 10.0.0.1\nadd SET fd00::1\nadd SET 10.0.0.3\n",
            "line 3",
            &["10.0.0.1"][..],
        ),
    ] {
        destroy_test_sets();
        let ours = nl
            .restore(&script.replace("SET", "KPTEST-N-SET"))
            .expect_err(script);
        assert_eq!(line_of(&ours), refused_line, "{script}: {ours}");
        let tools = IpsetCmd
            .restore(&script.replace("SET", "KPTEST-T-SET"))
            .expect_err(script);
        assert_eq!(line_of(&tools), refused_line, "ipset: {tools}");
        let members = nl.save_set("KPTEST-N-SET").unwrap().entries;
        assert_eq!(members.iter().collect::<Vec<_>>(), left, "{script}");
        // Where the kernel refuses, `ipset` leaves the same.
        if !script.contains("NOSET") && !script.contains("fd00") {
            assert_eq!(saved("KPTEST-N-"), saved("KPTEST-T-"), "{script}");
        }
    }
    destroy_test_sets();
}

#[test]
#[ignore = "needs ip_set (VM)"]
fn destroying_a_set_a_rule_uses_is_refused_as_ipset_refuses_it() {
    let _ = Command::new("modprobe").arg("ip_set").status();
    destroy_test_sets();
    let mut nl = IpsetNetlink::connect().expect("connect");
    nl.restore("create KPTEST-USED hash:ip family inet\nadd KPTEST-USED 10.0.0.1\n")
        .unwrap();
    let rule = [
        "-A",
        "OUTPUT",
        "-m",
        "set",
        "--match-set",
        "KPTEST-USED",
        "dst",
        "-j",
        "ACCEPT",
    ];
    assert!(
        Command::new("iptables")
            .args(rule)
            .status()
            .unwrap()
            .success()
    );
    let script = "flush KPTEST-USED\ndestroy KPTEST-USED\nadd KPTEST-USED 10.0.0.2\n";
    let ours = nl.restore(script).expect_err("destroy of a set in use");
    let tools = IpsetCmd
        .restore(script)
        .expect_err("destroy of a set in use");
    assert_eq!(line_of(&ours), "line 2", "{ours}");
    assert_eq!(line_of(&tools), "line 2", "{tools}");
    assert!(ours.reason.contains("in use"), "{ours}");
    // Flushed, still there, and nothing after the refusal was applied.
    assert_eq!(nl.headers().unwrap()["KPTEST-USED"].entries, 0);
    let mut delete = rule.to_vec();
    delete[0] = "-D";
    assert!(
        Command::new("iptables")
            .args(&delete)
            .status()
            .unwrap()
            .success()
    );
    nl.restore("destroy KPTEST-USED\n").unwrap();
    assert!(!nl.headers().unwrap().contains_key("KPTEST-USED"));
    // A set that is not there: the same answer as `ipset`'s.
    let ours = nl.restore("destroy KPTEST-USED\n");
    let tools = IpsetCmd.restore("destroy KPTEST-USED\n");
    assert_eq!(
        ours.is_ok(),
        tools.is_ok(),
        "ours {ours:?}, ipset {tools:?}"
    );
    destroy_test_sets();
}
