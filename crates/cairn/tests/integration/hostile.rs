//! Hostile folders: exports, backups and legacy data folders made by someone else to reach
//! outside themselves. Each case starts from a genuine folder, changes one thing the way an
//! attacker would, with a canary file and a canary folder outside, and asserts:
//!
//! - a clear refusal (or a skip, for the legacy importer) naming the offending path, and no
//!   fact about a file the folder did not contain (its size or SHA-256);
//! - the canaries' contents and mtimes unchanged, and nothing created outside;
//! - the store unchanged: `check` clean, the same records, no new blobs;
//! - the call returns: every call runs on its own thread under a generous guard timeout that
//!   fails the test (a FIFO or `/dev/zero` must not hang it).
//!
//! Objects planted in a live store (a trigger, a view, a table) are covered by
//! `repair::planted_sql_objects_are_reported_and_quarantined_with_their_sql`.
//! The 300 MB record's memory bound has its own binary (`tests/hostile_memory.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cairn::{
    BackupOptions, CheckOptions, Error, ExportOptions, ImportOptions, LegacyOptions, Manifest, RestoreOptions, Store,
    StoreOptions, Upload,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn quiet() -> impl FnMut(&str, u64, u64) {
    |_, _, _| {}
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// What the canary file holds: a secret the folder must never let out.
const CANARY: &[u8] = b"the user's private canary, never to be read through a hostile folder\n";

/// Runs `work` on its own thread and returns its result, failing the test when it has not
/// returned after two minutes (a hang on a FIFO or an endless device).
fn returns<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
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
fn inventory(dir: &Path) -> BTreeMap<PathBuf, (String, u64, SystemTime, String)> {
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
struct Scene {
    tmp: tempfile::TempDir,
    store: PathBuf,
    outside: PathBuf,
    before: BTreeMap<PathBuf, (String, u64, SystemTime, String)>,
    records: Vec<(String, String, u64)>,
    blobs: Vec<String>,
}

fn scene() -> Scene {
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
    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn open(&self) -> Store {
        Store::open(&self.store, StoreOptions::default()).expect("open the store")
    }

    /// Every record (id, title, version) and every blob hash.
    fn contents(&self) -> (Vec<(String, String, u64)>, Vec<String>) {
        let store = Store::open(&self.store, StoreOptions::read_only()).expect("open read-only");
        let records = store
            .scan("notes", &cairn::ScanOptions::default())
            .expect("scan")
            .into_iter()
            .map(|r| (r.id, r.body["title"].as_str().unwrap_or_default().to_string(), r.version))
            .collect();
        let blobs = store.blobs(None, 1000).expect("blobs").into_iter().map(|b| b.hash).collect();
        (records, blobs)
    }

    /// The canaries are as they were, nothing was added outside, and the store is unchanged
    /// and clean.
    fn assert_untouched(&self) {
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
    fn assert_refusal(&self, err: &Error, path: &str) {
        let text = err.to_string();
        assert!(text.contains(path), "the error should name {path}: {text}");
        assert!(!text.contains(&hex(CANARY)), "the error leaks the canary's hash: {text}");
        assert!(!text.contains(&format!(" {} bytes", CANARY.len())), "the error leaks the canary's size: {text}");
    }

    /// A genuine export of a second store (notes with an attachment), at `exp`.
    fn export(&self) -> PathBuf {
        let source = self.path("source");
        let store = Store::open(&source, StoreOptions::default()).expect("source");
        let schema = r#"{"name": "notes", "fields": [
            {"name": "title", "type": "text", "required": true},
            {"name": "files", "type": "attachments"}]}"#;
        store.create_collection(cairn::CollectionSchema::from_json(schema, "schema").expect("schema")).expect("create");
        store.create_with_id("notes", "x1", json!({"title": "imported"})).expect("note");
        let upload = Upload { name: "x.txt".into(), mime: None };
        store.attach("notes", "x1", "files", &b"exported attachment"[..], &upload).expect("attach");
        let out = self.path("exp");
        store.export(&out, &ExportOptions { blobs: true, ..ExportOptions::default() }, &mut quiet()).expect("export");
        store.close().expect("close");
        out
    }

    /// Imports `folder` into the store on a guarded thread.
    fn import(&self, folder: &Path) -> cairn::Result<cairn::ImportReport> {
        let (store_dir, folder) = (self.store.clone(), folder.to_path_buf());
        returns("import", move || {
            let store = Store::open(&store_dir, StoreOptions::default()).expect("open");
            let result = store.import(&folder, &ImportOptions::default(), &mut quiet());
            store.close().expect("close");
            result
        })
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("json")).expect("write");
}

fn symlink(target: &Path, link: &Path) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    rustix::fs::mknodat(rustix::fs::CWD, path, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0)
        .expect("mkfifo");
}

