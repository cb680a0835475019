//! In-memory IPVS that answers like the kernel does: the same refusals with
//! the same errno (EEXIST for a duplicate, ESRCH for a missing virtual server,
//! ENOENT for a missing real server or an unknown scheduler, EINVAL for a
//! Masq real server of the other family).

use std::net::IpAddr;

use super::{DestStats, Ipvs, IpvsOp, IpvsTable, ServiceEntry, Timeouts};
use crate::kernel::KernelError;

/// Schedulers Debian's kernel ships as modules.
pub const KNOWN_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

#[derive(Debug, Default)]
pub struct IpvsTwin {
    pub table: IpvsTable,
    pub timeouts: Timeouts,
    /// Every operation applied successfully, in order (tests count them).
    pub applied: Vec<IpvsOp>,
    /// Number of dumps taken.
    pub dumps: usize,
    /// Refuse every operation with this errno (a kernel that says no).
    pub refuse_all: Option<i32>,
}

impl IpvsTwin {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pretend connections are open on a real server (counters survive only
    /// as long as the virtual server and real server are not re-created).
    pub fn set_stats(&mut self, op: &IpvsOp, stats: DestStats) {
        if let IpvsOp::AddDest(k, rs) = op
            && let Some(e) = self.table.services.get_mut(k)
        {
            e.stats.insert(rs.key, stats);
        }
    }

    fn apply_one(&mut self, op: &IpvsOp) -> Result<(), KernelError> {
        let err = |errno| KernelError::errno(op.to_string(), errno);
        if let Some(errno) = self.refuse_all {
            return Err(err(errno));
        }
        let services = &mut self.table.services;
        match op {
            IpvsOp::AddService(vs) => {
                if !KNOWN_SCHEDULERS.contains(&vs.scheduler.as_str()) {
                    return Err(err(libc::ENOENT));
                }
                if services.contains_key(&vs.key) {
                    return Err(err(libc::EEXIST));
                }
                services.insert(vs.key, ServiceEntry::new(vs.clone()));
            }
            IpvsOp::EditService(vs) => {
                if !KNOWN_SCHEDULERS.contains(&vs.scheduler.as_str()) {
                    return Err(err(libc::ENOENT));
                }
                let e = services.get_mut(&vs.key).ok_or_else(|| err(libc::ESRCH))?;
                e.service = vs.clone();
            }
            IpvsOp::DelService(k) => {
                services.remove(k).ok_or_else(|| err(libc::ESRCH))?;
            }
            IpvsOp::AddDest(k, rs) => {
                let e = services.get_mut(k).ok_or_else(|| err(libc::ESRCH))?;
                if !same_family(k.addr, rs.key.addr) {
                    return Err(err(libc::EINVAL));
                }
                if e.dests.contains_key(&rs.key) {
                    return Err(err(libc::EEXIST));
                }
                e.dests.insert(rs.key, *rs);
                e.stats.insert(rs.key, DestStats::default());
            }
            IpvsOp::EditDest(k, rs) => {
                let e = services.get_mut(k).ok_or_else(|| err(libc::ESRCH))?;
                let d = e.dests.get_mut(&rs.key).ok_or_else(|| err(libc::ENOENT))?;
                *d = *rs;
            }
            IpvsOp::DelDest(k, d) => {
                let e = services.get_mut(k).ok_or_else(|| err(libc::ESRCH))?;
                e.dests.remove(d).ok_or_else(|| err(libc::ENOENT))?;
                e.stats.remove(d);
            }
        }
        self.applied.push(op.clone());
        Ok(())
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

impl Ipvs for IpvsTwin {
    fn dump(&mut self) -> Result<IpvsTable, KernelError> {
        self.dumps += 1;
        Ok(self.table.clone())
    }

    fn apply(&mut self, ops: &[IpvsOp]) -> Vec<Result<(), KernelError>> {
        ops.iter().map(|op| self.apply_one(op)).collect()
    }

    fn flush(&mut self) -> Result<(), KernelError> {
        self.table.services.clear();
        Ok(())
    }

    fn set_timeouts(&mut self, t: Timeouts) -> Result<(), KernelError> {
        // The kernel keeps the current value for every field given as 0.
        if t.tcp != 0 {
            self.timeouts.tcp = t.tcp;
        }
        if t.tcp_fin != 0 {
            self.timeouts.tcp_fin = t.tcp_fin;
        }
        if t.udp != 0 {
            self.timeouts.udp = t.udp;
        }
        Ok(())
    }

    fn timeouts(&mut self) -> Result<Timeouts, KernelError> {
        Ok(self.timeouts)
    }
}
