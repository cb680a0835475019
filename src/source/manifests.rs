//! `--manifests DIR`: Services, EndpointSlices, Endpoints and Nodes from
//! YAML/JSON files, reloaded on change.
//!
//! The directory is read non-recursively: `*.yaml`, `*.yml` and `*.json`
//! files directly inside it (symlinks followed, so a mounted ConfigMap
//! works), in name order. A YAML file may hold several documents; any file
//! may hold a `kind: List` whose items are objects. Objects of other kinds
//! (Deployments, Pods, ...) are ignored, with one warning per kind for the
//! life of the process.
//!
//! The first load, and every reload that changed something, sends one
//! `SourceEvent::Replace` per kind with the complete set, so a deleted file
//! or object disappears from the cluster state. A file
//! that cannot be read or parsed keeps contributing the objects of its last
//! good version: a half-saved edit must not withdraw Services that are
//! serving traffic. Objects without a namespace land in `default`, as
//! `kubectl apply` would put them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde::Deserialize;
use serde_saphyr::MessageFormatter as _;

use super::EventSender;
use crate::cluster::{Kind, Object, ObjectRef, SourceEvent};

/// File name extensions read from the directory.
pub const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// How long the directory must stay quiet before a reload: editors and
/// `kubectl`-style tools write a file in several steps (truncate, write,
/// rename), and one reload per burst is enough.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// The longest a burst of changes may delay a reload.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// The kinds a (re)load always reports, each with its complete set.
pub const KINDS: [Kind; 4] = [
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Endpoints,
    Kind::Node,
];

/// A file that could not be read or parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    /// 1-based line, when the parser knows it.
    pub line: Option<u64>,
    pub reason: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path.display(), self.reason),
            None => write!(f, "{}: {}", self.path.display(), self.reason),
        }
    }
}

/// The outcome of reading the directory once.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Every kind of `KINDS`, each with its objects (possibly none), in file
    /// and document order.
    pub objects_by_kind: BTreeMap<Kind, Vec<Object>>,
    /// Files that failed; their last good objects (if any) are still in
    /// `objects_by_kind`.
    pub errors: Vec<FileError>,
    /// `apiVersion kind` of every ignored object kind seen, e.g. `apps/v1 Deployment`.
    pub ignored_kinds: BTreeSet<String>,
    /// Objects defined in more than one place; the last definition is kept.
    pub duplicates: Vec<String>,
    /// Whether any file's objects differ from the previous load (always
    /// true for a first load that found files).
    pub changed: bool,
}

impl LoadResult {
    /// The Replace events that hand this result to the store.
    pub fn into_events(self) -> Vec<SourceEvent> {
        self.objects_by_kind
            .into_iter()
            .map(|(kind, objs)| SourceEvent::Replace(kind, objs))
            .collect()
    }

    fn count(&self) -> usize {
        self.objects_by_kind.values().map(Vec::len).sum()
    }
}

/// Read every manifest in `dir` once.
pub fn load_dir(dir: &Path) -> LoadResult {
    Loader::new(dir).reload()
}

/// What one file contributed the last time it parsed.
#[derive(Clone, Debug, Default)]
struct FileObjects {
    /// The text they came from: an unchanged file is not parsed again.
    text: String,
    objects: Vec<Object>,
    ignored: BTreeSet<String>,
}

/// Reads the directory repeatedly, remembering each file's last good objects.
#[derive(Debug)]
pub struct Loader {
    dir: PathBuf,
    last_good: BTreeMap<PathBuf, FileObjects>,
}

