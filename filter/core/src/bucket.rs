//! Sticky, weighted bucketing of user keys over a route's targets.
//!
//! Weighted rendezvous hashing ("highest random weight" with the logarithmic method):
//! each target scores a key as `weight / -ln(u)` where `u ∈ (0, 1)` is a hash of
//! (route salt, target, key), and the highest score wins. Two properties follow, and
//! they are the ones a canary release needs:
//!
//! * the share of keys a target receives is its weight over the total weight;
//! * a target's score depends only on its own weight, so raising the canary's weight
//!   can only move keys *into* the canary, and lowering stable's only moves keys *out of*
//!   stable. A user who saw the canary at 10% still sees it at 20%.
//!
//! The hash is FNV-1a over the key followed by a 64-bit finaliser per target, so it is
//! the same on every worker, every Envoy and every build, and costs one pass over the key.

/// Seed of a target for a given route salt; computed once at configuration time.
pub fn target_seed(salt: &str, target: &str) -> u64 {
    let mut h = fnv1a(FNV_OFFSET, salt.as_bytes());
    h = fnv1a(h, &[0xff]);
    fmix64(fnv1a(h, target.as_bytes()))
}

/// Hash of a user key, shared by all targets of a route.
pub fn key_hash(key: &str) -> u64 {
    fnv1a(FNV_OFFSET, key.as_bytes())
}

/// The index of the target that `key_hash` lands on, given `(seed, weight)` per target.
/// Targets with weight 0 never win; `None` when every weight is 0.
pub fn pick(key_hash: u64, targets: impl IntoIterator<Item = (u64, u32)>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, (seed, weight)) in targets.into_iter().enumerate() {
        if weight == 0 {
            continue;
        }
        let score = f64::from(weight) / -unit_interval(fmix64(key_hash ^ seed)).ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// MurmurHash3's 64-bit finaliser: spreads every input bit over the output.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Maps 53 bits of `h` to the open interval (0, 1), so `ln` is finite and negative.
fn unit_interval(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(weights: &[(&str, u32)], key: &str) -> usize {
        let targets: Vec<_> = weights
            .iter()
            .map(|(name, w)| (target_seed("route", name), *w))
            .collect();
        pick(key_hash(key), targets).unwrap()
    }

    #[test]
    fn shares_follow_weights() {
        let n = 100_000;
        let mut counts = [0usize; 3];
        for i in 0..n {
            counts[assign(&[("stable", 70), ("canary", 20), ("fallback", 10)], &format!("user-{i}"))] += 1;
        }
        let pct = |c: usize| c as f64 * 100.0 / n as f64;
        assert!((pct(counts[0]) - 70.0).abs() < 1.0, "{counts:?}");
        assert!((pct(counts[1]) - 20.0).abs() < 1.0, "{counts:?}");
        assert!((pct(counts[2]) - 10.0).abs() < 1.0, "{counts:?}");
    }

    #[test]
    fn raising_canary_only_moves_users_into_canary() {
        for i in 0..20_000 {
            let key = format!("u{i}");
            let before = assign(&[("stable", 90), ("canary", 10)], &key);
            let after = assign(&[("stable", 80), ("canary", 20)], &key);
            if before == 1 {
                assert_eq!(after, 1, "{key} left the canary");
            }
        }
    }

    #[test]
    fn zero_weight_never_wins() {
        for i in 0..1000 {
            assert_eq!(assign(&[("stable", 1), ("canary", 0)], &i.to_string()), 0);
        }
        assert_eq!(pick(key_hash("k"), [(1, 0), (2, 0)]), None);
    }

    #[test]
    fn salt_changes_assignment() {
        let a = target_seed("exp-a", "canary");
        let b = target_seed("exp-b", "canary");
        assert_ne!(a, b);
    }
}
