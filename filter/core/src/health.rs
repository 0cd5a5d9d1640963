//! Automatic degradation per target: a circuit breaker with the rules canary tools use,
//! evaluated in the data path and shared by every Envoy worker.
//!
//! A target is `Healthy`, `Degraded` (no new traffic; its share goes to the route's
//! fallback) or `Probing` (half-open: a small share is sent to it). It degrades when
//!
//! * `N` consecutive responses are slower than `X` ms, or
//! * its error rate (by `grpc-status`) over a sliding window exceeds `P`%, with at
//!   least a minimum number of requests, or
//! * the sidecar reports its model version unhealthy.
//!
//! After a cool-down it is probed; enough good probes restore it, one bad probe sends it
//! back with a doubled cool-down (up to a maximum).
//!
//! Each worker records what it sees in [`Observed`] (plain memory, per request) and, on
//! its tick, merges that into the route's [`RouteHealth`], which lives in Envoy's shared
//! data so every worker degrades together. This module is the state and its rules; the
//! glue only moves bytes between workers.

use crate::latency::{Histogram, LatencyWindow, BUCKETS, SLOTS};

/// The rules of one route (validated configuration).
#[derive(Clone, Debug, PartialEq)]
pub struct DegradeRules {
    /// Consecutive slow responses that degrade a target; 0 disables the rule.
    pub slow_consecutive: u32,
    /// A response slower than this is slow.
    pub slow_threshold_us: u64,
    /// Error rate (percent) above which a target degrades; 0 disables the rule.
    pub error_rate_pct: f64,
    pub error_window_ms: u64,
    pub error_min_requests: u32,
    /// gRPC status codes that count as errors.
    pub error_codes: Vec<u32>,
    pub cooldown_ms: u64,
    pub max_cooldown_ms: u64,
    /// Share of a probing target's traffic that it receives, in percent.
    pub probe_share_pct: f64,
    /// Good probes in a row that restore a target.
    pub probe_successes: u32,
    /// Whether the sidecar's per-version health degrades a target.
    pub follow_sidecar: bool,
    /// Window of the latency estimate.
    pub latency_window_ms: u64,
}

impl Default for DegradeRules {
    fn default() -> Self {
        Self {
            slow_consecutive: 5,
            slow_threshold_us: 800_000,
            error_rate_pct: 5.0,
            error_window_ms: 60_000,
            error_min_requests: 20,
            // UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, DATA_LOSS:
            // the server's fault, not the caller's.
            error_codes: vec![2, 4, 8, 13, 14, 15],
            cooldown_ms: 10_000,
            max_cooldown_ms: 300_000,
            probe_share_pct: 5.0,
            probe_successes: 5,
            follow_sidecar: true,
            latency_window_ms: 10_000,
        }
    }
}

impl DegradeRules {
    pub fn is_error(&self, grpc_status: u32) -> bool {
        self.error_codes.contains(&grpc_status)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Healthy,
    Degraded,
    Probing,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Healthy => "healthy",
            Mode::Degraded => "degraded",
            Mode::Probing => "probing",
        }
    }

    /// The value of the per-target state gauge.
    pub fn gauge(self) -> u64 {
        match self {
            Mode::Healthy => 0,
            Mode::Degraded => 1,
            Mode::Probing => 2,
        }
    }

    fn from_u8(b: u8) -> Mode {
        match b {
            1 => Mode::Degraded,
            2 => Mode::Probing,
            _ => Mode::Healthy,
        }
    }
}

/// Why a target left `Healthy` (or went back to `Degraded`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    None,
    SlowResponses,
    ErrorRate,
    SidecarUnhealthy,
    ProbeFailed,
}

impl Cause {
    fn from_u8(b: u8) -> Cause {
        match b {
            1 => Cause::SlowResponses,
            2 => Cause::ErrorRate,
            3 => Cause::SidecarUnhealthy,
            4 => Cause::ProbeFailed,
            _ => Cause::None,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Cause::None => 0,
            Cause::SlowResponses => 1,
            Cause::ErrorRate => 2,
            Cause::SidecarUnhealthy => 3,
            Cause::ProbeFailed => 4,
        }
    }
}

