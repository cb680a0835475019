//! The pure diff on hand-made plans and dumps, and the reader's choice of
//! what to read, on the iptables twin.

use std::collections::BTreeSet;

use super::diff::{Drift, diff};
use super::live::{self, Live, SyncMode};
use crate::cluster::{IpFamily, ServiceName};
use crate::kernel::iptables::IptablesTwin;
use crate::netfilter::chains::{CANARY, jump, top_chain};
use crate::netfilter::ruleset::SavedTables;
use crate::netfilter::ruleset::{Chain, Ruleset, Table};

fn web() -> ServiceName {
    ServiceName::new("default", "web")
}

fn db() -> ServiceName {
    ServiceName::new("default", "db")
}

fn owned(name: &str, owner: &ServiceName, rules: &[&str]) -> Chain {
    Chain {
        name: name.into(),
        rules: rules.iter().map(|r| r.to_string()).collect(),
        owner: Some(owner.clone()),
    }
}

/// Two Services, each with a policy chain and one endpoint chain, under
/// one top-level chain per table and one jump per table.
fn plan() -> Ruleset {
    Ruleset {
        filter: Table {
            chains: vec![top_chain("KUBE-SERVICES", vec![])],
        },
        nat: Table {
            chains: vec![
                top_chain(
                    "KUBE-SERVICES",
                    vec![
                        "-d 10.96.0.10/32 -j KUBE-SVC-WEB".into(),
                        "-d 10.96.0.20/32 -j KUBE-SVC-DB".into(),
                    ],
                ),
                owned("KUBE-SVC-WEB", &web(), &["-j KUBE-SEP-WEB1"]),
                owned(
                    "KUBE-SEP-WEB1",
                    &web(),
                    &["-p tcp -j DNAT --to-destination 10.244.1.1:8080"],
                ),
                owned("KUBE-SVC-DB", &db(), &["-j KUBE-SEP-DB1"]),
                owned(
                    "KUBE-SEP-DB1",
                    &db(),
                    &["-p tcp -j DNAT --to-destination 10.244.2.1:5432"],
                ),
            ],
        },
        jumps: vec![
            jump("filter", "OUTPUT", "", "portals", "KUBE-SERVICES"),
            jump("nat", "OUTPUT", "", "portals", "KUBE-SERVICES"),
        ],
    }
}

/// A dump holding exactly what `plan()` wants, canaries and jumps included.
fn in_sync() -> String {
    let mut save = String::new();
    for table in ["mangle", "filter", "nat"] {
        save.push_str(&format!("*{table}\n:{CANARY} - [0:0]\n"));
        let rs = plan();
        let chains = match table {
            "nat" => &rs.nat.chains,
            "filter" => &rs.filter.chains,
            _ => &vec![],
        };
        for c in chains {
            save.push_str(&format!(":{} - [0:0]\n", c.name));
        }
        for j in rs.jumps.iter().filter(|j| j.table == table) {
            save.push_str(&format!("-A {} {}\n", j.from, j.rule));
        }
        for c in chains {
            for r in &c.rules {
                save.push_str(&format!("-A {} {r}\n", c.name));
            }
        }
        save.push_str("COMMIT\n");
    }
    save
}

fn names<'a>(chains: &[&'a Chain]) -> Vec<&'a str> {
    chains.iter().map(|c| c.name.as_str()).collect()
}

fn service_chains() -> BTreeSet<String> {
    [
        "KUBE-SVC-WEB",
        "KUBE-SEP-WEB1",
        "KUBE-SVC-DB",
        "KUBE-SEP-DB1",
    ]
    .map(String::from)
    .into()
}

#[test]
fn full_sync_on_an_empty_kernel_writes_everything() {
    let rs = plan();
    let c = diff(&rs, &Live::Full(SavedTables::default()), &BTreeSet::new());
    assert!(c.full);
    assert_eq!(names(&c.restore.filter), ["KUBE-SERVICES"]);
    assert_eq!(
        names(&c.restore.nat),
        [
            "KUBE-SERVICES",
            "KUBE-SVC-WEB",
            "KUBE-SEP-WEB1",
            "KUBE-SVC-DB",
            "KUBE-SEP-DB1"
        ]
    );
    assert_eq!(c.restore.jumps.len(), 2);
    assert_eq!(c.restore.canary, ["mangle", "nat", "filter"]);
    assert!(c.restore.delete_nat.is_empty());
    assert_eq!(c.written(), 6);
    // Missing chains are drift, but none was edited: nothing is repaired.
    assert_eq!(c.drift.len(), 4);
    assert!(c.drift.iter().all(|d| !d.edited));
    assert_eq!(c.repaired(), 0);
    assert_eq!(c.chains, service_chains());
}

