//! Priority shedding and fault injection through a real Envoy.

use std::time::Duration;
use testbed::client::{extract, refused_within};
use testbed::{AbStack, Traffic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_priority_is_shed_from_a_degraded_target_while_online_passes() {
    let stack = AbStack::start(
        r#"{"tick_ms": 50, "routes": [{"name": "features", "match": ["*"],
            "targets": [{"name": "stable", "cluster": "stable", "weight": 90},
                        {"name": "canary", "cluster": "canary", "weight": 10},
                        {"name": "fallback", "cluster": "fallback"}],
            "default_target": "stable", "fallback": "fallback",
            "degrade": {"slow_consecutive": 2, "slow_threshold_ms": 100, "cooldown_ms": 60000}}]}"#,
    )
    .await;
    let traffic = Traffic::start(&stack, &[("x-ab-group", "canary")], 4).await;
    stack.canary.set_delay(Duration::from_millis(200));
    traffic.wait_for("canary degraded", |a| a == "fallback").await;
    drop(traffic);

    let mut c = stack.client().await;
    let err = refused_within(&mut c, &[("x-ab-group", "canary"), ("x-priority", "low")], Vec::new(), Duration::from_secs(1)).await;
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("canary is degraded"), "{}", err.message());
    let online = extract(&mut c, &[("x-ab-group", "canary")]).await.unwrap();
    assert_eq!(online.served_by, "fallback");
    let low_on_stable = extract(&mut c, &[("x-ab-group", "stable"), ("x-priority", "low")]).await.unwrap();
    assert_eq!(low_on_stable.served_by, "stable");
    stack.envoy.wait_filter_stat("switchyard.route.features.target.canary.shed", |n| n == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_priority_is_shed_over_the_concurrency_limit() {
    let stack = AbStack::start(
        r#"{"tick_ms": 20, "routes": [{"name": "features", "match": ["*"], "default_target": "stable",
            "targets": [{"name": "stable", "cluster": "stable", "max_concurrency": 4}],
            "degrade": {"enabled": false}}]}"#,
    )
    .await;
    stack.stable.set_delay(Duration::from_millis(400));
    // Eight online requests in flight, well over the limit of four.
    let online = Traffic::start(&stack, &[], 8).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = stack.client().await;
    let err = extract(&mut c, &[("x-priority", "low")]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("concurrency limit"), "{}", err.message());
    online.wait_for("online requests still served", |a| a == "stable").await;
    assert!(online.answers().iter().all(|a| a.served_by == "stable"), "online traffic was shed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_abort_or_delay_per_target_and_group() {
    let stack = AbStack::start(
        r#"{"routes": [{"name": "features", "match": ["*"], "default_target": "stable",
            "targets": [{"name": "stable", "cluster": "stable"}, {"name": "canary", "cluster": "canary"}],
            "faults": [{"target": "canary", "percent": 100, "abort": "UNAVAILABLE"},
                       {"group": "stable", "percent": 100, "delay_ms": 300}],
            "degrade": {"enabled": false}}]}"#,
    )
    .await;
    let mut c = stack.client().await;
    let err = extract(&mut c, &[("x-ab-group", "canary")]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("fault injected"), "{}", err.message());
    assert_eq!(stack.canary.requests(), 0);

    let started = std::time::Instant::now();
    let a = extract(&mut c, &[("x-ab-group", "stable"), ("grpc-timeout", "2S")]).await.unwrap();
    assert_eq!(a.served_by, "stable");
    assert!(started.elapsed() >= Duration::from_millis(300), "no delay: {:?}", started.elapsed());
    // The upstream gets what remains of the budget after the injected delay.
    let forwarded = stack.stable.last_headers().unwrap().get("grpc-timeout").unwrap().to_str().unwrap().to_owned();
    let us: u64 = forwarded.trim_end_matches('u').parse().unwrap_or(u64::MAX);
    assert!(us <= 1_700_000, "forwarded grpc-timeout {forwarded} does not account for the delay");
    // Requests without the group are not delayed.
    let started = std::time::Instant::now();
    extract(&mut c, &[]).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(300));
}
