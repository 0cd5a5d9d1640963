//! proxy-wasm glue: Envoy's callbacks in, the core's verdicts out. Deliberately thin;
//! everything that decides lives in plain Rust modules and is tested natively.
//!
//! * [`host`]: the host calls, declared against the ABI so none of them can panic;
//! * [`plugin`]: one configuration's per-worker state and the tick that merges it
//!   with the other workers;
//! * [`sidecar`]: polling the sidecar's snapshot and sharing it between workers;
//! * [`stream`]: one HTTP stream.

mod host;
mod plugin;
mod sidecar;
mod stream;

use crate::config::Config;
use host::{Buffer, Level, Map};
use plugin::Plugin;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(Root { id, plugin: None }) });
}}

/// Tick period while a stream waits out an injected delay (its resolution).
pub const DELAY_TICK_MS: u32 = 5;

struct Root {
    id: u32,
    plugin: Option<Rc<Plugin>>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(p) = &self.plugin else { return };
        let Some(poller) = p.poller.as_ref().filter(|poller| poller.owns(token)) else { return };
        let status = host::header(Map::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok());
        let body = host::buffer(Buffer::HttpCallResponseBody, body_size).unwrap_or_default();
        poller.answered(p, status, &body);
    }
}

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
        let summary = summary(&config);
        let tick_ms = config.tick_ms;
        let seed = host::now_ns() ^ (u64::from(self.id) << 32) ^ u64::from(self.id);
        match Plugin::new(config, seed) {
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
            host::log(Level::Info, &format!("switchyard: configured: {summary}"));
        }
        let _ = host::set_tick_period_ms(tick_ms);
        true
    }

    fn on_tick(&mut self) {
        if let Some(p) = &self.plugin {
            p.tick();
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let plugin = self.plugin.clone()?;
        Some(Box::new(stream::Stream::new(plugin, context_id)))
    }
}

/// One line describing a configuration and its thresholds (logged once at load).
fn summary(c: &Config) -> String {
    let routes: Vec<String> = c
        .routes
        .iter()
        .map(|r| {
            let targets: Vec<String> = r.targets.iter().map(|t| format!("{}={}", t.name, t.weight)).collect();
            let rules = &r.rules;
            format!(
                "{} [{}] fallback={} degrade: {}x>{}ms, errors>{}% in {}s (min {}), cool-down {}..{}ms, probes {}%x{}",
                r.name,
                targets.join(" "),
                r.fallback.and_then(|f| r.targets.get(f)).map_or("none", |t| t.name.as_str()),
                rules.slow_consecutive,
                rules.slow_threshold_us / 1000,
                rules.error_rate_pct,
                rules.error_window_ms / 1000,
                rules.error_min_requests,
                rules.cooldown_ms,
                rules.max_cooldown_ms,
                rules.probe_share_pct,
                rules.probe_successes
            )
        })
        .collect();
    format!("{} routes; {}", c.routes.len(), routes.join("; "))
}
