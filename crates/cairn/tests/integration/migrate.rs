//! Migrations: failures leave the store as it was, history is checksummed, downs reverse
//! exactly (a property test per operation kind), irreversible ones refuse, init and seeds are
//! idempotent, bad files are refused before anything runs, and SIGKILLs land on migration
//! boundaries.

use std::path::Path;
use std::time::Duration;

use cairn::{
    CheckOptions, CollectionSchema, Direction, Error, MigrateOptions, Migration, MigrationState, Migrations, Op,
    ScanOptions, Seed, Store, StoreOptions,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn quiet() -> impl FnMut(&str, u64, u64) {
    |_, _, _| {}
}

/// Everything a migration may change: every schema, every record (deleted ones too) with its
/// version, the change log's length and the applied migrations.
fn dump(dir: &Path) -> Value {
    let store = Store::open(dir, StoreOptions::read_only()).expect("open read-only");
    let mut collections = Map::new();
    for info in store.collections().expect("collections") {
        let mut records = Vec::new();
        let mut scan = ScanOptions { include_deleted: true, ..ScanOptions::default() };
        loop {
            let page = store.scan(&info.schema.name, &scan).expect("scan");
            let Some(last) = page.last() else { break };
            scan.after = Some(last.id.clone());
            for r in page {
                records.push(json!([r.id, r.version, r.deleted_at.is_some(), r.body]));
            }
        }
        collections.insert(info.schema.name.clone(), json!({"schema": info.schema, "records": records}));
    }
    let applied: Vec<Value> = cairn::Store::migration_status(dir, &Migrations::default())
        .expect("status")
        .into_iter()
        .map(|s| json!([s.number, s.name, s.checksum]))
        .collect();
    json!({"collections": collections, "seq": store.last_seq().expect("seq").get(), "applied": applied})
}

/// Schemas and records by id, body and deleted state: what `down` must give back.
fn content(dir: &Path) -> Value {
    let mut d = dump(dir);
    for c in d["collections"].as_object_mut().expect("collections").values_mut() {
        for r in c["records"].as_array_mut().expect("records") {
            let r = r.as_array_mut().expect("record");
            r.remove(1);
        }
    }
    json!({"collections": d["collections"]})
}

fn assert_checks(dir: &Path) {
    let store = Store::open(dir, StoreOptions::existing()).expect("open");
    let report = store.check(&CheckOptions::default(), &mut quiet()).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
    store.close().expect("close");
}

/// A store with `tasks` (title, est as text) holding 40 records, two of them deleted.
fn tasks_store(dir: &Path) {
    let store = Store::open(dir, StoreOptions::default()).expect("open");
    store
        .create_collection(
            CollectionSchema::from_json(
                r#"{"name": "tasks", "fields": [
                    {"name": "title", "type": "text", "required": true, "fulltext": true},
                    {"name": "est", "type": "text"}]}"#,
                "tasks",
            )
            .expect("schema"),
        )
        .expect("tasks");
    for i in 0..40 {
        store
            .create_with_id(
                "tasks",
                &format!("t{i:02}"),
                json!({"title": format!("task {i}"), "est": format!("{}", i % 7)}),
            )
            .expect("task");
    }
    store.delete("tasks", "t05", None).expect("delete");
    store.delete("tasks", "t17", None).expect("delete");
    store.close().expect("close");
}

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write migration");
    }
}

const M1: &str = r#"
description = "notes with full-text titles"
[[up]]
op = "create_collection"
schema = { name = "notes", fields = [ { name = "title", type = "text", fulltext = true } ] }
[[down]]
op = "drop_collection"
collection = "notes"
"#;
const M2: &str = r#"
[[up]]
op = "add_field"
collection = "tasks"
field = { name = "priority", type = "integer", default = 1 }
[[down]]
op = "remove_field"
collection = "tasks"
field = "priority"
"#;
const M3: &str = r#"
[[up]]
op = "change_type"
collection = "tasks"
field = "est"
to = "integer"
convert = "parse"
[[down]]
op = "change_type"
collection = "tasks"
field = "est"
to = "text"
convert = "format"
"#;
const M4: &str = r#"
[[up]]
op = "add_index"
collection = "tasks"
field = "priority"
[[down]]
op = "drop_index"
collection = "tasks"
field = "priority"
"#;
const M5: &str = r#"
[[up]]
op = "rename_field"
collection = "tasks"
from = "title"
to = "name"
[[down]]
op = "rename_field"
collection = "tasks"
from = "name"
to = "title"
"#;

