//! Export and import: round trips, dry runs that write nothing, failures that leave the
//! store as it was, conflicts, and exports that were tampered with or are not for import.

use std::path::{Path, PathBuf};

use cairn::Redaction;
use cairn::{
    CollectionSchema, Error, ExportOptions, ImportOptions, OnConflict, ScanOptions, SettingDef, Store, StoreOptions,
    Upload,
};
use serde_json::{json, Value};

fn quiet() -> impl FnMut(&str, u64, u64) {
    |_, _, _| {}
}

fn schema(text: &str) -> CollectionSchema {
    CollectionSchema::from_json(text, "schema").expect("schema")
}

/// topics ← notes (relation, attachments, deleted records), a custom setting and a builtin one.
fn populated(dir: &Path) -> Store {
    let store = Store::open(dir, StoreOptions::default()).expect("open");
    store
        .create_collection(schema(
            r#"{"name": "topics", "fields": [{"name": "name", "type": "text", "required": true, "unique": true}]}"#,
        ))
        .expect("topics");
    store
        .create_collection(schema(
            r#"{"name": "notes", "fields": [
                {"name": "title", "type": "text", "required": true, "fulltext": true},
                {"name": "topic", "type": "relation", "collection": "topics"},
                {"name": "tags", "type": "tags", "indexed": true},
                {"name": "files", "type": "attachments"}]}"#,
        ))
        .expect("notes");
    for t in 0..3 {
        store.create_with_id("topics", &format!("t{t}"), json!({"name": format!("topic {t}")})).expect("topic");
    }
    for i in 0..30 {
        let body = json!({"title": format!("note {i} ünïcode"), "topic": format!("t{}", i % 3), "tags": [format!("k{}", i % 4)]});
        store.create_with_id("notes", &format!("n{i:02}"), body).expect("note");
    }
    for i in [3, 7] {
        store.delete("notes", &format!("n{i:02}"), None).expect("delete");
    }
    for i in [0, 1, 2, 4] {
        let content = format!("attachment {} body", i % 2).into_bytes();
        let upload = Upload { name: format!("f{i}.txt"), mime: None };
        store.attach("notes", &format!("n{i:02}"), "files", &content[..], &upload).expect("attach");
    }
    store
        .define_setting(SettingDef {
            key: "ui.theme".into(),
            kind: cairn::SettingType::Text,
            default: json!("light"),
            description: "colours".into(),
            min: None,
            max: None,
            choices: Some(vec![json!("light"), json!("dark")]),
        })
        .expect("define");
    store.set_setting("ui.theme", json!("dark")).expect("set");
    store.set_setting("records.max_body_bytes", json!(200_000)).expect("set builtin");
    store
}

/// Every file of an export but the manifest's time.
fn export_content(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("list").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(dir).expect("inside").to_string_lossy().into_owned();
            let mut bytes = std::fs::read(&path).expect("read");
            if rel == "manifest.json" {
                let mut manifest: Value = serde_json::from_slice(&bytes).expect("manifest");
                manifest.as_object_mut().expect("object").remove("exported_at");
                bytes = serde_json::to_vec(&manifest).expect("json");
            }
            out.push((rel, bytes));
        }
    }
    out.sort();
    out
}

/// Records (id, deleted, body) of every collection, settings, blob count, change-log seq.
fn state(store: &Store) -> Value {
    let mut collections = serde_json::Map::new();
    for info in store.collections().expect("collections") {
        let mut rows = Vec::new();
        let mut scan = ScanOptions { include_deleted: true, ..ScanOptions::default() };
        loop {
            let page = store.scan(&info.schema.name, &scan).expect("scan");
            let Some(last) = page.last() else { break };
            scan.after = Some(last.id.clone());
            rows.extend(page.into_iter().map(|r| json!([r.id, r.version, r.deleted_at.is_some(), r.body])));
        }
        collections.insert(info.schema.name.clone(), json!({"schema": info.schema, "records": rows}));
    }
    let settings: Vec<Value> =
        store.settings().expect("settings").into_iter().map(|s| json!([s.def.key, s.value])).collect();
    let blobs = store.blobs(None, 10_000).expect("blobs").len();
    json!({"collections": collections, "settings": settings, "blobs": blobs, "seq": store.last_seq().expect("seq").get()})
}

