//! Queries through the public API: pagination under concurrent change, injection, errors
//! that point at the problem, index use, lazy loading, and index builds.

use std::collections::BTreeSet;

use cairn::{CollectionSchema, Error, Query, Store};
use serde_json::json;

use crate::temp_store;

fn sessions(store: &Store) {
    let schema = CollectionSchema::from_json(
        r#"{"name": "sessions", "fields": [
            {"name": "name", "type": "text", "required": true, "summary": true},
            {"name": "status", "type": "text", "indexed": true, "summary": true},
            {"name": "started_at", "type": "datetime", "indexed": true, "summary": true},
            {"name": "tags", "type": "tags", "indexed": true},
            {"name": "notes", "type": "text"},
            {"name": "meta", "type": "json"}]}"#,
        "sessions",
    )
    .expect("schema");
    store.create_collection(schema).expect("sessions");
}

fn fill(store: &Store, n: usize) {
    store
        .transaction(move |tx| {
            for i in 0..n {
                let status = ["completed", "active", "interrupted"][i % 3];
                let body = json!({
                    "name": format!("session {i}"),
                    "status": status,
                    "started_at": format!("2025-{:02}-{:02}T10:00:00Z", 1 + i % 12, 1 + i % 28),
                    "tags": if i % 4 == 0 { json!(["acme", "billing"]) } else { json!(["other"]) },
                    "meta": {"source": if i % 2 == 0 { "screen" } else { "audio" }},
                });
                tx.create("sessions", Some(&format!("s{i:04}")), body)?;
            }
            Ok(())
        })
        .expect("fill");
}

