//! Collections: their schemas and counts.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use cairn::CollectionInfo;
use serde_json::{json, Value};

use super::{Admin, AppState};
use crate::problem::Problem;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/collections", get(list)).route("/api/collections/{collection}", get(read))
}

async fn list(_admin: Admin, State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let collections = state.backend.collections().await?;
    Ok(Json(json!({"items": collections})))
}

async fn read(
    _admin: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<CollectionInfo>, Problem> {
    Ok(Json(state.backend.collection(name).await?))
}
