//! Wiring for the binary: which mode, which source, which adapters. Kept in
//! the library so that end-to-end tests can drive the same paths.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::cluster::convert::ConvertOptions;
use crate::cluster::{ClusterState, SourceEvent};
use crate::config::{Config, ProxyMode};
use crate::iptables::IptablesProxier;
use crate::ipvs::IpvsProxier;
use crate::kernel::KernelError;
use crate::kernel::iptables::IptablesCmd;
use crate::kernel::ipvs::Ipvs;
use crate::kernel::ipvs::twin::IpvsTwin;
use crate::kernel::link::Links;
use crate::net::IpFamily;
use crate::netfilter::cleanup::{Leftovers, cleanup_iptables_leftovers};
use crate::source::EventSender;
use crate::sync::{Exit, NoObserver, Observers, Proxier, Schedule, SyncLoop, SyncObserver};

pub fn init_logging(config: &Config) {
    crate::logging::init(config.verbosity, config.log_format);
}

/// Upstream's conntrack settings (nf_conntrack_max, hash size, timeouts,
/// be_liberal). As upstream, a failure stops the start: the node would
/// otherwise run with a conntrack table sized for someone else's workload.
pub fn set_conntrack(config: &Config) -> anyhow::Result<()> {
    match crate::kernel::conntrack_sysctl::apply_conntrack(config) {
        Ok(changed) if !changed.is_empty() => {
            tracing::info!("set conntrack parameters: {}", changed.join(", "));
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => bail!("could not set conntrack parameters from the configuration: {e}"),
    }
}

/// The real IPVS adapter, or why there is none. The generic-netlink family
/// only exists once ip_vs is loaded, so a first refusal is followed by
/// loading the modules IPVS mode needs, and one more try.
pub fn open_ipvs(scheduler: &str) -> Result<Box<dyn Ipvs>, KernelError> {
    use crate::kernel::ipvs::netlink::IpvsNetlink;
    use crate::kernel::modules::{SystemModules, ensure_ipvs_modules};
    match IpvsNetlink::connect() {
        Ok(c) => Ok(Box::new(c)),
        Err(e) if e.is_unsupported() => {
            if let Err(load) = ensure_ipvs_modules(&mut SystemModules, scheduler) {
                return Err(KernelError {
                    reason: format!("{}; {load}", e.reason),
                    ..e
                });
            }
            IpvsNetlink::connect().map(|c| Box::new(c) as Box<dyn Ipvs>)
        }
        Err(e) => Err(e),
    }
}

/// The real link adapter (rtnetlink).
pub fn open_links() -> Result<Box<dyn Links>, KernelError> {
    Ok(Box::new(crate::kernel::link::netlink::NetlinkLinks::new()?))
}

/// What IPVS mode needs from the kernel besides IPVS itself: the scheduler's
/// module, upstream's sysctls, and the connection timeouts asked for. Each
/// failure is logged; none of them stops the proxy.
fn prepare_ipvs_kernel(config: &Config, ipvs: &mut dyn Ipvs) {
    use crate::kernel::modules::{Modules, SystemModules};
    use crate::kernel::sysctl::{ProcSysctl, apply_ipvs_settings, running_kernel};
    let sched = format!("ip_vs_{}", config.ipvs_scheduler);
    if !SystemModules.is_loaded(&sched)
        && let Err(e) = SystemModules.load(&sched)
    {
        tracing::warn!("{e} (the kernel loads schedulers on demand; continuing)");
    }
    match running_kernel()
        .and_then(|k| apply_ipvs_settings(&mut ProcSysctl::default(), k, config.ipvs_strict_arp))
    {
        Ok(changed) if !changed.is_empty() => tracing::info!("set sysctls: {}", changed.join(", ")),
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}"),
    }
    let t = crate::kernel::ipvs::Timeouts {
        tcp: config.ipvs_tcp_timeout.as_secs() as u32,
        tcp_fin: config.ipvs_tcpfin_timeout.as_secs() as u32,
        udp: config.ipvs_udp_timeout.as_secs() as u32,
    };
    if t != Default::default()
        && let Err(e) = ipvs.set_timeouts(t)
    {
        tracing::warn!("{e}");
    }
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
    fn cleanup(&mut self) -> Vec<KernelError> {
        (**self).cleanup()
    }
}

