//! Fault injection per model version, set through the loopback admin port, so a canary
//! rollback can be rehearsed on a laptop: added latency and/or a share of requests failing
//! with a chosen gRPC status.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

/// One version's fault, as set with `POST /v1/chaos`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// `<model>/<version>` (a label such as `orientation/canary` is resolved when set).
    pub target: String,
    /// Added to every request of the target, before it is answered.
    #[serde(default)]
    pub latency_ms: u64,
    /// Share of requests (0..=1) that fail with `error_code` instead of being served.
    #[serde(default)]
    pub error_rate: f64,
    /// gRPC status name for injected errors, e.g. `UNAVAILABLE` (the default).
    #[serde(default = "default_code")]
    pub error_code: String,
    /// Report the version unhealthy in `/v1/models` and the filter's snapshot (while it
    /// keeps answering), to rehearse the filter degrading a version the sidecar flags.
    #[serde(default)]
    pub unhealthy: bool,
}

fn default_code() -> String {
    "UNAVAILABLE".into()
}

impl Fault {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!("`error_rate` must be within 0..=1; got {}", self.error_rate));
        }
        if self.latency_ms > 600_000 {
            return Err(format!("`latency_ms` must be at most 600000; got {}", self.latency_ms));
        }
        match parse_code(&self.error_code) {
            Some(tonic::Code::Ok) | None => Err(format!(
                "`error_code` must be a gRPC status name other than OK (e.g. UNAVAILABLE, INTERNAL); got {:?}",
                self.error_code
            )),
            Some(_) => Ok(()),
        }
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }

    /// The injected error for this request, if the dice say so.
    pub fn roll_error(&self) -> Option<tonic::Status> {
        if self.error_rate > 0.0 && fastrand::f64() < self.error_rate {
            let code = parse_code(&self.error_code).unwrap_or(tonic::Code::Unavailable);
            Some(tonic::Status::new(code, format!("injected by chaos on {}", self.target)))
        } else {
            None
        }
    }
}

/// `UNAVAILABLE`, `unavailable`, `Unavailable` or `14` → `Code::Unavailable`.
pub fn parse_code(name: &str) -> Option<tonic::Code> {
    if let Ok(n) = name.parse::<i32>() {
        return (0..=16).contains(&n).then(|| tonic::Code::from_i32(n));
    }
    let wanted: String = name.chars().filter(|c| *c != '_').collect::<String>().to_ascii_lowercase();
    (1..=16).map(tonic::Code::from_i32).find(|c| format!("{c:?}").to_ascii_lowercase() == wanted)
}

/// The faults in force, keyed by `<model>/<version>`.
#[derive(Default)]
pub struct Chaos {
    faults: RwLock<BTreeMap<String, Fault>>,
}

impl Chaos {
    pub fn get(&self, version: &str) -> Option<Fault> {
        let faults = self.faults.read().ok()?;
        if faults.is_empty() {
            return None;
        }
        faults.get(version).cloned()
    }

    pub fn set(&self, fault: Fault) {
        if let Ok(mut faults) = self.faults.write() {
            tracing::warn!(target_version = fault.target, latency_ms = fault.latency_ms, error_rate = fault.error_rate, error_code = fault.error_code, "chaos fault set");
            faults.insert(fault.target.clone(), fault);
        }
    }

    /// Clears one target's fault, or all when `target` is `None`; returns how many.
    pub fn clear(&self, target: Option<&str>) -> usize {
        let Ok(mut faults) = self.faults.write() else { return 0 };
        let n = match target {
            Some(t) => usize::from(faults.remove(t).is_some()),
            None => std::mem::take(&mut *faults).len(),
        };
        if n > 0 {
            tracing::warn!(target_version = target.unwrap_or("*"), cleared = n, "chaos fault cleared");
        }
        n
    }

    pub fn list(&self) -> Vec<Fault> {
        self.faults.read().map(|f| f.values().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse() {
        assert_eq!(parse_code("UNAVAILABLE"), Some(tonic::Code::Unavailable));
        assert_eq!(parse_code("deadline_exceeded"), Some(tonic::Code::DeadlineExceeded));
        assert_eq!(parse_code("14"), Some(tonic::Code::Unavailable));
        assert_eq!(parse_code("nope"), None);
    }

    #[test]
    fn fault_validation() {
        let f: Fault = serde_json::from_str(r#"{"target":"m/1","error_rate":2}"#).unwrap();
        assert!(f.validate().unwrap_err().contains("error_rate"));
        let f: Fault = serde_json::from_str(r#"{"target":"m/1","error_rate":1,"error_code":"OK"}"#).unwrap();
        assert!(f.validate().unwrap_err().contains("error_code"));
    }
}
