//! Test harness: runs the real `switchyard-sidecar` binary against a copy of the real model
//! repository (prepared by `cargo xtask setup`) with the real ONNX Runtime.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::process::Process;
use switchyard_proto::features::v1::{
    extract_realtime_request::ImageFormat, feature_extraction_service_client::FeatureExtractionServiceClient,
    ExtractRealtimeRequest,
};

pub type Client = FeatureExtractionServiceClient<
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, tonic::body::Body>,
>;

const SETUP: &str = "run `cargo xtask setup` to prepare it";

pub use testkit::paths::root;

/// The prepared model repository and ONNX Runtime; fails (never skips) when missing.
pub fn require_setup() -> PathBuf {
    let models = root().join("var/models");
    for model in ["orientation", "orientation-lite"] {
        let manifest = models.join(model).join("SHA256SUMS");
        assert!(manifest.is_file(), "model repository missing ({} not found): {SETUP}", manifest.display());
    }
    if let Err(e) = switchyard_sidecar::onnx::locate_library(None) {
        panic!("ONNX Runtime missing: {e}");
    }
    models
}

#[allow(unused_imports)] // not every test crate renders pages
pub use testkit::pages::page;

/// A private copy of some model versions, so a test can change files freely.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    /// Copies each model's config and the listed versions, with a manifest for exactly those.
    pub fn with(models: &[(&str, &[u64])]) -> Repo {
        let source = require_setup();
        let repo = Repo { dir: tempfile::tempdir().expect("tempdir") };
        for (model, versions) in models {
            std::fs::create_dir_all(repo.path().join(model)).unwrap();
            std::fs::copy(source.join(model).join("config.toml"), repo.path().join(model).join("config.toml")).unwrap();
            for v in *versions {
                repo.install(model, *v, &source.join(model).join(v.to_string()).join("model.onnx"));
            }
        }
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `bytes` as `<model>/<version>/model.onnx` (atomically) without touching the manifest.
    pub fn write_model(&self, model: &str, version: u64, bytes: &[u8]) {
        let dir = self.path().join(model).join(version.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(".model.onnx.tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, dir.join("model.onnx")).unwrap();
    }

    /// Sets the manifest line for `<model>/<version>` to `sha256` (other lines kept).
    pub fn set_checksum(&self, model: &str, version: u64, sha256: &str) {
        let manifest = self.path().join(model).join("SHA256SUMS");
        let file = format!("{version}/model.onnx");
        let mut lines: Vec<String> = std::fs::read_to_string(&manifest)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.ends_with(&format!("  {file}")))
            .map(str::to_owned)
            .collect();
        lines.push(format!("{sha256}  {file}"));
        let tmp = manifest.with_extension("tmp");
        std::fs::write(&tmp, lines.join("\n") + "\n").unwrap();
        std::fs::rename(&tmp, manifest).unwrap();
    }

    /// Installs a model file and vouches for it in the manifest.
    pub fn install(&self, model: &str, version: u64, source: &Path) {
        let bytes = std::fs::read(source).unwrap_or_else(|e| panic!("{} ({e}): {SETUP}", source.display()));
        self.write_model(model, version, &bytes);
        self.set_checksum(model, version, &sha256(&bytes));
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The real model file of the prepared repository.
pub fn model_file(model: &str, version: u64) -> PathBuf {
    require_setup().join(model).join(version.to_string()).join("model.onnx")
}

/// A running sidecar, killed on drop.
pub struct Sidecar {
    process: Process,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    /// `(default_version, address)` of each extra endpoint.
    pub endpoints: Vec<(String, SocketAddr)>,
    /// The whole ready line (more listeners are named in it, e.g. `confluent`).
    pub ready: serde_json::Value,
    log: PathBuf,
    _config_dir: tempfile::TempDir,
}

impl Sidecar {
    /// Starts the binary with `config` (TOML; `repository.path` is set to `repo`) on free
    /// loopback ports and waits for its ready line.
    pub fn start(repo: &Path, config: &str) -> Sidecar {
        Self::try_start(repo, config, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(repo: &Path, config: &str, extra_args: &[&str]) -> Result<Sidecar, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("sidecar.toml");
        std::fs::write(&file, config).unwrap();
        let log = dir.path().join("sidecar.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard-sidecar"));
        cmd.args(["serve", "--config"])
            .arg(&file)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--model-repository"])
            .arg(repo)
            .args(extra_args)
            .env("RUST_LOG", "info,ort=warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut process = Process::spawn("switchyard-sidecar", &mut cmd).expect("start switchyard-sidecar");
        let ready = testkit::ready::wait(&mut process, &log, Duration::from_secs(60))?;
        let addr = |v: &serde_json::Value| testkit::ready::address(v).expect("address in ready line");
        let endpoints = ready["endpoints"]
            .as_array()
            .map(|list| list.iter().map(|e| (e["default_version"].as_str().unwrap_or("").to_string(), addr(&e["grpc"]))).collect())
            .unwrap_or_default();
        Ok(Sidecar { process, grpc: addr(&ready["grpc"]), admin: addr(&ready["admin"]), endpoints, ready, log, _config_dir: dir })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn client(&self) -> Client {
        Self::client_for(self.grpc)
    }

    /// A client of one extra endpoint, by its default version.
    pub fn endpoint_client(&self, default_version: &str) -> Client {
        let (_, addr) = self.endpoints.iter().find(|(v, _)| v == default_version).expect("endpoint in ready line");
        Self::client_for(*addr)
    }

    fn client_for(grpc: SocketAddr) -> Client {
        let mut http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
        http.http2_only(true);
        let http = http.build_http();
        let origin: tonic::codegen::http::Uri = format!("http://{grpc}").parse().unwrap();
        FeatureExtractionServiceClient::with_origin(http, origin).max_decoding_message_size(64 << 20)
    }

    /// Plain HTTP/1.1 to the admin port: (status, body). Retries a connection that fails
    /// mid-way (the body is idempotent or the caller checks the outcome).
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut last_error = String::new();
        for _ in 0..3 {
            match self.try_http(method, path, body) {
                Ok(answer) => return answer,
                Err(e) => last_error = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{method} {path} on the admin port failed: {last_error}\n{}", self.log());
    }

    fn try_http(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let reply = testkit::http::request_to(self.admin, method, path, body, Duration::from_secs(60))?;
        Ok((reply.status, reply.body))
    }

    pub fn metrics(&self) -> String {
        let (status, body) = self.http("GET", "/metrics", "");
        assert_eq!(status, 200, "{body}");
        body
    }

    pub fn models(&self) -> serde_json::Value {
        let (status, body) = self.http("GET", "/v1/models", "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.process.pid() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        self.process.wait_exit(within).and_then(|s| s.code())
    }
}

/// Sum of the samples of `name` whose labels include every `key="value"` in `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

pub fn request(image: Vec<u8>, format: ImageFormat) -> ExtractRealtimeRequest {
    ExtractRealtimeRequest { request_id: "t".into(), image_data: image, image_format: format as i32 }
}

pub fn pinned<T>(message: T, version: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-model-version", version.parse().unwrap());
    request
}

/// The class with the highest `class/<label>` score.
pub fn predicted_class(scores: &std::collections::HashMap<String, f32>) -> String {
    scores
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("class/").map(|label| (label, *v)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(label, _)| label.to_string())
        .expect("class scores in quality_scores")
}

/// Basic config for tests: `extra` (TOML, top-level keys first) plus one intra-op thread
/// per session (tests run side by side on two cores) and no file watch.
pub fn config(extra: &str) -> String {
    format!("{extra}\n[runtime]\nintra_op_threads = 1\n\n[repository]\nwatch = false\n")
}

/// `(name, nice)` of each of the process's threads, from `/proc`.
pub fn threads(pid: u32) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let (Ok(name), Ok(stat)) = (std::fs::read_to_string(task.path().join("comm")), std::fs::read_to_string(task.path().join("stat")))
        else {
            continue; // the thread ended meanwhile
        };
        // Fields after the parenthesised name: state is field 3, nice field 19.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let nice: i64 = after_name.split(' ').nth(16).unwrap().parse().unwrap();
        found.push((name.trim().to_string(), nice));
    }
    found
}
