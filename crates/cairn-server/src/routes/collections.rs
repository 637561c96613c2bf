//! Collections: their schemas and counts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cairn::CollectionInfo;
use serde_json::{json, Value};

use super::{Admin, AppState, JsonBody};
use crate::problem::Problem;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/collections", get(list).post(create))
        .route("/api/collections/{collection}", get(read).put(update).delete(drop))
}

fn schema(body: Value) -> Result<cairn::CollectionSchema, Problem> {
    let text = body.to_string();
    Ok(cairn::CollectionSchema::from_json(&text, "request body")?)
}

async fn create(_: Admin, State(state): State<AppState>, JsonBody(body): JsonBody) -> Result<Response, Problem> {
    let info = state.backend.create_collection(schema(body)?).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn update(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<CollectionInfo>, Problem> {
    let schema = schema(body)?;
    if schema.name != name {
        return Err(Problem::invalid(format!("the schema names {:?}, the path {name:?}", schema.name)));
    }
    Ok(Json(state.backend.update_collection(schema).await?))
}

/// Drops a collection; the body must confirm it: `{"confirm": "<name>"}`. Its records are
/// kept in the server's quarantine folder.
async fn drop(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, Problem> {
    let confirm = match body.get("confirm") {
        Some(Value::String(confirm)) => confirm.clone(),
        _ => return Err(Problem::invalid(format!("dropping needs {{\"confirm\": {name:?}}} in the body"))),
    };
    let report = state.backend.drop_collection(name, confirm).await?;
    Ok(Json(json!({"collection": report.collection, "records_kept_in_quarantine": report.records})))
}

async fn list(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let collections = state.backend.collections().await?;
    Ok(Json(json!({"items": collections})))
}

async fn read(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<CollectionInfo>, Problem> {
    Ok(Json(state.backend.collection(name).await?))
}
