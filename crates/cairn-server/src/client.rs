//! A small typed client of `cairn serve`'s realtime stream (SSE): what the CLI's
//! `cairn changes --follow --server` and the tests use. [`Follower`] is the part worth
//! reusing: it keeps where the stream has been judged through (the seq and its epoch),
//! reconnects after a dropped connection or a server shutdown — with a fresh ticket, as a
//! browser must — and resumes from there, so its caller sees every event once; a `reset`
//! (the server cannot resume: another history, a log that does not reach) is passed on for
//! the caller to fetch again.

use std::time::Duration;

use cairn::{ResetReason, Seq, WatchEvent};
use serde::Deserialize;
use serde_json::Value;

/// What went wrong talking to a server.
#[derive(Debug)]
pub enum ClientError {
    /// The connection failed or broke.
    Transport(String),
    /// The server refused, with its problem (`application/problem+json`).
    Refused { status: u16, problem: Value },
    /// The server sent something this client cannot read.
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Transport(e) => write!(f, "cannot reach the server: {e}"),
            ClientError::Refused { status, problem } => {
                let detail = problem.get("detail").and_then(Value::as_str).unwrap_or("(no detail)");
                write!(f, "the server answered {status}: {detail}")
            }
            ClientError::Protocol(e) => write!(f, "the server's stream could not be read: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        ClientError::Transport(e.to_string())
    }
}

/// A server and the token to use it with.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: zeroize::Zeroizing<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).field("token", &"***").finish()
    }
}

/// What a stream follows: a collection, one of its records, or its records matching a
/// filter; only some fields, optionally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamQuery {
    pub collection: String,
    pub record: Option<String>,
    pub filter: Option<String>,
    pub fields: Vec<String>,
}

/// One message of a realtime stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The stream is open: its epoch, and the position it starts from.
    Ready { epoch: String, seq: Seq },
    /// A record event.
    Event(WatchEvent),
    /// The server cannot resume: fetch again; events go on after `seq`.
    Reset { reason: ResetReason, seq: Seq, epoch: String },
    /// Nothing happened; the stream has been judged through `seq`.
    Heartbeat { seq: Seq },
    /// The server is shutting down: reconnect after `retry_ms`, from `seq`.
    Shutdown { retry_ms: u64, seq: Seq },
    /// The server ended the stream (`reason`: `unauthenticated`, `unavailable`).
    Closed { reason: String, detail: String },
}

impl Client {
    /// A client of the server at `base` (`http://127.0.0.1:8080`), signed in with `token`.
    pub fn new(base: &str, token: &str) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
        Ok(Client { base: base.trim_end_matches('/').to_string(), token: token.to_string().into(), http })
    }

    async fn refused(response: reqwest::Response) -> ClientError {
        let status = response.status().as_u16();
        let problem = response.json::<Value>().await.unwrap_or(Value::Null);
        ClientError::Refused { status, problem }
    }

    /// A single-use stream ticket (what a browser puts in an EventSource URL).
    pub async fn ticket(&self) -> Result<String, ClientError> {
        let response =
            self.http.post(format!("{}/api/realtime/tickets", self.base)).bearer_auth(&*self.token).send().await?;
        if !response.status().is_success() {
            return Err(Self::refused(response).await);
        }
        let body: Value = response.json().await?;
        body.get("ticket")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| ClientError::Protocol("the ticket answer has no ticket".into()))
    }

    /// Opens a stream of `query` after `since` (a seq and the epoch it belongs to), or from
    /// now; authenticated with a ticket, as a browser would be.
    pub async fn stream(&self, query: &StreamQuery, since: Option<(Seq, &str)>) -> Result<EventStream, ClientError> {
        let mut params: Vec<(&str, String)> = vec![("collection", query.collection.clone())];
        if let Some(record) = &query.record {
            params.push(("record", record.clone()));
        }
        if let Some(filter) = &query.filter {
            params.push(("filter", filter.clone()));
        }
        if !query.fields.is_empty() {
            params.push(("fields", query.fields.join(",")));
        }
        if let Some((seq, epoch)) = since {
            params.push(("since", seq.to_string()));
            params.push(("epoch", epoch.to_string()));
        }
        params.push(("ticket", self.ticket().await?));
        let response = self.http.get(format!("{}/api/realtime", self.base)).query(&params).send().await?;
        if !response.status().is_success() {
            return Err(Self::refused(response).await);
        }
        Ok(EventStream { response, buffer: Vec::new() })
    }
}