/// One finished request, as the response (or its absence) showed it.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub latency_us: u64,
    /// Counted as an error by the route's rules (status code, reset, no response).
    pub error: bool,
    /// Whether the request was sent as a probe of a `Probing` target.
    pub probe: bool,
    /// Already counted slow while in flight (see `inflight`): not counted again.
    pub counted_slow: bool,
}

/// What one worker saw of one target since its last merge.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub requests: u32,
    pub errors: u32,
    /// Slow responses since this worker's last fast one.
    pub trailing_slow: u32,
    pub saw_fast: bool,
    pub probe_good: u32,
    pub probe_bad: u32,
    pub latency: Histogram,
}

impl Observed {
    pub fn record(&mut self, o: Outcome, rules: &DegradeRules) {
        let slow = o.latency_us > rules.slow_threshold_us;
        self.requests = self.requests.saturating_add(1);
        if o.error {
            self.errors = self.errors.saturating_add(1);
        } else {
            self.latency.record_us(o.latency_us);
        }
        if slow {
            if !o.counted_slow {
                self.trailing_slow = self.trailing_slow.saturating_add(1);
            }
        } else if !o.error {
            self.saw_fast = true;
            self.trailing_slow = 0;
        }
        if o.probe {
            if o.error || slow {
                self.probe_bad = self.probe_bad.saturating_add(1);
            } else {
                self.probe_good = self.probe_good.saturating_add(1);
            }
        }
    }

    /// Counts `n` requests still in flight past the slow threshold as slow responses.
    pub fn overdue(&mut self, n: u32) {
        self.trailing_slow = self.trailing_slow.saturating_add(n);
    }

    /// Folds in `older` observations (made before this one's) that could not be merged.
    pub fn absorb(&mut self, older: Observed) {
        self.requests = self.requests.saturating_add(older.requests);
        self.errors = self.errors.saturating_add(older.errors);
        if !self.saw_fast {
            self.trailing_slow = self.trailing_slow.saturating_add(older.trailing_slow);
        }
        self.saw_fast |= older.saw_fast;
        self.probe_good = self.probe_good.saturating_add(older.probe_good);
        self.probe_bad = self.probe_bad.saturating_add(older.probe_bad);
        self.latency.add(&older.latency);
    }
}

/// Requests in flight on one worker, as of its last merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerLoad {
    pub worker: u64,
    pub in_flight: u32,
    pub at_ms: u64,
}

/// A worker's load is forgotten if it has not reported for this long (worker gone).
const LOAD_TTL_MS: u64 = 5_000;
const ERROR_SLOTS: usize = 20;

/// The shared state of one target.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetHealth {
    pub mode: Mode,
    pub cause: Cause,
    /// End of the current cool-down (`Degraded`).
    pub until_ms: u64,
    /// Length of the current cool-down; doubles on a failed probe.
    pub cooldown_ms: u64,
    pub consecutive_slow: u32,
    pub probe_good: u32,
    /// `(epoch, requests, errors)` per slot of the error window.
    pub errors: Vec<(u64, u32, u32)>,
    pub latency: LatencyWindow,
    pub loads: Vec<WorkerLoad>,
}

impl TargetHealth {
    fn new() -> Self {
        Self {
            mode: Mode::Healthy,
            cause: Cause::None,
            until_ms: 0,
            cooldown_ms: 0,
            consecutive_slow: 0,
            probe_good: 0,
            errors: vec![(0, 0, 0); ERROR_SLOTS],
            latency: LatencyWindow::new(),
            loads: Vec::new(),
        }
    }

    fn error_epoch(now_ms: u64, window_ms: u64) -> u64 {
        now_ms / (window_ms / ERROR_SLOTS as u64).max(1)
    }

    fn add_errors(&mut self, now_ms: u64, window_ms: u64, requests: u32, errors: u32) {
        if requests == 0 {
            return;
        }
        if self.errors.len() != ERROR_SLOTS {
            self.errors = vec![(0, 0, 0); ERROR_SLOTS];
        }
        let epoch = Self::error_epoch(now_ms, window_ms);
        if let Some(slot) = self.errors.get_mut((epoch % ERROR_SLOTS as u64) as usize) {
            if slot.0 != epoch {
                *slot = (epoch, 0, 0);
            }
            slot.1 = slot.1.saturating_add(requests);
            slot.2 = slot.2.saturating_add(errors);
        }
    }

