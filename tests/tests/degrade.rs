//! Automatic degradation through a real Envoy: a canary that turns slow or starts failing
//! loses its traffic to the fallback, then is probed back once it recovers.

use std::time::{Duration, Instant};
use testbed::client::extract;
use testbed::{AbStack, Traffic};

fn config(rules: &str) -> String {
    format!(
        r#"{{"expose_decision": true, "tick_ms": 50, "routes": [{{
            "name": "features", "match": ["/features.v1.FeatureExtractionService/*"],
            "targets": [{{"name": "stable", "cluster": "stable", "weight": 90}},
                        {{"name": "canary", "cluster": "canary", "weight": 10}},
                        {{"name": "fallback", "cluster": "fallback"}}],
            "default_target": "stable", "fallback": "fallback",
            "degrade": {rules}}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_canary_is_degraded_then_probed_back() {
    let stack = AbStack::start(&config(
        r#"{"slow_consecutive": 3, "slow_threshold_ms": 150, "cooldown_ms": 1500, "probe_share_pct": 50, "probe_successes": 3}"#,
    ))
    .await;
    let traffic = Traffic::start(&stack, &[("x-ab-group", "canary")], 8).await;
    traffic.wait_for("canary serving", |a| a == "canary").await;

    stack.canary.set_delay(Duration::from_millis(300));
    let slow_from = Instant::now();
    let moved = traffic.wait_for("canary traffic to move to the fallback", |a| a == "fallback").await;
    println!("reaction: canary traffic on the fallback {:?} after the canary turned slow", moved - slow_from);
    stack.envoy.wait_filter_stat("switchyard.route.features.target.canary.state", |v| v == 1).await;
    stack.envoy.wait_log("route features target canary: healthy -> degraded (3 consecutive responses slower than 150 ms").await;

    // Recovery: after the cool-down, probes succeed and the canary gets its traffic back.
    stack.canary.set_delay(Duration::ZERO);
    let fixed = Instant::now();
    traffic.wait_all_recent("canary restored", |a| a == "canary", 20).await;
    println!("recovery: canary restored {:?} after the fault was removed (cool-down 1.5 s)", fixed.elapsed());
    stack.envoy.wait_log("route features target canary: probing -> healthy").await;
    assert!(stack.envoy.filter_stat("switchyard.route.features.target.canary.probes") > 0);
    assert_eq!(stack.envoy.filter_failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_is_degraded_by_error_rate() {
    let stack = AbStack::start(&config(
        r#"{"error_rate_pct": 20, "error_window_s": 10, "error_min_requests": 10, "cooldown_ms": 1000, "probe_share_pct": 50, "probe_successes": 2}"#,
    ))
    .await;
    let traffic = Traffic::start(&stack, &[("x-ab-group", "canary")], 4).await;
    traffic.wait_for("canary serving", |a| a == "canary").await;

    stack.canary.set_failure(Some(tonic::Code::Unavailable));
    let failing_from = Instant::now();
    let moved = traffic.wait_for("canary traffic to move to the fallback", |a| a == "fallback").await;
    println!("reaction: error-rate breach moved canary traffic {:?} after failures began", moved - failing_from);
    stack.envoy.wait_log("target canary: healthy -> degraded (error rate over 20%").await;

    // Client errors (INVALID_ARGUMENT) are the caller's fault and never degrade a target.
    stack.canary.set_failure(None);
    traffic.wait_all_recent("canary restored", |a| a == "canary", 10).await;
    stack.canary.set_failure(Some(tonic::Code::InvalidArgument));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stack.envoy.filter_stat("switchyard.route.features.target.canary.state"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degradation_is_shared_by_every_worker() {
    // Four workers; connections spread over them. One degradation must stop them all.
    let stack = AbStack::start_with(&config(r#"{"slow_consecutive": 3, "slow_threshold_ms": 150, "cooldown_ms": 60000}"#), 4).await;
    let traffic = Traffic::start(&stack, &[("x-ab-group", "canary")], 8).await;
    traffic.wait_for("canary serving", |a| a == "canary").await;
    stack.canary.set_delay(Duration::from_millis(300));
    traffic.wait_for("fallback", |a| a == "fallback").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = stack.canary.requests();
    // Fresh connections land on every worker.
    for _ in 0..16 {
        let mut c = stack.client().await;
        let a = extract(&mut c, &[("x-ab-group", "canary")]).await.unwrap();
        assert_eq!(a.served_by, "fallback", "{:?}", a.decision());
    }
    assert_eq!(stack.canary.requests(), before, "a worker still sent traffic to the degraded canary");
}
