//! The command line. Every `serve` flag overrides the config file field of the same name;
//! the merged configuration is validated once, before anything starts.

use crate::config::{Config, ConfigError, Provider};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard-sidecar",
    version,
    about = "Switchyard's sidecar: serves ONNX models over features.v1 gRPC with dynamic batching, side-by-side versions and hot reload",
    long_about = None,
)]
pub struct Cli {
    /// Log line format on stderr. The level comes from RUST_LOG (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SWITCHYARD_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the model repository over gRPC (features.v1, grpc.health.v1, reflection) with a
    /// loopback admin HTTP port (/metrics, /v1/models, /v1/reload, /v1/chaos).
    Serve(Box<ServeArgs>),
    /// Schema tools with buf's shape: `schema breaking <new> --against <old>` (exit 100 on
    /// breaking changes), `schema validate`, `schema ls`.
    Schema(switchyard_schema::cli::SchemaArgs),
    /// Bulk extraction into Parquet: reads images from directories, globs or list files,
    /// sends them through ExtractBatch at low priority and writes one row per image
    /// (failures included) under `<output>/model_version=…/`. Rerun to resume.
    Extract(Box<ExtractArgs>),
}

/// Flags of `serve`. Each one overrides the config file; see sidecar/README.md for every field.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Config file (.toml, .yaml or .yml). Relative paths in it are relative to its directory.
    #[arg(short, long, env = "SWITCHYARD_SIDECAR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Check the configuration (with these flags applied) and exit: `ok` or what is wrong,
    /// naming the field. Nothing is loaded or bound.
    #[arg(long)]
    pub check: bool,
    /// gRPC listen address [config: listen; default 127.0.0.1:50051].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin HTTP listen address, loopback only [config: admin_listen; default 127.0.0.1:9464].
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Read-only listener that may face other pods: the snapshot, validation and /healthz
    /// [config: snapshot_listen].
    #[arg(long)]
    pub snapshot_listen: Option<SocketAddr>,
    /// Listener of its own for the Confluent Schema Registry API (it is on the admin port
    /// anyway) [config: confluent.listen].
    #[arg(long)]
    pub confluent_listen: Option<SocketAddr>,
    /// Envoy's admin address, loopback only, for the console's live view [config: envoy_admin].
    #[arg(long)]
    pub envoy_admin: Option<SocketAddr>,
    /// Model repository directory [config: repository.path; default var/models].
    #[arg(long)]
    pub model_repository: Option<PathBuf>,
    /// Model answering requests that name no model [config: repository.default_model].
    #[arg(long)]
    pub default_model: Option<String>,
    /// Version answering unpinned requests, as `<model>/<version or label>` (sets
    /// repository.default_model and models.<model>.default_version), e.g. `orientation/canary`
    /// to run a sidecar process per target.
    #[arg(long)]
    pub default_version: Option<String>,
    /// Extra gRPC listener answering unpinned requests with one version, as
    /// `<version>=<address>` (repeatable; replaces the config's `endpoints`), e.g.
    /// `--endpoint orientation/canary=127.0.0.1:50052`.
    #[arg(long = "endpoint", value_parser = parse_endpoint)]
    pub endpoints: Vec<crate::config::Endpoint>,
    /// Do not watch the repository for changes (reload with SIGHUP or POST /v1/reload)
    /// [config: repository.watch = false].
    #[arg(long)]
    pub no_watch: bool,
    /// Path of libonnxruntime.so [config: runtime.onnxruntime; default $ORT_DYLIB_PATH, then
    /// the project's .venv].
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
    /// Execution providers to try in order, comma-separated; CPU is the last resort
    /// [config: runtime.execution_providers; default cpu].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub execution_providers: Option<Vec<Provider>>,
    /// Fail instead of falling back to CPU when a listed accelerator cannot start
    /// [config: runtime.require_provider].
    #[arg(long)]
    pub require_provider: bool,
    /// ONNX Runtime intra-op threads per model instance, 0 = ONNX Runtime's choice
    /// [config: runtime.intra_op_threads; default 0].
    #[arg(long)]
    pub intra_op_threads: Option<usize>,
    /// Threads decoding and pre-processing images, 0 = one per CPU
    /// [config: runtime.preprocess_threads; default 0].
    #[arg(long)]
    pub preprocess_threads: Option<usize>,
    /// Largest inference batch [config: batching.max_batch_size; default 8].
    #[arg(long)]
    pub max_batch_size: Option<usize>,
    /// Longest wait of the oldest queued request for a batch to fill, in µs
    /// [config: batching.max_queue_delay_us; default 500].
    #[arg(long)]
    pub max_queue_delay_us: Option<u64>,
    /// Requests admitted per version before RESOURCE_EXHAUSTED
    /// [config: batching.queue_capacity; default 64].
    #[arg(long)]
    pub queue_capacity: Option<usize>,
    /// Inference threads (sessions) per model version [config: batching.instances; default 1].
    #[arg(long)]
    pub instances: Option<usize>,
    /// Priority levels in each version's queue, 1 = a single queue for every request
    /// [config: batching.priority.levels; default 2].
    #[arg(long)]
    pub priority_levels: Option<usize>,
    /// Metadata key pinning a model version [config: version_header; default x-model-version].
    #[arg(long)]
    pub version_header: Option<String>,
    /// Largest accepted image, in bytes [config: max_image_bytes; default 16 MiB].
    #[arg(long)]
    pub max_image_bytes: Option<usize>,
    /// How long SIGTERM waits for in-flight requests, in ms [config: drain_timeout_ms; default 10000].
    #[arg(long)]
    pub drain_timeout_ms: Option<u64>,
    /// Export request traces to this OTLP/gRPC collector, `http://host:port`
    /// [config: tracing.otlp_endpoint; default none: tracing off].
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// Turn the feature cache on [config: cache.enabled; default off].
    #[arg(long)]
    pub cache: bool,
    /// Share the feature cache through this Redis, `redis://host:port/db`; turns the cache on
    /// [config: cache.redis; default none: in-process only].
    #[arg(long)]
    pub cache_redis: Option<String>,
}

