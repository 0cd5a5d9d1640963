//! One HTTP stream: reads the request once, applies the decision, observes the response.
//!
//! Host calls on a routed request: one read of the request headers (done by the host
//! before it calls in), one clock read, one write of the routing header, one filter-state
//! write (if enabled); on the response one clock read, a `grpc-status` read for
//! trailers-only responses, probes and one complete response in eight (plus the decision
//! header, if enabled). Stats and health bookkeeping are in memory; the tick hands them on.

use crate::budget::format_timeout;
use crate::config::ValidateMode;
use crate::grpc::{Code, FRAME_PREFIX};
use crate::health::Outcome;
use crate::host::{Callout, CalloutReply, CalloutToken, Flow, Host, LocalReply, ResponseMap, StreamHost};
use crate::request::RequestMeta;
use crate::route::{Decision, Reply, ReplyKind, Verdict};
use crate::worker::{Flight, Worker};
use std::rc::Rc;
use std::time::Duration;
use switchyard_api::{ValidateReply, METHOD_QUERY, REVISION_QUERY, UNKNOWN_FIELDS_QUERY, VALIDATE_PATH, WIRE_TYPE_MISMATCH_QUERY};

/// Filter-state key of the decision (`wasm.switchyard_decision` in the Wasm build).
pub const DECISION_STATE_KEY: &str = "switchyard_decision";

/// What a validated request declared, kept from its headers for its body.
#[derive(Clone, Debug)]
struct Declared {
    revision: Option<String>,
    path: String,
}

pub struct Stream<H: Host> {
    worker: Rc<Worker<H>>,
    id: u64,
    decision: Option<Decision>,
    /// Where the routed request is counted in flight.
    flight: Option<Flight>,
    started_ns: u64,
    responded_ns: Option<u64>,
    grpc_status: Option<u32>,
    /// The response ended with trailers (a complete gRPC response).
    trailers_seen: bool,
    /// For validated requests: what the client declared.
    declared: Option<Declared>,
    /// Token of a validation call to the sidecar in flight.
    validation_call: Option<CalloutToken>,
    /// Was paused by an injected delay (the worker resumes it; forgotten if it ends first).
    delayed: bool,
    finished: bool,
}

impl<H: Host> Stream<H> {
    pub fn new(worker: Rc<Worker<H>>, id: u64) -> Self {
        Self {
            worker,
            id,
            decision: None,
            flight: None,
            started_ns: 0,
            responded_ns: None,
            grpc_status: None,
            trailers_seen: false,
            declared: None,
            validation_call: None,
            delayed: false,
            finished: false,
        }
    }

    pub fn worker(&self) -> &Rc<Worker<H>> {
        &self.worker
    }

