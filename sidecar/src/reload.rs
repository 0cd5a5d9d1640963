//! Loading the repository and swapping versions in without dropping a request.
//!
//! A reload (at start, on a file change, SIGHUP or `POST /v1/reload`) reads the repository,
//! verifies every selected file against `SHA256SUMS`, builds and warms up sessions for what
//! is new or changed, then swaps the routing table in one atomic store. Anything that fails
//! is logged, counted and recorded, and whatever served before goes on serving.

use crate::batch::{BatchPolicy, BulkInstance, Queue, TopUp};
use crate::config::{Config, ModelPolicy};
use crate::metrics::{FailureLabels, Metrics, OutcomeLabels};
use crate::models::{unix_ms, ModelSet, ModelVersion, Rejected, Routing};
use crate::onnx::{Engine, Runtime};
use crate::repository::{self, Manifest, ModelConfig, ModelOnDisk, Rejection};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// What a reload did, as returned by `POST /v1/reload`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadReport {
    pub generation: u64,
    /// Versions newly loaded or replaced by a changed file.
    pub loaded: Vec<String>,
    /// Versions whose file did not change.
    pub unchanged: Vec<String>,
    /// Versions no longer selected by the policy (they finish in-flight work, then go).
    pub unloaded: Vec<String>,
    /// Versions refused, with the reason.
    pub rejected: Vec<Rejected>,
    /// Problems with the repository as a whole (nothing changed).
    pub errors: Vec<String>,
}

