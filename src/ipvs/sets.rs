//! The ipsets of IPVS mode: which sets exist, what each holds, and the diff
//! from desired entries to one `ipset restore` script.
//!
//! IPVS does the load balancing; iptables still has to masquerade, accept
//! and filter. Rules that name every Service would grow with the cluster, so
//! each rule matches an ipset instead and the sets carry the per-Service
//! data. The names, types and entry formats are upstream kube-proxy's, so
//! `ipset list` reads the same on a node that ran either.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::kernel::ipset::LiveSet;
use crate::net::{IpFamily, Protocol};

/// One of IPVS mode's ipsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Set {
    LoopBack,
    ClusterIp,
    ExternalIp,
    ExternalIpLocal,
    LoadBalancer,
    LoadBalancerLocal,
    LoadBalancerFw,
    LoadBalancerSourceCidr,
    LoadBalancerSourceIp,
    NodePortTcp,
    NodePortLocalTcp,
    NodePortUdp,
    NodePortLocalUdp,
    NodePortSctp,
    NodePortLocalSctp,
    HealthCheckNodePort,
    IpvsIps,
}

impl Set {
    pub const ALL: [Set; 17] = [
        Set::LoopBack,
        Set::ClusterIp,
        Set::ExternalIp,
        Set::ExternalIpLocal,
        Set::LoadBalancer,
        Set::LoadBalancerLocal,
        Set::LoadBalancerFw,
        Set::LoadBalancerSourceCidr,
        Set::LoadBalancerSourceIp,
        Set::NodePortTcp,
        Set::NodePortLocalTcp,
        Set::NodePortUdp,
        Set::NodePortLocalUdp,
        Set::NodePortSctp,
        Set::NodePortLocalSctp,
        Set::HealthCheckNodePort,
        Set::IpvsIps,
    ];

