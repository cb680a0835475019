//! The API-server source: kube-runtime watchers for Services, EndpointSlices
//! and this node's Node, turned into `SourceEvent`s.
//!
//! The watcher owns the list/watch protocol (resourceVersion bookkeeping,
//! resuming a dropped watch from the last version seen, relisting after
//! `410 Gone`). This module adds the three things the sync loop relies on:
//!
//! - a relist is delivered as one `Replace` of the complete set, only after
//!   the list finished, so an outage in the middle of a list can never look
//!   like "everything was deleted";
//! - `Synced` once every kind has been listed once;
//! - `Connected(false)` when the API server cannot be reached and
//!   `Connected(true)` as soon as it answers again, with nothing else sent
//!   in between: the programmed rules stay as they are.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::Resource;
use kube::client::Body;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff, Event};
use serde::de::DeserializeOwned;

use super::EventSender;
use crate::cluster::{Kind, Object, SourceEvent};
use crate::config::Config;

/// Objects that ask for another proxy (`service.kubernetes.io/service-proxy-name`)
/// or belong to a headless Service are not ours: filter them server-side,
/// exactly as kube-proxy does, so both can share a cluster.
pub(crate) const SERVICE_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// Headless Services (no cluster IP) are DNS-only: upstream leaves them
/// out with this field selector.
pub(crate) const SERVICE_FIELD_SELECTOR: &str = "spec.clusterIP!=None";

/// EndpointSlices additionally must name their Service.
pub(crate) const ENDPOINT_SLICE_SELECTOR: &str = "kubernetes.io/service-name,!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// Build the API client the way kube-proxy does: `--kubeconfig` (with
/// `--master` overriding its server address), or `--master` alone (no
/// credentials: a local insecure port or `kubectl proxy`), or else the
/// in-cluster service account (`KUBERNETES_SERVICE_HOST`/`_PORT`, the
/// mounted token and CA; the token file is re-read as it rotates). Like
/// upstream, there is no fallback to `$KUBECONFIG` or `~/.kube/config`.
pub async fn client(cfg: &Config) -> anyhow::Result<kube::Client> {
    use anyhow::Context as _;
    let master = cfg
        .master
        .as_deref()
        .map(|m| {
            m.parse::<http::Uri>()
                .with_context(|| format!("--master {m:?} is not a URL"))
        })
        .transpose()?;
    let mut config = match (&cfg.kubeconfig, &master) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        (None, Some(url)) => kube::Config::new(url.clone()),
        (None, None) => kube::Config::incluster().map_err(|e| {
            anyhow::anyhow!(
                "neither --kubeconfig nor --master was given (nor clientConnection.kubeconfig), \
                 and the in-cluster configuration is not usable: {e}"
            )
        })?,
    };
    if let Some(url) = master {
        config.cluster_url = url;
    }
    let api = &cfg.kube_api;
    if api.content_type.contains("protobuf") {
        tracing::debug!(
            content_type = %api.content_type,
            "kproxy reads and writes the API in JSON; protobuf is not implemented"
        );
    }
    let client = kube::Client::try_from(config).context("building the API client")?;
    Ok(super::ratelimit::RateLimited::wrap(
        client, api.qps, api.burst,
    ))
}

/// Tuning of the source; the defaults are what production uses.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Fixed delay before retrying after an error. None: kube-runtime's
    /// default backoff (client-go's: 0.8 s doubling to 30 s, with jitter).
    pub retry_delay: Option<Duration>,
}

/// Watch Services, EndpointSlices and the Node named `node_name` until the
/// receiving end of `tx` goes away.
pub async fn run(
    client: kube::Client,
    node_name: impl Into<String>,
    tx: EventSender,
) -> anyhow::Result<()> {
    run_with(client, node_name, tx, Options::default()).await
}

