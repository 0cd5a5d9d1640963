//! The schema registry inside the sidecar, and the snapshot the Envoy filter polls.
//!
//! | method | path | what |
//! |--------|------|------|
//! | GET  | `/v1/snapshot` | [`SidecarSnapshot`]: schema revisions and compatibility, per-version health. `?descriptors=1` adds each revision's descriptor set (for validating in the filter). Answers `304` to `If-None-Match: <generation>`. |
//! | POST | `/v1/validate?method=/pkg.Service/Method&revision=features.v1@2` | validates the body (gRPC frames) against the method's input type; `{valid, message, violations, warnings}` |
//! | POST | `/v1/validate/confluent` | validates the body as one Confluent-framed record (magic byte, schema id, message indexes, message); the same answer plus `schema_id`, `subject`, `version`, `message_type` |
//!
//! The gRPC `switchyard.registry.v1.SchemaRegistry` service is served on the gRPC port and
//! the registry's counters are appended to `/metrics`.

use crate::serve::{Sidecar, Versions};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use switchyard_api::{ErrorReply, ModelHealth, SidecarSnapshot, ValidateReply};
use switchyard_schema::registry::{Registry, RegistryState};
use switchyard_schema::validate::Policy;

/// Mounts the registry (if configured) and the snapshot and validation routes.
pub fn mount(sidecar: Sidecar, registry: Option<Arc<Registry>>) -> Sidecar {
    let state = Arc::new(Snapshots {
        registry: registry.clone(),
        versions: sidecar.versions(),
        epoch: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            .saturating_mul(1000),
        last: Mutex::new((0, 0)),
    });
    let routes = Router::new()
        .route(switchyard_api::SNAPSHOT_PATH, get(snapshot))
        .route(switchyard_api::VALIDATE_PATH, post(validate))
        .route(VALIDATE_CONFLUENT_PATH, post(validate_confluent))
        .with_state(state);
    let sidecar = match sidecar.config().snapshot_listen {
        // The same read-only routes for filters in other pods; nothing that changes state.
        Some(listen) => {
            let public = routes.clone().route("/healthz", get(|| async { "ok\n" }));
            sidecar.with_http_listener("snapshot", listen, public)
        }
        None => sidecar,
    };
    let sidecar = sidecar.with_admin_routes(routes);
    match registry {
        None => sidecar,
        Some(reg) => {
            let metrics = reg.clone();
            sidecar
                .with_grpc_routes(|routes| routes.add_service(switchyard_schema::service::server(reg)))
                .with_metrics(move || metrics.metrics().render_prometheus("switchyard_"))
        }
    }
}

struct Snapshots {
    registry: Option<Arc<Registry>>,
    versions: Versions,
    /// Generations start from the start-up time, so a restarted sidecar never repeats one
    /// a filter has already seen with different content.
    epoch: u64,
    /// (digest of the last content, how many distinct contents were served).
    last: Mutex<(u64, u64)>,
}

