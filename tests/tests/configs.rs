//! Every configuration in the repository is checked by what will read it: Envoy configs
//! by `envoy --mode validate`, plugin configurations by the JSON Schema and by the
//! filter's own parser, which must agree.

use serde_json::Value;
use switchyard_filter_core::config::Config;
use testbed::manifests::{envoy_validate, envoy_validate_bootstrap, files, yaml_docs};
use testbed::paths;

const WASM_FILTER: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const NATIVE_FILTER: &str = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";

/// Finds every `typed_config` of type `type_url` in a document.
fn typed_configs(v: &Value, type_url: &str, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            if m.get("@type").and_then(Value::as_str) == Some(type_url) {
                out.push(v.clone());
            }
            m.values().for_each(|c| typed_configs(c, type_url, out));
        }
        Value::Array(a) => a.iter().for_each(|c| typed_configs(c, type_url, out)),
        _ => {}
    }
}

/// Every plugin configuration in the repository: (where, JSON text).
fn plugin_configs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in files("filter/examples", "json") {
        out.push((f.display().to_string(), std::fs::read_to_string(&f).unwrap()));
    }
    for f in files("envoy", "yaml").into_iter().chain(files("envoy/istio", "yaml")).chain(files("envoy/kubernetes", "yaml")) {
        for doc in yaml_docs(&f) {
            let mut filters = Vec::new();
            typed_configs(&doc, WASM_FILTER, &mut filters);
            for w in filters {
                let value = w.pointer("/config/configuration/value").and_then(Value::as_str).unwrap();
                out.push((format!("{} (Wasm filter)", f.display()), value.to_owned()));
            }
            let mut modules = Vec::new();
            typed_configs(&doc, NATIVE_FILTER, &mut modules);
            for m in modules {
                let value = m.pointer("/filter_config/value").and_then(Value::as_str).unwrap();
                out.push((format!("{} (dynamic module)", f.display()), value.to_owned()));
            }
            if doc["kind"] == "WasmPlugin" {
                out.push((format!("{} (WasmPlugin)", f.display()), doc["spec"]["pluginConfig"].to_string()));
            }
        }
    }
    out
}

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(paths::root().join("filter/config.schema.json")).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

#[test]
fn every_plugin_config_passes_schema_and_parser() {
    let configs = plugin_configs();
    assert!(configs.len() >= 5, "expected examples, demo and Istio configs, found {configs:?}");
    let schema = schema();
    for (at, json) in configs {
        let value: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{at}: {e}"));
        let errors: Vec<String> = schema.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{at} fails the schema: {errors:?}");
        Config::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{at} fails the parser: {e}"));
    }
}

#[test]
fn schema_and_parser_reject_the_same_bad_configs() {
    let schema = schema();
    let bad = [
        r#"{"unknown": 1}"#,
        r#"{"non_grpc": "drop"}"#,
        r#"{"group_header": "has space"}"#,
        r#"{"access": {"deny": ["no-slash"]}}"#,
        r#"{"routes": [{"name": "r", "match": [], "targets": [{"name": "s", "cluster": "c"}], "default_target": "s"}]}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [], "default_target": "s"}]}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c", "weight": -1}], "default_target": "s"}]}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c", "weight": 1000001}], "default_target": "s"}]}"#,
        r#"{"routes": [{"name": "r r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c"}], "default_target": "s"}]}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s"}], "default_target": "s"}]}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c", "extra": 1}], "default_target": "s"}]}"#,
        r#"{"stat_prefix": "bad prefix"}"#,
        r#"{"tick_ms": 5}"#,
        r#"{"sidecar": {"path": "/x"}}"#,
        r#"{"sidecar": {"cluster": "s", "poll_ms": 10}}"#,
        r#"{"schema": {"unknown_revision": "drop"}}"#,
        r#"{"budget": {"malformed": "panic"}}"#,
        r#"{"priority": {"low": "low"}}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c", "max_concurrency": 0}], "default_target": "s"}]}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c"}], "default_target": "s", "degrade": {"error_rate_pct": 150}}]}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c"}], "default_target": "s", "degrade": {"slow_treshold_ms": 1}}]}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c"}], "default_target": "s", "degrade": {"error_codes": ["NOPE"]}}]}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c"}], "default_target": "s", "latency": {"percentile": 0}}]}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c"}], "default_target": "s", "validate": {"mode": "maybe"}}]}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c"}], "default_target": "s", "faults": [{"percent": 5}]}]}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c"}], "default_target": "s", "faults": [{"target": "s", "group": "g", "percent": 5, "abort": 14}]}]}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c"}], "default_target": "s", "faults": [{"percent": 5, "abort": "OK"}]}]}"#,
        r#"{"routes": [{"name": "r", "match": ["/a"], "targets": [{"name": "s", "cluster": "c"}], "default_target": "s", "faults": [{"percent": 101, "delay_ms": 5}]}]}"#,
    ];
    for json in bad {
        let value: Value = serde_json::from_str(json).unwrap();
        assert!(!schema.is_valid(&value), "schema accepts {json}");
        assert!(Config::from_json(json.as_bytes()).is_err(), "parser accepts {json}");
    }
}