/// `run` with explicit options.
pub async fn run_with(
    client: kube::Client,
    node_name: impl Into<String>,
    tx: EventSender,
    options: Options,
) -> anyhow::Result<()> {
    let node_name = node_name.into();
    let link = Arc::new(Link::new(tx));
    // Every request goes through `Observed`, so any answer from the API
    // server (a re-established watch included, which produces no event)
    // tells us the connection is back.
    let client = kube::Client::new(
        Observed {
            inner: client.clone(),
            link: link.clone(),
        },
        client.default_namespace().to_string(),
    );
    let services = watch_kind(
        Kind::Service,
        Api::<Service>::all(client.clone()),
        list_config()
            .labels(SERVICE_SELECTOR)
            .fields(SERVICE_FIELD_SELECTOR),
        |s| Object::Service(Box::new(s)),
        link.clone(),
        &options,
    );
    let slices = watch_kind(
        Kind::EndpointSlice,
        Api::<EndpointSlice>::all(client.clone()),
        list_config().labels(ENDPOINT_SLICE_SELECTOR),
        |s| Object::EndpointSlice(Box::new(s)),
        link.clone(),
        &options,
    );
    let node = watch_kind(
        Kind::Node,
        Api::<Node>::all(client),
        list_config().fields(&format!("metadata.name={node_name}")),
        |n| Object::Node(Box::new(n)),
        link.clone(),
        &options,
    );
    // Each returns only when the sync loop has gone away; then stop all.
    futures::future::select_all([services.boxed(), slices.boxed(), node.boxed()]).await;
    Ok(())
}

/// Lists are served from the API server's watch cache (resourceVersion=0),
/// as client-go's informers do: with one kproxy per node, a restart wave
/// must not turn into thousands of quorum reads from etcd. The watch that
/// follows brings the state up to date. The cache serves a list whole, so
/// no page size (kube-rs would otherwise drop resourceVersion=0 to page).
fn list_config() -> watcher::Config {
    let mut c = watcher::Config::default().any_semantic();
    c.page_size = None;
    c
}

/// The kinds that must have been listed once before `Synced`.
const KINDS: [Kind; 3] = [Kind::Service, Kind::EndpointSlice, Kind::Node];

/// Shared by the three watchers: the channel, which kinds have been listed,
/// and the connection state last reported.
struct Link {
    tx: EventSender,
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    listed: Vec<Kind>,
    synced_sent: bool,
    /// What was last reported; None until the first problem, so a healthy
    /// start does not produce a pointless `Connected(true)`.
    connected: Option<bool>,
}

impl Link {
    fn new(tx: EventSender) -> Self {
        Self {
            tx,
            state: Mutex::default(),
        }
    }

    /// False when the sync loop is gone.
    fn send(&self, ev: SourceEvent) -> bool {
        self.tx.send(ev).is_ok()
    }

    fn reachable(&self, up: bool) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match st.connected {
            None => !up,
            Some(prev) => prev != up,
        };
        if changed {
            st.connected = Some(up);
            // Sent under the lock so two watchers cannot reorder true/false.
            let _ = self.tx.send(SourceEvent::Connected(up));
        }
    }

    fn listed(&self, kind: Kind) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !st.listed.contains(&kind) {
            st.listed.push(kind);
        }
        if !st.synced_sent && KINDS.iter().all(|k| st.listed.contains(k)) {
            st.synced_sent = true;
            let _ = self.tx.send(SourceEvent::Synced);
        }
    }
}

/// A fixed retry delay (tests and `Options::retry_delay`).
#[derive(Clone)]
struct FixedDelay(Duration);

impl Iterator for FixedDelay {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(self.0)
    }
}

impl Backoff for FixedDelay {
    fn reset(&mut self) {}
}

fn backoff(options: &Options) -> Box<dyn Backoff> {
    match options.retry_delay {
        Some(d) => Box::new(FixedDelay(d)),
        None => Box::new(DefaultBackoff::default()),
    }
}

