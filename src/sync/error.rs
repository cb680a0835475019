//! Why a sync was not complete, as values: each names the object and the
//! reason, and has a kind for the `kproxy_sync_errors_total{kind}` metric,
//! so that tests match variants and operators can count by cause.

use crate::kernel::KernelError;
use crate::kernel::ipvs::ServiceKey;
use crate::net::IpFamily;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// Reading the kernel before planning failed: nothing was changed.
    #[error("reading the live kernel state: {0}")]
    ReadLive(KernelError),
    /// The kernel refused one IPVS operation (on one virtual server or
    /// real server); the others went in.
    #[error("{0}")]
    Refused(KernelError),
    /// The kernel refused creating kube-ipvs0 or binding or unbinding one of
    /// its addresses.
    #[error("{0}")]
    Link(KernelError),
    /// Real servers that could not go in because the kernel refused their
    /// virtual server (each would otherwise be one ESRCH line).
    #[error("{count} real server(s) of {service} not added: its virtual server was refused")]
    RealServersOrphaned { service: ServiceKey, count: usize },
    /// An ipset kproxy needs exists under its name with another type.
    #[error(
        "ipset {name} exists with type {found}, but kproxy needs {wanted}; remove it (ipset destroy {name}) so kproxy can create it"
    )]
    SetConflict {
        name: String,
        found: String,
        wanted: String,
    },
    /// Writing ipset members (or creating sets) failed.
    #[error("{0}")]
    Ipsets(KernelError),
    /// IPVS mode's companion chains of one family were not written.
    #[error("{family} companion rules: {source}")]
    CompanionRules {
        family: IpFamily,
        source: KernelError,
    },
    /// The iptables mode's restore of one family failed.
    #[error("{family} rules for {services} Services not applied: {source}; next sync is full")]
    Rules {
        family: IpFamily,
        services: usize,
        source: KernelError,
    },
    /// The iptables mode could not read one family's tables.
    #[error("{family} iptables snapshot: {source}; next sync is full")]
    Snapshot {
        family: IpFamily,
        source: KernelError,
    },
    /// The node's own addresses could not be read (the Node object's are used).
    #[error("reading local addresses: {0}")]
    LocalAddresses(KernelError),
    /// A chain or jump the other mode left could not be removed.
    #[error("removing iptables-mode leftovers: {0}")]
    Leftovers(KernelError),
    /// Stale conntrack entries could not be listed or deleted (the next
    /// sync tries again).
    #[error("cleaning stale conntrack entries: {0}")]
    Conntrack(KernelError),
}

impl SyncError {
    /// Every `kind()`, so that each series exists (at 0) from the start.
    pub const KINDS: [&'static str; 12] = [
        "read_live",
        "refused",
        "link",
        "real_servers_orphaned",
        "set_conflict",
        "ipsets",
        "companion_rules",
        "rules",
        "snapshot",
        "local_addresses",
        "leftovers",
        "conntrack",
    ];

    /// Whether the sync still counts as done, as upstream counts it: its
    /// IPVS proxier logs a refused virtual or real server and goes on
    /// (pkg/proxy/ipvs/proxier.go syncService/syncEndpoint), and the sync
    /// updates the health server; a failed restore, ipset or dummy-link
    /// operation returns before that. Either way the sync is retried.
    pub fn leaves_sync_done(&self) -> bool {
        matches!(
            self,
            SyncError::Refused(_) | SyncError::RealServersOrphaned { .. }
        )
    }

    /// A stable label value for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::ReadLive(_) => "read_live",
            SyncError::Refused(_) => "refused",
            SyncError::Link(_) => "link",
            SyncError::RealServersOrphaned { .. } => "real_servers_orphaned",
            SyncError::SetConflict { .. } => "set_conflict",
            SyncError::Ipsets(_) => "ipsets",
            SyncError::CompanionRules { .. } => "companion_rules",
            SyncError::Rules { .. } => "rules",
            SyncError::Snapshot { .. } => "snapshot",
            SyncError::LocalAddresses(_) => "local_addresses",
            SyncError::Leftovers(_) => "leftovers",
            SyncError::Conntrack(_) => "conntrack",
        }
    }
}
