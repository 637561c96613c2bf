//! cairn's integration tests, one binary grouped by theme.

mod blobs;
mod changelog;
mod collections;
mod compression;
mod concurrency;
mod crash;
mod integrity;
mod query;
mod records;
mod search;

use cairn::{CollectionSchema, Store, StoreOptions};

/// A fresh store in a temp directory (kept alive by the returned guard).
pub fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store"), StoreOptions::default()).expect("open store");
    (dir, store)
}

/// `notes`: title (required text), n (integer), tags, email (unique text), due (datetime).
pub fn notes_schema() -> CollectionSchema {
    CollectionSchema::from_json(
        r#"{"name": "notes", "fields": [
            {"name": "title", "type": "text", "required": true, "summary": true},
            {"name": "n", "type": "integer"},
            {"name": "tags", "type": "tags"},
            {"name": "email", "type": "text", "unique": true},
            {"name": "due", "type": "datetime"}]}"#,
        "notes schema",
    )
    .expect("schema parses")
}

pub fn with_notes() -> (tempfile::TempDir, Store) {
    let (dir, store) = temp_store();
    store.create_collection(notes_schema()).expect("create notes");
    (dir, store)
}
