//! IPVS mode's iptables companions: the few fixed rules that masquerade,
//! accept and filter Service traffic around IPVS, each matching one of the
//! ipsets in `sets.rs`.
//!
//! The rules do not grow with the cluster (the sets do), so each sync reads
//! the two tables back and rewrites only a chain that differs, and adds only
//! a jump that is missing. Chain names, jumps, comments and the mark are
//! upstream kube-proxy's, so `iptables-save` reads the same as under it.

use ipnet::IpNet;

use std::collections::{BTreeMap, BTreeSet};

use super::sets::{DesiredSets, Set, destroy_script, diff_sets};
use crate::cluster::IpFamily;
use crate::config::{Config, LocalDetector};
use crate::iptables::ruleset::{Chain, Jump, RestorePlan, Ruleset, SavedTable};
use crate::iptables::{Leftovers, cleanup_iptables_leftovers, remove_chains_and_jumps};
use crate::kernel::KernelError;
use crate::kernel::ipset::{Ipsets, LiveSet};
use crate::kernel::iptables::Iptables;
use crate::netfilter::local::LocalMatch;
use crate::sync::SyncOutcome;

// The chains both modes have keep the iptables mode's names.
use crate::iptables::planner::{
    KUBE_FORWARD, KUBE_MARK_MASQ, KUBE_POSTROUTING, KUBE_PROXY_FIREWALL, KUBE_SERVICES, quoted as q,
};

const KUBE_NODE_PORT: &str = "KUBE-NODE-PORT";
const KUBE_LOAD_BALANCER: &str = "KUBE-LOAD-BALANCER";
const KUBE_SOURCE_RANGES_FIREWALL: &str = "KUBE-SOURCE-RANGES-FIREWALL";
const KUBE_IPVS_FILTER: &str = "KUBE-IPVS-FILTER";
const KUBE_IPVS_OUT_FILTER: &str = "KUBE-IPVS-OUT-FILTER";

/// What the rules depend on besides the sets.
#[derive(Clone, Debug, Default)]
pub struct RuleConfig {
    pub masquerade_all: bool,
    /// `--detect-local-mode` and its settings.
    pub local: LocalDetector,
    /// The Node's podCIDRs, for `--detect-local-mode NodeCIDR` (set by the
    /// proxier as the Node arrives).
    pub node_pod_cidrs: Vec<IpNet>,
    pub mark: u32,
}

impl From<&Config> for RuleConfig {
    fn from(c: &Config) -> Self {
        Self {
            masquerade_all: c.masquerade_all,
            local: c.local_detector(),
            node_pod_cidrs: Vec::new(),
            mark: c.masquerade_mark(),
        }
    }
}

impl RuleConfig {
    fn local(&self, family: IpFamily) -> LocalMatch {
        LocalMatch::resolve(&self.local, &self.node_pod_cidrs, family)
    }
}

