//! The manifests source: parsing, reloading and watching a directory.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::load::{LoadResult, Loader};
use super::parse::split_documents;
use super::watch::{report, run};
use crate::cluster::convert::ConvertOptions;
use crate::cluster::{ClusterState, Kind, Object, ObjectRef, ServiceName, SourceEvent};

/// A loader and the objects its events amount to, kept as the store would
/// keep them.
struct TestLoader {
    loader: Loader,
    store: BTreeMap<ObjectRef, Object>,
}

/// One reload: the loader's result, the events it sent and the objects the
/// store holds after them, by kind in name order.
struct Loaded {
    result: LoadResult,
    events: Vec<SourceEvent>,
    objects_by_kind: BTreeMap<Kind, Vec<Object>>,
}

impl std::ops::Deref for Loaded {
    type Target = LoadResult;
    fn deref(&self) -> &LoadResult {
        &self.result
    }
}

impl Loaded {
    fn count(&self) -> usize {
        self.result.count
    }
}

impl TestLoader {
    fn new(dir: &Path) -> Self {
        Self {
            loader: Loader::new(dir),
            store: BTreeMap::new(),
        }
    }

    fn reload(&mut self) -> Loaded {
        let mut events = Vec::new();
        let result = self.loader.reload(&mut |ev| events.push(ev));
        for ev in &events {
            match ev {
                SourceEvent::Apply(o) => {
                    self.store.insert(o.object_ref(), o.clone());
                }
                SourceEvent::Delete(r) => {
                    assert!(self.store.remove(r).is_some(), "{r} deleted but never sent");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut objects_by_kind: BTreeMap<Kind, Vec<Object>> = [
            Kind::Service,
            Kind::EndpointSlice,
            Kind::Endpoints,
            Kind::Node,
        ]
        .into_iter()
        .map(|k| (k, Vec::new()))
        .collect();
        for (r, o) in &self.store {
            objects_by_kind.get_mut(&r.kind).unwrap().push(o.clone());
        }
        Loaded {
            result,
            events,
            objects_by_kind,
        }
    }
}

/// Read every manifest in `dir` once.
fn load_dir(dir: &Path) -> Loaded {
    TestLoader::new(dir).reload()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn service_yaml(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  clusterIP: {ip}\n  ports:\n  - port: 80\n"
    )
}

/// `Kind namespace/name` of every object of `kind`, in name order.
fn refs(r: &Loaded, kind: Kind) -> Vec<String> {
    r.objects_by_kind[&kind]
        .iter()
        .map(|o| o.object_ref().to_string())
        .collect()
}

fn cluster_ip(r: &Loaded, name: &str) -> Option<String> {
    r.objects_by_kind[&Kind::Service]
        .iter()
        .find_map(|o| match o {
            Object::Service(s) if s.metadata.name.as_deref() == Some(name) => {
                s.spec.as_ref().and_then(|sp| sp.cluster_ip.clone())
            }
            _ => None,
        })
}

const SLICE: &str = "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [10.244.1.5]
";

#[test]
fn multi_document_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "# leading comment\n---\n{}---\n# only a comment\n---\n{SLICE}...\n---\napiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n",
        service_yaml("web", "10.96.0.10")
    );
    write(dir.path(), "all.yaml", &text);
    let r = load_dir(dir.path());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(refs(&r, Kind::Service), vec!["Service shop/web"]);
    assert_eq!(
        refs(&r, Kind::EndpointSlice),
        vec!["EndpointSlice shop/web-1"]
    );
    assert_eq!(refs(&r, Kind::Node), vec!["Node node-1"]);
    assert!(r.objects_by_kind[&Kind::Endpoints].is_empty());
    // One Apply per object, nothing else.
    assert_eq!(r.events.len(), 3);
    assert!(r.events.iter().all(|e| matches!(e, SourceEvent::Apply(_))));
}

#[test]
fn namespace_defaults_to_default() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "svc.yml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n",
    );
    let r = load_dir(dir.path());
    assert_eq!(refs(&r, Kind::Service), vec!["Service default/web"]);
}

#[test]
fn kind_list() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "list.yaml",
        "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: db, namespace: shop}
  spec: {clusterIP: 10.96.0.20, ports: [{port: 5432}]}
- apiVersion: v1
  kind: Endpoints
  metadata: {name: db, namespace: shop}
  subsets: [{addresses: [{ip: 10.244.1.9}], ports: [{port: 5432}]}]
- apiVersion: apps/v1
  kind: StatefulSet
  metadata: {name: db, namespace: shop}