impl ServeArgs {
    /// The config file (or defaults) with these flags applied, validated.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! set {
            ($flag:ident => $($field:ident).+) => {
                if let Some(v) = &self.$flag {
                    c.$($field).+ = v.clone();
                }
            };
        }
        set!(listen => listen);
        set!(admin_listen => admin_listen);
        if let Some(a) = self.envoy_admin {
            c.envoy_admin = Some(a);
        }
        if let Some(a) = self.snapshot_listen {
            c.snapshot_listen = Some(a);
        }
        if let Some(a) = self.confluent_listen {
            c.confluent.get_or_insert_with(Default::default).listen = Some(a);
        }
        set!(model_repository => repository.path);
        set!(version_header => version_header);
        set!(max_image_bytes => max_image_bytes);
        set!(drain_timeout_ms => drain_timeout_ms);
        set!(execution_providers => runtime.execution_providers);
        set!(intra_op_threads => runtime.intra_op_threads);
        set!(preprocess_threads => runtime.preprocess_threads);
        set!(max_batch_size => batching.max_batch_size);
        set!(max_queue_delay_us => batching.max_queue_delay_us);
        set!(queue_capacity => batching.queue_capacity);
        set!(instances => batching.instances);
        set!(priority_levels => batching.priority.levels);
        if let Some(m) = &self.default_model {
            c.repository.default_model = Some(m.clone());
        }
        if let Some(pin) = &self.default_version {
            let Some((model, version)) = pin.split_once('/').filter(|(m, v)| !m.is_empty() && !v.is_empty()) else {
                return Err(ConfigError(format!("`--default-version` must be `<model>/<version or label>`; got {pin:?}")));
            };
            c.repository.default_model = Some(model.to_string());
            c.models.entry(model.to_string()).or_default().default_version = Some(version.to_string());
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            c.tracing.otlp_endpoint = Some(endpoint.clone());
        }
        if let Some(p) = &self.onnxruntime {
            c.runtime.onnxruntime = Some(p.clone());
        }
        if !self.endpoints.is_empty() {
            c.endpoints = self.endpoints.clone();
        }
        if self.no_watch {
            c.repository.watch = false;
        }
        if self.require_provider {
            c.runtime.require_provider = true;
        }
        if let Some(url) = &self.cache_redis {
            c.cache.redis = Some(url.clone());
            c.cache.enabled = true;
        }
        if self.cache {
            c.cache.enabled = true;
        }
        c.validate()?;
        Ok(c)
    }
}