impl Snapshots {
    /// The current snapshot; its generation changes exactly when its content does.
    fn current(&self, descriptors: bool) -> SidecarSnapshot {
        let schema = self.registry.as_ref().map(|r| r.state().snapshot(false)).unwrap_or_default();
        let mut models = BTreeMap::new();
        for v in self.versions.snapshot().versions {
            let health = ModelHealth { healthy: v.healthy, revision: None };
            for label in &v.labels {
                models.insert(format!("{}/{label}", v.model), health.clone());
            }
            if v.default {
                models.insert(v.model.clone(), health.clone());
            }
            models.insert(v.name, health);
        }
        let mut snapshot = SidecarSnapshot { generation: 0, schema, models };
        let digest = fnv(&serde_json::to_vec(&snapshot).unwrap_or_default());
        snapshot.generation = match self.last.lock() {
            Ok(mut last) => {
                if last.0 != digest || last.1 == 0 {
                    *last = (digest, last.1 + 1);
                }
                self.epoch + last.1
            }
            Err(_) => self.epoch,
        };
        if descriptors {
            if let Some(r) = &self.registry {
                snapshot.schema = r.state().snapshot(true);
            }
        }
        snapshot
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[derive(Deserialize)]
struct SnapshotQuery {
    #[serde(default)]
    descriptors: Option<String>,
}

async fn snapshot(State(s): State<Arc<Snapshots>>, Query(q): Query<SnapshotQuery>, headers: HeaderMap) -> Response {
    let descriptors = q.descriptors.as_deref().is_some_and(|v| v == "1" || v == "true");
    let snapshot = s.current(descriptors);
    let etag = snapshot.generation.to_string();
    let seen = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(|v| v.trim_matches('"'));
    if seen == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (StatusCode::OK, [(header::ETAG, etag)], Json(snapshot)).into_response()
}

#[derive(Deserialize)]
struct ValidateQuery {
    method: String,
    #[serde(default)]
    revision: Option<String>,
    #[serde(flatten)]
    policy: PolicyQuery,
}

/// The caller's validation policy, e.g. the filter's route policy.
#[derive(Deserialize)]
struct PolicyQuery {
    /// `switchyard_api::UNKNOWN_FIELDS_QUERY`.
    #[serde(default)]
    unknown_fields: Option<String>,
    /// `switchyard_api::WIRE_TYPE_MISMATCH_QUERY`.
    #[serde(default)]
    wire_type_mismatch: Option<String>,
}

impl PolicyQuery {
    /// The validation policy the caller asked for, over the validator's defaults.
    fn policy(&self) -> Result<Policy, String> {
        let mut policy = Policy::default();
        if let Some(v) = &self.unknown_fields {
            policy.unknown_fields = v.parse()?;
        }
        if let Some(v) = &self.wire_type_mismatch {
            policy.wire_type_mismatch = v.parse()?;
        }
        Ok(policy)
    }
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(ErrorReply { error: message })).into_response()
}

async fn validate(State(s): State<Arc<Snapshots>>, Query(q): Query<ValidateQuery>, body: axum::body::Bytes) -> Response {
    let Some(registry) = &s.registry else {
        return bad_request("no schema registry is configured ([schema] in the sidecar config)".into());
    };
    let policy = match q.policy.policy() {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let state = registry.state();
    let Some((service, method)) = q.method.trim_start_matches('/').split_once('/') else {
        return bad_request(format!("method {:?} is not /package.Service/Method", q.method));
    };
    let declared = q.revision.as_deref().filter(|r| !r.is_empty());
    let Some((subject, revision)) = resolve(&state, declared, service) else {
        return bad_request(format!("schema revision {:?} is unknown to the registry", declared.unwrap_or(service)));
    };
    let Ok(rev) = registry.revision(&subject, Some(revision)) else {
        return bad_request(format!("{subject}@{revision} is unknown"));
    };
    let input = rev
        .schema
        .pool()
        .get_service_by_name(service)
        .and_then(|svc| svc.methods().find(|m| m.name() == method))
        .map(|m| m.input().full_name().to_owned());
    let Some(input) = input else {
        return bad_request(format!("{subject}@{revision} has no method {}", q.method));
    };
    match registry.validate(&subject, Some(revision), &input, &body, true, &policy) {
        Ok(v) => Json(validate_reply(&format!("{input} for {subject}@{revision}"), v)).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

/// The reply for a validation of `what`: its first violation, and how many more, in `message`.
fn validate_reply(what: &str, v: switchyard_schema::validate::Validation) -> ValidateReply {
    let message = v.violations.first().map(|first| {
        let more = v.violations.len() - 1;
        format!("invalid {what}: {first}{}", if more > 0 { format!(" (and {more} more)") } else { String::new() })
    });
    ValidateReply { valid: v.is_valid(), message, violations: v.violations, warnings: v.warnings }
}

/// Where Confluent-framed records (Kafka record values) are validated.
pub const VALIDATE_CONFLUENT_PATH: &str = "/v1/validate/confluent";

/// The answer for a framed record: the validation, and what the frame resolved to.
#[derive(serde::Serialize)]
struct FramedReply {
    #[serde(flatten)]
    reply: ValidateReply,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_type: Option<String>,
}

async fn validate_confluent(State(s): State<Arc<Snapshots>>, Query(q): Query<PolicyQuery>, body: axum::body::Bytes) -> Response {
    let Some(registry) = &s.registry else {
        return bad_request("no schema registry is configured ([schema] in the sidecar config)".into());
    };
    let policy = match q.policy() {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let framed = registry.validate_framed(&body, &policy);
    let reply = validate_reply(framed.message_type.as_deref().unwrap_or("record"), framed.validation);
    let (subject, version) = framed.revision.map_or((None, None), |(s, n)| (Some(s), Some(n)));
    Json(FramedReply {
        reply,
        schema_id: framed.schema_id,
        subject,
        version,
        message_type: framed.message_type,
    })
    .into_response()
}

/// `subject@N`, `subject@sha256:…` or a bare fingerprint; without one, the current
/// revision of the subject named by the service's package.
fn resolve(state: &RegistryState, declared: Option<&str>, service: &str) -> Option<(String, u32)> {
    let snapshot = state.snapshot(false);
    match declared {
        Some(d) => snapshot.resolve(d).map(|(s, r)| (s.to_owned(), r)),
        None => {
            let package = service.rsplit_once('.').map_or(service, |(p, _)| p);
            state.subject(package).map(|s| (s.name.clone(), s.current().number))
        }
    }
}
