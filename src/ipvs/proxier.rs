//! The IPVS-mode proxier: snapshot the kernel, plan, diff, apply. Every sync
//! re-reads the kernel, which is what repairs drift; `--dry-run` runs the
//! same snapshot, plan and diff and prints the operations instead.

use std::collections::BTreeSet;

use super::apply::{Adapters, apply};
use super::diff::{Changes, Ownership, changes};
use super::live::{Companions, LiveState, MemberCache, read_companions, read_core};
use super::ops::Op;
use super::planner::{DUMMY_LINK, IpvsPlan, NodeContext, PlanConfig, plan};
use super::render;
use super::rules::ruleset;
use super::sets::{DesiredSets, destroy_script};
use crate::cluster::{ClusterState, ServiceName};
use crate::config::{Config, ProxyMode};
use crate::kernel::KernelError;
use crate::kernel::conntrack::Conntrack;
use crate::kernel::ipvs::{Ipvs, IpvsOp};
use crate::kernel::link::Links;
use crate::net::IpFamily;
use crate::netfilter::cleanup::{self, Removal};
use crate::netfilter::conntrack::Cleaner;
use crate::netfilter::ruleset::SavedTables;
use crate::sync::{Proxier, SyncError, SyncOutcome};

/// How often the set members are read back even when the counts agree.
const FULL_READ_EVERY: u32 = 20;

pub struct IpvsProxier {
    ipvs: Box<dyn Ipvs>,
    links: Box<dyn Links>,
    /// The ipsets and iptables rules around IPVS (none in tests that only
    /// look at IPVS, or on a node without ipset).
    companions: Option<Companions>,
    plan_config: PlanConfig,
    ownership: Ownership,
    node_name: String,
    cache: MemberCache,
    /// Syncs since the set members were last read in full.
    syncs_since_full_read: u32,
    /// The iptables mode's leftovers are removed once, by the first sync
    /// whose chains all went in (so the shared chains never go missing and
    /// nothing refers to the per-Service chains any more).
    leftovers_pending: bool,
    /// Stale UDP/SCTP conntrack entries, deleted after each sync.
    conntrack: Option<Cleaner>,
}

impl IpvsProxier {
    pub fn new(ipvs: Box<dyn Ipvs>, links: Box<dyn Links>, config: &Config) -> Self {
        Self {
            ipvs,
            links,
            companions: None,
            plan_config: PlanConfig::from(config),
            ownership: Ownership {
                nodeport_range: config.nodeport_range,
                exclude: config.ipvs_exclude_cidrs.clone(),
            },
            node_name: config.hostname.clone(),
            cache: MemberCache::default(),
            syncs_since_full_read: 0,
            leftovers_pending: true,
            conntrack: None,
        }
    }

    /// Also delete stale conntrack entries after each sync.
    pub fn with_conntrack(mut self, conntrack: Box<dyn Conntrack>) -> Self {
        self.conntrack = Some(Cleaner::new(conntrack));
        self
    }

    /// Also program the companion ipsets and iptables rules.
    pub fn with_companions(mut self, c: Companions) -> Self {
        self.companions = Some(c);
        self
    }

    /// Read everything the diff needs from the kernel. The companions are
    /// read too; when they cannot be, the snapshot has none (so nothing is
    /// changed there) and the reason comes back beside it.
    pub fn snapshot(
        &mut self,
        trust_cache: bool,
    ) -> Result<(LiveState, Option<SyncError>), SyncError> {
        let mut live =
            read_core(self.ipvs.as_mut(), self.links.as_mut()).map_err(SyncError::ReadLive)?;
        let mut error = None;
        if let Some(c) = self.companions.as_mut() {
            match read_companions(c, &self.cache, trust_cache) {
                Ok(l) => live.companions = Some(l),
                Err(e) => error = Some(SyncError::ReadLive(e)),
            }
        }
        Ok((live, error))
    }

    /// The plan for `state` on this node, as `live` describes the node.
    pub fn plan_for(&self, state: &ClusterState, live: &LiveState) -> IpvsPlan {
        let node = NodeContext::new(&self.node_name, state.node(), live.local_addresses.clone());
        plan(state, &node, &self.plan_config)
    }