#[test]
fn an_export_manifest_cannot_name_files_outside_the_export() {
    let scene = scene();
    let exp = scene.export();
    let manifest_path = exp.join("manifest.json");
    let genuine = read_json(&manifest_path);
    let traversal = "../../outside/canary.txt";

    // A blob whose path and hash climb out of the folder.
    let mut manifest = genuine.clone();
    manifest["blobs"].as_array_mut().expect("blobs").push(json!({
        "path": format!("blobs/{traversal}"), "bytes": CANARY.len(), "sha256": traversal
    }));
    write_json(&manifest_path, &manifest);
    let err = scene.import(&exp).expect_err("a blob outside");
    scene.assert_refusal(&err, traversal);
    scene.assert_untouched();

    // The same with a hash that is well formed and a path that is not its own.
    let mut manifest = genuine.clone();
    manifest["blobs"][0]["path"] = json!(format!("blobs/{traversal}"));
    write_json(&manifest_path, &manifest);
    let err = scene.import(&exp).expect_err("a blob path that is not blobs/<hash>");
    scene.assert_refusal(&err, "blobs/../../outside/canary.txt");
    scene.assert_untouched();

    // A collection named to climb out: its file would be outside/canary.jsonl.
    let mut manifest = genuine.clone();
    manifest["collections"][0]["name"] = json!("../../outside/canary");
    manifest["collections"][0]["file"]["path"] = json!("collections/../../outside/canary.jsonl");
    write_json(&manifest_path, &manifest);
    let err = scene.import(&exp).expect_err("a collection outside");
    scene.assert_refusal(&err, "../../outside/canary");
    scene.assert_untouched();

    // An absolute path.
    let mut manifest = genuine;
    manifest["collections"][0]["file"]["path"] = json!(scene.outside.join("canary.jsonl").display().to_string());
    write_json(&manifest_path, &manifest);
    let err = scene.import(&exp).expect_err("absolute");
    scene.assert_refusal(&err, "canary.jsonl");
    scene.assert_untouched();
}

