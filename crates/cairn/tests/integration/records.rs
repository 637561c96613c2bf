//! Records: CRUD, versions, soft delete and purge, transactions, and every bad input.

use cairn::settings::RECORDS_MAX_BODY_BYTES;
use cairn::{Error, StoreOptions};
use serde_json::json;

use crate::{temp_store, with_notes};

#[test]
fn create_get_replace_patch_with_versions_and_timestamps() {
    let (_dir, store) = with_notes();
    let a = store.create("notes", json!({"title": "first", "n": 1})).expect("create");
    assert_eq!(a.version, 1);
    assert_eq!(a.id.len(), 36, "UUIDv7 text form");
    let b = store.create("notes", json!({"title": "second"})).expect("create");
    assert!(b.id > a.id, "generated ids sort by creation time");
    assert_eq!(store.get("notes", &a.id).expect("get"), a);

    let replaced = store.replace("notes", &a.id, json!({"title": "first!", "tags": ["x"]}), Some(1)).expect("replace");
    assert_eq!(replaced.version, 2);
    assert_eq!(replaced.created_at, a.created_at);
    assert!(replaced.updated_at >= a.updated_at);
    assert_eq!(serde_json::Value::Object(replaced.body.clone()), json!({"title": "first!", "tags": ["x"]}));

    // Merge patch: null removes, objects merge, other values replace.
    let patched = store.patch("notes", &a.id, json!({"tags": null, "n": 7}), Some(2)).expect("patch");
    assert_eq!(serde_json::Value::Object(patched.body.clone()), json!({"title": "first!", "n": 7}));
    assert_eq!(patched.version, 3);

    let custom = store.create_with_id("notes", "note-1", json!({"title": "mine"})).expect("client id");
    assert_eq!(custom.id, "note-1");
    assert!(matches!(
        store.create_with_id("notes", "note-1", json!({"title": "again"})),
        Err(Error::AlreadyExists { .. })
    ));

    // put = create or replace; expected 0 means "must not exist yet".
    assert_eq!(store.put("notes", "note-2", json!({"title": "p"}), Some(0)).expect("put creates").version, 1);
    assert_eq!(store.put("notes", "note-2", json!({"title": "q"}), None).expect("put replaces").version, 2);
    assert!(store.put("notes", "note-3", json!({"title": "p"}), Some(4)).expect_err("missing").is_conflict());
}

#[test]
fn stale_versions_conflict_and_change_nothing() {
    let (_dir, store) = with_notes();
    let a = store.create("notes", json!({"title": "a"})).expect("create");
    store.patch("notes", &a.id, json!({"n": 1}), Some(1)).expect("first edit");
    let err = store.patch("notes", &a.id, json!({"n": 2}), Some(1)).expect_err("stale");
    assert!(matches!(err, Error::Conflict { expected: 1, actual: 2, .. }), "{err}");
    assert!(store.replace("notes", &a.id, json!({"title": "b"}), Some(1)).expect_err("stale").is_conflict());
    assert!(store.delete("notes", &a.id, Some(1)).expect_err("stale").is_conflict());
    assert_eq!(store.get("notes", &a.id).expect("get").body["n"], 1);
    assert_eq!(store.history("notes", &a.id).expect("history").len(), 2);
}

#[test]
fn soft_delete_purge_and_revert_from_history() {
    let (_dir, store) = with_notes();
    let a = store.create_with_id("notes", "a", json!({"title": "keep me", "email": "a@x"})).expect("create");
    let deleted = store.delete("notes", "a", Some(a.version)).expect("delete");
    assert!(deleted.deleted_at.is_some());
    assert!(matches!(store.get("notes", "a"), Err(Error::NotFound { deleted: true, .. })));
    assert!(store.get_including_deleted("notes", "a").expect("still there").deleted_at.is_some());
    assert!(matches!(store.patch("notes", "a", json!({"n": 1}), None), Err(Error::NotFound { deleted: true, .. })));

    // A deleted record frees its unique value.
    store.create_with_id("notes", "b", json!({"title": "b", "email": "a@x"})).expect("unique value free");
    store.delete("notes", "b", None).expect("delete b");

    assert!(matches!(store.purge("notes", "missing"), Err(Error::NotFound { .. })));
    let live = store.create_with_id("notes", "c", json!({"title": "live"})).expect("create");
    assert!(matches!(store.purge("notes", &live.id), Err(Error::NotAllowed(_))), "live records are not purged");

    assert_eq!(store.purge("notes", "a").expect("purge"), 3);
    assert!(matches!(store.get_including_deleted("notes", "a"), Err(Error::NotFound { deleted: false, .. })));
    let history = store.history("notes", "a").expect("history survives purge");
    assert_eq!(history.iter().map(|c| c.op.as_str()).collect::<Vec<_>>(), ["create", "delete", "purge"]);

    // Revert brings the purged record back as a new version; versions never repeat.
    let back = store.revert("notes", "a", 1, None).expect("revert");
    assert_eq!((back.version, back.body["title"].as_str()), (4, Some("keep me")));
    assert!(matches!(store.revert("notes", "a", 99, None), Err(Error::VersionNotFound { version: 99, .. })));
    assert!(matches!(store.revert("notes", "a", 3, None), Err(Error::NotAllowed(_))), "a purge is no state");
}