fn five(dir: &Path) -> Migrations {
    write_files(
        dir,
        &[
            ("0001_notes.toml", M1),
            ("0002_priority.toml", M2),
            ("0003_est_integer.toml", M3),
            ("0004_priority_index.toml", M4),
            ("0005_rename_title.toml", M5),
        ],
    );
    Migrations::from_dir(dir).expect("migrations")
}

#[test]
fn five_migrations_apply_and_undo_with_a_backup_first() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    tasks_store(&dir);
    let before = content(&dir);
    let migrations = five(&tmp.path().join("migrations"));

    let plan = cairn::Store::plan_migrations(&dir, &migrations, Direction::Up, None, &mut quiet()).expect("plan");
    assert_eq!(plan.migrations.len(), 5);
    assert_eq!(plan.migrations[1].steps[0].records, 40, "every task gets a priority: {plan:?}");
    assert_eq!(plan.migrations[2].steps[0].records, 40, "and an integer estimate");
    assert_eq!(content(&dir), before, "a plan changes nothing");
    assert!(cairn::Backups::of(&dir).list().expect("list").is_empty(), "a plan takes no backup");

    let mut phases = std::collections::BTreeSet::new();
    let report =
        cairn::Store::migrate(&dir, &migrations, Direction::Up, &MigrateOptions::default(), &mut |phase, _, _| {
            phases.insert(phase.to_string());
        })
        .expect("up");
    assert_eq!((report.applied, report.migrations.len()), (5, 5));
    assert!(phases.contains("0002 step 1"), "progress names the step: {phases:?}");
    let backups = cairn::Backups::of(&dir).list().expect("list");
    assert_eq!(backups.len(), 1);
    assert_eq!(Some(backups[0].id.clone()), report.backup);
    assert_eq!(backups[0].status, cairn::BackupStatus::Good);

    let store = Store::open(&dir, StoreOptions::existing()).expect("open");
    let t3 = store.get("tasks", "t03").expect("t03");
    assert_eq!(Value::Object(t3.body.clone()), json!({"name": "task 3", "est": 3, "priority": 1}));
    let history = store.history("tasks", "t03").expect("history");
    assert!(history.iter().any(|c| c.actor == "migration:0002_priority"), "{history:?}");
    let search = cairn::Search { terms: "anything".into(), ..cairn::Search::default() };
    assert!(store.search("notes", &search).expect("notes is searchable").is_empty());
    store.close().expect("close");
    assert_checks(&dir);
    let status = cairn::Store::migration_status(&dir, &migrations).expect("status");
    assert!(status.iter().all(|s| s.state == MigrationState::Applied), "{status:?}");

    let options = MigrateOptions { to: Some(0), ..MigrateOptions::default() };
    let down = cairn::Store::migrate(&dir, &migrations, Direction::Down, &options, &mut quiet()).expect("down");
    assert_eq!(down.applied, 0);
    assert_eq!(down.migrations.iter().map(|m| m.number).collect::<Vec<_>>(), [5, 4, 3, 2, 1]);
    assert_eq!(content(&dir), before, "up then down gives back the same schemas and records");
    assert_checks(&dir);
    let status = cairn::Store::migration_status(&dir, &migrations).expect("status");
    assert!(status.iter().all(|s| s.state == MigrationState::Pending), "{status:?}");

    let again =
        cairn::Store::migrate(&dir, &migrations, Direction::Up, &MigrateOptions::default(), &mut quiet()).expect("up");
    assert_eq!(again.applied, 5);
    let none =
        cairn::Store::migrate(&dir, &migrations, Direction::Up, &MigrateOptions::default(), &mut quiet()).expect("up");
    assert!(none.migrations.is_empty() && none.backup.is_none(), "nothing pending: no-op");
}

