//! A scenario: the traffic, how each target behaves over time, configuration changes and
//! the expectations a rehearsal gates on. Read from YAML or JSON; every error names the
//! place (`line:column` for YAML syntax, a field path for shapes and values).

use serde::Deserialize;
use std::collections::BTreeMap;

/// Limits that keep a rehearsal from hanging a browser tab or a pipeline.
pub mod limits {
    /// Simulated requests in one rehearsal (the scenario's rate integrated over its length).
    pub const MAX_REQUESTS: f64 = 20_000_000.0;
    pub const MAX_DURATION_S: f64 = 86_400.0;
    pub const MAX_USERS: u32 = 1_000_000;
    pub const MAX_ENVOYS: u32 = 64;
    pub const MAX_WORKERS: u32 = 64;
    /// Points of each time series.
    pub const MAX_SAMPLES: f64 = 10_000.0;
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seed of every random choice: the same scenario and seed give the same report.
    #[serde(default = "one")]
    pub seed: u64,
    /// Simulated seconds.
    pub duration_s: f64,
    /// Width of one point of the time series, in milliseconds.
    #[serde(default = "thousand")]
    pub sample_ms: u32,
    #[serde(default)]
    pub fleet: Fleet,
    pub traffic: Traffic,
    /// How each target (by name) answers; a target not listed answers in 20 ms (p50) /
    /// 50 ms (p99) without errors.
    #[serde(default)]
    pub targets: BTreeMap<String, Behaviour>,
    /// Configuration and snapshot changes, in time order.
    #[serde(default)]
    pub changes: Vec<Change>,
    #[serde(default)]
    pub expect: Vec<Expectation>,
    /// The requests of `traffic.replay`, once its log is read (by the command line).
    #[serde(skip)]
    pub replay_log: Option<crate::replay::Replay>,
}

fn one() -> u64 {
    1
}
fn thousand() -> u32 {
    1000
}

/// Which build of the filter, which decides how workers share health.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Build {
    /// Each worker keeps its own ledger and merges it through Envoy's shared data on its
    /// tick (what Istio's `WasmPlugin` loads).
    #[default]
    Wasm,
    /// One ledger per Envoy process (the dynamic module).
    Native,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// Envoys sharing the traffic evenly; each decides on its own.
    #[serde(default = "one_u32")]
    pub envoys: u32,
    /// Worker threads per Envoy; a request lands on one at random.
    #[serde(default = "two_u32")]
    pub workers: u32,
    #[serde(default)]
    pub build: Build,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet { envoys: 1, workers: 2, build: Build::Wasm }
    }
}

fn one_u32() -> u32 {
    1
}
fn two_u32() -> u32 {
    2
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// The gRPC method every request calls.
    #[serde(default = "default_method")]
    pub method: String,
    /// Requests per second, stepping at each point's `at_s` (Poisson arrivals).
    #[serde(default)]
    pub rate: Vec<RatePoint>,
    /// Instead of `rate` and the shares below: an Envoy access log (the README's format),
    /// relative to the scenario's file, whose requests are replayed as they came.
    pub replay: Option<String>,
    /// Distinct user keys (`x-user-id`), drawn uniformly.
    #[serde(default = "thousand_u32")]
    pub users: u32,
    /// Shares of requests sending the group header with a value; the rest send none.
    #[serde(default)]
    pub groups: Vec<Share>,
    /// Shares of requests declaring a schema revision; the rest declare none.
    #[serde(default)]
    pub revisions: Vec<Share>,
    /// Shares of requests with a `grpc-timeout` of `value` milliseconds; the rest have none.
    #[serde(default)]
    pub timeouts_ms: Vec<TimeoutShare>,
    /// Share of requests sending a low priority (`x-priority: low`), in percent.
    #[serde(default)]
    pub low_priority_pct: f64,
    /// How long a client without `grpc-timeout` waits before it gives up, in milliseconds.
    #[serde(default = "client_timeout")]
    pub client_timeout_ms: u32,
}

