//! What the workers of one configuration agree on, and where it lives.
//!
//! A decision reads each target's state (mode, latency estimate, load) and the sidecar's
//! snapshot; a finished stream records its outcome; the tick folds outcomes into each
//! route's [`RouteHealth`]. That bookkeeping is a [`Ledger`]. Where it lives depends on the
//! host ([`Sharing`]):
//!
//! * proxy-wasm runs one VM per Envoy worker with no memory in common: each worker keeps
//!   its own ledger and, on its own tick, merges what it saw into the route's health kept
//!   in the host's shared data (compare-and-swap on bytes), then reads the result back;
//! * the native module runs every worker in one address space: one ledger per
//!   configuration behind a lock (a [`Board`]). Workers only read and record; a single
//!   ticking worker (the main thread's) merges, polls the sidecar and applies time-driven
//!   transitions, so nothing depends on a worker thread having traffic to wake it.

use crate::config::Config;
use crate::health::{Observed, RouteHealth};
use crate::inflight::InFlight;
use crate::route::TargetState;
use crate::snapshot::SnapshotView;
use crate::stats::{Pending, Samples, StatTable};
use std::cell::RefCell;
use std::sync::{Arc, Mutex};

/// The last latency estimate a target had: kept when its window empties, so an idle
/// target is judged by what it last did rather than assumed fast.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Estimate {
    us: Option<u64>,
}

/// A target's latency estimate: what its window measured; else the last estimate it had
/// (an idle target is judged by what it last did, not assumed fast); never below the
/// configured prior. `None` only for a target never measured and without a prior.
pub(crate) fn estimate(measured: Option<u64>, last: &mut Estimate, prior: Option<u64>) -> Option<u64> {
    if measured.is_some() {
        last.us = measured;
    }
    match (last.us, prior) {
        (Some(m), Some(p)) => Some(m.max(p)),
        (m, p) => m.or(p),
    }
}

/// Per-target bookkeeping of one configuration, `[route][target]` throughout.
pub(crate) struct Ledger {
    /// What decisions read, refreshed on each merge.
    pub(crate) states: Vec<Vec<TargetState>>,
    /// Outcomes since the last merge.
    pub(crate) observed: Vec<Vec<Observed>>,
    /// Requests in flight.
    pub(crate) in_flight: Vec<Vec<InFlight>>,
    /// The last estimate each target had.
    pub(crate) estimates: Vec<Vec<Estimate>>,
    /// The sidecar's snapshot in use, if one was ever received.
    pub(crate) snapshot: Option<Arc<SnapshotView>>,
    /// Per route: the health merges fold into. Authoritative on a [`Board`]; with
    /// [`Sharing::HostData`] the host's shared data is, and this stays unused.
    pub(crate) health: Vec<RouteHealth>,
    /// Latency values for the histograms, until the tick hands them to the host.
    pub(crate) samples: Samples,
}

impl Ledger {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            states: per_target(config, TargetState::default),
            observed: per_target(config, Observed::default),
            in_flight: per_target(config, InFlight::default),
            estimates: per_target(config, Estimate::default),
            snapshot: None,
            health: config.routes.iter().map(|r| RouteHealth::new(r.targets.len())).collect(),
            samples: Samples::default(),
        }
    }
}

/// A `[route][target]` table filled with `f()`.
pub(crate) fn per_target<T>(config: &Config, f: impl Fn() -> T) -> Vec<Vec<T>> {
    config.routes.iter().map(|r| r.targets.iter().map(|_| f()).collect()).collect()
}

/// One ledger shared by every worker of a configuration in one process (the native
/// module). Critical sections are a decision's read, a stream's record, and one merge per
/// tick: short, so the lock is uncontended in practice. The counts are outside the lock:
/// every worker adds to them, the ticking one hands them to the host.
pub struct Board {
    ledger: Mutex<Ledger>,
    counts: Arc<Pending>,
}

impl Board {
    pub fn new(config: &Config) -> Arc<Self> {
        Arc::new(Self { ledger: Mutex::new(Ledger::new(config)), counts: Arc::new(Pending::new(&StatTable::new(config))) })
    }
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Board")
    }
}

/// How a worker shares its ledger with the other workers of its configuration.
#[derive(Clone, Debug)]
pub enum Sharing {
    /// Its own ledger, merged through the host's shared data on its own tick (proxy-wasm).
    HostData,
    /// A ledger common to the process. Exactly one worker per board `ticks`: it merges
    /// health, polls the sidecar and sets the state gauges.
    Board { board: Arc<Board>, ticks: bool },
}

/// Where a worker's ledger is.
pub(crate) enum Place {
    Own(RefCell<Ledger>),
    Board(Arc<Board>),
}

impl Place {
    pub(crate) fn new(config: &Config, sharing: &Sharing) -> Self {
        match sharing {
            Sharing::HostData => Place::Own(RefCell::new(Ledger::new(config))),
            Sharing::Board { board, .. } => Place::Board(board.clone()),
        }
    }

    /// Runs `f` on the ledger; `None` only if it is unavailable (re-entered, or a worker
    /// panicked while holding the board).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Ledger) -> R) -> Option<R> {
        match self {
            Place::Own(cell) => cell.try_borrow_mut().ok().map(|mut l| f(&mut l)),
            Place::Board(board) => board.ledger.lock().ok().map(|mut l| f(&mut l)),
        }
    }

    pub(crate) fn is_board(&self) -> bool {
        matches!(self, Place::Board(_))
    }

    /// Where a worker's counts wait for the tick: its own, or the board's.
    pub(crate) fn counts(&self, table: &StatTable) -> Arc<Pending> {
        match self {
            Place::Own(_) => Arc::new(Pending::new(table)),
            Place::Board(board) => board.counts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_target_keeps_its_last_estimate_above_the_prior() {
        let mut last = Estimate::default();
        assert_eq!(estimate(None, &mut last, None), None, "never measured, no prior: unknown");
        assert_eq!(estimate(None, &mut last, Some(20_000)), Some(20_000), "the prior");
        assert_eq!(estimate(Some(50_000), &mut last, Some(20_000)), Some(50_000));
        assert_eq!(estimate(None, &mut last, Some(20_000)), Some(50_000), "window empty: the last estimate");
        assert_eq!(estimate(Some(5_000), &mut last, Some(20_000)), Some(20_000), "the prior is a floor");
        assert_eq!(estimate(None, &mut last, None), Some(5_000));
    }
}
