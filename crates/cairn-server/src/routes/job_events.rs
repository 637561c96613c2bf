//! `GET /api/jobs/events`: job changes as Server-Sent Events, for admins — a live job list,
//! a progress bar. Authenticated like the realtime stream (a bearer token, or `?ticket=` for
//! EventSource). Events: `ready`; `job` (the job as it is now, after each change of state or
//! progress); `deleted` (`{"id"}`); `reset` (events were missed, or the store was restored:
//! list the jobs again); `heartbeat`; `shutdown` (with a retry hint) and `closed` (the token
//! stopped letting the caller in) before the stream ends.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use cairn::{ErrorKind, JobEvent, Principal};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::realtime::{authenticate, frame, sse_response, ticket_of};
use super::AppState;
use crate::problem::Problem;

/// How long a stream whose store went away (a restore) keeps listening for it to come back.
const RELISTEN_FOR: Duration = Duration::from_secs(120);

pub(crate) fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// How to authenticate a job event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventParams {
    /// A ticket from `POST /api/realtime/tickets`, instead of an Authorization header.
    #[allow(dead_code)] // read before the rest, to authenticate first
    ticket: Option<String>,
}

/// Job changes as Server-Sent Events (admins).
#[utoipa::path(get, path = "/api/jobs/events", tag = "jobs", operation_id = "job_events",
    params(EventParams),
    responses((status = 200, description = "the stream: `ready`, then `job`, `deleted`, `reset`, `heartbeat`, `shutdown`, `closed`", content_type = "text/event-stream", body = String)))]
async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    pairs: Result<axum::extract::Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let caller = authenticate(&state, &headers, ticket_of(pairs)).await?;
    if caller.user.role != cairn::User::ADMIN_ROLE {
        return Err(Problem::new(StatusCode::FORBIDDEN, "forbidden", "job events are for admins"));
    }
    let permit = state.streams.open(&caller.user.id)?;
    let listening = state.backend.job_events().await?;
    let (frames, body) = mpsc::channel(16);
    tokio::spawn(async move {
        session(state, caller, listening, frames).await;
        drop(permit);
    });
    Ok(sse_response(body))
}

/// Listens again after the store went away, for as long as a restore may take.
async fn relisten(state: &AppState) -> Option<cairn::JobEvents> {
    let deadline = tokio::time::Instant::now() + RELISTEN_FOR;
    loop {
        match state.backend.job_events().await {
            Ok(listening) => return Some(listening),
            Err(e) if e.kind() == ErrorKind::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => return None,
        }
    }
}

async fn session(state: AppState, mut caller: Principal, mut listening: cairn::JobEvents, frames: mpsc::Sender<Bytes>) {
    let retry = state.config.realtime_retry_ms;
    let every = Duration::from_millis(state.config.realtime_heartbeat_ms.max(10));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining = state.draining.subscribe();
    let hello = Bytes::from(format!("retry: {retry}\n\n"));
    let ready = frame("ready", None, &json!({"heartbeat_ms": state.config.realtime_heartbeat_ms}));
    if frames.send(hello).await.is_err() || frames.send(ready).await.is_err() {
        return;
    }
    loop {
        let out = tokio::select! {
            () = async { let _ = draining.wait_for(|d| *d).await; } => {
                let mut bytes = format!("retry: {retry}\n").into_bytes();
                bytes.extend_from_slice(&frame("shutdown", None, &json!({"retry_ms": retry})));
                let _ = frames.send(Bytes::from(bytes)).await;
                return;
            }
            () = frames.closed() => return,
            _ = heartbeat.tick() => match state.backend.recheck(caller.clone()).await {
                Ok(now) => {
                    caller = now;
                    if caller.user.role != cairn::User::ADMIN_ROLE {
                        let _ = frames.send(frame("closed", None, &json!({"reason": "forbidden"}))).await;
                        return;
                    }
                    frame("heartbeat", None, &json!({}))
                }
                Err(e) if e.kind() == ErrorKind::Unauthenticated => {
                    let data = json!({"reason": "unauthenticated", "detail": e.to_string()});
                    let _ = frames.send(frame("closed", None, &data)).await;
                    return;
                }
                // The store is being restored, or busy: the next heartbeat checks again.
                Err(_) => frame("heartbeat", None, &json!({})),
            },
            event = listening.next() => match event {
                JobEvent::Changed(job) => frame("job", None, &json!(job)),
                JobEvent::Deleted(id) => frame("deleted", None, &json!({"id": id})),
                JobEvent::Missed => frame("reset", None, &json!({"reason": "missed"})),
                JobEvent::Closed if *state.draining.borrow() => continue,
                JobEvent::Closed => match relisten(&state).await {
                    Some(again) => {
                        listening = again;
                        frame("reset", None, &json!({"reason": "restored"}))
                    }
                    None => {
                        let _ = frames.send(frame("closed", None, &json!({"reason": "unavailable"}))).await;
                        return;
                    }
                },
            },
        };
        if frames.send(out).await.is_err() {
            return;
        }
    }
}
