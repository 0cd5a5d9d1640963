//! The loopback admin HTTP port: Prometheus metrics, per-version state, reload and chaos.
//!
//! | method | path          | what                                                      |
//! |--------|---------------|-----------------------------------------------------------|
//! | GET    | `/metrics`    | Prometheus text format                                    |
//! | GET    | `/v1/models`  | [`ModelsSnapshot`](crate::models::ModelsSnapshot) as JSON |
//! | POST   | `/v1/reload`  | reload the repository; [`ReloadReport`] as JSON           |
//! | GET    | `/v1/chaos`   | faults in force                                           |
//! | POST   | `/v1/chaos`   | set a [`Fault`] (JSON body) on one version                |
//! | DELETE | `/v1/chaos`   | clear `?target=<model>/<version>`, or every fault         |
//! | GET    | `/healthz`    | `ok` while the process runs                               |

use crate::chaos::{Chaos, Fault};
use crate::metrics::Metrics;
use crate::models::ModelSet;
use crate::reload::{ReloadReport, Reloader};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;

/// More metric families for `/metrics` (e.g. the schema registry's), in the same text format.
pub type ExtraMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Everything the admin handlers read.
#[derive(Clone)]
pub struct Admin {
    pub models: Arc<ModelSet>,
    pub chaos: Arc<Chaos>,
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    pub extra_metrics: Vec<ExtraMetrics>,
}

pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/reload", axum::routing::post(reload))
        .route("/v1/chaos", get(list_chaos).post(set_chaos).delete(clear_chaos))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(admin)
}

async fn metrics(State(admin): State<Admin>) -> Response {
    let mut text = admin.metrics.encode();
    if !admin.extra_metrics.is_empty() {
        // OpenMetrics ends with `# EOF`: the extra families go before it.
        let end = text.rfind("# EOF").unwrap_or(text.len());
        let eof = text.split_off(end);
        for extra in &admin.extra_metrics {
            text.push_str(&extra());
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
        text.push_str(&eof);
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn models(State(admin): State<Admin>) -> Json<crate::models::ModelsSnapshot> {
    Json(admin.models.snapshot(&admin.chaos.list()))
}

async fn reload(State(admin): State<Admin>) -> (StatusCode, Json<ReloadReport>) {
    let report = admin.reloader.reload("admin").await;
    let status = if report.errors.is_empty() { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    (status, Json(report))
}

async fn list_chaos(State(admin): State<Admin>) -> Json<Vec<Fault>> {
    Json(admin.chaos.list())
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn set_chaos(State(admin): State<Admin>, body: axum::body::Bytes) -> Response {
    let mut fault: Fault = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(format!("invalid fault: {e}")),
    };
    if let Err(e) = fault.validate() {
        return bad_request(e);
    }
    // Labels (`orientation/canary`) resolve to the version they name now.
    match admin.models.routing().resolve(Some(&fault.target)) {
        Ok(version) => fault.target = version.name.clone(),
        Err(status) => return bad_request(format!("`target`: {}", status.message())),
    }
    admin.chaos.set(fault.clone());
    Json(fault).into_response()
}

#[derive(Deserialize)]
struct ClearQuery {
    target: Option<String>,
}

async fn clear_chaos(State(admin): State<Admin>, Query(q): Query<ClearQuery>) -> Response {
    let target = q.target.map(|t| admin.models.routing().resolve(Some(&t)).map(|v| v.name.clone()).unwrap_or(t));
    let cleared = admin.chaos.clear(target.as_deref());
    Json(serde_json::json!({ "cleared": cleared })).into_response()
}