/// The companion rules for `family`. A rule whose set is empty is left out,
/// as upstream does, except the filters that must always hold.
pub fn ruleset(family: IpFamily, sets: &DesiredSets, cfg: &RuleConfig) -> Ruleset {
    let name = |s: Set| s.name(family);
    let has = |s: Set| !sets.is_empty(family, s);
    let commented = |s: Set, flags: &str, tail: &str| {
        format!(
            "-m comment --comment {} -m set --match-set {} {flags} {tail}",
            q(s.comment()),
            name(s)
        )
    };
    let mark = format!("{:#x}", cfg.mark);

    let mut services = vec![match family {
        IpFamily::V4 => "-s 127.0.0.0/8 -j RETURN".to_string(),
        IpFamily::V6 => "-s ::1/128 -j RETURN".to_string(),
    }];
    if has(Set::LoadBalancer) {
        services.push(commented(
            Set::LoadBalancer,
            "dst,dst",
            &format!("-j {KUBE_LOAD_BALANCER}"),
        ));
    }
    if has(Set::ClusterIp) {
        let local = cfg.local(family);
        services.push(match (cfg.masquerade_all, local.if_not_local()) {
            (true, _) => commented(Set::ClusterIp, "dst,dst", "-j KUBE-MARK-MASQ"),
            // Traffic from outside the pod network to a cluster IP.
            (false, Some(not_local)) => format!(
                "{not_local} {}",
                commented(Set::ClusterIp, "dst,dst", "-j KUBE-MARK-MASQ")
            ),
            // Without a local detector only the node's own traffic sourced
            // from a Service VIP needs it.
            (false, None) => commented(Set::ClusterIp, "src,dst", "-j KUBE-MARK-MASQ"),
        });
    }
    for (set, masq) in [(Set::ExternalIp, true), (Set::ExternalIpLocal, false)] {
        if !has(set) {
            continue;
        }
        if masq {
            services.push(commented(set, "dst,dst", "-j KUBE-MARK-MASQ"));
        }
        // Accept external IPs arriving from outside (not bridged, not from
        // the node itself) and those sent to a local address.
        services.push(commented(
            set,
            "dst,dst",
            "-m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT",
        ));
        services.push(commented(
            set,
            "dst,dst",
            "-m addrtype --dst-type LOCAL -j ACCEPT",
        ));
    }
    services.push(format!("-m addrtype --dst-type LOCAL -j {KUBE_NODE_PORT}"));
    if has(Set::ClusterIp) {
        services.push(format!(
            "-m set --match-set {} dst,dst -j ACCEPT",
            name(Set::ClusterIp)
        ));
    }
    if has(Set::LoadBalancer) {
        services.push(format!(
            "-m set --match-set {} dst,dst -j ACCEPT",
            name(Set::LoadBalancer)
        ));
    }

    let mut load_balancer = Vec::new();
    if has(Set::LoadBalancerLocal) {
        load_balancer.push(commented(Set::LoadBalancerLocal, "dst,dst", "-j RETURN"));
    }
    load_balancer.push(format!("-j {KUBE_MARK_MASQ}"));

    let mut node_port = Vec::new();
    for (proto, plain, local, flags) in [
        ("tcp", Set::NodePortTcp, Set::NodePortLocalTcp, "dst"),
        ("udp", Set::NodePortUdp, Set::NodePortLocalUdp, "dst"),
        ("sctp", Set::NodePortSctp, Set::NodePortLocalSctp, "dst,dst"),
    ] {
        // Local policy: leave the client's address alone.
        if has(local) {
            node_port.push(format!(
                "-p {proto} {}",
                commented(local, flags, "-j RETURN")
            ));
        }
        if has(plain) {
            node_port.push(format!(
                "-p {proto} {}",
                commented(plain, flags, "-j KUBE-MARK-MASQ")
            ));
        }
    }

    let mut postrouting = Vec::new();
    if has(Set::LoopBack) {
        postrouting.push(commented(Set::LoopBack, "dst,dst,src", "-j MASQUERADE"));
    }
    postrouting.push(format!("-m mark ! --mark {mark}/{mark} -j RETURN"));
    // Clear the mark so a packet that goes through the stack again is not
    // masqueraded twice.
    postrouting.push(format!("-j MARK --xor-mark {mark}"));
    postrouting.push(format!(
        "-m comment --comment {} -j MASQUERADE --random-fully",
        q("kubernetes service traffic requiring SNAT")
    ));

    let mut proxy_firewall = Vec::new();
    if has(Set::LoadBalancerFw) {
        proxy_firewall.push(commented(
            Set::LoadBalancerFw,
            "dst,dst",
            &format!("-j {KUBE_SOURCE_RANGES_FIREWALL}"),
        ));
    }
    let mut source_ranges = Vec::new();
    for set in [Set::LoadBalancerSourceCidr, Set::LoadBalancerSourceIp] {
        if has(set) {
            source_ranges.push(commented(set, "dst,dst,src", "-j RETURN"));
        }
    }
    source_ranges.push("-j DROP".to_string());

    // New connections to a kube-ipvs0 address on a port no Service serves
    // would otherwise reach whatever listens on the node.
    let reject = match family {
        IpFamily::V4 => "icmp-port-unreachable",
        IpFamily::V6 => "icmp6-port-unreachable",
    };
    let mut ipvs_filter: Vec<String> = [
        (Set::LoadBalancer, "dst,dst"),
        (Set::ClusterIp, "dst,dst"),
        (Set::ExternalIp, "dst,dst"),
        (Set::ExternalIpLocal, "dst,dst"),
        (Set::HealthCheckNodePort, "dst"),
    ]
    .iter()
    .map(|(s, f)| format!("-m set --match-set {} {f} -j RETURN", name(*s)))
    .collect();
    ipvs_filter.push(format!(
        "-m conntrack --ctstate NEW -m set --match-set {} dst -j REJECT --reject-with {reject}",
        name(Set::IpvsIps)
    ));

    // A load balancer whose source ranges leave the node out: the node's own
    // connections to it (IPVS makes the LB IP their source too) are dropped
    // explicitly, where an allowed node gets a KUBE-LOAD-BALANCER-SOURCE-IP
    // member instead (upstream: lbNoNodeAccessIPPortProtocolEntries in
    // pkg/proxy/ipvs/proxier.go). Written as iptables-save prints it.
    let node_allowed = sets.get(family, Set::LoadBalancerSourceIp);
    let mut ipvs_out_filter = Vec::new();
    for entry in sets.get(family, Set::LoadBalancerFw).into_iter().flatten() {
        let Some((ip, proto_port)) = entry.split_once(',') else {
            continue;
        };
        if node_allowed.is_some_and(|m| m.contains(&format!("{entry},{ip}"))) {
            continue;
        }
        let Some((proto, port)) = proto_port.split_once(':') else {
            continue;
        };
        let vproto = match proto {
            "tcp" => 6,
            "udp" => 17,
            "sctp" => 132,
            _ => continue,
        };
        let host = match family {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        };
        ipvs_out_filter.push(format!(
            "-s {ip}/{host} -m ipvs --vproto {vproto} --vaddr {ip} --vport {port} -j DROP"
        ));
    }

    let chain = |n: &str, rules: Vec<String>| Chain {
        name: n.to_string(),
        rules,
        owner: None,
    };
    Ruleset {
        nat: crate::iptables::ruleset::Table {
            chains: vec![
                chain(KUBE_SERVICES, services),
                chain(KUBE_POSTROUTING, postrouting),
                chain(KUBE_NODE_PORT, node_port),
                chain(KUBE_LOAD_BALANCER, load_balancer),
                chain(KUBE_MARK_MASQ, vec![format!("-j MARK --or-mark {mark}")]),
            ],
        },
        filter: crate::iptables::ruleset::Table {
            chains: vec![
                chain(
                    KUBE_FORWARD,
                    vec![
                        format!(
                            "-m comment --comment {} -m mark --mark {mark}/{mark} -j ACCEPT",
                            q("kubernetes forwarding rules")
                        ),
                        format!(
                            "-m comment --comment {} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                            q("kubernetes forwarding conntrack rule")
                        ),
                    ],
                ),
                chain(
                    KUBE_NODE_PORT,
                    vec![commented(Set::HealthCheckNodePort, "dst", "-j ACCEPT")],
                ),
                chain(KUBE_PROXY_FIREWALL, proxy_firewall),
                chain(KUBE_SOURCE_RANGES_FIREWALL, source_ranges),
                chain(KUBE_IPVS_FILTER, ipvs_filter),
                chain(KUBE_IPVS_OUT_FILTER, ipvs_out_filter),
            ],
        },
        jumps: jumps(),
    }
}