    /// The request headers, as `(name, value)` pairs straight from the host's header map.
    pub fn on_request_headers<'a, S: StreamHost>(
        &mut self,
        s: &mut S,
        headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        end_of_stream: bool,
    ) -> Flow {
        let worker = self.worker.clone();
        let p = &*worker;
        let cfg = &p.config;
        let req = RequestMeta::scan(&cfg.headers, headers);
        let verdict = p.decide(&req);
        if !matches!(verdict, Verdict::PassNonGrpc | Verdict::RejectNonGrpc) {
            p.bump(p.stats.requests());
        }
        match verdict {
            Verdict::Route(d) => self.route(s, p, &req, d, end_of_stream),
            Verdict::PassNonGrpc | Verdict::Unrouted => {
                p.bump(if matches!(verdict, Verdict::Unrouted) { p.stats.unrouted() } else { p.stats.passthrough() });
                if req.has_cluster_header && cfg.cluster_filter_state.is_none() {
                    // The client's value picked the route; without it the default applies.
                    s.remove_request_header(&cfg.headers.cluster);
                    s.refresh_route(cfg.route_refresh);
                }
                Flow::Continue
            }
            Verdict::Reply(r) => self.reply(s, &r),
            Verdict::RejectNonGrpc => {
                p.bump(p.stats.non_grpc_rejected());
                s.send_reply(&LocalReply {
                    http_status: 415,
                    details: "switchyard_non_grpc_rejected",
                    grpc: None,
                    body: "switchyard: only gRPC requests are accepted here\n",
                });
                Flow::Pause
            }
        }
    }

    fn route<S: StreamHost>(&mut self, s: &mut S, p: &Worker<H>, req: &RequestMeta<'_>, d: Decision, end_of_stream: bool) -> Flow {
        let cfg = &p.config;
        let Some(target) = cfg.routes.get(d.route).and_then(|r| r.targets.get(d.target)) else {
            return Flow::Continue;
        };
        if let Some(key) = &cfg.cluster_filter_state {
            // Nothing on the request: a client's header does not route.
            s.set_routing_state(key, &target.cluster);
        } else if req.has_cluster_header {
            // Overwrites any value the client sent.
            s.set_request_header(&cfg.headers.cluster, &target.cluster);
        } else {
            s.add_request_header(&cfg.headers.cluster, &target.cluster);
        }
        s.refresh_route(cfg.route_refresh);
        p.bump_opt(p.stats.target_requests(d.route, d.target));
        p.bump(p.stats.reason(d.reason));
        if d.probe {
            p.bump_opt(p.stats.target_probes(d.route, d.target));
        }
        if cfg.decision_to_filter_state {
            if let Some(v) = p.decision_value(&d) {
                s.set_filter_state(DECISION_STATE_KEY, v.as_bytes());
            }
        }
        if let (Some(budget), true) = (d.budget, d.delay_ms > 0) {
            // Time the request will spend here comes off the budget sent upstream.
            let remaining = budget.saturating_sub(Duration::from_millis(u64::from(d.delay_ms)));
            let mut value = String::new();
            format_timeout(remaining, &mut value);
            s.set_request_header(&cfg.headers.budget, &value);
        }
        self.started_ns = p.host.now_ns();
        self.flight = Some(p.start(self.id, &d, self.started_ns));
        self.decision = Some(d);
        if d.validate && !end_of_stream {
            // The body is checked as it arrives (see `on_request_body`). The headers go on:
            // a proxy-wasm filter that pauses on headers receives no body until it resumes.
            self.declared = Some(Declared { revision: req.revision.map(str::to_owned), path: req.path.unwrap_or("").to_owned() });
        }
        if d.delay_ms > 0 {
            self.delayed = true;
            let host_timer = s.resume_after(d.delay_ms);
            p.delay(self.id, d.delay_ms, host_timer);
            return Flow::Pause;
        }
        Flow::Continue
    }

    fn reply<S: StreamHost>(&mut self, s: &mut S, r: &Reply) -> Flow {
        let p = &*self.worker;
        p.bump(p.stats.reply(r.kind));
        if let (Some(ri), Some(ti)) = (r.route, r.target) {
            p.bump_opt(p.stats.target_reply(ri, ti, r.kind));
        }
        if p.config.decision_to_filter_state {
            s.set_filter_state(DECISION_STATE_KEY, format!("reply={}", r.kind.as_str()).as_bytes());
        }
        // A stream answered locally after routing no longer counts as in flight.
        if let (Some(d), Some(flight)) = (self.decision.take(), self.flight.take()) {
            p.finish(flight, &d);
        }
        s.send_reply(&LocalReply { http_status: 200, details: r.kind.as_str(), grpc: Some((r.code as u32, &r.message)), body: "" });
        Flow::Pause
    }

    /// Request body data: `size` bytes are buffered so far. A request held by an injected
    /// delay keeps its body too: letting the body through would release the headers early.
    pub fn on_request_body<S: StreamHost>(&mut self, s: &mut S, end_of_stream: bool) -> Flow {
        if !self.wants_body() {
            return Flow::Continue;
        }
        let flow = self.check_body(s, end_of_stream);
        if flow == Flow::Continue && self.delayed && self.worker.holds(self.id) {
            return Flow::Pause;
        }
        flow
    }

    /// Whether the body matters to this stream: most requests are neither validated nor
    /// delayed, and Envoy calls in for every chunk.
    #[inline]
    pub fn wants_body(&self) -> bool {
        self.declared.is_some() || self.delayed
    }

    /// The host's timer for this stream's injected delay went off: the request goes on.
    pub fn on_delay_over<S: StreamHost>(&mut self, s: &mut S) {
        if self.delayed && self.worker.holds(self.id) {
            self.worker.forget_delayed(self.id);
            s.resume_request();
        }
    }

    /// Validation of the body as it arrives, per the route's mode.
    fn check_body<S: StreamHost>(&mut self, s: &mut S, end_of_stream: bool) -> Flow {
        let Some(d) = self.decision else { return Flow::Continue };
        if !d.validate || self.declared.is_none() {
            return Flow::Continue;
        }
        let size = s.request_body_size();
        let worker = self.worker.clone();
        let Some(route) = worker.config.routes.get(d.route) else { return Flow::Continue };
        let cap = route.validate.max_body_bytes as usize + FRAME_PREFIX;
        if size > cap {
            let r = d.reply(
                Code::ResourceExhausted,
                ReplyKind::InvalidPayload,
                format!(
                    "switchyard: request body of {size} bytes exceeds the validation cap of {} bytes",
                    route.validate.max_body_bytes
                ),
            );
            return self.reply(s, &r);
        }
        if !end_of_stream {
            // Hold the body back (the host buffers it) until the whole message is here.
            return Flow::Pause;
        }
        match route.validate.mode {
            ValidateMode::Filter => {
                let mut verdict = None;
                s.request_body(size, &mut |body| verdict = self.validate_here(body));
                match verdict {
                    Some(r) => self.reply(s, &r),
                    None => Flow::Continue,
                }
            }
            ValidateMode::Sidecar => {
                let mut started = None;
                s.request_body(size, &mut |body| started = Some(body.to_vec()));
                match started.and_then(|body| self.validate_remote(s, &body)) {
                    Some(token) => {
                        self.validation_call = Some(token);
                        Flow::Pause
                    }
                    // Validator unreachable: let the request through rather than fail it.
                    None => Flow::Continue,
                }
            }
            ValidateMode::Off => Flow::Continue,
        }
    }

    /// Validates the buffered request body in the filter; `None` when it may pass.
    fn validate_here(&self, body: &[u8]) -> Option<Reply> {
        let p = &*self.worker;
        let d = self.decision.as_ref()?;
        let route = p.config.routes.get(d.route)?;
        let declared = self.declared.as_ref()?;
        // Without descriptors there is nothing to validate against.
        let snapshot = p.snapshot()?;
        let (subject, rev) = declared
            .revision
            .as_deref()
            .and_then(|dcl| snapshot.client_revision(dcl))
            .map(|(s, r)| (s.to_owned(), r))
            .or_else(|| snapshot.facts(d.route, d.target).and_then(|f| f.serves.clone()))?;
        let pool = p.pool(&snapshot, &subject, rev)?;
        let (service, method) = declared.path.trim_start_matches('/').split_once('/')?;
        let input = pool.get_service_by_name(service)?.methods().find(|m| m.name() == method)?.input();
        let v = switchyard_schema::validate::validate_grpc_frames(&input, body, &policy(&route.validate));
        let first = v.violations.first()?;
        let more = v.violations.len() - 1;
        Some(d.reply(
            Code::InvalidArgument,
            ReplyKind::InvalidPayload,
            format!(
                "switchyard: invalid {} for {subject}@{rev}: {first}{}",
                input.full_name(),
                if more > 0 { format!(" (and {more} more)") } else { String::new() }
            ),
        ))
    }

    /// Sends the body to the sidecar's validator; the answer resumes or rejects.
    fn validate_remote<S: StreamHost>(&self, s: &mut S, body: &[u8]) -> Option<CalloutToken> {
        let sidecar = self.worker.config.sidecar.as_ref()?;
        let declared = self.declared.as_ref()?;
        let route = self.worker.config.routes.get(self.decision.as_ref()?.route)?;
        let policy = policy(&route.validate);
        let path = format!(
            "{VALIDATE_PATH}?{METHOD_QUERY}={}&{REVISION_QUERY}={}&{UNKNOWN_FIELDS_QUERY}={}&{WIRE_TYPE_MISMATCH_QUERY}={}",
            declared.path,
            declared.revision.as_deref().unwrap_or(""),
            policy.unknown_fields.as_str(),
            policy.wire_type_mismatch.as_str(),
        );
        s.callout(&Callout {
            cluster: &sidecar.cluster,
            method: "POST",
            path: &path,
            authority: &sidecar.authority,
            headers: &[("content-type", "application/grpc")],
            body: Some(body),
            timeout_ms: sidecar.timeout_ms,
        })
    }

    /// The answer to this stream's validation call.
    pub fn on_callout_reply<S: StreamHost>(&mut self, s: &mut S, token: CalloutToken, reply: &CalloutReply<'_>) {
        if self.validation_call != Some(token) {
            return;
        }
        self.validation_call = None;
        let Some(d) = self.decision else { return };
        let verdict: Option<ValidateReply> = serde_json::from_slice(reply.body).ok();
        match verdict {
            Some(v) if reply.status == Some(200) && !v.valid => {
                let message = v.message.unwrap_or_else(|| "invalid payload".into());
                let r = d.reply(Code::InvalidArgument, ReplyKind::InvalidPayload, format!("switchyard: {message}"));
                self.reply(s, &r);
            }
            // Valid, or the validator could not answer: release the held body.
            _ => s.resume_request(),
        }
    }

    pub fn on_response_headers<S: StreamHost>(&mut self, s: &mut S, end_of_stream: bool) -> Flow {
        let Some(d) = self.decision else { return Flow::Continue };
        self.responded_ns = Some(self.worker.host.now_ns());
        if end_of_stream {
            // Trailers-only response: grpc-status is in the headers.
            self.grpc_status = read_status(s, ResponseMap::Headers);
        }
        if let Some(name) = &self.worker.config.headers.decision {
            if let Some(value) = self.worker.decision_value(&d) {
                s.add_response_header(name, value);
            }
        }
        Flow::Continue
    }

    pub fn on_response_trailers<S: StreamHost>(&mut self, s: &mut S) -> Flow {
        let Some(d) = self.decision else { return Flow::Continue };
        self.trailers_seen = true;
        // Reading a header can cost the host a memory allocation called back into the VM,
        // the dearest thing a Wasm filter does per request. gRPC servers answer errors
        // trailers-only (read above, always); a status in trailers after a message is
        // rare, so it is sampled, except for probes, whose every outcome matters.
        if d.probe || self.worker.sample_trailers() {
            self.grpc_status = read_status(s, ResponseMap::Trailers);
        }
        Flow::Continue
    }

    /// The stream is over (logged, reset or completed): records its outcome once.
    pub fn on_complete(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.delayed {
            self.worker.forget_delayed(self.id);
        }
        let (Some(d), Some(flight)) = (self.decision, self.flight) else { return };
        let p = &*self.worker;
        let end = self.responded_ns.unwrap_or_else(|| p.host.now_ns());
        let latency_us = end.saturating_sub(self.started_ns) / 1000;
        let error = match self.grpc_status {
            Some(status) => p.config.routes.get(d.route).is_some_and(|r| r.rules.is_error(status)),
            // A complete response whose trailers were not sampled counts as OK; no response
            // at all (reset, timeout) is an error.
            None => !self.trailers_seen,
        };
        p.record_outcome(flight, &d, Outcome { latency_us, error, probe: d.probe, counted_slow: false });
    }
}

fn read_status<S: StreamHost>(s: &mut S, map: ResponseMap) -> Option<u32> {
    let mut status = None;
    s.response_value(map, "grpc-status", &mut |v| status = Code::parse_status(v));
    status
}

/// The validation policy of a route, the same whether the filter or the sidecar validates.
fn policy(v: &crate::config::Validate) -> switchyard_schema::validate::Policy {
    switchyard_schema::validate::Policy {
        unknown_fields: v.unknown_fields,
        wire_type_mismatch: v.wire_type_mismatch,
        max_bytes: v.max_body_bytes as usize,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
