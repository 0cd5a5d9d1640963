//! One HTTP stream: reads the request once, applies the decision, observes the response.
//!
//! Host calls on a routed request: one read of the request headers, one clock read, one
//! write of the routing header, one filter-state write (if enabled); on the response one
//! clock read, a `grpc-status` read for trailers-only responses, probes and one complete
//! response in eight (plus the decision header, if enabled). Stats and health bookkeeping
//! are in-memory; the tick hands them on.

use super::host::{self, Buffer, Map};
use super::plugin::Plugin;
use crate::budget::format_timeout;
use crate::config::ValidateMode;
use crate::grpc::Code;
use crate::health::Outcome;
use crate::request::{HeaderPairs, RequestMeta};
use crate::route::{Decision, Reply, ReplyKind, Verdict, World};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;
use std::time::Duration;

pub struct Stream {
    plugin: Rc<Plugin>,
    context_id: u32,
    decision: Option<Decision>,
    started_ns: u64,
    responded_ns: Option<u64>,
    grpc_status: Option<u32>,
    /// The response ended with trailers (a complete gRPC response).
    trailers_seen: bool,
    /// For validated requests: the revision the client declared and the `:path`.
    declared: Option<(Option<String>, String)>,
    /// Token of a validation call to the sidecar in flight.
    validation_call: Option<u32>,
    finished: bool,
}

impl Stream {
    pub fn new(plugin: Rc<Plugin>, context_id: u32) -> Self {
        Self {
            plugin,
            context_id,
            decision: None,
            started_ns: 0,
            responded_ns: None,
            grpc_status: None,
            trailers_seen: false,
            declared: None,
            validation_call: None,
            finished: false,
        }
    }

    fn reply(&mut self, r: &Reply) -> Action {
        let p = &self.plugin;
        p.bump(p.stats.reply(r.kind));
        if let (Some(ri), Some(ti)) = (r.route, r.target) {
            p.bump_opt(p.stats.target_reply(ri, ti, r.kind));
        }
        if p.config.decision_to_filter_state {
            let _ = host::set_property("switchyard_decision", format!("reply={}", r.kind.as_str()).as_bytes());
        }
        // A stream answered locally after routing no longer counts as in flight.
        if let Some(d) = self.decision.take() {
            p.finish(self.context_id, &d);
        }
        let _ = host::send_local_response(
            200,
            r.kind.as_str(),
            &r.message,
            &p.grpc_reply_headers,
            Some(r.code as u32),
        );
        Action::Pause
    }

    /// Once the headers may go upstream: apply an injected delay, else continue.
    fn proceed(&mut self, d: &Decision) -> Action {
        if d.delay_ms > 0 {
            self.plugin.delay(self.context_id, d.delay_ms);
            return Action::Pause;
        }
        Action::Continue
    }

    /// Validates the buffered request body in the filter; `None` when it may pass.
    fn validate_here(&self, body: &[u8]) -> Option<Reply> {
        let p = &self.plugin;
        let d = self.decision.as_ref()?;
        let route = p.config.routes.get(d.route)?;
        let (declared, path) = self.declared.as_ref()?;
        let snapshot = p.snapshot.try_borrow().ok()?.clone();
        let invalid = |message: String| Reply {
            code: Code::InvalidArgument,
            kind: ReplyKind::InvalidPayload,
            route: Some(d.route),
            target: Some(d.target),
            message,
        };
        let Some(snapshot) = snapshot else {
            // Without descriptors there is nothing to validate against.
            return None;
        };
        let revision = declared
            .as_deref()
            .and_then(|dcl| snapshot.client_revision(dcl))
            .map(|(s, r)| (s.to_owned(), r))
            .or_else(|| snapshot.facts(d.route, d.target).and_then(|f| f.serves.clone()));
        let (subject, rev) = revision?;
        let pool = p.pool(&subject, rev)?;
        let (service, method) = path.trim_start_matches('/').split_once('/')?;
        let input = pool.get_service_by_name(service)?.methods().find(|m| m.name() == method)?.input();
        let policy = switchyard_schema::validate::Policy {
            unknown_fields: match route.validate.unknown_fields {
                crate::config::UnknownFields::Allow => switchyard_schema::validate::UnknownFields::Allow,
                crate::config::UnknownFields::Warn => switchyard_schema::validate::UnknownFields::Warn,
                crate::config::UnknownFields::Reject => switchyard_schema::validate::UnknownFields::Reject,
            },
            max_bytes: route.validate.max_body_bytes as usize,
            ..Default::default()
        };
        let v = switchyard_schema::validate::validate_grpc_frames(&input, body, &policy);
        let first = v.violations.first()?;
        let more = v.violations.len() - 1;
        Some(invalid(format!(
            "switchyard: invalid {} for {subject}@{rev}: {first}{}",
            input.full_name(),
            if more > 0 { format!(" (and {more} more)") } else { String::new() }
        )))
    }

