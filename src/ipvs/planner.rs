//! The IPVS planner: a pure function from cluster state to the desired
//! kernel state (virtual servers with their real servers, and the addresses
//! bound to kube-ipvs0). No I/O: everything it needs comes in as arguments.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::cluster::topology::{
    Categorized, NoLocalEndpoints, NodeView, PolicyScope, PortEndpoint, categorize, port_endpoints,
};
use crate::cluster::{
    ClusterState, IpFamily, IpMode, Kind, Node, ObjectRef, Problem, Service, ServiceName,
    ServicePort, ServiceType, TrafficPolicy,
};
use crate::config::NodePortAddresses;
use crate::config::system::{node_ips, nodeport_addresses_in_effect};
use crate::kernel::ipvs::{
    DestKey, ForwardMethod, IpvsTable, Persistence, RealServer, ServiceEntry, ServiceKey,
    VirtualServer,
};
use crate::kernel::link::LocalAddress;
use crate::netfilter::ruleset::Ruleset;

use super::rules::{RuleConfig, companion_rules};
use super::sets::{DesiredSets, Set, ip_port, ip_port_ip, ip_port_net};

/// The dummy link that holds every Service VIP, as upstream names it.
pub const DUMMY_LINK: &str = "kube-ipvs0";

/// What the planner needs to know about this node.
#[derive(Clone, Debug, Default)]
pub struct NodeContext {
    pub name: String,
    pub zone: Option<String>,
    /// The Node's podCIDRs (for `--detect-local-mode NodeCIDR`).
    pub pod_cidrs: Vec<IpNet>,
    /// The Node object's addresses (for `nodePortAddresses: [primary]`).
    pub node_addresses: Vec<IpAddr>,
    /// Every local address (from the kernel), kube-ipvs0's included; the
    /// planner leaves those out itself.
    pub local_addresses: Vec<LocalAddress>,
}

impl NodeContext {
    /// This node as the API (`node`, once it is known) and the kernel
    /// (`local_addresses`) describe it.
    pub fn new(name: &str, node: Option<&Node>, local_addresses: Vec<LocalAddress>) -> Self {
        Self {
            name: name.to_string(),
            zone: node.and_then(|n| n.zone.clone()),
            pod_cidrs: node.map(|n| n.pod_cidrs.clone()).unwrap_or_default(),
            node_addresses: node.map(|n| n.addresses.clone()).unwrap_or_default(),
            local_addresses,
        }
    }
}

/// Planner settings (a slice of `Config`).
#[derive(Clone, Debug)]
pub struct PlanConfig {
    pub scheduler: String,
    pub nodeport_addresses: NodePortAddresses,
    /// `nodePortAddresses: [primary]`: `nodeport_addresses` is resolved
    /// from the Node's addresses and `bind_address` at every plan.
    pub nodeport_primary: bool,
    pub bind_address: IpAddr,
    /// What the companion rules depend on besides the sets.
    pub rules: RuleConfig,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            scheduler: "rr".into(),
            nodeport_addresses: NodePortAddresses::All,
            nodeport_primary: false,
            bind_address: IpAddr::from([0, 0, 0, 0]),
            rules: RuleConfig::default(),
        }
    }
}

impl From<&crate::config::Config> for PlanConfig {
    fn from(c: &crate::config::Config) -> Self {
        Self {
            scheduler: c.ipvs_scheduler.clone(),
            nodeport_addresses: c.nodeport_addresses.clone(),
            nodeport_primary: c.nodeport_primary,
            bind_address: c.bind_address,
            rules: RuleConfig::from(c),
        }
    }
}

/// The desired IPVS-mode kernel state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpvsPlan {
    pub table: IpvsTable,
    /// Addresses bound to kube-ipvs0.
    pub bound: BTreeSet<IpAddr>,
    /// Which Service each virtual server belongs to.
    pub owners: BTreeMap<ServiceKey, ServiceName>,
    /// Objects (or parts) skipped, each with its reason.
    pub problems: Vec<Problem>,
    /// Services whose Local policy found no local endpoint, as upstream's
    /// IPVS proxier counts them (per Service, not per port).
    pub no_local_endpoints: NoLocalEndpoints,
    /// Members of the ipsets the companion iptables rules match.
    pub sets: DesiredSets,
    /// The companion chains and jumps, per family.
    pub rules: BTreeMap<IpFamily, Ruleset>,
}

