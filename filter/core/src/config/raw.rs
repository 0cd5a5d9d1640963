//! The plugin configuration as users write it: serde shapes with their defaults.
//!
//! Every struct denies unknown fields, so a typo is an error naming the field rather than
//! a silently ignored setting. A struct's `Default` is the one place its defaults live
//! (serde fills missing fields from it). `filter/config.schema.json`, for editors and CI,
//! is generated from these types ([`super::json_schema`]); its constraints are the
//! `schemars` attributes here, the same rules the parser checks.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Patterns the JSON Schema states; the parser (`config/mod.rs`) checks the same rules.
pub(crate) mod pattern {
    /// An HTTP header name (a token).
    pub const HEADER_NAME: &str = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$";
    /// A name that becomes part of stat names.
    pub const STAT_NAME: &str = r"^[A-Za-z0-9_-]{1,64}$";
    /// A gRPC method pattern matched against `:path`; `*` matches any run of characters.
    pub const METHOD: &str = r"^[/*][^\s]*$";
    /// An Envoy cluster name.
    pub const CLUSTER: &str = r"^\S+$";
    /// A stat prefix.
    pub const STAT_PREFIX: &str = r"^[A-Za-z0-9_.]+$";
}

/// The plugin configuration (the JSON Envoy hands to `on_configure`).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PluginConfig {
    /// Header naming the A/B group (a target name) explicitly.
    #[schemars(pattern(pattern::HEADER_NAME))]
    pub group_header: String,
    /// Header hashed into a sticky bucket when no group is given.
    #[schemars(pattern(pattern::HEADER_NAME))]
    pub user_key_header: String,
    /// Internal request header carrying the chosen cluster to Envoy's `cluster_header`
    /// route. Any value a client sends is overwritten or removed.
    #[schemars(pattern(pattern::HEADER_NAME))]
    pub cluster_header: String,
    /// What Envoy redoes once the routing header is written: `route` matches the route
    /// again (works with a `cluster_header` route); `cluster` only picks the matched
    /// route's cluster again (Envoy's `refreshRouteCluster`: cheaper, for a route whose
    /// cluster comes from a matcher cluster specifier on the routing header). The native
    /// module honours it; proxy-wasm always matches the route again.
    pub route_refresh: RouteRefresh,
    /// Write the chosen cluster into this Envoy filter-state key instead of the
    /// `cluster_header` (native module only): a route whose matcher cluster specifier reads
    /// it (`FilterStateInput`) picks it up with `route_refresh: cluster`. Nothing is added
    /// to the request, so no upstream sees it and no client can set it.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub cluster_filter_state: Option<String>,
    /// Add the decision (`target=…; reason=…`) to responses.
    pub expose_decision: bool,
    #[schemars(pattern(pattern::HEADER_NAME))]
    pub decision_header: String,
    /// Put the decision into Envoy filter state (`wasm.switchyard_decision`), for access
    /// logs. Off by default: it costs a host call per request.
    pub decision_to_filter_state: bool,
    pub non_grpc: NonGrpc,
    pub access: AccessConfig,
    pub schema: SchemaConfig,
    pub budget: BudgetConfig,
    pub priority: PriorityConfig,
    pub sidecar: Option<SidecarConfig>,
    pub routes: Vec<RouteConfig>,
    #[schemars(pattern(pattern::STAT_PREFIX))]
    pub stat_prefix: String,
    /// How often each worker merges shared health, flushes stats and polls (ms).
    #[schemars(range(min = 10, max = 10_000))]
    pub tick_ms: u32,
    /// What the native module does with a stream when the filter fails on it (a caught
    /// panic): `open` lets it go on unrouted (Envoy's own routes), `closed` answers
    /// UNAVAILABLE. (In the Wasm build a failed VM follows Envoy's `failure_policy`.)
    pub failure_policy: FailMode,
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            group_header: "x-ab-group".into(),
            user_key_header: "x-user-id".into(),
            cluster_header: "x-switchyard-cluster".into(),
            route_refresh: RouteRefresh::Route,
            cluster_filter_state: None,
            expose_decision: false,
            decision_header: "x-switchyard-decision".into(),
            decision_to_filter_state: false,
            non_grpc: NonGrpc::Pass,
            access: AccessConfig::default(),
            schema: SchemaConfig::default(),
            budget: BudgetConfig::default(),
            priority: PriorityConfig::default(),
            sidecar: None,
            routes: Vec::new(),
            stat_prefix: "switchyard".into(),
            tick_ms: 100,
            failure_policy: FailMode::Open,
        }
    }
}

