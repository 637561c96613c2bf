//! Errors as `application/problem+json` (RFC 9457).
//!
//! A library error becomes a problem whose `type` is its stable [`cairn::ErrorKind`]
//! (`urn:cairn:problem:not_found`, …) and whose status follows from the kind. Errors from
//! below the handlers — an unknown route, a wrong method, a body over the limit, a timeout,
//! a panic — are rewritten into the same shape by [`normalize`], which also stamps every
//! problem with the request id and the path, so a user can quote one line that finds the log.
//! Internal details (paths, I/O errors, panics) are logged, never sent.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cairn::ErrorKind;
use serde_json::{json, Value};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable name of what went wrong (`not_found`, `conflict`, `precondition_failed`…),
    /// the last part of the problem's `type`.
    pub kind: &'static str,
    /// What was wrong and where.
    pub detail: String,
    /// For a filter that does not parse: the character (not byte) where it went wrong, so a
    /// client can point at it.
    pub position: Option<usize>,
}

impl Problem {
    /// A problem with its own status and kind.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Problem {
        Problem { status, kind, detail: detail.into(), position: None }
    }

    /// Bad input the library never saw: a malformed header, query parameter or body.
    pub fn invalid(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid_input", detail)
    }

    /// A library error. `precondition` is true when the request named the version it expected
    /// (`If-Match`): a conflict is then 412, as HTTP says, rather than 409.
    pub fn from_error(error: &cairn::Error, precondition: bool) -> Problem {
        if let cairn::Error::KeyReused { .. } = error {
            return Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", error.to_string());
        }
        let kind = error.kind();
        let status = match kind {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict if precondition => StatusCode::PRECONDITION_FAILED,
            ErrorKind::AlreadyExists | ErrorKind::Conflict | ErrorKind::NotAllowed => StatusCode::CONFLICT,
            ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::KeyLocked => StatusCode::LOCKED,
            ErrorKind::WrongKey => StatusCode::FORBIDDEN,
            ErrorKind::Locked | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let detail = match kind {
            ErrorKind::Io | ErrorKind::Internal => {
                tracing::error!(error = %error, kind = %kind, "request failed");
                "the server could not complete the request; its log has the details under this request id".to_string()
            }
            _ => error.to_string(),
        };
        let kind = if status == StatusCode::PRECONDITION_FAILED { "precondition_failed" } else { kind.as_str() };
        let position = match error {
            cairn::Error::InvalidFilter { filter, position, .. } => {
                Some(filter.get(..*position).map_or(*position, |s| s.chars().count()))
            }
            _ => None,
        };
        Problem { status, kind, detail, position }
    }
}

impl From<cairn::Error> for Problem {
    fn from(error: cairn::Error) -> Problem {
        Problem::from_error(&error, false)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("urn:cairn:problem:{}", self.kind),
            "title": title(self.status),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(position) = self.position {
            body["position"] = json!(position);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

fn title(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

/// The kind of an error answer that did not come from a handler, by its status.
fn kind_of_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid_input",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_input",
        s if s.is_server_error() => "internal",
        _ => "http_error",
    }
}

/// The largest problem body [`normalize`] reads back to stamp it.
const MAX_PROBLEM_BYTES: usize = 64 << 10;

/// Makes every error answer a problem carrying the request id and the path.
pub async fn normalize(request: Request, next: Next) -> Response {
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let is_problem =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    let (mut parts, body) = response.into_parts();
    let mut problem: Value = if is_problem {
        match axum::body::to_bytes(body, MAX_PROBLEM_BYTES).await.ok().and_then(|b| serde_json::from_slice(&b).ok()) {
            Some(value) => value,
            None => Problem::new(status, "internal", "the error could not be described").body_value(),
        }
    } else {
        // Only the status of an answer from below the handlers is kept: its text may be a
        // library's wording (or a panic message) not meant for clients.
        let detail = match status {
            StatusCode::NOT_FOUND => format!("there is no route {path}"),
            StatusCode::METHOD_NOT_ALLOWED => format!("{path} does not take this method"),
            StatusCode::PAYLOAD_TOO_LARGE => "the request body is over the server's limit".to_string(),
            StatusCode::REQUEST_TIMEOUT => "the request took longer than the server allows".to_string(),
            s if s.is_server_error() => {
                tracing::error!(status = s.as_u16(), "request failed below the handlers");
                "the server could not complete the request; its log has the details under this request id".to_string()
            }
            _ => title(status).to_string(),
        };
        Problem::new(status, kind_of_status(status), detail).body_value()
    };
    if let Some(object) = problem.as_object_mut() {
        object.insert("instance".into(), Value::String(path));
        if let Some(id) = request_id {
            object.insert("request_id".into(), Value::String(id));
        }
    }
    let bytes = serde_json::to_vec(&problem).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

impl Problem {
    /// The problem as JSON (for answers that are not HTTP responses: WebSocket messages).
    pub(crate) fn body_value(self) -> Value {
        json!({
            "type": format!("urn:cairn:problem:{}", self.kind),
            "title": title(self.status),
            "status": self.status.as_u16(),
            "detail": self.detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_a_status_and_a_stable_type() {
        let cases = [
            (
                cairn::Error::NotFound { collection: "c".into(), id: "x".into(), deleted: false },
                false,
                404,
                "not_found",
            ),
            (
                cairn::Error::Conflict { collection: "c".into(), id: "x".into(), expected: 1, actual: 2 },
                false,
                409,
                "conflict",
            ),
            (
                cairn::Error::Conflict { collection: "c".into(), id: "x".into(), expected: 1, actual: 2 },
                true,
                412,
                "precondition_failed",
            ),
            (cairn::Error::invalid_input("body", "not an object"), false, 400, "invalid_input"),
            (cairn::Error::Internal("secret detail".into()), false, 500, "internal"),
        ];
        for (error, precondition, status, kind) in cases {
            let problem = Problem::from_error(&error, precondition);
            assert_eq!((problem.status.as_u16(), problem.kind), (status, kind), "{error}");
        }
        let internal = Problem::from_error(&cairn::Error::Internal("secret detail".into()), false);
        assert!(!internal.detail.contains("secret"), "internal details stay in the log");
    }
}
