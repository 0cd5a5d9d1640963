//! One configuration on one worker: the decision with what it reads, what streams record
//! when done, and the tick that merges health with the other workers, polls the sidecar
//! and hands stats to the host.
//!
//! A worker is single-threaded (proxy-wasm runs one VM per Envoy worker; the native build
//! keeps one per worker thread), so its own state is plain cells. What the workers of a
//! configuration agree on is a [`Ledger`](crate::ledger): per worker and merged through
//! the host's shared data, or one per process (see [`Sharing`]).

use crate::config::{Config, ConfigError};
use crate::health::{Cause, DegradeRules, Merge, Mode, Observed, Outcome, RouteHealth, Transition};
use crate::host::{HealthChange, Host, Level, MetricHandle, MetricKind, Written};
use crate::ledger::{estimate, per_target, Ledger, Place, Sharing};
use crate::poller::Poller;
use crate::request::RequestMeta;
use crate::route::{Decision, Reason, TargetState, Verdict, World};
use crate::rng::Rng;
use crate::snapshot::{Revision, SnapshotView};
use crate::inflight::Slot;
use crate::stats::{CounterId, MetricId, Pending, Sample, StatTable};
use prost_reflect::DescriptorPool;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

/// How often a CAS conflict on shared health state is retried within one tick.
const MERGE_ATTEMPTS: usize = 3;
/// One complete response in this many has its `grpc-status` trailer read.
pub(crate) const TRAILER_SAMPLE: u32 = 8;
/// Tick period while a stream waits out an injected delay (its resolution).
pub const DELAY_TICK_MS: u32 = 5;

/// A stream paused by an injected delay.
#[derive(Clone, Copy, Debug)]
struct Delayed {
    stream: u64,
    resume_at_ms: u64,
    /// The host's own timer resumes it (through [`crate::stream::Stream::on_delay_over`]),
    /// not the tick.
    host_timer: bool,
}

/// Descriptor pools decoded from the snapshot of one generation, per (subject, revision).
#[derive(Default)]
struct Pools {
    generation: u64,
    decoded: Vec<(Revision, Rc<DescriptorPool>)>,
}

pub struct Worker<H: Host> {
    pub(crate) host: H,
    pub(crate) config: Config,
    pub(crate) stats: StatTable,
    counter_ids: Vec<Option<MetricHandle>>,
    gauge_ids: Vec<Option<MetricHandle>>,
    histogram_ids: Vec<Option<MetricHandle>>,
    /// Counts waiting for the tick (shared by the workers of a board).
    pending: Arc<Pending>,
    /// This worker's identity in shared state (random per worker and configuration).
    worker: u64,
    pub(crate) rng: RefCell<Rng>,
    pub(crate) ledger: Place,
    /// Whether this worker merges health, polls the sidecar and sets state gauges (every
    /// worker with host data; one per board).
    ticks: bool,
    /// Last state gauge value recorded per `[route][target]`.
    recorded_state: RefCell<Vec<Vec<Option<u64>>>>,
    pools: RefCell<Pools>,
    poller: Option<Poller>,
    health_keys: Vec<String>,
    /// Per route: the health last read from the host's shared data (host data only),
    /// decoded into the same memory tick after tick.
    shared_health: RefCell<Vec<RouteHealth>>,
    /// The bytes health is encoded into before it is written back.
    encoded: RefCell<Vec<u8>>,
    /// Decision values (`target=…; reason=…`), `[route][target][reason]`, rendered once.
    decision_values: Vec<Vec<Vec<String>>>,
    delayed: RefCell<Vec<Delayed>>,
    last_merge_ms: Cell<u64>,
    /// Counts complete responses, to sample their trailers.
    responses: Cell<u32>,
}

/// Why a configuration could not be installed.
#[derive(Debug)]
pub enum ConfigureError {
    Invalid(ConfigError),
    /// The host refused to define a stat.
    Stat(String),
}

impl std::fmt::Display for ConfigureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigureError::Invalid(e) => write!(f, "invalid plugin configuration: {e}"),
            ConfigureError::Stat(name) => write!(f, "the host refused to define stat {name}"),
        }
    }
}

