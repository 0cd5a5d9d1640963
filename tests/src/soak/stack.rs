//! The soak's stack: the demo's (the sidecar as `sidecar/demo.toml` configures it, Envoy
//! with the plugin configuration `envoy/envoy.yaml` ships) on free ports, with a private
//! copy of the model repository and a schema directory the schedule changes under it.
//!
//! Ports are fixed for the whole run, so a restarted sidecar is found where Envoy's
//! clusters point.

use crate::envoy::{Cluster, Envoy, EnvoyConfig};
use crate::sidecar::{self, revisions, Sidecar, CANARY};
use crate::{admin, free_port, paths};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The model whose canary version the schedule swaps, and that version's number.
const MODEL: &str = "orientation";
pub const CANARY_VERSION: u64 = 2;

/// The processes whose memory the soak samples; they change on restarts.
#[derive(Default)]
pub struct Pids {
    pub envoy: AtomicU32,
    pub sidecar: AtomicU32,
}

pub struct Stack {
    pub envoy: Envoy,
    sidecar: Option<Sidecar>,
    pub pids: Arc<Pids>,
    /// The demo's plugin configuration (what LDS pushes start from).
    pub plugin_config: Value,
    /// The plugin configuration Envoy last accepted: what the harness, as a control plane,
    /// offers again after a rejected push (see `events`).
    pub accepted_config: String,
    repo: PathBuf,
    schemas: PathBuf,
    sidecar_config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start() -> Result<Stack> {
        let dir = tempfile::tempdir()?;
        let repo = dir.path().join("models");
        copy_repository(&sidecar::models(), &repo)?;
        let schemas = dir.path().join("schemas");
        std::fs::create_dir_all(&schemas)?;
        revisions::write(&schemas, "001-features", &revisions::current());
        revisions::write(&schemas, "002-features", &revisions::with_new_field());

        let ports = SidecarPorts { stable: free_port(), canary: free_port(), fallback: free_port(), admin: free_port() };
        let envoy_admin = free_port();
        let sidecar_config = dir.path().join("sidecar.toml");
        std::fs::write(&sidecar_config, sidecar_toml(&ports, envoy_admin, &repo, &schemas, &dir.path().join("schema-state"))?)?;
        let sidecar = Sidecar::start_config(&sidecar_config, tempfile::tempdir()?).await;

        let plugin_config = demo_plugin_config()?;
        let clusters = vec![
            Cluster::new("features_stable", ports.stable),
            Cluster::new("features_canary", ports.canary),
            Cluster::new("features_fallback", ports.fallback),
        ];
        let mut config = EnvoyConfig::new(clusters, plugin_config.to_string());
        config.http1_clusters = vec![Cluster::new("sidecar_admin", ports.admin)];
        config.admin_port = Some(envoy_admin);
        config.hot_restart = true;
        let envoy = Envoy::start(config).await;
        let pids = Arc::new(Pids::default());
        pids.envoy.store(envoy.pid(), Ordering::Relaxed);
        pids.sidecar.store(sidecar.pid(), Ordering::Relaxed);
        let accepted_config = plugin_config.to_string();
        let stack = Stack { envoy, sidecar: Some(sidecar), pids, plugin_config, accepted_config, repo, schemas, sidecar_config, _dir: dir };
        crate::eventually("the filter's first snapshot", Duration::from_secs(20), async || {
            (stack.envoy.filter_stat("switchyard.sidecar.snapshots") >= stack.envoy.snapshot_installs()).then_some(())
        })
        .await;
        Ok(stack)
    }

    pub fn sidecar(&self) -> Result<&Sidecar> {
        self.sidecar.as_ref().context("the sidecar is not running")
    }

    /// `GET /v1/models` of the sidecar.
    pub fn models(&self) -> Result<Value> {
        let reply = admin::get(self.sidecar()?.admin, "/v1/models")?;
        serde_json::from_str(&reply.body).with_context(|| format!("/v1/models: {}", reply.body))
    }