    /// `(requests, errors)` within the window ending now.
    pub fn error_window(&self, now_ms: u64, window_ms: u64) -> (u64, u64) {
        let epoch = Self::error_epoch(now_ms, window_ms);
        self.errors
            .iter()
            // Written so a record from another worker with any epoch cannot overflow.
            .filter(|(e, _, _)| *e <= epoch && epoch - *e < ERROR_SLOTS as u64)
            .fold((0, 0), |(r, x), (_, req, err)| (r + u64::from(*req), x + u64::from(*err)))
    }

    /// Requests in flight across workers (as last reported).
    pub fn in_flight(&self) -> u32 {
        self.loads.iter().map(|l| l.in_flight).fold(0, u32::saturating_add)
    }

    fn degrade(&mut self, cause: Cause, now_ms: u64, rules: &DegradeRules) {
        if self.cooldown_ms == 0 {
            self.cooldown_ms = rules.cooldown_ms;
        }
        self.mode = Mode::Degraded;
        self.cause = cause;
        self.until_ms = now_ms.saturating_add(self.cooldown_ms);
        self.consecutive_slow = 0;
        self.probe_good = 0;
        self.errors = vec![(0, 0, 0); ERROR_SLOTS];
    }
}

/// A change of a target's mode, for logs and stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub target: usize,
    pub from: Mode,
    pub to: Mode,
    pub cause: Cause,
}

/// The shared health state of a route's targets.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteHealth {
    pub targets: Vec<TargetHealth>,
}

/// What a merge brings from one worker.
pub struct Merge<'a> {
    pub worker: u64,
    pub now_ms: u64,
    /// Per target: this worker's observations since its last merge.
    pub observed: &'a [Observed],
    /// Per target: requests this worker has in flight.
    pub in_flight: &'a [u32],
    /// Per target: whether the sidecar reports its version unhealthy.
    pub sidecar_unhealthy: &'a [bool],
}

impl RouteHealth {
    pub fn new(targets: usize) -> Self {
        Self { targets: (0..targets).map(|_| TargetHealth::new()).collect() }
    }

    /// Folds one worker's observations in and applies the rules. Returns the transitions
    /// it caused, which the caller logs and counts (once, by the worker that made them).
    pub fn merge(&mut self, m: &Merge<'_>, rules: &DegradeRules) -> Vec<Transition> {
        let mut out = Vec::new();
        let now = m.now_ms;
        for (i, h) in self.targets.iter_mut().enumerate() {
            let empty = Observed::default();
            let o = m.observed.get(i).unwrap_or(&empty);
            let unhealthy = rules.follow_sidecar && m.sidecar_unhealthy.get(i).copied().unwrap_or(false);
            let in_flight = m.in_flight.get(i).copied().unwrap_or(0);

            // `at_ms` comes from shared data: saturate, a corrupt time must not overflow.
            h.loads.retain(|l| l.worker != m.worker && l.at_ms.saturating_add(LOAD_TTL_MS) > now);
            if in_flight > 0 {
                h.loads.push(WorkerLoad { worker: m.worker, in_flight, at_ms: now });
            }
            h.latency.add(now, rules.latency_window_ms, &o.latency);

            let from = h.mode;
            match h.mode {
                Mode::Healthy => {
                    h.add_errors(now, rules.error_window_ms, o.requests, o.errors);
                    if o.saw_fast {
                        h.consecutive_slow = o.trailing_slow;
                    } else {
                        h.consecutive_slow = h.consecutive_slow.saturating_add(o.trailing_slow);
                    }
                    let (requests, errors) = h.error_window(now, rules.error_window_ms);
                    if unhealthy {
                        h.degrade(Cause::SidecarUnhealthy, now, rules);
                    } else if rules.slow_consecutive > 0 && h.consecutive_slow >= rules.slow_consecutive {
                        h.degrade(Cause::SlowResponses, now, rules);
                    } else if rules.error_rate_pct > 0.0
                        && requests >= u64::from(rules.error_min_requests)
                        && errors as f64 * 100.0 > rules.error_rate_pct * requests as f64
                    {
                        h.degrade(Cause::ErrorRate, now, rules);
                    }
                }
                Mode::Degraded => {
                    if unhealthy {
                        h.cause = Cause::SidecarUnhealthy;
                        h.until_ms = h.until_ms.max(now.saturating_add(h.cooldown_ms));
                    } else if now >= h.until_ms {
                        h.mode = Mode::Probing;
                        h.probe_good = 0;
                    }
                }
                Mode::Probing => {
                    if unhealthy {
                        h.degrade(Cause::SidecarUnhealthy, now, rules);
                    } else if o.probe_bad > 0 {
                        h.cooldown_ms = h.cooldown_ms.saturating_mul(2).clamp(rules.cooldown_ms, rules.max_cooldown_ms);
                        h.degrade(Cause::ProbeFailed, now, rules);
                    } else {
                        h.probe_good = h.probe_good.saturating_add(o.probe_good);
                        if h.probe_good >= rules.probe_successes {
                            h.mode = Mode::Healthy;
                            h.cause = Cause::None;
                            h.cooldown_ms = 0;
                            h.consecutive_slow = 0;
                            h.probe_good = 0;
                        }
                    }
                }
            }
            if h.mode != from {
                out.push(Transition { target: i, from, to: h.mode, cause: h.cause });
            }
        }
        out
    }

