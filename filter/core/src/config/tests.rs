use super::*;

fn parse(json: &str) -> Result<Config, String> {
    Config::from_json(json.as_bytes()).map_err(|e| e.to_string())
}

const GOOD: &str = r#"{
    "routes": [{
        "name": "features",
        "match": ["/features.v1.FeatureExtractionService/*"],
        "targets": [
            {"name": "stable", "cluster": "stable", "weight": 90},
            {"name": "canary", "cluster": "canary", "weight": 10}
        ],
        "default_target": "stable"
    }]
}"#;

#[test]
fn defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.headers.group, "x-ab-group");
    assert_eq!(c.headers.user_key, "x-user-id");
    assert_eq!(c.headers.cluster, "x-switchyard-cluster");
    assert_eq!(c.headers.revision, "x-schema-revision");
    assert_eq!(c.headers.budget, "grpc-timeout");
    assert_eq!(c.headers.priority, "x-priority");
    assert_eq!(c.headers.decision, None);
    assert_eq!(c.low_priority, vec!["low"]);
    assert!(!c.budget_bare_millis);
    assert_eq!(c.stat_prefix, "switchyard");
    assert_eq!(c.tick_ms, 100);
    assert!(parse("{}").unwrap().routes.is_empty());
}

#[test]
fn route_defaults_follow_the_canary_tools() {
    let c = parse(GOOD).unwrap();
    let r = &c.routes[0];
    assert_eq!(r.default_target, 0);
    assert_eq!(r.fallback, None);
    assert!(r.covers("/features.v1.FeatureExtractionService/ExtractRealtime"));
    assert_eq!(r.rules.slow_consecutive, 5);
    assert_eq!(r.rules.slow_threshold_us, 800_000);
    assert_eq!(r.rules.error_rate_pct, 5.0);
    assert_eq!(r.rules.error_window_ms, 60_000);
    assert_eq!(r.rules.error_codes, vec![2, 4, 8, 13, 14, 15]);
    assert_eq!(r.latency.percentile, 90.0);
    assert_eq!(r.validate.mode, ValidateMode::Off);
}

