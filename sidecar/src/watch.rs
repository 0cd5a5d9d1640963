//! Reload triggers besides the admin call: file changes under the repository (debounced,
//! so a model file and its manifest written one after the other cause one reload) and SIGHUP.

use crate::reload::Reloader;
use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Watches `repo` recursively; the returned watcher must be kept alive.
pub fn spawn(repo: &Path, debounce: Duration, reloader: Arc<Reloader>) -> Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) if !event.kind.is_access() => {
            let _ = tx.send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "repository watch error"),
    })
    .context("cannot start the repository file watcher")?;
    watcher
        .watch(repo, RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {} (`repository.watch`)", repo.display()))?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Wait until the repository has been quiet for `debounce`.
            while let Ok(Some(())) = tokio::time::timeout(debounce, rx.recv()).await {}
            reloader.reload("file change").await;
        }
    });
    Ok(watcher)
}

/// Reloads on every SIGHUP.
pub fn reload_on_sighup(reloader: Arc<Reloader>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reloader.reload("SIGHUP").await;
        }
    });
    Ok(())
}
