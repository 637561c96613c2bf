//! Legacy Taskerino import: sample files generated here (valid, then each malformation),
//! checking counts, fields, attachments and the report.

use std::path::Path;

use cairn::{Store, StoreOptions};
use cairn_taskerino::LegacyOptions;
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
    let report = cairn_taskerino::import(&store, &input, &LegacyOptions::default(), &mut quiet()).expect("import");
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

    let again = cairn_taskerino::import(&store, &input, &LegacyOptions::default(), &mut quiet()).expect("again");
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
    let err = cairn_taskerino::import(
        &strict,
        &input,
        &LegacyOptions { strict: true, ..LegacyOptions::default() },
        &mut quiet(),
    )
    .expect_err("strict refuses");
    assert!(err.to_string().contains("strict import") && err.to_string().contains("nothing was written"), "{err}");
    assert!(strict.collections().expect("collections").is_empty(), "nothing was written");

    let store = Store::open(tmp.path().join("store"), StoreOptions::default()).expect("open");
    let report = cairn_taskerino::import(&store, &input, &LegacyOptions::default(), &mut quiet()).expect("import");
    let reasons: Vec<(String, Option<String>, String)> = report
        .skipped
        .iter()
        .chain(&report.left_out)
        .map(|s| (s.source.clone(), s.id.clone(), s.reason.clone()))
        .collect();
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
    let dry = cairn_taskerino::import(
        &store,
        &file,
        &LegacyOptions { dry_run: true, ..LegacyOptions::default() },
        &mut quiet(),
    )
    .expect("dry run");
    assert_eq!(dry.imported.values().sum::<u64>(), 12);
    assert!(store.collections().expect("collections").is_empty(), "a dry run writes nothing");
    let report = cairn_taskerino::import(&store, &file, &LegacyOptions::default(), &mut quiet()).expect("import");
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
        let err = cairn_taskerino::import(&fresh, &path, &LegacyOptions::default(), &mut quiet()).expect_err(name);
        assert!(matches!(err, cairn::Error::InvalidInput { .. }), "{name}: {err:?}");
        assert!(fresh.collections().expect("collections").is_empty(), "{name}: nothing was written");
    }
    let other = Store::open(tmp.path().join("other"), StoreOptions::default()).expect("open");
    other
        .create_collection(
            cairn::CollectionSchema::from_json(r#"{"name": "notes", "fields": []}"#, "notes").expect("schema"),
        )
        .expect("notes");
    let err = cairn_taskerino::import(&other, &file, &LegacyOptions::default(), &mut quiet())
        .expect_err("another notes schema");
    assert!(err.to_string().contains("exists with another schema"), "{err}");
    assert_eq!(other.collections().expect("collections").len(), 1, "nothing was written");

    let garbage = tmp.path().join("garbage");
    std::fs::create_dir(&garbage).expect("mkdir");
    std::fs::write(garbage.join("sessions.json"), b"{\"trunc").expect("write");
    let err =
        cairn_taskerino::import(&fresh, &garbage, &LegacyOptions::default(), &mut quiet()).expect_err("nothing parses");
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert!(fresh.collections().expect("collections").is_empty());
}

/// A generated Taskerino data set, written in each of the app's layouts (see `corpus`).
mod corpus {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::Write;
    use std::path::Path;

    use cairn::{Query, Store, StoreOptions};
    use cairn_taskerino::{LegacyOptions, LegacyReport};
    use serde_json::{json, Value};

    use super::{hex, quiet};

    const API_KEY: &str = "sk-legacy-zq7-9f8e7d6c5b4a";
    const BASE_MS: i64 = 1_729_414_800_000; // 2024-10-20T09:00:00Z

    /// The data: collections of valid records, attachment files, and what is malformed.
    struct Corpus {
        lists: BTreeMap<&'static str, Vec<Value>>,
        /// Attachment files as the app stored them: (path under attachments/, bytes).
        files: Vec<(String, Vec<u8>)>,
        /// Content that only inline base64 carries.
        inline: Vec<u8>,
        /// Files nothing links.
        orphans: Vec<(String, Vec<u8>)>,
        /// Raw records that are malformed, by collection, with the words their reason has.
        bad: Vec<(&'static str, String, Option<&'static str>, &'static str)>,
        /// Records only the app's backups hold: (collection, record).
        backed_up: Vec<(&'static str, Value)>,
    }

    fn iso(ms: i64) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).expect("time");
        let f =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        t.format(&f).expect("format")
    }

