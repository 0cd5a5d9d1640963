//! The testbed: a real Envoy loading the freshly built filter, real tonic upstreams that
//! say who answered, and real gRPC clients. The end-to-end tests in `tests/` and the
//! demo (`src/bin/demo.rs`) are both built on it.
//!
//! Every process is started by the test itself on free ports, tracked by pid and killed
//! when its guard drops, including when a test fails. A part that cannot be found (Envoy,
//! the `.wasm`) fails the test with a message saying how to get it; nothing is skipped.

// The admin client and the process guard come from the workspace's test kit.
pub use testkit::http as admin;
pub mod abuse;
pub mod client;
pub mod envoy;
pub mod fleet;
pub mod manifests;
pub mod otlp;
pub mod paths;
pub use testkit::process;
pub mod sidecar;
pub mod soak;
pub mod traffic;
pub mod upstream;

pub use traffic::Traffic;

/// A free TCP port on 127.0.0.1 (bound and released; the OS will not hand it out again
/// immediately).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Three upstreams (`stable`, `canary`, `fallback`) behind an Envoy running the filter:
/// the usual shape of a canary release.
pub struct AbStack {
    pub envoy: envoy::Envoy,
    pub stable: upstream::Upstream,
    pub canary: upstream::Upstream,
    pub fallback: upstream::Upstream,
}

impl AbStack {
    pub async fn start(plugin_config: &str) -> AbStack {
        Self::start_with(plugin_config, 2).await
    }

    /// With `workers` Envoy worker threads.
    pub async fn start_with(plugin_config: &str, workers: u32) -> AbStack {
        Self::start_routed(plugin_config, workers, envoy::Routing::ClusterHeader).await
    }

    /// With `workers` Envoy worker threads and the route picking the cluster by `routing`.
    pub async fn start_routed(plugin_config: &str, workers: u32, routing: envoy::Routing) -> AbStack {
        Self::start_tuned(plugin_config, |config| {
            config.concurrency = workers;
            config.routing = routing;
        })
        .await
    }

    /// With Envoy's configuration changed by `tune` (e.g. hot restart on) before it starts.
    pub async fn start_tuned(plugin_config: &str, tune: impl FnOnce(&mut envoy::EnvoyConfig)) -> AbStack {
        let stable = upstream::Upstream::start("stable").await;
        let canary = upstream::Upstream::start("canary").await;
        let fallback = upstream::Upstream::start("fallback").await;
        let clusters = [&stable, &canary, &fallback]
            .iter()
            .map(|u| envoy::Cluster::new(&u.name, u.port))
            .collect();
        let mut config = envoy::EnvoyConfig::new(clusters, plugin_config);
        tune(&mut config);
        let envoy = envoy::Envoy::start(config).await;
        AbStack { envoy, stable, canary, fallback }
    }

    pub async fn client(&self) -> client::Client {
        client::connect(&self.envoy.url()).await
    }
}

/// The A/B plugin configuration most tests start from, with the canary at `canary_weight`
/// percent.
pub fn ab_config(canary_weight: u32) -> String {
    serde_json::json!({
        "expose_decision": true,
        "access": {"deny": ["/features.v1.FeatureExtractionService/Debug*"]},
        "routes": [{
            "name": "features",
            "match": ["/features.v1.FeatureExtractionService/*"],
            "targets": [
                {"name": "stable", "cluster": "stable", "weight": 100 - canary_weight},
                {"name": "canary", "cluster": "canary", "weight": canary_weight},
                {"name": "fallback", "cluster": "fallback", "weight": 0}
            ],
            "default_target": "stable"
        }]
    })
    .to_string()
}

/// The real sidecar (three model versions on three ports, a schema registry with three
/// revisions of `features.v1`) behind an Envoy running the filter, which polls the
/// sidecar's snapshot through the `sidecar_admin` cluster.
///
/// Registry revisions: 1 = `proto/` as is; 2 = a compatible new field; 3 = a breaking
/// change loaded with `+force`. Targets serve: stable @1, canary @3, fallback @2.
pub struct SidecarStack {
    pub envoy: envoy::Envoy,
    pub sidecar: sidecar::Sidecar,
    pub schema_dir: tempfile::TempDir,
    _turn: Turn,
}