/// Jumps from the built-in chains, in upstream's order; each missing one is
/// inserted at the top, so the last listed ends up first.
fn jumps() -> Vec<Jump> {
    let j = |table, from, comment: &str, to: &str| Jump {
        table,
        from,
        rule: format!("-m comment --comment {} -j {to}", q(comment)),
    };
    vec![
        j("nat", "OUTPUT", "kubernetes service portals", KUBE_SERVICES),
        j(
            "nat",
            "PREROUTING",
            "kubernetes service portals",
            KUBE_SERVICES,
        ),
        j(
            "nat",
            "POSTROUTING",
            "kubernetes postrouting rules",
            KUBE_POSTROUTING,
        ),
        j(
            "filter",
            "FORWARD",
            "kubernetes forwarding rules",
            KUBE_FORWARD,
        ),
        j(
            "filter",
            "INPUT",
            "kubernetes health check rules",
            KUBE_NODE_PORT,
        ),
        j(
            "filter",
            "INPUT",
            "kube-proxy firewall rules",
            KUBE_PROXY_FIREWALL,
        ),
        j(
            "filter",
            "FORWARD",
            "kube-proxy firewall rules",
            KUBE_PROXY_FIREWALL,
        ),
        j(
            "filter",
            "INPUT",
            "kubernetes ipvs access filter",
            KUBE_IPVS_FILTER,
        ),
        j(
            "filter",
            "OUTPUT",
            "kubernetes ipvs access filter",
            KUBE_IPVS_OUT_FILTER,
        ),
    ]
}

