//! The API-server source against an in-test API server that speaks the
//! list/watch protocol: JSON lists carrying metadata.resourceVersion,
//! chunked watch streams of ADDED/MODIFIED/DELETED/BOOKMARK events, resuming
//! from a resourceVersion, `410 Gone` once the history is compacted, and
//! connections that drop. A TCP relay in front of it simulates outages.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kproxy::cluster::SourceEvent;
use kproxy::source::kube::{self as source, Options};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

// ---------------------------------------------------------------- the fake

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Res {
    Services,
    Slices,
    Nodes,
}

impl Res {
    fn from_path(p: &str) -> Option<Res> {
        match p {
            "/api/v1/services" => Some(Res::Services),
            "/apis/discovery.k8s.io/v1/endpointslices" => Some(Res::Slices),
            "/api/v1/nodes" => Some(Res::Nodes),
            _ => None,
        }
    }

    fn list_kind(self) -> (&'static str, &'static str) {
        match self {
            Res::Services => ("v1", "ServiceList"),
            Res::Slices => ("discovery.k8s.io/v1", "EndpointSliceList"),
            Res::Nodes => ("v1", "NodeList"),
        }
    }

    fn of(obj: &Value) -> Res {
        match obj["kind"].as_str() {
            Some("Service") => Res::Services,
            Some("EndpointSlice") => Res::Slices,
            _ => Res::Nodes,
        }
    }
}

fn key(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or(""),
        obj["metadata"]["name"].as_str().unwrap()
    )
}

/// What a watch client is sent: a line, or an abrupt end of the connection.
type Line = Result<Bytes, std::io::Error>;

struct Watch {
    res: Res,
    selector: Selector,
    tx: mpsc::UnboundedSender<Line>,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<(Res, String), Value>,
    /// Every change: (resourceVersion, type, object).
    log: Vec<(u64, &'static str, Value)>,
    /// Watches from a resourceVersion older than this get 410 Gone.
    compacted_to: u64,
    watches: Vec<Watch>,
    /// "list services rv=" / "watch services rv=5 labelSelector=..."
    requests: Vec<String>,
}

impl Store {
    fn write(&mut self, kind: &'static str, mut obj: Value) {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let res = Res::of(&obj);
        let k = (res, key(&obj));
        if kind == "DELETED" {
            self.objects.remove(&k);
        } else {
            self.objects.insert(k, obj.clone());
        }
        let line = event_line(kind, &obj);
        self.watches.retain(|w| {
            if w.res != res {
                return true;
            }
            // A selector-filtered watch sees nothing of objects it does not match.
            if !w.selector.matches(&obj) {
                return true;
            }
            w.tx.send(Ok(line.clone())).is_ok()
        });
        self.log.push((self.rv, kind, obj));
    }

    fn upsert(&mut self, obj: Value) {
        let exists = self.objects.contains_key(&(Res::of(&obj), key(&obj)));
        self.write(if exists { "MODIFIED" } else { "ADDED" }, obj);
    }

    fn delete(&mut self, res: Res, key: &str) {
        let obj = self.objects.get(&(res, key.to_string())).cloned().unwrap();
        self.write("DELETED", obj);
    }

    /// Forget history: watches resuming from before now get 410 Gone.
    fn compact(&mut self) {
        self.compacted_to = self.rv;
        self.log.clear();
    }

