//! cairn's integration tests, one binary grouped by theme.

mod access;
mod audit;
mod backup;
mod blobs;
mod changelog;
mod collections;
mod commands;
mod compression;
mod concurrency;
mod crash;
mod encryption;
mod feed;
mod hostile;
mod idempotency;
mod ingest;
mod integrity;
mod jobs;
mod maintenance;
mod migrate;
mod portability;
mod query;
mod realtime;
mod records;
mod repair;
mod reports;
mod rules;
#[path = "../support/scene.rs"]
mod scene;
mod schedules;
mod search;

use std::io::BufRead;
use std::sync::{Arc, Mutex};

use cairn::{CollectionSchema, Store, StoreOptions};

/// A test of this binary re-run as a child process (the crash tests' writers), its stdout
/// collected line by line.
#[derive(Debug)]
pub struct ChildRun {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl ChildRun {
    /// Runs test `name` of this binary with `env` set (which tells it to act as the child).
    pub fn spawn(name: &str, env: &[(&str, &std::ffi::OsStr)]) -> ChildRun {
        let mut command = std::process::Command::new(std::env::current_exe().expect("test binary"));
        command.args([name, "--exact", "--nocapture", "--test-threads=1"]);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may print "test NAME ... " before the child's first line.
                let line = match line.strip_prefix("test ").and_then(|rest| rest.split_once(" ... ")) {
                    Some((_, own)) => own.to_string(),
                    None => line,
                };
                sink.lock().expect("lines").push(line);
            }
        });
        ChildRun { child, lines, reader }
    }

    /// Waits until the child has printed a line that satisfies `ready`; fails if it exits
    /// first.
    pub fn wait_for(&mut self, ready: impl Fn(&str) -> bool) {
        while !self.lines.lock().expect("lines").iter().any(|l| ready(l)) {
            if let Some(status) = self.child.try_wait().expect("child status") {
                panic!("the child exited ({status}) before it was ready");
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// SIGKILLs the child and returns every line it printed.
    pub fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        self.reader.join().expect("reader");
        std::mem::take(&mut *self.lines.lock().expect("lines"))
    }
}

/// A fresh store in a temp directory (kept alive by the returned guard).
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store"), StoreOptions::default()).expect("open store");
    (dir, store)
}

/// `notes`: title (required text), n (integer), tags, email (unique text), due (datetime).
pub fn notes_schema() -> CollectionSchema {
    CollectionSchema::from_json(
        r#"{"name": "notes", "fields": [
            {"name": "title", "type": "text", "required": true, "summary": true},
            {"name": "n", "type": "integer"},
            {"name": "tags", "type": "tags"},
            {"name": "email", "type": "text", "unique": true},
            {"name": "due", "type": "datetime"}]}"#,
        "notes schema",
    )
    .expect("schema parses")
}

pub fn with_notes() -> (tempfile::TempDir, Store) {
    let (dir, store) = temp_store();
    store.create_collection(notes_schema()).expect("create notes");
    (dir, store)
}
