//! How a simulated upstream answers: latency, errors and hangs, phase by phase.

use crate::scenario::{Behaviour, Phase};

/// gRPC status names, numbered by the spec.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A status name (any case) or number, 1 to 16.
pub(crate) fn parse_code(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u32>() {
        return (1..=16).contains(&n).then_some(n);
    }
    CODES.iter().position(|c| c.eq_ignore_ascii_case(s)).filter(|&i| i > 0).map(|i| i as u32)
}

pub(crate) fn code_name(code: u32) -> &'static str {
    CODES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

/// One stretch of behaviour, resolved (every field set).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Resolved {
    /// Log-normal parameters of the latency in ms.
    mu: f64,
    sigma: f64,
    pub(crate) p50_ms: f64,
    pub(crate) error_pct: f64,
    pub(crate) error_code: u32,
    pub(crate) hang: bool,
}

const P99_Z: f64 = 2.326_347_874;

impl Resolved {
    fn new(p50: f64, p99: f64, error_pct: f64, error_code: u32, hang: bool) -> Self {
        let mu = p50.ln();
        let sigma = ((p99.ln() - mu) / P99_Z).max(0.0);
        Resolved { mu, sigma, p50_ms: p50, error_pct, error_code, hang }
    }

    /// A latency in nanoseconds.
    pub(crate) fn latency_ns(&self, rng: &mut Rng) -> u64 {
        let ms = (self.mu + self.sigma * rng.normal()).exp();
        (ms * 1e6) as u64
    }
}

/// A target's behaviour as a list of `(from ns, phase)`.
#[derive(Clone, Debug)]
pub(crate) struct Timeline {
    phases: Vec<(u64, Resolved)>,
}

impl Timeline {
    pub(crate) fn new(b: Option<&Behaviour>) -> Self {
        let mut current = Phase { p50_ms: Some(20.0), p99_ms: Some(50.0), error_pct: Some(0.0), error_code: None, hang: Some(false) };
        let mut phases = Vec::new();
        let apply = |current: &mut Phase, p: &Phase| {
            // A new p50 without a p99 keeps the previous spread.
            if let (Some(new50), None, Some(old50), Some(old99)) = (p.p50_ms, p.p99_ms, current.p50_ms, current.p99_ms) {
                current.p99_ms = Some(new50 * old99 / old50);
            }
            if p.p50_ms.is_some() {
                current.p50_ms = p.p50_ms;
            }
            if p.p99_ms.is_some() {
                current.p99_ms = p.p99_ms.map(|v| v.max(current.p50_ms.unwrap_or(v)));
            }
            if p.error_pct.is_some() {
                current.error_pct = p.error_pct;
            }
            if p.error_code.is_some() {
                current.error_code = p.error_code.clone();
            }
            if p.hang.is_some() {
                current.hang = p.hang;
            }
        };
        let resolve = |p: &Phase| {
            let p50 = p.p50_ms.unwrap_or(20.0);
            Resolved::new(
                p50,
                p.p99_ms.unwrap_or(p50).max(p50),
                p.error_pct.unwrap_or(0.0),
                p.error_code.as_deref().and_then(parse_code).unwrap_or(14),
                p.hang.unwrap_or(false),
            )
        };
        if let Some(b) = b {
            apply(&mut current, &b.initial);
        }
        phases.push((0, resolve(&current)));
        for e in b.map(|b| b.events.as_slice()).unwrap_or_default() {
            apply(&mut current, &e.phase);
            phases.push(((e.at_s * 1e9) as u64, resolve(&current)));
        }
        Timeline { phases }
    }

    /// The phase in force at `now` (phases are few; a scan is cheapest).
    pub(crate) fn at(&self, now: u64) -> &Resolved {
        let mut found = None;
        for (from, phase) in &self.phases {
            if *from > now {
                break;
            }
            found = Some(phase);
        }
        found.or_else(|| self.phases.first().map(|(_, p)| p)).unwrap_or(&FALLBACK_PHASE)
    }

    /// Times (ns) at which the target turns bad (slow past `slow_ms`, failing past
    /// `error_pct`, or hung) and good again.
    pub(crate) fn turns(&self, slow_ms: f64, error_pct: f64) -> Vec<(u64, bool)> {
        let mut out = Vec::new();
        let mut bad = false;
        for (from, p) in &self.phases {
            let now_bad = p.hang || p.p50_ms > slow_ms || p.error_pct > error_pct;
            if now_bad != bad {
                out.push((*from, now_bad));
                bad = now_bad;
            }
        }
        out
    }
}

const FALLBACK_PHASE: Resolved = Resolved { mu: 3.0, sigma: 0.0, p50_ms: 20.0, error_pct: 0.0, error_code: 14, hang: false };

/// The rehearsal's random source: SplitMix64, deterministic for a seed.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    state: u64,
    /// The second normal of the last Box–Muller pair, not yet used.
    spare_normal: Option<f64>,
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng { state: seed ^ 0x5eed_5eed_5eed_5eed, spare_normal: None }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// Standard normal (Box–Muller: a pair per logarithm, the second kept for the next call).
    pub(crate) fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        let r = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare_normal = Some(r * sin);
        r * cos
    }

    /// Exponential with mean `mean`.
    pub(crate) fn exp(&mut self, mean: f64) -> f64 {
        -(1.0 - self.unit()).ln() * mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Event;

    #[test]
    fn latency_follows_p50_and_p99() {
        let r = Resolved::new(20.0, 80.0, 0.0, 14, false);
        let mut rng = Rng::new(3);
        let mut v: Vec<u64> = (0..100_000).map(|_| r.latency_ns(&mut rng)).collect();
        v.sort_unstable();
        let p50 = v[50_000] as f64 / 1e6;
        let p99 = v[99_000] as f64 / 1e6;
        assert!((19.0..21.0).contains(&p50), "{p50}");
        assert!((74.0..86.0).contains(&p99), "{p99}");
    }

    #[test]
    fn events_replace_what_they_set() {
        let b = Behaviour {
            initial: Phase { p50_ms: Some(10.0), p99_ms: Some(30.0), ..Phase::default() },
            events: vec![
                Event { at_s: 60.0, phase: Phase { p50_ms: Some(900.0), ..Phase::default() } },
                Event { at_s: 90.0, phase: Phase { p50_ms: Some(10.0), error_pct: Some(50.0), ..Phase::default() } },
            ],
        };
        let t = Timeline::new(Some(&b));
        assert_eq!(t.at(0).p50_ms, 10.0);
        assert_eq!(t.at(61_000_000_000).p50_ms, 900.0);
        assert_eq!(t.at(91_000_000_000).error_pct, 50.0);
        assert_eq!(t.turns(500.0, 20.0), vec![(60_000_000_000, true)], "slow, then failing: one bad stretch");
        assert_eq!(parse_code("unavailable"), Some(14));
        assert_eq!(parse_code("4"), Some(4));
        assert_eq!(parse_code("OK"), None);
    }
}
