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
use axum::Json;
use cairn::{Once, OnceOptions, Principal, Query, Record};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{etag, if_match, Admin, AppState, Caller, JsonBody, Typed, Q};
use crate::backend::RecordWrite;
use crate::openapi::{AnyObject, ItemsDoc, RecordDoc};
use crate::problem::Problem;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, replace, patch, delete))
        .routes(routes!(history))
        .routes(routes!(revert))
        .routes(routes!(undo))
        .routes(routes!(redo))
        .routes(routes!(purge))
        .routes(routes!(search))
        .routes(routes!(batch))
        .routes(routes!(count))
}

/// A collection in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct CollectionPath {
    /// The collection's name.
    pub collection: String,
}

/// A record in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct RecordPath {
    /// The collection's name.
    pub collection: String,
    /// The record's id.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub id: String,
}

/// `?id=` of a create.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CreateParams {
    /// The new record's id (a new time-sortable one when absent).
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    id: Option<String>,
}

/// A page's query (docs/query.md).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// A filter in cairn's query language: `status = "active" and n > 2`.
    filter: Option<String>,
    /// Fields to sort by, comma-separated, `-` for descending: `-updated,title`.
    sort: Option<String>,
    /// Records per page, 1 to 10,000 (default 50).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    /// Records to skip (not with `cursor`).
    #[param(minimum = 0, maximum = 1000000000)]
    offset: Option<usize>,
    /// The `next_cursor` of the page before (not with `offset`).
    cursor: Option<String>,
    /// Fields to return, comma-separated (default: the summary fields).
    fields: Option<String>,
}

/// A count's filter.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CountParams {
    /// A filter in cairn's query language.
    filter: Option<String>,
}

/// A full-text search.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SearchParams {
    /// The words to find.
    q: String,
    /// A filter in cairn's query language the hits must also match.
    filter: Option<String>,
    /// Hits per page, 1 to 10,000 (default 20).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    /// Hits to skip.
    #[param(minimum = 0, maximum = 1000000000)]
    offset: Option<usize>,
    /// Fields to return, comma-separated.
    fields: Option<String>,
}

/// Which version's body a revert brings back.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RevertBody {
    /// The version whose body comes back, as a new version.
    version: u64,
}

/// A page of records.
#[derive(Debug, serde::Serialize, ToSchema)]
struct PageDoc {
    #[schema(value_type = Vec<Object>)]
    items: Vec<Value>,
    /// Where the next page starts; none after the last.
    next_cursor: Option<String>,
}

/// Operations of a batch: at least one object.
#[derive(Debug)]
struct BatchDoc;

impl utoipa::PartialSchema for BatchDoc {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(utoipa::openapi::schema::Object::new())
            .min_items(Some(1))
            .into()
    }
}

impl ToSchema for BatchDoc {}

/// A count.
#[derive(Debug, serde::Serialize, ToSchema)]
struct CountDoc {
    count: u64,
}

/// What a purge did.
#[derive(Debug, serde::Serialize, ToSchema)]
struct PurgedDoc {
    /// The version the purge was logged under.
    purged_version: u64,
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

/// The most records or hits a page may skip.
const MAX_OFFSET: usize = 1_000_000_000;

/// `offset`, if within [`MAX_OFFSET`].
fn offset(offset: Option<usize>) -> Result<Option<usize>, Problem> {
    match offset {
        Some(n) if n > MAX_OFFSET => Err(Problem::invalid(format!("offset must be at most {MAX_OFFSET}, not {n}"))),
        other => Ok(other),
    }
}

/// Headers a write may carry.
const IF_MATCH: &str = "the version the write expects (`\"3\"`): 412 when the record has moved on";
const IDEMPOTENCY_KEY: &str = "makes the write once: a retry gets the first answer (`Idempotent-Replayed: true`)";

/// Creates a record.
#[utoipa::path(post, path = "/api/collections/{collection}/records", tag = "records", operation_id = "create_record",
    params(CollectionPath, CreateParams,
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = IDEMPOTENCY_KEY, pattern = "^[!-~]{1,255}$")),
    request_body(content = AnyObject, description = "the record's fields"),
    responses((status = 201, description = "created", body = RecordDoc,
        headers(("etag" = String, description = "its version"), ("location" = String, description = "where it lives")))))]
async fn create(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(CollectionPath { collection }): Path<CollectionPath>,
    headers: HeaderMap,
    Q(query): Q<CreateParams>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    write(&state, &caller, &headers, RecordWrite::Create { collection, id: query.id, body }).await
}

/// A live record the caller may view (404 for any other: missing, deleted or hidden).
#[utoipa::path(get, path = "/api/collections/{collection}/records/{id}", tag = "records", operation_id = "get_record",
    params(RecordPath),
    responses((status = 200, description = "the record", body = RecordDoc, headers(("etag" = String, description = "its version")))))]
