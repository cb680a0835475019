//! IPVS mode's companion ipsets and rules, on the in-memory twins: the
//! rules as written (goldens in src/ipvs/testdata, `KPROXY_BLESS=1`
//! rewrites them), and the proxier's diffing of sets and chains, drift
//! repair, hand-over from the iptables mode and cleanup.

use std::sync::{Arc, Mutex};

use clap::Parser;

use super::IpvsProxier;
use super::live::Companions;
use super::planner::{PlanConfig, plan};
use super::planner_tests::{fixture, node_for, state_from_yaml, test_node};
use super::rules::{RuleConfig, ruleset};
use super::sets::{DesiredSets, Set};
use crate::config::{Config, Flags};
use crate::kernel::ipset::{IpsetTwin, Ipsets};
use crate::kernel::iptables::{Iptables, IptablesTwin};
use crate::kernel::ipvs::twin::IpvsTwin;
use crate::kernel::link::twin::LinksTwin;
use crate::net::IpFamily;
use crate::netfilter::ruleset::RestorePlan;
use crate::sync::{Proxier, SyncError};
use crate::testing::golden;

type Shared<T> = Arc<Mutex<T>>;

fn config(flags: &[&str]) -> Config {
    let mut args = vec!["kproxy", "--hostname-override=node-1"];
    args.extend(flags);
    Flags::try_parse_from(&args)
        .unwrap()
        .apply_to(Config::default())
        .unwrap()
}

/// Every companion chain and jump for one fixture, as restore input.
fn rendered_rules(fixture_name: &str, flags: &[&str], family: IpFamily) -> String {
    let cfg = config(flags);
    let (state, _) = state_from_yaml(&fixture(fixture_name), &cfg);
    let p = plan(&state, &node_for(&state), &PlanConfig::from(&cfg));
    let rs = ruleset(family, &p.sets, &RuleConfig::from(&cfg));
    RestorePlan {
        nat: rs.nat.chains.iter().collect(),
        filter: rs.filter.chains.iter().collect(),
        jumps: rs.jumps.iter().collect(),
        ..Default::default()
    }
    .render()
}

