//! The fleet on real network hosts (`cargo xtask fleet`, three hosts): every host decides
//! alone, and what a fleet must still guarantee holds. The run's report is kept in
//! `target/fleet/test-<filter>.json`.

use testbed::envoy::Build;
use testbed::fleet::{scenario, Fleet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_agree_degrade_alone_take_a_new_revision_and_hide_a_dead_sidecar() {
    let build = Build::current();
    let mut fleet = Fleet::start(3, build).await.unwrap_or_else(|e| panic!("the fleet did not start: {e:#}"));
    let report = scenario::run(&mut fleet, &scenario::Options::default()).await.unwrap_or_else(|e| panic!("{e:#}"));
    let dir = testbed::paths::root().join("target/fleet");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("test-{}.json", report.filter)), serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    eprintln!("{}\n{}", report.table_markdown(), report.summary());

    // Sticky buckets: the same target on every host for every user, at the weights.
    assert_eq!(report.sticky_agreement, 1.0, "{:?}", report.sticky);
    for share in &report.sticky.canary_share {
        assert!((0.15..=0.25).contains(share), "canary share {share} for a 20 % weight: {:?}", report.sticky);
    }

    // Each host degrades the slow canary on its own traffic, by the slow-responses rule, then
    // probes it back once the fault is gone.
    for h in &report.degrade.per_host {
        assert_eq!(h.slow_transitions, 1, "{h:?}");
        assert!(h.slow_canary_requests >= 5, "the rule needs 5 slow responses: {h:?}");
        assert!(h.degrade_reaction_ms.is_some_and(|ms| ms < 20_000), "{h:?}");
        assert!(h.first_diverted_ms.is_some() && h.restore_ms.is_some(), "{h:?}");
    }

    // The new revision reaches every host through the volume's ..data swap, one fingerprint.
    assert!(report.schema.one_fingerprint, "{:?}", report.schema);
    assert!(report.schema_propagation_ms < 10_000, "{:?}", report.schema);

    // A dead sidecar: the front takes its host out and retries elsewhere; nobody else fails.
    let kill = &report.sidecar_kill;
    assert_eq!(kill.failed_requests, 0, "{kill:?}");
    assert!(kill.requests_after_kill > 0, "{kill:?}");
    assert!(kill.front_ejected_ms.is_some_and(|ms| ms < 3_000), "{kill:?}");
    assert!(!kill.health_flags.is_empty(), "{kill:?}");
    let all = report.table.last().expect("the table's total row");
    assert_eq!(all.failed, kill.failed_in_flight, "only requests in flight at the kill may fail: {:?}", report.table);
}
