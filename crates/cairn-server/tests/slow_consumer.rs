//! A realtime subscriber that never reads (its own test binary, so that the resident memory
//! measured is this server's): the server holds a bounded amount for it, cuts its connection
//! once its writes stall, and every other subscriber goes on unaffected.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use cairn::{CollectionSchema, SessionOptions, Store, StoreOptions};
use cairn_server::client::{Client, Follower, StreamEvent, StreamQuery};
use cairn_server::{Embedded, ServerConfig};
use serde_json::json;

/// Resident memory of this process now, in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib / 1024
}

/// A record of about 60 KB, so that a few hundred events are tens of megabytes.
fn big(i: usize) -> serde_json::Value {
    json!({"title": format!("{i:06}").repeat(10_000)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_cut_off_and_costs_the_server_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store"), StoreOptions::default()).expect("open");
    let schema = r#"{"name": "notes", "fields": [{"name": "title", "type": "text"}]}"#;
    store.create_collection(CollectionSchema::from_json(schema, "schema").expect("schema")).expect("collection");
    store.bootstrap_admin("root", "root password").expect("admin");
    let token = store.login("root", "root password", &SessionOptions::default()).expect("login").secret;
    let config = ServerConfig {
        send_stall_timeout_ms: 1_000,
        realtime_heartbeat_ms: 200,
        realtime_buffer: 64,
        ..ServerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let backend = Arc::new(Embedded::new(store.clone()).with_realtime_buffer(config.realtime_buffer));
    let server = tokio::spawn(cairn_server::serve(listener, backend, config, async move {
        let _ = stopped.await;
    }));

    // A subscriber that reads everything, from before any write.
    let from = (store.last_seq().expect("seq"), store.epoch().expect("epoch").to_string());
    let client = Client::new(&format!("http://{address}"), &token).expect("client");
    let query = StreamQuery { collection: "notes".into(), ..StreamQuery::default() };
    let mut healthy = Follower::new(client, query, Some(from));
    const WARM: usize = 700;
    const STALLED: usize = 2_500;
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < WARM + STALLED {
            match tokio::time::timeout(Duration::from_secs(60), healthy.next()).await {
                Ok(Ok(StreamEvent::Event(event))) => seqs.push(event.seq.get()),
                other => panic!("{other:?}"),
            }
        }
        seqs
    });

    // Warm up: as many big writes as come later, so that caches are as full as they get.
    let write = |range: std::ops::Range<usize>| {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            range
                .map(|i| store.create_with_id("notes", &format!("r{i}"), big(i)).expect("create").seq.get())
                .collect::<Vec<_>>()
        })
    };
    let mut written = write(0..WARM).await.expect("warm");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_mib();

    // The subscriber that never reads, with a small receive buffer.
    let stalled = std::thread::spawn(move || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(4096).expect("buffer");
        socket.connect(&address.into()).expect("connect");
        let mut stream: std::net::TcpStream = socket.into();
        let request = format!(
            "GET /api/realtime?collection=notes HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).expect("request");
        stream
    })
    .join()
    .expect("stalled client");
    tokio::time::sleep(Duration::from_millis(300)).await;
    written.extend(write(WARM..WARM + STALLED).await.expect("writes"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_mib();
    let pushed_mib = (STALLED * 60_000) >> 20;
    // Measured here the growth is noise of the allocator and SQLite's caches (up to ~20 MiB,
    // with or without the stalled subscriber); holding the events would be 140 MiB more.
    assert!(
        after.saturating_sub(before) < 48,
        "resident memory grew from {before} to {after} MiB while {pushed_mib} MiB of events went unread"
    );

    // The other subscriber got everything, in order.
    let seqs = tokio::time::timeout(Duration::from_secs(120), reader).await.expect("in time").expect("reader");
    assert_eq!(seqs, written, "the reading subscriber is unaffected");

    // The stalled connection was cut: reading it now ends after what the buffers held.
    let mut stalled = stalled;
    stalled.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut total = 0usize;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        match stalled.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the connection is still open after {total} bytes: {e}"),
        }
        assert!(total < STALLED * 60_000, "the server kept sending: {total} bytes");
    }
    let _ = stop.send(());
    server.await.expect("joined").expect("served");
}