    /// Cut every watch connection mid-stream (no final chunk).
    fn drop_watches(&mut self) {
        for w in self.watches.drain(..) {
            let _ = w.tx.send(Err(std::io::Error::other("connection dropped")));
        }
    }
}

fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// The label and field selectors the source uses: `k`, `!k`, `k=v`.
#[derive(Clone, Default)]
struct Selector {
    labels: Vec<String>,
    /// (path, negated, value): `k=v` or `k!=v`.
    fields: Vec<(String, bool, String)>,
}

impl Selector {
    fn parse(q: &HashMap<String, String>) -> Self {
        let split = |s: Option<&String>| -> Vec<String> {
            s.map(|s| {
                s.split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
        };
        Selector {
            labels: split(q.get("labelSelector")),
            fields: split(q.get("fieldSelector"))
                .into_iter()
                .map(|t| match t.split_once("!=") {
                    Some((k, v)) => (k.to_string(), true, v.to_string()),
                    None => {
                        let (k, v) = t.split_once('=').unwrap();
                        (k.to_string(), false, v.to_string())
                    }
                })
                .collect(),
        }
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let labels_ok = self.labels.iter().all(|t| {
            if let Some(k) = t.strip_prefix('!') {
                labels.get(k).is_none()
            } else if let Some((k, v)) = t.split_once('=') {
                labels.get(k).and_then(Value::as_str) == Some(v)
            } else {
                labels.get(t).is_some()
            }
        });
        let fields_ok = self.fields.iter().all(|(k, negated, v)| {
            let actual = match k.as_str() {
                "metadata.name" => obj["metadata"]["name"].as_str(),
                "spec.clusterIP" => obj["spec"]["clusterIP"].as_str(),
                other => panic!("fake API: field selector {other} not supported"),
            };
            (actual == Some(v.as_str())) != *negated
        });
        labels_ok && fields_ok
    }
}

type Shared = Arc<Mutex<Store>>;

async fn handle(
    State(store): State<Shared>,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(res) = Res::from_path(uri.path()) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let selector = Selector::parse(&q);
    let mut st = store.lock().unwrap();
    let sel_text = format!(
        "labelSelector={} fieldSelector={}",
        q.get("labelSelector").map(String::as_str).unwrap_or(""),
        q.get("fieldSelector").map(String::as_str).unwrap_or("")
    );
    if q.get("watch").map(String::as_str) != Some("true") {
        let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
        st.requests.push(format!("list {res:?} rv={rv} {sel_text}"));
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((r, _), o)| *r == res && selector.matches(o))
            .map(|(_, o)| o.clone())
            .collect();
        let (api_version, kind) = res.list_kind();
        let body = json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        });
        return ([("content-type", "application/json")], body.to_string()).into_response();
    }

    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    st.requests
        .push(format!("watch {res:?} rv={from} {sel_text}"));
    let (tx, rx) = mpsc::unbounded_channel::<Line>();
    if from < st.compacted_to {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "Expired", "code": 410,
            "message": format!("too old resource version: {from} ({})", st.compacted_to),
        });
        let _ = tx.send(Ok(event_line("ERROR", &status)));
        drop(tx);
    } else {
        // Replay what happened after `from`, then a bookmark at the current
        // version, then live events, all under the lock so nothing slips
        // between replay and registration.
        for (rv, kind, obj) in &st.log {
            if *rv > from && Res::of(obj) == res && selector.matches(obj) {
                let _ = tx.send(Ok(event_line(kind, obj)));
            }
        }
        if q.get("allowWatchBookmarks").map(String::as_str) == Some("true") {
            let (api_version, kind) = res.list_kind();
            let bookmark = json!({
                "apiVersion": api_version,
                "kind": kind.trim_end_matches("List"),
                "metadata": {"resourceVersion": st.rv.to_string()},
            });
            let _ = tx.send(Ok(event_line("BOOKMARK", &bookmark)));
        }
        st.watches.push(Watch { res, selector, tx });
    }
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (line, rx))
    });
    (
        [("content-type", "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}

/// A TCP relay in front of the fake API. `down` refuses new connections
/// (accepts and closes them at once, counting them) and cuts current ones.
struct Relay {
    addr: SocketAddr,
    down: AtomicBool,
    refused: AtomicUsize,
    conns: Mutex<Vec<AbortHandle>>,
}

impl Relay {
    async fn start(backend: SocketAddr, down: bool) -> Arc<Relay> {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Arc::new(Relay {
            addr: l.local_addr().unwrap(),
            down: AtomicBool::new(down),
            refused: AtomicUsize::new(0),
            conns: Mutex::new(Vec::new()),
        });
        let r = relay.clone();
        tokio::spawn(async move {
            loop {
                let (mut client, _) = l.accept().await.unwrap();
                if r.down.load(Ordering::SeqCst) {
                    r.refused.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    let mut server = TcpStream::connect(backend).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                r.conns.lock().unwrap().push(task.abort_handle());
            }
        });
        relay
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }
}

struct FakeApi {
    store: Shared,
    relay: Arc<Relay>,
}

impl FakeApi {
    async fn start(objects: Vec<Value>, down: bool) -> FakeApi {
        let store: Shared = Arc::default();
        for o in objects {
            store.lock().unwrap().upsert(o);
        }
        let app = Router::new().fallback(handle).with_state(store.clone());
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        let relay = Relay::start(backend, down).await;
        FakeApi { store, relay }
    }

    /// Network outage on/off: cuts every connection, refuses new ones.
    fn outage(&self, down: bool) {
        self.relay.set_down(down);
        if down {
            // The server would only notice the dead watches on its next
            // write; forget them now so `watching` counts live ones.
            self.with(|s| s.watches.clear());
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.store.lock().unwrap())
    }

    fn client(&self) -> kube::Client {
        let url: http::Uri = format!("http://{}", self.relay.addr).parse().unwrap();
        kube::Client::try_from(kube::Config::new(url)).unwrap()
    }

    /// Run the source against this server; events arrive on the receiver.
    fn run_source(&self) -> mpsc::UnboundedReceiver<SourceEvent> {
        self.run_source_retrying_after(Duration::from_millis(10))
    }

    fn run_source_retrying_after(&self, delay: Duration) -> mpsc::UnboundedReceiver<SourceEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self.client();
        tokio::spawn(async move {
            let opts = Options {
                retry_delay: Some(delay),
            };
            source::run_with(client, "node-1", tx, opts).await.unwrap();
        });
        rx
    }
}

// ---------------------------------------------------------------- objects

fn service(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": name, "labels": labels},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}]},
    })
}

fn slice(name: &str, service: Option<&str>, ip: &str) -> Value {
    let labels = match service {
        Some(s) => json!({"kubernetes.io/service-name": s}),
        None => json!({}),
    };
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": "default", "name": name, "labels": labels},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    })
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {}}})
}

