//! Fuzzes both importers, the full-export import and the legacy Taskerino import, with dry
//! runs against one store: no input may panic, and none may write (the change log's last seq
//! stays where it was). Run: `cargo fuzz run importers` (from this folder's parent).
//!
//! The first byte picks the importer. For the export import the rest is cut at 0xFF bytes
//! into schemas.json, settings.json, collections/notes.jsonl and keys.json, and the harness
//! writes a manifest that matches them, so that the fuzzer gets past the checksums into the
//! readers of each file. For the legacy import the rest is one of Taskerino's files (chosen
//! by the first byte) or a single-file export.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cairn::{ImportOptions, Store, StoreOptions};
use cairn_taskerino::LegacyOptions;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sha2::{Digest, Sha256};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    work: PathBuf,
    last_seq: cairn::Seq,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = StoreOptions { auto_backup: false, ..StoreOptions::default() };
        let store = Store::open(dir.path().join("store"), options).expect("store");
        let schema = cairn::CollectionSchema::from_json(
            r#"{"name": "notes", "fields": [{"name": "title", "type": "text", "required": true},
                {"name": "secret", "type": "text", "encrypted": true}]}"#,
            "schema",
        )
        .expect("schema");
        store.create_collection(schema).expect("collection");
        store.create_with_id("notes", "n1", json!({"title": "existing"})).expect("record");
        let last_seq = store.last_seq().expect("seq");
        Fixture { work: dir.path().join("work"), _dir: dir, store, last_seq }
    })
}

const LEGACY_FILES: [&str; 8] = [
    "sessions.json",
    "notes.json",
    "tasks.json",
    "topics.json",
    "companies.json",
    "contacts.json",
    "aiSettings.json",
    "preferences.json",
];

fn write(path: &Path, bytes: &[u8]) -> serde_json::Value {
    std::fs::write(path, bytes).expect("write");
    json!({
        "path": path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        "bytes": bytes.len(),
        "sha256": Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect::<String>(),
    })
}

fn export_import(store: &Store, work: &Path, data: &[u8]) {
    let mut parts = data.split(|&b| b == 0xff);
    let (schemas, settings, records) =
        (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let keys = parts.next();
    std::fs::create_dir_all(work.join("collections")).expect("mkdir");
    let mut records_file = write(&work.join("collections/notes.jsonl"), records);
    records_file["path"] = json!("collections/notes.jsonl");
    let lines = records.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    let mut manifest = json!({
        "format": cairn::ExportManifest::FORMAT,
        "version": cairn::ExportManifest::VERSION,
        "exported_at": "2026-01-01T00:00:00Z",
        "schemas": write(&work.join("schemas.json"), schemas),
        "settings": write(&work.join("settings.json"), settings),
        "collections": [{"name": "notes", "records": lines, "deleted": 0, "file": records_file}],
    });
    if let Some(keys) = keys {
        manifest["keys"] = write(&work.join("keys.json"), keys);
    }
    std::fs::write(work.join("manifest.json"), manifest.to_string()).expect("manifest");
    let options = ImportOptions { dry_run: true, ..ImportOptions::default() };
    let _ = store.import(work, &options, &mut |_, _, _| {});
}

fn legacy_import(store: &Store, work: &Path, selector: u8, data: &[u8]) {
    std::fs::create_dir_all(work).expect("mkdir");
    let options = LegacyOptions { strict: selector & 0x10 != 0, dry_run: true, ..LegacyOptions::default() };
    let target = match LEGACY_FILES.get(usize::from(selector % 9)) {
        Some(name) => {
            std::fs::write(work.join(name), data).expect("write");
            work.to_path_buf()
        }
        None => {
            let file = work.join("export.json");
            std::fs::write(&file, data).expect("write");
            file
        }
    };
    let _ = cairn_taskerino::import(&store, &target, &options, &mut |_, _, _| {});
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let f = fixture();
    let _ = std::fs::remove_dir_all(&f.work);
    if selector & 0x80 == 0 {
        export_import(&f.store, &f.work, rest);
    } else {
        legacy_import(&f.store, &f.work, selector, rest);
    }
    assert_eq!(f.store.last_seq().expect("seq"), f.last_seq, "a dry run wrote");
});
