//! The contract between the sidecar and the filter, in one place.
//!
//! The sidecar serves these documents on its admin port and the filter reads them; both
//! depend on this crate and on nothing of each other. Serde types only, so it builds for
//! every target the filter does (native, `wasm32-wasip1`).
//!
//! | method | path | document |
//! |--------|------|----------|
//! | GET  | [`SNAPSHOT_PATH`] (`?`[`DESCRIPTORS_QUERY`]`=1` adds descriptor sets) | [`SidecarSnapshot`]; `304` to `If-None-Match: <generation>` |
//! | POST | [`VALIDATE_PATH`]`?`[`METHOD_QUERY`]`=/pkg.Service/Method&`[`REVISION_QUERY`]`=features.v1@2` (`&`[`UNKNOWN_FIELDS_QUERY`]`=warn&`[`WIRE_TYPE_MISMATCH_QUERY`]`=reject`) | [`ValidateReply`] |

pub mod deployment;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use switchyard_schema::snapshot::Snapshot;
use switchyard_schema::validate::Violation;

/// Where the filter polls the snapshot.
pub const SNAPSHOT_PATH: &str = "/v1/snapshot";
/// Query parameter asking the snapshot to carry each revision's descriptor set.
pub const DESCRIPTORS_QUERY: &str = "descriptors";
/// Where the filter asks the sidecar to validate a request body.
pub const VALIDATE_PATH: &str = "/v1/validate";
/// Query parameter of [`VALIDATE_PATH`]: the gRPC method (`/pkg.Service/Method`).
pub const METHOD_QUERY: &str = "method";
/// Query parameter of [`VALIDATE_PATH`]: the revision the client declared (may be empty).
pub const REVISION_QUERY: &str = "revision";
/// Query parameter of [`VALIDATE_PATH`]: the route's unknown-field policy
/// (`allow|warn|reject`); absent, the validator's default.
pub const UNKNOWN_FIELDS_QUERY: &str = "unknown_fields";
/// Query parameter of [`VALIDATE_PATH`]: the route's wire-type mismatch policy
/// (`warn|reject`); absent, the validator's default.
pub const WIRE_TYPE_MISMATCH_QUERY: &str = "wire_type_mismatch";

/// The document the sidecar serves and the filter polls.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SidecarSnapshot {
    /// Grows whenever anything below changes; an unchanged generation is skipped.
    pub generation: u64,
    #[serde(default)]
    pub schema: Snapshot,
    /// Per model version (`<model>/<version>`, `<model>/<label>`, `<model>`).
    #[serde(default)]
    pub models: BTreeMap<String, ModelHealth>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelHealth {
    /// Loaded and answering (not failing health checks or injected to fail).
    pub healthy: bool,
    /// The schema revision this version serves (`features.v1@2`), if the sidecar knows it;
    /// targets that declare no revision learn it from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// The sidecar's answer to a validation request (HTTP 200; a request it cannot read is
/// a 400 with [`ErrorReply`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateReply {
    pub valid: bool,
    /// One line for the client's `grpc-message` when invalid: the first violation and how
    /// many more there are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub violations: Vec<Violation>,
    #[serde(default)]
    pub warnings: Vec<Violation>,
}

/// A request the sidecar could not act on (unknown revision or method, no registry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_with_defaults_and_round_trips() {
        let s: SidecarSnapshot = serde_json::from_str(r#"{"generation": 4}"#).unwrap();
        assert_eq!(s.generation, 4);
        assert!(s.models.is_empty());
        let mut s = s;
        s.models.insert("orientation/2".into(), ModelHealth { healthy: true, revision: Some("features.v1@2".into()) });
        let back: SidecarSnapshot = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn validate_reply_reads_minimal_and_full_forms() {
        let r: ValidateReply = serde_json::from_str(r#"{"valid": true}"#).unwrap();
        assert!(r.valid && r.message.is_none() && r.violations.is_empty());
        let r: ValidateReply = serde_json::from_str(r#"{"valid": false, "message": "bad", "violations": [], "warnings": []}"#).unwrap();
        assert_eq!(r.message.as_deref(), Some("bad"));
    }
}