#[test]
fn links_and_special_files_inside_an_export_are_refused_not_followed() {
    let scene = scene();
    let exp = scene.export();
    let manifest = read_json(&exp.join("manifest.json"));
    let collection = exp.join(manifest["collections"][0]["file"]["path"].as_str().expect("path"));
    let blob_rel = manifest["blobs"][0]["path"].as_str().expect("blob").to_string();
    let blob = exp.join(&blob_rel);
    let keep = scene.path("kept");
    std::fs::create_dir_all(&keep).expect("kept");
    std::fs::copy(&collection, keep.join("collection")).expect("keep");
    std::fs::copy(&blob, keep.join("blob")).expect("keep");

    // A collection file that links to a valid collection file outside.
    symlink(&scene.outside.join("canary.jsonl"), &collection);
    let err = scene.import(&exp).expect_err("linked collection");
    scene.assert_refusal(&err, "collections/notes.jsonl");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    scene.assert_untouched();
    std::fs::remove_file(&collection).expect("unlink");
    std::fs::copy(keep.join("collection"), &collection).expect("put back");

    // A blob that links to the canary; and one that links to /dev/zero (23 bytes declared).
    for target in [scene.outside.join("canary.txt"), PathBuf::from("/dev/zero")] {
        symlink(&target, &blob);
        let err = scene.import(&exp).expect_err("linked blob");
        scene.assert_refusal(&err, &blob_rel);
        scene.assert_untouched();
    }
    // A blob folder that is a link (to the canary folder).
    let blobs_dir = exp.join("blobs");
    std::fs::rename(&blobs_dir, scene.path("real-blobs")).expect("move blobs");
    symlink(&scene.outside.join("canary-dir"), &blobs_dir);
    let err = scene.import(&exp).expect_err("linked blob folder");
    scene.assert_refusal(&err, "blobs");
    scene.assert_untouched();
    std::fs::remove_file(&blobs_dir).expect("unlink");
    std::fs::rename(scene.path("real-blobs"), &blobs_dir).expect("put back");

    std::fs::remove_file(&blob).expect("unlink");
    std::fs::copy(keep.join("blob"), &blob).expect("put back");
    // A blob longer than its manifest says: read to one byte past the declared size, no more.
    std::fs::write(&blob, [&b"exported attachment"[..], &[0u8; 1 << 20]].concat()).expect("longer");
    let err = scene.import(&exp).expect_err("longer blob");
    scene.assert_refusal(&err, &blob_rel);
    scene.assert_untouched();
    std::fs::copy(keep.join("blob"), &blob).expect("put back");

    // FIFOs where the manifest and a collection file belong: refused at once, never waited on.
    mkfifo(&collection);
    let err = scene.import(&exp).expect_err("fifo collection");
    scene.assert_refusal(&err, "collections/notes.jsonl");
    scene.assert_untouched();
    std::fs::remove_file(&collection).expect("unlink");
    std::fs::copy(keep.join("collection"), &collection).expect("put back");
    let manifest_path = exp.join("manifest.json");
    mkfifo(&manifest_path);
    let err = scene.import(&exp).expect_err("fifo manifest");
    scene.assert_refusal(&err, "manifest.json");
    scene.assert_untouched();
    std::fs::remove_file(&manifest_path).expect("unlink");
    write_json(&manifest_path, &manifest);

    // Put back, the export imports: each refusal above was about the change alone.
    let report = scene.import(&exp).expect("the genuine export imports");
    assert_eq!(report.collections[0].created, 1);
}

#[test]
fn a_record_longer_than_the_body_limit_is_refused_while_it_is_read() {
    let scene = scene();
    let exp = scene.export();
    let manifest_path = exp.join("manifest.json");
    let mut manifest = read_json(&manifest_path);
    let rel = manifest["collections"][0]["file"]["path"].as_str().expect("path").to_string();
    // One 40 MiB line (the default body limit is far below), declared honestly.
    let title = "x".repeat(40 << 20);
    let line = format!("{{\"id\":\"big\",\"version\":1,\"body\":{{\"title\":\"{title}\"}}}}\n");
    std::fs::write(exp.join(&rel), &line).expect("write");
    manifest["collections"][0]["file"]["bytes"] = json!(line.len());
    manifest["collections"][0]["file"]["sha256"] = json!(hex(line.as_bytes()));
    write_json(&manifest_path, &manifest);
    let err = scene.import(&exp).expect_err("too long");
    assert!(err.to_string().contains(&rel) && err.to_string().contains("records.max_body_bytes"), "{err}");
    scene.assert_untouched();
}

