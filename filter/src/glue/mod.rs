//! proxy-wasm glue: Envoy's callbacks in, the core's verdicts out. Deliberately thin;
//! everything that decides lives in plain Rust modules and is tested natively.

mod host;

use crate::config::Config;
use crate::grpc::Code;
use crate::request::{serialize_pairs, HeaderPairs, RequestMeta};
use crate::route::{Decision, Reason, Verdict};
use crate::stats::{Pending, StatTable};
use host::{Level, Map};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// How often each worker flushes its batched stats to Envoy.
const STATS_FLUSH_MS: u32 = 1_000;

/// Everything one configuration needs at request time, shared by the root context and
/// the streams it creates. A new configuration makes a new `Plugin`; streams in flight
/// keep the one they started with.
struct Plugin {
    config: Config,
    stats: StatTable,
    metric_ids: Vec<u32>,
    pending: Pending,
    /// Decision header values, `[route][target][reason]`, rendered once.
    decision_values: Vec<Vec<Vec<String>>>,
    /// Trailers-only reply headers for local gRPC answers.
    grpc_reply_headers: Vec<u8>,
}

impl Plugin {
    fn new(config: Config) -> Result<Self, String> {
        let stats = StatTable::new(&config);
        let metric_ids = stats
            .names()
            .iter()
            .map(|n| host::define_counter(n).map_err(|e| format!("defining stat {n}: host status {}", e.0)))
            .collect::<Result<Vec<_>, _>>()?;
        let decision_values = config
            .routes
            .iter()
            .map(|r| {
                r.targets
                    .iter()
                    .map(|t| {
                        Reason::ALL
                            .iter()
                            .map(|why| format!("target={}; reason={}", t.name, why.as_str()))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        Ok(Self {
            pending: Pending::new(&stats),
            stats,
            metric_ids,
            decision_values,
            grpc_reply_headers: serialize_pairs(&[("content-type", "application/grpc")]),
            config,
        })
    }

    fn flush_stats(&self) {
        self.pending.drain(|i, n| {
            if let Some(&id) = self.metric_ids.get(i) {
                let _ = host::increment_metric(id, n);
            }
        });
    }

    fn decision_value(&self, d: &Decision) -> Option<&str> {
        self.decision_values
            .get(d.route)?
            .get(d.target)?
            .get(d.reason.index())
            .map(String::as_str)
    }
}

#[derive(Default)]
struct Root {
    plugin: Option<Rc<Plugin>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let json = match host::plugin_configuration(size) {
            Ok(json) => json,
            Err(e) => {
                host::log(Level::Error, &format!("switchyard: cannot read plugin configuration (host status {})", e.0));
                return false;
            }
        };
        let config = match Config::from_json(&json) {
            Ok(c) => c,
            Err(e) => {
                // Returning false makes Envoy reject this configuration; the previous
                // one (if any) keeps serving.
                host::log(Level::Error, &format!("switchyard: invalid plugin configuration: {e}"));
                return false;
            }
        };
        let routes = config.routes.len();
        match Plugin::new(config) {
            Ok(plugin) => {
                if let Some(old) = &self.plugin {
                    old.flush_stats();
                }
                self.plugin = Some(Rc::new(plugin));
            }
            Err(e) => {
                host::log(Level::Error, &format!("switchyard: {e}"));
                return false;
            }
        }
        if host::log_level() <= Level::Info {
            host::log(Level::Info, &format!("switchyard: configured ({routes} routes)"));
        }
        let _ = host::set_tick_period_ms(STATS_FLUSH_MS);
        true
    }

    fn on_tick(&mut self) {
        if let Some(p) = &self.plugin {
            p.flush_stats();
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let plugin = self.plugin.clone()?;
        Some(Box::new(Stream { plugin, decision: None }))
    }
}

/// One HTTP stream.
struct Stream {
    plugin: Rc<Plugin>,
    decision: Option<Decision>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Ok(buf) = host::header_pairs(Map::RequestHeaders) else {
            return Action::Continue;
        };
        let p = &*self.plugin;
        let cfg = &p.config;
        let req = RequestMeta::scan(&cfg.headers, HeaderPairs::new(&buf));
        let verdict = cfg.decide(&req);
        let stats = &p.stats;
        if !matches!(verdict, Verdict::PassNonGrpc | Verdict::RejectNonGrpc) {
            p.pending.bump(stats.requests());
        }
        match verdict {
            Verdict::Route(d) => {
                let cluster = cfg
                    .routes
                    .get(d.route)
                    .and_then(|r| r.targets.get(d.target))
                    .map(|t| t.cluster.as_str());
                if let Some(cluster) = cluster {
                    // Overwrites any value the client sent.
                    let _ = host::replace_header(Map::RequestHeaders, &cfg.headers.cluster, cluster);
                    p.pending.bump(stats.target(d.route, d.target));
                    p.pending.bump(stats.reason(d.reason));
                    self.decision = Some(d);
                }
                Action::Continue
            }
            Verdict::PassNonGrpc | Verdict::Unrouted => {
                p.pending.bump(if matches!(verdict, Verdict::Unrouted) {
                    stats.unrouted()
                } else {
                    stats.passthrough()
                });
                if req.has_cluster_header {
                    let _ = host::remove_header(Map::RequestHeaders, &cfg.headers.cluster);
                }
                Action::Continue
            }
            Verdict::Deny => {
                p.pending.bump(stats.denied());
                let message = format!(
                    "switchyard: method {} is not allowed by this proxy's access policy",
                    req.path.unwrap_or("")
                );
                let _ = host::send_local_response(
                    200,
                    "switchyard_method_denied",
                    &message,
                    &p.grpc_reply_headers,
                    Some(Code::PermissionDenied as u32),
                );
                Action::Pause
            }
            Verdict::RejectNonGrpc => {
                p.pending.bump(stats.non_grpc_rejected());
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

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if let (Some(d), Some(name)) = (&self.decision, &self.plugin.config.headers.decision) {
            if let Some(value) = self.plugin.decision_value(d) {
                let _ = host::add_header(Map::ResponseHeaders, name, value);
            }
        }
        Action::Continue
    }
}
