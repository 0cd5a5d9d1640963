//! One configuration's state on one worker: what streams read when deciding, what they
//! record when done, and the tick that merges it with the other workers through Envoy's
//! shared data and hands stats to Envoy.

use super::host::{self, Level, MetricKind, Written};
use super::sidecar::Poller;
use crate::config::Config;
use crate::health::{Merge, Observed, RouteHealth, Transition};
use crate::inflight::InFlight;
use crate::route::{Decision, Reason, TargetState};
use crate::rng::Rng;
use crate::snapshot::{Revision, SnapshotView};
use crate::stats::{CounterId, MetricId, Pending, StatTable};
use prost_reflect::DescriptorPool;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// How often a CAS conflict on shared health state is retried within one tick.
const MERGE_ATTEMPTS: usize = 3;
/// One complete response in this many has its `grpc-status` trailer read.
pub const TRAILER_SAMPLE: u32 = 8;
/// Latency samples kept per tick for Envoy's histograms (the rest are dropped).
const MAX_SAMPLES_PER_TICK: usize = 256;

pub struct Plugin {
    pub config: Config,
    pub stats: StatTable,
    counter_ids: Vec<u32>,
    gauge_ids: Vec<u32>,
    histogram_ids: Vec<u32>,
    pub pending: Pending,
    /// This worker's identity in shared state (random per VM and configuration).
    worker: u64,
    pub rng: RefCell<Rng>,
    /// `[route][target]`: what decisions read, refreshed on each merge.
    pub states: RefCell<Vec<Vec<TargetState>>>,
    /// `[route][target]`: outcomes since the last merge.
    pub observed: RefCell<Vec<Vec<Observed>>>,
    /// `[route][target]`: this worker's requests in flight.
    in_flight: RefCell<Vec<Vec<InFlight>>>,
    /// Latency samples for Envoy histograms: (histogram, milliseconds).
    samples: RefCell<Vec<(MetricId, u64)>>,
    /// Last state gauge value recorded per `[route][target]`.
    recorded_state: RefCell<Vec<Vec<Option<u64>>>>,
    pub snapshot: RefCell<Option<Rc<SnapshotView>>>,
    /// Descriptor pools decoded from the current snapshot, per (subject, revision).
    pools: RefCell<Vec<(Revision, Rc<DescriptorPool>)>>,
    pub poller: Option<Poller>,
    health_keys: Vec<String>,
    /// Decision header values, `[route][target][reason]`, rendered once.
    decision_values: Vec<Vec<Vec<String>>>,
    /// Headers of local gRPC replies.
    pub grpc_reply_headers: Vec<u8>,
    /// Streams paused by an injected delay: (context id, resume at ms).
    pub delayed: RefCell<Vec<(u32, u64)>>,
    last_merge_ms: Cell<u64>,
    /// Counts complete responses, to sample their trailers.
    responses: Cell<u32>,
}

