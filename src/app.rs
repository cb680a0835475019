//! Wiring for the binary: which mode, which source, which adapters. Kept in
//! the library so that end-to-end tests can drive the same paths.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::cluster::convert::ConvertOptions;
use crate::cluster::{ClusterState, SourceEvent};
use crate::config::{Config, Flags, ProxyMode};
use crate::ipvs::IpvsProxier;
use crate::kernel::KernelError;
use crate::kernel::ipvs::Ipvs;
use crate::kernel::ipvs::twin::IpvsTwin;
use crate::kernel::link::Links;
use crate::source::EventSender;
use crate::sync::{Exit, NoObserver, Periods, Proxier, SyncLoop, SyncObserver};

/// Defaults, then the config file (if any), then the flags given.
pub fn load_config(flags: &Flags) -> anyhow::Result<Config> {
    let base = Config::default();
    if flags.config.is_some() {
        bail!("--config: KubeProxyConfiguration files are not supported yet");
    }
    flags.apply_to(base)
}

pub fn init_logging(config: &Config) {
    let level = match config.verbosity {
        0..=1 => "info",
        2..=3 => "info",
        4..=5 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        crate::config::LogFormat::Json => builder.json().init(),
        crate::config::LogFormat::Text => builder.init(),
    }
}

/// The real IPVS adapter, or why there is none. The family only exists once
/// ip_vs is loaded, so a first refusal is followed by one `modprobe ip_vs`.
pub fn open_ipvs() -> Result<Box<dyn Ipvs>, KernelError> {
    use crate::kernel::ipvs::netlink::IpvsNetlink;
    match IpvsNetlink::connect() {
        Ok(c) => Ok(Box::new(c)),
        Err(e) if e.is_unsupported() => {
            let loaded = std::process::Command::new("modprobe")
                .arg("ip_vs")
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if loaded {
                IpvsNetlink::connect().map(|c| Box::new(c) as Box<dyn Ipvs>)
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

/// The real link adapter.
pub fn open_links() -> Result<Box<dyn Links>, KernelError> {
    Ok(Box::new(crate::kernel::link::twin::LinksTwin::default()))
}

impl Proxier for Box<dyn Proxier> {
    fn mode(&self) -> ProxyMode {
        (**self).mode()
    }
    fn sync(
        &mut self,
        state: &ClusterState,
        changed: Option<&std::collections::BTreeSet<crate::cluster::ServiceName>>,
    ) -> crate::sync::SyncOutcome {
        (**self).sync(state, changed)
    }
    fn dry_run(&mut self, state: &ClusterState) -> anyhow::Result<Vec<String>> {
        (**self).dry_run(state)
    }
    fn cleanup(&mut self) -> Vec<String> {
        (**self).cleanup()
    }
}

/// Pick the mode: the one asked for, or IPVS with a fallback when the
/// operator did not choose.
pub fn build_proxier(config: &Config) -> anyhow::Result<Box<dyn Proxier>> {
    match config.mode {
        Some(ProxyMode::Iptables) => {
            bail!("--proxy-mode iptables is not available in this build yet")
        }
        Some(ProxyMode::Ipvs) | None => {}
    }
    let links = open_links().context("opening rtnetlink")?;
    match open_ipvs() {
        Ok(ipvs) => Ok(Box::new(IpvsProxier::new(ipvs, links, config))),
        Err(e) if config.dry_run => {
            eprintln!(
                "# IPVS is not available in this kernel ({e}); showing the changes against an empty IPVS table"
            );
            Ok(Box::new(IpvsProxier::new(
                Box::new(IpvsTwin::new()),
                links,
                config,
            )))
        }
        Err(e) if config.mode == Some(ProxyMode::Ipvs) => {
            bail!("--proxy-mode ipvs was requested but IPVS is not usable: {e}")
        }
        Err(e) => bail!(
            "IPVS is not usable ({e}) and the iptables fallback is not available in this build yet"
        ),
    }
}

pub async fn start_source(config: &Config, tx: EventSender) -> anyhow::Result<()> {
    match &config.manifests {
        Some(dir) => {
            let dir = dir.clone();
            if !dir.is_dir() {
                bail!("--manifests {}: not a directory", dir.display());
            }
            tokio::spawn(async move {
                if let Err(e) = crate::source::manifests::run(dir, tx).await {
                    tracing::error!("manifests source stopped: {e:#}");
                }
            });
            Ok(())
        }
        None => {
            bail!("the API server source is not available in this build yet: use --manifests DIR")
        }
    }
}

fn new_state(config: &Config) -> ClusterState {
    ClusterState::new(ConvertOptions {
        nodeport_range: config.nodeport_range,
        node_name: config.hostname.clone(),
    })
}

/// Wait for the source's initial state, print what a sync would change.
pub async fn dry_run(
    mut proxier: Box<dyn Proxier>,
    config: &Config,
    mut rx: UnboundedReceiver<SourceEvent>,
) -> anyhow::Result<ExitCode> {
    let mut state = new_state(config);
    while let Some(ev) = rx.recv().await {
        if matches!(ev, SourceEvent::Synced) {
            break;
        }
        for p in state.apply(ev) {
            tracing::warn!(object = %p.object, "{}", p.reason);
        }
    }
    let lines = tokio::task::block_in_place(|| proxier.dry_run(&state))?;
    for l in lines {
        println!("{l}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn start_http(_config: &Config) -> anyhow::Result<Arc<dyn SyncObserver>> {
    Ok(Arc::new(NoObserver))
}

pub async fn run_loop(
    proxier: Box<dyn Proxier>,
    config: &Config,
    rx: UnboundedReceiver<SourceEvent>,
    observer: Arc<dyn SyncObserver>,
) -> ExitCode {
    let (min, max) = config.sync_periods(proxier.mode());
    let sync_loop = SyncLoop {
        proxier,
        state: new_state(config),
        periods: Periods { min, max },
        observer,
        once: config.once,
    };
    match sync_loop.run(rx).await {
        Exit::Once(outcome) if outcome.ok() => ExitCode::SUCCESS,
        Exit::Once(outcome) => {
            for e in &outcome.errors {
                eprintln!("kproxy: {e}");
            }
            ExitCode::FAILURE
        }
        Exit::SourcesClosed => {
            tracing::error!("every source stopped");
            ExitCode::FAILURE
        }
    }
}

/// `--cleanup`: remove what kproxy owns in both modes; report every error.
pub fn cleanup(config: &Config) -> ExitCode {
    let mut errors = Vec::new();
    match (open_ipvs(), open_links()) {
        (Ok(ipvs), Ok(links)) => errors.extend(IpvsProxier::new(ipvs, links, config).cleanup()),
        (Err(e), _) if e.is_unsupported() => {
            tracing::info!("no IPVS in this kernel: nothing to clean there")
        }
        (Err(e), _) | (_, Err(e)) => errors.push(e.to_string()),
    }
    for e in &errors {
        eprintln!("kproxy: cleanup: {e}");
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