/// An open SSE stream.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

#[derive(Deserialize)]
struct Position {
    seq: Seq,
    #[serde(default)]
    epoch: String,
    #[serde(default)]
    retry_ms: u64,
}

#[derive(Deserialize)]
struct Reset {
    reason: ResetReason,
    seq: Seq,
    epoch: String,
}

#[derive(Deserialize)]
struct Closed {
    reason: String,
    #[serde(default)]
    detail: String,
}

impl EventStream {
    /// The next message; `Ok(None)` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, ClientError> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_block(&block)? {
                    return Ok(Some(event));
                }
                continue;
            }
            match self.response.chunk().await? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

/// One SSE block (`event:`, `id:`, `data:` lines): a message, or `None` for a block with no
/// event (a `retry:` hint).
fn parse_block(block: &[u8]) -> Result<Option<StreamEvent>, ClientError> {
    let text = std::str::from_utf8(block).map_err(|_| ClientError::Protocol("a frame is not UTF-8".into()))?;
    let (mut name, mut data) = (None, String::new());
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = Some(value.trim().to_string());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim_start());
        }
    }
    let Some(name) = name else { return Ok(None) };
    let bad = |e: serde_json::Error| ClientError::Protocol(format!("a `{name}` event: {e}"));
    Ok(Some(match name.as_str() {
        "ready" => {
            let p: Position = serde_json::from_str(&data).map_err(bad)?;
            StreamEvent::Ready { epoch: p.epoch, seq: p.seq }
        }
        "heartbeat" => StreamEvent::Heartbeat { seq: serde_json::from_str::<Position>(&data).map_err(bad)?.seq },
        "shutdown" => {
            let p: Position = serde_json::from_str(&data).map_err(bad)?;
            StreamEvent::Shutdown { retry_ms: p.retry_ms, seq: p.seq }
        }
        "reset" => {
            let r: Reset = serde_json::from_str(&data).map_err(bad)?;
            StreamEvent::Reset { reason: r.reason, seq: r.seq, epoch: r.epoch }
        }
        "closed" => {
            let c: Closed = serde_json::from_str(&data).map_err(bad)?;
            StreamEvent::Closed { reason: c.reason, detail: c.detail }
        }
        _ => StreamEvent::Event(serde_json::from_str(&data).map_err(bad)?),
    }))
}

/// Follows a stream across reconnects; see the module docs.
#[derive(Debug)]
pub struct Follower {
    client: Client,
    query: StreamQuery,
    /// Where to resume: the last position and its epoch.
    position: Option<(Seq, String)>,
    stream: Option<EventStream>,
    /// Waits before the next connection attempt.
    backoff: Duration,
    /// The most connection attempts in a row before giving up.
    attempts_left: u32,
}

/// How many connection attempts in a row a [`Follower`] makes before it gives up.
const ATTEMPTS: u32 = 30;

impl Follower {
    /// Follows `query` from `since` (a seq and its epoch), or from now.
    pub fn new(client: Client, query: StreamQuery, since: Option<(Seq, String)>) -> Follower {
        Follower {
            client,
            query,
            position: since,
            stream: None,
            backoff: Duration::from_millis(100),
            attempts_left: ATTEMPTS,
        }
    }