fn default_method() -> String {
    "/features.v1.FeatureExtractionService/ExtractRealtime".into()
}
fn thousand_u32() -> u32 {
    1000
}
fn client_timeout() -> u32 {
    15_000
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatePoint {
    pub at_s: f64,
    pub rps: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    pub value: String,
    pub pct: f64,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutShare {
    pub value: u32,
    pub pct: f64,
}

/// How a target answers, and how that changes over time.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    #[serde(flatten)]
    pub initial: Phase,
    /// Changes at given times; each replaces the fields it sets.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// One stretch of a target's behaviour. Latency is log-normal through `p50_ms` and `p99_ms`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Share of requests answered with `error_code`, in percent.
    pub error_pct: Option<f64>,
    /// A gRPC status name (`UNAVAILABLE`) or number; default `UNAVAILABLE`.
    pub error_code: Option<String>,
    /// The target answers nothing: clients wait until their deadline.
    pub hang: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub at_s: f64,
    #[serde(flatten)]
    pub phase: Phase,
}

/// A change at `at_s`: new weights, a whole new plugin configuration, or a new snapshot.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub at_s: f64,
    /// Target name → weight, for the route named `route` (the first route if absent).
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    pub route: Option<String>,
    /// A whole plugin configuration replacing the current one.
    pub config: Option<serde_json::Value>,
    /// A sidecar snapshot document the filter receives from its next poll on.
    pub snapshot: Option<serde_json::Value>,
}

/// What must hold for the rehearsal to pass. Each item states one thing.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Client-visible errors (local replies and upstream errors) at most this share of
    /// all requests, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_errors_max_pct: Option<f64>,
    /// The target this item is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Every Envoy degrades `target` within this many ms of each event that makes it slow,
    /// failing or hung.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded_within_ms: Option<u64>,
    /// Every Envoy has `target` healthy again within this many ms of each event that
    /// makes it good again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_within_ms: Option<u64>,
    /// `target` serves this share of requests (percent, ± `tolerance_pct`) over
    /// `between_s` (the whole run if absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub between_s: Option<[f64; 2]>,
}

/// A scenario that cannot run, and where it is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    /// `line:column` for syntax errors, a field path (`traffic.rate[1].rps`) otherwise.
    pub at: String,
    pub message: String,
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.at.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.at, self.message)
        }
    }
}

impl std::error::Error for ScenarioError {}

fn at(path: impl Into<String>, message: impl Into<String>) -> ScenarioError {
    ScenarioError { at: path.into(), message: message.into() }
}