    /// Sends the body to the sidecar's validator; the answer resumes or rejects.
    fn validate_remote(&mut self, body: &[u8]) -> Option<Action> {
        let p = &self.plugin;
        let sidecar = p.config.sidecar.as_ref()?;
        let (declared, path) = self.declared.as_ref()?;
        let query = format!(
            "/v1/validate?method={}&revision={}",
            path,
            declared.as_deref().unwrap_or("")
        );
        let headers = vec![
            (":method", "POST"),
            (":path", query.as_str()),
            (":authority", sidecar.authority.as_str()),
            ("content-type", "application/grpc"),
        ];
        let timeout = Duration::from_millis(u64::from(sidecar.timeout_ms));
        match proxy_wasm::hostcalls::dispatch_http_call(&sidecar.cluster, headers, Some(body), vec![], timeout) {
            Ok(token) => {
                self.validation_call = Some(token);
                Some(Action::Pause)
            }
            // Validator unreachable: let the request through rather than fail it.
            Err(_) => None,
        }
    }

    fn record(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let Some(d) = self.decision else { return };
        let p = &self.plugin;
        let end = self.responded_ns.unwrap_or_else(host::now_ns);
        let latency_us = end.saturating_sub(self.started_ns) / 1000;
        let route = p.config.routes.get(d.route);
        let error = match self.grpc_status {
            Some(s) => route.is_some_and(|r| r.rules.is_error(s)),
            // A complete response whose trailers were not sampled counts as OK; no response
            // at all (reset, timeout) is an error.
            None => !self.trailers_seen,
        };
        p.record_outcome(self.context_id, &d, Outcome { latency_us, error, probe: d.probe, counted_slow: false });
    }
}