    /// The binary form kept in Envoy's shared data ([`FORMAT`]). Only error-window slots
    /// with requests and latency slots with samples are written, so a quiet route's record
    /// is a few hundred bytes; a latency slot is written whole, its buckets as one block,
    /// because every worker encodes and decodes the record on every tick and block copies
    /// are what make that cheap (a slot is 233 bytes; sparse buckets cost a write each).
    #[cfg(test)]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::new();
        self.encode_into(&mut w);
        w
    }

    /// [`RouteHealth::encode`] into `w` (cleared first), so a worker reuses one buffer
    /// tick after tick.
    pub fn encode_into(&self, w: &mut Vec<u8>) {
        w.clear();
        w.extend_from_slice(MAGIC);
        w.extend_from_slice(&(self.targets.len() as u16).to_le_bytes());
        for t in &self.targets {
            let mode = match t.mode {
                Mode::Healthy => 0,
                Mode::Degraded => 1,
                Mode::Probing => 2,
            };
            w.extend(
                [mode, t.cause.to_u8()]
                    .into_iter()
                    .chain(t.until_ms.to_le_bytes())
                    .chain(t.cooldown_ms.to_le_bytes())
                    .chain(t.consecutive_slow.to_le_bytes())
                    .chain(t.probe_good.to_le_bytes()),
            );
            let (at, mut n) = (count_at(w), 0u8);
            for (i, (e, r, x)) in t.errors.iter().enumerate().filter(|(_, (_, r, _))| *r > 0) {
                w.extend([i as u8].into_iter().chain(e.to_le_bytes()).chain(r.to_le_bytes()).chain(x.to_le_bytes()));
                n = n.saturating_add(1);
            }
            set_count(w, at, n);
            let (at, mut n) = (count_at(w), 0u8);
            for (i, (e, h)) in t.latency.slots.iter().enumerate().filter(|(_, (_, h))| !h.is_empty()) {
                w.extend([i as u8].into_iter().chain(e.to_le_bytes()));
                let start = w.len();
                w.resize(start + BUCKETS * 4, 0);
                if let Some(block) = w.get_mut(start..) {
                    for (dst, c) in block.chunks_exact_mut(4).zip(&h.0) {
                        dst.copy_from_slice(&c.to_le_bytes());
                    }
                }
                n = n.saturating_add(1);
            }
            set_count(w, at, n);
            w.push(t.loads.len().min(255) as u8);
            for l in t.loads.iter().take(255) {
                w.extend(l.worker.to_le_bytes().into_iter().chain(l.in_flight.to_le_bytes()).chain(l.at_ms.to_le_bytes()));
            }
        }
    }

    /// Reads [`RouteHealth::encode`]'s output; `None` if it is not for `targets` targets
    /// or is damaged (the caller then starts afresh rather than trusting it).
    #[cfg(test)]
    pub fn decode(bytes: &[u8], targets: usize) -> Option<Self> {
        let mut h = Self::new(targets);
        h.decode_from(bytes, targets).then_some(h)
    }

    /// [`RouteHealth::decode`] into `self`, reusing its memory. On `false` (damaged, or not
    /// for `targets` targets) `self` holds a partial read: start afresh from it.
    pub fn decode_from(&mut self, bytes: &[u8], targets: usize) -> bool {
        self.targets.resize_with(targets, TargetHealth::new);
        let mut r = Reader(bytes);
        if r.take(MAGIC.len()) != Some(MAGIC) || r.u16().map(usize::from) != Some(targets) {
            return false;
        }
        self.targets.iter_mut().all(|t| t.decode_from(&mut r).is_some()) && r.0.is_empty()
    }
}

