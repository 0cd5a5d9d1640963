//! A real Envoy, configured by the test, loading the freshly built filter.
//!
//! Listeners come from a file through LDS (`path_config_source`), so a test can push a
//! new listener, including one with a bad plugin configuration, to the running Envoy
//! exactly as a control plane would. Clusters are static.

use crate::process::Process;
use crate::{admin, free_port, paths};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Which build of the filter Envoy loads. Every end-to-end test runs against the one
/// `SWITCHYARD_FILTER` names (`wasm`, the default, or `native`); `cargo xtask test` runs
/// them once for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// The proxy-wasm module in Envoy's V8 runtime.
    Wasm,
    /// The dynamic module (`libswitchyard.so`).
    Native,
}

impl Build {
    pub fn current() -> Build {
        match std::env::var("SWITCHYARD_FILTER").as_deref() {
            Ok("native") => Build::Native,
            Ok("wasm") | Err(_) => Build::Wasm,
            Ok(other) => panic!("SWITCHYARD_FILTER={other:?}: expected wasm or native"),
        }
    }

    /// Where Envoy puts the stats a filter defines.
    pub fn stat_prefix(self) -> &'static str {
        match self {
            Build::Wasm => "wasmcustom.",
            Build::Native => "dynamicmodulescustom.",
        }
    }

    /// How many times one snapshot generation is installed (and counted in
    /// `sidecar.snapshots`) per filter configuration: by every Wasm VM (one per worker and
    /// the main thread's, whose root context ticks and polls too), or once on the native
    /// module's shared board. Counting only the workers' let a test go on while one worker
    /// had none yet and routed as if there were no snapshot.
    pub fn snapshot_installs(self, concurrency: u32) -> u64 {
        match self {
            Build::Wasm => u64::from(concurrency) + 1,
            Build::Native => 1,
        }
    }

    /// The filter-state key of the decision, as access logs read it.
    pub fn decision_state_key(self) -> &'static str {
        match self {
            Build::Wasm => "wasm.switchyard_decision",
            Build::Native => "switchyard.decision",
        }
    }
}

/// The HTTP filter entry that loads Switchyard (`build`) with `plugin_config`.
pub fn filter_json(build: Build, plugin_config: &str) -> Value {
    match build {
        Build::Wasm => wasm_filter_json(&paths::wasm(), plugin_config),
        Build::Native => native_filter_json(plugin_config),
    }
}

/// The dynamic-module filter entry, loading the built `libswitchyard.so` by path.
pub fn native_filter_json(plugin_config: &str) -> Value {
    dynamic_module_filter_json(&paths::native(), plugin_config)
}

/// The dynamic-module filter entry for the module at `so`.
pub fn dynamic_module_filter_json(so: &Path, plugin_config: &str) -> Value {
    json!({
        "name": "envoy.filters.http.dynamic_modules",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"module": {"local": {"filename": so}}, "do_not_close": true},
            "filter_name": "switchyard",
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": plugin_config
            }
        }
    })
}

/// An upstream cluster: a name and a loopback port speaking h2c (gRPC).
#[derive(Clone, Debug)]
pub struct Cluster {
    pub name: String,
    pub port: u16,
}

impl Cluster {
    pub fn new(name: &str, port: u16) -> Self {
        Self { name: name.to_owned(), port }
    }
}

/// How Envoy's route turns the routing header into a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// A `cluster_header` route while the header is present, the default cluster otherwise:
    /// the filter clears the route cache (`route_refresh: route`).
    ClusterHeader,
    /// One route whose matcher cluster specifier maps the header's value to a cluster (the
    /// default cluster when absent): the filter refreshes only the cluster
    /// (`route_refresh: cluster`).
    Matcher,
    /// The same matcher reading the filter-state key the filter writes instead
    /// (`cluster_filter_state`, native module).
    FilterState(&'static str),
}

