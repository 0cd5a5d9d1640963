//! The plugin configuration: its JSON shape ([`raw`]) and the validated, compiled form
//! the filter runs on ([`Config`]).
//!
//! Envoy hands the JSON to `on_configure`; [`Config::from_json`] either returns a
//! [`Config`] that the request path uses without further checks, or a [`ConfigError`]
//! naming the offending field (`routes[0].targets[1].weight: …`). Envoy then rejects
//! the configuration and the previous one keeps serving.
//!
//! `filter/config.schema.json` describes the same shape; a test keeps the two in
//! agreement over every example configuration in the repository.

pub mod raw;
#[cfg(test)]
mod schema_file;

use crate::bucket;
use crate::grpc::Code;
use crate::health::DegradeRules;
use crate::pattern::MethodPattern;
pub use raw::{FailMode, Malformed, NonGrpc, RouteRefresh, UnknownRevision, ValidateMode};
use raw::{UndeclaredConfig, UndeclaredMode};
use raw::{DegradeConfig, FaultConfig, LatencyConfig, PluginConfig, RouteConfig, ValidateConfig};
use std::collections::HashSet;
use std::fmt;

/// A configuration error: where (a JSON path such as `routes[0].default_target`) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The JSON Schema of the plugin configuration (draft 2020-12), generated from the types
/// in [`raw`]: `filter/config.schema.json` is this, and a test fails when it is stale.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<raw::PluginConfig>().to_value();
    if let Some(root) = schema.as_object_mut() {
        root.insert("$id".into(), "https://switchyard.dev/schemas/filter-config.json".into());
        root.insert("title".into(), "Switchyard filter plugin configuration".into());
        root.insert(
            "description".into(),
            "The JSON handed to the Switchyard filter: the Wasm build's `configuration` (Istio's \
             `pluginConfig`) or the native module's `filter_config`. The filter validates it once at \
             load and Envoy rejects a configuration it refuses."
                .into(),
        );
    }
    schema
}

pub(crate) fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { path: path.into(), message: message.into() }
}

/// Upper bound on a single weight, so sums never overflow and typos stand out.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// The validated configuration the filter runs on.
#[derive(Clone, Debug)]
pub struct Config {
    pub headers: HeaderNames,
    pub route_refresh: RouteRefresh,
    /// Filter-state key the chosen cluster goes to instead of the routing header.
    pub cluster_filter_state: Option<String>,
    pub decision_to_filter_state: bool,
    pub non_grpc: NonGrpc,
    pub access: Access,
    pub unknown_revision: UnknownRevision,
    pub undeclared: Undeclared,
    pub without_snapshot: FailMode,
    /// Whether the budget header may carry bare milliseconds (custom headers only).
    pub budget_bare_millis: bool,
    pub malformed_budget: Malformed,
    /// Lower-cased values of the priority header that mark a request low priority.
    pub low_priority: Vec<String>,
    pub sidecar: Option<Sidecar>,
    pub routes: Vec<Route>,
    pub stat_prefix: String,
    pub tick_ms: u32,
    pub failure_policy: FailMode,
}

/// Lower-cased header names (HTTP/2 header names are lower case on the wire).
#[derive(Clone, Debug)]
pub struct HeaderNames {
    pub group: String,
    pub user_key: String,
    pub cluster: String,
    /// `Some` when the decision is exposed on responses.
    pub decision: Option<String>,
    pub revision: String,
    pub budget: String,
    pub priority: String,
}

/// What a client that declares no schema revision is taken to speak.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undeclared {
    /// The revision the route's default target serves (no constraint if it declares none).
    AssumeDefaultTarget,
    /// This revision, as a client would declare it.
    Assume(String),
    /// None: the client goes to the default target.
    DefaultTarget,
    Reject,
}

#[derive(Clone, Debug, Default)]
pub struct Access {
    pub allow: Vec<MethodPattern>,
    pub deny: Vec<MethodPattern>,
}

impl Access {
    /// Whether a gRPC method (`:path`) may pass. Deny wins; an empty allow list allows all.
    pub fn permits(&self, path: &str) -> bool {
        if self.deny.iter().any(|p| p.matches(path)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|p| p.matches(path))
    }
}

