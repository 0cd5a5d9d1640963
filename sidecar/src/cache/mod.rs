//! The feature cache (cache-aside, `[cache]`, off by default): an answer already computed for
//! the same image bytes by the same model file with the same settings is served again without
//! a queue slot, pre-processing or inference.
//!
//! * [`key`]: what an answer depends on, hashed — the image's SHA-256, the model file's
//!   SHA-256 (from `SHA256SUMS`, checked at load), the version's input and output settings,
//!   the image limits and the pre-processing code's scheme. A hot swap changes the key, so
//!   it can never serve a stale vector.
//! * [`memory`]: the in-process tier, bounded in bytes.
//! * [`shared`]: the optional Redis tier, which a Redis down or slow degrades to nothing.
//! * [`value`]: what is cached (vector and quality scores) and its bytes in Redis.
//!
//! Lookups go memory, then Redis; a miss is computed as usual and fills both (Redis in the
//! background). A Redis hit is kept in memory too. Concurrent misses of one image each
//! compute it (no single flight: the second answer is the same and simply overwrites).

mod key;
mod memory;
mod shared;
mod value;

pub use key::{image_digest, Key};
pub use value::Features;

use crate::config::CacheConfig;
use crate::metrics::CacheMetrics;
use crate::models::ModelVersion;
use crate::preprocess::Limits;
use memory::Memory;
use shared::{Lookup, Shared};
use std::sync::Arc;
use std::time::Duration;

/// Response metadata on `ExtractRealtime` when the cache is on: [`Source::header_value`].
pub const HEADER: &str = "x-switchyard-cache";
/// Response metadata on `ExtractBatch` when the cache is on: how many of its images were
/// answered from the cache.
pub const BATCH_HEADER: &str = "x-switchyard-cache-hits";

/// Images at least this large are hashed on the blocking pool rather than on a runtime
/// thread (SHA-256 runs at roughly 0.5–2 GB/s: 256 KiB is well under a millisecond).
const HASH_INLINE_MAX: usize = 256 << 10;

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Memory,
    Redis,
    /// Computed (and now cached).
    Miss,
}

impl Source {
    /// The value of [`HEADER`]: `hit-memory`, `hit-redis` or `miss`.
    pub fn header_value(self) -> &'static str {
        match self {
            Source::Memory => "hit-memory",
            Source::Redis => "hit-redis",
            Source::Miss => "miss",
        }
    }

    pub fn is_hit(self) -> bool {
        self != Source::Miss
    }
}

pub struct Cache {
    memory: Option<Memory>,
    shared: Option<Arc<Shared>>,
    metrics: CacheMetrics,
    limits: Limits,
}

impl Cache {
    /// The cache `config` describes, for images within `limits`; `None` when it is off.
    /// Nothing is connected yet (see [`Cache::connect`]).
    pub fn new(config: &CacheConfig, limits: Limits, metrics: CacheMetrics) -> Result<Option<Cache>, String> {
        if !config.enabled {
            return Ok(None);
        }
        let memory = (config.max_bytes > 0).then(|| Memory::new(config.max_bytes, metrics.clone()));
        let shared = match &config.redis {
            Some(url) => Some(Shared::new(url, Duration::from_millis(config.redis_timeout_ms), config.ttl_seconds, metrics.clone())?),
            None => None,
        };
        Ok(Some(Cache { memory, shared, metrics, limits }))
    }

    /// Connects to Redis, if configured (at most a couple of seconds; a Redis that does not
    /// answer is logged and retried in the background).
    pub async fn connect(&self) {
        if let Some(shared) = &self.shared {
            shared.connect().await;
        }
    }

    /// The key of `image` under `version`. Returns the image (moved to the blocking pool and
    /// back when it is large).
    pub async fn key(&self, image: Vec<u8>, version: &ModelVersion) -> Result<(Vec<u8>, Key), tokio::task::JoinError> {
        let (image, digest) = if image.len() < HASH_INLINE_MAX {
            let digest = image_digest(&image);
            (image, digest)
        } else {
            tokio::task::spawn_blocking(move || {
                let digest = image_digest(&image);
                (image, digest)
            })
            .await?
        };
        Ok((image, Key::new(&digest, &version.sha256, &version.config, &self.limits)))
    }

    /// The cached answer for `key`, memory first, then Redis.
    pub async fn get(&self, key: &Key, version: &ModelVersion) -> Option<(Arc<Features>, Source)> {
        if let Some(memory) = &self.memory {
            let found = memory.get(key);
            self.metrics.lookup(&version.model, version.version, "memory", found.is_some());
            if let Some(features) = found {
                return Some((features, Source::Memory));
            }
        }
        let shared = self.shared.as_ref()?;
        match shared.get(key).await {
            Lookup::Hit(features) => {
                self.metrics.lookup(&version.model, version.version, "redis", true);
                let features = Arc::new(features);
                if let Some(memory) = &self.memory {
                    memory.insert(*key, Arc::clone(&features));
                }
                Some((features, Source::Redis))
            }
            Lookup::Miss => {
                self.metrics.lookup(&version.model, version.version, "redis", false);
                None
            }
            Lookup::Unavailable => None,
        }
    }

    /// Keeps a computed answer: in memory now, in Redis in the background.
    pub fn fill(&self, key: Key, features: Features) {
        if let Some(shared) = &self.shared {
            shared.put(&key, features.encode());
        }
        if let Some(memory) = &self.memory {
            memory.insert(key, Arc::new(features));
        }
    }
}