/// The ipsets and iptables rules around IPVS, read back and corrected on
/// every sync.
pub struct Firewall {
    ipt: Box<dyn Iptables>,
    ipsets: Box<dyn Ipsets>,
    families: Vec<IpFamily>,
    cfg: RuleConfig,
    /// The iptables mode's leftovers are removed once, after the first sync
    /// has rewritten the chains both modes share (so nothing refers to the
    /// per-Service chains any more, and the shared ones never go missing).
    leftovers_removed: bool,
    /// The members this process last wrote, per set name. Listing members
    /// costs time in proportion to the cluster (`ipset save` of 50,000
    /// members takes 0.4 s on bare metal and 50 s under emulation), while
    /// type and count per set come cheaply: a set whose count still matches
    /// what was written is taken as written.
    written: BTreeMap<String, BTreeSet<String>>,
    /// Syncs since the members were last read in full; every
    /// `FULL_READ_EVERY`th sync reads them anyway, which catches a member
    /// swapped for another behind kproxy's back.
    syncs_since_full_read: u32,
}

/// How often the members are read back even when the counts agree.
const FULL_READ_EVERY: u32 = 20;

impl Firewall {
    pub fn new(
        ipt: Box<dyn Iptables>,
        ipsets: Box<dyn Ipsets>,
        families: Vec<IpFamily>,
        cfg: RuleConfig,
    ) -> Self {
        Self {
            ipt,
            ipsets,
            families,
            cfg,
            leftovers_removed: false,
            written: BTreeMap::new(),
            syncs_since_full_read: 0,
        }
    }

    /// kproxy's sets as they are in the kernel, reading members only for a
    /// set that is not empty and whose count differs from what this
    /// process wrote (or on every `FULL_READ_EVERY`th call).
    fn live_sets(&mut self) -> Result<BTreeMap<String, LiveSet>, KernelError> {
        let headers = self.ipsets.headers()?;
        self.syncs_since_full_read += 1;
        let trust = self.syncs_since_full_read < FULL_READ_EVERY;
        if !trust {
            self.syncs_since_full_read = 0;
        }
        let mut live = BTreeMap::new();
        for family in self.families.clone() {
            for set in Set::ALL {
                let name = set.name(family);
                let Some(h) = headers.get(&name) else {
                    continue;
                };
                let entries = match self.written.get(&name) {
                    _ if h.entries == 0 || h.set_type != set.set_type() => BTreeSet::new(),
                    Some(w) if trust && w.len() == h.entries => w.clone(),
                    _ => self.ipsets.save_set(&name)?.entries,
                };
                let set_type = h.set_type.clone();
                live.insert(
                    name,
                    LiveSet {
                        set_type,
                        options: Vec::new(),
                        entries,
                    },
                );
            }
        }
        Ok(live)
    }

