//! What a rehearsal reports: JSON for tools (and the console), text for people.

use crate::scenario::{Build, Expectation};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub duration_s: f64,
    pub sample_ms: u32,
    pub build: Build,
    pub envoys: u32,
    pub workers: u32,
    /// Simulated requests (arrivals).
    pub requests: u64,
    /// Requests whose client saw a non-OK status: local replies, upstream errors, timeouts.
    pub client_errors: u64,
    pub client_error_pct: f64,
    /// The same by gRPC status name.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Local replies by kind (`fail_fast`, `shed`, `fault_abort`, …).
    pub replies: BTreeMap<String, u64>,
    /// Requests whose client gave up waiting (`DEADLINE_EXCEEDED` seen by the client).
    pub timed_out: u64,
    pub targets: Vec<TargetSummary>,
    pub series: Series,
    pub transitions: Vec<Transition>,
    pub reactions: Vec<Reaction>,
    pub weight_changes: Vec<WeightChange>,
    pub expectations: Vec<Checked>,
    /// Every expectation met.
    pub passed: bool,
    /// Other warnings the filter logged (the first 100).
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetSummary {
    /// The target's name (`route/target` when the configuration has several routes).
    pub name: String,
    /// Requests routed to it.
    pub requests: u64,
    /// Of all requests.
    pub share_pct: f64,
    pub ok: u64,
    /// Answered with an error status.
    pub errors: u64,
    /// Its client gave up first.
    pub timed_out: u64,
    /// Why requests were routed to it (`weight`, `header`, `degraded`, `probe`, `budget`, …).
    pub by_reason: BTreeMap<String, u64>,
    /// Latency of its answers as clients saw them.
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Time series, one point per `sample_ms`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Series {
    /// End of each point, in seconds.
    pub t_s: Vec<f64>,
    pub requests: Vec<u64>,
    pub client_errors: Vec<u64>,
    pub fail_fast: Vec<u64>,
    pub shed: Vec<u64>,
    /// Per target, in the order of `targets`.
    pub targets: Vec<TargetSeries>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetSeries {
    pub requests: Vec<u64>,
    pub share_pct: Vec<f64>,
    pub errors: Vec<u64>,
    pub p50_ms: Vec<Option<f64>>,
    pub p99_ms: Vec<Option<f64>>,
    /// State on the first Envoy at the end of the point.
    pub state: Vec<&'static str>,
    /// Envoys on which the target was not healthy at the end of the point.
    pub unhealthy_envoys: Vec<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Transition {
    pub t_ms: f64,
    pub envoy: u16,
    pub target: String,
    pub from: &'static str,
    pub to: &'static str,
    pub rule: &'static str,
    pub why: String,
}

/// How long an Envoy took to act on a target turning bad (or good again).
#[derive(Clone, Debug, Serialize)]
pub struct Reaction {
    pub target: String,
    /// `degraded` (the target turned slow, failing or hung) or `restored`.
    pub kind: &'static str,
    /// When the scenario turned it.
    pub event_s: f64,
    pub envoy: u16,
    /// `None`: it never did, before the next turn or the end.
    pub after_ms: Option<f64>,
    /// Requests this Envoy sent the target from the turn until it reacted (or the end).
    pub requests_until: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct WeightChange {
    pub at_s: f64,
    pub route: String,
    pub before: BTreeMap<String, u32>,
    pub after: BTreeMap<String, u32>,
    /// Of `users` distinct user keys, how many moved from one target to another.
    pub users: u32,
    pub moved: Vec<Move>,
    /// Users who left a target whose weight rose (sticky bucketing keeps this at 0).
    pub left_a_raised_target: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Move {
    pub from: String,
    pub to: String,
    pub users: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Checked {
    pub expectation: Expectation,
    pub met: bool,
    /// What was measured, in words.
    pub detail: String,
}

impl Report {
    /// A page of text a person reads at a glance.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let build = match self.build {
            Build::Wasm => "Wasm",
            Build::Native => "native",
        };
        let _ = writeln!(
            o,
            "rehearsal: {:.0} s, {} requests, {} Envoy(s) x {} worker(s), {build} build, seed {}",
            self.duration_s, self.requests, self.envoys, self.workers, self.seed
        );
        let codes: Vec<String> = self.errors_by_code.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let codes = if codes.is_empty() { String::new() } else { format!(": {}", codes.join(", ")) };
        let _ = writeln!(o, "client-visible errors: {} ({:.2}%){codes}", self.client_errors, self.client_error_pct);
        if !self.replies.is_empty() || self.timed_out > 0 {
            let mut parts: Vec<String> = self.replies.iter().map(|(k, v)| format!("{k} {v}")).collect();
            if self.timed_out > 0 {
                parts.push(format!("client timeouts {}", self.timed_out));
            }
            let _ = writeln!(o, "  of which {}", parts.join(", "));
        }
        let _ = writeln!(o, "\n{:<16} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8}  why routed", "target", "requests", "share", "errors", "p50 ms", "p90 ms", "p99 ms");
        for t in &self.targets {
            let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
            let reasons: Vec<String> = t.by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(
                o,
                "{:<16} {:>9} {:>6.2}% {:>8} {:>8} {:>8} {:>8}  {}",
                t.name,
                t.requests,
                t.share_pct,
                t.errors + t.timed_out,
                ms(t.p50_ms),
                ms(t.p90_ms),
                ms(t.p99_ms),
                reasons.join(", ")
            );
        }
        if !self.transitions.is_empty() {
            let _ = writeln!(o, "\nhealth transitions:");
            for t in self.transitions.iter().take(40) {
                let _ = writeln!(o, "  {:>9.3} s  envoy {}  {}: {} -> {} ({})", t.t_ms / 1000.0, t.envoy, t.target, t.from, t.to, t.why);
            }
            if self.transitions.len() > 40 {
                let _ = writeln!(o, "  … {} more (see --format json)", self.transitions.len() - 40);
            }
        }
        if !self.reactions.is_empty() {
            let _ = writeln!(o, "\nreactions:");
            for r in &self.reactions {
                let after = r.after_ms.map_or("never".to_string(), |ms| format!("after {ms:.0} ms"));
                let _ = writeln!(
                    o,
                    "  {} turned {} at {:.1} s: envoy {} {} {after}, {} requests sent it meanwhile",
                    r.target,
                    if r.kind == "degraded" { "bad" } else { "good" },
                    r.event_s,
                    r.envoy,
                    r.kind,
                    r.requests_until
                );
            }
        }
        for w in &self.weight_changes {
            let fmt = |m: &BTreeMap<String, u32>| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
            let _ = writeln!(o, "\nweights of route {} at {:.1} s: {} -> {}", w.route, w.at_s, fmt(&w.before), fmt(&w.after));
            let moved: u32 = w.moved.iter().map(|m| m.users).sum();
            let _ = writeln!(o, "  {moved} of {} users moved; {} left a target whose weight rose", w.users, w.left_a_raised_target);
            for m in &w.moved {
                let _ = writeln!(o, "    {} -> {}: {}", m.from, m.to, m.users);
            }
        }
        if !self.expectations.is_empty() {
            let _ = writeln!(o, "\nexpectations:");
            for c in &self.expectations {
                let _ = writeln!(o, "  {} {}", if c.met { "met:  " } else { "UNMET:" }, c.detail);
            }
            let _ = writeln!(o, "{}", if self.passed { "all expectations met" } else { "some expectations are unmet" });
        }
        o
    }
}