#[test]
fn companion_rules_match_their_reviewed_goldens() {
    let cases: &[(&str, &str, &[&str], IpFamily)] = &[
        ("clusterip", "clusterip.yaml", &[], IpFamily::V4),
        (
            "lb-local-ranges-cluster-cidr",
            "loadbalancer-local-ranges.yaml",
            &["--cluster-cidr=10.244.0.0/16"],
            IpFamily::V4,
        ),
        (
            "dual-stack-v6-masquerade-all",
            "dual-stack.yaml",
            &["--masquerade-all"],
            IpFamily::V6,
        ),
    ];
    let mut failures = Vec::new();
    for (name, fx, flags, family) in cases {
        let got = rendered_rules(fx, flags, *family);
        if let Err(e) = golden(&format!("src/ipvs/testdata/{name}.rules"), &got) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rules_follow_the_masquerade_settings_and_skip_empty_sets() {
    let plain = rendered_rules("clusterip.yaml", &[], IpFamily::V4);
    assert!(plain.contains("--match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ"));
    // No load balancer in this fixture: no rule names that set in nat.
    assert!(!plain.contains("KUBE-LOAD-BALANCER dst,dst -j ACCEPT"));
    let cidr = rendered_rules(
        "clusterip.yaml",
        &["--cluster-cidr=10.244.0.0/16"],
        IpFamily::V4,
    );
    assert!(cidr.contains(
        "-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ"
    ));
    let all = rendered_rules("clusterip.yaml", &["--masquerade-all"], IpFamily::V4);
    assert!(all.contains("--match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ"));
    // A non-default mark bit reaches every mark rule.
    let bit = rendered_rules(
        "clusterip.yaml",
        &["--iptables-masquerade-bit=10"],
        IpFamily::V4,
    );
    assert!(bit.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x400"));
    assert!(!bit.contains("0x4000"));
}

/// Upstream drops the node's own connections to a load balancer whose
/// source ranges leave the node out; the rule as iptables-save printed
/// upstream v1.36.3's in the VM (integration/api_ipvs.sh).
#[test]
fn a_load_balancer_closed_to_the_node_drops_the_nodes_own_connections() {
    let mut sets = DesiredSets::default();
    let v4 = IpFamily::V4;
    sets.add(v4, Set::LoadBalancerFw, "203.0.113.10,tcp:80".into());
    // A range holds a node address: the node is let in by a member instead.
    sets.add(v4, Set::LoadBalancerFw, "203.0.113.11,udp:53".into());
    let open = "203.0.113.11,udp:53,203.0.113.11";
    sets.add(v4, Set::LoadBalancerSourceIp, open.into());
    sets.add(
        IpFamily::V6,
        Set::LoadBalancerFw,
        "2001:db8::10,sctp:3868".into(),
    );
    let out_filter = |family| {
        ruleset(family, &sets, &RuleConfig::default())
            .filter
            .chains
            .into_iter()
            .find(|c| c.name == "KUBE-IPVS-OUT-FILTER")
            .unwrap()
            .rules
    };
    assert_eq!(
        out_filter(v4),
        ["-s 203.0.113.10/32 -m ipvs --vproto 6 --vaddr 203.0.113.10 --vport 80 -j DROP"]
    );
    assert_eq!(
        out_filter(IpFamily::V6),
        ["-s 2001:db8::10/128 -m ipvs --vproto 132 --vaddr 2001:db8::10 --vport 3868 -j DROP"]
    );
    // No source ranges at all: nothing to drop.
    let none = ruleset(v4, &DesiredSets::default(), &RuleConfig::default());
    assert!(
        none.filter
            .chains
            .iter()
            .all(|c| c.name != "KUBE-IPVS-OUT-FILTER" || c.rules.is_empty())
    );
}

struct World {
    ipvs: Shared<IpvsTwin>,
    links: Shared<LinksTwin>,
    ipt: Shared<IptablesTwin>,
    ipsets: Shared<IpsetTwin>,
    proxier: IpvsProxier,
    config: Config,
}

fn world() -> World {
    let config = config(&[]);
    let ipvs: Shared<IpvsTwin> = Shared::default();
    let links = Arc::new(Mutex::new(LinksTwin::node(&["192.168.58.2"
        .parse()
        .unwrap()])));
    let ipt: Shared<IptablesTwin> = Shared::default();
    let ipsets: Shared<IpsetTwin> = Shared::default();
    let companions = Companions::new(
        Box::new(ipt.clone()),
        Box::new(ipsets.clone()),
        vec![IpFamily::V4, IpFamily::V6],
    );
    let proxier = IpvsProxier::new(Box::new(ipvs.clone()), Box::new(links.clone()), &config)
        .with_companions(companions);
    World {
        ipvs,
        links,
        ipt,
        ipsets,
        proxier,
        config,
    }
}

fn members(w: &World, name: &str) -> Vec<String> {
    w.ipsets.lock().unwrap().sets[name]
        .entries
        .iter()
        .cloned()
        .collect()
}

#[test]
fn the_first_sync_writes_sets_and_rules_and_the_next_writes_nothing() {
    let mut w = world();
    let (state, _) = state_from_yaml(&fixture("nodeport.yaml"), &w.config);
    let out = w.proxier.sync(&state, None);
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(out.ops.get("create_ipset"), Some(&34));
    assert_eq!(members(&w, "KUBE-CLUSTER-IP"), ["10.96.0.20,tcp:80"]);
    assert_eq!(members(&w, "KUBE-NODE-PORT-TCP"), ["30080"]);
    assert_eq!(members(&w, "KUBE-IPVS-IPS"), ["10.96.0.20"]);
    assert!(members(&w, "KUBE-6-CLUSTER-IP").is_empty());
    {
        let ipt = w.ipt.lock().unwrap();
        let masq = ipt
            .chain(IpFamily::V4, "nat", "KUBE-NODE-PORT")
            .unwrap()
            .join("\n");
        assert!(masq.contains("--match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ"));
        // The jumps are in the built-in chains, last listed first.
        let input = ipt.chain(IpFamily::V4, "filter", "INPUT").unwrap();
        assert!(input[0].ends_with("-j KUBE-IPVS-FILTER"), "{input:?}");
        assert!(input[2].ends_with("-j KUBE-NODE-PORT"), "{input:?}");
    }
    let restores = (
        w.ipt.lock().unwrap().restores.len(),
        w.ipsets.lock().unwrap().restores.len(),
    );
    let again = w.proxier.sync(&state, None);
    assert!(again.ok(), "{:?}", again.errors);
    assert_eq!(again.total_ops(), 0, "{:?}", again.ops);
    // Neither sync listed a set's members: the first found no sets, the
    // second found the counts it had written.
    assert!(w.ipsets.lock().unwrap().member_reads.is_empty());
    assert_eq!(
        (
            w.ipt.lock().unwrap().restores.len(),
            w.ipsets.lock().unwrap().restores.len()
        ),
        restores,
        "an unchanged cluster must not rewrite rules or sets"
    );
}

#[test]
fn an_endpoint_change_touches_only_the_sets_it_concerns() {
    let mut w = world();
    let text = fixture("nodeport.yaml");
    let (state, _) = state_from_yaml(&text, &w.config);
    assert!(w.proxier.sync(&state, None).ok());
    let ipt_restores = w.ipt.lock().unwrap().restores.len();

    // A new endpoint on another node: one real server per virtual server,
    // no set member, no rule.
    let remote = text.replace(
        "endpoints:\n",
        "endpoints:\n- {addresses: [10.244.2.77], conditions: {ready: true}, nodeName: node-2}\n",
    );
    assert_ne!(remote, text);
    let (state, _) = state_from_yaml(&remote, &w.config);
    let out = w.proxier.sync(&state, None);
    assert!(out.ok(), "{:?}", out.errors);
    assert!(!out.ops.contains_key("add_ipset_entry"), "{:?}", out.ops);
    assert!(!out.ops.contains_key("restore_rules"), "{:?}", out.ops);

    // One on this node: its hairpin member is added, nothing else.
    let local = remote.replace("nodeName: node-2}", "nodeName: node-1}");
    let (state, _) = state_from_yaml(&local, &w.config);
    let out = w.proxier.sync(&state, None);
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(out.ops.get("add_ipset_entry"), Some(&1), "{:?}", out.ops);
    assert!(members(&w, "KUBE-LOOP-BACK").contains(&"10.244.2.77,tcp:8080,10.244.2.77".into()));
    assert_eq!(w.ipt.lock().unwrap().restores.len(), ipt_restores);

    // The Service goes: its members go, and the rules that matched only
    // non-empty sets are rewritten without them.
    let (empty, _) = state_from_yaml("", &w.config);
    let out = w.proxier.sync(&empty, None);
    assert!(out.ok(), "{:?}", out.errors);
    assert!(members(&w, "KUBE-CLUSTER-IP").is_empty());
    assert!(members(&w, "KUBE-NODE-PORT-TCP").is_empty());
    let ipt = w.ipt.lock().unwrap();
    let services = ipt.chain(IpFamily::V4, "nat", "KUBE-SERVICES").unwrap();
    assert!(
        services.iter().all(|r| !r.contains("KUBE-CLUSTER-IP")),
        "{services:?}"
    );
}

#[test]
fn drift_in_sets_and_chains_is_repaired_and_only_there() {
    let mut w = world();
    let (state, _) = state_from_yaml(&fixture("nodeport.yaml"), &w.config);
    assert!(w.proxier.sync(&state, None).ok());
    // An operator adds a member to a set, flushes one chain and deletes one jump.
    w.ipsets
        .lock()
        .unwrap()
        .restore("add KUBE-CLUSTER-IP 10.1.1.1,tcp:1\n")
        .unwrap();
    {
        let mut ipt = w.ipt.lock().unwrap();
        ipt.set_chain(IpFamily::V4, "nat", "KUBE-POSTROUTING", Vec::new());
        let post: Vec<String> = ipt
            .chain(IpFamily::V4, "nat", "POSTROUTING")
            .unwrap()
            .iter()
            .filter(|r| !r.ends_with("-j KUBE-POSTROUTING"))
            .cloned()
            .collect();
        ipt.set_chain(IpFamily::V4, "nat", "POSTROUTING", post);
    }
    let before = w.ipt.lock().unwrap().restores.len();
    let out = w.proxier.sync(&state, None);
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(members(&w, "KUBE-CLUSTER-IP"), ["10.96.0.20,tcp:80"]);
    let ipt = w.ipt.lock().unwrap();
    assert_eq!(ipt.restores.len(), before + 1);
    let (_, input) = ipt.restores.last().unwrap();
    // One chain and one jump, nothing else.
    assert_eq!(out.ops.get("restore_rules"), Some(&2), "{input}");
    assert!(input.contains(":KUBE-POSTROUTING - [0:0]"), "{input}");
    assert!(!input.contains(":KUBE-SERVICES"), "{input}");
    assert!(input.contains("-I POSTROUTING 1 "), "{input}");
}

#[test]
fn members_are_read_only_when_counts_disagree_or_after_a_restart() {
    let mut w = world();
    let (state, _) = state_from_yaml(&fixture("nodeport.yaml"), &w.config);
    assert!(w.proxier.sync(&state, None).ok());
    // A member swapped behind kproxy's back keeps the count: found by the
    // periodic full read, at the latest FULL_READ_EVERY syncs later.
    w.ipsets
        .lock()
        .unwrap()
        .restore("flush KUBE-CLUSTER-IP\nadd KUBE-CLUSTER-IP 10.1.1.1,tcp:1\n")
        .unwrap();
    let mut repaired_after = None;
    for n in 1..=25 {
        assert!(w.proxier.sync(&state, None).ok());
        if members(&w, "KUBE-CLUSTER-IP") == ["10.96.0.20,tcp:80"] {
            repaired_after = Some(n);
            break;
        }
    }
    assert!(
        repaired_after.is_some_and(|n| n <= 20),
        "{repaired_after:?}"
    );

    // A new process (a restart) trusts nothing it did not write: it reads
    // the members of every set that is not empty, and only those.
    let ipsets = w.ipsets.clone();
    ipsets.lock().unwrap().member_reads.clear();
    let mut fresh = IpvsProxier::new(
        Box::new(w.ipvs.clone()),
        Box::new(w.links.clone()),
        &w.config,
    )
    .with_companions(Companions::new(
        Box::new(w.ipt.clone()),
        Box::new(ipsets.clone()),
        vec![IpFamily::V4, IpFamily::V6],
    ));
    let out = fresh.sync(&state, None);
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(out.total_ops(), 0, "{:?}", out.ops);
    let mut reads = ipsets.lock().unwrap().member_reads.clone();
    reads.sort();
    assert_eq!(
        reads,
        [
            "KUBE-CLUSTER-IP",
            "KUBE-IPVS-IPS",
            "KUBE-LOOP-BACK",
            "KUBE-NODE-PORT-TCP"
        ]
    );
}

#[test]
fn the_iptables_modes_leftovers_go_after_the_first_sync_and_shared_chains_stay() {
    let mut w = world();
    {
        // What the iptables mode leaves: a per-Service chain referenced from
        // KUBE-SERVICES, its own top chains and jumps, and an operator's chain.
        let mut ipt = w.ipt.lock().unwrap();
        ipt.restore(
            IpFamily::V4,
            "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-SVC-ABCDEFGHIJKLMNOP - [0:0]\n:OPERATOR - [0:0]\n\
             -I PREROUTING 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A KUBE-SERVICES -d 10.96.0.5/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-ABCDEFGHIJKLMNOP\n\
             -A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n\
             -A OPERATOR -j RETURN\nCOMMIT\n\
             *filter\n:KUBE-EXTERNAL-SERVICES - [0:0]\n\
             -I INPUT 1 -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\nCOMMIT\n",
        )
        .unwrap();
    }
    let (state, _) = state_from_yaml(&fixture("clusterip.yaml"), &w.config);
    let out = w.proxier.sync(&state, None);
    assert!(out.ok(), "{:?}", out.errors);
    let ipt = w.ipt.lock().unwrap();
    let nat = |c: &str| ipt.chain(IpFamily::V4, "nat", c).cloned();
    assert_eq!(nat("KUBE-SVC-ABCDEFGHIJKLMNOP"), None);
    assert_eq!(nat("KUBE-NODEPORTS"), None);
    assert_eq!(nat("OPERATOR"), Some(vec!["-j RETURN".to_string()]));
    assert!(
        ipt.chain(IpFamily::V4, "filter", "KUBE-EXTERNAL-SERVICES")
            .is_none()
    );
    let prerouting = nat("PREROUTING").unwrap();
    assert_eq!(
        prerouting
            .iter()
            .filter(|r| r.ends_with("-j KUBE-SERVICES"))
            .count(),
        1,
        "the jump both modes share is kept once: {prerouting:?}"
    );
    assert!(
        nat("KUBE-SERVICES")
            .unwrap()
            .iter()
            .any(|r| r.contains("KUBE-CLUSTER-IP"))
    );
}

#[test]
fn a_refused_set_update_is_reported_and_the_ipvs_table_still_programmed() {
    let mut w = world();
    w.ipsets.lock().unwrap().fail_restores = 1;
    let (state, _) = state_from_yaml(&fixture("clusterip.yaml"), &w.config);
    let out = w.proxier.sync(&state, None);
    assert!(!out.ok());
    assert!(
        out.errors
            .iter()
            .any(|e| matches!(e, SyncError::Ipsets(k) if k.op.contains("ipset restore"))),
        "{:?}",
        out.errors
    );
    assert_eq!(w.ipvs.lock().unwrap().table.services.len(), 1);
    // The rules were not written against sets that do not exist.
    assert!(w.ipt.lock().unwrap().restores.is_empty());
    // The next sync completes.
    let out = w.proxier.sync(&state, None);
    assert!(out.ok(), "{:?}", out.errors);
    assert_eq!(members(&w, "KUBE-CLUSTER-IP"), ["10.96.0.10,tcp:80"]);
}

#[test]
fn a_set_of_the_wrong_type_is_named_and_left_alone() {
    let mut w = world();
    w.ipsets
        .lock()
        .unwrap()
        .restore("create KUBE-LOOP-BACK hash:ip family inet\n")
        .unwrap();
    let (state, _) = state_from_yaml(&fixture("clusterip.yaml"), &w.config);
    let out = w.proxier.sync(&state, None);
    assert!(
        out.errors.iter().any(|e| matches!(
            e,
            SyncError::SetConflict { name, found, .. } if name == "KUBE-LOOP-BACK" && found == "hash:ip"
        )),
        "{:?}",
        out.errors
    );
    assert_eq!(
        w.ipsets.lock().unwrap().sets["KUBE-LOOP-BACK"].set_type,
        "hash:ip"
    );
    assert_eq!(members(&w, "KUBE-CLUSTER-IP"), ["10.96.0.10,tcp:80"]);
}

#[test]
fn cleanup_removes_rules_before_sets_and_spares_the_operators() {
    let mut w = world();
    let (state, _) = state_from_yaml(&fixture("nodeport.yaml"), &w.config);
    assert!(w.proxier.sync(&state, None).ok());
    {
        let mut ipsets = w.ipsets.lock().unwrap();
        ipsets
            .restore("create OPERATOR-SET hash:ip family inet\nadd OPERATOR-SET 10.9.9.9\n")
            .unwrap();
        // The twin refuses to destroy a set while a rule uses it, as the
        // kernel does: cleanup must have removed the rules first.
        ipsets.in_use = [Set::ClusterIp.name(IpFamily::V4)].into();
    }
    w.ipt
        .lock()
        .unwrap()
        .restore(
            IpFamily::V4,
            "*filter\n:OPERATOR - [0:0]\n-A INPUT -j OPERATOR\nCOMMIT\n",
        )
        .unwrap();
    // The set stays busy until no rule matches a set any more.
    let errors = {
        let ipt = w.ipt.clone();
        let ipsets = w.ipsets.clone();
        let mut p = IpvsProxier::new(
            Box::new(w.ipvs.clone()),
            Box::new(w.links.clone()),
            &w.config,
        )
        .with_companions(Companions::new(
            Box::new(ipt.clone()),
            Box::new(ReleaseWhenRulesGone { ipt, ipsets }),
            vec![IpFamily::V4, IpFamily::V6],
        ));
        p.cleanup()
    };
    assert!(errors.is_empty(), "{errors:?}");
    let names: Vec<String> = w.ipsets.lock().unwrap().sets.keys().cloned().collect();
    assert_eq!(names, ["OPERATOR-SET"]);
    let save = w.ipt.lock().unwrap().save(IpFamily::V4).unwrap();
    assert!(!save.contains("KUBE-"), "{save}");
    assert!(save.contains("-A INPUT -j OPERATOR"), "{save}");
    // The same cleanup took the virtual servers and the link.
    assert!(w.ipvs.lock().unwrap().table.services.is_empty());
    assert!(
        !w.links
            .lock()
            .unwrap()
            .links
            .contains_key(super::DUMMY_LINK)
    );
    let errors = w.proxier.cleanup();
    assert!(errors.is_empty(), "{errors:?}");
}

/// An ipset twin whose sets count as in use while any KUBE- rule exists.
struct ReleaseWhenRulesGone {
    ipt: Shared<IptablesTwin>,
    ipsets: Shared<IpsetTwin>,
}

impl Ipsets for ReleaseWhenRulesGone {
    fn headers(
        &mut self,
    ) -> Result<
        std::collections::BTreeMap<String, crate::kernel::ipset::SetHeader>,
        crate::kernel::KernelError,
    > {
        self.ipsets.lock().unwrap().headers()
    }
    fn save_set(
        &mut self,
        name: &str,
    ) -> Result<crate::kernel::ipset::LiveSet, crate::kernel::KernelError> {
        self.ipsets.lock().unwrap().save_set(name)
    }
    fn restore(&mut self, script: &str) -> Result<(), crate::kernel::KernelError> {
        let rules_left = self
            .ipt
            .lock()
            .unwrap()
            .save(IpFamily::V4)
            .unwrap()
            .contains("--match-set");
        let mut sets = self.ipsets.lock().unwrap();
        if !rules_left {
            sets.in_use.clear();
        }
        sets.restore(script)
    }
}

/// Upstream's IPVS proxier masquerades off-cluster traffic to a cluster IP
/// with its local detector's "not local" match (proxier.go,
/// writeIptablesRules: `-m set --match-set KUBE-CLUSTER-IP dst,dst` plus
/// IfNotLocal), or, with no detector, node traffic from a VIP (`src,dst`).
#[test]
fn every_detect_local_mode_shapes_the_cluster_ip_masquerade_rule() {
    let cases: &[(&[&str], &str)] = &[
        (&["--cluster-cidr=10.244.0.0/16"], "! -s 10.244.0.0/16 "),
        (
            &[
                "--detect-local-mode=BridgeInterface",
                "--pod-bridge-interface=cni0",
            ],
            "! -i cni0 ",
        ),
        (
            &[
                "--detect-local-mode=InterfaceNamePrefix",
                "--pod-interface-name-prefix=veth",
            ],
            "! -i veth+ ",
        ),
    ];
    for (flags, want) in cases {
        let text = rendered_rules("clusterip.yaml", flags, IpFamily::V4);
        let rule = text
            .lines()
            .find(|l| l.contains("KUBE-CLUSTER-IP") && l.contains("KUBE-MARK-MASQ"))
            .unwrap_or_else(|| panic!("{flags:?}: no masquerade rule in\n{text}"));
        assert!(rule.contains(want), "{flags:?}: {rule}");
        assert!(rule.contains("dst,dst"), "{flags:?}: {rule}");
    }
    // ClusterCIDR without a CIDR detects nothing: node traffic from a VIP.
    let text = rendered_rules("clusterip.yaml", &[], IpFamily::V4);
    assert!(
        text.contains("KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ"),
        "{text}"
    );
}

/// NodeCIDR uses the Node's podCIDRs, so the rule appears once they are known.
#[test]
fn node_cidr_mode_follows_the_nodes_pod_cidrs() {
    let cfg = config(&["--detect-local-mode=NodeCIDR"]);
    let (state, _) = state_from_yaml(&fixture("clusterip.yaml"), &cfg);
    let p = plan(&state, &test_node(), &PlanConfig::from(&cfg));
    let mut rc = RuleConfig::from(&cfg);
    let masq = |rc: &RuleConfig| {
        let rs = ruleset(IpFamily::V4, &p.sets, rc);
        rs.nat
            .chains
            .iter()
            .flat_map(|c| c.rules.clone())
            .find(|r| r.contains("KUBE-CLUSTER-IP") && r.contains("KUBE-MARK-MASQ"))
            .unwrap()
    };
    assert!(masq(&rc).contains("src,dst"), "no podCIDR yet");
    rc.node_pod_cidrs = vec!["10.244.7.0/24".parse().unwrap()];
    assert!(
        masq(&rc).starts_with("! -s 10.244.7.0/24 "),
        "{}",
        masq(&rc)
    );
}

#[test]
fn leftovers_are_present_only_where_the_ipvs_mode_was() {
    let mut w = world();
    // The iptables mode's chains, under the names both modes write.
    w.ipt
        .lock()
        .unwrap()
        .restore(
            IpFamily::V4,
            "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n\
             -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\nCOMMIT\n",
        )
        .unwrap();
    assert!(!w.proxier.leftovers_present());
    let (state, _) = state_from_yaml(&fixture("nodeport.yaml"), &w.config);
    assert!(w.proxier.sync(&state, None).ok());
    assert!(w.proxier.leftovers_present());
    assert!(w.proxier.cleanup().is_empty());
    assert!(!w.proxier.leftovers_present());
    // One set is enough to tell.
    w.ipsets
        .lock()
        .unwrap()
        .restore("create KUBE-CLUSTER-IP hash:ip,port family inet\n")
        .unwrap();
    assert!(w.proxier.leftovers_present());
}
