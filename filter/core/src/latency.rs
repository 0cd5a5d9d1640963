//! Latency estimates per target: log-scale histograms over a sliding window, merged
//! across workers, read as a percentile.
//!
//! Buckets grow by 25%, from 0.25 ms to about 40 s, so a percentile is known to within
//! one bucket. The estimate is the bucket's *upper* bound: for deciding whether a target
//! can meet a deadline, rounding up is the safe side.

/// Number of histogram buckets.
pub const BUCKETS: usize = 56;
/// Slots in the sliding window.
pub const SLOTS: usize = 10;

/// Upper bounds of the buckets in microseconds: 250 µs × 1.25^i, in integers so they are
/// the same on every build. Evaluated at compile time: an out-of-range index here would
/// fail the build, not the filter.
#[allow(clippy::indexing_slicing)]
const UPPER_US: [u64; BUCKETS] = {
    let mut bounds = [0u64; BUCKETS];
    let mut v: u64 = 250;
    let mut i = 0;
    while i < BUCKETS {
        bounds[i] = v;
        v += v / 4;
        i += 1;
    }
    bounds
};

/// Upper bound of bucket `i`, in microseconds.
pub fn bucket_upper_us(i: usize) -> u64 {
    UPPER_US.get(i).copied().unwrap_or(u64::MAX)
}

/// The bucket a latency falls in (the last one for anything beyond the range).
pub fn bucket_of(us: u64) -> usize {
    UPPER_US.partition_point(|&upper| upper < us).min(BUCKETS - 1)
}

/// A histogram of latencies (counts per bucket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram(pub [u32; BUCKETS]);

impl Default for Histogram {
    fn default() -> Self {
        Self([0; BUCKETS])
    }
}

impl Histogram {
    pub fn record_us(&mut self, us: u64) {
        if let Some(c) = self.0.get_mut(bucket_of(us)) {
            *c = c.saturating_add(1);
        }
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    pub fn count(&self) -> u64 {
        self.0.iter().map(|&c| u64::from(c)).sum()
    }

    pub fn is_empty(&self) -> bool {
        // An OR over every bucket (no early exit) compiles to a few vector operations.
        self.0.iter().fold(0, |acc, &c| acc | c) == 0
    }

    /// The upper bound (µs) of the bucket holding the `pct` percentile; `None` if empty.
    pub fn percentile_us(&self, pct: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((pct / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.0.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some(bucket_upper_us(i));
            }
        }
        Some(bucket_upper_us(BUCKETS - 1))
    }
}

/// A sliding window of histograms: `SLOTS` slots of `window_ms / SLOTS` each. A slot is
/// tagged with its epoch (`now / slot_len`) so stale slots are recognised and reused.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LatencyWindow {
    pub slots: Vec<(u64, Histogram)>,
}

impl LatencyWindow {
    pub fn new() -> Self {
        Self { slots: vec![(0, Histogram::default()); SLOTS] }
    }

    /// Empties every slot, keeping the memory.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.slots.resize(SLOTS, (0, Histogram::default()));
    }

    fn epoch(now_ms: u64, window_ms: u64) -> u64 {
        now_ms / (window_ms / SLOTS as u64).max(1)
    }

    /// Adds `h` to the current slot.
    pub fn add(&mut self, now_ms: u64, window_ms: u64, h: &Histogram) {
        if h.is_empty() {
            return;
        }
        let epoch = Self::epoch(now_ms, window_ms);
        if self.slots.len() != SLOTS {
            *self = Self::new();
        }
        if let Some(slot) = self.slots.get_mut((epoch % SLOTS as u64) as usize) {
            if slot.0 != epoch {
                *slot = (epoch, Histogram::default());
            }
            slot.1.add(h);
        }
    }

    /// Everything recorded within the window ending now.
    pub fn merged(&self, now_ms: u64, window_ms: u64) -> Histogram {
        let epoch = Self::epoch(now_ms, window_ms);
        let mut out = Histogram::default();
        for (e, h) in &self.slots {
            // Epochs come from shared data too: compared without arithmetic that could overflow.
            if *e <= epoch && epoch - *e < SLOTS as u64 {
                out.add(h);
            }
        }
        out
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_range_monotonically() {
        assert_eq!(bucket_upper_us(0), 250);
        assert!(bucket_upper_us(BUCKETS - 1) > 30_000_000, "{}", bucket_upper_us(BUCKETS - 1));
        for i in 1..BUCKETS {
            assert!(bucket_upper_us(i) > bucket_upper_us(i - 1));
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(250), 0);
        assert_eq!(bucket_of(251), 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentile_is_an_upper_bound_within_one_bucket() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record_us(ms * 1000);
        }
        let p90 = h.percentile_us(90.0).unwrap();
        assert!((90_000..=90_000 * 5 / 4).contains(&p90), "{p90}");
        assert_eq!(Histogram::default().percentile_us(90.0), None);
    }

    #[test]
    fn window_forgets_old_slots() {
        let mut w = LatencyWindow::new();
        let mut h = Histogram::default();
        h.record_us(5_000);
        w.add(0, 10_000, &h);
        assert_eq!(w.merged(500, 10_000).count(), 1);
        assert_eq!(w.merged(9_999, 10_000).count(), 1);
        assert_eq!(w.merged(10_000, 10_000).count(), 0);
        w.add(12_000, 10_000, &h);
        w.add(12_500, 10_000, &h);
        assert_eq!(w.merged(13_000, 10_000).count(), 2);
    }
}
