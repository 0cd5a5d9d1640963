//! How a route's sticky buckets split users over its targets, and who moves when the
//! weights change: the core's own bucketing, user by user.

use crate::report::{Move, WeightChange};
use crate::RehearsalError;
use serde::Serialize;
use std::collections::BTreeMap;
use switchyard_filter_core::config::{Config, Route};

/// Users of a route, by the target their key lands on.
#[derive(Clone, Debug, Serialize)]
pub struct Split {
    pub route: String,
    pub users: u32,
    /// Share of users per target, in percent.
    pub shares_pct: BTreeMap<String, f64>,
    /// Against the configuration's own weights, when they differ.
    pub change: Option<WeightChange>,
}

/// The user keys the rehearsal uses: `user-0`, `user-1`, … Written on the stack when
/// needed: a rehearsal draws one per request, and a table of a million keys would cost a
/// cache miss each time.
pub(crate) struct UserKey {
    buf: [u8; 15],
    len: usize,
}

impl UserKey {
    pub(crate) fn new(i: u32) -> Self {
        let digits = crate::sim::Digits::of(i);
        let digits = digits.as_bytes();
        let mut buf = [0u8; 15];
        buf[..5].copy_from_slice(b"user-");
        buf[5..5 + digits.len()].copy_from_slice(digits);
        UserKey { buf, len: 5 + digits.len() }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

fn weights(r: &Route) -> BTreeMap<String, u32> {
    r.targets.iter().map(|t| (t.name.clone(), t.weight)).collect()
}

/// Who moves between `before` and `after`, route by route (routes whose weights did not
/// change are left out).
pub(crate) fn compare(before: &Config, after: &Config, users: u32, at_s: f64) -> Vec<WeightChange> {
    before.routes.iter().zip(&after.routes).filter_map(|(b, a)| compare_route(b, a, users, at_s)).collect()
}

fn compare_route(b: &Route, a: &Route, users: u32, at_s: f64) -> Option<WeightChange> {
    let (wb, wa) = (weights(b), weights(a));
    if wb == wa {
        return None;
    }
    let mut moved: BTreeMap<(usize, usize), u32> = BTreeMap::new();
    let mut left_raised = 0;
    for u in 0..users {
        let key = UserKey::new(u);
        let (Some(from), Some(to)) = (b.sticky_target(key.as_str()), a.sticky_target(key.as_str())) else { continue };
        let (Some(from_t), Some(to_t)) = (b.targets.get(from), a.targets.get(to)) else { continue };
        if from_t.name == to_t.name {
            continue;
        }
        *moved.entry((from, to)).or_default() += 1;
        if wa.get(&from_t.name).is_some_and(|&w| w > from_t.weight) {
            left_raised += 1;
        }
    }
    let name = |r: &Route, i: usize| r.targets.get(i).map(|t| t.name.clone()).unwrap_or_default();
    Some(WeightChange {
        at_s,
        route: a.name.clone(),
        before: wb,
        after: wa,
        users,
        moved: moved.into_iter().map(|((f, t), n)| Move { from: name(b, f), to: name(a, t), users: n }).collect(),
        left_a_raised_target: left_raised,
    })
}

/// The split of `users` keys over `route` (the first if `None`) with `weights` applied
/// over the configuration's, and who would move from the configuration's own weights.
pub fn split(config: &str, route: Option<&str>, weights: &BTreeMap<String, u32>, users: u32) -> Result<Split, RehearsalError> {
    let before = parse(config)?;
    let mut json: serde_json::Value = serde_json::from_str(config).map_err(|e| RehearsalError::config("", e.to_string()))?;
    crate::engine::set_weights(&mut json, route, weights).map_err(|m| RehearsalError::config("", m))?;
    let after = parse(&json.to_string())?;
    let index = match route {
        Some(name) => after.routes.iter().position(|r| r.name == name).unwrap_or(0),
        None => 0,
    };
    let (Some(b), Some(a)) = (before.routes.get(index), after.routes.get(index)) else {
        return Err(RehearsalError::config("routes", "the configuration has no routes"));
    };
    let mut counts = vec![0u32; a.targets.len()];
    for u in 0..users {
        if let Some(n) = a.sticky_target(UserKey::new(u).as_str()).and_then(|t| counts.get_mut(t)) {
            *n += 1;
        }
    }
    let shares_pct = a
        .targets
        .iter()
        .zip(counts)
        .map(|(t, n)| (t.name.clone(), (f64::from(n) * 10_000.0 / f64::from(users.max(1))).round() / 100.0))
        .collect();
    Ok(Split { route: a.name.clone(), users, shares_pct, change: compare_route(b, a, users, 0.0) })
}

/// Parses a plugin configuration as the filter does.
pub(crate) fn parse(config: &str) -> Result<Config, RehearsalError> {
    Config::from_json(config.as_bytes()).map_err(|e| RehearsalError::config(e.path, e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"routes": [{"name": "features", "match": ["/a.B/*"], "targets": [
        {"name": "stable", "cluster": "s", "weight": 90}, {"name": "canary", "cluster": "c", "weight": 10}],
        "default_target": "stable"}]}"#;

    #[test]
    fn user_keys_are_the_formatted_ones() {
        for i in [0, 7, 10, 12_345, 999_999, u32::MAX] {
            assert_eq!(UserKey::new(i).as_str(), format!("user-{i}"));
        }
    }

    #[test]
    fn dragging_the_canary_up_only_moves_users_into_it() {
        let s = split(CONFIG, None, &[("canary".to_string(), 30), ("stable".to_string(), 70)].into(), 10_000).unwrap();
        assert!((s.shares_pct["canary"] - 30.0).abs() < 1.5, "{s:?}");
        let change = s.change.unwrap();
        assert_eq!(change.left_a_raised_target, 0);
        assert_eq!(change.moved.len(), 1);
        assert_eq!((change.moved[0].from.as_str(), change.moved[0].to.as_str()), ("stable", "canary"));
        // Unchanged weights move nobody.
        assert!(split(CONFIG, None, &BTreeMap::new(), 100).unwrap().change.is_none());
        assert_eq!(split(CONFIG, Some("features"), &[("nope".to_string(), 1)].into(), 10).unwrap_err().input, "config");
    }
}