#[test]
fn a_failure_in_migration_3_of_5_leaves_the_store_identical() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    tasks_store(&dir);
    {
        let store = Store::open(&dir, StoreOptions::existing()).expect("open");
        store.patch("tasks", "t23", json!({"est": "soon"}), None).expect("a value that is not a number");
        store.close().expect("close");
    }
    let before = dump(&dir);
    let migrations = five(&tmp.path().join("migrations"));

    // Rehearsed on a scratch copy first: found before anything runs, no backup taken.
    let err = cairn::Store::migrate(&dir, &migrations, Direction::Up, &MigrateOptions::default(), &mut quiet())
        .expect_err("est of t23 does not parse");
    let text = err.to_string();
    for part in ["migration 3", "est_integer", "step 1", "change_type tasks.est", "`t23`", "`est`", "\"soon\""] {
        assert!(text.contains(part), "{part} missing from: {text}");
    }
    assert!(text.contains("unchanged"), "{text}");
    assert_eq!(dump(&dir), before);
    assert!(cairn::Backups::of(&dir).list().expect("list").is_empty());

    // Without the rehearsal, migrations 1 and 2 commit, 3 fails and rolls back, and the
    // pre-run backup is restored: the store is identical again.
    let options = MigrateOptions { rehearse: false, ..MigrateOptions::default() };
    let err = cairn::Store::migrate(&dir, &migrations, Direction::Up, &options, &mut quiet()).expect_err("fails in 3");
    match &err {
        Error::MigrationFailed { number, step, cause, outcome, .. } => {
            assert_eq!((*number, *step), (3, 1));
            assert!(outcome.contains("restoring backup"), "{outcome}");
            assert!(
                matches!(&**cause, Error::Validation { id: Some(id), field: Some(f), .. } if id == "t23" && f == "est"),
                "{cause:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(dump(&dir), before, "migrations 1 and 2 were undone as well");
    assert_checks(&dir);
}

#[test]
fn nothing_runs_when_the_backup_fails_or_the_target_is_behind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    tasks_store(&dir);
    let migrations = five(&tmp.path().join("migrations"));
    let before = dump(&dir);
    // A backups folder below a regular file cannot be created: the backup fails.
    let blocker = tmp.path().join("not-a-folder");
    std::fs::write(&blocker, b"x").expect("file");
    let options = MigrateOptions { backups_dir: Some(blocker.join("backups")), ..MigrateOptions::default() };
    let err =
        cairn::Store::migrate(&dir, &migrations, Direction::Up, &options, &mut quiet()).expect_err("backup fails");
    assert!(matches!(err, Error::BackupFailed { .. } | Error::Io { .. }), "{err:?}");
    assert_eq!(dump(&dir), before, "no migration ran");

    let to2 = MigrateOptions { to: Some(2), ..MigrateOptions::default() };
    cairn::Store::migrate(&dir, &migrations, Direction::Up, &to2, &mut quiet()).expect("up to 2");
    let behind = MigrateOptions { to: Some(1), ..MigrateOptions::default() };
    let err = cairn::Store::migrate(&dir, &migrations, Direction::Up, &behind, &mut quiet()).expect_err("up to 1 at 2");
    assert!(err.to_string().contains("going back to 1 is a down migration"), "{err}");
    let ahead = MigrateOptions { to: Some(4), ..MigrateOptions::default() };
    let err =
        cairn::Store::migrate(&dir, &migrations, Direction::Down, &ahead, &mut quiet()).expect_err("down to 4 at 2");
    assert!(err.to_string().contains("going forward to 4 is an up migration"), "{err}");
    let past = MigrateOptions { to: Some(9), ..MigrateOptions::default() };
    let err = cairn::Store::migrate(&dir, &migrations, Direction::Up, &past, &mut quiet()).expect_err("no migration 9");
    assert!(err.to_string().contains("no migration 9"), "{err}");
}

#[test]
fn edited_or_missing_history_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    tasks_store(&dir);
    let files = tmp.path().join("migrations");
    let migrations = five(&files);
    let options = MigrateOptions { to: Some(2), ..MigrateOptions::default() };
    cairn::Store::migrate(&dir, &migrations, Direction::Up, &options, &mut quiet()).expect("up to 2");

    // A later file may change freely; an applied one may not.
    std::fs::write(files.join("0004_priority_index.toml"), format!("{M4}\n# reworded\n")).expect("edit 4");
    std::fs::write(files.join("0002_priority.toml"), M2.replace("default = 1", "default = 2")).expect("edit 2");
    let before = dump(&dir);
    let edited = Migrations::from_dir(&files).expect("files still parse");
    for direction in [Direction::Up, Direction::Down] {
        let err = cairn::Store::migrate(&dir, &edited, direction, &MigrateOptions::default(), &mut quiet())
            .expect_err("edited");
        assert!(matches!(&err, Error::MigrationHistory { number: 2, .. }), "{err:?}");
        assert!(err.to_string().contains("edited after it was applied"), "{err}");
    }
    let status = cairn::Store::migration_status(&dir, &edited).expect("status");
    assert_eq!(
        status.iter().map(|s| s.state).collect::<Vec<_>>()[..3],
        [MigrationState::Applied, MigrationState::Edited, MigrationState::Pending]
    );
    assert_eq!(dump(&dir), before);

    // Removing applied files is refused too.
    let first_only =
        Migrations::new(vec![Migration::from_file(&files.join("0001_notes.toml")).expect("1")]).expect("set");
    let err = cairn::Store::migrate(&dir, &first_only, Direction::Up, &MigrateOptions::default(), &mut quiet())
        .expect_err("2 is missing");
    assert!(matches!(err, Error::MigrationHistory { number: 2, .. }), "{err:?}");
    assert_eq!(cairn::Store::migration_status(&dir, &first_only).expect("status")[1].state, MigrationState::Missing);
}

