//! Traffic taken from an Envoy access log, to ask what a new configuration would have done
//! with yesterday's requests. The log format is the one the README documents:
//!
//! ```text
//! [%START_TIME%] "%REQ(:PATH)%" … user=%REQ(x-user-id)% group=%REQ(x-ab-group)% revision=%REQ(x-schema-revision)% timeout=%REQ(grpc-timeout)% priority=%REQ(x-priority)%
//! ```
//!
//! Only the start time, the path and the `key=value` request fields are read; Envoy's `-`
//! means absent. Fields the line lacks are absent too, so older logs replay as clients that
//! sent nothing.

use crate::scenario::ScenarioError;

/// One request of the log, as the filter would see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// Since the log's first request.
    pub at_ns: u64,
    pub path: String,
    pub user: Option<String>,
    pub group: Option<String>,
    pub revision: Option<String>,
    /// The `grpc-timeout` value as sent (`250m`).
    pub timeout: Option<String>,
    pub priority: Option<String>,
}

/// A log's requests, in time order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    pub requests: Vec<Logged>,
}

/// The most requests a replay takes (the scenario limit).
const MAX_LINES: usize = 20_000_000;

impl Replay {
    /// Parses a log; an unreadable line is refused with its number.
    pub fn parse(text: &str) -> Result<Replay, ScenarioError> {
        let mut requests = Vec::new();
        let mut starts: Vec<i128> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            if requests.len() >= MAX_LINES {
                return Err(err(n, format!("more than {MAX_LINES} requests; replay a shorter stretch")));
            }
            let rest = line.trim_start().strip_prefix('[').ok_or_else(|| err(n, "expected `[%START_TIME%]` first"))?;
            let (time, rest) = rest.split_once(']').ok_or_else(|| err(n, "`[` without `]`"))?;
            let ns = parse_time(time).ok_or_else(|| err(n, format!("{time:?} is not an RFC 3339 time (%START_TIME%)")))?;
            let rest = rest.trim_start().strip_prefix('"').ok_or_else(|| err(n, "expected `\"%REQ(:PATH)%\"` after the time"))?;
            let (path, rest) = rest.split_once('"').ok_or_else(|| err(n, "unterminated path"))?;
            if !path.starts_with('/') {
                return Err(err(n, format!("{path:?} is not a request path")));
            }
            let field = |name: &str| -> Option<String> {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                    .map(|v| v.trim_matches('"'))
                    .filter(|v| !v.is_empty() && *v != "-")
                    .map(str::to_owned)
            };
            starts.push(ns);
            requests.push(Logged {
                at_ns: 0,
                path: path.to_owned(),
                user: field("user"),
                group: field("group"),
                revision: field("revision"),
                timeout: field("timeout"),
                priority: field("priority"),
            });
        }
        if requests.is_empty() {
            return Err(err(0, "the log holds no requests"));
        }
        // Envoy logs requests as they end; they replay as they started.
        let base = starts.iter().copied().min().unwrap_or(0);
        for (r, ns) in requests.iter_mut().zip(starts) {
            r.at_ns = u64::try_from(ns - base).unwrap_or(u64::MAX);
        }
        requests.sort_by_key(|r| r.at_ns);
        Ok(Replay { requests })
    }

    /// Seconds from the first request to the last.
    pub fn span_s(&self) -> f64 {
        self.requests.last().map_or(0.0, |r| r.at_ns as f64 / 1e9)
    }
}

fn err(line: usize, message: impl Into<String>) -> ScenarioError {
    ScenarioError { at: if line == 0 { String::new() } else { format!("line {line}") }, message: message.into() }
}

/// `2026-12-01T10:00:00.123Z` (or with an offset) in ns since the Unix epoch.
fn parse_time(s: &str) -> Option<i128> {
    let s = s.trim();
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (clock, offset_s) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, off) = time.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let mut o = off[1..].split(':').map(|p| p.parse::<i64>().ok());
        let (oh, om) = (o.next()??, o.next().flatten().unwrap_or(0));
        (c, sign * (oh * 3600 + om * 60))
    } else {
        (time, 0)
    };
    let mut c = clock.split(':');
    let (h, mi) = (c.next()?.parse::<i64>().ok()?, c.next()?.parse::<i64>().ok()?);
    let sec = c.next()?;
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let whole = whole.parse::<i64>().ok()?;
    let frac_ns = if frac.is_empty() { 0 } else { format!("{frac:0<9}").get(..9)?.parse::<i64>().ok()? };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || whole > 60 {
        return None;
    }
    let days = days_from_civil(y, m, day);
    let secs = days * 86_400 + h * 3600 + mi * 60 + whole - offset_s;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(frac_ns))
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"[2026-12-01T10:00:00.250Z] "/features.v1.FeatureExtractionService/ExtractRealtime" 0 via_upstream upstream=features_stable switchyard="target=stable; reason=weight" 31ms user=alice group=- revision=features.v1@1 timeout=250m priority=-
[2026-12-01T10:00:00.000Z] "/features.v1.FeatureExtractionService/ExtractRealtime" 0 via_upstream upstream=features_canary switchyard="target=canary; reason=header" 40ms user=- group=canary revision=- timeout=- priority=low
"#;

    #[test]
    fn the_documented_format_replays_in_start_order() {
        let r = Replay::parse(LOG).unwrap();
        assert_eq!(r.requests.len(), 2);
        assert_eq!(r.requests[0].group.as_deref(), Some("canary"));
        assert_eq!(r.requests[0].priority.as_deref(), Some("low"));
        assert_eq!(r.requests[1].at_ns, 250_000_000);
        assert_eq!(r.requests[1].user.as_deref(), Some("alice"));
        assert_eq!(r.requests[1].timeout.as_deref(), Some("250m"));
        assert_eq!(r.requests[1].group, None);
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        assert_eq!(Replay::parse("\n[nope] \"/a/b\"\n").unwrap_err().at, "line 2");
        assert_eq!(Replay::parse("[2026-12-01T10:00:00Z] /a/b\n").unwrap_err().at, "line 1");
        assert_eq!(parse_time("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_time("2026-13-01T00:00:00Z"), None);
    }
}