/// Flags of `extract`; see sidecar/README.md (Bulk extraction).
#[derive(Args, Debug)]
pub struct ExtractArgs {
    /// Directory of images, walked recursively; hidden files skipped (repeatable).
    #[arg(long = "dir", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Glob pattern of images, e.g. 'photos/**/*.jpg' (repeatable; quote it from the shell).
    #[arg(long = "glob", value_name = "PATTERN")]
    pub globs: Vec<String>,
    /// File listing image paths, one a line, relative to the file's directory; `#` starts a
    /// comment line (repeatable).
    #[arg(long = "list", value_name = "FILE")]
    pub lists: Vec<PathBuf>,
    /// Output directory: `model_version=<version>/part-*.parquet` in it. A rerun into it
    /// skips the images it already holds.
    #[arg(short, long)]
    pub output: PathBuf,
    /// The model server: a sidecar's gRPC listener or Envoy's.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// Pin a model version (`2`, `canary`, `orientation/2`, …), sent as `--version-header`.
    #[arg(long)]
    pub model_version: Option<String>,
    /// Metadata key pinning the version.
    #[arg(long, default_value = "x-model-version")]
    pub version_header: String,
    /// `x-priority` sent on every call; an empty value sends none.
    #[arg(long, default_value = "low")]
    pub priority: String,
    /// More metadata on every call, `key=value` (repeatable), e.g. `x-ab-group=canary`.
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Images per ExtractBatch call.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// ExtractBatch calls in flight.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Rows per output file before the next one starts.
    #[arg(long, default_value_t = 100_000)]
    pub max_rows_per_file: u64,
    /// Size of an output file, in MiB, before the next one starts.
    #[arg(long, default_value_t = 256)]
    pub max_mib_per_file: u64,
    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

impl ExtractArgs {
    /// The metadata every call carries.
    pub fn metadata(&self) -> Vec<(String, String)> {
        let mut metadata = self.headers.clone();
        if !self.priority.is_empty() {
            metadata.push(("x-priority".into(), self.priority.clone()));
        }
        if let Some(version) = &self.model_version {
            metadata.push((self.version_header.clone(), version.clone()));
        }
        metadata
    }
}

fn parse_header(value: &str) -> Result<(String, String), String> {
    let (key, value) = value.split_once('=').ok_or("expected `key=value`")?;
    Ok((key.trim().to_ascii_lowercase(), value.to_string()))
}

fn parse_endpoint(value: &str) -> Result<crate::config::Endpoint, String> {
    let (version, listen) = value.rsplit_once('=').ok_or("expected `<version>=<address>`")?;
    let listen = listen.parse().map_err(|e| format!("{listen:?} is not an address: {e}"))?;
    Ok(crate::config::Endpoint { listen, default_version: version.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1\"\n[batching]\nmax_batch_size = 4\n[repository]\npath = \"models\"\n[models.m]\nlabels = { canary = 2 }\n").unwrap();
        let cli = Cli::parse_from([
            "x",
            "serve",
            "-c",
            file.to_str().unwrap(),
            "--max-batch-size",
            "16",
            "--execution-providers",
            "cuda,cpu",
            "--default-version",
            "m/canary",
            "--priority-levels",
            "1",
        ]);
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        let c = args.config().unwrap();
        assert_eq!(c.batching.max_batch_size, 16);
        assert_eq!(c.listen.port(), 1);
        assert_eq!(c.repository.path, dir.path().join("models"));
        assert_eq!(c.runtime.execution_providers, vec![Provider::Cuda, Provider::Cpu]);
        assert_eq!(c.repository.default_model.as_deref(), Some("m"));
        assert_eq!(c.models["m"].default_version.as_deref(), Some("canary"));
        assert_eq!(c.batching.priority.levels, 1);
    }

    #[test]
    fn cache_flags_turn_the_cache_on() {
        let config = |args: &[&str]| {
            let cli = Cli::parse_from(["x", "serve"].iter().chain(args));
            let Command::Serve(args) = cli.command else { panic!("not serve") };
            args.config()
        };
        assert!(!config(&[]).unwrap().cache.enabled);
        assert!(config(&["--cache"]).unwrap().cache.enabled);
        let c = config(&["--cache-redis", "redis://127.0.0.1:6379/1"]).unwrap();
        assert!(c.cache.enabled);
        assert_eq!(c.cache.redis.as_deref(), Some("redis://127.0.0.1:6379/1"));
        let err = config(&["--cache-redis", "localhost:6379"]).unwrap_err().to_string();
        assert!(err.contains("`cache.redis`"), "{err}");
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