/// The node addresses NodePorts listen on, in `family`.
pub fn nodeport_addresses(
    node: &NodeContext,
    cfg: &NodePortAddresses,
    family: IpFamily,
) -> Vec<IpAddr> {
    let mut out: BTreeSet<IpAddr> = BTreeSet::new();
    for la in &node.local_addresses {
        let a = la.addr;
        // Upstream uses GetAllLocalAddressesExcept (isValidForSet) for
        // "all", and drops loopback from nodePortAddresses' matches too
        // (proxier.go, syncProxyRules).
        if !valid_for_set(la) || IpFamily::of(&a) != family {
            continue;
        }
        let take = match cfg {
            NodePortAddresses::All => true,
            NodePortAddresses::Cidrs(cidrs) => cidrs.iter().any(|c: &IpNet| c.contains(&a)),
        };
        if take {
            out.insert(a);
        }
    }
    out.into_iter().collect()
}

/// Plan the whole node.
///
/// Two passes: every Service's cluster IPs first, then external IPs,
/// load-balancer IPs and node ports. The API server hands out cluster IPs
/// uniquely, while externalIPs are free text: an externalIP that names
/// another Service's cluster IP must not take that virtual server away.
pub fn plan(state: &ClusterState, node: &NodeContext, cfg: &PlanConfig) -> IpvsPlan {
    let mut plan = IpvsPlan::default();
    let view = NodeView {
        name: &node.name,
        zone: node.zone.as_deref(),
    };
    let nodeport_cfg = if cfg.nodeport_primary {
        nodeport_addresses_in_effect(
            &cfg.nodeport_addresses,
            true,
            cfg.bind_address,
            &node.node_addresses,
        )
    } else {
        cfg.nodeport_addresses.clone()
    };
    let node_addrs: BTreeMap<IpFamily, Vec<IpAddr>> = [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .map(|f| (f, nodeport_addresses(node, &nodeport_cfg, f)))
        .collect();
    let mut ports = Vec::new();
    for svc in state.services() {
        if !svc.is_proxied() {
            continue;
        }
        let slices = state.slices_for(&svc.name);
        for family in svc.families() {
            if let Some(hc) = svc.health_check_node_port
                && svc.is_external()
                && svc.external_traffic_policy == TrafficPolicy::Local
            {
                plan.sets
                    .add(family, Set::HealthCheckNodePort, hc.to_string());
            }
            for port in &svc.ports {
                let eps = port_endpoints(svc, port, family, &slices, &view, &mut plan.problems);
                // A pod that reaches its own Service can be sent to itself;
                // the reply only finds its way back if that is masqueraded.
                for ep in eps.iter().filter(|e| e.is_local) {
                    let entry = ip_port_ip(ep.addr, port.protocol, ep.port, ep.addr);
                    plan.sets.add(family, Set::LoopBack, entry);
                }
                let cat = categorize(svc, &eps, &view);
                ports.push((svc, port, family, cat));
            }
        }
    }
    // Upstream's proxier.nodeIP, per family (detectNodeIPs: the Node's
    // address, --bind-address, else loopback): whether a load balancer's
    // source ranges let the node itself in is decided on it alone.
    let ips = node_ips(&node.node_addresses, cfg.bind_address);
    let node_ip = |f: IpFamily| match f {
        IpFamily::V4 => ips.ipv4,
        IpFamily::V6 => ips.ipv6,
    };
    let mut no_local = NoLocal::new();
    for pass in [Pass::ClusterIps, Pass::Others] {
        for (svc, port, family, cat) in &ports {
            plan_port(
                &mut plan,
                &mut no_local,
                pass,
                svc,
                port,
                *family,
                cat,
                &node_addrs[family],
                node_ip(*family),
                cfg,
            );
        }
    }
    for (scope, family, _) in no_local {
        plan.no_local_endpoints.add(scope, family, 1);
    }
    // Cluster IPs are always bound; an external or load-balancer IP that is
    // already one of the node's own addresses is not (upstream's proxier.go:
    // `shouldBind := !nodeAddressSet.Has(...)`): on kube-ipvs0 and in
    // KUBE-IPVS-IPS it would make KUBE-IPVS-FILTER refuse every other port
    // of the node's own address (SSH, the kubelet). Its virtual server stays.
    let own = node_own_addresses(node);
    let cluster_ips: BTreeSet<IpAddr> = state
        .services()
        .flat_map(|s| s.cluster_ips.iter().copied())
        .collect();
    plan.bound
        .retain(|a| cluster_ips.contains(a) || !own.contains(a));
    for addr in plan.bound.clone() {
        plan.sets
            .add(IpFamily::of(&addr), Set::IpvsIps, addr.to_string());
    }
    let rules = RuleConfig {
        node_pod_cidrs: node.pod_cidrs.clone(),
        ..cfg.rules.clone()
    };
    plan.rules = companion_rules(&[IpFamily::V4, IpFamily::V6], &plan.sets, &rules);
    plan
}

/// Upstream's nodeAddressSet: every local address that is valid for a set.
fn node_own_addresses(node: &NodeContext) -> BTreeSet<IpAddr> {
    node.local_addresses
        .iter()
        .filter(|la| valid_for_set(la))
        .map(|la| la.addr)
        .collect()
}

/// A node address as upstream's GetAllLocalAddressesExcept(kube-ipvs0)
/// counts it (pkg/proxy/ipvs/netlink_linux.go isValidForSet): not on
/// kube-ipvs0, not loopback (127.0.0.1 and ::1 cannot carry IPVS NodePort
/// traffic; kubernetes#101023, v1.22), not IPv6 link-local (it needs a scope).
fn valid_for_set(la: &LocalAddress) -> bool {
    let link_local_v6 = matches!(la.addr, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
    la.ifname != DUMMY_LINK && !la.addr.is_loopback() && !link_local_v6
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    ClusterIps,
    Others,
}

/// The Services upstream's IPVS proxier counts as having no local endpoint:
/// a set of names per policy and family, so a Service counts once however
/// many ports and virtual servers it has.
type NoLocal = BTreeSet<(PolicyScope, IpFamily, ServiceName)>;

/// The real servers of one virtual server, as upstream's syncEndpoint
/// (pkg/proxy/ipvs/proxier.go) picks them: with the policy that applies
/// Local and no local endpoint, the cluster-wide endpoints (kubernetes#97081:
/// local pods still reach the Service; replies to outside clients are lost
/// without SNAT). Those are empty when the Service never uses its Cluster
/// policy (internal Local and not externally reachable). The Service is then
/// counted under each of its Local policies, if it has endpoints anywhere.
fn vip_endpoints<'a>(
    no_local: &mut NoLocal,
    svc: &Service,
    family: IpFamily,
    kind: VipKind,
    cat: &'a Categorized,
) -> &'a [PortEndpoint] {
    let internal_local = svc.internal_traffic_policy == TrafficPolicy::Local;
    let external_local = svc.is_external() && svc.external_traffic_policy == TrafficPolicy::Local;
    let only_local = if kind == VipKind::ClusterIp {
        internal_local
    } else {
        external_local
    };
    if !only_local {
        return &cat.cluster;
    }
    if !cat.local.is_empty() {
        return &cat.local;
    }
    if cat.has_any {
        for (local, scope) in [
            (internal_local, PolicyScope::Internal),
            (external_local, PolicyScope::External),
        ] {
            if local {
                no_local.insert((scope, family, svc.name.clone()));
            }
        }
    }
    &cat.cluster
}

