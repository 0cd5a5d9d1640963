//! The routing decision: from a request's metadata and the worker's view of the world
//! (target health and latency, the sidecar's snapshot) to a verdict the glue applies.
//!
//! The steps, in order, each able to change the target or answer locally:
//!
//! 1. access policy, then the first route whose methods cover `:path`;
//! 2. A/B choice: group header, sticky bucket of the user key, default target;
//! 3. schema: only targets that can serve the client's declared revision;
//! 4. health: a degraded target's traffic goes to the fallback (low priority is shed);
//!    a probing one receives a small probe share;
//! 5. budget: a target whose latency estimate exceeds the request's deadline is swapped
//!    for a faster one, or the request fails fast with DEADLINE_EXCEEDED;
//! 6. concurrency: low-priority requests over a target's limit are shed;
//! 7. fault injection (delay or abort) for canary rehearsal.
//!
//! Pure: no host calls; the only allocation is the message of a local reply.

use crate::bucket;
use crate::budget::parse_timeout;
use crate::config::{Config, FailMode, Malformed, NonGrpc, Route, UnknownRevision, ValidateMode};
use crate::grpc::Code;
use crate::health::Mode;
use crate::request::RequestMeta;
use crate::rng::Rng;
use crate::snapshot::SnapshotView;
use std::time::Duration;

/// Why a target was chosen. Each reason has its own stat and shows in the decision header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The group header named this target.
    Header,
    /// The user key's sticky bucket landed on this target.
    Weight,
    /// Neither group nor user key: the route's default target.
    Default,
    /// The group header named no target of the route: the default target.
    UnknownGroup,
    /// The client's schema revision is absent or unknown: the default target.
    UnknownRevision,
    /// The A/B choice cannot serve the client's schema revision.
    Schema,
    /// The A/B choice is degraded.
    Degraded,
    /// Sent to a probing (half-open) target.
    Probe,
    /// The A/B choice is too slow for the request's deadline.
    Budget,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::Header,
        Reason::Weight,
        Reason::Default,
        Reason::UnknownGroup,
        Reason::UnknownRevision,
        Reason::Schema,
        Reason::Degraded,
        Reason::Probe,
        Reason::Budget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Header => "header",
            Reason::Weight => "weight",
            Reason::Default => "default",
            Reason::UnknownGroup => "unknown_group",
            Reason::UnknownRevision => "unknown_revision",
            Reason::Schema => "schema",
            Reason::Degraded => "degraded",
            Reason::Probe => "probe",
            Reason::Budget => "budget",
        }
    }

    /// Position in [`Reason::ALL`], for per-reason tables.
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// A routed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub route: usize,
    pub target: usize,
    pub reason: Reason,
    /// Sent as a probe of a half-open target (its outcome decides the target's fate).
    pub probe: bool,
    /// Injected delay before the request goes upstream.
    pub delay_ms: u32,
    /// The client's deadline, if it sent one.
    pub budget: Option<Duration>,
    /// Whether the request body must be validated before it goes upstream.
    pub validate: bool,
}

/// Kinds of local replies, each with its own stat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    Denied,
    MalformedBudget,
    NoSnapshot,
    UnknownRevision,
    SchemaRejected,
    FailFast,
    Shed,
    FaultAbort,
    InvalidPayload,
}

impl ReplyKind {
    pub const ALL: [ReplyKind; 9] = [
        ReplyKind::Denied,
        ReplyKind::MalformedBudget,
        ReplyKind::NoSnapshot,
        ReplyKind::UnknownRevision,
        ReplyKind::SchemaRejected,
        ReplyKind::FailFast,
        ReplyKind::Shed,
        ReplyKind::FaultAbort,
        ReplyKind::InvalidPayload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplyKind::Denied => "denied",
            ReplyKind::MalformedBudget => "malformed_budget",
            ReplyKind::NoSnapshot => "no_snapshot",
            ReplyKind::UnknownRevision => "unknown_revision",
            ReplyKind::SchemaRejected => "schema_rejected",
            ReplyKind::FailFast => "fail_fast",
            ReplyKind::Shed => "shed",
            ReplyKind::FaultAbort => "fault_abort",
            ReplyKind::InvalidPayload => "validation_rejected",
        }
    }

    pub fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// A local gRPC answer: no upstream sees the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: Code,
    pub kind: ReplyKind,
    /// The route and the target the request was heading for, for per-target stats.
    pub route: Option<usize>,
    pub target: Option<usize>,
    pub message: String,
}

