//! The iptables-mode proxier: per family, plan the desired chains, read the
//! live tables, decide what to write and apply it in one restore.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::cluster::{ClusterState, ClusterView, IpFamily, ServiceName};
use crate::config::{Config, ProxyMode};
use crate::kernel::KernelError;
use crate::kernel::iptables::{Iptables, IptablesCmd};
use crate::sync::{Proxier, SyncError, SyncOutcome};

use super::planner::{self, NodeContext, Plan};
use crate::netfilter::chains::{CANARY as KUBE_PROXY_CANARY, is_service_chain};
use crate::netfilter::cleanup::{Leftovers, cleanup_iptables_leftovers};
use crate::netfilter::ruleset::{RestorePlan, SavedTable};

/// Tables holding the canary chain, as upstream's monitor watches them.
const CANARY_TABLES: &[&str] = &["mangle", "nat", "filter"];

/// Supplies the node's local addresses (for `--nodeport-addresses`).
pub type AddressSource = Box<dyn FnMut() -> Result<Vec<IpAddr>, KernelError> + Send>;

/// The iptables-mode proxier over some `Iptables` implementation.
pub struct IptablesProxier<I: Iptables> {
    ipt: I,
    config: Config,
    families: Vec<IpFamily>,
    addresses: Option<AddressSource>,
    conntrack_tcp_liberal: bool,
    /// Families whose next sync must be full (a restore failed, or never synced).
    needs_full: BTreeSet<IpFamily>,
    last_restore: BTreeMap<IpFamily, String>,
    /// Per-Service chains in the kernel after the last successful restore.
    written: BTreeMap<IpFamily, BTreeSet<String>>,
}

/// How much a sync looks at and writes.
#[derive(Clone, Copy)]
enum Sync<'a> {
    Full,
    Partial(&'a BTreeSet<ServiceName>),
    Diff,
}

/// The restore one family needs, and what it amounts to.
struct Prepared {
    text: String,
    /// The per-Service chains in the kernel once this is applied.
    chains: BTreeSet<String>,
    full: bool,
    written: usize,
    deleted: usize,
    jumps: usize,
    drifted: usize,
}

impl<I: Iptables> IptablesProxier<I> {
    /// A proxier for `families` (IPv4, IPv6 or both).
    pub fn new(ipt: I, config: Config, families: Vec<IpFamily>) -> Self {
        Self {
            ipt,
            config,
            needs_full: families.iter().copied().collect(),
            families,
            addresses: None,
            conntrack_tcp_liberal: false,
            last_restore: BTreeMap::new(),
            written: BTreeMap::new(),
        }
    }

    /// Where the node's own addresses come from; without one, the Node
    /// object's addresses are used.
    pub fn with_addresses(mut self, source: AddressSource) -> Self {
        self.addresses = Some(source);
        self
    }

    /// `nf_conntrack_tcp_be_liberal` is on: skip the DROP of INVALID packets.
    pub fn with_conntrack_tcp_liberal(mut self, liberal: bool) -> Self {
        self.conntrack_tcp_liberal = liberal;
        self
    }

    /// The last restore input written (or, after `dry_run`, computed) for `family`.
    pub fn last_restore(&self, family: IpFamily) -> Option<&str> {
        self.last_restore.get(&family).map(String::as_str)
    }

    pub fn iptables(&self) -> &I {
        &self.ipt
    }

    pub fn iptables_mut(&mut self) -> &mut I {
        &mut self.ipt
    }

    fn node_context(&mut self, state: &dyn ClusterView) -> (NodeContext, Option<SyncError>) {
        let node = state.node();
        let mut err = None;
        let addresses = match self.addresses.as_mut() {
            Some(f) => f().unwrap_or_else(|e| {
                err = Some(SyncError::LocalAddresses(e));
                node.map(|n| n.addresses.clone()).unwrap_or_default()
            }),
            None => node.map(|n| n.addresses.clone()).unwrap_or_default(),
        };
        let ctx = NodeContext {
            name: if self.config.hostname.is_empty() {
                node.map(|n| n.name.clone()).unwrap_or_default()
            } else {
                self.config.hostname.clone()
            },
            zone: node.and_then(|n| n.zone.clone()),
            addresses,
            conntrack_tcp_liberal: self.conntrack_tcp_liberal,
            pod_cidrs: node.map(|n| n.pod_cidrs.clone()).unwrap_or_default(),
            nodeport_addresses: crate::config::system::nodeport_addresses_for(
                &self.config,
                node.map(|n| n.addresses.as_slice()).unwrap_or(&[]),
            ),
        };
        (ctx, err)
    }

