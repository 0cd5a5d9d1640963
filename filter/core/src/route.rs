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
//! Each step is its own function over [`Step`]; [`Config::decide`] runs them in order.
//! Pure: no host calls; the only allocation is the message of a local reply.

use crate::bucket;
use crate::budget::parse_timeout;
use crate::config::{Config, FailMode, Malformed, NonGrpc, Route, Undeclared, UnknownRevision, ValidateMode};
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
    /// No constraint (no revision checks on this route, the client sent to the default
    /// target, or no snapshot yet with `without_snapshot: open`).
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

fn ms(us: u64) -> String {
    format!("{:.1}ms", us as f64 / 1000.0)
}

impl Decision {
    /// A local reply to a request that was heading for this decision's target.
    pub(crate) fn reply(&self, code: Code, kind: ReplyKind, message: String) -> Reply {
        Reply { code, kind, route: Some(self.route), target: Some(self.target), message }
    }
}

/// The target chosen so far, as the steps refine it.
#[derive(Clone, Copy, Debug)]
struct Pick {
    target: usize,
    reason: Reason,
    probe: bool,
}

/// One request on one route, with what the steps read.
struct Step<'a> {
    cfg: &'a Config,
    ri: usize,
    route: &'a Route,
    req: &'a RequestMeta<'a>,
    world: &'a World<'a>,
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
        if let Err(r) = self.access(path) {
            return Verdict::Reply(r);
        }
        let Some((ri, route)) = self.routes.iter().enumerate().find(|(_, r)| r.covers(path)) else {
            return Verdict::Unrouted;
        };
        let step = Step { cfg: self, ri, route, req, world };
        match step.run(rng) {
            Ok(d) => Verdict::Route(d),
            Err(r) => Verdict::Reply(r),
        }
    }

    /// Access policy: a method the policy does not permit is `PERMISSION_DENIED`.
    fn access(&self, path: &str) -> Result<(), Reply> {
        if self.access.permits(path) {
            return Ok(());
        }
        Err(Reply {
            code: Code::PermissionDenied,
            kind: ReplyKind::Denied,
            route: None,
            target: None,
            message: format!("switchyard: method {path} is not allowed by this proxy's access policy"),
        })
    }

    fn is_low_priority(&self, req: &RequestMeta<'_>) -> bool {
        req.priority.is_some_and(|p| self.low_priority.iter().any(|l| l.eq_ignore_ascii_case(p.trim())))
    }
}

impl<'a> Step<'a> {
    /// The steps in order; each may change the pick or answer locally.
    fn run(&self, rng: &mut Rng) -> Result<Decision, Reply> {
        let budget = self.budget()?;
        let mut pick = self.ab();
        let schema = self.schema(&mut pick)?;
        self.eligible(&schema, &mut pick)?;
        let low = self.cfg.is_low_priority(self.req);
        self.health(&schema, low, rng, &mut pick)?;
        if let Some(b) = budget {
            self.fits_budget(b, &schema, &mut pick)?;
        }
        self.concurrency(low, &pick)?;
        let delay_ms = self.faults(rng, &pick)?;
        Ok(Decision {
            route: self.ri,
            target: pick.target,
            reason: pick.reason,
            probe: pick.probe,
            delay_ms,
            budget,
            validate: self.route.validate.mode != ValidateMode::Off,
        })
    }

    fn target(&self, t: usize) -> TargetState {
        self.world.target(self.ri, t)
    }

    fn name(&self, t: usize) -> &str {
        self.route.targets.get(t).map_or("", |t| t.name.as_str())
    }

    fn reply(&self, code: Code, kind: ReplyKind, target: Option<usize>, message: String) -> Reply {
        Reply { code, kind, route: Some(self.ri), target, message }
    }

    /// The request's deadline: absent, parsed, ignored when malformed, or refused.
    fn budget(&self) -> Result<Option<Duration>, Reply> {
        let Some(value) = self.req.budget else { return Ok(None) };
        match parse_timeout(value, self.cfg.budget_bare_millis) {
            Ok(d) => Ok(Some(d)),
            Err(_) if self.cfg.malformed_budget == Malformed::Ignore => Ok(None),
            Err(e) => {
                let message = format!("switchyard: malformed {} {value:?}: {}", self.cfg.headers.budget, e.as_str());
                Err(self.reply(Code::InvalidArgument, ReplyKind::MalformedBudget, None, message))
            }
        }
    }