impl<H: Host> Worker<H> {
    /// Parses the plugin configuration and builds this worker's state, with its own ledger
    /// merged through the host's shared data. On error the host refuses the configuration
    /// (Envoy rejects it; the previous one keeps serving) and the reason is logged, naming
    /// the offending field.
    pub fn configure(host: H, json: &[u8], seed: u64) -> Result<Self, ConfigureError> {
        Self::configure_with(host, json, seed, Sharing::HostData)
    }

    /// [`Worker::configure`], sharing the ledger as `sharing` says.
    pub fn configure_with(host: H, json: &[u8], seed: u64, sharing: Sharing) -> Result<Self, ConfigureError> {
        let config = match Config::from_json(json).and_then(|c| match &c.cluster_filter_state {
            Some(_) if !host.routes_by_filter_state() => Err(crate::config::err(
                "cluster_filter_state",
                "this build cannot route by filter state (the native module can); route by `cluster_header`",
            )),
            _ => Ok(c),
        }) {
            Ok(c) => c,
            Err(e) => {
                host.log(Level::Error, &format!("switchyard: invalid plugin configuration: {e}"));
                return Err(ConfigureError::Invalid(e));
            }
        };
        let worker = Self::new(host, config, seed, sharing)?;
        if worker.ticks && worker.host.log_enabled(Level::Info) {
            worker.host.log(Level::Info, &format!("switchyard: configured: {}", summary(&worker.config)));
        }
        Ok(worker)
    }

    pub fn new(host: H, config: Config, seed: u64, sharing: Sharing) -> Result<Self, ConfigureError> {
        let stats = StatTable::new(&config);
        let define = |kind, names: &[String]| -> Result<Vec<Option<MetricHandle>>, ConfigureError> {
            names
                .iter()
                .map(|n| {
                    host.define_metric(kind, n).map(Some).ok_or_else(|| {
                        host.log(Level::Error, &format!("switchyard: the host refused to define stat {n}"));
                        ConfigureError::Stat(n.clone())
                    })
                })
                .collect()
        };
        let counter_ids = define(MetricKind::Counter, stats.counters())?;
        let gauge_ids = define(MetricKind::Gauge, stats.gauges())?;
        let histogram_ids = define(MetricKind::Histogram, stats.histograms())?;
        let decision_values = config
            .routes
            .iter()
            .map(|r| {
                r.targets
                    .iter()
                    .map(|t| Reason::ALL.iter().map(|why| format!("target={}; reason={}", t.name, why.as_str())).collect())
                    .collect()
            })
            .collect();
        let health_keys = config
            .routes
            .iter()
            .map(|r| {
                let names: Vec<&str> = r.targets.iter().map(|t| t.name.as_str()).collect();
                format!("{}.health{}.{}.{}", config.stat_prefix, crate::health::FORMAT, r.name, names.join(","))
            })
            .collect();
        let ledger = Place::new(&config, &sharing);
        let worker = Self {
            pending: ledger.counts(&stats),
            counter_ids,
            gauge_ids,
            histogram_ids,
            worker: seed,
            rng: RefCell::new(Rng::new(seed)),
            ledger,
            ticks: match sharing {
                Sharing::HostData => true,
                Sharing::Board { ticks, .. } => ticks,
            },
            recorded_state: RefCell::new(per_target(&config, || None)),
            pools: RefCell::default(),
            poller: config.sidecar.as_ref().map(|s| Poller::new(&config, s)),
            health_keys,
            // Only a worker merging through host data reads health into its own memory.
            shared_health: RefCell::new(match sharing {
                Sharing::HostData => config.routes.iter().map(|r| RouteHealth::new(r.targets.len())).collect(),
                Sharing::Board { .. } => Vec::new(),
            }),
            encoded: RefCell::new(Vec::new()),
            decision_values,
            delayed: RefCell::new(Vec::new()),
            last_merge_ms: Cell::new(0),
            responses: Cell::new(0),
            stats,
            config,
            host,
        };
        // The host's timer drives the tick (the Wasm host; the native one has its own).
        worker.host.set_tick_period_ms(worker.config.tick_ms);
        Ok(worker)
    }

