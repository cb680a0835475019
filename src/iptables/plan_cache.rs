//! Planning only what changed: each Service's share of the plan (its own
//! chains and its rules in the shared chains) is kept from the last plan,
//! and a partial sync re-plans only the Services it was told changed. A
//! Service's share depends on nothing but the Service, its slices, the node
//! and the comment policy (`LARGE_CLUSTER_ENDPOINTS`), so when the node or
//! the policy differ, or the sync is full, every share is planned again.
//! The result is the plan `planner::plan` would make from scratch (a test
//! holds the two equal through random changes).

use std::collections::{BTreeMap, BTreeSet};

use super::planner::{Builder, LARGE_CLUSTER_ENDPOINTS, NodeContext, Plan, ResolvedPort, resolve};
use crate::cluster::topology::{NoLocalEndpoints, NodeView};
use crate::cluster::{ClusterView, IpFamily, Problem, Service, ServiceName};
use crate::config::Config;
use crate::netfilter::ruleset::Chain;

/// What one Service added to its family's plan.
#[derive(Clone, Debug, Default)]
struct Share {
    endpoints: usize,
    programmed: bool,
    problems: Vec<Problem>,
    no_local: NoLocalEndpoints,
    nat_services: Vec<String>,
    nat_nodeports: Vec<String>,
    filter_services: Vec<String>,
    filter_external: Vec<String>,
    filter_nodeports: Vec<String>,
    filter_firewall: Vec<String>,
    service_chains: Vec<Chain>,
}

/// The Services' shares from the last plan of one family.
#[derive(Debug, Default)]
pub struct PlanCache {
    /// The node and comment policy the shares were planned for.
    planned_for: Option<(NodeContext, bool)>,
    shares: BTreeMap<ServiceName, Share>,
}

impl PlanCache {
    /// The plan for `family`. With `changed`, only those Services (and any
    /// not seen before) are planned again; without it, every one.
    pub fn plan(
        &mut self,
        state: &dyn ClusterView,
        node: &NodeContext,
        config: &Config,
        family: IpFamily,
        changed: Option<&BTreeSet<ServiceName>>,
    ) -> Plan {
        let view = NodeView {
            name: &node.name,
            zone: node.zone.as_deref(),
        };
        let reuse = changed.is_some()
            && self
                .planned_for
                .as_ref()
                .is_some_and(|(planned, _)| planned == node);
        if !reuse {
            self.shares.clear();
        }
        // Resolve the endpoints of what must be planned again; the total
        // over every Service decides the comment policy.
        let mut fresh: Vec<(&Service, Vec<ResolvedPort<'_>>, Vec<Problem>)> = Vec::new();
        let (mut total, mut services) = (0, 0);
        for svc in state.services() {
            services += 1;
            let again = changed.is_some_and(|c| c.contains(&svc.name));
            match self.shares.get(&svc.name) {
                Some(share) if !again => total += share.endpoints,
                _ => {
                    let mut problems = Vec::new();
                    let ports = resolve(svc, state, &view, family, &mut problems);
                    total += ports.iter().map(|p| p.endpoints.len()).sum::<usize>();
                    fresh.push((svc, ports, problems));
                }
            }
        }
        let large = total > LARGE_CLUSTER_ENDPOINTS;
        if reuse && self.planned_for.as_ref().map(|(_, l)| *l) != Some(large) {
            // The comment policy flipped: every Service's rules change.
            return self.plan(state, node, config, family, None);
        }
        for (svc, ports, problems) in fresh {
            let mut b = Builder::new(config, node, family, large);
            let mut no_local = NoLocalEndpoints::default();
            b.service(svc, &ports, &view, &mut no_local);
            let share = Share {
                endpoints: ports.iter().map(|p| p.endpoints.len()).sum(),
                programmed: !ports.is_empty(),
                problems,
                no_local,
                nat_services: b.nat_services,
                nat_nodeports: b.nat_nodeports,
                filter_services: b.filter_services,
                filter_external: b.filter_external,
                filter_nodeports: b.filter_nodeports,
                filter_firewall: b.filter_firewall,
                service_chains: b.service_chains,
            };
            self.shares.insert(svc.name.clone(), share);
        }
        self.planned_for = Some((node.clone(), large));
        if self.shares.len() > services {
            // Services that are gone.
            let names: BTreeSet<&ServiceName> =
                state.services().into_iter().map(|s| &s.name).collect();
            self.shares.retain(|n, _| names.contains(n));
        }
        self.assemble(state, node, config, family, large)
    }

    /// The plan from the shares, in the Services' order, as one pass over
    /// every Service would have built it.
    fn assemble(
        &self,
        state: &dyn ClusterView,
        node: &NodeContext,
        config: &Config,
        family: IpFamily,
        large: bool,
    ) -> Plan {
        let mut b = Builder::new(config, node, family, large);
        let mut out = Plan::default();
        for svc in state.services() {
            let Some(s) = self.shares.get(&svc.name) else {
                continue;
            };
            out.problems.extend(s.problems.iter().cloned());
            out.no_local_endpoints.merge(&s.no_local);
            if s.programmed {
                out.services.insert(svc.name.clone());
            }
            b.nat_services.extend(s.nat_services.iter().cloned());
            b.nat_nodeports.extend(s.nat_nodeports.iter().cloned());
            b.filter_services.extend(s.filter_services.iter().cloned());
            b.filter_external.extend(s.filter_external.iter().cloned());
            b.filter_nodeports
                .extend(s.filter_nodeports.iter().cloned());
            b.filter_firewall.extend(s.filter_firewall.iter().cloned());
            b.service_chains.extend(s.service_chains.iter().cloned());
        }
        out.ruleset = b.into_ruleset(node);
        out
    }
}
