//! `--config FILE` and `--write-config-to FILE`: a KubeProxyConfiguration
//! (kubeproxy.config.k8s.io/v1alpha1), YAML or JSON.
//!
//! Reading (`read.rs`) walks the document by hand rather than through
//! derived structs so that every error names the field path
//! (`ipvs.syncPeriod: "soon" is not a duration`), and applies upstream's
//! v1alpha1 defaulting (a zero `ipvs.syncPeriod`, as `kube-proxy
//! --write-config-to` writes it for a mode not in use, means the default).
//! Every v1alpha1 field is accepted: those kproxy acts on map into
//! `Config`, the others are kept (for writing back) and listed as ignored
//! when they differ from the default. Unknown fields are accepted with a
//! warning, as kube-proxy's lenient decoding accepts them.
//!
//! Writing (`write.rs`) emits every field with upstream's names, key
//! order and Go duration format.

mod read;
mod write;

use std::fmt;
use std::path::Path;

use anyhow::Context as _;

use super::Config;
use super::flags::Note;

pub use write::write_config;

pub(crate) const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
pub(crate) const KIND: &str = "KubeProxyConfiguration";

/// A problem with one field of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `ipvs.syncPeriod`, `nodePortAddresses[1]`, or empty for the document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

pub(crate) fn err(path: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Read `path` into a base Config (defaults for everything the file leaves
/// out), logging what has no effect.
pub fn load(path: impl AsRef<Path>) -> anyhow::Result<Config> {
    let loaded = read(path)?;
    loaded.log_ignored();
    Ok(loaded.config)
}

/// `load` without the logging, for callers that set up logging from the
/// file's own settings first and call `Loaded::log_ignored` afterwards.
pub fn read(path: impl AsRef<Path>) -> anyhow::Result<Loaded> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    parse(&text).with_context(|| format!("config file {}", path.display()))
}

/// The result of parsing a file: the Config, the fields accepted with
/// a non-default value that kproxy does not act on, and unknown fields.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub ignored: Vec<String>,
    pub unknown: Vec<String>,
}

impl Loaded {
    /// What to say about the file, each field once.
    pub fn notes(&self) -> Vec<Note> {
        let mut notes: Vec<Note> = self
            .unknown
            .iter()
            .map(|f| {
                Note::warn(format!(
                    "config file field {f} is not a KubeProxyConfiguration field; ignored (kube-proxy's lenient decoding ignores it too)"
                ))
            })
            .collect();
        notes.extend(self.ignored.iter().map(|f| {
            Note::info(format!(
                "config file field {f} is accepted but has no effect in kproxy"
            ))
        }));
        notes
    }

    pub(crate) fn log_ignored(&self) {
        for n in self.notes() {
            n.log();
        }
    }
}

/// Parse a KubeProxyConfiguration document (YAML or JSON).
pub fn parse(text: &str) -> Result<Loaded, FieldError> {
    // YAML is a superset of JSON, so one parser reads both.
    let doc: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| err("", format!("not YAML: {e}")))?;
    let (config, unknown) = read::document(&doc)?;
    Ok(Loaded {
        ignored: read::ignored_fields(&config),
        config,
        unknown,
    })
}

#[cfg(test)]
mod tests;
