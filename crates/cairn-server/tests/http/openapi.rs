//! The OpenAPI document: served without a token, OpenAPI 3.1, every route in it once with a
//! unique operation id, the bearer scheme on all but the public routes, the problem as every
//! operation's default answer — and every path in it is a route the server answers.

use axum::http::Method;
use cairn_server::ServerConfig;

use crate::{app, call, call_raw, Api};

#[tokio::test]
async fn the_document_describes_every_route_the_server_answers() {
    let (_tmp, _store, api) = app(ServerConfig::default());
    let doc = call(&api, Method::GET, "/api/openapi.json", None, &[("authorization", "")]).await;
    assert_eq!(doc.status, 200, "served to anyone");
    let doc = doc.body;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    let mut ids = std::collections::BTreeSet::new();
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
            assert!(ids.insert(id.to_string()), "{id} twice");
            assert!(op["responses"]["default"]["content"]["application/problem+json"].is_object(), "{method} {path}");
            let public = ["/health", "/ready", "/metrics", "/api/auth/login"].contains(&path.as_str());
            assert_eq!(op["security"].is_array(), !public, "{method} {path}");
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    assert!(operations.len() >= 45, "{} operations: {operations:?}", operations.len());
    // Each documented operation is routed: the server answers something other than "no route"
    // or "not this method" (a 401 without a token is an answer of the route).
    for (method, path) in &operations {
        let concrete = path.replace("{collection}", "notes").replace("{hash}", &"0".repeat(64)).replace(['{', '}'], "");
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let no_token = Api { token: String::new(), ..api.clone() };
        let (status, _, _) = call_raw(&no_token, method.clone(), &concrete, Vec::new(), &[]).await;
        assert_ne!(status, 405, "{method} {path}");
        if !["/health", "/ready", "/metrics", "/api/auth/login"].contains(&path.as_str()) {
            assert_eq!(status, 401, "{method} {path} is behind the token");
        }
    }
}
