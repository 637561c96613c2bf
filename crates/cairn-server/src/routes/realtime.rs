//! Realtime over HTTP (SRV-2): the library's subscriptions (`cairn::Watch`) carried by
//! Server-Sent Events and by WebSocket. The library judges every change for the caller
//! (their rules, grants and filter) and resumes without gaps; this file authenticates,
//! parses, frames, and keeps the connection honest:
//!
//! - **SSE**, `GET /api/realtime?collection=…[&record=|&filter=][&fields=a,b][&since=N&epoch=E]`:
//!   one subscription per stream. Every event's `id:` is a seq: the record events
//!   (`create`, `update`, `delete`, `enter`, `leave`) their change's, `ready` and `heartbeat`
//!   the position the stream has been judged through — so `Last-Event-ID` (or `since`) is
//!   always a point to resume from, with the `epoch` the stream announced in `ready`.
//! - **WebSocket**, `GET /api/realtime/ws`: JSON messages, several subscriptions per socket,
//!   each named by the client: `{"type": "subscribe", "id": "s1", "collection": …, "filter"?,
//!   "record"?, "fields"?, "since"?, "epoch"?}`, `{"type": "unsubscribe", "id": "s1"}`.
//!   Events carry `"sub": "s1"`; refusals are `{"type": "error", "id"?, "problem": {…}}` and
//!   leave the socket open.
//! - **Auth**: `Authorization: Bearer`, or a single-use ticket (`POST /api/realtime/tickets`,
//!   for EventSource, which cannot send headers) as `?ticket=`; a WebSocket may instead send
//!   `{"type": "auth", "token"|"ticket": …}` first. Every heartbeat the token is checked
//!   again: a revoked token ends the stream (`closed`), a changed role is judged from then on.
//! - **Heartbeats** every `realtime_heartbeat_ms` (default 15 s); a live stream is never
//!   timed out for being idle. A client that stops reading is cut off by the connection's
//!   stall guard (`stall.rs`), and its subscription with it.
//! - **Shutdown** sends `shutdown` with a retry hint and the position to resume from, then
//!   ends the stream. A restore ends the store's subscriptions; each stream subscribes again
//!   to the restored store and gets `reset` (the epoch changed).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn::{Epoch, ErrorKind, Principal, ResetReason, Resume, Seq, WatchItem, WatchSpec};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Caller, Q};
use crate::backend::Subscription;
use crate::problem::Problem;
use crate::streams::StreamPermit;

/// The largest WebSocket message a client may send.
const MAX_CLIENT_MESSAGE: usize = 64 << 10;
/// How long a WebSocket has to authenticate with its first message.
const AUTH_WAIT: Duration = Duration::from_secs(10);
/// How long a stream whose store went away (a restore) keeps trying to subscribe again.
const RESUBSCRIBE_FOR: Duration = Duration::from_secs(120);

pub(crate) fn signed_in() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ticket))
}

pub(crate) fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream)).routes(routes!(socket))
}

/// A stream ticket.
#[derive(Debug, Serialize, ToSchema)]
struct TicketDoc {
    /// Put it in the stream's URL as `?ticket=`; good for one connection.
    ticket: String,
    expires_in_seconds: u64,
}

/// A single-use ticket that authenticates one realtime stream (for EventSource, which cannot
/// send an Authorization header).
#[utoipa::path(post, path = "/api/realtime/tickets", tag = "realtime", operation_id = "realtime_ticket",
    responses((status = 201, description = "the ticket", body = TicketDoc)))]
async fn ticket(State(state): State<AppState>, Caller(caller): Caller) -> Result<Response, Problem> {
    let seconds = state.config.realtime_ticket_seconds.clamp(1, cairn::MAX_TICKET_LIFETIME.as_secs());
    let ticket = state.backend.issue_ticket(caller, Duration::from_secs(seconds)).await?;
    let headers = [(header::CACHE_CONTROL, "no-store")];
    Ok((StatusCode::CREATED, headers, Json(json!({"ticket": ticket, "expires_in_seconds": seconds}))).into_response())
}