/// What the filter does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not gRPC, and non-gRPC traffic passes: leave it alone.
    PassNonGrpc,
    /// Not gRPC, and non-gRPC traffic is rejected.
    RejectNonGrpc,
    /// gRPC, allowed, but no route covers the method: Envoy's own routes decide.
    Unrouted,
    Route(Decision),
    Reply(Reply),
}

/// What a worker knows of one target when deciding (refreshed on its tick).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetState {
    pub mode: Mode,
    /// Latency estimate (the route's percentile, or the configured prior), in µs.
    pub latency_us: Option<u64>,
    /// Requests in flight across workers.
    pub in_flight: u32,
}

impl Default for TargetState {
    fn default() -> Self {
        Self { mode: Mode::Healthy, latency_us: None, in_flight: 0 }
    }
}

/// The world a decision reads besides the request.
#[derive(Clone, Copy, Debug, Default)]
pub struct World<'a> {
    /// `[route][target]`; missing entries read as healthy with no estimate.
    pub targets: &'a [Vec<TargetState>],
    /// The sidecar's snapshot, if one was ever received.
    pub snapshot: Option<&'a SnapshotView>,
}

impl World<'_> {
    fn target(&self, route: usize, target: usize) -> TargetState {
        self.targets.get(route).and_then(|r| r.get(target)).copied().unwrap_or_default()
    }
}

/// Whether targets can serve the request's schema revision.
enum Schema<'a> {
    /// No constraint (no revision checks on this route, unknown revision sent to the
    /// default target, or no snapshot yet with `without_snapshot: open`).
    Any,
    Client(&'a SnapshotView, (&'a str, u32)),
}

impl Schema<'_> {
    fn serves(&self, route: usize, target: usize) -> bool {
        match self {
            Schema::Any => true,
            Schema::Client(view, client) => view.can_serve(route, target, *client),
        }
    }
}

fn reply(code: Code, kind: ReplyKind, route: usize, target: Option<usize>, message: String) -> Verdict {
    Verdict::Reply(Reply { code, kind, route: Some(route), target, message })
}

fn ms(us: u64) -> String {
    format!("{:.1}ms", us as f64 / 1000.0)
}

