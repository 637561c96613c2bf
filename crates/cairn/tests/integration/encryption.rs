//! Field encryption (GOV-1): sealed values on disk, reads and writes with and without the
//! key, wrong secrets, key files, rotation (re-wrap and re-encrypt) under concurrent reads,
//! exports carrying the keyring, and the schema's refusals.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use cairn::{
    CheckOptions, CollectionSchema, Error, ExportOptions, ImportOptions, Query, Redaction, Rotation, ScanOptions,
    Secret, Store, StoreOptions,
};
use serde_json::json;

const PASSPHRASE: &str = "correct horse battery staple";
const EMAIL: &str = "ada.zq7@example.invalid";
const RATE: f64 = 1234.5678;
/// A value that is stored in the clear, to prove the disk scan can find plaintext.
const PLAIN_NAME: &str = "Ada Lovelace-zq7";

fn quiet() -> impl FnMut(&str, u64, u64) {
    |_, _, _| {}
}

fn contacts() -> CollectionSchema {
    CollectionSchema::from_json(
        r#"{"name": "contacts", "fields": [
            {"name": "name", "type": "text", "required": true, "indexed": true, "summary": true},
            {"name": "email", "type": "text", "encrypted": true, "pii": true},
            {"name": "rate", "type": "number", "encrypted": true},
            {"name": "terms", "type": "json", "encrypted": true},
            {"name": "bio", "type": "text", "fulltext": true}]}"#,
        "schema",
    )
    .expect("schema")
}

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions { auto_backup: false, ..StoreOptions::default() }).expect("open")
}

fn passphrase() -> Secret {
    Secret::passphrase(PASSPHRASE)
}

/// A store with a key and `n` contacts c0…, each with its email, rate and terms.
fn populated(dir: &Path, n: usize) -> Store {
    let store = open(dir);
    store.create_collection(contacts()).expect("collection");
    store.key_init(&passphrase()).expect("key init");
    for i in 0..n {
        store
            .create_with_id(
                "contacts",
                &format!("c{i}"),
                json!({"name": format!("{PLAIN_NAME} {i}"), "email": email(i), "rate": RATE + i as f64,
                       "terms": {"net": 30, "i": i}, "bio": format!("bio {i}")}),
            )
            .expect("create");
    }
    store
}

fn email(i: usize) -> String {
    format!("{i}.{EMAIL}")
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

#[test]
fn encrypted_values_read_back_and_never_reach_the_disk_in_the_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(dir.path(), 20);
    let record = store.get("contacts", "c3").expect("get");
    assert_eq!(record.body["email"], json!(email(3)));
    assert_eq!(record.body["rate"], json!(RATE + 3.0));
    assert_eq!(record.body["terms"], json!({"net": 30, "i": 3}));
    assert!(record.sealed.is_empty());

    // Every way a body comes back opens it.
    let patched = store.patch("contacts", "c3", json!({"rate": 99.5}), None).expect("patch");
    assert_eq!((patched.body["rate"].clone(), patched.body["email"].clone()), (json!(99.5), json!(email(3))));
    let undone = store.undo("contacts", "c3").expect("undo");
    assert_eq!(undone.body["rate"], json!(RATE + 3.0));
    let history = store.history("contacts", "c3").expect("history");
    assert_eq!(history[1].after.as_ref().expect("after")["rate"], json!(99.5));
    assert_eq!(history[1].before.as_ref().expect("before")["email"], json!(email(3)));
    let query = Query { fields: Some(vec!["name".into(), "email".into()]), ..Query::default() };
    let page = store.query("contacts", &query).expect("query");
    let row = page.rows.iter().find(|r| r.id == "c5").expect("c5");
    assert_eq!(row.fields["email"], json!(email(5)));
    let scanned = store.scan("contacts", &ScanOptions::default()).expect("scan");
    assert!(scanned.iter().all(|r| r.body["email"] == json!(email(r.id[1..].parse().expect("n")))));
    let mut feed = store.subscribe(None).expect("subscribe");
    store.patch("contacts", "c4", json!({"email": "new.zq7@example.invalid"}), None).expect("patch");
    let change = loop {
        let change = feed.recv_timeout(std::time::Duration::from_secs(10)).expect("recv").expect("a change");
        if change.id == "c4" {
            break change;
        }
    };
    assert_eq!(change.after.expect("after")["email"], json!("new.zq7@example.invalid"));
    store.delete("contacts", "c5", None).expect("delete");

    store.backup(&cairn::BackupOptions::default(), &mut quiet()).expect("backup");
    store.export(&dir.path().join("export"), &ExportOptions::default(), &mut quiet()).expect("export");
    store.close().expect("close");

    // The scan finds what is stored in the clear, so finding nothing below means something.
    assert!(!files_containing(dir.path(), PLAIN_NAME.as_bytes()).is_empty());
    for secret in [EMAIL.as_bytes(), b"1234.5678", b"new.zq7", br#""net":30"#] {
        let found = files_containing(dir.path(), secret);
        assert!(found.is_empty(), "{} found in {found:?}", String::from_utf8_lossy(secret));
    }
}

