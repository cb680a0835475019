//! Health-check node ports: for each LoadBalancer Service with
//! externalTrafficPolicy Local, an HTTP server on its `healthCheckNodePort`
//! that tells the cloud load balancer whether this node has a ready
//! endpoint of it, as upstream's service health server does
//! (pkg/proxy/healthcheck/service_health.go).
//!
//! After each sync the loop's report carries the wanted set (Service,
//! family, port, local endpoint count); `HealthCheckServers` hands it to a
//! task of its own that reconciles the running servers: gone or re-ported
//! ones close, new ones open, counts change in place. A port that cannot be
//! bound is reported and tried again with the next sync's set, and the
//! other Services' servers are not affected.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use crate::cluster::{Node, ServiceName};
use crate::config::NodePortAddresses;
use crate::net::IpFamily;
use crate::sync::{HealthCheck, SyncObserver, SyncReport};

/// The weight header upstream sets to the local endpoint count.
pub const WEIGHT_HEADER: &str = "x-load-balancing-endpoint-weight";

/// The body upstream writes (a dedented, tab-indented template with the
/// surrounding newlines trimmed), byte for byte.
pub fn body(service: &ServiceName, local_endpoints: usize, proxy_healthy: bool) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {local_endpoints},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
        quote(&service.namespace),
        quote(&service.name),
    )
}

/// Upstream's answer: 200 only with a local endpoint and a healthy proxy.
pub fn respond(service: &ServiceName, local_endpoints: usize, proxy_healthy: bool) -> Response {
    let status = if local_endpoints != 0 && proxy_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (
                HeaderName::from_static(WEIGHT_HEADER),
                local_endpoints.to_string(),
            ),
        ],
        body(service, local_endpoints, proxy_healthy),
    )
        .into_response()
}

/// Whether the proxy is healthy, as /livez says (`Telemetry::health`).
pub type ProxyHealthy = Arc<dyn Fn() -> bool + Send + Sync>;

/// The addresses a family's servers listen on, given the node's addresses
/// (for `--nodeport-addresses primary`).
pub type ListenAddresses = Arc<dyn Fn(IpFamily, &[IpAddr]) -> Vec<IpAddr> + Send + Sync>;

/// Upstream's choice (newServiceHealthServer): the family's unspecified
/// address unless the NodePort addresses name CIDRs of this family, then
/// every local address inside them (loopback too, if a CIDR holds it);
/// when the local addresses cannot be listed, the unspecified address
/// again. A family with no CIDR of its own matches everything, as
/// upstream's per-family NodePortAddresses do.
pub fn listen_addresses(
    family: IpFamily,
    in_effect: &NodePortAddresses,
    local: impl FnOnce() -> Result<Vec<IpAddr>, String>,
) -> Vec<IpAddr> {
    let any = match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let cidrs: Vec<&IpNet> = match in_effect {
        NodePortAddresses::All => vec![],
        NodePortAddresses::Cidrs(v) => v
            .iter()
            .filter(|c| IpFamily::of(&c.addr()) == family)
            .collect(),
    };
    if cidrs.is_empty() || cidrs.iter().any(|c| c.prefix_len() == 0) {
        return vec![any];
    }
    match local() {
        Ok(addrs) => {
            let mut v: Vec<IpAddr> = addrs
                .into_iter()
                .filter(|a| cidrs.iter().any(|c| c.contains(a)))
                .collect();
            v.sort();
            v.dedup();
            v
        }
        Err(e) => {
            tracing::error!(
                "failed to list the node's addresses matching the NodePort addresses ({e}); health check ports listen on all of them"
            );
            vec![any]
        }
    }
}

/// A server that could not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindFailure {
    pub service: ServiceName,
    pub family: IpFamily,
    pub port: u16,
    /// As Go words it: `listen tcp4 0.0.0.0:32000: bind: address already in use`.
    pub error: String,
}

impl BindFailure {
    /// The note of upstream's FailedToStartServiceHealthcheck event.
    pub fn message(&self, node: &str) -> String {
        format!(
            "node {node} failed to start healthcheck {:?} on port {}: {}",
            self.service.to_string(),
            self.port,
            self.error
        )
    }
}

/// What the servers serve after a sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub checks: Vec<HealthCheck>,
    /// The Node object's addresses, for `--nodeport-addresses primary`.
    pub node_addresses: Vec<IpAddr>,
}

