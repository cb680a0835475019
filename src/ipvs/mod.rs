//! IPVS mode: the planner, the diff, `ipvsadm -Ln` rendering, and the
//! proxier that reads the live kernel, diffs and applies.

pub mod diff;
pub mod firewall;
pub mod planner;
pub mod render;
pub mod sets;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::cluster::{ClusterState, ServiceName};
use crate::config::{Config, ProxyMode};
use crate::kernel::KernelError;
use crate::kernel::ipvs::{Ipvs, IpvsOp, ServiceKey};
use crate::kernel::link::Links;
use crate::sync::{Proxier, SyncOutcome};

pub use diff::{LiveState, Op, Ownership, diff};
pub use planner::{DUMMY_LINK, IpvsPlan, NodeContext, PlanConfig, plan};

pub struct IpvsProxier {
    ipvs: Box<dyn Ipvs>,
    links: Box<dyn Links>,
    plan_config: PlanConfig,
    ownership: Ownership,
    node_name: String,
    /// The ipsets and iptables rules around IPVS (none in tests that only
    /// look at IPVS, or on a node without ipset).
    firewall: Option<firewall::Firewall>,
}

impl IpvsProxier {
    pub fn new(ipvs: Box<dyn Ipvs>, links: Box<dyn Links>, config: &Config) -> Self {
        Self {
            ipvs,
            links,
            plan_config: PlanConfig::from(config),
            ownership: Ownership {
                nodeport_range: config.nodeport_range,
                exclude: config.ipvs_exclude_cidrs.clone(),
            },
            node_name: config.hostname.clone(),
            firewall: None,
        }
    }

    /// Also program the companion ipsets and iptables rules.
    pub fn with_firewall(mut self, fw: firewall::Firewall) -> Self {
        self.firewall = Some(fw);
        self
    }

    /// Read everything the diff needs from the kernel.
    pub fn read_live(&mut self) -> Result<(LiveState, NodeContext), KernelError> {
        let link_exists = self.links.link_exists(DUMMY_LINK)?;
        let bound = if link_exists {
            self.links.addresses(DUMMY_LINK)?
        } else {
            BTreeSet::new()
        };
        let local = self.links.local_addresses()?;
        let node_addresses = local
            .iter()
            .filter(|l| l.ifname != DUMMY_LINK)
            .map(|l| l.addr)
            .collect();
        let table = self.ipvs.dump()?;
        let live = LiveState {
            table,
            link_exists,
            bound,
            node_addresses,
        };
        let node = NodeContext {
            name: self.node_name.clone(),
            zone: None,
            local_addresses: local,
        };
        Ok((live, node))
    }

    /// The plan for `state` on this node, given what the kernel says about
    /// the node's addresses.
    pub fn plan_for(&self, state: &ClusterState, mut node: NodeContext) -> IpvsPlan {
        node.zone = state.node().and_then(|n| n.zone.clone());
        if self.plan_config.nodeport_primary {
            let mut cfg = self.plan_config.clone();
            cfg.nodeport_addresses = crate::config::system::nodeport_addresses_in_effect(
                &cfg.nodeport_addresses,
                true,
                cfg.bind_address,
                state.node().map(|n| n.addresses.as_slice()).unwrap_or(&[]),
            );
            return plan(state, &node, &cfg);
        }
        plan(state, &node, &self.plan_config)
    }

    /// What the companion rules need to know about the Node.
    fn firewall_for(&mut self, state: &ClusterState) -> Option<&mut firewall::Firewall> {
        let fw = self.firewall.as_mut()?;
        fw.set_node_pod_cidrs(
            state
                .node()
                .map(|n| n.pod_cidrs.clone())
                .unwrap_or_default(),
        );
        Some(fw)
    }

    /// Apply `ops` in order, batched per kind of adapter, stopping at nothing:
    /// each failure is reported and the rest still go in. An address is bound
    /// before the virtual servers that use it, and unbound after them.
    pub fn apply(&mut self, ops: &[Op], outcome: &mut SyncOutcome) {
        let mut i = 0;
        while i < ops.len() {
            // Group consecutive operations of one adapter into one batch.
            let start = i;
            let class = class_of(&ops[i]);
            while i < ops.len() && class_of(&ops[i]) == class {
                i += 1;
            }
            let batch = &ops[start..i];
            let results: Vec<Result<(), KernelError>> = match class {
                Class::Link => batch
                    .iter()
                    .map(|_| self.links.ensure_dummy(DUMMY_LINK).map(|_| ()))
                    .collect(),
                Class::AddAddr => self.links.add_addresses(DUMMY_LINK, &addrs(batch)),
                Class::DelAddr => self.links.del_addresses(DUMMY_LINK, &addrs(batch)),
                Class::Ipvs => {
                    let ipvs_ops: Vec<IpvsOp> = batch
                        .iter()
                        .filter_map(|o| match o {
                            Op::Ipvs(op) => Some(op.clone()),
                            _ => None,
                        })
                        .collect();
                    self.ipvs.apply(&ipvs_ops)
                }
            };
            // When the kernel refuses a virtual server, every real server
            // sent after it fails too (ESRCH). Those follow-on failures are
            // summarised in one line rather than reported one by one.
            let mut refused: BTreeSet<ServiceKey> = BTreeSet::new();
            let mut orphaned: BTreeMap<ServiceKey, usize> = BTreeMap::new();
            for (op, r) in batch.iter().zip(results) {
                match (r, op) {
                    (Ok(()), _) => *outcome.ops.entry(op.kind()).or_default() += 1,
                    (Err(_), Op::Ipvs(IpvsOp::AddDest(k, _) | IpvsOp::EditDest(k, _)))
                        if refused.contains(k) =>
                    {
                        *orphaned.entry(*k).or_default() += 1;
                    }
                    (Err(e), _) => {
                        if let Op::Ipvs(IpvsOp::AddService(vs)) = op {
                            refused.insert(vs.key);
                        }
                        outcome.errors.push(e.to_string());
                    }
                }
            }
            for (k, n) in orphaned {
                outcome.errors.push(format!(
                    "{n} real server(s) of {k} not added: its virtual server was refused"
                ));
            }
        }
    }