/// What the test wants Envoy to look like.
#[derive(Clone, Debug)]
pub struct EnvoyConfig {
    pub clusters: Vec<Cluster>,
    /// The plugin configuration, verbatim (it may be invalid on purpose).
    pub plugin_config: String,
    /// Cluster for requests the filter does not route (non-gRPC, unrouted methods).
    pub default_cluster: String,
    /// Internal header the filter writes its choice into.
    pub cluster_header: String,
    /// How the route reads it.
    pub routing: Routing,
    /// Worker threads; more than one exercises per-worker VMs.
    pub concurrency: u32,
    /// HTTP/1.1 clusters (name, port), e.g. the sidecar's admin port the filter polls.
    pub http1_clusters: Vec<Cluster>,
    /// An access log format; lines go to `access.log` in Envoy's directory.
    pub access_log_format: Option<String>,
    /// Extra environment for the Envoy process.
    pub env: Vec<(String, String)>,
    /// The filter build Envoy loads: the one `SWITCHYARD_FILTER` names unless a test
    /// needs a particular one.
    pub build: Build,
    /// Envoy's admin port, when something must know it before Envoy starts (a free one
    /// otherwise).
    pub admin_port: Option<u16>,
    /// Envoy's OpenTelemetry tracer, sending to an OTLP collector; `None`: no tracing.
    pub tracing: Option<Tracing>,
    /// Start with hot restart enabled (`--restart-epoch`), so [`Envoy::hot_restart`] can
    /// replace the process under traffic; off: `--disable-hot-restart`.
    pub hot_restart: bool,
}

/// Envoy's OpenTelemetry tracer as the demo configures it (`envoy/envoy.yaml`): every request
/// sampled, spans sent over OTLP/gRPC to the `otel_collector` cluster, the filter's decision
/// (written to filter state with `"decision_to_filter_state": true`) as a span tag.
#[derive(Clone, Debug)]
pub struct Tracing {
    /// The collector's loopback port (in tests, [`crate::otlp::Receiver`]'s).
    pub collector_port: u16,
}

/// `service.name` of Envoy's spans.
pub const TRACING_SERVICE: &str = "switchyard-envoy";
/// The span tag carrying the filter's decision (`target=canary; reason=weight`, `reply=denied`).
pub const DECISION_TAG: &str = "switchyard.decision";
const COLLECTOR_CLUSTER: &str = "otel_collector";

/// The connection manager's `tracing` block for `build` (its decision's filter-state key).
pub fn hcm_tracing_json(build: Build) -> Value {
    json!({
        "random_sampling": {"value": 100},
        "custom_tags": [{"tag": DECISION_TAG, "value": format!("%FILTER_STATE({}:PLAIN)%", build.decision_state_key())}],
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": COLLECTOR_CLUSTER}, "timeout": "1s"},
                "service_name": TRACING_SERVICE
            }
        }
    })
}

impl EnvoyConfig {
    pub fn new(clusters: Vec<Cluster>, plugin_config: impl Into<String>) -> Self {
        let default_cluster = clusters.first().map(|c| c.name.clone()).unwrap_or_default();
        Self {
            clusters,
            plugin_config: plugin_config.into(),
            default_cluster,
            cluster_header: "x-switchyard-cluster".into(),
            routing: Routing::ClusterHeader,
            concurrency: 2,
            http1_clusters: Vec::new(),
            access_log_format: None,
            env: Vec::new(),
            build: Build::current(),
            admin_port: None,
            tracing: None,
            hot_restart: false,
        }
    }
}

/// A running Envoy. Killed on drop.
pub struct Envoy {
    process: Process,
    dir: tempfile::TempDir,
    /// `None` when started from a static config file (no LDS to push to).
    config: Option<EnvoyConfig>,
    pub admin_port: u16,
    pub listener_port: u16,
    lds_version: u32,
    /// The hot-restart epoch of the running process; earlier ones drain, then exit.
    epoch: u32,
    draining: Vec<Process>,
}

/// With hot restart on: how long a listener being replaced (an LDS update, or the parent
/// of a hot restart) drains its connections before closing what is left, and when a parent
/// is told to exit. Longer than any request should take, shorter than Envoy's defaults
/// (600 s, 900 s) so a test sees the parent go.
const DRAIN_S: u32 = 10;
const PARENT_SHUTDOWN_S: u32 = 15;

/// What Envoy's admin port says of LDS updates (see [`Envoy::lds_state`]).
struct LdsState {
    /// The `version_info` of the last update Envoy accepted.
    accepted_version: String,
    /// The refusal times listeners show: each keeps its last until an update of it is
    /// accepted.
    refusals: BTreeSet<String>,
}

