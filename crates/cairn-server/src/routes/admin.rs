//! Administration: settings, the audit trail, backups (list, take, verify, restore), exports,
//! users and API keys. Admins only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Admin, AppState, Caller, Typed, Q};
use crate::openapi::{AnyObject, ItemsDoc};
use crate::problem::Problem;

/// The most audit entries one answer carries.
const MAX_AUDIT: u64 = 1_000;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(settings))
        .routes(routes!(set_setting))
        .routes(routes!(audit))
        .routes(routes!(backups, backup))
        .routes(routes!(verify))
        .routes(routes!(restore))
        .routes(routes!(export))
        .routes(routes!(users, create_user))
        .routes(routes!(disable_user))
        .routes(routes!(reset_password))
        .routes(routes!(tokens, create_token))
        .routes(routes!(revoke_token))
}

/// A user in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct UserPath {
    /// The user's name.
    name: String,
}

/// A backup in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct BackupPath {
    /// The backup's id.
    id: String,
}

/// A token in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct TokenPath {
    /// The token's id (an API key's visible prefix without `cairn_k_`).
    id: String,
}

/// A setting in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct SettingPath {
    /// The setting's key: `backup.keep_last`, …
    key: String,
}

/// A new user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    name: String,
    #[schema(min_length = 8, max_length = 256)]
    password: String,
    /// `admin`, `user` (the default) or the application's own.
    #[schema(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    role: Option<String>,
}

/// A password set by an admin.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    #[schema(min_length = 8, max_length = 256)]
    password: String,
}

/// A new API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKey {
    /// The user it acts as.
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    user: String,
    /// Its name, to tell keys apart.
    name: String,
    /// `read` (GET requests only) and/or `write`; none: everything its user may.
    scopes: Option<Vec<Scope>>,
    /// Days until it stops working, 1 to 36,500; none: never.
    #[schema(minimum = 1, maximum = 36500)]
    expires_days: Option<u32>,
}

/// What an API key may do.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Scope {
    /// GET requests only.
    Read,
    /// Changes.
    Write,
}

/// Whose tokens to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TokensParams {
    /// One user's tokens (default: everyone's).
    user: Option<String>,
}

/// A setting's new value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SettingValue {
    /// Typed as the setting says.
    #[schema(value_type = Object)]
    value: Value,
}

/// Which audit entries.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// A filter over the entries: `action = "restore"`.
    filter: Option<String>,
    /// Entries after this seq (default 0).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// At most this many, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// What a restore brings back, and its confirmation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    /// The backup's id, again: a restore is never one click away.
    confirm: String,
    /// Only this collection's records (as new versions); none: the whole store.
    collection: Option<String>,
    /// Only this record of `collection`.
    record: Option<String>,
}

/// An export's options.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    /// Also the attachments records link to.
    blobs: Option<bool>,
    /// Redact the fields flagged `pii` or `encrypted` (and `redact_fields`): `mask`, `hash`, `drop`.
    #[schema(value_type = Option<String>, pattern = "^(mask|hash|drop)$")]
    redact: Option<cairn::Redaction>,
    /// More fields to redact, as `collection.field`.
    redact_fields: Option<Vec<String>>,
    /// Carry secret settings (sealed, with the wrapped keys that open them).
    secrets: Option<bool>,
}

/// Every user.
#[utoipa::path(get, path = "/api/users", tag = "admin", operation_id = "list_users",
    responses((status = 200, description = "the users", body = ItemsDoc)))]
async fn users(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"items": state.backend.users().await?})))
}

/// Makes a user.
#[utoipa::path(post, path = "/api/users", tag = "admin", operation_id = "create_user",
    request_body = NewUser,
    responses((status = 201, description = "the user", body = AnyObject)))]
async fn create_user(
    _: Admin,
    State(state): State<AppState>,
    Typed(body): Typed<NewUser>,
) -> Result<Response, Problem> {
    let role = body.role.unwrap_or_else(|| cairn::User::DEFAULT_ROLE.to_string());
    let user = state.backend.create_user(body.name, body.password, role).await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

/// Disables a user and revokes its tokens.
#[utoipa::path(post, path = "/api/users/{name}/disable", tag = "admin", operation_id = "disable_user",
    params(UserPath),
    responses((status = 200, description = "the user", body = AnyObject)))]
