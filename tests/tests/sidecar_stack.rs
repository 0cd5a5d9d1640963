//! The filter with the real sidecar: real model versions behind the targets, the schema
//! registry's snapshot driving revision routing, the chaos endpoint making a canary
//! misbehave.

use serde_json::json;
use std::time::{Duration, Instant};
use testbed::client::{extract_image, refused_within};
use testbed::sidecar::{page, CANARY, FALLBACK};
use testbed::{SidecarStack, Traffic};

const STABLE_V: &str = "orientation/1";
const CANARY_V: &str = "orientation/2";
const FALLBACK_V: &str = "orientation-lite/1";

/// Rules for the degradation tests. The slow threshold leaves room for a loaded two-core
/// machine running two of these stacks at once (each with real inference); the chaos
/// latency is well above it.
const DEGRADE: &str = r#", "degrade": {"slow_consecutive": 3, "slow_threshold_ms": 500,
    "error_rate_pct": 20, "error_window_s": 10, "error_min_requests": 10,
    "cooldown_ms": 1500, "probe_share_pct": 50, "probe_successes": 3}"#;

/// Requests declaring revision 3, which only the canary (and nothing older) can serve.
const CANARY_CLIENT: [(&str, &str); 2] = [("x-ab-group", "canary"), ("x-schema-revision", "features.v1@3")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_canary_moves_to_fallback_and_probes_restore_it() {
    let stack = SidecarStack::start_without_revisions(DEGRADE, "").await;
    let traffic = Traffic::start_with_image(&stack.envoy.url(), &[("x-ab-group", "canary")], 4, page(0)).await;
    traffic.wait_for("the canary serving", |a| a == CANARY_V).await;

    stack.sidecar.chaos(json!({"target": CANARY, "latency_ms": 1200}));
    let slow = Instant::now();
    let moved = traffic.wait_for("canary traffic on the fallback", |a| a == FALLBACK_V).await;
    println!("reaction time (slow canary → fallback): {:?}", moved - slow);
    stack.envoy.wait_log("route features target canary: healthy -> degraded (3 consecutive responses slower than 500 ms").await;

    stack.sidecar.clear_chaos();
    let fixed = Instant::now();
    traffic.wait_all_recent("canary restored", |a| a == CANARY_V, 12).await;
    println!("recovery time (fault cleared → canary restored, cool-down 1.5 s): {:?}", fixed.elapsed());
    stack.envoy.wait_log("target canary: probing -> healthy").await;
    assert_eq!(stack.envoy.filter_failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_is_degraded_by_error_rate_and_restored() {
    let stack = SidecarStack::start_without_revisions(DEGRADE, "").await;
    let traffic = Traffic::start_with_image(&stack.envoy.url(), &[("x-ab-group", "canary")], 4, page(0)).await;
    traffic.wait_for("the canary serving", |a| a == CANARY_V).await;

    stack.sidecar.chaos(json!({"target": CANARY, "error_rate": 1.0, "error_code": "UNAVAILABLE"}));
    let failing = Instant::now();
    let moved = traffic.wait_for("canary traffic on the fallback", |a| a == FALLBACK_V).await;
    println!("reaction time (UNAVAILABLE canary → fallback): {:?}", moved - failing);
    stack.envoy.wait_log("target canary: healthy -> degraded (error rate over 20%").await;

    stack.sidecar.clear_chaos();
    traffic.wait_all_recent("canary restored", |a| a == CANARY_V, 12).await;
    stack.envoy.wait_filter_stat("switchyard.route.features.target.canary.state", |v| v == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_the_sidecar_reports_unhealthy_is_degraded() {
    let stack = SidecarStack::start_without_revisions(DEGRADE, "").await;
    let mut c = stack.client().await;
    assert_eq!(extract_image(&mut c, &[("x-ab-group", "canary")], page(0)).await.unwrap().served_by, CANARY_V);
    stack.sidecar.chaos(json!({"target": CANARY, "unhealthy": true}));
    stack.envoy.wait_log("target canary: healthy -> degraded (the sidecar reports its model version unhealthy)").await;
    // The worker that logged it merged first; every other follows on its next tick.
    let a = testbed::eventually("the canary's requests on the fallback", Duration::from_secs(2), async || {
        extract_image(&mut c, &[("x-ab-group", "canary")], page(0)).await.ok().filter(|a| a.served_by == FALLBACK_V)
    })
    .await;
    assert_eq!(a.decision().as_deref(), Some("target=fallback; reason=degraded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_fail_fast_or_pick_the_fallback_on_real_latencies() {
    let stack = SidecarStack::start_without_revisions(r#", "degrade": {"enabled": false}, "latency": {"min_samples": 3}"#, "").await;
    // Stable and canary turn slow; the fallback less so.
    stack.sidecar.chaos(json!({"target": "orientation/stable", "latency_ms": 250}));
    stack.sidecar.chaos(json!({"target": CANARY, "latency_ms": 350}));
    stack.sidecar.chaos(json!({"target": FALLBACK, "latency_ms": 80}));
    let mut c = stack.client().await;
    for group in ["stable", "canary", "fallback"] {
        for _ in 0..4 {
            extract_image(&mut c, &[("x-ab-group", group)], page(0)).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Only the fallback can meet 200 ms.
    let a = extract_image(&mut c, &[("x-ab-group", "canary"), ("grpc-timeout", "200m")], page(0)).await.unwrap();
    assert_eq!(a.served_by, FALLBACK_V);
    assert_eq!(a.decision().as_deref(), Some("target=fallback; reason=budget"));

    // Nobody can meet 50 ms: answered at once, and no upstream sees the request.
    let upstream: Vec<u64> = ["stable", "canary", "fallback"].iter().map(|c| stack.upstream_requests(c)).collect();
    let err = extract_image(&mut c, &[("x-ab-group", "canary"), ("grpc-timeout", "50m")], page(0)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("shorter than the p90 latency"), "{}", err.message());
    let after: Vec<u64> = ["stable", "canary", "fallback"].iter().map(|c| stack.upstream_requests(c)).collect();
    assert_eq!(upstream, after, "an upstream saw the fail-fast request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_revisions_route_only_to_targets_that_can_serve_them() {
    let mut stack = SidecarStack::start("", "").await;
    let mut c = stack.client().await;
    // A client on revision 1 picked for the canary (revision 3, which reads image_format
    // differently) goes to the fallback (revision 2, compatible) instead.
    let before = stack.upstream_requests("canary");
    for _ in 0..5 {
        let a = extract_image(&mut c, &[("x-ab-group", "canary"), ("x-schema-revision", "features.v1@1")], page(0))
            .await
            .unwrap();
        assert_eq!(a.served_by, FALLBACK_V);
        assert_eq!(a.decision().as_deref(), Some("target=fallback; reason=schema"));
    }
    assert_eq!(stack.upstream_requests("canary"), before, "a revision-1 client reached the canary");
    // Users bucketed by weight follow the same rule.
    for i in 0..200 {
        let key = format!("user-{i}");
        let a = extract_image(&mut c, &[("x-user-id", &key), ("x-schema-revision", "features.v1@1")], page(0))
            .await
            .unwrap();
        assert_ne!(a.served_by, CANARY_V);
    }
    // The canary's own clients reach it; declared by fingerprint works too.
    let a = extract_image(&mut c, &CANARY_CLIENT, page(0)).await.unwrap();
    assert_eq!(a.served_by, CANARY_V);
    let fingerprint = stack.sidecar.snapshot()["schema"]["subjects"]["features.v1"]["revisions"][2]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = extract_image(&mut c, &[("x-ab-group", "canary"), ("x-schema-revision", &fingerprint)], page(0)).await.unwrap();
    assert_eq!(a.served_by, CANARY_V);

    // Without the canary, nothing serves revision 3: FAILED_PRECONDITION naming revisions.
    let no_canary = SidecarStack::plugin_config("", "").replace(
        r#"{"name": "canary", "cluster": "canary", "weight": 10, "model_version": "orientation/canary", "revision": "features.v1@3"},"#,
        "",
    );
    assert!(stack.envoy.push_listener(&no_canary).await);
    // Every worker of the new listener's configuration installs it too.
    let installs = 2 * stack.envoy.snapshot_installs();
    stack.envoy.wait_filter_stat("switchyard.sidecar.snapshots", |n| n >= installs).await;
    let mut c = stack.client().await;
    let err = extract_image(&mut c, &[("x-schema-revision", "features.v1@3")], page(0)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("features.v1@3"), "{}", err.message());
    assert!(err.message().contains("stable=features.v1@1") && err.message().contains("fallback=features.v1@2"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_revision_dropped_into_the_registry_reaches_the_filter() {
    let stack = SidecarStack::start("", r#""schema": {"unknown_revision": "reject"},"#).await;
    let mut c = stack.client().await;
    let err = extract_image(&mut c, &[("x-schema-revision", "features.v1@4")], page(0)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    // Revision 4: revision 3 plus a field, so the gate (BACKWARD against 3) accepts it.
    let rev4 = testbed::sidecar::revisions::breaking().replacen(
        "  string image_format = 3;\n",
        "  string image_format = 3;\n  string tenant = 16;\n",
        1,
    );
    let generations = stack.envoy.filter_stat("switchyard.sidecar.snapshots");
    testbed::sidecar::revisions::write(stack.schema_dir.path(), "004-features", &rev4);
    stack.envoy.wait_filter_stat("switchyard.sidecar.snapshots", |n| n > generations).await;
    let a = testbed::eventually("revision 4 served", Duration::from_secs(10), async || {
        extract_image(&mut c, &[("x-ab-group", "canary"), ("x-schema-revision", "features.v1@4")], page(0)).await.ok()
    })
    .await;
    // Revision 4 only adds to 3, so the canary serves it; older targets cannot.
    assert_eq!(a.served_by, CANARY_V);
    let a = extract_image(&mut c, &[("x-ab-group", "stable"), ("x-schema-revision", "features.v1@4")], page(0)).await.unwrap();
    assert_eq!(a.served_by, CANARY_V);
    assert_eq!(a.decision().as_deref(), Some("target=canary; reason=schema"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_priority_is_shed_while_online_traffic_passes() {
    let stack = SidecarStack::start_without_revisions(DEGRADE, "").await;
    let traffic = Traffic::start_with_image(&stack.envoy.url(), &[("x-ab-group", "canary")], 4, page(0)).await;
    traffic.wait_for("the canary serving", |a| a == CANARY_V).await;
    stack.sidecar.chaos(json!({"target": CANARY, "latency_ms": 1200}));
    traffic.wait_for("canary degraded", |a| a == FALLBACK_V).await;
    let mut c = stack.client().await;
    // Each request the canary still serves takes its 1.2 s: allow for one.
    let err = refused_within(&mut c, &[("x-ab-group", "canary"), ("x-priority", "low")], page(0), Duration::from_secs(3)).await;
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    let online = extract_image(&mut c, &[("x-ab-group", "canary")], page(0)).await.unwrap();
    assert_eq!(online.served_by, FALLBACK_V);
    let batch_on_stable = extract_image(&mut c, &[("x-ab-group", "stable"), ("x-priority", "low")], page(0)).await.unwrap();
    assert_eq!(batch_on_stable.served_by, STABLE_V);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_sidecar_leaves_routing_on_the_last_snapshot() {
    let mut stack = SidecarStack::start("", "").await;
    stack.sidecar.kill();
    stack.envoy.wait_filter_stat("switchyard.sidecar.poll_failures", |n| n >= 1).await;
    stack.envoy.wait_log("switchyard: sidecar snapshot poll failed").await;
    assert!(stack.envoy.log().contains("keeping snapshot generation"));
    // Schema routing still applies (the model ports are gone too, so look at decisions).
    let mut c = stack.client().await;
    let err = extract_image(&mut c, &[("x-ab-group", "canary"), ("x-schema-revision", "features.v1@1")], page(0))
        .await
        .unwrap_err();
    // The fallback was chosen (and is down with the sidecar): Envoy's UNAVAILABLE, not ours.
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(!err.message().starts_with("switchyard:"), "{}", err.message());
    stack.envoy.wait_filter_stat("switchyard.route.features.target.fallback.requests", |n| n == 1).await;
    stack.envoy.wait_filter_stat("switchyard.reason.schema", |n| n == 1).await;
    assert_eq!(stack.envoy.filter_stat("switchyard.route.features.target.canary.requests"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_any_snapshot_fail_open_routes_by_ab_and_fail_closed_refuses() {
    let _turn = testbed::one_at_a_time().await;
    let sidecar = testbed::sidecar::Sidecar::start(None).await;
    // The admin cluster points nowhere: no snapshot will ever arrive.
    let mut dead = testbed::sidecar::Sidecar::start(None).await;
    let dead_admin = dead.admin;
    dead.kill();
    let config = |mode: &str| {
        SidecarStack::plugin_config("", &format!(r#""schema": {{"without_snapshot": "{mode}"}},"#))
    };
    for (mode, expect_ok) in [("open", true), ("closed", false)] {
        let clusters = ["stable", "canary", "fallback"].iter().map(|t| testbed::envoy::Cluster::new(t, sidecar.ports[*t])).collect();
        let mut cfg = testbed::envoy::EnvoyConfig::new(clusters, config(mode));
        cfg.http1_clusters = vec![testbed::envoy::Cluster::new("sidecar_admin", dead_admin)];
        let envoy = testbed::envoy::Envoy::start(cfg).await;
        envoy.wait_filter_stat("switchyard.sidecar.poll_failures", |n| n >= 1).await;
        let mut c = testbed::client::connect(&envoy.url()).await;
        let r = extract_image(&mut c, &[("x-ab-group", "canary"), ("x-schema-revision", "features.v1@1")], page(0)).await;
        if expect_ok {
            assert_eq!(r.unwrap().served_by, CANARY_V, "fail-open routes by A/B only");
        } else {
            let err = r.unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
            assert!(err.message().contains("no schema snapshot"), "{}", err.message());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_metadata_gets_clear_statuses_and_never_crashes_the_vm() {
    let stack = SidecarStack::start("", r#""schema": {"unknown_revision": "reject"}, "budget": {"malformed": "reject"},"#).await;
    let mut c = stack.client().await;
    let cases: &[(&[(&str, &str)], tonic::Code)] = &[
        (&[("grpc-timeout", "12x")], tonic::Code::InvalidArgument),
        (&[("grpc-timeout", "123456789m")], tonic::Code::InvalidArgument),
        (&[("x-schema-revision", "features.v1@banana")], tonic::Code::FailedPrecondition),
        (&[("x-schema-revision", "sha256:zz")], tonic::Code::FailedPrecondition),
        (&[("x-schema-revision", "@@@")], tonic::Code::FailedPrecondition),
    ];
    for (headers, code) in cases {
        let err = match extract_image(&mut c, headers, page(0)).await {
            Ok(a) => panic!("{headers:?} was served: {:?}", a.decision()),
            Err(err) => err,
        };
        assert_eq!(err.code(), *code, "{headers:?}: {err:?}");
        assert!(err.message().starts_with("switchyard:"), "{headers:?}: {}", err.message());
    }
    // Odd priorities are simply not "low".
    for p in ["", "LOW ", "high", "\u{7e}\u{7e}", "lowest"] {
        let r = extract_image(&mut c, &[("x-priority", p), ("x-schema-revision", "features.v1@1")], page(0)).await;
        assert!(r.is_ok(), "priority {p:?}: {r:?}");
    }
    assert_eq!(stack.envoy.filter_failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_declare_no_revision_take_part_in_the_split() {
    // The canary serves revision 2, a compatible evolution of revision 1, which the default
    // target serves: a client that declares nothing is taken to speak 1 and bucketed
    // among the targets that can serve it, the canary included.
    let config = SidecarStack::plugin_config("", "")
        .replace(r#""weight": 90"#, r#""weight": 50"#)
        .replace(r#""weight": 10, "model_version": "orientation/canary", "revision": "features.v1@3""#, r#""weight": 50, "model_version": "orientation/canary", "revision": "features.v1@2""#);
    let mut stack = SidecarStack::start_with(&config).await;
    let mut c = stack.client().await;
    let mut served = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..120 {
        let key = format!("user-{i}");
        let a = extract_image(&mut c, &[("x-user-id", &key)], page(0)).await.unwrap();
        assert_eq!(a.decision().as_deref().map(|d| d.ends_with("reason=weight")), Some(true), "{:?}", a.decision());
        *served.entry(a.served_by).or_default() += 1;
    }
    println!("120 undeclared users, weights 50/50: {served:?}");
    let canary = served.get(CANARY_V).copied().unwrap_or(0);
    assert!((35..=85).contains(&canary), "{served:?}");
    assert_eq!(canary + served.get(STABLE_V).copied().unwrap_or(0), 120, "{served:?}");

    // The old behaviour, on request: undeclared clients stay on the default target.
    let keep = config.replacen('{', r#"{"schema": {"undeclared": "default_target"},"#, 1);
    assert!(stack.envoy.push_listener(&keep).await);
    let installs = 2 * stack.envoy.snapshot_installs();
    stack.envoy.wait_filter_stat("switchyard.sidecar.snapshots", |n| n >= installs).await;
    let mut c = stack.client().await;
    for i in 0..20 {
        let key = format!("user-{i}");
        let a = extract_image(&mut c, &[("x-user-id", &key)], page(0)).await.unwrap();
        assert_eq!((a.served_by.as_str(), a.decision().as_deref()), (STABLE_V, Some("target=stable; reason=unknown_revision")));
    }
}
