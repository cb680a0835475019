//! In-memory conntrack table that answers like the kernel: a delete finds
//! its entry by protocol, original tuple and zone, and is refused with
//! ENOENT when there is none or its id differs (the kernel's
//! ctnetlink_del_conntrack).

use super::{Conntrack, Deleted, Flow};
use crate::kernel::KernelError;
use crate::net::{IpFamily, Protocol};

#[derive(Debug, Default)]
pub struct ConntrackTwin {
    pub entries: Vec<Flow>,
    /// Dumps taken, as (family, protocol).
    pub dumps: Vec<(IpFamily, Protocol)>,
    /// Batches of deletes received, and their sizes.
    pub batches: Vec<usize>,
    /// Refuse every dump with this errno (a kernel without conntrack).
    pub refuse_list: Option<i32>,
    /// Refuse every delete with this errno.
    pub refuse_delete: Option<i32>,
}

impl ConntrackTwin {
    pub fn new(entries: Vec<Flow>) -> Self {
        Self {
            entries,
            ..Default::default()
        }
    }
}

fn same_entry(a: &Flow, b: &Flow) -> bool {
    a.protocol == b.protocol && a.orig == b.orig && a.zone == b.zone
}

impl Conntrack for ConntrackTwin {
    fn list(&mut self, family: IpFamily, protocol: Protocol) -> Result<Vec<Flow>, KernelError> {
        if let Some(errno) = self.refuse_list {
            return Err(KernelError::errno(
                format!("list {family} {protocol} conntrack entries"),
                errno,
            ));
        }
        self.dumps.push((family, protocol));
        Ok(self
            .entries
            .iter()
            .filter(|f| f.family() == family && f.protocol == protocol)
            .copied()
            .collect())
    }

    fn delete(&mut self, flows: &[Flow]) -> Deleted {
        self.batches.push(flows.len());
        let mut done = Deleted::default();
        for flow in flows {
            if let Some(errno) = self.refuse_delete {
                done.errors.push(KernelError::errno(
                    format!("delete conntrack entry {flow}"),
                    errno,
                ));
                continue;
            }
            let found = self
                .entries
                .iter()
                .position(|e| same_entry(e, flow) && (flow.id.is_none() || e.id == flow.id));
            match found {
                Some(i) => {
                    self.entries.remove(i);
                    done.deleted += 1;
                }
                None => done.gone += 1,
            }
        }
        done
    }
}
