//! Configuration pushed to a running Envoy: a bad plugin configuration is rejected with a
//! log line that names the field, and the previous configuration keeps serving.

use std::time::{Duration, Instant};
use testbed::client::extract;
use testbed::{ab_config, AbStack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plugin_config_is_rejected_and_old_config_keeps_serving() {
    let mut stack = AbStack::start(&ab_config(10)).await;
    let mut c = stack.client().await;
    assert_eq!(extract(&mut c, &[("x-ab-group", "canary")]).await.unwrap().served_by, "canary");

    // A typo'd field, then a default target that does not exist.
    let typo = ab_config(10).replace("\"weight\"", "\"wieght\"");
    assert!(!stack.envoy.push_listener(&typo).await, "Envoy accepted a bad configuration");
    let bad_default = ab_config(10).replace("\"default_target\":\"stable\"", "\"default_target\":\"stabel\"");
    assert!(!stack.envoy.push_listener(&bad_default).await, "Envoy accepted a bad configuration");

    let e = &stack.envoy;
    e.wait_log("switchyard: invalid plugin configuration: routes[0].targets[0].wieght: unknown field `wieght`")
        .await;
    e.wait_log("switchyard: invalid plugin configuration: routes[0].default_target: \"stabel\" is not a target of this route")
        .await;

    // The old configuration still routes, on the old and on new connections.
    assert_eq!(extract(&mut c, &[("x-ab-group", "canary")]).await.unwrap().served_by, "canary");
    let mut fresh = stack.client().await;
    assert_eq!(extract(&mut fresh, &[("x-ab-group", "fallback")]).await.unwrap().served_by, "fallback");

    // And a good update still applies afterwards.
    let cohort = ab_config(10).replacen('{', r#"{"group_header":"x-cohort","#, 1);
    assert!(stack.envoy.push_listener(&cohort).await);
    let mut c = stack.client().await;
    let a = extract(&mut c, &[("x-cohort", "canary")]).await.unwrap();
    assert_eq!(a.served_by, "canary", "{:?}", a.decision());
}

/// While a hot restart's parent drains, Envoy adds the parent's counters into the new
/// process's at each stats flush (every 5 s), so `listener_manager.lds.*` move without a
/// push. Broken configurations pushed back to back across two flushes are each still
/// refused, the served one offered again and a new one are taken, and the new process
/// serves the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_while_a_hot_restart_drains_keep_their_outcome() {
    let mut stack = AbStack::start_tuned(&ab_config(10), |config| config.hot_restart = true).await;
    let envoy = &mut stack.envoy;
    envoy.hot_restart().await.expect("hot restart");

    let broken = ab_config(10).replace("\"weight\"", "\"wieght\"");
    let drain = Instant::now();
    let mut pushes = 0;
    while drain.elapsed() < Duration::from_secs(12) {
        assert!(!envoy.push_listener(&broken).await, "push {pushes}, {:?} into the drain: Envoy took a broken configuration", drain.elapsed());
        pushes += 1;
    }
    // What a careful control plane does after a refusal: offer the served one again. It
    // changes no listener, and Envoy takes it without a new version in its config dump.
    assert!(envoy.push_listener(&ab_config(10)).await, "the configuration being served was refused when offered again");
    let to_fallback = ab_config(10).replace("\"default_target\":\"stable\"", "\"default_target\":\"fallback\"");
    assert!(envoy.push_listener(&to_fallback).await, "a good configuration was refused after {pushes} broken ones");
    let mut c = testbed::client::connect(&envoy.url()).await;
    assert_eq!(extract(&mut c, &[]).await.unwrap().served_by, "fallback");
}