/// What an SSE stream follows, and from where.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StreamParams {
    /// The collection.
    collection: String,
    /// Only this record.
    record: Option<String>,
    /// Only records matching this filter (cairn's query language).
    filter: Option<String>,
    /// Only these fields of each record, comma-separated.
    fields: Option<String>,
    /// Resume after this seq (`Last-Event-ID` takes precedence); needs `epoch`.
    #[param(minimum = 0)]
    since: Option<i64>,
    /// The epoch the stream announced (`ready`) when `since` was delivered.
    epoch: Option<String>,
    /// A ticket from `POST /api/realtime/tickets`, instead of an Authorization header.
    #[allow(dead_code)] // read before the rest, to authenticate first (see `stream`)
    ticket: Option<String>,
}

/// Realtime events of one collection, record or filter, as Server-Sent Events.
#[utoipa::path(get, path = "/api/realtime", tag = "realtime", operation_id = "realtime_stream",
    params(StreamParams),
    responses((status = 200, description = "the stream: `ready`, then record events, `reset`, `heartbeat`, `shutdown`, `closed`", content_type = "text/event-stream", body = String)))]
async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    pairs: Result<axum::extract::Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    params: Result<Q<StreamParams>, Problem>,
) -> Result<Response, Problem> {
    // Who is asking comes first, as on every route behind a token; then what they ask.
    let caller = authenticate(&state, &headers, ticket_of(pairs)).await?;
    let Q(params) = params?;
    let last_event_id = headers.get("last-event-id").map(|v| {
        v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
            Problem::invalid("Last-Event-ID must be a seq (a whole number) that this server sent as an event id")
        })
    });
    let since = match (last_event_id.transpose()?, params.since) {
        (Some(seq), _) => Some(Seq(seq)),
        (None, Some(since)) if since < 0 => {
            return Err(Problem::invalid(format!("since must be a seq (0 or more), not {since}")))
        }
        (None, since) => since.map(|s| Seq(s as u64)),
    };
    let spec = spec(params.collection, params.record, params.filter, params.fields.map(|f| split_fields(&f)));
    let resume = Resume { since, epoch: params.epoch.as_deref().map(parse_epoch).transpose()? };
    let permit = state.streams.open(&caller.user.id)?;
    let subscription = state.backend.watch(caller.clone(), spec.clone(), resume).await?;
    let (frames, body) = mpsc::channel(16);
    tokio::spawn(async move {
        sse_session(state, caller, spec, subscription, frames).await;
        drop(permit);
    });
    Ok(sse_response(body))
}

/// The `?ticket=` of a stream request, read before anything else about it.
pub(crate) fn ticket_of(
    pairs: Result<axum::extract::Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Option<String> {
    pairs.ok().and_then(|q| q.0.into_iter().find(|(k, _)| k == "ticket").map(|(_, v)| v))
}

/// A Server-Sent Events response carrying the frames its session sends on `body`'s channel.
pub(crate) fn sse_response(body: mpsc::Receiver<Bytes>) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-store"),
        (header::HeaderName::from_static("x-accel-buffering"), "no"),
    ];
    (headers, Body::from_stream(Frames(body))).into_response()
}

/// Realtime events over a WebSocket: JSON messages, several subscriptions per socket.
#[utoipa::path(get, path = "/api/realtime/ws", tag = "realtime", operation_id = "realtime_socket",
    params(SocketParams),
    responses((status = 101, description = "switching to the WebSocket protocol"),
        (status = 426, description = "not a WebSocket upgrade", body = crate::openapi::ProblemDoc, content_type = "application/problem+json")))]
