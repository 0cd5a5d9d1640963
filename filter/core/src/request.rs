//! The request metadata the filter decides on, read in one pass over the header map.
//!
//! Envoy returns the whole header map from a single host call in the proxy-wasm
//! serialised form; [`HeaderPairs`] walks that buffer without copying, and
//! [`RequestMeta::scan`] picks out the few headers the filter needs. One host call and
//! no allocation per request, instead of one host call per header.

use crate::config::HeaderNames;

/// Iterates `(name, value)` pairs of a proxy-wasm serialised header map:
/// `u32 count`, then `count × (u32 name_len, u32 value_len)`, then each name and value
/// followed by a NUL byte. A malformed buffer ends the iteration early; it never panics.
pub struct HeaderPairs<'a> {
    sizes: &'a [u8],
    data: &'a [u8],
    remaining: usize,
}

impl<'a> HeaderPairs<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        let count = buf
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b| u32::from_le_bytes(b) as usize);
        let sizes_len = count.saturating_mul(8);
        match (buf.get(4..4 + sizes_len), buf.get(4 + sizes_len..)) {
            (Some(sizes), Some(data)) => Self { sizes, data, remaining: count },
            _ => Self { sizes: &[], data: &[], remaining: 0 },
        }
    }
}

impl<'a> Iterator for HeaderPairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let (lens, rest) = self.sizes.split_at_checked(8)?;
        self.sizes = rest;
        let name_len = u32::from_le_bytes(lens.get(..4)?.try_into().ok()?) as usize;
        let value_len = u32::from_le_bytes(lens.get(4..)?.try_into().ok()?) as usize;
        let name = self.data.get(..name_len)?;
        let value = self.data.get(name_len + 1..name_len + 1 + value_len)?;
        self.data = self.data.get(name_len + value_len + 2..).unwrap_or(&[]);
        Some((name, value))
    }
}

/// Encodes pairs in the serialised form (used by tests and for local replies).
pub fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        4 + pairs.iter().map(|(n, v)| n.len() + v.len() + 10).sum::<usize>(),
    );
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (n, v) in pairs {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Whether two byte strings are equal, eight bytes at a time: in Wasm a slice comparison
/// is a call to a `memcmp` that goes byte by byte.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = a8.remainder().iter().zip(b8.remainder()).all(|(x, y)| x == y);
    let word = |c: &[u8]| <[u8; 8]>::try_from(c).map(u64::from_ne_bytes).unwrap_or(0);
    tail && a8.zip(b8).all(|(x, y)| word(x) == word(y))
}

/// A header value as text, if it is UTF-8. Values are nearly always ASCII, which is
/// checked a word at a time: cheaper than full UTF-8 validation of short strings.
#[inline]
fn text(value: &[u8]) -> Option<&str> {
    let (words, tail) = value.as_chunks::<8>();
    let high = words.iter().fold(0u64, |acc, w| acc | u64::from_ne_bytes(*w)) & 0x8080_8080_8080_8080;
    if high == 0 && tail.iter().all(u8::is_ascii) {
        // SAFETY: every byte is ASCII, hence UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(value) })
    } else {
        std::str::from_utf8(value).ok()
    }
}

/// What the filter reads from a request's headers. Borrowed from the header buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestMeta<'a> {
    /// `:path`; for gRPC `/<package>.<Service>/<Method>`.
    pub path: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// Explicit A/B group (a target name).
    pub group: Option<&'a str>,
    /// Key for sticky bucketing.
    pub user_key: Option<&'a str>,
    /// Whether the client sent the internal routing header (which must not survive).
    pub has_cluster_header: bool,
    /// Declared schema revision (`features.v1@3` or a fingerprint).
    pub revision: Option<&'a str>,
    /// Raw latency budget (`grpc-timeout` or the configured header).
    pub budget: Option<&'a str>,
    pub priority: Option<&'a str>,
}

impl<'a> RequestMeta<'a> {
    /// Picks the configured headers out of `pairs`. Empty or non-UTF-8 values count as
    /// absent; for repeated headers the first wins.
    pub fn scan(names: &HeaderNames, pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        let mut meta = Self::default();
        for (name, value) in pairs {
            // The fixed names compile to inline comparisons; the configured ones are checked
            // on their length first, then eight bytes at a time.
            let slot = match name {
                b":path" => &mut meta.path,
                b"content-type" => &mut meta.content_type,
                n if same(n, names.group.as_bytes()) => &mut meta.group,
                n if same(n, names.user_key.as_bytes()) => &mut meta.user_key,
                n if same(n, names.revision.as_bytes()) => &mut meta.revision,
                n if same(n, names.budget.as_bytes()) => &mut meta.budget,
                n if same(n, names.priority.as_bytes()) => &mut meta.priority,
                n if same(n, names.cluster.as_bytes()) => {
                    meta.has_cluster_header = true;
                    continue;
                }
                _ => continue,
            };
            if slot.is_none() && !value.is_empty() {
                *slot = text(value);
            }
        }
        meta
    }

