//! Administration: settings, the audit trail, backups (list, take, verify, restore) and
//! exports.
//! Admins only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{members, number, params, text, Admin, AppState, Caller, JsonBody, Params};
use crate::problem::Problem;

/// The most audit entries one answer carries.
const MAX_AUDIT: u64 = 1_000;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/settings", get(settings))
        .route("/api/settings/{key}", put(set_setting))
        .route("/api/audit", get(audit))
        .route("/api/backups", get(backups).post(backup))
        .route("/api/backups/{id}/verify", post(verify))
        .route("/api/backups/{id}/restore", post(restore))
        .route("/api/export", post(export))
        .route("/api/users", get(users).post(create_user))
        .route("/api/users/{name}/disable", post(disable_user))
        .route("/api/users/{name}/password", post(reset_password))
        .route("/api/tokens", get(tokens).post(create_token))
        .route("/api/tokens/{id}", axum::routing::delete(revoke_token))
}

async fn users(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"items": state.backend.users().await?})))
}

async fn create_user(_: Admin, State(state): State<AppState>, JsonBody(body): JsonBody) -> Result<Response, Problem> {
    members(&body, &["name", "password", "role"])?;
    let role = match body.get("role") {
        None => cairn::User::DEFAULT_ROLE.to_string(),
        Some(_) => text(&body, "role")?,
    };
    let user = state.backend.create_user(text(&body, "name")?, text(&body, "password")?, role).await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

async fn disable_user(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<cairn::User>, Problem> {
    Ok(Json(state.backend.disable_user(name).await?))
}

async fn reset_password(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<cairn::User>, Problem> {
    members(&body, &["password"])?;
    Ok(Json(state.backend.set_password(name, text(&body, "password")?, None).await?))
}

async fn tokens(_: Admin, State(state): State<AppState>, query: Params) -> Result<Json<Value>, Problem> {
    let query = params(query, &["user"])?;
    Ok(Json(json!({"items": state.backend.tokens(query.get("user").cloned()).await?})))
}

/// Makes an API key: `{"user", "name", "scopes"?, "expires_days"?}`; the answer carries the
/// key once (`Cache-Control: no-store`).
async fn create_token(_: Admin, State(state): State<AppState>, JsonBody(body): JsonBody) -> Result<Response, Problem> {
    members(&body, &["user", "name", "scopes", "expires_days"])?;
    let scopes = match body.get("scopes") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(String::from).ok_or_else(|| Problem::invalid("`scopes` must be a list of text")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Problem::invalid("`scopes` must be a list of text")),
    };
    let expires_at = match body.get("expires_days") {
        None => None,
        Some(days) => {
            let days = days
                .as_u64()
                .filter(|d| (1..=36_500).contains(d))
                .ok_or_else(|| Problem::invalid("`expires_days` must be 1 to 36500"))?;
            Some(cairn::Timestamp(cairn::Timestamp::now().0 + days as i64 * 86_400_000))
        }
    };
    let options = cairn::ApiKeyOptions { name: text(&body, "name")?, scopes, expires_at };
    let issued = state.backend.create_api_key(text(&body, "user")?, options).await?;
    let mut response =
        (StatusCode::CREATED, Json(json!({"token": issued.secret, "info": issued.info}))).into_response();
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn revoke_token(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<cairn::TokenInfo>, Problem> {
    Ok(Json(state.backend.revoke_token(id).await?))
}

async fn settings(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"items": state.backend.settings().await?})))
}

async fn set_setting(
    _: Admin,
    State(state): State<AppState>,
    Path(key): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<cairn::Setting>, Problem> {
    let Some(Value::Object(members)) = Some(&body) else {
        return Err(Problem::invalid("the body must be {\"value\": …}"));
    };
    if members.len() != 1 || !members.contains_key("value") {
        return Err(Problem::invalid("the body must be {\"value\": …} and nothing else"));
    }
    let value = members["value"].clone();
    Ok(Json(state.backend.set_setting(key, value).await?))
}

async fn audit(_: Admin, State(state): State<AppState>, query: Params) -> Result<Json<Value>, Problem> {
    let query = params(query, &["filter", "after", "limit"])?;
    let (after, limit): (u64, u64) = (number(&query, "after")?.unwrap_or(0), number(&query, "limit")?.unwrap_or(100));
    if limit == 0 || limit > MAX_AUDIT {
        return Err(Problem::invalid(format!("limit must be 1 to {MAX_AUDIT}, not {limit}")));
    }
    let filter = query.get("filter").filter(|f| !f.trim().is_empty()).cloned();
    let entries = state.backend.audit_log(filter, after, limit as usize).await?;
    let next = entries.last().map(|e| e.seq);
    Ok(Json(json!({"items": entries, "last_seq": next})))
}

async fn backups(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"items": state.backend.backups().await?})))
}

async fn backup(_: Admin, State(state): State<AppState>) -> Result<Response, Problem> {
    let info = state.backend.backup().await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn verify(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<cairn::BackupInfo>, Problem> {
    Ok(Json(state.backend.verify_backup(id).await?))
}

/// Restores from a backup. `{"confirm": "<backup id>"}` replaces the whole store (its state
/// now is backed up first; requests wait while it runs); with `"collection"` (and `"record"`)
/// only those records come back, as new versions, and nothing else changes. The confirmation
/// must name the backup: a restore is never one click away.
async fn restore(
    _: Admin,
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    members(&body, &["confirm", "collection", "record"])?;
    let confirm = body.get("confirm").and_then(Value::as_str);
    if confirm != Some(id.as_str()) {
        return Err(Problem::from(cairn::Error::ConfirmationRequired {
            what: format!("restoring from backup {id}"),
            hint: "confirm with the backup's id".into(),
            token: Some(id),
        }));
    }
    let optional = |name: &str| body.get(name).map(|_| text(&body, name)).transpose();
    let (collection, record) = (optional("collection")?, optional("record")?);
    match (collection, record) {
        (Some(collection), record) => {
            Ok(Json(state.backend.restore_records(caller, id, collection, record).await?).into_response())
        }
        (None, Some(_)) => Err(Problem::invalid("`record` needs `collection`")),
        (None, None) => Ok(Json(state.backend.restore(id).await?).into_response()),
    }
}

/// Everything, as a tar archive of an export folder (`cairn-export/`, which `cairn import`
/// reads once unpacked). The body is the export's options (`{}` for the defaults); an export
/// that cannot be made is a problem before anything is sent.
async fn export(_: Admin, State(state): State<AppState>, JsonBody(body): JsonBody) -> Result<Response, Problem> {
    let options: cairn::ExportOptions = serde_json::from_value(body)
        .map_err(|e| Problem::invalid(format!("the export options cannot be read: {e}")))?;
    let archive = state.backend.export(options).await?;
    let body = crate::stream::written(move |out| archive.write_to(out).map_err(std::io::Error::other));
    let headers = [
        (axum::http::header::CONTENT_TYPE, "application/x-tar"),
        (axum::http::header::CONTENT_DISPOSITION, "attachment; filename=\"cairn-export.tar\""),
        (axum::http::header::CACHE_CONTROL, "no-store"),
    ];
    Ok((headers, body).into_response())
}
