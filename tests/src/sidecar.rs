//! The real sidecar (`switchyard-sidecar serve`) on free ports, with the real model
//! repository (`var/models`) and a schema registry directory the test fills.
//!
//! Three versions serve three routing targets, each on its own gRPC port, like the demo:
//! `stable` = `orientation/1`, `canary` = `orientation/2`, `fallback` = `orientation-lite/1`.

use crate::process::Process;
use crate::{admin, paths};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The model versions behind the three targets, as `x-model-version` values.
pub const STABLE: &str = "orientation/stable";
pub const CANARY: &str = "orientation/canary";
pub const FALLBACK: &str = "orientation-lite/fallback";

/// A running sidecar. Killed on drop.
pub struct Sidecar {
    process: Process,
    dir: tempfile::TempDir,
    /// Default gRPC port (answers with `stable`).
    pub grpc: u16,
    pub admin: u16,
    /// The read-only snapshot listener (`snapshot_listen`), if configured.
    pub snapshot_port: Option<u16>,
    /// gRPC port per target name (`stable`, `canary`, `fallback`).
    pub ports: BTreeMap<String, u16>,
}

/// The sidecar binary (`cargo xtask test` builds it first).
pub fn binary() -> PathBuf {
    let path = std::env::var_os("SWITCHYARD_SIDECAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| paths::root().join("target/debug/switchyard-sidecar"));
    if !path.exists() {
        panic!(
            "the sidecar binary is not at {} (run `cargo xtask test`, or `cargo build -p switchyard-sidecar`)",
            path.display()
        );
    }
    path
}

/// The model repository prepared by `cargo xtask setup`.
pub fn models() -> PathBuf {
    let path = paths::root().join("var/models");
    if !path.join("orientation/1/model.onnx").exists() {
        panic!("the model repository is missing at {} (run `cargo xtask setup`)", path.display());
    }
    path
}

/// A test image: a rendered text page rotated by `degrees` (0, 90, 180, 270), as JPEG.
pub fn page(degrees: u32) -> Vec<u8> {
    testkit::pages::page(degrees, "jpg")
}

impl Sidecar {
    /// Starts the sidecar; `schema_dir` (if any) is the registry's watched directory.
    pub async fn start(schema_dir: Option<&Path>) -> Sidecar {
        Self::start_with(schema_dir, "").await
    }

    /// [`Sidecar::start`] with more top-level configuration (TOML lines).
    pub async fn start_with(schema_dir: Option<&Path>, top: &str) -> Sidecar {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config(schema_dir, &dir.path().join("schema-state"), top);
        let config_path = dir.path().join("sidecar.toml");
        std::fs::write(&config_path, config).expect("write sidecar config");
        Self::start_config(&config_path, dir).await
    }

    /// Starts the sidecar with a config file; its log goes to `dir`.
    pub async fn start_config(config_path: &Path, dir: tempfile::TempDir) -> Sidecar {
        Self::start_command(Command::new(binary()), config_path, dir).await
    }

    /// Starts the sidecar with `cmd` (the binary, or a command that runs it, such as
    /// `ip netns exec <ns> <binary>`).
    pub async fn start_command(mut cmd: Command, config_path: &Path, dir: tempfile::TempDir) -> Sidecar {
        let log = std::fs::File::create(dir.path().join("sidecar.log")).expect("sidecar log");
        cmd.args(["serve", "--config"])
            .arg(config_path)
            .env("RUST_LOG", "info,ort=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let process = Process::spawn("sidecar", &mut cmd).unwrap_or_else(|e| panic!("cannot start the sidecar: {e}"));
        let log_path = dir.path().join("sidecar.log");
        let (process, ready) = tokio::task::spawn_blocking(move || {
            let mut process = process;
            let ready = testkit::ready::wait(&mut process, &log_path, Duration::from_secs(60));
            (process, ready)
        })
        .await
        .expect("ready-line reader");
        let ready = ready.unwrap_or_else(|e| panic!("{e}"));
        let port = |v: &Value| -> u16 {
            v.as_str().and_then(|a| a.rsplit_once(':')).and_then(|(_, p)| p.parse().ok()).expect("port in ready line")
        };
        let mut ports = BTreeMap::new();
        ports.insert("stable".to_string(), port(&ready["grpc"]));
        for e in ready["endpoints"].as_array().into_iter().flatten() {
            let target = match e["default_version"].as_str() {
                Some(CANARY) => "canary",
                Some(FALLBACK) => "fallback",
                _ => continue,
            };
            ports.insert(target.to_string(), port(&e["grpc"]));
        }
        let snapshot_port = ready.get("snapshot").map(port);
        Sidecar { grpc: port(&ready["grpc"]), admin: port(&ready["admin"]), snapshot_port, ports, process, dir }
    }

    /// Injects a fault into a version (`POST /v1/chaos`), e.g.
    /// `{"target": "orientation/canary", "latency_ms": 800}`.
    pub fn chaos(&self, fault: Value) {
        let reply = admin::post(self.admin, "/v1/chaos", &fault.to_string()).expect("sidecar admin");
        assert!(reply.status < 300, "chaos refused: {} {}", reply.status, reply.body);
    }

    /// Clears every injected fault.
    pub fn clear_chaos(&self) {
        let reply = admin::request(self.admin, "DELETE", "/v1/chaos", "").expect("sidecar admin");
        assert!(reply.status < 300, "{}", reply.body);
    }

    /// The snapshot the filter polls.
    pub fn snapshot(&self) -> Value {
        let reply = admin::get(self.admin, "/v1/snapshot").expect("sidecar admin");
        serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("snapshot: {e}: {}", reply.body))
    }

    /// Requests the sidecar has answered, all versions and statuses (its own counter).
    pub fn requests_answered(&self) -> u64 {
        self.metric_sum("switchyard_sidecar_requests_total").expect("sidecar admin")
    }

    /// The sum of every sample of a metric (all label sets) on `/metrics`.
    pub fn metric_sum(&self, name: &str) -> std::io::Result<u64> {
        metric_sum(self.admin, name)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sidecar.log")).unwrap_or_default()
    }

    /// Sends SIGTERM (the sidecar stops accepting, finishes what is in flight, exits) and
    /// waits up to `within` for it to exit; its exit status, or `None` if it is still running.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.process.signal(libc::SIGTERM).ok()?;
        self.process.wait_exit(within)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops the sidecar now (SIGKILL).
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// The tests' sidecar configuration: three versions on three loopback ports (the same model
/// repository as the demo), small batches, one ONNX Runtime thread; with `schema_dir`, a
/// registry watching it (its state in `state_dir`). `top` adds top-level TOML lines.
pub fn config(schema_dir: Option<&Path>, state_dir: &Path, top: &str) -> String {
    let schema = match schema_dir {
        Some(d) => format!(
            "[schema]\ndir = {:?}\nstate_dir = {:?}\nmode = \"BACKWARD\"\ndebounce_ms = 100\n",
            d.display().to_string(),
            state_dir.display().to_string()
        ),
        None => String::new(),
    };
    format!(
        r#"listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{top}

[runtime]
execution_providers = ["cpu"]
intra_op_threads = 1
preprocess_threads = 1

[batching]
max_batch_size = 4
max_queue_delay_us = 500
queue_capacity = 64

[repository]
path = {models:?}
default_model = "orientation"

[models.orientation]
versions = {{ specific = [1, 2] }}
labels = {{ stable = 1, canary = 2 }}
default_version = "stable"

[models.orientation-lite]
versions = {{ latest = 1 }}
labels = {{ fallback = 1 }}

[[endpoints]]
listen = "127.0.0.1:0"
default_version = "{CANARY}"

[[endpoints]]
listen = "127.0.0.1:0"
default_version = "{FALLBACK}"

{schema}"#,
        models = models().display().to_string(),
    )
}

/// Revisions of `features.v1` for a registry directory, derived from the API's source of
/// truth (`proto/features/v1/features.proto`) so they never drift from it.
pub mod revisions {
    use super::*;

    fn source() -> String {
        std::fs::read_to_string(paths::root().join("proto/features/v1/features.proto")).expect("features.proto")
    }

    /// The API as it is in `proto/`.
    pub fn current() -> String {
        source()
    }

    /// A compatible evolution: a new optional request field.
    pub fn with_new_field() -> String {
        source().replacen(
            "  ImageFormat image_format = 3;\n",
            "  ImageFormat image_format = 3;\n  // Added in this revision: a hint for the region of interest.\n  string roi_hint = 15;\n",
            1,
        )
    }

    /// The next compatible evolution after [`with_new_field`]: one more optional request field.
    pub fn with_two_new_fields() -> String {
        let s = with_new_field();
        assert!(s.contains("  string roi_hint = 15;\n"), "with_new_field changed; update the test revisions");
        s.replacen("  string roi_hint = 15;\n", "  string roi_hint = 15;\n  // Added in the revision after: the caller's tenant, for quotas.\n  string tenant = 16;\n", 1)
    }

    /// A breaking change: `image_format` becomes a string (varint → length-delimited), so
    /// no older client's requests read the same.
    pub fn breaking() -> String {
        let s = source();
        assert!(s.contains("  ImageFormat image_format = 3;"), "features.proto changed; update the test revisions");
        s.replacen("  ImageFormat image_format = 3;", "  string image_format = 3;", 1)
    }

    /// Writes `proto` as revision entry `name` of a registry directory (one `.proto` tree
    /// per entry), atomically (written aside, then renamed into place).
    pub fn write(dir: &Path, name: &str, proto: &str) {
        let staging = dir.join(format!(".{name}.tmp"));
        let file = staging.join("features/v1/features.proto");
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, proto).expect("write proto");
        std::fs::rename(&staging, dir.join(name)).expect("rename revision into place");
    }
}

/// The sum of every sample of a metric (all label sets) on the `/metrics` of the sidecar whose
/// admin port is `admin`: for callers that outlive one sidecar process (a restart keeps the port).
pub fn metric_sum(admin: u16, name: &str) -> std::io::Result<u64> {
    metric_sums(admin, [name]).map(|[sum]| sum)
}

/// [`metric_sum`] of several metrics, from one scrape (so they are of the same moment).
pub fn metric_sums<const N: usize>(admin: u16, names: [&str; N]) -> std::io::Result<[u64; N]> {
    let reply = admin::get(admin, "/metrics")?;
    Ok(names.map(|name| {
        reply
            .body
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as u64
    }))
}
