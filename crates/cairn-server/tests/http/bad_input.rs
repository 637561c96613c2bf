//! Bad input, generated: random bodies (bytes, and JSON of every shape) on every route that
//! takes one, and random query strings on the routes that read them. The server answers each
//! with a 2xx or a precise 4xx problem — never a 5xx, never a panic.

use axum::http::Method;
use cairn_server::ServerConfig;
use proptest::prelude::*;
use serde_json::Value;

use crate::{app, call, Api};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::String),
        prop_oneof![Just("title"), Just("n"), Just("tags"), Just("version"), Just("op"), Just("name"), Just("value")]
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("title".to_string()),
                    Just("n".to_string()),
                    Just("tags".to_string()),
                    Just("op".to_string()),
                    Just("collection".to_string()),
                    Just("body".to_string()),
                    Just("version".to_string()),
                    Just("name".to_string()),
                    Just("password".to_string()),
                    Just("value".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "\\PC{0,60}",
    ]
}

const ROUTES: [(&str, &str); 13] = [
    ("POST", "/api/collections/notes/records"),
    ("PUT", "/api/collections/notes/records/n1"),
    ("PATCH", "/api/collections/notes/records/n1"),
    ("POST", "/api/collections/notes/records/n1/revert"),
    ("POST", "/api/batch"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/password"),
    ("PUT", "/api/settings/backup.keep_last"),
    ("POST", "/api/collections/nope/records"),
    ("POST", "/api/collections"),
    ("PUT", "/api/collections/notes"),
    ("POST", "/api/users"),
    ("POST", "/api/tokens"),
];

fn check(answer: &crate::Answer, what: &str) {
    assert!(answer.status.as_u16() < 500, "{what}: {answer:?}");
    if answer.status.is_client_error() {
        let kind =
            answer.body["type"].as_str().unwrap_or_default().trim_start_matches("urn:cairn:problem:").to_string();
        answer.problem(answer.status.as_u16(), &kind);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn fixture() -> (tempfile::TempDir, Api) {
    let config = ServerConfig {
        rate_write_per_minute: 0,
        rate_read_per_minute: 0,
        rate_login_per_minute: 0,
        ..ServerConfig::default()
    };
    let (tmp, store, api) = app(config);
    store.create_with_id("notes", "n1", serde_json::json!({"title": "t"})).expect("n1");
    (tmp, api)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bodies_get_a_2xx_or_a_precise_4xx(route in 0..ROUTES.len(), body in body(), if_match in proptest::option::of("\\PC{0,6}")) {
        let (_tmp, api) = fixture();
        let (method, uri) = ROUTES[route];
        let method: Method = method.parse().expect("method");
        let mut headers = Vec::new();
        let if_match = if_match.filter(|v| axum::http::HeaderValue::from_str(v).is_ok());
        if let Some(value) = &if_match {
            headers.push(("if-match", value.as_str()));
        }
        let answer = runtime().block_on(call(&api, method, uri, Some(&body), &headers));
        check(&answer, &format!("{uri} with {body:?}"));
    }

    #[test]
    fn random_query_strings_get_a_2xx_or_a_precise_4xx(
        path in prop_oneof![
            Just("/api/collections/notes/records"),
            Just("/api/collections/notes/count"),
            Just("/api/collections/notes/search"),
            Just("/api/changes"),
            Just("/api/audit"),
        ],
        pairs in prop::collection::vec((prop_oneof![
            Just("filter".to_string()), Just("sort".to_string()), Just("limit".to_string()), Just("offset".to_string()),
            Just("cursor".to_string()), Just("fields".to_string()), Just("q".to_string()), Just("since".to_string()),
            Just("after".to_string()), "[a-z]{1,6}",
        ], "\\PC{0,24}"), 0..4),
    ) {
        let (_tmp, api) = fixture();
        let query: String = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", v.bytes().map(|b| format!("%{b:02X}")).collect::<String>()))
            .collect::<Vec<_>>()
            .join("&");
        let uri = format!("{path}?{query}");
        let answer = runtime().block_on(call(&api, Method::GET, &uri, None, &[]));
        check(&answer, &uri);
    }
}
