//! gRPC method patterns such as `/features.v1.FeatureExtractionService/*`.
//!
//! A pattern is matched against the request's `:path`, which for gRPC is always
//! `/<package>.<Service>/<Method>`. `*` stands for any run of characters (including
//! none), so `/features.v1.*` covers every service of a package and `*` everything.
//! Patterns are compiled once at configuration time; matching does not allocate.

use std::fmt;

/// A compiled method pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodPattern {
    source: String,
    /// The literal pieces between `*`s, in order.
    pieces: Vec<String>,
    /// Whether the pattern starts with `*` (the first piece need not be a prefix).
    leading_star: bool,
    /// Whether the pattern ends with `*` (the last piece need not be a suffix).
    trailing_star: bool,
}

impl MethodPattern {
    /// Compiles a pattern, explaining what is wrong with an invalid one.
    pub fn parse(source: &str) -> Result<Self, String> {
        if source.is_empty() {
            return Err("a method pattern cannot be empty".into());
        }
        if !source.starts_with('/') && !source.starts_with('*') {
            return Err(format!(
                "method pattern {source:?} must start with '/' (as in \
                 \"/package.Service/Method\") or '*'"
            ));
        }
        if let Some(c) = source.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("method pattern {source:?} contains {c:?}"));
        }
        let pieces = source
            .split('*')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Self {
            source: source.to_owned(),
            pieces,
            leading_star: source.starts_with('*'),
            trailing_star: source.ends_with('*'),
        })
    }

    /// Whether `path` matches the pattern.
    pub fn matches(&self, path: &str) -> bool {
        let mut rest = path;
        let last = self.pieces.len().saturating_sub(1);
        for (i, piece) in self.pieces.iter().enumerate() {
            let first = i == 0;
            if first && !self.leading_star {
                match rest.strip_prefix(piece.as_str()) {
                    Some(r) => rest = r,
                    None => return false,
                }
            } else if i == last && !self.trailing_star {
                // The final piece must end the path; anything before it is the star's.
                return rest.len() >= piece.len() && rest.ends_with(piece.as_str());
            } else {
                match rest.find(piece.as_str()) {
                    Some(at) => rest = rest.get(at + piece.len()..).unwrap_or(""),
                    None => return false,
                }
            }
        }
        // Without a trailing star, nothing may follow the last piece. A pattern made
        // only of stars matches everything.
        self.trailing_star || rest.is_empty() || self.pieces.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for MethodPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        MethodPattern::parse(p).unwrap().matches(path)
    }

    #[test]
    fn exact() {
        assert!(m("/a.B/C", "/a.B/C"));
        assert!(!m("/a.B/C", "/a.B/CD"));
        assert!(!m("/a.B/C", "/a.B/"));
    }

    #[test]
    fn trailing_star() {
        assert!(m("/a.B/*", "/a.B/C"));
        assert!(m("/a.B/*", "/a.B/"));
        assert!(!m("/a.B/*", "/a.BB/C"));
        assert!(m("/a.*", "/a.B/C"));
    }

    #[test]
    fn inner_and_leading_stars() {
        assert!(m("*", "/anything/at.all"));
        assert!(m("*/Debug*", "/a.B/DebugDump"));
        assert!(!m("*/Debug*", "/a.B/Run"));
        assert!(m("/a.*/Get", "/a.B/Get"));
        assert!(!m("/a.*/Get", "/a.B/GetX"));
        assert!(m("/a.*/Get*", "/a.B/GetX"));
        assert!(m("*Get", "/x/Get"));
        // The suffix may not overlap the consumed prefix.
        assert!(!m("/ab*ba", "/aba"));
        assert!(m("/ab*ba", "/abba"));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(MethodPattern::parse("").is_err());
        assert!(MethodPattern::parse("a.B/C").is_err());
        assert!(MethodPattern::parse("/a B").is_err());
    }
}