    /// The IPv4 name (upstream's).
    fn base_name(self) -> &'static str {
        match self {
            Set::LoopBack => "KUBE-LOOP-BACK",
            Set::ClusterIp => "KUBE-CLUSTER-IP",
            Set::ExternalIp => "KUBE-EXTERNAL-IP",
            Set::ExternalIpLocal => "KUBE-EXTERNAL-IP-LOCAL",
            Set::LoadBalancer => "KUBE-LOAD-BALANCER",
            Set::LoadBalancerLocal => "KUBE-LOAD-BALANCER-LOCAL",
            Set::LoadBalancerFw => "KUBE-LOAD-BALANCER-FW",
            Set::LoadBalancerSourceCidr => "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            Set::LoadBalancerSourceIp => "KUBE-LOAD-BALANCER-SOURCE-IP",
            Set::NodePortTcp => "KUBE-NODE-PORT-TCP",
            Set::NodePortLocalTcp => "KUBE-NODE-PORT-LOCAL-TCP",
            Set::NodePortUdp => "KUBE-NODE-PORT-UDP",
            Set::NodePortLocalUdp => "KUBE-NODE-PORT-LOCAL-UDP",
            Set::NodePortSctp => "KUBE-NODE-PORT-SCTP-HASH",
            Set::NodePortLocalSctp => "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
            Set::HealthCheckNodePort => "KUBE-HEALTH-CHECK-NODE-PORT",
            Set::IpvsIps => "KUBE-IPVS-IPS",
        }
    }

    /// The set's name in `family`. IPv6 sets are named as upstream names
    /// them: `KUBE-` becomes `KUBE-6-`, cut to the kernel's 31 characters.
    pub fn name(self, family: IpFamily) -> String {
        match family {
            IpFamily::V4 => self.base_name().to_string(),
            IpFamily::V6 => {
                let mut n = self.base_name().replacen("KUBE-", "KUBE-6-", 1);
                n.truncate(31);
                n
            }
        }
    }

    pub fn set_type(self) -> &'static str {
        match self {
            Set::LoopBack | Set::LoadBalancerSourceIp => "hash:ip,port,ip",
            Set::LoadBalancerSourceCidr => "hash:ip,port,net",
            Set::NodePortTcp
            | Set::NodePortLocalTcp
            | Set::NodePortUdp
            | Set::NodePortLocalUdp
            | Set::HealthCheckNodePort => "bitmap:port",
            Set::IpvsIps => "hash:ip",
            _ => "hash:ip,port",
        }
    }

    /// The comment of the iptables rule that matches this set.
    pub fn comment(self) -> &'static str {
        match self {
            Set::LoopBack => {
                "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"
            }
            Set::ClusterIp => "Kubernetes service cluster ip + port for masquerade purpose",
            Set::ExternalIp => {
                "Kubernetes service external ip + port for masquerade and filter purpose"
            }
            Set::ExternalIpLocal => {
                "Kubernetes service external ip + port with externalTrafficPolicy=local"
            }
            Set::LoadBalancer => "Kubernetes service lb portal",
            Set::LoadBalancerLocal => {
                "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"
            }
            Set::LoadBalancerFw => {
                "Kubernetes service load balancer ip + port for load balancer with sourceRange"
            }
            Set::LoadBalancerSourceCidr => {
                "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"
            }
            Set::LoadBalancerSourceIp => {
                "Kubernetes service load balancer ip + port + source IP for packet filter purpose"
            }
            Set::NodePortTcp => "Kubernetes nodeport TCP port for masquerade purpose",
            Set::NodePortLocalTcp => {
                "Kubernetes nodeport TCP port with externalTrafficPolicy=local"
            }
            Set::NodePortUdp => "Kubernetes nodeport UDP port for masquerade purpose",
            Set::NodePortLocalUdp => {
                "Kubernetes nodeport UDP port with externalTrafficPolicy=local"
            }
            Set::NodePortSctp => {
                "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"
            }
            Set::NodePortLocalSctp => {
                "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"
            }
            Set::HealthCheckNodePort => "Kubernetes health check node port",
            Set::IpvsIps => "Addresses on the ipvs interface",
        }
    }

    /// `ipset create` arguments after the name.
    fn create_args(self, family: IpFamily) -> String {
        match self.set_type() {
            "bitmap:port" => "bitmap:port range 0-65535".to_string(),
            t => format!(
                "{t} family {} hashsize 1024 maxelem 65536",
                match family {
                    IpFamily::V4 => "inet",
                    IpFamily::V6 => "inet6",
                }
            ),
        }
    }

    /// The NodePort sets for `protocol` (plain, Local).
    pub fn node_port(protocol: Protocol) -> (Set, Set) {
        match protocol {
            Protocol::Tcp => (Set::NodePortTcp, Set::NodePortLocalTcp),
            Protocol::Udp => (Set::NodePortUdp, Set::NodePortLocalUdp),
            Protocol::Sctp => (Set::NodePortSctp, Set::NodePortLocalSctp),
        }
    }
}

/// `ip,proto:port`, as `ipset save` prints a hash:ip,port member.
pub fn ip_port(ip: IpAddr, protocol: Protocol, port: u16) -> String {
    format!("{ip},{}:{port}", protocol.lower())
}

/// `ip,proto:port,ip2` (hash:ip,port,ip).
pub fn ip_port_ip(ip: IpAddr, protocol: Protocol, port: u16, ip2: IpAddr) -> String {
    format!("{},{ip2}", ip_port(ip, protocol, port))
}

/// `ip,proto:port,net` (hash:ip,port,net). The kernel prints a host-length
/// network without its prefix, so a /32 (or /128) is written that way too.
pub fn ip_port_net(ip: IpAddr, protocol: Protocol, port: u16, net: IpNet) -> String {
    let net = net.trunc();
    if net.prefix_len() == net.max_prefix_len() {
        format!("{},{}", ip_port(ip, protocol, port), net.addr())
    } else {
        format!("{},{net}", ip_port(ip, protocol, port))
    }
}

/// Desired members of every set, per family. Sets without members still
/// exist in the kernel (the rules name them); they are just empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredSets {
    pub members: BTreeMap<(IpFamily, Set), BTreeSet<String>>,
}