    pub fn host(&self) -> &H {
        &self.host
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.host.now_ns() / 1_000_000
    }

    /// Whether to read this complete response's `grpc-status` trailer: one in
    /// [`TRAILER_SAMPLE`].
    pub(crate) fn sample_trailers(&self) -> bool {
        let n = self.responses.get().wrapping_add(1);
        self.responses.set(n);
        n.is_multiple_of(TRAILER_SAMPLE)
    }

    pub(crate) fn decision_value(&self, d: &Decision) -> Option<&str> {
        self.decision_values.get(d.route)?.get(d.target)?.get(d.reason.index()).map(String::as_str)
    }

    pub(crate) fn bump(&self, id: CounterId) {
        self.pending.bump(id);
    }

    pub(crate) fn bump_opt(&self, id: Option<CounterId>) {
        if let Some(id) = id {
            self.bump(id);
        }
    }

    /// Decides what to do with a request, from what the ledger says of each target.
    pub(crate) fn decide(&self, req: &RequestMeta<'_>) -> Verdict {
        let decide = |world: &World<'_>| match self.rng.try_borrow_mut() {
            Ok(mut rng) => self.config.decide(req, world, &mut rng),
            Err(_) => self.config.decide(req, world, &mut Rng::new(self.host.now_ns())),
        };
        self.ledger
            .with(|l| decide(&World { targets: &l.states, snapshot: l.snapshot.as_deref() }))
            .unwrap_or_else(|| decide(&World::default()))
    }

    /// The sidecar's snapshot in use, if any.
    pub(crate) fn snapshot(&self) -> Option<Arc<SnapshotView>> {
        self.ledger.with(|l| l.snapshot.clone()).flatten()
    }

    pub(crate) fn set_gauge(&self, id: MetricId, value: u64) {
        if let Some(Some(handle)) = self.gauge_ids.get(id.0) {
            self.host.set_gauge(*handle, value);
        }
    }

    /// Records a finished request of `d`.
    pub(crate) fn record_outcome(&self, flight: Flight, d: &Decision, mut outcome: Outcome) {
        let Some(route) = self.config.routes.get(d.route) else { return };
        // Successful responses only: an error's latency says little about the target's.
        let histogram = self.stats.latency_histogram(d.route, d.target).filter(|_| !outcome.error);
        self.ledger.with(|l| {
            outcome.counted_slow = finish(l, flight, d);
            if let Some(o) = l.observed.get_mut(d.route).and_then(|r| r.get_mut(d.target)) {
                o.record(outcome, &route.rules);
            }
            if let Some(histogram) = histogram {
                let random = || self.rng.try_borrow_mut().map_or(outcome.latency_us, |mut r| r.next_u64());
                l.samples.offer(Sample { histogram, ms: outcome.latency_us / 1000 }, random);
            }
        });
    }

    /// Marks a request of `d` as in flight, from `now_ns`.
    pub(crate) fn start(&self, stream: u64, d: &Decision, now_ns: u64) -> Flight {
        let slot = self
            .ledger
            .with(|l| l.in_flight.get_mut(d.route).and_then(|r| r.get_mut(d.target)).and_then(|f| f.start(stream, now_ns / 1_000_000)))
            .flatten();
        Flight { stream, slot }
    }

    /// Ends a request's time in flight; returns whether it was already counted slow.
    pub(crate) fn finish(&self, flight: Flight, d: &Decision) -> bool {
        self.ledger.with(|l| finish(l, flight, d)).unwrap_or(false)
    }

    /// The worker's tick. Resumes delayed streams every time; merges health, polls the
    /// sidecar and flushes stats at the configured cadence, if this worker ticks.
    pub fn tick(&self) {
        let now = self.now_ms();
        self.resume_delayed(now);
        if !self.ticks || now.saturating_add(2) < self.last_merge_ms.get().saturating_add(u64::from(self.config.tick_ms)) {
            return;
        }
        self.last_merge_ms.set(now);
        if let Some(poller) = &self.poller {
            poller.poll(self, now);
            poller.refresh(self);
        }
        // Every worker merges, serving or not: a target's last latency estimate lives in
        // each worker's own memory, and one that stopped merging would forget it.
        self.merge_health(now);
        self.flush_stats();
    }

    /// What decisions read of a target now.
    #[cfg(test)]
    pub(crate) fn state(&self, route: usize, target: usize) -> TargetState {
        self.ledger.with(|l| l.states[route][target]).unwrap()
    }

    /// Whether this worker's ledger is a process-wide board.
    pub(crate) fn on_board(&self) -> bool {
        self.ledger.is_board()
    }

    /// A callout this worker started has been answered. Returns whether it was the
    /// poller's (otherwise it belongs to a stream).
    pub fn on_callout_reply(&self, token: u32, reply: &crate::host::CalloutReply<'_>) -> bool {
        match &self.poller {
            Some(poller) if poller.owns(token) => {
                poller.answered(self, reply);
                true
            }
            _ => false,
        }
    }

    /// Hands batched counts and samples to the host.
    pub fn flush_stats(&self) {
        self.pending.drain(|i, n| {
            if let Some(Some(handle)) = self.counter_ids.get(i) {
                self.host.increment(*handle, n);
            }
        });
        // Taken under the ledger's lock, handed to the host outside it.
        for s in self.ledger.with(|l| l.samples.take()).unwrap_or_default() {
            if let Some(Some(handle)) = self.histogram_ids.get(s.histogram.0) {
                self.host.record(*handle, s.ms);
            }
        }
    }

    fn resume_delayed(&self, now: u64) {
        let Ok(mut delayed) = self.delayed.try_borrow_mut() else { return };
        if delayed.iter().all(|d| d.host_timer) {
            return;
        }
        delayed.retain(|d| {
            if !d.host_timer && d.resume_at_ms <= now {
                // The stream may be gone (client cancelled): nothing to resume then.
                self.host.resume_stream(d.stream);
                false
            } else {
                true
            }
        });
        if delayed.iter().all(|d| d.host_timer) {
            self.host.set_tick_period_ms(self.config.tick_ms);
        }
    }

    /// Holds a stream for `delay_ms`: the host's timer (`host_timer`) or the tick resumes it.
    pub(crate) fn delay(&self, stream: u64, delay_ms: u32, host_timer: bool) {
        if let Ok(mut delayed) = self.delayed.try_borrow_mut() {
            delayed.push(Delayed { stream, resume_at_ms: self.now_ms().saturating_add(u64::from(delay_ms)), host_timer });
        }
        if !host_timer {
            // Fine-grained ticks only while something waits.
            self.host.set_tick_period_ms(DELAY_TICK_MS.min(self.config.tick_ms));
        }
    }

    /// Whether a stream is still held by its injected delay.
    pub(crate) fn holds(&self, stream: u64) -> bool {
        self.delayed.try_borrow().is_ok_and(|d| d.iter().any(|d| d.stream == stream))
    }

    /// Forgets a delayed stream that ended before its delay ran out.
    pub(crate) fn forget_delayed(&self, stream: u64) {
        if let Ok(mut delayed) = self.delayed.try_borrow_mut() {
            delayed.retain(|d| d.stream != stream);
        }
    }

    /// Folds the ledger's observations into each route's health (through the host's
    /// shared data, or on the board) and refreshes what decisions read.
    fn merge_health(&self, now: u64) {
        for (ri, route) in self.config.routes.iter().enumerate() {
            let threshold_ms = route.rules.slow_threshold_us / 1000;
            let Some(taken) = self.ledger.with(|l| take_observations(l, ri, now, threshold_ms)).flatten() else { continue };
            let merge = Merge {
                worker: self.worker,
                now_ms: now,
                observed: &taken.observed,
                in_flight: &taken.in_flight,
                sidecar_unhealthy: &taken.unhealthy,
            };
            let merged = match &self.ledger {
                Place::Own(_) => self.merge_shared(ri, &merge, now),
                Place::Board(_) => self
                    .ledger
                    .with(|l| {
                        let health = l.health.get_mut(ri)?;
                        let transitions = health.merge(&merge, &route.rules);
                        Some((health.clone(), transitions))
                    })
                    .flatten()
                    .map(|(health, transitions)| self.apply(ri, &health, &transitions, now))
                    .is_some(),
            };
            if !merged {
                // Keep the observations for the next tick rather than lose them.
                self.ledger.with(|l| {
                    if let Some(r) = l.observed.get_mut(ri) {
                        for (slot, old) in r.iter_mut().zip(taken.observed) {
                            slot.absorb(old);
                        }
                    }
                });
            }
        }
    }

    /// Reports a merge's transitions and refreshes what decisions read of route `ri`.
    fn apply(&self, ri: usize, health: &RouteHealth, transitions: &[Transition], now: u64) {
        self.report(ri, transitions);
        self.refresh_states(ri, health, now);
    }

    /// Merges into route `ri`'s health in the host's shared data (compare-and-swap) and
    /// applies the result; `false` when every attempt lost to another worker or the host
    /// refused. The health read and the bytes written reuse this worker's buffers.
    fn merge_shared(&self, ri: usize, merge: &Merge<'_>, now: u64) -> bool {
        let (Some(key), Some(route)) = (self.health_keys.get(ri), self.config.routes.get(ri)) else { return false };
        let (Ok(mut healths), Ok(mut encoded)) = (self.shared_health.try_borrow_mut(), self.encoded.try_borrow_mut()) else { return false };
        let Some(health) = healths.get_mut(ri) else { return false };
        let targets = route.targets.len();
        for _ in 0..MERGE_ATTEMPTS {
            let shared = self.host.shared_get(key).unwrap_or_default();
            if !shared.value.as_deref().is_some_and(|b| health.decode_from(b, targets)) {
                *health = RouteHealth::new(targets);
            }
            let transitions = health.merge(merge, &route.rules);
            health.encode_into(&mut encoded);
            let written = if shared.value.as_deref() == Some(encoded.as_slice()) {
                Written::Yes
            } else {
                self.host.shared_set(key, &encoded, shared.cas)
            };
            match written {
                Written::Yes => {
                    self.apply(ri, health, &transitions, now);
                    return true;
                }
                Written::Conflict => continue,
                Written::Failed => return false,
            }
        }
        false
    }

    fn refresh_states(&self, ri: usize, health: &RouteHealth, now: u64) {
        let Some(route) = self.config.routes.get(ri) else { return };
        let Some(Some(fresh)) = self.ledger.with(|l| {
            let estimates = l.estimates.get_mut(ri)?;
            let fresh: Vec<TargetState> = health
                .targets
                .iter()
                .zip(&route.targets)
                .zip(estimates.iter_mut())
                .map(|((h, t), last)| {
                    let window = h.latency.merged(now, route.rules.latency_window_ms);
                    let measured = (window.count() >= route.latency.min_samples)
                        .then(|| window.percentile_us(route.latency.percentile))
                        .flatten();
                    let latency_us = estimate(measured, last, t.latency_prior_us);
                    TargetState { mode: h.mode, latency_us, in_flight: h.in_flight() }
                })
                .collect();
            let modes: Vec<u64> = fresh.iter().map(|s| s.mode.gauge()).collect();
            *l.states.get_mut(ri)? = fresh;
            Some(modes)
        }) else {
            return;
        };
        let Ok(mut recorded) = self.recorded_state.try_borrow_mut() else { return };
        for (ti, v) in fresh.into_iter().enumerate() {
            if let Some(slot) = recorded.get_mut(ri).and_then(|r| r.get_mut(ti)) {
                if *slot != Some(v) {
                    *slot = Some(v);
                    if let Some(g) = self.stats.state_gauge(ri, ti) {
                        self.set_gauge(g, v);
                    }
                }
            }
        }
    }

    /// Logs and counts transitions this worker made (each exactly once, by its writer).
    fn report(&self, ri: usize, transitions: &[Transition]) {
        let Some(route) = self.config.routes.get(ri) else { return };
        for t in transitions {
            let name = route.targets.get(t.target).map_or("", |t| t.name.as_str());
            self.bump(self.stats.transitions());
            self.bump_opt(self.stats.target_transitions(ri, t.target));
            let (rule, why) = match (t.to, t.cause) {
                (Mode::Degraded, cause) => (rule_name(cause), describe(cause, &route.rules)),
                (Mode::Probing, _) => (COOLDOWN_OVER, format!("cool-down over; sending {}% of its traffic as probes", route.rules.probe_share_pct)),
                (Mode::Healthy, _) => (PROBES_PASSED, format!("{} good probes", route.rules.probe_successes)),
            };
            self.bump_opt(self.stats.target_rule(ri, t.target, rule));
            self.host.log(
                Level::Warn,
                &format!("switchyard: route {} target {name}: {} -> {} ({why})", route.name, t.from.as_str(), t.to.as_str()),
            );
            self.host.health_changed(&HealthChange {
                route: ri,
                target: t.target,
                from: t.from.as_str(),
                to: t.to.as_str(),
                rule,
                why: &why,
            });
        }
    }

    /// A descriptor pool for a revision of the current snapshot (decoded once per
    /// snapshot generation and revision, per worker).
    pub(crate) fn pool(&self, snapshot: &SnapshotView, subject: &str, revision: u32) -> Option<Rc<DescriptorPool>> {
        let generation = snapshot.generation();
        {
            let mut pools = self.pools.try_borrow_mut().ok()?;
            if pools.generation != generation {
                *pools = Pools { generation, decoded: Vec::new() };
            }
            if let Some((_, p)) = pools.decoded.iter().find(|((s, r), _)| s == subject && *r == revision) {
                return Some(p.clone());
            }
        }
        let encoded = snapshot
            .snapshot
            .schema
            .subjects
            .get(subject)?
            .revisions
            .iter()
            .find(|r| r.revision == revision)?
            .descriptor_set
            .as_deref()?;
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
        // Editions files arrive as written; the pool takes them lowered to proto2.
        let lowered = switchyard_schema::editions::lowered_for_pool(&bytes).ok()?;
        let pool = Rc::new(DescriptorPool::decode(lowered.as_ref()).ok()?);
        if let Ok(mut pools) = self.pools.try_borrow_mut() {
            pools.decoded.push(((subject.to_owned(), revision), pool.clone()));
        }
        Some(pool)
    }

    /// Installs a newly parsed snapshot view.
    pub(crate) fn install_snapshot(&self, view: SnapshotView) {
        let generation = view.generation();
        self.ledger.with(|l| l.snapshot = Some(Arc::new(view)));
        self.bump(self.stats.sidecar_snapshots());
        self.set_gauge(self.stats.generation_gauge(), generation);
    }

    /// The generation of the snapshot in use, if any.
    pub(crate) fn snapshot_generation(&self) -> Option<u64> {
        self.snapshot().map(|v| v.generation())
    }
}