/// Run one watcher until the sync loop goes away.
async fn watch_kind<K>(
    kind: Kind,
    api: Api<K>,
    config: watcher::Config,
    wrap: fn(K) -> Object,
    link: Arc<Link>,
    options: &Options,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let stream = watcher::watcher(api, config);
    let mut backoff = backoff(options);
    let mut translator = Translator::new(kind, wrap);
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        // The backoff is ours rather than kube-runtime's StreamBackoff, so
        // that a 410 is not waited out: after an outage the first answer is
        // often "too old" (a restarted API server's watch cache starts at
        // the current revision), and a relist then should not sit out the
        // 30 s the outage's errors built up.
        let pause = match &item {
            Ok(_) => {
                backoff.reset();
                None
            }
            Err(e) if is_gone(e) => None,
            Err(_) => backoff.next(),
        };
        for ev in translator.step(item, &link) {
            if !link.send(ev) {
                return;
            }
        }
        if link.tx.is_closed() {
            return;
        }
        if let Some(d) = pause {
            tokio::time::sleep(d).await;
        }
    }
}

/// Watcher events of one kind → source events. Pure apart from `link`'s
/// bookkeeping, so the mapping is easy to follow and test.
struct Translator<K> {
    kind: Kind,
    wrap: fn(K) -> Object,
    /// Objects of the relist in progress; None outside a relist.
    relist: Option<Vec<Object>>,
}

impl<K: Resource> Translator<K> {
    fn new(kind: Kind, wrap: fn(K) -> Object) -> Self {
        Self {
            kind,
            wrap,
            relist: None,
        }
    }

    fn step(&mut self, item: watcher::Result<Event<K>>, link: &Link) -> Vec<SourceEvent> {
        match item {
            // A (re)list begins. Nothing is sent yet: whatever was buffered
            // by an interrupted list is dropped, the old state stays.
            Ok(Event::Init) => {
                self.relist = Some(Vec::new());
                Vec::new()
            }
            Ok(Event::InitApply(obj)) => {
                link.reachable(true);
                self.relist.get_or_insert_default().push((self.wrap)(obj));
                Vec::new()
            }
            Ok(Event::InitDone) => {
                link.reachable(true);
                let objects = self.relist.take().unwrap_or_default();
                tracing::debug!(kind = %self.kind, count = objects.len(), "listed");
                let ev = SourceEvent::Replace(self.kind, objects);
                // Replace first, so `Synced` follows the complete set.
                if !link.send(ev) {
                    return Vec::new();
                }
                link.listed(self.kind);
                Vec::new()
            }
            Ok(Event::Apply(obj)) => {
                link.reachable(true);
                vec![SourceEvent::Apply((self.wrap)(obj))]
            }
            Ok(Event::Delete(obj)) => {
                link.reachable(true);
                vec![SourceEvent::Delete((self.wrap)(obj).object_ref())]
            }
            Err(e) => {
                if is_gone(&e) {
                    // The server compacted past our resourceVersion: the
                    // watcher relists, which is routine, not an outage.
                    tracing::info!(kind = %self.kind, "watch expired (410 Gone), relisting");
                } else if let Some(code) = denied(&e) {
                    // The API server answers, but not to us: credentials or
                    // RBAC. Retrying is right (a ClusterRole may be applied
                    // late), but this is not an outage, and it needs a human.
                    tracing::error!(
                        kind = %self.kind,
                        "the API server refuses kproxy ({code}): {e}; check the credentials \
                         and a ClusterRole like deploy/clusterrole.yaml; retrying"
                    );
                } else {
                    tracing::warn!(kind = %self.kind, "watch failed, retrying: {e}");
                    link.reachable(false);
                }
                Vec::new()
            }
        }
    }
}

/// 401 or 403: the API server is there and says no.
fn denied(e: &watcher::Error) -> Option<u16> {
    let code = match e {
        watcher::Error::WatchError(status) => status.code,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code,
        _ => return None,
    };
    matches!(code, 401 | 403).then_some(code)
}

