//! Records: create, read, replace, patch (a JSON merge patch), delete, revert, undo, redo;
//! list with filter, sort, fields and cursors, count, search, history — for any signed-in
//! caller, held to the collection's rules (a record they may not see answers 404); batches,
//! which bypass the rules, are for admins. A write that names the version it expects (`If-Match`) fails with 412 when the
//! record has moved on; a write with an `Idempotency-Key` is made once (see [`write`]).

use std::collections::HashSet;
use std::sync::Mutex;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn::{Once, OnceOptions, Principal, Query, Record};
use serde_json::{json, Value};

use super::{etag, if_match, number, params, Admin, AppState, Caller, JsonBody, Params};
use crate::backend::RecordWrite;
use crate::problem::Problem;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/collections/{collection}/records", get(list).post(create))
        .route("/api/collections/{collection}/records/{id}", get(read).put(replace).patch(patch).delete(delete))
        .route("/api/collections/{collection}/records/{id}/history", get(history))
        .route("/api/collections/{collection}/records/{id}/revert", post(revert))
        .route("/api/collections/{collection}/records/{id}/undo", post(undo))
        .route("/api/collections/{collection}/records/{id}/redo", post(redo))
        .route("/api/collections/{collection}/records/{id}/purge", post(purge))
        .route("/api/collections/{collection}/search", get(search))
        .route("/api/batch", post(batch))
        .route("/api/collections/{collection}/count", get(count))
}

fn with_version(record: &Record, status: StatusCode) -> Response {
    let mut response = (status, Json(record)).into_response();
    response.headers_mut().insert(header::ETAG, etag(record.version));
    response
}

/// Makes `write`, once per `Idempotency-Key` when the request carries one: a retry of the
/// same request gets the first answer again (`Idempotent-Replayed: true`) without writing; the
/// same key with another request is 422, and while the first is still running, 409.
async fn write(
    state: &AppState,
    caller: &Principal,
    headers: &HeaderMap,
    write: RecordWrite,
) -> Result<Response, Problem> {
    let precondition = write.has_precondition();
    let Some(key) = headers.get("idempotency-key") else {
        let status = write.status();
        let record =
            state.backend.write(caller.clone(), write).await.map_err(|e| Problem::from_error(&e, precondition))?;
        let body = serde_json::to_value(&record).map_err(|e| Problem::from(cairn::Error::Internal(e.to_string())))?;
        return Ok(answer(status, &body, false));
    };
    let key = key.to_str().map_err(|_| Problem::invalid("Idempotency-Key must be visible ASCII"))?.to_string();
    let described = serde_json::to_string(&write).map_err(|e| Problem::from(cairn::Error::Internal(e.to_string())))?;
    let request_hash = cairn::ContentHash::of(described.as_bytes()).to_string();
    let scope = format!("{} records", caller.user.id);
    let _running = InFlight::enter(&state.in_flight, format!("{scope} {key}")).ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "in_progress",
            format!("a request with idempotency key {key:?} is still running"),
        )
    })?;
    let options = OnceOptions {
        retention_seconds: state.config.idempotency_retention_seconds as i64,
        ..OnceOptions::new(scope, key, request_hash)
    };
    let once = state
        .backend
        .write_once(caller.clone(), options, write)
        .await
        .map_err(|e| Problem::from_error(&e, precondition))?;
    let (stored, replayed) = match once {
        Once::Done(stored) => (stored, false),
        Once::Replayed(stored) => (stored, true),
    };
    let body: Value =
        serde_json::from_str(&stored.body).map_err(|e| Problem::from(cairn::Error::Internal(e.to_string())))?;
    Ok(answer(stored.status, &body, replayed))
}

