//! The rehearsal engine for the browser: the filter's own decision core, compiled with
//! wasm-bindgen, so the console's numbers are the command line's numbers.
//!
//! Every function takes and returns JSON text (`{"ok": …}` or `{"error": {"input", "at",
//! "message"}}`): one shape for the page to handle, and nothing thrown across the boundary.

use switchyard_rehearse::RehearsalError;
use wasm_bindgen::prelude::wasm_bindgen;

fn answer<T: serde::Serialize>(r: Result<T, RehearsalError>) -> String {
    let value = match r {
        Ok(v) => serde_json::json!({ "ok": v }),
        Err(e) => serde_json::json!({ "error": { "input": e.input, "at": e.at, "message": e.message } }),
    };
    value.to_string()
}

/// Runs a scenario (YAML or JSON) against a plugin configuration (JSON); `snapshot` is an
/// optional sidecar snapshot document, `replay_log` the access log `traffic.replay` names.
#[wasm_bindgen]
pub fn rehearse(config: &str, scenario: &str, snapshot: Option<String>, replay_log: Option<String>) -> String {
    answer(switchyard_rehearse::rehearse_text(config, scenario, snapshot.as_deref(), replay_log.as_deref()))
}

/// Checks a plugin configuration as the filter does.
#[wasm_bindgen]
pub fn check_config(config: &str) -> String {
    answer(switchyard_rehearse::check_config(config))
}

/// The split of `users` user keys with `weights` (a JSON object, target → weight) applied
/// to `route` (the first if absent), and who moves from the configuration's weights.
#[wasm_bindgen]
pub fn split(config: &str, route: Option<String>, weights: &str, users: u32) -> String {
    let weights = match serde_json::from_str(weights) {
        Ok(w) => w,
        Err(e) => return answer::<()>(Err(RehearsalError { input: "weights", at: String::new(), message: e.to_string() })),
    };
    answer(switchyard_rehearse::split(config, route.as_deref(), &weights, users))
}