/// Handling of requests whose `content-type` is not `application/grpc…`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NonGrpc {
    /// Let them through untouched (only a spoofed internal header is removed).
    #[default]
    Pass,
    /// Answer `415 Unsupported Media Type` locally.
    Reject,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// If non-empty, only methods matching one of these patterns are allowed.
    #[schemars(inner(pattern(pattern::METHOD)))]
    pub allow: Vec<String>,
    /// Methods matching any of these patterns are denied (deny wins).
    #[schemars(inner(pattern(pattern::METHOD)))]
    pub deny: Vec<String>,
}

/// Schema-revision routing.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaConfig {
    /// Header in which a client declares its revision (`features.v1@3` or a fingerprint).
    #[schemars(pattern(pattern::HEADER_NAME))]
    pub revision_header: String,
    /// A declared revision the registry does not know.
    pub unknown_revision: UnknownRevision,
    /// A client that declares no revision (most existing clients).
    pub undeclared: UndeclaredConfig,
    /// Until the first snapshot arrives from the sidecar: route by A/B only (`open`), or
    /// refuse requests whose route needs a schema check with UNAVAILABLE (`closed`).
    pub without_snapshot: FailMode,
}

impl Default for SchemaConfig {
    fn default() -> Self {
        Self {
            revision_header: "x-schema-revision".into(),
            unknown_revision: UnknownRevision::DefaultTarget,
            undeclared: UndeclaredConfig::default(),
            without_snapshot: FailMode::Open,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnknownRevision {
    /// Route to the route's default target.
    #[default]
    DefaultTarget,
    /// Refuse with FAILED_PRECONDITION.
    Reject,
}

/// What an undeclared client is taken to speak: a mode, or `{"assume": "<revision>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum UndeclaredConfig {
    Mode(UndeclaredMode),
    Assume(AssumeConfig),
}

impl Default for UndeclaredConfig {
    fn default() -> Self {
        UndeclaredConfig::Mode(UndeclaredMode::AssumeDefaultTarget)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UndeclaredMode {
    /// Assume it speaks what the route's default target serves, and bucket it among the
    /// targets that can serve that revision (it takes part in the A/B split).
    AssumeDefaultTarget,
    /// Send it to the route's default target (it never sees a canary).
    DefaultTarget,
    /// Refuse with FAILED_PRECONDITION.
    Reject,
}

/// Assume this revision (`features.v1@1` or a fingerprint) for undeclared clients.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssumeConfig {
    pub assume: String,
}

/// What Envoy redoes after the filter writes the routing header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteRefresh {
    /// Clear the route cache: the route is matched again.
    Route,
    /// Keep the matched route, pick its cluster again.
    Cluster,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    #[default]
    Open,
    Closed,
}

/// Where the latency budget comes from.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// `grpc-timeout`, or a custom header (which may also carry bare milliseconds).
    #[schemars(pattern(pattern::HEADER_NAME))]
    pub header: String,
    /// A value that cannot be parsed: `ignore` it (no budget) or `reject` the request
    /// with INVALID_ARGUMENT.
    pub malformed: Malformed,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self { header: "grpc-timeout".into(), malformed: Malformed::Ignore }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Malformed {
    #[default]
    Ignore,
    Reject,
}

/// Which requests are low priority (shed first).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PriorityConfig {
    #[schemars(pattern(pattern::HEADER_NAME))]
    pub header: String,
    /// Header values (case-insensitive) that mark a request low priority.
    pub low: Vec<String>,
}

impl Default for PriorityConfig {
    fn default() -> Self {
        Self { header: "x-priority".into(), low: vec!["low".into()] }
    }
}

/// The sidecar whose snapshot (schema revisions, compatibility, model health) is polled.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// Envoy cluster of the sidecar's admin port (HTTP/1.1).
    #[schemars(pattern(pattern::CLUSTER))]
    pub cluster: String,
    #[serde(default = "snapshot_path")]
    #[schemars(pattern(r"^/"))]
    pub path: String,
    #[serde(default = "authority")]
    pub authority: String,
    #[serde(default = "poll_ms")]
    #[schemars(range(min = 100))]
    pub poll_ms: u32,
    #[serde(default = "poll_timeout_ms")]
    #[schemars(range(min = 1))]
    pub timeout_ms: u32,
}