#[test]
fn down_refuses_to_pass_an_irreversible_migration() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    tasks_store(&dir);
    let files = tmp.path().join("migrations");
    write_files(
        &files,
        &[
            ("0001_notes.toml", M1),
            (
                "0002_drop_est.toml",
                "irreversible = true\n[[up]]\nop = \"remove_field\"\ncollection = \"tasks\"\nfield = \"est\"\n",
            ),
            ("0003_priority.toml", M2),
        ],
    );
    let migrations = Migrations::from_dir(&files).expect("migrations");
    cairn::Store::migrate(&dir, &migrations, Direction::Up, &MigrateOptions::default(), &mut quiet()).expect("up");
    assert!(!cairn::Store::migration_status(&dir, &migrations).expect("status")[1].reversible);
    let before = dump(&dir);
    let all = MigrateOptions { to: Some(0), ..MigrateOptions::default() };
    let err = cairn::Store::migrate(&dir, &migrations, Direction::Down, &all, &mut quiet()).expect_err("irreversible");
    assert!(matches!(&err, Error::Irreversible { number: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("restore a backup"), "{err}");
    assert_eq!(dump(&dir), before, "nothing ran, not even migration 3's down");

    let report = cairn::Store::migrate(&dir, &migrations, Direction::Down, &MigrateOptions::default(), &mut quiet())
        .expect("one step down is fine");
    assert_eq!(report.applied, 2);
}

#[test]
fn init_with_migrations_and_seed_twice_changes_nothing_the_second_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("fresh");
    let files = tmp.path().join("migrations");
    write_files(
        &files,
        &[
            ("0001_notes.toml", M1),
            (
                "0002_tags.json",
                r#"{"up": [{"op": "add_field", "collection": "notes",
                            "field": {"name": "tags", "type": "tags", "indexed": true}}],
                    "down": [{"op": "remove_field", "collection": "notes", "field": "tags"}]}"#,
            ),
        ],
    );
    let seed_file = tmp.path().join("seed.json");
    std::fs::write(
        &seed_file,
        r#"{"notes": [{"id": "welcome", "title": "Welcome", "tags": ["start"]}, {"id": "help", "title": "Help"}]}"#,
    )
    .expect("seed");
    let migrations = Migrations::from_dir(&files).expect("migrations");
    let seed = Seed::from_file(&seed_file).expect("seed parses");

    let first =
        cairn::Store::init(&dir, Some(&migrations), Some(&seed), &MigrateOptions::default(), "setup", &mut quiet())
            .expect("init");
    assert!(first.created);
    assert_eq!(first.migrations.as_ref().map(|m| m.applied), Some(2));
    assert_eq!(first.seeded.get("notes"), Some(&2));
    let after_first = dump(&dir);

    let second =
        cairn::Store::init(&dir, Some(&migrations), Some(&seed), &MigrateOptions::default(), "setup", &mut quiet())
            .expect("init again");
    assert!(!second.created);
    assert!(second.migrations.as_ref().is_some_and(|m| m.migrations.is_empty() && m.backup.is_none()));
    assert!(second.seeded.is_empty());
    assert_eq!(second.seed_unchanged, 2);
    assert_eq!(dump(&dir), after_first, "the second init wrote nothing");
    assert_checks(&dir);

    let bad = Seed::from_value(json!({"notes": [{"title": "no id"}]}), "seed.json").expect_err("no id");
    assert!(bad.to_string().contains("notes[0]"), "{bad}");
    let invalid = Seed::from_value(json!({"notes": [{"id": "x", "title": 5}]}), "seed.json").expect("parses");
    let err = cairn::Store::init(&dir, None, Some(&invalid), &MigrateOptions::default(), "setup", &mut quiet())
        .expect_err("title must be text");
    assert!(matches!(err, Error::Validation { .. }), "{err:?}");
    assert_eq!(dump(&dir), after_first);
}