/// Writes a small Taskerino data folder: a session with a screenshot stored by hash.
fn legacy_folder(dir: &Path) -> String {
    let content = b"\x89PNG\r\n\x1a\n a genuine screenshot";
    let hash = hex(content);
    let folder = dir.join("attachments").join(&hash[..2]);
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join(&hash), content).expect("write");
    let sessions = json!([
        {"id": "s1", "name": "One", "status": "completed", "startTime": "2025-10-20T09:00:00Z",
         "screenshots": [{"timestamp": "2025-10-20T09:05:00Z", "attachmentId": "shot-1", "hash": hash}]},
        {"id": "s2", "name": "Two", "status": "active", "startTime": "2025-10-21T09:00:00Z"}
    ]);
    write_json(&dir.join("sessions.json"), &sessions);
    write_json(
        &dir.join("notes.json"),
        &json!([{"id": "n1", "content": "a note", "timestamp": "2025-10-20T09:10:00Z"}]),
    );
    hash
}

fn import_legacy(store: &Path, folder: &Path) -> cairn::Result<cairn::LegacyReport> {
    let (store, folder) = (store.to_path_buf(), folder.to_path_buf());
    returns("import-legacy", move || {
        let store = Store::open(&store, StoreOptions::default()).expect("open");
        let result = store.import_taskerino(&folder, &LegacyOptions::default(), &mut quiet());
        store.close().expect("close");
        result
    })
}

#[test]
fn a_legacy_folder_cannot_bring_in_a_file_it_links_to() {
    let scene = scene();
    let folder = scene.path("taskerino");
    let hash = legacy_folder(&folder);
    // The screenshot named by hash is a link to the canary.
    let file = folder.join("attachments").join(&hash[..2]).join(&hash);
    symlink(&scene.outside.join("canary.txt"), &file);
    let target = scene.path("legacy-store");
    let report = import_legacy(&target, &folder).expect("the rest imports");
    assert!(!report.is_complete(), "the linked attachment is reported");
    let said: Vec<String> = report.skipped.iter().map(|s| format!("{}: {}", s.source, s.reason)).collect();
    assert!(said.iter().any(|s| s.contains(&hash) && s.contains("not a regular file")), "{said:?}");
    assert!(!said.iter().any(|s| s.contains(&hex(CANARY))), "{said:?}");
    let store = Store::open(&target, StoreOptions::read_only()).expect("open");
    assert!(store.open_blob(&hex(CANARY)).expect_err("never stored").is_not_found());
    assert!(store.blobs(None, 100).expect("blobs").is_empty(), "no blob came in through the link");
    assert_eq!(store.count("sessions", None).expect("sessions"), 2);
    let check = store.check(&CheckOptions::default(), &mut quiet()).expect("check");
    assert!(check.is_ok(), "{:?}", check.problems);
    drop(store);

    // A FIFO for sessions.json, and a link for notes.json: skipped without waiting, said.
    let folder = scene.path("taskerino-2");
    legacy_folder(&folder);
    write_json(&folder.join("topics.json"), &json!([{"id": "t1", "name": "Checkout"}]));
    mkfifo(&folder.join("sessions.json"));
    symlink(&scene.outside.join("canary.txt"), &folder.join("notes.json"));
    let report = import_legacy(&scene.path("legacy-store-2"), &folder).expect("returns");
    let said: Vec<String> = report.skipped.iter().map(|s| format!("{}: {}", s.source, s.reason)).collect();
    for name in ["sessions.json", "notes.json"] {
        assert!(said.iter().any(|s| s.contains(name) && s.contains("not a regular file")), "{name}: {said:?}");
    }
    assert!(!said.iter().any(|s| s.contains("canary")), "{said:?}");

    // Into the scene's store, which must not change when the whole folder is a FIFO's sibling.
    let err = import_legacy(&scene.store, &folder.join("sessions.json")).expect_err("a FIFO is not a folder or file");
    scene.assert_refusal(&err, "sessions.json");
    scene.assert_untouched();
}

