//! Counts what happens during a rehearsal and turns it into a [`Report`].

use crate::behaviour::{code_name, Timeline};
use crate::expect;
use crate::report::*;
use crate::scenario::Scenario;
use crate::sim::Change;
use switchyard_filter_core::config::Config;
use switchyard_filter_core::{Reason, ReplyKind};

/// Latency histogram: 8 buckets per octave from 1/16 ms, up to about 18 minutes.
const BUCKETS: usize = 160;

fn bucket(latency_ns: u64) -> usize {
    let ms = latency_ns as f64 / 1e6;
    if ms <= 0.0625 {
        return 0;
    }
    (((ms.log2() + 4.0) * 8.0) as usize).min(BUCKETS - 1)
}

/// Upper edge of a bucket, in ms.
fn bucket_ms(i: usize) -> f64 {
    2f64.powf((i + 1) as f64 / 8.0 - 4.0)
}

fn percentile(hist: &[u32], p: f64) -> Option<f64> {
    let total: u64 = hist.iter().map(|&n| u64::from(n)).sum();
    if total == 0 {
        return None;
    }
    let rank = (total as f64 * p).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &n) in hist.iter().enumerate() {
        seen += u64::from(n);
        if seen >= rank {
            return Some((bucket_ms(i) * 100.0).round() / 100.0);
        }
    }
    None
}

#[derive(Clone, Default)]
struct TargetPoint {
    requests: u64,
    errors: u64,
    hist: Vec<u32>,
}

#[derive(Clone)]
struct TargetTotals {
    name: String,
    requests: u64,
    ok: u64,
    errors: u64,
    timed_out: u64,
    by_reason: [u64; Reason::ALL.len()],
    hist: Vec<u32>,
    point: TargetPoint,
    series: TargetSeries,
    /// Requests routed here, per Envoy, since the start.
    per_envoy: Vec<u64>,
    /// Per Envoy: the state now.
    state: Vec<&'static str>,
    /// `(time, bad)` from the scenario, with each Envoy's count of requests then.
    turns: Vec<Turn>,
}

#[derive(Clone)]
struct Turn {
    at_ns: u64,
    bad: bool,
    counts: Option<Vec<u64>>,
}

pub(crate) struct Recorder {
    scenario: Scenario,
    targets: Vec<TargetTotals>,
    /// Per generation: `[route][target]` → index in `targets`.
    maps: Vec<Vec<Vec<usize>>>,
    generation: usize,
    requests: u64,
    client_errors: u64,
    /// Client-visible errors by gRPC status.
    codes: [u64; 17],
    timed_out: u64,
    replies: [u64; ReplyKind::ALL.len()],
    point_requests: u64,
    point_errors: u64,
    point_fail_fast: u64,
    point_shed: u64,
    point_end_ns: u64,
    series: Series,
    transitions: Vec<Transition>,
    /// Per transition: the requests its Envoy had sent the target by then.
    transition_counts: Vec<u64>,
    weight_changes: Vec<WeightChange>,
    warnings: Vec<String>,
    /// The earliest turn not yet reached, for the per-arrival check.
    next_turn_ns: u64,
}