fn snapshot_path() -> String {
    "/v1/snapshot".into()
}
fn authority() -> String {
    "switchyard-sidecar".into()
}
fn poll_ms() -> u32 {
    1_000
}
fn poll_timeout_ms() -> u32 {
    500
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in stats and logs.
    #[schemars(pattern(pattern::STAT_NAME))]
    pub name: String,
    /// Method patterns this route covers.
    #[serde(rename = "match")]
    #[schemars(length(min = 1))]
    #[schemars(inner(pattern(pattern::METHOD)))]
    pub methods: Vec<String>,
    #[schemars(length(min = 1))]
    pub targets: Vec<TargetConfig>,
    /// Target for requests with neither group nor user key.
    pub default_target: String,
    /// Where a degraded or too-slow target's traffic goes first.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Salt of the sticky hash; defaults to the route name.
    #[serde(default)]
    pub hash_salt: Option<String>,
    #[serde(default)]
    pub degrade: DegradeConfig,
    #[serde(default)]
    pub latency: LatencyConfig,
    #[serde(default)]
    pub validate: ValidateConfig,
    #[serde(default)]
    pub faults: Vec<FaultConfig>,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    #[schemars(pattern(pattern::STAT_NAME))]
    pub name: String,
    #[schemars(pattern(pattern::CLUSTER))]
    pub cluster: String,
    /// Relative share of sticky-bucketed users; 0 means reachable by group header only.
    #[serde(default)]
    #[schemars(range(max = super::MAX_WEIGHT))]
    pub weight: u32,
    /// Schema revision this target serves (`features.v1@2` or a fingerprint).
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub revision: Option<String>,
    /// The sidecar's model version behind this target (`orientation/2`), for health.
    #[serde(default)]
    pub model_version: Option<String>,
    /// Latency assumed until enough responses have been seen.
    #[serde(default)]
    pub latency_prior_ms: Option<u32>,
    /// Requests in flight (all workers) above which low-priority requests are shed.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_concurrency: Option<u32>,
}

/// Automatic degradation rules (see `health`).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DegradeConfig {
    pub enabled: bool,
    /// Consecutive slow responses that degrade a target (0 disables the rule).
    pub slow_consecutive: u32,
    #[schemars(range(min = 1))]
    pub slow_threshold_ms: u32,
    /// Error rate in percent over the window (0 disables the rule).
    #[schemars(range(min = 0.0, max = 100.0))]
    pub error_rate_pct: f64,
    #[schemars(range(min = 1))]
    pub error_window_s: u32,
    pub error_min_requests: u32,
    /// gRPC status codes (names or numbers) that count as errors.
    #[schemars(schema_with = "grpc_codes")]
    pub error_codes: Vec<serde_json::Value>,
    #[schemars(range(min = 1))]
    pub cooldown_ms: u32,
    pub max_cooldown_ms: u32,
    /// Share of a probing target's traffic sent to it, in percent.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub probe_share_pct: f64,
    /// Good probes that restore a target.
    #[schemars(range(min = 1))]
    pub probe_successes: u32,
    /// Degrade a target whose model version the sidecar reports unhealthy.
    pub follow_sidecar: bool,
}