fn base_objects() -> Vec<Value> {
    vec![
        service("web", json!({})),
        // Another proxy's Service: filtered out by the label selector.
        service(
            "other-proxy",
            json!({"service.kubernetes.io/service-proxy-name": "foo"}),
        ),
        slice("web-abc", Some("web"), "10.244.1.5"),
        // A slice not tied to a Service: filtered out.
        slice("orphan", None, "10.244.1.6"),
        node("node-1"),
        node("node-2"),
    ]
}

// ---------------------------------------------------------------- helpers

fn describe(ev: &SourceEvent) -> String {
    match ev {
        SourceEvent::Apply(o) => format!("apply {}", o.object_ref()),
        SourceEvent::Delete(r) => format!("delete {r}"),
        SourceEvent::Replace(k, objs) => {
            let mut names: Vec<_> = objs.iter().map(|o| o.object_ref().name).collect();
            names.sort();
            format!("replace {k} [{}]", names.join(","))
        }
        SourceEvent::Synced => "synced".into(),
        SourceEvent::Connected(c) => format!("connected {c}"),
    }
}

/// The next event. The timeout only keeps a broken source from hanging the
/// suite; nothing is asserted about how fast events come.
async fn next(rx: &mut mpsc::UnboundedReceiver<SourceEvent>) -> String {
    let ev = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("no event from the source")
        .expect("source stopped");
    describe(&ev)
}

/// Events up to and including the first one equal to `until`.
async fn until(rx: &mut mpsc::UnboundedReceiver<SourceEvent>, until: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let ev = next(rx).await;
        let done = ev == until;
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

/// Events up to and including the first one that starts with `prefix`.
async fn until_prefix(rx: &mut mpsc::UnboundedReceiver<SourceEvent>, prefix: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let ev = next(rx).await;
        let done = ev.starts_with(prefix);
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

/// Wait for a condition on the fake's state that the source makes true.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let wait = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("never happened: {what}"));
}

fn watching(api: &FakeApi, n: usize) -> impl FnMut() -> bool + '_ {
    move || api.with(|s| s.watches.len() == n)
}

