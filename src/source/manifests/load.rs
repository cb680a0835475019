//! Reading the directory: which files count, what each file defined when
//! it last parsed, and the changes a (re)load hands over.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};

use super::parse::{FileError, parse_file};
use crate::cluster::{Object, ObjectRef, SourceEvent};

/// File name extensions read from the directory.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// The outcome of reading the directory once. The objects themselves went
/// out through the `emit` callback as they were parsed.
#[derive(Debug, Default)]
pub(super) struct LoadResult {
    /// Objects the directory defines now (each counted once).
    pub count: usize,
    /// Files that failed; their last good objects (if any) stay in use.
    pub errors: Vec<FileError>,
    /// `apiVersion kind` of every ignored object kind seen, e.g. `apps/v1 Deployment`.
    pub ignored_kinds: BTreeSet<String>,
    /// Objects defined in more than one place; the last definition is kept.
    pub duplicates: Vec<String>,
    /// Whether any object was sent or withdrawn (always true for a first
    /// load that found objects).
    pub changed: bool,
}

/// What the loader remembers of a file that parsed: not its objects (the
/// store keeps those, converted), only enough to tell what a new version
/// changes.
#[derive(Clone, Debug, Default)]
struct FileEntry {
    /// A hash of the text: an unchanged file is not parsed again.
    text_hash: u64,
    /// The objects it defines, in document order.
    refs: Vec<ObjectRef>,
    ignored: BTreeSet<String>,
}

fn text_hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Reads the directory repeatedly, remembering what each file defined.
#[derive(Debug)]
pub(super) struct Loader {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileEntry>,
}