/// Where the sidecar's snapshot is polled from.
#[derive(Clone, Debug)]
pub struct Sidecar {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub poll_ms: u32,
    pub timeout_ms: u32,
}

#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub methods: Vec<MethodPattern>,
    pub targets: Vec<Target>,
    /// Index into `targets`.
    pub default_target: usize,
    /// Index into `targets` of the fallback, if any.
    pub fallback: Option<usize>,
    /// Degradation rules; disabled degradation is rules that never fire.
    pub rules: DegradeRules,
    pub latency: LatencyPolicy,
    pub validate: Validate,
    pub faults: Vec<Fault>,
}

impl Route {
    pub fn covers(&self, path: &str) -> bool {
        self.methods.iter().any(|p| p.matches(path))
    }

    pub fn target_index(&self, name: &str) -> Option<usize> {
        self.targets.iter().position(|t| t.name == name)
    }

    /// Whether any target declares the schema revision it serves.
    pub fn schema_aware(&self) -> bool {
        self.targets.iter().any(|t| t.revision.is_some())
    }
}

#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub cluster: String,
    pub weight: u32,
    /// This target's bucketing seed under the route's salt (see [`bucket`]).
    pub seed: u64,
    pub revision: Option<String>,
    pub model_version: Option<String>,
    pub latency_prior_us: Option<u64>,
    pub max_concurrency: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LatencyPolicy {
    pub budget_check: bool,
    pub percentile: f64,
    pub min_samples: u64,
}

/// The validator's own policies, as the sidecar's validator takes them.
pub use switchyard_schema::validate::{UnknownFields, WireTypeMismatch};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validate {
    pub mode: ValidateMode,
    pub max_body_bytes: u32,
    pub unknown_fields: UnknownFields,
    pub wire_type_mismatch: WireTypeMismatch,
}

/// A fault-injection rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// Applies to requests routed to this target (index)…
    pub target: Option<usize>,
    /// …or carrying this group; neither means every request of the route.
    pub group: Option<String>,
    pub percent: f64,
    pub delay_ms: Option<u32>,
    pub abort: Option<Code>,
}

impl Config {
    /// Parses and validates the plugin configuration. Empty input means all defaults.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: PluginConfig = if json.iter().all(u8::is_ascii_whitespace) {
            PluginConfig::default()
        } else {
            let de = &mut serde_json::Deserializer::from_slice(json);
            serde_path_to_error::deserialize(de).map_err(|e| err(e.path().to_string(), e.inner().to_string()))?
        };
        raw.validate()
    }

    /// Whether the sidecar's snapshot is needed at all.
    pub fn uses_sidecar(&self) -> bool {
        self.sidecar.is_some()
    }
}