/// How a process takes part in hot restart.
#[derive(Clone, Copy)]
struct Restart {
    /// Shared-memory and socket names are derived from it: one per Envoy (its admin port).
    base_id: u16,
    epoch: u32,
}

impl Envoy {
    /// Starts Envoy and waits until its listener accepts connections.
    pub async fn start(config: EnvoyConfig) -> Envoy {
        let dir = tempfile::tempdir().expect("temp dir");
        let admin_port = config.admin_port.unwrap_or_else(free_port);
        let listener_port = free_port();
        let bootstrap = dir.path().join("bootstrap.json");
        write_json(&bootstrap, &bootstrap_json(&config, admin_port, &dir.path().join("lds.json")));
        let restart = config.hot_restart.then_some(Restart { base_id: admin_port, epoch: 0 });
        let mut envoy = Envoy {
            process: spawn_on(&bootstrap, &dir.path().join("envoy.log"), config.concurrency, None, &config.env, restart),
            dir,
            admin_port,
            listener_port,
            lds_version: 0,
            config: Some(config.clone()),
            epoch: 0,
            draining: Vec::new(),
        };
        envoy.write_lds(&config.plugin_config);
        envoy.wait_ready().await;
        envoy
    }

    /// Starts Envoy from a static config file (run from the workspace root, so relative
    /// paths in it resolve), whose admin and listener ports the caller knows.
    pub async fn start_file(config: &Path, admin_port: u16, listener_port: u16, concurrency: u32) -> Envoy {
        Self::start_file_on(config, admin_port, listener_port, concurrency, None).await
    }

    /// Like [`Envoy::start_file`], with every Envoy thread pinned to `cpu` (benchmarks: the
    /// load generator and upstream run elsewhere, so Envoy's CPU time is its own).
    pub async fn start_file_on(config: &Path, admin_port: u16, listener_port: u16, concurrency: u32, cpu: Option<u32>) -> Envoy {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut envoy = Envoy {
            process: spawn_on(config, &dir.path().join("envoy.log"), concurrency, cpu, &[], None),
            dir,
            admin_port,
            listener_port,
            lds_version: 0,
            config: None,
            epoch: 0,
            draining: Vec::new(),
        };
        envoy.wait_ready().await;
        envoy
    }

    /// The filter build this Envoy runs.
    pub fn build(&self) -> Build {
        self.config.as_ref().map_or_else(Build::current, |c| c.build)
    }

    /// [`Build::snapshot_installs`] for this Envoy.
    pub fn snapshot_installs(&self) -> u64 {
        self.build().snapshot_installs(self.config.as_ref().map_or(1, |c| c.concurrency))
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// CPU time (user + system) Envoy has used so far, from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are 14th and 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// `http://127.0.0.1:<listener>` for gRPC clients.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.listener_port)
    }

    /// Replaces the listener with one carrying `plugin_config`, as an LDS update.
    /// Returns without waiting; see [`Envoy::push_listener`] for the waiting form.
    pub fn write_lds(&mut self, plugin_config: &str) {
        let config = self.config.as_ref().expect("this Envoy was started from a static file, without LDS");
        self.lds_version += 1;
        let lds = json!({
            "version_info": self.lds_version.to_string(),
            "resources": [listener_json(config, self.listener_port, plugin_config, &self.dir.path().join("access.log"))],
        });
        let path = self.dir.path().join("lds.json");
        let tmp = self.dir.path().join("lds.json.tmp");
        write_json(&tmp, &lds);
        // Envoy watches for the file being moved into place.
        std::fs::rename(&tmp, &path).expect("move lds.json into place");
    }

