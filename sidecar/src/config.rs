//! The sidecar's configuration: one serde shape, read from TOML or YAML, overridden by
//! command-line flags, validated once before anything starts.
//!
//! Every field has a default, so an empty file (or none) is a valid configuration. Relative
//! paths in a file are resolved against that file's directory, so a config can live beside
//! the model repository it names.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration error naming the field at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn invalid(field: &str, why: impl fmt::Display) -> ConfigError {
    ConfigError(format!("invalid configuration: `{field}` {why}"))
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC listen address (features.v1, grpc.health.v1, server reflection).
    pub listen: SocketAddr,
    /// Admin HTTP listen address (`/metrics`, reload, chaos, per-version state). Loopback only.
    pub admin_listen: SocketAddr,
    /// A read-only HTTP listener that may face other pods: the snapshot filters poll
    /// (`GET /v1/snapshot`), payload validation (`POST /v1/validate`, changes nothing) and
    /// `/healthz`. For filters in client workloads (the client-side topology); everything
    /// that changes state stays on `admin_listen`. Absent: no such listener.
    pub snapshot_listen: Option<SocketAddr>,
    /// Envoy's admin address, read by the console's live view (`/console`). Loopback only;
    /// absent: the live view shows the sidecar's side alone.
    pub envoy_admin: Option<SocketAddr>,
    /// Request metadata key that pins a model version (`2`, `canary`, `orientation/2`).
    pub version_header: String,
    /// Largest accepted `image_data`, in bytes.
    pub max_image_bytes: usize,
    /// Largest accepted image side, in pixels (checked from the header, before decoding).
    pub max_image_side: u32,
    /// Largest accepted image area, in pixels (checked from the header, before decoding).
    pub max_image_pixels: u64,
    /// How long SIGTERM waits for in-flight requests before exiting anyway.
    pub drain_timeout_ms: u64,
    pub runtime: RuntimeConfig,
    pub batching: BatchingConfig,
    pub repository: RepositoryConfig,
    /// Per-model serving policy, keyed by model name (the directory in the repository).
    /// Models in the repository without an entry serve their latest version.
    pub models: BTreeMap<String, ModelPolicy>,
    /// More gRPC listeners, each answering unpinned requests with its own version: one
    /// address per routing target (Envoy cluster) from a single process.
    pub endpoints: Vec<Endpoint>,
    /// The schema registry (`[schema]`): watched descriptor directory, compatibility mode
    /// and rule category (see schema/README.md). Absent: no registry is served.
    pub schema: Option<switchyard_schema::registry::RegistryConfig>,
    /// Confluent Schema Registry's REST API over the registry (`[confluent]`). It is always
    /// on the admin port when `schema` is set; this adds a listener of its own and a token.
    pub confluent: Option<ConfluentConfig>,
    /// Request traces exported over OTLP (`[tracing]`); off unless `otlp_endpoint` is set.
    pub tracing: TracingConfig,
    /// What bounds a client that opens connections or streams and does nothing with them, and
    /// a flood on the HTTP ports (`[limits]`, see `listener`).
    pub limits: LimitsConfig,
    /// The feature cache (`[cache]`, see `cache`): off unless `enabled`.
    pub cache: CacheConfig,
}

/// The feature cache: answers for images already seen by the same model file with the same
/// settings, from memory and optionally from a Redis shared by several sidecars.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Off by default: a cached answer is only as fresh as its key (see `cache::key`).
    pub enabled: bool,
    /// Bound of the in-process tier, in bytes (feature vectors, scores and keys); `0`: no
    /// in-process tier (Redis only).
    pub max_bytes: u64,
    /// A Redis shared by several sidecars, `redis://[user:password@]host[:port][/db]`.
    /// Absent: in-process only.
    pub redis: Option<String>,
    /// The longest a request waits for Redis, in milliseconds; past it the request goes on
    /// without the cache.
    pub redis_timeout_ms: u64,
    /// How long Redis keeps an entry, in seconds.
    pub ttl_seconds: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { enabled: false, max_bytes: 256 << 20, redis: None, redis_timeout_ms: 50, ttl_seconds: 86_400 }
    }
}

impl CacheConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes > 1 << 40 {
            return Err(invalid("cache.max_bytes", format!("must be at most 1 TiB (1099511627776); got {}", self.max_bytes)));
        }
        if let Some(url) = &self.redis {
            check_redis_url(url).map_err(|why| invalid("cache.redis", format!("{why}; got {:?}", redact_url(url))))?;
        } else if self.enabled && self.max_bytes == 0 {
            return Err(invalid("cache.max_bytes", "is 0 and there is no `cache.redis`: the cache would hold nothing"));
        }
        if !(1..=10_000).contains(&self.redis_timeout_ms) {
            return Err(invalid("cache.redis_timeout_ms", format!("must be in 1..=10000; got {}", self.redis_timeout_ms)));
        }
        if !(1..=31_536_000).contains(&self.ttl_seconds) {
            return Err(invalid("cache.ttl_seconds", format!("must be in 1..=31536000 (a second to a year); got {}", self.ttl_seconds)));
        }
        Ok(())
    }
}