    /// What turns `live` into `desired`.
    pub fn changes(&self, desired: &IpvsPlan, live: &LiveState) -> Changes {
        changes(desired, live, &self.ownership, self.leftovers_pending)
    }

    /// Bring the kernel to `desired` (a plan made elsewhere, e.g. by a test).
    pub fn sync_plan(&mut self, desired: &IpvsPlan) -> SyncOutcome {
        let mut outcome = SyncOutcome::default();
        let trust = self.next_read_trusts_cache();
        match self.snapshot(trust) {
            Ok((live, err)) => {
                outcome.errors.extend(err);
                self.converge(desired, &live, &mut outcome);
            }
            Err(e) => outcome.errors.push(e),
        }
        outcome
    }

    /// Every `FULL_READ_EVERY`th sync reads the set members in full.
    fn next_read_trusts_cache(&mut self) -> bool {
        self.syncs_since_full_read += 1;
        if self.syncs_since_full_read >= FULL_READ_EVERY {
            self.syncs_since_full_read = 0;
            return false;
        }
        true
    }

    fn converge(&mut self, desired: &IpvsPlan, live: &LiveState, outcome: &mut SyncOutcome) {
        let Changes {
            ops,
            conflicts,
            draining,
        } = self.changes(desired, live);
        outcome.errors.extend(conflicts);
        outcome.draining = draining as u64;
        for op in &ops {
            tracing::debug!("{op}");
        }
        let mut adapters = Adapters {
            ipvs: self.ipvs.as_mut(),
            links: self.links.as_mut(),
            companions: self.companions.as_mut(),
        };
        let applied = apply(&mut adapters, &ops, outcome);
        if let (Some(c), Some(_)) = (&self.companions, &live.companions) {
            if applied.sets_failed {
                self.cache.forget();
            } else {
                self.cache.remember(&desired.sets, &c.families);
            }
            if applied.chains_failed.is_empty() {
                self.leftovers_pending = false;
            }
        }
    }

    /// Whether the IPVS mode left anything here: kube-ipvs0, a virtual
    /// server kproxy would own, or one of its ipsets (the iptables mode
    /// uses none). The chains are no evidence: both modes write
    /// KUBE-SERVICES, KUBE-POSTROUTING, KUBE-MARK-MASQ, ... When the kernel
    /// cannot be read, assume it did.
    pub fn leftovers_present(&mut self) -> bool {
        let Ok(live) = read_core(self.ipvs.as_mut(), self.links.as_mut()) else {
            return true;
        };
        if live.link_exists || !self.owned_keys(&live).is_empty() {
            return true;
        }
        match self.companions.as_mut().map(|c| c.ipsets.headers()) {
            Some(Ok(sets)) => !destroy_script(&sets).is_empty(),
            Some(Err(_)) => true,
            None => false,
        }
    }

    /// Every virtual server kproxy owns in `live`.
    fn owned_keys(&self, live: &LiveState) -> Vec<crate::kernel::ipvs::ServiceKey> {
        let empty = IpvsPlan::default();
        live.table
            .services
            .keys()
            .filter(|k| self.ownership.owns(k, live, &empty))
            .copied()
            .collect()
    }

