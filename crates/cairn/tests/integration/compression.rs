//! Record compression (CORE-10): large bodies are stored zstd-compressed, and nothing above
//! the storage notices — get, queries on body fields, full-text search, history, revert and
//! checksums all see the canonical body.

use cairn::{CollectionSchema, Error, Query, Search, Store, StoreOptions};
use serde_json::json;
use sha2::Digest;

fn schema() -> CollectionSchema {
    CollectionSchema::from_json(
        r#"{"name": "sessions", "fields": [
            {"name": "name", "type": "text", "summary": true},
            {"name": "summary", "type": "text", "fulltext": true},
            {"name": "meta", "type": "json"}]}"#,
        "sessions",
    )
    .expect("schema")
}

fn long_summary(topic: &str) -> String {
    format!("The team reviewed {topic} in detail. ").repeat(200)
}

/// (stored bytes, sha256 column) of a record's current body, read with plain SQLite.
fn stored(dir: &std::path::Path, id: &str) -> (Vec<u8>, Vec<u8>) {
    let db = rusqlite::Connection::open(dir.join(cairn::DB_FILE)).expect("db");
    db.query_row(
        "SELECT b.after, r.sha256 FROM c_sessions r JOIN cairn_changes b ON b.seq = r.seq WHERE r.id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("row")
}

#[test]
fn large_bodies_are_compressed_and_transparent() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    store.create_collection(schema()).expect("sessions");
    let big = json!({"name": "big", "summary": long_summary("the checkout retries"), "meta": {"source": "import"}});
    let small = json!({"name": "small", "summary": "short note about checkout", "meta": {"source": "manual"}});
    let created = store.create_with_id("sessions", "big", big.clone()).expect("big");
    store.create_with_id("sessions", "small", small).expect("small");

    let (bytes, sha) = stored(&dir, "big");
    let canonical = cairn::canonical_json(&created.body.clone().into());
    assert_eq!(&bytes[..4], b"\x28\xB5\x2F\xFD", "stored as a zstd frame");
    assert!(bytes.len() * 5 < canonical.len(), "{} vs {}", bytes.len(), canonical.len());
    assert_eq!(sha, sha2::Sha256::digest(&canonical).to_vec(), "the checksum is over the canonical body");
    let (small_bytes, _) = stored(&dir, "small");
    assert_eq!(small_bytes[0], b'{', "small bodies are stored as they are");

    assert_eq!(store.get("sessions", "big").expect("get").body, created.body);
    let ids = |filter: &str| -> Vec<String> {
        let query = Query { filter: Some(filter.into()), ..Query::default() };
        store.query("sessions", &query).expect("query").rows.into_iter().map(|r| r.id).collect()
    };
    assert_eq!(ids(r#"meta.source = "import""#), ["big"]);
    assert_eq!(ids(r#"summary contains "CHECKOUT RETRIES""#), ["big"]);
    let page = store.query("sessions", &Query { fields: Some(vec!["summary".into()]), ..Query::default() });
    assert_eq!(page.expect("page").rows[0].fields["summary"], big["summary"]);
    let hits = store.search("sessions", &Search { terms: "retries".into(), ..Search::default() }).expect("search");
    assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["big"]);

    store.patch("sessions", "big", json!({"name": "renamed"}), None).expect("patch");
    let history = store.history("sessions", "big").expect("history");
    assert_eq!(history[0].after.as_ref().expect("v1")["summary"], big["summary"]);
    assert_eq!(history[1].before.as_ref().expect("before v2")["name"], "big");
    let reverted = store.revert("sessions", "big", 1, None).expect("revert");
    assert_eq!(reverted.body["name"], "big");
    let changes = store.changes_since(0, 100).expect("changes");
    assert!(changes.iter().any(|c| c.after.as_ref().is_some_and(|a| a["summary"] == big["summary"])));
}

#[test]
fn damage_inside_a_compressed_body_is_detected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    {
        let store = Store::open(&dir, StoreOptions::default()).expect("open");
        store.create_collection(schema()).expect("sessions");
        store.create_with_id("sessions", "victim", json!({"summary": long_summary("budgets")})).expect("victim");
        store.close().expect("close");
    }
    let (mut bytes, _) = stored(&dir, "victim");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    let db = rusqlite::Connection::open(dir.join(cairn::DB_FILE)).expect("db");
    db.execute(
        "UPDATE cairn_changes SET after = ?1 WHERE seq = (SELECT seq FROM c_sessions WHERE id = 'victim')",
        [&bytes],
    )
    .expect("damage");
    drop(db);
    let store = Store::open(&dir, StoreOptions::read_only()).expect("reopen");
    let err = store.get("sessions", "victim").expect_err("damaged");
    assert!(matches!(&err, Error::Corruption { location, .. } if location.contains("sessions/victim")), "{err}");
    assert!(store.history("sessions", "victim").expect_err("history too").is_corruption());
}

#[test]
fn compact_compresses_bodies_stored_before_compression_existed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    {
        let store = Store::open(&dir, StoreOptions::default()).expect("open");
        store.create_collection(schema()).expect("sessions");
        for i in 0..30 {
            let body = json!({"name": format!("s{i}"), "summary": long_summary(&format!("topic {i}"))});
            store.create_with_id("sessions", &format!("s{i:02}"), body).expect("create");
        }
        store.create_with_id("sessions", "tiny", json!({"name": "tiny"})).expect("tiny");
        store.close().expect("close");
    }
    // What an older store holds: every body as plain canonical JSON.
    let db = rusqlite::Connection::open(dir.join(cairn::DB_FILE)).expect("db");
    let rows: Vec<(i64, Vec<u8>)> = db
        .prepare("SELECT seq, after FROM cairn_changes WHERE after IS NOT NULL")
        .expect("select")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<rusqlite::Result<_>>()
        .expect("collect");
    for (seq, bytes) in rows.iter().filter(|(_, b)| b.starts_with(b"\x28\xB5\x2F\xFD")) {
        let plain = zstd::stream::decode_all(&bytes[..]).expect("decode");
        db.execute("UPDATE cairn_changes SET after = ?2 WHERE seq = ?1", rusqlite::params![seq, plain]).expect("plain");
    }
    drop(db);

    let store = Store::open(&dir, StoreOptions::default()).expect("reopen");
    let before = store.get("sessions", "s07").expect("plain body reads").body;
    let mut calls = Vec::new();
    let report = store.compact(&mut |done, total| calls.push((done, total))).expect("compact");
    assert_eq!(report.compressed, 30, "{report:?}");
    assert!(report.bytes_after * 5 < report.bytes_before, "{report:?}");
    assert_eq!(calls.last(), Some(&(report.bodies, report.bodies)));
    assert_eq!(store.get("sessions", "s07").expect("compressed body reads").body, before);
    assert_eq!(store.get("sessions", "tiny").expect("tiny").body["name"], "tiny");
    assert_eq!(store.history("sessions", "s07").expect("history").len(), 1);
    assert_eq!(store.compact(&mut |_, _| {}).expect("again").compressed, 0, "nothing left to do");
    store.close().expect("close");
    let (bytes, _) = stored(&dir, "s07");
    assert_eq!(&bytes[..4], b"\x28\xB5\x2F\xFD");
}
