//! The operations a sync applies in IPVS mode, for every kernel object it
//! programs: the dummy link and its addresses, IPVS, the ipsets, and the
//! companion iptables chains. The diff produces them, `--dry-run` prints
//! them, the applier applies them: one list, one path.

use std::fmt;
use std::net::IpAddr;

use super::planner::DUMMY_LINK;
use super::sets::SetOp;
use crate::kernel::ipvs::IpvsOp;
use crate::net::IpFamily;
use crate::netfilter::cleanup::Removal;
use crate::netfilter::ruleset::{Chain, Jump, RestorePlan};

/// Companion chains of one family to write (each whole) and jumps to
/// insert, as one `iptables-restore --noflush`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainWrite {
    pub family: IpFamily,
    pub nat: Vec<Chain>,
    pub filter: Vec<Chain>,
    pub jumps: Vec<Jump>,
}

impl ChainWrite {
    /// The restore input.
    pub fn render(&self) -> String {
        RestorePlan {
            nat: self.nat.iter().collect(),
            filter: self.filter.iter().collect(),
            jumps: self.jumps.iter().collect(),
            ..Default::default()
        }
        .render()
    }

    /// Chains and jumps written, for counting.
    pub fn size(&self) -> usize {
        self.nat.len() + self.filter.len() + self.jumps.len()
    }
}

/// One change to the IPVS-mode kernel state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    CreateLink,
    AddAddress(IpAddr),
    Ipvs(IpvsOp),
    DelAddress(IpAddr),
    Ipset(SetOp),
    Chains(ChainWrite),
    /// The iptables mode's chains and jumps, removed once the shared chains
    /// are IPVS mode's.
    RemoveLeftovers(IpFamily, Removal),
}

impl Op {
    /// A stable name for metrics (`kproxy_kernel_operations_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::CreateLink => "create_link",
            Op::AddAddress(_) => "add_address",
            Op::DelAddress(_) => "delete_address",
            Op::Ipvs(IpvsOp::AddService(_)) => "add_virtual_server",
            Op::Ipvs(IpvsOp::EditService(_)) => "edit_virtual_server",
            Op::Ipvs(IpvsOp::DelService(_)) => "delete_virtual_server",
            Op::Ipvs(IpvsOp::AddDest(..)) => "add_real_server",
            Op::Ipvs(IpvsOp::EditDest(..)) => "edit_real_server",
            Op::Ipvs(IpvsOp::DelDest(..)) => "delete_real_server",
            Op::Ipset(op) => op.kind(),
            Op::Chains(_) => "restore_rules",
            Op::RemoveLeftovers(..) => "remove_leftovers",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateLink => write!(f, "create dummy link {DUMMY_LINK}"),
            Op::AddAddress(a) => write!(f, "add address {a} to {DUMMY_LINK}"),
            Op::DelAddress(a) => write!(f, "delete address {a} from {DUMMY_LINK}"),
            Op::Ipvs(op) => op.fmt(f),
            Op::Ipset(op) => write!(f, "ipset {}", op.restore_line()),
            Op::Chains(w) => {
                let mut parts = Vec::new();
                for (table, chains) in [("nat", &w.nat), ("filter", &w.filter)] {
                    for c in chains {
                        parts.push(format!("{table} {} ({} rules)", c.name, c.rules.len()));
                    }
                }
                for j in &w.jumps {
                    parts.push(format!("jump {} {} -> {}", j.table, j.from, j.rule));
                }
                write!(f, "write {} chains: {}", w.family, parts.join(", "))
            }
            Op::RemoveLeftovers(family, r) => write!(
                f,
                "remove iptables-mode leftovers ({family} {}): {} jump(s), chains {}",
                r.table,
                r.unlink.len(),
                r.doomed.join(" ")
            ),
        }
    }
}