",
    );
    let r = load_dir(dir.path());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(refs(&r, Kind::Service), vec!["Service shop/db"]);
    assert_eq!(refs(&r, Kind::Endpoints), vec!["Endpoints shop/db"]);
    assert_eq!(
        r.ignored_kinds.iter().collect::<Vec<_>>(),
        vec!["apps/v1 StatefulSet"]
    );
}

#[test]
fn json_object_and_list() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "svc.json",
        r#"{"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": "http"}]}}"#,
    );
    write(
        dir.path(),
        "list.json",
        r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "web-1", "namespace": "shop",
                          "labels": {"kubernetes.io/service-name": "web"}},
             "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.5"]}]},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0"}}
        ]}"#,
    );
    let r = load_dir(dir.path());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(refs(&r, Kind::Service), vec!["Service shop/web"]);
    assert_eq!(
        refs(&r, Kind::EndpointSlice),
        vec!["EndpointSlice shop/web-1"]
    );
    assert!(r.ignored_kinds.contains("v1 Pod"));
}

#[test]
fn ignored_kinds_warn_once() {
    let dir = tempfile::tempdir().unwrap();
    let deploy =
        |n: &str| format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {n}\n");
    write(
        dir.path(),
        "a.yaml",
        &format!("{}---\n{}", deploy("a"), deploy("b")),
    );
    write(
        dir.path(),
        "b.yaml",
        &format!(
            "{}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n",
            deploy("c")
        ),
    );
    let mut loader = TestLoader::new(dir.path());
    let mut warned = BTreeSet::new();
    let first = loader.reload();
    assert_eq!(
        report(&first.result, &mut warned),
        vec!["apps/v1 Deployment", "v1 Pod"],
        "one warning per kind, not per object"
    );
    assert_eq!(first.count(), 0);
    // Not again on a reload, and not for a new file with the same kind.
    write(dir.path(), "c.yaml", &deploy("d"));
    assert!(report(&loader.reload().result, &mut warned).is_empty());
    // A new kind is still announced.
    write(
        dir.path(),
        "d.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
    );
    assert_eq!(
        report(&loader.reload().result, &mut warned),
        vec!["v1 ConfigMap"]
    );
}

#[test]
fn parse_error_keeps_the_last_good_objects() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write(
        p,
        "a.yaml",
        &format!("{}---\n{SLICE}", service_yaml("web", "10.96.0.10")),
    );
    write(p, "b.yaml", &service_yaml("api", "10.96.0.11"));
    let mut loader = TestLoader::new(p);
    let r = loader.reload();
    assert!(r.errors.is_empty());
    assert_eq!(r.count(), 3);

    // Break a.yaml in its second document (an unclosed bracket on line
    // 20 of the file), and change the first: the whole file keeps its
    // previous version.
    let broken = format!(
        "{}---\n{}  - addresses: [10.244.1.6\n",
        service_yaml("web", "10.96.0.99"),
        SLICE
    );
    write(p, "a.yaml", &broken);
    let r = loader.reload();
    assert_eq!(r.errors.len(), 1);
    let e = &r.errors[0];
    assert_eq!(e.path, p.join("a.yaml"));
    assert_eq!(e.line, Some(20));
    assert!(
        e.to_string()
            .starts_with(&format!("{}:20: ", p.join("a.yaml").display())),
        "{e}"
    );
    assert_eq!(cluster_ip(&r, "web").as_deref(), Some("10.96.0.10"));
    assert_eq!(
        refs(&r, Kind::EndpointSlice),
        vec!["EndpointSlice shop/web-1"]
    );
    assert_eq!(cluster_ip(&r, "api").as_deref(), Some("10.96.0.11"));

    // A type error is located too: line 9 holds `- port: eighty`.
    write(
        p,
        "a.yaml",
        &service_yaml("web", "10.96.0.99").replace("port: 80", "port: eighty"),
    );
    let r = loader.reload();
    assert_eq!(r.errors[0].line, Some(9), "{}", r.errors[0]);
    assert_eq!(cluster_ip(&r, "web").as_deref(), Some("10.96.0.10"));

    // Fixed: the new version is used and the error is gone.
    write(p, "a.yaml", &service_yaml("web", "10.96.0.12"));
    let r = loader.reload();
    assert!(r.errors.is_empty());
    assert_eq!(cluster_ip(&r, "web").as_deref(), Some("10.96.0.12"));
    assert!(r.objects_by_kind[&Kind::EndpointSlice].is_empty());
}

