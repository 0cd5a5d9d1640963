//! Canary rehearsal: what a Switchyard configuration will do, before it takes traffic.
//!
//! The rehearsal runs the filter's own decision core — the configuration parser, sticky
//! bucketing, schema eligibility, budgets, the health state machine (slow and error-rate
//! rules, cool-down, probing, doubling), shedding and faults — against a [`Scenario`] on a
//! virtual clock. Nothing here re-implements a rule: the core runs behind a simulated
//! [`Host`](switchyard_filter_core::host::Host) exactly as it runs behind Envoy's, with
//! Envoys × workers sharing health as the chosen build does. The same seed gives the
//! same [`Report`], natively (the `switchyard-rehearse` command) and in the browser (the
//! console, through wasm-bindgen).
//!
//! Left out, on purpose: payload validation (a scenario has no payloads), Envoy's own
//! retries and outlier detection, and network time between Envoy and the upstream.

mod behaviour;
mod engine;
mod expect;
mod record;
pub mod replay;
pub mod report;
pub mod scenario;
mod sim;
mod split;

pub use report::Report;
pub use scenario::{Scenario, ScenarioError};
pub use split::{split, Split};

/// Why a rehearsal could not run, and where the input is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RehearsalError {
    /// Which input: `config`, `scenario`, `snapshot` (or `weights`).
    pub input: &'static str,
    /// Where in it: a JSON path (`routes[0].targets[1].weight`), `line:column`, or empty.
    pub at: String,
    pub message: String,
}

impl RehearsalError {
    pub(crate) fn config(at: impl Into<String>, message: impl Into<String>) -> Self {
        RehearsalError { input: "config", at: at.into(), message: message.into() }
    }
    pub(crate) fn scenario(at: &str, message: impl Into<String>) -> Self {
        RehearsalError { input: "scenario", at: at.to_string(), message: message.into() }
    }
}

impl std::fmt::Display for RehearsalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at.as_str() {
            "" => write!(f, "{}: {}", self.input, self.message),
            at => write!(f, "{} at {at}: {}", self.input, self.message),
        }
    }
}

impl std::error::Error for RehearsalError {}

impl From<ScenarioError> for RehearsalError {
    fn from(e: ScenarioError) -> Self {
        RehearsalError { input: "scenario", at: e.at, message: e.message }
    }
}

/// Runs `scenario` against the plugin configuration `config` (the JSON Envoy is given),
/// with `snapshot` (the sidecar's snapshot document) answering the filter's polls, if the
/// configuration polls a sidecar.
pub fn rehearse(config: &str, scenario: &Scenario, snapshot: Option<&serde_json::Value>) -> Result<Report, RehearsalError> {
    if let (Some(log), None) = (&scenario.traffic.replay, &scenario.replay_log) {
        return Err(RehearsalError::scenario("traffic.replay", format!("the access log {log:?} was not given (the command line reads it beside the scenario; in the console, choose it)")));
    }
    let mut engine = engine::Engine::new(scenario, config, snapshot)?;
    engine.run()?;
    Ok(engine.into_report())
}

/// Checks a plugin configuration as the filter does; the error names the field.
pub fn check_config(config: &str) -> Result<(), RehearsalError> {
    split::parse(config).map(|_| ())
}

/// Parses a scenario (YAML or JSON) and runs it: the whole pipeline from text.
/// `replay_log` is the text of the access log `traffic.replay` names (the caller reads it).
pub fn rehearse_text(config: &str, scenario: &str, snapshot: Option<&str>, replay_log: Option<&str>) -> Result<Report, RehearsalError> {
    let mut scenario = Scenario::parse(scenario)?;
    if let (Some(_), Some(text)) = (&scenario.traffic.replay, replay_log) {
        let log = replay::Replay::parse(text).map_err(|e| RehearsalError { input: "access log", at: e.at, message: e.message })?;
        scenario.attach_replay(log);
    }
    let snapshot = match snapshot {
        Some(text) => Some(serde_json::from_str(text).map_err(|e| RehearsalError {
            input: "snapshot",
            at: format!("line {}:{}", e.line(), e.column()),
            message: e.to_string(),
        })?),
        None => None,
    };
    rehearse(config, &scenario, snapshot.as_ref())
}

#[cfg(test)]
mod tests;
