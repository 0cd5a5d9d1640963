//! A/B routing through a real Envoy running the filter.

use testbed::client::{extract, EXTRACT};
use testbed::envoy::Routing;
use testbed::{ab_config, AbStack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_group_reaches_its_target_and_unknown_goes_to_default() {
    let stack = AbStack::start(&ab_config(10)).await;
    let mut c = stack.client().await;
    for target in ["stable", "canary", "fallback"] {
        let a = extract(&mut c, &[("x-ab-group", target)]).await.unwrap();
        assert_eq!(a.served_by, target);
        assert_eq!(a.decision().as_deref(), Some(&*format!("target={target}; reason=header")));
    }
    let a = extract(&mut c, &[("x-ab-group", "nightly")]).await.unwrap();
    assert_eq!(a.served_by, "stable");
    assert_eq!(a.decision().as_deref(), Some("target=stable; reason=unknown_group"));
    let a = extract(&mut c, &[]).await.unwrap();
    assert_eq!(a.served_by, "stable");
    assert_eq!(a.decision().as_deref(), Some("target=stable; reason=default"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_internal_routing_header_is_ignored() {
    let stack = AbStack::start(&ab_config(10)).await;
    let mut c = stack.client().await;
    // Routed request: the filter's choice overwrites the client's.
    for _ in 0..20 {
        let a = extract(&mut c, &[("x-ab-group", "stable"), ("x-switchyard-cluster", "canary")])
            .await
            .unwrap();
        assert_eq!(a.served_by, "stable");
    }
    // Unrouted method: the header is removed, so Envoy's default route applies and the
    // canary never sees it.
    let before = stack.canary.requests();
    let _ = testbed::client::call_path(&stack.envoy.url(), "/other.v1.Service/Method").await;
    assert_eq!(stack.canary.requests(), before);
    assert_eq!(stack.stable.requests_to("/other.v1.Service/Method"), 1);
    // The header the upstream sees is the filter's, not the client's.
    let _ = extract(&mut c, &[("x-ab-group", "fallback"), ("x-switchyard-cluster", "canary")]).await;
    let seen = stack.fallback.last_headers().unwrap();
    assert_eq!(seen.get("x-switchyard-cluster").unwrap(), "fallback");
}

/// `route_refresh: cluster` behind a route whose matcher cluster specifier reads the
/// routing header: Envoy keeps the matched route and only picks its cluster again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matcher_route_takes_the_choice_with_a_cluster_refresh() {
    let config = ab_config(10).replacen('{', r#"{"route_refresh": "cluster", "#, 1);
    let stack = AbStack::start_routed(&config, 2, Routing::Matcher).await;
    let mut c = stack.client().await;
    for target in ["stable", "canary", "fallback"] {
        let a = extract(&mut c, &[("x-ab-group", target), ("x-switchyard-cluster", "canary")]).await.unwrap();
        assert_eq!(a.served_by, target);
    }
    // Sticky buckets: many users split, each one stays.
    let mut canary = 0;
    for i in 0..400 {
        let user = format!("user-{i}");
        let first = extract(&mut c, &[("x-user-id", &user)]).await.unwrap().served_by;
        let again = extract(&mut c, &[("x-user-id", &user)]).await.unwrap().served_by;
        assert_eq!(first, again, "{user} moved");
        canary += usize::from(first == "canary");
    }
    assert!((16..=64).contains(&canary), "canary got {canary} of 400 users, want about 40");
    // Unrouted method with a spoofed header: removed, the route's default cluster serves.
    let before = stack.canary.requests();
    let _ = testbed::client::call_path(&stack.envoy.url(), "/other.v1.Service/Method").await;
    let _ = testbed::client::call_raw(&stack.envoy.url(), "/other.v1.Service/Method", &[("x-switchyard-cluster", "canary")], Vec::new()).await;
    assert_eq!(stack.canary.requests(), before);
    assert_eq!(stack.stable.requests_to("/other.v1.Service/Method"), 2);
}

/// `cluster_filter_state`: the native module puts its choice in filter state, which the
/// route's matcher reads; nothing is added to the request. The Wasm build refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_module_routes_through_filter_state() {
    let config = ab_config(10).replacen('{', r#"{"route_refresh": "cluster", "cluster_filter_state": "switchyard.cluster", "#, 1);
    if testbed::envoy::Build::current() == testbed::envoy::Build::Wasm {
        let mut stack = AbStack::start(&ab_config(10)).await;
        assert!(!stack.envoy.push_listener(&config).await, "the Wasm build accepted cluster_filter_state");
        stack.envoy.wait_log("switchyard: invalid plugin configuration: cluster_filter_state: this build cannot route by filter state").await;
        return;
    }
    let stack = AbStack::start_routed(&config, 2, Routing::FilterState("switchyard.cluster")).await;
    let mut c = stack.client().await;
    for target in ["stable", "canary", "fallback"] {
        let a = extract(&mut c, &[("x-ab-group", target)]).await.unwrap();
        assert_eq!(a.served_by, target);
    }
    assert!(stack.fallback.last_headers().unwrap().get("x-switchyard-cluster").is_none(), "nothing is added to the request");
    // A client's header routes nothing.
    let a = extract(&mut c, &[("x-ab-group", "stable"), ("x-switchyard-cluster", "canary")]).await.unwrap();
    assert_eq!(a.served_by, "stable");
    let before = stack.canary.requests();
    let _ = testbed::client::call_raw(&stack.envoy.url(), "/other.v1.Service/Method", &[("x-switchyard-cluster", "canary")], Vec::new()).await;
    assert_eq!(stack.canary.requests(), before);
    let mut canary = 0;
    for i in 0..400 {
        let user = format!("user-{i}");
        canary += usize::from(extract(&mut c, &[("x-user-id", &user)]).await.unwrap().served_by == "canary");
    }
    assert!((16..=64).contains(&canary), "canary got {canary} of 400 users, want about 40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_key_is_sticky_and_many_split_by_weight() {
    let stack = AbStack::start(&ab_config(10)).await;
    let c = stack.client().await;

    // 1,000 requests with one user key all reach one target.
    let answers = run(&c, (0..1000).map(|_| "user-42".to_string())).await;
    let first = &answers[0];
    assert!(answers.iter().all(|a| a == first), "user-42 was split across targets");

    // 10,000 distinct keys split 90/10 within ±2 points.
    let answers = run(&c, (0..10_000).map(|i| format!("user-{i}"))).await;
    let canary = answers.iter().filter(|a| *a == "canary").count();
    let stable = answers.iter().filter(|a| *a == "stable").count();
    assert_eq!(canary + stable, 10_000, "weight-0 fallback received bucketed users");
    let pct = canary as f64 / 100.0;
    assert!((8.0..=12.0).contains(&pct), "canary got {pct}% of users, want 10 ± 2");
    stack.envoy.wait_filter_stat("switchyard.reason.weight", |n| n >= 11_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_canary_weight_moves_no_user_out_of_canary() {
    let mut stack = AbStack::start(&ab_config(10)).await;
    let keys: Vec<String> = (0..3000).map(|i| format!("member-{i}")).collect();
    let before = run(&stack.client().await, keys.iter().cloned()).await;

    assert!(stack.envoy.push_listener(&ab_config(20)).await, "weight change rejected");
    let after = run(&stack.client().await, keys.iter().cloned()).await;

    let mut moved_in = 0;
    for ((key, b), a) in keys.iter().zip(&before).zip(&after) {
        assert!(!(b == "canary" && a != "canary"), "{key} moved out of the canary");
        moved_in += usize::from(b == "stable" && a == "canary");
    }
    let share = after.iter().filter(|a| *a == "canary").count() as f64 / keys.len() as f64;
    assert!(moved_in > 0 && (0.16..=0.24).contains(&share), "canary share now {share}, {moved_in} moved in");
}

/// Sends one request per user key, 64 at a time, and returns who served each.
async fn run(client: &testbed::client::Client, keys: impl Iterator<Item = String>) -> Vec<String> {
    use futures::StreamExt;
    futures::stream::iter(keys)
        .map(|key| {
            let mut c = client.clone();
            async move { extract(&mut c, &[("x-user-id", &key)]).await.unwrap().served_by }
        })
        .buffered(64)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_requests_per_target_and_reason() {
    let stack = AbStack::start(&ab_config(10)).await;
    let mut c = stack.client().await;
    for _ in 0..3 {
        extract(&mut c, &[("x-ab-group", "canary")]).await.unwrap();
    }
    extract(&mut c, &[]).await.unwrap();
    let e = &stack.envoy;
    e.wait_filter_stat("switchyard.route.features.target.canary.requests", |n| n == 3).await;
    e.wait_filter_stat("switchyard.route.features.target.stable.requests", |n| n == 1).await;
    e.wait_filter_stat("switchyard.reason.header", |n| n == 3).await;
    e.wait_filter_stat("switchyard.reason.default", |n| n == 1).await;
    e.wait_filter_stat("switchyard.requests", |n| n == 4).await;
    assert_eq!(stack.canary.requests_to(EXTRACT), 3);
}
