//! Attachment links: `cairn_blobs.refs` counts the links held by live records and changes in
//! the same transaction as the record write that adds or drops one (create, replace, patch,
//! delete, revert, undo, redo); a write that would link to a blob the store does not have
//! fails. The blob store itself is the blobs layer's.

use rusqlite::{params, Connection};
use serde_json::{Map, Value};

use crate::data::collection::Collection;
use crate::data::schema::{CollectionSchema, FieldType};
use crate::engine::timestamp::Timestamp;
use crate::error::{Error, Result};

/// The blob hashes a body links to, with the field of each link.
pub(crate) fn links<'a>(c: &Collection, body: &'a Map<String, Value>) -> Vec<(&'a str, &'a str)> {
    items(&c.schema, body).into_iter().filter_map(|(field, item)| Some((field, item.get("hash")?.as_str()?))).collect()
}

/// Every attachment value of a body (`{"hash", "name", "mime", "size"}`), with its field.
pub(crate) fn items<'a>(schema: &CollectionSchema, body: &'a Map<String, Value>) -> Vec<(&'a str, &'a Value)> {
    let mut out = Vec::new();
    for f in &schema.fields {
        let Some((field, value)) = body.get_key_value(&f.name) else { continue };
        let items: &[Value] = match (&f.kind, value) {
            (FieldType::Attachment, v) => std::slice::from_ref(v),
            (FieldType::Attachments, Value::Array(items)) => items,
            _ => continue,
        };
        out.extend(items.iter().map(|item| (field.as_str(), item)));
    }
    out
}

/// For dry runs only: a row for a blob an import would add, so that records linking to it
/// validate; the dry run's rollback removes it.
pub(crate) fn placeholder(conn: &Connection, hash: &str, size: u64, now: Timestamp) -> Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO cairn_blobs (hash, size, stored_size, codec, refs, created_at, unreferenced_since)
         VALUES (?1, ?2, ?2, 'raw', 0, ?3, ?3)",
        params![hash, size, now.0],
    )?;
    Ok(())
}

/// Moves reference counts from the links of `before` to those of `after` (live bodies).
pub(crate) fn update_refs(
    conn: &Connection,
    c: &Collection,
    id: &str,
    before: Option<&Map<String, Value>>,
    after: Option<&Map<String, Value>>,
    now: Timestamp,
) -> Result<()> {
    if !c.schema.fields.iter().any(|f| matches!(f.kind, FieldType::Attachment | FieldType::Attachments)) {
        return Ok(());
    }
    let mut delta: std::collections::BTreeMap<&str, (i64, &str)> = std::collections::BTreeMap::new();
    for (field, hash) in after.map(|b| links(c, b)).unwrap_or_default() {
        delta.entry(hash).or_insert((0, field)).0 += 1;
    }
    for (field, hash) in before.map(|b| links(c, b)).unwrap_or_default() {
        delta.entry(hash).or_insert((0, field)).0 -= 1;
    }
    let mut stmt = conn.prepare_cached(
        "UPDATE cairn_blobs SET refs = max(refs + ?2, 0),
                unreferenced_since = CASE WHEN refs + ?2 <= 0 THEN ?3 ELSE NULL END
         WHERE hash = ?1",
    )?;
    for (hash, (d, field)) in delta.into_iter().filter(|(_, (d, _))| *d != 0) {
        if stmt.execute(params![hash, d, now.0])? == 0 && d > 0 {
            return Err(Error::Validation {
                collection: c.name().to_string(),
                id: Some(id.to_string()),
                field: Some(field.to_string()),
                reason: format!(
                    "attachment {hash} is not in the blob store (never stored, or collected); \
                     attach the file again or restore it from a backup"
                ),
            });
        }
    }
    Ok(())
}
