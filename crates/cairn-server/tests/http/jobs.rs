//! `/api/jobs` and `/api/schedules`: admins list, enqueue, inspect, cancel, retry, restart
//! and delete jobs and manage schedules, each error a precise problem; a server given a
//! `[jobs]` configuration runs the jobs (progress visible over HTTP) and keeps running them
//! after a restore.

use std::time::Duration;

use axum::http::Method;
use cairn::{Done, JobContext, JobsConfig, Workers};
use cairn_server::ServerConfig;
use serde_json::json;

use crate::{app, call, Api};

#[tokio::test]
async fn admins_manage_jobs_and_schedules_and_others_are_refused() {
    let (_tmp, store, api) = app(ServerConfig::default());
    let body = json!({"kind": "transcribe", "args": {"file": "a.wav"}, "queue": "media", "priority": 2,
        "tags": ["upload"], "unique": {"by_args": true}})
    .to_string();
    let made = call(&api, Method::POST, "/api/jobs", Some(&body), &[]).await;
    assert_eq!((made.status.as_u16(), &made.body["duplicate"]), (201, &json!(false)), "{made:?}");
    let id = made.body["job"]["id"].as_i64().expect("id");
    assert_eq!(made.body["job"]["created_by"], "root");
    let again = call(&api, Method::POST, "/api/jobs", Some(&body), &[]).await;
    assert_eq!((again.status.as_u16(), &again.body["job"]["id"]), (200, &json!(id)), "a unique job once");
    call(&api, Method::POST, "/api/jobs", Some(r#"{"kind": "other"}"#), &[]).await;

    let list = call(&api, Method::GET, "/api/jobs?state=available&queue=media", None, &[]).await;
    let ids: Vec<i64> =
        list.body["items"].as_array().expect("items").iter().map(|j| j["id"].as_i64().expect("id")).collect();
    assert_eq!(ids, [id]);
    let page = call(&api, Method::GET, "/api/jobs?limit=1", None, &[]).await;
    let next = page.body["next_before_id"].as_i64().expect("a next page");
    let rest = call(&api, Method::GET, &format!("/api/jobs?before_id={next}"), None, &[]).await;
    assert_eq!(rest.body["items"][0]["id"], id, "{rest:?}");
    let stats = call(&api, Method::GET, "/api/jobs/stats", None, &[]).await;
    assert!(stats.body["items"]
        .as_array()
        .expect("queues")
        .iter()
        .any(|q| q["queue"] == "media" && q["available"] == 1));

    let uri = format!("/api/jobs/{id}");
    assert_eq!(call(&api, Method::GET, &uri, None, &[]).await.body["args"]["file"], "a.wav");
    let cancelled = call(&api, Method::POST, &format!("{uri}/cancel"), None, &[]).await;
    assert_eq!(cancelled.body["state"], "cancelled", "{cancelled:?}");
    let retried = call(&api, Method::POST, &format!("{uri}/retry"), None, &[]).await;
    assert_eq!(retried.body["state"], "available", "{retried:?}");
    let restarted = call(&api, Method::POST, &format!("{uri}/restart"), None, &[]).await;
    assert_eq!(restarted.status, 200, "{restarted:?}");
    assert_eq!(call(&api, Method::DELETE, &uri, None, &[]).await.status, 200);
    call(&api, Method::GET, &uri, None, &[]).await.problem(404, "not_found");
    call(&api, Method::POST, &format!("{uri}/cancel"), None, &[]).await.problem(404, "not_found");
    let audited = store
        .audit_log(Some("action in ('job.cancel', 'job.retry', 'job.restart', 'job.delete')"), 0, 100)
        .expect("audit");
    assert!(audited.iter().all(|e| e.actor == "root") && audited.len() >= 4, "{audited:?}");

    // Bad requests.
    call(&api, Method::GET, "/api/jobs?state=sleeping", None, &[]).await.problem(400, "invalid_input");
    call(&api, Method::GET, "/api/jobs?limit=0", None, &[]).await.problem(400, "invalid_input");
    call(&api, Method::POST, "/api/jobs", Some(r#"{"kind": "has space"}"#), &[]).await.problem(400, "invalid_input");
    call(&api, Method::POST, "/api/jobs", Some(r#"{"kind": "k", "max_attempts": 0}"#), &[])
        .await
        .problem(400, "invalid_input");
    call(&api, Method::POST, "/api/jobs", Some(r#"{"kind": "k", "colour": 1}"#), &[])
        .await
        .problem(400, "invalid_input");
    for body in [
        r#"{"kind": "k", "args": [1, 2]}"#,
        r#"{"kind": "k", "unique": [true, null]}"#,
        r#"{"kind": "k", "tags": [""]}"#,
        r#"{"kind": "k", "unique": {"period_seconds": 9223372036854775808}}"#,
    ] {
        call(&api, Method::POST, "/api/jobs", Some(body), &[]).await.problem(400, "invalid_input");
    }
    call(&api, Method::GET, "/api/jobs?before_id=0", None, &[]).await.problem(400, "invalid_input");

    // Schedules.
    let nightly = r#"{"name": "nightly", "cron": "0 2 * * *", "time_zone": "Europe/Berlin", "kind": "report", "catch_up": "all"}"#;
    let added = call(&api, Method::POST, "/api/schedules", Some(nightly), &[]).await;
    assert_eq!((added.status.as_u16(), &added.body["time_zone"]), (201, &json!("Europe/Berlin")), "{added:?}");
    assert!(added.body["next_fire"].as_str().is_some(), "{added:?}");
    call(&api, Method::POST, "/api/schedules", Some(nightly), &[]).await.problem(409, "already_exists");
    let replace = r#"{"name": "nightly", "cron": "0 3 * * *", "kind": "report", "replace": true}"#;
    assert_eq!(call(&api, Method::POST, "/api/schedules", Some(replace), &[]).await.body["cron"], "0 3 * * *");
    let bad = r#"{"name": "bad", "cron": "0 25 * * *", "kind": "report"}"#;
    call(&api, Method::POST, "/api/schedules", Some(bad), &[]).await.problem(400, "invalid_input");
    let run = call(&api, Method::POST, "/api/schedules/nightly/run", None, &[]).await;
    assert_eq!((run.status.as_u16(), &run.body["job"]["kind"]), (201, &json!("report")), "{run:?}");
    let listed = call(&api, Method::GET, "/api/schedules", None, &[]).await;
    assert_eq!(listed.body["items"].as_array().expect("items").len(), 1);
    assert_eq!(call(&api, Method::DELETE, "/api/schedules/nightly", None, &[]).await.status, 200);
    call(&api, Method::DELETE, "/api/schedules/nightly", None, &[]).await.problem(404, "not_found");
    call(&api, Method::POST, "/api/schedules/nightly/run", None, &[]).await.problem(404, "not_found");

    // Someone who is not an admin reaches none of it.
    store.create_user("ana", "ana's password", "user").expect("ana");
    let ana = Api {
        router: api.router.clone(),
        token: store.login("ana", "ana's password", &cairn::SessionOptions::default()).expect("login").secret,
    };
    for (method, uri, body) in [
        (Method::GET, "/api/jobs", None),
        (Method::POST, "/api/jobs", Some(r#"{"kind": "k"}"#)),
        (Method::GET, "/api/jobs/1", None),
        (Method::GET, "/api/schedules", None),
    ] {
        call(&ana, method, uri, body, &[]).await.problem(403, "forbidden");
    }
}

#[tokio::test]
async fn a_server_runs_its_configured_jobs_and_again_after_a_restore() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = cairn::Store::open(tmp.path().join("store"), cairn::StoreOptions::default()).expect("open");
    store.bootstrap_admin("root", "root password").expect("admin");
    let token = store.login("root", "root password", &cairn::SessionOptions::default()).expect("login").secret;
    let backup = store.backup(&cairn::BackupOptions::default(), &mut |_, _, _| {}).expect("backup").id;
    let mut workers = Workers::new();
    workers.register("app.count", |ctx: &JobContext| {
        ctx.progress(50.0, Some("half way"))?;
        Ok(Done::new().result(json!({"counted": ctx.args()["n"]})))
    });
    let config = JobsConfig { lease_seconds: 5, ..JobsConfig::default() };
    let backend = cairn_server::Embedded::new(store).with_jobs(config, workers).expect("jobs");
    let api = Api { router: cairn_server::app(std::sync::Arc::new(backend), ServerConfig::default()), token };

    async fn completed(api: &Api, n: u32) -> serde_json::Value {
        let made = call(
            api,
            Method::POST,
            "/api/jobs",
            Some(&json!({"kind": "app.count", "args": {"n": n}}).to_string()),
            &[],
        )
        .await;
        let uri = format!("/api/jobs/{}", made.body["job"]["id"]);
        for _ in 0..600 {
            let job = call(api, Method::GET, &uri, None, &[]).await.body;
            if job["state"] == "completed" {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {uri} did not complete");
    }
    let job = completed(&api, 7).await;
    assert_eq!((&job["result"]["counted"], &job["progress_message"]), (&json!(7), &json!("half way")), "{job}");
    // The built-in schedules were applied.
    let schedules = call(&api, Method::GET, "/api/schedules", None, &[]).await;
    assert!(schedules.body["items"].as_array().expect("items").iter().any(|s| s["name"] == "cairn.backup"));
    // A restore stops the jobs, replaces the store, and starts them again on the new one.
    let restore = call(
        &api,
        Method::POST,
        &format!("/api/backups/{backup}/restore"),
        Some(&json!({"confirm": backup}).to_string()),
        &[],
    )
    .await;
    assert_eq!(restore.status, 200, "{restore:?}");
    let api = Api { token: api.token.clone(), ..api };
    let after = completed(&api, 8).await;
    assert_eq!(after["result"]["counted"], 8);
}

/// Reads SSE frames from `body` until `done` says enough (at most 30 s); returns (event, data).
async fn sse_until(
    body: &mut axum::body::Body,
    done: impl Fn(&[(String, serde_json::Value)]) -> bool,
) -> Vec<(String, serde_json::Value)> {
    use http_body_util::BodyExt;
    let mut events = Vec::new();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&events) {
        let frame =
            tokio::time::timeout_at(deadline, body.frame()).await.expect("in time").expect("open").expect("frame");
        let Ok(data) = frame.into_data() else { continue };
        text.push_str(std::str::from_utf8(&data).expect("utf8"));
        while let Some((block, rest)) = text.split_once("\n\n") {
            let (mut event, mut payload) = (String::new(), serde_json::Value::Null);
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    payload = serde_json::from_str(d).expect("json data");
                }
            }
            if !event.is_empty() {
                events.push((event, payload));
            }
            text = rest.to_string();
        }
    }
    events
}

#[tokio::test]
async fn admins_follow_jobs_live_and_others_are_refused() {
    use tower::ServiceExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let store = cairn::Store::open(tmp.path().join("store"), cairn::StoreOptions::default()).expect("open");
    store.bootstrap_admin("root", "root password").expect("admin");
    store.create_user("ana", "ana's password", "user").expect("ana");
    let token = store.login("root", "root password", &cairn::SessionOptions::default()).expect("login").secret;
    let ana = store.login("ana", "ana's password", &cairn::SessionOptions::default()).expect("login").secret;
    let mut workers = Workers::new();
    workers.register("app.slow", |ctx: &JobContext| {
        for step in 1..=3 {
            ctx.progress(f64::from(step) * 25.0, Some(&format!("step {step}")))?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Done::new())
    });
    let config = JobsConfig { lease_seconds: 5, ..JobsConfig::default() };
    let backend = cairn_server::Embedded::new(store).with_jobs(config, workers).expect("jobs");
    let api = Api { router: cairn_server::app(std::sync::Arc::new(backend), ServerConfig::default()), token };
    let open = |token: Option<&str>| {
        let mut request = axum::http::Request::builder().uri("/api/jobs/events");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        api.router.clone().oneshot(request.body(axum::body::Body::empty()).expect("request"))
    };
    assert_eq!(open(None).await.expect("answer").status(), 401);
    assert_eq!(open(Some(&ana)).await.expect("answer").status(), 403);
    let response = open(Some(&api.token)).await.expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    sse_until(&mut body, |e| e.iter().any(|(name, _)| name == "ready")).await;
    let made = call(&api, Method::POST, "/api/jobs", Some(r#"{"kind": "app.slow"}"#), &[]).await;
    let id = made.body["job"]["id"].clone();
    let events = sse_until(&mut body, |e| e.iter().any(|(n, j)| n == "job" && j["state"] == "completed")).await;
    let seen: Vec<(String, serde_json::Value)> = events
        .iter()
        .filter(|(n, j)| n == "job" && j["id"] == id)
        .map(|(_, j)| (j["state"].as_str().expect("state").to_string(), j["progress"].clone()))
        .collect();
    let expected = [
        ("available", json!(null)),
        ("running", json!(null)),
        ("running", json!(25.0)),
        ("running", json!(50.0)),
        ("running", json!(75.0)),
        ("completed", json!(100.0)),
    ]
    .map(|(s, p)| (s.to_string(), p));
    assert_eq!(seen, expected, "every change, in order: {events:?}");
    call(&api, Method::DELETE, &format!("/api/jobs/{id}"), None, &[]).await;
    let events = sse_until(&mut body, |e| e.iter().any(|(n, _)| n == "deleted")).await;
    assert_eq!(events.last().map(|(_, d)| d["id"].clone()), Some(id));
}