    fn snapshot(&mut self, family: IpFamily) -> Result<[SavedTable; 3], KernelError> {
        let text = self.ipt.save(family)?;
        Ok(["nat", "filter", "mangle"].map(|t| SavedTable::parse(&text, t)))
    }

    /// Decide what to write for `family`.
    ///
    /// A full sync reads the kernel (one `iptables-save`): every owned chain is
    /// written, chains that differed are counted as repaired drift, stale
    /// per-Service chains are deleted and missing jumps inserted. A partial
    /// sync does not dump the ruleset (with tens of thousands of rules that
    /// costs seconds under nft): it checks the canary, writes the top-level
    /// chains and the changed Services' chains, and deletes the chains it
    /// wrote before that the plan no longer has. `Sync::Diff` (dry run)
    /// reads the kernel and writes only what differs.
    fn prepare(
        &mut self,
        plan: &Plan,
        family: IpFamily,
        mode: Sync<'_>,
    ) -> Result<Prepared, KernelError> {
        let rs = &plan.ruleset;
        let mut mode = mode;
        if let Sync::Partial(_) = mode {
            if self.needs_full.contains(&family) {
                mode = Sync::Full;
            } else if let Some(table) = CANARY_TABLES
                .iter()
                .find(|t| !self.ipt.chain_exists(family, t, KUBE_PROXY_CANARY))
            {
                tracing::info!(%family, table, "canary chain {KUBE_PROXY_CANARY} is gone: the table was flushed; syncing in full");
                mode = Sync::Full;
            }
        }
        let planned: BTreeSet<&str> = rs.nat.chains.iter().map(|c| c.name.as_str()).collect();
        let mut rp = RestorePlan {
            filter: rs.filter.chains.iter().collect(),
            ..Default::default()
        };
        let mut drifted = 0;
        let full = matches!(mode, Sync::Full);
        match mode {
            Sync::Partial(changed) => {
                rp.nat = rs
                    .nat
                    .chains
                    .iter()
                    .filter(|c| c.owner.as_ref().is_none_or(|o| changed.contains(o)))
                    .collect();
                rp.delete_nat = self
                    .written
                    .get(&family)
                    .into_iter()
                    .flatten()
                    .filter(|c| !planned.contains(c.as_str()))
                    .cloned()
                    .collect();
            }
            Sync::Full | Sync::Diff => {
                let [nat, filter, mangle] = self.snapshot(family)?;
                let mut differs: BTreeSet<&ServiceName> = BTreeSet::new();
                for c in &rs.nat.chains {
                    if let Some(owner) = &c.owner
                        && !nat.matches(&c.name, &c.rules)
                    {
                        if nat.has(&c.name) || !full {
                            tracing::info!(%family, chain = %c.name, service = %owner, "chain differs from the plan");
                        }
                        // A chain that is simply missing after a restart is
                        // not drift worth reporting; one that was edited is.
                        if nat.has(&c.name) {
                            drifted += 1;
                        }
                        differs.insert(owner);
                    }
                }
                rp.nat = rs
                    .nat
                    .chains
                    .iter()
                    .filter(|c| full || c.owner.as_ref().is_none_or(|o| differs.contains(o)))
                    .collect();
                for j in &rs.jumps {
                    let saved = if j.table == "nat" { &nat } else { &filter };
                    if !saved.contains_rule(j.from, &j.rule) {
                        rp.jumps.push(j);
                    }
                }
                rp.delete_nat = nat
                    .chains
                    .keys()
                    .filter(|c| is_service_chain(c) && !planned.contains(c.as_str()))
                    .cloned()
                    .collect();
                for (table, saved) in [("mangle", &mangle), ("nat", &nat), ("filter", &filter)] {
                    if !saved.has(KUBE_PROXY_CANARY) {
                        rp.canary.push(table);
                    }
                }
            }
        }
        Ok(Prepared {
            text: rp.render(),
            full,
            written: rp.nat.len() + rp.filter.len(),
            deleted: rp.delete_nat.len(),
            jumps: rp.jumps.len(),
            drifted,
            chains: planned
                .iter()
                .filter(|c| is_service_chain(c))
                .map(|c| c.to_string())
                .collect(),
        })
    }