/// A turn on the machine for a test running real inference.
///
/// A sidecar stack runs three real model versions; two stacks at once on a two-core
/// machine push every target past the degradation tests' latency thresholds (all three
/// targets degraded, probes failing). One at a time costs no wall time: 36.8 s for the
/// `sidecar_stack` tests in turn against 40.5 s two at once.
pub struct Turn(#[allow(dead_code)] tokio::sync::MutexGuard<'static, ()>);

/// Waits for this test binary's one [`Turn`]. The lock is runtime-agnostic, so each
/// test's own runtime can wait on it.
pub async fn one_at_a_time() -> Turn {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    Turn(TURN.lock().await)
}

impl SidecarStack {
    /// Starts everything; `route_extra` is spliced into the route (e.g. `"degrade": {...}`),
    /// `top_extra` into the top level of the plugin configuration.
    pub async fn start(route_extra: &str, top_extra: &str) -> SidecarStack {
        Self::start_with(&Self::plugin_config(route_extra, top_extra)).await
    }

    /// Like [`SidecarStack::start`], but the targets declare no schema revision (every
    /// target serves every client), for tests about health and latency only.
    pub async fn start_without_revisions(route_extra: &str, top_extra: &str) -> SidecarStack {
        let config = Self::plugin_config(route_extra, top_extra);
        let config = [r#", "revision": "features.v1@1""#, r#", "revision": "features.v1@3""#, r#", "revision": "features.v1@2""#]
            .iter()
            .fold(config, |c, r| c.replace(r, ""));
        Self::start_with(&config).await
    }

    /// Starts everything with this plugin configuration (see [`SidecarStack::plugin_config`]).
    pub async fn start_with(plugin_config: &str) -> SidecarStack {
        Self::start_on(plugin_config, None).await
    }

    /// [`SidecarStack::start_with`], with the sidecar's console reading this Envoy's admin
    /// (`envoy_admin`), for the live view.
    pub async fn start_with_console(plugin_config: &str) -> SidecarStack {
        Self::start_on(plugin_config, Some(free_port())).await
    }

    async fn start_on(plugin_config: &str, envoy_admin: Option<u16>) -> SidecarStack {
        let turn = one_at_a_time().await;
        let schema_dir = tempfile::tempdir().expect("temp dir");
        sidecar::revisions::write(schema_dir.path(), "001-features", &sidecar::revisions::current());
        sidecar::revisions::write(schema_dir.path(), "002-features", &sidecar::revisions::with_new_field());
        sidecar::revisions::write(schema_dir.path(), "003-features+force", &sidecar::revisions::breaking());
        let top = envoy_admin.map(|p| format!("envoy_admin = \"127.0.0.1:{p}\"")).unwrap_or_default();
        let sidecar = sidecar::Sidecar::start_with(Some(schema_dir.path()), &top).await;
        let envoy = Self::envoy_on(&sidecar, plugin_config, envoy_admin).await;
        let stack = SidecarStack { envoy, sidecar, schema_dir, _turn: turn };
        stack.wait_for_snapshot().await;
        stack
    }

    /// An Envoy in front of `sidecar` with `plugin_config`.
    pub async fn envoy(sidecar: &sidecar::Sidecar, plugin_config: &str) -> envoy::Envoy {
        Self::envoy_on(sidecar, plugin_config, None).await
    }

    async fn envoy_on(sidecar: &sidecar::Sidecar, plugin_config: &str, admin_port: Option<u16>) -> envoy::Envoy {
        let clusters = ["stable", "canary", "fallback"]
            .iter()
            .map(|t| envoy::Cluster::new(t, sidecar.ports[*t]))
            .collect();
        let mut config = envoy::EnvoyConfig::new(clusters, plugin_config);
        config.http1_clusters = vec![envoy::Cluster::new("sidecar_admin", sidecar.admin)];
        config.admin_port = admin_port;
        envoy::Envoy::start(config).await
    }

    pub fn plugin_config(route_extra: &str, top_extra: &str) -> String {
        format!(
            r#"{{ {top_extra}
                "expose_decision": true, "tick_ms": 50,
                "sidecar": {{"cluster": "sidecar_admin", "poll_ms": 200, "timeout_ms": 500}},
                "routes": [{{
                    "name": "features", "match": ["/features.v1.FeatureExtractionService/*"],
                    "targets": [
                        {{"name": "stable", "cluster": "stable", "weight": 90, "model_version": "orientation/stable", "revision": "features.v1@1"}},
                        {{"name": "canary", "cluster": "canary", "weight": 10, "model_version": "orientation/canary", "revision": "features.v1@3"}},
                        {{"name": "fallback", "cluster": "fallback", "model_version": "orientation-lite/fallback", "revision": "features.v1@2"}}
                    ],
                    "default_target": "stable", "fallback": "fallback" {route_extra}
                }}]
            }}"#
        )
    }

    /// Waits until every worker has a snapshot with all three revisions.
    pub async fn wait_for_snapshot(&self) {
        let installs = self.envoy.snapshot_installs();
        self.envoy.wait_filter_stat("switchyard.sidecar.snapshots", |n| n >= installs).await;
        let generation = self.envoy.filter_stat("switchyard.sidecar.generation");
        assert!(generation > 0, "no snapshot generation recorded");
    }

    pub async fn client(&self) -> client::Client {
        client::connect(&self.envoy.url()).await
    }

    /// Requests Envoy sent to a cluster (its upstream counter).
    pub fn upstream_requests(&self, cluster: &str) -> u64 {
        self.envoy.stat(&format!("cluster.{cluster}.upstream_rq_total")).unwrap_or(0)
    }
}
