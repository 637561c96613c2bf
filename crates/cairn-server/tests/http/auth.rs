//! Signing in and out: every `/api` route but login needs a token; one 401 for every failed
//! sign-in; users who are not admins are refused records (403) until rules exist.

use axum::http::Method;
use cairn_server::ServerConfig;
use serde_json::json;

use crate::{app, call, Api};

fn as_token(api: &Api, token: &str) -> Api {
    Api { router: api.router.clone(), token: token.to_string() }
}

#[tokio::test]
async fn every_api_route_needs_a_token_that_lets_someone_in() {
    let (_tmp, _store, api) = app(ServerConfig::default());
    for (header, says) in [
        ("", "sign in first"),
        ("Basic cm9vdDpw", "Bearer"),
        ("Bearer ", "Bearer"),
        ("Bearer cairn_s_0123456789abcdef_forged", "unknown"),
    ] {
        for (method, uri) in [
            (Method::GET, "/api/collections"),
            (Method::GET, "/api/collections/notes/records"),
            (Method::POST, "/api/collections/notes/records"),
            (Method::GET, "/api/changes"),
            (Method::GET, "/api/auth/me"),
        ] {
            let answer = call(&api, method.clone(), uri, None, &[("authorization", header)]).await;
            let detail = answer.problem(401, "unauthenticated");
            assert!(detail.contains(says), "{method} {uri} with {header:?}: {detail}");
            assert_eq!(answer.headers["www-authenticate"], "Bearer");
        }
    }
    for uri in ["/health", "/ready"] {
        assert_eq!(call(&api, Method::GET, uri, None, &[("authorization", "")]).await.status, 200, "{uri}");
    }
}

