//! The in-process tier: a `moka` cache bounded in bytes (each entry weighs what it holds).
//!
//! moka admits by TinyLFU: once full, a new entry displaces an old one only if it is likely
//! to be asked for more often, so a bulk extraction over a million one-off images does not
//! flush the online traffic's hot set. Entries it drops or refuses for room are evictions.

use super::key::Key;
use super::value::Features;
use crate::metrics::CacheMetrics;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use std::sync::Arc;

pub struct Memory {
    cache: Cache<Key, Arc<Features>>,
    metrics: CacheMetrics,
}

impl Memory {
    pub fn new(max_bytes: u64, metrics: CacheMetrics) -> Memory {
        let evictions = metrics.evictions.clone();
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &Key, value: &Arc<Features>| value.weight())
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build();
        Memory { cache, metrics }
    }

    pub fn get(&self, key: &Key) -> Option<Arc<Features>> {
        self.cache.get(key)
    }

    pub fn insert(&self, key: Key, value: Arc<Features>) {
        self.cache.insert(key, value);
        // moka applies the bound (and calls the eviction listener) in batches; applying it
        // now keeps `cache_bytes` within `max_bytes` at every scrape, for the price of a
        // little bookkeeping on a miss, which has just paid for an inference.
        self.cache.run_pending_tasks();
        self.metrics.bytes.set(i64::try_from(self.cache.weighted_size()).unwrap_or(i64::MAX));
        self.metrics.entries.set(i64::try_from(self.cache.entry_count()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::{image_digest, Key};
    use crate::preprocess::Limits;
    use crate::repository::ModelConfig;

    fn key(i: usize) -> Key {
        let model = ModelConfig::from_toml_str("[input]\nname = \"x\"\nwidth = 8\nheight = 8\n[outputs]\nfeatures = \"f\"\n").unwrap();
        Key::new(&image_digest(&i.to_le_bytes()), "sha", &model, &Limits { max_bytes: 1, max_side: 1, max_pixels: 1 })
    }

    #[test]
    fn the_byte_bound_holds_and_evictions_are_counted() {
        let metrics = CacheMetrics::default();
        let value = Arc::new(Features { vector: vec![1.0; 1280], scores: vec![] });
        let weight = u64::from(value.weight());
        let memory = Memory::new(10 * weight, metrics.clone());
        for i in 0..50 {
            memory.insert(key(i), Arc::clone(&value));
            assert!(metrics.bytes.get() as u64 <= 10 * weight, "{} bytes held after {} inserts", metrics.bytes.get(), i + 1);
        }
        assert!(metrics.entries.get() <= 10 && metrics.entries.get() > 0, "{} entries", metrics.entries.get());
        assert!(metrics.evictions.get() >= 40, "{} evictions", metrics.evictions.get());
        // A value too big for the whole tier is refused, not kept.
        let small = Memory::new(weight / 2, CacheMetrics::default());
        small.insert(key(0), Arc::clone(&value));
        assert!(small.get(&key(0)).is_none());
    }

    #[test]
    fn an_entry_reads_back() {
        let memory = Memory::new(1 << 20, CacheMetrics::default());
        let value = Arc::new(Features { vector: vec![0.5; 4], scores: vec![("blur".into(), 1.0)] });
        assert!(memory.get(&key(1)).is_none());
        memory.insert(key(1), Arc::clone(&value));
        assert_eq!(memory.get(&key(1)).as_deref(), Some(&*value));
        assert!(memory.get(&key(2)).is_none());
    }
}
