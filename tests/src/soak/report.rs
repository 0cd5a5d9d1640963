//! The soak's report (`target/soak/report.json`): every answer classified, latency steady and
//! around model swaps, and each process's resident memory after warm-up.

use super::events::Outcome;
use super::load::Sample;
use super::schedule::{self, Event};
use crate::envoy::Build;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// After a model file changes, the window counted as "during a swap".
const SWAP_WINDOW: Duration = Duration::from_secs(5);
/// After a fault or restart ends, the window still counted as disturbed.
const SETTLE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Serialize)]
pub struct EventRecord {
    pub at_s: f64,
    pub took_ms: u64,
    pub event: String,
    pub ok: bool,
    pub outcome: String,
    #[serde(skip)]
    pub kind: Event,
    #[serde(skip)]
    pub began: Instant,
    #[serde(skip)]
    pub ended: Instant,
}

impl EventRecord {
    pub fn new(event: &Event, started: Instant, began: Instant, ended: Instant, outcome: Outcome) -> EventRecord {
        let (ok, outcome) = match outcome {
            Ok(detail) => (true, detail),
            Err(e) => (false, format!("FAILED: {e:#}")),
        };
        EventRecord {
            at_s: round1(began.saturating_duration_since(started).as_secs_f64()),
            took_ms: ended.saturating_duration_since(began).as_millis() as u64,
            event: match event {
                Event::ModelSwap(n) => format!("model_swap #{n}"),
                Event::SchemaCompatible(n) => format!("schema_compatible @{n}"),
                Event::ConfigChanged(w) => format!("config_changed canary {w} %"),
                other => other.name().to_owned(),
            },
            ok,
            outcome,
            kind: event.clone(),
            began,
            ended,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MemorySample {
    pub t: f64,
    pub process: &'static str,
    pub pid: u32,
    pub resident: Resident,
    /// The sidecar's malloc figures (`None` for Envoy, or while the sidecar is down).
    pub heap: Option<Heap>,
}

/// Resident memory (`/proc/<pid>/status`), MiB.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Resident {
    /// `VmRSS`.
    pub total_mb: f64,
    /// `RssAnon`: malloc's arenas, thread stacks, anything not backed by a file.
    pub anon_mb: f64,
    /// `RssFile`: mapped files (libraries, ONNX Runtime's own).
    pub file_mb: f64,
}

/// The sidecar's malloc (`switchyard_sidecar_heap_in_use_bytes`, `_heap_free_bytes`), MiB.
/// RSS that moves while `in_use_mb` stays flat is free space or touched pages, not a leak;
/// `free_mb` is what malloc keeps resident beyond that (freed pages not yet given back,
/// fragmentation, its metadata).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Heap {
    pub in_use_mb: f64,
    pub free_mb: f64,
}

/// Every memory sample, one CSV line each (`memory.csv`).
pub fn memory_csv(memory: &[MemorySample]) -> String {
    let mut out = String::from("t_s,process,pid,rss_mb,rss_anon_mb,rss_file_mb,heap_in_use_mb,heap_free_mb\n");
    for m in memory {
        let r = m.resident;
        let heap = m.heap.map(|h| format!("{:.1},{:.1}", h.in_use_mb, h.free_mb)).unwrap_or_else(|| ",".into());
        out.push_str(&format!("{:.1},{},{},{:.1},{:.1},{:.1},{heap}\n", m.t, m.process, m.pid, r.total_mb, r.anon_mb, r.file_mb));
    }
    out
}

/// Everything a run produced.
pub struct Run {
    pub report: Report,
    pub samples: Vec<Sample>,
    pub events: Vec<EventRecord>,
    pub memory: Vec<MemorySample>,
    pub started: Instant,
}

pub struct Inputs {
    pub duration: Duration,
    pub capacity_rps: f64,
    pub rate_rps: u32,
    pub started: Instant,
    pub sent_until: Instant,
    pub filter_failures: u64,
    pub build: Build,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub minutes: f64,
    pub filter: String,
    pub capacity_rps: f64,
    pub load_rps: u32,
    pub requests: usize,
    /// Calls the client retried because a draining connection closed before they were sent
    /// (what gRPC's own clients do transparently).
    pub transparent_retries: u32,
    pub failures: Failures,
    pub unexpected_failures: usize,
    /// The first unexpected failures, when (since the load began), how long, what.
    pub unexpected_examples: Vec<String>,
    /// Answers whose page rotation the model got wrong (a broken swap would show here).
    pub wrong_answers: usize,
    pub latency_ms: Latency,
    pub rss_mb: BTreeMap<&'static str, [f64; 3]>,
    pub rss_growth_pct: BTreeMap<&'static str, f64>,
    /// The least-squares line through each lifetime's RSS after warm-up: its rise over that
    /// lifetime, in % of where it starts; the largest. A creep the medians of `rss_growth_pct`
    /// can miss when a lifetime ends in a quiet stretch.
    pub rss_trend_pct: BTreeMap<&'static str, f64>,
    /// The sidecar's malloc bytes in use, MiB: after warm-up, at the end, at most.
    pub sidecar_heap_in_use_mb: [f64; 3],
    pub events: Vec<EventRecord>,
    pub events_failed: usize,
    /// Trapped VMs, caught panics or a crashed Envoy (see `Envoy::filter_failures`).
    pub filter_failures: u64,
    pub warm_up_s: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Failures {
    pub expected: BTreeMap<String, usize>,
    pub unexpected: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    /// Successful answers outside every disturbance (faults on the canary's traffic, restarts, swaps).
    pub steady_p99: f64,
    /// Successful answers sent within 5 s of a model file change (and no other disturbance).
    pub p99_during_swaps: f64,
    pub during_swaps_samples: usize,
    pub p99_during_swaps_over_steady: f64,
}

/// A stretch of time something was disturbed on purpose.
struct Window {
    from: Instant,
    to: Instant,
}

impl Window {
    fn holds(&self, t: Instant) -> bool {
        t >= self.from && t <= self.to
    }
}

impl Report {
    pub fn compute(inputs: Inputs, samples: &[Sample], events: &[EventRecord], memory: &[MemorySample]) -> Report {
        let windows = |pred: &dyn Fn(&Event) -> bool, settle: Duration| -> Vec<Window> {
            events.iter().filter(|e| pred(&e.kind)).map(|e| Window { from: e.began, to: e.ended + settle }).collect()
        };
        let restarts = windows(&|e| matches!(e, Event::SidecarRestart | Event::EnvoyHotRestart), SETTLE);
        let sidecar_down = windows(&|e| matches!(e, Event::SidecarRestart), Duration::from_secs(2));
        let swaps = windows(&|e| e.is_model_file(), SWAP_WINDOW);
        let chaos = chaos_windows(events, inputs.sent_until);
        let in_any = |ws: &[Window], t: Instant| ws.iter().any(|w| w.holds(t));

        let mut failures = Failures::default();
        let mut examples = Vec::new();
        for s in samples.iter().filter(|s| s.code != tonic::Code::Ok) {
            let class = if s.message.contains("injected by chaos") {
                Ok("chaos_error")
            } else if s.client.low_priority && s.code == tonic::Code::ResourceExhausted {
                Ok("shed_low_priority")
            } else if s.client.tight_budget && is_deadline(s) {
                Ok("budget_too_tight")
            } else if s.code == tonic::Code::Unavailable && in_any(&sidecar_down, s.sent) {
                Ok("sidecar_restart")
            } else {
                Err(format!("{:?}: {}", s.code, s.message.chars().take(80).collect::<String>()))
            };
            match class {
                Ok(c) => *failures.expected.entry(c.to_owned()).or_default() += 1,
                Err(c) => {
                    if examples.len() < 20 {
                        examples.push(format!(
                            "{:.2} s after {:.0} ms: {c} (decision {:?}, {:?})",
                            s.sent.saturating_duration_since(inputs.started).as_secs_f64(),
                            s.latency_ms(),
                            s.decision,
                            s.client
                        ));
                    }
                    *failures.unexpected.entry(c).or_default() += 1
                }
            }
        }
        let wrong_answers = samples
            .iter()
            .filter(|s| s.code == tonic::Code::Ok)
            .filter(|s| s.class.as_deref() != Some(s.client.rotation.to_string().as_str()))
            .count();
        if wrong_answers > 0 {
            failures.unexpected.insert("wrong_answer".into(), wrong_answers);
        }

        let ok: Vec<&Sample> = samples.iter().filter(|s| s.code == tonic::Code::Ok).collect();
        // Chaos slows or fails the canary's traffic (and what the filter moves off it);
        // the stable target's traffic is not disturbed by it.
        let chaos_touched = |s: &Sample| in_any(&chaos, s.sent) && !s.decision.contains("target=stable");
        let steady: Vec<f64> = ok
            .iter()
            .filter(|s| !in_any(&restarts, s.sent) && !in_any(&swaps, s.sent) && !chaos_touched(s))
            .map(|s| s.latency_ms())
            .collect();
        let during_swaps: Vec<f64> = ok
            .iter()
            .filter(|s| in_any(&swaps, s.sent) && !in_any(&restarts, s.sent) && !chaos_touched(s))
            .map(|s| s.latency_ms())
            .collect();
        let all: Vec<f64> = ok.iter().map(|s| s.latency_ms()).collect();
        let (steady_p99, swaps_p99) = (percentile(&steady, 0.99), percentile(&during_swaps, 0.99));
        let latency = Latency {
            p50: percentile(&all, 0.50),
            p99: percentile(&all, 0.99),
            steady_p99,
            p99_during_swaps: swaps_p99,
            during_swaps_samples: during_swaps.len(),
            p99_during_swaps_over_steady: if steady_p99 > 0.0 { round2(swaps_p99 / steady_p99) } else { 0.0 },
        };

        let warm_up = schedule::warm_up(inputs.duration).as_secs_f64();
        let (mut rss_mb, mut rss_growth_pct, mut rss_trend_pct) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for process in ["envoy", "sidecar"] {
            let mine: Vec<&MemorySample> = memory.iter().filter(|m| m.process == process).collect();
            let after: Vec<f64> = mine.iter().filter(|m| m.t >= warm_up).map(|m| m.resident.total_mb).collect();
            let max = mine.iter().map(|m| m.resident.total_mb).fold(0.0, f64::max);
            rss_mb.insert(process, [round1(*after.first().unwrap_or(&0.0)), round1(*after.last().unwrap_or(&0.0)), round1(max)]);
            let lifetimes = settled_lifetimes(&mine, warm_up);
            rss_growth_pct.insert(process, round2(growth(&lifetimes)));
            rss_trend_pct.insert(process, round2(trend(&lifetimes)));
        }

        let heap: Vec<f64> = memory.iter().filter(|m| m.t >= warm_up).filter_map(|m| Some(m.heap?.in_use_mb)).collect();
        let sidecar_heap_in_use_mb = [
            round1(heap.first().copied().unwrap_or(0.0)),
            round1(heap.last().copied().unwrap_or(0.0)),
            round1(heap.iter().copied().fold(0.0, f64::max)),
        ];

        let unexpected_failures = failures.unexpected.values().sum();
        Report {
            minutes: round2(inputs.duration.as_secs_f64() / 60.0),
            filter: format!("{:?}", inputs.build).to_lowercase(),
            capacity_rps: round1(inputs.capacity_rps),
            load_rps: inputs.rate_rps,
            requests: samples.len(),
            transparent_retries: samples.iter().map(|s| s.retries).sum(),
            failures,
            unexpected_failures,
            unexpected_examples: examples,
            wrong_answers,
            latency_ms: latency,
            rss_mb,
            rss_growth_pct,
            rss_trend_pct,
            sidecar_heap_in_use_mb,
            events_failed: events.iter().filter(|e| !e.ok).count(),
            events: events.to_vec(),
            filter_failures: inputs.filter_failures,
            warm_up_s: round1(warm_up),
        }
    }

