//! One manifest file's text → the objects kproxy reads from it: YAML
//! streams of several documents, JSON, and `kind: List` in either.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde::Deserialize;
use serde_saphyr::MessageFormatter as _;

use crate::cluster::{Kind, Object};

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

/// What one file contributed the last time it parsed.
#[derive(Clone, Debug, Default)]
pub(super) struct FileObjects {
    pub(super) objects: Vec<Object>,
    pub(super) ignored: BTreeSet<String>,
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
    parse_file(path, text).map(|f| f.objects)
}

/// Parse one file's text; the whole file fails if any document does, so
/// that its last good version stays in use as a unit.
pub(super) fn parse_file(path: &Path, text: &str) -> Result<FileObjects, FileError> {
    let mut out = FileObjects::default();
    let is_json = path.extension().and_then(|e| e.to_str()) == Some("json");
    if is_json {
        parse_json(path, text, &mut out)?;
    } else {
        for (first_line, doc) in split_documents(text) {
            parse_yaml_document(path, first_line, &doc, &mut out)?;
        }
    }
    for obj in &mut out.objects {
        default_namespace(obj);
    }
    Ok(out)
}

/// Split a YAML stream into documents, each with the 1-based line it starts
/// on. A line that begins with `---` or `...` followed by a space or its
/// end is always a document boundary in YAML (even inside a block scalar),
/// so this split is exact; parsing each document on its own lets its kind
/// choose the type it is decoded into, which keeps serde-saphyr's precise
/// error locations (decoding through an untyped value would lose them).
pub(super) fn split_documents(text: &str) -> Vec<(u64, String)> {
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

/// A serde-saphyr error as a `FileError`, its line counted from the top of the file.
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

/// serde-saphyr's limits, with the node and event counts grown to the
/// document's size: a large document (a slice of 100,000 endpoints, a List
/// of a whole cluster) loads, while alias expansion stays bounded by the
/// text's own size and by the alias-replay limit.
fn yaml_options(doc: &str) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = budget.max_nodes.max(doc.len());
    budget.max_events = budget.max_events.max(2 * doc.len());
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

fn parse_yaml_document(
    path: &Path,
    first_line: u64,
    doc: &str,
    out: &mut FileObjects,
) -> Result<(), FileError> {
    let at = |e: serde_saphyr::Error| yaml_error(path, first_line, &e);
    let tm: TypeMeta = serde_saphyr::from_str_with_options(doc, yaml_options(doc)).map_err(at)?;
    let kind = classify(&tm).map_err(|reason| FileError {
        path: path.to_path_buf(),
        line: Some(first_line),
        reason,
    })?;
    match kind {
        DocKind::Object(kind) => {
            let obj = serde_saphyr::with_deserializer_from_str_with_options(
                doc,
                yaml_options(doc),
                |de| decode(kind, de),
            )
            .map_err(at)?;
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
            let list: Items =
                serde_saphyr::from_str_with_options(doc, yaml_options(doc)).map_err(at)?;
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

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
