//! Finding the filter's plugin configuration inside a deployment's documents: an Envoy
//! bootstrap or `config_dump` carries it as a string holding a JSON object (the Wasm
//! `configuration`, the dynamic module's `filter_config`), Istio's `WasmPlugin` as an object
//! under `pluginConfig`. The console (through Envoy's `config_dump`) and the rehearsal CLI
//! (from a file) look for it the same way.

use serde_json::Value;

/// The first plugin configuration (a JSON object with `routes`) in `document`, as JSON.
pub fn plugin_config(document: &Value) -> Option<String> {
    match document {
        Value::String(s) if s.trim_start().starts_with('{') => {
            serde_json::from_str::<Value>(s).ok().filter(|j| j.get("routes").is_some()).map(|_| s.clone())
        }
        Value::Array(a) => a.iter().find_map(plugin_config),
        Value::Object(o) => match o.get("pluginConfig").filter(|pc| pc.get("routes").is_some()) {
            Some(pc) => serde_json::to_string(pc).ok(),
            None => o.values().find_map(plugin_config),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn found_as_a_string_in_a_config_dump_or_as_an_istio_object() {
        let dump = json!({"configs": [{"dynamic_listeners": [{"filters": [
            {"typed_config": {"value": {"config": {"configuration": {"value": "{\"routes\": []}"}}}}}
        ]}]}]});
        assert_eq!(plugin_config(&dump).as_deref(), Some("{\"routes\": []}"));
        let wasm_plugin = json!({"kind": "WasmPlugin", "spec": {"pluginConfig": {"routes": [], "tick_ms": 100}}});
        let found: Value = serde_json::from_str(&plugin_config(&wasm_plugin).unwrap()).unwrap();
        assert_eq!(found, json!({"routes": [], "tick_ms": 100}));
        assert_eq!(plugin_config(&json!({"a": "{\"x\": 1}", "b": "{not json"})), None);
    }
}
