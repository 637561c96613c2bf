//! Backups, restore and the stray-file guard (SAFE-1, SAFE-2, SAFE-5): verified snapshots
//! under load, refusal of damaged or edited backups, a full disk, rotation, automatic backups
//! and their events, restores killed at random moments.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cairn::{
    BackupOptions, BackupReason, BackupStatus, CheckOptions, CollectionSchema, Error, RestoreOptions, Store,
    StoreEvent, StoreOptions, Upload,
};
use serde_json::{json, Map, Value};

/// `docs`: title (full-text), n (indexed integer), tags (indexed), file (attachment).
pub fn docs_schema() -> CollectionSchema {
    CollectionSchema::from_json(
        r#"{"name": "docs", "fields": [
            {"name": "title", "type": "text", "required": true, "fulltext": true},
            {"name": "n", "type": "integer", "indexed": true},
            {"name": "tags", "type": "tags", "indexed": true},
            {"name": "file", "type": "attachment"}]}"#,
        "docs",
    )
    .expect("schema")
}

/// A store with `records` docs, every fifth with an attachment (some shared, some
/// compressible), a few patched and one deleted.
pub fn populated(dir: &Path, records: usize) -> Store {
    let store = Store::open(dir, StoreOptions::default()).expect("open");
    store.create_collection(docs_schema()).expect("docs");
    for i in 0..records {
        let body =
            json!({"title": format!("document {i} about topic {}", i % 7), "n": i, "tags": [format!("t{}", i % 3)]});
        store.create_with_id("docs", &format!("d{i:03}"), body).expect("create");
        if i % 5 == 0 {
            let content =
                if i % 10 == 0 { format!("shared text {} ", i % 20).repeat(300) } else { format!("note {i}") };
            let upload = Upload { name: format!("f{i}.txt"), mime: None };
            store.attach("docs", &format!("d{i:03}"), "file", content.as_bytes(), &upload).expect("attach");
        }
    }
    store.patch("docs", "d001", json!({"title": "edited"}), None).expect("patch");
    store.delete("docs", "d002", None).expect("delete");
    store
}

/// Every record of a collection (deleted ones too): id -> (version, deleted, body).
pub fn snapshot(store: &Store, collection: &str) -> BTreeMap<String, (u64, bool, Map<String, Value>)> {
    let mut out = BTreeMap::new();
    let mut scan = cairn::ScanOptions { include_deleted: true, ..cairn::ScanOptions::default() };
    loop {
        let page = store.scan(collection, &scan).expect("scan");
        let Some(last) = page.last() else { break };
        scan.after = Some(last.id.clone());
        for r in page {
            out.insert(r.id.clone(), (r.version, r.deleted_at.is_some(), r.body));
        }
    }
    out
}

fn quiet() -> impl FnMut(&str, u64, u64) {
    |_, _, _| {}
}

#[test]
fn a_backup_is_verified_listed_and_readable_as_a_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(&tmp.path().join("store"), 30);
    let mut phases = Vec::new();
    let info =
        store.backup(&BackupOptions::default(), &mut |phase, _, _| phases.push(phase.to_string())).expect("backup");
    assert_eq!(info.status, BackupStatus::Good);
    assert!(phases.iter().any(|p| p == "snapshot") && phases.iter().any(|p| p == "blobs"), "{phases:?}");
    let manifest = info.manifest.clone().expect("manifest");
    assert_eq!(manifest.seq, store.last_seq().expect("seq"));
    assert_eq!(manifest.collections[0].live, 29);
    assert_eq!(manifest.collections[0].deleted, 1);
    assert_eq!(manifest.blobs, store.blobs(None, 100).expect("blobs").len() as u64);
    assert!(manifest.files.iter().any(|f| f.path == cairn::layout::DB_FILE));

    let listed = store.backups().expect("list");
    assert_eq!((listed.len(), listed[0].id.as_str(), listed[0].status), (1, info.id.as_str(), BackupStatus::Good));
    let copy = Store::open(&info.path, StoreOptions::read_only()).expect("a backup is a store");
    assert_eq!(snapshot(&copy, "docs"), snapshot(&store, "docs"));
    let hash = store.get("docs", "d010").expect("d010").body["file"]["hash"].as_str().expect("hash").to_string();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut copy.open_blob(&hash).expect("blob in backup"), &mut bytes).expect("read");
    assert!(String::from_utf8_lossy(&bytes).starts_with("shared text"));
    assert!(store.verify_backup(&info.id, &mut quiet()).expect("verify").status == BackupStatus::Good);

    // A second backup links the blobs the first one holds instead of copying them.
    let second = store.backup(&BackupOptions::default(), &mut quiet()).expect("second");
    let stats = second.manifest.expect("manifest").stats;
    assert_eq!((stats.blobs_copied, stats.blobs_linked), (0, manifest.blobs), "{stats:?}");
    assert!(store.verify_backup("no-such-backup", &mut quiet()).expect_err("unknown").is_not_found());
}

