//! Legacy Taskerino import: sample files generated here (valid, then each malformation),
//! checking counts, fields, attachments and the report.

use std::path::Path;

use cairn::{LegacyOptions, Store, StoreOptions};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn quiet() -> impl FnMut(&str, u64, u64) {
    |_, _, _| {}
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores `content` the way the app did: `attachments/<first two>/<sha256>`; returns the hash.
fn attachment(dir: &Path, content: &[u8]) -> String {
    let hash = hex(content);
    let folder = dir.join("attachments").join(&hash[..2]);
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join(&hash), content).expect("write");
    hash
}

/// The eight collections of a small Taskerino data set, with attachments on disk under `dir`.
fn collections(dir: &Path) -> serde_json::Map<String, Value> {
    let png = attachment(dir, b"\x89PNG\r\n\x1a\n screenshot one");
    let audio = attachment(dir, b"ID3 audio segment");
    let doc = attachment(dir, b"minutes of the meeting");
    std::fs::write(
        dir.join("attachments/att-audio.json"),
        json!({"id": "att-audio", "type": "audio", "name": "segment 1.mp3", "mimeType": "audio/mpeg", "size": 17, "hash": audio, "createdAt": 1}).to_string(),
    )
    .expect("metadata");
    let data = json!({
        "companies": [
            {"id": "c1", "name": "Acme", "website": "https://acme.test", "color": "red"},
            {"id": "c2", "name": "Globex", "tags": ["client"]}
        ],
        "contacts": [
            {"id": "p1", "name": "Ann", "email": "ann@acme.test", "companyId": "c1", "role": "CTO"},
            {"id": "p2", "name": "Bob", "companyId": "c2"}
        ],
        "topics": [
            {"id": "t1", "name": "Checkout", "type": "project"},
            {"id": "t2", "name": "Hiring", "type": "area", "description": "people"}
        ],
        "sessions": [
            {"id": "s1", "name": "Debugging checkout", "status": "completed", "startTime": "2025-10-20T09:00:00+02:00",
             "endTime": "2025-10-20T10:30:00+02:00", "tags": ["acme"], "companyId": "c1",
             "screenshots": [{"timestamp": "2025-10-20T09:05:00Z", "attachmentId": "shot-1", "hash": png}],
             "audioSegments": [{"timestamp": "2025-10-20T09:06:00Z", "duration": 30, "transcript": "hello", "attachmentId": "att-audio"}],
             "summary": {"narrative": "fixed it", "highlights": [], "actionItems": ["ship"]}},
            {"id": "s2", "name": "Planning", "status": "active", "startTime": "2025-10-21"}
        ],
        "notes": [
            {"id": "n1", "content": "Retry logic is wrong", "timestamp": "2025-10-20T09:10:00Z", "topicId": "t1", "sessionId": "s1",
             "attachments": [{"id": "a-doc", "type": "document", "name": "minutes.txt", "mimeType": "text/plain", "hash": doc}]},
            {"id": "n2", "content": "Interview notes", "timestamp": "2025-10-21T12:00:00Z", "topicId": "t2", "pinned": true}
        ],
        "tasks": [
            {"id": "k1", "title": "Fix retry", "status": "todo", "priority": "high", "dueDate": "2025-10-25", "noteId": "n1", "topicId": "t1"},
            {"id": "k2", "title": "Post the job", "done": true}
        ],
        "aiSettings": {"provider": "local", "model": "small"},
        "preferences": {"theme": "dark"}
    });
    match data {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// Writes the data set as the monolithic files of a Taskerino data directory.
fn legacy_dir(dir: &Path) -> serde_json::Map<String, Value> {
    std::fs::create_dir_all(dir).expect("mkdir");
    let data = collections(dir);
    for (key, value) in &data {
        std::fs::write(dir.join(format!("{key}.json")), serde_json::to_vec_pretty(value).expect("json"))
            .expect("write");
    }
    data
}

#[test]
fn a_legacy_directory_imports_with_fields_attachments_and_settings() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("taskerino");
    legacy_dir(&input);
    let store = Store::open(tmp.path().join("store"), StoreOptions::default()).expect("open");
    let report = store.import_taskerino(&input, &LegacyOptions::default(), &mut quiet()).expect("import");
    assert_eq!(report.format, "directory");
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let counts: Vec<(&str, u64)> = report.imported.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(counts, [("companies", 2), ("contacts", 2), ("notes", 2), ("sessions", 2), ("tasks", 2), ("topics", 2)]);
    assert_eq!(report.attachments, 3);
    assert_eq!(report.dropped_fields.get("companies.color"), Some(&1));
    assert!(report.backup.is_some());

    let s1 = store.get("sessions", "s1").expect("s1").body;
    assert_eq!(s1["started_at"], "2025-10-20T07:00:00.000Z", "startTime mapped and normalised");
    assert_eq!(s1["company"], "c1");
    assert_eq!(s1["audio_segments"][0]["transcript"], "hello");
    let files = s1["attachments"].as_array().expect("the screenshots and audio became attachments");
    assert_eq!(files.len(), 2);
    assert!(files.iter().any(|f| f["name"] == "segment 1.mp3" && f["mime"] == "audio/mpeg"), "{files:?}");
    let n1 = store.get("notes", "n1").expect("n1").body;
    assert_eq!((n1["topic"].clone(), n1["session"].clone()), (json!("t1"), json!("s1")));
    let hash = n1["attachments"][0]["hash"].as_str().expect("hash").to_string();
    let mut content = String::new();
    std::io::Read::read_to_string(&mut store.open_blob(&hash).expect("in the blob store"), &mut content).expect("read");
    assert_eq!(content, "minutes of the meeting");
    assert_eq!(store.get("tasks", "k1").expect("k1").body["due_date"], "2025-10-25T00:00:00.000Z");
    assert_eq!(store.get("topics", "t2").expect("t2").body["kind"], "area");
    assert_eq!(store.setting("taskerino.preferences").expect("preferences").value, json!({"theme": "dark"}));
    let check = store.check(&cairn::CheckOptions::default(), &mut quiet()).expect("check");
    assert!(check.is_ok(), "{:?}", check.problems);

    let again = store.import_taskerino(&input, &LegacyOptions::default(), &mut quiet()).expect("again");
    assert_eq!((again.imported.values().sum::<u64>(), again.existing), (0, 12), "existing records are left alone");
}

#[test]
fn each_malformation_is_skipped_and_reported_or_refused_with_strict() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("taskerino");
    let data = legacy_dir(&input);
    let mut notes = data["notes"].clone();
    let list = notes.as_array_mut().expect("list");
    list.push(json!({"content": "no id", "timestamp": "2025-10-22T00:00:00Z"}));
    list.push(json!({"id": "n1", "content": "same id again", "timestamp": "2025-10-22T00:00:00Z"}));
    list.push(json!({"id": "n3", "content": 42, "timestamp": "2025-10-22T00:00:00Z"}));
    list.push(json!("not a record"));
    list.push(json!({"id": "n4", "content": "ghost file", "timestamp": "2025-10-22T00:00:00Z",
                     "attachments": [{"id": "gone", "hash": "ab".repeat(32)}], "topicId": "t9"}));
    std::fs::write(input.join("notes.json"), serde_json::to_vec(&notes).expect("json")).expect("write");
    let tasks = std::fs::read(input.join("tasks.json")).expect("read");
    std::fs::write(input.join("tasks.json"), &tasks[..tasks.len() / 2]).expect("truncate");

    let strict = Store::open(tmp.path().join("strict"), StoreOptions::default()).expect("open");
    let err = strict
        .import_taskerino(&input, &LegacyOptions { strict: true, ..LegacyOptions::default() }, &mut quiet())
        .expect_err("strict refuses");
    assert!(err.to_string().contains("--strict") && err.to_string().contains("nothing was written"), "{err}");
    assert!(strict.collections().expect("collections").is_empty(), "nothing was written");

    let store = Store::open(tmp.path().join("store"), StoreOptions::default()).expect("open");
    let report = store.import_taskerino(&input, &LegacyOptions::default(), &mut quiet()).expect("import");
    let reasons: Vec<(String, Option<String>, String)> =
        report.skipped.iter().map(|s| (s.source.clone(), s.id.clone(), s.reason.clone())).collect();
    let has = |source: &str, id: Option<&str>, words: &str| {
        reasons.iter().any(|(s, i, r)| s == source && i.as_deref() == id && r.contains(words))
    };
    assert!(has("tasks.json", None, "truncated"), "{reasons:#?}");
    assert!(has("notes.json", None, "missing id"), "{reasons:#?}");
    assert!(has("notes.json", Some("n1"), "duplicate id"), "{reasons:#?}");
    assert!(has("notes.json", Some("n3"), "wrong type"), "{reasons:#?}");
    assert!(has("notes.json", None, "expected a record object"), "{reasons:#?}");
    assert!(has("notes.json", Some("n4"), "dangling attachment"), "{reasons:#?}");
    assert!(has("notes.json", Some("n4"), "which is nowhere"), "{reasons:#?}");
    assert_eq!(report.imported.get("notes"), Some(&3), "n1, n2 and n4 (without its broken links)");
    assert_eq!(report.imported.get("tasks"), None, "the truncated file gave nothing");
    let n4 = store.get("notes", "n4").expect("n4").body;
    assert!(n4.get("attachments").is_none() && n4.get("topic").is_none(), "{n4:?}");
}

