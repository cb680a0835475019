//! In-memory links and addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{Links, LocalAddress};
use crate::kernel::KernelError;

#[derive(Debug, Default)]
pub struct LinksTwin {
    /// link name → its addresses. Links other than dummies count as "physical".
    pub links: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Number of address operations applied (tests count them).
    pub address_ops: usize,
}

impl LinksTwin {
    /// A node with `lo` (127.0.0.1) and `eth0` carrying `addrs`.
    pub fn node(addrs: &[IpAddr]) -> Self {
        let mut links = BTreeMap::new();
        links.insert(
            "lo".to_string(),
            BTreeSet::from(["127.0.0.1".parse().unwrap()]),
        );
        links.insert("eth0".to_string(), addrs.iter().copied().collect());
        Self {
            links,
            address_ops: 0,
        }
    }
}

impl Links for LinksTwin {
    fn ensure_dummy(&mut self, name: &str) -> Result<bool, KernelError> {
        if self.links.contains_key(name) {
            return Ok(false);
        }
        self.links.insert(name.to_string(), BTreeSet::new());
        Ok(true)
    }

    fn delete_link(&mut self, name: &str) -> Result<bool, KernelError> {
        Ok(self.links.remove(name).is_some())
    }

    fn link_exists(&mut self, name: &str) -> Result<bool, KernelError> {
        Ok(self.links.contains_key(name))
    }

    fn addresses(&mut self, name: &str) -> Result<BTreeSet<IpAddr>, KernelError> {
        Ok(self.links.get(name).cloned().unwrap_or_default())
    }

    fn add_addresses(&mut self, name: &str, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>> {
        addrs
            .iter()
            .map(|a| {
                let op = format!("add address {a} to {name}");
                let set = self
                    .links
                    .get_mut(name)
                    .ok_or_else(|| KernelError::errno(&op, libc::ENODEV))?;
                if !set.insert(*a) {
                    return Err(KernelError::errno(&op, libc::EEXIST));
                }
                self.address_ops += 1;
                Ok(())
            })
            .collect()
    }

    fn del_addresses(&mut self, name: &str, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>> {
        addrs
            .iter()
            .map(|a| {
                let op = format!("delete address {a} from {name}");
                let set = self
                    .links
                    .get_mut(name)
                    .ok_or_else(|| KernelError::errno(&op, libc::ENODEV))?;
                if !set.remove(a) {
                    return Err(KernelError::errno(&op, libc::EADDRNOTAVAIL));
                }
                self.address_ops += 1;
                Ok(())
            })
            .collect()
    }

    fn local_addresses(&mut self) -> Result<Vec<LocalAddress>, KernelError> {
        Ok(self
            .links
            .iter()
            .flat_map(|(ifname, addrs)| {
                addrs.iter().map(move |a| LocalAddress {
                    ifname: ifname.clone(),
                    addr: *a,
                })
            })
            .collect())
    }
}
