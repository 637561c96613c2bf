//! The change log: every committed change after a seq, in order (`?since=N&limit=M`); the
//! answer's `last_seq` is where to continue. Admins only (it bypasses collection rules).

use axum::extract::State;
use axum::Json;
use cairn::Seq;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, AppState, Q};
use crate::problem::Problem;

/// The most changes one answer carries.
const MAX_CHANGES: u64 = 1_000;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Where to read the change log from.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ChangesParams {
    /// Changes after this seq (default 0: from the start).
    #[param(minimum = 0)]
    since: Option<i64>,
    /// At most this many, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// A page of the change log.
#[derive(Debug, serde::Serialize, ToSchema)]
struct ChangesDoc {
    #[schema(value_type = Vec<Object>)]
    items: Vec<Value>,
    /// The seq to continue after.
    last_seq: u64,
}

/// Committed changes after a seq, oldest first.
#[utoipa::path(get, path = "/api/changes", tag = "changes", operation_id = "list_changes",
    params(ChangesParams),
    responses((status = 200, description = "the changes", body = ChangesDoc)))]
async fn list(_: Admin, State(state): State<AppState>, Q(params): Q<ChangesParams>) -> Result<Json<Value>, Problem> {
    let since = match params.since.unwrap_or(0) {
        since if since < 0 => return Err(Problem::invalid(format!("since must be a seq (0 or more), not {since}"))),
        since => Seq(since as u64),
    };
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_CHANGES {
        return Err(Problem::invalid(format!("limit must be 1 to {MAX_CHANGES}, not {limit}")));
    }
    let changes = state.backend.changes_since(since, limit as usize).await?;
    let last_seq = changes.last().map_or(since, |c| c.seq);
    Ok(Json(json!({"items": changes, "last_seq": last_seq})))
}
