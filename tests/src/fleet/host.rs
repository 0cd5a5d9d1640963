//! One fleet host, the per-host topology (`envoy/kubernetes/per-host.yaml`): the real sidecar
//! serving stable, canary and fallback on loopback ports, its registry watching a ConfigMap
//! volume, and Envoy with the filter in front of it on the host's address.

use super::net::Namespace;
use super::proxy::{self, Proxy};
use crate::envoy::{self, Build, Cluster, Routing};
use crate::sidecar::{self, revisions, Sidecar};
use crate::admin;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use testkit::configmap::Volume;

/// The filter's configuration on every host: the demo's, with the canary at 20 % (so each
/// host sees canary traffic even when the fleet's is spread thin), a 5 s cool-down and
/// quicker probing (half the canary's traffic, 3 good probes) so a run sees the whole cycle.
pub const PLUGIN_CONFIG: &str = r#"{
    "expose_decision": true,
    "sidecar": {"cluster": "sidecar_admin", "poll_ms": 500},
    "routes": [{
        "name": "features",
        "match": ["/features.v1.FeatureExtractionService/*"],
        "targets": [
            {"name": "stable", "cluster": "stable", "weight": 80, "model_version": "orientation/stable", "revision": "features.v1@1"},
            {"name": "canary", "cluster": "canary", "weight": 20, "model_version": "orientation/canary", "revision": "features.v1@2"},
            {"name": "fallback", "cluster": "fallback", "weight": 0, "model_version": "orientation-lite/fallback", "revision": "features.v1@1"}
        ],
        "default_target": "stable",
        "fallback": "fallback",
        "degrade": {"cooldown_ms": 5000, "probe_share_pct": 50, "probe_successes": 3}
    }]
}"#;

/// The revisions every host starts with: the ConfigMap's keys at the paths
/// `envoy/kubernetes/per-host.yaml` mounts them (`items[].path`: one `.proto` tree each).
pub fn initial_revisions() -> Vec<(String, String)> {
    vec![(key("001-features"), revisions::current()), (key("002-features"), revisions::with_new_field())]
}

/// The update the fleet rolls out: a third, compatible revision.
pub fn next_revisions() -> Vec<(String, String)> {
    let mut r = initial_revisions();
    r.push((key("003-features"), revisions::with_two_new_fields()));
    r
}

fn key(entry: &str) -> String {
    format!("{entry}/features/v1/features.proto")
}

pub struct Host {
    pub name: String,
    pub ns: Namespace,
    pub envoy: Proxy,
    sidecar: Sidecar,
    volume: Volume,
    _dir: tempfile::TempDir,
}

impl Host {
    /// Starts host `name` in `ns`: its volume with the initial revisions, the sidecar, then Envoy.
    pub async fn start(name: &str, ns: Namespace, build: Build) -> Result<Host> {
        let dir = tempfile::tempdir()?;
        let schemas = dir.path().join("schemas");
        std::fs::create_dir(&schemas)?;
        let mut volume = Volume::new(&schemas);
        publish(&mut volume, &initial_revisions())?;
        let sidecar_dir = tempfile::tempdir()?;
        let config = sidecar::config(Some(&schemas), &dir.path().join("schema-state"), "");
        let config_path = sidecar_dir.path().join("sidecar.toml");
        std::fs::write(&config_path, config)?;
        let sidecar = Sidecar::start_command(ns.command(&sidecar::binary()), &config_path, sidecar_dir).await;

        let clusters: Vec<Value> = ["stable", "canary", "fallback"]
            .iter()
            .map(|t| envoy::cluster_json(&Cluster::new(t, sidecar.ports[*t])))
            .chain([envoy::http1_cluster_json(&Cluster::new("sidecar_admin", sidecar.admin))])
            .collect();
        let routes = envoy::switchyard_routes(Routing::ClusterHeader, "x-switchyard-cluster", &["stable", "canary", "fallback"], "stable");
        let filters = vec![envoy::filter_json(build, PLUGIN_CONFIG), envoy::router_filter_json()];
        let listener = proxy::listener("switchyard", routes, filters);
        let envoy = Proxy::start(&ns, name, vec![listener], clusters, 1).await.with_context(|| format!("host {name}"))?;
        Ok(Host { name: name.to_owned(), ns, envoy, sidecar, volume, _dir: dir })
    }

    /// Makes a model version slow (`latency_ms`) through the sidecar's loopback chaos endpoint.
    pub fn chaos(&self, version: &str, latency_ms: u64) -> Result<()> {
        let body = serde_json::json!({"target": version, "latency_ms": latency_ms}).to_string();
        let port = self.sidecar.admin;
        let reply = self.ns.run(move || admin::post(port, "/v1/chaos", &body))??;
        if reply.status >= 300 {
            bail!("{}: chaos refused: {} {}", self.name, reply.status, reply.body);
        }
        Ok(())
    }

    pub fn clear_chaos(&self) -> Result<()> {
        let port = self.sidecar.admin;
        let reply = self.ns.run(move || admin::request(port, "DELETE", "/v1/chaos", ""))??;
        if reply.status >= 300 {
            bail!("{}: clearing chaos refused: {} {}", self.name, reply.status, reply.body);
        }
        Ok(())
    }

    /// The snapshot the filter polls (the sidecar's loopback admin port).
    pub fn snapshot(&self) -> Result<Value> {
        let port = self.sidecar.admin;
        let reply = self.ns.run(move || admin::get(port, "/v1/snapshot"))??;
        serde_json::from_str(&reply.body).with_context(|| format!("{}: snapshot: {}", self.name, reply.body))
    }

    pub fn sidecar_log(&self) -> String {
        self.sidecar.log()
    }

    /// Publishes `revisions` into the volume, as a ConfigMap update does (one `..data` swap).
    pub fn roll_out(&mut self, revisions: &[(String, String)]) -> Result<()> {
        publish(&mut self.volume, revisions)
    }

    /// Kills the sidecar (SIGKILL), as a crashed container.
    pub fn kill_sidecar(&mut self) {
        self.sidecar.kill();
    }

    /// A filter stat of this host's Envoy.
    pub fn filter_stat(&self, build: Build, name: &str) -> u64 {
        self.envoy.stat(&format!("{}{name}", build.stat_prefix())).unwrap_or(0)
    }

    pub fn volume_dir(&self) -> PathBuf {
        self.volume.dir().to_path_buf()
    }

    /// Waits until this host's filter has installed a snapshot on every worker.
    pub async fn wait_for_snapshot(&self, build: Build) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.filter_stat(build, "switchyard.sidecar.snapshots") < build.snapshot_installs(1) {
            if std::time::Instant::now() > deadline {
                bail!("{}: the filter installed no snapshot in 30 s; Envoy's log ends:\n{}", self.name, envoy::tail(&self.envoy.log(), 30));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

fn publish(volume: &mut Volume, revisions: &[(String, String)]) -> Result<()> {
    let files: Vec<(&str, &str)> = revisions.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    volume.publish(&files, true).context("publish the schema volume")
}