    /// Every virtual server kproxy owns in `table` (given the live addresses).
    fn owned_keys(&self, live: &LiveState) -> Vec<crate::kernel::ipvs::ServiceKey> {
        let empty = IpvsPlan::default();
        live.table
            .services
            .keys()
            .filter(|k| self.ownership.owns(k, live, &empty))
            .copied()
            .collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Link,
    AddAddr,
    DelAddr,
    Ipvs,
}

fn class_of(op: &Op) -> Class {
    match op {
        Op::CreateLink => Class::Link,
        Op::AddAddress(_) => Class::AddAddr,
        Op::DelAddress(_) => Class::DelAddr,
        Op::Ipvs(_) => Class::Ipvs,
    }
}

fn addrs(batch: &[Op]) -> Vec<IpAddr> {
    batch
        .iter()
        .filter_map(|o| match o {
            Op::AddAddress(a) | Op::DelAddress(a) => Some(*a),
            _ => None,
        })
        .collect()
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
        // Every sync re-reads the kernel: that is what repairs drift.
        let (live, node) = match self.read_live() {
            Ok(x) => x,
            Err(e) => {
                outcome
                    .errors
                    .push(format!("reading the live kernel state: {e}"));
                return outcome;
            }
        };
        let desired = self.plan_for(state, node);
        let ops = diff(&desired, &live, &self.ownership);
        for op in &ops {
            tracing::debug!("{op}");
        }
        self.apply(&ops, &mut outcome);
        if let Some(fw) = self.firewall_for(state) {
            fw.sync(&desired.sets, &mut outcome);
        }
        outcome.problems = desired.problems;
        outcome.no_local_endpoints = desired.no_local_endpoints;
        outcome
    }

    fn dry_run(&mut self, state: &ClusterState) -> anyhow::Result<Vec<String>> {
        let (live, node) = self.read_live()?;
        let desired = self.plan_for(state, node);
        let mut lines: Vec<String> = desired
            .problems
            .iter()
            .map(|p| format!("# skipped {p}"))
            .collect();
        let ops = diff(&desired, &live, &self.ownership);
        lines.push(format!("# {} change(s) to the live kernel:", ops.len()));
        lines.extend(ops.iter().map(|o| o.to_string()));
        // The complete plan, as an operator will read it back afterwards.
        lines.push("# desired state (ipvsadm -Ln):".into());
        lines.extend(render::render(&desired.table).lines().map(String::from));
        let bound: Vec<String> = desired.bound.iter().map(|a| a.to_string()).collect();
        lines.push(format!("# {DUMMY_LINK} addresses: {}", bound.join(" ")));
        if let Some(fw) = self.firewall_for(state) {
            lines.extend(fw.dry_run(&desired.sets));
        }
        Ok(lines)
    }

    fn cleanup(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        match self.read_live() {
            Ok((live, _)) => {
                let ops: Vec<Op> = self
                    .owned_keys(&live)
                    .into_iter()
                    .map(|k| Op::Ipvs(IpvsOp::DelService(k)))
                    .collect();
                let mut outcome = SyncOutcome::default();
                self.apply(&ops, &mut outcome);
                errors.extend(outcome.errors);
            }
            Err(e) => errors.push(format!("reading IPVS state for cleanup: {e}")),
        }
        // Deleting the link takes its addresses with it.
        if let Err(e) = self.links.delete_link(DUMMY_LINK) {
            errors.push(e.to_string());
        }
        if let Some(fw) = &mut self.firewall {
            errors.extend(fw.cleanup());
        }
        errors
    }
}

#[cfg(test)]
mod diff_tests;

#[cfg(test)]
mod firewall_tests;

#[cfg(test)]
mod planner_tests;

#[cfg(test)]
mod proxier_tests;