impl TargetHealth {
    fn decode_from(&mut self, r: &mut Reader<'_>) -> Option<()> {
        self.mode = Mode::from_u8(r.u8()?);
        self.cause = Cause::from_u8(r.u8()?);
        self.until_ms = r.u64()?;
        self.cooldown_ms = r.u64()?;
        self.consecutive_slow = r.u32()?;
        self.probe_good = r.u32()?;
        self.errors.clear();
        self.errors.resize(ERROR_SLOTS, (0, 0, 0));
        for _ in 0..r.u8()? {
            let slot = self.errors.get_mut(usize::from(r.u8()?))?;
            *slot = (r.u64()?, r.u32()?, r.u32()?);
        }
        if self.latency.slots.len() != SLOTS {
            self.latency.clear();
        }
        // Slots come in increasing order; the ones skipped between them are empty.
        let mut next = 0;
        for _ in 0..r.u8()? {
            let i = usize::from(r.u8()?);
            let epoch = r.u64()?;
            let block = r.take(BUCKETS * 4)?;
            self.latency.slots.get_mut(next..i)?.fill_with(Default::default);
            let slot = self.latency.slots.get_mut(i)?;
            slot.0 = epoch;
            for (c, src) in slot.1 .0.iter_mut().zip(block.chunks_exact(4)) {
                *c = u32::from_le_bytes(src.try_into().ok()?);
            }
            next = i + 1;
        }
        self.latency.slots.get_mut(next..)?.fill_with(Default::default);
        self.loads.clear();
        for _ in 0..r.u8()? {
            self.loads.push(WorkerLoad { worker: r.u64()?, in_flight: r.u32()?, at_ms: r.u64()? });
        }
        Some(())
    }
}

/// Writes a placeholder for a count of what follows; returns where it is.
fn count_at(w: &mut Vec<u8>) -> usize {
    w.push(0);
    w.len() - 1
}

fn set_count(w: &mut [u8], at: usize, n: u8) {
    if let Some(c) = w.get_mut(at) {
        *c = n;
    }
}