    fn generate() -> Corpus {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut lists: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
        let mut files = Vec::new();
        lists.insert(
            "companies",
            (0..5)
                .map(|i| json!({"id": format!("co{i}"), "name": format!("Company {i}"), "createdAt": BASE_MS + i}))
                .collect(),
        );
        lists.insert(
            "contacts",
            (0..8)
                .map(|i| {
                    json!({"id": format!("p{i}"), "name": format!("Person {i}"), "email": format!("p{i}@x.test"),
                                "companyId": format!("co{}", i % 5), "createdAt": iso(BASE_MS + 100 + i)})
                })
                .collect(),
        );
        lists.insert(
            "topics",
            (0..4).map(|i| json!({"id": format!("t{i}"), "name": format!("Topic {i}"), "type": "area"})).collect(),
        );
        let mut sessions = Vec::new();
        for i in 0..40i64 {
            let start = BASE_MS + i * 3_600_000;
            // Screenshots by attachment id: files named by the id, no metadata.
            let shot_id = format!("shot-{i}");
            let shot = format!("\u{89}PNG screenshot {i} {}", rng.u64(..)).into_bytes();
            files.push((format!("{shot_id}.png"), shot));
            let mut s = json!({
                "id": format!("s{i:02}"), "name": format!("Session {i}"), "status": "completed",
                "startTime": if i % 2 == 0 { json!(start) } else { json!(iso(start)) },
                "endTime": start + 1_800_000, "createdAt": start, "updatedAt": start + 1_800_000,
                "tags": [format!("tag{}", i % 3)],
                "topicIds": [format!("t{}", i % 4), "ghost-topic"],
                "companyIds": [format!("co{}", i % 5)],
                "contactIds": [format!("p{}", i % 8), format!("p{}", (i + 1) % 8)],
                "screenshots": [{"timestamp": iso(start + 60_000), "attachmentId": shot_id, "analysis": "code"}],
            });
            if i % 5 == 0 {
                // Audio by id, through a metadata file naming the hash of content stored by hash.
                let audio = format!("ID3 audio {i}").into_bytes();
                let hash = hex(&audio);
                files.push((format!("{}/{hash}", &hash[..2]), audio));
                let meta = json!({"id": format!("aud-{i}"), "name": format!("segment {i}.mp3"), "mimeType": "audio/mpeg", "hash": hash});
                files.push((format!("aud-{i}.json"), meta.to_string().into_bytes()));
                s["audioSegments"] = json!([{"timestamp": iso(start), "duration": 30, "transcript": "hi", "attachmentId": format!("aud-{i}")}]);
            }
            sessions.push(s);
        }
        lists.insert("sessions", sessions);
        let inline = b"inline note attachment".to_vec();
        let mut notes = Vec::new();
        for i in 0..60i64 {
            let created = BASE_MS + 10_000 * i;
            let mut n = json!({
                "id": format!("n{i:02}"), "content": format!("note {i}"), "createdAt": created,
                "topicIds": [format!("t{}", i % 4)], "companyIds": [], "contactIds": [format!("p{}", i % 8)],
                "sessionId": format!("s{:02}", i % 40),
            });
            if i % 2 == 0 {
                n["timestamp"] = json!(iso(created + 5));
            }
            if i % 10 == 0 {
                let doc = format!("minutes {i}").into_bytes();
                let hash = hex(&doc);
                files.push((hash.clone(), doc));
                n["attachments"] =
                    json!([{"id": format!("doc-{i}"), "name": "minutes.txt", "mimeType": "text/plain", "hash": hash}]);
            }
            if i == 7 {
                let data = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &inline);
                n["attachments"] =
                    json!([{"id": "inline-7", "name": "inline.txt", "data": format!("data:text/plain;base64,{data}")}]);
            }
            notes.push(n);
        }
        lists.insert("notes", notes);
        lists.insert(
            "tasks",
            (0..30i64)
                .map(|i| json!({"id": format!("k{i:02}"), "title": format!("Task {i}"), "dueDate": BASE_MS + 86_400_000 * i,
                                "createdAt": iso(BASE_MS + i), "topicId": format!("t{}", i % 4), "noteId": format!("n{:02}", i)}))
                .collect(),
        );
        let orphans = vec![
            ("ab".to_string() + "/" + &hex(b"orphan one"), b"orphan one".to_vec()),
            (hex(b"orphan two"), b"orphan two".to_vec()),
            ("lost-id.pdf".to_string(), b"%PDF orphan three".to_vec()),
        ];
        // An orphan stored "by hash" must sit in the folder of its hash's first two digits.
        let orphans: Vec<(String, Vec<u8>)> = orphans
            .into_iter()
            .map(|(path, bytes)| {
                if path.starts_with("ab/") {
                    (format!("{}/{}", &hex(&bytes)[..2], hex(&bytes)), bytes)
                } else {
                    (path, bytes)
                }
            })
            .collect();
        let huge = "x".repeat(5 * 1024 * 1024);
        let bad = vec![
            (
                "notes",
                json!({"id": "bad-type", "content": 42, "timestamp": iso(BASE_MS)}).to_string(),
                Some("bad-type"),
                "wrong type",
            ),
            ("sessions", json!({"name": "no id", "startTime": BASE_MS}).to_string(), None, "missing id"),
            ("notes", format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)), None, "cannot be parsed"),
            (
                "notes",
                "{\"id\": \"broken\", \"content\": \"unterminated}".to_string(),
                None,
                "not closed|cannot be parsed",
            ),
            (
                "tasks",
                json!({"id": "bad-date", "title": "t", "dueDate": "next tuesday-ish"}).to_string(),
                Some("bad-date"),
                "wrong type",
            ),
            (
                "notes",
                json!({"id": "huge", "content": huge, "timestamp": iso(BASE_MS)}).to_string(),
                Some("huge"),
                "over the limit",
            ),
            (
                "contacts",
                json!({"id": "p-dup-email", "name": "Copy", "email": "p1@x.test"}).to_string(),
                Some("p-dup-email"),
                "unique",
            ),
            ("tasks", json!({"id": "k00", "title": "same id again"}).to_string(), Some("k00"), "duplicate id"),
        ];
        let backed_up = vec![
            (
                "sessions",
                json!({"id": "lost-s1", "name": "Lost in the incident", "status": "completed", "startTime": BASE_MS - 86_400_000}),
            ),
            (
                "notes",
                json!({"id": "lost-n1", "content": "only the pre-migration backup has me", "createdAt": BASE_MS - 1}),
            ),
        ];
        Corpus { lists, files, inline, orphans, bad, backed_up }
    }

    /// A list file's text with the malformed raw records of `collection` inserted.
    fn list_text(c: &Corpus, collection: &str) -> String {
        let mut items: Vec<String> =
            c.lists[collection].iter().map(|v| serde_json::to_string_pretty(v).expect("json")).collect();
        for (bad_collection, raw, _, _) in &c.bad {
            if *bad_collection == collection {
                items.insert(items.len() / 2, raw.clone());
            }
        }
        format!("[\n{}\n]\n", items.join(",\n"))
    }

    fn write_attachments(c: &Corpus, dir: &Path) {
        for (rel, bytes) in c.files.iter().chain(&c.orphans) {
            let path = dir.join("attachments").join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, bytes).expect("write");
        }
    }

    fn settings_files(dir: &Path) {
        std::fs::write(
            dir.join("aiSettings.json"),
            json!({"provider": "openai", "model": "small", "apiKey": API_KEY}).to_string(),
        )
        .expect("write");
        std::fs::write(dir.join("preferences.json"), br#"{"theme": "dark"}"#).expect("write");
    }

    /// The monolithic layout, in the encodings users' files really have, with the app's backups.
    fn monolithic(c: &Corpus, dir: &Path) {
        std::fs::create_dir_all(dir).expect("mkdir");
        for collection in ["companies", "contacts", "topics", "sessions", "notes", "tasks"] {
            let text = list_text(c, collection);
            let bytes: Vec<u8> = match collection {
                "notes" => [&[0xEF, 0xBB, 0xBF][..], text.as_bytes()].concat(),
                "tasks" => [0xFF, 0xFE].into_iter().chain(text.encode_utf16().flat_map(u16::to_le_bytes)).collect(),
                "contacts" => text.encode_utf16().flat_map(u16::to_le_bytes).collect(),
                _ => text.into_bytes(),
            };
            std::fs::write(dir.join(format!("{collection}.json")), bytes).expect("write");
        }
        // The app's backups: an older copy of the sessions with one more record, and the
        // notes as they were before a migration.
        let mut sessions: Vec<Value> = c.lists["sessions"][..3].to_vec();
        let mut notes: Vec<Value> = c.lists["notes"][..2].to_vec();
        for (collection, record) in &c.backed_up {
            match *collection {
                "sessions" => sessions.push(record.clone()),
                _ => notes.push(record.clone()),
            }
        }
        std::fs::write(dir.join("sessions.1729000000000.backup.json"), serde_json::to_vec(&sessions).expect("json"))
            .expect("write");
        std::fs::write(dir.join("notes.pre-migration.backup.json"), serde_json::to_vec(&notes).expect("json"))
            .expect("write");
        write_attachments(c, dir);
        settings_files(dir);
    }

    /// The per-entity layout: index.json and one file per record (sessions gzipped), one
    /// record missing its file, one file missing from the index.
    fn per_entity(c: &Corpus, dir: &Path) {
        for collection in ["companies", "contacts", "topics", "sessions", "notes", "tasks"] {
            let folder = dir.join(collection);
            std::fs::create_dir_all(&folder).expect("mkdir");
            let singular = &collection[..collection.len() - 1];
            let mut index = Vec::new();
            for (i, record) in c.lists[collection].iter().enumerate() {
                let id = record["id"].as_str().expect("id");
                if !(collection == "tasks" && i == 3) {
                    index.push(json!({"id": id}));
                }
                let text = serde_json::to_vec(record).expect("json");
                if collection == "sessions" {
                    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    gz.write_all(&text).expect("gzip");
                    std::fs::write(folder.join(format!("{singular}-{id}.json.gz")), gz.finish().expect("gzip"))
                        .expect("write");
                } else {
                    std::fs::write(folder.join(format!("{singular}-{id}.json")), text).expect("write");
                }
            }
            for (i, (bad_collection, raw, id, _)) in c.bad.iter().enumerate() {
                if *bad_collection == collection {
                    std::fs::write(folder.join(format!("{singular}-zz-bad{i}.json")), raw).expect("write");
                    if let Some(id) = id {
                        index.push(json!({"id": id}));
                    }
                }
            }
            if collection == "topics" {
                index.push(json!({"id": "t-gone"}));
            }
            std::fs::write(folder.join("index.json"), serde_json::to_vec(&index).expect("json")).expect("write");
        }
        write_attachments(c, dir);
        settings_files(dir);
    }

    /// The 1.0.0 single-file export.
    fn export(c: &Corpus, dir: &Path) -> std::path::PathBuf {
        std::fs::create_dir_all(dir).expect("mkdir");
        let mut text = String::from(
            "{\"version\": \"1.0.0\", \"exportedAt\": \"2025-10-21T08:00:00.000Z\", \"appVersion\": \"0.5.1\"",
        );
        for collection in ["companies", "contacts", "topics", "sessions", "notes", "tasks"] {
            text.push_str(&format!(",\n\"{collection}\": {}", list_text(c, collection)));
        }
        text.push_str(&format!(
            ",\n\"aiSettings\": {},\n\"preferences\": {{\"theme\": \"dark\"}}}}",
            json!({"model": "small", "apiKey": API_KEY})
        ));
        let file = dir.join("taskerino-export.json");
        std::fs::write(&file, text).expect("write");
        write_attachments(c, dir);
        file
    }

    fn fresh(path: &Path, with_key: bool) -> Store {
        let store = Store::open(path, StoreOptions::default()).expect("open");
        if with_key {
            store.key_init(&cairn::Secret::passphrase("correct horse battery staple")).expect("key");
        }
        store
    }

    /// What every layout must give: every valid record with its fields and times, every
    /// malformed one reported, orphans kept, relations queryable, `check` clean.
    fn assert_imported(c: &Corpus, store: &Store, report: &LegacyReport, layout: &str) {
        let counts: BTreeMap<&str, u64> = report.imported.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        for (collection, list) in &c.lists {
            assert_eq!(
                counts.get(collection).copied().unwrap_or(0),
                list.len() as u64,
                "{layout}: {collection} imported: {report:#?}"
            );
        }
        for s in &c.lists["sessions"] {
            let id = s["id"].as_str().expect("id");
            let body = store.get("sessions", id).expect("session").body;
            let start = match &s["startTime"] {
                Value::Number(n) => iso(n.as_i64().expect("ms")),
                other => other.as_str().expect("iso").to_string(),
            };
            assert_eq!(body["started_at"], json!(start), "{layout}: {id} keeps its time");
            assert_eq!(body["created_at"], json!(iso(s["createdAt"].as_i64().expect("ms"))), "{layout}: {id}");
            let topics: Vec<&Value> =
                s["topicIds"].as_array().expect("ids").iter().filter(|t| *t != "ghost-topic").collect();
            assert_eq!(
                body["topic_ids"].as_array().expect("topic_ids").iter().collect::<Vec<_>>(),
                topics,
                "{layout}: {id}"
            );
            assert_eq!(body["contact_ids"], s["contactIds"], "{layout}: {id}");
            let files = body["attachments"].as_array().expect("attachments");
            assert_eq!(files.len(), if s.get("audioSegments").is_some() { 2 } else { 1 }, "{layout}: {id}: {files:?}");
        }
        for n in &c.lists["notes"] {
            let id = n["id"].as_str().expect("id");
            let body = store.get("notes", id).expect("note").body;
            let created = iso(n["createdAt"].as_i64().expect("ms"));
            assert_eq!(body["created_at"], json!(created), "{layout}: {id}");
            let timestamp = n.get("timestamp").and_then(Value::as_str).map_or(created, String::from);
            assert_eq!(body["timestamp"], json!(timestamp), "{layout}: {id}: createdAt fills a missing timestamp");
        }
        // Attachments found by id and by hash, inline ones decoded: contents byte for byte.
        let read = |hash: &str| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut store.open_blob(hash).expect("blob"), &mut bytes).expect("read");
            bytes
        };
        for (rel, bytes) in &c.files {
            if !rel.ends_with(".json") {
                assert_eq!(&read(&hex(bytes)), bytes, "{layout}: {rel}");
            }
        }
        assert_eq!(read(&hex(&c.inline)), c.inline, "{layout}: inline base64");
        // Orphans are kept, as records nothing collects.
        let mut kept: BTreeSet<String> = BTreeSet::new();
        let page = store
            .query("attachments", &Query { filter: Some("orphan = true".into()), ..Query::default() })
            .expect("orphans");
        for row in &page.rows {
            kept.insert(
                store.get("attachments", &row.id).expect("orphan").body["file"]["hash"]
                    .as_str()
                    .expect("hash")
                    .to_string(),
            );
        }
        let expected: BTreeSet<String> = c.orphans.iter().map(|(_, b)| hex(b)).collect();
        assert_eq!(kept, expected, "{layout}: orphans");
        assert_eq!(report.orphans.len(), c.orphans.len(), "{layout}");
        // Every malformed record is named with its reason.
        for (collection, _, id, words) in &c.bad {
            let found = report.skipped.iter().any(|s| {
                s.id.as_deref() == *id
                    && words.split('|').any(|w| s.reason.contains(w))
                    && (id.is_some() || s.source.contains(collection))
            });
            assert!(found, "{layout}: {collection} {id:?} ({words}) not reported: {:#?}", report.skipped);
        }
        // Arrays of relations are queryable.
        let with_t1 = store
            .query("sessions", &Query { filter: Some(r#"topic_ids has "t1""#.into()), limit: 100, ..Query::default() })
            .expect("query");
        assert_eq!(with_t1.rows.len(), 10, "{layout}: sessions with topic t1");
        assert!(!report.is_complete());
        let check = store.check(&cairn::CheckOptions::default(), &mut quiet()).expect("check");
        assert!(check.is_ok(), "{layout}: {:?}", check.problems);
    }

    /// Runs a layout twice — a dry run, then the real run on another store — and compares
    /// their counts.
    fn import_both_ways(
        input: &Path,
        tmp: &Path,
        options: &LegacyOptions,
        with_key: bool,
    ) -> (Store, LegacyReport, LegacyReport) {
        let dry_store = fresh(&tmp.join("dry"), with_key);
        let dry = cairn_taskerino::import(
            &dry_store,
            input,
            &LegacyOptions { dry_run: true, ..options.clone() },
            &mut quiet(),
        )
        .expect("dry run");
        assert!(dry_store.collections().expect("collections").is_empty(), "a dry run writes nothing");
        assert!(dry_store.blobs(None, 10).expect("blobs").is_empty(), "a dry run stores no attachment");
        let store = fresh(&tmp.join("real"), with_key);
        let real = cairn_taskerino::import(&store, input, options, &mut quiet()).expect("import");
        assert_eq!(dry.imported, real.imported, "dry-run and real counts agree");
        assert_eq!(dry.skipped, real.skipped, "dry-run and real skips agree");
        assert_eq!((dry.attachments, &dry.orphans, &dry.settings), (real.attachments, &real.orphans, &real.settings));
        (store, dry, real)
    }

    #[test]
    fn the_monolithic_layout_in_every_encoding_with_the_apps_backups() {
        let c = generate();
        let tmp = tempfile::tempdir().expect("tempdir");
        let input = tmp.path().join("data");
        monolithic(&c, &input);
        let (store, _, report) = import_both_ways(&input, tmp.path(), &LegacyOptions::default(), true);
        assert_eq!(report.format, "directory");
        assert_imported(&c, &store, &report, "monolithic");
        // Records only the backups hold are reported, not imported…
        let only: BTreeSet<(String, String)> =
            report.only_in_backups.iter().map(|b| (b.collection.clone(), b.id.clone())).collect();
        assert_eq!(
            only,
            c.backed_up.iter().map(|(c, r)| (c.to_string(), r["id"].as_str().expect("id").to_string())).collect()
        );
        assert!(report.only_in_backups.iter().all(|b| !b.imported));
        assert!(store.get("sessions", "lost-s1").is_err());
        // …and imported with `from_backups`, keeping the original times.
        let again = cairn_taskerino::import(
            &store,
            &input,
            &LegacyOptions { from_backups: true, ..LegacyOptions::default() },
            &mut quiet(),
        )
        .expect("again");
        assert_eq!(again.imported.values().sum::<u64>(), 2, "only the backed-up records are new: {again:#?}");
        let lost = store.get("sessions", "lost-s1").expect("from the backup").body;
        assert_eq!(lost["started_at"], json!(iso(BASE_MS - 86_400_000)));
        assert_eq!(
            store.get("notes", "lost-n1").expect("from the pre-migration backup").body["timestamp"],
            json!(iso(BASE_MS - 1))
        );
        // The API key is sealed, nowhere in the clear; the rest of aiSettings is kept.
        store.unlock(&cairn::Secret::passphrase("correct horse battery staple")).expect("unlock");
        let key = store.secret("taskerino.ai_settings.api_key").expect("secret").expect("set");
        assert_eq!(key.as_str(), API_KEY);
        assert_eq!(
            store.setting("taskerino.ai_settings").expect("json").value,
            json!({"provider": "openai", "model": "small"})
        );
        let mut leaks = Vec::new();
        let mut stack = vec![store.dir().to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("list").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if std::fs::read(&path).is_ok_and(|b| b.windows(API_KEY.len()).any(|w| w == API_KEY.as_bytes()))
                {
                    leaks.push(path);
                }
            }
        }
        assert!(leaks.is_empty(), "the API key in the clear in {leaks:?}");
    }

    #[test]
    fn a_store_without_a_key_reports_the_secret_instead_of_storing_it() {
        let c = generate();
        let tmp = tempfile::tempdir().expect("tempdir");
        let input = tmp.path().join("data");
        monolithic(&c, &input);
        let (store, _, report) = import_both_ways(&input, tmp.path(), &LegacyOptions::default(), false);
        let skipped =
            report.skipped.iter().find(|s| s.id.as_deref() == Some("taskerino.ai_settings.api_key")).expect("reported");
        assert!(skipped.reason.contains("sealed"), "{skipped:?}");
        assert!(matches!(store.setting("taskerino.ai_settings.api_key"), Err(cairn::Error::UnknownSetting { .. })));
        assert_eq!(store.setting("taskerino.ai_settings").expect("json").value["model"], "small");
    }

    #[test]
    fn the_per_entity_layout_with_gzipped_files_and_an_inconsistent_index() {
        let c = generate();
        let tmp = tempfile::tempdir().expect("tempdir");
        let input = tmp.path().join("data");
        per_entity(&c, &input);
        let (store, _, report) = import_both_ways(&input, tmp.path(), &LegacyOptions::default(), true);
        assert_eq!(report.format, "per-entity");
        assert_imported(&c, &store, &report, "per-entity");
        assert!(
            report.skipped.iter().any(|s| s.id.as_deref() == Some("t-gone") && s.reason.contains("file is missing")),
            "{:#?}",
            report.skipped
        );
        assert!(report.notices.iter().any(|n| n.contains("index.json does not list")), "{:?}", report.notices);
    }

    #[test]
    fn the_single_file_export_with_malformed_records_in_its_lists() {
        let c = generate();
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = export(&c, &tmp.path().join("export"));
        let (store, _, report) = import_both_ways(&file, tmp.path(), &LegacyOptions::default(), true);
        assert_eq!(report.format, "export 1.0.0");
        assert_imported(&c, &store, &report, "export");
    }
}
