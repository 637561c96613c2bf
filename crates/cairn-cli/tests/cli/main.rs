//! The `cairn` binary end to end: arguments, output, exit codes.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

mod follow_server;
mod jobs;
mod tour;

fn cairn(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cairn")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

const SCHEMA: &str = r#"{"name": "notes", "fields": [
    {"name": "title", "type": "text", "required": true, "summary": true},
    {"name": "n", "type": "integer"}]}"#;

/// The lines a child prints on its (piped) stdout, as they come.
fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("stdout");
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    seen
}

/// The address a `cairn serve` child says it serves on (its stderr piped); the rest of its
/// log is drained, so that it never blocks on a full pipe.
fn served_address(server: &mut std::process::Child) -> String {
    use std::io::{BufRead, BufReader};
    let mut errors = BufReader::new(server.stderr.take().expect("stderr"));
    let mut line = String::new();
    let address = loop {
        line.clear();
        assert!(errors.read_line(&mut line).expect("read stderr") > 0, "the server stopped before serving");
        if let Some(at) = line.find("on http://") {
            break line[at + "on http://".len()..].trim().to_string();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut errors, &mut std::io::sink()));
    address
}

fn store_with_notes() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    assert_eq!(code(&cairn(&dir, &["init"])), 0);
    let schema = tmp.path().join("notes.json");
    std::fs::write(&schema, SCHEMA).expect("schema file");
    let out = cairn(&dir, &["collection", "create", schema.to_str().expect("utf8")]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    (tmp, dir)
}