impl Config {
    /// Decides what to do with a request.
    pub fn decide(&self, req: &RequestMeta<'_>, world: &World<'_>, rng: &mut Rng) -> Verdict {
        if !req.is_grpc() {
            return match self.non_grpc {
                NonGrpc::Pass => Verdict::PassNonGrpc,
                NonGrpc::Reject => Verdict::RejectNonGrpc,
            };
        }
        let path = req.path.unwrap_or("");
        if !self.access.permits(path) {
            return Verdict::Reply(Reply {
                code: Code::PermissionDenied,
                kind: ReplyKind::Denied,
                route: None,
                target: None,
                message: format!("switchyard: method {path} is not allowed by this proxy's access policy"),
            });
        }
        let Some((ri, route)) = self.routes.iter().enumerate().find(|(_, r)| r.covers(path)) else {
            return Verdict::Unrouted;
        };

        let budget = match req.budget.map(|v| (v, parse_timeout(v, self.budget_bare_millis))) {
            None => None,
            Some((_, Ok(d))) => Some(d),
            Some((_, Err(_))) if self.malformed_budget == Malformed::Ignore => None,
            Some((v, Err(e))) => {
                let message = format!("switchyard: malformed {} {v:?}: {}", self.headers.budget, e.as_str());
                return reply(Code::InvalidArgument, ReplyKind::MalformedBudget, ri, None, message);
            }
        };

        let (mut target, mut reason) = route.choose(req);

        // Schema: which targets can serve the client's revision.
        let mut schema = Schema::Any;
        if route.schema_aware() {
            match world.snapshot {
                None if self.without_snapshot == FailMode::Closed => {
                    let message = "switchyard: no schema snapshot from the sidecar yet, so revision \
                                   compatibility cannot be checked"
                        .to_string();
                    return reply(Code::Unavailable, ReplyKind::NoSnapshot, ri, Some(target), message);
                }
                None => {}
                Some(view) => match req.revision.and_then(|d| view.client_revision(d)) {
                    Some(client) => schema = Schema::Client(view, client),
                    None if self.unknown_revision == UnknownRevision::DefaultTarget => {
                        target = route.default_target;
                        reason = Reason::UnknownRevision;
                    }
                    None => {
                        let message = match req.revision {
                            Some(d) => format!("switchyard: schema revision {d:?} is unknown to the registry"),
                            None => format!(
                                "switchyard: no schema revision declared (header {})",
                                self.headers.revision
                            ),
                        };
                        return reply(Code::FailedPrecondition, ReplyKind::UnknownRevision, ri, Some(target), message);
                    }
                },
            }
        }
        if !schema.serves(ri, target) {
            match route.alternatives(target).find(|&t| schema.serves(ri, t)) {
                Some(t) => {
                    target = t;
                    reason = Reason::Schema;
                }
                None => {
                    let message = self.schema_message(ri, route, req.revision.unwrap_or(""), world);
                    return reply(Code::FailedPrecondition, ReplyKind::SchemaRejected, ri, Some(target), message);
                }
            }
        }
        let low = req
            .priority
            .is_some_and(|p| self.low_priority.iter().any(|l| l.eq_ignore_ascii_case(p.trim())));

        // Health.
        let usable = |t: usize| schema.serves(ri, t) && world.target(ri, t).mode != Mode::Degraded;
        let mut probe = false;
        let mode = world.target(ri, target).mode;
        if mode != Mode::Healthy {
            if mode == Mode::Probing && rng.chance(route.rules.probe_share_pct) {
                probe = true;
                reason = Reason::Probe;
            } else if low {
                let message = format!(
                    "switchyard: target {} is {}; low-priority request shed",
                    route.targets.get(target).map_or("", |t| t.name.as_str()),
                    mode.as_str()
                );
                return reply(Code::ResourceExhausted, ReplyKind::Shed, ri, Some(target), message);
            } else if let Some(t) = route.alternatives(target).find(|&t| usable(t) && world.target(ri, t).mode == Mode::Healthy) {
                target = t;
                reason = Reason::Degraded;
            }
        }

        // Budget.
        if let (Some(b), true) = (budget, route.latency.budget_check) {
            let budget_us = b.as_micros().min(u128::from(u64::MAX)) as u64;
            let fits = |t: usize| world.target(ri, t).latency_us.is_none_or(|est| est <= budget_us);
            if !fits(target) {
                let fallback = route.fallback.filter(|&f| f != target && usable(f) && fits(f));
                let fastest = route
                    .alternatives(target)
                    .filter(|&t| usable(t) && fits(t))
                    .min_by_key(|&t| world.target(ri, t).latency_us.unwrap_or(0));
                match fallback.or(fastest) {
                    Some(t) => {
                        target = t;
                        reason = Reason::Budget;
                        probe = false;
                    }
                    None => {
                        let message = self.deadline_message(ri, route, b, world, &schema);
                        return reply(Code::DeadlineExceeded, ReplyKind::FailFast, ri, Some(target), message);
                    }
                }
            }
        }

        // Concurrency.
        if low {
            if let Some(limit) = route.targets.get(target).and_then(|t| t.max_concurrency) {
                let in_flight = world.target(ri, target).in_flight;
                if in_flight >= limit {
                    let message = format!(
                        "switchyard: target {} is at its concurrency limit ({in_flight}/{limit} in flight); \
                         low-priority request shed",
                        route.targets.get(target).map_or("", |t| t.name.as_str())
                    );
                    return reply(Code::ResourceExhausted, ReplyKind::Shed, ri, Some(target), message);
                }
            }
        }

        // Faults.
        let mut delay_ms = 0;
        for f in &route.faults {
            let applies = match (f.target, &f.group) {
                (Some(t), _) => t == target,
                (None, Some(g)) => req.group == Some(g.as_str()),
                (None, None) => true,
            };
            if applies && rng.chance(f.percent) {
                if let Some(code) = f.abort {
                    let message = format!(
                        "switchyard: fault injected for canary rehearsal (route {}, target {})",
                        route.name,
                        route.targets.get(target).map_or("", |t| t.name.as_str())
                    );
                    return reply(code, ReplyKind::FaultAbort, ri, Some(target), message);
                }
                delay_ms = delay_ms.max(f.delay_ms.unwrap_or(0));
            }
        }

        Verdict::Route(Decision {
            route: ri,
            target,
            reason,
            probe,
            delay_ms,
            budget,
            validate: route.validate.mode != ValidateMode::Off,
        })
    }