/// Rewrites a backup's manifest after its files were changed, as an attacker would: sizes,
/// hashes and the checksum made to match again.
fn reseal(backup: &Path) {
    let path = backup.join(cairn::MANIFEST_FILE);
    let mut manifest: Manifest = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("manifest");
    for file in &mut manifest.files {
        let full = backup.join(&file.path);
        if let Ok(bytes) = std::fs::read(&full) {
            file.size = bytes.len() as u64;
            file.sha256 = hex(&bytes);
        }
    }
    manifest.checksum = String::new();
    manifest.checksum = hex(&serde_json::to_vec(&manifest).expect("json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).expect("json")).expect("write");
}

fn backup(scene: &Scene) -> cairn::BackupInfo {
    let store = scene.open();
    let info = store.backup(&BackupOptions::default(), &mut quiet()).expect("backup");
    store.close().expect("close");
    info
}

fn verify(scene: &Scene, id: &str) -> cairn::Result<cairn::BackupInfo> {
    let (root, id) = (cairn::backups_dir(&scene.store), id.to_string());
    returns("backup verify", move || cairn::verify_backup(&root, &id, &mut quiet()))
}

fn restore(scene: &Scene, id: &str, to: Option<PathBuf>) -> cairn::Result<cairn::RestoreReport> {
    let (dir, id) = (scene.store.clone(), id.to_string());
    returns("restore", move || {
        cairn::restore(&dir, &id, &RestoreOptions { to, ..RestoreOptions::default() }, &mut quiet())
    })
}

/// What a verification found, as one text.
fn problems(info: &cairn::BackupInfo) -> String {
    let verification = info.manifest.as_ref().and_then(|m| m.verification.clone()).expect("verified");
    assert!(!verification.ok, "the hostile backup verified");
    verification.problems.join("; ")
}

#[test]
fn a_backup_whose_database_is_a_link_is_neither_verified_nor_restored() {
    let scene = scene();
    let info = backup(&scene);
    // A genuine copy of the database outside, linked from the backup: every hash matches.
    let db = info.path.join(cairn::DB_FILE);
    std::fs::copy(&db, scene.outside.join("copy.db")).expect("copy");
    let scene = Scene { before: inventory(&scene.outside), ..scene };
    symlink(&scene.outside.join("copy.db"), &db);
    reseal(&info.path);

    let verified = verify(&scene, &info.id).expect("verification runs");
    let found = problems(&verified);
    assert!(found.contains("store.db is a link"), "{found}");
    let err = restore(&scene, &info.id, None).expect_err("refused");
    assert!(err.to_string().contains("store.db"), "{err}");
    let err = restore(&scene, &info.id, Some(scene.path("elsewhere"))).expect_err("refused --to");
    assert!(err.to_string().contains("store.db"), "{err}");
    assert!(!scene.path("elsewhere").join(cairn::DB_FILE).exists());
    scene.assert_untouched();

    // A manifest that is a link (verification writes its result back into the manifest).
    let manifest = info.path.join(cairn::MANIFEST_FILE);
    std::fs::copy(&manifest, scene.outside.join("manifest.json")).expect("copy");
    let scene = Scene { before: inventory(&scene.outside), ..scene };
    symlink(&scene.outside.join("manifest.json"), &manifest);
    let verified = verify(&scene, &info.id).expect("reported as damaged");
    assert_eq!(verified.status, cairn::BackupStatus::Damaged);
    let said = verified.error.expect("why");
    assert!(said.contains("manifest.json") && said.contains("symbolic link"), "{said}");
    assert!(restore(&scene, &info.id, None).is_err());
    scene.assert_untouched();
}

#[test]
fn sql_objects_planted_in_a_backup_are_refused_by_verify_and_restore() {
    let scene = scene();
    let info = backup(&scene);
    let db = info.path.join(cairn::DB_FILE);
    let conn = rusqlite::Connection::open(&db).expect("open the backup's copy");
    conn.execute_batch(
        "CREATE TABLE loot (seq INTEGER, after BLOB);
         CREATE TRIGGER grab AFTER INSERT ON cairn_changes BEGIN INSERT INTO loot VALUES (new.seq, new.after); END;
         CREATE VIEW peek AS SELECT * FROM loot;",
    )
    .expect("plant");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").expect("checkpoint");
    drop(conn);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(info.path.join(format!("{}{suffix}", cairn::DB_FILE)));
    }
    reseal(&info.path);

    let verified = verify(&scene, &info.id).expect("verification runs");
    let found = problems(&verified);
    for name in ["loot", "grab", "peek"] {
        assert!(found.contains(name), "{name} not named: {found}");
    }
    let err = restore(&scene, &info.id, None).expect_err("refused");
    assert!(err.to_string().contains("grab"), "{err}");
    let err = restore(&scene, &info.id, Some(scene.path("elsewhere"))).expect_err("refused --to");
    assert!(err.to_string().contains("grab"), "{err}");
    assert!(!scene.path("elsewhere").exists() || !scene.path("elsewhere").join(cairn::DB_FILE).exists());
    scene.assert_untouched();
}

#[test]
fn a_linked_blob_in_a_crafted_backup_is_not_carried_into_new_backups() {
    let scene = scene();
    let first = backup(&scene);
    // Replace the first backup's copy of a blob with a link to the live store's own file:
    // its content (and so its hash) still matches.
    let hash = scene.blobs[0].clone();
    let files = inventory(&first.path);
    let (copy, _) = files.iter().find(|(p, _)| p.file_name().is_some_and(|n| n == hash.as_str())).expect("copied");
    let live = inventory(&scene.store.join("blobs"))
        .into_keys()
        .find(|p| p.file_name().is_some_and(|n| n == hash.as_str()))
        .expect("live blob");
    symlink(&live, copy);

    let found = problems(&verify(&scene, &first.id).expect("verification runs"));
    assert!(found.contains(&hash) && found.contains("link"), "{found}");

    let second = backup(&scene);
    let carried = inventory(&second.path)
        .into_keys()
        .find(|p| p.file_name().is_some_and(|n| n == hash.as_str()))
        .expect("the blob is in the new backup");
    let meta = std::fs::symlink_metadata(&carried).expect("stat");
    assert!(meta.file_type().is_file(), "the new backup holds a regular file, not a link");
    let live_meta = std::fs::metadata(&live).expect("stat");
    use std::os::unix::fs::MetadataExt;
    assert_ne!(meta.ino(), live_meta.ino(), "a backup never shares bytes with the live store");
    let verified = verify(&scene, &second.id).expect("verify");
    assert!(verified.manifest.and_then(|m| m.verification).is_some_and(|v| v.ok));

    // A hard link to the live file is a regular file with the right content: it verifies,
    // but the next backup still copies rather than links it.
    std::fs::remove_file(&carried).expect("unlink");
    std::fs::hard_link(&live, &carried).expect("hard link to the live blob");
    reseal(&second.path);
    let third = backup(&scene);
    let carried = inventory(&third.path)
        .into_keys()
        .find(|p| p.file_name().is_some_and(|n| n == hash.as_str()))
        .expect("the blob is in the third backup");
    assert_ne!(std::fs::metadata(&carried).expect("stat").ino(), live_meta.ino(), "not linked to the live file");
    scene.assert_untouched();
}

#[test]
fn links_in_the_data_directory_are_strays_or_refused_never_followed() {
    let scene = scene();
    // A journal that is a link: moved into quarantine and reported, its target untouched.
    let journal = scene.store.join("store.db-journal");
    symlink(&scene.outside.join("canary.txt"), &journal);
    let store = scene.open();
    let stray = store.strays().into_iter().find(|s| s.path == journal).expect("reported");
    let moved = stray.moved_to.clone().expect("moved");
    assert!(std::fs::symlink_metadata(&moved).expect("in quarantine").file_type().is_symlink());
    store.create_with_id("notes", "after", json!({"title": "writes work"})).expect("write");
    store.delete("notes", "after", None).expect("delete");
    store.purge("notes", "after").expect("purge");
    store.close().expect("close");
    assert!(!journal.exists() && std::fs::symlink_metadata(&journal).is_err());

    // cairn's own entries as links: refused, naming which; allowed only when asked.
    for name in ["store.db-wal", "store.db-shm", "store.db", "blobs"] {
        let own = scene.store.join(name);
        let real = scene.path(&format!("real-{name}"));
        let existed = std::fs::symlink_metadata(&own).is_ok();
        if existed {
            std::fs::rename(&own, &real).expect("move aside");
        } else {
            std::fs::write(&real, b"").expect("target");
        }
        symlink(&real, &own);
        let err = Store::open(&scene.store, StoreOptions::default()).expect_err("a link");
        assert!(err.to_string().contains(&format!("{name} is a symbolic link")), "{err}");
        if name == "blobs" {
            let allowed = StoreOptions { allow_links: true, ..StoreOptions::default() };
            let store = Store::open(&scene.store, allowed).expect("allowed explicitly");
            assert_eq!(store.blobs(None, 10).expect("blobs").len(), 2, "the linked folder is used");
            store.close().expect("close");
        }
        std::fs::remove_file(&own).expect("unlink");
        if existed {
            std::fs::rename(&real, &own).expect("put back");
        }
    }
    let _ = std::fs::remove_file(scene.path("real-store.db-wal"));
    let _ = std::fs::remove_file(scene.path("real-store.db-shm"));
    scene.assert_untouched();
}

#[test]
fn outputs_do_not_clobber_and_keep_the_usual_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let scene = scene();
    let store = Store::open(&scene.store, StoreOptions::read_only()).expect("open");
    let hash = scene.blobs[0].clone();
    let existing = scene.outside.join("canary.txt");
    let err = store.export_blob(&hash, &existing, false).expect_err("exists");
    assert!(err.to_string().contains("canary.txt") && err.to_string().contains("exists"), "{err}");
    scene.assert_untouched();

    // The mode a file the user creates here gets (0666 less the umask), not 0600.
    let probe = scene.path("probe");
    std::fs::write(&probe, b"").expect("probe");
    let usual = std::fs::metadata(&probe).expect("probe").permissions().mode() & 0o777;
    let out = scene.path("blob.out");
    store.export_blob(&hash, &out, false).expect("a new file");
    assert_eq!(std::fs::metadata(&out).expect("out").permissions().mode() & 0o777, usual);
    std::fs::write(&out, b"the user's edits").expect("edit");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    assert!(store.export_blob(&hash, &out, false).is_err(), "not replaced without asking");
    assert_eq!(std::fs::read(&out).expect("read"), b"the user's edits");
    store.export_blob(&hash, &out, true).expect("replaced when asked");
    assert!(std::fs::read(&out).expect("read").starts_with(b"file "));

    let report = scene.path("report.csv");
    std::fs::write(&report, b"keep me").expect("report");
    let options = cairn::ReportOptions::default();
    assert!(store.report("notes", &options, &report).is_err(), "a report does not clobber");
    assert_eq!(std::fs::read(&report).expect("read"), b"keep me");
    store.report("notes", &cairn::ReportOptions { overwrite: true, ..options }, &report).expect("forced");
    assert_eq!(std::fs::metadata(&report).expect("report").permissions().mode() & 0o777, usual);

    let export = scene.path("export");
    std::fs::create_dir(&export).expect("exists");
    assert!(store.export(&export, &ExportOptions::default(), &mut quiet()).is_err(), "an export does not clobber");
    let fresh = scene.path("export-2");
    store.export(&fresh, &ExportOptions::default(), &mut quiet()).expect("export");
    assert_eq!(std::fs::metadata(fresh.join("manifest.json")).expect("m").permissions().mode() & 0o777, usual);
}