    /// Remember `sets` as written (after a restore that succeeded).
    fn remember(&mut self, sets: &DesiredSets) {
        self.written.clear();
        for family in self.families.clone() {
            for set in Set::ALL {
                let members = sets.get(family, set).cloned().unwrap_or_default();
                self.written.insert(set.name(family), members);
            }
        }
    }

    /// Bring sets and rules to the plan. Sets first: a rule may only name
    /// a set that exists, and its members should be in place before the
    /// rule matches on them.
    /// The Node's podCIDRs, for `--detect-local-mode NodeCIDR`.
    pub fn set_node_pod_cidrs(&mut self, cidrs: Vec<IpNet>) {
        self.cfg.node_pod_cidrs = cidrs;
    }

    pub fn sync(&mut self, sets: &DesiredSets, outcome: &mut SyncOutcome) {
        let live = match self.live_sets() {
            Ok(l) => l,
            Err(e) => {
                outcome.errors.push(format!("reading ipsets: {e}"));
                return;
            }
        };
        let changes = diff_sets(sets, &live, &self.families);
        outcome.errors.extend(changes.conflicts.iter().cloned());
        if changes.script.is_empty() {
            self.remember(sets);
        } else {
            match self.ipsets.restore(&changes.script) {
                Ok(()) => {
                    self.remember(sets);
                    for (kind, n) in [
                        ("create_ipset", changes.created),
                        ("add_ipset_entry", changes.added),
                        ("delete_ipset_entry", changes.deleted),
                    ] {
                        if n > 0 {
                            *outcome.ops.entry(kind).or_default() += n as u64;
                        }
                    }
                }
                Err(e) => {
                    outcome.errors.push(e.to_string());
                    // Part of the script may have run: read it all next time.
                    self.written.clear();
                    // Rules naming a set that was not created would be refused
                    // as a whole; try them only if every set exists.
                    if changes.created > 0 {
                        return;
                    }
                }
            }
        }
        let mut all_ok = true;
        // Chain names and jumps are the same in every family: any family's
        // ruleset says what the iptables-mode cleanup must keep.
        let mut keep = None;
        for family in self.families.clone() {
            let rs = ruleset(family, sets, &self.cfg);
            match self.restore_differences(family, &rs) {
                Ok(0) => {}
                Ok(n) => *outcome.ops.entry("restore_rules").or_default() += n as u64,
                Err(e) => {
                    all_ok = false;
                    outcome
                        .errors
                        .push(format!("{family} companion rules: {e}"));
                }
            }
            keep = Some(rs);
        }
        if let Some(keep) = keep
            && all_ok
            && !self.leftovers_removed
        {
            self.leftovers_removed = true;
            let families = self.families.clone();
            for e in
                cleanup_iptables_leftovers(self.ipt.as_mut(), &families, Leftovers::AllBut(&keep))
            {
                outcome
                    .errors
                    .push(format!("removing iptables-mode leftovers: {e}"));
            }
        }
    }