#[test]
fn a_backup_under_load_equals_the_store_at_its_seq() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(&tmp.path().join("store"), 20);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 5_000 {
                    let id = format!("w{w}-{}", i % 40);
                    let body = json!({"title": format!("writer {w} step {i}"), "n": i});
                    store.put("docs", &id, body, None).ok();
                    if i % 7 == 3 {
                        let _ = store.delete("docs", &id, None);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    while store.last_seq().expect("seq").get() < 300 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let info = store.backup(&BackupOptions::default(), &mut quiet()).expect("backup under load");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let manifest = info.manifest.expect("manifest");
    assert!(store.last_seq().expect("seq").get() > manifest.seq.get(), "writers went on after the snapshot");

    // The store's state at the manifest's seq, replayed from its change log.
    let mut expected: BTreeMap<String, (u64, bool, Map<String, Value>)> = BTreeMap::new();
    for change in
        store.changes_since(cairn::Seq(0), 1_000_000).expect("changes").into_iter().filter(|c| c.seq <= manifest.seq)
    {
        if change.collection != "docs" || change.id.is_empty() {
            continue;
        }
        match change.after {
            Some(Value::Object(body)) => {
                expected.insert(change.id.clone(), (change.version, change.deleted, body));
            }
            _ => {
                expected.remove(&change.id);
            }
        }
    }
    let copy = Store::open(&info.path, StoreOptions::read_only()).expect("backup");
    assert_eq!(snapshot(&copy, "docs"), expected);
    let counts = &manifest.collections[0];
    assert_eq!(counts.live + counts.deleted, expected.len() as u64);
    assert_eq!(counts.deleted, expected.values().filter(|v| v.1).count() as u64);
}

#[test]
fn damaged_or_edited_backups_are_refused_by_restore() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = populated(&dir, 12);
    let damaged = store.backup(&BackupOptions::default(), &mut quiet()).expect("first");
    let edited = store.backup(&BackupOptions::default(), &mut quiet()).expect("second");
    store.close().expect("close");

    // One flipped byte in the copy of the database.
    let db = damaged.path.join(cairn::layout::DB_FILE);
    let mut bytes = std::fs::read(&db).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&db, bytes).expect("damage");
    let err = cairn::Store::restore(&dir, &damaged.id, &RestoreOptions::default(), &mut quiet()).expect_err("damaged");
    assert!(matches!(&err, Error::BackupNotRestorable { reason, .. } if reason.contains("verification")), "{err}");
    let listed = cairn::Backups::of(&dir).list().expect("list");
    assert_eq!(listed.iter().find(|b| b.id == damaged.id).expect("listed").status, BackupStatus::Damaged);

    // A manifest edited by hand (a count changed) no longer matches its checksum.
    let manifest = edited.path.join(cairn::layout::MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(&manifest, text.replacen("\"live\": 11", "\"live\": 12", 1)).expect("edit");
    let err = cairn::Store::restore(&dir, &edited.id, &RestoreOptions::default(), &mut quiet()).expect_err("edited");
    assert!(matches!(&err, Error::BackupNotRestorable { reason, .. } if reason.contains("edited")), "{err}");
    assert!(cairn::Store::restore(&dir, "nope", &RestoreOptions::default(), &mut quiet())
        .expect_err("unknown")
        .is_not_found());

    // Nothing was touched: the store still opens with all its records and no pre-restore backup was taken.
    let store = Store::open(&dir, StoreOptions::default()).expect("reopen");
    assert_eq!(snapshot(&store, "docs").len(), 12);
    assert_eq!(store.backups().expect("list").len(), 2);

    // Rotation keeps damaged backups for inspection, and says so.
    let events = store.events();
    assert!(store.rotate_backups().expect("rotate").is_empty());
    match events.recv_timeout(Duration::from_secs(10)).expect("an event") {
        StoreEvent::RotationProblem { detail } => assert!(detail.contains("damaged"), "{detail}"),
        other => panic!("expected a rotation problem, got {other:?}"),
    }
}