#[test]
fn a_file_bad_from_the_start_contributes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "good.yaml", &service_yaml("web", "10.96.0.10"));
    write(
        dir.path(),
        "bad.json",
        "{\"apiVersion\": \"v1\",\n \"kind\": \"Service\",\n \"spec\": {\"ports\": [{\"port\": \"x\"}]}}",
    );
    let r = load_dir(dir.path());
    assert_eq!(refs(&r, Kind::Service), vec!["Service shop/web"]);
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].line, Some(3));
    assert!(
        r.errors[0].reason.contains("expected i32"),
        "{}",
        r.errors[0]
    );
}

#[test]
fn documents_must_say_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "x.yaml",
        &format!(
            "{}---\nmetadata:\n  name: mystery\n",
            service_yaml("web", "10.96.0.10")
        ),
    );
    let r = load_dir(dir.path());
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].line, Some(10));
    assert_eq!(
        r.errors[0].reason,
        "not a Kubernetes object: apiVersion and kind are required"
    );
    assert_eq!(r.count(), 0);
}

#[test]
fn reload_reports_whether_anything_changed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mut loader = TestLoader::new(p);
    assert!(!loader.reload().changed, "an empty directory");
    write(p, "a.yaml", &service_yaml("a", "10.96.0.1"));
    assert!(loader.reload().changed);
    let r = loader.reload();
    assert!(!r.changed, "same text");
    assert_eq!(r.count(), 1, "an unchanged file still contributes");
    write(p, "x.txt", "not a manifest");
    assert!(!loader.reload().changed);
    write(p, "a.yaml", "kind: [");
    let r = loader.reload();
    assert!(!r.changed, "a broken file leaves the objects as they were");
    assert_eq!(r.errors.len(), 1);
    write(p, "a.yaml", &service_yaml("a", "10.96.0.2"));
    assert!(loader.reload().changed);
    std::fs::remove_file(p.join("a.yaml")).unwrap();
    assert!(loader.reload().changed);
}

#[test]
fn deleted_file_withdraws_its_objects() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &service_yaml("a", "10.96.0.1"));
    write(dir.path(), "b.yaml", &service_yaml("b", "10.96.0.2"));
    let mut loader = TestLoader::new(dir.path());
    assert_eq!(loader.reload().count(), 2);
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let r = loader.reload();
    assert_eq!(refs(&r, Kind::Service), vec!["Service shop/b"]);
}

#[test]
fn unreadable_directory_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("m");
    std::fs::create_dir(&sub).unwrap();
    write(&sub, "a.yaml", &service_yaml("a", "10.96.0.1"));
    let mut loader = TestLoader::new(&sub);
    assert_eq!(loader.reload().count(), 1);
    std::fs::rename(&sub, dir.path().join("elsewhere")).unwrap();
    let r = loader.reload();
    assert_eq!(r.count(), 1);
    assert!(r.errors[0].reason.starts_with("cannot list directory"));
}

#[test]
fn which_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write(p, "a.yaml", &service_yaml("a", "10.96.0.1"));
    write(p, "b.yml", &service_yaml("b", "10.96.0.2"));
    write(p, "c.txt", &service_yaml("c", "10.96.0.3"));
    write(p, ".d.yaml", &service_yaml("d", "10.96.0.4"));
    write(p, "e.yaml.swp", "garbage");
    std::fs::create_dir(p.join("sub")).unwrap();
    write(&p.join("sub"), "f.yaml", &service_yaml("f", "10.96.0.6"));
    let r = load_dir(p);
    assert!(r.errors.is_empty());
    assert_eq!(
        refs(&r, Kind::Service),
        vec!["Service shop/a", "Service shop/b"]
    );
}

#[test]
fn duplicates_keep_the_later_definition() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &service_yaml("web", "10.96.0.1"));
    write(dir.path(), "b.yaml", &service_yaml("web", "10.96.0.2"));
    let r = load_dir(dir.path());
    assert_eq!(refs(&r, Kind::Service), vec!["Service shop/web"]);
    assert_eq!(cluster_ip(&r, "web").as_deref(), Some("10.96.0.2"));
    assert_eq!(r.duplicates.len(), 1);
    assert!(r.duplicates[0].starts_with("Service shop/web is defined in "));
}

#[test]
fn document_split() {
    let docs = split_documents("%YAML 1.2\n---\na: 1\n--- {b: 2}\n...\n# c\n---\n---x: 3\n");
    // `---x` is not a marker: it is content of the last document.
    assert_eq!(
        docs,
        vec![
            (2, "   \na: 1\n".to_string()),
            (4, "    {b: 2}\n".to_string()),
            (7, "   \n---x: 3\n".to_string()),
        ]
    );
}