    /// The chains of `rs` that differ from the kernel and the jumps that
    /// are missing, as one restore.
    fn differences<'a>(
        &mut self,
        family: IpFamily,
        rs: &'a Ruleset,
    ) -> Result<RestorePlan<'a>, KernelError> {
        let text = self.ipt.save(family)?;
        let nat = SavedTable::parse(&text, "nat");
        let filter = SavedTable::parse(&text, "filter");
        let differing = |saved: &SavedTable, chains: &'a [Chain]| -> Vec<&'a Chain> {
            chains
                .iter()
                .filter(|c| !saved.matches(&c.name, &c.rules))
                .collect()
        };
        Ok(RestorePlan {
            nat: differing(&nat, &rs.nat.chains),
            filter: differing(&filter, &rs.filter.chains),
            jumps: rs
                .jumps
                .iter()
                .filter(|j| {
                    let saved = if j.table == "nat" { &nat } else { &filter };
                    !saved.contains_rule(j.from, &j.rule)
                })
                .collect(),
            ..Default::default()
        })
    }

    /// Restore what `differences` finds; returns how many chains and jumps
    /// were written.
    fn restore_differences(
        &mut self,
        family: IpFamily,
        rs: &Ruleset,
    ) -> Result<usize, KernelError> {
        let plan = self.differences(family, rs)?;
        if plan.is_empty() {
            return Ok(0);
        }
        for c in plan.nat.iter().chain(&plan.filter) {
            tracing::debug!(%family, chain = %c.name, "writing companion chain");
        }
        self.ipt.restore(family, &plan.render())?;
        Ok(plan.nat.len() + plan.filter.len() + plan.jumps.len())
    }

    /// What `sync` would change, one line each.
    pub fn dry_run(&mut self, sets: &DesiredSets) -> Vec<String> {
        let mut lines = Vec::new();
        match self.live_sets() {
            Ok(live) => {
                let c = diff_sets(sets, &live, &self.families);
                lines.push(format!(
                    "# ipsets: {} to create, {} member(s) to add, {} to delete",
                    c.created, c.added, c.deleted
                ));
                lines.extend(c.conflicts.iter().map(|e| format!("# {e}")));
                lines.extend(
                    c.script
                        .lines()
                        .filter(|l| !l.starts_with("create"))
                        .map(|l| format!("ipset {l}")),
                );
            }
            Err(e) => lines.push(format!("# reading ipsets: {e}")),
        }
        for family in self.families.clone() {
            let rs = ruleset(family, sets, &self.cfg);
            match self.differences(family, &rs) {
                Ok(plan) => {
                    for (table, chains) in [("nat", &plan.nat), ("filter", &plan.filter)] {
                        for c in chains {
                            lines.push(format!(
                                "# {family} {table} chain {} to write ({} rules)",
                                c.name,
                                c.rules.len()
                            ));
                        }
                    }
                }
                Err(e) => lines.push(format!("# reading {family} iptables: {e}")),
            }
        }
        lines
    }

    /// Remove every companion jump, chain and set; keep going after errors.
    /// Sets go last: the kernel refuses to destroy a set a rule still uses.
    pub fn cleanup(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for family in self.families.clone() {
            let text = match self.ipt.save(family) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("{family} cleanup: {e}"));
                    continue;
                }
            };
            // Every chain is in the ruleset whatever the sets hold.
            let rs = ruleset(family, &DesiredSets::default(), &self.cfg);
            for (table, owned) in [("nat", &rs.nat.chains), ("filter", &rs.filter.chains)] {
                let saved = SavedTable::parse(&text, table);
                let unlink: Vec<String> = rs
                    .jumps
                    .iter()
                    .filter(|j| j.table == table && saved.contains_rule(j.from, &j.rule))
                    .map(|j| format!("-D {} {}", j.from, j.rule))
                    .collect();
                let doomed: Vec<String> = owned
                    .iter()
                    .filter(|c| saved.has(&c.name))
                    .map(|c| c.name.clone())
                    .collect();
                errors.extend(remove_chains_and_jumps(
                    self.ipt.as_mut(),
                    family,
                    table,
                    &unlink,
                    &doomed,
                ));
            }
        }
        match self.ipsets.headers() {
            Ok(live) => {
                let script = destroy_script(&live);
                if !script.is_empty()
                    && let Err(e) = self.ipsets.restore(&script)
                {
                    errors.push(e.to_string());
                }
            }
            Err(e) => errors.push(format!("reading ipsets: {e}")),
        }
        errors
    }
}