    fn plan_family(
        &mut self,
        state: &dyn ClusterView,
        family: IpFamily,
    ) -> (Plan, Option<SyncError>) {
        let (ctx, err) = self.node_context(state);
        (planner::plan(state, &ctx, &self.config, family), err)
    }
}

impl<I: Iptables> IptablesProxier<I> {
    /// One sync from any view of the cluster (the Proxier trait passes the store).
    pub fn sync_view(
        &mut self,
        state: &dyn ClusterView,
        changed: Option<&BTreeSet<ServiceName>>,
    ) -> SyncOutcome {
        let mut outcome = SyncOutcome::default();
        for family in self.families.clone() {
            let (plan, addr_err) = self.plan_family(state, family);
            outcome.errors.extend(addr_err);
            for p in &plan.problems {
                if !outcome.problems.contains(p) {
                    outcome.problems.push(p.clone());
                }
            }
            outcome.no_local_endpoints += plan.no_local_endpoints;
            let mode = match changed {
                Some(c) => Sync::Partial(c),
                None => Sync::Full,
            };
            let prepared = match self.prepare(&plan, family, mode) {
                Ok(p) => p,
                Err(source) => {
                    outcome.errors.push(SyncError::Snapshot { family, source });
                    self.needs_full.insert(family);
                    continue;
                }
            };
            tracing::debug!(%family, full = prepared.full, bytes = prepared.text.len(), "iptables-restore input:\n{}", prepared.text);
            let result = self.ipt.restore(family, &prepared.text);
            self.last_restore.insert(family, prepared.text);
            match result {
                Ok(()) => {
                    self.needs_full.remove(&family);
                    self.written.insert(family, prepared.chains);
                    *outcome.ops.entry("restore_rules").or_default() += 1;
                    *outcome.ops.entry("write_chains").or_default() += prepared.written as u64;
                    if prepared.deleted > 0 {
                        *outcome.ops.entry("delete_chains").or_default() += prepared.deleted as u64;
                    }
                    if prepared.jumps > 0 {
                        *outcome.ops.entry("insert_jumps").or_default() += prepared.jumps as u64;
                    }
                    if prepared.drifted > 0 {
                        *outcome.ops.entry("repair_chains").or_default() += prepared.drifted as u64;
                    }
                }
                Err(source) => {
                    self.needs_full.insert(family);
                    outcome.errors.push(SyncError::Rules {
                        family,
                        services: plan.services.len(),
                        source,
                    });
                }
            }
        }
        outcome
    }

    /// What a sync would write now, as restore-input lines per family
    /// (the partial sync with nothing changed: what differs from the kernel).
    pub fn dry_run_view(&mut self, state: &dyn ClusterView) -> anyhow::Result<Vec<String>> {
        let mut lines = Vec::new();
        for family in self.families.clone() {
            let (plan, _) = self.plan_family(state, family);
            // As a partial sync with nothing changed: what differs from the
            // live kernel (everything, when nothing is programmed yet).
            let prepared = self.prepare(&plan, family, Sync::Diff)?;
            lines.push(format!("# {family}: iptables-restore --noflush input"));
            lines.extend(prepared.text.lines().map(str::to_string));
            self.last_restore.insert(family, prepared.text);
        }
        Ok(lines)
    }
}

impl IptablesProxier<IptablesCmd> {
    /// The proxier for this node: the iptables backend the node already
    /// uses, IPv4 plus IPv6 when the kernel and ip6tables have it, and the
    /// conntrack sysctl that decides whether INVALID packets need dropping.
    /// Local addresses (for `--nodeport-addresses`) still come from
    /// `with_addresses`, or else from the Node object.
    pub fn for_node(config: Config) -> Self {
        let ipt = IptablesCmd::detect();
        let families = ipt.families();
        let liberal =
            std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal")
                .is_ok_and(|v| v.trim() != "0");
        IptablesProxier::new(ipt, config, families).with_conntrack_tcp_liberal(liberal)
    }
}

impl<I: Iptables> Proxier for IptablesProxier<I> {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Iptables
    }

    fn sync(
        &mut self,
        state: &ClusterState,
        changed: Option<&BTreeSet<ServiceName>>,
    ) -> SyncOutcome {
        self.sync_view(state, changed)
    }

    fn dry_run(&mut self, state: &ClusterState) -> anyhow::Result<Vec<String>> {
        self.dry_run_view(state)
    }

    fn cleanup(&mut self) -> Vec<KernelError> {
        let families = self.families.clone();
        cleanup_iptables_leftovers(&mut self.ipt, &families, Leftovers::All)
    }
}