    /// Hot-restarts Envoy (started with [`EnvoyConfig::hot_restart`]): a new process takes
    /// the listening sockets over from this one, which drains its connections and exits.
    /// Returns once the new process is live with its listener.
    pub async fn hot_restart(&mut self) -> Result<(), String> {
        let config = self.config.as_ref().ok_or("this Envoy was started from a static file")?;
        if !config.hot_restart {
            return Err("this Envoy was started with --disable-hot-restart".into());
        }
        self.draining.retain_mut(|p| p.exited().is_none());
        let epoch = self.epoch + 1;
        let restart = Restart { base_id: self.admin_port, epoch };
        let bootstrap = self.dir.path().join("bootstrap.json");
        let child = spawn_on(&bootstrap, &self.dir.path().join("envoy.log"), config.concurrency, None, &config.env, Some(restart));
        self.draining.push(std::mem::replace(&mut self.process, child));
        self.epoch = epoch;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.process.exited() {
                return Err(format!("the hot-restarted Envoy (epoch {epoch}) exited ({status}); log ends:\n{}", self.log_tail(30)));
            }
            let info = admin::get(self.admin_port, "/server_info").map(|r| r.body).unwrap_or_default();
            let info: Value = serde_json::from_str(&info).unwrap_or_default();
            if info["command_line_options"]["restart_epoch"] == epoch && info["state"] == "LIVE" {
                // Live is not serving: a new process that refused the listener it was offered
                // is live with none, and the parent's drain then closes the only one.
                // (Its own `/listeners`: gauges are merged with the parent's during a restart.)
                let listeners = admin::get(self.admin_port, "/listeners?format=json").map(|r| r.body).unwrap_or_default();
                let listeners: Value = serde_json::from_str(&listeners).unwrap_or_default();
                let serving = listeners["listener_statuses"].as_array().is_some_and(|l| !l.is_empty());
                return if serving {
                    Ok(())
                } else {
                    Err(format!("the hot-restarted Envoy (epoch {epoch}) is live with no listener; log ends:\n{}", self.log_tail(30)))
                };
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("the hot-restarted Envoy (epoch {epoch}) was not live after 30 s; log ends:\n{}", self.log_tail(30)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pushes a new listener and waits until Envoy has accepted or rejected it.
    /// Returns whether it was accepted.
    pub async fn push_listener(&mut self, plugin_config: &str) -> bool {
        let before = crate::eventually("Envoy's /config_dump", Duration::from_secs(20), async || self.lds_state()).await;
        self.write_lds(plugin_config);
        let pushed = self.lds_version.to_string();
        let accepted = crate::eventually("Envoy to process the LDS update", Duration::from_secs(20), async || {
            let now = self.lds_state()?;
            if now.accepted_version == pushed {
                Some(true)
            } else {
                (!now.refusals.is_subset(&before.refusals)).then_some(false)
            }
        })
        .await;
        if accepted {
            // The new listener takes over once its filter chain is ready; give the old
            // listener's draining connections no say in what the test sees next.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        accepted
    }

    /// Where LDS stands; `None` while the admin port does not answer.
    ///
    /// Not from the `listener_manager.lds.update_*` counters: while a hot restart's parent
    /// drains, Envoy adds the parent's counters into the child's at each stats flush, so they
    /// move without a push. The text readout `version_text` is the child's own and is set on
    /// every accepted update, also one that changes no listener (the dump's `version_info`
    /// is not: a configuration offered again leaves it). A refusal leaves its time in the
    /// refused listener's `error_state`.
    fn lds_state(&self) -> Option<LdsState> {
        let stats = admin::get(self.admin_port, "/stats?filter=lds.version_text").ok()?.body;
        let accepted_version = stats.lines().find_map(|l| l.strip_prefix("listener_manager.lds.version_text: "))?;
        let accepted_version = accepted_version.trim().trim_matches('"').to_owned();
        let dump = admin::get(self.admin_port, "/config_dump?resource=dynamic_listeners").ok()?.body;
        let dump: Value = serde_json::from_str(&dump).ok()?;
        let refusals = dump["configs"]
            .as_array()?
            .iter()
            .filter_map(|l| l["error_state"]["last_update_attempt"].as_str())
            .map(str::to_owned)
            .collect();
        Some(LdsState { accepted_version, refusals })
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.process.exited() {
                panic!("Envoy exited during start-up ({status}); log:\n{}", self.log());
            }
            let live = admin::get(self.admin_port, "/ready").map(|r| r.status == 200).unwrap_or(false);
            let listening = std::net::TcpStream::connect(("127.0.0.1", self.listener_port)).is_ok();
            if live && listening {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("Envoy did not become ready in 30 s; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every counter and gauge, by name.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let reply = admin::get(self.admin_port, "/stats").expect("Envoy admin /stats");
        parse_stats(&reply.body)
    }

    pub fn stat(&self, name: &str) -> Option<u64> {
        self.stats().remove(name)
    }

    /// A stat the filter defined (`wasmcustom.` or `dynamicmodulescustom.` + name).
    pub fn filter_stat(&self, name: &str) -> u64 {
        self.stat(&format!("{}{name}", self.build().stat_prefix())).unwrap_or(0)
    }

    /// Waits until a filter stat satisfies `pred` (stats are flushed once a second).
    pub async fn wait_filter_stat(&self, name: &str, pred: impl Fn(u64) -> bool) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.filter_stat(name);
            if pred(v) {
                return v;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out after 10 s waiting for stat {name} (now {v}); Envoy's log ends:\n{}", self.log_tail(40));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `n` lines of Envoy's log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    /// The access log so far (see [`EnvoyConfig::access_log_format`]).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// Signs of a failed filter: a trapped VM (a Rust panic aborts, which traps) shows in
    /// Envoy's log as a failed callback, and a failed VM is reloaded (`vm_reload_*` stats);
    /// the native module logs each panic it caught; and a crash ends Envoy.
    pub fn filter_failures(&self) -> u64 {
        // An exited child stays a zombie until reaped: state `Z` in /proc.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).unwrap_or("Z");
        if state == "Z" || state == "X" {
            panic!("Envoy is gone; log:\n{}", self.log());
        }
        let log = self.log();
        let trapped = log
            .lines()
            .filter(|l| {
                l.contains("Uncaught RuntimeError")
                    || l.contains("panicked at")
                    || l.contains("switchyard: panic in hook")
                    || (l.contains("Function: proxy_on_") && l.contains("failed"))
            })
            .count() as u64;
        let reloads: u64 = self
            .stats()
            .iter()
            .filter(|(k, _)| k.starts_with("wasm.") && k.contains(".vm_reload"))
            .map(|(_, v)| *v)
            .sum();
        trapped + reloads
    }

    /// Waits until Envoy's log contains `needle`, and returns the log.
    pub async fn wait_log(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if tokio::time::Instant::now() >= deadline {
                let switchyard: Vec<&str> = log.lines().filter(|l| l.contains("switchyard:")).collect();
                panic!("timed out after 10 s waiting for log line {needle:?}; Switchyard's lines:\n{}", switchyard.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn spawn_on(bootstrap: &Path, log: &Path, concurrency: u32, cpu: Option<u32>, env: &[(String, String)], restart: Option<Restart>) -> Process {
    let mut cmd = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string()]).arg(paths::envoy());
            c
        }
        None => Command::new(paths::envoy()),
    };
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.current_dir(paths::root())
        .arg("-c")
        .arg(bootstrap)
        .args(["-l", "info", "--file-flush-interval-msec", "100"])
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .arg("--log-path")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match restart {
        None => cmd.arg("--disable-hot-restart"),
        Some(r) => cmd
            .args(["--base-id", &r.base_id.to_string(), "--restart-epoch", &r.epoch.to_string()])
            .args(["--drain-time-s", &DRAIN_S.to_string(), "--parent-shutdown-time-s", &PARENT_SHUTDOWN_S.to_string()]),
    };
    Process::spawn("envoy", &mut cmd).unwrap_or_else(|e| panic!("cannot start Envoy: {e}"))
}

/// The last `n` lines of `log`.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Envoy's `/stats` text (`name: value` lines), counters and gauges by name.
pub fn parse_stats(body: &str) -> BTreeMap<String, u64> {
    body.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(": ")?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("json")).expect("write config");
}

fn bootstrap_json(cfg: &EnvoyConfig, admin_port: u16, lds: &PathBuf) -> Value {
    let collector = cfg.tracing.as_ref().map(|t| Cluster::new(COLLECTOR_CLUSTER, t.collector_port));
    let mut bootstrap = json!({
        "node": {"id": "switchyard-test", "cluster": "switchyard-test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "lds_config": {"path_config_source": {"path": lds}, "resource_api_version": "V3"}
        },
        "static_resources": {"clusters": cfg.clusters.iter().chain(&collector).map(cluster_json)
            .chain(cfg.http1_clusters.iter().map(http1_cluster_json)).collect::<Vec<_>>()},
    });
    if collector.is_some() {
        // Each worker's tracer sends its spans every 5 s by default; tests wait for them.
        bootstrap["layered_runtime"] = json!({"layers": [{"name": "tracing", "static_layer": {
            "tracing.opentelemetry.flush_interval_ms": 100,
            "tracing.opentelemetry.min_flush_spans": 1
        }}]});
    }
    bootstrap
}

/// An h2c cluster for one loopback gRPC upstream.
pub fn cluster_json(c: &Cluster) -> Value {
    json!({
        "name": c.name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": c.name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": c.port}}}}]}]
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        }
    })
}

