//! The live snapshot: everything the IPVS-mode diff compares against, read
//! from the kernel in one step before each sync (IPVS, kube-ipvs0 and the
//! node's addresses, the ipsets' headers and members, `iptables-save`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::planner::DUMMY_LINK;
use super::sets::{DesiredSets, Set, ip_port};
use crate::kernel::KernelError;
use crate::kernel::ipset::{Ipsets, LiveSet};
use crate::kernel::iptables::Iptables;
use crate::kernel::ipvs::{Ipvs, IpvsTable, ServiceKey};
use crate::kernel::link::{Links, LocalAddress};
use crate::net::{IpFamily, Protocol};
use crate::netfilter::ruleset::SavedTables;

/// What was read from the kernel before a sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveState {
    pub table: IpvsTable,
    pub link_exists: bool,
    /// Addresses on kube-ipvs0.
    pub bound: BTreeSet<IpAddr>,
    /// The node's own addresses (kube-ipvs0's excluded).
    pub node_addresses: BTreeSet<IpAddr>,
    /// Every local address, kube-ipvs0's included (the planner needs to
    /// know which interface each is on).
    pub local_addresses: Vec<LocalAddress>,
    /// The ipsets and iptables tables; None when kproxy runs without
    /// companions (no ipset or iptables on the node, or tests of IPVS alone).
    pub companions: Option<LiveCompanions>,
}

impl LiveState {
    /// Whether this (node-address) virtual server's port is a member of
    /// kproxy's KUBE-NODE-PORT-* set of its protocol and family, as read.
    pub fn in_node_port_set(&self, key: &ServiceKey) -> bool {
        let Some(c) = &self.companions else {
            return false;
        };
        let family = IpFamily::of(&key.addr);
        let (plain, _) = Set::node_port(key.protocol);
        // The member as the planner writes it: a port for the bitmaps, the
        // address and port for SCTP's hash.
        let member = if key.protocol == Protocol::Sctp {
            ip_port(key.addr, key.protocol, key.port)
        } else {
            key.port.to_string()
        };
        c.sets
            .get(&plain.name(family))
            .is_some_and(|s| s.entries.contains(&member))
    }
}

/// IPVS mode's ipsets and the tables its companion chains live in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveCompanions {
    /// kproxy's sets by name (others' sets are not read).
    pub sets: BTreeMap<String, LiveSet>,
    /// Per family, the tables as `iptables-save` printed them.
    pub tables: BTreeMap<IpFamily, SavedTables>,
}

/// The adapters around IPVS: ipsets and iptables, for the families the
/// node's iptables has.
pub struct Companions {
    pub ipt: Box<dyn Iptables>,
    pub ipsets: Box<dyn Ipsets>,
    pub families: Vec<IpFamily>,
}

impl Companions {
    pub fn new(ipt: Box<dyn Iptables>, ipsets: Box<dyn Ipsets>, families: Vec<IpFamily>) -> Self {
        Self {
            ipt,
            ipsets,
            families,
        }
    }
}

/// The members this process last wrote, per set name. Listing members
/// costs time in proportion to the cluster (`ipset save` of 50,000 members
/// takes 0.4 s on bare metal and 50 s under emulation), while type and
/// count per set come cheaply: a set whose count still matches what was
/// written is taken as written, except on the reads that are told not to
/// trust the cache (which catches a member swapped behind kproxy's back).
#[derive(Clone, Debug, Default)]
pub struct MemberCache {
    written: BTreeMap<String, BTreeSet<String>>,
}

impl MemberCache {
    /// Remember `sets` as written (after a restore that succeeded).
    pub fn remember(&mut self, sets: &DesiredSets, families: &[IpFamily]) {
        self.written.clear();
        for &family in families {
            for set in Set::ALL {
                let members = sets.get(family, set).cloned().unwrap_or_default();
                self.written.insert(set.name(family), members);
            }
        }
    }

    /// Part of a restore may have run: read everything next time.
    pub fn forget(&mut self) {
        self.written.clear();
    }
}

/// IPVS, kube-ipvs0 and the node's addresses.
pub fn read_core(ipvs: &mut dyn Ipvs, links: &mut dyn Links) -> Result<LiveState, KernelError> {
    let link_exists = links.link_exists(DUMMY_LINK)?;
    let bound = if link_exists {
        links.addresses(DUMMY_LINK)?
    } else {
        BTreeSet::new()
    };
    let local_addresses = links.local_addresses()?;
    let node_addresses = local_addresses
        .iter()
        .filter(|l| l.ifname != DUMMY_LINK)
        .map(|l| l.addr)
        .collect();
    Ok(LiveState {
        table: ipvs.dump()?,
        link_exists,
        bound,
        node_addresses,
        local_addresses,
        companions: None,
    })
}

/// kproxy's sets (members only for a set that is not empty and whose count
/// differs from what the cache holds, or always when `trust_cache` is
/// false) and each family's tables.
pub fn read_companions(
    c: &mut Companions,
    cache: &MemberCache,
    trust_cache: bool,
) -> Result<LiveCompanions, KernelError> {
    let headers = c.ipsets.headers()?;
    let mut sets = BTreeMap::new();
    for &family in &c.families {
        for set in Set::ALL {
            let name = set.name(family);
            let Some(h) = headers.get(&name) else {
                continue;
            };
            let entries = match cache.written.get(&name) {
                _ if h.entries == 0 || h.set_type != set.set_type() => BTreeSet::new(),
                Some(w) if trust_cache && w.len() == h.entries => w.clone(),
                _ => c.ipsets.save_set(&name)?.entries,
            };
            let live = LiveSet {
                set_type: h.set_type.clone(),
                options: Vec::new(),
                entries,
            };
            sets.insert(name, live);
        }
    }
    let mut tables = BTreeMap::new();
    for &family in &c.families {
        tables.insert(family, SavedTables::parse(&c.ipt.save(family)?));
    }
    Ok(LiveCompanions { sets, tables })
}