/// Where a virtual server comes from, for naming it in problems.
fn vip_kind(t: VipKind) -> &'static str {
    match t {
        VipKind::ClusterIp => "cluster IP",
        VipKind::ExternalIp => "external IP",
        VipKind::LoadBalancer => "load-balancer IP",
        VipKind::NodePort => "node port",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VipKind {
    ClusterIp,
    ExternalIp,
    LoadBalancer,
    NodePort,
}

#[allow(clippy::too_many_arguments)]
fn plan_port(
    plan: &mut IpvsPlan,
    no_local: &mut NoLocal,
    pass: Pass,
    svc: &Service,
    port: &ServicePort,
    family: IpFamily,
    cat: &Categorized,
    node_addrs: &[IpAddr],
    node_ip: IpAddr,
    cfg: &PlanConfig,
) {
    let persistence = svc.affinity_timeout.map(|timeout| Persistence {
        timeout,
        netmask: match family {
            IpFamily::V4 => 0xffff_ffff,
            IpFamily::V6 => 128,
        },
    });
    let in_family = |a: &&IpAddr| IpFamily::of(a) == family;

    let mut vips: Vec<(IpAddr, u16, VipKind)> = Vec::new();
    match pass {
        Pass::ClusterIps => {
            for ip in svc.cluster_ips.iter().filter(in_family) {
                vips.push((*ip, port.port, VipKind::ClusterIp));
            }
        }
        Pass::Others => {
            for ip in svc.external_ips.iter().filter(in_family) {
                vips.push((*ip, port.port, VipKind::ExternalIp));
            }
            if svc.service_type == ServiceType::LoadBalancer {
                for ing in &svc.load_balancer_ingress {
                    // With ipMode Proxy the load balancer delivers to the node
                    // itself; binding its IP here would capture traffic meant for it.
                    if ing.ip_mode == IpMode::Vip && IpFamily::of(&ing.ip) == family {
                        vips.push((ing.ip, port.port, VipKind::LoadBalancer));
                    }
                }
            }
            if let Some(np) = port.node_port
                && matches!(
                    svc.service_type,
                    ServiceType::NodePort | ServiceType::LoadBalancer
                )
            {
                for a in node_addrs {
                    vips.push((*a, np, VipKind::NodePort));
                }
            }
        }
    }

    for (addr, vport, kind) in vips {
        let key = ServiceKey {
            addr,
            protocol: port.protocol,
            port: vport,
        };
        if let Some(owner) = plan.owners.get(&key) {
            if owner != &svc.name {
                plan.problems.push(Problem {
                    object: ObjectRef::new(Kind::Service, &svc.name.namespace, &svc.name.name),
                    reason: format!(
                        "{} {} is already used by Service {}; skipped",
                        vip_kind(kind),
                        key,
                        owner
                    ),
                });
            }
            continue;
        }
        let endpoints = vip_endpoints(no_local, svc, family, kind, cat);
        let mut entry = ServiceEntry::new(VirtualServer {
            key,
            scheduler: cfg.scheduler.clone(),
            persistence,
            sched_flags: sched_flags(&cfg.scheduler),
        });
        for ep in endpoints {
            let dk = DestKey {
                addr: ep.addr,
                port: ep.port,
            };
            entry.dests.insert(
                dk,
                RealServer {
                    key: dk,
                    weight: 1,
                    forward: ForwardMethod::Masq,
                },
            );
        }
        if kind != VipKind::NodePort {
            plan.bound.insert(addr);
        }
        plan.owners.insert(key, svc.name.clone());
        plan.table.services.insert(key, entry);
        add_set_members(plan, svc, family, kind, key, node_ip);
    }
}

/// Upstream's scheduler flags (pkg/proxy/ipvs/proxier.go syncProxyRules):
/// `mh` hashes on the source port too (FlagSourceHash, 0x10: mh-port), so
/// that one client's connections spread; every other scheduler, `sh`
/// included, gets none.
fn sched_flags(scheduler: &str) -> u32 {
    if scheduler == "mh" {
        super::render::SVC_F_SCHED2
    } else {
        0
    }
}

/// The ipset members one virtual server brings, as upstream's rules expect
/// them: which sets say "masquerade", "accept", "leave the source alone
/// (Local policy)" or "filter by source range".
fn add_set_members(
    plan: &mut IpvsPlan,
    svc: &Service,
    family: IpFamily,
    kind: VipKind,
    key: ServiceKey,
    node_ip: IpAddr,
) {
    let local = svc.external_traffic_policy == TrafficPolicy::Local;
    let entry = ip_port(key.addr, key.protocol, key.port);
    let sets = &mut plan.sets;
    match kind {
        VipKind::ClusterIp => sets.add(family, Set::ClusterIp, entry),
        VipKind::ExternalIp => {
            let set = if local {
                Set::ExternalIpLocal
            } else {
                Set::ExternalIp
            };
            sets.add(family, set, entry);
        }
        VipKind::LoadBalancer => {
            sets.add(family, Set::LoadBalancer, entry.clone());
            if local {
                sets.add(family, Set::LoadBalancerLocal, entry.clone());
            }
            let ranges = &svc.load_balancer_source_ranges;
            if !ranges.is_empty() {
                sets.add(family, Set::LoadBalancerFw, entry);
                for net in ranges.iter().filter(|n| IpFamily::of(&n.addr()) == family) {
                    let m = ip_port_net(key.addr, key.protocol, key.port, *net);
                    sets.add(family, Set::LoadBalancerSourceCidr, m);
                }
                // The node reaching the load balancer uses the VIP (bound
                // here) as its source: let it through when the node's
                // primary IP is inside an allowed range; otherwise the
                // companion rules drop it in KUBE-IPVS-OUT-FILTER.
                if ranges.iter().any(|n| n.contains(&node_ip)) {
                    let m = ip_port_ip(key.addr, key.protocol, key.port, key.addr);
                    sets.add(family, Set::LoadBalancerSourceIp, m);
                }
            }
        }
        VipKind::NodePort => {
            let (plain, local_set) = Set::node_port(key.protocol);
            // TCP and UDP node ports are port bitmaps; SCTP ones are
            // address:port pairs (upstream's choice, kept for runbooks).
            let m = if key.protocol == crate::net::Protocol::Sctp {
                entry
            } else {
                key.port.to_string()
            };
            if local {
                sets.add(family, local_set, m.clone());
            }
            sets.add(family, plain, m);
        }
    }
}