#[test]
fn without_the_key_other_fields_stay_readable_and_encrypted_ones_give_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    populated(dir.path(), 3).close().expect("close");
    let store = open(dir.path());
    assert!(!store.key_status().expect("status").unlocked);

    let record = store.get("contacts", "c1").expect("get");
    assert_eq!(record.body["name"], json!(format!("{PLAIN_NAME} 1")));
    assert!(!record.body.contains_key("email"), "{:?}", record.body);
    assert_eq!(record.sealed, vec!["email", "rate", "terms"]);
    assert_eq!(record.field("name").expect("plain field"), Some(&json!(format!("{PLAIN_NAME} 1"))));
    let err = record.field("email").expect_err("sealed");
    assert!(matches!(err, Error::KeyLocked { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("`email`") && text.contains("contacts/c1") && text.contains("key is locked"), "{text}");

    let query = Query { fields: Some(vec!["name".into(), "rate".into()]), ..Query::default() };
    let page = store.query("contacts", &query).expect("query");
    assert!(page.rows.iter().all(|r| r.sealed == ["rate"] && r.fields.contains_key("name")));
    let history = store.history("contacts", "c1").expect("history");
    assert_eq!(history[0].sealed, vec!["email", "rate", "terms"]);

    // Writes that would seal or drop a sealed value are refused; others go through.
    let refused = store.create("contacts", json!({"name": "x", "email": "x@example.invalid"}));
    assert!(matches!(refused, Err(Error::KeyLocked { .. })), "{refused:?}");
    let refused = store.patch("contacts", "c1", json!({"rate": 1}), None);
    assert!(matches!(refused, Err(Error::KeyLocked { .. })), "{refused:?}");
    let refused = store.replace("contacts", "c1", json!({"name": "replaced"}), None);
    assert!(matches!(refused, Err(Error::KeyLocked { .. })), "{refused:?}");
    store.create_with_id("contacts", "plain", json!({"name": "no secrets"})).expect("a record without sealed fields");
    let patched = store.patch("contacts", "c1", json!({"name": "renamed"}), None).expect("patch a plain field");
    assert_eq!(patched.sealed, vec!["email", "rate", "terms"]);
    store.delete("contacts", "c2", None).expect("delete");

    // Unlocked, the values the locked patch carried over are intact.
    store.unlock(&passphrase()).expect("unlock");
    let record = store.get("contacts", "c1").expect("get");
    assert_eq!((record.body["name"].clone(), record.body["email"].clone()), (json!("renamed"), json!(email(1))));
    assert_eq!(record.body["rate"], json!(RATE + 1.0));
    store.lock_keys();
    assert_eq!(store.get("contacts", "c1").expect("get").sealed.len(), 3);
    assert!(store.check(&CheckOptions::default(), &mut quiet()).expect("check").is_ok());
}

#[test]
fn a_store_without_a_key_refuses_encrypted_values_and_unlock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.create_collection(contacts()).expect("collection");
    let err = store.unlock(&passphrase()).expect_err("no keyring");
    assert!(err.to_string().contains("no key yet"), "{err}");
    let err = store.create("contacts", json!({"name": "a", "rate": 1})).expect_err("cannot seal");
    assert!(matches!(err, Error::KeyLocked { .. }), "{err}");
    store.create("contacts", json!({"name": "a"})).expect("no encrypted value");
    let err = store.rotate_key(&Rotation::reencrypt(None)).expect_err("nothing to rotate");
    assert!(matches!(err, Error::KeyLocked { .. }), "{err}");
}