/// What a running server's handler reads; counts change in place.
struct Shared {
    service: ServiceName,
    local_endpoints: AtomicUsize,
    proxy_healthy: ProxyHealthy,
}

struct Instance {
    port: u16,
    shared: Arc<Shared>,
    listeners: Vec<Closer>,
}

/// Stops one listener and learns when its socket is closed.
struct Closer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    closed: oneshot::Receiver<()>,
}

impl Instance {
    /// Close every listener, returning once each socket is closed, so that
    /// the port can be taken again at once (by a Service it moved to).
    async fn close(self) {
        for c in self.listeners {
            let _ = c.stop.send(());
            let _ = c.closed.await;
            tracing::debug!(service = %self.shared.service, addr = %c.addr, "health check listener closed");
        }
    }
}

/// The running servers, by family and Service.
pub struct Servers {
    families: Vec<IpFamily>,
    listen: ListenAddresses,
    proxy_healthy: ProxyHealthy,
    running: BTreeMap<(IpFamily, ServiceName), Instance>,
}

impl Servers {
    /// Servers for the families the node programs, on the addresses
    /// `listen` picks; `proxy_healthy` decides `serviceProxyHealthy`.
    pub fn new(
        families: Vec<IpFamily>,
        listen: ListenAddresses,
        proxy_healthy: ProxyHealthy,
    ) -> Self {
        Self {
            families,
            listen,
            proxy_healthy,
            running: BTreeMap::new(),
        }
    }

    /// The running servers: (family, Service, port, local endpoints).
    pub fn running(&self) -> Vec<(IpFamily, ServiceName, u16, usize)> {
        self.running
            .iter()
            .map(|((f, s), i)| {
                (
                    *f,
                    s.clone(),
                    i.port,
                    i.shared.local_endpoints.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// The addresses each server listens on (with the actual port).
    pub fn bound(&self, family: IpFamily, service: &ServiceName) -> Vec<SocketAddr> {
        self.running
            .get(&(family, service.clone()))
            .map(|i| i.listeners.iter().map(|c| c.addr).collect())
            .unwrap_or_default()
    }

    /// Bring the servers to `wanted`; returns the ones that could not start
    /// (each also logged). Closing comes first, so that a port that moves
    /// from one Service to another in the same sync is free to take.
    pub async fn reconcile(&mut self, wanted: &Wanted) -> Vec<BindFailure> {
        let want: BTreeMap<(IpFamily, ServiceName), &HealthCheck> = wanted
            .checks
            .iter()
            .filter(|h| self.families.contains(&h.family))
            .map(|h| ((h.family, h.service.clone()), h))
            .collect();
        let gone: Vec<_> = self
            .running
            .iter()
            .filter(|(k, i)| want.get(k).is_none_or(|h| h.port != i.port))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(inst) = self.running.remove(&key) {
                tracing::info!(service = %key.1, port = inst.port, "closing the health check server");
                inst.close().await;
            }
        }
        let mut failures = Vec::new();
        for (key, h) in want {
            if let Some(inst) = self.running.get(&key) {
                inst.shared
                    .local_endpoints
                    .store(h.local_endpoints, Ordering::Relaxed);
                continue;
            }
            match self.open(h, &wanted.node_addresses).await {
                Ok(inst) => {
                    tracing::info!(service = %h.service, port = h.port, family = %h.family, "health check server started");
                    self.running.insert(key, inst);
                }
                Err(error) => {
                    tracing::error!(
                        service = %h.service,
                        port = h.port,
                        "failed to start the health check server of {} on port {}: {error}",
                        h.service,
                        h.port
                    );
                    failures.push(BindFailure {
                        service: h.service.clone(),
                        family: h.family,
                        port: h.port,
                        error,
                    });
                }
            }
        }
        failures
    }

    /// Listen on every address of the family, or on none: a listener that
    /// fails closes the ones opened before it, as upstream's does.
    async fn open(&self, h: &HealthCheck, node_addresses: &[IpAddr]) -> Result<Instance, String> {
        let listen = Arc::clone(&self.listen);
        let (family, nodes) = (h.family, node_addresses.to_vec());
        // Listing local addresses may ask the kernel: off the async threads.
        let addrs = tokio::task::spawn_blocking(move || listen(family, &nodes))
            .await
            .map_err(|e| format!("choosing the addresses to listen on: {e}"))?;
        let shared = Arc::new(Shared {
            service: h.service.clone(),
            local_endpoints: AtomicUsize::new(h.local_endpoints),
            proxy_healthy: Arc::clone(&self.proxy_healthy),
        });
        let mut inst = Instance {
            port: h.port,
            shared,
            listeners: Vec::new(),
        };
        for ip in addrs {
            match bind(SocketAddr::new(ip, h.port)).and_then(|l| serve(l, &inst.shared)) {
                Ok(c) => inst.listeners.push(c),
                Err(e) => {
                    inst.close().await;
                    return Err(e);
                }
            }
        }
        Ok(inst)
    }
}

/// A listening socket as Go's net.Listen makes one: SO_REUSEADDR, and an
/// IPv6 socket for IPv6 only, so that the two families' servers of one
/// Service share the port. Errors read as Go's.
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let net = if addr.is_ipv4() { "tcp4" } else { "tcp6" };
    let fail =
        |step: &str, e: std::io::Error| format!("listen {net} {addr}: {step}: {}", errno_text(&e));
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| fail("socket", e))?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(|e| fail("setsockopt", e))?;
    }
    s.set_reuse_address(true)
        .map_err(|e| fail("setsockopt", e))?;
    s.set_nonblocking(true).map_err(|e| fail("setsockopt", e))?;
    s.bind(&addr.into()).map_err(|e| fail("bind", e))?;
    s.listen(1024).map_err(|e| fail("listen", e))?;
    Ok(s.into())
}