    fn schema_message(&self, ri: usize, route: &Route, declared: &str, world: &World<'_>) -> String {
        let served: Vec<String> = (0..route.targets.len())
            .map(|t| {
                let label = world.snapshot.map_or_else(|| "?".into(), |v| v.served_label(ri, t));
                format!("{}={label}", route.targets.get(t).map_or("", |t| t.name.as_str()))
            })
            .collect();
        format!(
            "switchyard: no target can serve schema revision {declared}; targets serve {}",
            served.join(", ")
        )
    }

    fn deadline_message(&self, ri: usize, route: &Route, budget: Duration, world: &World<'_>, schema: &Schema<'_>) -> String {
        let estimates: Vec<String> = (0..route.targets.len())
            .filter(|&t| schema.serves(ri, t))
            .map(|t| {
                let s = world.target(ri, t);
                let name = route.targets.get(t).map_or("", |t| t.name.as_str());
                match (s.mode, s.latency_us) {
                    (Mode::Degraded, _) => format!("{name} degraded"),
                    (_, Some(us)) => format!("{name} {}", ms(us)),
                    (_, None) => format!("{name} unknown"),
                }
            })
            .collect();
        format!(
            "switchyard: deadline {} is shorter than the p{} latency of every target that can serve it ({})",
            ms(budget.as_micros().min(u128::from(u64::MAX)) as u64),
            route.latency.percentile,
            estimates.join(", ")
        )
    }
}

impl Route {
    /// A/B choice: explicit group, else sticky bucket of the user key, else default.
    fn choose(&self, req: &RequestMeta<'_>) -> (usize, Reason) {
        if let Some(group) = req.group {
            return match self.target_index(group) {
                Some(t) => (t, Reason::Header),
                None => (self.default_target, Reason::UnknownGroup),
            };
        }
        if let Some(key) = req.user_key {
            let weights = self.targets.iter().map(|t| (t.seed, t.weight));
            if let Some(t) = bucket::pick(bucket::key_hash(key), weights) {
                return (t, Reason::Weight);
            }
        }
        (self.default_target, Reason::Default)
    }

    /// Other targets to try instead of `from`, in order: the fallback, the default
    /// target, then the rest in configuration order.
    fn alternatives(&self, from: usize) -> impl Iterator<Item = usize> + '_ {
        let first = self.fallback;
        let second = Some(self.default_target).filter(|&d| Some(d) != first);
        let rest = (0..self.targets.len()).filter(move |&t| Some(t) != first && t != self.default_target);
        first.into_iter().chain(second).chain(rest).filter(move |&t| t != from)
    }
}

#[cfg(test)]
mod tests;
