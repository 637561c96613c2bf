//! Fuzzes the filter parser and the schema check: no input may panic, every error must point
//! inside the text, and a filter that parses writes back to text that parses to itself. Run: `cargo fuzz run filter` (from this folder's parent).
#![no_main]

use cairn::{CollectionSchema, Condition, Error};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match cairn::Expr::parse(text) {
        Ok(expr) => {
            let written = Condition::from_expr(&expr).expect("a parsed filter writes back to text that parses");
            assert_eq!(Condition::parse(&written.to_string()).expect("again").to_string(), written.to_string());
        }
        Err(Error::InvalidFilter { position, .. }) => assert!(position <= text.len()),
        Err(other) => panic!("unexpected error kind: {other}"),
    }
    let schema = CollectionSchema::from_json(
        r#"{"name": "s", "fields": [
            {"name": "name", "type": "text", "indexed": true},
            {"name": "n", "type": "integer"},
            {"name": "at", "type": "datetime", "indexed": true},
            {"name": "tags", "type": "tags", "indexed": true},
            {"name": "meta", "type": "json"}]}"#,
        "fuzz schema",
    )
    .expect("valid schema");
    if let Ok(condition) = Condition::parse(text) {
        let body = serde_json::json!({"name": "x", "n": 1, "tags": ["a"], "meta": {"k": 2}});
        let _ = condition.matches(&schema, body.as_object().expect("object"));
    }
});
