//! The change log: every committed change after a seq, in order (`?since=N&limit=M`); the
//! answer's `last_seq` is where to continue.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use cairn::Seq;
use serde_json::{json, Value};

use super::{number, params, Admin, AppState, Params};
use crate::problem::Problem;

/// The most changes one answer carries.
const MAX_CHANGES: usize = 1_000;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/changes", get(list))
}

async fn list(_: Admin, State(state): State<AppState>, query: Params) -> Result<Json<Value>, Problem> {
    let query = params(query, &["since", "limit"])?;
    let since = Seq(number(&query, "since")?.unwrap_or(0));
    let limit: u64 = number(&query, "limit")?.unwrap_or(100);
    if limit == 0 || limit > MAX_CHANGES as u64 {
        return Err(Problem::invalid(format!("limit must be 1 to {MAX_CHANGES}, not {limit}")));
    }
    let changes = state.backend.changes_since(since, limit as usize).await?;
    let last_seq = changes.last().map_or(since, |c| c.seq);
    Ok(Json(json!({"items": changes, "last_seq": last_seq})))
}