impl Context for Stream {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        if self.validation_call != Some(token) {
            return;
        }
        self.validation_call = None;
        let status = host::header(Map::HttpCallResponseHeaders, ":status").ok().flatten();
        let body = host::buffer(Buffer::HttpCallResponseBody, body_size).unwrap_or_default();
        let verdict: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let valid = verdict.as_ref().and_then(|v| v.get("valid")).and_then(serde_json::Value::as_bool);
        let Some(d) = self.decision else { return };
        if status.as_deref() == Some(b"200") && valid == Some(false) {
            let message = verdict
                .as_ref()
                .and_then(|v| v.get("message"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or("invalid payload")
                .to_owned();
            let r = Reply {
                code: Code::InvalidArgument,
                kind: ReplyKind::InvalidPayload,
                route: Some(d.route),
                target: Some(d.target),
                message: format!("switchyard: {message}"),
            };
            self.reply(&r);
            return;
        }
        // Valid, or the validator could not answer: release the held body.
        let _ = host::resume_request(self.context_id);
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let Ok(buf) = host::header_pairs(Map::RequestHeaders) else {
            return Action::Continue;
        };
        let plugin = self.plugin.clone();
        let p = &*plugin;
        let cfg = &p.config;
        let req = RequestMeta::scan(&cfg.headers, HeaderPairs::new(&buf));
        let verdict = {
            let states = p.states.try_borrow();
            let snapshot = p.snapshot.try_borrow().ok().and_then(|s| s.clone());
            let world = World {
                targets: states.as_deref().map_or(&[], |s| s.as_slice()),
                snapshot: snapshot.as_deref(),
            };
            match p.rng.try_borrow_mut() {
                Ok(mut rng) => cfg.decide(&req, &world, &mut rng),
                Err(_) => cfg.decide(&req, &world, &mut crate::rng::Rng::new(host::now_ns())),
            }
        };
        if !matches!(verdict, Verdict::PassNonGrpc | Verdict::RejectNonGrpc) {
            p.bump(p.stats.requests());
        }
        match verdict {
            Verdict::Route(d) => {
                let Some(target) = cfg.routes.get(d.route).and_then(|r| r.targets.get(d.target)) else {
                    return Action::Continue;
                };
                // Overwrites any value the client sent.
                let _ = host::replace_header(Map::RequestHeaders, &cfg.headers.cluster, &target.cluster);
                p.bump_opt(p.stats.target_requests(d.route, d.target));
                p.bump(p.stats.reason(d.reason));
                if d.probe {
                    p.bump_opt(p.stats.target_probes(d.route, d.target));
                }
                if cfg.decision_to_filter_state {
                    if let Some(v) = p.decision_value(&d) {
                        let _ = host::set_property("switchyard_decision", v.as_bytes());
                    }
                }
                if let (Some(budget), true) = (d.budget, d.delay_ms > 0) {
                    // Time the request will spend here comes off the budget sent upstream.
                    let remaining = budget.saturating_sub(Duration::from_millis(u64::from(d.delay_ms)));
                    let mut value = String::new();
                    format_timeout(remaining, &mut value);
                    let _ = host::replace_header(Map::RequestHeaders, &cfg.headers.budget, &value);
                }
                self.started_ns = host::now_ns();
                p.start(self.context_id, &d, self.started_ns);
                self.decision = Some(d);
                if d.validate && !end_of_stream {
                    // The body is checked as it arrives (see on_http_request_body). The
                    // headers must go on: a Wasm filter that pauses on headers receives no
                    // body until it resumes.
                    self.declared = Some((req.revision.map(str::to_owned), req.path.unwrap_or("").to_owned()));
                }
                self.proceed(&d)
            }
            Verdict::PassNonGrpc | Verdict::Unrouted => {
                p.bump(if matches!(verdict, Verdict::Unrouted) { p.stats.unrouted() } else { p.stats.passthrough() });
                if req.has_cluster_header {
                    let _ = host::remove_header(Map::RequestHeaders, &cfg.headers.cluster);
                }
                Action::Continue
            }
            Verdict::Reply(r) => self.reply(&r),
            Verdict::RejectNonGrpc => {
                p.bump(p.stats.non_grpc_rejected());
                let _ = host::send_local_response(
                    415,
                    "switchyard_non_grpc_rejected",
                    "switchyard: only gRPC requests are accepted here\n",
                    &[],
                    None,
                );
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(d) = self.decision else { return Action::Continue };
        if !d.validate || self.declared.is_none() {
            return Action::Continue;
        }
        let p = self.plugin.clone();
        let Some(route) = p.config.routes.get(d.route) else { return Action::Continue };
        let cap = route.validate.max_body_bytes as usize + crate::grpc::FRAME_PREFIX;
        if body_size > cap {
            let r = Reply {
                code: Code::ResourceExhausted,
                kind: ReplyKind::InvalidPayload,
                route: Some(d.route),
                target: Some(d.target),
                message: format!(
                    "switchyard: request body of {body_size} bytes exceeds the validation cap of {} bytes",
                    route.validate.max_body_bytes
                ),
            };
            return self.reply(&r);
        }
        if !end_of_stream {
            // Hold the body back (Envoy buffers it) until the whole message is here.
            return Action::Pause;
        }
        let Ok(body) = host::buffer(Buffer::RequestBody, body_size) else {
            return Action::Continue;
        };
        match route.validate.mode {
            ValidateMode::Filter => match self.validate_here(&body) {
                Some(r) => self.reply(&r),
                None => Action::Continue,
            },
            ValidateMode::Sidecar => self.validate_remote(&body).unwrap_or(Action::Continue),
            ValidateMode::Off => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let Some(d) = self.decision else { return Action::Continue };
        self.responded_ns = Some(host::now_ns());
        if end_of_stream {
            // Trailers-only response: grpc-status is in the headers.
            self.grpc_status = host::header(Map::ResponseHeaders, "grpc-status")
                .ok()
                .flatten()
                .and_then(|v| Code::parse_status(&v));
        }
        if let Some(name) = &self.plugin.config.headers.decision {
            if let Some(value) = self.plugin.decision_value(&d) {
                let _ = host::add_header(Map::ResponseHeaders, name, value);
            }
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _trailers: usize) -> Action {
        let Some(d) = self.decision else { return Action::Continue };
        self.trailers_seen = true;
        // Reading a header costs the VM a memory allocation called back from the host,
        // the dearest thing a filter does per request. gRPC servers answer errors
        // trailers-only (read above, always); a status in trailers after a message is
        // rare, so it is sampled, except for probes, whose every outcome matters.
        if d.probe || self.plugin.sample_trailers() {
            self.grpc_status = host::header(Map::ResponseTrailers, "grpc-status")
                .ok()
                .flatten()
                .and_then(|v| Code::parse_status(&v));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.record();
    }
}
