//! The audit trail: administrative and destructive operations append entries, and
//! `verify_audit` finds an edited, inserted or removed one.

use std::path::Path;

use cairn::{
    BackupOptions, Direction, DropOptions, MigrateOptions, Migration, Migrations, Op, RestoreOptions, Store,
    StoreOptions,
};
use serde_json::json;

fn quiet() -> impl FnMut(&str, u64, u64) {
    |_, _, _| {}
}

/// A store whose trail holds deletes, a purge, a drop, backups (one failed), a repair, a
/// migration and a restore.
fn busy_store(dir: &Path) -> String {
    let store = Store::open(dir, StoreOptions { actor: "alice".into(), ..StoreOptions::default() }).expect("open");
    store.create_collection(crate::notes_schema()).expect("notes");
    for i in 0..5 {
        store.create_with_id("notes", &format!("n{i}"), json!({"title": format!("note {i}")})).expect("create");
    }
    store.delete("notes", "n1", None).expect("delete");
    store.delete("notes", "n2", None).expect("delete");
    store.purge("notes", "n2").expect("purge");
    let backup = store.backup(&BackupOptions::default(), &mut quiet()).expect("backup").id;
    let blocker = dir.join("blocker");
    std::fs::write(&blocker, b"x").expect("file");
    let failing = BackupOptions { dir: Some(blocker.join("b")), ..BackupOptions::default() };
    store.backup(&failing, &mut quiet()).expect_err("the backups folder cannot exist");
    store.close().expect("close");
    let options = cairn::RepairOptions { actor: "alice".into(), ..cairn::RepairOptions::default() };
    cairn::Store::repair(dir, &options, &mut quiet()).expect("repair of a healthy store");
    let store = Store::open(dir, StoreOptions { actor: "alice".into(), ..StoreOptions::default() }).expect("open");
    store
        .create_collection(
            cairn::CollectionSchema::from_json(r#"{"name": "scratch", "fields": []}"#, "s").expect("schema"),
        )
        .expect("scratch");
    store.drop_collection("scratch", &DropOptions::confirm("scratch")).expect("drop");
    store.close().expect("close");
    let index = Migration::new(1, "index_n")
        .up(serde_json::from_value::<Op>(json!({"op": "add_index", "collection": "notes", "field": "n"})).expect("op"))
        .down(
            serde_json::from_value::<Op>(json!({"op": "drop_index", "collection": "notes", "field": "n"})).expect("op"),
        );
    let set = Migrations::new(vec![index]).expect("set");
    cairn::Store::migrate(dir, &set, Direction::Up, &MigrateOptions::default(), &mut quiet()).expect("migrate");
    cairn::Store::restore(dir, &backup, &RestoreOptions::default(), &mut quiet()).expect("restore");
    backup
}

#[test]
fn operations_append_chained_entries() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let restored = busy_store(&dir);
    let store = Store::open(&dir, StoreOptions::read_only()).expect("open");
    let entries = store.audit_log(None, 0, 1000).expect("log");
    let actions: Vec<(&str, &str)> = entries.iter().map(|e| (e.action.as_str(), e.target.as_str())).collect();
    // The restore brought back the trail as the backup had it (deletes and purge), then
    // recorded itself; the rest of the trail it replaced is in quarantine.
    assert_eq!(
        actions,
        [("delete", "notes/n1"), ("delete", "notes/n2"), ("purge", "notes/n2"), ("restore", restored.as_str())],
        "{actions:?}"
    );
    assert_eq!(entries[0].actor, "alice");
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(store.verify_audit().expect("verify").is_ok());

    // The replaced store (in quarantine) holds the whole story, intact.
    let replaced = std::fs::read_dir(dir.join("quarantine"))
        .expect("quarantine")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("replaced"))
        .expect("replaced state")
        .path();
    std::fs::remove_file(replaced.join("cairn.lock")).ok();
    let old = Store::open(&replaced, StoreOptions::read_only()).expect("open the replaced store");
    let entries = old.audit_log(None, 0, 1000).expect("log");
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["delete", "delete", "purge", "backup", "backup", "repair", "drop_collection", "backup", "migrate", "backup"],
        "{actions:?}"
    );
    assert!(entries[4].outcome.starts_with("failed: "), "{:?}", entries[4]);
    assert_eq!(entries[3].outcome, "ok");
    assert_eq!(entries[7].detail, "pre_migration", "the migration's own backup");
    assert_eq!((entries[8].target.as_str(), entries[8].detail.as_str()), ("up", "0001_index_n"));
    assert_eq!(entries[9].detail, "pre_restore", "the restore's backup of the state it replaced");
    assert!(old.verify_audit().expect("verify").is_ok());
    let purges = old.audit_log(Some(r#"action = "purge" or outcome != "ok""#), 0, 100).expect("filtered");
    assert_eq!(purges.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 5]);
    assert!(old.audit_log(Some("colour = 1"), 0, 100).is_err(), "an unknown field in the filter is an error");
}