/// Recomputes the manifest's sizes and checksums after a test edited a file.
fn reseal(dir: &Path) {
    let path = dir.join("manifest.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    let fix = |entry: &mut Value| {
        let file = dir.join(entry["path"].as_str().expect("path"));
        let bytes = std::fs::read(&file).expect("read");
        entry["bytes"] = json!(bytes.len());
        use sha2::Digest;
        entry["sha256"] = json!(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>());
    };
    fix(&mut manifest["schemas"]);
    fix(&mut manifest["settings"]);
    for c in manifest["collections"].as_array_mut().expect("collections") {
        fix(&mut c["file"]);
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).expect("json")).expect("write");
}

fn exported(tmp: &Path) -> PathBuf {
    let store = populated(&tmp.join("source"));
    let out = tmp.join("export");
    let manifest =
        store.export(&out, &ExportOptions { blobs: true, ..ExportOptions::default() }, &mut quiet()).expect("export");
    assert_eq!(
        manifest.collections.iter().map(|c| (c.name.as_str(), c.records, c.deleted)).collect::<Vec<_>>(),
        [("notes", 30, 2), ("topics", 3, 0)]
    );
    assert_eq!(manifest.blobs.len(), 2, "two distinct attachments");
    store.close().expect("close");
    out
}

#[test]
fn export_import_export_round_trips() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = exported(tmp.path());
    let schemas: Value =
        serde_json::from_slice(&std::fs::read(first.join("schemas.json")).expect("read")).expect("json");
    assert_eq!(schemas[0]["name"], "topics", "a relation's target comes first");

    let target = Store::open(tmp.path().join("target"), StoreOptions::default()).expect("open");
    let report = target.import(&first, &ImportOptions::default(), &mut quiet()).expect("import");
    assert!(!report.dry_run && report.backup.is_some());
    assert_eq!((report.blobs, report.blobs_added, report.conflict_count), (2, 2, 0));
    assert_eq!(report.collections.iter().map(|c| c.created).sum::<u64>(), 33);
    let second = tmp.path().join("export2");
    target
        .export(&second, &ExportOptions { blobs: true, ..ExportOptions::default() }, &mut quiet())
        .expect("export again");
    assert_eq!(export_content(&first), export_content(&second), "the same content apart from the time");
    let attached = target.get("notes", "n01").expect("n01");
    let hash = attached.body["files"][0]["hash"].as_str().expect("hash").to_string();
    let mut content = String::new();
    std::io::Read::read_to_string(&mut target.open_blob(&hash).expect("blob"), &mut content).expect("read");
    assert_eq!(content, "attachment 1 body");
    assert!(target.get_including_deleted("notes", "n03").expect("n03").deleted_at.is_some(), "deleted stays deleted");
    let report = target.check(&cairn::CheckOptions::default(), &mut quiet()).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);

    // The same export again: nothing differs, nothing is written.
    let before = state(&target);
    let again = target.import(&first, &ImportOptions::default(), &mut quiet()).expect("import again");
    assert_eq!(again.collections.iter().map(|c| c.unchanged).sum::<u64>(), 33);
    assert_eq!((again.settings, again.blobs_added), (0, 0));
    assert_eq!(state(&target), before);
    let audit = target.audit_log(Some(r#"action = "import" or action = "export""#), 0, 10).expect("audit");
    assert_eq!(audit.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["import", "export", "import"]);
}

#[test]
fn a_dry_run_writes_nothing_and_reports_conflicts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let export = exported(tmp.path());
    let target = populated(&tmp.path().join("target"));
    target.patch("notes", "n05", json!({"title": "changed here"}), None).expect("patch");
    target.patch("topics", "t1", json!({"name": "renamed"}), None).expect("patch");
    let before = state(&target);
    let dry = ImportOptions { dry_run: true, ..ImportOptions::default() };
    let report = target.import(&export, &dry, &mut quiet()).expect("dry run");
    assert!(report.dry_run && report.backup.is_none());
    assert_eq!(report.conflicts, ["notes/n05", "topics/t1"]);
    assert_eq!(state(&target), before, "a dry run writes nothing");
    assert!(cairn::Backups::of(target.dir()).list().expect("list").is_empty());

    let err = target.import(&export, &ImportOptions::default(), &mut quiet()).expect_err("conflicts fail by default");
    assert!(err.to_string().contains("notes/n05") && err.to_string().contains("skip or overwrite"), "{err}");
    assert_eq!(state(&target), before);

    let skip = ImportOptions { on_conflict: OnConflict::Skip, ..ImportOptions::default() };
    let report = target.import(&export, &skip, &mut quiet()).expect("skip");
    assert_eq!(report.collections.iter().map(|c| c.skipped).sum::<u64>(), 2);
    assert_eq!(target.get("notes", "n05").expect("n05").body["title"], "changed here");
    let overwrite = ImportOptions { on_conflict: OnConflict::Overwrite, ..ImportOptions::default() };
    let report = target.import(&export, &overwrite, &mut quiet()).expect("overwrite");
    assert_eq!(report.collections.iter().map(|c| c.overwritten).sum::<u64>(), 2);
    assert_eq!(target.get("notes", "n05").expect("n05").body["title"], "note 5 ünïcode");
}