fn is_gone(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// A tower service in front of the real client that reports whether the
/// API server answers: a successful response means reachable, a transport
/// error or a 5xx (a proxy or load balancer without a live backend) means
/// not. 4xx answers say nothing about reachability and are left to the
/// watcher's error path.
#[derive(Clone)]
struct Observed {
    inner: kube::Client,
    link: Arc<Link>,
}

impl tower::Service<http::Request<Body>> for Observed {
    type Response = http::Response<Body>;
    type Error = kube::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The inner client queues requests itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let link = self.link.clone();
        Box::pin(async move {
            let res = inner.send(req).await;
            match &res {
                Ok(r) if r.status().is_success() => link.reachable(true),
                Ok(r) if r.status().is_server_error() => link.reachable(false),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("API request failed: {e}");
                    link.reachable(false);
                }
            }
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::core::Status;
    use tokio::sync::mpsc;

    fn svc(ns: &str, name: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                resource_version: Some("1".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(ev: &SourceEvent) -> String {
        match ev {
            SourceEvent::Apply(o) => format!("apply {}", o.object_ref()),
            SourceEvent::Delete(r) => format!("delete {r}"),
            SourceEvent::Replace(k, objs) => format!(
                "replace {k} [{}]",
                objs.iter()
                    .map(|o| o.object_ref().name)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            SourceEvent::Synced => "synced".into(),
            SourceEvent::Connected(c) => format!("connected {c}"),
        }
    }

    /// Feed watcher events through a translator; return everything sent.
    async fn translate(items: Vec<watcher::Result<Event<Service>>>) -> Vec<String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let link = Link::new(tx);
        let mut t = Translator::new(Kind::Service, |s| Object::Service(Box::new(s)));
        for item in items {
            for ev in t.step(item, &link) {
                link.send(ev);
            }
        }
        drop(link);
        let mut out = Vec::new();
        while let Some(ev) = rx.recv().await {
            out.push(names(&ev));
        }
        out
    }

    fn status(code: u16) -> Box<Status> {
        Box::new(Status::failure("x", "Expired").with_code(code))
    }

    #[tokio::test]
    async fn a_list_is_one_replace_and_watch_events_pass_through() {
        let out = translate(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(svc("a", "one"))),
            Ok(Event::InitApply(svc("a", "two"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(svc("a", "three"))),
            Ok(Event::Delete(svc("a", "one"))),
        ])
        .await;
        assert_eq!(
            out,
            [
                "replace Service [one,two]",
                "apply Service a/three",
                "delete Service a/one"
            ]
        );
    }

    #[tokio::test]
    async fn an_interrupted_list_sends_nothing_but_the_outage() {
        let out = translate(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(svc("a", "one"))),
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status(
                500,
            )))),
            Ok(Event::Init),
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status(
                500,
            )))),
        ])
        .await;
        // The half list from before the error is not delivered, and no
        // Replace goes out: the sync loop keeps what it has.
        assert_eq!(out, ["connected false"]);
    }

    #[tokio::test]
    async fn forbidden_is_not_an_outage() {
        let out = translate(vec![
            Ok(Event::Init),
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status(
                403,
            )))),
        ])
        .await;
        // The API server answered: nothing to report as a lost connection,
        // and no state either.
        assert!(out.is_empty(), "{out:?}");
    }

    #[tokio::test]
    async fn gone_is_a_relist_not_an_outage() {
        let out = translate(vec![
            Ok(Event::Init),
            Ok(Event::InitDone),
            Err(watcher::Error::WatchError(status(410))),
            Ok(Event::Init),
            Ok(Event::InitApply(svc("a", "two"))),
            Ok(Event::InitDone),
        ])
        .await;
        assert_eq!(out, ["replace Service []", "replace Service [two]"]);
    }

    #[tokio::test]
    async fn synced_waits_for_every_kind() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let link = Link::new(tx);
        link.listed(Kind::Service);
        link.listed(Kind::Service);
        link.listed(Kind::EndpointSlice);
        assert!(rx.try_recv().is_err());
        link.listed(Kind::Node);
        assert!(matches!(rx.try_recv(), Ok(SourceEvent::Synced)));
        link.listed(Kind::Node);
        assert!(rx.try_recv().is_err(), "Synced is sent once");
    }
}