impl Default for DegradeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            slow_consecutive: 5,
            slow_threshold_ms: 800,
            error_rate_pct: 5.0,
            error_window_s: 60,
            error_min_requests: 20,
            error_codes: ["UNKNOWN", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"]
                .iter()
                .map(|s| serde_json::Value::String((*s).into()))
                .collect(),
            cooldown_ms: 10_000,
            max_cooldown_ms: 300_000,
            probe_share_pct: 5.0,
            probe_successes: 5,
            follow_sidecar: true,
        }
    }
}

/// Latency estimation and deadline checks.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyConfig {
    /// Reroute or refuse requests whose budget the chosen target cannot meet.
    pub budget_check: bool,
    /// Percentile used as a target's latency estimate.
    #[schemars(extend("exclusiveMinimum" = 0.0, "maximum" = 100.0))]
    pub percentile: f64,
    #[schemars(range(min = 1))]
    pub window_s: u32,
    /// Responses needed before the estimate replaces the target's prior.
    pub min_samples: u32,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        Self { budget_check: true, percentile: 90.0, window_s: 10, min_samples: 5 }
    }
}

/// Request payload validation.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ValidateConfig {
    pub mode: ValidateMode,
    /// Larger request bodies are refused with RESOURCE_EXHAUSTED (never buffered).
    #[schemars(range(min = 1))]
    pub max_body_bytes: u32,
    /// `allow`, `warn` or `reject` fields the schema does not know.
    #[schemars(extend("enum" = ["allow", "warn", "reject"]))]
    pub unknown_fields: String,
    /// `warn` or `reject` a declared field arriving with another wire type (the service's
    /// runtime would keep it as an unknown field and read the declared one as unset).
    #[schemars(extend("enum" = ["warn", "reject"]))]
    pub wire_type_mismatch: String,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        Self {
            mode: ValidateMode::Off,
            max_body_bytes: 4 * 1024 * 1024,
            unknown_fields: "warn".into(),
            wire_type_mismatch: "reject".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValidateMode {
    #[default]
    Off,
    /// In the filter, with the descriptor set from the sidecar's snapshot.
    Filter,
    /// By a call to the sidecar's validator.
    Sidecar,
}

/// Fault injection for canary rehearsal: a delay, an abort, or both, for a target's or an
/// A/B group's requests (neither: every request of the route).
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend(
    "not" = {"required": ["target", "group"]},
    "anyOf" = [{"required": ["delay_ms"]}, {"required": ["abort"]}]
))]
pub struct FaultConfig {
    /// Applies to requests routed to this target…
    #[serde(default)]
    pub target: Option<String>,
    /// …or carrying this A/B group.
    #[serde(default)]
    pub group: Option<String>,
    /// Share of matching requests affected, in percent.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub percent: f64,
    #[serde(default)]
    #[schemars(range(max = 60_000))]
    pub delay_ms: Option<u32>,
    /// gRPC status (name or number) to abort with.
    #[serde(default)]
    #[schemars(schema_with = "fault_code")]
    pub abort: Option<serde_json::Value>,
}

/// A gRPC status code: a canonical name (`UNAVAILABLE`, either case) or its number.
fn grpc_code(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<String> =
        crate::grpc::Code::names().map(str::to_owned).chain(crate::grpc::Code::names().map(str::to_ascii_lowercase)).collect();
    schemars::json_schema!({
        "description": "A gRPC status code: a canonical name such as \"UNAVAILABLE\", or its number (0-16).",
        "oneOf": [{"type": "string", "enum": names}, {"type": "integer", "minimum": 0, "maximum": 16}]
    })
}

fn grpc_codes(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let code = grpc_code(generator);
    schemars::json_schema!({"type": "array", "items": code})
}

/// The status a fault answers with: any gRPC status code but OK.
fn fault_code(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let code = grpc_code(generator);
    schemars::json_schema!({
        "description": "gRPC status to answer with instead of forwarding (not OK).",
        "allOf": [code, {"not": {"enum": ["OK", "ok", 0]}}]
    })
}
