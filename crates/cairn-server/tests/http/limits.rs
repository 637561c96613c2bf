//! Rate limits: a burst of N + k writes gets exactly k 429s with a correct Retry-After;
//! sign-in is limited per client and locks an account after repeated wrong passwords.

use axum::http::Method;
use cairn_server::ServerConfig;
use serde_json::json;

use crate::{app, call};

#[tokio::test]
async fn a_burst_over_the_write_limit_gets_exactly_the_excess_refused() {
    let config = ServerConfig { rate_write_per_minute: 1, rate_write_burst: 4, ..ServerConfig::default() };
    let (_tmp, store, api) = app(config);
    let (mut remaining, mut refused) = (Vec::new(), Vec::new());
    for i in 0..7 {
        let body = json!({"title": format!("t{i}")}).to_string();
        let answer = call(&api, Method::POST, "/api/collections/notes/records", Some(&body), &[]).await;
        match answer.status.as_u16() {
            201 => {
                assert_eq!(answer.headers["ratelimit-limit"], "4");
                remaining.push(answer.headers["ratelimit-remaining"].to_str().expect("header").to_string());
            }
            429 => {
                answer.problem(429, "rate_limited");
                let wait: u64 = answer.headers["retry-after"].to_str().expect("header").parse().expect("seconds");
                assert!((59..=60).contains(&wait), "one write a minute comes back within a minute: {wait}");
                refused.push(wait);
            }
            other => panic!("unexpected {other}: {answer:?}"),
        }
    }
    assert_eq!(remaining, ["3", "2", "1", "0"]);
    assert_eq!(refused.len(), 3, "exactly the excess");
    assert_eq!(store.count("notes", None).expect("count"), 4, "no refused write was made");
    let read = call(&api, Method::GET, "/api/collections/notes/records", None, &[]).await;
    assert_eq!(read.status, 200, "reads have their own budget");
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_account_even_for_the_right_one() {
    let config = ServerConfig {
        login_lockout_failures: 3,
        login_lockout_seconds: 900,
        rate_login_per_minute: 600,
        rate_login_burst: 100,
        ..ServerConfig::default()
    };
    let (_tmp, store, api) = app(config);
    store.create_user("ana", "ana's password", "user").expect("ana");
    store.create_user("bob", "bob's password", "user").expect("bob");
    let login = |name: &str, password: &str| json!({"name": name, "password": password}).to_string();
    for _ in 0..3 {
        let answer =
            call(&api, Method::POST, "/api/auth/login", Some(&login("ana", "guess")), &[("authorization", "")]).await;
        answer.problem(401, "unauthenticated");
    }
    let locked =
        call(&api, Method::POST, "/api/auth/login", Some(&login("ana", "ana's password")), &[("authorization", "")])
            .await;
    locked.problem(429, "rate_limited");
    let wait: u64 = locked.headers["retry-after"].to_str().expect("header").parse().expect("seconds");
    assert!((890..=900).contains(&wait), "{wait}");
    let bob =
        call(&api, Method::POST, "/api/auth/login", Some(&login("bob", "bob's password")), &[("authorization", "")])
            .await;
    assert_eq!(bob.status, 200, "another account is not locked");
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_client() {
    let config = ServerConfig { rate_login_per_minute: 1, rate_login_burst: 2, ..ServerConfig::default() };
    let (_tmp, _store, api) = app(config);
    let body = json!({"name": "root", "password": "root password"}).to_string();
    for _ in 0..2 {
        let answer = call(&api, Method::POST, "/api/auth/login", Some(&body), &[("authorization", "")]).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let answer = call(&api, Method::POST, "/api/auth/login", Some(&body), &[("authorization", "")]).await;
    answer.problem(429, "rate_limited");
    assert!(answer.headers.contains_key("retry-after"));
}