impl PluginConfig {
    /// Checks every field and compiles patterns, seeds and rules.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let group = header_name("group_header", &self.group_header)?;
        let user_key = header_name("user_key_header", &self.user_key_header)?;
        let cluster = header_name("cluster_header", &self.cluster_header)?;
        let decision = header_name("decision_header", &self.decision_header)?;
        let revision = header_name("schema.revision_header", &self.schema.revision_header)?;
        let budget = header_name("budget.header", &self.budget.header)?;
        let priority = header_name("priority.header", &self.priority.header)?;
        for (at, other) in [
            ("group_header", &group),
            ("user_key_header", &user_key),
            ("schema.revision_header", &revision),
            ("budget.header", &budget),
            ("priority.header", &priority),
        ] {
            if *other == cluster {
                return Err(err("cluster_header", format!("{cluster:?} is also used as {at}")));
            }
        }
        if self.stat_prefix.is_empty()
            || !self.stat_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(err("stat_prefix", format!("{:?} must be non-empty [A-Za-z0-9_.]", self.stat_prefix)));
        }
        if !(10..=10_000).contains(&self.tick_ms) {
            return Err(err("tick_ms", format!("{} is outside 10..=10000", self.tick_ms)));
        }
        let access = Access {
            allow: patterns("access.allow", &self.access.allow)?,
            deny: patterns("access.deny", &self.access.deny)?,
        };
        let sidecar = match self.sidecar {
            None => None,
            Some(s) => {
                if s.cluster.trim().is_empty() || s.cluster.chars().any(char::is_whitespace) {
                    return Err(err("sidecar.cluster", format!("{:?} is not an Envoy cluster name", s.cluster)));
                }
                if !s.path.starts_with('/') {
                    return Err(err("sidecar.path", format!("{:?} must start with '/'", s.path)));
                }
                if s.poll_ms < 100 {
                    return Err(err("sidecar.poll_ms", format!("{} is below the minimum of 100", s.poll_ms)));
                }
                if s.timeout_ms == 0 {
                    return Err(err("sidecar.timeout_ms", "must be positive"));
                }
                Some(Sidecar {
                    cluster: s.cluster,
                    path: s.path,
                    authority: s.authority,
                    poll_ms: s.poll_ms,
                    timeout_ms: s.timeout_ms,
                })
            }
        };
        let undeclared = match self.schema.undeclared {
            UndeclaredConfig::Mode(UndeclaredMode::AssumeDefaultTarget) => Undeclared::AssumeDefaultTarget,
            UndeclaredConfig::Mode(UndeclaredMode::DefaultTarget) => Undeclared::DefaultTarget,
            UndeclaredConfig::Mode(UndeclaredMode::Reject) => Undeclared::Reject,
            UndeclaredConfig::Assume(a) if a.assume.trim().is_empty() => {
                return Err(err("schema.undeclared.assume", "must name a revision (e.g. \"features.v1@1\")"));
            }
            UndeclaredConfig::Assume(a) => Undeclared::Assume(a.assume.trim().to_owned()),
        };
        let mut names = HashSet::new();
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.into_iter().enumerate() {
            let at = format!("routes[{i}]");
            let route = r.validate(&at)?;
            if !names.insert(route.name.clone()) {
                return Err(err(format!("{at}.name"), format!("duplicate route name {:?}", route.name)));
            }
            if route.schema_aware() && sidecar.is_none() {
                return Err(err(
                    format!("{at}.targets"),
                    "targets declare schema revisions, but no `sidecar` is configured to learn compatibility from",
                ));
            }
            if route.validate.mode != ValidateMode::Off && sidecar.is_none() {
                return Err(err(format!("{at}.validate.mode"), "payload validation needs a `sidecar` (for descriptors)"));
            }
            routes.push(route);
        }
        Ok(Config {
            headers: HeaderNames {
                group,
                user_key,
                cluster,
                decision: self.expose_decision.then_some(decision),
                revision,
                budget,
                priority,
            },
            route_refresh: self.route_refresh,
            cluster_filter_state: match self.cluster_filter_state {
                Some(k) if k.is_empty() => return Err(err("cluster_filter_state", "must not be empty")),
                k => k,
            },
            decision_to_filter_state: self.decision_to_filter_state,
            non_grpc: self.non_grpc,
            access,
            unknown_revision: self.schema.unknown_revision,
            undeclared,
            without_snapshot: self.schema.without_snapshot,
            budget_bare_millis: !self.budget.header.eq_ignore_ascii_case("grpc-timeout"),
            malformed_budget: self.budget.malformed,
            low_priority: self.priority.low.iter().map(|v| v.to_ascii_lowercase()).collect(),
            sidecar,
            routes,
            stat_prefix: self.stat_prefix,
            tick_ms: self.tick_ms,
            failure_policy: self.failure_policy,
        })
    }
}