/// One plugin configuration everywhere, but for what the deployment's shape dictates:
/// `route_refresh` and `cluster_filter_state` describe its route table (a matcher on filter
/// state in envoy-native.yaml, header routes elsewhere), `decision_to_filter_state` whether
/// its Envoy reads the decision (the demo's tracer tags spans with it); in the client-side topology
/// (`envoy/istio`) the snapshot comes from the network registry (`switchyard_registry`),
/// which reports no model health, so targets name no `model_version`.
#[test]
fn every_deployment_runs_the_demo_plugin_config() {
    let parsed: Vec<(String, Value)> = plugin_configs()
        .into_iter()
        .filter(|(at, _)| at.contains("/envoy/"))
        .map(|(at, json)| {
            let mut v: Value = serde_json::from_str(&json).unwrap();
            if let Some(o) = v.as_object_mut() {
                o.remove("route_refresh");
                o.remove("cluster_filter_state");
                o.remove("decision_to_filter_state");
            }
            (at, v)
        })
        .collect();
    let demo = parsed.iter().find(|(at, _)| at.ends_with("/envoy/envoy.yaml (Wasm filter)")).map(|(_, v)| v.clone()).unwrap();
    let mut client_side = demo.clone();
    client_side["sidecar"]["cluster"] = Value::from("switchyard_registry");
    for route in client_side["routes"].as_array_mut().unwrap() {
        for target in route["targets"].as_array_mut().unwrap() {
            assert!(target.as_object_mut().unwrap().remove("model_version").is_some());
        }
    }
    let mut shapes = std::collections::BTreeSet::new();
    for (at, v) in &parsed {
        let (shape, want) = if at.contains("/envoy/istio/") { ("client side", &client_side) } else { ("demo or per host", &demo) };
        assert_eq!(v, want, "{at} differs from the demo's configuration ({shape})");
        shapes.insert(shape);
    }
    assert!(parsed.len() >= 6 && shapes.len() == 2, "{parsed:?}");
}

/// The demo Envoys trace as the end-to-end tests' Envoy does (`testbed::envoy::hcm_tracing_json`,
/// checked by `tests/tracing.rs`): the same tracer, the decision tag from each build's
/// filter-state key, which their plugin configuration writes.
#[test]
fn the_demo_envoys_trace_with_the_decision_tag() {
    use testbed::envoy::{hcm_tracing_json, Build};
    for (file, build) in [("envoy/envoy.yaml", Build::Wasm), ("envoy/envoy-native.yaml", Build::Native)] {
        let doc = &yaml_docs(&paths::root().join(file))[0];
        let hcm = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(hcm["tracing"], hcm_tracing_json(build), "{file}");
        let plugin = plugin_configs().into_iter().find(|(at, _)| at.contains(file)).map(|(_, json)| json).unwrap();
        let plugin: Value = serde_json::from_str(&plugin).unwrap();
        assert_eq!(plugin["decision_to_filter_state"], true, "{file}");
        let clusters = doc["static_resources"]["clusters"].as_array().unwrap();
        assert!(clusters.iter().any(|c| c["name"] == "otel_collector"), "{file}");
    }
}

#[test]
fn every_envoy_config_validates() {
    // The demo configs load the built filter, Wasm and native.
    paths::wasm();
    paths::native();
    let configs = files("envoy", "yaml");
    assert!(!configs.is_empty());
    for c in configs {
        envoy_validate(&c);
    }
}

/// The EnvoyFilter's patch is a real Envoy filter config: put it in a listener, point it
/// at the built `.wasm` and let Envoy validate it (which runs the filter's `on_configure`).
#[test]
fn istio_envoyfilter_patch_validates_in_envoy() {
    let docs = yaml_docs(&paths::root().join("envoy/istio/envoyfilter.yaml"));
    let mut filter = docs[0]["spec"]["configPatches"][0]["patch"]["value"].clone();
    filter["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] =
        Value::String(paths::wasm().display().to_string());
    validate_patch_in_envoy(filter);
}

/// The same for the native build's EnvoyFilter: Envoy loads the built `.so` from the path
/// the patch names (the mounted volume's, here the build's) and runs its `config_new`.
#[test]
fn istio_native_envoyfilter_patch_validates_in_envoy() {
    let docs = yaml_docs(&paths::root().join("envoy/istio/envoyfilter-native.yaml"));
    let mut filter = docs[0]["spec"]["configPatches"][0]["patch"]["value"].clone();
    assert_eq!(filter["typed_config"]["@type"], NATIVE_FILTER);
    filter["typed_config"]["dynamic_module_config"]["module"]["local"]["filename"] =
        Value::String(paths::native().display().to_string());
    validate_patch_in_envoy(filter);
}

fn validate_patch_in_envoy(filter: Value) {
    // With the `switchyard_registry` cluster its plugin configuration polls (registry-cluster.yaml).
    let cluster = yaml_docs(&paths::root().join("envoy/istio/registry-cluster.yaml"))[0]["spec"]["configPatches"][0]["patch"]["value"].clone();
    assert_eq!(cluster["name"], "switchyard_registry");
    let bootstrap = serde_json::json!({
        "static_resources": {
            "clusters": [cluster],
            "listeners": [{
                "name": "l",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "l",
                        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
                            {"match": {"prefix": "/"}, "route": {"cluster_header": "x-switchyard-cluster"}}]}]},
                        "http_filters": [filter, {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                    }
                }]}]
            }]
        }
    });
    envoy_validate_bootstrap(&bootstrap);
}