/// A Redis URL this build can reach: `redis://`, parsed as the client parses it (no TLS
/// client is compiled in, as for `tracing.otlp_endpoint`).
fn check_redis_url(url: &str) -> Result<(), String> {
    const SHAPE: &str = "must be a URL like `redis://127.0.0.1:6379/0`";
    match url.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase()) {
        Some(scheme) if scheme == "redis" => {}
        Some(scheme) if scheme == "rediss" => {
            return Err("must be `redis://` (this build has no TLS client: reach a TLS Redis through a local tunnel)".into())
        }
        _ => return Err(SHAPE.into()),
    }
    let parsed = redis::parse_redis_url(url).ok_or_else(|| SHAPE.to_string())?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{SHAPE} (no host)"));
    }
    // What the client itself refuses (a database that is not a number, a wildcard host, …).
    redis::Client::open(url).map(|_| ()).map_err(|e| format!("{SHAPE} ({e})"))
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match redis::parse_redis_url(url) {
        Some(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Some(_) => url.to_string(),
        // Unparsable: whatever precedes an `@` may hold credentials.
        None => match (url.split_once("://"), url.rsplit_once('@')) {
            (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
            (None, Some((_, host))) => format!("***@{host}"),
            _ => url.to_string(),
        },
    }
}

/// Connection and request limits of every listener (see `listener`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Connections served at once per listener; further ones wait in the kernel's accept
    /// backlog until one closes.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY), also
    /// one that never sends a request; in milliseconds.
    pub idle_timeout_ms: u64,
    /// A request whose body is still arriving but has received nothing for this long fails;
    /// in milliseconds.
    pub stream_idle_timeout_ms: u64,
    /// HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS); one more is refused
    /// with RST_STREAM(REFUSED_STREAM).
    pub http2_max_concurrent_streams: u32,
    /// Largest HTTP/2 request header block, in bytes (SETTINGS_MAX_HEADER_LIST_SIZE).
    pub http2_max_header_list_size: u32,
    /// Requests handled at once per HTTP listener (admin, snapshot, Confluent); one more is
    /// answered `503` at once.
    pub http_max_concurrent_requests: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            idle_timeout_ms: 60_000,
            stream_idle_timeout_ms: 30_000,
            http2_max_concurrent_streams: 200,
            http2_max_header_list_size: 16 << 10,
            http_max_concurrent_requests: 32,
        }
    }
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(invalid("limits.max_connections", format!("must be in 1..=1000000; got {}", self.max_connections)));
        }
        if !(100..=86_400_000).contains(&self.idle_timeout_ms) {
            return Err(invalid("limits.idle_timeout_ms", format!("must be in 100..=86400000 (100 ms to a day); got {}", self.idle_timeout_ms)));
        }
        if !(100..=86_400_000).contains(&self.stream_idle_timeout_ms) {
            return Err(invalid(
                "limits.stream_idle_timeout_ms",
                format!("must be in 100..=86400000 (100 ms to a day); got {}", self.stream_idle_timeout_ms),
            ));
        }
        if !(1..=100_000).contains(&self.http2_max_concurrent_streams) {
            return Err(invalid(
                "limits.http2_max_concurrent_streams",
                format!("must be in 1..=100000; got {}", self.http2_max_concurrent_streams),
            ));
        }
        if !(1024..=1 << 20).contains(&self.http2_max_header_list_size) {
            return Err(invalid(
                "limits.http2_max_header_list_size",
                format!("must be in 1024..=1048576 bytes; got {}", self.http2_max_header_list_size),
            ));
        }
        if !(1..=100_000).contains(&self.http_max_concurrent_requests) {
            return Err(invalid(
                "limits.http_max_concurrent_requests",
                format!("must be in 1..=100000; got {}", self.http_max_concurrent_requests),
            ));
        }
        Ok(())
    }
}

/// Where request traces go and how many are kept (see `telemetry`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// OTLP/gRPC endpoint of a collector, `http://host:port` (plain HTTP/2: a local agent).
    /// Absent: tracing is off and nothing is installed.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the sidecar's spans.
    pub service_name: String,
    /// Share of requests traced when the caller sent no `traceparent`; a caller's sampling
    /// decision (its `traceparent` flags) is always followed.
    pub sample_ratio: f64,
    /// How often finished spans are sent, in milliseconds (sooner when 512 are waiting).
    pub export_delay_ms: u64,
    /// Finished spans held for export; beyond it new spans are dropped (and counted in the
    /// warning logged at shutdown), never waited for.
    pub max_queued_spans: usize,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "switchyard-sidecar".into(),
            sample_ratio: 1.0,
            export_delay_ms: 5000,
            max_queued_spans: 8192,
        }
    }
}

impl TracingConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.otlp_endpoint {
            check_otlp_endpoint(endpoint).map_err(|why| invalid("tracing.otlp_endpoint", format!("{why}; got {endpoint:?}")))?;
        }
        if self.service_name.trim().is_empty() {
            return Err(invalid("tracing.service_name", "must not be empty"));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(invalid("tracing.sample_ratio", format!("must be in 0.0..=1.0; got {}", self.sample_ratio)));
        }
        if !(1..=60_000).contains(&self.export_delay_ms) {
            return Err(invalid("tracing.export_delay_ms", format!("must be in 1..=60000; got {}", self.export_delay_ms)));
        }
        if !(512..=1 << 20).contains(&self.max_queued_spans) {
            return Err(invalid("tracing.max_queued_spans", format!("must be in 512..=1048576; got {}", self.max_queued_spans)));
        }
        Ok(())
    }
}

