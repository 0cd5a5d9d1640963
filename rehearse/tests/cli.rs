//! The command as a pipeline runs it: exit status and messages.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn rehearse(config: &str, scenario: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard-rehearse"))
        .current_dir(root())
        .args(["--config", config, "--scenario", scenario])
        .args(extra)
        .output()
        .unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn the_example_passes_its_gate_from_the_envoy_config() {
    let (code, out, err) = rehearse("envoy/envoy.yaml", "examples/rehearsal/slow-canary.yaml", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("canary: healthy -> degraded"), "{out}");
    assert!(out.contains("0 left a target whose weight rose"), "{out}");
    assert!(out.contains("all expectations met"), "{out}");
}

#[test]
fn unmet_expectations_exit_1_and_json_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("strict.yaml");
    let text = std::fs::read_to_string(root().join("examples/rehearsal/slow-canary.yaml")).unwrap();
    std::fs::write(&scenario, text.replace("degraded_within_ms: 3000", "degraded_within_ms: 10")).unwrap();
    let (code, out, err) = rehearse("envoy/envoy.yaml", scenario.to_str().unwrap(), &["--format", "json"]);
    assert_eq!(code, 1, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(report["expectations"][0]["met"], false);
    assert_eq!(report["expectations"][1]["met"], true);
}

#[test]
fn bad_input_exits_2_naming_file_and_place() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("bad.yaml");
    std::fs::write(&scenario, "duration_s: 10\ntraffic:\n  rate: [{at_s: 0, rps: 100}]\n  users: 0\n").unwrap();
    let (code, _, err) = rehearse("envoy/envoy.yaml", scenario.to_str().unwrap(), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("bad.yaml: traffic.users: must be 1 to 1000000"), "{err}");

    let config = dir.path().join("plugin.json");
    std::fs::write(&config, r#"{"routes": [{"name": "r", "match": ["/a.B/*"], "targets": [{"name": "t", "cluster": "c", "wieght": 1}]}]}"#).unwrap();
    let (code, _, err) = rehearse(config.to_str().unwrap(), "examples/rehearsal/slow-canary.yaml", &[]);
    assert_eq!(code, 2);
    assert!(err.contains("plugin.json: config at routes[0].targets[0]"), "{err}");
}

#[test]
fn the_example_plugin_json_is_the_one_envoy_yaml_embeds() {
    // Two files, one configuration: rehearsing either gives the same report.
    let scenario = "examples/rehearsal/slow-canary.yaml";
    let (a, out_a, err_a) = rehearse("envoy/envoy.yaml", scenario, &["--format", "json"]);
    let (b, out_b, err_b) = rehearse("examples/rehearsal/plugin.json", scenario, &["--format", "json"]);
    assert_eq!((a, b), (0, 0), "{err_a}{err_b}");
    assert_eq!(out_a, out_b, "examples/rehearsal/plugin.json differs from the configuration in envoy/envoy.yaml");
}
