//! The web console (UI-1): static files compiled into the binary (`console/`: plain ES
//! modules, no build step, nothing fetched at run time), served at the configured path under
//! a strict Content-Security-Policy. The console itself only calls the public API.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// What the console's pages may load: only their own files, and the API on this origin.
pub const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
     media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The console's files: name, media type, content.
const FILES: [(&str, &str, &str); 3] = [
    ("index.html", "text/html; charset=utf-8", include_str!("../console/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../console/app.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../console/style.css")),
];

/// The console's routes under `path` (`/console`): the page at `path/`, its files beside it.
pub(crate) fn router<S: Clone + Send + Sync + 'static>(path: &str) -> Router<S> {
    let base = path.trim_end_matches('/').to_string();
    let index = format!("{base}/");
    Router::new()
        .route(&base, get(move || std::future::ready(Redirect::permanent(&index))))
        .route(&format!("{base}/"), get(|| std::future::ready(file("index.html"))))
        .route(&format!("{base}/{{file}}"), get(|Path(name): Path<String>| std::future::ready(file(&name))))
}

fn file(name: &str) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, mime, content)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CONTENT_SECURITY_POLICY, CONSOLE_CSP),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *content,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