impl Recorder {
    pub(crate) fn new(scenario: &Scenario, config: &Config) -> Self {
        let many_routes = config.routes.len() > 1;
        let envoys = scenario.fleet.envoys as usize;
        let mut targets = Vec::new();
        for r in &config.routes {
            for t in &r.targets {
                let name = if many_routes { format!("{}/{}", r.name, t.name) } else { t.name.clone() };
                let timeline = Timeline::new(scenario.targets.get(&t.name));
                let slow_ms = r.rules.slow_threshold_us as f64 / 1000.0;
                let turns = timeline
                    .turns(slow_ms, r.rules.error_rate_pct)
                    .into_iter()
                    .map(|(at_ns, bad)| Turn { at_ns, bad, counts: None })
                    .collect();
                targets.push(TargetTotals {
                    name,
                    requests: 0,
                    ok: 0,
                    errors: 0,
                    timed_out: 0,
                    by_reason: [0; Reason::ALL.len()],
                    hist: vec![0; BUCKETS],
                    point: TargetPoint { hist: vec![0; BUCKETS], ..TargetPoint::default() },
                    series: TargetSeries::default(),
                    per_envoy: vec![0; envoys],
                    state: vec!["healthy"; envoys],
                    turns,
                });
            }
        }
        let mut r = Recorder {
            scenario: scenario.clone(),
            targets,
            maps: Vec::new(),
            generation: 0,
            requests: 0,
            client_errors: 0,
            codes: [0; 17],
            timed_out: 0,
            replies: [0; ReplyKind::ALL.len()],
            point_requests: 0,
            point_errors: 0,
            point_fail_fast: 0,
            point_shed: 0,
            point_end_ns: u64::from(scenario.sample_ms) * 1_000_000,
            series: Series::default(),
            transitions: Vec::new(),
            transition_counts: Vec::new(),
            weight_changes: Vec::new(),
            warnings: Vec::new(),
            next_turn_ns: 0,
        };
        r.next_turn_ns = r.earliest_turn();
        r
    }

    /// A configuration starts: maps its targets to the report's, by name.
    pub(crate) fn add_generation(&mut self, config: &Config) {
        let many_routes = config.routes.len() > 1;
        let map = config
            .routes
            .iter()
            .map(|r| {
                r.targets
                    .iter()
                    .map(|t| {
                        let name = if many_routes { format!("{}/{}", r.name, t.name) } else { t.name.clone() };
                        self.targets.iter().position(|x| x.name == name).unwrap_or(usize::MAX)
                    })
                    .collect()
            })
            .collect();
        self.maps.push(map);
        self.generation = self.maps.len() - 1;
    }

    fn index(&self, generation: usize, routed: Option<(u8, u8)>) -> Option<usize> {
        let (r, t) = routed?;
        let i = *self.maps.get(generation)?.get(usize::from(r))?.get(usize::from(t))?;
        (i < self.targets.len()).then_some(i)
    }

    fn earliest_turn(&self) -> u64 {
        self.targets.iter().flat_map(|t| t.turns.iter()).filter(|t| t.counts.is_none()).map(|t| t.at_ns).min().unwrap_or(u64::MAX)
    }

    fn reach_turns(&mut self, now: u64) {
        for t in &mut self.targets {
            for turn in &mut t.turns {
                if turn.counts.is_none() && turn.at_ns <= now {
                    turn.counts = Some(t.per_envoy.clone());
                }
            }
        }
        self.next_turn_ns = self.earliest_turn();
    }

    pub(crate) fn arrival(&mut self, now: u64, generation: usize, envoy: u16, routed: Option<(u8, u8)>, reason: Option<Reason>) {
        if now >= self.next_turn_ns {
            self.reach_turns(now);
        }
        self.requests += 1;
        self.point_requests += 1;
        if let Some(i) = self.index(generation, routed) {
            if let Some(t) = self.targets.get_mut(i) {
                t.requests += 1;
                t.point.requests += 1;
                if let Some(n) = t.per_envoy.get_mut(usize::from(envoy)) {
                    *n += 1;
                }
                if let Some(n) = reason.and_then(|r| t.by_reason.get_mut(r.index())) {
                    *n += 1;
                }
            }
        }
    }

    pub(crate) fn local_reply(&mut self, kind: ReplyKind, code: u32) {
        if let Some(n) = self.replies.get_mut(kind.index()) {
            *n += 1;
        }
        match kind {
            ReplyKind::FailFast => self.point_fail_fast += 1,
            ReplyKind::Shed => self.point_shed += 1,
            _ => {}
        }
        if code != 0 {
            self.client_error(code);
        }
    }