#[test]
fn bad_migration_files_are_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    tasks_store(&dir);
    {
        let store = Store::open(&dir, StoreOptions::existing()).expect("open");
        store.patch("tasks", "t08", json!({"est": "a while"}), None).expect("patch");
        store.close().expect("close");
    }
    let before = dump(&dir);
    let down = "[[down]]\nop = \"drop_index\"\ncollection = \"tasks\"\nfield = \"est\"\n";
    let cases: [(&str, &str, &[&str]); 7] = [
        ("unknown op", "down = []\n[[up]]\nop = \"explode\"\ncollection = \"tasks\"\n", &["0001_bad.toml", "explode"]),
        (
            "unknown field",
            "[[up]]\nop = \"add_index\"\ncollection = \"tasks\"\nfield = \"ghost\"\n[[down]]\nop = \"drop_index\"\ncollection = \"tasks\"\nfield = \"ghost\"\n",
            &["up step 1", "unknown field `tasks.ghost`"],
        ),
        (
            "unknown collection",
            "down = []\n[[up]]\nop = \"remove_field\"\ncollection = \"ghosts\"\nfield = \"x\"\n",
            &["unknown collection `ghosts`"],
        ),
        (
            "conversion that does not exist",
            "down = []\n[[up]]\nop = \"change_type\"\ncollection = \"tasks\"\nfield = \"est\"\nto = \"integer\"\nconvert = \"cast\"\n",
            &["no `cast` conversion from text to integer", "parse"],
        ),
        (
            "conversion that does not apply to a stored value",
            "[[up]]\nop = \"change_type\"\ncollection = \"tasks\"\nfield = \"est\"\nto = \"integer\"\nconvert = \"parse\"\n[[down]]\nop = \"change_type\"\ncollection = \"tasks\"\nfield = \"est\"\nto = \"text\"\nconvert = \"format\"\n",
            &["`t08`", "`est`", "\"a while\""],
        ),
        (
            "down that does not undo up",
            &format!("[[up]]\nop = \"add_index\"\ncollection = \"tasks\"\nfield = \"title\"\n{}", down.replace("est", "title").replace("drop_index", "add_fulltext")),
            &["down step 1"],
        ),
        ("bad TOML", "[[up]\nop = 1", &["0001_bad.toml"]),
    ];
    for (what, text, expected) in cases {
        let files = tmp.path().join(format!("m-{}", what.replace(' ', "-")));
        write_files(&files, &[("0001_bad.toml", text)]);
        let err = Migrations::from_dir(&files)
            .and_then(|m| cairn::Store::migrate(&dir, &m, Direction::Up, &MigrateOptions::default(), &mut quiet()))
            .expect_err(what);
        let message = err.to_string();
        for part in expected {
            assert!(message.contains(part), "{what}: {part:?} missing from: {message}");
        }
        assert_eq!(dump(&dir), before, "{what}: the store changed");
        assert!(cairn::Backups::of(&dir).list().expect("list").is_empty(), "{what}: a backup ran");
    }

    let gap = tmp.path().join("gap");
    write_files(&gap, &[("0001_notes.toml", M1), ("0003_priority.toml", M2), ("README.md", "ignored")]);
    let err = Migrations::from_dir(&gap).expect_err("gap").to_string();
    assert!(err.contains("migration 2 is missing"), "{err}");
    let misnamed = tmp.path().join("misnamed");
    write_files(&misnamed, &[("1-notes.toml", M1)]);
    let err = Migrations::from_dir(&misnamed).expect_err("name").to_string();
    assert!(err.contains("1-notes.toml") && err.contains("NNNN_name"), "{err}");
}

#[test]
fn code_migrations_run_closures_over_records() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    tasks_store(&dir);
    let before = content(&dir);
    let upper = Migration::new(1, "shout")
        .up_with("tasks", "uppercase titles v1", |_, body| {
            let title = body.get("title").and_then(Value::as_str).ok_or("no title")?.to_uppercase();
            body.insert("title".into(), Value::String(title));
            Ok(())
        })
        .down_with("tasks", "lowercase titles v1", |_, body| {
            let title = body.get("title").and_then(Value::as_str).ok_or("no title")?.to_lowercase();
            body.insert("title".into(), Value::String(title));
            Ok(())
        });
    let set = Migrations::new(vec![upper]).expect("set");
    cairn::Store::migrate(&dir, &set, Direction::Up, &MigrateOptions::default(), &mut quiet()).expect("up");
    let store = Store::open(&dir, StoreOptions::read_only()).expect("open");
    assert_eq!(store.get("tasks", "t01").expect("t01").body["title"], "TASK 1");
    drop(store);
    cairn::Store::migrate(&dir, &set, Direction::Down, &MigrateOptions::default(), &mut quiet()).expect("down");
    assert_eq!(content(&dir), before);

    let failing = Migration::new(1, "fail").up_with("tasks", "refuse t07", |id, _| {
        if id == "t07" {
            Err("t07 cannot be migrated".into())
        } else {
            Ok(())
        }
    });
    let err = cairn::Store::migrate(
        &dir,
        &Migrations::new(vec![failing]).expect("set"),
        Direction::Up,
        &MigrateOptions::default(),
        &mut quiet(),
    )
    .expect_err("closure fails");
    assert!(err.to_string().contains("t07 cannot be migrated") && err.to_string().contains("`t07`"), "{err}");
}

