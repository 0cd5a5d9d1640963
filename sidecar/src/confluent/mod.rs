//! Confluent Schema Registry's REST API over the schema registry, for PROTOBUF subjects,
//! so Confluent's clients and serializers (`confluent-kafka`'s `SchemaRegistryClient`, the
//! Maven/Gradle plugins) register and read schemas here.
//!
//! | method | path | what |
//! |--------|------|------|
//! | GET | `/subjects` | subject names |
//! | GET | `/subjects/{s}/versions` | version numbers |
//! | GET | `/subjects/{s}/versions/{v}` | `{subject, id, version, schemaType, schema, references}`; `v` a number or `latest` |
//! | GET | `/subjects/{s}/versions/{v}/schema` | the schema alone |
//! | POST | `/subjects/{s}` | is this schema registered under `s`? (the version's answer, or 40403) |
//! | POST | `/subjects/{s}/versions` | **write**: register; `{"id": N}` |
//! | POST | `/compatibility/subjects/{s}/versions/{v}` | `{"is_compatible": …}`; `?verbose=true` adds `messages` (buf rule IDs, `file:line:column`) |
//! | POST | `/compatibility/subjects/{s}/versions` | the same against every version the subject's mode compares with |
//! | GET | `/config`, `/config/{s}` | `{"compatibilityLevel": …}` (`/config/{s}`: 40408 without a level of its own, unless `?defaultToGlobal=true`) |
//! | PUT | `/config`, `/config/{s}` | **write**: `{"compatibility": …}` |
//! | DELETE | `/config`, `/config/{s}` | **write**: back to the configured level |
//! | GET | `/schemas/ids/{id}` | `{schema, schemaType, references}` |
//! | GET | `/schemas/ids/{id}/versions`, `/schemas/ids/{id}/subjects` | where the id is used |
//! | GET | `/schemas/types` | `["PROTOBUF"]` |
//!
//! It is served on the admin port (loopback) and, with `[confluent] listen`, on a listener
//! of its own. Writes are accepted from loopback peers, or from others with
//! `Authorization: Bearer <token>` when `[confluent] token_file` is set; everything else is
//! a read.

mod json;
mod routes;

use crate::serve::Sidecar;
use anyhow::Context;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use json::ApiError;
use std::net::SocketAddr;
use std::sync::Arc;
use switchyard_schema::registry::Registry;

/// What the handlers share.
pub(crate) struct Confluent {
    registry: Arc<Registry>,
    /// Bearer token accepted for writes from non-loopback peers.
    token: Option<String>,
}

/// Mounts the API on the admin port, and on its own listener when configured.
pub fn mount(sidecar: Sidecar, registry: Option<Arc<Registry>>) -> anyhow::Result<Sidecar> {
    let config = sidecar.config().confluent.clone();
    let Some(registry) = registry else {
        if config.is_some() {
            anyhow::bail!("`confluent` needs the schema registry (`[schema]`)");
        }
        return Ok(sidecar);
    };
    let config = config.unwrap_or_default();
    let token = match &config.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read `confluent.token_file` {}", path.display()))?;
            let token = text.trim().to_owned();
            anyhow::ensure!(!token.is_empty(), "`confluent.token_file` {} is empty", path.display());
            Some(token)
        }
        None => None,
    };
    let routes = router(Arc::new(Confluent { registry, token }));
    let sidecar = sidecar.with_admin_routes(routes.clone());
    Ok(match config.listen {
        Some(listen) => sidecar.with_http_listener("confluent", listen, routes),
        None => sidecar,
    })
}

fn router(state: Arc<Confluent>) -> Router {
    use routes::*;
    Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route("/subjects/{subject}/versions/{version}/schema", get(version_schema))
        .route("/compatibility/subjects/{subject}/versions", post(compatibility_with_subject))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(compatibility_with_version))
        .route("/config", get(global_config).put(set_global_config).delete(delete_global_config))
        .route("/config/{subject}", get(subject_config).put(set_subject_config).delete(delete_subject_config))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/versions", get(schema_versions))
        .route("/schemas/ids/{id}/subjects", get(schema_subjects))
        .route("/schemas/types", get(schema_types))
        .with_state(state)
}

/// Proof that the caller may write: a loopback peer, or the configured bearer token.
/// Handlers that change the registry take it as their first argument.
pub(crate) struct WriteAccess;

