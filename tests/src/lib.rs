//! The testbed: a real Envoy loading the freshly built filter, real tonic upstreams that
//! say who answered, and real gRPC clients. The end-to-end tests in `tests/` and the
//! demo (`src/bin/demo.rs`) are both built on it.
//!
//! Every process is started by the test itself on free ports, tracked by pid and killed
//! when its guard drops, including when a test fails. A part that cannot be found (Envoy,
//! the `.wasm`) fails the test with a message saying how to get it; nothing is skipped.

pub mod admin;
pub mod client;
pub mod envoy;
pub mod paths;
pub mod process;
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
        let stable = upstream::Upstream::start("stable").await;
        let canary = upstream::Upstream::start("canary").await;
        let fallback = upstream::Upstream::start("fallback").await;
        let clusters = [&stable, &canary, &fallback]
            .iter()
            .map(|u| envoy::Cluster::new(&u.name, u.port))
            .collect();
        let mut config = envoy::EnvoyConfig::new(clusters, plugin_config);
        config.concurrency = workers;
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
