//! Exactly once across disconnects: 8 writers commit 20,000 changes over 60 s while 10 subscribers
//! (5 SSE, 5 WebSocket; some with filters) are cut off at random moments — by the client
//! dropping its connection, or by a relay between them killing every TCP connection with a
//! reset — and resume. Each subscriber's seqs must equal, exactly, the seqs of the changes
//! its filter matches (computed from the change log by a reference model in this file).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::{Seq, Store};
use cairn_server::client::{Client, Follower, StreamEvent, StreamQuery};
use cairn_server::ServerConfig;
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpStream};

use super::realtime::{quick, Served};

const WRITERS: usize = 8;
const CHANGES: usize = 20_000;
/// The writers spread their changes over this long, so that the cuts fall all along.
const SPREAD: Duration = Duration::from_secs(60);
/// The subscribers give up this long after the writers are done.
const DEADLINE: Duration = Duration::from_secs(300);

/// A TCP relay in front of the server whose connections can all be killed at once.
struct Relay {
    address: std::net::SocketAddr,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let held = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Ok(mut outbound) = TcpStream::connect(target).await else { continue };
                // Dropped with a reset, not a clean close, when killed.
                let _ = socket2::SockRef::from(&inbound).set_linger(Some(Duration::ZERO));
                let _ = socket2::SockRef::from(&outbound).set_linger(Some(Duration::ZERO));
                let task = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                held.lock().expect("lock").push(task.abort_handle());
            }
        });
        Relay { address, connections }
    }

    /// Kills every connection through the relay (both sides get a TCP reset).
    fn kill_all(&self) {
        for task in self.connections.lock().expect("lock").drain(..) {
            task.abort();
        }
    }
}

/// What a subscriber follows: none, or a filter as text and as its reference.
#[derive(Clone, Copy)]
enum Filter {
    All,
    AtLeast(i64),
    Below(i64),
}

impl Filter {
    fn text(self) -> Option<String> {
        match self {
            Filter::All => None,
            Filter::AtLeast(n) => Some(format!("n >= {n}")),
            Filter::Below(n) => Some(format!("n < {n}")),
        }
    }

    /// The reference: does a record body match (a missing `n` matches no comparison).
    fn matches(self, body: &Map<String, Value>) -> bool {
        let n = body.get("n").and_then(Value::as_i64);
        match self {
            Filter::All => true,
            Filter::AtLeast(m) => n.is_some_and(|n| n >= m),
            Filter::Below(m) => n.is_some_and(|n| n < m),
        }
    }
}

/// The seqs after `from` a subscriber with `filter` (an admin: no rules) must receive: the
/// record changes whose record matched before or matches after.
fn expected(store: &Store, from: Seq, filter: Filter) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let mut at = from;
    loop {
        let page = store.changes_since(at, 1_000).expect("log");
        let Some(last) = page.last() else { break };
        at = last.seq;
        for change in page.iter().filter(|c| c.collection == "notes" && c.op.is_record_op()) {
            let live = |body: &Option<Value>, deleted: bool| {
                body.as_ref().and_then(Value::as_object).filter(|_| !deleted).is_some_and(|b| filter.matches(b))
            };
            if live(&change.before, change.before_deleted) || live(&change.after, change.deleted) {
                out.insert(change.seq.get());
            }
        }
    }
    out
}

/// A small deterministic generator, so that a failure can be run again alike.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One writer: creates, patches and deletes its own records, `count` changes in all, spread
/// over [`SPREAD`].
fn write(store: Store, writer: usize, count: usize) {
    let mut rng = Lcg(writer as u64 + 1);
    let mut ids: Vec<String> = Vec::new();
    let start = std::time::Instant::now();
    for i in 0..count {
        if let Some(wait) = (SPREAD * i as u32 / count as u32).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let n = rng.below(100) as i64;
        match (ids.len(), rng.below(10)) {
            (0, _) | (_, 0..=2) => {
                let id = format!("w{writer}-{i}");
                store.create_with_id("notes", &id, json!({"n": n})).expect("create");
                ids.push(id);
            }
            (len, 3) => {
                let id = ids.swap_remove(rng.below(len as u64) as usize);
                store.delete("notes", &id, None).expect("delete");
            }
            (len, _) => {
                let id = &ids[rng.below(len as u64) as usize];
                store.patch("notes", id, json!({"n": n}), None).expect("patch");
            }
        }
    }
}

/// Where all writing ended, once known.
type Done = Arc<Mutex<Option<u64>>>;

fn finished(done: &Done, position: u64) -> bool {
    done.lock().expect("lock").is_some_and(|last| position >= last)
}

