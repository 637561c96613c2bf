//! Collections: schema updates that never invalidate data, drop into quarantine.

use cairn::{CollectionSchema, DropOptions, Error, FieldDef, FieldType};
use serde_json::json;

use crate::with_notes;

#[test]
fn schema_updates_are_refused_when_stored_records_would_not_fit() {
    let (_dir, store) = with_notes();
    store.create_with_id("notes", "a", json!({"title": "a", "n": 5, "email": "same@x"})).expect("a");
    store.create_with_id("notes", "b", json!({"title": "b", "email": "other@x"})).expect("b");
    let base = store.collection("notes").expect("info").schema;

    // Adding an optional field and flags is fine.
    let mut added = base.clone();
    added.fields.push(FieldDef::new("mood", FieldType::Text));
    added.fields[0].fulltext = true;
    let info = store.update_collection(added.clone()).expect("add field");
    assert_eq!(info.schema_version, 2);
    store.patch("notes", "a", json!({"mood": "ok"}), None).expect("new field usable");

    // A required field that records lack, a type that stored values do not have, removing a
    // field that holds data: all refused, naming the record and field.
    let mut required = added.clone();
    required.fields.push(FieldDef { required: true, ..FieldDef::new("owner", FieldType::Text) });
    assert!(matches!(store.update_collection(required), Err(Error::Validation { field: Some(f), .. }) if f == "owner"));
    let mut retyped = added.clone();
    retyped.fields.iter_mut().find(|f| f.name == "n").expect("n").kind = FieldType::Text;
    assert!(matches!(store.update_collection(retyped), Err(Error::Validation { id: Some(id), .. }) if id == "a"));
    let mut removed = added.clone();
    removed.fields.retain(|f| f.name != "mood");
    assert!(matches!(store.update_collection(removed), Err(Error::Validation { field: Some(f), .. }) if f == "mood"));

    // Making a field unique checks existing values.
    store.patch("notes", "b", json!({"mood": "ok"}), None).expect("dup mood");
    let mut unique = added.clone();
    unique.fields.iter_mut().find(|f| f.name == "mood").expect("mood").unique = true;
    assert!(matches!(store.update_collection(unique.clone()), Err(Error::Unique { .. })));
    store.patch("notes", "b", json!({"mood": "great"}), None).expect("distinct");
    store.update_collection(unique).expect("now unique");
    assert!(matches!(store.patch("notes", "b", json!({"mood": "ok"}), None), Err(Error::Unique { .. })));

    // Dropping the unique flag lets duplicates in again.
    store.update_collection(added).expect("not unique");
    store.patch("notes", "b", json!({"mood": "ok"}), None).expect("duplicates allowed");
    assert!(matches!(
        store.update_collection(CollectionSchema { name: "ghost".into(), ..base }),
        Err(Error::UnknownCollection { .. })
    ));
}

#[test]
fn collection_create_refuses_duplicates_and_bad_schemas() {
    let (_dir, store) = with_notes();
    assert!(matches!(store.create_collection(crate::notes_schema()), Err(Error::CollectionExists { .. })));
    let bad = CollectionSchema::from_json(
        r#"{"name": "x", "fields": [{"name": "r", "type": "relation", "collection": "ghost"}]}"#,
        "s",
    )
    .expect("parses");
    assert!(matches!(store.create_collection(bad), Err(Error::InvalidSchema { .. })));
    let names: Vec<String> = store.collections().expect("list").into_iter().map(|c| c.schema.name).collect();
    assert_eq!(names, ["notes"]);
}

#[test]
fn drop_needs_confirmation_and_keeps_data_in_quarantine() {
    let (_dir, store) = with_notes();
    for i in 0..5 {
        store.create_with_id("notes", &format!("n{i}"), json!({"title": format!("note {i}")})).expect("create");
    }
    store.delete("notes", "n4", None).expect("delete");
    let err = store.drop_collection("notes", &DropOptions::default()).expect_err("unconfirmed");
    assert!(matches!(err, Error::ConfirmationRequired { .. }), "{err}");
    assert!(matches!(
        store.drop_collection("notes", &DropOptions::confirm("tasks")),
        Err(Error::ConfirmationRequired { .. })
    ));
    store.get("notes", "n0").expect("still there");

    let report = store.drop_collection("notes", &DropOptions::confirm("notes")).expect("drop");
    assert_eq!(report.records, 5, "deleted records are exported too");
    assert!(report.quarantine_dir.starts_with(store.dir().join(cairn::layout::QUARANTINE_DIR)));
    let lines = std::fs::read_to_string(report.quarantine_dir.join("records.jsonl")).expect("records.jsonl");
    let records: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(records.len(), 5);
    assert_eq!(records[0]["body"]["title"], "note 0");
    let schema = std::fs::read_to_string(report.quarantine_dir.join("schema.json")).expect("schema.json");
    assert_eq!(CollectionSchema::from_json(&schema, "schema.json").expect("schema"), crate::notes_schema());
    assert!(matches!(store.get("notes", "n0"), Err(Error::UnknownCollection { .. })));

    // Relations protect their targets.
    store.create_collection(crate::notes_schema()).expect("recreate");
    let tasks = CollectionSchema::from_json(
        r#"{"name": "tasks", "fields": [{"name": "note", "type": "relation", "collection": "notes"}]}"#,
        "s",
    )
    .expect("parses");
    store.create_collection(tasks).expect("tasks");
    assert!(matches!(store.drop_collection("notes", &DropOptions::confirm("notes")), Err(Error::NotAllowed(_))));
}