    /// Remove every companion jump, chain and set; keep going after errors.
    /// Sets go last: the kernel refuses to destroy a set a rule still uses.
    fn cleanup_companions(&mut self) -> Vec<KernelError> {
        let Some(c) = self.companions.as_mut() else {
            return Vec::new();
        };
        let mut errors = Vec::new();
        for family in c.families.clone() {
            let saved = match c.ipt.save(family) {
                Ok(t) => SavedTables::parse(&t),
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            // Every chain is in the ruleset whatever the sets hold.
            let rs = ruleset(family, &DesiredSets::default(), &self.plan_config.rules);
            for (table, owned) in [("nat", &rs.nat.chains), ("filter", &rs.filter.chains)] {
                let saved = saved.get(table);
                let removal = Removal {
                    table,
                    unlink: rs
                        .jumps
                        .iter()
                        .filter(|j| j.table == table && saved.contains_rule(j.from, &j.rule))
                        .map(|j| format!("-D {} {}", j.from, j.rule))
                        .collect(),
                    doomed: owned
                        .iter()
                        .filter(|ch| saved.has(&ch.name))
                        .map(|ch| ch.name.clone())
                        .collect(),
                };
                errors.extend(cleanup::remove(c.ipt.as_mut(), family, &removal));
            }
        }
        match c.ipsets.headers() {
            Ok(live) => {
                let script = destroy_script(&live);
                if !script.is_empty()
                    && let Err(e) = c.ipsets.restore(&script)
                {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e),
        }
        errors
    }
}

impl Proxier for IpvsProxier {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Ipvs
    }

    fn sync(
        &mut self,
        state: &ClusterState,
        _changed: Option<&BTreeSet<ServiceName>>,
    ) -> SyncOutcome {
        let mut outcome = SyncOutcome::default();
        let trust = self.next_read_trusts_cache();
        let (live, err) = match self.snapshot(trust) {
            Ok(x) => x,
            Err(e) => {
                outcome.errors.push(e);
                return outcome;
            }
        };
        outcome.errors.extend(err);
        let desired = self.plan_for(state, &live);
        self.converge(&desired, &live, &mut outcome);
        // After the kernel has the new real servers: a flow whose entry is
        // deleted now is scheduled again by them. IPVS serves both families.
        if let Some(c) = self.conntrack.as_mut() {
            let settled = outcome.ok();
            c.clean(state, &[IpFamily::V4, IpFamily::V6], settled)
                .record(&mut outcome);
        }
        outcome.problems = desired.problems;
        outcome.no_local_endpoints = desired.no_local_endpoints.clone();
        outcome
    }

    fn dry_run(&mut self, state: &ClusterState) -> anyhow::Result<Vec<String>> {
        let (live, err) = self.snapshot(true)?;
        let desired = self.plan_for(state, &live);
        let mut lines: Vec<String> = desired
            .problems
            .iter()
            .map(|p| format!("# skipped {p}"))
            .collect();
        lines.extend(err.map(|e| format!("# {e}")));
        let Changes {
            ops,
            conflicts,
            draining,
        } = self.changes(&desired, &live);
        lines.extend(conflicts.iter().map(|e| format!("# {e}")));
        if draining > 0 {
            lines.push(format!(
                "# {draining} real server(s) draining at weight 0 until their connections end"
            ));
        }
        lines.push(format!("# {} change(s) to the live kernel:", ops.len()));
        lines.extend(ops.iter().map(Op::to_string));
        // The complete plan, as an operator will read it back afterwards.
        lines.push("# desired state (ipvsadm -Ln):".into());
        lines.extend(render::render(&desired.table).lines().map(String::from));
        let bound: Vec<String> = desired.bound.iter().map(|a| a.to_string()).collect();
        lines.push(format!("# {DUMMY_LINK} addresses: {}", bound.join(" ")));
        Ok(lines)
    }

    fn cleanup(&mut self) -> Vec<KernelError> {
        let mut errors = Vec::new();
        match read_core(self.ipvs.as_mut(), self.links.as_mut()) {
            Ok(live) => {
                let ops: Vec<IpvsOp> = self
                    .owned_keys(&live)
                    .into_iter()
                    .map(IpvsOp::DelService)
                    .collect();
                errors.extend(self.ipvs.apply(&ops).into_iter().filter_map(Result::err));
            }
            Err(e) => errors.push(KernelError {
                op: format!("reading IPVS state for cleanup: {}", e.op),
                ..e
            }),
        }
        // Deleting the link takes its addresses with it.
        if let Err(e) = self.links.delete_link(DUMMY_LINK) {
            errors.push(e);
        }
        errors.extend(self.cleanup_companions());
        errors
    }
}

#[cfg(test)]
#[path = "proxier_conntrack_tests.rs"]
mod conntrack_tests;