#[test]
fn the_single_file_export_imports_and_bad_input_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut data = collections(tmp.path());
    data.insert("version".into(), json!("1.0.0"));
    data.insert("exportedAt".into(), json!("2025-10-21T08:00:00.000Z"));
    data.insert("appVersion".into(), json!("0.5.1"));
    let file = tmp.path().join("taskerino-export.json");
    let text = serde_json::to_vec(&Value::Object(data.clone())).expect("json");
    std::fs::write(&file, &text).expect("write");
    let store = Store::open(tmp.path().join("store"), StoreOptions::default()).expect("open");
    let dry = store
        .import_taskerino(&file, &LegacyOptions { dry_run: true, ..LegacyOptions::default() }, &mut quiet())
        .expect("dry run");
    assert_eq!(dry.imported.values().sum::<u64>(), 12);
    assert!(store.collections().expect("collections").is_empty(), "a dry run writes nothing");
    let report = store.import_taskerino(&file, &LegacyOptions::default(), &mut quiet()).expect("import");
    assert_eq!(report.format, "export 1.0.0");
    assert_eq!(report.imported.values().sum::<u64>(), 12);
    assert_eq!(report.attachments, 3, "found in the attachments folder beside the file");

    let fresh = Store::open(tmp.path().join("fresh"), StoreOptions::default()).expect("open");
    for (name, bytes) in [
        ("truncated.json", text[..text.len() / 3].to_vec()),
        ("wrong-version.json", serde_json::to_vec(&json!({"version": "2.0.0", "exportedAt": "x"})).expect("json")),
        ("not-an-export.json", b"[1, 2, 3]".to_vec()),
    ] {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let err = fresh.import_taskerino(&path, &LegacyOptions::default(), &mut quiet()).expect_err(name);
        assert!(matches!(err, cairn::Error::InvalidInput { .. }), "{name}: {err:?}");
        assert!(fresh.collections().expect("collections").is_empty(), "{name}: nothing was written");
    }
    let other = Store::open(tmp.path().join("other"), StoreOptions::default()).expect("open");
    other
        .create_collection(
            cairn::CollectionSchema::from_json(r#"{"name": "notes", "fields": []}"#, "notes").expect("schema"),
        )
        .expect("notes");
    let err = other.import_taskerino(&file, &LegacyOptions::default(), &mut quiet()).expect_err("another notes schema");
    assert!(err.to_string().contains("another schema than Taskerino's"), "{err}");
    assert_eq!(other.collections().expect("collections").len(), 1, "nothing was written");

    let garbage = tmp.path().join("garbage");
    std::fs::create_dir(&garbage).expect("mkdir");
    std::fs::write(garbage.join("sessions.json"), b"{\"trunc").expect("write");
    let err = fresh.import_taskerino(&garbage, &LegacyOptions::default(), &mut quiet()).expect_err("nothing parses");
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert!(fresh.collections().expect("collections").is_empty());
}
