//! A panic inside the native module is contained: in a dynamic module a panic that crossed
//! the C ABI would take the whole Envoy down, so every hook runs inside `catch_unwind`.
//! The module's test hook (`SWITCHYARD_PANIC_HEADER` in Envoy's environment) panics in the
//! request-headers hook of any request carrying that header.
//!
//! This test always loads the native module, whichever build the suite runs against: the
//! Wasm build has no such hook (a panic there traps the VM, and Envoy's `failure_policy`
//! decides what follows).

use testbed::client::{connect, extract};
use testbed::envoy::{Build, Cluster, Envoy, EnvoyConfig};
use testbed::upstream::Upstream;

async fn envoy_with_panic_hook(stable: &Upstream, failure_policy: &str) -> Envoy {
    let plugin = format!(
        r#"{{"failure_policy": "{failure_policy}", "expose_decision": true, "routes": [{{"name": "features", "match": ["*"],
            "default_target": "stable", "targets": [{{"name": "stable", "cluster": "stable", "weight": 1}}]}}]}}"#
    );
    let mut config = EnvoyConfig::new(vec![Cluster::new("stable", stable.port)], plugin);
    config.build = Build::Native;
    config.env = vec![("SWITCHYARD_PANIC_HEADER".into(), "x-test-panic".into())];
    Envoy::start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_native_module_fails_one_request_and_envoy_keeps_serving() {
    let stable = Upstream::start("stable").await;

    // fail_closed: the panicking request is answered UNAVAILABLE and never goes upstream.
    let envoy = envoy_with_panic_hook(&stable, "closed").await;
    let mut c = connect(&envoy.url()).await;
    for round in 0..3 {
        let err = extract(&mut c, &[("x-test-panic", "1")]).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "round {round}: {err:?}");
        let a = extract(&mut c, &[]).await.unwrap();
        assert_eq!((a.served_by.as_str(), a.decision().as_deref()), ("stable", Some("target=stable; reason=default")));
    }
    assert_eq!(stable.requests(), 3, "the panicking requests never reached the upstream");
    let log = envoy.wait_log("switchyard: panic in hook http_filter_request_headers").await;
    assert!(log.contains("test panic requested by header x-test-panic"), "{log}");
    assert!(log.contains("(3 so far)"), "{log}");
    assert!(envoy.filter_failures() >= 3, "each caught panic is counted as a failure");
    drop(envoy);

    // fail_open: the panicking request goes on unrouted, to Envoy's own default route.
    let envoy = envoy_with_panic_hook(&stable, "open").await;
    let mut c = connect(&envoy.url()).await;
    let a = extract(&mut c, &[("x-test-panic", "1")]).await.unwrap();
    assert_eq!((a.served_by.as_str(), a.decision()), ("stable", None), "served without a decision");
    let a = extract(&mut c, &[]).await.unwrap();
    assert_eq!(a.decision().as_deref(), Some("target=stable; reason=default"));
    envoy.wait_log("switchyard: panic in hook http_filter_request_headers").await;
}
