//! Realtime over SSE and WebSocket, on an ephemeral 127.0.0.1 port with real clients (the
//! typed SSE client `cairn_server::client`, tokio-tungstenite): events with their seqs as
//! ids, exact resume across dropped and killed connections, resets after a restore, what
//! each caller may see, tickets, token revocation, heartbeats, shutdown, and bad input.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn::{CollectionSchema, Seq, SessionOptions, Store, StoreOptions};
use cairn_server::client::{Client, Follower, StreamEvent, StreamQuery};
use cairn_server::{Embedded, ServerConfig};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A server on an ephemeral port over a store with `notes` (title, n, owner; rules that
/// let each user see their own), an admin `root`, and users `ana` and `bob`.
pub struct Served {
    pub base: String,
    pub address: SocketAddr,
    pub store: Store,
    pub root: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _tmp: tempfile::TempDir,
}

pub fn quick() -> ServerConfig {
    ServerConfig {
        realtime_heartbeat_ms: 100,
        rate_read_per_minute: 0,
        rate_write_per_minute: 0,
        ..ServerConfig::default()
    }
}

fn notes_schema() -> CollectionSchema {
    let schema = r#"{"name": "notes", "fields": [
        {"name": "title", "type": "text"},
        {"name": "n", "type": "integer", "indexed": true},
        {"name": "owner", "type": "text", "indexed": true}],
      "rules": {"list": "owner = @auth.id", "view": "owner = @auth.id", "create": "", "update": "owner = @auth.id",
                "delete": "owner = @auth.id", "owner": "owner"}}"#;
    CollectionSchema::from_json(schema, "schema").expect("schema")
}

impl Served {
    pub async fn start(config: ServerConfig) -> Served {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path().join("store"), StoreOptions::default()).expect("open");
        store.create_collection(notes_schema()).expect("collection");
        store.bootstrap_admin("root", "root password").expect("admin");
        for user in ["ana", "bob"] {
            store.create_user(user, "a good password", "user").expect("user");
        }
        let root = store.login("root", "root password", &SessionOptions::default()).expect("login").secret;
        Served::serve(tmp, store, root, config).await
    }

    /// Serves `store` (kept in `tmp`) on an ephemeral port.
    pub async fn serve(tmp: tempfile::TempDir, store: Store, root: String, config: ServerConfig) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let backend = Arc::new(Embedded::new(store.clone()).with_realtime_buffer(config.realtime_buffer));
        let server = tokio::spawn(cairn_server::serve(listener, backend, config, async move {
            let _ = stopped.await;
        }));
        Served {
            base: format!("http://{address}"),
            address,
            store,
            root,
            stop: Some(stop),
            server: Some(server),
            _tmp: tmp,
        }
    }

    pub fn token(&self, user: &str) -> String {
        self.store.login(user, "a good password", &SessionOptions::default()).expect("login").secret
    }

    pub fn client(&self, token: &str) -> Client {
        Client::new(&self.base, token).expect("client")
    }

    /// Stops the server; returns once it has drained and closed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("joined").expect("served");
        }
    }
}

/// The store's position now, to follow from (the stream itself opens at the first `next`).
fn here(store: &Store) -> Option<(Seq, String)> {
    Some((store.last_seq().expect("seq"), store.epoch().expect("epoch").to_string()))
}

fn notes() -> StreamQuery {
    StreamQuery { collection: "notes".into(), ..StreamQuery::default() }
}

/// The next record event or reset, within 20 s.
async fn next(follower: &mut Follower) -> StreamEvent {
    tokio::time::timeout(Duration::from_secs(20), follower.next()).await.expect("an event in time").expect("event")
}