/// What a merge takes from the ledger for one route.
struct Taken {
    observed: Vec<Observed>,
    in_flight: Vec<u32>,
    /// Per target: whether the sidecar reports its version unhealthy.
    unhealthy: Vec<bool>,
}

/// The ledger's observations of route `ri` since the last merge (taken, so they are
/// merged once), its requests in flight per target, and the sidecar's view of each target.
/// Requests waiting past the slow threshold are counted slow now rather than when they
/// answer.
fn take_observations(l: &mut Ledger, ri: usize, now: u64, threshold_ms: u64) -> Option<Taken> {
    let (observed, in_flight) = (l.observed.get_mut(ri)?, l.in_flight.get_mut(ri)?);
    for (o, f) in observed.iter_mut().zip(in_flight.iter_mut()) {
        o.overdue(f.mark_overdue(now, threshold_ms));
    }
    let unhealthy = (0..observed.len()).map(|t| l.snapshot.as_ref().and_then(|s| s.facts(ri, t)).is_some_and(|f| f.unhealthy)).collect();
    Some(Taken {
        observed: observed.iter_mut().map(std::mem::take).collect(),
        in_flight: in_flight.iter().map(crate::inflight::InFlight::len).collect(),
        unhealthy,
    })
}

/// Ends a request's time in flight; returns whether it was already counted slow.
fn finish(l: &mut Ledger, flight: Flight, d: &Decision) -> bool {
    let Some(slot) = flight.slot else { return false };
    l.in_flight.get_mut(d.route).and_then(|r| r.get_mut(d.target)).is_some_and(|f| f.finish(slot, flight.stream))
}

