//! The filter's stats: their names, and counts batched per worker.
//!
//! Every stat update through the host is a host call: the main cost of a Wasm filter,
//! and a few hundred instructions each in the native module (a histogram value most of
//! all). So the request path only bumps in-memory counters ([`Pending`], one set per
//! ledger: per worker in Wasm, per process in the native module) and keeps a sample of
//! latencies; the ticking worker hands them to Envoy. Stats lag by at most one tick; the
//! request path makes no stat host calls.
//!
//! Names (all under the configured prefix, `switchyard` by default):
//!
//! * counters `requests`, `passthrough`, `unrouted`, `non_grpc_rejected`,
//!   `reason.<reason>`, one per local-reply kind (`denied`, `fail_fast`, `shed`, …),
//!   `sidecar.polls`, `sidecar.poll_failures`, `sidecar.snapshots`, `transitions`;
//! * per target `route.<route>.target.<target>.`: counters `requests`, `probes`,
//!   `transitions`, `transitions.<rule>` per rule that moved it (`slow_responses`,
//!   `error_rate`, `sidecar_unhealthy`, `probe_failed`, `cooldown_over`, `probes_passed`)
//!   and one per local reply made after choosing it (`fail_fast`, `shed`,
//!   `schema_rejected`, `validation_rejected`, …), gauge `state` (0 healthy, 1 degraded,
//!   2 probing), histogram `latency_ms`;
//! * gauges `sidecar.generation` and `sidecar.reachable`.

use crate::config::Config;
use crate::route::{Reason, ReplyKind};
use std::sync::atomic::{AtomicU64, Ordering};

/// A counter's position in the stat table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterId(usize);

impl CounterId {
    /// Position in [`StatTable::counters`].
    pub fn index(self) -> usize {
        self.0
    }
}

/// A gauge's or histogram's position in its list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricId(pub usize);

/// The stat table of one configuration: every stat's full name, in a fixed order.
#[derive(Debug)]
pub struct StatTable {
    counters: Vec<String>,
    gauges: Vec<String>,
    histograms: Vec<String>,
    /// Per route: index of its first target's first per-target counter.
    route_counters: Vec<usize>,
    /// Per route: index of its first target's gauge (and histogram).
    route_metrics: Vec<usize>,
}

const GLOBAL: [&str; 8] = [
    "requests",
    "passthrough",
    "unrouted",
    "non_grpc_rejected",
    "sidecar.polls",
    "sidecar.poll_failures",
    "sidecar.snapshots",
    "transitions",
];
const REQUESTS: usize = 0;
const PASSTHROUGH: usize = 1;
const UNROUTED: usize = 2;
const NON_GRPC_REJECTED: usize = 3;
const SIDECAR_POLLS: usize = 4;
const SIDECAR_POLL_FAILURES: usize = 5;
const SIDECAR_SNAPSHOTS: usize = 6;
const TRANSITIONS: usize = 7;
const REASON_BASE: usize = GLOBAL.len();
const REPLY_BASE: usize = REASON_BASE + Reason::ALL.len();

/// Reply kinds that happen after a target was chosen, so they count per target too.
const TARGET_REPLIES: [ReplyKind; 7] = [
    ReplyKind::NoSnapshot,
    ReplyKind::UnknownRevision,
    ReplyKind::SchemaRejected,
    ReplyKind::FailFast,
    ReplyKind::Shed,
    ReplyKind::FaultAbort,
    ReplyKind::InvalidPayload,
];

/// The rules that move a target, each counted per target (`transitions.<rule>`): what the
/// console's Live view and a dashboard show as the rule that fired.
pub const TRANSITION_RULES: [&str; 6] =
    ["slow_responses", "error_rate", "sidecar_unhealthy", "probe_failed", "cooldown_over", "probes_passed"];

/// Per-target counters: `requests`, `probes`, `transitions`, one per target reply, then
/// one per rule.
const PER_TARGET: usize = 3 + TARGET_REPLIES.len() + TRANSITION_RULES.len();

const GAUGE_GENERATION: usize = 0;
const GAUGE_REACHABLE: usize = 1;
const GAUGE_TARGET_BASE: usize = 2;

impl StatTable {
    pub fn new(cfg: &Config) -> Self {
        let p = &cfg.stat_prefix;
        let mut counters: Vec<String> = GLOBAL.iter().map(|n| format!("{p}.{n}")).collect();
        counters.extend(Reason::ALL.iter().map(|r| format!("{p}.reason.{}", r.as_str())));
        counters.extend(ReplyKind::ALL.iter().map(|k| format!("{p}.{}", k.as_str())));
        let mut gauges = vec![format!("{p}.sidecar.generation"), format!("{p}.sidecar.reachable")];
        let mut histograms = Vec::new();
        let mut route_counters = Vec::with_capacity(cfg.routes.len());
        let mut route_metrics = Vec::with_capacity(cfg.routes.len());
        for route in &cfg.routes {
            route_counters.push(counters.len());
            route_metrics.push(histograms.len());
            for t in &route.targets {
                let base = format!("{p}.route.{}.target.{}", route.name, t.name);
                counters.push(format!("{base}.requests"));
                counters.push(format!("{base}.probes"));
                counters.push(format!("{base}.transitions"));
                counters.extend(TARGET_REPLIES.iter().map(|k| format!("{base}.{}", k.as_str())));
                counters.extend(TRANSITION_RULES.iter().map(|r| format!("{base}.transitions.{r}")));
                gauges.push(format!("{base}.state"));
                histograms.push(format!("{base}.latency_ms"));
            }
        }
        Self { counters, gauges, histograms, route_counters, route_metrics }
    }

