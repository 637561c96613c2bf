//! `cairn changes --follow --server`: following a `cairn serve` process that is SIGKILLed
//! and started again mid-stream; the follower resumes from its last seq and prints every
//! change once, in order — also those committed while no server ran.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::store_with_notes;

/// `cairn serve` on `listen`; returns the process and the address it says it serves on.
fn serve(dir: &std::path::Path, listen: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--dir")
        .arg(dir)
        .args(["serve", "--listen", listen])
        .env("CAIRN_RATE_WRITE_PER_MINUTE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn serve");
    let address = super::served_address(&mut child);
    (child, address)
}

/// Creates a record over plain HTTP/1.1; returns its seq.
fn create(address: &str, token: &str, id: &str) -> u64 {
    let body = format!(r#"{{"title": "note {id}"}}"#);
    let request = format!(
        "POST /api/collections/notes/records?id={id} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let json: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("body")).expect("JSON");
    json["seq"].as_u64().expect("seq")
}

#[test]
fn a_follower_resumes_across_a_killed_and_restarted_server_without_a_gap() {
    let (tmp, dir) = store_with_notes();
    let (token, since, epoch) = {
        let store = cairn::Store::open(&dir, cairn::StoreOptions::existing()).expect("open");
        store.bootstrap_admin("root", "root password").expect("admin");
        let token = store.login("root", "root password", &cairn::SessionOptions::default()).expect("login").secret;
        let (since, epoch) = (store.last_seq().expect("seq").get(), store.epoch().expect("epoch").to_string());
        store.close().expect("close");
        (token, since, epoch)
    };
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("token file");

    let (mut server, address) = serve(&dir, "127.0.0.1:0");
    let mut follower = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["--json", "changes", "--follow", "--server", &format!("http://{address}"), "--collection", "notes"])
        .args(["--since", &since.to_string(), "--epoch", &epoch, "--token-file"])
        .arg(&token_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn follower");
    let seen = super::stdout_lines(&mut follower);
    let read = |count: usize| -> Vec<u64> {
        (0..count)
            .map(|_| {
                let line = seen.recv_timeout(Duration::from_secs(60)).expect("the follower printed in time");
                let event: Value = serde_json::from_str(&line).expect("a JSON line");
                assert_eq!(event["type"], "create", "{line}");
                event["seq"].as_u64().expect("seq")
            })
            .collect()
    };

    let mut acknowledged: Vec<u64> = (0..10).map(|i| create(&address, &token, &format!("a{i}"))).collect();
    assert_eq!(read(5), acknowledged[..5], "streaming");
    server.kill().expect("SIGKILL");
    server.wait().expect("reap");
    // While no server runs.
    {
        let store = cairn::Store::open(&dir, cairn::StoreOptions::existing()).expect("open after the kill");
        for i in 0..5 {
            let record = store.create_with_id("notes", &format!("b{i}"), serde_json::json!({"title": "offline"}));
            acknowledged.push(record.expect("offline write").seq.get());
        }
        store.close().expect("close");
    }
    let (mut server, again) = serve(&dir, &address);
    assert_eq!(again, address, "the same address");
    acknowledged.extend((0..10).map(|i| create(&address, &token, &format!("c{i}"))));
    let mut printed = acknowledged[..5].to_vec();
    printed.extend(read(acknowledged.len() - 5));
    assert_eq!(printed, acknowledged, "every change once, in order, across the kill");

    follower.kill().expect("stop follower");
    follower.wait().expect("reap");
    server.kill().expect("stop server");
    server.wait().expect("reap");
}

#[test]
fn following_a_server_needs_a_token_and_an_epoch_for_since() {
    let (_tmp, dir) = store_with_notes();
    let base = ["changes", "--follow", "--server", "http://127.0.0.1:9", "--collection", "notes"];
    let out = super::cairn(&dir, &base);
    assert_eq!(super::code(&out), 2, "{}", super::stderr(&out));
    assert!(super::stderr(&out).contains("CAIRN_TOKEN"), "{}", super::stderr(&out));
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(base)
        .args(["--since", "5"])
        .env("CAIRN_TOKEN", "cairn_s_0000000000000000_x")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--epoch"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = super::cairn(&dir, &["changes", "--server", "http://127.0.0.1:9", "--collection", "notes"]);
    assert_eq!(super::code(&out), 2, "--server goes with --follow");
}
