//! kproxy's command line: flags → config → mode → source → sync loop.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::sync::mpsc;

use kproxy::app;
use kproxy::config::{Config, Flags};

fn main() -> ExitCode {
    one_malloc_arena();
    let flags = Flags::parse();
    if let Some(text) = flags.version_text() {
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    let resolved = match kproxy::config::resolve(&flags) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kproxy: {e:#}");
            return ExitCode::from(2);
        }
    };
    app::init_logging(&resolved.config);
    // Each ignored flag and file field, once.
    resolved.log_notes();
    let config = resolved.config;
    // Before anything else, as upstream: write the effective configuration
    // and exit, touching neither the API server nor the kernel.
    if let Some(path) = &config.write_config_to {
        return match kproxy::config::file::write_config(&config, path) {
            Ok(()) => {
                tracing::info!(file = %path.display(), "wrote the configuration");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kproxy: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kproxy: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(config)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("kproxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<ExitCode> {
    if config.cleanup {
        return Ok(app::cleanup(&config));
    }
    // The source first: nothing in the kernel changes unless it can work.
    // `--init-only` needs no source: it is the privileged set-up alone.
    let source = if config.init_only {
        None
    } else {
        Some(app::Source::prepare(&config).await?)
    };
    if !config.dry_run {
        // Before the proxier, as upstream: the iptables mode reads
        // nf_conntrack_tcp_be_liberal.
        app::set_conntrack(&config)?;
    }
    let proxier = app::build_proxier(&config).context("setting up the proxy mode")?;
    let Some(source) = source else {
        tracing::info!("--init-only: the kernel is set up; exiting");
        return Ok(ExitCode::SUCCESS);
    };
    kproxy::config::system::apply_oom_score_adj(config.oom_score_adj);
    let events = source.events(&config);
    let (tx, rx) = mpsc::unbounded_channel();
    source.start(&config, tx);
    if config.dry_run {
        return app::dry_run(proxier, &config, rx).await;
    }
    let observer = app::start_http(&config, proxier.mode(), &events).await?;
    if !config.once {
        events.starting();
    }
    let exit = app::run_loop(proxier, &config, rx, Arc::clone(&observer)).await;
    Ok(exit)
}

/// glibc gives every thread that allocates an arena of its own, and what a
/// sync frees in one stays resident. kproxy allocates nearly everything on
/// its one sync thread, so one arena is enough: peak RSS of `--once` at
/// 1,000 Services x 10 endpoints goes from 62 to 42 MiB, at 10,000 from
/// 284 to 254 MiB (VmHWM, iptables mode, this project's build machine).
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any other thread exists;
    // mallopt only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
