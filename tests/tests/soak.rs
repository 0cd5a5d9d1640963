//! The churn soak compressed to two minutes (`cargo xtask soak` runs twenty): the demo stack
//! under open-loop load at 70 % of its measured capacity while the canary's model file is
//! swapped, replaced by a corrupt file and by a checksum mismatch, schema revisions arrive
//! (one breaking), plugin configurations are pushed (one broken), chaos comes and goes on the
//! canary, the sidecar is restarted with SIGTERM and Envoy is hot-restarted.
//!
//! Asserts the goals of the full soak that two minutes can show: every change taken as it
//! should be (good ones applied, bad ones refused with the old state serving), no unexpected
//! failure, no filter failure. Memory growth and p99 during swaps against the steady p99 need
//! the full run's length to mean anything (here swaps come every 8 s and their windows cover
//! most of the run: the ratio moved between 0.44 and 5.1 on this shared machine); they are
//! reported here and asserted by `cargo xtask soak`.
//! The report and plot are kept in `target/soak/test-<build>.{json,svg}`.

use std::time::Duration;
use testbed::envoy::Build;
use testbed::soak;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_soak_loses_nothing() {
    let _turn = testbed::one_at_a_time().await;
    let options = soak::Options { duration: Duration::from_secs(120), ..Default::default() };
    let run = soak::run(&options).await.unwrap_or_else(|e| panic!("the soak could not run: {e:#}"));
    let build = format!("{:?}", Build::current()).to_lowercase();
    let dir = testbed::paths::root().join("target/soak");
    std::fs::create_dir_all(&dir).expect("target/soak");
    let report = serde_json::to_string_pretty(&run.report).expect("report");
    std::fs::write(dir.join(format!("test-{build}.json")), &report).expect("write the report");
    std::fs::write(dir.join(format!("test-{build}.svg")), soak::plot::svg(&run.report, &run.samples, &run.events, &run.memory, run.started))
        .expect("write the plot");
    eprintln!("{report}");

    let r = &run.report;
    assert!(r.requests as f64 >= r.load_rps as f64 * 100.0, "too few requests for the rate: {} at {}/s", r.requests, r.load_rps);
    for kind in ["model_swap", "model_corrupt", "model_checksum_mismatch", "schema_compatible", "schema_breaking", "config_changed", "config_broken", "sidecar_restart", "envoy_hot_restart"] {
        assert!(r.events.iter().any(|e| e.event.starts_with(kind) && e.ok), "no successful {kind} in the run: {:#?}", r.events);
    }
    assert!(r.failures.expected.contains_key("chaos_error"), "the error chaos caused no failures: {:?}", r.failures);
    assert!(r.latency_ms.during_swaps_samples >= 20, "too few answers during swaps to compare: {}", r.latency_ms.during_swaps_samples);
    let shortfalls: Vec<String> =
        r.shortfalls().into_iter().filter(|s| !s.contains(" RSS ") && !s.contains("during swaps")).collect();
    assert!(shortfalls.is_empty(), "the soak missed its goals:\n- {}", shortfalls.join("\n- "));
}