    /// The seq and epoch to resume from: everything up to it was delivered.
    pub fn position(&self) -> Option<(Seq, &str)> {
        self.position.as_ref().map(|(seq, epoch)| (*seq, epoch.as_str()))
    }

    /// Drops the connection (the next call reconnects and resumes), as a network failure
    /// would.
    pub fn disconnect(&mut self) {
        self.stream = None;
    }

    /// The next record event or reset; heartbeats, readiness and shutdowns are handled
    /// here. Fails when the server refuses (a revoked token, a collection that is gone) or
    /// stays unreachable.
    pub async fn next(&mut self) -> Result<StreamEvent, ClientError> {
        loop {
            let stream = match self.stream.as_mut() {
                Some(stream) => stream,
                None => {
                    let since = self.position.as_ref().map(|(seq, epoch)| (*seq, epoch.as_str()));
                    match self.client.stream(&self.query, since).await {
                        Ok(stream) => {
                            self.attempts_left = ATTEMPTS;
                            self.backoff = Duration::from_millis(100);
                            self.stream.insert(stream)
                        }
                        // Unreachable, or busy (too many streams, shutting down): later.
                        Err(ClientError::Transport(_) | ClientError::Refused { status: 429 | 503, .. })
                            if self.attempts_left > 1 =>
                        {
                            self.attempts_left -= 1;
                            tokio::time::sleep(self.backoff).await;
                            self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            let event = match stream.next().await {
                Ok(Some(event)) => event,
                // The connection ended or broke: reconnect from the position.
                Ok(None) | Err(ClientError::Transport(_)) => {
                    self.stream = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let epoch = || self.position.as_ref().map(|p| p.1.clone()).unwrap_or_default();
            match event {
                StreamEvent::Ready { epoch, seq } => {
                    // A stream that resumes starts at its resume point; one that starts
                    // over (a reset follows) says so next.
                    if self.position.is_none() {
                        self.position = Some((seq, epoch));
                    }
                }
                StreamEvent::Heartbeat { seq } => self.position = Some((seq, epoch())),
                StreamEvent::Shutdown { retry_ms, seq } => {
                    self.position = Some((seq, epoch()));
                    self.stream = None;
                    tokio::time::sleep(Duration::from_millis(retry_ms.min(10_000))).await;
                }
                StreamEvent::Event(event) => {
                    self.position = Some((event.seq, epoch()));
                    return Ok(StreamEvent::Event(event));
                }
                StreamEvent::Reset { reason, seq, epoch } => {
                    self.position = Some((seq, epoch.clone()));
                    return Ok(StreamEvent::Reset { reason, seq, epoch });
                }
                StreamEvent::Closed { reason, detail } => {
                    return Err(ClientError::Refused {
                        status: if reason == "unauthenticated" { 401 } else { 503 },
                        problem: serde_json::json!({"detail": detail, "reason": reason}),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_by_their_event_name() {
        let ready =
            parse_block(b"event: ready\nid: 7\ndata: {\"epoch\":\"ab.1\",\"seq\":7,\"heartbeat_ms\":15000}\n\n");
        assert_eq!(ready.expect("ready"), Some(StreamEvent::Ready { epoch: "ab.1".into(), seq: Seq(7) }));
        assert_eq!(parse_block(b"retry: 2000\n\n").expect("retry"), None);
        let reset = parse_block(
            b"event: reset\nid: 3\ndata: {\"type\":\"reset\",\"reason\":\"epoch\",\"seq\":3,\"epoch\":\"ab.2\"}\n\n",
        );
        assert_eq!(
            reset.expect("reset"),
            Some(StreamEvent::Reset { reason: ResetReason::Epoch, seq: Seq(3), epoch: "ab.2".into() })
        );
        assert!(matches!(parse_block(b"event: create\ndata: {\"nope\": 1}\n\n"), Err(ClientError::Protocol(_))));
        assert!(matches!(parse_block(b"event: ready\ndata: not json\n\n"), Err(ClientError::Protocol(_))));
    }
}