#[tokio::test]
async fn signing_in_answers_one_401_for_every_failure_and_a_token_on_success() {
    let (_tmp, store, api) = app(ServerConfig::default());
    store.create_user("ana", "ana's password", "user").expect("ana");
    store.create_user("bob", "bob's password", "user").expect("bob");
    store.disable_user("bob").expect("disable");
    let mut details = Vec::new();
    for (name, password) in [("ana", "wrong password"), ("nobody", "ana's password"), ("bob", "bob's password")] {
        let body = json!({"name": name, "password": password}).to_string();
        let answer = call(&api, Method::POST, "/api/auth/login", Some(&body), &[("authorization", "")]).await;
        details.push(answer.problem(401, "unauthenticated"));
    }
    assert!(details.iter().all(|d| d == &details[0]), "{details:?}");

    let body = json!({"name": "ana", "password": "ana's password", "label": "tests"}).to_string();
    let login = call(&api, Method::POST, "/api/auth/login", Some(&body), &[("authorization", "")]).await;
    assert_eq!(login.status, 200, "{login:?}");
    assert_eq!(login.headers["cache-control"], "no-store");
    let token = login.body["token"].as_str().expect("token").to_string();
    assert_eq!(login.body["session"]["name"], "tests");
    let me = call(&as_token(&api, &token), Method::GET, "/api/auth/me", None, &[]).await;
    assert_eq!((me.body["user"]["name"].as_str(), me.body["user"]["role"].as_str()), (Some("ana"), Some("user")));
    assert!(me.body["user"].get("password_hash").is_none());

    for (body, says) in [
        (r#"{"name": "ana"}"#, "password"),
        (r#"{"name": "ana", "password": 5}"#, "string"),
        (r#"{"name": "ana", "password": "x", "admin": true}"#, "admin"),
        ("name=ana", "JSON"),
    ] {
        let answer = call(&api, Method::POST, "/api/auth/login", Some(body), &[("authorization", "")]).await;
        let detail = answer.problem(400, "invalid_input");
        assert!(detail.contains(says), "{body}: {detail}");
    }
}

#[tokio::test]
async fn users_who_are_not_admins_are_refused_where_no_rule_lets_them_and_see_nothing_unshared() {
    let (_tmp, store, api) = app(ServerConfig::default());
    store.create_with_id("notes", "secret", json!({"title": "the admin's"})).expect("note");
    store.create_user("ana", "ana's password", "user").expect("ana");
    let ana =
        as_token(&api, &store.login("ana", "ana's password", &cairn::SessionOptions::default()).expect("login").secret);
    for (method, uri, body) in [
        (Method::GET, "/api/collections", None),
        (Method::POST, "/api/collections/notes/records", Some(r#"{"title": "mine"}"#)),
        (Method::GET, "/api/changes", None),
    ] {
        let answer = call(&ana, method.clone(), uri, body, &[]).await;
        let detail = answer.problem(403, "forbidden");
        assert!(!detail.contains("the admin's"), "{method} {uri}: {detail}");
    }
    // Without rules a collection shows a user only what is shared with them: nothing here.
    for (method, uri) in [
        (Method::GET, "/api/collections/notes/records/secret"),
        (Method::GET, "/api/collections/notes/records/missing"),
        (Method::DELETE, "/api/collections/notes/records/secret"),
    ] {
        let detail = call(&ana, method.clone(), uri, None, &[]).await.problem(404, "not_found");
        assert!(!detail.contains("the admin's"), "{method} {uri}: {detail}");
    }
    let list = call(&ana, Method::GET, "/api/collections/notes/records", None, &[]).await;
    assert_eq!(list.body["items"], json!([]));
    assert_eq!(call(&ana, Method::GET, "/api/collections/notes/count", None, &[]).await.body["count"], 0);
    assert_eq!(store.count("notes", None).expect("count"), 1, "nothing was written");
}

#[tokio::test]
async fn signing_out_and_changing_the_password_revoke_sessions() {
    let (_tmp, store, api) = app(ServerConfig::default());
    store.create_user("ana", "ana's password", "user").expect("ana");
    let options = cairn::SessionOptions::default();
    let here = as_token(&api, &store.login("ana", "ana's password", &options).expect("here").secret);
    let there = as_token(&api, &store.login("ana", "ana's password", &options).expect("there").secret);
    let gone = as_token(&api, &store.login("ana", "ana's password", &options).expect("gone").secret);

    assert_eq!(call(&gone, Method::POST, "/api/auth/logout", None, &[]).await.status, 204);
    call(&gone, Method::GET, "/api/auth/me", None, &[]).await.problem(401, "unauthenticated");

    let wrong = json!({"current_password": "not it", "new_password": "a new password"}).to_string();
    call(&here, Method::POST, "/api/auth/password", Some(&wrong), &[]).await.problem(401, "unauthenticated");
    let short = json!({"current_password": "ana's password", "new_password": "short"}).to_string();
    let detail = call(&here, Method::POST, "/api/auth/password", Some(&short), &[]).await.problem(400, "invalid_input");
    assert!(detail.contains("8 characters"), "{detail}");
    let right = json!({"current_password": "ana's password", "new_password": "a new password"}).to_string();
    let changed = call(&here, Method::POST, "/api/auth/password", Some(&right), &[]).await;
    assert_eq!(changed.status, 200, "{changed:?}");
    assert_eq!(call(&here, Method::GET, "/api/auth/me", None, &[]).await.status, 200, "this session stays");
    call(&there, Method::GET, "/api/auth/me", None, &[]).await.problem(401, "unauthenticated");
    store.login("ana", "a new password", &options).expect("the new password works");
}

#[tokio::test]
async fn an_api_key_scoped_to_read_may_not_write() {
    let (_tmp, store, api) = app(ServerConfig::default());
    let read = cairn::ApiKeyOptions { name: "dashboard".into(), scopes: vec!["read".into()], expires_at: None };
    let key = store.create_api_key("root", &read).expect("read key");
    let reader = as_token(&api, &key.secret);
    assert_eq!(call(&reader, Method::GET, "/api/collections/notes/records", None, &[]).await.status, 200);
    let write = call(&reader, Method::POST, "/api/collections/notes/records", Some(r#"{"title": "x"}"#), &[]).await;
    assert!(write.problem(403, "forbidden").contains("read"));
    assert_eq!(store.count("notes", None).expect("count"), 0);
    let both = cairn::ApiKeyOptions { scopes: vec!["read".into(), "write".into()], ..read.clone() };
    let writer = as_token(&api, &store.create_api_key("root", &both).expect("key").secret);
    assert_eq!(
        call(&writer, Method::POST, "/api/collections/notes/records", Some(r#"{"title": "x"}"#), &[]).await.status,
        201
    );
    let past =
        cairn::ApiKeyOptions { expires_at: Some(cairn::Timestamp(cairn::Timestamp::now().0 - 1000)), ..read.clone() };
    let expired = as_token(&api, &store.create_api_key("root", &past).expect("expired key").secret);
    let detail = call(&expired, Method::GET, "/api/collections", None, &[]).await.problem(401, "unauthenticated");
    assert!(detail.contains("expired"), "{detail}");
    let unknown = cairn::ApiKeyOptions { scopes: vec!["admin".into()], ..read };
    let err = store.create_api_key("root", &unknown).expect_err("unknown scope");
    assert_eq!(err.kind(), cairn::ErrorKind::InvalidInput);
}
