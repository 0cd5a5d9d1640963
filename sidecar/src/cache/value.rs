//! A cached answer and its bytes in Redis.
//!
//! What is cached is the part of `ExtractRealtimeResponse` that depends on the image and the
//! model: the feature vector and the quality scores. `request_id`, `model_version` (two
//! versions can serve one file) and `processed_at` are the request's own.
//!
//! Bytes (little-endian): `FORMAT` (1 byte), the vector's length (u32) and its f32s, the
//! number of scores (u32) and each score as name length (u16), name (UTF-8), value (f32).
//! Decoding checks every length against what is left, so a short, long or foreign value is
//! refused (a miss), never trusted.

use std::collections::HashMap;

const FORMAT: u8 = 1;

/// A feature vector and its quality scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub vector: Vec<f32>,
    /// Sorted by name, so one answer always encodes to the same bytes.
    pub scores: Vec<(String, f32)>,
}

/// Why stored bytes are not a [`Features`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("corrupt cached value: {0}")]
pub struct Corrupt(&'static str);

impl Features {
    pub fn new(vector: Vec<f32>, scores: &HashMap<String, f32>) -> Features {
        let mut scores: Vec<(String, f32)> = scores.iter().map(|(k, v)| (k.clone(), *v)).collect();
        scores.sort_by(|a, b| a.0.cmp(&b.0));
        Features { vector, scores }
    }

    pub fn score_map(&self) -> HashMap<String, f32> {
        self.scores.iter().cloned().collect()
    }

    /// Bytes it holds in memory, roughly (what the in-process tier's bound counts).
    pub fn weight(&self) -> u32 {
        const ENTRY: usize = 96; // the key, the Arc, the cache's own bookkeeping
        let scores: usize = self.scores.iter().map(|(k, _)| k.len() + std::mem::size_of::<(String, f32)>()).sum();
        u32::try_from(ENTRY + 4 * self.vector.len() + scores).unwrap_or(u32::MAX)
    }

    pub fn encode(&self) -> Vec<u8> {
        let names: usize = self.scores.iter().map(|(k, _)| 6 + k.len()).sum();
        let mut out = Vec::with_capacity(9 + 4 * self.vector.len() + names);
        out.push(FORMAT);
        out.extend_from_slice(&(self.vector.len() as u32).to_le_bytes());
        for v in &self.vector {
            out.extend_from_slice(&v.to_le_bytes());
        }
        // Names longer than u16 (none the sidecar makes) are cut rather than mis-encoded.
        out.extend_from_slice(&(self.scores.len() as u32).to_le_bytes());
        for (name, value) in &self.scores {
            let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&value.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Features, Corrupt> {
        let mut r = Reader(bytes);
        if r.take(1)? != [FORMAT] {
            return Err(Corrupt("unknown format byte"));
        }
        let n = r.u32()? as usize;
        if n.checked_mul(4).is_none_or(|len| len > r.0.len()) {
            return Err(Corrupt("vector longer than the value"));
        }
        let vector = (0..n).map(|_| r.f32()).collect::<Result<Vec<_>, _>>()?;
        let m = r.u32()? as usize;
        // Each score takes at least 6 bytes: a count beyond that is a lie, not an allocation.
        if m.checked_mul(6).is_none_or(|len| len > r.0.len()) {
            return Err(Corrupt("more scores than the value holds"));
        }
        let mut scores = Vec::with_capacity(m);
        for _ in 0..m {
            let len = u16::from_le_bytes(r.array()?) as usize;
            let name = std::str::from_utf8(r.take(len)?).map_err(|_| Corrupt("score name is not UTF-8"))?;
            scores.push((name.to_owned(), r.f32()?));
        }
        if !r.0.is_empty() {
            return Err(Corrupt("trailing bytes"));
        }
        Ok(Features { vector, scores })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if n > self.0.len() {
            return Err(Corrupt("value too short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Corrupt> {
        self.take(N)?.try_into().map_err(|_| Corrupt("value too short"))
    }

    fn u32(&mut self) -> Result<u32, Corrupt> {
        self.array().map(u32::from_le_bytes)
    }

    fn f32(&mut self) -> Result<f32, Corrupt> {
        self.array().map(f32::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Features {
        let scores = HashMap::from([("blur".to_string(), 812.5), ("brightness".to_string(), 0.93), ("class/90".to_string(), 0.01)]);
        Features::new(vec![0.0, -1.5, f32::MIN_POSITIVE, 3.25e7, -0.0], &scores)
    }

    #[test]
    fn a_value_reads_back_bit_for_bit() {
        let f = sample();
        let bytes = f.encode();
        let back = Features::decode(&bytes).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.vector.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), f.vector.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        assert_eq!(back.score_map(), f.score_map());
        assert_eq!(bytes, Features::decode(&bytes).unwrap().encode(), "one answer, one encoding");
        let empty = Features { vector: vec![], scores: vec![] };
        assert_eq!(Features::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn corrupt_bytes_are_refused() {
        let bytes = sample().encode();
        assert!(Features::decode(&[]).is_err());
        // Every truncation, and one byte too many.
        for len in 0..bytes.len() {
            assert!(Features::decode(&bytes[..len]).is_err(), "a value cut to {len} bytes was read");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Features::decode(&long), Err(Corrupt("trailing bytes")));
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(Features::decode(&other), Err(Corrupt("unknown format byte")));
        // Lengths that claim more than there is: no huge allocation, a refusal.
        let mut huge = vec![FORMAT];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Features::decode(&huge).is_err());
        let mut scores = vec![FORMAT, 0, 0, 0, 0];
        scores.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Features::decode(&scores).is_err());
        let mut not_utf8 = vec![FORMAT, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0xff];
        not_utf8.extend_from_slice(&1f32.to_le_bytes());
        assert_eq!(Features::decode(&not_utf8), Err(Corrupt("score name is not UTF-8")));
        assert!(Features::decode(b"not a cached value at all").is_err());
    }

    #[test]
    fn the_weight_counts_the_vector() {
        let f = sample();
        let big = Features { vector: vec![0.0; 1280], ..f.clone() };
        assert!(big.weight() >= 1280 * 4 && big.weight() < 1280 * 4 + 512, "{}", big.weight());
        assert!(f.weight() < big.weight());
    }
}