impl Scenario {
    /// Parses YAML (JSON is YAML too) and checks every value.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let trimmed = text.trim_start();
        let scenario: Scenario = if trimmed.starts_with('{') {
            let de = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let inner = e.inner();
                let path = e.path().to_string();
                let place = if path == "." { format!("line {}:{}", inner.line(), inner.column()) } else { path };
                at(place, inner.to_string())
            })?
        } else {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let place = match (path.as_str(), inner.location()) {
                    (".", Some(l)) => format!("line {}:{}", l.line(), l.column()),
                    (".", None) => String::new(),
                    (p, Some(l)) => format!("{p} (line {}:{})", l.line(), l.column()),
                    (p, None) => p.to_string(),
                };
                at(place, strip_location(&inner.to_string()))
            })?
        };
        scenario.check()?;
        Ok(scenario)
    }

    /// Attaches the replayed log's requests (read by the caller from `traffic.replay`).
    pub fn attach_replay(&mut self, log: crate::replay::Replay) {
        self.replay_log = Some(log);
    }

    /// Simulated requests the rate asks for.
    pub fn expected_requests(&self) -> f64 {
        let mut total = 0.0;
        for (i, p) in self.traffic.rate.iter().enumerate() {
            let end = self.traffic.rate.get(i + 1).map_or(self.duration_s, |n| n.at_s).min(self.duration_s);
            total += p.rps * (end - p.at_s).max(0.0);
        }
        total
    }

    fn check(&self) -> Result<(), ScenarioError> {
        use limits::*;
        if !(self.duration_s > 0.0 && self.duration_s <= MAX_DURATION_S) {
            return Err(at("duration_s", format!("must be over 0 and at most {MAX_DURATION_S} s; got {}", self.duration_s)));
        }
        if self.sample_ms == 0 {
            return Err(at("sample_ms", "must be at least 1"));
        }
        let samples = self.duration_s * 1000.0 / f64::from(self.sample_ms);
        if samples > MAX_SAMPLES {
            return Err(at(
                "sample_ms",
                format!("{samples:.0} points of time series exceed the limit of {MAX_SAMPLES}; make sample_ms larger"),
            ));
        }
        if !(1..=MAX_ENVOYS).contains(&self.fleet.envoys) {
            return Err(at("fleet.envoys", format!("must be 1 to {MAX_ENVOYS}; got {}", self.fleet.envoys)));
        }
        if !(1..=MAX_WORKERS).contains(&self.fleet.workers) {
            return Err(at("fleet.workers", format!("must be 1 to {MAX_WORKERS}; got {}", self.fleet.workers)));
        }
        let t = &self.traffic;
        if t.rate.is_empty() && t.replay.is_none() {
            return Err(at("traffic.rate", "needs at least one point (or name a log in traffic.replay)"));
        }
        if t.replay.is_some() && !t.rate.is_empty() {
            return Err(at("traffic.replay", "replays a log's requests; leave traffic.rate out"));
        }
        let mut last = f64::NEG_INFINITY;
        for (i, p) in t.rate.iter().enumerate() {
            if !(p.at_s >= 0.0 && p.at_s.is_finite()) || p.at_s < last {
                return Err(at(format!("traffic.rate[{i}].at_s"), "must be at least 0 and not before the previous point"));
            }
            if !(p.rps >= 0.0 && p.rps.is_finite()) {
                return Err(at(format!("traffic.rate[{i}].rps"), format!("must be at least 0; got {}", p.rps)));
            }
            last = p.at_s;
        }
        let requests = self.expected_requests();
        if requests > MAX_REQUESTS {
            return Err(at(
                "traffic.rate",
                format!("asks for {requests:.0} simulated requests; the limit is {MAX_REQUESTS:.0} (shorten the run or lower the rate)"),
            ));
        }
        if !(1..=MAX_USERS).contains(&t.users) {
            return Err(at("traffic.users", format!("must be 1 to {MAX_USERS}; got {}", t.users)));
        }
        if !t.method.starts_with('/') || t.method[1..].split('/').count() != 2 {
            return Err(at("traffic.method", format!("must be a gRPC path `/package.Service/Method`; got {:?}", t.method)));
        }
        check_shares("traffic.groups", t.groups.iter().map(|s| s.pct))?;
        check_shares("traffic.revisions", t.revisions.iter().map(|s| s.pct))?;
        check_shares("traffic.timeouts_ms", t.timeouts_ms.iter().map(|s| s.pct))?;
        for (i, s) in t.timeouts_ms.iter().enumerate() {
            if s.value == 0 || s.value > 99_999_999 {
                return Err(at(format!("traffic.timeouts_ms[{i}].value"), "must be 1 to 99999999 ms"));
            }
        }
        check_pct("traffic.low_priority_pct", t.low_priority_pct)?;
        if t.client_timeout_ms == 0 {
            return Err(at("traffic.client_timeout_ms", "must be at least 1"));
        }
        for (name, b) in &self.targets {
            let base = format!("targets.{name}");
            b.initial.check(&base)?;
            let mut last = f64::NEG_INFINITY;
            for (i, e) in b.events.iter().enumerate() {
                let here = format!("{base}.events[{i}]");
                if !(e.at_s >= 0.0 && e.at_s.is_finite()) || e.at_s < last {
                    return Err(at(format!("{here}.at_s"), "must be at least 0 and not before the previous event"));
                }
                last = e.at_s;
                e.phase.check(&here)?;
            }
        }
        let mut last = f64::NEG_INFINITY;
        for (i, c) in self.changes.iter().enumerate() {
            let here = format!("changes[{i}]");
            if !(c.at_s >= 0.0 && c.at_s.is_finite()) || c.at_s < last {
                return Err(at(format!("{here}.at_s"), "must be at least 0 and not before the previous change"));
            }
            last = c.at_s;
            if c.weights.is_empty() && c.config.is_none() && c.snapshot.is_none() {
                return Err(at(here, "changes nothing: set `weights`, `config` or `snapshot`"));
            }
            if !c.weights.is_empty() && c.config.is_some() {
                return Err(at(here, "set either `weights` or a whole `config`, not both"));
            }
        }
        for (i, e) in self.expect.iter().enumerate() {
            e.check(&format!("expect[{i}]"))?;
        }
        Ok(())
    }
}

impl Phase {
    fn check(&self, base: &str) -> Result<(), ScenarioError> {
        for (name, v) in [("p50_ms", self.p50_ms), ("p99_ms", self.p99_ms)] {
            if let Some(v) = v {
                if !(v > 0.0 && v <= 3_600_000.0) {
                    return Err(at(format!("{base}.{name}"), format!("must be over 0 and at most 3600000 ms; got {v}")));
                }
            }
        }
        if let (Some(p50), Some(p99)) = (self.p50_ms, self.p99_ms) {
            if p99 < p50 {
                return Err(at(format!("{base}.p99_ms"), format!("must be at least p50_ms ({p50}); got {p99}")));
            }
        }
        if let Some(pct) = self.error_pct {
            check_pct(&format!("{base}.error_pct"), pct)?;
        }
        if let Some(code) = &self.error_code {
            if crate::behaviour::parse_code(code).is_none() {
                return Err(at(format!("{base}.error_code"), format!("{code:?} is not a gRPC status (a name such as UNAVAILABLE, or 1 to 16)")));
            }
        }
        Ok(())
    }
}

