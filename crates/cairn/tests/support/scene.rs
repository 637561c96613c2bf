//! Hostile-folder scenes shared by the test suites of cairn and of the crates built on it: a
//! store with records and attachments, an outside folder with canaries no hostile folder may
//! read or change, and the checks that they were not (see `integration/hostile.rs`).
#![allow(dead_code)] // Each suite that includes this file uses part of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cairn::{CheckOptions, Error, Store, StoreOptions, Upload};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub fn quiet() -> impl FnMut(&str, u64, u64) {
    |_, _, _| {}
}

pub fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// What the canary file holds: a secret the folder must never let out.
pub const CANARY: &[u8] = b"the user's private canary, never to be read through a hostile folder\n";

/// Runs `work` on its own thread and returns its result, failing the test when it has not
/// returned after two minutes (a hang on a FIFO or an endless device).
pub fn returns<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(value) => value,
        Err(_) => panic!("{what} did not return: it hangs on the hostile folder"),
    }
}

/// Every path under `dir` with its kind, size, mtime and (for files) content hash.
pub fn inventory(dir: &Path) -> BTreeMap<PathBuf, (String, u64, SystemTime, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("list").flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            let kind = format!("{:?}", meta.file_type());
            let content = if meta.is_file() { hex(&std::fs::read(&path).expect("read")) } else { String::new() };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path, (kind, meta.len(), meta.modified().expect("mtime"), content));
        }
    }
    out
}

/// A store with records and attachments, and an outside folder with a canary file and a
/// canary folder, which no hostile folder may read, change or add to.
pub struct Scene {
    pub tmp: tempfile::TempDir,
    pub store: PathBuf,
    pub outside: PathBuf,
    pub before: BTreeMap<PathBuf, (String, u64, SystemTime, String)>,
    pub records: Vec<(String, String, u64)>,
    pub blobs: Vec<String>,
}

pub fn scene() -> Scene {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store_dir = tmp.path().join("store");
    let store = Store::open(&store_dir, StoreOptions::default()).expect("open");
    let schema = r#"{"name": "notes", "fields": [
        {"name": "title", "type": "text", "required": true},
        {"name": "files", "type": "attachments"}]}"#;
    store.create_collection(cairn::CollectionSchema::from_json(schema, "schema").expect("schema")).expect("create");
    for i in 0..6 {
        store.create_with_id("notes", &format!("n{i}"), json!({"title": format!("note {i}")})).expect("note");
    }
    for i in 0..2 {
        let upload = Upload { name: format!("f{i}.txt"), mime: None };
        store.attach("notes", &format!("n{i}"), "files", format!("file {i}").as_bytes(), &upload).expect("attach");
    }
    store.close().expect("close");

    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("canary-dir")).expect("outside");
    std::fs::write(outside.join("canary.txt"), CANARY).expect("canary");
    std::fs::write(outside.join("canary-dir/inside.txt"), CANARY).expect("canary in dir");
    // Looks like a collection file: what a followed link would import.
    std::fs::write(outside.join("canary.jsonl"), "{\"id\":\"loot\",\"version\":1,\"body\":{\"title\":\"loot\"}}\n")
        .expect("canary jsonl");
    let mut scene =
        Scene { before: inventory(&outside), tmp, store: store_dir, outside, records: Vec::new(), blobs: Vec::new() };
    (scene.records, scene.blobs) = scene.contents();
    scene
}

impl Scene {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub fn open(&self) -> Store {
        Store::open(&self.store, StoreOptions::default()).expect("open the store")
    }

    /// Every record (id, title, version) and every blob hash.
    pub fn contents(&self) -> (Vec<(String, String, u64)>, Vec<String>) {
        let store = Store::open(&self.store, StoreOptions::read_only()).expect("open read-only");
        let records = store
            .scan("notes", &cairn::ScanOptions::default())
            .expect("scan")
            .into_iter()
            .map(|r| (r.id, r.body["title"].as_str().unwrap_or_default().to_string(), r.version))
            .collect();
        let blobs = store.blobs(None, 1000).expect("blobs").into_iter().map(|b| b.hash.to_string()).collect();
        (records, blobs)
    }

    /// The canaries are as they were, nothing was added outside, and the store is unchanged
    /// and clean.
    pub fn assert_untouched(&self) {
        assert_eq!(inventory(&self.outside), self.before, "the outside folder changed");
        let (records, blobs) = self.contents();
        assert_eq!(records, self.records, "the store's records changed");
        assert_eq!(blobs, self.blobs, "the store's blobs changed");
        let store = Store::open(&self.store, StoreOptions::read_only()).expect("open read-only");
        let check = store.check(&CheckOptions::default(), &mut quiet()).expect("check");
        assert!(check.is_ok(), "{:?}", check.problems);
        assert!(!self.store.join("blobs").read_dir().expect("blobs").any(|e| {
            let name = e.expect("entry").file_name();
            name.to_string_lossy().starts_with(".upload")
        }));
    }

    /// An error's text names `path` and tells nothing about the canary (its size or hash).
    pub fn assert_refusal(&self, err: &Error, path: &str) {
        let text = err.to_string();
        assert!(text.contains(path), "the error should name {path}: {text}");
        assert!(!text.contains(&hex(CANARY)), "the error leaks the canary's hash: {text}");
        assert!(!text.contains(&format!(" {} bytes", CANARY.len())), "the error leaks the canary's size: {text}");
    }
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

pub fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("json")).expect("write");
}

pub fn symlink(target: &Path, link: &Path) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

pub fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    rustix::fs::mknodat(rustix::fs::CWD, path, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0)
        .expect("mkfifo");
}
