//! Prometheus metrics, served by the admin port at `/metrics`.
//!
//! Each loaded model version caches its own handles ([`VersionMetrics`]) so the hot path
//! does no label hashing beyond the per-status request counter.

use crate::priority::Priority;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub model: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub version: String,
    /// The gRPC status as a lower-case code name (`ok`, `invalid_argument`, ...).
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabels {
    pub model: String,
    pub version: String,
    /// The priority level, 1-based (`1` is the highest).
    pub priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub model: String,
    pub version: String,
    /// `deadline` or `cancelled`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub model: String,
    pub version: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLookupLabels {
    pub model: String,
    pub version: String,
    /// `memory` or `redis`.
    pub tier: String,
    /// `hit` or `miss`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 16))
}

fn batch_sizes() -> Histogram {
    Histogram::new([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0])
}

pub struct Metrics {
    pub registry: Registry,
    requests: Family<RequestLabels, Counter>,
    dropped: Family<DropLabels, Counter>,
    queue_seconds: HistogramFamily<VersionLabels>,
    inference_seconds: HistogramFamily<VersionLabels>,
    preprocess_seconds: HistogramFamily<VersionLabels>,
    batch_size: HistogramFamily<VersionLabels>,
    queue_depth: Family<VersionLabels, Gauge>,
    priority_queue_depth: Family<PriorityLabels, Gauge>,
    priority_queue_seconds: HistogramFamily<PriorityLabels>,
    priority_rejected: Family<PriorityLabels, Counter>,
    loaded: Family<VersionLabels, Gauge>,
    pub load_failures: Family<FailureLabels, Counter>,
    pub reloads: Family<OutcomeLabels, Counter>,
    /// Set from jemalloc's statistics at each scrape (see `memory::heap_stats`).
    heap_in_use: Gauge,
    heap_free: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard_sidecar");
        let requests = Family::<RequestLabels, Counter>::default();
        let dropped = Family::<DropLabels, Counter>::default();
        let queue_seconds = HistogramFamily::new_with_constructor(seconds as fn() -> Histogram);
        let inference_seconds = HistogramFamily::new_with_constructor(seconds as fn() -> Histogram);
        let preprocess_seconds = HistogramFamily::new_with_constructor(seconds as fn() -> Histogram);
        let batch_size = HistogramFamily::new_with_constructor(batch_sizes as fn() -> Histogram);
        let queue_depth = Family::<VersionLabels, Gauge>::default();
        let priority_queue_depth = Family::<PriorityLabels, Gauge>::default();
        let priority_queue_seconds = HistogramFamily::new_with_constructor(seconds as fn() -> Histogram);
        let priority_rejected = Family::<PriorityLabels, Counter>::default();
        let loaded = Family::<VersionLabels, Gauge>::default();
        let load_failures = Family::<FailureLabels, Counter>::default();
        let reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register("requests", "features.v1 requests by model version and gRPC status", requests.clone());
        registry.register(
            "dropped",
            "Queued requests dropped before inference (deadline passed or client gone)",
            dropped.clone(),
        );
        registry.register("queue_seconds", "Time from admission to the start of inference", queue_seconds.clone());
        registry.register("inference_seconds", "ONNX Runtime time per batch", inference_seconds.clone());
        registry.register("preprocess_seconds", "Decode and pre-process time per image", preprocess_seconds.clone());
        registry.register("batch_size", "Images per inference batch", batch_size.clone());
        registry.register("queue_depth", "Requests admitted and not yet answered", queue_depth.clone());
        registry.register(
            "priority_queue_depth",
            "Requests admitted and not yet answered, per priority level",
            priority_queue_depth.clone(),
        );
        registry.register(
            "priority_queue_seconds",
            "Time from admission to the start of inference, per priority level",
            priority_queue_seconds.clone(),
        );
        registry.register(
            "priority_rejected",
            "Realtime requests refused at once (RESOURCE_EXHAUSTED) because their priority level was full",
            priority_rejected.clone(),
        );
        registry.register("loaded", "1 for each model version currently serving", loaded.clone());
        registry.register(
            "model_load_failures",
            "Model versions rejected at load (checksum, corrupt file, bad config)",
            load_failures.clone(),
        );
        registry.register("reloads", "Repository reloads by outcome", reloads.clone());
        let (heap_in_use, heap_free) = (Gauge::default(), Gauge::default());
        registry.register("heap_in_use_bytes", "Bytes malloc (jemalloc) has handed out, ONNX Runtime's included (read at scrape)", heap_in_use.clone());
        registry.register(
            "heap_free_bytes",
            "Resident bytes malloc (jemalloc) holds beyond those in use: freed pages not yet given back, fragmentation, its metadata (read at scrape)",
            heap_free.clone(),
        );
        Self {
            registry,
            requests,
            dropped,
            queue_seconds,
            inference_seconds,
            preprocess_seconds,
            batch_size,
            queue_depth,
            priority_queue_depth,
            priority_queue_seconds,
            priority_rejected,
            loaded,
            load_failures,
            reloads,
            heap_in_use,
            heap_free,
        }
    }

    /// Handles for one model version whose queue has `levels` priority levels.
    pub fn version(&self, model: &str, version: u64, levels: usize) -> VersionMetrics {
        let labels = VersionLabels { model: model.into(), version: version.to_string() };
        let drop = |reason: &str| {
            self.dropped.get_or_create_owned(&DropLabels {
                model: model.into(),
                version: version.to_string(),
                reason: reason.into(),
            })
        };
        VersionMetrics {
            requests: self.requests.clone(),
            labels: labels.clone(),
            queue_seconds: self.queue_seconds.get_or_create_owned(&labels),
            inference_seconds: self.inference_seconds.get_or_create_owned(&labels),
            preprocess_seconds: self.preprocess_seconds.get_or_create_owned(&labels),
            batch_size: self.batch_size.get_or_create_owned(&labels),
            queue_depth: self.queue_depth.get_or_create_owned(&labels),
            dropped_deadline: drop("deadline"),
            dropped_cancelled: drop("cancelled"),
            loaded: self.loaded.get_or_create_owned(&labels),
            levels: Priority::all(levels).map(|p| self.level(&labels, p)).collect(),
        }
    }

    fn level(&self, version: &VersionLabels, priority: Priority) -> LevelMetrics {
        let labels = PriorityLabels { model: version.model.clone(), version: version.version.clone(), priority: priority.to_string() };
        LevelMetrics {
            queue_depth: self.priority_queue_depth.get_or_create_owned(&labels),
            queue_seconds: self.priority_queue_seconds.get_or_create_owned(&labels),
            rejected: self.priority_rejected.get_or_create_owned(&labels),
        }
    }

    /// Registers the feature cache's metrics (only when the cache is on, so a sidecar without
    /// it shows none).
    pub fn register_cache(&mut self) -> CacheMetrics {
        let metrics = CacheMetrics::default();
        let registry = &mut self.registry;
        registry.register(
            "cache_lookups",
            "Feature cache lookups by tier (memory, then redis) and result (hit, miss); a Redis skipped while it is down is not counted",
            metrics.lookups.clone(),
        );
        registry.register("cache_evictions", "Entries the in-process tier dropped (or refused) to stay within cache.max_bytes", metrics.evictions.clone());
        registry.register(
            "cache_redis_errors",
            "Redis failures by kind (connect, timeout, command, corrupt); each one degraded to no shared cache, never a failed request",
            metrics.redis_errors.clone(),
        );
        registry.register("cache_bytes", "Bytes held by the in-process tier", metrics.bytes.clone());
        registry.register("cache_entries", "Entries held by the in-process tier", metrics.entries.clone());
        metrics
    }

    /// A request that failed before a model version was chosen (e.g. an unknown version).
    pub fn unrouted(&self, status: tonic::Code) {
        self.requests
            .get_or_create(&RequestLabels { model: String::new(), version: String::new(), status: code_name(status) })
            .inc();
    }

    pub fn encode(&self) -> String {
        if let Some(heap) = crate::memory::heap_stats() {
            self.heap_in_use.set(i64::try_from(heap.in_use).unwrap_or(i64::MAX));
            self.heap_free.set(i64::try_from(heap.free).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[derive(Clone)]
pub struct VersionMetrics {
    requests: Family<RequestLabels, Counter>,
    labels: VersionLabels,
    pub queue_seconds: Histogram,
    pub inference_seconds: Histogram,
    pub preprocess_seconds: Histogram,
    pub batch_size: Histogram,
    pub queue_depth: Gauge,
    pub dropped_deadline: Counter,
    pub dropped_cancelled: Counter,
    pub loaded: Gauge,
    /// Per priority level, highest first.
    pub levels: Vec<LevelMetrics>,
}

/// One priority level of one version.
#[derive(Clone)]
pub struct LevelMetrics {
    pub queue_depth: Gauge,
    pub queue_seconds: Histogram,
    pub rejected: Counter,
}

impl VersionMetrics {
    pub fn request(&self, status: tonic::Code) {
        self.requests
            .get_or_create(&RequestLabels {
                model: self.labels.model.clone(),
                version: self.labels.version.clone(),
                status: code_name(status),
            })
            .inc();
    }
}

/// The feature cache's metrics (see `cache`).
#[derive(Clone, Default)]
pub struct CacheMetrics {
    lookups: Family<CacheLookupLabels, Counter>,
    pub evictions: Counter,
    redis_errors: Family<KindLabels, Counter>,
    pub bytes: Gauge,
    pub entries: Gauge,
}

impl CacheMetrics {
    /// One lookup of `model`/`version`'s key in `tier`.
    pub fn lookup(&self, model: &str, version: u64, tier: &str, hit: bool) {
        let labels = CacheLookupLabels {
            model: model.to_owned(),
            version: version.to_string(),
            tier: tier.to_owned(),
            result: if hit { "hit" } else { "miss" }.to_owned(),
        };
        self.lookups.get_or_create(&labels).inc();
    }

    /// One Redis failure: `connect`, `timeout`, `command` or `corrupt`.
    pub fn redis_error(&self, kind: &str) {
        self.redis_errors.get_or_create(&KindLabels { kind: kind.to_owned() }).inc();
    }
}

/// `DeadlineExceeded` → `deadline_exceeded`.
pub fn code_name(code: tonic::Code) -> String {
    let name = format!("{code:?}");
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn code_names() {
        assert_eq!(super::code_name(tonic::Code::DeadlineExceeded), "deadline_exceeded");
        assert_eq!(super::code_name(tonic::Code::Ok), "ok");
    }
}