impl Expectation {
    fn check(&self, base: &str) -> Result<(), ScenarioError> {
        let kinds = [
            self.client_errors_max_pct.is_some(),
            self.degraded_within_ms.is_some(),
            self.restored_within_ms.is_some(),
            self.share_pct.is_some(),
        ];
        match kinds.iter().filter(|k| **k).count() {
            1 => {}
            0 => {
                return Err(at(
                    base,
                    "states nothing: set one of client_errors_max_pct, degraded_within_ms, restored_within_ms, share_pct",
                ))
            }
            _ => return Err(at(base, "states more than one thing; use one item per expectation")),
        }
        if let Some(p) = self.client_errors_max_pct {
            check_pct(&format!("{base}.client_errors_max_pct"), p)?;
        }
        let needs_target = !kinds[0];
        if needs_target && self.target.is_none() {
            return Err(at(format!("{base}.target"), "name the target this expectation is about"));
        }
        if let Some(p) = self.share_pct {
            check_pct(&format!("{base}.share_pct"), p)?;
        }
        if self.tolerance_pct.is_some() && self.share_pct.is_none() {
            return Err(at(format!("{base}.tolerance_pct"), "only goes with share_pct"));
        }
        if let Some([from, to]) = self.between_s {
            if !(from >= 0.0 && to > from) {
                return Err(at(format!("{base}.between_s"), format!("must be [from, to] with 0 ≤ from < to; got [{from}, {to}]")));
            }
        }
        Ok(())
    }
}

fn check_pct(path: &str, pct: f64) -> Result<(), ScenarioError> {
    if (0.0..=100.0).contains(&pct) {
        Ok(())
    } else {
        Err(at(path, format!("must be a percentage from 0 to 100; got {pct}")))
    }
}

fn check_shares(path: &str, shares: impl Iterator<Item = f64>) -> Result<(), ScenarioError> {
    let mut total = 0.0;
    for (i, pct) in shares.enumerate() {
        check_pct(&format!("{path}[{i}].pct"), pct)?;
        total += pct;
    }
    if total > 100.0 + 1e-9 {
        return Err(at(path, format!("shares add up to {total}%, over 100%")));
    }
    Ok(())
}

/// serde_yaml appends " at line L column C" to messages; the place is reported separately.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "duration_s: 10\ntraffic:\n  rate: [{at_s: 0, rps: 100}]\n";

    #[test]
    fn a_minimal_scenario_takes_the_defaults() {
        let s = Scenario::parse(MINIMAL).unwrap();
        assert_eq!((s.seed, s.sample_ms, s.fleet.envoys, s.fleet.workers, s.fleet.build), (1, 1000, 1, 2, Build::Wasm));
        assert_eq!(s.expected_requests(), 1000.0);
    }

    #[test]
    fn errors_name_the_place() {
        let e = Scenario::parse("duration_s: 10\ntraffic:\n  rate: [{at_s: 0, rps: -1}]\n").unwrap_err();
        assert_eq!(e.at, "traffic.rate[0].rps");
        let e = Scenario::parse("duration_s: 10\ntraffic:\n  rate: [{at_s: 0, rsp: 1}]\n").unwrap_err();
        assert!(e.at.starts_with("traffic.rate[0]"), "{e}");
        assert!(e.message.contains("rsp"), "{e}");
        let e = Scenario::parse("duration_s: 10\ntraffic: [\n").unwrap_err();
        assert!(e.at.contains("line 2"), "{e}");
        let e = Scenario::parse(&format!("{MINIMAL}targets:\n  canary: {{error_code: BANANA}}\n")).unwrap_err();
        assert_eq!(e.at, "targets.canary.error_code");
        let e = Scenario::parse(&format!("{MINIMAL}expect:\n  - {{target: canary}}\n")).unwrap_err();
        assert_eq!(e.at, "expect[0]");
        let e = Scenario::parse(r#"{"duration_s": 10, "traffic": {"rate": [{"at_s": 0, "rps": "x"}]}}"#).unwrap_err();
        assert_eq!(e.at, "traffic.rate[0].rps");
    }

    #[test]
    fn too_large_a_scenario_is_refused_with_the_limit() {
        let e = Scenario::parse("duration_s: 86400\ntraffic:\n  rate: [{at_s: 0, rps: 100000}]\nsample_ms: 60000\n").unwrap_err();
        assert_eq!(e.at, "traffic.rate");
        assert!(e.message.contains("20000000"), "{e}");
        let e = Scenario::parse("duration_s: 86400\ntraffic:\n  rate: [{at_s: 0, rps: 1}]\n").unwrap_err();
        assert_eq!(e.at, "sample_ms");
    }
}
