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
