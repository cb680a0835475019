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