/// Copies the store, changes its trail with `sql` and returns what verification says.
fn tampered(template: &Path, name: &str, sql: &str) -> Vec<(u64, String)> {
    let dir = template.with_file_name(name);
    crate::backup::copy_dir(template, &dir);
    let conn = rusqlite::Connection::open(dir.join(cairn::layout::DB_FILE)).expect("sqlite");
    conn.execute_batch(sql).expect("tamper");
    drop(conn);
    let store = Store::open(&dir, StoreOptions::read_only()).expect("open");
    let report = store.verify_audit().expect("verify");
    report.problems.into_iter().map(|p| (p.seq, p.detail)).collect()
}

#[test]
fn edited_inserted_or_removed_entries_are_detected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let template = tmp.path().join("template");
    let store = Store::open(&template, StoreOptions::default()).expect("open");
    store.create_collection(crate::notes_schema()).expect("notes");
    for i in 0..6 {
        store.create_with_id("notes", &format!("n{i}"), json!({"title": "x"})).expect("create");
        store.delete("notes", &format!("n{i}"), None).expect("delete");
    }
    assert_eq!(store.verify_audit().expect("verify").entries, 6);
    store.close().expect("close");

    let edited = tampered(&template, "edited", "UPDATE cairn_audit SET target = 'notes/other' WHERE seq = 3");
    assert!(edited.iter().any(|(seq, d)| *seq == 3 && d.contains("edited")), "{edited:?}");

    let removed = tampered(&template, "removed", "DELETE FROM cairn_audit WHERE seq = 4");
    assert!(removed.iter().any(|(seq, d)| *seq == 5 && d.contains("missing")), "{removed:?}");

    // Inserted in the middle: later entries renumbered to make room.
    let inserted = tampered(
        &template,
        "inserted",
        "UPDATE cairn_audit SET seq = seq + 100 WHERE seq >= 3;
         UPDATE cairn_audit SET seq = seq - 99 WHERE seq >= 100;
         INSERT INTO cairn_audit SELECT 3, at, actor, 'delete', 'notes/ghost', outcome, detail, hash, hash
           FROM cairn_audit WHERE seq = 2;",
    );
    assert!(inserted.iter().any(|(seq, d)| *seq == 3 && d.contains("edited")), "{inserted:?}");
    assert!(inserted.iter().all(|(seq, _)| *seq >= 3), "entries before it still verify: {inserted:?}");

    let truncated = tampered(&template, "truncated", "DELETE FROM cairn_audit WHERE seq = 6");
    assert!(truncated.iter().any(|(_, d)| d.contains("removed from the end")), "{truncated:?}");

    let appended = tampered(
        &template,
        "appended",
        "INSERT INTO cairn_audit SELECT 7, at, actor, action, 'notes/forged', outcome, detail, hash, hash FROM cairn_audit WHERE seq = 6",
    );
    assert!(!appended.is_empty(), "{appended:?}");
}