#[test]
fn a_failure_halfway_leaves_the_store_unchanged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let export = exported(tmp.path());
    let target = Store::open(tmp.path().join("target"), StoreOptions::default()).expect("open");
    target.create_collection(schema(r#"{"name": "other", "fields": []}"#)).expect("other");
    let before = state(&target);

    // A record in the middle of the second file that its schema refuses.
    let topics = export.join("collections/topics.jsonl");
    let text = std::fs::read_to_string(&topics).expect("read").replace(r#""name":"topic 1""#, r#""name":5"#);
    std::fs::write(&topics, text).expect("write");
    reseal(&export);
    let err = target.import(&export, &ImportOptions::default(), &mut quiet()).expect_err("invalid record");
    assert!(
        matches!(&err, Error::Validation { collection, id: Some(id), field: Some(f), .. } if collection == "topics" && id == "t1" && f == "name"),
        "{err:?}"
    );
    assert_eq!(state(&target), before, "the notes written before it were rolled back");

    // A relation to a record that is nowhere.
    std::fs::write(&topics, "{\"body\":{\"name\":\"topic 0\"},\"id\":\"t0\"}\n").expect("write");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(export.join("manifest.json")).expect("read")).expect("json");
    manifest["collections"][1]["records"] = json!(1);
    std::fs::write(export.join("manifest.json"), serde_json::to_vec(&manifest).expect("json")).expect("write");
    reseal(&export);
    let err = target.import(&export, &ImportOptions::default(), &mut quiet()).expect_err("dangling");
    assert!(err.to_string().contains("neither in the export nor in the store"), "{err}");
    assert_eq!(state(&target), before);
}

#[test]
fn exports_that_were_changed_or_are_not_for_import_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let export = exported(tmp.path());
    let target = Store::open(tmp.path().join("target"), StoreOptions::default()).expect("open");
    let before = state(&target);
    let manifest_path = export.join("manifest.json");
    let original = std::fs::read(&manifest_path).expect("read");
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut manifest: Value = serde_json::from_slice(&original).expect("json");
        edit(&mut manifest);
        std::fs::write(&manifest_path, serde_json::to_vec(&manifest).expect("json")).expect("write");
        target.import(&export, &ImportOptions::default(), &mut quiet()).expect_err("refused").to_string()
    };
    assert!(with(&|m| m["redacted"] = json!({"mode": "mask"})).contains("redacted"));
    assert!(with(&|m| m["version"] = json!(99)).contains("newer"));
    assert!(with(&|m| m["format"] = json!("zip")).contains("not a cairn export"));
    assert!(with(&|m| m["collections"][0]["file"]["path"] = json!("../../etc/passwd")).contains("unexpected file path"));
    std::fs::write(&manifest_path, &original).expect("restore");

    let notes = export.join("collections/notes.jsonl");
    let text = std::fs::read_to_string(&notes).expect("read");
    std::fs::write(&notes, text.replacen("note 1 ", "note 9 ", 1)).expect("tamper");
    let err = target.import(&export, &ImportOptions::default(), &mut quiet()).expect_err("checksum").to_string();
    assert!(err.contains("notes.jsonl") && err.contains("does not match the manifest"), "{err}");
    std::fs::write(&notes, &text).expect("restore");

    let blob = std::fs::read_dir(export.join("blobs")).expect("blobs").flatten().next().expect("a blob").path();
    let content = std::fs::read(&blob).expect("read the blob");
    std::fs::remove_file(&blob).expect("remove a blob");
    let err = target.import(&export, &ImportOptions::default(), &mut quiet()).expect_err("missing blob").to_string();
    assert!(err.contains("blobs/"), "{err}");
    assert_eq!(state(&target), before);
    std::fs::write(&blob, content).expect("put the blob back, so that only the next problem remains");

    // A collection the store already has under another schema: change it with a migration first.
    target
        .create_collection(schema(r#"{"name": "topics", "fields": [{"name": "label", "type": "text"}]}"#))
        .expect("topics");
    let before = state(&target);
    let err = target.import(&export, &ImportOptions::default(), &mut quiet()).expect_err("schema differs").to_string();
    assert!(err.contains("`topics` exists with a different schema"), "{err}");
    assert_eq!(state(&target), before);

    let err = target.export(target.dir(), &ExportOptions::default(), &mut quiet()).expect_err("exists");
    assert!(err.to_string().contains("exists"), "{err}");
}

#[test]
fn redacted_exports_hide_pii_say_so_and_cannot_be_imported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store"), StoreOptions::default()).expect("open");
    store
        .create_collection(schema(
            r#"{"name": "contacts", "fields": [
                {"name": "name", "type": "text"},
                {"name": "email", "type": "text", "pii": true},
                {"name": "rate", "type": "number"}]}"#,
        ))
        .expect("contacts");
    for (id, email) in [("a", "ann@example.com"), ("b", "bob@example.com"), ("c", "ann@example.com")] {
        store
            .create_with_id("contacts", id, json!({"name": format!("name-{id}"), "email": email, "rate": 120.5}))
            .expect("create");
    }
    let read_all = |dir: &Path| -> String {
        let mut text = String::new();
        for (_, bytes) in export_content(dir) {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
        text
    };
    let mut lines_by_mode = Vec::new();
    for mode in [Redaction::Mask, Redaction::Hash, Redaction::Drop] {
        let out = tmp.path().join(format!("{mode:?}"));
        let options = ExportOptions {
            redact: Some(mode),
            redact_fields: vec!["contacts.rate".into()],
            ..ExportOptions::default()
        };
        let manifest = store.export(&out, &options, &mut quiet()).expect("export");
        let redacted = manifest.redacted.clone().expect("the manifest says so");
        assert_eq!(redacted["fields"], json!(["contacts.email", "contacts.rate"]), "{redacted}");
        let text = read_all(&out);
        assert!(!text.contains("example.com") && !text.contains("120.5"), "{mode:?}: {text}");
        assert!(text.contains("name-a"), "other fields stay");
        let err = Store::open(tmp.path().join(format!("target-{mode:?}")), StoreOptions::default())
            .expect("open")
            .import(&out, &ImportOptions::default(), &mut quiet())
            .expect_err("a redacted export is not a backup");
        assert!(err.to_string().contains("redacted"), "{err}");
        lines_by_mode.push(std::fs::read_to_string(out.join("collections/contacts.jsonl")).expect("read"));
    }
    assert!(lines_by_mode[0].contains(r#""email":"[redacted]""#));
    let hashed: Vec<Value> = lines_by_mode[1]
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json")["body"]["email"].clone())
        .collect();
    assert_eq!(hashed[0], hashed[2], "equal values hash alike within one export");
    assert_ne!(hashed[0], hashed[1]);
    assert!(!lines_by_mode[2].contains("email"));
    let err = store
        .export(
            &tmp.path().join("bad"),
            &ExportOptions {
                redact: Some(Redaction::Mask),
                redact_fields: vec!["contacts.ghost".into()],
                ..ExportOptions::default()
            },
            &mut quiet(),
        )
        .expect_err("unknown field");
    assert!(err.to_string().contains("contacts.ghost"), "{err}");
}