#[test]
fn wrong_secrets_are_refused_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    populated(dir.path(), 1).close().expect("close");
    let store = open(dir.path());
    let err = store.unlock(&Secret::passphrase("not the passphrase")).expect_err("wrong");
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    assert!(!store.key_status().expect("status").unlocked);
    assert!(!store.get("contacts", "c0").expect("get").sealed.is_empty());
    let key_file = dir.path().join("key");
    cairn::generate_key_file(&key_file).expect("key file");
    let err = store.unlock(&Secret::key_file(&key_file)).expect_err("wrong method");
    assert!(matches!(err, Error::WrongKey { .. }) && err.to_string().contains("passphrase"), "{err}");
    let err = store.unlock(&Secret::passphrase("short")).expect_err("too short");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let err = store.key_init(&passphrase()).expect_err("second init");
    assert!(err.to_string().contains("already"), "{err}");

    let entries = store.audit_log(Some("action = 'key.unlock'"), 0, 100).expect("audit");
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.iter().all(|e| e.outcome.starts_with("failed: wrong key")));
    let init = store.audit_log(Some("action = 'key.init'"), 0, 100).expect("audit");
    assert_eq!(init.iter().map(|e| e.outcome.starts_with("failed")).collect::<Vec<_>>(), [false, true]);
    assert!(store.verify_audit().expect("verify").is_ok());
}

#[test]
fn a_key_file_opens_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("cairn.key");
    cairn::generate_key_file(&key_file).expect("key file");
    assert!(cairn::generate_key_file(&key_file).is_err(), "an existing key file is never overwritten");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let data = dir.path().join("data");
    let store = open(&data);
    store.create_collection(contacts()).expect("collection");
    let status = store.key_init(&Secret::key_file(&key_file)).expect("init");
    assert_eq!(status.method.as_deref(), Some("key_file"));
    store.create_with_id("contacts", "a", json!({"name": "a", "email": EMAIL})).expect("create");
    store.close().expect("close");

    let store = open(&data);
    store.unlock(&Secret::key_file(&key_file)).expect("unlock");
    assert_eq!(store.get("contacts", "a").expect("get").body["email"], json!(EMAIL));
    let other = dir.path().join("other.key");
    cairn::generate_key_file(&other).expect("key file");
    let err = store.unlock(&Secret::key_file(&other)).expect_err("another key file");
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    let short = dir.path().join("short.key");
    std::fs::write(&short, "tooshort").expect("write");
    let err = store.unlock(&Secret::key_file(&short)).expect_err("short key file");
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let err = store.unlock(&Secret::key_file(dir.path().join("missing.key"))).expect_err("missing key file");
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn rewrapping_changes_the_secret_and_keeps_the_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(dir.path(), 3);
    let before = store.key_status().expect("status").keys;
    let err = store.rotate_key(&Rotation::default()).expect_err("nothing asked");
    assert!(matches!(err, Error::NotAllowed(_)), "{err}");
    let report = store.rotate_key(&Rotation::rewrap(Secret::passphrase("a new passphrase"))).expect("rotate");
    assert!(report.rewrapped && report.retired.is_empty() && report.values == 0);
    assert_eq!(store.key_status().expect("status").keys, before, "same data key, wrapped anew");
    store.close().expect("close");

    let store = open(dir.path());
    let err = store.unlock(&passphrase()).expect_err("old passphrase");
    assert!(matches!(err, Error::WrongKey { .. }), "{err}");
    store.unlock(&Secret::passphrase("a new passphrase")).expect("new passphrase");
    assert_eq!(store.get("contacts", "c2").expect("get").body["email"], json!(email(2)));
    let rotations = store.audit_log(Some("action = 'key.rotate'"), 0, 10).expect("audit");
    assert_eq!(rotations.len(), 1);
    assert!(rotations[0].detail.contains("re-wrapped"), "{:?}", rotations[0]);
}