    /// Whether the run met the goals; what it missed otherwise.
    pub fn shortfalls(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.unexpected_failures > 0 {
            out.push(format!("{} unexpected failures: {:?}", self.unexpected_failures, self.failures.unexpected));
        }
        if self.events_failed > 0 {
            let failed: Vec<String> = self.events.iter().filter(|e| !e.ok).map(|e| format!("{} at {} s: {}", e.event, e.at_s, e.outcome)).collect();
            out.push(format!("{} scheduled changes did not go as they should:\n{}", self.events_failed, failed.join("\n")));
        }
        if self.filter_failures > 0 {
            out.push(format!("{} filter failures (trapped VM, caught panic)", self.filter_failures));
        }
        for (process, growth) in &self.rss_growth_pct {
            if *growth >= 5.0 {
                out.push(format!("{process} RSS grew {growth} % after warm-up (goal < 5 %)"));
            }
        }
        for (process, trend) in &self.rss_trend_pct {
            if *trend >= 5.0 {
                out.push(format!("{process} RSS trend rose {trend} % over a lifetime after warm-up (goal < 5 %)"));
            }
        }
        if self.latency_ms.p99_during_swaps_over_steady > 1.5 {
            out.push(format!(
                "p99 during swaps {:.1} ms is {}× the steady p99 {:.1} ms (goal ≤ 1.5×)",
                self.latency_ms.p99_during_swaps, self.latency_ms.p99_during_swaps_over_steady, self.latency_ms.steady_p99
            ));
        }
        out
    }
}

/// The client's deadline passed: Envoy or the filter said so (`DEADLINE_EXCEEDED`), or the
/// client's own timer did first (tonic cancels the call: `CANCELLED`, "Timeout expired").
fn is_deadline(s: &Sample) -> bool {
    s.code == tonic::Code::DeadlineExceeded || (s.code == tonic::Code::Cancelled && s.message == "Timeout expired")
}

/// From each chaos-on event to the chaos-off after it (or the end), plus the time the
/// filter needs to settle.
fn chaos_windows(events: &[EventRecord], end: Instant) -> Vec<Window> {
    let mut out = Vec::new();
    let mut on: Option<Instant> = None;
    for e in events {
        match e.kind {
            Event::ChaosLatency | Event::ChaosErrors => on = on.or(Some(e.began)),
            Event::ChaosOff => {
                if let Some(from) = on.take() {
                    out.push(Window { from, to: e.ended + SETTLE * 2 });
                }
            }
            _ => {}
        }
    }
    if let Some(from) = on {
        out.push(Window { from, to: end });
    }
    out
}

/// Each process lifetime's RSS samples after warm-up (a restart starts a new lifetime; one
/// started later has its own warm-up); lifetimes with fewer than 10 left out.
fn settled_lifetimes<'a>(samples: &[&'a MemorySample], warm_up: f64) -> Vec<Vec<&'a MemorySample>> {
    let mut pids: Vec<u32> = samples.iter().map(|m| m.pid).collect();
    pids.dedup();
    pids.iter()
        .filter_map(|pid| {
            let life: Vec<&&MemorySample> = samples.iter().filter(|m| m.pid == *pid).collect();
            let born = life.first()?.t;
            // The first processes start before the traffic (sampled from 0 s).
            let from = if born < 1.0 { warm_up } else { born + warm_up };
            let settled: Vec<&MemorySample> = life.iter().filter(|m| m.t >= from).map(|m| **m).collect();
            (settled.len() >= 10).then_some(settled)
        })
        .collect()
}

