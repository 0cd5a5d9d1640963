//! Polling the sidecar's snapshot and sharing it between workers.
//!
//! One worker per poll period fetches the snapshot (a lease in shared data decides which),
//! and stores the body and its generation in shared data. Every worker reads the small
//! generation key on its tick and parses the body only when the generation changed: at
//! most one parse per generation per worker. If the sidecar cannot be reached, the last
//! snapshot stays in use; a stat counts the failures and one log line marks the start
//! (and one the end) of an outage.

use super::host::{self, Level, Written};
use super::plugin::Plugin;
use crate::config::{Config, Sidecar, ValidateMode};
use crate::snapshot::{SidecarSnapshot, SnapshotView};
use std::cell::Cell;
use std::time::Duration;

pub struct Poller {
    lease_key: String,
    body_key: String,
    generation_key: String,
    cluster: String,
    path: String,
    authority: String,
    poll_ms: u64,
    timeout: Duration,
    next_ms: Cell<u64>,
    /// The token of this worker's call in flight, if any.
    token: Cell<Option<u32>>,
    /// Whether the last poll (by this worker) failed; for one log line per outage.
    failing: Cell<bool>,
    /// Last generation this worker parsed (or tried to).
    seen_generation: Cell<Option<u64>>,
}

impl Poller {
    pub fn new(config: &Config, s: &Sidecar) -> Self {
        let descriptors = config.routes.iter().any(|r| r.validate.mode == ValidateMode::Filter);
        let path = if descriptors {
            format!("{}{}descriptors=1", s.path, if s.path.contains('?') { '&' } else { '?' })
        } else {
            s.path.clone()
        };
        let ns = format!("{}.sidecar.{}{}", config.stat_prefix, s.cluster, path);
        Self {
            lease_key: format!("{ns}.lease"),
            body_key: format!("{ns}.body"),
            generation_key: format!("{ns}.generation"),
            cluster: s.cluster.clone(),
            path,
            authority: s.authority.clone(),
            poll_ms: u64::from(s.poll_ms),
            timeout: Duration::from_millis(u64::from(s.timeout_ms)),
            next_ms: Cell::new(0),
            token: Cell::new(None),
            failing: Cell::new(false),
            seen_generation: Cell::new(None),
        }
    }

    /// Dispatches a poll if this worker holds the lease for the current period.
    pub fn poll(&self, p: &Plugin, now: u64) {
        if now < self.next_ms.get() || self.token.get().is_some() {
            return;
        }
        self.next_ms.set(now.saturating_add(self.poll_ms));
        let Ok((lease, cas)) = host::shared_data(&self.lease_key) else { return };
        let due = lease.as_deref().and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
        if now < due {
            self.next_ms.set(due);
            return;
        }
        let next = now.saturating_add(self.poll_ms).to_le_bytes();
        if host::set_shared_data(&self.lease_key, &next, cas) != Ok(Written::Yes) {
            return;
        }
        let generation = self.shared_generation().map(|g| g.to_string()).unwrap_or_default();
        let headers = vec![
            (":method", "GET"),
            (":path", self.path.as_str()),
            (":authority", self.authority.as_str()),
            ("if-none-match", generation.as_str()),
        ];
        p.bump(p.stats.sidecar_polls());
        match proxy_wasm::hostcalls::dispatch_http_call(&self.cluster, headers, None, vec![], self.timeout) {
            Ok(token) => self.token.set(Some(token)),
            Err(status) => self.failed(p, &format!("cannot call cluster {:?} ({status:?})", self.cluster)),
        }
    }

    /// Whether `token` is this poller's call.
    pub fn owns(&self, token: u32) -> bool {
        self.token.get() == Some(token)
    }

    /// Handles the poll's answer (called from the root context's callout handler).
    pub fn answered(&self, p: &Plugin, status: Option<u32>, body: &[u8]) {
        self.token.set(None);
        match status {
            Some(200) => match serde_json::from_slice::<SidecarSnapshot>(body) {
                Ok(snapshot) => {
                    self.recovered(p);
                    if self.shared_generation() != Some(snapshot.generation) {
                        // Body first: a reader that sees the new generation finds its body.
                        let _ = host::set_shared_data(&self.body_key, body, 0);
                        let _ = host::set_shared_data(&self.generation_key, &snapshot.generation.to_le_bytes(), 0);
                    }
                }
                Err(e) => self.failed(p, &format!("snapshot is not valid JSON: {e}")),
            },
            Some(304) => self.recovered(p),
            Some(code) => self.failed(p, &format!("HTTP {code} from {}{}", self.cluster, self.path)),
            None => self.failed(p, &format!("no answer from cluster {:?} (unreachable or timed out)", self.cluster)),
        }
    }

    fn shared_generation(&self) -> Option<u64> {
        let (bytes, _) = host::shared_data(&self.generation_key).ok()?;
        bytes.as_deref().and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }

    /// Parses the shared snapshot if its generation changed since this worker last looked.
    pub fn refresh(&self, p: &Plugin) {
        let Some(generation) = self.shared_generation() else { return };
        if self.seen_generation.get() == Some(generation) {
            return;
        }
        self.seen_generation.set(Some(generation));
        let Ok((Some(body), _)) = host::shared_data(&self.body_key) else { return };
        match serde_json::from_slice::<SidecarSnapshot>(&body) {
            Ok(snapshot) => {
                let (view, problems) = SnapshotView::build(snapshot, &p.config);
                for line in problems {
                    host::log(Level::Warn, &format!("switchyard: snapshot generation {generation}: {line}"));
                }
                p.install_snapshot(view);
            }
            Err(e) => host::log(Level::Error, &format!("switchyard: snapshot generation {generation} unreadable: {e}")),
        }
    }

    fn failed(&self, p: &Plugin, why: &str) {
        self.token.set(None);
        p.bump(p.stats.sidecar_poll_failures());
        p.set_gauge(p.stats.reachable_gauge(), 0);
        if !self.failing.replace(true) {
            let keeping = match p.snapshot.try_borrow().ok().and_then(|s| s.as_ref().map(|v| v.generation())) {
                Some(g) => format!("keeping snapshot generation {g}"),
                None => "no snapshot received yet".to_string(),
            };
            host::log(Level::Warn, &format!("switchyard: sidecar snapshot poll failed: {why}; {keeping}"));
        }
    }

    fn recovered(&self, p: &Plugin) {
        p.set_gauge(p.stats.reachable_gauge(), 1);
        if self.failing.replace(false) {
            host::log(Level::Info, "switchyard: sidecar snapshot poll succeeded again");
        }
    }
}