    pub fn counters(&self) -> &[String] {
        &self.counters
    }
    pub fn gauges(&self) -> &[String] {
        &self.gauges
    }
    pub fn histograms(&self) -> &[String] {
        &self.histograms
    }

    /// gRPC requests seen (routed, unrouted or answered locally).
    pub fn requests(&self) -> CounterId {
        CounterId(REQUESTS)
    }
    /// Non-gRPC requests let through.
    pub fn passthrough(&self) -> CounterId {
        CounterId(PASSTHROUGH)
    }
    pub fn unrouted(&self) -> CounterId {
        CounterId(UNROUTED)
    }
    pub fn non_grpc_rejected(&self) -> CounterId {
        CounterId(NON_GRPC_REJECTED)
    }
    pub fn sidecar_polls(&self) -> CounterId {
        CounterId(SIDECAR_POLLS)
    }
    pub fn sidecar_poll_failures(&self) -> CounterId {
        CounterId(SIDECAR_POLL_FAILURES)
    }
    pub fn sidecar_snapshots(&self) -> CounterId {
        CounterId(SIDECAR_SNAPSHOTS)
    }
    pub fn transitions(&self) -> CounterId {
        CounterId(TRANSITIONS)
    }
    pub fn reason(&self, r: Reason) -> CounterId {
        CounterId(REASON_BASE + r.index())
    }
    pub fn reply(&self, k: ReplyKind) -> CounterId {
        CounterId(REPLY_BASE + k.index())
    }

    fn target_base(&self, route: usize, target: usize) -> Option<usize> {
        self.route_counters.get(route).map(|b| b + target * PER_TARGET)
    }
    pub fn target_requests(&self, route: usize, target: usize) -> Option<CounterId> {
        self.target_base(route, target).map(CounterId)
    }
    pub fn target_probes(&self, route: usize, target: usize) -> Option<CounterId> {
        self.target_base(route, target).map(|b| CounterId(b + 1))
    }
    pub fn target_transitions(&self, route: usize, target: usize) -> Option<CounterId> {
        self.target_base(route, target).map(|b| CounterId(b + 2))
    }
    pub fn target_reply(&self, route: usize, target: usize, k: ReplyKind) -> Option<CounterId> {
        let offset = TARGET_REPLIES.iter().position(|r| *r == k)?;
        self.target_base(route, target).map(|b| CounterId(b + 3 + offset))
    }
    /// Moves of a target by `rule` (one of [`TRANSITION_RULES`]).
    pub fn target_rule(&self, route: usize, target: usize, rule: &str) -> Option<CounterId> {
        let offset = TRANSITION_RULES.iter().position(|r| *r == rule)?;
        self.target_base(route, target).map(|b| CounterId(b + 3 + TARGET_REPLIES.len() + offset))
    }

    pub fn generation_gauge(&self) -> MetricId {
        MetricId(GAUGE_GENERATION)
    }
    pub fn reachable_gauge(&self) -> MetricId {
        MetricId(GAUGE_REACHABLE)
    }
    pub fn state_gauge(&self, route: usize, target: usize) -> Option<MetricId> {
        self.route_metrics.get(route).map(|b| MetricId(GAUGE_TARGET_BASE + b + target))
    }
    pub fn latency_histogram(&self, route: usize, target: usize) -> Option<MetricId> {
        self.route_metrics.get(route).map(|b| MetricId(b + target))
    }
}

/// Counts not yet flushed to the host, one cell per counter of a [`StatTable`]. Atomic
/// because the native module's workers share one set (relaxed adds, as Envoy's own
/// counters); on single-threaded Wasm they are plain loads and stores.
#[derive(Debug)]
pub struct Pending(Vec<AtomicU64>);

impl Pending {
    pub fn new(table: &StatTable) -> Self {
        Self(table.counters.iter().map(|_| AtomicU64::new(0)).collect())
    }

    pub fn bump(&self, id: CounterId) {
        self.add(id, 1);
    }

    pub fn bump_opt(&self, id: Option<CounterId>) {
        if let Some(id) = id {
            self.bump(id);
        }
    }

