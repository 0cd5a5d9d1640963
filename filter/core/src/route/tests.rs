use super::*;
use crate::snapshot::{SidecarSnapshot, SnapshotView};

const EXTRACT: &str = "/features.v1.FeatureExtractionService/ExtractRealtime";

fn config(extra_route: &str, extra_top: &str) -> Config {
    let json = format!(
        r#"{{ {extra_top} "sidecar": {{"cluster": "sc"}},
            "access": {{"deny": ["/features.v1.FeatureExtractionService/Debug*"]}},
            "routes": [{{
                "name": "features",
                "match": ["/features.v1.FeatureExtractionService/*"],
                "targets": [
                    {{"name": "stable", "cluster": "c_stable", "weight": 90}},
                    {{"name": "canary", "cluster": "c_canary", "weight": 10}},
                    {{"name": "fallback", "cluster": "c_fallback"}}
                ],
                "default_target": "stable",
                "fallback": "fallback"
                {extra_route}
            }}]
        }}"#
    );
    Config::from_json(json.as_bytes()).unwrap()
}

fn grpc(path: &str) -> RequestMeta<'_> {
    RequestMeta { path: Some(path), content_type: Some("application/grpc"), ..Default::default() }
}

fn decide(cfg: &Config, req: &RequestMeta<'_>, world: &World<'_>) -> Verdict {
    cfg.decide(req, world, &mut Rng::new(7))
}

fn routed(v: Verdict) -> (usize, Reason) {
    match v {
        Verdict::Route(d) => (d.target, d.reason),
        other => panic!("not routed: {other:?}"),
    }
}

fn replied(v: Verdict) -> Reply {
    match v {
        Verdict::Reply(r) => r,
        other => panic!("not a local reply: {other:?}"),
    }
}

fn states(modes: [Mode; 3], latency_ms: [Option<u64>; 3]) -> Vec<Vec<TargetState>> {
    vec![(0..3)
        .map(|i| TargetState { mode: modes[i], latency_us: latency_ms[i].map(|m| m * 1000), in_flight: 0 })
        .collect()]
}

const HEALTHY: [Mode; 3] = [Mode::Healthy; 3];

#[test]
fn explicit_group_wins() {
    let cfg = config("", "");
    let req = RequestMeta { group: Some("fallback"), user_key: Some("u1"), ..grpc(EXTRACT) };
    assert_eq!(routed(decide(&cfg, &req, &World::default())), (2, Reason::Header));
}

#[test]
fn unknown_group_goes_to_default() {
    let cfg = config("", "");
    let req = RequestMeta { group: Some("nope"), ..grpc(EXTRACT) };
    assert_eq!(routed(decide(&cfg, &req, &World::default())), (0, Reason::UnknownGroup));
}

#[test]
fn user_key_is_sticky_and_weighted() {
    let cfg = config("", "");
    let mut canary = 0;
    for i in 0..10_000 {
        let key = format!("user-{i}");
        let req = RequestMeta { user_key: Some(&key), ..grpc(EXTRACT) };
        let (t, reason) = routed(decide(&cfg, &req, &World::default()));
        assert_eq!(reason, Reason::Weight);
        assert_ne!(t, 2, "weight-0 fallback must not receive bucketed users");
        assert_eq!(routed(decide(&cfg, &req, &World::default())).0, t, "not sticky");
        canary += usize::from(t == 1);
    }
    assert!((800..=1200).contains(&canary), "canary share {canary}/10000");
}

