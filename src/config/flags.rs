//! The command line as kube-proxy's pflag reads it, and which of its flags
//! take effect: `Flags` remembers which flags were given (clap's value
//! source, not Option-ness), so that upstream's precedence between flags and
//! `--config FILE` can be applied (see `apply.rs`).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::ops::Deref;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser};

use super::Config;
pub use super::args::FlagValues;

/// The parsed command line.
#[derive(Debug, Clone)]
pub struct Flags {
    values: FlagValues,
    /// Long names (`ipvs-sync-period`, `v`) of the flags given on the
    /// command line.
    given: BTreeSet<String>,
}

impl Deref for Flags {
    type Target = FlagValues;
    fn deref(&self) -> &FlagValues {
        &self.values
    }
}

impl Default for Flags {
    /// No flags at all: every default.
    fn default() -> Self {
        Self::try_parse_from(["kproxy"]).expect("the defaults parse")
    }
}

impl Flags {
    /// Whether `--name` was given on the command line.
    pub fn given(&self, name: &str) -> bool {
        self.given.contains(name)
    }

    /// The long names of the flags given, sorted.
    pub(crate) fn given_flags(&self) -> impl Iterator<Item = &str> {
        self.given.iter().map(String::as_str)
    }

    /// The effective configuration: `base` (the defaults, or a config
    /// file's contents when --config is given) with the flags that apply
    /// on top, validated. `resolve` also reads the file and keeps the notes.
    pub(crate) fn apply_to(&self, base: Config) -> anyhow::Result<Config> {
        super::apply::apply(self, base)
    }

    /// What to tell the operator about the flags, once logging is set up:
    /// each flag that has no effect, named once, with the reason.
    pub fn notes(&self) -> Vec<Note> {
        super::apply::notes(self)
    }
}

fn base_command() -> clap::Command {
    clap::Command::new("kproxy")
        .about(
            "kproxy: programs this node's kernel so that Kubernetes Service IPs reach \
             their pods, with IPVS (default) or iptables NAT rules. A drop-in \
             replacement for kube-proxy: same flags, same config file, same kernel \
             object names.",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .disable_version_flag(true)
        // pflag: the last occurrence of a flag wins.
        .args_override_self(true)
}

impl CommandFactory for Flags {
    fn command() -> clap::Command {
        FlagValues::augment_args(base_command())
    }
    fn command_for_update() -> clap::Command {
        FlagValues::augment_args_for_update(base_command())
    }
}

impl FromArgMatches for Flags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let values = FlagValues::from_arg_matches(m)?;
        let cmd = Self::command();
        let given = m
            .ids()
            .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .filter_map(|id| {
                cmd.get_arguments()
                    .find(|a| a.get_id() == id)
                    .and_then(|a| a.get_long())
                    .map(str::to_string)
            })
            .collect();
        Ok(Self { values, given })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Flags {
    /// What `--version` / `--version=raw` print before exiting 0, as
    /// upstream's verflag does; None for `--version=false` and for
    /// `--version=vX.Y.Z` (upstream: the version to report; noted as
    /// ignored).
    pub fn version_text(&self) -> Option<String> {
        let v = self.version.as_deref()?;
        let version = env!("CARGO_PKG_VERSION");
        match v {
            "raw" => Some(format!("kproxy {version} (drop-in for kube-proxy v1.36)\n")),
            _ if super::values::parse_go_bool(v) == Ok(true) => Some(format!("kproxy {version}\n")),
            _ => None,
        }
    }
}

/// kube-proxy's flag names are normalised as component-base normalises
/// them: `--ipvs_sync_period` is `--ipvs-sync-period`. Values (after `=`)
/// and everything after a bare `--` are left alone.
pub(crate) fn normalize_args<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut out = Vec::new();
    let mut rest_verbatim = false;
    for (i, arg) in args.into_iter().enumerate() {
        let arg: OsString = arg.into();
        if i == 0 || rest_verbatim {
            out.push(arg);
            continue;
        }
        match arg.to_str() {
            Some("--") => {
                rest_verbatim = true;
                out.push(arg);
            }
            Some(s) if s.starts_with("--") && s.contains('_') => {
                let (name, value) = match s.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (s, None),
                };
                let mut fixed = name.replace('_', "-");
                if let Some(v) = value {
                    fixed.push('=');
                    fixed.push_str(v);
                }
                out.push(fixed.into());
            }
            _ => out.push(arg),
        }
    }
    out
}

impl Parser for Flags {
    fn parse() -> Self {
        Self::parse_from(std::env::args_os())
    }

    fn try_parse() -> Result<Self, clap::Error> {
        Self::try_parse_from(std::env::args_os())
    }

    fn parse_from<I, T>(itr: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let flags = Self::try_parse_from(itr).unwrap_or_else(|e| e.exit());
        if let Some(text) = flags.version_text() {
            print!("{text}");
            std::process::exit(0);
        }
        flags
    }

    fn try_parse_from<I, T>(itr: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut cmd = Self::command();
        let matches = cmd.try_get_matches_from_mut(normalize_args(itr))?;
        Self::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
    }
}

/// How loudly to say a note.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteLevel {
    Warn,
    Info,
    Debug,
}

/// Something to log once logging is set up (an ignored flag or field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub level: NoteLevel,
    pub message: String,
}

impl Note {
    pub(crate) fn warn(message: impl Into<String>) -> Self {
        Self {
            level: NoteLevel::Warn,
            message: message.into(),
        }
    }
    pub fn info(message: impl Into<String>) -> Self {
        Self {
            level: NoteLevel::Info,
            message: message.into(),
        }
    }

    pub fn log(&self) {
        match self.level {
            NoteLevel::Warn => tracing::warn!("{}", self.message),
            NoteLevel::Info => tracing::info!("{}", self.message),
            NoteLevel::Debug => tracing::debug!("{}", self.message),
        }
    }
}

/// The effective configuration and what to say about how it was made.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: Config,
    pub notes: Vec<Note>,
}

impl Resolved {
    /// Log every note once (call after logging is set up).
    pub fn log_notes(&self) {
        for n in &self.notes {
            n.log();
        }
    }
}

/// Defaults, then the config file if --config is given, then the flags
/// that apply on top of it (upstream's precedence), validated. Nothing is
/// logged here: logging is set up from the result, then `log_notes`.
pub fn resolve(flags: &Flags) -> anyhow::Result<Resolved> {
    let mut notes = flags.notes();
    let base = match &flags.config {
        Some(path) => {
            let loaded = super::file::read(path)?;
            notes.extend(loaded.notes());
            loaded.config
        }
        None => Config::default(),
    };
    let config = flags.apply_to(base)?;
    Ok(Resolved { config, notes })
}

#[cfg(test)]
#[path = "flags_tests.rs"]
mod tests;