#[test]
fn an_interrupted_restore_is_finished_by_a_writable_open_not_a_read_only_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    populated(&dir, 3).close().expect("close");
    // What a crash right after the journal was written leaves: nothing staged yet.
    let journal =
        json!({"backup": "b", "staging": dir.join(".restore-staging"), "replaced": dir.join("quarantine/replaced-x")});
    std::fs::write(dir.join("restore.json"), journal.to_string()).expect("journal");
    let err = Store::open(&dir, StoreOptions::read_only()).expect_err("read-only");
    assert!(matches!(&err, Error::NotAllowed(m) if m.contains("interrupted")), "{err}");
    std::fs::write(dir.join("restore.json"), b"{not json").expect("damaged journal");
    assert!(Store::open(&dir, StoreOptions::default()).expect_err("damaged journal").is_corruption());
    std::fs::write(dir.join("restore.json"), journal.to_string()).expect("journal");
    std::fs::create_dir_all(dir.join(".restore-staging")).expect("staging");
    // restore writes its journal only once staging is complete: stage as it would.
    std::fs::copy(dir.join(cairn::layout::DB_FILE), dir.join(".restore-staging").join(cairn::layout::DB_FILE))
        .expect("stage db");
    std::fs::rename(dir.join(cairn::layout::BLOBS_DIR), dir.join(".restore-staging").join(cairn::layout::BLOBS_DIR))
        .expect("stage blobs");
    let store = Store::open(&dir, StoreOptions::default()).expect("finishes the restore");
    assert_eq!(snapshot(&store, "docs").len(), 3);
    assert!(!dir.join("restore.json").exists() && !dir.join(".restore-staging").exists());
    assert!(dir.join("quarantine/replaced-x").join(cairn::layout::DB_FILE).exists(), "the replaced file is kept");
}

/// Mounts a tmpfs of `bytes` at `dir`; false when this machine does not let the test.
fn mount_small_fs(dir: &Path, bytes: u64) -> bool {
    std::fs::create_dir_all(dir).expect("mount point");
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_full_disk_fails_the_backup_loudly_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = populated(&dir, 60);
    let before = snapshot(&store, "docs");
    let events = store.events();
    let small = tmp.path().join("small");
    let mounted = mount_small_fs(&small, 64 * 1024);
    // Without a small file system, an I/O error injected by pointing the backups at a path
    // below a regular file, which no directory can be created in.
    let root = if mounted {
        small.join("backups")
    } else {
        std::fs::write(tmp.path().join("file"), b"not a directory").expect("file");
        tmp.path().join("file").join("backups")
    };
    let options = BackupOptions { dir: Some(root.clone()), ..BackupOptions::default() };
    let err = store.backup(&options, &mut quiet()).expect_err("no room");
    assert!(matches!(&err, Error::BackupFailed { .. }), "{err}");
    if mounted {
        assert!(err.to_string().to_lowercase().contains("full") || err.to_string().contains("space"), "{err}");
    }
    assert!(cairn::Backups::at(&root).list().expect("list").iter().all(|b| b.status == BackupStatus::Failed));
    let leftovers: Vec<_> =
        std::fs::read_dir(&root).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(leftovers.iter().all(|n| n == "failed"), "no partial backup left: {leftovers:?}");
    match events.recv_timeout(Duration::from_secs(10)).expect("an event") {
        StoreEvent::BackupFailed { error, .. } => assert!(!error.is_empty()),
        other => panic!("expected a failure event, got {other:?}"),
    }
    assert_eq!(snapshot(&store, "docs"), before, "the live store is untouched");
    assert!(store.check(&CheckOptions::default(), &mut quiet()).expect("check").is_ok());
    if mounted {
        let _ = std::process::Command::new("umount").arg(&small).status();
    }
}

