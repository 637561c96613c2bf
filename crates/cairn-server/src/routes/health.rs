//! `/health` answers while the process runs; `/ready` only while the store can take writes:
//! writable, enough disk, a recent enough verified backup (as configured), and not draining.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::openapi::AnyObject;
use crate::problem::Problem;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(ready))
}

/// The process is alive.
#[utoipa::path(get, path = "/health", tag = "health", operation_id = "health",
    responses((status = 200, description = "`{\"status\": \"alive\"}`", body = AnyObject)))]
async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

/// The store can take writes: writable, enough free disk, a recent enough verified backup,
/// not shutting down (503 naming every reason otherwise).
#[utoipa::path(get, path = "/ready", tag = "health", operation_id = "ready",
    responses((status = 200, description = "ready, with the checks", body = AnyObject)))]
async fn ready(State(state): State<AppState>) -> Result<Response, Problem> {
    let config = &state.config;
    let mut readiness =
        state.backend.readiness(config.ready_min_free_bytes, config.ready_max_backup_age_seconds).await?;
    if *state.draining.borrow() {
        readiness.reasons.push("the server is shutting down".to_string());
    }
    if readiness.is_ready() {
        return Ok(Json(json!({"status": "ready", "checks": readiness})).into_response());
    }
    Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", readiness.reasons.join("; ")))
}
