//! The filter's stats: their names, and counts batched per worker.
//!
//! Every stat update through the host is a host call, and host calls are the main cost
//! of a Wasm filter. So the request path only bumps a plain in-memory counter
//! ([`Pending`]); the root context flushes the deltas to Envoy on its tick. Stats lag by
//! at most one tick; the request path makes no stat host calls at all.

use crate::config::Config;
use crate::route::Reason;
use std::cell::Cell;

/// A counter's position in the stat table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterId(usize);

/// The stat table of one configuration: every counter's full name, in a fixed order.
#[derive(Debug)]
pub struct StatTable {
    names: Vec<String>,
    /// Index of each route's first per-target counter.
    route_base: Vec<usize>,
}

const REQUESTS: usize = 0;
const PASSTHROUGH: usize = 1;
const DENIED: usize = 2;
const NON_GRPC_REJECTED: usize = 3;
const UNROUTED: usize = 4;
const REASON_BASE: usize = 5;

impl StatTable {
    pub fn new(cfg: &Config) -> Self {
        let p = &cfg.stat_prefix;
        let mut names = vec![
            format!("{p}.requests"),
            format!("{p}.passthrough"),
            format!("{p}.denied"),
            format!("{p}.non_grpc_rejected"),
            format!("{p}.unrouted"),
        ];
        names.extend(Reason::ALL.iter().map(|r| format!("{p}.reason.{}", r.as_str())));
        let mut route_base = Vec::with_capacity(cfg.routes.len());
        for route in &cfg.routes {
            route_base.push(names.len());
            names.extend(
                route
                    .targets
                    .iter()
                    .map(|t| format!("{p}.route.{}.target.{}.requests", route.name, t.name)),
            );
        }
        Self { names, route_base }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// gRPC requests seen (routed, unrouted or denied).
    pub fn requests(&self) -> CounterId {
        CounterId(REQUESTS)
    }
    /// Non-gRPC requests let through.
    pub fn passthrough(&self) -> CounterId {
        CounterId(PASSTHROUGH)
    }
    pub fn denied(&self) -> CounterId {
        CounterId(DENIED)
    }
    pub fn non_grpc_rejected(&self) -> CounterId {
        CounterId(NON_GRPC_REJECTED)
    }
    pub fn unrouted(&self) -> CounterId {
        CounterId(UNROUTED)
    }
    pub fn reason(&self, r: Reason) -> CounterId {
        CounterId(REASON_BASE + r.index())
    }
    pub fn target(&self, route: usize, target: usize) -> CounterId {
        CounterId(self.route_base.get(route).map_or(REQUESTS, |b| b + target))
    }
}

/// Counts not yet flushed to the host, one cell per stat of a [`StatTable`].
#[derive(Debug)]
pub struct Pending(Vec<Cell<u64>>);

impl Pending {
    pub fn new(table: &StatTable) -> Self {
        Self(table.names.iter().map(|_| Cell::new(0)).collect())
    }

    pub fn bump(&self, id: CounterId) {
        if let Some(c) = self.0.get(id.0) {
            c.set(c.get().wrapping_add(1));
        }
    }

    /// Hands each non-zero delta to `flush` (index into the table's names) and resets it.
    pub fn drain(&self, mut flush: impl FnMut(usize, u64)) {
        for (i, c) in self.0.iter().enumerate() {
            let n = c.replace(0);
            if n > 0 {
                flush(i, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_batching() {
        let cfg = Config::from_json(
            br#"{"routes": [{"name": "f", "match": ["*"], "default_target": "s",
                 "targets": [{"name": "s", "cluster": "a"}, {"name": "c", "cluster": "b"}]}]}"#,
        )
        .unwrap();
        let t = StatTable::new(&cfg);
        assert!(t.names().iter().all(|n| n.starts_with("switchyard.")));
        assert_eq!(t.names()[t.target(0, 1).0], "switchyard.route.f.target.c.requests");
        assert_eq!(t.names()[t.reason(Reason::Weight).0], "switchyard.reason.weight");
        let p = Pending::new(&t);
        p.bump(t.requests());
        p.bump(t.requests());
        p.bump(t.target(0, 1));
        let mut got = vec![];
        p.drain(|i, n| got.push((t.names()[i].clone(), n)));
        assert_eq!(
            got,
            vec![
                ("switchyard.requests".to_string(), 2),
                ("switchyard.route.f.target.c.requests".to_string(), 1)
            ]
        );
        let mut again = 0;
        p.drain(|_, _| again += 1);
        assert_eq!(again, 0);
    }
}