impl Loader {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            last_good: BTreeMap::new(),
        }
    }

    pub fn reload(&mut self) -> LoadResult {
        let mut errors = Vec::new();
        let mut changed = false;
        match list_files(&self.dir) {
            Ok(files) => {
                // A deleted file withdraws its objects; that was the operator's intent.
                let before = self.last_good.len();
                self.last_good.retain(|p, _| files.contains(p));
                changed |= self.last_good.len() != before;
                for path in files {
                    let text = match std::fs::read_to_string(&path) {
                        Ok(t) => t,
                        Err(e) => {
                            errors.push(FileError {
                                path,
                                line: None,
                                reason: format!("cannot read: {e}"),
                            });
                            continue;
                        }
                    };
                    if self.last_good.get(&path).is_some_and(|f| f.text == text) {
                        continue;
                    }
                    match parse_file(&path, text) {
                        Ok(objs) => {
                            self.last_good.insert(path, objs);
                            changed = true;
                        }
                        Err(e) => errors.push(e),
                    }
                }
            }
            // The directory itself is unreadable (unmounted, renamed): keep
            // everything rather than withdraw every Service at once.
            Err(e) => errors.push(FileError {
                path: self.dir.clone(),
                line: None,
                reason: format!("cannot list directory: {e}"),
            }),
        }
        self.assemble(errors, changed)
    }

    fn assemble(&self, errors: Vec<FileError>, changed: bool) -> LoadResult {
        let mut result = LoadResult {
            errors,
            changed,
            ..Default::default()
        };
        for kind in KINDS {
            result.objects_by_kind.insert(kind, Vec::new());
        }
        // Where each object was first defined, to point out duplicates.
        let mut defined: HashMap<ObjectRef, (&Path, usize)> = HashMap::new();
        for (path, file) in &self.last_good {
            result.ignored_kinds.extend(file.ignored.iter().cloned());
            for obj in &file.objects {
                let r = obj.object_ref();
                let list = result.objects_by_kind.entry(obj.kind()).or_default();
                if let Some((first, index)) = defined.get(&r) {
                    result.duplicates.push(format!(
                        "{r} is defined in {} and again in {}; the later one is used",
                        first.display(),
                        path.display()
                    ));
                    list[*index] = obj.clone();
                } else {
                    defined.insert(r, (path, list.len()));
                    list.push(obj.clone());
                }
            }
        }
        result
    }
}

fn list_files(dir: &Path) -> std::io::Result<BTreeSet<PathBuf>> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let wanted = !name.starts_with('.')
            && path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e));
        // `is_file` follows symlinks, so ConfigMap-style links count.
        if wanted && path.is_file() {
            out.insert(path);
        }
    }
    Ok(out)
}

/// `apiVersion` and `kind`, read before the rest to choose the type.
#[derive(Deserialize, Default)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// What a document is.
enum DocKind {
    Object(Kind),
    List,
    Ignored(String),
}

fn classify(tm: &TypeMeta) -> Result<DocKind, String> {
    if tm.kind.is_empty() || tm.api_version.is_empty() {
        return Err("not a Kubernetes object: apiVersion and kind are required".into());
    }
    Ok(match (tm.api_version.as_str(), tm.kind.as_str()) {
        ("v1", "Service") => DocKind::Object(Kind::Service),
        ("discovery.k8s.io/v1", "EndpointSlice") => DocKind::Object(Kind::EndpointSlice),
        ("v1", "Endpoints") => DocKind::Object(Kind::Endpoints),
        ("v1", "Node") => DocKind::Object(Kind::Node),
        // `kubectl get -o yaml` writes `v1 List`; typed lists read the same.
        ("v1", "List" | "ServiceList" | "EndpointsList" | "NodeList")
        | ("discovery.k8s.io/v1", "EndpointSliceList") => DocKind::List,
        (api, kind) => DocKind::Ignored(format!("{api} {kind}")),
    })
}

/// Decode one object of a known kind with any serde format.
fn decode<'de, D>(kind: Kind, de: D) -> Result<Object, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(match kind {
        Kind::Service => Object::Service(Box::new(core::Service::deserialize(de)?)),
        Kind::EndpointSlice => {
            Object::EndpointSlice(Box::new(discovery::EndpointSlice::deserialize(de)?))
        }
        Kind::Endpoints => Object::Endpoints(Box::new(core::Endpoints::deserialize(de)?)),
        Kind::Node => Object::Node(Box::new(core::Node::deserialize(de)?)),
    })
}

/// An object without a namespace goes to `default`, as kubectl would put it.
fn default_namespace(obj: &mut Object) {
    let meta = match obj {
        Object::Service(o) => &mut o.metadata,
        Object::EndpointSlice(o) => &mut o.metadata,
        Object::Endpoints(o) => &mut o.metadata,
        Object::Node(_) => return,
    };
    if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some("default".into());
    }
}

/// The objects kproxy reads from one file's text (YAML, or JSON when the
/// path ends in `.json`); other kinds are left out.
pub fn parse_text(path: &Path, text: &str) -> Result<Vec<Object>, FileError> {
    parse_file(path, text.to_string()).map(|f| f.objects)
}