/// An OS error as Go prints it: `address already in use`, not Rust's
/// `Address already in use (os error 98)`.
fn errno_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The listening socket axum accepts on. Its fields drop in order: the
/// socket first, then the notice that it is closed.
struct Port {
    inner: TcpListener,
    _closed: ClosedNotice,
}

struct ClosedNotice(Option<oneshot::Sender<()>>);

impl Drop for ClosedNotice {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl axum::serve::Listener for Port {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        axum::serve::Listener::accept(&mut self.inner).await
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Serve one listener in the background until told to stop. Every path
/// and method gets the answer, as upstream's handler gives it.
fn serve(listener: std::net::TcpListener, shared: &Arc<Shared>) -> Result<Closer, String> {
    let inner = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
    let addr = inner.local_addr().map_err(|e| e.to_string())?;
    let (stop, stop_rx) = oneshot::channel();
    let (closed_tx, closed) = oneshot::channel();
    let port = Port {
        inner,
        _closed: ClosedNotice(Some(closed_tx)),
    };
    let app = Router::new()
        .fallback(handle)
        .with_state(Arc::clone(shared));
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stop_rx.await;
        };
        if let Err(e) = axum::serve(port, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%addr, "health check server failed: {e}");
        }
    });
    Ok(Closer { addr, stop, closed })
}

async fn handle(State(s): State<Arc<Shared>>) -> Response {
    respond(
        &s.service,
        s.local_endpoints.load(Ordering::Relaxed),
        (s.proxy_healthy)(),
    )
}

/// The sync loop's side: each report's wanted set goes to the task that
/// owns the servers; the latest set wins when several queue up.
pub struct HealthCheckServers {
    tx: watch::Sender<Wanted>,
    node_addresses: Mutex<Vec<IpAddr>>,
}

impl HealthCheckServers {
    /// Run `servers` in a task of their own; `failed` hears of each server
    /// that could not start (metric, event), after every reconcile.
    pub fn spawn(mut servers: Servers, failed: impl Fn(&BindFailure) + Send + 'static) -> Self {
        let (tx, mut rx) = watch::channel(Wanted::default());
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let wanted = rx.borrow_and_update().clone();
                for f in servers.reconcile(&wanted).await {
                    failed(&f);
                }
            }
            servers.reconcile(&Wanted::default()).await;
        });
        Self {
            tx,
            node_addresses: Mutex::new(Vec::new()),
        }
    }
}

impl SyncObserver for HealthCheckServers {
    fn synced(&self, report: &SyncReport) {
        let node_addresses = self
            .node_addresses
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        self.tx.send_replace(Wanted {
            checks: report.health_checks.clone(),
            node_addresses,
        });
    }

    fn node(&self, node: Option<&Node>) {
        if let Ok(mut a) = self.node_addresses.lock() {
            *a = node.map(|n| n.addresses.clone()).unwrap_or_default();
        }
    }
}

#[cfg(test)]
#[path = "healthcheck_tests.rs"]
mod tests;
