//! Latency budgets through a real Envoy: requests whose deadline no target can meet fail
//! fast without touching an upstream; ones only the fallback can meet go there.

use std::time::Duration;
use testbed::client::{extract, EXTRACT};
use testbed::AbStack;

const CONFIG: &str = r#"{"expose_decision": true, "tick_ms": 50, "routes": [{
    "name": "features", "match": ["/features.v1.FeatureExtractionService/*"],
    "targets": [{"name": "stable", "cluster": "stable", "weight": 90},
                {"name": "canary", "cluster": "canary", "weight": 10},
                {"name": "fallback", "cluster": "fallback"}],
    "default_target": "stable", "fallback": "fallback",
    "degrade": {"enabled": false},
    "latency": {"percentile": 90, "min_samples": 5, "window_s": 30}}]}"#;

/// Teaches the filter each target's latency by sending it requests.
async fn warm_up(stack: &AbStack) {
    // Far apart, so a loaded machine's own delay cannot reorder them against the deadlines
    // below (10 ms, 250 ms).
    stack.stable.set_delay(Duration::from_millis(500));
    stack.canary.set_delay(Duration::from_millis(700));
    stack.fallback.set_delay(Duration::from_millis(30));
    let mut c = stack.client().await;
    let mut calls = Vec::new();
    for target in ["stable", "canary", "fallback"] {
        for _ in 0..8 {
            let mut c = c.clone();
            calls.push(tokio::spawn(async move { extract(&mut c, &[("x-ab-group", target)]).await.map(|_| ()) }));
        }
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // Estimates are shared on the next tick.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = extract(&mut c, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_below_every_target_fails_fast_without_an_upstream_request() {
    let stack = AbStack::start(CONFIG).await;
    warm_up(&stack).await;
    let before: Vec<u64> = [&stack.stable, &stack.canary, &stack.fallback].iter().map(|u| u.requests()).collect();
    let mut c = stack.client().await;
    let started = std::time::Instant::now();
    let err = extract(&mut c, &[("x-ab-group", "canary"), ("grpc-timeout", "10m")]).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("deadline 10.0ms"), "{}", err.message());
    let after: Vec<u64> = [&stack.stable, &stack.canary, &stack.fallback].iter().map(|u| u.requests()).collect();
    assert_eq!(before, after, "an upstream saw a request that was answered locally");
    println!("fail-fast answer in {took:?}");
    stack.envoy.wait_filter_stat("switchyard.fail_fast", |n| n == 1).await;
    stack.envoy.wait_filter_stat("switchyard.route.features.target.canary.fail_fast", |n| n == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_only_the_fallback_can_meet_goes_to_the_fallback() {
    let stack = AbStack::start(CONFIG).await;
    warm_up(&stack).await;
    let mut c = stack.client().await;
    let a = extract(&mut c, &[("x-ab-group", "canary"), ("grpc-timeout", "250m")]).await.unwrap();
    assert_eq!(a.served_by, "fallback");
    assert_eq!(a.decision().as_deref(), Some("target=fallback; reason=budget"));
    // A generous deadline keeps the A/B choice.
    let a = extract(&mut c, &[("x-ab-group", "canary"), ("grpc-timeout", "5S")]).await.unwrap();
    assert_eq!(a.served_by, "canary");
    // The upstream receives the deadline.
    assert!(stack.canary.last_headers().unwrap().get("grpc-timeout").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_target_keeps_its_estimate_so_hopeless_deadlines_still_fail_fast() {
    // A one-second window: after a quiet second no target has a fresh measurement.
    let stack = AbStack::start(&CONFIG.replace(r#""window_s": 30"#, r#""window_s": 1"#)).await;
    warm_up(&stack).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before: Vec<u64> = [&stack.stable, &stack.canary, &stack.fallback].iter().map(|u| u.requests()).collect();
    let mut c = stack.client().await;
    let mut refused = 0;
    for i in 0..30 {
        let group = ["stable", "canary", "fallback"][i % 3];
        // 20 ms: under every target's last estimate (40, 200, 300 ms). The client enforces
        // the deadline too, so on a loaded machine its own timer may answer first.
        let err = extract(&mut c, &[("x-ab-group", group), ("grpc-timeout", "10m")]).await.unwrap_err();
        match err.code() {
            tonic::Code::DeadlineExceeded if err.message().starts_with("switchyard: deadline") => refused += 1,
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {}
            _ => panic!("{err:?}"),
        }
    }
    assert!(refused >= 20, "only {refused} of 30 refused by the filter");
    let after: Vec<u64> = [&stack.stable, &stack.canary, &stack.fallback].iter().map(|u| u.requests()).collect();
    assert_eq!(before, after, "a hopeless request reached an idle upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_timeouts_never_crash_the_vm() {
    let stack = AbStack::start(CONFIG).await;
    let mut c = stack.client().await;
    for bad in ["", "abc", "123456789m", "10x", "-1S", "1.5S", "9999999999999999999999H", "m", "\u{7f}"] {
        // tonic validates outgoing metadata; send what it accepts.
        let Ok(_) = tonic::metadata::MetadataValue::<tonic::metadata::Ascii>::try_from(bad) else { continue };
        let r = extract(&mut c, &[("grpc-timeout", bad)]).await;
        // Ignored by default (no budget): the request is served or refused by the
        // upstream's own grpc-timeout parsing, but never crashes the filter.
        if let Err(e) = &r {
            assert_ne!(e.code(), tonic::Code::Unknown, "{bad:?}: {e:?}");
        }
    }
    let strict = AbStack::start(&CONFIG.replacen('{', r#"{"budget": {"malformed": "reject"},"#, 1)).await;
    let mut c = strict.client().await;
    let err = extract(&mut c, &[("grpc-timeout", "10x")]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("malformed grpc-timeout"), "{}", err.message());
    assert_eq!(strict.stable.requests_to(EXTRACT), 0);
    assert_eq!(stack.envoy.filter_failures(), 0);
    assert_eq!(strict.envoy.filter_failures(), 0);
}