impl FromRequestParts<Arc<Confluent>> for WriteAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Confluent>) -> Result<Self, ApiError> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let bearer = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        decide(peer, bearer, state.token.as_deref())
    }
}

fn decide(peer: Option<SocketAddr>, bearer: Option<&str>, token: Option<&str>) -> Result<WriteAccess, ApiError> {
    if let (Some(given), Some(expected)) = (bearer, token) {
        return if constant_time_eq(given.trim().as_bytes(), expected.as_bytes()) {
            Ok(WriteAccess)
        } else {
            Err(ApiError::unauthorized("the bearer token does not match `confluent.token_file`".into()))
        };
    }
    if peer.is_some_and(|p| p.ip().is_loopback()) {
        return Ok(WriteAccess);
    }
    Err(match token {
        Some(_) => ApiError::unauthorized("writes from other hosts need `Authorization: Bearer <token>`".into()),
        None => ApiError::forbidden(
            "writes are accepted from loopback only (set `confluent.token_file` to accept a bearer token)".into(),
        ),
    })
}

/// Compares without an early exit, so timing does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::{json, Value};
    use switchyard_schema::registry::RegistryConfig;
    use tower::ServiceExt;

    const MONEY: &str = "syntax = \"proto3\";\npackage common;\nmessage Money { string currency = 1; int64 units = 2; }\n";

    fn api() -> Router {
        let registry = Registry::open(RegistryConfig::default()).expect("in-memory registry");
        router(Arc::new(Confluent { registry, token: None }))
    }

    /// One request from `peer`, as the listener would hand it over.
    async fn send(app: &Router, peer: &str, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", json::CONTENT_TYPE)
            .body(Body::from(if body.is_null() { Vec::new() } else { body.to_string().into_bytes() }))
            .unwrap();
        request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer.parse().unwrap()));
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn schema(text: &str) -> Value {
        json!({"schemaType": "PROTOBUF", "schema": text})
    }

    #[tokio::test]
    async fn registry_outcomes_map_to_confluent_errors() {
        let app = api();
        let local = "127.0.0.1:40000";
        let (s, body) = send(&app, local, "POST", "/subjects/money/versions", schema(MONEY)).await;
        assert_eq!((s, body), (StatusCode::OK, json!({"id": 1})));
        // Same schema: same id. Another subject, same content: same id.
        assert_eq!(send(&app, local, "POST", "/subjects/money/versions", schema(MONEY)).await.1, json!({"id": 1}));
        assert_eq!(send(&app, local, "POST", "/subjects/other/versions", schema(MONEY)).await.1, json!({"id": 1}));

        let breaking = MONEY.replace("int64 units", "string units");
        let (s, body) = send(&app, local, "POST", "/subjects/money/versions", schema(&breaking)).await;
        assert_eq!((s, body["error_code"].clone()), (StatusCode::CONFLICT, json!(409)), "{body}");
        assert!(body["message"].as_str().unwrap().contains("FIELD_WIRE_COMPATIBLE_TYPE schema.proto:3:38"), "{body}");

        let broken = MONEY.replace("= 2;", "= ;");
        let (s, body) = send(&app, local, "POST", "/subjects/money/versions", schema(&broken)).await;
        assert_eq!((s, body["error_code"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!(42201)), "{body}");
        assert!(body["message"].as_str().unwrap().starts_with("Invalid schema: schema.proto:3:"), "{body}");

        let avro = json!({"schema": "{\"type\": \"string\"}"});
        assert_eq!(send(&app, local, "POST", "/subjects/money/versions", avro).await.1["error_code"], json!(42201));
        assert_eq!(send(&app, local, "POST", "/subjects/money/versions", json!("x")).await.0, StatusCode::BAD_REQUEST);

        // Reads.
        assert_eq!(send(&app, local, "GET", "/subjects/nope/versions", Value::Null).await.1["error_code"], json!(40401));
        assert_eq!(send(&app, local, "GET", "/subjects/money/versions/2", Value::Null).await.1["error_code"], json!(40402));
        assert_eq!(send(&app, local, "GET", "/subjects/money/versions/0", Value::Null).await.1["error_code"], json!(42202));
        assert_eq!(send(&app, local, "GET", "/schemas/ids/5", Value::Null).await.1["error_code"], json!(40403));
        let (_, v) = send(&app, local, "GET", "/subjects/money/versions/latest", Value::Null).await;
        assert_eq!(v, json!({"subject": "money", "id": 1, "version": 1, "schemaType": "PROTOBUF", "schema": MONEY}));
        let (_, found) = send(&app, local, "POST", "/subjects/other", schema(MONEY)).await;
        assert_eq!((found["subject"].clone(), found["version"].clone()), (json!("other"), json!(1)));
        let (_, missing) = send(&app, local, "POST", "/subjects/other", schema(&breaking)).await;
        assert_eq!(missing["error_code"], json!(40403));
        let (_, uses) = send(&app, local, "GET", "/schemas/ids/1/versions", Value::Null).await;
        assert_eq!(uses, json!([{"subject": "money", "version": 1}, {"subject": "other", "version": 1}]));

        // Compatibility: is_compatible, and messages only when verbose.
        let (_, c) = send(&app, local, "POST", "/compatibility/subjects/money/versions/1", schema(&breaking)).await;
        assert_eq!(c, json!({"is_compatible": false}));
        let (_, c) = send(&app, local, "POST", "/compatibility/subjects/money/versions/latest?verbose=true", schema(&breaking)).await;
        assert_eq!(c["messages"].as_array().map(Vec::len), Some(1), "{c}");
        let (_, c) = send(&app, local, "POST", "/compatibility/subjects/nope/versions/1", schema(MONEY)).await;
        assert_eq!(c["error_code"], json!(40401));

        // Config: subject level, then NONE lets the breaking schema in as version 2.
        assert_eq!(send(&app, local, "GET", "/config/money", Value::Null).await.1["error_code"], json!(40408));
        let (_, c) = send(&app, local, "GET", "/config/money?defaultToGlobal=true", Value::Null).await;
        assert_eq!(c, json!({"compatibilityLevel": "BACKWARD"}));
        let (_, c) = send(&app, local, "PUT", "/config/money", json!({"compatibility": "none"})).await;
        assert_eq!(c, json!({"compatibility": "NONE"}));
        assert_eq!(send(&app, local, "PUT", "/config", json!({"compatibility": "LOOSE"})).await.1["error_code"], json!(42203));
        assert_eq!(send(&app, local, "POST", "/subjects/money/versions", schema(&breaking)).await.1, json!({"id": 2}));
        let (_, c) = send(&app, local, "DELETE", "/config/money", Value::Null).await;
        assert_eq!(c, json!({"compatibilityLevel": "NONE"}));
        assert_eq!(send(&app, local, "DELETE", "/config/nope", Value::Null).await.1["error_code"], json!(40401));
    }

    #[tokio::test]
    async fn writes_from_other_hosts_are_refused_and_reads_are_not() {
        let app = api();
        let far = "10.1.2.3:40000";
        let (s, body) = send(&app, far, "POST", "/subjects/money/versions", schema(MONEY)).await;
        assert_eq!((s, body["error_code"].clone()), (StatusCode::FORBIDDEN, json!(40301)), "{body}");
        assert_eq!(send(&app, far, "PUT", "/config", json!({"compatibility": "NONE"})).await.0, StatusCode::FORBIDDEN);
        assert_eq!(send(&app, far, "GET", "/subjects", Value::Null).await, (StatusCode::OK, json!([])));
        assert_eq!(send(&app, far, "POST", "/compatibility/subjects/money/versions", schema(MONEY)).await.0, StatusCode::OK);
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn writes_need_loopback_or_the_token() {
        assert!(decide(addr("127.0.0.1:5000"), None, None).is_ok());
        assert!(decide(addr("[::1]:5000"), None, Some("t")).is_ok());
        let e = decide(addr("10.0.0.2:5000"), None, None).err().unwrap();
        assert_eq!((e.status.as_u16(), e.code), (403, 40301));
        let e = decide(addr("10.0.0.2:5000"), None, Some("secret")).err().unwrap();
        assert_eq!((e.status.as_u16(), e.code), (401, 401));
        assert!(decide(addr("10.0.0.2:5000"), Some("secret"), Some("secret")).is_ok());
        let e = decide(addr("127.0.0.1:5000"), Some("guess"), Some("secret")).err().unwrap();
        assert_eq!(e.code, 401, "a wrong token is refused even from loopback");
        assert!(decide(None, None, None).is_err(), "no peer address: not loopback");
        // A token sent to a sidecar with none configured does not open anything.
        assert!(decide(addr("10.0.0.2:5000"), Some("x"), None).is_err());
    }
}