async fn disable_user(
    _: Admin,
    State(state): State<AppState>,
    Path(UserPath { name }): Path<UserPath>,
) -> Result<Json<cairn::User>, Problem> {
    Ok(Json(state.backend.disable_user(name).await?))
}

/// Sets a user's password; its sessions are revoked.
#[utoipa::path(post, path = "/api/users/{name}/password", tag = "admin", operation_id = "reset_password",
    params(UserPath),
    request_body = NewPassword,
    responses((status = 200, description = "the user", body = AnyObject)))]
async fn reset_password(
    _: Admin,
    State(state): State<AppState>,
    Path(UserPath { name }): Path<UserPath>,
    Typed(body): Typed<NewPassword>,
) -> Result<Json<cairn::User>, Problem> {
    Ok(Json(state.backend.set_password(name, body.password, None).await?))
}

/// Sessions and API keys, never their secrets.
#[utoipa::path(get, path = "/api/tokens", tag = "admin", operation_id = "list_tokens",
    params(TokensParams),
    responses((status = 200, description = "the tokens", body = ItemsDoc)))]
async fn tokens(_: Admin, State(state): State<AppState>, Q(params): Q<TokensParams>) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"items": state.backend.tokens(params.user).await?})))
}

/// Makes an API key; the answer carries it once (`Cache-Control: no-store`).
#[utoipa::path(post, path = "/api/tokens", tag = "admin", operation_id = "create_token",
    request_body = NewKey,
    responses((status = 201, description = "`{\"token\", \"info\"}`", body = AnyObject)))]
async fn create_token(
    _: Admin,
    State(state): State<AppState>,
    Typed(body): Typed<NewKey>,
) -> Result<Response, Problem> {
    let expires_at = match body.expires_days {
        None => None,
        Some(days) if (1..=36_500).contains(&days) => {
            Some(cairn::Timestamp(cairn::Timestamp::now().0 + i64::from(days) * 86_400_000))
        }
        Some(_) => return Err(Problem::invalid("`expires_days` must be 1 to 36500")),
    };
    let scope = |s: &Scope| match s {
        Scope::Read => "read".to_string(),
        Scope::Write => "write".to_string(),
    };
    let scopes = body.scopes.unwrap_or_default().iter().map(scope).collect();
    let options = cairn::ApiKeyOptions { name: body.name, scopes, expires_at };
    let issued = state.backend.create_api_key(body.user, options).await?;
    let mut response =
        (StatusCode::CREATED, Json(json!({"token": issued.secret, "info": issued.info}))).into_response();
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Revokes a token.
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "admin", operation_id = "revoke_token",
    params(TokenPath),
    responses((status = 200, description = "the token, revoked", body = AnyObject)))]
async fn revoke_token(
    _: Admin,
    State(state): State<AppState>,
    Path(TokenPath { id }): Path<TokenPath>,
) -> Result<Json<cairn::TokenInfo>, Problem> {
    Ok(Json(state.backend.revoke_token(id).await?))
}

/// Every setting, typed, with its default and description.
#[utoipa::path(get, path = "/api/settings", tag = "admin", operation_id = "list_settings",
    responses((status = 200, description = "the settings", body = ItemsDoc)))]
async fn settings(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"items": state.backend.settings().await?})))
}

/// Sets one setting (validated against its type).
#[utoipa::path(put, path = "/api/settings/{key}", tag = "admin", operation_id = "set_setting",
    params(SettingPath),
    request_body = SettingValue,
    responses((status = 200, description = "the setting as it is now", body = AnyObject)))]
async fn set_setting(
    _: Admin,
    State(state): State<AppState>,
    Path(SettingPath { key }): Path<SettingPath>,
    Typed(body): Typed<SettingValue>,
) -> Result<Json<cairn::Setting>, Problem> {
    Ok(Json(state.backend.set_setting(key, body.value).await?))
}

/// The audit trail: who did what, when, with what outcome.
#[utoipa::path(get, path = "/api/audit", tag = "admin", operation_id = "audit",
    params(AuditParams),
    responses((status = 200, description = "entries, and the seq to continue after", body = AnyObject)))]