async fn read(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(RecordPath { collection, id }): Path<RecordPath>,
) -> Result<Response, Problem> {
    let record = state.backend.get(caller, collection, id).await?;
    Ok(with_version(&record, StatusCode::OK))
}

/// Replaces a record's body.
#[utoipa::path(put, path = "/api/collections/{collection}/records/{id}", tag = "records", operation_id = "replace_record",
    params(RecordPath, ("If-Match" = Option<String>, Header, nullable = false, description = IF_MATCH, pattern = r#"^(\*|(W/)?"[0-9]{1,19}"|[0-9]{1,19})$"#),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = IDEMPOTENCY_KEY, pattern = "^[!-~]{1,255}$")),
    request_body(content = AnyObject, description = "the record's new fields"),
    responses((status = 200, description = "the new version", body = RecordDoc, headers(("etag" = String)))))]
async fn replace(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(RecordPath { collection, id }): Path<RecordPath>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let expected = if_match(&headers)?;
    write(&state, &caller, &headers, RecordWrite::Replace { collection, id, body, expected }).await
}

/// Changes a record with a JSON merge patch (RFC 7396): `null` removes a field.
#[utoipa::path(patch, path = "/api/collections/{collection}/records/{id}", tag = "records", operation_id = "patch_record",
    params(RecordPath, ("If-Match" = Option<String>, Header, nullable = false, description = IF_MATCH, pattern = r#"^(\*|(W/)?"[0-9]{1,19}"|[0-9]{1,19})$"#),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = IDEMPOTENCY_KEY, pattern = "^[!-~]{1,255}$")),
    request_body(content = AnyObject, description = "a JSON merge patch", content_type = "application/merge-patch+json"),
    responses((status = 200, description = "the new version", body = RecordDoc, headers(("etag" = String)))))]
async fn patch(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(RecordPath { collection, id }): Path<RecordPath>,
    headers: HeaderMap,
    JsonBody(patch): JsonBody,
) -> Result<Response, Problem> {
    let expected = if_match(&headers)?;
    write(&state, &caller, &headers, RecordWrite::Patch { collection, id, patch, expected }).await
}

/// Soft-deletes a record (its history stays; undo brings it back).
#[utoipa::path(delete, path = "/api/collections/{collection}/records/{id}", tag = "records", operation_id = "delete_record",
    params(RecordPath, ("If-Match" = Option<String>, Header, nullable = false, description = IF_MATCH, pattern = r#"^(\*|(W/)?"[0-9]{1,19}"|[0-9]{1,19})$"#),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = IDEMPOTENCY_KEY, pattern = "^[!-~]{1,255}$")),
    responses((status = 204, description = "deleted", headers(("etag" = String, description = "the deleted version")))))]
async fn delete(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(RecordPath { collection, id }): Path<RecordPath>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let expected = if_match(&headers)?;
    write(&state, &caller, &headers, RecordWrite::Delete { collection, id, expected }).await
}

/// A page of the records the caller may list.
#[utoipa::path(get, path = "/api/collections/{collection}/records", tag = "records", operation_id = "list_records",
    params(CollectionPath, ListParams),
    responses((status = 200, description = "a page", body = PageDoc)))]
async fn list(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(CollectionPath { collection }): Path<CollectionPath>,
    Q(params): Q<ListParams>,
) -> Result<Response, Problem> {
    let mut q = Query::default();
    if let Some(filter) = params.filter.filter(|f| !f.trim().is_empty()) {
        q.filter = Some(filter.as_str().into());
    }
    q.sort = params.sort;
    if let Some(limit) = params.limit {
        q.limit = limit;
    }
    q.offset = offset(params.offset)?;
    q.cursor = params.cursor;
    q.fields = params.fields.map(|f| split_fields(&f));
    let page = state.backend.query(caller, collection, q).await?;
    Ok(Json(json!({"items": page.rows, "next_cursor": page.next_cursor})).into_response())
}

fn split_fields(fields: &str) -> Vec<String> {
    fields.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect()
}

/// How many records the caller may list match a filter.
#[utoipa::path(get, path = "/api/collections/{collection}/count", tag = "records", operation_id = "count_records",
    params(CollectionPath, CountParams),
    responses((status = 200, description = "the count", body = CountDoc)))]
async fn count(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(CollectionPath { collection }): Path<CollectionPath>,
    Q(params): Q<CountParams>,
) -> Result<Response, Problem> {
    let filter = params.filter.filter(|f| !f.trim().is_empty());
    let count = state.backend.count(caller, collection, filter).await?;
    Ok(Json(json!({"count": count})).into_response())
}

