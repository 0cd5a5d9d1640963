//! Following the watched directory: file-system events, debounced, trigger a rescan.
//!
//! Copying a `.proto` tree produces a burst of events, and a half-copied tree does not
//! compile; so the watcher waits until no event has arrived for the configured quiet time
//! before scanning. Scans are idempotent (content stamps and fingerprints), so a spurious
//! rescan costs a directory walk and nothing else.

use super::Registry;
use notify::{RecursiveMode, Watcher};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("the registry has no directory to watch (set `dir`)")]
    NoDirectory,
    #[error("watching {}: {error}", path.display())]
    Notify { path: PathBuf, error: notify::Error },
}

/// Keeps the watcher alive; dropping it stops watching and joins the scan thread.
pub struct WatchHandle {
    watcher: Option<notify::RecommendedWatcher>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        // Dropping the watcher drops the event sender, which ends the thread's loop.
        self.watcher.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle").finish_non_exhaustive()
    }
}

pub(super) fn start(registry: Arc<Registry>) -> Result<WatchHandle, WatchError> {
    let dir = registry.config.dir.clone().ok_or(WatchError::NoDirectory)?;
    let state_dir = registry.config.state_dir();
    let quiet = Duration::from_millis(registry.config.debounce_ms.max(1));
    let (tx, rx) = mpsc::channel::<PathBuf>();
    let filter_dir = dir.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) => {
            for path in event.paths {
                if is_relevant(&filter_dir, state_dir.as_deref(), &path) {
                    let _ = tx.send(path);
                }
            }
        }
        Err(e) => tracing::warn!("schema directory watch error: {e}"),
    })
    .map_err(|e| WatchError::Notify { path: dir.clone(), error: e })?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .map_err(|e| WatchError::Notify { path: dir.clone(), error: e })?;
    let thread = std::thread::Builder::new()
        .name("schema-watch".into())
        .spawn(move || {
            // Catch anything that changed between `open`'s scan and the watch starting.
            registry.scan();
            while rx.recv().is_ok() {
                // Debounce: wait for a quiet period.
                loop {
                    match rx.recv_timeout(quiet) {
                        Ok(_) => continue,
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                registry.scan();
            }
        })
        .map_err(|e| WatchError::Notify { path: dir.clone(), error: notify::Error::io(e) })?;
    Ok(WatchHandle {
        watcher: Some(watcher),
        thread: Some(thread),
    })
}

/// The link a Kubernetes ConfigMap or Secret volume swaps (renaming `..data_tmp` over it)
/// to update every key at once; the keys themselves are links through it.
const CONFIGMAP_DATA: &str = "..data";

/// Events under hidden entries (the default state directory among them) or under the
/// configured state directory never trigger a scan, so persisting cannot loop. The one
/// hidden name that does is a ConfigMap volume's `..data`: an update that changes a key's
/// content touches nothing else.
fn is_relevant(dir: &Path, state_dir: Option<&Path>, path: &Path) -> bool {
    if state_dir.is_some_and(|s| path.starts_with(s)) {
        return false;
    }
    let Ok(rel) = path.strip_prefix(dir) else {
        return true;
    };
    if rel.as_os_str() == CONFIGMAP_DATA {
        return true;
    }
    !rel.components().any(|c| matches!(c, Component::Normal(n) if n.to_string_lossy().starts_with('.')))
}
