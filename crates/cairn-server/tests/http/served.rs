//! The server on an ephemeral 127.0.0.1 port, with a real HTTP client: requests in flight
//! when shutdown begins complete, `/ready` turns 503 while draining, and the store is closed
//! (with its shutdown backup) when `serve` returns.

use std::sync::Arc;
use std::time::Duration;

use cairn::{BackupReason, Backups, Store, StoreOptions};
use cairn_server::{Embedded, ServerConfig};
use serde_json::{json, Value};

/// A store with a `notes` collection (one text field), in a temporary folder.
fn notes_store(options: StoreOptions) -> (tempfile::TempDir, std::path::PathBuf, Store) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, options).expect("open");
    let schema = r#"{"name": "notes", "fields": [{"name": "title", "type": "text"}]}"#;
    store.create_collection(cairn::CollectionSchema::from_json(schema, "schema").expect("schema")).expect("collection");
    (tmp, dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_store_answers_real_clients_and_closes_with_its_backup_on_shutdown() {
    let (_tmp, dir, store) = notes_store(StoreOptions { auto_backup: true, ..StoreOptions::default() });
    store.set_setting(cairn::settings::BACKUP_ON_CLOSE, json!(true)).expect("backup on close");

    store.bootstrap_admin("root", "root password").expect("admin");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cairn_server::serve(
        listener,
        Arc::new(Embedded::new(store)),
        ServerConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    let anonymous = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let login: Value = anonymous
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"name": "root", "password": "root password"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["token"].as_str().expect("a session token");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().expect("header"));
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).default_headers(headers).build().expect("client");
    assert_eq!(anonymous.get(format!("{base}/api/collections")).send().await.expect("get").status(), 401);
    let mut ids = Vec::new();
    for i in 0..20 {
        let created = client
            .post(format!("{base}/api/collections/notes/records"))
            .json(&json!({"title": format!("note {i}")}))
            .send()
            .await
            .expect("create");
        assert_eq!(created.status(), 201);
        let body: Value = created.json().await.expect("json");
        ids.push(body["id"].as_str().expect("id").to_string());
    }
    let listed: Value = client
        .get(format!("{base}/api/collections/notes/records?limit=100"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(20));
    let missing = client.get(format!("{base}/api/collections/notes/records/nope")).send().await.expect("get");
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");

    stop.send(()).expect("signal shutdown");
    server.await.expect("joined").expect("served and closed cleanly");

    // After shutdown: nothing listens, the lock is free, every write is there, and the
    // shutdown backup is listed.
    assert!(client.get(format!("{base}/health")).send().await.is_err(), "the port is closed");
    let store = Store::open(&dir, StoreOptions::default()).expect("the store was closed and can be opened");
    for id in &ids {
        store.get("notes", id).expect("every acknowledged create is there");
    }
    let backups = Backups::of(&dir).list().expect("backups");
    assert!(
        backups.iter().any(|b| b.manifest.as_ref().is_some_and(|m| m.reason == BackupReason::OnClose)),
        "{backups:?}"
    );
}

/// Sends `head` with `Expect: 100-continue` and waits for the server's `100 Continue`, which
/// it sends only once the handler reads the body: from then on the request is in flight. The
/// body goes when told; returns the answer.
fn slow_request(
    address: std::net::SocketAddr,
    head: String,
    body: String,
    started: std::sync::mpsc::Sender<()>,
    go: std::sync::mpsc::Receiver<()>,
) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream.write_all(head.as_bytes()).expect("send the head");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("interim answer");
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    reader.read_line(&mut line).expect("its blank line");
    started.send(()).expect("started");
    go.recv().expect("told to go on");
    stream.write_all(body.as_bytes()).expect("send the body");
    let mut answer = String::new();
    reader.read_to_string(&mut answer).expect("answer");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_shutdown_completes_and_new_connections_are_refused() {
    let (_tmp, dir, store) = notes_store(StoreOptions::default());
    store.bootstrap_admin("root", "root password").expect("admin");
    let token = store.login("root", "root password", &cairn::SessionOptions::default()).expect("login").secret;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cairn_server::serve(
        listener,
        Arc::new(Embedded::new(store)),
        ServerConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    let body = r#"{"title": "sent across the shutdown"}"#.to_string();
    let head = format!(
        "POST /api/collections/notes/records?id=slow HTTP/1.1\r\nHost: cairn\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (go, wait) = std::sync::mpsc::channel();
    let (started, on_start) = std::sync::mpsc::channel();
    let in_flight = std::thread::spawn(move || slow_request(address, head, body, started, wait));
    // The request is in flight (the handler waits for its body) when shutdown begins.
    tokio::task::spawn_blocking(move || on_start.recv().expect("started")).await.expect("joined");
    stop.send(()).expect("shutdown");
    // New connections are refused once shutdown began (waited for, not timed).
    let mut tries = 0;
    while std::net::TcpStream::connect(address).is_ok() {
        tries += 1;
        assert!(tries < 1_500, "the server kept accepting connections");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    go.send(()).expect("finish the body");
    let answer = tokio::task::spawn_blocking(move || in_flight.join().expect("client")).await.expect("joined");
    assert!(answer.starts_with("HTTP/1.1 201"), "the request in flight completed: {answer}");
    server.await.expect("joined").expect("served and closed");
    let store = Store::open(&dir, StoreOptions::read_only()).expect("open");
    assert_eq!(store.get("notes", "slow").expect("written").body["title"], "sent across the shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_time_limit_is_answered_408_as_a_problem() {
    use std::io::{Read, Write};
    let (_tmp, _dir, store) = notes_store(StoreOptions::default());
    store.bootstrap_admin("root", "root password").expect("admin");
    let token = store.login("root", "root password", &cairn::SessionOptions::default()).expect("login").secret;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = ServerConfig { request_timeout_ms: 100, ..ServerConfig::default() };
    let server = tokio::spawn(cairn_server::serve(listener, Arc::new(Embedded::new(store)), config, async move {
        let _ = stopped.await;
    }));
    // A body that never comes: the handler waits for it until the limit answers.
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let head = format!(
            "POST /api/collections/notes/records HTTP/1.1\r\nHost: cairn\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).expect("send");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .expect("client");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json") && answer.contains("urn:cairn:problem:timeout"), "{answer}");
    stop.send(()).expect("shutdown");
    server.await.expect("joined").expect("served");
}

/// Sends one HTTP/1.1 request over `io` and reads the whole answer.
async fn exchange(mut io: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    io.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), io.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_server_speaks_https_and_only_https() {
    use tokio_rustls::rustls;
    let (tmp, _dir, store) = notes_store(StoreOptions::default());
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let (cert_file, key_file) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert_file, made.cert.pem()).expect("cert");
    std::fs::write(&key_file, made.signing_key.serialize_pem()).expect("key");

    // A key file that holds no key is refused before anything listens.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let broken = ServerConfig {
        tls_cert_file: Some(cert_file.clone()),
        tls_key_file: Some(cert_file.clone()),
        ..ServerConfig::default()
    };
    let err = cairn_server::serve(listener, Arc::new(Embedded::new(store.clone())), broken, async {})
        .await
        .expect_err("no key in the key file");
    assert!(err.to_string().contains("tls_key_file") && !err.to_string().contains("PRIVATE KEY"), "{err}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    let config =
        ServerConfig { tls_cert_file: Some(cert_file), tls_key_file: Some(key_file), ..ServerConfig::default() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cairn_server::serve(listener, Arc::new(Embedded::new(store)), config, async move {
        let _ = stopped.await;
    }));

    // A client that trusts the certificate gets its answers over TLS.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let request = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    for _ in 0..3 {
        let tcp = tokio::net::TcpStream::connect(address).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let tls = connector.connect(name, tcp).await.expect("handshake");
        let answer = exchange(tls, request).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"alive\""), "{answer}");
    }

    // Plain HTTP to the same port gets no HTTP answer; with a silent client connected, the
    // next one is still answered.
    let silent = tokio::net::TcpStream::connect(address).await.expect("connect");
    let plain = exchange(tokio::net::TcpStream::connect(address).await.expect("connect"), request).await;
    assert!(!plain.contains("HTTP/1.1 200"), "{plain}");
    let tcp = tokio::net::TcpStream::connect(address).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let answer = exchange(connector.connect(name, tcp).await.expect("handshake"), request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "while another client says nothing: {answer}");
    drop(silent);

    let _ = stop.send(());
    server.await.expect("join").expect("served");
}