#[test]
fn scratch_copies_left_by_killed_runs_are_removed_and_live_ones_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    tasks_store(&dir);
    let (stale, recent) = (dir.join(".migrate-plan-stale"), dir.join(".migrate-plan-recent"));
    for scratch in [&stale, &recent] {
        std::fs::create_dir(scratch).expect("mkdir");
        std::fs::write(scratch.join("store.db"), b"half a copy").expect("file");
    }
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::open(&stale).expect("open dir").set_modified(two_hours_ago).expect("age it");
    cairn::Store::migrate(&dir, &Migrations::default(), Direction::Up, &MigrateOptions::default(), &mut quiet())
        .expect("nothing to do");
    assert!(!stale.exists(), "a stale scratch copy is removed");
    assert!(recent.exists(), "a recent one may belong to a plan still running");
}

// ---- round trip per operation kind ----

/// `items`: records with random values; `others` exists to be created and dropped.
/// label, n, x, flag, deleted
type RandomRecord = (Option<String>, Option<i64>, Option<f64>, bool, bool);

fn random_store(dir: &Path, records: &[RandomRecord]) {
    let store = Store::open(dir, StoreOptions::default()).expect("open");
    store
        .create_collection(
            CollectionSchema::from_json(
                r#"{"name": "items", "fields": [
                    {"name": "label", "type": "text"},
                    {"name": "n", "type": "integer", "indexed": true},
                    {"name": "x", "type": "number"},
                    {"name": "flag", "type": "bool"},
                    {"name": "body", "type": "text", "fulltext": true}]}"#,
                "items",
            )
            .expect("schema"),
        )
        .expect("items");
    for (i, (label, n, x, flag, deleted)) in records.iter().enumerate() {
        let id = format!("i{i:03}");
        let mut body = json!({"flag": flag, "body": format!("record number {i}")});
        if let Some(label) = label {
            body["label"] = json!(label);
        }
        if let Some(n) = n {
            body["n"] = json!(n);
        }
        if let Some(x) = x {
            body["x"] = json!(x);
        }
        store.create_with_id("items", &id, body).expect("create");
        if *deleted {
            store.delete("items", &id, None).expect("delete");
        }
    }
    store.close().expect("close");
}

fn op(v: Value) -> Op {
    serde_json::from_value(v).expect("op")
}