async fn audit(_: Admin, State(state): State<AppState>, Q(params): Q<AuditParams>) -> Result<Json<Value>, Problem> {
    let (after, limit) = (params.after.unwrap_or(0), params.limit.unwrap_or(100));
    let Ok(after) = u64::try_from(after) else {
        return Err(Problem::invalid(format!("after must be a seq (0 or more), not {after}")));
    };
    if limit == 0 || limit > MAX_AUDIT {
        return Err(Problem::invalid(format!("limit must be 1 to {MAX_AUDIT}, not {limit}")));
    }
    let filter = params.filter.filter(|f| !f.trim().is_empty());
    let entries = state.backend.audit_log(filter, after, limit as usize).await?;
    let next = entries.last().map(|e| e.seq);
    Ok(Json(json!({"items": entries, "last_seq": next})))
}

/// Every backup, newest first, with its verified state.
#[utoipa::path(get, path = "/api/backups", tag = "backups", operation_id = "list_backups",
    responses((status = 200, description = "the backups", body = ItemsDoc)))]
async fn backups(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    Ok(Json(json!({"items": state.backend.backups().await?})))
}

/// Takes a backup now (verified before it is listed as good).
#[utoipa::path(post, path = "/api/backups", tag = "backups", operation_id = "take_backup",
    responses((status = 201, description = "the backup", body = AnyObject)))]
async fn backup(_: Admin, State(state): State<AppState>) -> Result<Response, Problem> {
    let info = state.backend.backup().await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// Verifies a backup again.
#[utoipa::path(post, path = "/api/backups/{id}/verify", tag = "backups", operation_id = "verify_backup",
    params(BackupPath),
    responses((status = 200, description = "the backup, verified now", body = AnyObject)))]
async fn verify(
    _: Admin,
    State(state): State<AppState>,
    Path(BackupPath { id }): Path<BackupPath>,
) -> Result<Json<cairn::BackupInfo>, Problem> {
    Ok(Json(state.backend.verify_backup(id).await?))
}

/// Restores from a backup: the whole store (its state now is backed up first; requests wait
/// while it runs), or with `collection` (and `record`) only those records, as new versions.
#[utoipa::path(post, path = "/api/backups/{id}/restore", tag = "backups", operation_id = "restore_backup",
    params(BackupPath),
    request_body = RestoreBody,
    responses((status = 200, description = "what the restore did", body = AnyObject)))]
async fn restore(
    _: Admin,
    Caller(caller): Caller,
    State(state): State<AppState>,
    Path(BackupPath { id }): Path<BackupPath>,
    Typed(body): Typed<RestoreBody>,
) -> Result<Response, Problem> {
    if body.confirm != id {
        return Err(Problem::from(cairn::Error::ConfirmationRequired {
            what: format!("restoring from backup {id}"),
            hint: "confirm with the backup's id".into(),
            token: Some(id),
        }));
    }
    match (body.collection, body.record) {
        (Some(collection), record) => {
            Ok(Json(state.backend.restore_records(caller, id, collection, record).await?).into_response())
        }
        (None, Some(_)) => Err(Problem::invalid("`record` needs `collection`")),
        (None, None) => Ok(Json(state.backend.restore(id).await?).into_response()),
    }
}

/// Everything, as a tar archive of an export folder (`cairn-export/`, which `cairn import`
/// reads once unpacked). The export is made before anything is sent, so bad options are a
/// 400; a failure while writing it cuts the stream short with an error.
#[utoipa::path(post, path = "/api/export", tag = "backups", operation_id = "export",
    request_body = ExportBody,
    responses((status = 200, description = "a tar archive", content_type = "application/x-tar")))]
async fn export(_: Admin, State(state): State<AppState>, Typed(body): Typed<ExportBody>) -> Result<Response, Problem> {
    let options = cairn::ExportOptions {
        blobs: body.blobs.unwrap_or(false),
        redact: body.redact,
        redact_fields: body.redact_fields.unwrap_or_default(),
        secrets: body.secrets.unwrap_or(false),
    };
    let archive = state.backend.export(options).await?;
    let body = crate::stream::written(move |out| archive.write_to(out).map_err(std::io::Error::other));
    let headers = [
        (axum::http::header::CONTENT_TYPE, "application/x-tar"),
        (axum::http::header::CONTENT_DISPOSITION, "attachment; filename=\"cairn-export.tar\""),
        (axum::http::header::CACHE_CONTROL, "no-store"),
    ];
    Ok((headers, body).into_response())
}