impl DesiredSets {
    pub fn add(&mut self, family: IpFamily, set: Set, entry: String) {
        self.members.entry((family, set)).or_default().insert(entry);
    }

    pub fn get(&self, family: IpFamily, set: Set) -> Option<&BTreeSet<String>> {
        self.members.get(&(family, set))
    }

    pub fn is_empty(&self, family: IpFamily, set: Set) -> bool {
        self.get(family, set).is_none_or(|m| m.is_empty())
    }

    /// Every member as `SET-NAME entry` lines, sorted (for goldens).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for ((family, set), members) in &self.members {
            for m in members {
                let _ = writeln!(out, "{} {m}", set.name(*family));
            }
        }
        out
    }
}

/// One change to IPVS mode's ipsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetOp {
    /// Create `set` with `args` (type and options, as `ipset create` takes them).
    Create {
        set: String,
        args: String,
    },
    Add {
        set: String,
        entry: String,
    },
    Del {
        set: String,
        entry: String,
    },
}

impl SetOp {
    /// The `ipset restore` line for this operation.
    pub fn restore_line(&self) -> String {
        match self {
            SetOp::Create { set, args } => format!("create {set} {args}"),
            SetOp::Add { set, entry } => format!("add {set} {entry}"),
            SetOp::Del { set, entry } => format!("del {set} {entry}"),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SetOp::Create { .. } => "create_ipset",
            SetOp::Add { .. } => "add_ipset_entry",
            SetOp::Del { .. } => "delete_ipset_entry",
        }
    }
}

/// A set kproxy cannot use as it is: same name, other type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetConflict {
    pub name: String,
    pub found: String,
    pub wanted: &'static str,
}

/// `ipset restore` input for `ops`, in order.
pub fn restore_script<'a>(ops: impl IntoIterator<Item = &'a SetOp>) -> String {
    let mut out = String::new();
    for op in ops {
        out.push_str(&op.restore_line());
        out.push('\n');
    }
    out
}

/// The operations that turn `live` into `desired` for `families`: the
/// missing sets created, missing members added, stale ones deleted. Sets
/// other than IPVS mode's own are never named; one of kproxy's names with
/// the wrong type is a conflict, left alone.
pub fn diff_sets(
    desired: &DesiredSets,
    live: &BTreeMap<String, LiveSet>,
    families: &[IpFamily],
) -> (Vec<SetOp>, Vec<SetConflict>) {
    let mut ops = Vec::new();
    let mut conflicts = Vec::new();
    let empty = BTreeSet::new();
    for &family in families {
        for set in Set::ALL {
            let name = set.name(family);
            let want = desired.get(family, set).unwrap_or(&empty);
            let have = match live.get(&name) {
                Some(l) if l.set_type != set.set_type() => {
                    conflicts.push(SetConflict {
                        name,
                        found: l.set_type.clone(),
                        wanted: set.set_type(),
                    });
                    continue;
                }
                Some(l) => &l.entries,
                None => {
                    ops.push(SetOp::Create {
                        set: name.clone(),
                        args: set.create_args(family),
                    });
                    &empty
                }
            };
            for m in want.difference(have) {
                ops.push(SetOp::Add {
                    set: name.clone(),
                    entry: m.clone(),
                });
            }
            for m in have.difference(want) {
                ops.push(SetOp::Del {
                    set: name.clone(),
                    entry: m.clone(),
                });
            }
        }
    }
    (ops, conflicts)
}