/// A plain HTTP/1.1 cluster (the sidecar's admin port).
pub fn http1_cluster_json(c: &Cluster) -> Value {
    json!({
        "name": c.name,
        "type": "STATIC",
        "connect_timeout": "0.5s",
        "load_assignment": {
            "cluster_name": c.name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": c.port}}}}]}]
        }
    })
}

/// The HTTP filter entry that loads Switchyard with `plugin_config`.
pub fn wasm_filter_json(wasm: &Path, plugin_config: &str) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "switchyard",
                "root_id": "switchyard",
                "vm_config": {
                    "vm_id": "switchyard",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin_config
                },
                "failure_policy": "FAIL_CLOSED"
            }
        }
    })
}

pub fn listener_json(cfg: &EnvoyConfig, port: u16, plugin_config: &str, access_log: &Path) -> Value {
    let access_log = match &cfg.access_log_format {
        Some(format) => json!([{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": access_log,
                "log_format": {"text_format_source": {"inline_string": format!("{format}\n")}}
            }
        }]),
        None => json!([]),
    };
    let clusters: Vec<&str> = cfg.clusters.iter().map(|c| c.name.as_str()).collect();
    let routes = switchyard_routes(cfg.routing, &cfg.cluster_header, &clusters, &cfg.default_cluster);
    let filters = vec![filter_json(cfg.build, plugin_config), router_filter_json()];
    let mut listener = http_listener_json("switchyard", port, routes, filters, access_log);
    if cfg.tracing.is_some() {
        listener["filter_chains"][0]["filters"][0]["typed_config"]["tracing"] = hcm_tracing_json(cfg.build);
    }
    // An LDS resource is an `Any`.
    listener["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
    listener
}