    fn client_error(&mut self, code: u32) {
        if let Some(n) = self.codes.get_mut(code as usize) {
            *n += 1;
        }
        self.client_errors += 1;
        self.point_errors += 1;
    }

    pub(crate) fn answered(&mut self, generation: usize, routed: Option<(u8, u8)>, status: u32, latency_ns: u64) {
        if status != 0 {
            self.client_error(status);
        }
        let Some(t) = self.index(generation, routed).and_then(|i| self.targets.get_mut(i)) else { return };
        let b = bucket(latency_ns);
        if let Some(n) = t.hist.get_mut(b) {
            *n += 1;
        }
        if let Some(n) = t.point.hist.get_mut(b) {
            *n += 1;
        }
        if status == 0 {
            t.ok += 1;
        } else {
            t.errors += 1;
            t.point.errors += 1;
        }
    }

    pub(crate) fn timed_out(&mut self, generation: usize, routed: Option<(u8, u8)>) {
        self.timed_out += 1;
        self.client_error(4);
        if let Some(t) = self.index(generation, routed).and_then(|i| self.targets.get_mut(i)) {
            t.timed_out += 1;
            t.point.errors += 1;
        }
    }

    pub(crate) fn health(&mut self, c: Change) {
        let Some(i) = self.maps.get(self.generation).and_then(|m| m.get(c.route)).and_then(|r| r.get(c.target)).copied() else { return };
        let Some(t) = self.targets.get_mut(i) else { return };
        if let Some(s) = t.state.get_mut(usize::from(c.envoy)) {
            *s = c.to;
        }
        self.transition_counts.push(t.per_envoy.get(usize::from(c.envoy)).copied().unwrap_or(0));
        self.transitions.push(Transition {
            t_ms: c.at_ns as f64 / 1e6,
            envoy: c.envoy,
            target: t.name.clone(),
            from: c.from,
            to: c.to,
            rule: c.rule,
            why: c.why,
        });
    }

    pub(crate) fn log(&mut self, at_ns: u64, envoy: u16, line: String) {
        // Transitions are reported as such.
        if self.warnings.len() < 100 && !line.contains(" -> ") {
            self.warnings.push(format!("{:.3} s envoy {envoy}: {line}", at_ns as f64 / 1e9));
        }
    }

    pub(crate) fn weights_changed(&mut self, now: u64, before: &Config, after: &Config, users: u32) {
        self.weight_changes.extend(crate::split::compare(before, after, users, now as f64 / 1e9));
    }

    /// One point of the time series is over.
    pub(crate) fn close_point(&mut self) {
        let end = self.point_end_ns;
        self.series.t_s.push(end as f64 / 1e9);
        self.series.requests.push(self.point_requests);
        self.series.client_errors.push(self.point_errors);
        self.series.fail_fast.push(self.point_fail_fast);
        self.series.shed.push(self.point_shed);
        let total = self.point_requests.max(1) as f64;
        for t in &mut self.targets {
            let p = &mut t.point;
            t.series.requests.push(p.requests);
            t.series.share_pct.push(((p.requests as f64 / total) * 10_000.0).round() / 100.0);
            t.series.errors.push(p.errors);
            t.series.p50_ms.push(percentile(&p.hist, 0.5));
            t.series.p99_ms.push(percentile(&p.hist, 0.99));
            t.series.state.push(t.state.first().copied().unwrap_or("healthy"));
            t.series.unhealthy_envoys.push(t.state.iter().filter(|s| **s != "healthy").count() as u32);
            p.requests = 0;
            p.errors = 0;
            p.hist.iter_mut().for_each(|n| *n = 0);
        }
        self.point_requests = 0;
        self.point_errors = 0;
        self.point_fail_fast = 0;
        self.point_shed = 0;
        self.point_end_ns = end + u64::from(self.scenario.sample_ms) * 1_000_000;
    }