    pub fn add(&self, id: CounterId, n: u64) {
        if let Some(c) = self.0.get(id.0) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Hands each non-zero delta to `flush` (index into the table's counters) and resets it.
    pub fn drain(&self, mut flush: impl FnMut(usize, u64)) {
        for (i, c) in self.0.iter().enumerate() {
            let n = c.swap(0, Ordering::Relaxed);
            if n > 0 {
                flush(i, n);
            }
        }
    }
}

/// Latency samples kept per tick for the host's histograms: every value up to this many,
/// beyond it a uniform sample of this size.
pub(crate) const MAX_SAMPLES_PER_TICK: usize = 256;

/// A latency value waiting for the tick: which histogram, how many milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) histogram: MetricId,
    pub(crate) ms: u64,
}

/// The latency values of one tick (reservoir sampling): a busy tick costs the host at
/// most [`MAX_SAMPLES_PER_TICK`] histogram calls, and the values kept are a fair sample of
/// the tick, not its first few.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    kept: Vec<Sample>,
    /// Values offered since the last drain.
    seen: u64,
}

impl Samples {
    /// Offers a value; `random` is drawn only once the reservoir is full.
    pub(crate) fn offer(&mut self, sample: Sample, random: impl FnOnce() -> u64) {
        self.seen = self.seen.saturating_add(1);
        if self.kept.len() < MAX_SAMPLES_PER_TICK {
            self.kept.push(sample);
        } else if let Some(slot) = self.kept.get_mut((random() % self.seen) as usize) {
            *slot = sample;
        }
    }

    /// The values kept this tick; starts the next.
    pub(crate) fn take(&mut self) -> Vec<Sample> {
        self.seen = 0;
        std::mem::take(&mut self.kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_batching() {
        let cfg = Config::from_json(
            br#"{"routes": [{"name": "f", "match": ["*"], "default_target": "s",
                 "targets": [{"name": "s", "cluster": "a"}, {"name": "c", "cluster": "b"}]}]}"#,
        )
        .unwrap();
        let t = StatTable::new(&cfg);
        assert!(t.counters().iter().chain(t.gauges()).chain(t.histograms()).all(|n| n.starts_with("switchyard.")));
        let name = |id: CounterId| t.counters()[id.0].clone();
        assert_eq!(name(t.target_requests(0, 1).unwrap()), "switchyard.route.f.target.c.requests");
        assert_eq!(name(t.target_probes(0, 1).unwrap()), "switchyard.route.f.target.c.probes");
        assert_eq!(name(t.target_reply(0, 1, ReplyKind::Shed).unwrap()), "switchyard.route.f.target.c.shed");
        assert_eq!(name(t.target_reply(0, 0, ReplyKind::InvalidPayload).unwrap()), "switchyard.route.f.target.s.validation_rejected");
        assert_eq!(name(t.reason(Reason::Weight)), "switchyard.reason.weight");
        assert_eq!(name(t.reply(ReplyKind::Denied)), "switchyard.denied");
        assert_eq!(t.target_reply(0, 0, ReplyKind::Denied), None);
        assert_eq!(name(t.target_rule(0, 1, "slow_responses").unwrap()), "switchyard.route.f.target.c.transitions.slow_responses");
        assert_eq!(name(t.target_rule(0, 0, "probes_passed").unwrap()), "switchyard.route.f.target.s.transitions.probes_passed");
        // The next target's counters start right after the last rule's.
        assert_eq!(t.target_rule(0, 0, "probes_passed").unwrap().0 + 1, t.target_requests(0, 1).unwrap().0);
        assert_eq!(t.target_rule(0, 0, "none"), None);
        assert_eq!(t.gauges()[t.state_gauge(0, 1).unwrap().0], "switchyard.route.f.target.c.state");
        assert_eq!(t.histograms()[t.latency_histogram(0, 1).unwrap().0], "switchyard.route.f.target.c.latency_ms");
        let unique: std::collections::HashSet<_> = t.counters().iter().collect();
        assert_eq!(unique.len(), t.counters().len());

        let p = Pending::new(&t);
        p.bump(t.requests());
        p.bump(t.requests());
        p.bump_opt(t.target_requests(0, 1));
        let mut got = vec![];
        p.drain(|i, n| got.push((t.counters()[i].clone(), n)));
        assert_eq!(
            got,
            vec![
                ("switchyard.requests".to_string(), 2),
                ("switchyard.route.f.target.c.requests".to_string(), 1)
            ]
        );
        let mut again = 0;
        p.drain(|_, _| again += 1);
        assert_eq!(again, 0);
    }

    #[test]
    fn a_busy_tick_keeps_a_fair_sample_of_its_latencies() {
        let mut samples = Samples::default();
        let mut rng = crate::rng::Rng::new(7);
        for ms in 0..10_000 {
            samples.offer(Sample { histogram: MetricId(0), ms }, || rng.next_u64());
        }
        let kept = samples.take();
        assert_eq!(kept.len(), MAX_SAMPLES_PER_TICK);
        let late = kept.iter().filter(|s| s.ms >= 5_000).count();
        assert!((90..=166).contains(&late), "about half from the second half of the tick, got {late}");
        samples.offer(Sample { histogram: MetricId(1), ms: 3 }, || unreachable!("room left: nothing drawn"));
        assert_eq!(samples.take(), vec![Sample { histogram: MetricId(1), ms: 3 }], "a new tick starts empty");
    }
}