#[test]
fn rotation_settings_apply_after_each_backup_and_keep_the_newest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = populated(&tmp.path().join("store"), 5);
    store.set_setting(cairn::settings::BACKUP_KEEP_LAST, json!(2)).expect("keep_last");
    store.set_setting(cairn::settings::BACKUP_KEEP_DAILY, json!(0)).expect("keep_daily");
    store.set_setting(cairn::settings::BACKUP_KEEP_WEEKLY, json!(0)).expect("keep_weekly");
    let mut ids = Vec::new();
    for i in 0..4 {
        store.create("docs", json!({"title": format!("more {i}")})).expect("write");
        ids.push(store.backup(&BackupOptions::default(), &mut quiet()).expect("backup").id);
    }
    let kept: Vec<String> = store.backups().expect("list").into_iter().map(|b| b.id).collect();
    assert_eq!(kept, vec![ids[3].clone(), ids[2].clone()]);
    assert!(store.set_setting(cairn::settings::BACKUP_KEEP_LAST, json!(0)).is_err(), "the newest is always kept");
}

#[test]
fn automatic_backups_on_open_close_and_interval_send_events() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    populated(&dir, 5).close().expect("close");
    let auto = StoreOptions { auto_backup: true, ..StoreOptions::existing() };
    let store = Store::open(&dir, auto.clone()).expect("open");
    let reasons = |store: &Store| -> Vec<String> {
        store
            .backups()
            .expect("list")
            .iter()
            .filter_map(|b| b.manifest.as_ref().map(|m| m.reason.as_str().to_string()))
            .collect()
    };
    assert_eq!(reasons(&store), ["on_open"], "no backup existed");
    store.close().expect("close");
    let store = Store::open(&dir, auto.clone()).expect("open again");
    assert_eq!(reasons(&store).len(), 1, "the newest is fresh: none taken");
    store.set_setting(cairn::settings::BACKUP_ON_CLOSE, json!(true)).expect("on_close");
    store.set_setting(cairn::settings::BACKUP_INTERVAL_SECONDS, json!(1)).expect("interval");
    store.close().expect("close with a backup");
    let store = Store::open(&dir, auto).expect("open with an interval");
    assert!(reasons(&store).contains(&"on_close".to_string()));
    let events = store.events();
    // A bounded wait for the interval thread's backup (it runs every second).
    let event = events.recv_timeout(Duration::from_secs(60)).expect("interval backup event");
    assert!(matches!(event, StoreEvent::BackupCreated { reason: BackupReason::Interval, .. }), "{event:?}");
    store.set_setting(cairn::settings::BACKUP_INTERVAL_SECONDS, json!(0)).expect("off");
}

#[test]
fn stray_files_are_moved_to_quarantine_on_open_and_by_check() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    populated(&dir, 3).close().expect("close");
    std::fs::copy(dir.join(cairn::layout::DB_FILE), dir.join("store.db.bak")).expect("copy");
    std::fs::write(dir.join("store (1).db-wal"), b"orphan").expect("wal");
    std::fs::write(dir.join("README.txt"), b"mine").expect("user file");
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    let mut moved: Vec<String> =
        store.strays().iter().map(|s| s.path.file_name().expect("name").to_string_lossy().into_owned()).collect();
    moved.sort();
    assert_eq!(moved, ["store (1).db-wal", "store.db.bak"]);
    for stray in store.strays() {
        assert!(stray
            .moved_to
            .as_ref()
            .is_some_and(|p| p.exists() && p.starts_with(dir.join(cairn::layout::QUARANTINE_DIR))));
    }
    assert!(dir.join("README.txt").exists(), "files that are not databases stay");
    // One appearing while the store is open is caught by check.
    std::fs::write(dir.join("store.db-journal"), b"rollback journal").expect("journal");
    let report = store.check(&CheckOptions::default(), &mut quiet()).expect("check");
    assert!(report.is_ok(), "moved strays are reported, not problems: {:?}", report.problems);
    assert_eq!(report.strays.len(), 3);
    assert!(!dir.join("store.db-journal").exists());
}

