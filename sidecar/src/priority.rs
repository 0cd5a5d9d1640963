//! Which priority level a call runs at (`[batching.priority]`).
//!
//! Online requests with millisecond budgets and offline extraction over whole collections
//! share one model; in a single queue a bulk job that fills it makes online requests wait or
//! fail. So each version's queue has levels (as Triton's dynamic batcher has
//! `priority_levels`): every level admits up to its own capacity, and the inference threads
//! fill each batch from the highest level that has work (see `batch`).
//!
//! The level comes from one metadata key, read as the Envoy filter reads its priority header
//! (same key, same `low` values by default), so a request the filter would shed first is
//! also served last here:
//!
//! * a value in `low` (case-insensitive) → the lowest level;
//! * a level number, `1` (highest) to `levels`, as in Triton;
//! * no header, an empty or non-ASCII value, or anything else → the RPC's default level:
//!   `default_level` for `ExtractRealtime`, `batch_level` (the lowest unless set) for
//!   `ExtractBatch`, whose images are offline work by nature. An unknown value is not an
//!   error: a client of the filter may send values only the filter gives meaning to.

use crate::config::PriorityConfig;
use std::fmt;
use tonic::metadata::MetadataMap;

/// A priority level of a version's queue: index 0 is the highest. Shown 1-based, as
/// configured (`priority="1"` in metrics, "priority level 1" in messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(usize);

impl Priority {
    /// The highest level.
    pub const HIGHEST: Priority = Priority(0);

    /// Level `number` as configured (1-based).
    pub(crate) fn level(number: usize) -> Priority {
        Priority(number.saturating_sub(1))
    }

    /// Every level of a queue with `levels` levels, highest first.
    pub(crate) fn all(levels: usize) -> impl Iterator<Item = Priority> {
        (0..levels).map(Priority)
    }

    /// This level in a queue of `levels` levels: one past the last is the last.
    pub(crate) fn at_most(self, levels: usize) -> Priority {
        Priority(self.0.min(levels.saturating_sub(1)))
    }

    /// Position in a list of levels, highest first.
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0 + 1)
    }
}

/// The two RPCs, which differ only in their default level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rpc {
    Realtime,
    Batch,
}

/// Reads a call's priority from its metadata.
#[derive(Debug, Clone)]
pub(crate) struct Priorities {
    header: String,
    /// Lower-cased, trimmed.
    low: Vec<String>,
    levels: usize,
    realtime_default: Priority,
    batch_default: Priority,
}

impl Priorities {
    pub(crate) fn new(config: &PriorityConfig) -> Self {
        Self {
            header: config.header.clone(),
            low: config.low.iter().map(|v| v.trim().to_ascii_lowercase()).collect(),
            levels: config.levels,
            realtime_default: Priority::level(config.default_level),
            batch_default: Priority::level(config.batch_level()),
        }
    }

    /// The level of a call with this (initial) metadata.
    pub(crate) fn of(&self, metadata: &MetadataMap, rpc: Rpc) -> Priority {
        let named = metadata.get(self.header.as_str()).and_then(|v| v.to_str().ok()).and_then(|v| self.named(v));
        named.unwrap_or(match rpc {
            Rpc::Realtime => self.realtime_default,
            Rpc::Batch => self.batch_default,
        })
    }

    /// The level a header value names, if it names one.
    fn named(&self, value: &str) -> Option<Priority> {
        let value = value.trim();
        if self.low.iter().any(|low| low.eq_ignore_ascii_case(value)) {
            return Some(Priority(self.levels - 1));
        }
        value.parse::<usize>().ok().filter(|n| (1..=self.levels).contains(n)).map(Priority::level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("x-priority", value.parse().unwrap());
        m
    }

    #[test]
    fn the_filters_low_values_and_level_numbers_name_a_level() {
        let p = Priorities::new(&PriorityConfig { levels: 3, ..PriorityConfig::default() });
        assert_eq!(p.of(&metadata("low"), Rpc::Realtime), Priority(2));
        assert_eq!(p.of(&metadata(" LOW "), Rpc::Realtime), Priority(2));
        assert_eq!(p.of(&metadata("1"), Rpc::Batch), Priority::HIGHEST);
        assert_eq!(p.of(&metadata("2"), Rpc::Realtime), Priority(1));
        assert_eq!(Priority(1).to_string(), "2");
    }

    #[test]
    fn no_header_or_an_unknown_value_is_the_rpcs_default() {
        let p = Priorities::new(&PriorityConfig::default());
        for value in ["high", "0", "3", "", "urgent"] {
            assert_eq!(p.of(&metadata(value), Rpc::Realtime), Priority::HIGHEST, "{value:?}");
            assert_eq!(p.of(&metadata(value), Rpc::Batch), Priority(1), "{value:?}");
        }
        assert_eq!(p.of(&MetadataMap::new(), Rpc::Realtime), Priority::HIGHEST);
        assert_eq!(p.of(&MetadataMap::new(), Rpc::Batch), Priority(1));
        let p = Priorities::new(&PriorityConfig { batch_level: Some(1), low: vec!["bulk".into()], ..PriorityConfig::default() });
        assert_eq!(p.of(&MetadataMap::new(), Rpc::Batch), Priority::HIGHEST);
        assert_eq!(p.of(&metadata("low"), Rpc::Realtime), Priority::HIGHEST);
        assert_eq!(p.of(&metadata("Bulk"), Rpc::Realtime), Priority(1));
    }

    #[test]
    fn one_level_puts_every_call_in_it() {
        let p = Priorities::new(&PriorityConfig { levels: 1, ..PriorityConfig::default() });
        for rpc in [Rpc::Realtime, Rpc::Batch] {
            assert_eq!(p.of(&metadata("low"), rpc), Priority::HIGHEST);
            assert_eq!(p.of(&MetadataMap::new(), rpc), Priority::HIGHEST);
        }
    }
}
