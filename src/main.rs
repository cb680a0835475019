//! kproxy's command line: flags → config → mode → source → sync loop.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::sync::mpsc;

use kproxy::app;
use kproxy::config::{Config, Flags};

fn main() -> ExitCode {
    let flags = Flags::parse();
    let (config, loaded) = match app::load_config(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kproxy: {e:#}");
            return ExitCode::from(2);
        }
    };
    app::init_logging(&config);
    if let Some(l) = loaded {
        l.log_ignored();
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
    let source = app::Source::prepare(&config).await?;
    let events = source.events(&config);
    let proxier = app::build_proxier(&config).context("setting up the proxy mode")?;
    let (tx, rx) = mpsc::unbounded_channel();
    source.start(&config, tx);
    if config.dry_run {
        return app::dry_run(proxier, &config, rx).await;
    }
    let observer = app::start_http(&config, proxier.mode()).await?;
    if !config.once {
        events.starting();
    }
    let exit = app::run_loop(proxier, &config, rx, Arc::clone(&observer)).await;
    Ok(exit)
}