#[test]
fn access_and_non_grpc() {
    let cfg = config("", "");
    let w = World::default();
    let r = replied(decide(&cfg, &grpc("/features.v1.FeatureExtractionService/DebugDump"), &w));
    assert_eq!((r.code, r.kind), (Code::PermissionDenied, ReplyKind::Denied));
    assert_eq!(decide(&cfg, &grpc("/other.v1.S/M"), &w), Verdict::Unrouted);
    let http = RequestMeta { path: Some("/"), content_type: Some("text/html"), ..Default::default() };
    assert_eq!(decide(&cfg, &http, &w), Verdict::PassNonGrpc);
    let strict = Config::from_json(br#"{"non_grpc": "reject"}"#).unwrap();
    assert_eq!(decide(&strict, &http, &w), Verdict::RejectNonGrpc);
}

#[test]
fn degraded_target_moves_to_fallback_and_low_priority_is_shed() {
    let cfg = config("", "");
    let s = states([Mode::Healthy, Mode::Degraded, Mode::Healthy], [None; 3]);
    let w = World { targets: &s, snapshot: None };
    let req = RequestMeta { group: Some("canary"), ..grpc(EXTRACT) };
    assert_eq!(routed(decide(&cfg, &req, &w)), (2, Reason::Degraded));
    let low = RequestMeta { priority: Some("LOW"), ..req };
    let r = replied(decide(&cfg, &low, &w));
    assert_eq!((r.code, r.kind, r.target), (Code::ResourceExhausted, ReplyKind::Shed, Some(1)));
    // Online traffic to healthy targets is untouched.
    let online = RequestMeta { group: Some("stable"), priority: Some("high"), ..grpc(EXTRACT) };
    assert_eq!(routed(decide(&cfg, &online, &w)), (0, Reason::Header));
}

#[test]
fn probing_target_gets_its_probe_share() {
    let cfg = config(r#", "degrade": {"probe_share_pct": 20}"#, "");
    let s = states([Mode::Healthy, Mode::Probing, Mode::Healthy], [None; 3]);
    let w = World { targets: &s, snapshot: None };
    let req = RequestMeta { group: Some("canary"), ..grpc(EXTRACT) };
    let mut rng = Rng::new(99);
    let mut probes = 0;
    for _ in 0..10_000 {
        match cfg.decide(&req, &w, &mut rng) {
            Verdict::Route(d) if d.probe => {
                assert_eq!((d.target, d.reason), (1, Reason::Probe));
                probes += 1;
            }
            Verdict::Route(d) => assert_eq!((d.target, d.reason), (2, Reason::Degraded)),
            other => panic!("{other:?}"),
        }
    }
    assert!((1_800..=2_200).contains(&probes), "{probes}");
}

#[test]
fn budget_reroutes_to_a_faster_target_or_fails_fast() {
    let cfg = config("", "");
    let s = states(HEALTHY, [Some(120), Some(300), Some(40)]);
    let w = World { targets: &s, snapshot: None };
    let req = |b| RequestMeta { group: Some("canary"), budget: Some(b), ..grpc(EXTRACT) };
    assert_eq!(routed(decide(&cfg, &req("500m"), &w)), (1, Reason::Header));
    assert_eq!(routed(decide(&cfg, &req("200m"), &w)), (2, Reason::Budget), "fallback preferred");
    assert_eq!(routed(decide(&cfg, &req("50m"), &w)), (2, Reason::Budget));
    let r = replied(decide(&cfg, &req("30m"), &w));
    assert_eq!((r.code, r.kind), (Code::DeadlineExceeded, ReplyKind::FailFast));
    assert!(r.message.contains("deadline 30.0ms"), "{}", r.message);
    assert!(r.message.contains("fallback 40.0ms"), "{}", r.message);
    // Unknown latency is given the benefit of the doubt.
    let unknown = states(HEALTHY, [None; 3]);
    let w = World { targets: &unknown, snapshot: None };
    assert_eq!(routed(decide(&cfg, &req("1m"), &w)), (1, Reason::Header));
}

#[test]
fn budget_check_can_be_turned_off() {
    let cfg = config(r#", "latency": {"budget_check": false}"#, "");
    let s = states(HEALTHY, [Some(120), Some(300), Some(40)]);
    let w = World { targets: &s, snapshot: None };
    let req = RequestMeta { group: Some("canary"), budget: Some("1m"), ..grpc(EXTRACT) };
    assert_eq!(routed(decide(&cfg, &req, &w)), (1, Reason::Header));
}

#[test]
fn malformed_budget_is_ignored_or_rejected() {
    let w = World::default();
    for bad in ["", "abc", "123456789m", "10x", "-1S", "1.5S"] {
        let req = RequestMeta { budget: Some(bad), ..grpc(EXTRACT) };
        match decide(&config("", ""), &req, &w) {
            Verdict::Route(d) => assert_eq!(d.budget, None),
            other => panic!("{bad:?}: {other:?}"),
        }
        let strict = config("", r#""budget": {"malformed": "reject"},"#);
        let r = replied(decide(&strict, &req, &w));
        assert_eq!((r.code, r.kind), (Code::InvalidArgument, ReplyKind::MalformedBudget), "{bad:?}");
    }
}

#[test]
fn concurrency_limit_sheds_low_priority_only() {
    let cfg = Config::from_json(
        br#"{"routes": [{"name": "r", "match": ["*"], "default_target": "s",
             "targets": [{"name": "s", "cluster": "c", "max_concurrency": 4}]}]}"#,
    )
    .unwrap();
    let busy = vec![vec![TargetState { in_flight: 4, ..TargetState::default() }]];
    let w = World { targets: &busy, snapshot: None };
    let low = RequestMeta { priority: Some("low"), ..grpc("/a.S/M") };
    assert_eq!(replied(decide(&cfg, &low, &w)).kind, ReplyKind::Shed);
    assert!(matches!(decide(&cfg, &grpc("/a.S/M"), &w), Verdict::Route(_)));
}

#[test]
fn faults_by_target_and_group() {
    let cfg = config(
        r#", "faults": [{"target": "canary", "percent": 100, "abort": "UNAVAILABLE"},
                        {"group": "beta", "percent": 100, "delay_ms": 250}]"#,
        "",
    );
    let w = World::default();
    let r = replied(decide(&cfg, &RequestMeta { group: Some("canary"), ..grpc(EXTRACT) }, &w));
    assert_eq!((r.code, r.kind), (Code::Unavailable, ReplyKind::FaultAbort));
    match decide(&cfg, &RequestMeta { group: Some("beta"), ..grpc(EXTRACT) }, &w) {
        Verdict::Route(d) => assert_eq!((d.target, d.delay_ms), (0, 250)),
        other => panic!("{other:?}"),
    }
    match decide(&cfg, &grpc(EXTRACT), &w) {
        Verdict::Route(d) => assert_eq!(d.delay_ms, 0),
        other => panic!("{other:?}"),
    }
}

