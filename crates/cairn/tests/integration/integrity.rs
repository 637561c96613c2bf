//! Checksums: damaged bytes are an error naming the record, never data returned.

use cairn::{Error, Store, StoreOptions};
use serde_json::json;

#[test]
fn flipped_bytes_in_a_record_body_are_detected_on_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let marker = "UNIQUE-MARKER-7f3a9c-payload";
    {
        let store = Store::open(&dir, StoreOptions::default()).expect("create");
        store.create_collection(crate::notes_schema()).expect("notes");
        store.create_with_id("notes", "victim", json!({"title": marker})).expect("victim");
        store.create_with_id("notes", "bystander", json!({"title": "unharmed"})).expect("bystander");
        store.close().expect("close checkpoints the WAL into store.db");
    }
    let db = dir.join(cairn::layout::DB_FILE);
    let mut bytes = std::fs::read(&db).expect("read db");
    let positions: Vec<usize> =
        bytes.windows(marker.len()).enumerate().filter(|(_, w)| *w == marker.as_bytes()).map(|(i, _)| i).collect();
    assert!(!positions.is_empty(), "the body is in store.db after close");
    for pos in &positions {
        bytes[pos + 7] ^= 0x01; // "MARKER" -> "MARKES"-like: still valid JSON, wrong content
    }
    std::fs::write(&db, &bytes).expect("write damaged db");

    let store = Store::open(&dir, StoreOptions::default()).expect("reopen");
    let err = store.get("notes", "victim").expect_err("damage must be detected");
    assert!(matches!(&err, Error::Corruption { location, .. } if location.contains("notes/victim")), "{err}");
    assert!(err.is_corruption());
    // The change log holds the body too and is checked the same way.
    assert!(store.history("notes", "victim").expect_err("history damaged").is_corruption());
    assert_eq!(store.get("notes", "bystander").expect("others stay readable").body["title"], "unharmed");
    // Writes that would read the damaged record refuse too, rather than build on bad data.
    assert!(store.patch("notes", "victim", json!({"n": 1}), None).expect_err("damaged").is_corruption());
}