/// Parse one file's text; the whole file fails if any document does, so
/// that its last good version stays in use as a unit.
fn parse_file(path: &Path, text: String) -> Result<FileObjects, FileError> {
    let mut out = FileObjects::default();
    let is_json = path.extension().and_then(|e| e.to_str()) == Some("json");
    if is_json {
        parse_json(path, &text, &mut out)?;
    } else {
        for (first_line, doc) in split_documents(&text) {
            parse_yaml_document(path, first_line, &doc, &mut out)?;
        }
    }
    for obj in &mut out.objects {
        default_namespace(obj);
    }
    out.text = text;
    Ok(out)
}

/// Split a YAML stream into documents, each with the 1-based line it starts
/// on. A line that begins with `---` or `...` followed by a space or its
/// end is always a document boundary in YAML (even inside a block scalar),
/// so this split is exact; parsing each document on its own lets its kind
/// choose the type it is decoded into, which keeps serde-saphyr's precise
/// error locations (decoding through an untyped value would lose them).
fn split_documents(text: &str) -> Vec<(u64, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1u64;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let lineno = i as u64 + 1;
        let marker = ["---", "..."].into_iter().find(|m| {
            line.strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
        });
        if let Some(m) = marker {
            docs.push((start, std::mem::take(&mut current)));
            start = lineno;
            if m == "---" {
                // Content may follow the marker on its line (`--- {…}`);
                // keep it, at its column, in the new document.
                current.push_str(&" ".repeat(3));
                current.push_str(&line[3..]);
            } else {
                current.push('\n');
            }
            continue;
        }
        if line.starts_with('%') {
            // A directive (`%YAML 1.2`) belongs to the stream, not to a document.
            current.push('\n');
            continue;
        }
        current.push_str(line);
    }
    docs.push((start, current));
    docs.retain(|(_, d)| has_content(d));
    docs
}

/// Whether a document holds anything but blank lines and comments.
fn has_content(doc: &str) -> bool {
    doc.lines().any(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    })
}

fn yaml_error(path: &Path, first_line: u64, e: &serde_saphyr::Error) -> FileError {
    let plain = e.without_snippet();
    let message = serde_saphyr::DefaultMessageFormatter.format_message(plain);
    FileError {
        path: path.to_path_buf(),
        line: plain
            .location()
            .filter(|l| l.line() > 0)
            .map(|l| l.line() + first_line - 1),
        // One log line per problem, whatever the message holds.
        reason: message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
    }
}

fn parse_yaml_document(
    path: &Path,
    first_line: u64,
    doc: &str,
    out: &mut FileObjects,
) -> Result<(), FileError> {
    let at = |e: serde_saphyr::Error| yaml_error(path, first_line, &e);
    let tm: TypeMeta = serde_saphyr::from_str(doc).map_err(at)?;
    let kind = classify(&tm).map_err(|reason| FileError {
        path: path.to_path_buf(),
        line: Some(first_line),
        reason,
    })?;
    match kind {
        DocKind::Object(kind) => {
            let obj =
                serde_saphyr::with_deserializer_from_str(doc, |de| decode(kind, de)).map_err(at)?;
            out.objects.push(obj);
        }
        DocKind::Ignored(k) => {
            out.ignored.insert(k);
        }
        DocKind::List => {
            #[derive(Deserialize)]
            struct Items {
                #[serde(default)]
                items: Vec<serde_saphyr::Spanned<serde_json::Value>>,
            }
            let list: Items = serde_saphyr::from_str(doc).map_err(at)?;
            for (i, item) in list.items.into_iter().enumerate() {
                // Items go through an untyped value so that each can pick its
                // type; the item's own line still points at it.
                let line = item.referenced.line() + first_line - 1;
                list_item(path, Some(line), i, item.value, out)?;
            }
        }
    }
    Ok(())
}

fn list_item(
    path: &Path,
    line: Option<u64>,
    index: usize,
    value: serde_json::Value,
    out: &mut FileObjects,
) -> Result<(), FileError> {
    let fail = |reason: String| FileError {
        path: path.to_path_buf(),
        line,
        reason: format!("items[{index}]: {reason}"),
    };
    let tm = TypeMeta::deserialize(&value).map_err(|e| fail(e.to_string()))?;
    match classify(&tm).map_err(fail)? {
        DocKind::Object(kind) => {
            let obj = decode(kind, value).map_err(|e| fail(e.to_string()))?;
            out.objects.push(obj);
        }
        DocKind::Ignored(k) => {
            out.ignored.insert(k);
        }
        DocKind::List => return Err(fail("a List inside a List".into())),
    }
    Ok(())
}