/// Every change of a record the caller may view, oldest first.
#[utoipa::path(get, path = "/api/collections/{collection}/records/{id}/history", tag = "records", operation_id = "record_history",
    params(RecordPath),
    responses((status = 200, description = "its changes", body = ItemsDoc)))]
async fn history(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(RecordPath { collection, id }): Path<RecordPath>,
) -> Result<Response, Problem> {
    let changes = state.backend.history(caller, collection, id).await?;
    Ok(Json(json!({"items": changes})).into_response())
}

/// Brings back the body of an earlier version, as a new version.
#[utoipa::path(post, path = "/api/collections/{collection}/records/{id}/revert", tag = "records", operation_id = "revert_record",
    params(RecordPath, ("If-Match" = Option<String>, Header, nullable = false, description = IF_MATCH, pattern = r#"^(\*|(W/)?"[0-9]{1,19}"|[0-9]{1,19})$"#),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = IDEMPOTENCY_KEY, pattern = "^[!-~]{1,255}$")),
    request_body = RevertBody,
    responses((status = 200, description = "the new version", body = RecordDoc, headers(("etag" = String)))))]
async fn revert(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(RecordPath { collection, id }): Path<RecordPath>,
    headers: HeaderMap,
    Typed(body): Typed<RevertBody>,
) -> Result<Response, Problem> {
    let expected = if_match(&headers)?;
    write(&state, &caller, &headers, RecordWrite::Revert { collection, id, version: body.version, expected }).await
}

/// Undoes the record's last change, as a new version.
#[utoipa::path(post, path = "/api/collections/{collection}/records/{id}/undo", tag = "records", operation_id = "undo_record",
    params(RecordPath, ("Idempotency-Key" = Option<String>, Header, nullable = false, description = IDEMPOTENCY_KEY, pattern = "^[!-~]{1,255}$")),
    responses((status = 200, description = "the new version", body = RecordDoc, headers(("etag" = String)))))]
async fn undo(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(RecordPath { collection, id }): Path<RecordPath>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    write(&state, &caller, &headers, RecordWrite::Undo { collection, id }).await
}

/// Redoes what the last undo took back, as a new version.
#[utoipa::path(post, path = "/api/collections/{collection}/records/{id}/redo", tag = "records", operation_id = "redo_record",
    params(RecordPath, ("Idempotency-Key" = Option<String>, Header, nullable = false, description = IDEMPOTENCY_KEY, pattern = "^[!-~]{1,255}$")),
    responses((status = 200, description = "the new version", body = RecordDoc, headers(("etag" = String)))))]
async fn redo(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(RecordPath { collection, id }): Path<RecordPath>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    write(&state, &caller, &headers, RecordWrite::Redo { collection, id }).await
}

/// Removes a soft-deleted record for good (its history stays): admins only.
#[utoipa::path(post, path = "/api/collections/{collection}/records/{id}/purge", tag = "records", operation_id = "purge_record",
    params(RecordPath),
    responses((status = 200, description = "purged", body = PurgedDoc)))]
async fn purge(
    _: Admin,
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(RecordPath { collection, id }): Path<RecordPath>,
) -> Result<Response, Problem> {
    let version = state.backend.purge(caller, collection, id).await?;
    Ok(Json(json!({"purged_version": version})).into_response())
}

/// Full-text search within what the caller may list, best matches first.
#[utoipa::path(get, path = "/api/collections/{collection}/search", tag = "records", operation_id = "search_records",
    params(CollectionPath, SearchParams),
    responses((status = 200, description = "the hits, each with its snippet", body = ItemsDoc)))]
async fn search(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(CollectionPath { collection }): Path<CollectionPath>,
    Q(params): Q<SearchParams>,
) -> Result<Response, Problem> {
    if params.q.trim().is_empty() {
        return Err(Problem::invalid("search needs q, the words to find"));
    }
    let mut search = cairn::Search { terms: params.q, ..cairn::Search::default() };
    search.filter = params.filter.filter(|f| !f.trim().is_empty()).map(|f| f.as_str().into());
    if let Some(limit) = params.limit {
        search.limit = limit;
    }
    if let Some(offset) = offset(params.offset)? {
        search.offset = offset;
    }
    search.fields = params.fields.map(|f| split_fields(&f));
    let hits = state.backend.search(caller, collection, search).await?;
    Ok(Json(json!({"items": hits})).into_response())
}

/// Operations applied all or nothing — `[{"op": "create", "collection": …}, …]` — for
/// admins (they bypass collection rules).
#[utoipa::path(post, path = "/api/batch", tag = "records", operation_id = "batch",
    request_body(content = BatchDoc, description = "operations: create, put, replace, patch, delete"),
    responses((status = 200, description = "each operation's result, in order", body = ItemsDoc)))]
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