/// Wait for the next event about a Service, apply it to `names` (the
/// Services sent so far) and return them in name order.
async fn next_services(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<SourceEvent>,
    names: &mut BTreeSet<String>,
) -> Vec<String> {
    // Generous: this bounds a hang, it does not measure speed.
    let deadline = Duration::from_secs(30);
    loop {
        let ev = tokio::time::timeout(deadline, rx.recv())
            .await
            .expect("no event from the manifests source")
            .expect("the manifests source stopped");
        match ev {
            SourceEvent::Apply(o) if o.kind() == Kind::Service => {
                names.insert(o.object_ref().name);
            }
            SourceEvent::Delete(r) if r.kind == Kind::Service => {
                names.remove(&r.name);
            }
            _ => continue,
        }
        return names.iter().cloned().collect();
    }
}

#[tokio::test]
async fn run_sends_the_set_then_synced_then_reloads_on_change() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &service_yaml("a", "10.96.0.1"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(run(dir.path().to_path_buf(), tx));

    // The first load's objects, then Synced exactly once.
    let mut first = Vec::new();
    loop {
        match rx.recv().await.unwrap() {
            SourceEvent::Synced => break,
            SourceEvent::Apply(o) => first.push(o.object_ref().to_string()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(first, vec!["Service shop/a"]);
    let sent = &mut BTreeSet::from(["a".to_string()]);

    write(dir.path(), "b.yaml", &service_yaml("b", "10.96.0.2"));
    let mut names = next_services(&mut rx, sent).await;
    // A burst may be seen as two reloads; wait for the one with b.
    while names.len() < 2 {
        names = next_services(&mut rx, sent).await;
    }
    assert_eq!(names, vec!["a", "b"]);

    // A broken edit sends nothing (nothing usable changed); the next
    // change shows a's last good version still there. (Written by
    // rename, so that no reload can catch the file truncated: an empty
    // file is a valid one with no objects.)
    write(
        dir.path(),
        ".a.tmp",
        "apiVersion: v1\nkind: Service\nmetadata: [\n",
    );
    std::fs::rename(dir.path().join(".a.tmp"), dir.path().join("a.yaml")).unwrap();
    write(dir.path(), "c.yaml", &service_yaml("c", "10.96.0.3"));
    let mut names = next_services(&mut rx, sent).await;
    while names.len() < 3 {
        names = next_services(&mut rx, sent).await;
    }
    assert_eq!(names, vec!["a", "b", "c"]);

    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let mut names = next_services(&mut rx, sent).await;
    while names.len() != 2 {
        names = next_services(&mut rx, sent).await;
    }
    assert_eq!(names, vec!["b", "c"]);
    task.abort();
}

#[tokio::test]
async fn run_fails_on_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let e = run(dir.path().join("nope"), tx).await.unwrap_err();
    assert!(format!("{e:#}").contains("nope"), "{e:#}");
}

/// The shipped examples: every object is accepted without a single
/// problem, only the Deployment is ignored, and no address is used twice.
#[test]
fn examples_are_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let r = load_dir(&dir);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r.duplicates.is_empty(), "{:?}", r.duplicates);
    assert_eq!(
        r.ignored_kinds.iter().collect::<Vec<_>>(),
        vec!["apps/v1 Deployment"]
    );
    let services = refs(&r, Kind::Service).len();
    assert_eq!(services, 9);

    let mut st = ClusterState::new(ConvertOptions {
        node_name: "node-1".into(),
    });
    for ev in r.events.iter().cloned() {
        let problems = st.apply(ev);
        assert!(problems.is_empty(), "{problems:?}");
    }
    assert_eq!(st.rejected().count(), 0);
    assert_eq!(st.services().count(), services);
    assert_eq!(st.node().and_then(|n| n.zone.as_deref()), Some("zone-a"));

    let mut seen: BTreeSet<IpAddr> = BTreeSet::new();
    for svc in st.services() {
        for ip in svc.cluster_ips.iter().chain(&svc.external_ips) {
            assert!(seen.insert(*ip), "{ip} used twice");
        }
        for ing in &svc.load_balancer_ingress {
            assert!(seen.insert(ing.ip), "{} used twice", ing.ip);
        }
        for slice in st.slices_for(&svc.name) {
            for ep in &slice.endpoints {
                assert!(seen.insert(ep.addr), "{} used twice", ep.addr);
                let pod_net: ipnet::IpNet = "10.244.0.0/16".parse().unwrap();
                assert!(pod_net.contains(&ep.addr), "{} is not a pod IP", ep.addr);
            }
        }
    }
    // Every Service but the ExternalName one has endpoints.
    let with_endpoints = st
        .services()
        .filter(|s| !st.slices_for(&s.name).is_empty())
        .count();
    assert_eq!(with_endpoints, services - 1);
    // The selector-less Service is fed by its mirrored Endpoints.
    let legacy = st.slices_for(&ServiceName::new("demo", "legacy-billing"));
    assert!(legacy.iter().all(|s| s.mirrored));
    assert_eq!(legacy[0].endpoints.iter().filter(|e| e.ready).count(), 2);
}

