//! A large full sync on nf_tables goes in as several transactions
//! (`netfilter/staged.rs`) and builds exactly what one transaction builds.
//! The twin refuses a rule that jumps to a chain not yet created and
//! commits at each COMMIT, as iptables-nft-restore does, so a section
//! written before the chains it needs fails here.

use super::IptablesProxier;
use super::proxier_tests::{cluster, config, service};
use crate::cluster::*;
use crate::kernel::iptables::IptablesTwin;

/// `n` ClusterIP Services with ten ready endpoints each.
fn services(n: usize) -> StaticCluster {
    let addrs: Vec<Vec<String>> = (0..n)
        .map(|i| {
            (0..10)
                .map(|e| format!("10.244.{}.{}", i / 25, (i % 25) * 10 + e + 1))
                .collect()
        })
        .collect();
    let with_eps: Vec<(Service, Vec<(&str, &str)>)> = (0..n)
        .map(|i| {
            let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
            let svc = service("bench", &format!("svc-{i}"), &ip, "http", 80);
            let eps = addrs[i].iter().map(|a| (a.as_str(), "node-2")).collect();
            (svc, eps)
        })
        .collect();
    cluster(with_eps)
}

fn synced(nf_tables: bool, c: &StaticCluster) -> IptablesProxier<IptablesTwin> {
    let twin = IptablesTwin {
        nf_tables,
        ..IptablesTwin::new()
    };
    let mut p = IptablesProxier::new(twin, config(), vec![IpFamily::V4]);
    let outcome = p.sync_view(c, None);
    assert!(outcome.ok(), "{:?}", outcome.errors);
    p
}

fn nat_sections(restore: &str) -> usize {
    restore.lines().filter(|l| *l == "*nat").count()
}

#[test]
fn a_large_sync_on_nf_tables_is_staged_and_builds_what_one_transaction_builds() {
    let c = services(400);
    let staged = synced(true, &c);
    let single = synced(false, &c);
    let staged_text = staged.last_restore(IpFamily::V4).unwrap();
    let single_text = single.last_restore(IpFamily::V4).unwrap();
    assert_eq!(nat_sections(single_text), 1);
    assert!(
        nat_sections(staged_text) > 3,
        "{}",
        nat_sections(staged_text)
    );
    // Same lines, only grouped differently.
    fn sorted(t: &str) -> Vec<&str> {
        let mut l: Vec<&str> = t
            .lines()
            .filter(|l| *l != "*nat" && *l != "COMMIT")
            .collect();
        l.sort_unstable();
        l
    }
    assert_eq!(sorted(staged_text), sorted(single_text));
    assert_eq!(staged.iptables().tables, single.iptables().tables);

    // KUBE-SERVICES, which points at every Service, is written in the last
    // transaction, with the jumps from the built-in chains.
    let last = staged_text.rsplit("*nat\n").next().unwrap();
    assert!(last.contains(":KUBE-SERVICES - [0:0]"));
    assert!(last.contains("-I PREROUTING 1 "));
}

#[test]
fn a_small_sync_on_nf_tables_is_one_transaction() {
    let c = services(3);
    let staged = synced(true, &c);
    let single = synced(false, &c);
    assert_eq!(
        staged.last_restore(IpFamily::V4),
        single.last_restore(IpFamily::V4)
    );
}

#[test]
fn removing_services_after_a_staged_sync_deletes_their_chains_last() {
    let c = services(400);
    let mut p = synced(true, &c);
    let fewer = services(390);
    let outcome = p.sync_view(&fewer, None);
    assert!(outcome.ok(), "{:?}", outcome.errors);
    let text = p.last_restore(IpFamily::V4).unwrap();
    let last = text.rsplit("*nat\n").next().unwrap();
    let deletes = text.lines().filter(|l| l.starts_with("-X ")).count();
    assert!(deletes >= 20, "{deletes}");
    assert_eq!(
        last.lines().filter(|l| l.starts_with("-X ")).count(),
        deletes
    );
    assert_eq!(p.iptables().tables, synced(false, &fewer).iptables().tables);
}