#[test]
fn restore_into_another_directory_and_of_single_records() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = populated(&dir, 15);
    let info = store.backup(&BackupOptions::default(), &mut quiet()).expect("backup");
    let original = snapshot(&store, "docs");
    let gone_hash = store.get("docs", "d005").expect("d005").body["file"]["hash"].as_str().expect("hash").to_string();
    store.patch("docs", "d003", json!({"title": "changed after the backup"}), None).expect("patch");
    store.delete("docs", "d004", None).expect("delete");
    store.delete("docs", "d005", None).expect("delete");
    store.purge("docs", "d005").expect("purge");
    store.gc_blobs(&cairn::GcOptions { grace: Some(Duration::ZERO), dry_run: false }).expect("gc");
    assert!(store.blob(&gone_hash).is_err(), "its attachment was collected");

    let one = store.restore_records(&info.id, "docs", Some("d003")).expect("one record");
    assert_eq!(one.restored, ["d003"]);
    assert_eq!(store.get("docs", "d003").expect("d003").body, original["d003"].2);
    assert_eq!(store.get("docs", "d003").expect("d003").version, 3, "a new version, history kept");
    let all = store.restore_records(&info.id, "docs", None).expect("collection");
    assert_eq!(all.restored, ["d004", "d005"]);
    assert_eq!(all.blobs_copied, 1);
    assert!(store.open_blob(&gone_hash).is_ok());
    assert_eq!(store.get("docs", "d005").expect("d005").body, original["d005"].2);

    let elsewhere = tmp.path().join("copy");
    let report = cairn::Store::restore(
        &dir,
        &info.id,
        &RestoreOptions { to: Some(elsewhere.clone()), ..RestoreOptions::default() },
        &mut quiet(),
    )
    .expect("restore elsewhere");
    assert!(report.pre_restore_backup.is_none());
    let copy = Store::open(&elsewhere, StoreOptions::default()).expect("open copy");
    assert_eq!(snapshot(&copy, "docs"), original);
    assert!(copy.check(&CheckOptions::default(), &mut quiet()).expect("check").is_ok());
    let err = cairn::Store::restore(
        &dir,
        &info.id,
        &RestoreOptions { to: Some(elsewhere), ..RestoreOptions::default() },
        &mut quiet(),
    );
    assert!(matches!(err, Err(Error::PathExists { .. })), "{err:?}");
    assert!(
        matches!(
            cairn::Store::restore(&dir, &info.id, &RestoreOptions::default(), &mut quiet()),
            Err(Error::Locked { .. })
        ),
        "the store is open in this process"
    );
}

const RESTORE_CHILD_ENV: &str = "CAIRN_RESTORE_CHILD_DIR";
const RESTORE_TEST: &str = "backup::a_restore_killed_at_any_moment_leaves_the_old_or_the_new_state";

#[test]
fn a_restore_killed_at_any_moment_leaves_the_old_or_the_new_state() {
    if let Ok(dir) = std::env::var(RESTORE_CHILD_ENV) {
        let id = std::env::var("CAIRN_RESTORE_ID").expect("id");
        println!("START");
        cairn::Store::restore(Path::new(&dir), &id, &RestoreOptions::default(), &mut |_, _, _| {})
            .expect("child restore");
        println!("DONE");
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let template = tmp.path().join("template");
    let store = populated(&template, 40);
    let backup_state = snapshot(&store, "docs");
    let id = store.backup(&BackupOptions::default(), &mut quiet()).expect("backup").id;
    for i in 0..40 {
        store.patch("docs", &format!("d{i:03}"), json!({"title": format!("after the backup {i}")}), None).ok();
    }
    store.create_with_id("docs", "late", json!({"title": "only in the current state"})).expect("late");
    let current_state = snapshot(&store, "docs");
    store.close().expect("close");

    let (mut old, mut new) = (0, 0);
    for cycle in 0..22 {
        let dir = tmp.path().join(format!("cycle{cycle}"));
        copy_dir(&template, &dir);
        let mut child = crate::ChildRun::spawn(
            RESTORE_TEST,
            &[(RESTORE_CHILD_ENV, dir.as_os_str()), ("CAIRN_RESTORE_ID", std::ffi::OsStr::new(&id))],
        );
        child.wait_for(|l| l == "START");
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..250)));
        child.kill();

        let store = Store::open(&dir, StoreOptions::default()).unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        let state = snapshot(&store, "docs");
        if state == backup_state {
            new += 1;
        } else {
            assert_eq!(state, current_state, "cycle {cycle}: neither the old nor the new state");
            old += 1;
        }
        let report = store.check(&CheckOptions::default(), &mut quiet()).expect("check");
        assert!(report.is_ok(), "cycle {cycle}: {:?}", report.problems);
        assert!(!dir.join(".restore-staging").exists() && !dir.join("restore.json").exists(), "cycle {cycle}");
        store.close().expect("close");
        std::fs::remove_dir_all(&dir).expect("clean the cycle's copy");
    }
    assert!(old + new == 22);
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "cairn.lock" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

