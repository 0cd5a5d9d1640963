//! The routing decision: from a request's metadata to a verdict the host glue applies.

use crate::bucket;
use crate::config::{Config, NonGrpc, Route};
use crate::request::RequestMeta;

/// Why a target was chosen. Each reason has its own stat and shows in the decision header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The group header named this target.
    Header,
    /// The user key's sticky bucket landed on this target.
    Weight,
    /// Neither group nor user key: the route's default target.
    Default,
    /// The group header named no target of the route: the default target.
    UnknownGroup,
}

impl Reason {
    pub const ALL: [Reason; 4] = [Reason::Header, Reason::Weight, Reason::Default, Reason::UnknownGroup];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Header => "header",
            Reason::Weight => "weight",
            Reason::Default => "default",
            Reason::UnknownGroup => "unknown_group",
        }
    }

    /// Position in [`Reason::ALL`], for per-reason tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A routed request: which route and target (indices into the config) and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub route: usize,
    pub target: usize,
    pub reason: Reason,
}

/// What the filter does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not gRPC, and non-gRPC traffic passes: leave it alone.
    PassNonGrpc,
    /// Not gRPC, and non-gRPC traffic is rejected.
    RejectNonGrpc,
    /// gRPC, but the access policy forbids the method.
    Deny,
    /// gRPC, allowed, but no route covers the method: Envoy's own routes decide.
    Unrouted,
    /// Route to a target.
    Route(Decision),
}

impl Config {
    /// Decides what to do with a request. Pure: no host calls, no allocation.
    pub fn decide(&self, req: &RequestMeta<'_>) -> Verdict {
        if !req.is_grpc() {
            return match self.non_grpc {
                NonGrpc::Pass => Verdict::PassNonGrpc,
                NonGrpc::Reject => Verdict::RejectNonGrpc,
            };
        }
        let path = req.path.unwrap_or("");
        if !self.access.permits(path) {
            return Verdict::Deny;
        }
        match self.routes.iter().enumerate().find(|(_, r)| r.covers(path)) {
            Some((i, route)) => {
                let (target, reason) = route.choose(req);
                Verdict::Route(Decision { route: i, target, reason })
            }
            None => Verdict::Unrouted,
        }
    }
}

impl Route {
    /// A/B choice: explicit group, else sticky bucket of the user key, else default.
    fn choose(&self, req: &RequestMeta<'_>) -> (usize, Reason) {
        if let Some(group) = req.group {
            return match self.target_index(group) {
                Some(t) => (t, Reason::Header),
                None => (self.default_target, Reason::UnknownGroup),
            };
        }
        if let Some(key) = req.user_key {
            let weights = self.targets.iter().map(|t| (t.seed, t.weight));
            if let Some(t) = bucket::pick(bucket::key_hash(key), weights) {
                return (t, Reason::Weight);
            }
        }
        (self.default_target, Reason::Default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"{
        "access": {"deny": ["/features.v1.FeatureExtractionService/Debug*"]},
        "routes": [{
            "name": "features",
            "match": ["/features.v1.FeatureExtractionService/*"],
            "targets": [
                {"name": "stable", "cluster": "c_stable", "weight": 90},
                {"name": "canary", "cluster": "c_canary", "weight": 10},
                {"name": "fallback", "cluster": "c_fallback"}
            ],
            "default_target": "stable"
        }]
    }"#;

    fn grpc<'a>(path: &'a str) -> RequestMeta<'a> {
        RequestMeta {
            path: Some(path),
            content_type: Some("application/grpc"),
            ..Default::default()
        }
    }

    const EXTRACT: &str = "/features.v1.FeatureExtractionService/ExtractRealtime";

    fn routed(v: Verdict) -> (usize, Reason) {
        match v {
            Verdict::Route(d) => (d.target, d.reason),
            other => panic!("not routed: {other:?}"),
        }
    }

    #[test]
    fn explicit_group_wins() {
        let cfg = Config::from_json(CFG.as_bytes()).unwrap();
        let req = RequestMeta { group: Some("fallback"), user_key: Some("u1"), ..grpc(EXTRACT) };
        assert_eq!(routed(cfg.decide(&req)), (2, Reason::Header));
    }

    #[test]
    fn unknown_group_goes_to_default() {
        let cfg = Config::from_json(CFG.as_bytes()).unwrap();
        let req = RequestMeta { group: Some("nope"), ..grpc(EXTRACT) };
        assert_eq!(routed(cfg.decide(&req)), (0, Reason::UnknownGroup));
    }

    #[test]
    fn user_key_is_sticky_and_weighted() {
        let cfg = Config::from_json(CFG.as_bytes()).unwrap();
        let mut canary = 0;
        for i in 0..10_000 {
            let key = format!("user-{i}");
            let req = RequestMeta { user_key: Some(&key), ..grpc(EXTRACT) };
            let (t, reason) = routed(cfg.decide(&req));
            assert_eq!(reason, Reason::Weight);
            assert_ne!(t, 2, "weight-0 fallback must not receive bucketed users");
            assert_eq!(routed(cfg.decide(&req)).0, t, "not sticky");
            canary += usize::from(t == 1);
        }
        assert!((800..=1200).contains(&canary), "canary share {canary}/10000");
    }

    #[test]
    fn nothing_goes_to_default() {
        let cfg = Config::from_json(CFG.as_bytes()).unwrap();
        assert_eq!(routed(cfg.decide(&grpc(EXTRACT))), (0, Reason::Default));
    }

    #[test]
    fn access_and_non_grpc() {
        let cfg = Config::from_json(CFG.as_bytes()).unwrap();
        assert_eq!(cfg.decide(&grpc("/features.v1.FeatureExtractionService/DebugDump")), Verdict::Deny);
        assert_eq!(cfg.decide(&grpc("/other.v1.S/M")), Verdict::Unrouted);
        let http = RequestMeta { path: Some("/"), content_type: Some("text/html"), ..Default::default() };
        assert_eq!(cfg.decide(&http), Verdict::PassNonGrpc);
        let strict = Config::from_json(br#"{"non_grpc": "reject"}"#).unwrap();
        assert_eq!(strict.decide(&http), Verdict::RejectNonGrpc);
    }
}