/// `ipset restore` input that destroys every IPVS-mode set present in `live`
/// (both families). Only valid once no rule refers to them.
pub fn destroy_script<T>(live: &BTreeMap<String, T>) -> String {
    let mut out = String::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        for set in Set::ALL {
            let name = set.name(family);
            if live.contains_key(&name) {
                let _ = writeln!(out, "destroy {name}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_names_follow_upstream_and_fit_the_kernel_limit() {
        assert_eq!(Set::ClusterIp.name(IpFamily::V6), "KUBE-6-CLUSTER-IP");
        assert_eq!(
            Set::LoadBalancerSourceCidr.name(IpFamily::V6),
            "KUBE-6-LOAD-BALANCER-SOURCE-CID"
        );
        assert_eq!(
            Set::NodePortLocalSctp.name(IpFamily::V6),
            "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS"
        );
        for set in Set::ALL {
            for f in [IpFamily::V4, IpFamily::V6] {
                assert!(set.name(f).len() <= 31, "{}", set.name(f));
            }
        }
        let names: BTreeSet<String> = Set::ALL
            .iter()
            .flat_map(|s| [s.name(IpFamily::V4), s.name(IpFamily::V6)])
            .collect();
        assert_eq!(names.len(), 34, "set names must not collide");
    }

    #[test]
    fn entries_are_written_as_the_kernel_prints_them() {
        let ip: IpAddr = "10.96.0.1".parse().unwrap();
        assert_eq!(ip_port(ip, Protocol::Tcp, 443), "10.96.0.1,tcp:443");
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(ip_port(v6, Protocol::Udp, 53), "fd00::1,udp:53");
        let lb: IpAddr = "1.2.3.4".parse().unwrap();
        assert_eq!(
            ip_port_net(lb, Protocol::Tcp, 80, "10.1.2.3/8".parse().unwrap()),
            "1.2.3.4,tcp:80,10.0.0.0/8"
        );
        assert_eq!(
            ip_port_net(lb, Protocol::Tcp, 80, "192.0.2.7/32".parse().unwrap()),
            "1.2.3.4,tcp:80,192.0.2.7"
        );
        assert_eq!(
            ip_port_ip(lb, Protocol::Sctp, 80, lb),
            "1.2.3.4,sctp:80,1.2.3.4"
        );
    }

    #[test]
    fn the_diff_creates_adds_and_deletes_only_what_differs() {
        let mut desired = DesiredSets::default();
        desired.add(IpFamily::V4, Set::ClusterIp, "10.96.0.1,tcp:443".into());
        desired.add(IpFamily::V4, Set::ClusterIp, "10.96.0.10,udp:53".into());
        let (first, _) = diff_sets(&desired, &BTreeMap::new(), &[IpFamily::V4]);
        let count = |ops: &[SetOp], kind: &str| ops.iter().filter(|o| o.kind() == kind).count();
        assert_eq!(count(&first, "create_ipset"), 17);
        assert_eq!(count(&first, "add_ipset_entry"), 2);
        assert_eq!(count(&first, "delete_ipset_entry"), 0);
        // Every create comes before the adds into that set.
        let script = restore_script(&first);
        let create = script.find("create KUBE-CLUSTER-IP ").unwrap();
        let add = script.find("add KUBE-CLUSTER-IP ").unwrap();
        assert!(create < add);

        let mut live = crate::kernel::ipset::parse_save(&script.replace(
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536",
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12",
        ));
        assert_eq!(
            diff_sets(&desired, &live, &[IpFamily::V4]),
            (vec![], vec![])
        );

        // An operator's set is never named; a stale member is deleted.
        live.insert("OPERATOR".into(), LiveSet::default());
        live.get_mut("KUBE-CLUSTER-IP")
            .unwrap()
            .entries
            .insert("10.96.0.99,tcp:80".into());
        let (ops, _) = diff_sets(&desired, &live, &[IpFamily::V4]);
        assert_eq!(
            restore_script(&ops),
            "del KUBE-CLUSTER-IP 10.96.0.99,tcp:80\n"
        );
        assert!(!destroy_script(&live).contains("OPERATOR"));

        // A set of the wrong type is reported, not destroyed behind anyone's back.
        live.get_mut("KUBE-NODE-PORT-TCP").unwrap().set_type = "hash:ip".into();
        let (ops, conflicts) = diff_sets(&desired, &live, &[IpFamily::V4]);
        assert_eq!(
            conflicts,
            vec![SetConflict {
                name: "KUBE-NODE-PORT-TCP".into(),
                found: "hash:ip".into(),
                wanted: "bitmap:port",
            }]
        );
        assert!(!restore_script(&ops).contains("KUBE-NODE-PORT-TCP"));
    }
}