async fn socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    Q(params): Q<SocketParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Problem> {
    let has_credentials = params.ticket.is_some() || headers.contains_key(header::AUTHORIZATION);
    // Credentials may wait for the first message only on a WebSocket; a plain request
    // is answered like any other route: who is asking first.
    let caller = match has_credentials || upgrade.is_err() {
        true => Some(authenticate(&state, &headers, params.ticket).await?),
        false => None,
    };
    let upgrade = upgrade.map_err(|e| {
        Problem::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", format!("this route speaks WebSocket only: {e}"))
    })?;
    let permit = caller.as_ref().map(|c| state.streams.open(&c.user.id)).transpose()?;
    Ok(upgrade.max_message_size(MAX_CLIENT_MESSAGE).max_frame_size(MAX_CLIENT_MESSAGE).on_upgrade(
        move |socket| async move {
            let held = match (caller, permit) {
                (Some(caller), Some(permit)) => Some((caller, permit)),
                _ => None,
            };
            ws_session(state, held, socket).await
        },
    ))
}

/// How a WebSocket authenticates at the upgrade (else: with its first message).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SocketParams {
    /// A ticket from `POST /api/realtime/tickets`.
    ticket: Option<String>,
}

/// Who a stream is for: a ticket, or the Authorization header's token.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    ticket: Option<String>,
) -> Result<Principal, Problem> {
    if let Some(ticket) = ticket {
        return Ok(state.backend.redeem_ticket(ticket).await?);
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "sign in first: send Authorization: Bearer <token>, or ?ticket= from POST /api/realtime/tickets",
        ));
    };
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).unwrap_or_default();
    if token.is_empty() {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the Authorization header must be `Bearer <token>`",
        ));
    }
    Ok(state.backend.authenticate(token.to_string()).await?)
}

fn spec(collection: String, record: Option<String>, filter: Option<String>, fields: Option<Vec<String>>) -> WatchSpec {
    let mut spec = WatchSpec::collection(&collection);
    spec.record = record;
    spec.filter = filter;
    spec.fields = fields;
    spec
}

fn split_fields(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|f| !f.is_empty()).map(String::from).collect()
}

fn parse_epoch(text: &str) -> Result<Epoch, Problem> {
    text.parse::<Epoch>().map_err(Problem::from)
}

/// An item other than a record event as JSON: a reset with its reason (record events are
/// written once by the library, `WatchEvent::to_json`).
fn item_json(item: &WatchItem) -> Value {
    match item {
        WatchItem::Reset { reason, seq, epoch } => {
            json!({"type": "reset", "reason": reason, "seq": seq, "epoch": epoch})
        }
        other => json!({"type": "unknown", "item": format!("{other:?}")}),
    }
}

/// Resets after which the subscription is over.
fn ends(item: &WatchItem) -> bool {
    matches!(item, WatchItem::Reset { reason: ResetReason::CollectionDropped | ResetReason::SchemaChanged, .. })
}

/// What ended a session besides the client.
enum Ending {
    Shutdown,
    /// The caller's token no longer lets them in.
    Unauthenticated(String),
    /// The store could not be followed (it did not come back after a restore, or failed).
    Unavailable(String),
}

/// A caller held to their token: checked again at every heartbeat.
struct Session {
    state: AppState,
    caller: Principal,
    draining: tokio::sync::watch::Receiver<bool>,
}

impl Session {
    fn new(state: AppState, caller: Principal) -> Session {
        let draining = state.draining.subscribe();
        Session { state, caller, draining }
    }

    fn heartbeat(&self) -> tokio::time::Interval {
        let every = Duration::from_millis(self.state.config.realtime_heartbeat_ms.max(10));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    }

