//! The Kubernetes and Istio manifests (`envoy/kubernetes`, `envoy/istio`) checked by what
//! would read them: Kubernetes objects against Kubernetes's published schemas (PyPI
//! `kubernetes-validate`), Istio resources against Istio's (npm `@kubernetes-models/istio`),
//! Envoy patches in a real Envoy, the sidecar configurations by the sidecar itself, and the
//! schema ConfigMap against the revisions the demo registers.

use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use testbed::manifests::{envoy_validate_bootstrap, files, yaml_docs};
use testbed::{envoy, paths, sidecar};

/// Every document of every YAML file in `dir`, with its file.
fn manifests(dir: &str) -> Vec<(PathBuf, Value)> {
    files(dir, "yaml").into_iter().flat_map(|f| yaml_docs(&f).into_iter().map(move |d| (f.clone(), d))).collect()
}

fn is_istio(doc: &Value) -> bool {
    doc["apiVersion"].as_str().is_some_and(|v| v.contains(".istio.io/"))
}

fn all() -> Vec<(PathBuf, Value)> {
    let mut docs = manifests("envoy/kubernetes");
    docs.extend(manifests("envoy/istio"));
    docs
}

/// Runs `kubernetes-validate --strict` over `docs`; `(passed, output)`.
fn kubernetes_validate(docs: &[Value]) -> (bool, String) {
    let tool = paths::root().join(".venv/bin/kubernetes-validate");
    assert!(tool.exists(), "{} not found: run `cargo xtask setup` (xtask/requirements.txt)", tool.display());
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let f = dir.path().join(format!("{i:02}.yaml"));
            std::fs::write(&f, serde_yaml::to_string(d).unwrap()).unwrap();
            f
        })
        .collect();
    let out = Command::new(tool).arg("--strict").args(&files).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Validates Istio resources with `tests/kubernetes/validate-istio.mjs`; `(passed, output)`.
fn istio_validate(docs: &[Value]) -> (bool, String) {
    let npm = paths::var().join("npm");
    assert!(
        npm.join("node_modules/@kubernetes-models/istio").exists(),
        "@kubernetes-models/istio is not in {}: run `cargo xtask setup` (xtask/npm/package.json)",
        npm.display()
    );
    let mut child = Command::new("node")
        .arg(paths::root().join("tests/kubernetes/validate-istio.mjs"))
        .env("SWITCHYARD_NPM", &npm)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (Node.js) is needed to validate Istio resources");
    child.stdin.take().unwrap().write_all(serde_json::to_string(docs).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn kubernetes_objects_pass_kubernetes_schemas() {
    let docs: Vec<Value> = all().into_iter().map(|(_, d)| d).filter(|d| !is_istio(d)).collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in ["Namespace", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"] {
        assert!(kinds.contains(&kind), "no {kind} among {kinds:?}");
    }
    let (ok, out) = kubernetes_validate(&docs);
    assert!(ok, "{out}");
    // The validator is strict: an unknown field is an error.
    let mut wrong = docs.iter().find(|d| d["kind"] == "Deployment").unwrap().clone();
    wrong["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = json!("Always");
    let (ok, out) = kubernetes_validate(&[wrong]);
    assert!(!ok && out.contains("imagePullPolice"), "{out}");
}

#[test]
fn istio_resources_pass_istio_schemas() {
    let docs: Vec<Value> = all().into_iter().map(|(_, d)| d).filter(is_istio).collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in ["WasmPlugin", "EnvoyFilter", "VirtualService", "DestinationRule"] {
        assert!(kinds.contains(&kind), "no {kind} among {kinds:?}");
    }
    let (ok, out) = istio_validate(&docs);
    assert!(ok, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("ok ")).count(), docs.len(), "{out}");
    let mut wrong = docs.iter().find(|d| d["kind"] == "WasmPlugin").unwrap().clone();
    wrong["spec"]["match"][0]["mode"] = json!("INBOUND");
    let (ok, out) = istio_validate(&[wrong]);
    assert!(!ok && out.contains("mode"), "{out}");
}

/// Every ConfigMap volume of schema revisions maps each key to a `.proto` tree, and the keys
/// hold the demo's revisions (so the manifests never drift from `proto/`).
#[test]
fn the_schema_configmap_holds_the_registered_revisions_as_trees() {
    let docs = all();
    let schemas = docs.iter().map(|(_, d)| d).find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "features-schemas").unwrap();
    assert_eq!(schemas["data"]["001-features.proto"].as_str(), Some(sidecar::revisions::current().as_str()));
    assert_eq!(schemas["data"]["002-features.proto"].as_str(), Some(sidecar::revisions::with_new_field().as_str()));
    let keys: Vec<&String> = schemas["data"].as_object().unwrap().keys().collect();
    let mut volumes = 0;
    for (at, d) in &docs {
        for v in d.pointer("/spec/template/spec/volumes").and_then(Value::as_array).into_iter().flatten() {
            if v["configMap"]["name"] != "features-schemas" {
                continue;
            }
            volumes += 1;
            let items = v["configMap"]["items"].as_array().unwrap_or_else(|| panic!("{}: the schema volume needs items", at.display()));
            assert_eq!(items.len(), keys.len(), "{}: every revision is mounted", at.display());
            for item in items {
                let key = item["key"].as_str().unwrap();
                let stem = key.strip_suffix(".proto").unwrap();
                assert_eq!(item["path"], format!("{stem}/features/v1/features.proto"), "{}", at.display());
            }
        }
    }
    assert_eq!(volumes, 2, "the per-host model pods and the client-side registry mount it");
}

/// The sidecar configurations the manifests carry pass the sidecar's own check.
#[test]
fn sidecar_configurations_pass_the_sidecar_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for (at, d) in all() {
        if d["kind"] != "ConfigMap" || d["metadata"]["name"] != "switchyard-sidecar" {
            continue;
        }
        for (key, text) in d["data"].as_object().unwrap() {
            let file = dir.path().join(key);
            std::fs::write(&file, text.as_str().unwrap()).unwrap();
            let out = Command::new(sidecar::binary()).args(["serve", "--check", "--config"]).arg(&file).output().unwrap();
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
                "{} {key}: {}{}",
                at.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            checked.push(key.clone());
        }
    }
    checked.sort();
    assert_eq!(checked, ["canary.toml", "fallback.toml", "registry.toml", "sidecar.toml", "stable.toml"]);
    // The check fails on what the sidecar would refuse, naming the field.
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(&wrong, "admin_listen = \"0.0.0.0:9464\"\n").unwrap();
    let out = Command::new(sidecar::binary()).args(["serve", "--check", "--config"]).arg(&wrong).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("admin_listen"));
}

