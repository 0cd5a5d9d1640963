//! The read-only listener for filters in other pods (the client-side topology): the
//! snapshot, validation and `/healthz`, and nothing that changes state.

mod support;

use std::time::Duration;
use support::{Repo, Sidecar};

#[test]
fn the_snapshot_listener_serves_reads_and_refuses_everything_that_changes_state() {
    let repo = Repo::with(&[("orientation-lite", &[1])]);
    let state = tempfile::tempdir().unwrap();
    let config = support::config(&format!(
        "snapshot_listen = \"127.0.0.1:0\"\n\n[schema]\nstate_dir = {:?}\n",
        state.path().display().to_string()
    ));
    let sidecar = Sidecar::start(repo.path(), &config);
    let public = testkit::ready::address(&sidecar.ready["snapshot"]).unwrap_or_else(|| panic!("no snapshot listener in {}", sidecar.ready));
    let call = |method: &str, path: &str, body: &str| testkit::http::request_to(public, method, path, body, Duration::from_secs(10)).unwrap();

    // The same snapshot as on the admin port.
    let snapshot = call("GET", "/v1/snapshot", "");
    assert_eq!(snapshot.status, 200, "{}", snapshot.body);
    let admin = testkit::http::request_to(sidecar.admin, "GET", "/v1/snapshot", "", Duration::from_secs(10)).unwrap();
    assert_eq!(snapshot.body, admin.body);
    assert!(snapshot.body.contains("orientation-lite/fallback") || snapshot.body.contains("orientation-lite"), "{}", snapshot.body);
    assert_eq!(call("GET", "/healthz", "").status, 200);
    // Validation changes nothing and is there for filters that validate through the sidecar.
    let validate = call("POST", "/v1/validate?method=/features.v1.FeatureExtractionService/ExtractRealtime", "");
    assert_ne!(validate.status, 404, "{}", validate.body);

    // Faults, reloads, metrics and the registry's write API stay on the loopback admin port.
    for (method, path) in [("POST", "/v1/chaos"), ("DELETE", "/v1/chaos"), ("POST", "/v1/reload"), ("GET", "/metrics"), ("GET", "/v1/models"), ("POST", "/subjects/features.v1/versions")] {
        assert_eq!(call(method, path, "{}").status, 404, "{method} {path} must not be on the snapshot listener");
    }
}

/// The client-side topology's registry: a sidecar that serves no model, only the schema
/// registry's snapshot, to filters in client pods.
#[test]
fn a_registry_without_models_serves_the_snapshot() {
    let repo = Repo::with(&[]);
    let work = tempfile::tempdir().unwrap();
    let schemas = work.path().join("schemas");
    let proto = std::fs::read_to_string(support::root().join("proto/features/v1/features.proto")).unwrap();
    let tree = schemas.join("001-initial/features/v1");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("features.proto"), proto).unwrap();
    let config = format!(
        "snapshot_listen = \"127.0.0.1:0\"\n\n[runtime]\nintra_op_threads = 1\n\n[repository]\nwatch = false\nrequired = false\n\n[schema]\ndir = {:?}\nstate_dir = {:?}\n",
        schemas.display().to_string(),
        work.path().join("state").display().to_string()
    );
    let sidecar = Sidecar::start(repo.path(), &config);
    let public = testkit::ready::address(&sidecar.ready["snapshot"]).unwrap();
    let reply = testkit::http::request_to(public, "GET", "/v1/snapshot", "", Duration::from_secs(10)).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let snapshot: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(snapshot["models"], serde_json::json!({}), "no models: {snapshot}");
    assert!(reply.body.contains("features.v1"), "the registry's revisions: {}", reply.body);
}