/// A stream's place among its target's requests in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flight {
    stream: u64,
    /// `None` if the ledger was unavailable when it started.
    slot: Option<Slot>,
}

/// The rule behind a move to `Probing`, and back to `Healthy`, as stable keys.
const COOLDOWN_OVER: &str = "cooldown_over";
const PROBES_PASSED: &str = "probes_passed";

/// The rule behind a move to `Degraded`, as a stable key.
fn rule_name(cause: Cause) -> &'static str {
    match cause {
        Cause::SlowResponses => "slow_responses",
        Cause::ErrorRate => "error_rate",
        Cause::SidecarUnhealthy => "sidecar_unhealthy",
        Cause::ProbeFailed => "probe_failed",
        Cause::None => "none",
    }
}

/// A transition's cause with the threshold that tripped, for the log line.
fn describe(cause: Cause, rules: &DegradeRules) -> String {
    match cause {
        Cause::SlowResponses => format!(
            "{} consecutive responses slower than {} ms; cool-down {} ms",
            rules.slow_consecutive,
            rules.slow_threshold_us / 1000,
            rules.cooldown_ms
        ),
        Cause::ErrorRate => format!(
            "error rate over {}% in {} s with at least {} requests",
            rules.error_rate_pct,
            rules.error_window_ms / 1000,
            rules.error_min_requests
        ),
        Cause::SidecarUnhealthy => "the sidecar reports its model version unhealthy".into(),
        Cause::ProbeFailed => "a probe failed; cool-down doubled".into(),
        Cause::None => "no cause".into(),
    }
}