impl RouteConfig {
    fn validate(self, at: &str) -> Result<Route, ConfigError> {
        stat_name(&format!("{at}.name"), &self.name)?;
        if self.methods.is_empty() {
            return Err(err(format!("{at}.match"), "needs at least one method pattern"));
        }
        let methods = patterns(&format!("{at}.match"), &self.methods)?;
        if self.targets.is_empty() {
            return Err(err(format!("{at}.targets"), "needs at least one target"));
        }
        let salt = self.hash_salt.unwrap_or_else(|| self.name.clone());
        let mut targets: Vec<Target> = Vec::with_capacity(self.targets.len());
        for (j, t) in self.targets.into_iter().enumerate() {
            let tat = format!("{at}.targets[{j}]");
            stat_name(&format!("{tat}.name"), &t.name)?;
            if targets.iter().any(|o| o.name == t.name) {
                return Err(err(format!("{tat}.name"), format!("duplicate target name {:?}", t.name)));
            }
            if t.cluster.trim().is_empty() || t.cluster.chars().any(char::is_whitespace) {
                return Err(err(format!("{tat}.cluster"), format!("{:?} is not an Envoy cluster name", t.cluster)));
            }
            if t.weight > MAX_WEIGHT {
                return Err(err(format!("{tat}.weight"), format!("{} is over the maximum of {MAX_WEIGHT}", t.weight)));
            }
            if let Some(r) = &t.revision {
                if r.trim().is_empty() {
                    return Err(err(format!("{tat}.revision"), "must not be empty (e.g. \"features.v1@2\")"));
                }
            }
            if t.max_concurrency == Some(0) {
                return Err(err(format!("{tat}.max_concurrency"), "must be positive"));
            }
            targets.push(Target {
                seed: bucket::target_seed(&salt, &t.name),
                name: t.name,
                cluster: t.cluster,
                weight: t.weight,
                revision: t.revision,
                model_version: t.model_version,
                latency_prior_us: t.latency_prior_ms.map(|ms| u64::from(ms) * 1000),
                max_concurrency: t.max_concurrency,
            });
        }
        // Resolves a target name given at `path`.
        let find = |path: String, name: &str| -> Result<usize, ConfigError> {
            targets.iter().position(|t| t.name == name).ok_or_else(|| {
                let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                err(path, format!("{name:?} is not a target of this route (targets: {})", known.join(", ")))
            })
        };
        let default_target = find(format!("{at}.default_target"), &self.default_target)?;
        let fallback = self.fallback.as_deref().map(|f| find(format!("{at}.fallback"), f)).transpose()?;
        let latency = latency_policy(&format!("{at}.latency"), &self.latency)?;
        let rules = degrade_rules(&format!("{at}.degrade"), &self.degrade, &self.latency)?;
        let validate = validate_policy(&format!("{at}.validate"), &self.validate)?;
        let faults = self
            .faults
            .iter()
            .enumerate()
            .map(|(k, f)| fault(&format!("{at}.faults[{k}]"), f, &find))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Route { name: self.name, methods, targets, default_target, fallback, rules, latency, validate, faults })
    }
}

fn percent(at: &str, v: f64, allow_zero: bool) -> Result<f64, ConfigError> {
    let ok = v.is_finite() && v <= 100.0 && (v > 0.0 || (allow_zero && v == 0.0));
    if ok {
        Ok(v)
    } else {
        Err(err(at, format!("{v} must be a percentage in {}..=100", if allow_zero { "0" } else { "(0" })))
    }
}

fn latency_policy(at: &str, l: &LatencyConfig) -> Result<LatencyPolicy, ConfigError> {
    let percentile = percent(&format!("{at}.percentile"), l.percentile, false)?;
    if l.window_s == 0 {
        return Err(err(format!("{at}.window_s"), "must be positive"));
    }
    Ok(LatencyPolicy { budget_check: l.budget_check, percentile, min_samples: u64::from(l.min_samples.max(1)) })
}