/// The per-host topology in a real Envoy: the EnvoyFilter's clusters, its inbound route in
/// front of a default route, and the WasmPlugin's filter with its configuration and the
/// built `.wasm` (Envoy runs the filter's `on_configure`, which polls `sidecar_admin`).
#[test]
fn per_host_patches_and_plugin_validate_in_envoy() {
    let docs = manifests("envoy/kubernetes");
    let patch = docs.iter().map(|(_, d)| d).find(|d| d["kind"] == "EnvoyFilter" && d["metadata"]["name"] == "switchyard-per-host").unwrap();
    let plugin = docs.iter().map(|(_, d)| d).find(|d| d["kind"] == "WasmPlugin").unwrap();
    assert_eq!(plugin["spec"]["match"][0]["mode"], "SERVER", "per host, the filter is on the model pods' inbound side");
    let patches = patch["spec"]["configPatches"].as_array().unwrap();
    let clusters: Vec<Value> = patches.iter().filter(|p| p["applyTo"] == "CLUSTER").map(|p| p["patch"]["value"].clone()).collect();
    let route = patches.iter().find(|p| p["applyTo"] == "HTTP_ROUTE").unwrap()["patch"]["value"].clone();
    // Every target cluster and the snapshot's cluster are there.
    let config = &plugin["spec"]["pluginConfig"];
    let names: Vec<&str> = clusters.iter().filter_map(|c| c["name"].as_str()).collect();
    for t in config["routes"][0]["targets"].as_array().unwrap() {
        assert!(names.contains(&t["cluster"].as_str().unwrap()), "{names:?}");
    }
    assert!(names.contains(&config["sidecar"]["cluster"].as_str().unwrap()));
    let routes = json!([route, {"match": {"prefix": "/"}, "route": {"cluster": "features_stable", "timeout": "0s"}}]);
    let filters = vec![envoy::wasm_filter_json(&paths::wasm(), &config.to_string()), envoy::router_filter_json()];
    let bootstrap = json!({
        "static_resources": {
            "clusters": clusters,
            "listeners": [envoy::http_listener_json("inbound", 0, routes, filters, json!([]))]
        }
    });
    envoy_validate_bootstrap(&bootstrap);
}
