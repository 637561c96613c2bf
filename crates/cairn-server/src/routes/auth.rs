//! Signing in and out. `POST /api/auth/login` takes `{"name", "password"}` and answers a
//! session token (shown once); every other `/api` route needs `Authorization: Bearer
//! <token>` (a session or an API key). A wrong name, a wrong password and a disabled user
//! get the same 401.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn::{Principal, SessionOptions};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Caller, Typed};
use crate::openapi::AnyObject;
use crate::problem::Problem;

/// The routes anyone may call.
pub(crate) fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login))
}

/// The routes for whoever is signed in.
pub(crate) fn signed_in() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me)).routes(routes!(logout)).routes(routes!(change_password))
}

/// Signing in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    name: String,
    password: String,
    /// What signs in (a device, an app): listed with the session.
    label: Option<String>,
}

/// Changing one's own password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    #[schema(min_length = 8, max_length = 256)]
    new_password: String,
}

/// A 401 that says how to authenticate.
fn unauthenticated(detail: impl Into<String>) -> Response {
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Records a signed-in request that was refused (403) in the audit trail: who, what, where.
pub(crate) async fn audit_denied(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let who = request.extensions().get::<Principal>().map(|p| p.user.name.clone());
    let what = format!("{} {}", request.method(), request.uri().path());
    let response = next.run(request).await;
    if response.status() == StatusCode::FORBIDDEN {
        if let Some(who) = who {
            let _ = state.backend.audit(who, "request.denied".into(), what, "denied".into(), String::new()).await;
        }
    }
    response
}

/// Lets a request through only with a token that lets someone in; the [`Principal`] goes into
/// the request's extensions for the handlers.
pub(crate) async fn require(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return unauthenticated("sign in first: send Authorization: Bearer <token> (POST /api/auth/login makes one)");
    };
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).unwrap_or_default();
    if token.is_empty() {
        return unauthenticated("the Authorization header must be `Bearer <token>`");
    }
    match state.backend.authenticate(token.to_string()).await {
        Ok(principal) => {
            let reads = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
            if !reads && !principal.token.may_write() {
                return Problem::new(StatusCode::FORBIDDEN, "forbidden", "this API key may only read (scope `read`)")
                    .into_response();
            }
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) if e.kind() == cairn::ErrorKind::Unauthenticated => unauthenticated(e.to_string()),
        Err(e) => Problem::from(e).into_response(),
    }
}

/// Signs in: a new session token, shown once.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", operation_id = "login",
    request_body = LoginBody,
    responses((status = 200, description = "`{\"token\", \"session\"}`", body = AnyObject)))]
async fn login(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    Typed(body): Typed<LoginBody>,
) -> Result<Response, Problem> {
    let LoginBody { name, password, label } = body;
    let label = label.unwrap_or_default().chars().take(200).collect();
    let options = SessionOptions { label, ..SessionOptions::default() };
    let client = format!("ip:{}", crate::limits::client(&extensions));
    let mut headers = axum::http::HeaderMap::new();
    let decision = state.limits.check(crate::limits::RouteClass::Login, &client);
    if let Some(refused) = crate::limits::answer(&decision, &mut headers) {
        return Ok(refused);
    }
    if let Some(left) = state.limits.locked(&name) {
        return Ok(crate::limits::too_many(state.config.login_lockout_failures, left));
    }
    let result = state.backend.login(name.clone(), password, options).await;
    match &result {
        Ok(_) => state.limits.succeeded(&name),
        Err(e) if e.kind() == cairn::ErrorKind::Unauthenticated => state.limits.failed(&name),
        Err(_) => {}
    }
    let mut response = match result {
        Ok(issued) => {
            let answer = json!({"token": issued.secret, "session": issued.info});
            let mut response = Json(answer).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) if e.kind() == cairn::ErrorKind::Unauthenticated => unauthenticated(e.to_string()),
        Err(e) => return Err(e.into()),
    };
    response.headers_mut().extend(headers);
    Ok(response)
}

/// Who the token lets in: the user and the token.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth", operation_id = "me",
    responses((status = 200, description = "`{\"user\", \"token\"}`", body = AnyObject)))]
async fn me(Caller(principal): Caller) -> Json<Principal> {
    Json(principal)
}

/// Signs out: revokes this token.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", operation_id = "logout",
    responses((status = 204, description = "revoked")))]
async fn logout(State(state): State<AppState>, Caller(principal): Caller) -> Result<StatusCode, Problem> {
    state.backend.revoke_token(principal.token.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes one's own password; every other session is revoked.
#[utoipa::path(post, path = "/api/auth/password", tag = "auth", operation_id = "change_password",
    request_body = PasswordChange,
    responses((status = 200, description = "`{\"user\"}`", body = AnyObject)))]
async fn change_password(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Typed(body): Typed<PasswordChange>,
) -> Result<Response, Problem> {
    let (current, new) = (body.current_password, body.new_password);
    // The current password is checked by signing in with it (the same answer as a wrong
    // login); the session this makes is revoked at once.
    let check = state.backend.login(principal.user.name.clone(), current, SessionOptions::default()).await;
    match check {
        Ok(issued) => {
            state.backend.revoke_token(issued.info.id).await?;
        }
        Err(e) if e.kind() == cairn::ErrorKind::Unauthenticated => {
            return Ok(unauthenticated("the current password is wrong"));
        }
        Err(e) => return Err(e.into()),
    }
    let user = state.backend.set_password(principal.user.name, new, Some(principal.token.id)).await?;
    Ok(Json(json!({"user": user})).into_response())
}