/// An OTLP/gRPC endpoint this build can reach: `http://host:port`, nothing after it. (No TLS
/// client is compiled in; a collector agent beside the sidecar takes plain HTTP/2.)
fn check_otlp_endpoint(endpoint: &str) -> Result<(), &'static str> {
    let uri: tonic::codegen::http::Uri = endpoint.parse().map_err(|_| "must be a URL like `http://127.0.0.1:4317`")?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err("must be `http://` (this build has no TLS client: send to a collector agent beside the sidecar)"),
        _ => return Err("must be a URL like `http://127.0.0.1:4317`"),
    }
    let Some(authority) = uri.authority() else { return Err("must name a host and port, like `http://127.0.0.1:4317`") };
    if authority.host().is_empty() || authority.port_u16().is_none() {
        return Err("must name a host and port, like `http://127.0.0.1:4317`");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must have no path (OTLP/gRPC's path is fixed)");
    }
    Ok(())
}

/// Where the Confluent API listens beyond the admin port, and who may write through it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ConfluentConfig {
    /// A listener of its own (any interface); reads are open, writes need a loopback peer
    /// or the token.
    pub listen: Option<SocketAddr>,
    /// File holding a bearer token that authorises writes from other hosts.
    pub token_file: Option<PathBuf>,
}

/// A gRPC listener whose unpinned requests go to `default_version`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub listen: SocketAddr,
    /// A version header value: `orientation/canary`, `orientation-lite`, `2`, ...
    pub default_version: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 50051).into(),
            admin_listen: ([127, 0, 0, 1], 9464).into(),
            snapshot_listen: None,
            envoy_admin: None,
            version_header: "x-model-version".into(),
            max_image_bytes: 16 << 20,
            max_image_side: 16_384,
            max_image_pixels: 50_000_000,
            drain_timeout_ms: 10_000,
            runtime: RuntimeConfig::default(),
            batching: BatchingConfig::default(),
            repository: RepositoryConfig::default(),
            models: BTreeMap::new(),
            endpoints: Vec::new(),
            schema: None,
            confluent: None,
            tracing: TracingConfig::default(),
            limits: LimitsConfig::default(),
            cache: CacheConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Path of `libonnxruntime.so`; unset: `$ORT_DYLIB_PATH`, then the project venv.
    pub onnxruntime: Option<PathBuf>,
    /// Execution providers to try, in order; CPU is always the last resort.
    pub execution_providers: Vec<Provider>,
    /// Fail instead of falling back to CPU when a listed accelerator cannot start.
    pub require_provider: bool,
    /// ONNX Runtime intra-op threads per model instance; 0 lets ONNX Runtime choose.
    pub intra_op_threads: usize,
    /// Let ONNX Runtime's idle intra-op threads spin (lower latency, burns CPU that
    /// pre-processing could use on small machines).
    pub intra_op_spinning: bool,
    /// Threads decoding and pre-processing images; 0 means one per CPU.
    pub preprocess_threads: usize,
    /// Nice value (0-19) of the thread that builds and warms up a model version's sessions,
    /// so a load takes the CPU serving leaves idle (see `background`); 0 builds at the
    /// sidecar's own priority.
    pub load_nice: i32,
    /// ONNX Runtime's CPU memory arena and memory patterns. On, each session reserves the
    /// most its tensors ever took and keeps it; the pages are touched bit by bit as batch
    /// shapes vary, so the RSS creeps up for minutes after a load (13 % in 5 minutes of
    /// swaps) and a session holds ~80 MB more. Off (the default), tensors come from malloc
    /// and what a run frees goes back with jemalloc's decay, at no latency cost measured.
    pub cpu_arena: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            onnxruntime: None,
            execution_providers: vec![Provider::Cpu],
            require_provider: false,
            intra_op_threads: 0,
            intra_op_spinning: false,
            preprocess_threads: 0,
            load_nice: 19,
            cpu_arena: false,
        }
    }
}

impl RuntimeConfig {
    /// Threads pre-processing images: `preprocess_threads`, or one per CPU when it is 0.
    pub fn preprocess_thread_count(&self) -> usize {
        match self.preprocess_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

/// An ONNX Runtime execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Cpu,
    Cuda,
    Tensorrt,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::Tensorrt => "tensorrt",
        })
    }
}

/// Dynamic batching, as in Triton's `dynamic_batching`: requests wait at most
/// `max_queue_delay_us` for others to share a batch of at most `max_batch_size`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    pub max_batch_size: usize,
    /// How long the oldest queued request may wait for a batch to fill, in microseconds.
    pub max_queue_delay_us: u64,
    /// Requests admitted per model version (being pre-processed or queued); beyond it,
    /// `RESOURCE_EXHAUSTED` at once.
    pub queue_capacity: usize,
    /// Inference threads per model version, each with its own ONNX Runtime session.
    pub instances: usize,
    /// Priority levels inside each version's queue (`[batching.priority]`).
    pub priority: PriorityConfig,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self { max_batch_size: 8, max_queue_delay_us: 500, queue_capacity: 64, instances: 1, priority: PriorityConfig::default() }
    }
}

