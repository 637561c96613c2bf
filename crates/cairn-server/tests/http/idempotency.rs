//! `Idempotency-Key`: a retried write is answered from the first, marked as replayed; the
//! same key with another body is 422; keys belong to their user.

use axum::http::Method;
use cairn_server::ServerConfig;

use crate::{app, call, Api};

#[tokio::test]
async fn a_retried_create_writes_once_and_replays_the_first_answer() {
    let (_tmp, store, api) = app(ServerConfig::default());
    let uri = "/api/collections/notes/records";
    let key = [("idempotency-key", "create-7f3a")];
    let first = call(&api, Method::POST, uri, Some(r#"{"title": "once"}"#), &key).await;
    assert_eq!(first.status, 201, "{first:?}");
    assert!(!first.headers.contains_key("idempotent-replayed"));
    let again = call(&api, Method::POST, uri, Some(r#"{"title": "once"}"#), &key).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body, "the first answer, byte for byte");
    assert_eq!(again.headers["location"], first.headers["location"]);
    assert_eq!(store.count("notes", None).expect("count"), 1, "written once");

    let other = call(&api, Method::POST, uri, Some(r#"{"title": "changed"}"#), &key).await;
    other.problem(422, "idempotency_key_reused");
    let bad = call(&api, Method::POST, uri, Some(r#"{"title": "x"}"#), &[("idempotency-key", "has space")]).await;
    bad.problem(400, "invalid_input");

    // Another user's key of the same name is another key.
    store.bootstrap_admin("root2", "root2 password").expect("admin 2");
    let token = store.login("root2", "root2 password", &cairn::SessionOptions::default()).expect("login").secret;
    let other_admin = Api { router: api.router.clone(), token };
    let theirs = call(&other_admin, Method::POST, uri, Some(r#"{"title": "once"}"#), &key).await;
    assert!(theirs.status == 201 && !theirs.headers.contains_key("idempotent-replayed"), "{theirs:?}");
    assert_eq!(store.count("notes", None).expect("count"), 2);
}

#[tokio::test]
async fn a_retried_delete_or_patch_is_not_applied_twice() {
    let (_tmp, store, api) = app(ServerConfig::default());
    store.create_with_id("notes", "n1", serde_json::json!({"title": "t", "n": 1})).expect("note");
    let uri = "/api/collections/notes/records/n1";
    let key = [("idempotency-key", "patch-1"), ("if-match", "\"1\"")];
    let first = call(&api, Method::PATCH, uri, Some(r#"{"n": 2}"#), &key).await;
    let again = call(&api, Method::PATCH, uri, Some(r#"{"n": 2}"#), &key).await;
    assert_eq!((first.status.as_u16(), again.status.as_u16()), (200, 200), "{again:?}");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(store.get("notes", "n1").expect("n1").version, 2, "patched once, not refused as stale");

    let key = [("idempotency-key", "delete-1")];
    let first = call(&api, Method::DELETE, uri, None, &key).await;
    let again = call(&api, Method::DELETE, uri, None, &key).await;
    assert_eq!((first.status.as_u16(), again.status.as_u16()), (204, 204));
    assert_eq!(again.headers["etag"], first.headers["etag"]);
    let history = store.history("notes", "n1").expect("history");
    assert_eq!(history.len(), 3, "create, patch, delete: each once");
}
