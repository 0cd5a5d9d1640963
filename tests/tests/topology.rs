//! The client-side topology (`envoy/kubernetes/client-side.yaml`) with real processes: the
//! filter in a client's Envoy routes among model servers it reaches over the network, and its
//! snapshot comes from a schema registry that serves no model, through the registry's
//! read-only `snapshot_listen` (the `switchyard_registry` cluster).

use testbed::client::extract_image;
use testbed::envoy::{self, Cluster, EnvoyConfig};
use testbed::sidecar::{self, page, Sidecar};
use testbed::{one_at_a_time, SidecarStack};

const CANARY_V: &str = "orientation/2";
const FALLBACK_V: &str = "orientation-lite/1";

/// A registry without models: the demo's three revisions, its snapshot on a listener of its own.
async fn registry(schemas: &std::path::Path) -> Sidecar {
    sidecar::revisions::write(schemas, "001-features", &sidecar::revisions::current());
    sidecar::revisions::write(schemas, "002-features", &sidecar::revisions::with_new_field());
    sidecar::revisions::write(schemas, "003-features+force", &sidecar::revisions::breaking());
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-models");
    std::fs::create_dir(&empty).unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nsnapshot_listen = \"127.0.0.1:0\"\n\n\
         [repository]\npath = {:?}\nrequired = false\nwatch = false\n\n\
         [schema]\ndir = {:?}\nstate_dir = {:?}\nmode = \"BACKWARD\"\ndebounce_ms = 100\n",
        empty.display().to_string(),
        schemas.display().to_string(),
        dir.path().join("state").display().to_string()
    );
    let path = dir.path().join("registry.toml");
    std::fs::write(&path, config).unwrap();
    Sidecar::start_config(&path, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_filter_routes_by_the_network_registry_snapshot() {
    let _turn = one_at_a_time().await;
    let schemas = tempfile::tempdir().unwrap();
    let registry = registry(schemas.path()).await;
    let snapshot_port = registry.snapshot_port.expect("the registry's snapshot listener");
    // The model servers: no registry of their own (in Kubernetes, one Deployment per version).
    let models = Sidecar::start(None).await;

    // The client-side plugin configuration: the registry's cluster, no `model_version`
    // (the registry reports no model health).
    let plugin = SidecarStack::plugin_config("", "").replace("\"sidecar_admin\"", "\"switchyard_registry\"");
    let plugin = ["orientation/stable", "orientation/canary", "orientation-lite/fallback"]
        .iter()
        .fold(plugin, |p, m| p.replace(&format!(", \"model_version\": \"{m}\""), ""));
    assert!(!plugin.contains("model_version") && plugin.contains("switchyard_registry"), "{plugin}");
    let clusters = ["stable", "canary", "fallback"].iter().map(|t| Cluster::new(t, models.ports[*t])).collect();
    let mut config = EnvoyConfig::new(clusters, plugin);
    config.http1_clusters = vec![Cluster::new("switchyard_registry", snapshot_port)];
    let envoy = envoy::Envoy::start(config).await;
    let installs = envoy.snapshot_installs();
    envoy.wait_filter_stat("switchyard.sidecar.snapshots", |n| n >= installs).await;
    assert!(envoy.filter_stat("switchyard.sidecar.generation") > 0);

    // Revision routing from the network registry: a revision-1 client picked for the canary
    // (revision 3) goes to the fallback (revision 2); the canary's own clients reach it.
    let mut c = testbed::client::connect(&envoy.url()).await;
    let a = extract_image(&mut c, &[("x-ab-group", "canary"), ("x-schema-revision", "features.v1@1")], page(0)).await.unwrap();
    assert_eq!((a.served_by.as_str(), a.decision().as_deref()), (FALLBACK_V, Some("target=fallback; reason=schema")));
    let a = extract_image(&mut c, &[("x-ab-group", "canary"), ("x-schema-revision", "features.v1@3")], page(0)).await.unwrap();
    assert_eq!(a.served_by, CANARY_V);
    // No model health in the snapshot does not mean unhealthy: every target stays healthy.
    for t in ["stable", "canary", "fallback"] {
        assert_eq!(envoy.filter_stat(&format!("switchyard.route.features.target.{t}.state")), 0, "{t}");
        assert_eq!(envoy.filter_stat(&format!("switchyard.route.features.target.{t}.transitions")), 0, "{t}");
    }
    assert!(!envoy.log().contains("does not serve model version"), "no target names a model version here");
}
