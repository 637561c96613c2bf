//! Collections: their schemas and counts (admins).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn::CollectionInfo;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::records::CollectionPath;
use super::{Admin, AppState, JsonBody, Typed};
use crate::openapi::{AnyObject, ItemsDoc};
use crate::problem::Problem;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(read, update, drop))
}

fn schema(body: Value) -> Result<cairn::CollectionSchema, Problem> {
    let text = body.to_string();
    Ok(cairn::CollectionSchema::from_json(&text, "request body")?)
}

/// The confirmation a drop needs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DropBody {
    /// The collection's name, again.
    confirm: String,
}

/// What a drop did.
#[derive(Debug, serde::Serialize, ToSchema)]
struct DroppedDoc {
    collection: String,
    /// Its records, exported into the server's quarantine folder.
    records_kept_in_quarantine: u64,
}

/// Creates a collection from its schema (docs/schema.md).
#[utoipa::path(post, path = "/api/collections", tag = "collections", operation_id = "create_collection",
    request_body(content = AnyObject, description = "the collection's schema: name, fields, indexes, rules"),
    responses((status = 201, description = "created", body = AnyObject)))]
async fn create(_: Admin, State(state): State<AppState>, JsonBody(body): JsonBody) -> Result<Response, Problem> {
    let info = state.backend.create_collection(schema(body)?).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// Changes a collection's schema (a migration plan the store can make safely).
#[utoipa::path(put, path = "/api/collections/{collection}", tag = "collections", operation_id = "update_collection",
    params(CollectionPath),
    request_body(content = AnyObject, description = "the new schema; its name must be the path's"),
    responses((status = 200, description = "changed", body = AnyObject)))]
async fn update(
    _: Admin,
    State(state): State<AppState>,
    Path(CollectionPath { collection }): Path<CollectionPath>,
    JsonBody(body): JsonBody,
) -> Result<Json<CollectionInfo>, Problem> {
    let schema = schema(body)?;
    if schema.name != collection {
        return Err(Problem::invalid(format!("the schema names {:?}, the path {collection:?}", schema.name)));
    }
    Ok(Json(state.backend.update_collection(schema).await?))
}

/// Drops a collection; its records are kept in the server's quarantine folder.
#[utoipa::path(delete, path = "/api/collections/{collection}", tag = "collections", operation_id = "drop_collection",
    params(CollectionPath),
    request_body = DropBody,
    responses((status = 200, description = "dropped", body = DroppedDoc)))]
async fn drop(
    _: Admin,
    State(state): State<AppState>,
    Path(CollectionPath { collection }): Path<CollectionPath>,
    Typed(body): Typed<DropBody>,
) -> Result<Json<Value>, Problem> {
    let report = state.backend.drop_collection(collection, body.confirm).await?;
    Ok(Json(json!({"collection": report.collection, "records_kept_in_quarantine": report.records})))
}

/// Every collection, with its schema and counts.
#[utoipa::path(get, path = "/api/collections", tag = "collections", operation_id = "list_collections",
    responses((status = 200, description = "the collections", body = ItemsDoc)))]
async fn list(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let collections = state.backend.collections().await?;
    Ok(Json(json!({"items": collections})))
}

/// One collection.
#[utoipa::path(get, path = "/api/collections/{collection}", tag = "collections", operation_id = "get_collection",
    params(CollectionPath),
    responses((status = 200, description = "the collection", body = AnyObject)))]
async fn read(
    _: Admin,
    State(state): State<AppState>,
    Path(CollectionPath { collection }): Path<CollectionPath>,
) -> Result<Json<CollectionInfo>, Problem> {
    Ok(Json(state.backend.collection(collection).await?))
}