#[test]
fn disabled_degradation_never_fires() {
    let c = parse(&GOOD.replace(r#""default_target": "stable""#, r#""default_target": "stable", "degrade": {"enabled": false}"#)).unwrap();
    let r = &c.routes[0].rules;
    assert_eq!((r.slow_consecutive, r.error_rate_pct, r.follow_sidecar), (0, 0.0, false));
}

#[test]
fn header_names_are_lowercased() {
    let c = parse(r#"{"group_header": "X-Group", "expose_decision": true, "budget": {"header": "X-Budget-Ms"}}"#).unwrap();
    assert_eq!(c.headers.group, "x-group");
    assert_eq!(c.headers.decision.as_deref(), Some("x-switchyard-decision"));
    assert_eq!(c.headers.budget, "x-budget-ms");
    assert!(c.budget_bare_millis);
}

#[test]
fn errors_name_the_field() {
    let route = |extra: &str| {
        format!(
            r#"{{"sidecar": {{"cluster": "sc"}}, "routes": [{{"name": "r", "match": ["/a/*"], "default_target": "s",
                "targets": [{{"name": "s", "cluster": "c"}}, {{"name": "f", "cluster": "d"}}] {extra}}}]}}"#
        )
    };
    let cases = [
        (r#"{"routes": [{"name": "r", "match": ["/a/*"], "targets": [{"name": "s", "cluster": "c", "wieght": 1}], "default_target": "s"}]}"#.to_string(),
         "routes[0].targets[0].wieght: unknown field `wieght`"),
        (r#"{"routes": [{"name": "r", "match": ["/a/*"], "targets": [{"name": "s", "cluster": "c"}], "default_target": "x"}]}"#.into(),
         "routes[0].default_target: \"x\" is not a target of this route (targets: s)"),
        (r#"{"routes": [{"name": "r", "match": ["a"], "targets": [{"name": "s", "cluster": "c"}], "default_target": "s"}]}"#.into(),
         "routes[0].match[0]: method pattern"),
        (r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c", "weight": -1}], "default_target": "s"}]}"#.into(),
         "routes[0].targets[0].weight: invalid value: integer `-1`"),
        (r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c", "weight": 2000000}], "default_target": "s"}]}"#.into(),
         "routes[0].targets[0].weight: 2000000 is over the maximum"),
        (r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c"}, {"name": "s", "cluster": "d"}], "default_target": "s"}]}"#.into(),
         "routes[0].targets[1].name: duplicate target name"),
        (r#"{"routes": [{"name": "r r", "match": ["/a"], "targets": [], "default_target": "s"}]}"#.into(),
         "routes[0].name: \"r r\" must be"),
        (r#"{"routes": [{"name": "r", "match": [], "targets": [], "default_target": "s"}]}"#.into(),
         "routes[0].match: needs at least one"),
        (r#"{"group_header": "bad header"}"#.into(), "group_header: \"bad header\" is not a valid HTTP header name"),
        (r#"{"cluster_header": "x-ab-group"}"#.into(), "cluster_header: \"x-ab-group\" is also used as group_header"),
        (r#"{"non_grpc": "drop"}"#.into(), "non_grpc: unknown variant `drop`"),
        (r#"{"access": {"deny": ["nope"]}}"#.into(), "access.deny[0]: method pattern"),
        (r#"{"routes": 3}"#.into(), "routes: invalid type: integer `3`, expected a sequence"),
        ("{\"routes\": [".into(), "EOF while parsing"),
        (r#"{"tick_ms": 5}"#.into(), "tick_ms: 5 is outside"),
        (r#"{"sidecar": {"cluster": "s", "poll_ms": 10}}"#.into(), "sidecar.poll_ms: 10 is below the minimum"),
        (r#"{"sidecar": {"path": "/x"}}"#.into(), "sidecar: missing field `cluster`"),
        (r#"{"schema": {"unknown_revision": "drop"}}"#.into(), "schema.unknown_revision: unknown variant `drop`"),
        (r#"{"budget": {"malformed": "panic"}}"#.into(), "budget.malformed: unknown variant `panic`"),
        (route(r#", "fallback": "nope""#), "routes[0].fallback: \"nope\" is not a target of this route (targets: s, f)"),
        (route(r#", "degrade": {"error_rate_pct": 150}"#), "routes[0].degrade.error_rate_pct: 150 must be a percentage"),
        (route(r#", "degrade": {"cooldown_ms": 5000, "max_cooldown_ms": 1000}"#), "routes[0].degrade.max_cooldown_ms: 1000 is below cooldown_ms (5000)"),
        (route(r#", "degrade": {"error_codes": ["UNAVAILABLE", "NOPE"]}"#), "routes[0].degrade.error_codes[1]: \"NOPE\" is not a gRPC status code"),
        (route(r#", "degrade": {"slow_treshold_ms": 5}"#), "routes[0].degrade.slow_treshold_ms: unknown field"),
        (route(r#", "latency": {"percentile": 0}"#), "routes[0].latency.percentile: 0 must be a percentage"),
        (route(r#", "validate": {"unknown_fields": "maybe"}"#), "routes[0].validate.unknown_fields: \"maybe\" is not one of allow, warn, reject"),
        (route(r#", "validate": {"wire_type_mismatch": "allow"}"#), "routes[0].validate.wire_type_mismatch: \"allow\" is not one of warn, reject"),
        (route(r#", "faults": [{"target": "x", "percent": 5, "delay_ms": 1}]"#), "routes[0].faults[0].target: \"x\" is not a target of this route"),
        (route(r#", "faults": [{"target": "s", "percent": 5}]"#), "routes[0].faults[0]: a fault needs `delay_ms`, `abort`, or both"),
        (route(r#", "faults": [{"target": "s", "percent": 5, "abort": 99}]"#), "routes[0].faults[0].abort: 99 is not a gRPC status code"),
        (route(r#", "faults": [{"target": "s", "group": "g", "percent": 5, "abort": 14}]"#), "routes[0].faults[0]: set `target` or `group`, not both"),
        (r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c", "revision": "features.v1@1"}], "default_target": "s"}]}"#.into(),
         "routes[0].targets: targets declare schema revisions, but no `sidecar` is configured"),
    ];
    for (json, want) in cases {
        let got = parse(&json).unwrap_err();
        assert!(got.contains(want), "for {json}\n  got:  {got}\n  want: {want}");
    }
}

#[test]
fn a_full_route_compiles() {
    let c = parse(
        r#"{"sidecar": {"cluster": "sidecar_admin"},
            "routes": [{"name": "r", "match": ["/a/*"], "default_target": "s", "fallback": "f",
              "targets": [{"name": "s", "cluster": "c", "revision": "features.v1@1", "model_version": "m/1",
                           "latency_prior_ms": 20, "max_concurrency": 8},
                          {"name": "f", "cluster": "d"}],
              "faults": [{"group": "beta", "percent": 10, "delay_ms": 200, "abort": "UNAVAILABLE"}],
              "validate": {"mode": "filter", "unknown_fields": "reject"}}]}"#,
    )
    .unwrap();
    let r = &c.routes[0];
    assert_eq!(r.fallback, Some(1));
    assert!(r.schema_aware());
    assert_eq!(r.targets[0].latency_prior_us, Some(20_000));
    assert_eq!(r.faults[0].abort, Some(Code::Unavailable));
    assert_eq!(r.faults[0].group.as_deref(), Some("beta"));
    assert_eq!(r.validate.unknown_fields, UnknownFields::Reject);
    assert_eq!(r.validate.wire_type_mismatch, WireTypeMismatch::Reject, "the default");
    assert_eq!(c.sidecar.as_ref().unwrap().path, "/v1/snapshot");
}

#[test]
fn access_deny_wins_and_empty_allow_allows_all() {
    let c = parse(r#"{"access": {"allow": ["/a.S/*"], "deny": ["/a.S/Admin*"]}}"#).unwrap();
    assert!(c.access.permits("/a.S/Get"));
    assert!(!c.access.permits("/a.S/AdminReset"));
    assert!(!c.access.permits("/b.S/Get"));
    let open = parse("{}").unwrap();
    assert!(open.access.permits("/anything/Goes"));
}
