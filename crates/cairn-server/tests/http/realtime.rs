//! Realtime over SSE and WebSocket, on an ephemeral 127.0.0.1 port with real clients (the
//! typed SSE client `cairn_server::client`, tokio-tungstenite): events with their seqs as
//! ids, exact resume across dropped and killed connections, resets after a restore, what
//! each caller may see, tickets, token revocation, heartbeats, shutdown, and bad input.

use std::collections::BTreeSet;
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
            let kind = serde_json::to_value(e.kind).expect("kind").as_str().expect("text").to_string();
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
