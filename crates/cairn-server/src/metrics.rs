//! `/metrics` in Prometheus' text format (SRV-6): request durations by route, method and
//! status, requests in flight, and at each scrape the store's newest seq, write groups and
//! requests (their ratio is the mean group size), free disk and the newest verified backup's
//! age.
//!
//! Recorded through the `metrics` facade into one process-wide Prometheus recorder (a
//! process has one set of counters, however many routers it builds).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::problem::Problem;
use crate::routes::AppState;

/// The process's recorder, installed the first time a router is built. `None` when another
/// recorder was installed first (an embedding application's own): then `/metrics` says so.
pub(crate) fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let recorder = PrometheusBuilder::new().set_buckets(&buckets).ok()?.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Times every routed request, by its route's pattern (never the raw path: ids would make
/// every record a series of its own).
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_string();
    let method = request.method().to_string();
    let in_flight = metrics::gauge!("cairn_http_requests_in_flight");
    in_flight.increment(1.0);
    let started = Instant::now();
    let response = next.run(request).await;
    in_flight.decrement(1.0);
    let status = response.status().as_u16().to_string();
    metrics::histogram!("cairn_http_request_duration_seconds", "route" => route, "method" => method, "status" => status)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Prometheus' text format.
#[utoipa::path(get, path = "/metrics", tag = "health", operation_id = "metrics",
    responses((status = 200, description = "the metrics", content_type = "text/plain")))]
pub(crate) async fn render(State(state): State<AppState>) -> Result<Response, Problem> {
    let Some(handle) = handle() else {
        return Err(Problem::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            "this process records metrics with another recorder; /metrics is not served",
        ));
    };
    let readiness = state.backend.readiness(0, 0).await?;
    let writes = state.backend.write_stats().await?;
    metrics::gauge!("cairn_store_last_seq").set(readiness.last_seq.get() as f64);
    metrics::gauge!("cairn_write_groups").set(writes.groups as f64);
    metrics::gauge!("cairn_write_requests").set(writes.requests as f64);
    if let Some(free) = readiness.disk_free_bytes {
        metrics::gauge!("cairn_disk_free_bytes").set(free as f64);
    }
    if let Some(age) = readiness.backup_age_seconds {
        metrics::gauge!("cairn_backup_age_seconds").set(age as f64);
    }
    handle.run_upkeep();
    let mut response = handle.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(response)
}
