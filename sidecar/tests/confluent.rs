//! The Confluent Schema Registry API of the real sidecar, driven by a client nobody here
//! wrote: `confluent-kafka`'s `SchemaRegistryClient` and `ProtobufSerializer` from PyPI
//! (`tests/confluent/client.py`). Then a restart: subjects, ids, documents and modes are
//! still there, and the filter's snapshot carries the revisions registered through the API.

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{Repo, Sidecar};

const TOKEN: &str = "s3cret-token";

/// The venv's Python with confluent-kafka; fails (never skips) when the set-up is missing.
fn python() -> std::path::PathBuf {
    let python = support::root().join(".venv/bin/python");
    assert!(python.exists(), "{} not found: run `cargo xtask setup`", python.display());
    let probe = Command::new(&python).args(["-c", "import confluent_kafka, grpc_tools"]).output().expect("run python");
    assert!(
        probe.status.success(),
        "confluent-kafka is not installed in .venv (run `cargo xtask setup`, which installs xtask/requirements.txt): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    python
}

fn start(repo: &Repo, state: &Path) -> Sidecar {
    std::fs::write(state.join("token"), format!("{TOKEN}\n")).unwrap();
    let config = support::config(&format!(
        "[schema]\nstate_dir = {:?}\n\n[confluent]\nlisten = \"127.0.0.1:0\"\ntoken_file = {:?}\n",
        state.join("registry").display().to_string(),
        state.join("token").display().to_string(),
    ));
    Sidecar::start(repo.path(), &config)
}

fn confluent_addr(sidecar: &Sidecar) -> SocketAddr {
    testkit::ready::address(&sidecar.ready["confluent"]).unwrap_or_else(|| panic!("no confluent listener in {}", sidecar.ready))
}

/// `(status, JSON)` from the Confluent listener.
fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let reply = testkit::http::request_to(addr, method, path, body, Duration::from_secs(30)).expect("confluent listener");
    let json = serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", reply.body));
    (reply.status, json)
}

#[test]
fn confluent_client_registers_checks_and_reads_back_protobuf_schemas_that_survive_a_restart() {
    let python = python();
    let repo = Repo::with(&[("orientation-lite", &[1])]);
    let state = tempfile::tempdir().unwrap();
    let sidecar = start(&repo, state.path());
    let registry = confluent_addr(&sidecar);

    let work = tempfile::tempdir().unwrap();
    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/confluent/client.py"))
        .arg(format!("http://{registry}"))
        .arg(format!("http://{}", sidecar.admin))
        .arg(work.path())
        .arg(TOKEN)
        .output()
        .expect("run the confluent-kafka client");
    assert!(
        out.status.success(),
        "confluent-kafka client failed:\n{}\n{}\nsidecar log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sidecar.log()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("summary line");
    let (money_id, order_id, order_v2_id) =
        (summary["money_id"].as_u64().unwrap(), summary["order_id"].as_u64().unwrap(), summary["order_v2_id"].as_u64().unwrap());
    let verbose = summary["verbose"].as_array().unwrap();
    assert!(
        verbose.iter().any(|m| m.as_str().unwrap().starts_with("FIELD_WIRE_COMPATIBLE_TYPE schema.proto:13:")),
        "rule ID and file:line:column of `string quantity = 2`: {verbose:?}"
    );

    // The API is on the admin port too (loopback), with the same answers.
    let (status, subjects) = call(sidecar.admin, "GET", "/subjects", "");
    assert_eq!(status, 200);
    assert_eq!(subjects, serde_json::json!(["common/money.proto", "money", "orders-value"]));

    drop(sidecar);
    let sidecar = start(&repo, state.path());
    let registry = confluent_addr(&sidecar);
    let (_, subjects_after) = call(registry, "GET", "/subjects", "");
    assert_eq!(subjects_after, subjects, "subjects survive a restart");
    let (status, v2) = call(registry, "GET", "/subjects/orders-value/versions/latest", "");
    assert_eq!(status, 200, "{v2}");
    assert_eq!((v2["version"].as_u64(), v2["id"].as_u64(), v2["schemaType"].as_str()), (Some(2), Some(order_v2_id), Some("PROTOBUF")));
    assert_eq!(v2["references"], serde_json::json!([{"name": "common/money.proto", "subject": "money", "version": 1}]));
    let (_, v1) = call(registry, "GET", &format!("/schemas/ids/{order_id}"), "");
    assert!(v1["schema"].as_str().unwrap().contains("repeated Line lines = 4;"), "{v1}");
    let (_, money_uses) = call(registry, "GET", &format!("/schemas/ids/{money_id}/versions"), "");
    assert_eq!(money_uses, serde_json::json!([{"subject": "common/money.proto", "version": 1}, {"subject": "money", "version": 1}]));
    let (_, level) = call(registry, "GET", "/config/orders-value", "");
    assert_eq!(level, serde_json::json!({"compatibilityLevel": "FULL_TRANSITIVE"}), "run-time modes survive");
    let (_, level) = call(registry, "GET", "/config", "");
    assert_eq!(level, serde_json::json!({"compatibilityLevel": "FORWARD"}));
    // A new schema after the restart gets a new id, after the others.
    let fresh = r#"{"schemaType": "PROTOBUF", "schema": "syntax = \"proto3\";\npackage audit;\nmessage Event { string id = 1; }\n"}"#;
    let (status, id) = call(registry, "POST", "/subjects/audit-value/versions", fresh);
    assert_eq!(status, 200, "{id}");
    assert_eq!(id["id"].as_u64(), Some(money_id.max(order_id).max(order_v2_id) + 1));

    // The filter's snapshot has the revisions registered through the API, with the mode.
    let (status, body) = sidecar.http("GET", "/v1/snapshot", "");
    assert_eq!(status, 200, "{body}");
    let snapshot: Value = serde_json::from_str(&body).unwrap();
    let orders = &snapshot["schema"]["subjects"]["orders-value"];
    assert_eq!(orders["current"].as_u64(), Some(2), "{snapshot}");
    assert_eq!(orders["revisions"].as_array().map(Vec::len), Some(2), "{snapshot}");
    assert_eq!(orders["mode"].as_str(), Some("FULL_TRANSITIVE"), "{snapshot}");
    assert!(orders["pairs"].as_array().is_some_and(|p| p.len() == 2), "both directions between v1 and v2: {snapshot}");
}