#[test]
fn full_sync_in_step_with_the_kernel_still_writes_every_chain() {
    let rs = plan();
    let c = diff(
        &rs,
        &Live::Full(SavedTables::parse(&in_sync())),
        &BTreeSet::new(),
    );
    assert!(c.full);
    assert_eq!(c.restore.nat.len(), 5);
    assert!(c.restore.jumps.is_empty());
    assert!(c.restore.canary.is_empty());
    assert!(c.restore.delete_nat.is_empty());
    assert!(c.drift.is_empty());
}

#[test]
fn partial_sync_writes_top_level_and_changed_chains_and_deletes_what_it_wrote() {
    let rs = plan();
    let changed: BTreeSet<ServiceName> = [web()].into();
    let mut written = service_chains();
    written.insert("KUBE-SEP-WEB0".into());
    let c = diff(&rs, &Live::Trusted(&changed), &written);
    assert!(!c.full);
    assert_eq!(names(&c.restore.filter), ["KUBE-SERVICES"]);
    assert_eq!(
        names(&c.restore.nat),
        ["KUBE-SERVICES", "KUBE-SVC-WEB", "KUBE-SEP-WEB1"]
    );
    assert_eq!(c.restore.delete_nat, ["KUBE-SEP-WEB0"]);
    // Without a dump there is nothing to compare jumps, canaries or
    // chains with.
    assert!(c.restore.jumps.is_empty());
    assert!(c.restore.canary.is_empty());
    assert!(c.drift.is_empty());
    assert_eq!(c.chains, service_chains());
}

#[test]
fn partial_sync_with_nothing_changed_writes_only_top_level_chains() {
    let rs = plan();
    let c = diff(&rs, &Live::Trusted(&BTreeSet::new()), &service_chains());
    assert_eq!(names(&c.restore.nat), ["KUBE-SERVICES"]);
    assert!(c.restore.delete_nat.is_empty());
    assert_eq!(c.written(), 2);
}

#[test]
fn edited_chains_are_drift_and_a_dry_run_writes_only_their_service() {
    let rs = plan();
    let save = in_sync()
        .replace(
            "-A KUBE-SVC-DB -j KUBE-SEP-DB1\n",
            "-A KUBE-SVC-DB -j DROP\n",
        )
        .replace(":KUBE-SEP-WEB1 - [0:0]\n", "")
        .replace(
            "-A KUBE-SEP-WEB1 -p tcp -j DNAT --to-destination 10.244.1.1:8080\n",
            "",
        );
    let snapshot = SavedTables::parse(&save);

    let dry = diff(&rs, &Live::Diff(snapshot.clone()), &BTreeSet::new());
    assert!(!dry.full);
    assert_eq!(
        dry.drift,
        [
            Drift {
                chain: "KUBE-SEP-WEB1".into(),
                service: web(),
                edited: false,
            },
            Drift {
                chain: "KUBE-SVC-DB".into(),
                service: db(),
                edited: true,
            },
        ]
    );
    // Both chains of each drifted Service are written, with the top level.
    assert_eq!(dry.restore.nat.len(), 5);
    assert_eq!(dry.repaired(), 1);

    let full = diff(&rs, &Live::Full(snapshot), &BTreeSet::new());
    assert_eq!(full.repaired(), 1);
    assert_eq!(full.restore.nat.len(), 5);
}

#[test]
fn a_dry_run_in_step_with_the_kernel_writes_only_top_level_chains() {
    let rs = plan();
    let c = diff(
        &rs,
        &Live::Diff(SavedTables::parse(&in_sync())),
        &BTreeSet::new(),
    );
    assert_eq!(names(&c.restore.nat), ["KUBE-SERVICES"]);
    assert!(c.drift.is_empty());
}