const KILLED_BACKUPS: &str = "backup::backups_killed_midway_leave_folders_that_check_reports_and_the_next_open_removes";
const KILLED_BACKUPS_CHILD: &str = "CAIRN_BACKUP_CHILD";

/// The `.tmp-*` folders in a store's backups.
fn tmp_folders(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(cairn::Backups::of(dir).root())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

#[test]
fn backups_killed_midway_leave_folders_that_check_reports_and_the_next_open_removes() {
    if let Some(dir) = std::env::var_os(KILLED_BACKUPS_CHILD) {
        // The child: opens with automatic backups (one on open), takes manual ones, over and
        // over, saying how far it got.
        let dir = std::path::PathBuf::from(dir);
        let mut step = 0u64;
        loop {
            let options = StoreOptions { auto_backup: true, ..StoreOptions::default() };
            let store = Store::open(&dir, options).expect("open");
            store
                .backup(&BackupOptions::default(), &mut |_, _, _| {
                    step += 1;
                    println!("step {step}");
                })
                .expect("backup");
            store.close().expect("close");
        }
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    {
        let store = populated(&dir, 60);
        // Some weight, so that a backup takes a while: incompressible attachments.
        for i in 0..12 {
            let bytes: Vec<u8> = (0..256 * 1024).map(|_| fastrand::u8(..)).collect();
            let upload = Upload { name: format!("noise{i}.bin"), mime: None };
            store.attach("docs", &format!("d{:03}", i * 5), "file", &bytes[..], &upload).expect("attach");
        }
        store.set_setting(cairn::settings::BACKUP_ON_OPEN_AFTER_SECONDS, json!(1)).expect("backup on every open");
        store.set_setting(cairn::settings::BACKUP_KEEP_LAST, json!(3)).expect("keep");
        store.close().expect("close");
    }
    let mut interrupted = 0;
    for cycle in 0..24 {
        let mut child = crate::ChildRun::spawn(KILLED_BACKUPS, &[(KILLED_BACKUPS_CHILD, dir.as_os_str())]);
        let at = format!("step {}", fastrand::u64(1..60));
        child.wait_for(|l| l == at);
        child.kill();
        let left = tmp_folders(&dir);
        if !left.is_empty() {
            interrupted += 1;
            // Reported while they exist (by a reader, which removes nothing)…
            let reader = Store::open(&dir, StoreOptions::read_only()).expect("read-only");
            let report = reader.check(&CheckOptions { blobs: false }, &mut quiet()).expect("check");
            let reported: Vec<_> = report.leftovers.iter().map(|l| l.path.clone()).collect();
            assert_eq!(reported, left, "cycle {cycle}: check names every leftover");
            assert!(report.of_kind(cairn::ProblemKind::Leftover).count() == left.len());
            assert!(tmp_folders(&dir) == left, "cycle {cycle}: a check removes nothing");
        }
        // …and gone after the next writable open.
        let store = Store::open(&dir, StoreOptions::default()).expect("open");
        assert!(tmp_folders(&dir).is_empty(), "cycle {cycle}: a leftover survived the open");
        assert_eq!(store.leftovers().len(), left.len(), "cycle {cycle}");
        let report = store.check(&CheckOptions { blobs: false }, &mut quiet()).expect("check");
        assert!(report.is_ok(), "cycle {cycle}: {:?}", report.problems);
        store.close().expect("close");
    }
    println!("{interrupted} of 24 kills interrupted a backup");
    assert!(interrupted >= 8, "too few kills landed inside a backup to prove anything: {interrupted}");
}

#[test]
fn on_a_full_disk_deletes_purges_and_gc_free_space_with_the_reserve_and_writes_resume() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let small = tmp.path().join("small");
    if !mount_small_fs(&small, 8 << 20) {
        println!("skipped: this machine does not let the test mount a small file system");
        return;
    }
    let dir = small.join("store");
    {
        let store = Store::open(&dir, StoreOptions::default()).expect("open");
        store.set_setting(cairn::settings::STORAGE_RESERVE_BYTES, json!(512 * 1024)).expect("reserve");
        store.create_collection(docs_schema()).expect("docs");
        store.close().expect("close");
    }
    let store = Store::open(&dir, StoreOptions::default()).expect("reopen");
    assert_eq!(std::fs::metadata(dir.join("cairn.reserve")).expect("the reserve").len(), 512 * 1024);
    // Fill the disk with acknowledged records and their attachments.
    let mut acked: Vec<(String, Map<String, Value>)> = Vec::new();
    let mut full = None;
    for i in 0..2000 {
        let id = format!("r{i:04}");
        match store.create_with_id("docs", &id, json!({"title": format!("record {i}"), "n": i})) {
            Ok(record) => acked.push((id.clone(), record.body)),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
        let bytes: Vec<u8> = (0..48 * 1024).map(|_| fastrand::u8(..)).collect();
        let upload = Upload { name: format!("f{i}.bin"), mime: None };
        match store.attach("docs", &id, "file", &bytes[..], &upload) {
            Ok((record, _)) => {
                if let Some(entry) = acked.last_mut() {
                    entry.1 = record.body;
                }
            }
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let full = full.expect("the disk filled up");
    assert!(full.is_disk_full(), "a full disk is said as such: {full}");

    // A backup fails, loudly, and is listed (its record written with the reserve's room).
    let err = store.backup(&BackupOptions::default(), &mut quiet()).expect_err("no room for a backup");
    let Error::BackupFailed { id: failed_id, .. } = &err else { panic!("{err}") };
    assert!(store.backups().expect("list").iter().any(|b| &b.id == failed_id && b.status == BackupStatus::Failed));

    // Deletes, purges and gc still commit and free space.
    let freed: Vec<String> = acked.iter().take(40).map(|(id, _)| id.clone()).collect();
    for id in &freed {
        store.delete("docs", id, None).unwrap_or_else(|e| panic!("delete {id} on a full disk: {e}"));
        store.purge("docs", id).unwrap_or_else(|e| panic!("purge {id} on a full disk: {e}"));
    }
    let gc =
        store.gc_blobs(&cairn::GcOptions { grace: Some(Duration::ZERO), dry_run: false }).expect("gc on a full disk");
    assert!(gc.bytes_freed > 40 * 40 * 1024, "{gc:?}");
    // Writes resume; nothing acknowledged is lost.
    store.create_with_id("docs", "after", json!({"title": "room again"})).expect("writes resume");
    for (id, body) in acked.iter().skip(40) {
        assert_eq!(&store.get("docs", id).expect("acknowledged").body, body, "{id}");
    }
    assert!(dir.join("cairn.reserve").exists(), "the reserve is back once there is room");
    store.close().expect("close");
    assert!(!dir.join("blobs/.tmp").exists(), "no empty staging folder is left");
    let listed = cairn::Backups::of(&dir).list().expect("list");
    assert!(listed.iter().any(|b| &b.id == failed_id && b.status == BackupStatus::Failed), "{listed:?}");
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    assert!(store.check(&CheckOptions::default(), &mut quiet()).expect("check").is_ok());
    store.close().expect("close");
    let _ = std::process::Command::new("umount").arg(&small).status();
}
