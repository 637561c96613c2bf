//! The HTTP API: every route in-process (`oneshot`, no socket) with its success and its
//! documented errors, each error checked for the problem+json shape; then the server on an
//! ephemeral 127.0.0.1 port with a real client, through shutdown.

mod admin;
mod attachments;
mod auth;
mod bad_input;
mod console;
mod idempotency;
mod jobs;
mod limits;
mod openapi;
mod realtime;
mod realtime_resume;
mod records;
mod rules;
mod served;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use cairn::{CollectionSchema, Store, StoreOptions};
use cairn_server::{Embedded, ServerConfig};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The API in-process, and the admin token its calls carry.
#[derive(Clone, Debug)]
pub struct Api {
    pub router: Router,
    pub token: String,
}

/// A store with a `notes` collection (title required and indexed, n indexed, tags), an
/// admin `root` signed in, and the API over it.
pub fn app(config: ServerConfig) -> (tempfile::TempDir, Store, Api) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store"), StoreOptions::default()).expect("open");
    store
        .create_collection(
            CollectionSchema::from_json(
                r#"{"name": "notes", "fields": [
                    {"name": "title", "type": "text", "required": true, "indexed": true},
                    {"name": "n", "type": "integer", "indexed": true},
                    {"name": "tags", "type": "tags"}]}"#,
                "schema",
            )
            .expect("schema"),
        )
        .expect("collection");
    store.bootstrap_admin("root", "root password").expect("admin");
    let token = store.login("root", "root password", &cairn::SessionOptions::default()).expect("login").secret;
    let router = cairn_server::app(Arc::new(Embedded::new(store.clone())), config);
    (tmp, store, Api { router, token })
}

/// What a call answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Asserts the answer is a problem of `status` and `kind`, with every member RFC 9457 and
    /// this server promise; returns its detail.
    pub fn problem(&self, status: u16, kind: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.headers["content-type"], "application/problem+json", "{self:?}");
        assert_eq!(self.body["type"], format!("urn:cairn:problem:{kind}"), "{self:?}");
        assert_eq!(self.body["status"], status, "{self:?}");
        assert!(self.body["title"].as_str().is_some_and(|t| !t.is_empty()), "{self:?}");
        assert!(self.body["instance"].as_str().is_some_and(|p| p.starts_with('/')), "{self:?}");
        let id = self.body["request_id"].as_str().expect("a request id in every problem");
        assert_eq!(self.headers["x-request-id"], id, "the same id in the header");
        self.body["detail"].as_str().expect("detail").to_string()
    }
}

/// Calls the API in-process as the admin, unless `headers` carry their own `authorization`
/// (an empty one: none at all).
pub async fn call(api: &Api, method: Method, uri: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if !headers.iter().any(|(name, _)| *name == "authorization") {
        request = request.header("authorization", format!("Bearer {}", api.token));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in headers.iter().filter(|(_, value)| !value.is_empty()) {
        request = request.header(*name, *value);
    }
    let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).expect("request");
    let response = api.router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
    Answer { status, headers, body }
}

/// A call with a raw body (none when empty), answered as raw bytes — or the error that cut
/// the answer's body short.
pub async fn call_raw(
    api: &Api,
    method: Method,
    uri: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Result<Vec<u8>, String>) {
    let mut request =
        Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {}", api.token));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Body::from(body)).expect("request");
    let response = api.router.clone().oneshot(request).await.expect("infallible");
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.map(|b| b.to_bytes().to_vec()).map_err(|e| e.to_string());
    (status, headers, bytes)
}