#[test]
fn walking_pages_by_cursor_returns_every_record_once_under_inserts_and_deletes() {
    let (_dir, store) = temp_store();
    sessions(&store);
    fill(&store, 300);
    let query = Query { sort: Some("-started_at,name".into()), limit: 17, ..Query::default() };
    let before: BTreeSet<String> = (0..300).map(|i| format!("s{i:04}")).collect();
    let mut seen = Vec::new();
    let mut deleted = BTreeSet::new();
    let mut inserted = BTreeSet::new();
    let mut page = store.query("sessions", &query).expect("first page");
    let mut round = 0;
    loop {
        seen.extend(page.rows.iter().map(|r| r.id.clone()));
        let Some(cursor) = page.next_cursor.clone() else { break };
        // Between pages: delete some records not yet seen, insert some new ones.
        round += 1;
        let victim = format!("s{:04}", (round * 37) % 300);
        if !seen.contains(&victim) && store.delete("sessions", &victim, None).is_ok() {
            deleted.insert(victim);
        }
        let id = format!("new{round:03}");
        store
            .create_with_id(
                "sessions",
                &id,
                json!({"name": "late", "status": "active", "started_at": "2025-06-15T00:00:00Z"}),
            )
            .expect("insert");
        inserted.insert(id);
        page = store.query("sessions", &Query { cursor: Some(cursor), ..query.clone() }).expect("next page");
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no record appears twice");
    for id in before.difference(&deleted) {
        assert!(unique.contains(id), "{id} existed throughout and was missed");
    }
    for id in &deleted {
        assert!(!unique.contains(id), "{id} was deleted before its page and still returned");
    }
    assert!(unique.iter().all(|id| before.contains(id) || inserted.contains(id)));
}

#[test]
fn injection_attempts_match_literally_or_are_rejected() {
    let (_dir, store) = temp_store();
    sessions(&store);
    let nasty = [
        "x'; DROP TABLE c_sessions; --",
        "\" OR 1=1 --",
        "'); DELETE FROM cairn_changes; /*",
        "name = name",
        "*/ UNION SELECT * FROM cairn_settings",
    ];
    for (i, text) in nasty.iter().enumerate() {
        store
            .create_with_id("sessions", &format!("n{i}"), json!({"name": text, "notes": text}))
            .expect("stored literally");
    }
    for (i, text) in nasty.iter().enumerate() {
        let quoted = serde_json::to_string(text).expect("json string");
        for filter in [format!("name = {quoted}"), format!("notes = {quoted}"), format!("notes contains {quoted}")] {
            let page = store
                .query("sessions", &Query { filter: Some(filter.clone().into()), ..Query::default() })
                .expect(&filter);
            let ids: Vec<String> = page.rows.into_iter().map(|r| r.id).collect();
            assert!(ids.contains(&format!("n{i}")), "{filter}: {ids:?}");
            assert!(ids.len() <= 2, "{filter} matched too much: {ids:?}");
        }
    }
    // Field names and sort keys with SQL in them are rejected, not run.
    for filter in [
        "name; DROP TABLE c_sessions = 1",
        "\"name\" = 1",
        "name = 1 -- comment",
        "name/**/= 1",
        "sessions.name = \"x\"",
    ] {
        assert!(matches!(store.count("sessions", Some(filter)), Err(Error::InvalidFilter { .. })), "{filter}");
    }
    for sort in ["name; DROP TABLE c_sessions", "name DESC", "(select 1)", "name--"] {
        let query = Query { sort: Some(sort.into()), ..Query::default() };
        assert!(matches!(store.query("sessions", &query), Err(Error::InvalidQuery(_))), "{sort}");
    }
    assert_eq!(store.count("sessions", None).expect("all still there"), nasty.len() as u64);
    assert!(store.changes_since(cairn::Seq(0), 100).expect("log intact").len() > nasty.len());
}

#[test]
fn errors_name_the_problem_and_its_position() {
    let (_dir, store) = temp_store();
    sessions(&store);
    let cases = [
        ("colour = \"red\"", 0, "unknown field `colour`"),
        ("status = \"a\" and started_at >= \"last tuesday\"", 31, "needs a date or date-time"),
        ("name = \"unterminated", 7, "unterminated string"),
        ("status has \"x\"", 0, "`has` needs a tags field"),
        ("tags = \"acme\"", 7, "membership with `has"),
        ("started_at > 5", 13, "type mismatch"),
        ("name.first = \"x\"", 0, "only json fields have paths"),
    ];
    for (filter, position, message) in cases {
        match store.count("sessions", Some(filter)) {
            Err(e @ Error::InvalidFilter { .. }) => {
                let Error::InvalidFilter { position: p, ref reason, .. } = e else { unreachable!() };
                assert_eq!(p, position, "{filter}: {reason}");
                assert!(reason.contains(message), "{filter}: {reason}");
                let snippet = e.filter_snippet().expect("snippet");
                assert!(snippet.lines().nth(1).expect("caret line").ends_with('^'), "{snippet}");
            }
            other => panic!("{filter}: {other:?}"),
        }
    }
    let bad_cursors = ["zz", "7b7d", &"0".repeat(7)];
    for cursor in bad_cursors {
        let query = Query { cursor: Some(cursor.to_string()), ..Query::default() };
        assert!(
            matches!(store.query("sessions", &query), Err(Error::InvalidQuery(m)) if m.contains("invalid cursor")),
            "{cursor}"
        );
    }
    let query = Query { limit: 0, ..Query::default() };
    assert!(matches!(store.query("sessions", &query), Err(Error::InvalidQuery(_))));
    let query = Query { fields: Some(vec!["nope".into()]), ..Query::default() };
    assert!(matches!(store.query("sessions", &query), Err(Error::InvalidQuery(_))));
}

#[test]
fn indexes_are_used_and_built_on_populated_collections() {
    let (_dir, store) = temp_store();
    sessions(&store);
    fill(&store, 500);
    let filter = "status = \"completed\" and started_at >= 2025-01-10 and tags has \"acme\"";
    let query = Query { filter: Some(filter.into()), sort: Some("-started_at".into()), ..Query::default() };
    let plan = store.explain("sessions", &query).expect("explain").join("\n");
    assert!(
        plan.contains("USING INDEX c_sessions__v_") || plan.contains("USING COVERING INDEX c_sessions__v_"),
        "{plan}"
    );
    let before = store.query("sessions", &query).expect("query");
    assert!(!before.rows.is_empty());

    // Without the indexes the same query scans and returns the same rows.
    for field in ["status", "started_at", "tags"] {
        store.drop_index("sessions", field).expect("drop");
    }
    assert!(store.indexes("sessions").expect("list").is_empty());
    let plan = store.explain("sessions", &query).expect("explain").join("\n");
    assert!(plan.contains("SCAN r"), "{plan}");
    assert_eq!(store.query("sessions", &query).expect("scan").rows, before.rows);

    // Built again over the 500 existing records, with progress reported.
    let reported = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sink = reported.clone();
    store.add_index("sessions", "status", move |n| sink.store(n, std::sync::atomic::Ordering::Relaxed)).expect("add");
    assert_eq!(reported.load(std::sync::atomic::Ordering::Relaxed), 500);
    store.add_index("sessions", "tags", |_| {}).expect("add tags");
    store.add_index("sessions", "started_at", |_| {}).expect("add started_at");
    assert_eq!(store.query("sessions", &query).expect("indexed again").rows, before.rows);
    assert!(matches!(store.add_index("sessions", "ghost", |_| {}), Err(Error::InvalidSchema { .. })));
}

#[test]
fn projections_of_indexed_fields_do_not_read_bodies() {
    let (dir, store) = temp_store();
    sessions(&store);
    store
        .create_with_id(
            "sessions",
            "a",
            json!({"name": "UNIQUE-BODY-MARKER-91", "status": "active", "started_at": "2025-06-01"}),
        )
        .expect("a");
    store.close().expect("close");
    // Damage the body on disk: reading it must fail, an index-only projection must not need it.
    let db = dir.path().join("store").join(cairn::layout::DB_FILE);
    let mut bytes = std::fs::read(&db).expect("read");
    let marker = b"UNIQUE-BODY-MARKER-91";
    let at = bytes.windows(marker.len()).position(|w| w == marker).expect("body on disk");
    bytes[at] ^= 0x20;
    std::fs::write(&db, bytes).expect("write");
    let store = Store::open(dir.path().join("store"), cairn::StoreOptions::default()).expect("reopen");
    let lazy = Query { fields: Some(vec!["status".into(), "started_at".into()]), ..Query::default() };
    let page = store.query("sessions", &lazy).expect("index-only projection reads no body");
    assert_eq!(
        page.rows[0].fields,
        json!({"status": "active", "started_at": "2025-06-01T00:00:00.000Z"}).as_object().cloned().expect("map")
    );
    let full = Query { fields: Some(vec!["name".into()]), ..Query::default() };
    assert!(store.query("sessions", &full).expect_err("body is checked").is_corruption());
    assert!(store.get("sessions", "a").expect_err("body is checked").is_corruption());
}

#[test]
fn filters_on_json_paths_contains_and_null_checks() {
    let (_dir, store) = temp_store();
    sessions(&store);
    fill(&store, 30);
    store.create_with_id("sessions", "bare", json!({"name": "Café Résumé"})).expect("bare");
    assert_eq!(store.count("sessions", Some("meta.source = \"screen\"")).expect("path"), 15);
    assert_eq!(store.count("sessions", Some("meta is null")).expect("null"), 1);
    assert_eq!(
        store.count("sessions", Some("not (status = \"active\")")).expect("not"),
        21,
        "includes the record without status"
    );
    assert_eq!(
        store.count("sessions", Some("status != \"active\"")).expect("ne"),
        20,
        "excludes the record without status"
    );
    assert_eq!(store.count("sessions", Some("name contains \"CAFÉ résumé\"")).expect("contains"), 1);
    assert_eq!(store.count("sessions", Some("status in (\"active\", \"interrupted\")")).expect("in"), 20);
    assert_eq!(
        store.count("sessions", Some("status not in (\"active\")")).expect("not in"),
        20,
        "like !=, not in excludes the record without status"
    );
}