/// The routes a Switchyard deployment needs: the filter's choice by the routing header,
/// and the default cluster for requests it left alone.
pub fn switchyard_routes(routing: Routing, cluster_header: &str, clusters: &[&str], default_cluster: &str) -> Value {
    match routing {
        Routing::ClusterHeader => json!([
            {
                "match": {"prefix": "/", "headers": [{"name": cluster_header, "present_match": true}]},
                "route": {"cluster_header": cluster_header, "timeout": "0s"}
            },
            {
                "match": {"prefix": "/"},
                "route": {"cluster": default_cluster, "timeout": "0s"}
            }
        ]),
        Routing::Matcher | Routing::FilterState(_) => {
            let action = |cluster: &str| {
                json!({"action": {"name": cluster, "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.router.cluster_specifiers.matcher.v3.ClusterAction",
                    "cluster": cluster}}})
            };
            let map: serde_json::Map<String, Value> = clusters.iter().map(|c| (c.to_string(), action(c))).collect();
            json!([{
                "match": {"prefix": "/"},
                "route": {"timeout": "0s", "inline_cluster_specifier_plugin": {"extension": {
                    "name": "envoy.router.cluster_specifier_plugin.matcher",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.router.cluster_specifiers.matcher.v3.MatcherClusterSpecifier",
                        "cluster_matcher": {
                            "matcher_tree": {
                                "input": match routing {
                                    Routing::FilterState(key) => json!({"name": "routing-state", "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.FilterStateInput",
                                        "key": key}}),
                                    _ => json!({"name": "routing-header", "typed_config": {
                                        "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                                        "header_name": cluster_header}}),
                                },
                                "exact_match_map": {"map": map}
                            },
                            "on_no_match": action(default_cluster)
                        }
                    }
                }}}
            }])
        }
    }
}

pub fn router_filter_json() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
}

/// A loopback HTTP listener (HTTP/1 and HTTP/2) with one virtual host matching every domain.
pub fn http_listener_json(name: &str, port: u16, routes: Value, http_filters: Vec<Value>, access_log: Value) -> Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "codec_type": "AUTO",
                "access_log": access_log,
                "route_config": {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
                "http_filters": http_filters
            }
        }]}]
    })
}