/// (name, migration) for every kind of operation, each with the down that reverses it.
fn every_kind() -> Vec<(&'static str, Migration)> {
    let m = |name: &str| Migration::new(1, name);
    let field = |f: Value| json!({"collection": "items", "field": f});
    let with = |mut base: Value, extra: Value| {
        for (k, v) in extra.as_object().expect("object") {
            base[k] = v.clone();
        }
        base
    };
    vec![
        (
            "create_collection",
            m("create").up(op(json!({"op": "create_collection", "schema": {"name": "others", "fields": [{"name": "a", "type": "text"}]}})))
                .down(op(json!({"op": "drop_collection", "collection": "others"}))),
        ),
        (
            "drop_collection",
            m("drop").up(op(json!({"op": "drop_collection", "collection": "items"}))).down(op(json!({
                "op": "create_collection",
                "schema": {"name": "items", "fields": [
                    {"name": "label", "type": "text"},
                    {"name": "n", "type": "integer", "indexed": true},
                    {"name": "x", "type": "number"},
                    {"name": "flag", "type": "bool"},
                    {"name": "body", "type": "text", "fulltext": true}]}
            }))),
        ),
        (
            "add_field",
            m("add").up(op(with(json!({"op": "add_field"}), field(json!({"name": "rank", "type": "integer", "default": 3})))))
                .down(op(with(json!({"op": "remove_field"}), field(json!("rank"))))),
        ),
        (
            "remove_field",
            m("remove").up(op(with(json!({"op": "remove_field"}), field(json!("label"))))).down(op(with(
                json!({"op": "add_field", "position": 0}),
                field(json!({"name": "label", "type": "text"})),
            ))),
        ),
        (
            "rename_field",
            m("rename")
                .up(op(json!({"op": "rename_field", "collection": "items", "from": "n", "to": "count"})))
                .down(op(json!({"op": "rename_field", "collection": "items", "from": "count", "to": "n"}))),
        ),
        (
            "change_type (lossy: round)",
            m("round")
                .up(op(json!({"op": "change_type", "collection": "items", "field": "x", "to": "integer", "convert": "round"})))
                .down(op(json!({"op": "change_type", "collection": "items", "field": "x", "to": "number", "convert": "cast"}))),
        ),
        (
            "change_type (split and join)",
            m("split")
                .up(op(json!({"op": "change_type", "collection": "items", "field": "label", "to": "tags", "convert": "split"})))
                .down(op(json!({"op": "change_type", "collection": "items", "field": "label", "to": "text", "convert": "join"}))),
        ),
        (
            "change_type (format and parse)",
            m("format")
                .up(op(json!({"op": "change_type", "collection": "items", "field": "n", "to": "text", "convert": "format"})))
                .down(op(json!({"op": "change_type", "collection": "items", "field": "n", "to": "integer", "convert": "parse"}))),
        ),
        (
            "add_index",
            m("index").up(op(json!({"op": "add_index", "collection": "items", "field": "x"})))
                .down(op(json!({"op": "drop_index", "collection": "items", "field": "x"}))),
        ),
        (
            "drop_index",
            m("unindex").up(op(json!({"op": "drop_index", "collection": "items", "field": "n"})))
                .down(op(json!({"op": "add_index", "collection": "items", "field": "n"}))),
        ),
        (
            "add_fulltext",
            m("fts").up(op(json!({"op": "add_fulltext", "collection": "items", "field": "label"})))
                .down(op(json!({"op": "drop_fulltext", "collection": "items", "field": "label"}))),
        ),
        (
            "drop_fulltext",
            m("nofts").up(op(json!({"op": "drop_fulltext", "collection": "items", "field": "body"})))
                .down(op(json!({"op": "add_fulltext", "collection": "items", "field": "body"}))),
        ),
        (
            "set_flag",
            m("flag").up(op(json!({"op": "set_flag", "collection": "items", "field": "label", "flag": "pii"})))
                .down(op(json!({"op": "unset_flag", "collection": "items", "field": "label", "flag": "pii"}))),
        ),
        (
            "unset_flag",
            m("unflag").up(op(json!({"op": "unset_flag", "collection": "items", "field": "n", "flag": "indexed"})))
                .down(op(json!({"op": "set_flag", "collection": "items", "field": "n", "flag": "indexed"}))),
        ),
        (
            "update_records",
            m("bump")
                .up(op(json!({"op": "update_records", "collection": "items", "filter": "flag = true",
                              "set": {"n": {"add": [{"field": "n"}, {"value": 10}]}}})))
                .down(op(json!({"op": "update_records", "collection": "items", "filter": "flag = true",
                                "set": {"n": {"sub": [{"field": "n"}, {"value": 10}]}}}))),
        ),
        (
            "transform",
            m("double")
                .up_with("items", "double n", |_, body| {
                    if let Some(n) = body.get("n").and_then(Value::as_i64) {
                        body.insert("n".into(), json!(n * 2));
                    }
                    Ok(())
                })
                .down_with("items", "halve n", |_, body| {
                    if let Some(n) = body.get("n").and_then(Value::as_i64) {
                        body.insert("n".into(), json!(n / 2));
                    }
                    Ok(())
                }),
        ),
    ]
}

