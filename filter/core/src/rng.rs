//! A small per-worker random source for probe shares and fault percentages.
//!
//! Statistical sampling only (not security): xorshift64*, seeded per worker.

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Zero is xorshift's one fixed point.
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: f64) -> bool {
        if pct <= 0.0 {
            return false;
        }
        if pct >= 100.0 {
            return true;
        }
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) * 100.0 < pct
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chance_matches_percentage() {
        let mut r = Rng::new(42);
        let hits = (0..100_000).filter(|_| r.chance(5.0)).count();
        assert!((4_500..=5_500).contains(&hits), "{hits}");
        assert!(!Rng::new(1).chance(0.0));
        assert!(Rng::new(1).chance(100.0));
    }
}
