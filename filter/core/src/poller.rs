//! Polling the sidecar's snapshot and sharing it between workers.
//!
//! With host data (proxy-wasm), one worker per poll period fetches the snapshot (a lease
//! in shared data decides which), and stores the body and its generation in shared data.
//! Every worker reads the small generation key on its tick and parses the body only when
//! the generation changed: at most one parse per generation per worker. On a board (the
//! native module) the one ticking worker polls and installs the parsed snapshot for all.
//! If the sidecar cannot be reached, the last snapshot stays in use; a stat counts the
//! failures and one log line marks the start (and one the end) of an outage.

use crate::config::{Config, Sidecar, ValidateMode};
use crate::host::{Callout, CalloutReply, Host, Level, Written};
use crate::snapshot::SnapshotView;
use crate::worker::Worker;
use std::cell::Cell;
use switchyard_api::{SidecarSnapshot, DESCRIPTORS_QUERY};

pub(crate) struct Poller {
    lease_key: String,
    body_key: String,
    generation_key: String,
    cluster: String,
    path: String,
    authority: String,
    poll_ms: u64,
    timeout_ms: u32,
    next_ms: Cell<u64>,
    /// The token of this worker's call in flight, if any.
    token: Cell<Option<u32>>,
    /// Whether the last poll (by this worker) failed; for one log line per outage.
    failing: Cell<bool>,
    /// Last generation this worker parsed (or tried to).
    seen_generation: Cell<Option<u64>>,
}

impl Poller {
    pub(crate) fn new(config: &Config, s: &Sidecar) -> Self {
        let descriptors = config.routes.iter().any(|r| r.validate.mode == ValidateMode::Filter);
        let path = if descriptors {
            format!("{}{}{DESCRIPTORS_QUERY}=1", s.path, if s.path.contains('?') { '&' } else { '?' })
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
            timeout_ms: s.timeout_ms,
            next_ms: Cell::new(0),
            token: Cell::new(None),
            failing: Cell::new(false),
            seen_generation: Cell::new(None),
        }
    }

    /// Dispatches a poll if one is due (and, with host data, this worker holds the lease
    /// for the current period).
    pub(crate) fn poll<H: Host>(&self, p: &Worker<H>, now: u64) {
        if now < self.next_ms.get() || self.token.get().is_some() {
            return;
        }
        self.next_ms.set(now.saturating_add(self.poll_ms));
        if !p.on_board() && !self.take_lease(p, now) {
            return;
        }
        let generation = self.generation(p).map(|g| g.to_string()).unwrap_or_default();
        let call = Callout {
            cluster: &self.cluster,
            method: "GET",
            path: &self.path,
            authority: &self.authority,
            headers: &[("if-none-match", generation.as_str())],
            body: None,
            timeout_ms: self.timeout_ms,
        };
        p.bump(p.stats.sidecar_polls());
        match p.host.callout(&call) {
            Some(token) => self.token.set(Some(token)),
            None => self.failed(p, &format!("cannot call cluster {:?}", self.cluster)),
        }
    }

    /// Whether this worker may poll in this period: the first to move the lease on does.
    fn take_lease<H: Host>(&self, p: &Worker<H>, now: u64) -> bool {
        let Some(lease) = p.host.shared_get(&self.lease_key) else { return false };
        let due = lease.value.as_deref().and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
        if now < due {
            self.next_ms.set(due);
            return false;
        }
        let next = now.saturating_add(self.poll_ms).to_le_bytes();
        p.host.shared_set(&self.lease_key, &next, lease.cas) == Written::Yes
    }

    /// The generation every worker has (or is about to have).
    fn generation<H: Host>(&self, p: &Worker<H>) -> Option<u64> {
        if p.on_board() {
            p.snapshot_generation()
        } else {
            self.shared_generation(p)
        }
    }

    /// Whether `token` is this poller's call.
    pub(crate) fn owns(&self, token: u32) -> bool {
        self.token.get() == Some(token)
    }

    /// Handles the poll's answer.
    pub(crate) fn answered<H: Host>(&self, p: &Worker<H>, reply: &CalloutReply<'_>) {
        self.token.set(None);
        let body = reply.body;
        match reply.status {
            Some(200) => match serde_json::from_slice::<SidecarSnapshot>(body) {
                Ok(snapshot) => {
                    self.recovered(p);
                    if self.generation(p) == Some(snapshot.generation) {
                        // Unchanged (a sidecar that ignores If-None-Match).
                    } else if p.on_board() {
                        install(p, snapshot);
                    } else {
                        // Body first: a reader that sees the new generation finds its body.
                        let _ = p.host.shared_set(&self.body_key, body, 0);
                        let _ = p.host.shared_set(&self.generation_key, &snapshot.generation.to_le_bytes(), 0);
                    }
                }
                Err(e) => self.failed(p, &format!("snapshot is not valid JSON: {e}")),
            },
            Some(304) => self.recovered(p),
            Some(code) => self.failed(p, &format!("HTTP {code} from {}{}", self.cluster, self.path)),
            None => self.failed(p, &format!("no answer from cluster {:?} (unreachable or timed out)", self.cluster)),
        }
    }

    fn shared_generation<H: Host>(&self, p: &Worker<H>) -> Option<u64> {
        let shared = p.host.shared_get(&self.generation_key)?;
        shared.value.as_deref().and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }

    /// Parses the shared snapshot if its generation changed since this worker last looked
    /// (host data only: on a board the poller installs what it receives).
    pub(crate) fn refresh<H: Host>(&self, p: &Worker<H>) {
        if p.on_board() {
            return;
        }
        let Some(generation) = self.shared_generation(p) else { return };
        if self.seen_generation.get() == Some(generation) {
            return;
        }
        self.seen_generation.set(Some(generation));
        let Some(body) = p.host.shared_get(&self.body_key).and_then(|s| s.value) else { return };
        match serde_json::from_slice::<SidecarSnapshot>(&body) {
            Ok(snapshot) => install(p, snapshot),
            Err(e) => p.host.log(Level::Error, &format!("switchyard: snapshot generation {generation} unreadable: {e}")),
        }
    }

    fn failed<H: Host>(&self, p: &Worker<H>, why: &str) {
        self.token.set(None);
        p.bump(p.stats.sidecar_poll_failures());
        p.set_gauge(p.stats.reachable_gauge(), 0);
        if !self.failing.replace(true) {
            let keeping = match p.snapshot_generation() {
                Some(g) => format!("keeping snapshot generation {g}"),
                None => "no snapshot received yet".to_string(),
            };
            p.host.log(Level::Warn, &format!("switchyard: sidecar snapshot poll failed: {why}; {keeping}"));
        }
    }

    fn recovered<H: Host>(&self, p: &Worker<H>) {
        p.set_gauge(p.stats.reachable_gauge(), 1);
        if self.failing.replace(false) {
            p.host.log(Level::Info, "switchyard: sidecar snapshot poll succeeded again");
        }
    }
}

/// Resolves a snapshot against the configuration and puts it in use.
fn install<H: Host>(p: &Worker<H>, snapshot: SidecarSnapshot) {
    let generation = snapshot.generation;
    let (view, problems) = SnapshotView::build(snapshot, &p.config);
    for line in problems {
        p.host.log(Level::Warn, &format!("switchyard: snapshot generation {generation}: {line}"));
    }
    p.install_snapshot(view);
}