impl Plugin {
    pub fn new(config: Config, seed: u64) -> Result<Self, String> {
        let stats = StatTable::new(&config);
        let define = |kind, names: &[String]| {
            names
                .iter()
                .map(|n| host::define_metric(kind, n).map_err(|e| format!("defining stat {n}: host status {}", e.0)))
                .collect::<Result<Vec<_>, _>>()
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
                    .map(|t| {
                        Reason::ALL
                            .iter()
                            .map(|why| format!("target={}; reason={}", t.name, why.as_str()))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let health_keys = config
            .routes
            .iter()
            .map(|r| {
                let names: Vec<&str> = r.targets.iter().map(|t| t.name.as_str()).collect();
                format!("{}.health.{}.{}", config.stat_prefix, r.name, names.join(","))
            })
            .collect();
        Ok(Self {
            pending: Pending::new(&stats),
            counter_ids,
            gauge_ids,
            histogram_ids,
            worker: seed,
            rng: RefCell::new(Rng::new(seed)),
            states: RefCell::new(per_target(&config, TargetState::default)),
            observed: RefCell::new(per_target(&config, Observed::default)),
            in_flight: RefCell::new(per_target(&config, InFlight::default)),
            samples: RefCell::new(Vec::new()),
            recorded_state: RefCell::new(per_target(&config, || None)),
            snapshot: RefCell::new(None),
            pools: RefCell::new(Vec::new()),
            poller: config.sidecar.as_ref().map(|s| Poller::new(&config, s)),
            health_keys,
            decision_values,
            grpc_reply_headers: crate::request::serialize_pairs(&[("content-type", "application/grpc")]),
            delayed: RefCell::new(Vec::new()),
            last_merge_ms: Cell::new(0),
            responses: Cell::new(0),
            stats,
            config,
        })
    }

    /// Whether to read this complete response's `grpc-status` trailer: one in
    /// [`TRAILER_SAMPLE`].
    pub fn sample_trailers(&self) -> bool {
        let n = self.responses.get().wrapping_add(1);
        self.responses.set(n);
        n.is_multiple_of(TRAILER_SAMPLE)
    }

    pub fn decision_value(&self, d: &Decision) -> Option<&str> {
        self.decision_values.get(d.route)?.get(d.target)?.get(d.reason.index()).map(String::as_str)
    }

    pub fn bump(&self, id: CounterId) {
        self.pending.bump(id);
    }

    pub fn bump_opt(&self, id: Option<CounterId>) {
        self.pending.bump_opt(id);
    }

    pub fn set_gauge(&self, id: MetricId, value: u64) {
        if let Some(&mid) = self.gauge_ids.get(id.0) {
            let _ = host::record_metric(mid, value);
        }
    }

    /// Records a finished request of `d` (from the stream's log callback).
    pub fn record_outcome(&self, stream: u32, d: &Decision, mut outcome: crate::health::Outcome) {
        outcome.counted_slow = self.finish(stream, d);
        let Some(route) = self.config.routes.get(d.route) else { return };
        if let Ok(mut observed) = self.observed.try_borrow_mut() {
            if let Some(o) = observed.get_mut(d.route).and_then(|r| r.get_mut(d.target)) {
                o.record(outcome, &route.rules);
            }
        }
        if !outcome.error {
            if let (Some(h), Ok(mut samples)) = (self.stats.latency_histogram(d.route, d.target), self.samples.try_borrow_mut()) {
                if samples.len() < MAX_SAMPLES_PER_TICK {
                    samples.push((h, outcome.latency_us / 1000));
                }
            }
        }
    }

    /// Marks a request of `d` as in flight, from `now_ns`.
    pub fn start(&self, stream: u32, d: &Decision, now_ns: u64) {
        if let Ok(mut f) = self.in_flight.try_borrow_mut() {
            if let Some(f) = f.get_mut(d.route).and_then(|r| r.get_mut(d.target)) {
                f.start(stream, now_ns / 1_000_000);
            }
        }
    }

    /// Ends a request's time in flight; returns whether it was already counted slow.
    pub fn finish(&self, stream: u32, d: &Decision) -> bool {
        self.in_flight
            .try_borrow_mut()
            .ok()
            .and_then(|mut f| f.get_mut(d.route).and_then(|r| r.get_mut(d.target)).map(|f| f.finish(stream)))
            .unwrap_or(false)
    }

    /// The root context's tick. Resumes delayed streams every time; merges health, polls
    /// the sidecar and flushes stats at the configured cadence.
    pub fn tick(&self) {
        let now = host::now_ms();
        self.resume_delayed(now);
        if now.saturating_add(2) < self.last_merge_ms.get().saturating_add(u64::from(self.config.tick_ms)) {
            return;
        }
        self.last_merge_ms.set(now);
        if let Some(poller) = &self.poller {
            poller.poll(self, now);
            poller.refresh(self);
        }
        self.merge_health(now);
        self.flush_stats();
    }

    /// Hands batched counts and samples to Envoy.
    pub fn flush_stats(&self) {
        self.pending.drain(|i, n| {
            if let Some(&id) = self.counter_ids.get(i) {
                let _ = host::increment_metric(id, n);
            }
        });
        if let Ok(mut samples) = self.samples.try_borrow_mut() {
            for (h, v) in samples.drain(..) {
                if let Some(&id) = self.histogram_ids.get(h.0) {
                    let _ = host::record_metric(id, v);
                }
            }
        }
    }

    fn resume_delayed(&self, now: u64) {
        let Ok(mut delayed) = self.delayed.try_borrow_mut() else { return };
        if delayed.is_empty() {
            return;
        }
        delayed.retain(|&(ctx, at)| {
            if at <= now {
                // The stream may be gone (client cancelled): nothing to resume then.
                let _ = host::resume_request(ctx);
                false
            } else {
                true
            }
        });
        if delayed.is_empty() {
            let _ = host::set_tick_period_ms(self.config.tick_ms);
        }
    }

    /// Pauses a stream for `delay_ms`; the tick resumes it.
    pub fn delay(&self, context_id: u32, delay_ms: u32) {
        if let Ok(mut delayed) = self.delayed.try_borrow_mut() {
            delayed.push((context_id, host::now_ms().saturating_add(u64::from(delay_ms))));
            // Fine-grained ticks only while something waits.
            let _ = host::set_tick_period_ms(super::DELAY_TICK_MS.min(self.config.tick_ms));
        }
    }

    /// Folds this worker's observations into each route's shared health state (CAS on
    /// Envoy shared data) and refreshes what decisions read.
    fn merge_health(&self, now: u64) {
        let snapshot = self.snapshot.try_borrow().ok().and_then(|s| s.clone());
        for (ri, route) in self.config.routes.iter().enumerate() {
            let Some(key) = self.health_keys.get(ri) else { continue };
            let Some((observed, in_flight)) = self.take_observations(ri, now, route.rules.slow_threshold_us / 1000) else {
                continue;
            };
            let unhealthy: Vec<bool> = (0..route.targets.len())
                .map(|t| snapshot.as_ref().and_then(|s| s.facts(ri, t)).is_some_and(|f| f.unhealthy))
                .collect();
            let merge = Merge { worker: self.worker, now_ms: now, observed: &observed, in_flight: &in_flight, sidecar_unhealthy: &unhealthy };
            let mut merged = None;
            for _ in 0..MERGE_ATTEMPTS {
                let Ok((bytes, cas)) = host::shared_data(key) else { break };
                let mut health = bytes
                    .as_deref()
                    .and_then(|b| RouteHealth::decode(b, route.targets.len()))
                    .unwrap_or_else(|| RouteHealth::new(route.targets.len()));
                let transitions = health.merge(&merge, &route.rules);
                let encoded = health.encode();
                let written = if bytes.as_deref() == Some(encoded.as_slice()) {
                    Ok(Written::Yes)
                } else {
                    host::set_shared_data(key, &encoded, cas)
                };
                match written {
                    Ok(Written::Yes) => {
                        merged = Some((health, transitions));
                        break;
                    }
                    Ok(Written::Conflict) => continue,
                    Err(_) => break,
                }
            }
            match merged {
                Some((health, transitions)) => {
                    self.report(ri, &transitions);
                    self.refresh_states(ri, &health, now);
                }
                None => {
                    // Keep the observations for the next tick rather than lose them.
                    if let Ok(mut o) = self.observed.try_borrow_mut() {
                        if let Some(r) = o.get_mut(ri) {
                            for (slot, old) in r.iter_mut().zip(observed) {
                                slot.absorb(old);
                            }
                        }
                    }
                }
            }
        }
    }

    /// This worker's observations of route `ri` since the last merge (taken, so they are
    /// merged once) and its requests in flight per target. Requests waiting past the slow
    /// threshold are counted slow now rather than when they answer.
    fn take_observations(&self, ri: usize, now: u64, threshold_ms: u64) -> Option<(Vec<Observed>, Vec<u32>)> {
        let mut observed = self.observed.try_borrow_mut().ok()?;
        let mut in_flight = self.in_flight.try_borrow_mut().ok()?;
        let (observed, in_flight) = (observed.get_mut(ri)?, in_flight.get_mut(ri)?);
        for (o, f) in observed.iter_mut().zip(in_flight.iter_mut()) {
            o.overdue(f.mark_overdue(now, threshold_ms));
        }
        Some((observed.iter_mut().map(std::mem::take).collect(), in_flight.iter().map(InFlight::len).collect()))
    }

    fn refresh_states(&self, ri: usize, health: &RouteHealth, now: u64) {
        let Some(route) = self.config.routes.get(ri) else { return };
        let fresh: Vec<TargetState> = health
            .targets
            .iter()
            .zip(&route.targets)
            .map(|(h, t)| {
                let window = h.latency.merged(now, route.rules.latency_window_ms);
                let estimate = (window.count() >= route.latency.min_samples)
                    .then(|| window.percentile_us(route.latency.percentile))
                    .flatten();
                TargetState { mode: h.mode, latency_us: estimate.or(t.latency_prior_us), in_flight: h.in_flight() }
            })
            .collect();
        if let (Ok(mut recorded), Some(_)) = (self.recorded_state.try_borrow_mut(), self.stats.state_gauge(ri, 0)) {
            for (ti, s) in fresh.iter().enumerate() {
                let v = s.mode.gauge();
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
        if let Ok(mut states) = self.states.try_borrow_mut() {
            if let Some(slot) = states.get_mut(ri) {
                *slot = fresh;
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
            let why = match (t.to, t.cause) {
                (crate::health::Mode::Degraded, cause) => format!(" ({})", describe(cause, &route.rules)),
                (crate::health::Mode::Probing, _) => format!(
                    " (cool-down over; sending {}% of its traffic as probes)",
                    route.rules.probe_share_pct
                ),
                (crate::health::Mode::Healthy, _) => format!(" ({} good probes)", route.rules.probe_successes),
            };
            host::log(
                Level::Warn,
                &format!(
                    "switchyard: route {} target {name}: {} -> {}{why}",
                    route.name,
                    t.from.as_str(),
                    t.to.as_str()
                ),
            );
        }
    }

    /// A descriptor pool for a revision of the current snapshot (decoded once per
    /// snapshot generation and revision).
    pub fn pool(&self, subject: &str, revision: u32) -> Option<Rc<DescriptorPool>> {
        let cached = self.pools.try_borrow().ok()?.iter().find(|((s, r), _)| s == subject && *r == revision).map(|(_, p)| p.clone());
        if cached.is_some() {
            return cached;
        }
        let snapshot = self.snapshot.try_borrow().ok()?.clone()?;
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
        let pool = Rc::new(DescriptorPool::decode(bytes.as_slice()).ok()?);
        if let Ok(mut pools) = self.pools.try_borrow_mut() {
            pools.push(((subject.to_owned(), revision), pool.clone()));
        }
        Some(pool)
    }

    /// Installs a newly parsed snapshot view.
    pub fn install_snapshot(&self, view: SnapshotView) {
        let generation = view.generation();
        if let Ok(mut s) = self.snapshot.try_borrow_mut() {
            *s = Some(Rc::new(view));
        }
        if let Ok(mut p) = self.pools.try_borrow_mut() {
            p.clear();
        }
        self.bump(self.stats.sidecar_snapshots());
        self.set_gauge(self.stats.generation_gauge(), generation);
    }
}

/// A `[route][target]` table filled with `f()`.
fn per_target<T>(config: &Config, f: impl Fn() -> T) -> Vec<Vec<T>> {
    config.routes.iter().map(|r| r.targets.iter().map(|_| f()).collect()).collect()
}

/// A transition's cause with the threshold that tripped, for the log line.
fn describe(cause: crate::health::Cause, rules: &crate::health::DegradeRules) -> String {
    use crate::health::Cause;
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