impl Loader {
    pub(super) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
        }
    }

    /// Read the directory again and `emit` what changed: an `Apply` for
    /// every object of a changed file that is its final definition (the
    /// last in file and document order), a `Delete` for every object no
    /// file defines any more. Objects are handed over file by file as they
    /// are parsed, so a large directory is never held in memory whole. A
    /// file that is unchanged is not parsed again; one that fails keeps its
    /// last good objects.
    pub(super) fn reload(&mut self, emit: &mut dyn FnMut(SourceEvent)) -> LoadResult {
        let mut result = LoadResult::default();
        let before = self.files.clone();
        let listed = match list_files(&self.dir) {
            Ok(files) => files,
            // The directory itself is unreadable (unmounted, renamed): keep
            // everything rather than withdraw every Service at once.
            Err(e) => {
                result.errors.push(FileError {
                    path: self.dir.clone(),
                    line: None,
                    reason: format!("cannot list directory: {e}"),
                });
                self.summarize(&mut result);
                return result;
            }
        };
        // A deleted file withdraws its objects; that was the operator's intent.
        self.files.retain(|p, _| listed.contains(p));
        let changed = changed_files(&listed, &self.files, &mut result.errors);
        let mut deferred: BTreeMap<ObjectRef, (PathBuf, Object)> = BTreeMap::new();
        for path in &changed {
            // Read again rather than keep every text from the first pass.
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) => {
                    result.errors.push(FileError {
                        path: path.clone(),
                        line: None,
                        reason: format!("cannot read: {e}"),
                    });
                    continue;
                }
            };
            let hash = text_hash(&text);
            let parsed = match parse_file(path, &text) {
                Ok(parsed) => parsed,
                Err(e) => {
                    result.errors.push(e);
                    continue;
                }
            };
            self.files.insert(
                path.clone(),
                FileEntry {
                    text_hash: hash,
                    refs: parsed.objects.iter().map(Object::object_ref).collect(),
                    ignored: parsed.ignored,
                },
            );
            // A later file's definition wins over this one: one that did
            // not change is already in the store, one still to be read
            // decides when it is read.
            for obj in parsed.objects {
                let r = obj.object_ref();
                result.changed |= self.send_or_defer(path, r, obj, &changed, &mut deferred, emit);
            }
            // Objects deferred to this file that it no longer defines go to
            // the next file that does, or out now when none does.
            let waiting: Vec<ObjectRef> = deferred
                .iter()
                .filter(|(_, (later, _))| later == path)
                .map(|(r, _)| r.clone())
                .collect();
            for r in waiting {
                let (_, obj) = deferred.remove(&r).unwrap();
                if !self.defines(path, &r) {
                    result.changed |=
                        self.send_or_defer(path, r, obj, &changed, &mut deferred, emit);
                }
            }
        }
        // A deferred object whose later file failed: that file's last good
        // version stays, so the object is not sent.
        drop(deferred);
        result.changed |= self.withdraw_and_reapply(&before, &changed, emit, &mut result.errors);
        self.summarize(&mut result);
        result
    }

    /// After a reload: `Delete` what no file defines any more, and re-send
    /// objects whose final definition moved to a file that did not change
    /// (the later one that defined them changed or went away).
    fn withdraw_and_reapply(
        &self,
        before: &BTreeMap<PathBuf, FileEntry>,
        changed: &BTreeSet<PathBuf>,
        emit: &mut dyn FnMut(SourceEvent),
        errors: &mut Vec<FileError>,
    ) -> bool {
        let winners_before = winners(before);
        let winners_now = winners(&self.files);
        let mut any = false;
        let mut reread: BTreeMap<&PathBuf, BTreeSet<&ObjectRef>> = BTreeMap::new();
        for (r, was) in &winners_before {
            match winners_now.get(r) {
                None => {
                    any = true;
                    emit(SourceEvent::Delete((*r).clone()));
                }
                Some(now) if now != was && !changed.contains(*now) => {
                    reread.entry(*now).or_default().insert(*r);
                }
                Some(_) => {}
            }
        }
        for (path, wanted) in reread {
            let objects = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|text| parse_file(path, &text).map_err(|e| e.reason));
            match objects {
                Ok(parsed) => {
                    for obj in parsed.objects {
                        if wanted.contains(&obj.object_ref()) {
                            any = true;
                            emit(SourceEvent::Apply(obj));
                        }
                    }
                }
                Err(reason) => errors.push(FileError {
                    path: path.clone(),
                    line: None,
                    reason,
                }),
            }
        }
        any
    }

    /// Send `obj` (defined in `path`) unless a later file defines it too:
    /// an unchanged later file already gave the store its version, a
    /// changed one decides when it is read (`obj` waits in `deferred`).
    /// Returns whether it was sent.
    fn send_or_defer(
        &self,
        path: &Path,
        r: ObjectRef,
        obj: Object,
        changed: &BTreeSet<PathBuf>,
        deferred: &mut BTreeMap<ObjectRef, (PathBuf, Object)>,
        emit: &mut dyn FnMut(SourceEvent),
    ) -> bool {
        match self.later_definer(path, &r) {
            Some(later) if changed.contains(&later) => {
                deferred.insert(r, (later, obj));
                false
            }
            Some(_) => false,
            None => {
                emit(SourceEvent::Apply(obj));
                true
            }
        }
    }

    /// The first file after `path` (in name order) that defines `r`.
    fn later_definer(&self, path: &Path, r: &ObjectRef) -> Option<PathBuf> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.files
            .range::<Path, _>((Excluded(path), Unbounded))
            .find(|(_, f)| f.refs.contains(r))
            .map(|(p, _)| p.clone())
    }

    fn defines(&self, path: &Path, r: &ObjectRef) -> bool {
        self.files.get(path).is_some_and(|f| f.refs.contains(r))
    }

    /// Count, ignored kinds and duplicates, from what the files define now.
    fn summarize(&self, result: &mut LoadResult) {
        let mut defined: HashMap<&ObjectRef, &Path> = HashMap::new();
        for (path, file) in &self.files {
            result.ignored_kinds.extend(file.ignored.iter().cloned());
            for r in &file.refs {
                if let Some(first) = defined.get(r) {
                    result.duplicates.push(format!(
                        "{r} is defined in {} and again in {}; the later one is used",
                        first.display(),
                        path.display()
                    ));
                } else {
                    defined.insert(r, path);
                }
            }
        }
        result.count = defined.len();
    }
}

/// The listed files that are new or differ from what `known` last parsed.
/// A file that cannot be read is an error and keeps its entry.
fn changed_files(
    listed: &BTreeSet<PathBuf>,
    known: &BTreeMap<PathBuf, FileEntry>,
    errors: &mut Vec<FileError>,
) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for path in listed {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if known
                    .get(path)
                    .is_none_or(|f| f.text_hash != text_hash(&text))
                {
                    out.insert(path.clone());
                }
            }
            Err(e) => errors.push(FileError {
                path: path.clone(),
                line: None,
                reason: format!("cannot read: {e}"),
            }),
        }
    }
    out
}

/// Each object's final definition: the last file (in name order) defining it.
fn winners(files: &BTreeMap<PathBuf, FileEntry>) -> BTreeMap<&ObjectRef, &PathBuf> {
    let mut out = BTreeMap::new();
    for (path, file) in files {
        for r in &file.refs {
            out.insert(r, path);
        }
    }
    out
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

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