/// Growth of resident memory after warm-up, in %: for each process lifetime, the median of
/// its last fifth of samples over the median of its first fifth; the largest.
fn growth(lifetimes: &[Vec<&MemorySample>]) -> f64 {
    lifetimes
        .iter()
        .filter_map(|life| {
            let settled: Vec<f64> = life.iter().map(|m| m.resident.total_mb).collect();
            // Medians over a fifth of the stretch at each end: a reload's transient peak
            // (the new session built beside the old) is not growth.
            let fifth = (settled.len() / 5).max(5);
            let first = median(&settled[..fifth]);
            let last = median(&settled[settled.len() - fifth..]);
            (first > 0.0).then(|| (last - first) / first * 100.0)
        })
        .fold(0.0, f64::max)
}

/// The least-squares trend of resident memory after warm-up, in %: for each process
/// lifetime, the fitted line's rise from its first to its last sample over the line's value
/// at the first; the largest (negative when every lifetime's memory fell).
fn trend(lifetimes: &[Vec<&MemorySample>]) -> f64 {
    lifetimes
        .iter()
        .filter_map(|life| {
            let n = life.len() as f64;
            let mean_t = life.iter().map(|m| m.t).sum::<f64>() / n;
            let mean_mb = life.iter().map(|m| m.resident.total_mb).sum::<f64>() / n;
            let spread: f64 = life.iter().map(|m| (m.t - mean_t).powi(2)).sum();
            let covariance: f64 = life.iter().map(|m| (m.t - mean_t) * (m.resident.total_mb - mean_mb)).sum();
            let (first_t, last_t) = (life.first()?.t, life.last()?.t);
            let slope = if spread > 0.0 { covariance / spread } else { 0.0 };
            let start = mean_mb - slope * (mean_t - first_t);
            (start > 0.0).then(|| slope * (last_t - first_t) / start * 100.0)
        })
        .reduce(f64::max)
        .unwrap_or(0.0)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1));
    round1(v.get(i).copied().unwrap_or(0.0))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Every answer, one CSV line each: sent (s since the load began), latency, status, the