/// An SSE subscriber: follows until it has been judged through the last change; dropped by
/// its own hand whenever `drop_now` is set.
async fn sse_subscriber(
    client: Client,
    filter: Filter,
    from: (Seq, String),
    done: Done,
    drop_now: Arc<AtomicBool>,
) -> Vec<u64> {
    let query = StreamQuery { collection: "notes".into(), filter: filter.text(), ..StreamQuery::default() };
    let mut follower = Follower::new(client, query, Some(from));
    let mut seqs = Vec::new();
    loop {
        if drop_now.swap(false, Ordering::SeqCst) {
            follower.disconnect();
        }
        if follower.position().is_some_and(|(seq, _)| finished(&done, seq.get())) {
            return seqs;
        }
        match tokio::time::timeout(Duration::from_millis(300), follower.next()).await {
            Ok(Ok(StreamEvent::Event(event))) => seqs.push(event.seq.get()),
            Ok(Ok(other)) => panic!("nothing but events is expected here: {other:?}"),
            Ok(Err(e)) => panic!("the follower failed: {e}"),
            Err(_) => {}
        }
    }
}

/// A WebSocket subscriber with its own resume: reconnects after any failure, subscribing
/// again from the last position it was told (an event's seq or a heartbeat's position).
async fn ws_subscriber(
    relay: std::net::SocketAddr,
    token: String,
    filter: Filter,
    from: (Seq, String),
    done: Done,
    drop_now: Arc<AtomicBool>,
) -> Vec<u64> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut position, epoch) = (from.0.get(), from.1);
    let mut seqs = Vec::new();
    'connect: loop {
        if finished(&done, position) {
            return seqs;
        }
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{relay}/api/realtime/ws")).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut subscribe =
            json!({"type": "subscribe", "id": "s", "collection": "notes", "since": position, "epoch": epoch});
        if let Some(text) = filter.text() {
            subscribe["filter"] = json!(text);
        }
        for message in [json!({"type": "auth", "token": token}), subscribe] {
            if ws.send(Message::Text(message.to_string().into())).await.is_err() {
                continue 'connect;
            }
        }
        loop {
            if drop_now.swap(false, Ordering::SeqCst) {
                continue 'connect;
            }
            if finished(&done, position) {
                return seqs;
            }
            let message = match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<Value>(&text).expect("JSON"),
                Ok(Some(Ok(_))) => continue,
                Ok(None | Some(Err(_))) => continue 'connect,
            };
            match message["type"].as_str().unwrap_or_default() {
                "ready" | "subscribed" => {}
                "heartbeat" => {
                    if let Some(at) = message["positions"]["s"].as_u64() {
                        position = position.max(at);
                    }
                }
                "create" | "update" | "delete" | "enter" | "leave" => {
                    let seq = message["seq"].as_u64().expect("seq");
                    seqs.push(seq);
                    position = seq;
                }
                other => panic!("unexpected {other}: {message}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_each_matching_change_exactly_once_across_disconnects() {
    // One user holds all the streams, and a stream cut off by its client lingers until the
    // server notices: no cap on streams per user here (its own test has one).
    let config = ServerConfig { realtime_buffer: 64, realtime_max_streams_per_user: 0, ..quick() };
    let mut served = Served::start(config).await;
    let relay = Relay::start(served.address).await;
    let store = served.store.clone();
    let from = (store.last_seq().expect("seq"), store.epoch().expect("epoch").to_string());
    let done: Done = Arc::default();
    let filters = [Filter::All, Filter::AtLeast(50), Filter::Below(20), Filter::AtLeast(90), Filter::All];
    let mut subscribers = Vec::new();
    let mut droppers = Vec::new();
    for (i, filter) in filters.iter().enumerate() {
        let drop_sse = Arc::new(AtomicBool::new(false));
        let client = Client::new(&format!("http://{}", relay.address), &served.root).expect("client");
        let task = tokio::spawn(sse_subscriber(client, *filter, from.clone(), done.clone(), drop_sse.clone()));
        subscribers.push((format!("sse {i}"), *filter, task));
        let drop_ws = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(ws_subscriber(
            relay.address,
            served.root.clone(),
            *filter,
            from.clone(),
            done.clone(),
            drop_ws.clone(),
        ));
        subscribers.push((format!("ws {i}"), *filter, task));
        droppers.extend([drop_sse, drop_ws]);
    }

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || write(store, w, CHANGES / WRITERS))
        })
        .collect();
    // Cut subscribers off while the writers run: one by its own hand, or all of them at the
    // TCP level, at random moments.
    let mut rng = Lcg(42);
    let mut cuts = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
        if rng.below(3) == 0 {
            relay.kill_all();
        } else {
            droppers[rng.below(droppers.len() as u64) as usize].store(true, Ordering::SeqCst);
        }
        cuts += 1;
    }
    for writer in writers {
        writer.join().expect("writer");
    }
    let last = store.last_seq().expect("seq").get();
    assert_eq!(last - from.0.get(), CHANGES as u64, "every change committed");
    *done.lock().expect("lock") = Some(last);
    assert!(cuts >= 60, "the subscribers were cut off many times ({cuts})");

    for (name, filter, task) in subscribers {
        let seqs = tokio::time::timeout(DEADLINE, task).await.expect("caught up in time").expect("subscriber");
        let received: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(received.len(), seqs.len(), "{name}: a change delivered twice");
        let want = expected(&store, from.0, filter);
        assert!(!want.is_empty());
        assert_eq!(received, want, "{name}: the matching changes, exactly");
    }
    served.stop().await;
}