pub struct Reloader {
    runtime: Arc<Runtime>,
    config: Arc<Config>,
    models: Arc<ModelSet>,
    metrics: Arc<Metrics>,
    health: HealthReporter,
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        runtime: Arc<Runtime>,
        config: Arc<Config>,
        models: Arc<ModelSet>,
        metrics: Arc<Metrics>,
        health: HealthReporter,
    ) -> Self {
        Self { runtime, config, models, metrics, health, lock: tokio::sync::Mutex::new(()) }
    }

    /// Reloads the repository; concurrent calls run one after the other.
    pub async fn reload(self: &Arc<Self>, trigger: &str) -> ReloadReport {
        let _one_at_a_time = self.lock.lock().await;
        let current = self.models.routing();
        let this = Arc::clone(self);
        let planned = tokio::task::spawn_blocking(move || {
            let planned = this.plan(&current);
            // Building sessions (kept or thrown away) left the file bytes and ONNX Runtime's
            // temporaries freed in malloc's arenas; swapped-out versions purge on their own
            // once their last request is answered (see `batch`).
            if !planned.1.loaded.is_empty() || !planned.1.rejected.is_empty() {
                crate::memory::release_freed_memory();
            }
            planned
        })
        .await;
        let (routing, mut report) = match planned {
            Ok(planned) => planned,
            Err(e) => {
                let report = ReloadReport { errors: vec![format!("reload task failed: {e}")], ..Default::default() };
                self.metrics.reloads.get_or_create(&OutcomeLabels { outcome: "failed".into() }).inc();
                return report;
            }
        };
        let Some(routing) = routing else {
            tracing::error!(trigger, errors = ?report.errors, "reload failed; the served versions stay as they were");
            self.metrics.reloads.get_or_create(&OutcomeLabels { outcome: "failed".into() }).inc();
            return report;
        };
        let before = self.models.routing();
        let changed = !report.loaded.is_empty() || !report.unloaded.is_empty();
        report.generation = before.generation + u64::from(changed);
        if changed {
            let mut routing = routing;
            routing.generation = report.generation;
            for (key, v) in &before.versions {
                if !routing.versions.contains_key(key) {
                    v.metrics.loaded.set(0);
                }
            }
            for v in routing.versions.values() {
                v.metrics.loaded.set(1);
            }
            self.update_health(&before, &routing).await;
            self.models.swap(routing);
        }
        let outcome = if !report.rejected.is_empty() { "partial" } else { "ok" };
        self.metrics.reloads.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
        tracing::info!(
            trigger,
            generation = report.generation,
            loaded = ?report.loaded,
            unloaded = ?report.unloaded,
            rejected = report.rejected.len(),
            "reload done"
        );
        report
    }

    async fn update_health(&self, before: &Routing, after: &Routing) {
        let names = |r: &Routing| -> BTreeMap<String, bool> {
            let mut names = BTreeMap::new();
            for v in r.versions.values() {
                names.insert(v.name.clone(), true);
            }
            for (model, labels) in &r.labels {
                for label in labels.keys() {
                    names.insert(format!("{model}/{label}"), true);
                }
            }
            for model in r.defaults.keys() {
                names.insert(model.clone(), true);
            }
            names
        };
        let (old, new) = (names(before), names(after));
        for name in old.keys().filter(|n| !new.contains_key(*n)) {
            self.health.set_service_status(name, ServingStatus::NotServing).await;
        }
        for name in new.keys() {
            self.health.set_service_status(name, ServingStatus::Serving).await;
        }
        let overall = if after.versions.is_empty() { ServingStatus::NotServing } else { ServingStatus::Serving };
        self.health.set_service_status("", overall).await;
        self.health.set_service_status(crate::service::SERVICE_NAME, overall).await;
    }

    /// Reads the repository and builds the next routing table (blocking: reads files and
    /// builds sessions). `None` when the repository itself cannot be read.
    fn plan(&self, current: &Routing) -> (Option<Routing>, ReloadReport) {
        let mut report = ReloadReport::default();
        let on_disk = match repository::scan(&self.config.repository.path) {
            Ok(models) => models,
            Err(e) => {
                report.errors.push(e);
                return (None, report);
            }
        };
        for name in self.config.models.keys() {
            if !on_disk.iter().any(|m| &m.name == name) {
                tracing::warn!(model = name, repository = %self.config.repository.path.display(), "configured model not found in the repository");
            }
        }
        let mut next = Routing::default();
        let default_policy = ModelPolicy::default();
        for model in &on_disk {
            let policy = self.config.models.get(&model.name).unwrap_or(&default_policy);
            self.plan_model(model, policy, current, &mut next, &mut report);
        }
        for (key, v) in &current.versions {
            if !next.versions.contains_key(key) {
                report.unloaded.push(v.name.clone());
            }
        }
        next.default_model = self
            .config
            .repository
            .default_model
            .clone()
            .filter(|m| next.defaults.contains_key(m))
            .or_else(|| next.defaults.keys().next().cloned());
        if let Some(wanted) = &self.config.repository.default_model {
            if next.default_model.as_ref() != Some(wanted) {
                tracing::warn!(model = wanted, "`repository.default_model` has no served version");
            }
        }
        (Some(next), report)
    }

    fn plan_model(&self, model: &ModelOnDisk, policy: &ModelPolicy, current: &Routing, next: &mut Routing, report: &mut ReloadReport) {
        let keep_current = |next: &mut Routing| {
            for (key, v) in current.versions.range((model.name.clone(), 0)..=(model.name.clone(), u64::MAX)) {
                next.versions.insert(key.clone(), Arc::clone(v));
            }
        };
        let config_and_manifest = ModelConfig::read(&model.dir).and_then(|c| Manifest::read(&model.dir).map(|m| (c, m)));
        let (config, manifest) = match config_and_manifest {
            Ok(found) => found,
            Err(e) => {
                let selected = policy.versions.select(&model.versions);
                for &version in &selected {
                    self.reject(model, version, Rejection::Config(e.clone()), current, report);
                }
                if selected.is_empty() {
                    tracing::warn!(model = model.name, error = %e, "model directory is unusable (and has no version to serve)");
                }
                keep_current(next);
                self.finish_model(model, policy, next);
                return;
            }
        };
        // A version the policy no longer selects is dropped only once everything selected
        // in its place has loaded: a bad new file must not leave the model unserved.
        let mut rejected_any = false;
        for version in policy.versions.select(&model.versions) {
            let key = (model.name.clone(), version);
            let name = format!("{}/{version}", model.name);
            let (bytes, sha256) = match repository::read_verified(model, &manifest, version) {
                Ok(found) => found,
                Err(rejection) => {
                    rejected_any = true;
                    self.reject(model, version, rejection, current, report);
                    if let Some(v) = current.versions.get(&key) {
                        next.versions.insert(key, Arc::clone(v));
                    }
                    continue;
                }
            };
            if let Some(v) = current.versions.get(&key).filter(|v| v.sha256 == sha256 && v.config == config) {
                next.versions.insert(key, Arc::clone(v));
                report.unchanged.push(name);
                continue;
            }
            match self.load(model, version, &bytes, sha256, &config) {
                Ok(loaded) => {
                    self.models.clear_rejection(&name);
                    next.versions.insert(key, Arc::new(loaded));
                    report.loaded.push(name);
                }
                Err(rejection) => {
                    rejected_any = true;
                    self.reject(model, version, rejection, current, report);
                    if let Some(v) = current.versions.get(&key) {
                        next.versions.insert(key, Arc::clone(v));
                    }
                }
            }
        }
        if rejected_any {
            for (key, v) in current.versions.range((model.name.clone(), 0)..=(model.name.clone(), u64::MAX)) {
                if !next.versions.contains_key(key) {
                    tracing::warn!(model_version = v.name, "kept serving: a version selected to replace it was rejected");
                    next.versions.insert(key.clone(), Arc::clone(v));
                }
            }
        }
        self.finish_model(model, policy, next);
    }

    /// Sets the model's labels and default version from what `next` serves.
    fn finish_model(&self, model: &ModelOnDisk, policy: &ModelPolicy, next: &mut Routing) {
        let served: Vec<u64> =
            next.versions.range((model.name.clone(), 0)..=(model.name.clone(), u64::MAX)).map(|(k, _)| k.1).collect();
        let Some(&highest) = served.last() else { return };
        let labels: BTreeMap<String, u64> =
            policy.labels.iter().filter(|(_, v)| served.contains(v)).map(|(k, v)| (k.clone(), *v)).collect();
        let wanted = policy
            .default_version
            .as_deref()
            .and_then(|d| d.parse::<u64>().ok().or_else(|| policy.labels.get(d).copied()));
        let default = match wanted {
            Some(v) if served.contains(&v) => v,
            Some(v) => {
                tracing::warn!(model = model.name, wanted = v, using = highest, "default version is not served; using the highest served");
                highest
            }
            None => highest,
        };
        next.defaults.insert(model.name.clone(), default);
        next.labels.insert(model.name.clone(), labels);
    }

    fn reject(&self, model: &ModelOnDisk, version: u64, rejection: Rejection, current: &Routing, report: &mut ReloadReport) {
        let name = format!("{}/{version}", model.name);
        let still_serving = current.versions.contains_key(&(model.name.clone(), version));
        tracing::error!(
            model_version = name,
            reason = rejection.reason(),
            error = %rejection,
            previous_still_serving = still_serving,
            "model version rejected"
        );
        self.metrics
            .load_failures
            .get_or_create(&FailureLabels { model: model.name.clone(), version: version.to_string(), reason: rejection.reason().into() })
            .inc();
        let rejected = Rejected {
            name,
            reason: rejection.reason().into(),
            error: rejection.to_string(),
            at_unix_ms: unix_ms(SystemTime::now()),
            previous_still_serving: still_serving,
        };
        self.models.record_rejection(rejected.clone());
        report.rejected.push(rejected);
    }

    /// Builds, checks and warms up one session per instance, then starts the queue.
    fn load(&self, model: &ModelOnDisk, version: u64, bytes: &[u8], sha256: String, config: &ModelConfig) -> Result<ModelVersion, Rejection> {
        let name = format!("{}/{version}", model.name);
        let batching = &self.config.batching;
        let started = std::time::Instant::now();
        // Built at background priority; the inference threads are started below, on this
        // thread, so that they serve at the sidecar's own priority.
        let bulk_nice = batching.priority.bulk();
        let build = || -> Result<Built, Rejection> {
            let mut provider = crate::config::Provider::Cpu;
            let mut engine = |threads_nice: i32| -> Result<Engine, Rejection> {
                let (session, used) = self.runtime.session(bytes, &name, threads_nice).map_err(Rejection::Invalid)?;
                provider = used;
                let mut engine = Engine::new(session, config.clone()).map_err(Rejection::Config)?;
                engine.warm_up(batching.max_batch_size).map_err(|e| Rejection::Invalid(format!("warm-up failed: {e}")))?;
                Ok(engine)
            };
            let engines = (0..batching.instances).map(|_| engine(0)).collect::<Result<Vec<_>, _>>()?;
            let bulk = bulk_nice.map(&mut engine).transpose()?;
            Ok(Built { engines, bulk, provider, built_at_nice: crate::background::own_nice() })
        };
        let Built { engines, bulk, provider, built_at_nice } = crate::background::run(&format!("load {name}"), self.config.runtime.load_nice, build)
            .map_err(|e| Rejection::Unreadable(format!("cannot start the thread that builds its sessions: {e}")))??;
        let policy = BatchPolicy {
            max_batch_size: batching.max_batch_size,
            max_queue_delay: Duration::from_micros(batching.max_queue_delay_us),
            queue_capacity: batching.level_capacities(),
            top_up: if batching.priority.top_up { TopUp::FromLowerLevels } else { TopUp::No },
        };
        let metrics = self.metrics.version(&model.name, version, policy.queue_capacity.len());
        let bulk = bulk.zip(bulk_nice).map(|(engine, nice)| BulkInstance { engine, nice });
        let queue = Queue::spawn(&name, engines, bulk, policy, metrics.clone());
        let class_keys = config.outputs.class_labels.iter().map(|label| format!("class/{label}")).collect();
        tracing::info!(
            model_version = name,
            sha256,
            %provider,
            ms = started.elapsed().as_millis() as u64,
            built_at_nice,
            "model version loaded and warmed up"
        );
        Ok(ModelVersion {
            model: model.name.clone(),
            version,
            name,
            sha256,
            config: config.clone(),
            class_keys,
            queue,
            metrics,
            provider,
            loaded_at: SystemTime::now(),
        })
    }
}

/// The sessions of one version, built and warmed up (at `built_at_nice`), not yet serving.
struct Built {
    engines: Vec<Engine>,
    /// The bulk instance's, with `batching.priority.bulk_nice`.
    bulk: Option<Engine>,
    provider: crate::config::Provider,
    built_at_nice: Option<i32>,
}