async fn synced(rx: &mut mpsc::UnboundedReceiver<SourceEvent>) -> Vec<String> {
    let mut seen = until(rx, "synced").await;
    seen.sort();
    seen
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn lists_then_streams_service_and_slice_changes() {
    let api = FakeApi::start(base_objects(), false).await;
    let mut rx = api.run_source();
    assert_eq!(
        synced(&mut rx).await,
        [
            "replace EndpointSlice [web-abc]",
            "replace Node [node-1]",
            "replace Service [web]",
            "synced",
        ]
    );
    // The selectors are kube-proxy's.
    let requests = api.with(|s| s.requests.clone());
    assert!(requests.contains(&"list Services rv=0 labelSelector=!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless fieldSelector=spec.clusterIP!=None".to_string()), "{requests:#?}");
    assert!(
        requests.contains(
            &"list Nodes rv=0 labelSelector= fieldSelector=metadata.name=node-1".to_string()
        ),
        "{requests:#?}"
    );

    eventually("three watches open", watching(&api, 3)).await;
    api.with(|s| s.upsert(service("api", json!({}))));
    assert_eq!(next(&mut rx).await, "apply Service default/api");
    api.with(|s| s.upsert(slice("web-abc", Some("web"), "10.244.2.9")));
    assert_eq!(next(&mut rx).await, "apply EndpointSlice default/web-abc");
    api.with(|s| {
        s.upsert(service(
            "ignored",
            json!({"service.kubernetes.io/service-proxy-name": "x"}),
        ))
    });
    api.with(|s| s.delete(Res::Services, "default/web"));
    assert_eq!(next(&mut rx).await, "delete Service default/web");
    api.with(|s| s.upsert(node("node-2")));
    api.with(|s| s.upsert(node("node-1")));
    assert_eq!(next(&mut rx).await, "apply Node node-1");
}

#[tokio::test]
async fn a_dropped_watch_resumes_without_losing_an_event() {
    let api = FakeApi::start(base_objects(), false).await;
    let mut rx = api.run_source();
    synced(&mut rx).await;
    eventually("three watches open", watching(&api, 3)).await;
    let rv_before = api.with(|s| s.rv);

    // Cut the watches and change things before anyone can watch again.
    api.with(|s| {
        s.drop_watches();
        s.upsert(service("api", json!({})));
        s.upsert(slice("api-1", Some("api"), "10.244.3.3"));
    });
    let mut got = vec![next(&mut rx).await, next(&mut rx).await];
    got.sort();
    assert_eq!(
        got,
        [
            "apply EndpointSlice default/api-1",
            "apply Service default/api"
        ]
    );
    eventually("watches back", watching(&api, 3)).await;
    // Resumed from where it was, not relisted.
    let requests = api.with(|s| s.requests.clone());
    assert_eq!(
        requests.iter().filter(|r| r.starts_with("list ")).count(),
        3,
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with(&format!("watch Services rv={rv_before} "))),
        "{requests:#?}"
    );
    assert!(rx.try_recv().is_err(), "nothing else was sent");
}

#[tokio::test]
async fn gone_relists_and_the_replace_drops_what_was_deleted_meanwhile() {
    let mut objects = base_objects();
    objects.push(service("doomed", json!({})));
    let api = FakeApi::start(objects, false).await;
    let mut rx = api.run_source();
    assert!(
        synced(&mut rx)
            .await
            .contains(&"replace Service [doomed,web]".to_string())
    );
    eventually("three watches open", watching(&api, 3)).await;

    // The deletion happens while nobody watches, and its history is gone.
    api.with(|s| {
        s.drop_watches();
        s.delete(Res::Services, "default/doomed");
        s.compact();
    });
    let seen = until_prefix(&mut rx, "replace Service").await;
    assert!(
        seen.contains(&"replace Service [web]".to_string()),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| e.starts_with("delete") || e.starts_with("connected")),
        "a 410 is routine: {seen:?}"
    );
    let relists = api.with(|s| {
        s.requests
            .iter()
            .filter(|r| r.starts_with("list Services"))
            .count()
    });
    assert_eq!(relists, 2);
}

/// A 410 is routine, not a failure: the relist comes at once, not after the
/// retry delay (after an outage that delay has grown to its maximum, and
/// the first answer of a restarted API server is often a 410).
#[tokio::test]
async fn a_gone_watch_relists_at_once_whatever_the_retry_delay() {
    let api = FakeApi::start(base_objects(), false).await;
    let mut rx = api.run_source_retrying_after(Duration::from_secs(3600));
    synced(&mut rx).await;
    eventually("three watches open", watching(&api, 3)).await;
    api.with(|s| {
        s.drop_watches();
        s.delete(Res::Services, "default/web");
        s.compact();
    });
    // `next` gives up after 30 s: far less than the hour of retry delay.
    let seen = until_prefix(&mut rx, "replace Service").await;
    assert!(seen.contains(&"replace Service []".to_string()), "{seen:?}");
}

