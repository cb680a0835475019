//! Links and addresses: the dummy link `kube-ipvs0` and the node's own
//! addresses (NodePorts listen on them).

pub mod netlink;
pub mod twin;

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::KernelError;

/// An address on some local interface.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalAddress {
    pub ifname: String,
    pub addr: IpAddr,
}

/// The link/address kernel boundary.
pub trait Links: Send {
    /// Create the dummy link `name` if missing (left administratively down,
    /// as upstream does). Returns true when it had to be created.
    fn ensure_dummy(&mut self, name: &str) -> Result<bool, KernelError>;
    /// Delete link `name`; Ok(false) when there was none.
    fn delete_link(&mut self, name: &str) -> Result<bool, KernelError>;
    fn link_exists(&mut self, name: &str) -> Result<bool, KernelError>;
    /// Addresses bound to link `name` (empty when the link does not exist).
    fn addresses(&mut self, name: &str) -> Result<BTreeSet<IpAddr>, KernelError>;
    /// Bind each address as a host route (/32 or /128). One result per address.
    fn add_addresses(&mut self, name: &str, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>>;
    fn del_addresses(&mut self, name: &str, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>>;
    /// Every address on every local interface (loopback included).
    fn local_addresses(&mut self) -> Result<Vec<LocalAddress>, KernelError>;
}

/// A shared adapter (tests keep a handle to look inside a twin, or to make drift).
impl<T: Links> Links for std::sync::Arc<std::sync::Mutex<T>> {
    fn ensure_dummy(&mut self, name: &str) -> Result<bool, KernelError> {
        self.lock().unwrap().ensure_dummy(name)
    }
    fn delete_link(&mut self, name: &str) -> Result<bool, KernelError> {
        self.lock().unwrap().delete_link(name)
    }
    fn link_exists(&mut self, name: &str) -> Result<bool, KernelError> {
        self.lock().unwrap().link_exists(name)
    }
    fn addresses(&mut self, name: &str) -> Result<BTreeSet<IpAddr>, KernelError> {
        self.lock().unwrap().addresses(name)
    }
    fn add_addresses(&mut self, name: &str, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>> {
        self.lock().unwrap().add_addresses(name, addrs)
    }
    fn del_addresses(&mut self, name: &str, addrs: &[IpAddr]) -> Vec<Result<(), KernelError>> {
        self.lock().unwrap().del_addresses(name, addrs)
    }
    fn local_addresses(&mut self) -> Result<Vec<LocalAddress>, KernelError> {
        self.lock().unwrap().local_addresses()
    }
}