/// What a reload sent, as `Apply ref` / `Delete ref` lines.
fn sent(r: &Loaded) -> Vec<String> {
    r.events
        .iter()
        .map(|e| match e {
            SourceEvent::Apply(o) => format!("Apply {}", o.object_ref()),
            SourceEvent::Delete(r) => format!("Delete {r}"),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_reload_sends_only_the_changed_files_objects() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    for i in 0..50 {
        write(
            p,
            &format!("s{i:02}.yaml"),
            &service_yaml(&format!("s{i:02}"), &format!("10.96.0.{}", i + 1)),
        );
    }
    let mut loader = TestLoader::new(p);
    assert_eq!(loader.reload().events.len(), 50);
    write(p, "s07.yaml", &service_yaml("s07", "10.96.1.7"));
    let r = loader.reload();
    assert_eq!(sent(&r), vec!["Apply Service shop/s07"]);
    assert_eq!(r.count(), 50);
    // An object moved to another file is sent again, never deleted.
    write(p, "s08.yaml", "");
    write(
        p,
        "s09.yaml",
        &format!(
            "{}---\n{}",
            service_yaml("s08", "10.96.0.9"),
            service_yaml("s09", "10.96.0.10")
        ),
    );
    let r = loader.reload();
    assert_eq!(
        sent(&r),
        vec!["Apply Service shop/s08", "Apply Service shop/s09"]
    );
    std::fs::remove_file(p.join("s09.yaml")).unwrap();
    let r = loader.reload();
    assert_eq!(
        sent(&r),
        vec!["Delete Service shop/s08", "Delete Service shop/s09"]
    );
    assert_eq!(r.count(), 48);
}

#[test]
fn the_later_definition_wins_across_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write(p, "a.yaml", &service_yaml("web", "10.96.0.1"));
    write(p, "b.yaml", &service_yaml("web", "10.96.0.2"));
    let mut loader = TestLoader::new(p);
    assert_eq!(
        cluster_ip(&loader.reload(), "web").as_deref(),
        Some("10.96.0.2")
    );

    // The earlier file changes: the later, unchanged one still wins and
    // nothing is sent.
    write(p, "a.yaml", &service_yaml("web", "10.96.0.3"));
    let r = loader.reload();
    assert!(sent(&r).is_empty(), "{:?}", sent(&r));
    assert_eq!(cluster_ip(&r, "web").as_deref(), Some("10.96.0.2"));
    assert_eq!(r.duplicates.len(), 1);

    // Both change in one reload: the later one's version is the one sent.
    write(p, "a.yaml", &service_yaml("web", "10.96.0.4"));
    write(p, "b.yaml", &service_yaml("web", "10.96.0.5"));
    let r = loader.reload();
    assert_eq!(cluster_ip(&r, "web").as_deref(), Some("10.96.0.5"));
    assert_eq!(
        sent(&r),
        vec!["Apply Service shop/web"],
        "the earlier one waited"
    );

    // The later file drops it: the earlier, unchanged file's version comes
    // back (read again from disk), and nothing is deleted.
    write(p, "b.yaml", "");
    let r = loader.reload();
    assert_eq!(sent(&r), vec!["Apply Service shop/web"]);
    assert_eq!(cluster_ip(&r, "web").as_deref(), Some("10.96.0.4"));

    // Both change, the later one breaks: its last good version (empty)
    // stays, so the earlier file's new version is sent.
    write(p, "a.yaml", &service_yaml("web", "10.96.0.6"));
    write(p, "b.yaml", "kind: [");
    let r = loader.reload();
    assert_eq!(r.errors.len(), 1);
    assert_eq!(cluster_ip(&r, "web").as_deref(), Some("10.96.0.6"));

    // The later file (whose last good version defines nothing) defines it
    // again while the earlier one changes: both are sent, in file order.
    write(p, "a.yaml", &service_yaml("web", "10.96.0.7"));
    write(p, "b.yaml", &service_yaml("web", "10.96.0.8"));
    let r = loader.reload();
    assert_eq!(cluster_ip(&r, "web").as_deref(), Some("10.96.0.8"));
    assert_eq!(
        sent(&r),
        vec!["Apply Service shop/web", "Apply Service shop/web"]
    );
}
