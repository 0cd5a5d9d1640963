//! The decision in Envoy's access log, through filter state: the format the README shows.

use std::time::Duration;
use testbed::client::extract;
use testbed::envoy::{Build, Cluster, Envoy, EnvoyConfig};
use testbed::upstream::Upstream;

/// The access-log format documented in the README, with the build's filter-state key
/// (`wasm.switchyard_decision` or `switchyard.decision`).
fn format() -> String {
    let key = Build::current().decision_state_key();
    format!(
        "[%START_TIME%] \"%REQ(:PATH)%\" %GRPC_STATUS% %RESPONSE_CODE_DETAILS% upstream=%UPSTREAM_CLUSTER% \
         switchyard=\"%FILTER_STATE({key}:PLAIN)%\" %DURATION%ms user=%REQ(x-user-id)% group=%REQ(x-ab-group)% \
         revision=%REQ(x-schema-revision)% timeout=%REQ(grpc-timeout)% priority=%REQ(x-priority)%"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_prints_the_decision_and_local_replies() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let plugin = r#"{"decision_to_filter_state": true, "routes": [{"name": "features", "match": ["*"],
        "default_target": "stable", "fallback": "stable",
        "targets": [{"name": "stable", "cluster": "stable", "weight": 1}, {"name": "canary", "cluster": "canary"}],
        "faults": [{"group": "doomed", "percent": 100, "abort": "UNAVAILABLE"}]}]}"#;
    let mut config = EnvoyConfig::new(vec![Cluster::new("stable", stable.port), Cluster::new("canary", canary.port)], plugin);
    config.access_log_format = Some(format());
    let envoy = Envoy::start(config).await;
    let mut c = testbed::client::connect(&envoy.url()).await;
    extract(&mut c, &[("x-ab-group", "canary")]).await.unwrap();
    let _ = extract(&mut c, &[("x-ab-group", "doomed")]).await.unwrap_err();
    let log = testbed::eventually("two access log lines", Duration::from_secs(10), async || {
        let log = envoy.access_log();
        (log.lines().count() >= 2).then_some(log)
    })
    .await;
    assert!(log.contains(r#"upstream=canary switchyard="target=canary; reason=header""#), "{log}");
    assert!(log.contains("Unavailable fault_abort"), "{log}");
    assert!(log.contains(r#"switchyard="reply=fault_abort""#), "{log}");

    // The same log replays through the rehearsal to the same decisions.
    let mut scenario = switchyard_rehearse::Scenario::parse("duration_s: 30\ntraffic: {replay: access.log}\n").unwrap();
    scenario.attach_replay(switchyard_rehearse::replay::Replay::parse(&log).unwrap());
    let report = switchyard_rehearse::rehearse(plugin, &scenario, None).unwrap();
    assert_eq!(report.requests, 2, "{}", report.text());
    assert_eq!(report.targets[1].by_reason.get("header").copied(), Some(1), "{}", report.text());
    assert_eq!(report.replies.get("fault_abort").copied(), Some(1), "{}", report.text());
}
