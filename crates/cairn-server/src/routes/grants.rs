//! Sharing: who a record is shared with beyond its collection's rules. The record's owner
//! or an admin lists, grants (`{"grantee": {"user": "bob"} | {"role": "editor"}, "access":
//! "read" | "write"}`) and revokes; anyone else gets 404 for a record they cannot see and
//! 403 for one they can.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::records::RecordPath;
use super::{AppState, Caller, Typed};
use crate::openapi::{AnyObject, ItemsDoc};
use crate::problem::Problem;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, grant)).routes(routes!(revoke))
}

/// Who to share with, and how.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    grantee: GranteeBody,
    access: AccessBody,
}

/// Who a grant is for: `{"user": "<name>"}` or `{"role": "<role>"}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
enum GranteeBody {
    User(ToUser),
    Role(ToRole),
}

/// A user, by name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ToUser {
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    user: String,
}

/// Every user of a role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ToRole {
    #[schema(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    role: String,
}

/// What a grant lets its grantee do: `read`, or `write` (read and change; never delete).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum AccessBody {
    Read,
    Write,
}

/// A grant in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct GrantPath {
    /// The grant's id.
    grant: String,
}

/// Who a record is shared with.
#[utoipa::path(get, path = "/api/collections/{collection}/records/{id}/grants", tag = "sharing", operation_id = "list_grants",
    params(RecordPath),
    responses((status = 200, description = "its grants", body = ItemsDoc)))]
async fn list(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(RecordPath { collection, id }): Path<RecordPath>,
) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"items": state.backend.grants(caller, collection, id).await?})))
}

/// Shares a record with a user or a role; sharing again with the same grantee sets the access.
#[utoipa::path(post, path = "/api/collections/{collection}/records/{id}/grants", tag = "sharing", operation_id = "grant",
    params(RecordPath),
    request_body = GrantBody,
    responses((status = 201, description = "the grant", body = AnyObject)))]
async fn grant(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(RecordPath { collection, id }): Path<RecordPath>,
    Typed(body): Typed<GrantBody>,
) -> Result<Response, Problem> {
    let grantee = match body.grantee {
        GranteeBody::User(ToUser { user }) => cairn::Grantee::User(user),
        GranteeBody::Role(ToRole { role }) => cairn::Grantee::Role(role),
    };
    let access = match body.access {
        AccessBody::Read => cairn::Access::Read,
        AccessBody::Write => cairn::Access::Write,
    };
    let grant = state.backend.grant(caller, collection, id, grantee, access).await?;
    Ok((StatusCode::CREATED, Json(grant)).into_response())
}

/// Withdraws a grant; it takes effect on the next request.
#[utoipa::path(delete, path = "/api/grants/{grant}", tag = "sharing", operation_id = "revoke_grant",
    params(GrantPath),
    responses((status = 200, description = "the grant withdrawn", body = AnyObject)))]
async fn revoke(
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(GrantPath { grant }): Path<GrantPath>,
) -> Result<Json<cairn::Grant>, Problem> {
    Ok(Json(state.backend.revoke_grant(caller, grant).await?))
}