#[tokio::test]
async fn an_outage_reports_disconnected_and_sends_nothing_else() {
    let api = FakeApi::start(base_objects(), false).await;
    let mut rx = api.run_source();
    synced(&mut rx).await;
    eventually("three watches open", watching(&api, 3)).await;

    api.outage(true);
    assert_eq!(next(&mut rx).await, "connected false");
    // Meanwhile the cluster changes.
    api.with(|s| {
        s.delete(Res::Services, "default/web");
        s.upsert(service("api", json!({})));
    });
    // Let the watchers retry many times against the dead address.
    eventually("retries", || api.relay.refused.load(Ordering::SeqCst) >= 15).await;
    assert!(
        rx.try_recv().is_err(),
        "only the disconnection is reported while the API is unreachable"
    );

    api.outage(false);
    let mut after = Vec::new();
    for _ in 0..3 {
        after.push(next(&mut rx).await);
    }
    assert_eq!(after[0], "connected true");
    after[1..].sort();
    assert_eq!(
        after[1..],
        ["apply Service default/api", "delete Service default/web"]
    );
}

#[tokio::test]
async fn unreachable_from_the_start_sends_no_state() {
    let api = FakeApi::start(base_objects(), true).await;
    let mut rx = api.run_source();
    assert_eq!(next(&mut rx).await, "connected false");
    eventually("retries", || api.relay.refused.load(Ordering::SeqCst) >= 15).await;
    assert!(
        rx.try_recv().is_err(),
        "no Replace, no Synced while unreachable"
    );

    api.outage(false);
    assert_eq!(next(&mut rx).await, "connected true");
    assert_eq!(
        synced(&mut rx).await,
        [
            "replace EndpointSlice [web-abc]",
            "replace Node [node-1]",
            "replace Service [web]",
            "synced",
        ]
    );
}

#[tokio::test]
async fn the_source_stops_when_the_receiver_goes_away() {
    let api = FakeApi::start(base_objects(), false).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(source::run(api.client(), "node-1", tx));
    until(&mut rx, "synced").await;
    drop(rx);
    // The next event the source tries to send ends it.
    api.with(|s| s.upsert(service("api", json!({}))));
    let result = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("source kept running")
        .unwrap();
    assert!(result.is_ok());
}

#[tokio::test]
async fn recovery_is_reported_even_when_nothing_changed() {
    let api = FakeApi::start(base_objects(), false).await;
    let mut rx = api.run_source();
    synced(&mut rx).await;
    eventually("three watches open", watching(&api, 3)).await;
    api.outage(true);
    assert_eq!(next(&mut rx).await, "connected false");
    eventually("retries", || api.relay.refused.load(Ordering::SeqCst) >= 5).await;
    // Back up with nothing new: the watches resume silently, and the
    // re-established connection alone says the API is reachable again.
    api.outage(false);
    assert_eq!(next(&mut rx).await, "connected true");
    eventually("watches back", watching(&api, 3)).await;
    assert!(
        rx.try_recv().is_err(),
        "no relist, no events: {:?}",
        rx.try_recv().ok().map(|e| describe(&e))
    );
}

/// `client()` builds from --kubeconfig, and --master overrides its server.
#[tokio::test]
async fn client_from_kubeconfig_and_master() {
    let api = FakeApi::start(base_objects(), false).await;
    let url = format!("http://{}", api.relay.addr);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = |server: &str| {
        let path = dir.path().join(format!("kc-{}", server.len()));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user:\n    token: abc\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
            ),
        )
        .unwrap();
        path
    };
    let cases = [
        // The kubeconfig's own server.
        (Some(kubeconfig(&url)), None),
        // A dead server in the kubeconfig, overridden by --master.
        (Some(kubeconfig("http://127.0.0.1:9")), Some(url.clone())),
        // --master alone.
        (None, Some(url.clone())),
    ];
    for (kubeconfig, master) in cases {
        let cfg = kproxy::config::Config {
            kubeconfig: kubeconfig.clone(),
            master: master.clone(),
            ..Default::default()
        };
        let client = source::client(&cfg).await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(source::run(client, "node-1", tx));
        let seen = synced(&mut rx).await;
        assert!(
            seen.contains(&"replace Service [web]".to_string()),
            "{kubeconfig:?} {master:?}: {seen:?}"
        );
        task.abort();
    }
    let bad = kproxy::config::Config {
        master: Some("not a url at all".into()),
        ..Default::default()
    };
    let e = source::client(&bad).await.err().unwrap();
    assert!(format!("{e:#}").contains("--master"), "{e:#}");
}