#[test]
fn reencrypting_under_concurrent_reads_retires_the_old_key() {
    const N: usize = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(dir.path(), N);
    for i in 0..N / 2 {
        store.patch("contacts", &format!("c{i}"), json!({"rate": RATE + i as f64 + 0.5}), None).expect("patch");
        store.patch("contacts", &format!("c{i}"), json!({"rate": RATE + i as f64}), None).expect("patch back");
    }
    store.delete("contacts", "c7", None).expect("delete");
    // A second handle in read-only mode, unlocked on its own: it learns of the new key from
    // the keyring when it meets a value sealed with it.
    let reader = Store::open(dir.path(), StoreOptions::read_only()).expect("read-only");
    reader.unlock(&passphrase()).expect("unlock");

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    // Set while rotations run; scans that saw it set overlapped a rotation.
    let rotating = Arc::new(AtomicBool::new(false));
    let overlapped = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = [store.clone(), store.clone(), reader.clone()]
        .into_iter()
        .map(|handle| {
            let (stop, reads, rotating, overlapped) =
                (stop.clone(), reads.clone(), rotating.clone(), overlapped.clone());
            std::thread::spawn(move || {
                // Bounded: stops when told, or after this many passes.
                for _ in 0..100_000 {
                    let started_during = rotating.load(Ordering::SeqCst);
                    let records = handle
                        .scan("contacts", &ScanOptions { limit: N + 10, ..ScanOptions::default() })
                        .expect("scan");
                    for r in &records {
                        let i: usize = r.id[1..].parse().expect("n");
                        assert!(r.sealed.is_empty(), "{} sealed mid-rotation", r.id);
                        assert_eq!(r.body["email"], json!(email(i)));
                        assert_eq!(r.body["rate"], json!(RATE + i as f64));
                    }
                    if started_during || rotating.load(Ordering::SeqCst) {
                        overlapped.fetch_add(1, Ordering::Relaxed);
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            })
        })
        .collect();
    while reads.load(Ordering::Relaxed) < 3 {
        std::thread::yield_now();
    }
    rotating.store(true, Ordering::SeqCst);
    let first = store.rotate_key(&Rotation::reencrypt(None)).expect("rotate");
    assert_eq!((first.active.as_str(), first.retired.clone()), ("k2", vec!["k1".to_string()]));
    // Every version of every record: 3 sealed fields per entry.
    assert_eq!(first.entries, (N + N + 1) as u64);
    assert_eq!(first.values, 3 * first.entries);
    let second = store.rotate_key(&Rotation::reencrypt(None)).expect("rotate");
    assert_eq!((second.active.as_str(), second.retired.clone()), ("k3", vec!["k2".to_string()]));
    rotating.store(false, Ordering::SeqCst);
    let during = reads.load(Ordering::Relaxed);
    while reads.load(Ordering::Relaxed) < during + 3 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a reader failed");
    }
    assert!(overlapped.load(Ordering::Relaxed) > 0, "no scan ran while the rotations did");
    let status = store.key_status().expect("status");
    assert_eq!(status.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["k3"]);
    assert!(store.check(&CheckOptions::default(), &mut quiet()).expect("check").is_ok());

    // A new secret as well: this handle goes on reading; the other one cannot open the new
    // key with the secret it knows until it unlocks with the new one.
    let third = store.rotate_key(&Rotation::reencrypt(Some(Secret::passphrase("another passphrase")))).expect("rotate");
    assert!(third.rewrapped && third.active == "k4");
    assert!(store.get("contacts", "c1").expect("get").sealed.is_empty());
    assert_eq!(reader.get("contacts", "c1").expect("get").sealed.len(), 3);
    assert!(reader.unlock(&passphrase()).is_err());
    reader.unlock(&Secret::passphrase("another passphrase")).expect("unlock");
    assert_eq!(reader.get("contacts", "c1").expect("get").body["email"], json!(email(1)));
    drop(reader);
    store.close().expect("close");

    // A fresh handle holds k4 only: every version in the log opens with it.
    let store = open(dir.path());
    store.unlock(&Secret::passphrase("another passphrase")).expect("unlock");
    for i in 0..N {
        for change in store.history("contacts", &format!("c{i}")).expect("history") {
            assert!(change.sealed.is_empty(), "c{i} seq {} is sealed with a retired key", change.seq);
            assert_eq!(change.after.expect("after")["email"], json!(email(i)));
        }
    }
    let deleted = store.get_including_deleted("contacts", "c7").expect("deleted record");
    assert_eq!(deleted.body["email"], json!(email(7)));
}

#[test]
fn exports_carry_the_sealed_values_and_their_keyring() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(&dir.path().join("a"), 5);
    let out = dir.path().join("export");
    let manifest = store.export(&out, &ExportOptions::default(), &mut quiet()).expect("export");
    assert!(manifest.keys.is_some());

    let b = open(&dir.path().join("b"));
    b.import(&out, &ImportOptions::default(), &mut quiet()).expect("import");
    assert_eq!(b.get("contacts", "c1").expect("get").sealed.len(), 3, "imported locked");
    b.unlock(&passphrase()).expect("the source's passphrase opens the copy");
    assert_eq!(b.get("contacts", "c1").expect("get").body["email"], json!(email(1)));
    let again = dir.path().join("again");
    b.export(&again, &ExportOptions::default(), &mut quiet()).expect("export");
    for file in ["keys.json", "schemas.json", "collections/contacts.jsonl"] {
        assert_eq!(std::fs::read(out.join(file)).expect("a"), std::fs::read(again.join(file)).expect("b"), "{file}");
    }

    // A store with a key of its own cannot take values sealed under another.
    let c = populated(&dir.path().join("c"), 0);
    let err = c.import(&out, &ImportOptions::default(), &mut quiet()).expect_err("other keyring");
    assert!(err.to_string().contains("another key"), "{err}");
    assert_eq!(c.scan("contacts", &ScanOptions::default()).expect("scan").len(), 0);

    // A redacted export redacts encrypted fields and carries no keys.
    let redacted = dir.path().join("redacted");
    let options = ExportOptions { redact: Some(Redaction::Mask), ..ExportOptions::default() };
    let manifest = store.export(&redacted, &options, &mut quiet()).expect("export");
    assert!(manifest.keys.is_none() && !redacted.join("keys.json").exists());
    let text = std::fs::read_to_string(redacted.join("collections/contacts.jsonl")).expect("read");
    assert!(!text.contains("cairn-enc:") && text.contains("[redacted]"), "{text}");
}

