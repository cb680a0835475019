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
//! The first load sends every object; a reload sends the objects of the
//! files that changed and deletes what no file defines any more, so a
//! deleted file or object disappears from the cluster state. Objects go to
//! the store file by file as they are parsed, and the source keeps only
//! each file's hash and object names: the store's converted model is the
//! one copy of the cluster in memory. A file that cannot be read or parsed
//! keeps contributing the objects of its last good version: a half-saved
//! edit must not withdraw Services that are serving traffic. Objects without a namespace land in `default`, as
//! `kubectl apply` would put them.
//!
//! - `parse`: one file's text → objects, or where it is wrong.
//! - `load`: the directory → what changed since the last read, last good versions kept.
//! - `watch`: the task that reloads on change and feeds the sync loop.

mod load;
mod parse;
mod watch;

pub use parse::{FileError, parse_text};
pub use watch::run;

#[cfg(test)]
mod tests;
