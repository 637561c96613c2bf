//! Idempotency keys: a write made with a key is made once; a retry gets its answer back;
//! the same key with another request is refused; a failed write leaves the key unused.

use cairn::{ErrorKind, Once, OnceOptions, StoredAnswer};
use serde_json::json;

use crate::with_notes;

fn create(title: &'static str) -> impl FnOnce(&mut cairn::Tx<'_>) -> cairn::Result<StoredAnswer> + Send + 'static {
    move |tx| {
        let record = tx.create("notes", None, json!({"title": title}))?;
        Ok(StoredAnswer { status: 201, body: record.id })
    }
}

#[test]
fn a_write_with_a_key_is_made_once_and_its_answer_replayed() {
    let (_dir, store) = with_notes();
    let options = OnceOptions::new("ana records", "key-1", "hash-a");
    let first = store.write_once(&options, create("once")).expect("first");
    let Once::Done(answer) = first else { panic!("the first runs") };
    let again = store.write_once(&options, create("once")).expect("again");
    assert_eq!(again, Once::Replayed(answer.clone()), "the same answer, nothing written");
    assert_eq!(store.count("notes", None).expect("count"), 1);

    let other = OnceOptions::new("ana records", "key-1", "hash-b");
    let err = store.write_once(&other, create("other")).expect_err("another request");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("key-1"), "{err}");
    let elsewhere = OnceOptions::new("bob records", "key-1", "hash-b");
    assert!(matches!(store.write_once(&elsewhere, create("bob's")).expect("another scope"), Once::Done(_)));
    assert_eq!(store.count("notes", None).expect("count"), 2);
}

#[test]
fn a_failed_write_leaves_its_key_unused_and_bad_keys_are_refused() {
    let (_dir, store) = with_notes();
    let options = OnceOptions::new("s", "retry-me", "h");
    let failed = store.write_once(&options, |tx| {
        tx.create("notes", None, json!({"title": 5}))?;
        Ok(StoredAnswer { status: 201, body: String::new() })
    });
    assert_eq!(failed.expect_err("invalid record").kind(), ErrorKind::InvalidInput);
    assert!(matches!(store.write_once(&options, create("fixed")).expect("the retry runs"), Once::Done(_)));
    for key in ["", "has space", &"k".repeat(256), "tab\t"] {
        let err = store.write_once(&OnceOptions::new("s", key, "h"), create("x")).expect_err(key);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{key:?}");
    }
    assert_eq!(store.count("notes", None).expect("count"), 1);
}

#[test]
fn a_key_past_its_retention_may_be_used_afresh() {
    let (_dir, store) = with_notes();
    let options = OnceOptions { retention_seconds: 0, ..OnceOptions::new("s", "short-lived", "h") };
    assert!(matches!(store.write_once(&options, create("one")).expect("first"), Once::Done(_)));
    // Retention is counted in whole milliseconds of the commit clock: let one pass.
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(matches!(store.write_once(&options, create("two")).expect("after retention"), Once::Done(_)));
    assert_eq!(store.count("notes", None).expect("count"), 2);
}
