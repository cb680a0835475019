//! The iptables-mode proxier: per family, plan, read, diff and apply; dry
//! runs print the diff a sync would apply; cleanup removes what either mode
//! left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::apply::{KEEP_RESTORE_BYTES, Ledger, apply};
use super::diff::{Changes, diff, skip_unchanged_top};
use super::live::{self, SyncMode};
use super::plan_cache::PlanCache;
use super::planner::{NodeContext, Plan};
use crate::cluster::{ClusterState, ClusterView, IpFamily, ServiceName};
use crate::config::{Config, ProxyMode};
use crate::kernel::KernelError;
use crate::kernel::conntrack::Conntrack;
use crate::kernel::iptables::{Iptables, IptablesCmd};
use crate::netfilter::cleanup::{Leftovers, cleanup_iptables_leftovers};
use crate::netfilter::conntrack::Cleaner;
use crate::sync::{Proxier, SyncError, SyncOutcome};

/// Supplies the node's local addresses (for `--nodeport-addresses`).
pub type AddressSource = Box<dyn FnMut() -> Result<Vec<IpAddr>, KernelError> + Send>;

/// The iptables-mode proxier over some `Iptables` implementation.
pub struct IptablesProxier<I: Iptables> {
    ipt: I,
    config: Config,
    families: Vec<IpFamily>,
    addresses: Option<AddressSource>,
    conntrack_tcp_liberal: bool,
    ledger: Ledger,
    /// Each family's Services' shares of the last plan (`plan_cache.rs`).
    plans: BTreeMap<IpFamily, PlanCache>,
    /// Stale UDP/SCTP conntrack entries, deleted after each sync.
    conntrack: Option<Cleaner>,
}

impl<I: Iptables> IptablesProxier<I> {
    /// A proxier for `families` (IPv4, IPv6 or both).
    pub fn new(ipt: I, config: Config, families: Vec<IpFamily>) -> Self {
        Self {
            ipt,
            config,
            ledger: Ledger::new(&families),
            plans: BTreeMap::new(),
            families,
            addresses: None,
            conntrack_tcp_liberal: false,
            conntrack: None,
        }
    }

    /// Also delete stale conntrack entries after each sync.
    pub fn with_conntrack(mut self, conntrack: Box<dyn Conntrack>) -> Self {
        self.conntrack = Some(Cleaner::new(conntrack));
        self
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

    /// The families this proxier programs.
    pub fn families(&self) -> &[IpFamily] {
        &self.families
    }

    /// The last restore input written (or, after `dry_run`, computed) for `family`.
    pub fn last_restore(&self, family: IpFamily) -> Option<&str> {
        self.ledger.last_restore.get(&family).map(String::as_str)
    }

    #[cfg(test)]
    pub(crate) fn iptables(&self) -> &I {
        &self.ipt
    }

    #[cfg(test)]
    pub(crate) fn iptables_mut(&mut self) -> &mut I {
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

    /// The diff against what was read, with the drift it found logged.
    fn diff<'p>(&self, plan: &'p Plan, family: IpFamily, live: &live::Live<'_>) -> Changes<'p> {
        let none = BTreeSet::new();
        let written = self.ledger.written.get(&family).unwrap_or(&none);
        let mut changes = diff(&plan.ruleset, live, written);
        if let (live::Live::Trusted(_), Some(last)) = (live, self.ledger.top.get(&family)) {
            skip_unchanged_top(&mut changes.restore, last);
        }
        for d in &changes.drift {
            // A full sync after a restart finds every chain missing: only
            // edited chains are news then; a dry run shows both.
            if d.edited || !changes.full {
                tracing::info!(%family, chain = %d.chain, service = %d.service, "chain differs from the plan");
            }
        }
        changes
    }

    /// The plan for `family`; with `changed`, only those Services are
    /// planned again.
    fn plan_family(
        &mut self,
        state: &dyn ClusterView,
        family: IpFamily,
        changed: Option<&BTreeSet<ServiceName>>,
    ) -> (Plan, Option<SyncError>) {
        let (ctx, err) = self.node_context(state);
        let cache = self.plans.entry(family).or_default();
        (cache.plan(state, &ctx, &self.config, family, changed), err)
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
            let (plan, addr_err) = self.plan_family(state, family, changed);
            outcome.errors.extend(addr_err);
            for p in &plan.problems {
                if !outcome.problems.contains(p) {
                    outcome.problems.push(p.clone());
                }
            }
            outcome.no_local_endpoints.merge(&plan.no_local_endpoints);
            let mode = match changed {
                Some(c) => SyncMode::Partial(c),
                None => SyncMode::Full,
            };
            let needs_full = self.ledger.needs_full.contains(&family);
            let live = match live::read(&mut self.ipt, family, mode, needs_full) {
                Ok(live) => live,
                Err(source) => {
                    outcome.errors.push(SyncError::Snapshot { family, source });
                    self.ledger.needs_full.insert(family);
                    continue;
                }
            };
            let changes = self.diff(&plan, family, &live);
            apply(
                &mut self.ipt,
                family,
                &changes,
                plan.services.len(),
                &mut self.ledger,
                &mut outcome,
            );
        }
        // After the restores: a flow whose entry is deleted now meets the
        // new rules with its next packet.
        if let Some(c) = self.conntrack.as_mut() {
            let settled = outcome.ok();
            c.clean(state, &self.families, settled).record(&mut outcome);
        }
        outcome
    }

    /// What a sync would write now, as restore-input lines per family
    /// (the partial sync with nothing changed: what differs from the kernel).
    pub fn dry_run_view(&mut self, state: &dyn ClusterView) -> anyhow::Result<Vec<String>> {
        let mut lines = Vec::new();
        for family in self.families.clone() {
            let (plan, _) = self.plan_family(state, family, None);
            // As a partial sync with nothing changed: what differs from the
            // live kernel (everything, when nothing is programmed yet).
            let live = live::read(&mut self.ipt, family, SyncMode::Diff, false)?;
            let nf_tables = self.ipt.nf_tables();
            let text = self.diff(&plan, family, &live).render_for(nf_tables);
            lines.push(format!("# {family}: iptables-restore --noflush input"));
            // One piece per family, not one String per line: at 10,000
            // Services that is 400,000 lines.
            if text.len() <= KEEP_RESTORE_BYTES {
                self.ledger.keep(family, text.clone());
            }
            let mut text = text;
            if text.ends_with('\n') {
                text.pop();
            }
            if !text.is_empty() {
                lines.push(text);
            }
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

#[cfg(test)]
#[path = "proxier_conntrack_tests.rs"]
mod conntrack_tests;
