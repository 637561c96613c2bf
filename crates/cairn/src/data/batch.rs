//! Data-driven transactions: a list of operations applied atomically (CORE-3).
//!
//! The closure API ([`Store::transaction`]) is for Rust callers; a batch is the same thing as
//! data, for the CLI (`cairn batch FILE`) and HTTP clients. Either every operation commits or
//! none does, and an error names the operation (by index) that failed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::record::Record;
use crate::engine::store::Store;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// One operation of a batch. In JSON: `{"op": "create", "collection": "notes", "body": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum BatchOp {
    /// Create a record (id generated when absent).
    Create { collection: String, id: Option<String>, body: Value },
    /// Create or replace a record.
    Put { collection: String, id: String, body: Value, expected: Option<u64> },
    /// Replace a live record's body.
    Replace { collection: String, id: String, body: Value, expected: Option<u64> },
    /// JSON Merge Patch a live record.
    Patch { collection: String, id: String, patch: Value, expected: Option<u64> },
    /// Soft-delete a record.
    Delete { collection: String, id: String, expected: Option<u64> },
}

/// The outcome of one operation of a committed batch.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct BatchResult {
    /// The operation's index in the batch.
    pub index: usize,
    /// The record as the operation left it.
    pub record: Record,
}

impl BatchOp {
    fn apply(&self, tx: &mut Tx<'_>) -> Result<Record> {
        match self {
            BatchOp::Create { collection, id, body } => tx.create(collection, id.as_deref(), body.clone()),
            BatchOp::Put { collection, id, body, expected } => tx.put(collection, id, body.clone(), *expected),
            BatchOp::Replace { collection, id, body, expected } => tx.replace(collection, id, body.clone(), *expected),
            BatchOp::Patch { collection, id, patch, expected } => tx.patch(collection, id, patch, *expected),
            BatchOp::Delete { collection, id, expected } => tx.delete(collection, id, *expected),
        }
    }
}

/// Parses a batch from JSON text: an array of operations.
pub fn parse_batch(text: &str, source_name: &str) -> Result<Vec<BatchOp>> {
    serde_json::from_str(text).map_err(|e| Error::invalid_input(source_name, e.to_string()))
}

impl Store {
    /// Applies `ops` in one transaction. On failure nothing is written and the error is
    /// [`Error::Batch`] naming the failing operation.
    pub fn batch(&self, ops: Vec<BatchOp>) -> Result<Vec<BatchResult>> {
        self.write(move |tx| {
            let mut results = Vec::with_capacity(ops.len());
            for (index, op) in ops.iter().enumerate() {
                let record = op.apply(tx).map_err(|cause| Error::Batch { index, cause: Box::new(cause) })?;
                results.push(BatchResult { index, record });
            }
            Ok(results)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectionSchema;
    use serde_json::json;

    #[test]
    fn a_failing_operation_writes_nothing() {
        let (_dir, store) = crate::engine::store::temp_store();
        let schema = r#"{"name":"notes","fields":[{"name":"title","type":"text","required":true}]}"#;
        store.create_collection(CollectionSchema::from_json(schema, "t").expect("schema")).expect("create");
        let ops = parse_batch(
            r#"[{"op":"create","collection":"notes","id":"a","body":{"title":"one"}},
                {"op":"create","collection":"notes","id":"b","body":{"title":2}}]"#,
            "batch.json",
        )
        .expect("parses");
        let err = store.batch(ops).expect_err("second op is invalid");
        assert!(
            matches!(&err, Error::Batch { index: 1, cause } if matches!(**cause, Error::Validation { .. })),
            "{err}"
        );
        let chain: Vec<String> = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .map(|e| e.to_string())
            .collect();
        assert_eq!(chain.len(), 1, "the cause is in the message, so a chain printer shows it once: {chain:?}");
        assert!(chain[0].starts_with("operation 1 of the batch failed, nothing was written: "), "{}", chain[0]);
        assert!(store.get("notes", "a").expect_err("rolled back").is_not_found());
        let seq = store.last_seq().expect("seq");

        let ops = vec![
            BatchOp::Create { collection: "notes".into(), id: Some("a".into()), body: json!({"title": "one"}) },
            BatchOp::Patch {
                collection: "notes".into(),
                id: "a".into(),
                patch: json!({"title": "uno"}),
                expected: Some(1),
            },
        ];
        let results = store.batch(ops).expect("commits");
        assert_eq!(results[1].record.version, 2);
        assert_eq!(store.last_seq().expect("seq"), seq + 2);
        assert!(parse_batch(r#"[{"op":"explode"}]"#, "b").is_err());
    }
}
