//! Record compression (CORE-10): large bodies are stored zstd-compressed, and nothing above
//! the storage notices — get, queries on body fields, full-text search, history, revert and
//! checksums all see the canonical body.

use cairn::{CollectionSchema, CompactOptions, Error, Query, Search, Store, StoreOptions};
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
    let db = rusqlite::Connection::open(dir.join(cairn::layout::DB_FILE)).expect("db");
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
    let canonical = cairn::json::canonical(&created.body.clone().into());
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
    let changes = store.changes_since(cairn::Seq(0), 100).expect("changes");
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
    let db = rusqlite::Connection::open(dir.join(cairn::layout::DB_FILE)).expect("db");
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
    let db = rusqlite::Connection::open(dir.join(cairn::layout::DB_FILE)).expect("db");
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
    let report =
        store.compact(&CompactOptions::default(), &mut |done, total| calls.push((done, total))).expect("compact");
    assert_eq!(report.compressed, 30, "{report:?}");
    assert!(report.bytes_after * 5 < report.bytes_before, "{report:?}");
    assert_eq!(calls.last(), Some(&(report.bodies, report.bodies)));
    assert_eq!(store.get("sessions", "s07").expect("compressed body reads").body, before);
    assert_eq!(store.get("sessions", "tiny").expect("tiny").body["name"], "tiny");
    assert_eq!(store.history("sessions", "s07").expect("history").len(), 1);
    assert_eq!(
        store.compact(&CompactOptions::default(), &mut |_, _| {}).expect("again").compressed,
        0,
        "nothing left to do"
    );
    store.close().expect("close");
    let (bytes, _) = stored(&dir, "s07");
    assert_eq!(&bytes[..4], b"\x28\xB5\x2F\xFD");
}

/// A small note like the seeds' (a few hundred bytes): too small for plain zstd to pay.
fn note(i: usize) -> serde_json::Value {
    let clients = ["Acme Corp", "Globex", "Initech", "Umbrella", "Hooli"];
    json!({
        "name": format!("Weekly sync with {} #{i}", clients[i % 5]),
        "summary": format!(
            "Discussed the quarterly roadmap, open support tickets and the invoice schedule. \
             Action items: send the revised estimate to {}, book the follow-up call, update \
             the project board. Sentiment: positive. Duration {} minutes.",
            clients[(i + 2) % 5], 15 + i % 45
        ),
        "meta": {"source": "calendar", "status": if i.is_multiple_of(3) { "open" } else { "done" }, "priority": i % 4},
    })
}

fn first_byte(dir: &std::path::Path, id: &str) -> u8 {
    stored(dir, id).0[0]
}

#[test]
fn trained_dictionaries_compress_small_bodies_and_stay_transparent() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    store.create_collection(schema()).expect("sessions");
    for i in 0..400 {
        store.create_with_id("sessions", &format!("n{i:03}"), note(i)).expect("create");
    }
    assert_eq!(first_byte(&dir, "n007"), b'{', "a small body is stored plain without a dictionary");

    // Too few records: nothing is trained, and the report says why.
    let other = CollectionSchema::from_json(r#"{"name": "few", "fields": [{"name": "t", "type": "text"}]}"#, "few");
    store.create_collection(other.expect("few")).expect("few");
    store.create("few", json!({"t": "only one"})).expect("one");
    let few = store.train_dictionary("few").expect("train few");
    assert!(!few.kept && few.reason.as_deref().is_some_and(|r| r.contains("at least")), "{few:?}");
    assert!(store.train_dictionary("nope").expect_err("unknown").is_not_found());

    let options = CompactOptions { train: true, collections: vec!["sessions".into()] };
    let report = store.compact(&options, &mut |_, _| {}).expect("compact --train");
    let trained = &report.trained[0];
    assert!(trained.kept, "{trained:?}");
    assert!(trained.held_out_bytes_after * 2 < trained.held_out_bytes_before, "{trained:?}");
    assert!(report.compressed >= 400, "every old body moved to the dictionary: {report:?}");
    assert!(report.bytes_after * 2 < report.bytes_before, "{report:?}");
    assert_eq!(first_byte(&dir, "n007"), 0x01);

    // New writes use it; every reader sees the canonical body and its checksum holds.
    let created = store.create_with_id("sessions", "fresh", note(1000)).expect("fresh");
    assert_eq!(first_byte(&dir, "fresh"), 0x01);
    let canonical = cairn::json::canonical(&created.body.clone().into());
    assert_eq!(stored(&dir, "fresh").1, sha2::Sha256::digest(&canonical).to_vec());
    assert_eq!(store.get("sessions", "n007").expect("get").body, note(7).as_object().expect("object").clone());
    let query = Query { filter: Some(r#"meta.status = "open" and meta.priority = 2"#.into()), ..Query::default() };
    let expected = (0..400).filter(|i: &usize| i.is_multiple_of(3) && i % 4 == 2).count();
    assert_eq!(store.query("sessions", &query).expect("query").rows.len(), expected);
    let hits = store.search("sessions", &Search { terms: "Globex".into(), ..Search::default() }).expect("search");
    assert!(!hits.is_empty());
    store.patch("sessions", "n007", json!({"name": "renamed"}), None).expect("patch");
    assert_eq!(
        store.history("sessions", "n007").expect("history")[0].after.as_ref().expect("v1")["name"],
        note(7)["name"]
    );
    assert!(store
        .changes_since(cairn::Seq(0), 1000)
        .expect("changes")
        .iter()
        .all(|c| c.after.is_some() || c.op.as_str() != "create"));

    // A second dictionary: old bodies keep reading through the first; compact moves them.
    let again = store.compact(&options, &mut |_, _| {}).expect("retrain");
    assert!(again.trained[0].kept || again.trained[0].reason.is_some());
    store.close().expect("close");
    let store = Store::open(&dir, StoreOptions::read_only()).expect("reopen");
    assert_eq!(store.get("sessions", "n123").expect("get").body, note(123).as_object().expect("object").clone());
}

#[test]
fn compression_thresholds_are_settings() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    store.create_collection(schema()).expect("sessions");
    let body = json!({"summary": "word ".repeat(300)});
    store.create_with_id("sessions", "a", body.clone()).expect("a");
    assert_eq!(first_byte(&dir, "a"), b'{', "1.5 KB is under the default 4 KiB");
    store.set_setting(cairn::settings::RECORDS_COMPRESS_MIN_BYTES, json!(1024)).expect("set");
    store.create_with_id("sessions", "b", body.clone()).expect("b");
    assert_eq!(first_byte(&dir, "b"), 0x28, "compressed under the lower threshold");
    let report = store.compact(&CompactOptions::default(), &mut |_, _| {}).expect("compact");
    assert_eq!(report.compressed, 1, "the older body follows: {report:?}");
    assert!(store.set_setting(cairn::settings::RECORDS_COMPRESS_MIN_BYTES, json!(1)).is_err(), "below the minimum");
    assert_eq!(store.get("sessions", "a").expect("a").body, store.get("sessions", "b").expect("b").body);
}
