//! Which conntrack entries are stale after a sync, and the cleaner both
//! modes run once a sync has applied.
//!
//! A UDP (or SCTP) flow keeps going where its conntrack entry says for as
//! long as packets keep coming, whatever the rules say now: a DNS client that
//! reuses its source port keeps sending to a pod that was removed until the
//! entry times out. The decision follows upstream's `CleanStaleEntries`
//! (pkg/proxy/conntrack/cleanup.go, v1.36.3), read line by line:
//!
//! - it looks at every Service port of the protocol, in one IP family, that
//!   has at least one *serving* endpoint (a port with none is left alone),
//!   and at all of its serving endpoints (address and port), whatever the
//!   traffic policies, topology or terminating state: "changes to the service
//!   should not affect existing flows";
//! - an entry is stale when its original destination (address and port) is
//!   the port's cluster IP, one of its external IPs or VIP-mode load-balancer
//!   IPs, and its reply source (address and port) is not one of those
//!   endpoints; then, independently, when its original destination port is
//!   the port's NodePort (any address) and its reply source is not one of
//!   them. An entry that was never translated (reply source = the Service
//!   address) is stale too.
//!
//! Beyond upstream:
//! - SCTP as well as UDP (TCP has its own way of ending a connection);
//! - a frontend that existed at the last cleanup and exists no more (a
//!   Service deleted, a port or an external IP removed): every entry to that
//!   address and port is stale, and every translated entry to that NodePort
//!   (an untranslated one is the node's own business: a NodePort matches any
//!   address, so it could be anyone's flow). Upstream has nothing left to
//!   compare such entries with and keeps them until they time out.
//!
//! As upstream cleans only when the endpoints of a UDP Service changed
//! (`ConntrackCleanupRequired`), a table is dumped only when its frontends or
//! their serving endpoints differ from those of the last cleanup that went
//! through, and the first sync cleans every table that has frontends.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::cluster::{ClusterView, EndpointSlice, IpMode, ServicePort};
use crate::kernel::KernelError;
use crate::kernel::conntrack::{Conntrack, Flow};
use crate::net::{IpFamily, Protocol};
use crate::sync::{SyncError, SyncOutcome};

/// The protocols whose entries kproxy cleans.
pub const PROTOCOLS: [Protocol; 2] = [Protocol::Udp, Protocol::Sctp];

/// The serving endpoints (address, port) of one Service port.
pub type Backends = BTreeSet<(IpAddr, u16)>;

/// The frontends of one family and protocol, each with its serving
/// endpoints (empty when it has none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontends {
    /// (cluster IP, external IP or load-balancer VIP, port).
    pub ips: BTreeMap<(IpAddr, u16), Backends>,
    /// NodePort, on any address.
    pub node_ports: BTreeMap<u16, Backends>,
}

impl Frontends {
    fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.node_ports.is_empty()
    }
}

/// One conntrack table kproxy cleans: a family's entries of one protocol.
pub type Table = (IpFamily, Protocol);

/// The frontends of every table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets(pub BTreeMap<Table, Frontends>);

/// The frontends of the cluster's Services in `families`, for the
/// protocols in `PROTOCOLS`, as upstream builds its svcPortMap and
/// endpointsMap: proxied Services only, each family on its own (a Service
/// without a cluster IP of that family has no frontend in it), external
/// and load-balancer IPs of the family only, load balancers in VIP mode only.
pub fn targets(view: &dyn ClusterView, families: &[IpFamily]) -> Targets {
    let mut out = Targets::default();
    for svc in view.services() {
        if !svc.is_proxied() {
            continue;
        }
        let slices = view.slices_for(&svc.name);
        for &family in families {
            let Some(cluster_ip) = svc.cluster_ips.iter().find(|ip| IpFamily::of(ip) == family)
            else {
                continue;
            };
            let mut addrs = vec![*cluster_ip];
            addrs.extend(
                svc.external_ips
                    .iter()
                    .filter(|ip| IpFamily::of(ip) == family),
            );
            addrs.extend(
                svc.load_balancer_ingress
                    .iter()
                    .filter(|i| i.ip_mode == IpMode::Vip && IpFamily::of(&i.ip) == family)
                    .map(|i| i.ip),
            );
            for port in svc.ports.iter().filter(|p| PROTOCOLS.contains(&p.protocol)) {
                let backends = serving(port, family, &slices);
                let f = out.0.entry((family, port.protocol)).or_default();
                for a in &addrs {
                    f.ips.insert((*a, port.port), backends.clone());
                }
                if let Some(np) = port.node_port {
                    f.node_ports.insert(np, backends.clone());
                }
            }
        }
    }
    out
}

/// The serving endpoints of `port` in `family`, as upstream's IsServing reads
/// them (pkg/proxy/endpointslicecache.go: `serving` unset means true; ready,
/// terminating and publishNotReadyAddresses play no part): from every slice
/// of the family whose port of the same name and protocol is listed.
fn serving(port: &ServicePort, family: IpFamily, slices: &[&EndpointSlice]) -> Backends {
    let mut out = Backends::new();
    for slice in slices {
        if slice.family() != Some(family) {
            continue;
        }
        let Some(sp) = slice.port_for(port) else {
            continue;
        };
        out.extend(
            slice
                .endpoints
                .iter()
                .filter(|e| e.serving && IpFamily::of(&e.addr) == family)
                .map(|e| (e.addr, sp.port)),
        );
    }
    out
}