/// The record's format. Part of the shared-data key as well (see `Worker::new`): while
/// Envoy drains a previous filter version, both run side by side and each must keep to
/// its own record rather than reset the other's.
pub(crate) const FORMAT: u8 = 3;
/// The record's first bytes, naming its format: `SYH3`.
const MAGIC: &[u8] = &[b'S', b'Y', b'H', b'0' + FORMAT];

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> DegradeRules {
        DegradeRules {
            slow_consecutive: 3,
            slow_threshold_us: 100_000,
            error_rate_pct: 10.0,
            error_window_ms: 10_000,
            error_min_requests: 10,
            cooldown_ms: 1_000,
            max_cooldown_ms: 8_000,
            probe_successes: 2,
            ..DegradeRules::default()
        }
    }

    fn observe(outcomes: &[(u64, bool, bool)]) -> Observed {
        let mut o = Observed::default();
        for &(ms, error, probe) in outcomes {
            o.record(Outcome { latency_us: ms * 1000, error, probe, counted_slow: false }, &rules());
        }
        o
    }

    fn merge(h: &mut RouteHealth, worker: u64, now_ms: u64, obs: Observed) -> Vec<Transition> {
        h.merge(
            &Merge { worker, now_ms, observed: &[obs], in_flight: &[0], sidecar_unhealthy: &[false] },
            &rules(),
        )
    }

    #[test]
    fn consecutive_slow_responses_across_workers_degrade() {
        let mut h = RouteHealth::new(1);
        assert!(merge(&mut h, 1, 1000, observe(&[(5, false, false), (200, false, false)])).is_empty());
        assert!(merge(&mut h, 2, 1050, observe(&[(200, false, false)])).is_empty());
        let t = merge(&mut h, 1, 1100, observe(&[(300, false, false)]));
        assert_eq!(t, vec![Transition { target: 0, from: Mode::Healthy, to: Mode::Degraded, cause: Cause::SlowResponses }]);
    }

    #[test]
    fn a_fast_response_resets_the_run() {
        let mut h = RouteHealth::new(1);
        merge(&mut h, 1, 1000, observe(&[(200, false, false), (200, false, false)]));
        merge(&mut h, 1, 1100, observe(&[(5, false, false), (200, false, false)]));
        assert_eq!(h.targets[0].mode, Mode::Healthy);
        assert_eq!(h.targets[0].consecutive_slow, 1);
    }

    #[test]
    fn error_rate_needs_minimum_requests() {
        let mut h = RouteHealth::new(1);
        // 5 of 5 failed: over the rate, but under the minimum count.
        merge(&mut h, 1, 1000, observe(&[(5, true, false); 5]));
        assert_eq!(h.targets[0].mode, Mode::Healthy);
        // 5 more good ones: 5/10 = 50% > 10% with 10 requests.
        let t = merge(&mut h, 2, 1200, observe(&[(5, false, false); 5]));
        assert_eq!(t[0].cause, Cause::ErrorRate);
    }

    #[test]
    fn errors_age_out_of_the_window() {
        let mut h = RouteHealth::new(1);
        merge(&mut h, 1, 1000, observe(&[(5, true, false); 5]));
        // 11 s later the failures are outside the 10 s window.
        merge(&mut h, 1, 12_000, observe(&[(5, false, false); 10]));
        assert_eq!(h.targets[0].mode, Mode::Healthy);
        assert_eq!(h.targets[0].error_window(12_000, 10_000), (10, 0));
    }

    #[test]
    fn cooldown_probe_and_restore() {
        let mut h = RouteHealth::new(1);
        merge(&mut h, 1, 0, observe(&[(300, false, false); 3]));
        assert_eq!(h.targets[0].mode, Mode::Degraded);
        assert!(merge(&mut h, 1, 999, Observed::default()).is_empty());
        let t = merge(&mut h, 1, 1000, Observed::default());
        assert_eq!(t[0].to, Mode::Probing);
        merge(&mut h, 2, 1100, observe(&[(5, false, true)]));
        assert_eq!(h.targets[0].mode, Mode::Probing);
        let t = merge(&mut h, 1, 1200, observe(&[(5, false, true)]));
        assert_eq!(t[0].to, Mode::Healthy);
    }

    #[test]
    fn a_bad_probe_doubles_the_cooldown_up_to_the_max() {
        let mut h = RouteHealth::new(1);
        merge(&mut h, 1, 0, observe(&[(300, false, false); 3]));
        let mut now = 0;
        let mut cooldowns = vec![];
        for _ in 0..5 {
            now = h.targets[0].until_ms;
            merge(&mut h, 1, now, Observed::default());
            assert_eq!(h.targets[0].mode, Mode::Probing);
            let t = merge(&mut h, 1, now + 10, observe(&[(5, true, true)]));
            assert_eq!(t[0].cause, Cause::ProbeFailed);
            cooldowns.push(h.targets[0].cooldown_ms);
        }
        assert_eq!(cooldowns, vec![2000, 4000, 8000, 8000, 8000]);
        assert!(h.targets[0].until_ms > now);
    }

    fn merge_load(h: &mut RouteHealth, worker: u64, now_ms: u64, in_flight: &[u32], unhealthy: &[bool]) -> Vec<Transition> {
        h.merge(&Merge { worker, now_ms, observed: &[], in_flight, sidecar_unhealthy: unhealthy }, &rules())
    }

    #[test]
    fn sidecar_unhealthy_degrades_and_holds() {
        let mut h = RouteHealth::new(2);
        let t = merge_load(&mut h, 1, 0, &[], &[false, true]);
        assert_eq!(t, vec![Transition { target: 1, from: Mode::Healthy, to: Mode::Degraded, cause: Cause::SidecarUnhealthy }]);
        merge_load(&mut h, 1, 5_000, &[], &[false, true]);
        assert_eq!(h.targets[1].mode, Mode::Degraded);
        merge_load(&mut h, 1, 5_500, &[], &[false, false]);
        assert_eq!(h.targets[1].mode, Mode::Degraded);
        let t = merge_load(&mut h, 1, 6_001, &[], &[false, false]);
        assert_eq!(t[0].to, Mode::Probing);
    }

    #[test]
    fn loads_add_across_workers_and_expire() {
        let mut h = RouteHealth::new(1);
        merge_load(&mut h, 1, 0, &[3], &[]);
        merge_load(&mut h, 2, 10, &[4], &[]);
        assert_eq!(h.targets[0].in_flight(), 7);
        merge_load(&mut h, 1, 20, &[1], &[]);
        assert_eq!(h.targets[0].in_flight(), 5);
        merge_load(&mut h, 1, 6_000, &[1], &[]);
        assert_eq!(h.targets[0].in_flight(), 1, "worker 2 went quiet and expired");
    }

    #[test]
    fn absorbing_older_observations_keeps_the_slow_run() {
        let mut newer = observe(&[(200, false, false)]);
        newer.absorb(observe(&[(200, false, false), (200, false, false)]));
        assert_eq!((newer.requests, newer.trailing_slow, newer.saw_fast), (3, 3, false));
        let mut newer = observe(&[(5, false, false), (200, false, false)]);
        newer.absorb(observe(&[(200, false, false)]));
        assert_eq!((newer.requests, newer.trailing_slow, newer.saw_fast), (3, 1, true));
    }

    #[test]
    fn codec_round_trips_and_rejects_damage() {
        let mut h = RouteHealth::new(2);
        merge(&mut h, 7, 1000, observe(&[(300, false, false), (5, true, false)]));
        h.targets[1].loads.push(WorkerLoad { worker: 9, in_flight: 2, at_ms: 3 });
        let bytes = h.encode();
        assert_eq!(RouteHealth::decode(&bytes, 2), Some(h.clone()));
        assert_eq!(RouteHealth::decode(&bytes, 3), None);
        assert_eq!(RouteHealth::decode(&bytes[..bytes.len() - 1], 2), None);
        assert_eq!(RouteHealth::decode(b"garbage", 2), None);
        // Quiet routes stay small: every worker reads this on every tick.
        assert!(RouteHealth::new(3).encode().len() < 120, "{}", RouteHealth::new(3).encode().len());
        // One latency slot in use: its block, and little else.
        assert!(bytes.len() < 2 * 40 + 9 + BUCKETS * 4 + 40, "{}", bytes.len());
    }

    #[test]
    fn decoding_into_used_memory_leaves_nothing_of_it() {
        let mut busy = RouteHealth::new(2);
        for t in 0..20 {
            merge(&mut busy, 7, 1000 + t * 700, observe(&[(30, false, false), (5, true, false)]));
        }
        let mut quiet = RouteHealth::new(2);
        merge(&mut quiet, 8, 50_000, observe(&[(300, false, false)]));
        let mut reused = busy.clone();
        assert!(reused.decode_from(&quiet.encode(), 2));
        assert_eq!(reused, quiet);
        // A cut record is damage, not a shorter one.
        let mut bytes = busy.encode();
        let mut into = RouteHealth::new(2);
        assert!(into.decode_from(&bytes, 2));
        bytes.truncate(bytes.len() / 2);
        assert!(!into.decode_from(&bytes, 2));
    }
}