#[test]
fn records_round_trip_with_documented_exit_codes() {
    let (_tmp, dir) = store_with_notes();
    let out = cairn(&dir, &["--json", "put", "notes", "a", "--body", r#"{"title": "hello"}"#]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["version"], 1);

    let out = cairn(&dir, &["--json", "get", "notes", "a"]);
    assert_eq!(json(&out)["body"]["title"], "hello");

    let out = cairn(&dir, &["patch", "notes", "a", r#"{"n": 2}"#, "--expect", "1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = cairn(&dir, &["patch", "notes", "a", r#"{"n": 3}"#, "--expect", "1"]);
    assert_eq!(code(&out), 3, "version conflict: {}", stderr(&out));
    assert!(stderr(&out).contains("expected version 1, found 2"));

    assert_eq!(code(&cairn(&dir, &["get", "notes", "missing"])), 4);
    assert_eq!(code(&cairn(&dir, &["get", "ghosts", "a"])), 4);
    assert_eq!(code(&cairn(&dir, &["revert", "notes", "a", "9"])), 4);

    let out = cairn(&dir, &["--json", "history", "notes", "a"]);
    let ops: Vec<String> =
        json(&out).as_array().expect("list").iter().map(|c| c["op"].as_str().expect("op").to_string()).collect();
    assert_eq!(ops, ["create", "patch"]);
    assert_eq!(code(&cairn(&dir, &["undo", "notes", "a"])), 0);
    assert_eq!(code(&cairn(&dir, &["redo", "notes", "a"])), 0);
    assert_eq!(code(&cairn(&dir, &["delete", "notes", "a"])), 0);
    assert_eq!(code(&cairn(&dir, &["get", "notes", "a"])), 4);
    assert_eq!(code(&cairn(&dir, &["get", "notes", "a", "--deleted"])), 0);
    assert_eq!(code(&cairn(&dir, &["purge", "notes", "a"])), 0);
    let out = cairn(&dir, &["revert", "notes", "a", "2"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let out = cairn(&dir, &["--json", "changes", "--since", "0"]);
    let changes = json(&out);
    let seqs: Vec<u64> = changes.as_array().expect("list").iter().map(|c| c["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(changes[0]["op"], "collection_create");
    assert_eq!(changes[1]["actor"], "cli");
}

#[test]
fn bad_input_gets_clear_errors_and_exit_codes() {
    let (tmp, dir) = store_with_notes();
    // The library says what is wrong; the CLI adds what to type next, from the error's kind.
    let out = cairn(&tmp.path().join("nowhere"), &["get", "notes", "a"]);
    assert_eq!(code(&out), 4, "no store is not found: {}", stderr(&out));
    assert!(stderr(&out).contains("hint: create one with `cairn init`"), "{}", stderr(&out));
    let out = cairn(&tmp.path().join("nowhere"), &["--json", "get", "notes", "a"]);
    let reported: Value = serde_json::from_slice(&out.stderr).expect("JSON error");
    assert!(reported["hint"].as_str().is_some_and(|h| h.contains("cairn init")), "{reported}");
    // Malformed JSON names where it broke.
    let out = cairn(&dir, &["put", "notes", "a", "--body", "{\"title\": \"x\",}"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("the body argument") && stderr(&out).contains("column"), "{}", stderr(&out));
    // Wrong type and unknown field name the collection, record and field.
    let out = cairn(&dir, &["put", "notes", "a", "--body", r#"{"title": 5}"#]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("`notes`, record `a`, field `title`"), "{}", stderr(&out));
    let out = cairn(&dir, &["put", "notes", "a", "--body", r#"{"title": "x", "extra": 1}"#]);
    assert!(stderr(&out).contains("field `extra`"), "{}", stderr(&out));
    // Invalid id.
    let out = cairn(&dir, &["put", "notes", "../x", "--body", r#"{"title": "x"}"#]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("invalid record id"), "{}", stderr(&out));
    // Missing body, unknown subcommand, bad flag: usage errors.
    assert_eq!(code(&cairn(&dir, &["put", "notes", "a"])), 2);
    assert_eq!(code(&cairn(&dir, &["frobnicate"])), 2);
    assert_eq!(code(&cairn(&dir, &["get", "notes"])), 2);
    // Over the configured size limit.
    assert_eq!(code(&cairn(&dir, &["settings", "set", "records.max_body_bytes", "1024"])), 0);
    let big = format!(r#"{{"title": "{}"}}"#, "x".repeat(3000));
    let out = cairn(&dir, &["put", "notes", "big", "--body", &big]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("over the limit of 1024 bytes"), "{}", stderr(&out));
    // A bad schema file.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\n[[fields]]\nname = \"a\"\ntype = \"blob\"\n").expect("write");
    let out = cairn(&dir, &["collection", "create", bad.to_str().expect("utf8")]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("bad.toml"), "{}", stderr(&out));
    // A directory that is not a store, a store that does not exist.
    let foreign = tmp.path().join("photos");
    std::fs::create_dir(&foreign).expect("mkdir");
    std::fs::write(foreign.join("cat.jpg"), b"\xff\xd8").expect("write");
    let out = cairn(&foreign, &["init"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("not a cairn store") && stderr(&out).contains("cat.jpg"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(&foreign).expect("ls").count(), 1, "nothing was written into the foreign directory");
    let out = cairn(&tmp.path().join("nowhere"), &["get", "notes", "a"]);
    assert_eq!(code(&out), 4);
    assert!(stderr(&out).contains("cairn init"), "{}", stderr(&out));
    // JSON errors with --json.
    let out = cairn(&dir, &["--json", "get", "notes", "zzz"]);
    let err: Value = serde_json::from_slice(&out.stderr).expect("json error");
    assert!(err["error"].as_str().expect("message").contains("not found"));
}

#[test]
fn a_second_writer_process_is_refused_naming_the_holder() {
    let (_tmp, dir) = store_with_notes();
    let holder = cairn::Store::open(&dir, cairn::StoreOptions::existing()).expect("this process holds the lock");
    let out = cairn(&dir, &["put", "notes", "a", "--body", r#"{"title": "x"}"#]);
    assert_eq!(code(&out), 1);
    let text = stderr(&out);
    assert!(text.contains("locked for writing") && text.contains(&format!("process {}", std::process::id())), "{text}");
    // Reads still work while another process writes.
    holder.create_with_id("notes", "b", serde_json::json!({"title": "from the holder"})).expect("write");
    let out = cairn(&dir, &["--json", "get", "notes", "b"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["body"]["title"], "from the holder");
}

#[test]
fn cairn_dir_environment_variable_is_honoured_by_demo() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo-store");
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["demo", "--sessions", "10"])
        .env("CAIRN_DIR", &dir)
        .output()
        .expect("run demo");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("sessions") && stdout(&out).contains("Try"));
    assert!(dir.join(cairn::layout::DB_FILE).exists());
    // Running it again writes nothing and still succeeds.
    let again =
        Command::new(env!("CARGO_BIN_EXE_cairn")).arg("demo").env("CAIRN_DIR", &dir).output().expect("run demo");
    assert_eq!(code(&again), 0);
    assert!(stdout(&again).contains("already there"));
    let out = cairn(&dir, &["--json", "collection", "list"]);
    let list = json(&out);
    let names: Vec<&str> =
        list.as_array().expect("list").iter().map(|c| c["schema"]["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["attachments", "companies", "contacts", "notes", "sessions", "tasks", "topics"]);
    // The demo's own suggestions work.
    assert_eq!(code(&cairn(&dir, &["history", "tasks", "task-0001"])), 0);
    assert_eq!(code(&cairn(&dir, &["undo", "tasks", "task-0001"])), 0);
}

#[test]
fn collections_settings_batch_and_drop() {
    let (tmp, dir) = store_with_notes();
    let out = cairn(&dir, &["collection", "show", "notes"]);
    assert!(stdout(&out).contains("required") && stdout(&out).contains("summary"), "{}", stdout(&out));
    let updated = tmp.path().join("notes.toml");
    std::fs::write(
        &updated,
        "name = \"notes\"\n[[fields]]\nname = \"title\"\ntype = \"text\"\nrequired = true\n[[fields]]\nname = \"n\"\ntype = \"integer\"\n[[fields]]\nname = \"mood\"\ntype = \"text\"\n",
    )
    .expect("write");
    let out = cairn(&dir, &["--json", "collection", "update", updated.to_str().expect("utf8")]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["schema_version"], 2);

    let batch = tmp.path().join("batch.json");
    std::fs::write(&batch, r#"[{"op": "create", "collection": "notes", "id": "x", "body": {"title": "x"}}, {"op": "patch", "collection": "notes", "id": "x", "patch": {"n": "two"}}]"#).expect("write");
    let out = cairn(&dir, &["batch", batch.to_str().expect("utf8")]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("operation 1 of the batch failed"), "{}", stderr(&out));
    assert_eq!(code(&cairn(&dir, &["get", "notes", "x"])), 4, "nothing of a failed batch is written");

    assert_eq!(
        code(&cairn(
            &dir,
            &["settings", "define", "ui.theme", "--type", "text", "--default", "light", "--choices", "light,dark"]
        )),
        0
    );
    assert_eq!(code(&cairn(&dir, &["settings", "set", "ui.theme", "dark"])), 0);
    assert_eq!(code(&cairn(&dir, &["settings", "set", "ui.theme", "pink"])), 1);
    assert_eq!(stdout(&cairn(&dir, &["settings", "get", "ui.theme"])).trim(), "\"dark\"");
    assert_eq!(code(&cairn(&dir, &["settings", "get", "ui.nope"])), 4);

    let out = cairn(&dir, &["collection", "drop", "notes"]);
    assert_eq!(code(&out), 1, "no confirmation without a terminal");
    assert!(stderr(&out).contains("--confirm notes"), "{}", stderr(&out));
    let out = cairn(&dir, &["--json", "collection", "drop", "notes", "--confirm", "notes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let quarantine = json(&out)["quarantine_dir"].as_str().expect("path").to_string();
    assert!(Path::new(&quarantine).join("records.jsonl").exists());
}

#[test]
fn changes_follow_prints_commits_of_another_process_as_they_happen() {
    use std::time::Duration;

    let (_tmp, dir) = store_with_notes();
    let mut follower = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--dir")
        .arg(&dir)
        .args(["--json", "changes", "--since", "1", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn follower");
    let seen = stdout_lines(&mut follower);
    // This process writes while the follower reads.
    let store = cairn::Store::open(&dir, cairn::StoreOptions::existing()).expect("writer");
    for i in 0..5 {
        store.create_with_id("notes", &format!("f{i}"), serde_json::json!({"title": "followed"})).expect("write");
    }
    let mut ids = Vec::new();
    while ids.len() < 5 {
        let line = seen.recv_timeout(Duration::from_secs(20)).expect("the follower printed every change in time");
        let change: Value = serde_json::from_str(&line).expect("one JSON object per line");
        assert_eq!(change["seq"].as_u64(), Some(ids.len() as u64 + 2), "in order, none missed: {line}");
        ids.push(change["id"].as_str().expect("id").to_string());
    }
    assert_eq!(ids, ["f0", "f1", "f2", "f3", "f4"]);
    follower.kill().expect("stop follower");
    follower.wait().expect("reap");
}

#[test]
fn query_search_and_index_commands() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    assert_eq!(code(&cairn(&dir, &["demo", "--sessions", "30"])), 0);

    let filter = r#"status = "completed" and tags has "acme""#;
    let out =
        cairn(&dir, &["--json", "query", "sessions", "--filter", filter, "--sort", "-started_at", "--limit", "2"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let page = json(&out);
    let rows = page["rows"].as_array().expect("rows");
    assert!(!rows.is_empty());
    for row in rows {
        assert_eq!(row["fields"]["status"], "completed");
        assert!(row["fields"]["tags"].as_array().expect("tags").contains(&Value::from("acme")));
    }
    let count: u64 = json(&cairn(&dir, &["--json", "query", "sessions", "--filter", filter, "--count"]))["count"]
        .as_u64()
        .expect("count");
    // Walk every page by cursor: the pages add up to the count.
    let mut seen = rows.len() as u64;
    let mut cursor = page["next_cursor"].as_str().map(String::from);
    while let Some(c) = cursor {
        let out = cairn(
            &dir,
            &[
                "--json",
                "query",
                "sessions",
                "--filter",
                filter,
                "--sort",
                "-started_at",
                "--limit",
                "2",
                "--cursor",
                &c,
            ],
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let page = json(&out);
        seen += page["rows"].as_array().expect("rows").len() as u64;
        cursor = page["next_cursor"].as_str().map(String::from);
    }
    assert_eq!(seen, count);

    let out = cairn(&dir, &["query", "sessions", "--filter", filter, "--explain"]);
    assert!(
        stdout(&out).contains("c_sessions__v_status") || stdout(&out).contains("c_sessions__tags"),
        "{}",
        stdout(&out)
    );

    // A bad filter is a usage error with a caret under the problem.
    let out = cairn(&dir, &["query", "sessions", "--filter", "started_at >= \"soon\""]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("type mismatch") && stderr(&out).contains('^'), "{}", stderr(&out));
    let out = cairn(&dir, &["query", "sessions", "--cursor", "not-a-cursor"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("invalid cursor"), "{}", stderr(&out));

    let out = cairn(&dir, &["--json", "search", "notes", "checkout retry", "--limit", "3"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let hits = json(&out);
    assert!(!hits.as_array().expect("hits").is_empty());
    assert!(hits[0]["snippet"].as_str().expect("snippet").contains("[checkout]"));

    assert_eq!(code(&cairn(&dir, &["index", "add", "tasks", "done"])), 0);
    let list = json(&cairn(&dir, &["--json", "index", "list", "tasks"]));
    assert!(list.as_array().expect("list").iter().any(|i| i["field"] == "done"));
    assert_eq!(code(&cairn(&dir, &["index", "drop", "tasks", "done"])), 0);
    assert_eq!(code(&cairn(&dir, &["index", "add", "tasks", "nope"])), 1);
}

#[test]
fn attach_and_blob_commands() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    assert_eq!(code(&cairn(&dir, &["init"])), 0);
    let schema = tmp.path().join("docs.json");
    std::fs::write(&schema, r#"{"name": "docs", "fields": [{"name": "files", "type": "attachments"}]}"#)
        .expect("schema");
    assert_eq!(code(&cairn(&dir, &["collection", "create", schema.to_str().expect("utf8")])), 0);
    assert_eq!(code(&cairn(&dir, &["put", "docs", "d", "--body", "{}"])), 0);
    let file = tmp.path().join("minutes.txt");
    std::fs::write(&file, "minutes of the meeting\n".repeat(500)).expect("file");
    let path = file.to_str().expect("utf8");

    let out = cairn(&dir, &["--json", "attach", "docs", "d", "files", path]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let attachment = json(&out)["attachment"].clone();
    assert_eq!(attachment["name"], "minutes.txt");
    assert_eq!(attachment["mime"], "text/plain");
    let hash = attachment["hash"].as_str().expect("hash").to_string();
    let out = cairn(&dir, &["--json", "attach", "docs", "d", "files", path, "--name", "copy.txt"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let out = cairn(&dir, &["--json", "blob", "stat", &hash]);
    assert_eq!((json(&out)["refs"].clone(), json(&out)["codec"].clone()), (2.into(), "zstd".into()));
    let out = cairn(&dir, &["blob", "ls"]);
    assert!(stdout(&out).contains(&hash), "{}", stdout(&out));
    let copy = tmp.path().join("back.txt");
    let out = cairn(&dir, &["blob", "get", &hash, "-o", copy.to_str().expect("utf8")]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(std::fs::read(&copy).expect("copy"), std::fs::read(&file).expect("file"));
    // An existing file is not replaced without --force.
    std::fs::write(&copy, "the user's edits").expect("edit");
    let out = cairn(&dir, &["blob", "get", &hash, "-o", copy.to_str().expect("utf8")]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&copy).expect("copy"), "the user's edits");
    let out = cairn(&dir, &["blob", "get", &hash, "-o", copy.to_str().expect("utf8"), "--force"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(std::fs::read(&copy).expect("copy"), std::fs::read(&file).expect("file"));
    // The blob folder as a link: refused, unless --allow-links.
    let blobs = dir.join("blobs");
    let moved = tmp.path().join("blobs-elsewhere");
    std::fs::rename(&blobs, &moved).expect("move");
    std::os::unix::fs::symlink(&moved, &blobs).expect("link");
    let out = cairn(&dir, &["blob", "get", &hash]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("blobs is a symbolic link"), "{}", stderr(&out));
    let out = cairn(&dir, &["--allow-links", "blob", "get", &hash]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::fs::remove_file(&blobs).expect("unlink");
    std::fs::rename(&moved, &blobs).expect("put back");
    let out = cairn(&dir, &["blob", "get", &hash]);
    assert_eq!(out.stdout, std::fs::read(&file).expect("file"));
    assert_eq!(code(&cairn(&dir, &["blob", "verify"])), 0);
    assert_eq!(code(&cairn(&dir, &["blob", "rebuild-refs"])), 0);
    let out = cairn(&dir, &["--json", "compact"]);
    assert_eq!((code(&out), json(&out)["compressed"].clone()), (0, 0.into()), "bodies are small: {}", stderr(&out));
    let out = cairn(&dir, &["--json", "compact", "--train", "--collection", "docs"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["trained"][0]["kept"], false, "one record is too few: {}", stdout(&out));
    assert_eq!(code(&cairn(&dir, &["compact", "--collection", "nope"])), 4);

    // Refusals: a declared type the content contradicts; a hash that is not one; no such blob.
    let out = cairn(&dir, &["attach", "docs", "d", "files", path, "--mime", "image/png"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("does not start like one"), "{}", stderr(&out));
    assert_eq!(code(&cairn(&dir, &["blob", "stat", "xyz"])), 1);
    assert_eq!(code(&cairn(&dir, &["blob", "stat", &"0".repeat(64)])), 4);
    assert_eq!(code(&cairn(&dir, &["blob", "gc", "--grace", "soon"])), 2);

    // Unlinked, then collected once the grace period is waived.
    assert_eq!(code(&cairn(&dir, &["delete", "docs", "d"])), 0);
    let out = cairn(&dir, &["--json", "blob", "gc"]);
    assert_eq!(json(&out)["kept_in_grace"], 1, "{}", stdout(&out));
    let out = cairn(&dir, &["blob", "gc", "--grace", "0s"]);
    assert!(stdout(&out).contains(&format!("removed blob {hash}")), "{}", stdout(&out));
    assert_eq!(code(&cairn(&dir, &["blob", "stat", &hash])), 4);

    // A damaged blob: get and verify exit with 5.
    let out = cairn(&dir, &["--json", "attach", "docs", "e", "files", path]);
    assert_eq!(code(&out), 4, "no record e: {}", stderr(&out));
    assert_eq!(code(&cairn(&dir, &["put", "docs", "e", "--body", "{}"])), 0);
    assert_eq!(code(&cairn(&dir, &["attach", "docs", "e", "files", path])), 0);
    let stored = dir.join("blobs").join(&hash[..2]).join(&hash[2..4]).join(format!("{hash}.zst"));
    let mut bytes = std::fs::read(&stored).expect("blob file");
    let last = bytes.len() - 5;
    bytes[last] ^= 0xFF;
    std::fs::write(&stored, bytes).expect("damage");
    assert_eq!(code(&cairn(&dir, &["blob", "verify"])), 5);
    let bad = tmp.path().join("bad.txt");
    assert_eq!(code(&cairn(&dir, &["blob", "get", &hash, "-o", bad.to_str().expect("utf8")])), 5);
    assert!(!bad.exists());
}

#[test]
fn compact_train_then_a_fresh_process_reads_and_damage_is_reported() {
    let (tmp, dir) = store_with_notes();
    let ops: Vec<Value> = (0..300)
        .map(|i| {
            serde_json::json!({"op": "create", "collection": "notes", "id": format!("n{i}"), "body": {
                "title": format!(
                    "Follow up with client {} about the revised estimate, the invoice schedule, the open support \
                     tickets and the agenda of the next planning workshop", i % 9),
                "n": i % 10}})
        })
        .collect();
    let batch = tmp.path().join("ops.json");
    std::fs::write(&batch, serde_json::to_string(&ops).expect("ops")).expect("write");
    assert_eq!(code(&cairn(&dir, &["batch", batch.to_str().expect("utf8")])), 0);

    let out = cairn(&dir, &["compact", "--train"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("notes: trained a"), "{}", stdout(&out));

    // A new process has no decoder cached: filters on body fields decode inside SQLite.
    let out = cairn(&dir, &["--json", "query", "notes", "--filter", "n = 7", "--count"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("30"), "{}", stdout(&out));
    let out = cairn(&dir, &["--json", "get", "notes", "n42"]);
    assert_eq!(json(&out)["body"]["n"], 2);

    let db = rusqlite::Connection::open(dir.join("store.db")).expect("db");
    db.execute("UPDATE cairn_dicts SET dict = zeroblob(length(dict))", []).expect("damage");
    drop(db);
    let out = cairn(&dir, &["get", "notes", "n42"]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("compression dictionary"), "{}", stderr(&out));
}

#[test]
fn backup_check_repair_and_restore_from_the_command_line() {
    let (tmp, dir) = store_with_notes();
    for i in 0..5 {
        let body = format!(r#"{{"title": "note {i}", "n": {i}}}"#);
        assert_eq!(code(&cairn(&dir, &["put", "notes", &format!("n{i}"), "--body", &body])), 0);
    }
    let out = cairn(&dir, &["--json", "backup", "create"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let id = json(&out)["id"].as_str().expect("id").to_string();
    let out = cairn(&dir, &["--json", "backup", "list"]);
    let list = json(&out);
    let listed = list.as_array().expect("list");
    assert!(listed.iter().any(|b| b["id"] == id.as_str() && b["status"] == "good"), "{list}");
    assert!(listed.iter().any(|b| b["reason"] == "on_open"), "an automatic backup on open: {list}");
    assert!(listed.iter().all(|b| b.get("files").is_none()), "a list, not every file: {list}");
    assert_eq!(code(&cairn(&dir, &["backup", "verify", &id])), 0);
    assert_eq!(code(&cairn(&dir, &["backup", "verify", "nope"])), 4);
    assert_eq!(code(&cairn(&dir, &["backup", "verify"])), 2, "an id or --all");
    assert_eq!(code(&cairn(&dir, &["--json", "check"])), 0);

    // Damage one body, the way a bad sector would: check says so (exit 5), repair fixes it.
    let db = rusqlite::Connection::open(dir.join("store.db")).expect("db");
    db.execute("UPDATE cairn_changes SET after = CAST(replace(CAST(after AS TEXT), 'note 3', 'note 8') AS BLOB) WHERE record_id = 'n3'", [])
        .expect("damage");
    drop(db);
    let out = cairn(&dir, &["check"]);
    assert_eq!(code(&out), 5, "{}", stdout(&out));
    assert!(stdout(&out).contains("notes/n3"), "{}", stdout(&out));
    let out = cairn(&dir, &["--json", "repair"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rebuilt = &json(&out)["rebuilt"];
    assert!(rebuilt["changes_from_backups"].as_array().is_some_and(|a| !a.is_empty()), "{}", stdout(&out));
    assert_eq!(json(&cairn(&dir, &["--json", "get", "notes", "n3"]))["body"]["title"], "note 3");

    // Restore: refused without --yes when nobody can be asked; then over the store.
    assert_eq!(code(&cairn(&dir, &["put", "notes", "late", "--body", r#"{"title": "after the backup"}"#])), 0);
    let out = cairn(&dir, &["restore", &id]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    let out = cairn(&dir, &["--json", "restore", &id, "--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(json(&out)["pre_restore_backup"].is_string());
    assert_eq!(code(&cairn(&dir, &["get", "notes", "late"])), 4, "the later record is gone from the store");
    // ...and back from the pre-restore backup, as a new version of one record.
    let pre = json(&out)["pre_restore_backup"].as_str().expect("pre").to_string();
    let out = cairn(&dir, &["restore", &pre, "--collection", "notes", "--id", "late"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&cairn(&dir, &["--json", "get", "notes", "late"]))["body"]["title"], "after the backup");
    let copy = tmp.path().join("copy");
    let out = cairn(&dir, &["restore", &id, "--to", copy.to_str().expect("utf8")]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(code(&cairn(&copy, &["get", "notes", "n4"])), 0);

    // A stray copy of the database is moved out of the way and reported.
    std::fs::copy(dir.join("store.db"), dir.join("store-old.db")).expect("stray");
    let out = cairn(&dir, &["check"]);
    assert!(
        stderr(&out).contains("stray file") || stdout(&out).contains("stray file"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(!dir.join("store-old.db").exists());
}

#[test]
fn migrations_from_the_command_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let migrations = tmp.path().join("migrations");
    std::fs::create_dir(&migrations).expect("mkdir");
    std::fs::write(
        migrations.join("0001_notes.toml"),
        "[[up]]\nop = \"create_collection\"\nschema = { name = \"notes\", fields = [ { name = \"title\", type = \"text\" } ] }\n\
         [[down]]\nop = \"drop_collection\"\ncollection = \"notes\"\n",
    )
    .expect("0001");
    std::fs::write(
        migrations.join("0002_n.toml"),
        "[[up]]\nop = \"add_field\"\ncollection = \"notes\"\nfield = { name = \"n\", type = \"integer\", default = 0 }\n\
         [[down]]\nop = \"remove_field\"\ncollection = \"notes\"\nfield = \"n\"\n",
    )
    .expect("0002");
    let seed = tmp.path().join("seed.json");
    std::fs::write(&seed, r#"{"notes": [{"id": "hello", "title": "Hello"}]}"#).expect("seed");
    let m = migrations.to_str().expect("utf8");
    let s = seed.to_str().expect("utf8");

    let out = cairn(&dir, &["--json", "init", "--migrations", m, "--seed", s]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = json(&out);
    assert_eq!((report["created"].clone(), report["migrations"]["applied"].clone()), (true.into(), 2.into()));
    assert_eq!(report["seeded"]["notes"], 1);
    let out = cairn(&dir, &["--json", "init", "--migrations", m, "--seed", s]);
    assert_eq!(json(&out)["seed_unchanged"], 1, "{}", stdout(&out));
    let out = cairn(&dir, &["--json", "get", "notes", "hello"]);
    assert_eq!(json(&out)["body"], serde_json::json!({"title": "Hello", "n": 0}));

    let out = cairn(&dir, &["migrate", "-m", m, "status"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("applied"), "{}", stdout(&out));
    let out = cairn(&dir, &["--json", "migrate", "-m", m, "plan", "--down"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["migrations"][0]["steps"][0]["records"], 1);
    let out = cairn(&dir, &["migrate", "-m", m, "down"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("undid 0002 n"), "{}", stdout(&out));
    let out = cairn(&dir, &["--json", "get", "notes", "hello"]);
    assert_eq!(json(&out)["body"], serde_json::json!({"title": "Hello"}));

    // Edit the applied migration: refused, and status says so.
    let first = migrations.join("0001_notes.toml");
    let text = std::fs::read_to_string(&first).expect("read");
    std::fs::write(&first, text.replace("\"title\"", "\"headline\"")).expect("edit");
    let out = cairn(&dir, &["migrate", "-m", m, "up"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("edited after it was applied"), "{}", stderr(&out));
    let out = cairn(&dir, &["--json", "migrate", "-m", m, "status"]);
    assert_eq!(json(&out)[0]["state"], "edited");

    // A bad file is named before anything runs.
    std::fs::write(&first, text).expect("restore");
    std::fs::write(migrations.join("0003_bad.toml"), "down = []\n[[up]]\nop = \"teleport\"\n").expect("bad");
    let out = cairn(&dir, &["migrate", "-m", m, "up"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("0003_bad.toml") && stderr(&out).contains("teleport"), "{}", stderr(&out));
}

#[test]
fn audit_list_and_verify_from_the_command_line() {
    let (_tmp, dir) = store_with_notes();
    for id in ["a", "b"] {
        let out = cairn(&dir, &["put", "notes", id, "--body", r#"{"title": "x"}"#]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let out = cairn(&dir, &["delete", "notes", id]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let out = cairn(&dir, &["--json", "audit", "list", "--filter", r#"target = "notes/b""#]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let entries = json(&out);
    assert_eq!(entries.as_array().map(Vec::len), Some(1), "{entries}");
    assert_eq!((entries[0]["action"].clone(), entries[0]["actor"].clone()), ("delete".into(), "cli".into()));
    assert_eq!(code(&cairn(&dir, &["audit", "verify"])), 0);

    let conn = rusqlite::Connection::open(dir.join("store.db")).expect("sqlite");
    conn.execute("UPDATE cairn_audit SET actor = 'mallory' WHERE seq = 1", []).expect("tamper");
    drop(conn);
    let out = cairn(&dir, &["audit", "verify"]);
    assert_eq!(code(&out), 5, "{}", stdout(&out));
    assert!(stdout(&out).contains("entry 1: the entry does not match its hash"), "{}", stdout(&out));
}

#[test]
fn export_and_import_from_the_command_line() {
    let (tmp, dir) = store_with_notes();
    for id in ["a", "b", "c"] {
        let out = cairn(&dir, &["put", "notes", id, "--body", r#"{"title": "x", "n": 1}"#]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let export = tmp.path().join("export");
    let e = export.to_str().expect("utf8");
    let out = cairn(&dir, &["export", "--out", e]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("notes") && stdout(&out).contains("3 records"), "{}", stdout(&out));

    let other = tmp.path().join("other");
    assert_eq!(code(&cairn(&other, &["init"])), 0);
    let out = cairn(&other, &["--json", "import", e, "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["collections"][0]["created"], 3);
    let out = cairn(&other, &["--json", "list", "notes"]);
    assert_ne!(code(&out), 0, "the dry run created nothing: {}", stdout(&out));
    let out = cairn(&other, &["import", e]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("backup taken first"), "{}", stdout(&out));
    let out = cairn(&other, &["--json", "get", "notes", "b"]);
    assert_eq!(json(&out)["body"]["n"], 1);

    let out = cairn(&other, &["put", "notes", "b", "--body", r#"{"title": "changed"}"#]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = cairn(&other, &["import", e]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("notes/b"), "{}", stderr(&out));
    let out = cairn(&other, &["import", e, "--on-conflict", "overwrite"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = cairn(&other, &["--json", "get", "notes", "b"]);
    assert_eq!(json(&out)["body"]["title"], "x");

    let report = tmp.path().join("notes.csv");
    let r = report.to_str().expect("utf8");
    let out = cairn(
        &other,
        &["export", "notes", "--format", "csv", "--out", r, "--columns", "id,title", "--filter", "n = 1"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&report).expect("csv"), "id,title\na,x\nb,x\nc,x\n");
    let out = cairn(&other, &["export", "--out", r, "--format", "xlsx"]);
    assert_eq!(code(&out), 2, "--format needs a collection: {}", stderr(&out));
}

#[test]
fn legacy_taskerino_files_from_the_command_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // No `cairn init` first: importing into a directory without a store creates it.
    let dir = tmp.path().join("store");
    let legacy = tmp.path().join("taskerino");
    std::fs::create_dir(&legacy).expect("mkdir");
    std::fs::write(legacy.join("topics.json"), r#"[{"id": "t1", "name": "Checkout"}, {"name": "no id"}]"#)
        .expect("topics");
    std::fs::write(
        legacy.join("notes.json"),
        r#"[{"id": "n1", "content": "hi", "timestamp": "2025-10-20", "topicId": "t1"}]"#,
    )
    .expect("notes");
    std::fs::write(legacy.join("tasks.json"), r#"[{"id": "k1", "title": "cut off"#).expect("tasks");
    let l = legacy.to_str().expect("utf8");
    let out = cairn(&dir, &["import-legacy", "taskerino", l, "--strict"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(
        !dir.join("store.db").exists() || code(&cairn(&dir, &["get", "notes", "n1"])) == 4,
        "--strict wrote nothing"
    );
    let out = cairn(&dir, &["import-legacy", "taskerino", l, "--dry-run"]);
    assert_eq!(code(&out), 7, "a dry run that would skip says so: {}", stderr(&out));
    let out = cairn(&dir, &["import-legacy", "taskerino", l]);
    assert_eq!(code(&out), 7, "finished, with skipped records: {}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("skipped topics.json #1: missing id") && text.contains("skipped tasks.json"), "{text}");
    assert!(stderr(&out).contains("skipped"), "{}", stderr(&out));
    let out = cairn(&dir, &["--json", "get", "notes", "n1"]);
    assert_eq!(json(&out)["body"]["topic"], "t1");

    // A folder of only valid records imports completely: exit 0.
    let clean = tmp.path().join("clean");
    std::fs::create_dir(&clean).expect("mkdir");
    std::fs::write(clean.join("topics.json"), r#"[{"id": "t9", "name": "Clean", "createdAt": 1729414800000}]"#)
        .expect("topics");
    let out = cairn(&tmp.path().join("fresh"), &["import-legacy", "taskerino", clean.to_str().expect("utf8")]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let out = cairn(&tmp.path().join("fresh"), &["--json", "get", "topics", "t9"]);
    assert_eq!(json(&out)["body"]["created_at"], "2024-10-20T09:00:00.000Z", "the epoch time, kept");

    // A missing folder is named once.
    let out = cairn(&dir, &["import-legacy", "taskerino", tmp.path().join("nope").to_str().expect("utf8")]);
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out).matches("No such file").count(), 1, "{}", stderr(&out));
}

fn cairn_env(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command.arg("--dir").arg(dir).args(args).stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run cairn")
}

#[test]
fn key_commands_encrypt_fields_and_report_locked_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    assert_eq!(code(&cairn(&dir, &["init"])), 0);
    let schema = tmp.path().join("secrets.json");
    std::fs::write(
        &schema,
        r#"{"name": "secrets", "fields": [{"name": "name", "type": "text", "summary": true},
            {"name": "rate", "type": "number", "encrypted": true, "summary": true}]}"#,
    )
    .expect("schema");
    assert_eq!(code(&cairn(&dir, &["collection", "create", schema.to_str().expect("utf8")])), 0);
    assert!(stdout(&cairn(&dir, &["key", "status"])).contains("no key"));
    assert_eq!(code(&cairn(&dir, &["key", "init"])), 2, "a secret is required");

    let pass_file = tmp.path().join("pass");
    std::fs::write(&pass_file, "a long enough passphrase\n").expect("pass");
    let pass = pass_file.to_str().expect("utf8");
    let out = cairn(&dir, &["--passphrase-file", pass, "key", "init"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out =
        cairn(&dir, &["--passphrase-file", pass, "put", "secrets", "a", "--body", r#"{"name": "a", "rate": 42.5}"#]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Without the secret: the record reads, the encrypted field is named, writing it fails.
    let out = cairn(&dir, &["get", "secrets", "a"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("encrypted, not shown: rate"), "{}", stdout(&out));
    let record = json(&cairn(&dir, &["--json", "get", "secrets", "a"]));
    assert_eq!((record["body"].get("rate"), record["sealed"].clone()), (None, serde_json::json!(["rate"])));
    assert!(stdout(&cairn(&dir, &["query", "secrets"])).contains("[encrypted: key locked]"));
    let out = cairn(&dir, &["patch", "secrets", "a", r#"{"rate": 1}"#]);
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(stderr(&out).contains("`rate`") && stderr(&out).contains("locked"), "{}", stderr(&out));
    let out = cairn_env(&dir, &[("CAIRN_PASSPHRASE", "not the passphrase")], &["get", "secrets", "a"]);
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong key"), "{}", stderr(&out));
    let out = cairn_env(&dir, &[("CAIRN_PASSPHRASE", "a long enough passphrase")], &["key", "unlock"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("unlocked"), "{}", stdout(&out));

    // Rotate onto a key file with a new data key.
    let key_file = tmp.path().join("cairn.key");
    let key = key_file.to_str().expect("utf8");
    assert_eq!(code(&cairn(&dir, &["key", "generate-file", key])), 0);
    assert_ne!(code(&cairn(&dir, &["key", "generate-file", key])), 0, "never overwritten");
    let out = cairn(&dir, &["--passphrase-file", pass, "key", "rotate", "--new-key-file", key, "--reencrypt"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("retired k1"), "{}", stdout(&out));
    let record = json(&cairn(&dir, &["--key-file", key, "--json", "get", "secrets", "a"]));
    assert_eq!(record["body"]["rate"], 42.5);
    assert_eq!(code(&cairn(&dir, &["--passphrase-file", pass, "get", "secrets", "a"])), 6);
    let status = json(&cairn(&dir, &["--json", "key", "status"]));
    assert_eq!(status["keys"][0]["id"], "k2");
    assert_eq!(status["encrypted_fields"], serde_json::json!(["secrets.rate"]));
    let out = cairn(&dir, &["key", "rotate"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let audit = json(&cairn(&dir, &["--json", "audit", "list", "--filter", "action = 'key.rotate'"]));
    assert_eq!(audit.as_array().expect("entries").len(), 1);
}

#[test]
fn a_store_sqlite_cannot_open_is_checked_restored_and_repaired_from_the_command_line() {
    let (_tmp, dir) = store_with_notes();
    for i in 0..5 {
        let body = format!(r#"{{"title": "note {i}"}}"#);
        assert_eq!(code(&cairn(&dir, &["put", "notes", &format!("n{i}"), "--body", &body])), 0);
    }
    let out = cairn(&dir, &["repair"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("no problems found; nothing to repair"), "{}", stdout(&out));
    let out = cairn(&dir, &["--json", "backup", "create"]);
    let id = json(&out)["id"].as_str().expect("id").to_string();

    // One letter of the schema changed: SQLite cannot open the file.
    let db = rusqlite::Connection::open(dir.join("store.db")).expect("db");
    db.execute_batch(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = replace(sql, 'CREATE INDEX', 'CREATE INDEY') WHERE name = 'cairn_changes_by_key';",
    )
    .expect("damage");
    drop(db);
    let out = cairn(&dir, &["check"]);
    assert_eq!(code(&out), 5, "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("malformed database schema"), "names SQLite's error: {}", stdout(&out));
    assert!(stdout(&out).contains("cairn repair"), "{}", stdout(&out));

    // Restore works on it, keeping the damaged files whole.
    let out = cairn(&dir, &["--json", "restore", &id, "--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = json(&out);
    assert!(report["damaged"].as_str().is_some_and(|d| d.contains("malformed")), "{report}");
    let replaced = std::path::PathBuf::from(report["replaced_into"].as_str().expect("replaced"));
    assert!(replaced.join("store.db").exists());
    assert_eq!(code(&cairn(&dir, &["check"])), 0);

    // And so does repair, rebuilding it.
    let db = rusqlite::Connection::open(dir.join("store.db")).expect("db");
    db.execute_batch(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = replace(sql, 'CREATE INDEX', 'CREATE INDEY') WHERE name = 'cairn_changes_by_key';",
    )
    .expect("damage");
    drop(db);
    let out = cairn(&dir, &["repair"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("rebuilt the database"), "{}", stdout(&out));
    assert_eq!(code(&cairn(&dir, &["check"])), 0);
    assert_eq!(json(&cairn(&dir, &["--json", "get", "notes", "n4"]))["body"]["title"], "note 4");
}

#[test]
fn two_writers_at_once_both_succeed_the_second_waiting_for_the_first() {
    let (_tmp, dir) = store_with_notes();
    for round in 0..10 {
        let spawn = |id: String| {
            Command::new(env!("CARGO_BIN_EXE_cairn"))
                .arg("--dir")
                .arg(&dir)
                .args(["--no-auto-backup", "put", "notes", &id, "--body", r#"{"title": "at once"}"#])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        };
        let (a, b) = (spawn(format!("a{round}")), spawn(format!("b{round}")));
        for child in [a, b] {
            let out = child.wait_with_output().expect("wait");
            assert_eq!(code(&out), 0, "round {round}: {}", stderr(&out));
        }
    }
    let out = cairn(&dir, &["--json", "list", "notes", "--limit", "100"]);
    assert_eq!(json(&out).as_array().map(Vec::len), Some(20), "{}", stdout(&out));
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let (_tmp, dir) = store_with_notes();
    for i in 0..300 {
        assert_eq!(
            code(&cairn(
                &dir,
                &["--no-auto-backup", "put", "notes", &format!("n{i:03}"), "--body", r#"{"title": "line"}"#]
            )),
            0
        );
    }
    // A reader that stops after one line: `cairn list notes | head -1`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--dir")
        .arg(&dir)
        .args(["list", "notes", "--limit", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).expect("some output");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked") && !stderr(&out).contains("Broken pipe"), "{}", stderr(&out));
}

#[test]
fn completions_and_man_pages_are_generated() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = cairn(tmp.path(), &["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains("import-legacy"), "{shell} completes every command");
    }
    assert_eq!(code(&cairn(tmp.path(), &["completions", "tcsh"])), 2);
    let out = cairn(tmp.path(), &["man"]);
    assert!(stdout(&out).starts_with(".ie") && stdout(&out).contains("does not lose data"), "{}", stdout(&out));
    let pages = tmp.path().join("man");
    assert_eq!(code(&cairn(tmp.path(), &["man", "--out", pages.to_str().expect("utf8")])), 0);
    assert!(pages.join("cairn.1").exists() && pages.join("cairn-backup.1").exists());
}

#[test]
fn serve_answers_http_and_stops_cleanly_on_sigterm() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    let (tmp, dir) = store_with_notes();
    let password = tmp.path().join("admin-password");
    std::fs::write(&password, "root password\n").expect("password file");
    let logs = tmp.path().join("logs");
    let config = tmp.path().join("cairn.toml");
    std::fs::write(&config, format!("log_dir = {:?}\n", logs.to_str().expect("path"))).expect("config");
    let printed = cairn(&dir, &["serve", "--listen", "127.0.0.1:9999", "--print-config"]);
    assert_eq!(code(&printed), 0, "{}", stderr(&printed));
    assert!(stdout(&printed).contains("listen = \"127.0.0.1:9999\""), "{}", stdout(&printed));
    let layered = cairn_env(
        &dir,
        &[("CAIRN_RATE_WRITE_PER_MINUTE", "7"), ("CAIRN_LISTEN", "127.0.0.1:7777")],
        &["serve", "--listen", "127.0.0.1:9999", "--print-config"],
    );
    let text = stdout(&layered);
    assert!(
        text.contains("rate_write_per_minute = 7") && text.contains("127.0.0.1:9999"),
        "env over defaults, flags over env: {text}"
    );
    let bad = cairn_env(&dir, &[("CAIRN_RATE_WRITE_PER_MINUTE", "lots")], &["serve", "--print-config"]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
    assert!(stderr(&bad).contains("CAIRN_RATE_WRITE_PER_MINUTE"), "{}", stderr(&bad));
    let refused = cairn(&dir, &["serve", "--listen", "0.0.0.0:0"]);
    assert_ne!(code(&refused), 0);
    assert!(stderr(&refused).contains("loopback"), "{}", stderr(&refused));

    let mut server = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--dir")
        .arg(&dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .args(["--bootstrap-admin", "root", "--bootstrap-admin-password-file"])
        .arg(&password)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let address = served_address(&mut server);
    let request = |raw: String| {
        let mut stream = std::net::TcpStream::connect(&address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        stream.write_all(raw.as_bytes()).expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer");
        answer
    };
    let post = |path: &str, auth: &str, body: &str| {
        request(format!(
            "POST {path} HTTP/1.1\r\nHost: cairn\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
    };
    let anonymous = post("/api/collections/notes/records", "", r#"{"title": "x"}"#);
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    let login = post("/api/auth/login", "", r#"{"name": "root", "password": "root password"}"#);
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    let answer: Value = serde_json::from_str(login.split("\r\n\r\n").nth(1).expect("body")).expect("json");
    let auth = format!("Authorization: Bearer {}\r\n", answer["token"].as_str().expect("token"));
    let created = post("/api/collections/notes/records?id=h1", &auth, r#"{"title": "over http"}"#);
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let read = request(format!(
        "GET /api/collections/notes/records/h1 HTTP/1.1\r\nHost: cairn\r\n{auth}Connection: close\r\n\r\n"
    ));
    assert!(read.starts_with("HTTP/1.1 200") && read.contains("over http"), "{read}");

    rustix::process::kill_process(rustix::process::Pid::from_child(&server), rustix::process::Signal::TERM)
        .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    // The log: JSON lines in a daily file, every request's line with its request id, and
    // never the token.
    let files: Vec<_> = std::fs::read_dir(&logs).expect("log folder").flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).expect("log file");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let requests: Vec<&Value> = lines.iter().filter(|l| l["span"]["name"] == "request").collect();
    assert!(requests.len() >= 4, "{text}");
    assert!(requests.iter().all(|l| l["span"]["request_id"].as_str().is_some_and(|id| !id.is_empty())), "{text}");
    assert!(requests.iter().any(|l| l["span"]["path"] == "/api/collections/notes/records/h1"), "{text}");
    assert!(!text.contains(answer["token"].as_str().expect("token")), "the token is never logged");
    assert!(!text.contains("root password"), "nor the password");
    let got = cairn(&dir, &["--json", "get", "notes", "h1"]);
    assert_eq!(json(&got)["body"]["title"], "over http", "the write is in the store, and the lock is free");
}

#[test]
fn users_and_api_keys_from_the_command_line() {
    let (tmp, dir) = store_with_notes();
    let password = tmp.path().join("password");
    std::fs::write(&password, "correct horse\n").expect("password file");
    let password = password.to_str().expect("path");

    let made = cairn(&dir, &["--json", "user", "create", "root", "--admin", "--password-file", password]);
    assert_eq!(code(&made), 0, "{}", stderr(&made));
    assert_eq!(json(&made)["created"], true);
    let again = cairn(&dir, &["--json", "user", "create", "root", "--admin", "--password-file", password]);
    assert_eq!((code(&again), json(&again)["created"].clone()), (0, Value::Bool(false)), "the bootstrap is idempotent");
    let ana = cairn_env(&dir, &[("CAIRN_PASSWORD", "ana's password")], &["user", "create", "ana", "--role", "editor"]);
    assert_eq!(code(&ana), 0, "{}", stderr(&ana));
    let no_password = cairn(&dir, &["user", "create", "bob"]);
    assert_eq!(code(&no_password), 2, "a usage error: {}", stderr(&no_password));
    assert!(stderr(&no_password).contains("--password-file"), "{}", stderr(&no_password));
    let short = cairn_env(&dir, &[("CAIRN_PASSWORD", "short")], &["user", "create", "bob"]);
    assert_ne!(code(&short), 0);
    assert!(stderr(&short).contains("8 characters"), "{}", stderr(&short));

    let listed = cairn(&dir, &["--json", "user", "list"]);
    let names: Vec<String> = json(&listed)
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(names, ["ana", "root"]);
    assert!(!stdout(&listed).contains("argon2"), "no password hash is shown");

    let key = cairn(&dir, &["token", "create", "--user", "ana", "--name", "ci", "--scope", "read"]);
    assert_eq!(code(&key), 0, "{}", stderr(&key));
    let secret = stdout(&key).trim().to_string();
    assert!(secret.starts_with("cairn_k_"), "{secret}");
    let id = secret["cairn_k_".len().."cairn_k_".len() + 16].to_string();
    let tokens = cairn(&dir, &["token", "list", "--user", "ana"]);
    assert!(stdout(&tokens).contains(&id) && !stdout(&tokens).contains(&secret), "{}", stdout(&tokens));
    {
        let store = cairn::Store::open(&dir, cairn::StoreOptions::read_only()).expect("open");
        assert_eq!(store.authenticate(&secret).expect("the key lets ana in").user.name, "ana");
    }
    assert_eq!(code(&cairn(&dir, &["token", "revoke", &id])), 0);
    assert_eq!(code(&cairn(&dir, &["token", "revoke", "0000000000000000"])), 4, "unknown id: not found");
    let disabled = cairn(&dir, &["--json", "user", "disable", "ana"]);
    assert_eq!(json(&disabled)["disabled"], true);
    let store = cairn::Store::open(&dir, cairn::StoreOptions::read_only()).expect("open");
    assert!(store.authenticate(&secret).is_err());
}

/// Starts `cairn serve` on `listen` and returns it with the address it serves on.
fn start_server(dir: &Path, listen: &str, config: &Path, password: &Path) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut server = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--dir")
        .arg(dir)
        .args(["serve", "--listen", listen, "--config"])
        .arg(config)
        .args(["--bootstrap-admin", "root", "--bootstrap-admin-password-file"])
        .arg(password)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut errors = BufReader::new(server.stderr.take().expect("stderr"));
    let mut line = String::new();
    let address = loop {
        line.clear();
        if errors.read_line(&mut line).expect("read stderr") == 0 {
            let status = server.wait().expect("wait");
            panic!("the server stopped before serving: {status:?}");
        }
        if let Some(at) = line.find("on http://") {
            break line[at + "on http://".len()..].trim().to_string();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut errors, &mut std::io::sink()));
    (server, address)
}

/// One HTTP/1.1 exchange; `None` when the connection failed or broke (the server died).
fn http(address: &str, raw: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok()?;
    stream.write_all(raw.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer).filter(|a| a.starts_with("HTTP/1.1 "))
}

#[test]
fn idempotent_creates_survive_a_server_killed_at_random_moments() {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let (tmp, dir) = store_with_notes();
    let password = tmp.path().join("admin-password");
    std::fs::write(&password, "root password\n").expect("password file");
    let config = tmp.path().join("cairn.toml");
    std::fs::write(&config, "rate_write_per_minute = 0\nrate_read_per_minute = 0\nrate_login_per_minute = 0\n")
        .expect("config");
    let (mut server, address) = start_server(&dir, "127.0.0.1:0", &config, &password);

    let deadline = Instant::now() + Duration::from_secs(240);
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let (address, stop, acknowledged) = (address.clone(), stop.clone(), acknowledged.clone());
        std::thread::spawn(move || {
            let login = r#"{"name": "root", "password": "root password"}"#;
            let token = loop {
                assert!(Instant::now() < deadline, "could not sign in");
                let raw = format!(
                    "POST /api/auth/login HTTP/1.1\r\nHost: cairn\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{login}",
                    login.len()
                );
                if let Some(answer) = http(&address, &raw).filter(|a| a.starts_with("HTTP/1.1 200")) {
                    let body: Value =
                        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or("")).expect("json");
                    break body["token"].as_str().expect("token").to_string();
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let mut retries = 0;
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let body = format!(r#"{{"title": "t{i}"}}"#);
                loop {
                    assert!(Instant::now() < deadline, "create {i} never succeeded");
                    let raw = format!(
                        "POST /api/collections/notes/records HTTP/1.1\r\nHost: cairn\r\nAuthorization: Bearer {token}\r\nIdempotency-Key: create-{i}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    match http(&address, &raw) {
                        Some(answer) if answer.starts_with("HTTP/1.1 201") => {
                            acknowledged.lock().expect("lock").push(i);
                            break;
                        }
                        // Anything else — no connection, a broken one, a 409 while the first
                        // try is still running — is retried with the same key.
                        _ => {
                            retries += 1;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                i += 1;
            }
            retries
        })
    };

    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(fastrand::u64(30..250)));
        rustix::process::kill_process(rustix::process::Pid::from_child(&server), rustix::process::Signal::KILL)
            .expect("SIGKILL");
        server.wait().expect("reap");
        (server, _) = start_server(&dir, &address, &config, &password);
    }
    stop.store(true, Ordering::SeqCst);
    let retries = client.join().expect("the client finished");
    rustix::process::kill_process(rustix::process::Pid::from_child(&server), rustix::process::Signal::TERM)
        .expect("SIGTERM");
    assert!(server.wait().expect("stopped").success());
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let creates = acknowledged.len();
    assert!(creates > 20, "the client made {creates} creates across 20 kills");
    assert_eq!(acknowledged, (0..creates).collect::<Vec<_>>(), "every create was acknowledged, in order");
    let store = cairn::Store::open(&dir, cairn::StoreOptions::read_only()).expect("open");
    let mut titles: BTreeMap<String, usize> = BTreeMap::new();
    for record in store.scan("notes", &cairn::ScanOptions::page(None, 10_000)).expect("scan") {
        *titles.entry(record.body["title"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    let twice: Vec<_> = titles.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "created twice: {twice:?}");
    for i in 0..creates {
        assert_eq!(titles.get(&format!("t{i}")), Some(&1), "create {i} exists exactly once");
    }
    assert_eq!(titles.len(), creates, "nothing but the acknowledged creates");
    assert!(retries > 0, "the kills interrupted the client at least once");
}