    /// A/B choice: explicit group, else sticky bucket of the user key, else default.
    fn ab(&self) -> Pick {
        let (target, reason) = self.route.choose(self.req);
        Pick { target, reason, probe: false }
    }

    /// Which revision the client speaks, per the snapshot: declared, assumed for an
    /// undeclared client, or no constraint. May send the client to the default target or
    /// refuse it, per `schema.undeclared` and `schema.unknown_revision`.
    fn schema(&self, pick: &mut Pick) -> Result<Schema<'a>, Reply> {
        if !self.route.schema_aware() {
            return Ok(Schema::Any);
        }
        let Some(view) = self.world.snapshot else {
            if self.cfg.without_snapshot == FailMode::Closed {
                let message =
                    "switchyard: no schema snapshot from the sidecar yet, so revision compatibility cannot be checked".to_string();
                return Err(self.reply(Code::Unavailable, ReplyKind::NoSnapshot, Some(pick.target), message));
            }
            return Ok(Schema::Any);
        };
        let client = match self.req.revision {
            Some(declared) => match view.client_revision(declared) {
                Some(client) => client,
                None if self.cfg.unknown_revision == UnknownRevision::DefaultTarget => return Ok(self.to_default(pick)),
                None => {
                    let message = format!("switchyard: schema revision {declared:?} is unknown to the registry");
                    return Err(self.reply(Code::FailedPrecondition, ReplyKind::UnknownRevision, Some(pick.target), message));
                }
            },
            None => match &self.cfg.undeclared {
                Undeclared::DefaultTarget => return Ok(self.to_default(pick)),
                Undeclared::Reject => {
                    let message = format!("switchyard: no schema revision declared (header {})", self.cfg.headers.revision);
                    return Err(self.reply(Code::FailedPrecondition, ReplyKind::UnknownRevision, Some(pick.target), message));
                }
                Undeclared::AssumeDefaultTarget => match view.facts(self.ri, self.route.default_target).and_then(|f| f.serves.as_ref()) {
                    Some((subject, revision)) => (subject.as_str(), *revision),
                    // The default target serves any revision: nothing to hold the A/B choice to.
                    None => return Ok(Schema::Any),
                },
                Undeclared::Assume(revision) => match view.client_revision(revision) {
                    Some(client) => client,
                    None => return Ok(self.to_default(pick)),
                },
            },
        };
        Ok(Schema::Client(view, client))
    }

    fn to_default(&self, pick: &mut Pick) -> Schema<'a> {
        pick.target = self.route.default_target;
        pick.reason = Reason::UnknownRevision;
        Schema::Any
    }

    /// Only targets that can serve the client's revision: the next compatible one takes
    /// it, or none can (`FAILED_PRECONDITION` naming what each serves).
    fn eligible(&self, schema: &Schema<'_>, pick: &mut Pick) -> Result<(), Reply> {
        if schema.serves(self.ri, pick.target) {
            return Ok(());
        }
        match self.route.alternatives(pick.target).find(|&t| schema.serves(self.ri, t)) {
            Some(t) => {
                pick.target = t;
                pick.reason = Reason::Schema;
                Ok(())
            }
            None => {
                let declared = self.req.revision.unwrap_or("(undeclared)");
                let message = self.schema_message(declared);
                Err(self.reply(Code::FailedPrecondition, ReplyKind::SchemaRejected, Some(pick.target), message))
            }
        }
    }

    fn usable(&self, schema: &Schema<'_>, t: usize) -> bool {
        schema.serves(self.ri, t) && self.target(t).mode != Mode::Degraded
    }

    /// Health: a probing target takes its probe share; a degraded one's traffic goes to
    /// the next healthy target (low priority is shed instead).
    fn health(&self, schema: &Schema<'_>, low: bool, rng: &mut Rng, pick: &mut Pick) -> Result<(), Reply> {
        let mode = self.target(pick.target).mode;
        if mode == Mode::Healthy {
            return Ok(());
        }
        if mode == Mode::Probing && rng.chance(self.route.rules.probe_share_pct) {
            pick.probe = true;
            pick.reason = Reason::Probe;
        } else if low {
            let message = format!("switchyard: target {} is {}; low-priority request shed", self.name(pick.target), mode.as_str());
            return Err(self.reply(Code::ResourceExhausted, ReplyKind::Shed, Some(pick.target), message));
        } else if let Some(t) =
            self.route.alternatives(pick.target).find(|&t| self.usable(schema, t) && self.target(t).mode == Mode::Healthy)
        {
            pick.target = t;
            pick.reason = Reason::Degraded;
        }
        Ok(())
    }

    /// Budget: a target whose latency estimate exceeds the deadline gives way to one that
    /// fits (the fallback first, else the fastest), or the request fails fast. A target
    /// with no estimate at all (never measured, no `latency_prior_ms`) is assumed to fit.
    fn fits_budget(&self, budget: Duration, schema: &Schema<'_>, pick: &mut Pick) -> Result<(), Reply> {
        if !self.route.latency.budget_check {
            return Ok(());
        }
        let budget_us = budget.as_micros().min(u128::from(u64::MAX)) as u64;
        let fits = |t: usize| self.target(t).latency_us.is_none_or(|est| est <= budget_us);
        if fits(pick.target) {
            return Ok(());
        }
        let fallback = self.route.fallback.filter(|&f| f != pick.target && self.usable(schema, f) && fits(f));
        let fastest = self
            .route
            .alternatives(pick.target)
            .filter(|&t| self.usable(schema, t) && fits(t))
            .min_by_key(|&t| self.target(t).latency_us.unwrap_or(0));
        match fallback.or(fastest) {
            Some(t) => {
                pick.target = t;
                pick.reason = Reason::Budget;
                pick.probe = false;
                Ok(())
            }
            None => {
                let message = self.deadline_message(budget, schema);
                Err(self.reply(Code::DeadlineExceeded, ReplyKind::FailFast, Some(pick.target), message))
            }
        }
    }

    /// Concurrency: low-priority requests over a target's limit are shed.
    fn concurrency(&self, low: bool, pick: &Pick) -> Result<(), Reply> {
        if !low {
            return Ok(());
        }
        let Some(limit) = self.route.targets.get(pick.target).and_then(|t| t.max_concurrency) else { return Ok(()) };
        let in_flight = self.target(pick.target).in_flight;
        if in_flight < limit {
            return Ok(());
        }
        let message = format!(
            "switchyard: target {} is at its concurrency limit ({in_flight}/{limit} in flight); low-priority request shed",
            self.name(pick.target)
        );
        Err(self.reply(Code::ResourceExhausted, ReplyKind::Shed, Some(pick.target), message))
    }

    /// Faults (canary rehearsal): abort with a status, or the longest delay that applies.
    fn faults(&self, rng: &mut Rng, pick: &Pick) -> Result<u32, Reply> {
        let mut delay_ms = 0;
        for f in &self.route.faults {
            let applies = match (f.target, &f.group) {
                (Some(t), _) => t == pick.target,
                (None, Some(g)) => self.req.group == Some(g.as_str()),
                (None, None) => true,
            };
            if !applies || !rng.chance(f.percent) {
                continue;
            }
            if let Some(code) = f.abort {
                let message = format!(
                    "switchyard: fault injected for canary rehearsal (route {}, target {})",
                    self.route.name,
                    self.name(pick.target)
                );
                return Err(self.reply(code, ReplyKind::FaultAbort, Some(pick.target), message));
            }
            delay_ms = delay_ms.max(f.delay_ms.unwrap_or(0));
        }
        Ok(delay_ms)
    }

    fn schema_message(&self, declared: &str) -> String {
        let served: Vec<String> = (0..self.route.targets.len())
            .map(|t| {
                let label = self.world.snapshot.map_or_else(|| "?".into(), |v| v.served_label(self.ri, t));
                format!("{}={label}", self.name(t))
            })
            .collect();
        format!("switchyard: no target can serve schema revision {declared}; targets serve {}", served.join(", "))
    }

    fn deadline_message(&self, budget: Duration, schema: &Schema<'_>) -> String {
        let estimates: Vec<String> = (0..self.route.targets.len())
            .filter(|&t| schema.serves(self.ri, t))
            .map(|t| {
                let s = self.target(t);
                let name = self.name(t);
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
            self.route.latency.percentile,
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
        if let Some(t) = req.user_key.and_then(|key| self.sticky_target(key)) {
            return (t, Reason::Weight);
        }
        (self.default_target, Reason::Default)
    }

    /// The target a user key's sticky bucket lands on, by weight alone (no group header,
    /// health or schema): what the rehearsal compares across weight changes. `None` when
    /// every weight is 0.
    pub fn sticky_target(&self, user_key: &str) -> Option<usize> {
        bucket::pick(bucket::key_hash(user_key), self.targets.iter().map(|t| (t.seed, t.weight)))
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