    pub(crate) fn finish(&mut self, end_ns: u64) {
        if self.point_requests > 0 || self.series.t_s.last().is_none_or(|&t| t * 1e9 < end_ns as f64 - 1.0) {
            self.point_end_ns = end_ns;
            self.close_point();
        }
    }

    pub(crate) fn report(self) -> Report {
        let envoys = self.scenario.fleet.envoys;
        let total = self.requests.max(1) as f64;
        let reactions = self.reactions(envoys);
        let targets: Vec<TargetSummary> = self
            .targets
            .iter()
            .map(|t| TargetSummary {
                name: t.name.clone(),
                requests: t.requests,
                share_pct: ((t.requests as f64 / total) * 10_000.0).round() / 100.0,
                ok: t.ok,
                errors: t.errors,
                timed_out: t.timed_out,
                by_reason: Reason::ALL
                    .iter()
                    .zip(t.by_reason)
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| (r.as_str().to_string(), n))
                    .collect(),
                p50_ms: percentile(&t.hist, 0.5),
                p90_ms: percentile(&t.hist, 0.9),
                p99_ms: percentile(&t.hist, 0.99),
            })
            .collect();
        let mut series = self.series;
        series.targets = self.targets.iter().map(|t| t.series.clone()).collect();
        let replies = ReplyKind::ALL
            .iter()
            .zip(self.replies)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.as_str().to_string(), n))
            .collect();
        let mut report = Report {
            seed: self.scenario.seed,
            duration_s: self.scenario.duration_s,
            sample_ms: self.scenario.sample_ms,
            build: self.scenario.fleet.build,
            envoys,
            workers: self.scenario.fleet.workers,
            requests: self.requests,
            client_errors: self.client_errors,
            client_error_pct: ((self.client_errors as f64 / total) * 10_000.0).round() / 100.0,
            errors_by_code: self
                .codes
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(c, n)| (code_name(c as u32).to_string(), *n))
                .collect(),
            replies,
            timed_out: self.timed_out,
            targets,
            series,
            transitions: self.transitions,
            reactions,
            weight_changes: self.weight_changes,
            expectations: Vec::new(),
            passed: true,
            warnings: self.warnings,
        };
        report.expectations = self.scenario.expect.iter().map(|e| expect::check(e, &report)).collect();
        report.passed = report.expectations.iter().all(|c| c.met);
        report
    }

    fn reactions(&self, envoys: u32) -> Vec<Reaction> {
        let mut out = Vec::new();
        for t in &self.targets {
            for (k, turn) in t.turns.iter().enumerate() {
                let until = t.turns.get(k + 1).map_or(u64::MAX, |n| n.at_ns);
                let wanted = if turn.bad { "degraded" } else { "healthy" };
                for envoy in 0..envoys as u16 {
                    let start = turn.counts.as_ref().and_then(|c| c.get(usize::from(envoy)).copied());
                    let Some(start) = start else { continue }; // The run ended first.
                    // A target already in the wanted state (or, turning bad, already not
                    // healthy) reacts at once.
                    let found = self.transitions.iter().zip(&self.transition_counts).find(|(tr, _)| {
                        tr.target == t.name && tr.envoy == envoy && tr.to == wanted && tr.t_ms * 1e6 >= turn.at_ns as f64 && (tr.t_ms * 1e6) < until as f64
                    });
                    let (after_ms, requests_until) = match found {
                        Some((tr, count)) => (Some(((tr.t_ms - turn.at_ns as f64 / 1e6) * 10.0).round() / 10.0), count - start),
                        None => (None, t.per_envoy.get(usize::from(envoy)).copied().unwrap_or(0).saturating_sub(start)),
                    };
                    out.push(Reaction {
                        target: t.name.clone(),
                        kind: if turn.bad { "degraded" } else { "restored" },
                        event_s: turn.at_ns as f64 / 1e9,
                        envoy,
                        after_ms,
                        requests_until,
                    });
                }
            }
        }
        out
    }
}