    /// gRPC requests carry `content-type: application/grpc` or `application/grpc+<codec>`.
    /// (gRPC-Web is a different framing and is treated as non-gRPC.)
    pub fn is_grpc(&self) -> bool {
        self.content_type.is_some_and(|ct| {
            ct.strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn round_trip_pairs() {
        let buf = serialize_pairs(&[(":path", "/a.B/C"), ("x", ""), ("y", "zz")]);
        let got: Vec<_> = HeaderPairs::new(&buf).collect();
        assert_eq!(
            got,
            vec![(&b":path"[..], &b"/a.B/C"[..]), (b"x", b""), (b"y", b"zz")]
        );
    }

    #[test]
    fn malformed_buffers_end_quietly() {
        assert_eq!(HeaderPairs::new(&[]).count(), 0);
        assert_eq!(HeaderPairs::new(&[5, 0, 0, 0, 1]).count(), 0);
        let mut buf = serialize_pairs(&[("a", "b"), ("c", "d")]);
        buf.truncate(buf.len() - 3);
        assert_eq!(HeaderPairs::new(&buf).count(), 1);
        // Lengths pointing past the end.
        let mut bad = serialize_pairs(&[("a", "b")]);
        bad[4] = 200;
        assert_eq!(HeaderPairs::new(&bad).count(), 0);
    }

    #[test]
    fn scan_picks_configured_headers() {
        let cfg = Config::from_json(br#"{"group_header": "x-grp"}"#).unwrap();
        let buf = serialize_pairs(&[
            (":path", "/a.B/C"),
            ("content-type", "application/grpc"),
            ("x-grp", "canary"),
            ("x-grp", "stable"),
            ("x-user-id", ""),
            ("x-switchyard-cluster", "evil"),
            ("grpc-timeout", "100m"),
            ("x-schema-revision", "features.v1@2"),
            ("x-priority", "low"),
        ]);
        let m = RequestMeta::scan(&cfg.headers, HeaderPairs::new(&buf));
        assert_eq!(m.path, Some("/a.B/C"));
        assert_eq!(m.group, Some("canary"));
        assert_eq!(m.user_key, None);
        assert!(m.has_cluster_header);
        assert!(m.is_grpc());
        assert_eq!(m.budget, Some("100m"));
        assert_eq!(m.revision, Some("features.v1@2"));
        assert_eq!(m.priority, Some("low"));
    }

    #[test]
    fn same_compares_every_byte() {
        for (a, b, eq) in [
            (&b""[..], &b""[..], true),
            (b"x-user-id", b"x-user-id", true),
            (b"x-user-id", b"x-user-ie", false),
            (b"x-user-id", b"y-user-id", false),
            (b"abcdefgh", b"abcdefgh", true),
            (b"abcdefgh", b"abcdefgi", false),
            (b"abcdefghijklmnopq", b"abcdefghXjklmnopq", false),
            (b"abc", b"abcd", false),
        ] {
            assert_eq!(same(a, b), eq, "{a:?} {b:?}");
        }
    }

    #[test]
    fn names_of_any_length_are_found_and_lookalikes_are_not() {
        let long = "x-".to_owned() + &"k".repeat(70);
        let cfg = Config::from_json(format!(r#"{{"user_key_header": "{long}", "group_header": "x-user-id"}}"#).as_bytes()).unwrap();
        let buf = serialize_pairs(&[
            // Same lengths as wanted names, different bytes.
            (":pass", "/x"),
            ("content-tipe", "text/plain"),
            ("x-ab-grp", "canary"),
            (":path", "/a.B/C"),
            (&long, "user-1"),
            ("x-user-id", "canary"),
        ]);
        let m = RequestMeta::scan(&cfg.headers, HeaderPairs::new(&buf));
        assert_eq!(m.path, Some("/a.B/C"));
        assert_eq!(m.content_type, None);
        assert_eq!(m.user_key, Some("user-1"));
        // `x-user-id` is configured as the group header here: it fills the group only.
        assert_eq!(m.group, Some("canary"));
    }

    #[test]
    fn values_are_text_only_when_utf8() {
        for v in [&b"a"[..], b"bench-user-7", b"/features.v1.FeatureExtractor/Extract", "caf\u{e9}-\u{1F600}-12345678".as_bytes()] {
            assert_eq!(text(v), std::str::from_utf8(v).ok());
        }
        for v in [&b"\xff"[..], b"abcdefgh\x80", b"\xc3", b"12345678abcdefg\xe9"] {
            assert_eq!(text(v), None, "{v:?}");
        }
    }

    #[test]
    fn grpc_content_types() {
        let m = |ct| RequestMeta { content_type: Some(ct), ..Default::default() }.is_grpc();
        assert!(m("application/grpc"));
        assert!(m("application/grpc+proto"));
        assert!(!m("application/grpc-web"));
        assert!(!m("application/json"));
        assert!(!RequestMeta::default().is_grpc());
    }
}