fn record_strategy() -> impl Strategy<Value = RandomRecord> {
    (
        proptest::option::of("[a-c ,]{0,8}"),
        proptest::option::of(-1_000_000i64..1_000_000),
        proptest::option::of((-1e6f64..1e6).prop_map(|x| (x * 4.0).round() / 4.0)),
        any::<bool>(),
        proptest::bool::weighted(0.2),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// For every kind of operation: up then down gives back the same schemas and the same
    /// records (ids, bodies, deleted or not), and check passes in between and after.
    #[test]
    fn up_then_down_is_the_identity_for_every_operation(records in proptest::collection::vec(record_strategy(), 0..25)) {
        let options = MigrateOptions { rehearse: false, backup: false, ..MigrateOptions::default() };
        for (kind, migration) in every_kind() {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = tmp.path().join("store");
            random_store(&dir, &records);
            let before = content(&dir);
            let set = Migrations::new(vec![migration]).expect("set");
            cairn::Store::migrate(&dir, &set, Direction::Up, &options, &mut quiet())
                .unwrap_or_else(|e| panic!("{kind} up: {e}"));
            assert_checks(&dir);
            cairn::Store::migrate(&dir, &set, Direction::Down, &options, &mut quiet())
                .unwrap_or_else(|e| panic!("{kind} down: {e}"));
            prop_assert_eq!(content(&dir), before, "{}", kind);
            assert_checks(&dir);
        }
    }
}

// ---- SIGKILL during migrations ----

const CHILD_ENV: &str = "CAIRN_MIGRATE_CHILD_DIR";
const KILL_TEST: &str = "migrate::migrations_killed_at_any_moment_stop_at_a_migration_boundary";

/// Six irreversible migrations over `tasks`, each changing every record twice.
fn boundary_migrations(dir: &Path) -> Migrations {
    let files: Vec<(String, String)> = (1..=6)
        .map(|n| {
            let text = format!(
                "irreversible = true\n\
                 [[up]]\nop = \"update_records\"\ncollection = \"tasks\"\n\
                 set = {{ est = {{ concat = [{{ field = \"est\" }}, {{ value = \"+{n}\" }}] }} }}\n\
                 [[up]]\nop = \"add_field\"\ncollection = \"tasks\"\n\
                 field = {{ name = \"f{n}\", type = \"integer\", default = {n} }}\n"
            );
            (format!("{n:04}_step{n}.toml"), text)
        })
        .collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    write_files(dir, &refs);
    Migrations::from_dir(dir).expect("migrations")
}

/// The schema field names a store at migration boundary `k` has.
fn expected_fields(k: u32) -> Vec<String> {
    let mut fields = vec!["title".to_string(), "est".to_string()];
    fields.extend((1..=k).map(|n| format!("f{n}")));
    fields
}

#[test]
fn migrations_killed_at_any_moment_stop_at_a_migration_boundary() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let migrations = boundary_migrations(&Path::new(&dir).with_extension("migrations"));
        println!("START");
        cairn::Store::migrate(
            Path::new(&dir),
            &migrations,
            Direction::Up,
            &MigrateOptions::default(),
            &mut |_, _, _| {},
        )
        .expect("child migrate");
        println!("DONE");
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let template = tmp.path().join("template");
    tasks_store(&template);
    let store = Store::open(&template, StoreOptions::existing()).expect("open");
    store
        .transaction(|tx| {
            for i in 40..600 {
                tx.create("tasks", Some(&format!("t{i:03}")), json!({"title": format!("task {i}"), "est": "1"}))?;
            }
            Ok(())
        })
        .expect("more tasks");
    store.close().expect("close");

    // How long a whole run takes here, so that the kills spread over it.
    let calibrate = tmp.path().join("calibrate");
    crate::backup::copy_dir(&template, &calibrate);
    let mut child = crate::ChildRun::spawn(KILL_TEST, &[(CHILD_ENV, calibrate.as_os_str())]);
    child.wait_for(|l| l == "START");
    let started = std::time::Instant::now();
    child.wait_for(|l| l == "DONE");
    let run_ms = started.elapsed().as_millis() as u64 + 1;
    child.kill();

    let mut seen = std::collections::BTreeMap::new();
    for cycle in 0..20 {
        let dir = tmp.path().join(format!("cycle{cycle}"));
        crate::backup::copy_dir(&template, &dir);
        let mut child = crate::ChildRun::spawn(KILL_TEST, &[(CHILD_ENV, dir.as_os_str())]);
        child.wait_for(|l| l == "START");
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..run_ms)));
        child.kill();

        let store = Store::open(&dir, StoreOptions::existing()).unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        let applied = cairn::Store::migration_status(&dir, &Migrations::default()).expect("status").len() as u32;
        let schema = store.collection("tasks").expect("tasks").schema;
        let fields: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
        assert_eq!(fields, expected_fields(applied), "cycle {cycle}: schema matches the applied migrations");
        for r in store.scan("tasks", &ScanOptions { include_deleted: true, ..ScanOptions::default() }).expect("scan") {
            let est = r.body["est"].as_str().expect("est");
            assert_eq!(
                est.matches('+').count() as u32,
                applied,
                "cycle {cycle}: record {} is at another boundary",
                r.id
            );
            for n in 1..=applied {
                assert_eq!(r.body[&format!("f{n}")], json!(n), "cycle {cycle}");
            }
        }
        let report = store.check(&CheckOptions::default(), &mut quiet()).expect("check");
        assert!(report.is_ok(), "cycle {cycle}: {:?}", report.problems);
        store.close().expect("close");
        *seen.entry(applied).or_insert(0) += 1;
        std::fs::remove_dir_all(&dir).expect("clean the cycle's copy");
    }
    eprintln!("a run took {run_ms} ms; boundaries reached (migrations applied: cycles): {seen:?}");
}
