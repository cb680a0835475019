//! Watching the directory: the first load, `Synced`, then what changed
//! after every burst of changes.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::load::{LoadResult, Loader, list_files};
use crate::cluster::SourceEvent;
use crate::source::EventSender;

/// How long the directory must stay quiet before a reload: editors and
/// `kubectl`-style tools write a file in several steps (truncate, write,
/// rename), and one reload per burst is enough.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The longest a burst of changes may delay a reload.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// Watch `dir` and send its objects: every object of the first load,
/// `Synced`, then what changed after every burst of changes.
///
/// Returns an error if the directory cannot be read at start or cannot be
/// watched; later read errors are logged and the last good objects kept.
pub async fn run(dir: PathBuf, tx: EventSender) -> anyhow::Result<()> {
    use notify::Watcher as _;

    let loader = Loader::new(&dir);
    list_files(&dir).with_context(|| format!("--manifests {}", dir.display()))?;

    // notify calls back on its own thread; forward into the async world.
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if ev.kind.is_access() => {}
            Ok(_) => {
                let _ = wake_tx.send(());
            }
            Err(e) => tracing::warn!("watching manifests: {e}"),
        })
        .context("starting the manifests watcher")?;
    // Watch before the first read, so that no change slips in between.
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;

    let mut warned = BTreeSet::new();

    let (mut loader, first) = reload_off_thread(loader, tx.clone()).await?;
    tracing::info!("manifests: {} objects from {}", first.count, dir.display());
    report(&first, &mut warned);
    tx.send(SourceEvent::Synced)
        .context("the sync loop has stopped")?;

    while wake_rx.recv().await.is_some() {
        // Wait for the burst to end, but not forever: a file rewritten
        // continuously must still be read now and then.
        let give_up = tokio::time::Instant::now() + MAX_DEBOUNCE;
        while let Ok(Some(())) = tokio::time::timeout_at(
            give_up.min(tokio::time::Instant::now() + DEBOUNCE),
            wake_rx.recv(),
        )
        .await
        {}
        let result;
        (loader, result) = reload_off_thread(loader, tx.clone()).await?;
        if result.changed {
            tracing::info!(
                "manifests: reloaded {} objects from {}",
                result.count,
                dir.display()
            );
        }
        // When nothing changed (a swap file came and went, or a broken file
        // is still broken), this only says what is wrong.
        report(&result, &mut warned);
    }
    anyhow::bail!("the manifests watcher for {} stopped", dir.display())
}

/// Read the directory on a blocking thread (a directory of thousands of
/// objects takes long enough to stall other tasks), sending what changed to
/// the store as it is parsed.
async fn reload_off_thread(
    mut loader: Loader,
    tx: EventSender,
) -> anyhow::Result<(Loader, LoadResult)> {
    let (loader, result, delivered) = tokio::task::spawn_blocking(move || {
        let mut delivered = true;
        let result = loader.reload(&mut |ev| delivered &= tx.send(ev).is_ok());
        (loader, result, delivered)
    })
    .await
    .context("reading manifests")?;
    anyhow::ensure!(delivered, "the sync loop has stopped");
    Ok((loader, result))
}

/// Log what a load found wrong; each ignored kind only the first time it is
/// seen (returned, for tests).
pub(super) fn report(result: &LoadResult, warned: &mut BTreeSet<String>) -> Vec<String> {
    for e in &result.errors {
        tracing::error!("{e} (the file's last good version, if any, stays in use)");
    }
    for d in &result.duplicates {
        tracing::warn!("{d}");
    }
    let mut first_time = Vec::new();
    for k in &result.ignored_kinds {
        if warned.insert(k.clone()) {
            tracing::warn!(
                "manifests: ignoring objects of kind {k} (kproxy reads Services, EndpointSlices, Endpoints and Nodes)"
            );
            first_time.push(k.clone());
        }
    }
    first_time
}