fn parse_json(path: &Path, text: &str, out: &mut FileObjects) -> Result<(), FileError> {
    let at = |e: serde_json::Error| FileError {
        path: path.to_path_buf(),
        line: (e.line() > 0).then_some(e.line() as u64),
        reason: strip_json_position(&e),
    };
    let tm: TypeMeta = serde_json::from_str(text).map_err(at)?;
    let kind = classify(&tm).map_err(|reason| FileError {
        path: path.to_path_buf(),
        line: Some(1),
        reason,
    })?;
    match kind {
        DocKind::Object(kind) => {
            let mut de = serde_json::Deserializer::from_str(text);
            let obj = decode(kind, &mut de).map_err(at)?;
            de.end().map_err(at)?;
            out.objects.push(obj);
        }
        DocKind::Ignored(k) => {
            out.ignored.insert(k);
        }
        DocKind::List => {
            #[derive(Deserialize)]
            struct Items {
                #[serde(default)]
                items: Vec<serde_json::Value>,
            }
            let list: Items = serde_json::from_str(text).map_err(at)?;
            for (i, item) in list.items.into_iter().enumerate() {
                list_item(path, None, i, item, out)?;
            }
        }
    }
    Ok(())
}

/// serde_json appends " at line L column C"; the line is reported separately.
fn strip_json_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) if e.line() > 0 => s[..i].to_string(),
        _ => s,
    }
}

/// Watch `dir` and send its objects: the first complete set, `Synced`, then a
/// new complete set after every burst of changes.
///
/// Returns an error if the directory cannot be read at start or cannot be
/// watched; later read errors are logged and the last good objects kept.
pub async fn run(dir: PathBuf, tx: EventSender) -> anyhow::Result<()> {
    use notify::Watcher as _;

    let loader = Loader::new(&dir);
    list_files(&dir).with_context(|| format!("--manifests {}", dir.display()))?;

    // notify calls back on its own thread; forward into the async world.
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if ev.kind.is_access() => {}
            Ok(_) => {
                let _ = wake_tx.send(());
            }
            Err(e) => tracing::warn!("watching manifests: {e}"),
        })
        .context("starting the manifests watcher")?;
    // Watch before the first read, so that no change slips in between.
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;

    let mut warned = BTreeSet::new();

    let (mut loader, first) = reload_off_thread(loader).await?;
    tracing::info!(
        "manifests: {} objects from {}",
        first.count(),
        dir.display()
    );
    hand_over(first, &tx, &mut warned)?;
    tx.send(SourceEvent::Synced)
        .context("the sync loop has stopped")?;

    while wake_rx.recv().await.is_some() {
        // Wait for the burst to end, but not forever: a file rewritten
        // continuously must still be read now and then.
        let give_up = tokio::time::Instant::now() + MAX_DEBOUNCE;
        while let Ok(Some(())) = tokio::time::timeout_at(
            give_up.min(tokio::time::Instant::now() + DEBOUNCE),
            wake_rx.recv(),
        )
        .await
        {}
        let result;
        (loader, result) = reload_off_thread(loader).await?;
        if !result.changed {
            // Nothing to hand over (a swap file came and went, or a broken
            // file is still broken); just say what is wrong.
            report(&result, &mut warned);
            continue;
        }
        tracing::info!(
            "manifests: reloaded {} objects from {}",
            result.count(),
            dir.display()
        );
        hand_over(result, &tx, &mut warned)?;
    }
    anyhow::bail!("the manifests watcher for {} stopped", dir.display())
}

/// Report a load's problems and send its objects to the store.
fn hand_over(
    result: LoadResult,
    tx: &EventSender,
    warned: &mut BTreeSet<String>,
) -> anyhow::Result<()> {
    report(&result, warned);
    for ev in result.into_events() {
        tx.send(ev).context("the sync loop has stopped")?;
    }
    Ok(())
}

/// Read the directory on a blocking thread: a directory of thousands of
/// objects takes long enough to stall other tasks.
async fn reload_off_thread(mut loader: Loader) -> anyhow::Result<(Loader, LoadResult)> {
    tokio::task::spawn_blocking(move || {
        let result = loader.reload();
        (loader, result)
    })
    .await
    .context("reading manifests")
}

