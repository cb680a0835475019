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
//!
//! - `parse`: one file's text → objects, or where it is wrong.
//! - `load`: the directory → the complete set per kind, last good versions kept.
//! - `watch`: the task that reloads on change and feeds the sync loop.

mod load;
mod parse;
mod watch;

pub use parse::{FileError, parse_text};
pub use watch::run;

#[cfg(test)]
mod tests;
