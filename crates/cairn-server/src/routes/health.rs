//! `/health` answers while the process runs; `/ready` only while the store can take writes:
//! writable, enough disk, a recent enough verified backup (as configured), and not draining.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::problem::Problem;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/health", get(health)).route("/ready", get(ready))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "alive"}))
}

async fn ready(State(state): State<AppState>) -> Result<Response, Problem> {
    let config = &state.config;
    let mut readiness =
        state.backend.readiness(config.ready_min_free_bytes, config.ready_max_backup_age_seconds).await?;
    if state.draining.load(Ordering::SeqCst) {
        readiness.reasons.push("the server is shutting down".to_string());
    }
    if readiness.is_ready() {
        return Ok(Json(json!({"status": "ready", "checks": readiness})).into_response());
    }
    Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", readiness.reasons.join("; ")))
}