impl BatchingConfig {
    /// Requests admitted per version at each priority level, highest first.
    pub fn level_capacities(&self) -> Vec<usize> {
        match self.priority.queue_capacity.as_slice() {
            [] => vec![self.queue_capacity; self.priority.levels],
            each => each.to_vec(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1024).contains(&self.max_batch_size) {
            return Err(invalid("batching.max_batch_size", format!("must be in 1..=1024; got {}", self.max_batch_size)));
        }
        if self.queue_capacity == 0 {
            return Err(invalid("batching.queue_capacity", "must be at least 1"));
        }
        if !(1..=64).contains(&self.instances) {
            return Err(invalid("batching.instances", format!("must be in 1..=64; got {}", self.instances)));
        }
        if self.max_queue_delay_us > 10_000_000 {
            return Err(invalid("batching.max_queue_delay_us", format!("must be at most 10 s; got {}", self.max_queue_delay_us)));
        }
        self.priority.validate()
    }
}

/// Priority levels, as Triton's dynamic batcher has them (`priority_levels`): each level of a
/// version has its own admission capacity, and every batch is filled from the highest level
/// that has work, topped up from the levels below. Level 1 is the highest.
///
/// A request's level comes from one metadata key, read the way the Envoy filter reads it
/// (its `priority.header` and `priority.low`, same defaults), so one header means the same to
/// both: a value in `low` is the lowest level, a number names a level, anything else (or no
/// header) is the RPC's default level.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PriorityConfig {
    /// Request metadata key carrying the priority (on `ExtractBatch`, the call's initial
    /// metadata).
    pub header: String,
    /// Header values (case-insensitive) meaning the lowest level.
    pub low: Vec<String>,
    /// How many levels; 1 is a single queue for every request.
    pub levels: usize,
    /// The level of an `ExtractRealtime` call without the header or with a value that names
    /// no level.
    pub default_level: usize,
    /// The level of an `ExtractBatch` call without the header or with a value that names no
    /// level. Unset: the lowest (bulk work is offline work).
    pub batch_level: Option<usize>,
    /// Requests admitted per version at each level, highest first. Empty: `queue_capacity`
    /// at every level.
    pub queue_capacity: Vec<usize>,
    /// Let a batch started at one level fill its free places from the levels below (as
    /// Triton does). Bigger batches for bulk work, but on a CPU a batch's inference takes
    /// about as much longer as it is bigger, and the higher-level jobs in it wait for that.
    pub top_up: bool,
    /// Nice value (1-19) at which the levels below the highest run, on threads of their own: a
    /// bulk inference instance per version (its own session; its thread and ONNX Runtime's
    /// run at this nice value) serves them, the other instances serve the highest level only,
    /// and their images are pre-processed on `runtime.preprocess_threads` threads at this nice
    /// value. The CPU then goes to the highest level whenever it has work. 0: off (every level
    /// shares the instances and the pre-processing pool).
    pub bulk_nice: i32,
}

impl Default for PriorityConfig {
    fn default() -> Self {
        Self {
            header: "x-priority".into(),
            low: vec!["low".into()],
            levels: 2,
            default_level: 1,
            batch_level: None,
            queue_capacity: Vec::new(),
            top_up: false,
            bulk_nice: 0,
        }
    }
}

impl PriorityConfig {
    /// The nice value of the levels below the highest when they run apart (`bulk_nice`, with
    /// more than one level).
    pub fn bulk(&self) -> Option<i32> {
        (self.bulk_nice > 0 && self.levels > 1).then_some(self.bulk_nice)
    }

    /// The level of an `ExtractBatch` call that names none.
    pub fn batch_level(&self) -> usize {
        self.batch_level.unwrap_or(self.levels)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_metadata_key("batching.priority.header", &self.header)?;
        if let Some(value) = self.low.iter().find(|v| v.trim().is_empty()) {
            return Err(invalid("batching.priority.low", format!("must not hold an empty value; got {value:?}")));
        }
        if !(1..=16).contains(&self.levels) {
            return Err(invalid("batching.priority.levels", format!("must be in 1..=16; got {}", self.levels)));
        }
        let level = |field: &str, n: usize| {
            if (1..=self.levels).contains(&n) {
                Ok(())
            } else {
                Err(invalid(field, format!("must be a level in 1..={} (`batching.priority.levels`); got {n}", self.levels)))
            }
        };
        if !(0..=19).contains(&self.bulk_nice) {
            return Err(invalid("batching.priority.bulk_nice", format!("must be in 0..=19 (0 is off); got {}", self.bulk_nice)));
        }
        level("batching.priority.default_level", self.default_level)?;
        level("batching.priority.batch_level", self.batch_level())?;
        if !self.queue_capacity.is_empty() && self.queue_capacity.len() != self.levels {
            return Err(invalid(
                "batching.priority.queue_capacity",
                format!("must have one entry per level ({}), highest first; got {:?}", self.levels, self.queue_capacity),
            ));
        }
        if let Some(i) = self.queue_capacity.iter().position(|&c| c == 0) {
            return Err(invalid(&format!("batching.priority.queue_capacity[{i}]"), "must be at least 1"));
        }
        Ok(())
    }
}