fn event_id(event: &StreamEvent) -> (String, String, u64) {
    match event {
        StreamEvent::Event(e) => {
            let kind = e.kind.as_str().to_string();
            (kind, e.id.clone(), e.seq.get())
        }
        StreamEvent::Reset { reason, seq, .. } => (format!("reset:{reason:?}"), String::new(), seq.get()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_carry_their_seq_and_a_resumed_stream_misses_nothing() {
    let mut served = Served::start(quick()).await;
    let client = served.client(&served.root);
    let store = served.store.clone();
    let mut follower = Follower::new(client.clone(), notes(), here(&store));
    let first = store.create_with_id("notes", "a", json!({"title": "one", "n": 1})).expect("a");
    assert_eq!(event_id(&next(&mut follower).await), ("create".into(), "a".into(), first.seq.get()));
    let patched = store.patch("notes", "a", json!({"n": 2}), None).expect("patch");
    let StreamEvent::Event(update) = next(&mut follower).await else { panic!() };
    assert_eq!((update.seq, update.changed.clone()), (patched.seq, vec!["n".to_string()]));
    assert_eq!(update.record["n"], json!(2));

    // Dropped by the client; changes meanwhile; the follower resumes where it was.
    follower.disconnect();
    let mut expected = Vec::new();
    for i in 0..5 {
        expected.push(store.create_with_id("notes", &format!("b{i}"), json!({"n": i})).expect("b").seq.get());
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(event_id(&next(&mut follower).await).2);
    }
    assert_eq!(got, expected, "every change once, in order, after the reconnect");

    // A filtered stream of only some fields: records entering and leaving the filter.
    let big = StreamQuery { filter: Some("n >= 10".into()), fields: vec!["n".into()], ..notes() };
    let mut filtered = Follower::new(client.clone(), big, here(&store));
    let probe = store.create_with_id("notes", "probe", json!({"n": 100})).expect("probe");
    let StreamEvent::Event(created) = next(&mut filtered).await else { panic!() };
    assert_eq!(
        (created.seq, created.record.clone()),
        (probe.seq, json!({"n": 100}).as_object().cloned().expect("object"))
    );
    store.patch("notes", "b1", json!({"n": 11}), None).expect("enters");
    store.patch("notes", "b1", json!({"n": 1}), None).expect("leaves");
    let kinds: Vec<String> =
        [next(&mut filtered).await, next(&mut filtered).await].iter().map(|e| event_id(e).0).collect();
    assert_eq!(kinds, ["enter", "leave"]);
    served.stop().await;
}

/// The raw answer to `GET path` (status, content type, JSON body when it is JSON).
async fn get(served: &Served, path: &str, headers: &[(&str, &str)]) -> (u16, String, Value) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", served.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.timeout(Duration::from_secs(20)).send().await.expect("answer");
    let status = response.status().as_u16();
    let kind = response.headers().get("content-type").map(|v| v.to_str().unwrap_or("").to_string()).unwrap_or_default();
    if kind.starts_with("text/event-stream") {
        return (status, kind, Value::Null);
    }
    (status, kind, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_sees_only_what_it_may_and_is_told_of_sharing() {
    let mut served = Served::start(quick()).await;
    let (ana, bob) = (served.token("ana"), served.token("bob"));
    let store = served.store.clone();
    let ana_principal = store.authenticate(&ana).expect("ana");
    let mut bobs = Follower::new(served.client(&bob), notes(), here(&store));
    let ana_writes = |id: &str, body: Value| {
        let (p, id) = (ana_principal.clone(), id.to_string());
        store.as_actor("ana").transaction(move |tx| tx.create_as(&p, "notes", Some(&id), body))
    };
    ana_writes("private", json!({"title": "ana's secret", "n": 1})).expect("private");
    ana_writes("shared", json!({"title": "for bob, later", "n": 1})).expect("shared");
    store.patch("notes", "private", json!({"n": 2}), None).expect("private change");
    let grant =
        store.grant("notes", "shared", &cairn::Grantee::User("bob".into()), cairn::Access::Read).expect("grant");
    store.patch("notes", "shared", json!({"n": 5}), None).expect("shared change");
    store.revoke_grant(&grant.id).expect("revoke");
    store.patch("notes", "shared", json!({"n": 6}), None).expect("private again");
    let bob_principal = store.authenticate(&bob).expect("bob");
    store
        .transaction(move |tx| tx.create_as(&bob_principal, "notes", Some("bobs"), json!({"title": "mine"})))
        .expect("bob's own");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (kind, id, _) = event_id(&next(&mut bobs).await);
        seen.push(format!("{kind} {id}"));
    }
    assert_eq!(seen, ["enter shared", "update shared", "leave shared", "create bobs"], "nothing of ana's private note");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_single_use_and_a_revoked_token_closes_its_stream() {
    let mut served = Served::start(quick()).await;
    let ana = served.token("ana");
    let client = served.client(&ana);
    let ticket = client.ticket().await.expect("ticket");
    let (status, kind, _) = get(&served, &format!("/api/realtime?collection=notes&ticket={ticket}"), &[]).await;
    assert_eq!((status, kind.as_str()), (200, "text/event-stream"));
    let (status, _, problem) = get(&served, &format!("/api/realtime?collection=notes&ticket={ticket}"), &[]).await;
    assert_eq!((status, problem["type"].as_str()), (401, Some("urn:cairn:problem:unauthenticated")), "used up");
    assert!(problem["detail"].as_str().expect("detail").contains("ticket"), "{problem}");

    // A stream opened with the token's ticket ends when the token is revoked.
    let mut stream = client.stream(&notes(), None).await.expect("stream");
    assert!(matches!(stream.next().await.expect("ready"), Some(StreamEvent::Ready { .. })));
    let id = served.store.authenticate(&ana).expect("ana").token.id;
    served.store.revoke_token(&id).expect("revoke");
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.next().await.expect("frame") {
                Some(StreamEvent::Heartbeat { .. }) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("closed in time");
    assert!(matches!(&ended, Some(StreamEvent::Closed { reason, .. }) if reason == "unauthenticated"), "{ended:?}");
    assert_eq!(stream.next().await.expect("end"), None, "and the stream ends");
    let err = client.ticket().await.expect_err("a revoked token gets no ticket");
    assert!(matches!(err, cairn_server::client::ClientError::Refused { status: 401, .. }), "{err}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stream_requests_get_precise_problems() {
    let config = ServerConfig { realtime_ticket_seconds: 1, ..quick() };
    let mut served = Served::start(config).await;
    let bearer = format!("Bearer {}", served.root);
    let auth: &[(&str, &str)] = &[("authorization", &bearer)];
    // (path, headers, status, problem kind, a word of its detail)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        ("/api/realtime?collection=notes".into(), vec![], 401, "unauthenticated", "sign in"),
        ("/api/realtime?collection=nope".into(), auth.to_vec(), 404, "not_found", "nope"),
        ("/api/realtime?collection=notes&filter=n%20%3E".into(), auth.to_vec(), 400, "invalid_input", "filter"),
        ("/api/realtime?collection=notes&filter=nope%20%3D%201".into(), auth.to_vec(), 400, "invalid_input", "nope"),
        ("/api/realtime?collection=notes&fields=title,nope".into(), auth.to_vec(), 400, "invalid_input", "nope"),
        ("/api/realtime?collection=notes&record=a%2Fb".into(), auth.to_vec(), 400, "invalid_input", "id"),
        ("/api/realtime?collection=notes&since=-1".into(), auth.to_vec(), 400, "invalid_input", "since"),
        ("/api/realtime?collection=notes&since=1&epoch=nope".into(), auth.to_vec(), 400, "invalid_input", "epoch"),
        ("/api/realtime?collection=notes&colection=x".into(), auth.to_vec(), 400, "invalid_input", "colection"),
        ("/api/realtime?collection=notes&ticket=cairn_t_made_up".into(), vec![], 401, "unauthenticated", "ticket"),
        (
            "/api/realtime?collection=notes".into(),
            [auth, &[("last-event-id", "soon")]].concat(),
            400,
            "invalid_input",
            "Last-Event-ID",
        ),
        (
            "/api/realtime?collection=notes".into(),
            vec![("authorization", "Basic cm9vdA==")],
            401,
            "unauthenticated",
            "Bearer",
        ),
    ];
    for (path, headers, status, kind, needle) in cases {
        let (got, content_type, problem) = get(&served, &path, &headers).await;
        assert_eq!(got, status, "{path}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{path}");
        assert_eq!(problem["type"], format!("urn:cairn:problem:{kind}"), "{path}: {problem}");
        assert!(problem["detail"].as_str().expect("detail").contains(needle), "{path}: {problem}");
    }
    // An expired ticket.
    let ticket = served.client(&served.root).ticket().await.expect("ticket");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, _, _) = get(&served, &format!("/api/realtime?collection=notes&ticket={ticket}"), &[]).await;
    assert_eq!(status, 401, "expired");
    served.stop().await;
}

/// A WebSocket to the server, authenticated by its first message.
async fn socket(
    served: &Served,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/realtime/ws", served.address)).await.expect("connect");
    send(&mut ws, json!({"type": "auth", "token": token})).await;
    assert_eq!(receive(&mut ws).await["type"], "ready");
    ws
}

async fn send<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, message: Value)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::SinkExt;
    ws.send(Message::Text(message.to_string().into())).await.expect("send");
}

/// The next JSON message that is not a heartbeat (`Value::Null` once the socket closed),
/// within 20 s however many heartbeats come meanwhile.
async fn receive<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next()).await.expect("a message in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).expect("JSON");
                if value["type"] != "heartbeat" {
                    return value;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return json!({"type": "close", "code": frame.map(|f| u16::from(f.code))})
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return Value::Null,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_holds_several_subscriptions_and_refuses_bad_messages_without_closing() {
    let config = ServerConfig { realtime_max_subscriptions: 2, ..quick() };
    let mut served = Served::start(config).await;
    let store = served.store.clone();
    let mut ws = socket(&served, &served.root).await;
    let epoch = store.epoch().expect("epoch").to_string();
    send(&mut ws, json!({"type": "subscribe", "id": "all", "collection": "notes"})).await;
    let subscribed = receive(&mut ws).await;
    assert_eq!((subscribed["type"].as_str(), subscribed["epoch"].as_str()), (Some("subscribed"), Some(epoch.as_str())));
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "big", "collection": "notes", "filter": "n >= 10", "fields": ["n"]}),
    )
    .await;
    assert_eq!(receive(&mut ws).await["type"], "subscribed");

    let bad: Vec<(Value, &str, &str)> = vec![
        (json!({"type": "subscribe", "id": "third", "collection": "notes"}), "too_many_subscriptions", "at most 2"),
        (json!({"type": "subscribe", "id": "all", "collection": "notes"}), "conflict", "already"),
        (json!({"type": "unsubscribe", "id": "ghost"}), "not_found", "ghost"),
        (json!({"type": "dance"}), "invalid_input", "dance"),
        (json!({"type": "subscribe", "id": "x"}), "invalid_input", "collection"),
        (json!({"type": "auth", "token": "again"}), "invalid_input", "already"),
    ];
    for (message, kind, needle) in bad {
        send(&mut ws, message.clone()).await;
        let answer = receive(&mut ws).await;
        assert_eq!(answer["type"], "error", "{message}: {answer}");
        assert_eq!(answer["problem"]["type"], format!("urn:cairn:problem:{kind}"), "{message}: {answer}");
        assert!(answer["problem"]["detail"].as_str().expect("detail").contains(needle), "{message}: {answer}");
    }
    {
        use futures_util::SinkExt;
        ws.send(Message::Text("{not json".into())).await.expect("send");
        assert_eq!(receive(&mut ws).await["problem"]["type"], "urn:cairn:problem:invalid_input");
        ws.send(Message::Binary(vec![1, 2, 3].into())).await.expect("send");
        assert!(receive(&mut ws).await["problem"]["detail"].as_str().expect("detail").contains("binary"));
    }
    send(&mut ws, json!({"type": "unsubscribe", "id": "big"})).await;
    assert_eq!(receive(&mut ws).await, json!({"type": "unsubscribed", "id": "big"}));
    send(&mut ws, json!({"type": "subscribe", "id": "bad", "collection": "nope"})).await;
    let refused = receive(&mut ws).await;
    assert_eq!((refused["id"].as_str(), refused["problem"]["status"].as_u64()), (Some("bad"), Some(404)));
    // With a place free, a subscription is checked for what it says.
    for (message, needle) in [
        (json!({"type": "subscribe", "id": "f", "collection": "notes", "filter": "n >"}), "filter"),
        (json!({"type": "subscribe", "id": "e", "collection": "notes", "since": 1, "epoch": "x"}), "epoch"),
    ] {
        send(&mut ws, message).await;
        let refused = receive(&mut ws).await;
        assert_eq!(refused["problem"]["status"], 400, "{refused}");
        assert!(refused["problem"]["detail"].as_str().expect("detail").contains(needle), "{refused}");
    }
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "big", "collection": "notes", "filter": "n >= 10", "fields": ["n"]}),
    )
    .await;
    assert_eq!(receive(&mut ws).await["type"], "subscribed");

    let record = store.create_with_id("notes", "a", json!({"title": "t", "n": 50})).expect("a");
    let mut events = vec![receive(&mut ws).await, receive(&mut ws).await];
    events.sort_by_key(|e| e["sub"].as_str().map(String::from));
    assert_eq!(events[0]["sub"], "all");
    assert_eq!(events[0]["record"], json!({"title": "t", "n": 50}));
    assert_eq!(events[1]["sub"], "big");
    assert_eq!(events[1]["record"], json!({"n": 50}), "only the fields asked for");
    for event in &events {
        assert_eq!((event["type"].as_str(), event["seq"].as_u64()), (Some("create"), Some(record.seq.get())));
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_must_authenticate_first() {
    let mut served = Served::start(quick()).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/realtime/ws", served.address)).await.expect("connect");
    send(&mut ws, json!({"type": "subscribe", "id": "a", "collection": "notes"})).await;
    let answer = receive(&mut ws).await;
    assert_eq!((answer["type"].as_str(), answer["reason"].as_str()), (Some("closed"), Some("unauthenticated")));
    assert_eq!(receive(&mut ws).await["code"], 1008);
    // With a ticket in the URL instead, it is ready at once; a used ticket is refused at the upgrade.
    let ticket = served.client(&served.root).ticket().await.expect("ticket");
    let url = format!("ws://{}/api/realtime/ws?ticket={ticket}", served.address);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
    assert_eq!(receive(&mut ws).await["type"], "ready");
    let refused = tokio_tungstenite::connect_async(&url).await.expect_err("used ticket");
    assert!(refused.to_string().contains("401"), "{refused}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restore_to_an_earlier_backup_streams_are_reset() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let backup;
    let root;
    {
        let store = Store::open(&dir, StoreOptions::default()).expect("open");
        store.create_collection(notes_schema()).expect("collection");
        store.bootstrap_admin("root", "root password").expect("admin");
        root = store.login("root", "root password", &SessionOptions::default()).expect("login").secret;
        backup = store.backup(&Default::default(), &mut |_, _, _| {}).expect("backup").id;
        for i in 0..3 {
            store.create_with_id("notes", &format!("later{i}"), json!({"n": i})).expect("later");
        }
        store.close().expect("close");
    }
    // The server holds the only handle, as a whole-store restore needs.
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    let since = (store.last_seq().expect("seq"), store.epoch().expect("epoch").to_string());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(cairn_server::serve(listener, Arc::new(Embedded::new(store)), quick(), async move {
        let _ = rx.await;
    }));
    let client = Client::new(&base, &root).expect("client");
    let mut live = client.stream(&notes(), Some((since.0, &since.1))).await.expect("stream");
    assert!(matches!(live.next().await.expect("ready"), Some(StreamEvent::Ready { .. })));

    let http = reqwest::Client::new();
    let restored = http
        .post(format!("{base}/api/backups/{backup}/restore"))
        .bearer_auth(&root)
        .json(&json!({"confirm": backup}))
        .send()
        .await
        .expect("restore");
    assert_eq!(restored.status(), 200, "{:?}", restored.text().await);

    // The open stream is told to start over, in the new epoch…
    let reset = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match live.next().await.expect("frame") {
                Some(StreamEvent::Heartbeat { .. } | StreamEvent::Ready { .. }) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("a reset in time");
    let Some(StreamEvent::Reset { reason, epoch, .. }) = reset else { panic!("{reset:?}") };
    assert_eq!(reason, cairn::ResetReason::Epoch);
    assert_ne!(epoch, since.1, "a new history");
    assert!(epoch.ends_with(".1"), "generation 1: {epoch}");
    // …and so is one that resumes from before the restore, whose seq the restored log reuses.
    let mut resumed = Follower::new(client.clone(), notes(), Some(since.clone()));
    let StreamEvent::Reset { reason, .. } = next(&mut resumed).await else { panic!("a reset") };
    assert_eq!(reason, cairn::ResetReason::Epoch);
    // Then both go on live.
    let created = http
        .post(format!("{base}/api/collections/notes/records?id=fresh"))
        .bearer_auth(&root)
        .json(&json!({"n": 9}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    assert_eq!(event_id(&next(&mut resumed).await).1, "fresh");
    let _ = tx.send(());
    server.await.expect("joined").expect("served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_streams_when_to_come_back_and_they_resume_on_the_next_server() {
    let config = ServerConfig { realtime_retry_ms: 1_500, ..quick() };
    let mut served = Served::start(config.clone()).await;
    let store = served.store.clone();
    let client = served.client(&served.root);
    let mut sse = client.stream(&notes(), None).await.expect("stream");
    let Some(StreamEvent::Ready { epoch, .. }) = sse.next().await.expect("ready") else { panic!("ready first") };
    let mut ws = socket(&served, &served.root).await;
    send(&mut ws, json!({"type": "subscribe", "id": "s", "collection": "notes"})).await;
    assert_eq!(receive(&mut ws).await["type"], "subscribed");
    let before = store.create_with_id("notes", "before", json!({"n": 1})).expect("before");
    assert_eq!(receive(&mut ws).await["seq"], before.seq.get());

    let (stop, server) = (served.stop.take().expect("stop"), served.server.take().expect("server"));
    stop.send(()).expect("signal");
    let mut last = None;
    while let Some(event) =
        tokio::time::timeout(Duration::from_secs(20), sse.next()).await.expect("in time").expect("frame")
    {
        last = Some(event);
    }
    let Some(StreamEvent::Shutdown { retry_ms, seq }) = last else { panic!("shutdown last: {last:?}") };
    assert_eq!((retry_ms, seq), (1_500, before.seq), "the retry hint and where to resume");
    let message = receive(&mut ws).await;
    assert_eq!((message["type"].as_str(), message["retry_ms"].as_u64()), (Some("shutdown"), Some(1_500)));
    assert_eq!(message["positions"]["s"], before.seq.get());
    assert_eq!(receive(&mut ws).await["code"], 1012, "closed as a service restart");
    server.await.expect("joined").expect("served");

    // Changes while no server runs; a new server; the stream resumes and misses nothing.
    let dir = store.dir().to_path_buf();
    let Served { store: closed, _tmp: tmp, root, .. } = served;
    drop((store, closed));
    let store = Store::open(&dir, StoreOptions::default()).expect("reopen");
    let offline = store.create_with_id("notes", "offline", json!({"n": 2})).expect("offline");
    let mut next_server = Served::serve(tmp, store, root, config).await;
    let mut follower = Follower::new(next_server.client(&next_server.root), notes(), Some((seq, epoch)));
    assert_eq!(event_id(&next(&mut follower).await), ("create".into(), "offline".into(), offline.seq.get()));
    next_server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_stream_gets_heartbeats_and_stays_open_for_ten_minutes() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store"), StoreOptions::default()).expect("open");
    store.create_collection(notes_schema()).expect("collection");
    store.bootstrap_admin("root", "root password").expect("admin");
    let token = store.login("root", "root password", &SessionOptions::default()).expect("login").secret;
    // The default heartbeat (15 s) and request timeout (30 s); the clock is tokio's, paused
    // and advanced only when everything waits.
    let router = cairn_server::app(Arc::new(Embedded::new(store.clone())), ServerConfig::default());
    let request = axum::http::Request::get("/api/realtime?collection=notes")
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .expect("request");
    let response = router.oneshot(request).await.expect("answer");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let started = tokio::time::Instant::now();
    let mut heartbeats = 0;
    while started.elapsed() < Duration::from_secs(600) {
        let frame = tokio::time::timeout(Duration::from_secs(16), body.frame()).await.expect("a frame within 16 s");
        let data = frame.expect("the stream is open").expect("frame").into_data().expect("data");
        let text = String::from_utf8(data.to_vec()).expect("text");
        if text.starts_with("event: heartbeat") {
            heartbeats += 1;
            assert!(text.contains("\nid: "), "a heartbeat carries the position: {text}");
        }
    }
    assert!((39..=41).contains(&heartbeats), "one every 15 s for 10 minutes: {heartbeats}");
    // Still live after the idle ten minutes.
    let record = store.create_with_id("notes", "late", json!({"n": 1})).expect("late");
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(16), body.frame()).await.expect("in time");
        let text =
            String::from_utf8(frame.expect("open").expect("frame").into_data().expect("data").to_vec()).expect("text");
        if text.starts_with("event: create") {
            assert!(text.contains(&format!("id: {}\n", record.seq)), "{text}");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_may_hold_only_so_many_streams_and_closing_one_frees_its_place() {
    let config = ServerConfig { realtime_max_streams_per_user: 2, ..quick() };
    let mut served = Served::start(config).await;
    let (ana, bob) = (served.token("ana"), served.token("bob"));
    let client = served.client(&ana);
    let first = client.stream(&notes(), None).await.expect("first");
    let _second = client.stream(&notes(), None).await.expect("second");
    let err = client.stream(&notes(), None).await.expect_err("a third");
    let cairn_server::client::ClientError::Refused { status, problem } = err else { panic!("{err}") };
    assert_eq!((status, problem["type"].as_str()), (429, Some("urn:cairn:problem:too_many_streams")));
    // A WebSocket counts too, whether it signs in at the upgrade or with its first message.
    let bearer = format!("Bearer {ana}");
    let (status, _, problem) = get(&served, "/api/realtime/ws", &[("authorization", &bearer)]).await;
    assert_eq!(status, 426, "a plain request is still answered as one: {problem}");
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/realtime/ws", served.address)).await.expect("connect");
    send(&mut ws, json!({"type": "auth", "token": ana})).await;
    let closed = receive(&mut ws).await;
    assert_eq!((closed["type"].as_str(), closed["reason"].as_str()), (Some("closed"), Some("too_many_streams")));
    assert_eq!(receive(&mut ws).await["code"], 1013);
    // Others are not held back by her streams.
    served.client(&bob).stream(&notes(), None).await.expect("bob's");
    // Closing one frees its place (once the server notices the connection is gone).
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match client.stream(&notes(), None).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("429"), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the place was not freed: {e}"),
        }
    }
    served.stop().await;
}
