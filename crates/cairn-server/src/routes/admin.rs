//! Administration: settings, the audit trail and backups (list, take, verify). Admins only.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{Admin, AppState, JsonBody};
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
}

async fn settings(_admin: Admin, State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"items": state.backend.settings().await?})))
}

async fn set_setting(
    _admin: Admin,
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

async fn audit(
    _admin: Admin,
    State(state): State<AppState>,
    query: Result<QueryParams<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let query = query
        .map(|q| q.0)
        .map_err(|e| Problem::invalid(format!("the query string cannot be read: {}", e.body_text())))?;
    if let Some(unknown) = query.keys().find(|k| !matches!(k.as_str(), "filter" | "after" | "limit")) {
        return Err(Problem::invalid(format!(
            "unknown query parameter {unknown:?}; this route takes filter, after, limit"
        )));
    }
    let number = |name: &str, default: u64| -> Result<u64, Problem> {
        query.get(name).map_or(Ok(default), |v| {
            v.parse::<u64>().map_err(|_| Problem::invalid(format!("{name} must be a whole number, not {v:?}")))
        })
    };
    let (after, limit) = (number("after", 0)?, number("limit", 100)?);
    if limit == 0 || limit > MAX_AUDIT {
        return Err(Problem::invalid(format!("limit must be 1 to {MAX_AUDIT}, not {limit}")));
    }
    let filter = query.get("filter").filter(|f| !f.trim().is_empty()).cloned();
    let entries = state.backend.audit_log(filter, after, limit as usize).await?;
    let next = entries.last().map(|e| e.seq);
    Ok(Json(json!({"items": entries, "last_seq": next})))
}

async fn backups(_admin: Admin, State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"items": state.backend.backups().await?})))
}

async fn backup(_admin: Admin, State(state): State<AppState>) -> Result<Response, Problem> {
    let info = state.backend.backup().await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn verify(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<cairn::BackupInfo>, Problem> {
    Ok(Json(state.backend.verify_backup(id).await?))
}
