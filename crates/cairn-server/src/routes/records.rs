//! Records: create, read, replace, patch (a JSON merge patch), delete, list with filter,
//! sort, fields and cursors, count, and a record's history. A write that names the version
//! it expects (`If-Match`) fails with 412 when the record has moved on.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cairn::{Query, Record};
use serde_json::json;

use super::{etag, if_match, Admin, AppState, JsonBody};
use crate::problem::Problem;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/collections/{collection}/records", get(list).post(create))
        .route("/api/collections/{collection}/records/{id}", get(read).put(replace).patch(patch).delete(delete))
        .route("/api/collections/{collection}/records/{id}/history", get(history))
        .route("/api/collections/{collection}/count", get(count))
}

type Params = Result<QueryParams<HashMap<String, String>>, QueryRejection>;

fn params(params: Params) -> Result<HashMap<String, String>, Problem> {
    params.map(|p| p.0).map_err(|e| Problem::invalid(format!("the query string cannot be read: {}", e.body_text())))
}

/// Refuses query parameters a route does not know, so that a typo is not silently ignored.
fn only(params: &HashMap<String, String>, known: &[&str]) -> Result<(), Problem> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(Problem::invalid(format!(
            "unknown query parameter {unknown:?}; this route takes {}",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ))),
        None => Ok(()),
    }
}

fn number(params: &HashMap<String, String>, name: &str) -> Result<Option<usize>, Problem> {
    params
        .get(name)
        .map(|v| v.parse::<usize>().map_err(|_| Problem::invalid(format!("{name} must be a whole number, not {v:?}"))))
        .transpose()
}

fn with_version(record: &Record, status: StatusCode) -> Response {
    let mut response = (status, Json(record)).into_response();
    response.headers_mut().insert(header::ETAG, etag(record.version));
    response
}

async fn create(
    _admin: Admin,
    State(state): State<AppState>,
    Path(collection): Path<String>,
    query: Params,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let query = params(query)?;
    only(&query, &["id"])?;
    let id = query.get("id").cloned();
    let record = state.backend.create(collection.clone(), id, body).await?;
    let mut response = with_version(&record, StatusCode::CREATED);
    let location = format!("/api/collections/{collection}/records/{}", record.id);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

async fn read(
    _admin: Admin,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let record = state.backend.get(collection, id).await?;
    Ok(with_version(&record, StatusCode::OK))
}

async fn replace(
    _admin: Admin,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let expected = if_match(&headers)?;
    let record = state
        .backend
        .replace(collection, id, body, expected)
        .await
        .map_err(|e| Problem::from_error(&e, expected.is_some()))?;
    Ok(with_version(&record, StatusCode::OK))
}

async fn patch(
    _admin: Admin,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let expected = if_match(&headers)?;
    let record = state
        .backend
        .patch(collection, id, body, expected)
        .await
        .map_err(|e| Problem::from_error(&e, expected.is_some()))?;
    Ok(with_version(&record, StatusCode::OK))
}

async fn delete(
    _admin: Admin,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let expected = if_match(&headers)?;
    let record = state
        .backend
        .delete(collection, id, expected)
        .await
        .map_err(|e| Problem::from_error(&e, expected.is_some()))?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::ETAG, etag(record.version));
    Ok(response)
}

async fn list(
    _admin: Admin,
    State(state): State<AppState>,
    Path(collection): Path<String>,
    query: Params,
) -> Result<Response, Problem> {
    let query = params(query)?;
    only(&query, &["filter", "sort", "limit", "offset", "cursor", "fields"])?;
    let mut q = Query::default();
    if let Some(filter) = query.get("filter").filter(|f| !f.trim().is_empty()) {
        q.filter = Some(filter.as_str().into());
    }
    q.sort = query.get("sort").cloned();
    if let Some(limit) = number(&query, "limit")? {
        q.limit = limit;
    }
    q.offset = number(&query, "offset")?;
    q.cursor = query.get("cursor").cloned();
    q.fields =
        query.get("fields").map(|f| f.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect());
    let page = state.backend.query(collection, q).await?;
    Ok(Json(json!({"items": page.rows, "next_cursor": page.next_cursor})).into_response())
}

async fn count(
    _admin: Admin,
    State(state): State<AppState>,
    Path(collection): Path<String>,
    query: Params,
) -> Result<Response, Problem> {
    let query = params(query)?;
    only(&query, &["filter"])?;
    let filter = query.get("filter").filter(|f| !f.trim().is_empty()).cloned();
    let count = state.backend.count(collection, filter).await?;
    Ok(Json(json!({"count": count})).into_response())
}

async fn history(
    _admin: Admin,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let changes = state.backend.history(collection, id).await?;
    Ok(Json(json!({"items": changes})).into_response())
}