#[test]
fn stale_service_chains_in_the_dump_are_deleted_and_nothing_else() {
    let rs = plan();
    let save = in_sync().replace(
        "*nat\n",
        "*nat\n:KUBE-SVC-OLD - [0:0]\n:KUBE-SEP-OLD - [0:0]\n:KUBE-FW-OLD - [0:0]\n:MY-CHAIN - [0:0]\n:KUBE-MY-OWN - [0:0]\n",
    );
    // Chains written last time do not matter once there is a dump.
    let written: BTreeSet<String> = ["KUBE-SVC-GONE".to_string()].into();
    for live in [
        Live::Full(SavedTables::parse(&save)),
        Live::Diff(SavedTables::parse(&save)),
    ] {
        let c = diff(&rs, &live, &written);
        assert_eq!(
            c.restore.delete_nat,
            ["KUBE-FW-OLD", "KUBE-SEP-OLD", "KUBE-SVC-OLD"]
        );
    }
}

#[test]
fn missing_jumps_are_inserted_present_ones_left() {
    let rs = plan();
    let save = in_sync();
    let save = {
        // Drop the filter jump only (the first OUTPUT jump in the dump).
        let at = save.find("-A OUTPUT").unwrap();
        let end = at + save[at..].find('\n').unwrap() + 1;
        format!("{}{}", &save[..at], &save[end..])
    };
    let c = diff(
        &rs,
        &Live::Full(SavedTables::parse(&save)),
        &BTreeSet::new(),
    );
    assert_eq!(c.restore.jumps.len(), 1);
    assert_eq!(c.restore.jumps[0].table, "filter");
    assert_eq!(c.restore.jumps[0].from, "OUTPUT");
}

#[test]
fn a_missing_canary_is_created_in_its_table_only() {
    let rs = plan();
    let save = in_sync().replacen(&format!("*nat\n:{CANARY} - [0:0]\n"), "*nat\n", 1);
    let c = diff(
        &rs,
        &Live::Full(SavedTables::parse(&save)),
        &BTreeSet::new(),
    );
    assert_eq!(c.restore.canary, ["nat"]);
}

fn canaries(twin: &mut IptablesTwin, tables: &[&str]) {
    for t in tables {
        twin.set_chain(IpFamily::V4, t, CANARY, vec![]);
    }
}

#[test]
fn partial_read_with_canaries_in_place_dumps_nothing() {
    let mut twin = IptablesTwin::new();
    canaries(&mut twin, &["mangle", "nat", "filter"]);
    // A dump would fail: the read must not make one.
    twin.fail_saves = true;
    let changed = BTreeSet::new();
    let live = live::read(&mut twin, IpFamily::V4, SyncMode::Partial(&changed), false);
    assert!(matches!(live, Ok(Live::Trusted(_))), "{live:?}");
}

#[test]
fn partial_read_turns_full_when_a_canary_is_gone_or_a_full_sync_is_owed() {
    let changed = BTreeSet::new();
    let mut gone = IptablesTwin::new();
    canaries(&mut gone, &["mangle", "filter"]);
    let live = live::read(&mut gone, IpFamily::V4, SyncMode::Partial(&changed), false);
    assert!(matches!(live, Ok(Live::Full(_))), "{live:?}");

    let mut owed = IptablesTwin::new();
    canaries(&mut owed, &["mangle", "nat", "filter"]);
    let live = live::read(&mut owed, IpFamily::V4, SyncMode::Partial(&changed), true);
    assert!(matches!(live, Ok(Live::Full(_))), "{live:?}");

    owed.fail_saves = true;
    let live = live::read(&mut owed, IpFamily::V4, SyncMode::Partial(&changed), true);
    assert!(live.is_err(), "{live:?}");
}

#[test]
fn full_and_dry_run_reads_dump_the_tables() {
    let mut twin = IptablesTwin::new();
    canaries(&mut twin, &["nat"]);
    let Ok(Live::Full(s)) = live::read(&mut twin, IpFamily::V4, SyncMode::Full, false) else {
        panic!("full read");
    };
    assert!(s.nat.has(CANARY));
    assert!(!s.mangle.has(CANARY));
    let live = live::read(&mut twin, IpFamily::V4, SyncMode::Diff, false);
    assert!(matches!(live, Ok(Live::Diff(_))), "{live:?}");
}
