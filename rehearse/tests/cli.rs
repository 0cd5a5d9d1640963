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

/// Writes `proto` as revision entry `name` of a registry directory.
fn revision(dir: &std::path::Path, name: &str, proto: &str) {
    let file = dir.join(name).join("features/v1/features.proto");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, proto).unwrap();
}

#[test]
fn a_registry_directory_answers_the_polls_as_the_sidecar_would() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("schemas");
    let proto = std::fs::read_to_string(root().join("proto/features/v1/features.proto")).unwrap();
    assert!(proto.contains("  ImageFormat image_format = 3;\n"), "features.proto changed; update this test");
    revision(&registry, "001-features", &proto);
    revision(&registry, "002-features", &proto.replacen("  ImageFormat image_format = 3;\n", "  ImageFormat image_format = 3;\n  string roi_hint = 15;\n", 1));
    // Breaking (varint to length-delimited): the registry refuses it, as the sidecar does.
    revision(&registry, "003-features", &proto.replacen("  ImageFormat image_format = 3;", "  string image_format = 3;", 1));
    // Every client declares a revision the registry does not have: with the registry's
    // answer they all go to the default target; without one nothing is checked.
    let scenario = dir.path().join("unknown.yaml");
    std::fs::write(
        &scenario,
        "seed: 1\nduration_s: 10\ntraffic:\n  rate: [{at_s: 0, rps: 200}]\n  users: 1000\n  revisions: [{value: features.v1@9, pct: 100}]\n\
         expect:\n  - {target: canary, share_pct: 0, tolerance_pct: 0.5, between_s: [0, 10]}\n",
    )
    .unwrap();
    let scenario = scenario.to_str().unwrap();
    let (code, out, err) = rehearse("examples/rehearsal/plugin.json", scenario, &["--registry", registry.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("unknown_revision"), "{out}");
    assert!(err.contains("003-features") && err.contains("rejected"), "{err}");
    // The directory was only read.
    assert!(!registry.join(".switchyard").exists());

    let (code, out, err) = rehearse("examples/rehearsal/plugin.json", scenario, &[]);
    assert_eq!(code, 1, "{out}{err}");

    let missing = dir.path().join("nowhere");
    let (code, _, err) = rehearse("examples/rehearsal/plugin.json", scenario, &["--registry", missing.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("nowhere"), "{err}");
}
