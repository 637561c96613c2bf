//! Routes in-process: records, lists, counts, history, changes, collections, health, and
//! every error as a problem.

use axum::http::Method;
use cairn_server::ServerConfig;
use serde_json::json;

use crate::{app, call};

#[tokio::test]
async fn a_record_is_created_read_changed_under_its_version_and_deleted() {
    let (_tmp, _store, api) = app(ServerConfig::default());
    let created =
        call(&api, Method::POST, "/api/collections/notes/records", Some(r#"{"title": "first", "n": 1}"#), &[]).await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.body["id"].as_str().expect("id").to_string();
    assert_eq!(created.headers["location"], format!("/api/collections/notes/records/{id}"));
    assert_eq!(created.headers["etag"], "\"1\"");
    assert_eq!(created.body["body"]["title"], "first");

    let uri = format!("/api/collections/notes/records/{id}");
    let read = call(&api, Method::GET, &uri, None, &[]).await;
    assert_eq!((read.status.as_u16(), &read.headers["etag"]), (200, &"\"1\"".parse().expect("etag")));
    assert_eq!(read.body["body"], created.body["body"]);

    // A write that names a version the record has moved past is refused with 412; the
    // record is unchanged.
    let patched = call(&api, Method::PATCH, &uri, Some(r#"{"n": 2}"#), &[("if-match", "\"1\"")]).await;
    assert_eq!((patched.status.as_u16(), patched.body["version"].as_u64()), (200, Some(2)));
    let stale = call(&api, Method::PATCH, &uri, Some(r#"{"n": 3}"#), &[("if-match", "\"1\"")]).await;
    let detail = stale.problem(412, "precondition_failed");
    assert!(detail.contains(&id), "{detail}");
    let stale = call(&api, Method::PUT, &uri, Some(r#"{"title": "lost"}"#), &[("if-match", "W/\"1\"")]).await;
    stale.problem(412, "precondition_failed");
    assert_eq!(call(&api, Method::GET, &uri, None, &[]).await.body["body"]["n"], 2);

    let replaced = call(&api, Method::PUT, &uri, Some(r#"{"title": "second"}"#), &[("if-match", "\"2\"")]).await;
    assert_eq!((replaced.status.as_u16(), &replaced.body["body"]), (200, &json!({"title": "second"})));
    let history = call(&api, Method::GET, &format!("{uri}/history"), None, &[]).await;
    let versions: Vec<u64> =
        history.body["items"].as_array().expect("items").iter().map(|c| c["version"].as_u64().expect("v")).collect();
    assert_eq!(versions, [1, 2, 3]);

    call(&api, Method::DELETE, &uri, None, &[("if-match", "\"2\"")]).await.problem(412, "precondition_failed");
    let deleted = call(&api, Method::DELETE, &uri, None, &[("if-match", "\"3\"")]).await;
    assert_eq!((deleted.status.as_u16(), &deleted.headers["etag"]), (204, &"\"4\"".parse().expect("etag")));
    let gone = call(&api, Method::GET, &uri, None, &[]).await;
    assert!(gone.problem(404, "not_found").contains(&id));
    let purged = call(&api, Method::POST, &format!("{uri}/purge"), None, &[]).await;
    assert_eq!((purged.status.as_u16(), &purged.body), (200, &json!({"purged_version": 5})));
    call(&api, Method::POST, &format!("{uri}/purge"), None, &[]).await.problem(404, "not_found");
    let live = call(&api, Method::POST, "/api/collections/notes/records", Some(r#"{"title": "live"}"#), &[]).await;
    let live = format!("/api/collections/notes/records/{}/purge", live.body["id"].as_str().expect("id"));
    call(&api, Method::POST, &live, None, &[]).await.problem(409, "not_allowed");

    // A create with a chosen id, and the same id again.
    let named =
        call(&api, Method::POST, "/api/collections/notes/records?id=n-1", Some(r#"{"title": "named"}"#), &[]).await;
    assert_eq!((named.status.as_u16(), named.body["id"].as_str()), (201, Some("n-1")));
    let again =
        call(&api, Method::POST, "/api/collections/notes/records?id=n-1", Some(r#"{"title": "named"}"#), &[]).await;
    again.problem(409, "already_exists");
}

#[tokio::test]
async fn lists_filter_sort_page_by_cursor_and_count() {
    let (_tmp, store, api) = app(ServerConfig::default());
    for n in 0..7 {
        store
            .create_with_id(
                "notes",
                &format!("r{n}"),
                json!({"title": format!("t{n}"), "n": n, "tags": [if n % 2 == 0 { "even" } else { "odd" }]}),
            )
            .expect("create");
    }
    let mut seen = Vec::new();
    let mut uri = "/api/collections/notes/records?filter=n%20%3E%3D%202&sort=-n&limit=2&fields=n".to_string();
    loop {
        let page = call(&api, Method::GET, &uri, None, &[]).await;
        assert_eq!(page.status, 200, "{page:?}");
        for row in page.body["items"].as_array().expect("items") {
            assert!(row["fields"].get("title").is_none(), "only the fields asked for");
            seen.push(row["fields"]["n"].as_u64().expect("n"));
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => {
                uri = format!(
                    "/api/collections/notes/records?filter=n%20%3E%3D%202&sort=-n&limit=2&fields=n&cursor={cursor}"
                )
            }
            None => break,
        }
    }
    assert_eq!(seen, [6, 5, 4, 3, 2]);
    let count = call(&api, Method::GET, "/api/collections/notes/count?filter=tags%20has%20%22even%22", None, &[]).await;
    assert_eq!(count.body, json!({"count": 4}));
    assert_eq!(call(&api, Method::GET, "/api/collections/notes/count", None, &[]).await.body, json!({"count": 7}));

    // Each bad list request says what was wrong.
    let cases = [
        ("/api/collections/notes/records?filter=n%20%3E%3E%202", "filter"),
        ("/api/collections/notes/records?sort=nope", "nope"),
        ("/api/collections/notes/records?limit=abc", "limit"),
        ("/api/collections/notes/records?limit=100000", "limit"),
        ("/api/collections/notes/records?cursor=garbage", "cursor"),
        ("/api/collections/notes/records?colour=red", "colour"),
        ("/api/collections/notes/count?filter=title%20~%20x", "filter"),
    ];
    for (uri, named) in cases {
        let answer = call(&api, Method::GET, uri, None, &[]).await;
        let detail = answer.problem(400, "invalid_input");
        assert!(detail.to_lowercase().contains(named), "{uri}: {detail}");
    }
    call(&api, Method::GET, "/api/collections/nope/records", None, &[]).await.problem(404, "not_found");
    // A filter's problem says where it went wrong, in characters, for a client to point at.
    let answer = call(
        &api,
        Method::GET,
        "/api/collections/notes/records?filter=title%20%3D%20%22%C3%A9%22%20and%20%3E",
        None,
        &[],
    )
    .await;
    answer.problem(400, "invalid_input");
    assert_eq!(answer.body["position"], 16, "{answer:?}");
    let other = call(&api, Method::GET, "/api/collections/notes/records?limit=abc", None, &[]).await;
    assert!(other.body.get("position").is_none(), "only filters have one");
}

#[tokio::test]
async fn bad_requests_are_precise_problems_never_500s() {
    let config = ServerConfig { max_body_bytes: 4096, ..ServerConfig::default() };
    let (_tmp, _store, api) = app(config);
    let records = "/api/collections/notes/records";
    type Case<'a> = (Method, String, Option<String>, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (Method::POST, records.into(), Some("{\"title\": ".into()), vec![], 400, "invalid_input"),
        (Method::POST, records.into(), Some("[1, 2]".into()), vec![], 400, "invalid_input"),
        (Method::POST, records.into(), Some(r#"{"title": 5}"#.into()), vec![], 400, "invalid_input"),
        (Method::POST, records.into(), Some(r#"{"nope": 1}"#.into()), vec![], 400, "invalid_input"),
        (
            Method::POST,
            records.into(),
            Some(format!("{}1{}", "[".repeat(5000), "]".repeat(5000))),
            vec![],
            413,
            "too_large",
        ),
        (
            Method::POST,
            records.into(),
            Some(format!(r#"{{"title": "{}"}}"#, "x".repeat(5000))),
            vec![],
            413,
            "too_large",
        ),
        (Method::POST, format!("{records}?id=../etc"), Some(r#"{"title": "x"}"#.into()), vec![], 400, "invalid_input"),
        (Method::PATCH, format!("{records}/x"), Some("{}".into()), vec![("if-match", "\"v1\"")], 400, "invalid_input"),
        (Method::GET, format!("{records}/missing"), None, vec![], 404, "not_found"),
        (Method::GET, "/api/nothing/here".into(), None, vec![], 404, "not_found"),
        (Method::DELETE, "/api/collections".into(), None, vec![], 405, "method_not_allowed"),
        (Method::GET, "/api/changes?since=-1".into(), None, vec![], 400, "invalid_input"),
        (Method::GET, "/api/changes?limit=0".into(), None, vec![], 400, "invalid_input"),
    ];
    for (method, uri, body, headers, status, kind) in cases {
        let answer = call(&api, method.clone(), &uri, body.as_deref(), &headers).await;
        let detail = answer.problem(status, kind);
        assert!(!detail.is_empty(), "{method} {uri}");
    }
    // A body declared as something else is refused before it is read.
    let mut request =
        axum::http::Request::builder().method(Method::POST).uri(records).header("content-type", "text/plain");
    request =
        request.header("x-request-id", "client-chosen-id").header("authorization", format!("Bearer {}", api.token));
    let response = tower::ServiceExt::oneshot(
        api.router.clone(),
        request.body(axum::body::Body::from("title=x")).expect("request"),
    )
    .await
    .expect("call");
    assert_eq!(response.status(), 415);
    assert_eq!(response.headers()["x-request-id"], "client-chosen-id", "a client's request id is kept");
}

#[tokio::test]
async fn collections_changes_health_and_headers() {
    let (_tmp, store, api) = app(ServerConfig::default());
    let start = store.last_seq().expect("seq");
    store.create_with_id("notes", "a", json!({"title": "a"})).expect("create");
    store.create_with_id("notes", "b", json!({"title": "b"})).expect("create");

    let list = call(&api, Method::GET, "/api/collections", None, &[]).await;
    assert_eq!(list.body["items"][0]["schema"]["name"], "notes");
    assert_eq!(list.body["items"][0]["live_records"], 2);
    assert_eq!(call(&api, Method::GET, "/api/collections/notes", None, &[]).await.body["live_records"], 2);
    call(&api, Method::GET, "/api/collections/nope", None, &[]).await.problem(404, "not_found");

    let changes = call(&api, Method::GET, &format!("/api/changes?since={start}&limit=1"), None, &[]).await;
    assert_eq!(changes.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(changes.body["items"][0]["id"], "a");
    let next = changes.body["last_seq"].as_u64().expect("last_seq");
    let rest = call(&api, Method::GET, &format!("/api/changes?since={next}"), None, &[]).await;
    assert_eq!(rest.body["items"][0]["id"], "b");
    assert_eq!(rest.body["last_seq"], start.get() + 2);

    let health = call(&api, Method::GET, "/health", None, &[]).await;
    assert_eq!((health.status.as_u16(), &health.body["status"]), (200, &json!("alive")));
    let ready = call(&api, Method::GET, "/ready", None, &[]).await;
    assert_eq!(ready.body["status"], "ready", "{ready:?}");
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        assert_eq!(health.headers[name], value, "{name}");
    }
    assert!(health.headers["content-security-policy"].to_str().expect("csp").contains("frame-ancestors 'none'"));
    let id = health.headers["x-request-id"].to_str().expect("id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "a request id is made when the client sends none: {id}");
}

#[tokio::test]
async fn ready_says_why_not() {
    let strict =
        ServerConfig { ready_min_free_bytes: u64::MAX, ready_max_backup_age_seconds: 60, ..ServerConfig::default() };
    let (_tmp, _store, api) = app(strict);
    let answer = call(&api, Method::GET, "/ready", None, &[]).await;
    let detail = answer.problem(503, "not_ready");
    assert!(detail.contains("bytes free") && detail.contains("no verified backup"), "{detail}");

    // A store whose writer has stopped is not ready, whatever else holds.
    let (_tmp, store, api) = app(ServerConfig::default());
    assert_eq!(call(&api, Method::GET, "/ready", None, &[]).await.status, 200);
    store.close().expect("close");
    let detail = call(&api, Method::GET, "/ready", None, &[]).await.problem(503, "not_ready");
    assert!(detail.contains("cannot take a write"), "{detail}");
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let config = ServerConfig { cors_origins: vec!["https://app.example".into()], ..ServerConfig::default() };
    let (_tmp, _store, api) = app(config);
    let preflight = |origin: &'static str| {
        axum::http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/collections/notes/records")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, idempotency-key")
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let allowed = tower::ServiceExt::oneshot(api.router.clone(), preflight("https://app.example")).await.expect("call");
    assert!(allowed.status().is_success(), "{allowed:?}");
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example");
    let allowed_headers = allowed.headers()["access-control-allow-headers"].to_str().expect("text").to_lowercase();
    assert!(allowed_headers.contains("idempotency-key"), "{allowed_headers}");
    let other = tower::ServiceExt::oneshot(api.router.clone(), preflight("https://evil.example")).await.expect("call");
    assert!(!other.headers().contains_key("access-control-allow-origin"), "{other:?}");
    let read = call(&api, Method::GET, "/api/collections", None, &[("origin", "https://app.example")]).await;
    assert_eq!(read.headers["access-control-allow-origin"], "https://app.example");
    assert!(read.headers["access-control-expose-headers"].to_str().expect("text").to_lowercase().contains("etag"));

    let (_tmp, _store, closed) = app(ServerConfig::default());
    let answer = call(&closed, Method::GET, "/api/collections", None, &[("origin", "https://app.example")]).await;
    assert!(!answer.headers.contains_key("access-control-allow-origin"), "no CORS unless configured");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_report_the_store() {
    let (_tmp, _store, api) = app(ServerConfig::default());
    call(&api, Method::POST, "/api/collections/notes/records?id=m1", Some(r#"{"title": "m"}"#), &[]).await;
    call(&api, Method::GET, "/api/collections/notes/records/m1", None, &[]).await;
    call(&api, Method::GET, "/api/collections/notes/records/missing", None, &[]).await;
    let request = axum::http::Request::builder().uri("/metrics").body(axum::body::Body::empty()).expect("request");
    let response = tower::ServiceExt::oneshot(api.router.clone(), request).await.expect("call");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("type").starts_with("text/plain"));
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.expect("body").to_bytes();
    let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
    for needle in [
        r#"cairn_http_request_duration_seconds_count{route="/api/collections/{collection}/records/{id}",method="GET",status="404"}"#,
        r#"route="/api/collections/{collection}/records",method="POST",status="201""#,
        "cairn_http_requests_in_flight",
        "cairn_store_last_seq",
        "cairn_write_groups",
        "cairn_write_requests",
        "cairn_disk_free_bytes",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(!text.contains("m1"), "record ids never become labels");
}