fn degrade_rules(at: &str, d: &DegradeConfig, l: &LatencyConfig) -> Result<DegradeRules, ConfigError> {
    let error_rate_pct = percent(&format!("{at}.error_rate_pct"), d.error_rate_pct, true)?;
    let probe_share_pct = percent(&format!("{at}.probe_share_pct"), d.probe_share_pct, false)?;
    if d.error_window_s == 0 {
        return Err(err(format!("{at}.error_window_s"), "must be positive"));
    }
    if d.cooldown_ms == 0 {
        return Err(err(format!("{at}.cooldown_ms"), "must be positive"));
    }
    if d.max_cooldown_ms < d.cooldown_ms {
        return Err(err(
            format!("{at}.max_cooldown_ms"),
            format!("{} is below cooldown_ms ({})", d.max_cooldown_ms, d.cooldown_ms),
        ));
    }
    if d.probe_successes == 0 {
        return Err(err(format!("{at}.probe_successes"), "must be positive"));
    }
    let error_codes = d
        .error_codes
        .iter()
        .enumerate()
        .map(|(i, v)| grpc_code(&format!("{at}.error_codes[{i}]"), v).map(|c| c as u32))
        .collect::<Result<Vec<_>, _>>()?;
    let on = d.enabled;
    Ok(DegradeRules {
        slow_consecutive: if on { d.slow_consecutive } else { 0 },
        slow_threshold_us: u64::from(d.slow_threshold_ms) * 1000,
        error_rate_pct: if on { error_rate_pct } else { 0.0 },
        error_window_ms: u64::from(d.error_window_s) * 1000,
        error_min_requests: d.error_min_requests,
        error_codes,
        cooldown_ms: u64::from(d.cooldown_ms),
        max_cooldown_ms: u64::from(d.max_cooldown_ms),
        probe_share_pct,
        probe_successes: d.probe_successes,
        follow_sidecar: on && d.follow_sidecar,
        latency_window_ms: u64::from(l.window_s) * 1000,
    })
}

fn validate_policy(at: &str, v: &ValidateConfig) -> Result<Validate, ConfigError> {
    let unknown_fields = v.unknown_fields.parse().map_err(|_| {
        err(format!("{at}.unknown_fields"), format!("{:?} is not one of allow, warn, reject", v.unknown_fields.to_ascii_lowercase()))
    })?;
    let wire_type_mismatch = v.wire_type_mismatch.parse().map_err(|_| {
        err(format!("{at}.wire_type_mismatch"), format!("{:?} is not one of warn, reject", v.wire_type_mismatch))
    })?;
    if v.max_body_bytes == 0 {
        return Err(err(format!("{at}.max_body_bytes"), "must be positive"));
    }
    Ok(Validate { mode: v.mode, max_body_bytes: v.max_body_bytes, unknown_fields, wire_type_mismatch })
}

fn fault(
    at: &str,
    f: &FaultConfig,
    find: &dyn Fn(String, &str) -> Result<usize, ConfigError>,
) -> Result<Fault, ConfigError> {
    let percent = percent(&format!("{at}.percent"), f.percent, true)?;
    if f.target.is_some() && f.group.is_some() {
        return Err(err(at, "set `target` or `group`, not both"));
    }
    let target = f.target.as_deref().map(|t| find(format!("{at}.target"), t)).transpose()?;
    let abort = f.abort.as_ref().map(|v| grpc_code(&format!("{at}.abort"), v)).transpose()?;
    if abort == Some(Code::Ok) {
        return Err(err(format!("{at}.abort"), "OK is not a fault"));
    }
    if f.delay_ms.is_none() && abort.is_none() {
        return Err(err(at, "a fault needs `delay_ms`, `abort`, or both"));
    }
    if f.delay_ms.is_some_and(|d| d > 60_000) {
        return Err(err(format!("{at}.delay_ms"), "must be at most 60000"));
    }
    Ok(Fault { target, group: f.group.clone(), percent, delay_ms: f.delay_ms, abort })
}

fn grpc_code(at: &str, v: &serde_json::Value) -> Result<Code, ConfigError> {
    let code = match v {
        serde_json::Value::String(s) => Code::from_name(s),
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).and_then(Code::from_u32),
        _ => None,
    };
    code.ok_or_else(|| err(at, format!("{v} is not a gRPC status code (a name like \"UNAVAILABLE\" or 0-16)")))
}

fn header_name(at: &str, name: &str) -> Result<String, ConfigError> {
    let valid = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return Err(err(at, format!("{name:?} is not a valid HTTP header name")));
    }
    Ok(name.to_ascii_lowercase())
}

/// Names that become part of stat names: keep them to characters Envoy keeps verbatim.
fn stat_name(at: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(err(at, format!("{name:?} must be 1-64 characters of [A-Za-z0-9_-]")))
    }
}

fn patterns(at: &str, sources: &[String]) -> Result<Vec<MethodPattern>, ConfigError> {
    sources
        .iter()
        .enumerate()
        .map(|(i, s)| MethodPattern::parse(s).map_err(|m| err(format!("{at}[{i}]"), m)))
        .collect()
}

#[cfg(test)]
mod tests;
