//! Hostile folders: exports and backups made by someone else to reach
//! outside themselves. Each case starts from a genuine folder, changes one thing the way an
//! attacker would, with a canary file and a canary folder outside, and asserts:
//!
//! - a clear refusal naming the offending path, and no
//!   fact about a file the folder did not contain (its size or SHA-256);
//! - the canaries' contents and mtimes unchanged, and nothing created outside;
//! - the store unchanged: `check` clean, the same records, no new blobs;
//! - the call returns: every call runs on its own thread under a generous guard timeout that
//!   fails the test (a FIFO or `/dev/zero` must not hang it).
//!
//! Objects planted in a live store (a trigger, a view, a table) are covered by
//! `repair::planted_sql_objects_are_reported_and_quarantined_with_their_sql`.
//! The 300 MB record's memory bound has its own binary (`tests/hostile_memory.rs`); legacy
//! Taskerino folders are covered in `cairn-taskerino`'s own tests.

use std::path::{Path, PathBuf};

use cairn::{BackupOptions, ExportOptions, ImportOptions, Manifest, RestoreOptions, Store, StoreOptions, Upload};
use serde_json::json;

use crate::scene::*;

impl Scene {
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

/// Rewrites a backup's manifest after its files were changed, as an attacker would: sizes,
/// hashes and the checksum made to match again.
fn reseal(backup: &Path) {
    let path = backup.join(cairn::layout::MANIFEST_FILE);
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
    let (backups, id) = (cairn::Backups::of(&scene.store), id.to_string());
    returns("backup verify", move || backups.verify(&id, &mut quiet()))
}

fn restore(scene: &Scene, id: &str, to: Option<PathBuf>) -> cairn::Result<cairn::RestoreReport> {
    let (dir, id) = (scene.store.clone(), id.to_string());
    returns("restore", move || {
        cairn::Store::restore(&dir, &id, &RestoreOptions { to, ..RestoreOptions::default() }, &mut quiet())
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
    let db = info.path.join(cairn::layout::DB_FILE);
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
    assert!(!scene.path("elsewhere").join(cairn::layout::DB_FILE).exists());
    scene.assert_untouched();

    // A manifest that is a link (verification writes its result back into the manifest).
    let manifest = info.path.join(cairn::layout::MANIFEST_FILE);
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
    let db = info.path.join(cairn::layout::DB_FILE);
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
        let _ = std::fs::remove_file(info.path.join(format!("{}{suffix}", cairn::layout::DB_FILE)));
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
    assert!(!scene.path("elsewhere").exists() || !scene.path("elsewhere").join(cairn::layout::DB_FILE).exists());
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
