//! The console's files: served from the binary at the configured path under a strict
//! Content-Security-Policy (no inline script, nothing from elsewhere), or not at all.
//! What it does in a browser is tested by `.ci/console_test.py` (headless Chromium).

use axum::http::Method;
use cairn_server::ServerConfig;

use crate::{app, call_raw};

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy_at_its_path_or_not_at_all() {
    let (_tmp, _store, api) = app(ServerConfig::default());
    let (status, headers, _) = call_raw(&api, Method::GET, "/console", Vec::new(), &[]).await;
    assert_eq!(
        (status.as_u16(), &headers["location"]),
        (308, &"/console/".parse::<axum::http::HeaderValue>().expect("value"))
    );
    for (path, mime, says) in [
        ("/console/", "text/html; charset=utf-8", "<script type=\"module\" src=\"app.js\">"),
        ("/console/app.js", "text/javascript; charset=utf-8", "/api/auth/login"),
        ("/console/style.css", "text/css; charset=utf-8", "prefers-color-scheme"),
    ] {
        let (status, headers, body) = call_raw(&api, Method::GET, path, Vec::new(), &[("authorization", "")]).await;
        assert_eq!((status.as_u16(), headers["content-type"].to_str().expect("type")), (200, mime), "{path}");
        let csp = headers["content-security-policy"].to_str().expect("csp");
        assert!(csp.starts_with("default-src 'self'") && csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "no inline script or style: {csp}");
        assert!(String::from_utf8(body.expect("body")).expect("utf8").contains(says), "{path}");
    }
    let (status, headers, _) = call_raw(&api, Method::GET, "/console/../Cargo.toml", Vec::new(), &[]).await;
    assert_eq!(status, 404, "only its own files");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(call_raw(&api, Method::GET, "/console/secret.js", Vec::new(), &[]).await.0, 404);

    let (_tmp2, _store2, moved) = app(ServerConfig { console_path: "/admin/ui".into(), ..ServerConfig::default() });
    assert_eq!(call_raw(&moved, Method::GET, "/admin/ui/", Vec::new(), &[]).await.0, 200);
    assert_eq!(call_raw(&moved, Method::GET, "/console/", Vec::new(), &[]).await.0, 404);
    let (_tmp3, _store3, off) = app(ServerConfig { console_path: String::new(), ..ServerConfig::default() });
    assert_eq!(call_raw(&off, Method::GET, "/console/", Vec::new(), &[]).await.0, 404, "disabled");
    for bad in ["/api", "/", "console", "/con sole", "/x/{y}"] {
        let config = ServerConfig { console_path: bad.into(), ..ServerConfig::default() };
        assert!(config.validate().is_err(), "{bad:?} refused");
    }
}