fn schema_config(extra_top: &str) -> Config {
    let json = format!(
        r#"{{ {extra_top} "sidecar": {{"cluster": "sc"}}, "routes": [{{"name": "features", "match": ["*"],
            "default_target": "stable", "fallback": "fallback",
            "targets": [
                {{"name": "stable", "cluster": "a", "revision": "features.v1@1", "weight": 50}},
                {{"name": "canary", "cluster": "b", "revision": "features.v1@3", "weight": 50}},
                {{"name": "fallback", "cluster": "c", "revision": "features.v1@2"}}
            ]}}]}}"#
    );
    Config::from_json(json.as_bytes()).unwrap()
}

fn view(cfg: &Config) -> SnapshotView {
    let snap: SidecarSnapshot = serde_json::from_str(&crate::snapshot::tests_support::snapshot_json()).unwrap();
    SnapshotView::build(snap, cfg).0
}

#[test]
fn schema_routes_only_to_targets_that_can_serve_the_client() {
    let cfg = schema_config("");
    let v = view(&cfg);
    let w = World { targets: &[], snapshot: Some(&v) };
    // Client on revision 1: canary (3) cannot read its requests; fallback (2) can.
    let req = RequestMeta { group: Some("canary"), revision: Some("features.v1@1"), ..grpc("/a.S/M") };
    assert_eq!(routed(decide(&cfg, &req, &w)), (2, Reason::Schema));
    // Client on revision 3: stable (1) cannot; fallback (2) can.
    let req = RequestMeta { group: Some("stable"), revision: Some("features.v1@3"), ..grpc("/a.S/M") };
    assert_eq!(routed(decide(&cfg, &req, &w)), (2, Reason::Schema));
    // Client on revision 2 with the canary: fine.
    let req = RequestMeta { group: Some("canary"), revision: Some("features.v1@2"), ..grpc("/a.S/M") };
    assert_eq!(routed(decide(&cfg, &req, &w)), (1, Reason::Header));
}

#[test]
fn no_compatible_target_is_failed_precondition_naming_revisions() {
    let cfg = Config::from_json(
        br#"{"sidecar": {"cluster": "sc"}, "routes": [{"name": "r", "match": ["*"], "default_target": "stable",
             "targets": [{"name": "stable", "cluster": "a", "revision": "features.v1@1"}]}]}"#,
    )
    .unwrap();
    let v = view(&cfg);
    let w = World { targets: &[], snapshot: Some(&v) };
    let req = RequestMeta { revision: Some("features.v1@3"), ..grpc("/a.S/M") };
    let r = replied(decide(&cfg, &req, &w));
    assert_eq!((r.code, r.kind), (Code::FailedPrecondition, ReplyKind::SchemaRejected));
    assert!(r.message.contains("features.v1@3") && r.message.contains("stable=features.v1@1"), "{}", r.message);
}

