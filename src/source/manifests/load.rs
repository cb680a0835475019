//! Reading the directory: which files count, each file's last good
//! objects, and the complete set per kind that a (re)load hands over.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::parse::{FileError, FileObjects, parse_file};
use crate::cluster::{Kind, Object, ObjectRef, SourceEvent};

/// File name extensions read from the directory.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// The kinds a (re)load always reports, each with its complete set.
pub(super) const KINDS: [Kind; 4] = [
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Endpoints,
    Kind::Node,
];

/// The outcome of reading the directory once.
#[derive(Debug, Default)]
pub(super) struct LoadResult {
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

    pub(super) fn count(&self) -> usize {
        self.objects_by_kind.values().map(Vec::len).sum()
    }
}

/// Reads the directory repeatedly, remembering each file's last good objects.
#[derive(Debug)]
pub(super) struct Loader {
    dir: PathBuf,
    last_good: BTreeMap<PathBuf, FileObjects>,
}

impl Loader {
    pub(super) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            last_good: BTreeMap::new(),
        }
    }

    /// Read the directory again; a file that is unchanged is not parsed again,
    /// one that fails keeps its last good objects.
    pub(super) fn reload(&mut self) -> LoadResult {
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

/// The manifest files directly inside `dir`.
pub(super) fn list_files(dir: &Path) -> std::io::Result<BTreeSet<PathBuf>> {
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