/// One line describing a configuration and its thresholds (logged once at load).
fn summary(c: &Config) -> String {
    let routes: Vec<String> = c
        .routes
        .iter()
        .map(|r| {
            let targets: Vec<String> = r.targets.iter().map(|t| format!("{}={}", t.name, t.weight)).collect();
            let rules = &r.rules;
            format!(
                "{} [{}] fallback={} degrade: {}x>{}ms, errors>{}% in {}s (min {}), cool-down {}..{}ms, probes {}%x{}",
                r.name,
                targets.join(" "),
                r.fallback.and_then(|f| r.targets.get(f)).map_or("none", |t| t.name.as_str()),
                rules.slow_consecutive,
                rules.slow_threshold_us / 1000,
                rules.error_rate_pct,
                rules.error_window_ms / 1000,
                rules.error_min_requests,
                rules.cooldown_ms,
                rules.max_cooldown_ms,
                rules.probe_share_pct,
                rules.probe_successes
            )
        })
        .collect();
    format!("{} routes; {}", c.routes.len(), routes.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rule a transition can name has its counter (a name missing there would count
    /// nothing, silently).
    #[test]
    fn every_rule_named_has_a_counter() {
        let causes = [Cause::SlowResponses, Cause::ErrorRate, Cause::SidecarUnhealthy, Cause::ProbeFailed];
        let mut named: Vec<&str> = causes.into_iter().map(rule_name).chain([COOLDOWN_OVER, PROBES_PASSED]).collect();
        let mut counted = crate::stats::TRANSITION_RULES.to_vec();
        named.sort_unstable();
        counted.sort_unstable();
        assert_eq!(named, counted);
    }
}