#[test]
fn unknown_revision_policy_and_missing_snapshot() {
    let cfg = schema_config("");
    let v = view(&cfg);
    let w = World { targets: &[], snapshot: Some(&v) };
    let req = RequestMeta { group: Some("canary"), revision: Some("features.v1@42"), ..grpc("/a.S/M") };
    assert_eq!(routed(decide(&cfg, &req, &w)), (0, Reason::UnknownRevision));
    let strict = schema_config(r#""schema": {"unknown_revision": "reject"},"#);
    let r = replied(decide(&strict, &req, &w));
    assert_eq!((r.code, r.kind), (Code::FailedPrecondition, ReplyKind::UnknownRevision));
    let absent = RequestMeta { revision: None, ..req };
    let refuse = schema_config(r#""schema": {"undeclared": "reject"},"#);
    let r = replied(decide(&refuse, &absent, &w));
    assert_eq!((r.code, r.kind), (Code::FailedPrecondition, ReplyKind::UnknownRevision));
    assert!(r.message.contains("x-schema-revision"), "{}", r.message);

    // Never had a snapshot: open routes by A/B only; closed refuses.
    let none = World::default();
    assert_eq!(routed(decide(&cfg, &req, &none)), (1, Reason::Header));
    let closed = schema_config(r#""schema": {"without_snapshot": "closed"},"#);
    let r = replied(decide(&closed, &req, &none));
    assert_eq!((r.code, r.kind), (Code::Unavailable, ReplyKind::NoSnapshot));
}

#[test]
fn degraded_fallback_is_not_a_refuge() {
    let cfg = config("", "");
    let s = states([Mode::Healthy, Mode::Degraded, Mode::Degraded], [None; 3]);
    let w = World { targets: &s, snapshot: None };
    let req = RequestMeta { group: Some("canary"), ..grpc(EXTRACT) };
    assert_eq!(routed(decide(&cfg, &req, &w)), (0, Reason::Degraded), "next healthy: the default");
}

#[test]
fn alternatives_order_is_fallback_default_rest() {
    let cfg = Config::from_json(
        br#"{"routes": [{"name": "r", "match": ["*"], "default_target": "b", "fallback": "d",
             "targets": [{"name": "a", "cluster": "a"}, {"name": "b", "cluster": "b"},
                         {"name": "c", "cluster": "c"}, {"name": "d", "cluster": "d"}]}]}"#,
    )
    .unwrap();
    let r = &cfg.routes[0];
    assert_eq!(r.alternatives(0).collect::<Vec<_>>(), vec![3, 1, 2]);
    assert_eq!(r.alternatives(3).collect::<Vec<_>>(), vec![1, 0, 2]);
    assert_eq!(r.alternatives(1).collect::<Vec<_>>(), vec![3, 0, 2]);
}

#[test]
fn undeclared_clients_take_part_in_the_split_as_the_default_target_speaks() {
    // stable serves @1, canary @3 (cannot read @1's requests), fallback @2 (can).
    let cfg = schema_config("");
    let v = view(&cfg);
    let w = World { targets: &[], snapshot: Some(&v) };
    let mut seen = [0usize; 3];
    for i in 0..2_000 {
        let key = format!("user-{i}");
        let req = RequestMeta { user_key: Some(&key), ..grpc("/a.S/M") };
        let (t, reason) = routed(decide(&cfg, &req, &w));
        assert!(matches!(reason, Reason::Weight | Reason::Schema), "{reason:?}");
        seen[t] += 1;
    }
    // Assumed to speak @1: the canary's half of the users moves on to the fallback, which
    // serves @1 clients; nobody reaches the canary, which cannot.
    assert_eq!(seen[1], 0, "{seen:?}");
    assert!(seen[0] > 800 && seen[2] > 800, "{seen:?}");

    // With a canary that can serve the assumed revision, undeclared users reach it.
    let cfg = Config::from_json(
        br#"{"sidecar": {"cluster": "sc"}, "routes": [{"name": "r", "match": ["*"], "default_target": "stable",
             "targets": [{"name": "stable", "cluster": "a", "revision": "features.v1@1", "weight": 50},
                         {"name": "canary", "cluster": "b", "revision": "features.v1@2", "weight": 50}]}]}"#,
    )
    .unwrap();
    let v = view(&cfg);
    let w = World { targets: &[], snapshot: Some(&v) };
    let canary = (0..1_000)
        .filter(|i| {
            let key = format!("user-{i}");
            routed(decide(&cfg, &RequestMeta { user_key: Some(&key), ..grpc("/a.S/M") }, &w)) == (1, Reason::Weight)
        })
        .count();
    assert!((400..=600).contains(&canary), "{canary}");
}

#[test]
fn undeclared_policy_can_assume_a_revision_or_keep_the_old_default() {
    let v = view(&schema_config(""));
    let w = World { targets: &[], snapshot: Some(&v) };
    let req = RequestMeta { group: Some("canary"), ..grpc("/a.S/M") };
    let assume3 = schema_config(r#""schema": {"undeclared": {"assume": "features.v1@3"}},"#);
    assert_eq!(routed(decide(&assume3, &req, &w)), (1, Reason::Header));
    let old = schema_config(r#""schema": {"undeclared": "default_target"},"#);
    assert_eq!(routed(decide(&old, &req, &w)), (0, Reason::UnknownRevision));
    // An assumed revision the registry does not know: the default target.
    let ghost = schema_config(r#""schema": {"undeclared": {"assume": "features.v1@9"}},"#);
    assert_eq!(routed(decide(&ghost, &req, &w)), (0, Reason::UnknownRevision));
    assert!(Config::from_json(br#"{"schema": {"undeclared": {"assume": " "}}}"#).is_err());
    assert!(Config::from_json(br#"{"schema": {"undeclared": "sometimes"}}"#).is_err());
}