#[test]
fn unique_fields_are_enforced_among_live_records() {
    let (_dir, store) = with_notes();
    store.create_with_id("notes", "a", json!({"title": "a", "email": "x@example.com"})).expect("create");
    let err = store.create_with_id("notes", "b", json!({"title": "b", "email": "x@example.com"})).expect_err("dup");
    assert!(matches!(&err, Error::Unique { field, other_id, .. } if field == "email" && other_id == "a"), "{err}");
    store.create_with_id("notes", "b", json!({"title": "b", "email": "y@example.com"})).expect("distinct");
    assert!(matches!(store.patch("notes", "b", json!({"email": "x@example.com"}), None), Err(Error::Unique { .. })));
    // Undoing a delete must not bring back a duplicate.
    store.delete("notes", "a", None).expect("delete");
    store.patch("notes", "b", json!({"email": "x@example.com"}), None).expect("now free");
    assert!(matches!(store.undo("notes", "a"), Err(Error::Unique { .. })));
}

#[test]
fn transactions_span_collections_and_roll_back_whole() {
    let (_dir, store) = with_notes();
    let mut other = crate::notes_schema();
    other.name = "tasks".into();
    store.create_collection(other).expect("tasks");

    let err = store
        .transaction(|tx| {
            tx.create("notes", Some("n1"), json!({"title": "note"}))?;
            tx.create("tasks", Some("t1"), json!({"title": "task"}))?;
            tx.patch("notes", "n1", &json!({"n": "not a number"}), None)?;
            Ok(())
        })
        .expect_err("third write is invalid");
    assert!(matches!(err, Error::Validation { .. }));
    assert!(store.get("notes", "n1").expect_err("rolled back").is_not_found());
    assert!(store.get("tasks", "t1").expect_err("rolled back").is_not_found());
    assert_eq!(store.last_seq().expect("seq").get(), 2, "only the two collection creations are logged");

    let (n, t) = store
        .transaction(|tx| {
            let n = tx.create("notes", Some("n1"), json!({"title": "note"}))?;
            let t = tx.create("tasks", Some("t1"), json!({"title": "task", "tags": [n.id.clone()]}))?;
            let seen = tx.get("notes", "n1")?; // sees its own writes
            assert_eq!(seen.version, 1);
            Ok((n, t))
        })
        .expect("commits");
    assert_eq!(store.get("notes", &n.id).expect("n"), n);
    assert_eq!(store.get("tasks", &t.id).expect("t"), t);

    // A panicking closure is a failed transaction, not a dead writer.
    let err = store.transaction(|tx| -> cairn::Result<()> {
        tx.create("notes", Some("p"), json!({"title": "p"}))?;
        panic!("bug in caller");
    });
    assert!(matches!(err, Err(Error::Internal(_))));
    assert!(store.get("notes", "p").is_err());
    store.create("notes", json!({"title": "writer still alive"})).expect("writer survives");
}

#[test]
fn bad_input_is_refused_with_errors_that_say_where() {
    let (_dir, store) = with_notes();
    // Malformed JSON names its source and position.
    let err = cairn::json::parse("{\"title\": \"x\",\n  oops}", "body.json").expect_err("malformed");
    assert!(err.to_string().contains("body.json") && err.to_string().contains("line 2"), "{err}");

    // Wrong field types, unknown fields, missing required fields: named collection, id, field.
    let err = store.create_with_id("notes", "r1", json!({"title": 5})).expect_err("type");
    assert!(
        matches!(&err, Error::Validation { collection, id: Some(id), field: Some(f), .. } if collection == "notes" && id == "r1" && f == "title"),
        "{err}"
    );
    let err = store.create_with_id("notes", "r1", json!({"title": "x", "colour": "red"})).expect_err("unknown field");
    assert!(matches!(&err, Error::Validation { field: Some(f), .. } if f == "colour"), "{err}");
    assert!(
        matches!(store.create("notes", json!({"n": 1})), Err(Error::Validation { field: Some(f), .. }) if f == "title")
    );
    assert!(matches!(store.create("notes", json!({"title": "x", "due": "someday"})), Err(Error::Validation { .. })));
    assert!(matches!(store.create("notes", json!("just a string")), Err(Error::Validation { field: None, .. })));
    assert!(matches!(store.patch("notes", "r1", json!([1]), None), Err(Error::Validation { .. })));

    // Unknown collection.
    assert!(matches!(store.create("nope", json!({})), Err(Error::UnknownCollection { .. })));
    assert!(matches!(store.get("nope", "x"), Err(Error::UnknownCollection { .. })));

    // Invalid ids.
    for bad in ["", "../etc/passwd", "has space", "-lead", &"x".repeat(200)] {
        assert!(
            matches!(store.create_with_id("notes", bad, json!({"title": "x"})), Err(Error::InvalidId { .. })),
            "{bad:?}"
        );
        assert!(
            matches!(store.put("notes", bad, json!({"title": "x"}), None), Err(Error::InvalidId { .. })),
            "{bad:?}"
        );
    }

    // A body over the configured limit.
    store.set_setting(RECORDS_MAX_BODY_BYTES, json!(1024)).expect("limit");
    let big = "x".repeat(2000);
    let err = store.create_with_id("notes", "big", json!({"title": big})).expect_err("too large");
    assert!(matches!(err, Error::BodyTooLarge { limit: 1024, .. }), "{err}");
    store.create_with_id("notes", "small", json!({"title": "fits"})).expect("under the limit");
}

#[test]
fn read_only_stores_refuse_writes_and_see_commits() {
    let (dir, store) = with_notes();
    let reader = cairn::Store::open(dir.path().join("store"), StoreOptions::read_only()).expect("read-only");
    assert!(matches!(reader.create("notes", json!({"title": "x"})), Err(Error::ReadOnly)));
    let a = store.create("notes", json!({"title": "from the writer"})).expect("create");
    assert_eq!(reader.get("notes", &a.id).expect("visible"), a);
    let _ = temp_store;
}