/// A write's answer from its status and record: the record (none for 204), its version as
/// the ETag, and where a created record lives.
fn answer(status: u16, record: &Value, replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response =
        if status == StatusCode::NO_CONTENT { status.into_response() } else { (status, Json(record)).into_response() };
    let headers = response.headers_mut();
    if let Some(version) = record["version"].as_u64() {
        headers.insert(header::ETAG, etag(version));
    }
    if status == StatusCode::CREATED {
        let location = format!(
            "/api/collections/{}/records/{}",
            record["collection"].as_str().unwrap_or_default(),
            record["id"].as_str().unwrap_or_default()
        );
        if let Ok(value) = HeaderValue::from_str(&location) {
            headers.insert(header::LOCATION, value);
        }
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// A key being written: a second request with it is refused until the first is done.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<String>>,
    key: String,
}

impl<'a> InFlight<'a> {
    fn enter(set: &'a Mutex<HashSet<String>>, key: String) -> Option<InFlight<'a>> {
        // The guard is made only when the key was free: a guard made and dropped for a key
        // already running would free that key (and take the lock again while it is held).
        let entered = set.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone());
        entered.then(|| InFlight { set, key })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

async fn create(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(collection): Path<String>,
    headers: HeaderMap,
    query: Params,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let query = params(query, &["id"])?;
    let id = query.get("id").cloned();
    write(&state, &caller, &headers, RecordWrite::Create { collection, id, body }).await
}

async fn read(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let record = state.backend.get(caller, collection, id).await?;
    Ok(with_version(&record, StatusCode::OK))
}

async fn replace(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let expected = if_match(&headers)?;
    write(&state, &caller, &headers, RecordWrite::Replace { collection, id, body, expected }).await
}

async fn patch(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(patch): JsonBody,
) -> Result<Response, Problem> {
    let expected = if_match(&headers)?;
    write(&state, &caller, &headers, RecordWrite::Patch { collection, id, patch, expected }).await
}

async fn delete(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let expected = if_match(&headers)?;
    write(&state, &caller, &headers, RecordWrite::Delete { collection, id, expected }).await
}

async fn list(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(collection): Path<String>,
    query: Params,
) -> Result<Response, Problem> {
    let query = params(query, &["filter", "sort", "limit", "offset", "cursor", "fields"])?;
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
    let page = state.backend.query(caller, collection, q).await?;
    Ok(Json(json!({"items": page.rows, "next_cursor": page.next_cursor})).into_response())
}

async fn count(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(collection): Path<String>,
    query: Params,
) -> Result<Response, Problem> {
    let query = params(query, &["filter"])?;
    let filter = query.get("filter").filter(|f| !f.trim().is_empty()).cloned();
    let count = state.backend.count(caller, collection, filter).await?;
    Ok(Json(json!({"count": count})).into_response())
}

async fn history(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let changes = state.backend.history(caller, collection, id).await?;
    Ok(Json(json!({"items": changes})).into_response())
}

async fn revert(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    if let Some(unknown) = body.as_object().and_then(|o| o.keys().find(|k| *k != "version")) {
        return Err(Problem::invalid(format!("unknown member `{unknown}`; revert takes version")));
    }
    let version = body
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| Problem::invalid("revert takes {\"version\": N}, the version whose body comes back"))?;
    let expected = if_match(&headers)?;
    write(&state, &caller, &headers, RecordWrite::Revert { collection, id, version, expected }).await
}

async fn undo(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    write(&state, &caller, &headers, RecordWrite::Undo { collection, id }).await
}

async fn redo(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    write(&state, &caller, &headers, RecordWrite::Redo { collection, id }).await
}

/// Removes a soft-deleted record for good (its history stays): admins only.
async fn purge(
    _: Admin,
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let version = state.backend.purge(caller, collection, id).await?;
    Ok(Json(json!({"purged_version": version})).into_response())
}

async fn search(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(collection): Path<String>,
    query: Params,
) -> Result<Response, Problem> {
    let query = params(query, &["q", "filter", "limit", "offset", "fields"])?;
    let terms = query
        .get("q")
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| Problem::invalid("search needs q, the words to find"))?;
    let mut search = cairn::Search { terms: terms.clone(), ..cairn::Search::default() };
    search.filter = query.get("filter").filter(|f| !f.trim().is_empty()).map(|f| f.as_str().into());
    if let Some(limit) = number(&query, "limit")? {
        search.limit = limit;
    }
    if let Some(offset) = number(&query, "offset")? {
        search.offset = offset;
    }
    search.fields =
        query.get("fields").map(|f| f.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect());
    let hits = state.backend.search(caller, collection, search).await?;
    Ok(Json(json!({"items": hits})).into_response())
}

/// Operations applied all or nothing: `[{"op": "create", "collection": …}, …]` as
/// `cairn::BatchOp` reads them.
async fn batch(
    _: Admin,
    Caller(caller): Caller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let ops: Vec<cairn::BatchOp> =
        serde_json::from_value(body).map_err(|e| Problem::invalid(format!("the batch cannot be read: {e}")))?;
    if ops.is_empty() {
        return Err(Problem::invalid("the batch is empty"));
    }
    let results = state.backend.batch(caller, ops).await?;
    Ok(Json(json!({"items": results})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_flight_refuses_a_second_request_until_the_first_is_done() {
        let set = Mutex::new(HashSet::new());
        let first = InFlight::enter(&set, "ana records k1".into()).expect("first");
        assert!(InFlight::enter(&set, "ana records k1".into()).is_none(), "the same key while the first runs");
        assert!(InFlight::enter(&set, "bob records k1".into()).is_some(), "another scope's key is another key");
        drop(first);
        assert!(InFlight::enter(&set, "ana records k1".into()).is_some(), "free again once the first is done");
    }
}