    /// Checks the caller's token again, then hands the principal it names now to
    /// `subscriptions` when their role changed.
    async fn recheck(&mut self, subscriptions: &[&dyn Subscription]) -> Result<(), Ending> {
        match self.state.backend.recheck(self.caller.clone()).await {
            Ok(now) => {
                let changed = now.user.role != self.caller.user.role;
                self.caller = now;
                if changed {
                    for subscription in subscriptions {
                        subscription
                            .set_principal(self.caller.clone())
                            .map_err(|e| Ending::Unavailable(e.to_string()))?;
                    }
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Unauthenticated => Err(Ending::Unauthenticated(e.to_string())),
            // The store is being restored, or busy: the next heartbeat checks again.
            Err(_) => Ok(()),
        }
    }

    async fn shutdown(&mut self) {
        let _ = self.draining.wait_for(|d| *d).await;
    }

    /// A new subscription from `resume` (where the old one left off), after its store went
    /// away (a restore): the restored store's epoch differs, so it starts with a reset.
    async fn resubscribe(&self, spec: &WatchSpec, resume: Resume) -> Result<Box<dyn Subscription>, Ending> {
        let deadline = tokio::time::Instant::now() + RESUBSCRIBE_FOR;
        loop {
            match self.state.backend.watch(self.caller.clone(), spec.clone(), resume.clone()).await {
                Ok(subscription) => return Ok(subscription),
                Err(e) if e.kind() == ErrorKind::Unavailable && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(Ending::Unavailable(e.to_string())),
            }
        }
    }

    fn retry_ms(&self) -> u64 {
        self.state.config.realtime_retry_ms
    }
}

/// Where `subscription` left off.
fn resume_point(subscription: &dyn Subscription) -> Resume {
    Resume { since: Some(subscription.position()), epoch: subscription.epoch().parse().ok() }
}

/// The next item of a subscription.
async fn next(subscription: &mut Box<dyn Subscription>) -> Option<cairn::Result<WatchItem>> {
    std::future::poll_fn(|cx| Pin::new(&mut **subscription).poll_next(cx)).await
}

/// What an SSE session does next.
enum Step {
    Send(Bytes),
    Item(Option<cairn::Result<WatchItem>>),
}

/// The most bytes of events an SSE session gathers into one write.
const BATCH_BYTES: usize = 64 << 10;

/// An item's SSE frame: named by its kind (`create`…, `reset`), its seq as the id.
fn item_frame(item: &WatchItem) -> Vec<u8> {
    match item {
        WatchItem::Event(event) => {
            format!("event: {}\nid: {}\ndata: {}\n\n", event.kind.as_str(), event.seq, event.to_json()).into_bytes()
        }
        WatchItem::Reset { seq, .. } => frame("reset", Some(*seq), &item_json(item)).to_vec(),
        other => format!(": {other:?}\n\n").into_bytes(),
    }
}

/// An item as a WebSocket message of subscription `sub`: a record event's JSON (written
/// once for every subscriber it is the same for) with `"sub"` put in front.
fn item_message(item: &WatchItem, sub: &str) -> String {
    let sub = serde_json::to_string(sub).unwrap_or_default();
    match item {
        WatchItem::Event(event) => format!("{{\"sub\":{sub},{}", &event.to_json()[1..]),
        other => {
            let mut message = item_json(other);
            message["sub"] = serde_json::from_str(&sub).unwrap_or_default();
            message.to_string()
        }
    }
}

/// One SSE frame.
pub(crate) fn frame(event: &str, id: Option<Seq>, data: &Value) -> Bytes {
    let id = id.map(|seq| format!("id: {seq}\n")).unwrap_or_default();
    Bytes::from(format!("event: {event}\n{id}data: {data}\n\n"))
}

/// Runs one SSE stream until the client goes, the caller's token stops letting them in,
/// the subscription ends, or the server shuts down.
async fn sse_session(
    state: AppState,
    caller: Principal,
    spec: WatchSpec,
    mut subscription: Box<dyn Subscription>,
    frames: mpsc::Sender<Bytes>,
) {
    let mut session = Session::new(state, caller);
    let mut heartbeat = session.heartbeat();
    let position = subscription.position();
    let ready = json!({"epoch": subscription.epoch(), "seq": position, "heartbeat_ms": session.state.config.realtime_heartbeat_ms});
    let retry = Bytes::from(format!("retry: {}\n\n", session.retry_ms()));
    if frames.send(retry).await.is_err() || frames.send(frame("ready", Some(position), &ready)).await.is_err() {
        return;
    }
    // An item taken while batching that must be handled on its own.
    let mut held = None;
    let ending = loop {
        let step = match held.take() {
            Some(item) => Step::Item(item),
            None => tokio::select! {
                () = session.shutdown() => break Ending::Shutdown,
                () = frames.closed() => return,
                _ = heartbeat.tick() => {
                    if let Err(ending) = session.recheck(&[&*subscription]).await {
                        break ending;
                    }
                    let position = subscription.position();
                    Step::Send(frame("heartbeat", Some(position), &json!({"seq": position})))
                }
                item = next(&mut subscription) => Step::Item(item),
            },
        };
        let out = match step {
            Step::Send(bytes) => bytes,
            // Under load, what is already waiting goes out in one write (up to 64 KiB).
            Step::Item(Some(Ok(mut item))) => {
                let mut batch = Vec::new();
                loop {
                    batch.extend_from_slice(&item_frame(&item));
                    if ends(&item) {
                        let _ = frames.send(Bytes::from(batch)).await;
                        return;
                    }
                    if batch.len() >= BATCH_BYTES {
                        break;
                    }
                    match next(&mut subscription).now_or_never() {
                        Some(Some(Ok(more))) => item = more,
                        Some(other) => {
                            held = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                Bytes::from(batch)
            }
            Step::Item(Some(Err(e))) => break Ending::Unavailable(e.to_string()),
            Step::Item(None) if *session.draining.borrow() => break Ending::Shutdown,
            Step::Item(None) => match session.resubscribe(&spec, resume_point(&*subscription)).await {
                Ok(again) => {
                    subscription = again;
                    continue;
                }
                Err(ending) => break ending,
            },
        };
        if frames.send(out).await.is_err() {
            return;
        }
    };
    let position = subscription.position();
    let last = match ending {
        Ending::Shutdown => {
            let retry = session.retry_ms();
            let data = json!({"retry_ms": retry, "seq": position});
            let mut bytes = format!("retry: {retry}\n").into_bytes();
            bytes.extend_from_slice(&frame("shutdown", Some(position), &data));
            Bytes::from(bytes)
        }
        Ending::Unauthenticated(detail) => {
            frame("closed", None, &json!({"reason": "unauthenticated", "detail": detail}))
        }
        Ending::Unavailable(detail) => frame("closed", None, &json!({"reason": "unavailable", "detail": detail})),
    };
    let _ = frames.send(last).await;
}

/// The body of an SSE response: the frames its session sends.
struct Frames(mpsc::Receiver<Bytes>);

impl futures_core::Stream for Frames {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

/// What a WebSocket client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Auth {
        token: Option<String>,
        ticket: Option<String>,
    },
    Subscribe {
        id: String,
        collection: String,
        record: Option<String>,
        filter: Option<String>,
        fields: Option<Vec<String>>,
        since: Option<u64>,
        epoch: Option<String>,
    },
    Unsubscribe {
        id: String,
    },
}

/// One subscription of a WebSocket.
struct Sub {
    id: String,
    spec: WatchSpec,
    subscription: Box<dyn Subscription>,
}

/// The next item of any of `subs` (the first polled rotates, so none starves): its index and
/// the item. Never ready when there are none.
async fn next_of(subs: &mut [Sub], turn: &mut usize) -> (usize, Option<cairn::Result<WatchItem>>) {
    std::future::poll_fn(|cx| {
        let count = subs.len();
        for k in 0..count {
            let i = (*turn + k) % count;
            if let Poll::Ready(item) = Pin::new(&mut *subs[i].subscription).poll_next(cx) {
                *turn = i + 1;
                return Poll::Ready((i, item));
            }
        }
        Poll::Pending
    })
    .await
}

fn error_message(id: Option<&str>, problem: Problem) -> Value {
    let mut message = json!({"type": "error", "problem": problem.body_value()});
    if let Some(id) = id {
        message["id"] = json!(id);
    }
    message
}

fn positions(subs: &[Sub]) -> Value {
    Value::Object(subs.iter().map(|s| (s.id.clone(), json!(s.subscription.position()))).collect())
}

async fn send(socket: &mut WebSocket, message: &Value) -> bool {
    send_text(socket, message.to_string()).await
}

async fn send_text(socket: &mut WebSocket, text: String) -> bool {
    socket.send(Message::Text(text.into())).await.is_ok()
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

/// The principal of a WebSocket that did not authenticate at the upgrade: its first message
/// must say who it is.
async fn ws_auth(state: &AppState, socket: &mut WebSocket) -> Result<Principal, Problem> {
    let unauthenticated = |detail: &str| Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail);
    let first = tokio::time::timeout(AUTH_WAIT, socket.recv())
        .await
        .map_err(|_| unauthenticated("no auth message came in time"))?;
    let Some(Ok(Message::Text(text))) = first else {
        return Err(unauthenticated("the first message must be {\"type\": \"auth\", \"token\" or \"ticket\": …}"));
    };
    match serde_json::from_str::<ClientMessage>(&text) {
        Ok(ClientMessage::Auth { ticket: Some(ticket), token: None }) => {
            Ok(state.backend.redeem_ticket(ticket).await?)
        }
        Ok(ClientMessage::Auth { token: Some(token), ticket: None }) => Ok(state.backend.authenticate(token).await?),
        _ => Err(unauthenticated("the first message must be {\"type\": \"auth\", \"token\" or \"ticket\": …}")),
    }
}

/// Runs one WebSocket until the client closes it, the caller's token stops letting them in,
/// or the server shuts down.
async fn ws_session(state: AppState, caller: Option<(Principal, StreamPermit)>, mut socket: WebSocket) {
    // The caller, and their stream's place (held until the socket ends).
    let (caller, _permit) = match caller {
        Some(held) => held,
        None => match ws_auth(&state, &mut socket).await {
            Ok(caller) => match state.streams.open(&caller.user.id) {
                Ok(permit) => (caller, permit),
                Err(problem) => {
                    let closed =
                        json!({"type": "closed", "reason": "too_many_streams", "problem": problem.body_value()});
                    let _ = send(&mut socket, &closed).await;
                    return close(&mut socket, 1013, "too many streams").await;
                }
            },
            Err(problem) => {
                let _ = send(
                    &mut socket,
                    &json!({"type": "closed", "reason": "unauthenticated", "problem": problem.body_value()}),
                )
                .await;
                return close(&mut socket, 1008, "unauthenticated").await;
            }
        },
    };
    let mut session = Session::new(state, caller);
    let mut heartbeat = session.heartbeat();
    let mut subs: Vec<Sub> = Vec::new();
    let mut turn = 0;
    let ready = json!({"type": "ready", "user": session.caller.user.name, "heartbeat_ms": session.state.config.realtime_heartbeat_ms});
    if !send(&mut socket, &ready).await {
        return;
    }
    let ending = loop {
        let out = tokio::select! {
            () = session.shutdown() => break Ending::Shutdown,
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => match on_message(&session, &mut subs, &text).await {
                    Some(answer) => answer.to_string(),
                    None => continue,
                },
                Some(Ok(Message::Binary(_))) => error_message(None, Problem::invalid("messages are JSON text, not binary")).to_string(),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
            _ = heartbeat.tick() => {
                let all: Vec<&dyn Subscription> = subs.iter().map(|s| &*s.subscription).collect();
                if let Err(ending) = session.recheck(&all).await {
                    break ending;
                }
                json!({"type": "heartbeat", "positions": positions(&subs)}).to_string()
            }
            (i, item) = next_of(&mut subs, &mut turn), if !subs.is_empty() => match item {
                Some(Ok(item)) => {
                    let message = item_message(&item, &subs[i].id);
                    if ends(&item) {
                        subs.remove(i);
                    }
                    message
                }
                Some(Err(e)) => {
                    let sub = subs.remove(i);
                    error_message(Some(&sub.id), Problem::from(e)).to_string()
                }
                None if *session.draining.borrow() => break Ending::Shutdown,
                None => match session.resubscribe(&subs[i].spec, resume_point(&*subs[i].subscription)).await {
                    Ok(again) => {
                        subs[i].subscription = again;
                        continue;
                    }
                    Err(ending) => break ending,
                },
            },
        };
        if !send_text(&mut socket, out).await {
            return;
        }
    };
    let (message, code, reason) = match ending {
        Ending::Shutdown => (
            json!({"type": "shutdown", "retry_ms": session.retry_ms(), "positions": positions(&subs)}),
            1012,
            "the server is shutting down",
        ),
        Ending::Unauthenticated(detail) => {
            (json!({"type": "closed", "reason": "unauthenticated", "detail": detail}), 1008, "unauthenticated")
        }
        Ending::Unavailable(detail) => {
            (json!({"type": "closed", "reason": "unavailable", "detail": detail}), 1011, "unavailable")
        }
    };
    if send(&mut socket, &message).await {
        close(&mut socket, code, reason).await;
    }
}

/// Handles one client message; the answer to send, if any.
async fn on_message(session: &Session, subs: &mut Vec<Sub>, text: &str) -> Option<Value> {
    let message = match serde_json::from_str::<ClientMessage>(text) {
        Ok(message) => message,
        Err(e) => return Some(error_message(None, Problem::invalid(format!("the message could not be read: {e}")))),
    };
    match message {
        ClientMessage::Auth { .. } => {
            Some(error_message(None, Problem::invalid("this socket is already authenticated")))
        }
        ClientMessage::Unsubscribe { id } => match subs.iter().position(|s| s.id == id) {
            Some(i) => {
                subs.remove(i);
                Some(json!({"type": "unsubscribed", "id": id}))
            }
            None => Some(error_message(
                Some(&id),
                Problem::new(StatusCode::NOT_FOUND, "not_found", format!("no subscription {id:?} on this socket")),
            )),
        },
        ClientMessage::Subscribe { id, collection, record, filter, fields, since, epoch } => {
            if id.is_empty() || id.len() > 64 {
                return Some(error_message(None, Problem::invalid("a subscription id is 1 to 64 characters")));
            }
            if subs.iter().any(|s| s.id == id) {
                let problem = Problem::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("subscription {id:?} already exists on this socket"),
                );
                return Some(error_message(Some(&id), problem));
            }
            let max = session.state.config.realtime_max_subscriptions;
            if subs.len() >= max {
                let problem = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_subscriptions",
                    format!("a socket holds at most {max} subscriptions; unsubscribe from one first"),
                );
                return Some(error_message(Some(&id), problem));
            }
            let epoch = match epoch.as_deref().map(parse_epoch).transpose() {
                Ok(epoch) => epoch,
                Err(problem) => return Some(error_message(Some(&id), problem)),
            };
            let spec = spec(collection, record, filter, fields);
            let resume = Resume { since: since.map(Seq), epoch };
            match session.state.backend.watch(session.caller.clone(), spec.clone(), resume).await {
                Ok(subscription) => {
                    let answer = json!({"type": "subscribed", "id": id, "epoch": subscription.epoch(), "seq": subscription.position()});
                    subs.push(Sub { id, spec, subscription });
                    Some(answer)
                }
                Err(e) => Some(error_message(Some(&id), Problem::from(e))),
            }
        }
    }
}
