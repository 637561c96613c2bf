//! The routes, one file per resource, and what they share: the state, the JSON body
//! extractor and the version headers.

pub(crate) mod admin;
pub(crate) mod attachments;
pub(crate) mod auth;
pub(crate) mod changes;
pub(crate) mod collections;
pub(crate) mod grants;
pub(crate) mod health;
pub(crate) mod job_events;
pub(crate) mod jobs;
pub(crate) mod realtime;
pub(crate) mod records;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use cairn::Principal;
use serde_json::Value;

use crate::backend::Backend;
use crate::config::ServerConfig;
use crate::problem::Problem;

/// Whether shutdown has begun, and a way to wait for it.
pub(crate) type Draining = Arc<tokio::sync::watch::Sender<bool>>;

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub backend: Arc<dyn Backend>,
    pub config: Arc<ServerConfig>,
    /// True once shutdown began: `/ready` answers 503 so that a balancer stops sending, and
    /// realtime streams send their `shutdown` event and end.
    pub draining: Draining,
    pub limits: Arc<crate::limits::Limits>,
    /// The realtime streams open, per user and in all.
    pub streams: Arc<crate::streams::Streams>,
    /// Idempotency keys whose first request is still running.
    pub in_flight: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// A JSON request body, parsed with the library's rules; a body that is not JSON, or is
/// declared as something else, is a precise 400 or 415.
pub(crate) struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        if let Some(declared) = declared.filter(|d| !is_json(d)) {
            return Err(Problem::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("the body is declared as {declared:?}; this route takes application/json"),
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(e.status(), "too_large", "the request body is over the server's limit")
            } else {
                Problem::invalid(format!("the request body could not be read: {}", e.body_text()))
            }
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|_| Problem::invalid("the request body is not UTF-8"))?;
        cairn::json::parse(text, "request body")
            .map(JsonBody)
            .map_err(|e| Problem::invalid(format!("the request body is not valid JSON: {e}")))
    }
}

/// A JSON request body read into `T`, whose type is also what the OpenAPI document says of
/// it: a member missing, unknown or of the wrong type is a precise 400.
pub(crate) struct Typed<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Typed<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBody(mut body) = JsonBody::from_request(request, state).await?;
        whole_numbers(&mut body);
        serde_json::from_value(body)
            .map(Typed)
            .map_err(|e| Problem::invalid(format!("the request body does not fit this route: {e}")))
    }
}

/// Numbers with no fraction written as decimals (`2.0`) made integers: to JSON they are the
/// same number, and a field that takes a whole number takes either.
fn whole_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15) {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(members) => members.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// A query string read into `T` (unknown parameters refused: a typo is not silently
/// ignored), whose type is also what the OpenAPI document says of it.
pub(crate) struct Q<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Q(q.0))
            .map_err(|e| Problem::invalid(format!("the query string does not fit this route: {}", e.body_text())))
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// Whoever the request's token lets in (set by [`auth::require`]).
pub(crate) struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| Problem::new(axum::http::StatusCode::UNAUTHORIZED, "unauthenticated", "sign in first"))
    }
}

/// A caller with the admin role, for the routes that bypass collection rules (schemas,
/// batches, the change log, settings, audit, backups, users): any other role gets 403.
pub(crate) struct Admin;

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Caller(principal) = Caller::from_request_parts(parts, state).await?;
        if principal.user.role == cairn::User::ADMIN_ROLE {
            Ok(Admin)
        } else {
            Err(Problem::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                format!("role {:?} may not use this route: it is for admins", principal.user.role),
            ))
        }
    }
}

/// The version an `If-Match` header names: `"3"`, `W/"3"` or `3`; `*` names none.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().map_err(|_| Problem::invalid("If-Match is not text"))?.trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    tag.parse::<u64>().map(Some).map_err(|_| {
        Problem::invalid(format!("If-Match {text:?} names no record version (this server's ETags are versions: \"3\")"))
    })
}

/// The ETag of a record version.
pub(crate) fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_reads_versions_and_refuses_the_rest() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_MATCH, HeaderValue::from_str(v).expect("header"));
            if_match(&h)
        };
        assert_eq!(if_match(&HeaderMap::new()).expect("none"), None);
        assert_eq!(with("\"3\"").expect("quoted"), Some(3));
        assert_eq!(with("W/\"4\"").expect("weak"), Some(4));
        assert_eq!(with("5").expect("bare"), Some(5));
        assert_eq!(with("*").expect("any"), None);
        assert!(with("\"abc\"").is_err() && with("\"-1\"").is_err());
        assert!(is_json("application/json; charset=utf-8") && is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
    }

    #[test]
    fn whole_numbers_written_as_decimals_become_integers() {
        let mut body = serde_json::json!({"a": 229.0, "b": [1.5, -3.0], "c": {"d": 1e3}, "e": "2.0"});
        whole_numbers(&mut body);
        assert_eq!(body, serde_json::json!({"a": 229, "b": [1.5, -3], "c": {"d": 1000}, "e": "2.0"}));
        assert!(body["a"].is_i64());
    }
}