#[test]
fn encrypted_fields_cannot_be_indexed_searched_queried_or_converted() {
    let bad = [
        (r#"{"name": "x", "type": "text", "encrypted": true, "indexed": true}"#, "cannot be indexed"),
        (r#"{"name": "x", "type": "text", "encrypted": true, "fulltext": true}"#, "full-text"),
        (r#"{"name": "x", "type": "text", "encrypted": true, "unique": true}"#, "unique"),
        (r#"{"name": "x", "type": "tags", "encrypted": true}"#, "tags field cannot be encrypted"),
        (r#"{"name": "x", "type": "text", "encrypted": true, "default": "a"}"#, "default"),
    ];
    for (field, expected) in bad {
        let text = format!(r#"{{"name": "c", "fields": [{field}]}}"#);
        let err = CollectionSchema::from_json(&text, "schema").and_then(|s| s.validate(&|_| false).map(|_| s));
        let err = err.expect_err(field).to_string();
        assert!(err.contains(expected), "{field}: {err}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(dir.path(), 2);
    for query in [
        Query { filter: Some("email = 'a'".into()), ..Query::default() },
        Query { sort: Some("rate".into()), ..Query::default() },
    ] {
        let err = store.query("contacts", &query).expect_err("encrypted").to_string();
        assert!(err.contains("encrypted"), "{err}");
    }
    let mut schema = contacts();
    schema.fields.iter_mut().find(|f| f.name == "bio").expect("bio").encrypted = true;
    schema.fields.iter_mut().find(|f| f.name == "bio").expect("bio").fulltext = false;
    let err = store.update_collection(schema).expect_err("encrypting an existing field").to_string();
    assert!(err.contains("cannot change"), "{err}");
    store.close().expect("close");
    let migration = cairn::Migration::parse(
        1,
        "convert",
        r#"{"up": [{"op": "change_type", "collection": "contacts", "field": "rate", "to": "text", "convert": "format"}], "down": []}"#,
        false,
        "test",
    )
    .expect("migration");
    let migrations = cairn::Migrations::new(vec![migration]).expect("migrations");
    let err = cairn::Store::migrate(
        dir.path(),
        &migrations,
        cairn::Direction::Up,
        &cairn::MigrateOptions::default(),
        &mut quiet(),
    )
    .map(|_| ())
    .expect_err("converting sealed values");
    assert!(err.to_string().contains("encrypted"), "{err}");
}

#[test]
fn records_from_a_backup_sealed_under_a_retired_key_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(dir.path(), 2);
    let backup = store.backup(&cairn::BackupOptions::default(), &mut quiet()).expect("backup").id;
    store.patch("contacts", "c1", json!({"rate": 1.0}), None).expect("patch");
    // Before a rotation the backup's sealed values are the store's own: restored whole.
    store.restore_records(&backup, "contacts", Some("c1")).expect("restore");
    let restored = store.get("contacts", "c1").expect("get");
    assert_eq!((restored.body["rate"].clone(), restored.body["email"].clone()), (json!(RATE + 1.0), json!(email(1))));
    store.patch("contacts", "c1", json!({"rate": 1.0}), None).expect("patch");
    store.rotate_key(&Rotation::reencrypt(None)).expect("rotate");
    let err = store.restore_records(&backup, "contacts", Some("c1")).expect_err("sealed under k1");
    assert!(err.to_string().contains("key k1"), "{err}");
    assert_eq!(store.get("contacts", "c1").expect("get").body["rate"], json!(1.0));
}

#[test]
fn reports_open_encrypted_columns_or_refuse_without_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    populated(dir.path(), 3).close().expect("close");
    let store = open(dir.path());
    let options = cairn::ReportOptions {
        columns: Some(vec!["id".into(), "name".into(), "rate".into()]),
        ..cairn::ReportOptions::default()
    };
    let out = dir.path().join("rates.csv");
    let err = store.report("contacts", &options, &out).expect_err("locked");
    assert!(matches!(err, Error::KeyLocked { .. }), "{err}");
    assert!(!out.exists());
    store.unlock(&passphrase()).expect("unlock");
    store.report("contacts", &options, &out).expect("report");
    let text = std::fs::read_to_string(&out).expect("read");
    assert!(text.contains(&format!("c2,{PLAIN_NAME} 2,{}", RATE + 2.0)), "{text}");
}

#[test]
fn repair_brings_back_sealed_values_from_a_backup_without_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(dir.path(), 3);
    store.backup(&cairn::BackupOptions::default(), &mut quiet()).expect("backup");
    let edited = store.patch("contacts", "c1", json!({"name": "edited after the backup"}), None).expect("patch");
    store.close().expect("close");
    let db = rusqlite::Connection::open(dir.path().join(cairn::layout::DB_FILE)).expect("db");
    db.execute("UPDATE cairn_changes SET actor = 'mallory' WHERE seq = ?1", [edited.seq.get()]).expect("damage");
    drop(db);

    // Repaired without the key: the backup's sealed values are copied as sealed.
    let report = cairn::Store::repair(dir.path(), &cairn::RepairOptions::default(), &mut quiet()).expect("repair");
    let store = open(dir.path());
    assert_eq!(report.records_restored_as_new_versions.len(), 1, "{report:?}");
    assert_eq!(store.get("contacts", "c1").expect("get").sealed, vec!["email", "rate", "terms"]);
    store.unlock(&passphrase()).expect("unlock");
    let back = store.get("contacts", "c1").expect("get");
    assert_eq!((back.body["email"].clone(), back.body["rate"].clone()), (json!(email(1)), json!(RATE + 1.0)));
}

#[test]
fn a_rotation_that_fails_midway_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(dir.path(), 0);
    // More entries than one page of the re-encryption, so that it has re-sealed a whole
    // page before it reaches the damaged entry.
    store
        .transaction(|tx| {
            for i in 0..600 {
                tx.create("contacts", Some(&format!("c{i}")), json!({"name": "n", "email": email(i), "rate": 1.5}))?;
            }
            Ok(())
        })
        .expect("records");
    store.close().expect("close");
    // The newest change-log entry no longer matches its hash: the re-encryption fails there.
    let db = rusqlite::Connection::open(dir.path().join(cairn::layout::DB_FILE)).expect("db");
    db.execute("UPDATE cairn_changes SET actor = 'mallory' WHERE seq = (SELECT max(seq) FROM cairn_changes)", [])
        .expect("damage");
    let sealed_before: Vec<Vec<u8>> = db
        .prepare("SELECT after FROM cairn_changes WHERE after IS NOT NULL ORDER BY seq")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    drop(db);

    let store = open(dir.path());
    store.unlock(&passphrase()).expect("unlock");
    let err =
        store.rotate_key(&Rotation::reencrypt(Some(Secret::passphrase("a new passphrase")))).expect_err("damaged");
    assert!(err.is_corruption(), "{err}");
    let status = store.key_status().expect("status");
    assert_eq!(status.keys.iter().map(|k| (k.id.as_str(), k.active)).collect::<Vec<_>>(), [("k1", true)]);
    assert_eq!(store.get("contacts", "c3").expect("get").body["email"], json!(email(3)));
    let failed = store.audit_log(Some("action = 'key.rotate'"), 0, 10).expect("audit");
    assert!(failed.len() == 1 && failed[0].outcome.starts_with("failed"), "{failed:?}");
    store.close().expect("close");

    let db = rusqlite::Connection::open(dir.path().join(cairn::layout::DB_FILE)).expect("db");
    let sealed_after: Vec<Vec<u8>> = db
        .prepare("SELECT after FROM cairn_changes WHERE after IS NOT NULL ORDER BY seq")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(sealed_after, sealed_before, "no entry was re-sealed");
    drop(db);
    let store = open(dir.path());
    store.unlock(&passphrase()).expect("the old passphrase still opens the key");
    assert!(store.unlock(&Secret::passphrase("a new passphrase")).is_err());
}

#[test]
fn secret_settings_are_sealed_masked_and_exported_only_when_asked() {
    const API_KEY: &str = "sk-live-zq7-0123456789abcdef";
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = open(&dir);
    let def = cairn::SettingDef {
        key: "ai.api_key".into(),
        kind: cairn::SettingType::Secret,
        default: serde_json::Value::Null,
        description: "the AI provider's key".into(),
        min: None,
        max: None,
        choices: None,
    };
    let with_default = cairn::SettingDef { default: json!("oops"), ..def.clone() };
    assert!(matches!(store.define_setting(with_default), Err(Error::InvalidSetting { .. })), "no default in the clear");
    store.define_setting(def).expect("define");
    let err = store.set_setting("ai.api_key", json!(API_KEY)).expect_err("no key yet");
    assert!(matches!(err, Error::KeyLocked { .. }), "{err}");
    store.key_init(&passphrase()).expect("key init");
    assert!(store.set_setting("ai.api_key", json!(42)).is_err(), "a secret is text");
    store.set_setting("ai.api_key", json!(API_KEY)).expect("set");
    let listed = store.setting("ai.api_key").expect("setting");
    assert_eq!(listed.value, json!(cairn::Setting::SECRET_MASK), "masked when listed");
    assert!(store.settings().expect("all").iter().all(|s| s.value != json!(API_KEY)));
    assert_eq!(store.secret("ai.api_key").expect("open").as_deref().map(String::as_str), Some(API_KEY));

    // Nowhere in the clear: database, change log, backups, exports (with or without --secrets).
    store.backup(&cairn::BackupOptions::default(), &mut quiet()).expect("backup");
    let plain_export = tmp.path().join("plain");
    store.export(&plain_export, &ExportOptions::default(), &mut quiet()).expect("export");
    let settings = std::fs::read_to_string(plain_export.join("settings.json")).expect("settings");
    assert!(!settings.contains("cairn-enc") && settings.contains("ai.api_key"), "the definition, no value: {settings}");
    let with_secrets = tmp.path().join("secrets");
    store
        .export(&with_secrets, &ExportOptions { secrets: true, ..ExportOptions::default() }, &mut quiet())
        .expect("export");
    assert!(std::fs::read_to_string(with_secrets.join("settings.json")).expect("settings").contains("cairn-enc"));
    let redacted = tmp.path().join("redacted");
    let options = ExportOptions { secrets: true, redact: Some(Redaction::Mask), ..ExportOptions::default() };
    store.export(&redacted, &options, &mut quiet()).expect("export");
    assert!(!std::fs::read_to_string(redacted.join("settings.json")).expect("settings").contains("cairn-enc"));
    for place in [&dir, &plain_export, &with_secrets, &redacted] {
        assert_eq!(
            files_containing(place, API_KEY.as_bytes()),
            Vec::<String>::new(),
            "plaintext in {}",
            place.display()
        );
    }

    // A locked handle cannot read it; an import carries it sealed and it opens with the same
    // passphrase; re-encryption re-seals it.
    let locked = Store::open(&dir, StoreOptions::read_only()).expect("read-only");
    assert!(matches!(locked.secret("ai.api_key"), Err(Error::KeyLocked { .. })));
    let other = open(&tmp.path().join("other"));
    other.import(&with_secrets, &ImportOptions::default(), &mut quiet()).expect("import");
    other.unlock(&passphrase()).expect("unlock");
    assert_eq!(other.secret("ai.api_key").expect("open").as_deref().map(String::as_str), Some(API_KEY));
    store.rotate_key(&Rotation::reencrypt(None)).expect("re-encrypt");
    assert_eq!(store.secret("ai.api_key").expect("open").as_deref().map(String::as_str), Some(API_KEY));
    let changes = store.changes_since(cairn::Seq(0), 1000).expect("changes");
    let entry = changes.iter().rev().find(|c| c.id == "ai.api_key").expect("logged");
    assert!(
        entry.after.as_ref().and_then(|v| v.as_str()).is_some_and(|t| t.starts_with("cairn-enc:1:k2:")),
        "{entry:?}"
    );
    assert!(store.check(&CheckOptions::default(), &mut quiet()).expect("check").is_ok());
}