/// The tables to clean now: those whose frontends differ from the last
/// cleanup's (`done`), among those with frontends now or then.
pub fn due(now: &Targets, done: &Targets) -> Vec<Table> {
    let tables: BTreeSet<Table> = now.0.keys().chain(done.0.keys()).copied().collect();
    let empty = Frontends::default();
    tables
        .into_iter()
        .filter(|t| {
            let (n, d) = (now.0.get(t).unwrap_or(&empty), done.0.get(t));
            match d {
                None => !n.is_empty(),
                Some(d) => n != d,
            }
        })
        .collect()
}

/// Whether `backends` (of a frontend that has some) does not hold `flow`'s
/// reply source: upstream's `ok && !endpoints.Has(replySrc:replyPort)`.
fn not_served(backends: Option<&Backends>, flow: &Flow) -> bool {
    backends.is_some_and(|b| !b.is_empty() && !b.contains(&(flow.reply.src, flow.reply.src_port)))
}

/// The entries of `protocol` among `flows` that must go, given the frontends
/// of their table now and at the last cleanup (`before`).
pub fn stale(flows: &[Flow], protocol: Protocol, now: &Frontends, before: &Frontends) -> Vec<Flow> {
    flows
        .iter()
        .filter(|f| f.protocol == protocol)
        .filter(|f| {
            let ip = (f.orig.dst, f.orig.dst_port);
            let port = f.orig.dst_port;
            not_served(now.ips.get(&ip), f)
                || not_served(now.node_ports.get(&port), f)
                || (before.ips.contains_key(&ip) && !now.ips.contains_key(&ip))
                || (before.node_ports.contains_key(&port)
                    && !now.node_ports.contains_key(&port)
                    && f.reply.src != f.orig.dst)
        })
        .copied()
        .collect()
}

/// What one cleanup did.
#[derive(Debug, Default)]
pub struct Cleaned {
    /// Entries deleted.
    pub deleted: u64,
    /// Tables dumped.
    pub dumps: usize,
    /// Time spent in the delete batches.
    pub deleting: Duration,
    pub errors: Vec<KernelError>,
}

impl Cleaned {
    /// Count the deletions (`delete_conntrack_entries`) and the errors in a
    /// sync's outcome.
    pub fn record(self, outcome: &mut SyncOutcome) {
        if self.deleted > 0 {
            *outcome.ops.entry("delete_conntrack_entries").or_default() += self.deleted;
        }
        outcome
            .errors
            .extend(self.errors.into_iter().map(SyncError::Conntrack));
    }
}

/// Deletes stale entries after each sync; remembers what the last complete
/// cleanup saw, to know what changed and which frontends went away.
pub struct Cleaner {
    conntrack: Box<dyn Conntrack>,
    done: Targets,
    /// The kernel has no conntrack (or no ctnetlink): said once, then skipped.
    unsupported: bool,
}

impl Cleaner {
    pub fn new(conntrack: Box<dyn Conntrack>) -> Self {
        Self {
            conntrack,
            done: Targets::default(),
            unsupported: false,
        }
    }

    /// Clean the tables of `families` whose frontends changed. `settled`
    /// says the sync applied everything: only then is a table remembered as
    /// done, so that after a partial sync the next one cleans again.
    pub fn clean(
        &mut self,
        view: &dyn ClusterView,
        families: &[IpFamily],
        settled: bool,
    ) -> Cleaned {
        let mut out = Cleaned::default();
        if self.unsupported {
            return out;
        }
        let now = targets(view, families);
        let empty = Frontends::default();
        for table @ (family, protocol) in due(&now, &self.done) {
            let frontends = now.0.get(&table).unwrap_or(&empty);
            let before = self.done.0.get(&table).unwrap_or(&empty);
            let flows = match self.conntrack.list(family, protocol) {
                Ok(f) => f,
                Err(e) if e.is_unsupported() => {
                    tracing::warn!(
                        "no conntrack in this kernel, stale UDP/SCTP flows are not cleaned: {e}"
                    );
                    self.unsupported = true;
                    return out;
                }
                Err(e) => {
                    out.errors.push(e);
                    continue;
                }
            };
            out.dumps += 1;
            let doomed = stale(&flows, protocol, frontends, before);
            // Upstream logs each deleted flow at -v=6.
            for f in &doomed {
                tracing::trace!("deleting conntrack entry {f}");
            }
            let mut failed = false;
            let start = Instant::now();
            if !doomed.is_empty() {
                let d = self.conntrack.delete(&doomed);
                out.deleted += d.deleted as u64;
                failed = !d.errors.is_empty();
                out.errors.extend(d.errors);
            }
            out.deleting += start.elapsed();
            // Upstream logs the same at -v=4 ("Finished reconciling conntrack entries").
            tracing::debug!(
                %family, %protocol, entries = flows.len(), stale = doomed.len(),
                took_ms = start.elapsed().as_secs_f64() * 1e3, "cleaned conntrack entries"
            );
            if settled && !failed {
                match now.0.get(&table) {
                    Some(f) => self.done.0.insert(table, f.clone()),
                    None => self.done.0.remove(&table),
                };
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "conntrack_tests.rs"]
pub(crate) mod tests;
