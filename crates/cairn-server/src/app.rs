//! The router and its layers, outermost first: a request id (kept from the client or made),
//! the Authorization header marked sensitive (never logged),
//! propagated to the response and into the trace span of every log line; security headers;
//! [`normalize`] (every error a problem with the request id); panics caught as 500; a
//! request timeout (408); the body limit; then the routes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::backend::Backend;
use crate::config::ServerConfig;
use crate::problem::normalize;
use crate::routes::{self, AppState, Draining};
use utoipa_axum::router::OpenApiRouter;

/// The whole API over `backend`, ready to be served or called in-process.
pub fn app(backend: Arc<dyn Backend>, config: ServerConfig) -> Router {
    build(backend, config, Arc::new(tokio::sync::watch::Sender::new(false)))
}

/// [`app`] with the flag that shutdown sets.
pub(crate) fn build(backend: Arc<dyn Backend>, config: ServerConfig, draining: Draining) -> Router {
    let timeout = Duration::from_millis(config.request_timeout_ms);
    let cors = cors(&config.cors_origins);
    let body_limit = config.max_body_bytes;
    let limits = Arc::new(crate::limits::Limits::new(&config));
    let streams = Arc::new(crate::streams::Streams::new(&config));
    let state = AppState { backend, config: Arc::new(config), draining, limits, streams, in_flight: Arc::default() };
    let security = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
        (HeaderName::from_static("cross-origin-resource-policy"), "same-origin"),
    ];
    let (routes, doc) = routes(&state).split_for_parts();
    let console = match state.config.console_path.as_str() {
        "" => Router::new(),
        path => crate::console::router(path),
    };
    let doc: Arc<str> = crate::openapi::finish(doc).to_json().unwrap_or_default().into();
    crate::metrics::handle();
    let mut router = routes
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                std::future::ready(([(header::CONTENT_TYPE, "application/json")], doc.to_string()))
            }),
        )
        .route_layer(axum::middleware::from_fn(crate::metrics::track))
        .merge(console)
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(normalize));
    for (name, value) in security {
        router = router.layer(SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value)));
    }
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    let request_id = HeaderName::from_static("x-request-id");
    router
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, header::COOKIE]))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Every documented route: the public ones, then those behind a token (audited when refused,
/// rate limited).
fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let signed_in = OpenApiRouter::new()
        .merge(routes::auth::signed_in())
        .merge(routes::collections::router())
        .merge(routes::records::router())
        .merge(routes::grants::router())
        .merge(routes::attachments::router())
        .merge(routes::changes::router())
        .merge(routes::realtime::signed_in())
        .merge(routes::admin::router())
        .merge(routes::jobs::router())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), routes::auth::audit_denied))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::limits::limit))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), routes::auth::require));
    OpenApiRouter::new()
        .merge(routes::health::router())
        .routes(utoipa_axum::routes!(crate::metrics::render))
        .merge(routes::auth::public())
        .merge(routes::realtime::public())
        .merge(routes::job_events::public())
        .merge(signed_in)
}

/// Browsers may call the API from these origins only (none: no CORS at all).
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> =
        origins.iter().filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()).collect();
    if origins.is_empty() {
        return None;
    }
    let header = |name: &'static str| HeaderName::from_static(name);
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header("idempotency-key"),
                header("x-request-id"),
            ])
            .expose_headers([
                header::ETAG,
                header::LOCATION,
                header::RETRY_AFTER,
                header("x-request-id"),
                header("idempotent-replayed"),
                header("ratelimit-limit"),
                header("ratelimit-remaining"),
                header("ratelimit-reset"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}