    /// The sha256 the sidecar serves the canary version with.
    pub fn canary_sha(&self) -> Result<Option<String>> {
        let name = format!("{MODEL}/{CANARY_VERSION}");
        Ok(self.models()?["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name.as_str())
            .and_then(|v| v["sha256"].as_str().map(str::to_owned)))
    }

    /// Why the sidecar refused the canary version's file, if it did.
    pub fn canary_rejection(&self) -> Result<Option<String>> {
        let name = format!("{MODEL}/{CANARY_VERSION}");
        Ok(self.models()?["rejected"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == name.as_str())
            .and_then(|r| r["reason"].as_str().map(str::to_owned)))
    }

    /// Writes `bytes` as the canary version's file and `sha256` as its manifest line.
    pub fn write_canary(&self, bytes: &[u8], sha256: &str) -> Result<()> {
        let dir = self.repo.join(MODEL).join(CANARY_VERSION.to_string());
        let tmp = dir.join(".model.onnx.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, dir.join("model.onnx"))?;
        let manifest = self.repo.join(MODEL).join(sidecar_manifest());
        let file = format!("{CANARY_VERSION}/model.onnx");
        let mut lines: Vec<String> = std::fs::read_to_string(&manifest)?
            .lines()
            .filter(|l| !l.ends_with(&format!("  {file}")))
            .map(str::to_owned)
            .collect();
        lines.push(format!("{sha256}  {file}"));
        let tmp = manifest.with_extension("tmp");
        std::fs::write(&tmp, lines.join("\n") + "\n")?;
        std::fs::rename(&tmp, manifest)?;
        Ok(())
    }

    /// The canary version's file as the setup prepared it.
    pub fn canary_source(&self) -> Result<Vec<u8>> {
        let path = sidecar::models().join(MODEL).join(CANARY_VERSION.to_string()).join("model.onnx");
        std::fs::read(&path).with_context(|| path.display().to_string())
    }

    /// Writes a schema revision entry (`NNN-features`).
    pub fn write_revision(&self, entry: &str, proto: &str) {
        revisions::write(&self.schemas, entry, proto);
    }

    pub fn remove_revision(&self, entry: &str) -> Result<()> {
        std::fs::remove_dir_all(self.schemas.join(entry)).with_context(|| format!("remove schema entry {entry}"))
    }

    /// The registry's revisions of `features.v1`, by number.
    pub fn registry_revisions(&self) -> Result<Vec<u64>> {
        let reply = admin::get(self.sidecar()?.admin, "/v1/snapshot")?;
        let snapshot: Value = serde_json::from_str(&reply.body)?;
        Ok(snapshot["schema"]["subjects"]["features.v1"]["revisions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["revision"].as_u64())
            .collect())
    }

    /// Revisions the registry's compatibility gate has refused so far.
    pub fn revisions_rejected(&self) -> Result<u64> {
        Ok(self.sidecar()?.metric_sum("switchyard_schema_revisions_rejected_total")?)
    }

    /// Sets (`Some`) or clears (`None`) the canary's chaos.
    pub fn chaos(&self, fault: Option<Value>) -> Result<()> {
        let port = self.sidecar()?.admin;
        let reply = match fault {
            Some(mut f) => {
                f["target"] = CANARY.into();
                admin::post(port, "/v1/chaos", &f.to_string())?
            }
            None => admin::request(port, "DELETE", "/v1/chaos", "")?,
        };
        if reply.status >= 300 {
            bail!("chaos refused: {} {}", reply.status, reply.body);
        }
        Ok(())
    }

    /// SIGTERM: the sidecar drains and exits (within its drain timeout).
    pub fn stop_sidecar(&mut self) -> Result<()> {
        let mut sidecar = self.sidecar.take().context("the sidecar is not running")?;
        match sidecar.terminate(Duration::from_secs(20)) {
            Some(status) if status.success() => Ok(()),
            Some(status) => bail!("the sidecar exited with {status} after SIGTERM; its log ends:\n{}", crate::envoy::tail(&sidecar.log(), 20)),
            None => bail!("the sidecar did not exit within 20 s of SIGTERM; its log ends:\n{}", crate::envoy::tail(&sidecar.log(), 20)),
        }
    }

    /// Starts the sidecar again with the same configuration (the same ports).
    pub async fn start_sidecar(&mut self) -> Result<()> {
        let sidecar = Sidecar::start_config(&self.sidecar_config, tempfile::tempdir()?).await;
        self.pids.sidecar.store(sidecar.pid(), Ordering::Relaxed);
        self.sidecar = Some(sidecar);
        Ok(())
    }

    /// Hot-restarts Envoy (`--restart-epoch`).
    pub async fn hot_restart_envoy(&mut self) -> Result<()> {
        self.envoy.hot_restart().await.map_err(anyhow::Error::msg)?;
        self.pids.envoy.store(self.envoy.pid(), Ordering::Relaxed);
        Ok(())
    }

}

struct SidecarPorts {
    stable: u16,
    canary: u16,
    fallback: u16,
    admin: u16,
}

fn sidecar_manifest() -> &'static str {
    "SHA256SUMS"
}

/// `sidecar/demo.toml` with this run's ports and directories.
fn sidecar_toml(ports: &SidecarPorts, envoy_admin: u16, repo: &Path, schemas: &Path, state: &Path) -> Result<String> {
    let path = paths::root().join("sidecar/demo.toml");
    let mut config: toml::Table = toml::from_str(&std::fs::read_to_string(&path)?).with_context(|| path.display().to_string())?;
    let at = |port: u16| toml::Value::String(format!("127.0.0.1:{port}"));
    config.insert("listen".into(), at(ports.stable));
    config.insert("admin_listen".into(), at(ports.admin));
    config.insert("envoy_admin".into(), at(envoy_admin));
    let table = |config: &mut toml::Table, key: &str| -> Result<toml::Table> {
        config.get(key).and_then(|v| v.as_table()).cloned().with_context(|| format!("sidecar/demo.toml has no [{key}]"))
    };
    let mut repository = table(&mut config, "repository")?;
    repository.insert("path".into(), toml::Value::String(repo.display().to_string()));
    config.insert("repository".into(), repository.into());
    let mut schema = table(&mut config, "schema")?;
    schema.insert("dir".into(), toml::Value::String(schemas.display().to_string()));
    schema.insert("state_dir".into(), toml::Value::String(state.display().to_string()));
    config.insert("schema".into(), schema.into());
    let endpoints = config.get_mut("endpoints").and_then(|e| e.as_array_mut()).context("sidecar/demo.toml has no [[endpoints]]")?;
    for endpoint in endpoints.iter_mut().filter_map(|e| e.as_table_mut()) {
        let port = match endpoint.get("default_version").and_then(|v| v.as_str()) {
            Some(sidecar::CANARY) => ports.canary,
            Some(sidecar::FALLBACK) => ports.fallback,
            other => bail!("sidecar/demo.toml: an endpoint for {other:?}, which the soak does not know"),
        };
        endpoint.insert("listen".into(), at(port));
    }
    Ok(toml::to_string(&config)?)
}

/// The plugin configuration the demo's Envoy runs (`envoy/envoy.yaml`; the native demo's
/// differs only in how Envoy reads the chosen cluster, which the testbed's routes set).
fn demo_plugin_config() -> Result<Value> {
    let file = "envoy/envoy.yaml";
    let path = paths::root().join(file);
    let yaml: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?).with_context(|| path.display().to_string())?;
    let found = find_plugin_config(&yaml).with_context(|| format!("{file}: no Switchyard filter configuration found"))?;
    serde_json::from_str(&found).with_context(|| format!("{file}: the Switchyard configuration is not JSON"))
}

/// The first string value under a `configuration`/`filter_config` key that parses as a
/// plugin configuration (an object with `routes`).
fn find_plugin_config(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                if matches!(k.as_str(), Some("configuration" | "filter_config")) {
                    let text = v.get("value").and_then(|t| t.as_str()).or_else(|| v.as_str());
                    if let Some(text) = text {
                        if serde_json::from_str::<Value>(text).is_ok_and(|j| j.get("routes").is_some()) {
                            return Some(text.to_owned());
                        }
                    }
                }
                if let Some(found) = find_plugin_config(v) {
                    return Some(found);
                }
            }
            None
        }
        serde_yaml::Value::Sequence(s) => s.iter().find_map(find_plugin_config),
        _ => None,
    }
}

/// Copies the prepared model repository (configs, manifests, model files).
fn copy_repository(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_repository(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