/// filter's decision and what the client was.
pub fn samples_csv(samples: &[Sample], started: Instant) -> String {
    let mut out = String::from("sent_s,latency_ms,code,decision,low_priority,tight_budget,rotation,class,message\n");
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_by_key(|s| s.sent);
    for s in sorted {
        out.push_str(&format!(
            "{:.3},{:.1},{:?},{},{},{},{},{},{}\n",
            s.sent.saturating_duration_since(started).as_secs_f64(),
            s.latency_ms(),
            s.code,
            s.decision.replace(',', ";"),
            s.client.low_priority,
            s.client.tight_budget,
            s.client.rotation,
            s.class.as_deref().unwrap_or(""),
            s.message.replace([',', '\n'], " "),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifetime(pid: u32, from_s: u32, mb: impl Fn(f64) -> f64) -> Vec<MemorySample> {
        (from_s..from_s + 600)
            .step_by(2)
            .map(|s| {
                let t = f64::from(s);
                MemorySample { t, process: "sidecar", pid, resident: Resident { total_mb: mb(t), anon_mb: 0.0, file_mb: 0.0 }, heap: None }
            })
            .collect()
    }

    #[test]
    fn a_trend_is_the_fitted_rise_of_the_worst_lifetime() {
        // One lifetime flat but for a reload's peak, one rising 10 MB from 100 after warm-up.
        let mut samples = lifetime(1, 0, |t| if (300.0..310.0).contains(&t) { 180.0 } else { 100.0 });
        samples.extend(lifetime(2, 600, |t| 100.0 + (t - 720.0).max(0.0) * 10.0 / 478.0));
        let samples: Vec<&MemorySample> = samples.iter().collect();
        let trend = trend(&settled_lifetimes(&samples, 120.0));
        assert!((trend - 10.0).abs() < 0.5, "{trend}");
        // Falling memory in every lifetime is a negative trend, not zero.
        let falling = lifetime(3, 0, |t| 200.0 - t / 10.0);
        assert!(super::trend(&settled_lifetimes(&falling.iter().collect::<Vec<_>>(), 120.0)) < -20.0);
    }
}
