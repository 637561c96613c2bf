//! Sharing: who a record is shared with beyond its collection's rules. The record's owner
//! or an admin lists, grants (`{"grantee": {"user": "bob"} | {"role": "editor"}, "access":
//! "read" | "write"}`) and revokes; anyone else gets 404 for a record they cannot see and
//! 403 for one they can.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{members, AppState, Caller, JsonBody};
use crate::problem::Problem;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/collections/{collection}/records/{id}/grants", get(list).post(grant))
        .route("/api/grants/{grant}", delete(revoke))
}

async fn list(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"items": state.backend.grants(caller, collection, id).await?})))
}

async fn grant(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    members(&body, &["grantee", "access"])?;
    let grantee: cairn::Grantee = serde_json::from_value(body["grantee"].clone())
        .map_err(|_| Problem::invalid(r#"`grantee` must be {"user": "<name>"} or {"role": "<role>"}"#))?;
    let access: cairn::Access = serde_json::from_value(body["access"].clone())
        .map_err(|_| Problem::invalid(r#"`access` must be "read" or "write""#))?;
    let grant = state.backend.grant(caller, collection, id, grantee, access).await?;
    Ok((StatusCode::CREATED, Json(grant)).into_response())
}

async fn revoke(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(grant): Path<String>,
) -> Result<Json<cairn::Grant>, Problem> {
    Ok(Json(state.backend.revoke_grant(caller, grant).await?))
}