/// Log what a load found wrong; each ignored kind only the first time it is
/// seen (returned, for tests).
fn report(result: &LoadResult, warned: &mut BTreeSet<String>) -> Vec<String> {
    for e in &result.errors {
        tracing::error!("{e} (the file's last good version, if any, stays in use)");
    }
    for d in &result.duplicates {
        tracing::warn!("{d}");
    }
    let mut first_time = Vec::new();
    for k in &result.ignored_kinds {
        if warned.insert(k.clone()) {
            tracing::warn!(
                "manifests: ignoring objects of kind {k} (kproxy reads Services, EndpointSlices, Endpoints and Nodes)"
            );
            first_time.push(k.clone());
        }
    }
    first_time
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::Path;

    use super::*;
    use crate::cluster::convert::ConvertOptions;
    use crate::cluster::{ClusterState, ServiceName};

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn service_yaml(name: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  clusterIP: {ip}\n  ports:\n  - port: 80\n"
        )
    }

    /// `Kind namespace/name` of every object of `kind`, in order.
    fn refs(r: &LoadResult, kind: Kind) -> Vec<String> {
        r.objects_by_kind[&kind]
            .iter()
            .map(|o| o.object_ref().to_string())
            .collect()
    }

    fn cluster_ip(r: &LoadResult, name: &str) -> Option<String> {
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
        // Every kind is reported, so that a Replace can empty it.
        let kinds: Vec<Kind> = r
            .into_events()
            .iter()
            .map(|e| match e {
                SourceEvent::Replace(k, _) => *k,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds.len(), 4);
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
        let mut loader = Loader::new(dir.path());
        let mut warned = BTreeSet::new();
        let first = loader.reload();
        assert_eq!(
            report(&first, &mut warned),
            vec!["apps/v1 Deployment", "v1 Pod"],
            "one warning per kind, not per object"
        );
        assert_eq!(first.count(), 0);
        // Not again on a reload, and not for a new file with the same kind.
        write(dir.path(), "c.yaml", &deploy("d"));
        assert!(report(&loader.reload(), &mut warned).is_empty());
        // A new kind is still announced.
        write(
            dir.path(),
            "d.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
        );
        assert_eq!(report(&loader.reload(), &mut warned), vec!["v1 ConfigMap"]);
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
        let mut loader = Loader::new(p);
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
        let mut loader = Loader::new(p);
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
        let mut loader = Loader::new(dir.path());
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
        let mut loader = Loader::new(&sub);
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

    /// Wait for the next Replace of Services; return the names it lists.
    async fn next_services(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<SourceEvent>,
    ) -> Vec<String> {
        // Generous: this bounds a hang, it does not measure speed.
        let deadline = Duration::from_secs(30);
        loop {
            let ev = tokio::time::timeout(deadline, rx.recv())
                .await
                .expect("no event from the manifests source")
                .expect("the manifests source stopped");
            if let SourceEvent::Replace(Kind::Service, objs) = ev {
                return objs.iter().map(|o| o.object_ref().name).collect();
            }
        }
    }

    #[tokio::test]
    async fn run_sends_the_set_then_synced_then_reloads_on_change() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", &service_yaml("a", "10.96.0.1"));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(run(dir.path().to_path_buf(), tx));

        // The first set, then Synced exactly once.
        let mut first = Vec::new();
        loop {
            match rx.recv().await.unwrap() {
                SourceEvent::Synced => break,
                SourceEvent::Replace(k, objs) => first.push((k, objs.len())),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            first,
            vec![
                (Kind::Service, 1),
                (Kind::EndpointSlice, 0),
                (Kind::Endpoints, 0),
                (Kind::Node, 0)
            ]
        );

        write(dir.path(), "b.yaml", &service_yaml("b", "10.96.0.2"));
        let mut names = next_services(&mut rx).await;
        // A burst may be seen as two reloads; wait for the one with b.
        while names.len() < 2 {
            names = next_services(&mut rx).await;
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
        let mut names = next_services(&mut rx).await;
        while names.len() < 3 {
            names = next_services(&mut rx).await;
        }
        assert_eq!(names, vec!["a", "b", "c"]);

        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        let mut names = next_services(&mut rx).await;
        while names.len() != 2 {
            names = next_services(&mut rx).await;
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
            ..Default::default()
        });
        for ev in r.into_events() {
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
}
