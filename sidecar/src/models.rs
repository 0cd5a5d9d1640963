//! The model versions being served, and how a request picks one.
//!
//! The routing table ([`Routing`]) is immutable and swapped atomically on reload; a request
//! holds an `Arc` of the [`ModelVersion`] it resolved, so a swapped-out version lives (and its
//! inference threads keep running) until its last request is answered.

use crate::batch::Queue;
use crate::chaos::Fault;
use crate::config::Provider;
use crate::metrics::VersionMetrics;
use crate::repository::ModelConfig;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tonic::Status;

/// One loaded `<model>/<version>`: its session(s) behind a batching queue.
pub struct ModelVersion {
    pub model: String,
    pub version: u64,
    /// `<model>/<version>`, as reported in responses, metrics and health service names.
    pub name: String,
    pub sha256: String,
    pub config: ModelConfig,
    /// `class/<label>` per class-score column, precomputed for responses.
    pub class_keys: Vec<String>,
    pub queue: Queue,
    pub metrics: VersionMetrics,
    pub provider: Provider,
    pub loaded_at: SystemTime,
}

/// What a request can be routed to: an immutable table, replaced whole on reload.
#[derive(Default)]
pub struct Routing {
    pub versions: BTreeMap<(String, u64), Arc<ModelVersion>>,
    /// The version answering unpinned requests, per model.
    pub defaults: BTreeMap<String, u64>,
    /// Label → version, per model (only labels whose version is served).
    pub labels: BTreeMap<String, BTreeMap<String, u64>>,
    pub default_model: Option<String>,
    /// Bumped on every change, so pollers can tell a new table from the old one.
    pub generation: u64,
}

impl Routing {
    /// Resolves a version header value: empty → the default model's default version;
    /// `2` or `canary` → that version of the default model; `model/2`, `model/canary` or
    /// `model` → that model's.
    pub fn resolve(&self, pin: Option<&str>) -> Result<&Arc<ModelVersion>, Status> {
        let pin = pin.map(str::trim).unwrap_or("");
        let (model, version) = match pin.split_once('/') {
            Some((m, v)) => (Some(m), Some(v)),
            None if pin.is_empty() => (None, None),
            None if self.defaults.contains_key(pin) => (Some(pin), None),
            None => (None, Some(pin)),
        };
        let model = match model.or(self.default_model.as_deref()) {
            Some(m) => m,
            None => return Err(Status::unavailable("no model is loaded")),
        };
        let number = match version {
            None | Some("") => self.defaults.get(model).copied(),
            Some(v) => v.parse::<u64>().ok().or_else(|| self.labels.get(model).and_then(|l| l.get(v)).copied()),
        };
        number
            .and_then(|n| self.versions.get(&(model.to_string(), n)))
            .ok_or_else(|| {
                let served: Vec<&str> = self.versions.values().map(|v| v.name.as_str()).collect();
                Status::not_found(format!(
                    "model version {:?} is not served (serving: {}; pin with `<version>`, `<label>` or `<model>/<version>`)",
                    if pin.is_empty() { model } else { pin },
                    served.join(", ")
                ))
            })
    }

    fn labels_of(&self, model: &str, version: u64) -> Vec<String> {
        self.labels
            .get(model)
            .map(|l| l.iter().filter(|(_, v)| **v == version).map(|(k, _)| k.clone()).collect())
            .unwrap_or_default()
    }
}

/// The served versions plus the record of rejected loads.
#[derive(Default)]
pub struct ModelSet {
    routing: ArcSwap<Routing>,
    rejections: Mutex<BTreeMap<String, Rejected>>,
}

impl ModelSet {
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    pub fn swap(&self, routing: Routing) {
        self.routing.store(Arc::new(routing));
    }

    pub fn record_rejection(&self, rejected: Rejected) {
        if let Ok(mut r) = self.rejections.lock() {
            r.insert(rejected.name.clone(), rejected);
        }
    }

    /// Forgets the rejection of a version that has since loaded.
    pub fn clear_rejection(&self, name: &str) {
        if let Ok(mut r) = self.rejections.lock() {
            r.remove(name);
        }
    }

    /// Per-version state for the admin port and the filter's snapshot.
    pub fn snapshot(&self, faults: &[Fault]) -> ModelsSnapshot {
        let routing = self.routing();
        let versions = routing
            .versions
            .values()
            .map(|v| {
                let fault = faults.iter().find(|f| f.target == v.name).cloned();
                VersionState {
                name: v.name.clone(),
                model: v.model.clone(),
                version: v.version,
                labels: routing.labels_of(&v.model, v.version),
                default: routing.defaults.get(&v.model) == Some(&v.version),
                state: ServingState::Serving,
                healthy: !fault.as_ref().is_some_and(|f| f.unhealthy),
                health_service: v.name.clone(),
                sha256: v.sha256.clone(),
                provider: v.provider.to_string(),
                loaded_at_unix_ms: unix_ms(v.loaded_at),
                queue_depth: v.queue.depth(),
                queue_capacity: v.queue.capacity(),
                priorities: v
                    .queue
                    .levels()
                    .into_iter()
                    .map(|l| LevelState { level: l.priority.index() + 1, queue_depth: l.depth, queue_capacity: l.capacity })
                    .collect(),
                fault,
            }})
            .collect();
        let rejected = self.rejections.lock().map(|r| r.values().cloned().collect()).unwrap_or_default();
        ModelsSnapshot { generation: routing.generation, default_model: routing.default_model.clone(), versions, rejected }
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `GET /v1/models`: what the sidecar serves, per version. Stable JSON shape for pollers
/// (the Switchyard filter merges it into its snapshot).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelsSnapshot {
    /// Increases whenever the set of served versions or their files change.
    pub generation: u64,
    pub default_model: Option<String>,
    pub versions: Vec<VersionState>,
    /// The latest failed load per `<model>/<version>` (cleared when that version loads).
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionState {
    /// `<model>/<version>`: what responses report in `model_version`.
    pub name: String,
    pub model: String,
    pub version: u64,
    /// Labels naming this version (`stable`, `canary`, ...).
    pub labels: Vec<String>,
    /// Whether unpinned requests for this model land here.
    pub default: bool,
    pub state: ServingState,
    /// True when the version accepts requests (the filter treats false as "degrade now").
    pub healthy: bool,
    /// The `grpc.health.v1` service name reporting this version.
    pub health_service: String,
    pub sha256: String,
    /// Execution provider in use (`cpu`, `cuda`, `tensorrt`).
    pub provider: String,
    pub loaded_at_unix_ms: u64,
    /// Requests admitted and not yet answered, and the limit beyond which new ones get
    /// `RESOURCE_EXHAUSTED`: every priority level together.
    pub queue_depth: usize,
    pub queue_capacity: usize,
    /// The same per priority level, highest first.
    #[serde(default)]
    pub priorities: Vec<LevelState>,
    /// The chaos fault injected into this version, if any.
    pub fault: Option<Fault>,
}

/// One priority level of a version's queue.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct LevelState {
    /// 1 is the highest.
    pub level: usize,
    pub queue_depth: usize,
    pub queue_capacity: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServingState {
    Serving,
}

/// A model file that was refused, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rejected {
    pub name: String,
    /// Short machine-readable reason, as in the `model_load_failures` metric.
    pub reason: String,
    pub error: String,
    pub at_unix_ms: u64,
    /// True when an earlier load of this version goes on serving.
    pub previous_still_serving: bool,
}
