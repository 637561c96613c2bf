//! The change log: every committed change after a seq, in order (`?since=N&limit=M`); the
//! answer's `last_seq` is where to continue.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query as QueryParams, State};
use axum::routing::get;
use axum::{Json, Router};
use cairn::Seq;
use serde_json::{json, Value};

use super::{Admin, AppState};
use crate::problem::Problem;

/// The most changes one answer carries.
const MAX_CHANGES: usize = 1_000;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/changes", get(list))
}

async fn list(
    _admin: Admin,
    State(state): State<AppState>,
    query: Result<QueryParams<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let query = query
        .map(|q| q.0)
        .map_err(|e| Problem::invalid(format!("the query string cannot be read: {}", e.body_text())))?;
    if let Some(unknown) = query.keys().find(|k| *k != "since" && *k != "limit") {
        return Err(Problem::invalid(format!("unknown query parameter {unknown:?}; this route takes since, limit")));
    }
    let number = |name: &str, default: u64| -> Result<u64, Problem> {
        query.get(name).map_or(Ok(default), |v| {
            v.parse::<u64>().map_err(|_| Problem::invalid(format!("{name} must be a whole number, not {v:?}")))
        })
    };
    let since = Seq(number("since", 0)?);
    let limit = number("limit", 100)?;
    if limit == 0 || limit > MAX_CHANGES as u64 {
        return Err(Problem::invalid(format!("limit must be 1 to {MAX_CHANGES}, not {limit}")));
    }
    let changes = state.backend.changes_since(since, limit as usize).await?;
    let last_seq = changes.last().map_or(since, |c| c.seq);
    Ok(Json(json!({"items": changes, "last_seq": last_seq})))
}