/// Pick the mode: the one asked for, or IPVS with a fallback to iptables
/// when the operator did not choose and the kernel has no IPVS. Starting a
/// mode removes what the other mode left behind, so switching with the flag
/// leaves one clean mode.
pub fn build_proxier(config: &Config) -> anyhow::Result<Box<dyn Proxier>> {
    if config.mode == Some(ProxyMode::Iptables) {
        return iptables_proxier(config);
    }
    let links = open_links().context("opening rtnetlink")?;
    match open_ipvs(&config.ipvs_scheduler) {
        Ok(mut ipvs) => {
            if !config.dry_run {
                prepare_ipvs_kernel(config, ipvs.as_mut());
            }
            let mut proxier = IpvsProxier::new(ipvs, links, config);
            if let Some(ct) = open_conntrack(config) {
                proxier = proxier.with_conntrack(ct);
            }
            match ipvs_companions() {
                // The proxier removes the iptables mode's leftovers itself,
                // once its first sync has taken over the shared chains.
                Some(c) => Ok(Box::new(proxier.with_companions(c))),
                None => {
                    if !config.dry_run {
                        for e in iptables_leftovers(Leftovers::All) {
                            tracing::warn!("removing iptables-mode leftovers: {e}");
                        }
                    }
                    Ok(Box::new(proxier))
                }
            }
        }
        Err(e) if config.dry_run => {
            println!(
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
        Err(e) => {
            tracing::warn!("IPVS is not usable ({e}); falling back to the iptables mode");
            iptables_proxier(config)
        }
    }
}

/// The iptables mode, with NodePorts on the addresses the kernel reports.
fn iptables_proxier(config: &Config) -> anyhow::Result<Box<dyn Proxier>> {
    let mut links = open_links().context("opening rtnetlink")?;
    let addresses: crate::iptables::AddressSource = Box::new(move || {
        Ok(links
            .local_addresses()?
            .into_iter()
            .filter(|l| l.ifname != crate::ipvs::DUMMY_LINK)
            .map(|l| l.addr)
            .collect())
    });
    let mut proxier = IptablesProxier::for_node(config.clone()).with_addresses(addresses);
    if !config.dry_run {
        // First, so that a start refused here leaves the node as it was.
        if proxier.families().contains(&IpFamily::V4) && config.localhost_nodeports() {
            enable_route_localnet()?;
        }
        // Only when the IPVS mode was here: its cleanup removes the chains
        // both modes share, which would leave the rules another proxy's
        // iptables mode wrote (kube-proxy's, being taken over) missing
        // until the first sync.
        for e in ipvs_leftovers(config, true) {
            tracing::warn!("removing IPVS-mode leftovers: {e}");
        }
    }
    if let Some(ct) = open_conntrack(config) {
        proxier = proxier.with_conntrack(ct);
    }
    Ok(Box::new(proxier))
}

/// NodePorts on 127.0.0.1 need the kernel to route packets addressed to
/// loopback once DNATed elsewhere; upstream refuses to start when it cannot
/// set this, and so does kproxy.
fn enable_route_localnet() -> anyhow::Result<()> {
    use crate::kernel::sysctl::{ProcSysctl, ensure};
    const NAME: &str = "net/ipv4/conf/all/route_localnet";
    tracing::info!(
        "setting route_localnet=1 to allow NodePorts on localhost; to change this either disable --iptables-localhost-nodeports or set --nodeport-addresses to leave out loopback addresses"
    );
    ensure(&mut ProcSysctl::default(), NAME, 1).with_context(
        || "NodePorts on localhost (--iptables-localhost-nodeports) need route_localnet",
    )?;
    Ok(())
}

/// The conntrack adapter that deletes stale UDP/SCTP entries after each
/// sync; none for a dry run, and none (said once) on a node whose kernel
/// has no netfilter netlink: the proxy still works, flows only stay on a
/// removed endpoint until their entries time out.
fn open_conntrack(config: &Config) -> Option<Box<dyn crate::kernel::conntrack::Conntrack>> {
    if config.dry_run {
        return None;
    }
    match crate::kernel::conntrack::ConntrackNetlink::connect() {
        Ok(c) => Some(Box::new(c)),
        Err(e) => {
            tracing::warn!("stale UDP/SCTP conntrack entries will not be cleaned: {e}");
            None
        }
    }
}

/// IPVS mode's ipsets and iptables rules. The ipsets are read and written
/// over nfnetlink; the `ipset` program is used only when that socket cannot
/// be opened. Without either IPVS still balances, but nothing masquerades
/// or filters: say so loudly.
fn ipvs_companions() -> Option<crate::ipvs::Companions> {
    use crate::kernel::ipset::{IpsetCmd, Ipsets};
    use crate::kernel::ipset_netlink::IpsetNetlink;
    let ipsets: Box<dyn Ipsets> = match IpsetNetlink::connect() {
        Ok(nl) => Box::new(nl),
        Err(e) if IpsetCmd::available() => {
            tracing::warn!("ipsets over netlink: {e}; using the ipset program instead");
            Box::new(IpsetCmd)
        }
        Err(e) => {
            tracing::error!(
                "ipsets cannot be reached ({e}) and the ipset program is missing: IPVS mode runs without its masquerade and filter rules"
            );
            return None;
        }
    };
    let ipt = IptablesCmd::detect();
    let families = ipt.families();
    Some(crate::ipvs::Companions::new(
        Box::new(ipt),
        ipsets,
        families,
    ))
}

/// Remove the iptables mode's chains and jumps; returns the errors.
fn iptables_leftovers(scope: Leftovers) -> Vec<KernelError> {
    let mut ipt = IptablesCmd::detect();
    let families = ipt.families();
    cleanup_iptables_leftovers(&mut ipt, &families, scope)
}

/// Remove the IPVS mode's virtual servers and kube-ipvs0. Without the IPVS
/// family there can be none, and no module is loaded to find out. With
/// `only_if_present`, nothing is removed unless the IPVS mode left
/// something of its own (`IpvsProxier::leftovers_present`).
fn ipvs_leftovers(config: &Config, only_if_present: bool) -> Vec<KernelError> {
    let ipvs = match crate::kernel::ipvs::netlink::IpvsNetlink::connect() {
        Ok(c) => Box::new(c) as Box<dyn Ipvs>,
        Err(e) if e.is_unsupported() => return Vec::new(),
        Err(e) => return vec![e],
    };
    match open_links() {
        Ok(links) => {
            let mut proxier = IpvsProxier::new(ipvs, links, config);
            if let Some(c) = ipvs_companions() {
                proxier = proxier.with_companions(c);
            }
            if only_if_present && !proxier.leftovers_present() {
                return Vec::new();
            }
            proxier.cleanup()
        }
        Err(e) => vec![e],
    }
}

/// Where cluster objects come from, made ready before the kernel is
/// touched: a start that cannot work (no such directory, an unreadable
/// kubeconfig, no credentials, missing permissions) exits with the reason
/// and leaves the node as it was.
pub enum Source {
    Manifests(std::path::PathBuf),
    Api(kube::Client),
}

impl Source {
    pub async fn prepare(config: &Config) -> anyhow::Result<Source> {
        if let Some(dir) = &config.manifests {
            if !dir.is_dir() {
                bail!("--manifests {}: not a directory", dir.display());
            }
            return Ok(Source::Manifests(dir.clone()));
        }
        let client = crate::source::kube::client(config).await?;
        use crate::source::access::{self, Access};
        match access::check(&client).await {
            Access::Granted => {}
            denied @ Access::Denied { .. } => bail!("{}", denied.refusal().unwrap_or_default()),
            Access::Unknown(why) => tracing::warn!(
                "could not check kproxy's permissions with the API server ({why}); starting anyway"
            ),
        }
        Ok(Source::Api(client))
    }

    /// Where this run's Kubernetes Events go.
    pub fn events(&self, config: &Config) -> crate::events::Events {
        match self {
            Source::Api(client) => crate::events::Events::to_api(client.clone(), &config.hostname),
            Source::Manifests(_) => crate::events::Events::none(&config.hostname),
        }
    }

    /// Start delivering events into `tx`, in the background.
    pub fn start(self, config: &Config, tx: EventSender) {
        match self {
            Source::Manifests(dir) => {
                tokio::spawn(async move {
                    if let Err(e) = crate::source::manifests::run(dir, tx).await {
                        tracing::error!("manifests source stopped: {e:#}");
                    }
                });
            }
            Source::Api(client) => {
                let node = config.hostname.clone();
                tokio::spawn(async move {
                    if let Err(e) = crate::source::kube::run(client, node, tx).await {
                        tracing::error!("API server source stopped: {e:#}");
                    }
                });
            }
        }
    }
}

fn new_state(config: &Config) -> ClusterState {
    ClusterState::new(ConvertOptions {
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

/// The health and metrics servers; their telemetry observes the sync loop.
/// A server that cannot be bound is logged and recorded as a Warning event
/// on the Node (upstream's FailedToStartProxierHealthcheck /
/// FailedToStartMetricServer), and the proxy goes on without it, unless
/// `--bind-address-hard-fail` makes it fatal.
pub async fn start_http(
    config: &Config,
    mode: ProxyMode,
    events: &crate::events::Events,
) -> anyhow::Result<Arc<dyn SyncObserver>> {
    if config.once {
        return Ok(Arc::new(NoObserver));
    }
    let telemetry = Arc::new(crate::http::Telemetry::for_config(config, mode));
    // Upstream's health server finds the node ineligible until it has seen
    // its Node; a manifests directory need not carry one.
    telemetry.require_node(config.manifests.is_none());
    let families = IptablesCmd::detect().families();
    telemetry.set_families(families.iter().map(|f| f.name()).collect());
    let running = crate::http::start(config, Arc::clone(&telemetry)).await?;
    for (server, err) in running.failed {
        if config.bind_address_hard_fail {
            return Err(err.context("--bind-address-hard-fail is set"));
        }
        let reason = match server {
            crate::http::Server::Healthz => "FailedToStartProxierHealthcheck",
            crate::http::Server::Metrics => "FailedToStartMetricServer",
        };
        tracing::error!("{err:#}; going on without it");
        events.record(
            events.node_ref(),
            kube::runtime::events::EventType::Warning,
            reason,
            crate::events::START_ACTION,
            Some(format!("{err:#}")),
        );
    }
    let health_checks = health_check_servers(config, &telemetry, events, families);
    Ok(Arc::new(Observers(vec![
        telemetry,
        Arc::new(health_checks),
    ])))
}

/// The health-check node port servers of the families the node programs,
/// on upstream's addresses (`--nodeport-addresses`, `primary` resolved
/// from the Node as it is when a server starts). A port that cannot be
/// bound counts in `kproxy_healthcheck_bind_errors_total` and becomes
/// upstream's Warning event on its Service.
fn health_check_servers(
    config: &Config,
    telemetry: &Arc<crate::http::Telemetry>,
    events: &crate::events::Events,
    families: Vec<crate::net::IpFamily>,
) -> crate::http::healthcheck::HealthCheckServers {
    use crate::http::healthcheck::{HealthCheckServers, Servers, listen_addresses};
    let cfg = config.clone();
    // Opened on first need: only explicit NodePort CIDRs list addresses.
    let links: std::sync::Mutex<Option<Box<dyn Links>>> = std::sync::Mutex::new(None);
    let local_ips = move || -> Result<Vec<std::net::IpAddr>, String> {
        let mut guard = links.lock().map_err(|e| e.to_string())?;
        if guard.is_none() {
            *guard = Some(open_links().map_err(|e| e.to_string())?);
        }
        let l = guard.as_mut().ok_or("no rtnetlink handle")?;
        let addrs = l.local_addresses().map_err(|e| e.to_string())?;
        Ok(addrs.into_iter().map(|a| a.addr).collect())
    };
    let listen = Arc::new(move |family, node_addresses: &[std::net::IpAddr]| {
        let in_effect = crate::config::system::nodeport_addresses_for(&cfg, node_addresses);
        listen_addresses(family, &in_effect, &local_ips)
    });
    let t = Arc::clone(telemetry);
    let servers = Servers::new(families, listen, Arc::new(move || t.health().healthy));
    let (t, ev) = (Arc::clone(telemetry), events.clone());
    HealthCheckServers::spawn(servers, move |f| {
        t.count_healthcheck_bind_error();
        ev.healthcheck_failed(&f.service, f.message(ev.node()));
    })
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
        schedule: Schedule::new(min, max),
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
    let mut errors = ipvs_leftovers(config, false);
    errors.extend(iptables_leftovers(Leftovers::All));
    for e in &errors {
        eprintln!("kproxy: cleanup: {e}");
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