/// A gRPC metadata key the sidecar reads: lower-case ASCII, not binary (`-bin`).
fn check_metadata_key(field: &str, key: &str) -> Result<(), ConfigError> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)) || key.ends_with("-bin") {
        return Err(invalid(field, format!("must be a lower-case ASCII metadata key (not `-bin`); got {key:?}")));
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepositoryConfig {
    /// The model repository: `<path>/<model>/<version>/model.onnx`.
    pub path: PathBuf,
    /// Reload when files under `path` change.
    pub watch: bool,
    /// Quiet time after the last file event before reloading, in milliseconds.
    pub watch_debounce_ms: u64,
    /// The model that answers requests whose version header names no model.
    /// Unset: the only model, or the first in name order.
    pub default_model: Option<String>,
    /// Refuse to start when no model version loads. `false` lets the sidecar start with
    /// none: a schema registry for filters in other pods (the client-side topology), or a
    /// host whose models arrive later (the watcher loads them).
    pub required: bool,
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("var/models"),
            watch: true,
            watch_debounce_ms: 300,
            default_model: None,
            required: true,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelPolicy {
    /// Which versions on disk to serve.
    pub versions: VersionPolicy,
    /// Names for versions (`stable = 1`), usable in the version header and as health
    /// service names (`orientation/stable`).
    pub labels: BTreeMap<String, u64>,
    /// The version (number or label) answering unpinned requests; unset: the highest served.
    pub default_version: Option<String>,
}

/// Triton's version policy. Written as a table with one key, the same in TOML and YAML:
/// `{ latest = 2 }`, `{ specific = [1, 2] }` or `{ all = true }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "PolicyFields", into = "PolicyFields")]
pub enum VersionPolicy {
    /// The N highest version numbers on disk.
    Latest(usize),
    /// Exactly these versions.
    Specific(Vec<u64>),
    /// Every version on disk.
    All,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PolicyFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    latest: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    specific: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    all: Option<bool>,
}

impl TryFrom<PolicyFields> for VersionPolicy {
    type Error = String;
    fn try_from(f: PolicyFields) -> Result<Self, String> {
        match (f.latest, f.specific, f.all) {
            (Some(n), None, None) => Ok(VersionPolicy::Latest(n)),
            (None, Some(list), None) => Ok(VersionPolicy::Specific(list)),
            (None, None, Some(true)) => Ok(VersionPolicy::All),
            _ => Err("set exactly one of `latest = N`, `specific = [..]` or `all = true`".into()),
        }
    }
}

impl From<VersionPolicy> for PolicyFields {
    fn from(p: VersionPolicy) -> Self {
        match p {
            VersionPolicy::Latest(n) => PolicyFields { latest: Some(n), ..Default::default() },
            VersionPolicy::Specific(list) => PolicyFields { specific: Some(list), ..Default::default() },
            VersionPolicy::All => PolicyFields { all: Some(true), ..Default::default() },
        }
    }
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions to serve out of those on disk.
    pub fn select(&self, on_disk: &[u64]) -> Vec<u64> {
        let mut all = on_disk.to_vec();
        all.sort_unstable();
        match self {
            VersionPolicy::All => all,
            VersionPolicy::Latest(n) => all.split_off(all.len().saturating_sub(*n)),
            VersionPolicy::Specific(list) => all.into_iter().filter(|v| list.contains(v)).collect(),
        }
    }
}

impl Config {
    /// The image limits every image is checked against (`max_image_*`).
    pub(crate) fn image_limits(&self) -> crate::preprocess::Limits {
        crate::preprocess::Limits { max_bytes: self.max_image_bytes, max_side: self.max_image_side, max_pixels: self.max_image_pixels }
    }

    /// Reads a TOML (`.toml`) or YAML (`.yaml`, `.yml`) file; relative paths in it are made
    /// relative to the file's directory.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let mut config: Config = match ext {
            "toml" => Self::from_toml_str(&text),
            "yaml" | "yml" => Self::from_yaml_str(&text),
            _ => {
                return Err(ConfigError(format!(
                    "config file {} must end in .toml, .yaml or .yml",
                    path.display()
                )))
            }
        }
        .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.repository.path = base.join(&config.repository.path);
        if let Some(ort) = &config.runtime.onnxruntime {
            config.runtime.onnxruntime = Some(base.join(ort));
        }
        if let Some(schema) = &mut config.schema {
            schema.dir = schema.dir.as_ref().map(|d| base.join(d));
            schema.state_dir = schema.state_dir.as_ref().map(|d| base.join(d));
        }
        if let Some(confluent) = &mut config.confluent {
            confluent.token_file = confluent.token_file.as_ref().map(|f| base.join(f));
        }
        Ok(config)
    }

    /// Parses TOML text; paths stay as written (see [`Config::from_file`]). Not validated.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    /// Parses YAML text; paths stay as written (see [`Config::from_file`]). Not validated.
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        serde_yaml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    /// Checks every cross-field rule; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.admin_listen.ip().is_loopback() {
            return Err(invalid(
                "admin_listen",
                format!("must be a loopback address (it can inject faults); got {}", self.admin_listen),
            ));
        }
        if let Some(envoy) = self.envoy_admin.filter(|a| !a.ip().is_loopback()) {
            return Err(invalid("envoy_admin", format!("must be a loopback address (Envoy's admin can change it); got {envoy}")));
        }
        check_metadata_key("version_header", &self.version_header)?;
        if self.max_image_bytes == 0 || self.max_image_bytes > 1 << 30 {
            return Err(invalid("max_image_bytes", format!("must be in 1..=1 GiB; got {}", self.max_image_bytes)));
        }
        if self.max_image_side == 0 {
            return Err(invalid("max_image_side", "must be at least 1"));
        }
        if self.max_image_pixels == 0 {
            return Err(invalid("max_image_pixels", "must be at least 1"));
        }
        self.batching.validate()?;
        if self.batching.priority.header == self.version_header {
            return Err(invalid("batching.priority.header", format!("is `version_header` already ({:?})", self.version_header)));
        }
        if self.runtime.intra_op_threads > 256 {
            return Err(invalid("runtime.intra_op_threads", format!("must be at most 256; got {}", self.runtime.intra_op_threads)));
        }
        if !(0..=19).contains(&self.runtime.load_nice) {
            return Err(invalid("runtime.load_nice", format!("must be in 0..=19; got {}", self.runtime.load_nice)));
        }
        if self.runtime.execution_providers.is_empty() {
            return Err(invalid("runtime.execution_providers", "must list at least one provider (e.g. [\"cpu\"])"));
        }
        if self.repository.path.as_os_str().is_empty() {
            return Err(invalid("repository.path", "must not be empty"));
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if endpoint.default_version.trim().is_empty() {
                return Err(invalid(&format!("endpoints[{i}].default_version"), "must name a version"));
            }
            if endpoint.listen.port() != 0 && (endpoint.listen == self.listen || endpoint.listen == self.admin_listen) {
                return Err(invalid(&format!("endpoints[{i}].listen"), format!("{} is already `listen` or `admin_listen`", endpoint.listen)));
            }
        }
        let in_use = |l: &SocketAddr| l.port() != 0 && (*l == self.listen || *l == self.admin_listen || self.endpoints.iter().any(|e| e.listen == *l));
        if let Some(listen) = self.snapshot_listen.filter(in_use) {
            return Err(invalid("snapshot_listen", format!("{listen} is already used by another listener")));
        }
        if let Some(confluent) = &self.confluent {
            if self.schema.is_none() {
                return Err(invalid("confluent", "needs the schema registry (`[schema]`) to serve"));
            }
            if let Some(listen) = confluent.listen.filter(|l| in_use(l) || (l.port() != 0 && self.snapshot_listen == Some(*l))) {
                return Err(invalid("confluent.listen", format!("{listen} is already used by another listener")));
            }
        }
        self.tracing.validate()?;
        self.limits.validate()?;
        self.cache.validate()?;
        for (name, policy) in &self.models {
            let field = |f: &str| format!("models.{name}.{f}");
            match &policy.versions {
                VersionPolicy::Latest(0) => return Err(invalid(&field("versions.latest"), "must be at least 1")),
                VersionPolicy::Specific(list) if list.is_empty() => {
                    return Err(invalid(&field("versions.specific"), "must list at least one version"))
                }
                _ => {}
            }
            for (label, version) in &policy.labels {
                if label.is_empty() || label.contains('/') || label.parse::<u64>().is_ok() {
                    return Err(invalid(&field("labels"), format!("label {label:?} must be non-empty, without `/`, and not a number")));
                }
                if let VersionPolicy::Specific(list) = &policy.versions {
                    if !list.contains(version) {
                        return Err(invalid(
                            &field(&format!("labels.{label}")),
                            format!("names version {version}, which `versions.specific` {list:?} does not serve"),
                        ));
                    }
                }
            }
            if let Some(default) = &policy.default_version {
                if default.parse::<u64>().is_err() && !policy.labels.contains_key(default) {
                    return Err(invalid(
                        &field("default_version"),
                        format!("{default:?} is neither a version number nor one of the labels {:?}", policy.labels.keys().collect::<Vec<_>>()),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_is_named() {
        let err = toml::from_str::<Config>("[batching]\nmax_batch = 4\n").unwrap_err().to_string();
        assert!(err.contains("max_batch"), "{err}");
    }

    #[test]
    fn policy_forms_parse() {
        let c: Config = toml::from_str(
            "[models.a]\nversions = { latest = 2 }\n[models.b]\nversions = { specific = [1, 3] }\nlabels = { stable = 1 }\n[models.c]\nversions = { all = true }\n",
        )
        .unwrap();
        assert_eq!(c.models["a"].versions, VersionPolicy::Latest(2));
        assert_eq!(c.models["b"].versions.select(&[1, 2, 3]), vec![1, 3]);
        assert_eq!(c.models["a"].versions.select(&[5, 1, 3]), vec![3, 5]);
        assert_eq!(c.models["c"].versions.select(&[2, 1]), vec![1, 2]);
        c.validate().unwrap();
    }

    #[test]
    fn yaml_parses() {
        let c: Config = serde_yaml::from_str("batching:\n  max_batch_size: 4\nmodels:\n  a:\n    versions: {latest: 1}\n").unwrap();
        assert_eq!(c.batching.max_batch_size, 4);
        assert_eq!(c.models["a"].versions, VersionPolicy::Latest(1));
        let err = toml::from_str::<Config>("[models.a]\nversions = { latest = 1, all = true }\n").unwrap_err().to_string();
        assert!(err.contains("exactly one"), "{err}");
    }

    #[test]
    fn the_snapshot_listener_may_face_other_pods_but_not_share_a_port() {
        let c = Config { snapshot_listen: Some("0.0.0.0:9465".parse().unwrap()), ..Config::default() };
        c.validate().unwrap();
        let c = Config { snapshot_listen: Some(Config::default().listen), ..Config::default() };
        assert!(c.validate().unwrap_err().to_string().contains("snapshot_listen"));
    }

    #[test]
    fn tracing_is_off_unless_an_endpoint_is_set() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c.tracing, TracingConfig::default());
        assert_eq!(c.tracing.otlp_endpoint, None);
        let c: Config = toml::from_str("[tracing]\notlp_endpoint = \"http://127.0.0.1:4317\"\nsample_ratio = 0.25\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.tracing.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(c.tracing.service_name, "switchyard-sidecar");
        assert_eq!(c.tracing.sample_ratio, 0.25);
        let c: Config = toml::from_str("[tracing]\notlp_endpoint = \"http://collector.observability:4317/\"\n").unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn a_bad_tracing_value_names_the_field_and_the_fix() {
        let check = |toml: &str| toml::from_str::<Config>(toml).unwrap().validate().unwrap_err().to_string();
        for endpoint in ["127.0.0.1:4317", "localhost", "grpc://127.0.0.1:4317", "http://127.0.0.1"] {
            let err = check(&format!("[tracing]\notlp_endpoint = {endpoint:?}\n"));
            assert!(err.contains("`tracing.otlp_endpoint`") && err.contains("http://127.0.0.1:4317") && err.contains(endpoint), "{err}");
        }
        let err = check("[tracing]\notlp_endpoint = \"https://collector:4317\"\n");
        assert!(err.contains("no TLS client"), "{err}");
        let err = check("[tracing]\notlp_endpoint = \"http://collector:4318/v1/traces\"\n");
        assert!(err.contains("no path"), "{err}");
        let err = check("[tracing]\nsample_ratio = 1.5\n");
        assert!(err.contains("`tracing.sample_ratio` must be in 0.0..=1.0; got 1.5"), "{err}");
        let err = check("[tracing]\nservice_name = \" \"\n");
        assert!(err.contains("`tracing.service_name`"), "{err}");
        let err = check("[tracing]\nexport_delay_ms = 0\n");
        assert!(err.contains("`tracing.export_delay_ms`"), "{err}");
        let err = toml::from_str::<Config>("[tracing]\nendpoint = \"http://a:1\"\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `endpoint`"), "{err}");
    }

    #[test]
    fn limits_have_defaults_and_bounds() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        let c: Config = toml::from_str("[limits]\nmax_connections = 8\nidle_timeout_ms = 1000\nhttp2_max_concurrent_streams = 4\n").unwrap();
        c.validate().unwrap();
        assert_eq!((c.limits.max_connections, c.limits.idle_timeout_ms, c.limits.http2_max_concurrent_streams), (8, 1000, 4));
        assert_eq!(c.limits.http_max_concurrent_requests, 32);
        let check = |toml: &str| toml::from_str::<Config>(toml).unwrap().validate().unwrap_err().to_string();
        assert!(check("[limits]\nmax_connections = 0\n").contains("`limits.max_connections` must be in 1..=1000000; got 0"));
        assert!(check("[limits]\nidle_timeout_ms = 5\n").contains("`limits.idle_timeout_ms`"));
        assert!(check("[limits]\nstream_idle_timeout_ms = 0\n").contains("`limits.stream_idle_timeout_ms`"));
        assert!(check("[limits]\nhttp2_max_concurrent_streams = 0\n").contains("`limits.http2_max_concurrent_streams`"));
        assert!(check("[limits]\nhttp2_max_header_list_size = 10\n").contains("`limits.http2_max_header_list_size`"));
        assert!(check("[limits]\nhttp_max_concurrent_requests = 0\n").contains("`limits.http_max_concurrent_requests`"));
        let err = toml::from_str::<Config>("[limits]\nmax_streams = 1\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `max_streams`"), "{err}");
    }

    #[test]
    fn priority_levels_default_to_the_filters_header_and_two_levels() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c.batching.priority, PriorityConfig::default());
        assert_eq!((c.batching.priority.header.as_str(), c.batching.priority.low.as_slice()), ("x-priority", &["low".to_string()][..]));
        assert_eq!(c.batching.level_capacities(), [64, 64]);
        assert_eq!(c.batching.priority.batch_level(), 2);
        let c: Config = toml::from_str("[batching]\nqueue_capacity = 8\n[batching.priority]\nlevels = 3\nqueue_capacity = [4, 16, 256]\nbatch_level = 2\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.batching.level_capacities(), [4, 16, 256]);
        assert_eq!(c.batching.priority.batch_level(), 2);
        let c: Config = toml::from_str("[batching]\nqueue_capacity = 8\n[batching.priority]\nlevels = 1\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.batching.level_capacities(), [8]);
        assert_eq!(c.batching.priority.batch_level(), 1);
    }

    #[test]
    fn a_bad_priority_value_names_the_field() {
        let check = |toml: &str| toml::from_str::<Config>(toml).unwrap().validate().unwrap_err().to_string();
        assert!(check("[batching.priority]\nlevels = 0\n").contains("`batching.priority.levels` must be in 1..=16; got 0"));
        let err = check("[batching.priority]\ndefault_level = 3\n");
        assert!(err.contains("`batching.priority.default_level` must be a level in 1..=2"), "{err}");
        let err = check("[batching.priority]\nlevels = 1\nbatch_level = 2\n");
        assert!(err.contains("`batching.priority.batch_level` must be a level in 1..=1"), "{err}");
        let err = check("[batching.priority]\nqueue_capacity = [64]\n");
        assert!(err.contains("`batching.priority.queue_capacity` must have one entry per level (2)"), "{err}");
        assert!(check("[batching.priority]\nqueue_capacity = [64, 0]\n").contains("`batching.priority.queue_capacity[1]` must be at least 1"));
        assert!(check("[batching.priority]\nheader = \"X-Priority\"\n").contains("`batching.priority.header`"));
        assert!(check("[batching.priority]\nheader = \"x-model-version\"\n").contains("`batching.priority.header` is `version_header`"));
        assert!(check("[batching.priority]\nlow = [\"\"]\n").contains("`batching.priority.low`"));
        let err = toml::from_str::<Config>("[batching.priority]\nlevel = 2\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `level`"), "{err}");
    }

    #[test]
    fn the_cache_is_off_by_default_and_checked_when_set() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c.cache, CacheConfig::default());
        assert!(!c.cache.enabled);
        let c: Config = toml::from_str("[cache]\nenabled = true\nmax_bytes = 1048576\nredis = \"redis://:pw@127.0.0.1:6380/2\"\nredis_timeout_ms = 20\nttl_seconds = 60\n").unwrap();
        c.validate().unwrap();
        assert_eq!((c.cache.max_bytes, c.cache.redis_timeout_ms, c.cache.ttl_seconds), (1 << 20, 20, 60));
        let check = |toml: &str| toml::from_str::<Config>(toml).unwrap().validate().unwrap_err().to_string();
        for url in ["127.0.0.1:6379", "http://127.0.0.1:6379", "redis://", "redis://127.0.0.1:6379/db", "redis://127.0.0.1:notaport", "unix:///tmp/redis.sock"] {
            let err = check(&format!("[cache]\nredis = {url:?}\n"));
            assert!(err.starts_with("invalid configuration: `cache.redis`") && err.contains("redis://127.0.0.1:6379/0"), "{url}: {err}");
        }
        let err = check("[cache]\nredis = \"rediss://cache.internal:6380\"\n");
        assert!(err.contains("`cache.redis`") && err.contains("no TLS client"), "{err}");
        // A password is never echoed back.
        let err = check("[cache]\nredis = \"redis://:s3cret@127.0.0.1:6379/x\"\n");
        assert!(err.contains("`cache.redis`") && !err.contains("s3cret") && err.contains("***"), "{err}");
        assert!(check("[cache]\nmax_bytes = 1099511627777\n").contains("`cache.max_bytes` must be at most 1 TiB"));
        assert!(check("[cache]\nenabled = true\nmax_bytes = 0\n").contains("`cache.max_bytes` is 0 and there is no `cache.redis`"));
        toml::from_str::<Config>("[cache]\nenabled = true\nmax_bytes = 0\nredis = \"redis://127.0.0.1\"\n").unwrap().validate().unwrap();
        assert!(check("[cache]\nredis_timeout_ms = 0\n").contains("`cache.redis_timeout_ms` must be in 1..=10000; got 0"));
        assert!(check("[cache]\nttl_seconds = 0\n").contains("`cache.ttl_seconds`"));
        let err = toml::from_str::<Config>("[cache]\nredis_url = \"redis://a\"\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `redis_url`"), "{err}");
    }

    #[test]
    fn redis_urls_lose_their_password_in_messages() {
        assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(redact_url("redis://user:pw@h:1/0"), "redis://user:***@h:1/0");
        assert_eq!(redact_url("redis://user:pw@h:notaport"), "redis://***@h:notaport");
        assert_eq!(redact_url("nonsense"), "nonsense");
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = Config::default();
        c.batching.max_batch_size = 0;
        assert!(c.validate().unwrap_err().to_string().contains("batching.max_batch_size"));
        let c = Config { admin_listen: "0.0.0.0:9464".parse().unwrap(), ..Config::default() };
        assert!(c.validate().unwrap_err().to_string().contains("admin_listen"));
        let c: Config = toml::from_str("[models.m]\nversions = { specific = [1] }\nlabels = { canary = 2 }\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("models.m.labels.canary"));
    }
}
