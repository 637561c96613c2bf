//! Running one step of a migration inside the migration's write transaction.
//!
//! Schema-only steps (indexes, full-text, flags) go through the same path as a schema
//! update, which refuses a schema that a stored record does not satisfy. Steps that change
//! records set the new schema first and then rewrite every record, live and deleted, as a
//! new version (the change log keeps the old one): each body is transformed, validated
//! against the new schema and written only when it changed. A failure names the record and
//! field, and the caller rolls the whole transaction back.

use rusqlite::Connection;
use serde_json::{Map, Value};

use super::op::{with_value, Op, Schemas};
use super::Step;
use crate::data::changes::{self, ChangeOp};
use crate::data::collection::{self, Collection};
use crate::data::collections::DropOptions;
use crate::data::record::{self, NewState, Record, ScanOptions};
use crate::data::schema::{CollectionSchema, FieldDef, FieldType};
use crate::engine::store::Progress;
use crate::engine::timestamp::Timestamp;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// What a `down` knows about the `up` it reverses.
pub(crate) struct Undo<'a> {
    /// The last change-log seq before the `up` ran: records as they were then.
    pub(crate) first_seq: u64,
    pub(crate) up: &'a [Step],
}

/// Runs `step`; returns how many records it wrote.
pub(crate) fn run_step(
    tx: &mut Tx<'_>,
    step: &Step,
    undo: Option<&Undo<'_>>,
    label: &str,
    progress: Progress<'_>,
) -> Result<u64> {
    let op = match step {
        Step::Transform(t) => {
            let c = collection::load(tx.conn, &t.collection)?;
            return rewrite(tx, &c, label, progress, |_, record| {
                let mut body = record.body.clone();
                (t.f)(&record.id, &mut body).map_err(|reason| Error::Validation {
                    collection: t.collection.clone(),
                    id: Some(record.id.clone()),
                    field: None,
                    reason,
                })?;
                Ok(Some(body))
            });
        }
        Step::Op(op) => op,
    };
    let name = op.collection().to_string();
    match op {
        Op::CreateCollection { schema } => {
            tx.create_collection(schema.clone())?;
            let dropped_by_up = undo.filter(|u| {
                u.up.iter().any(|s| matches!(s, Step::Op(Op::DropCollection { collection }) if *collection == name))
            });
            match dropped_by_up {
                Some(undo) => restore_dropped(tx, &name, undo.first_seq),
                None => Ok(0),
            }
        }
        Op::DropCollection { collection } => {
            let c = collection::load(tx.conn, collection)?;
            let records = collection::record_count(tx.conn, &c)?;
            tx.drop_collection(collection, &DropOptions::confirm(collection))?;
            Ok(records)
        }
        Op::AddIndex { .. }
        | Op::DropIndex { .. }
        | Op::AddFulltext { .. }
        | Op::DropFulltext { .. }
        | Op::SetFlag { .. }
        | Op::UnsetFlag { .. } => {
            let schema = schema_after(tx.conn, op)?;
            let total = collection::record_count(tx.conn, &collection::load(tx.conn, &name)?)?;
            tx.update_collection_reporting(schema, &mut |done| progress(label, done, total))?;
            Ok(0)
        }
        Op::AddField { field, .. } => {
            let c = set_schema(tx, op, label, progress)?;
            let removed_by_up = undo.filter(|u| {
                u.up.iter().any(|s| {
                    matches!(s, Step::Op(Op::RemoveField { collection, field: f }) if *collection == name && *f == field.name)
                })
            });
            rewrite(tx, &c, label, progress, |conn, record| {
                let Some(undo) = removed_by_up else { return Ok(None) };
                if record.body.contains_key(&field.name) {
                    return Ok(None);
                }
                let before = value_before(conn, record, undo.first_seq, &field.name)?;
                Ok(before.map(|v| with_value(&record.body, &field.name, Some(v))))
            })
        }
        Op::RemoveField { field, .. } => {
            let c = set_schema(tx, op, label, progress)?;
            rewrite(tx, &c, label, progress, |_, record| {
                Ok(record.body.contains_key(field).then(|| with_value(&record.body, field, None)))
            })
        }
        Op::RenameField { from, to, .. } => {
            let c = set_schema(tx, op, label, progress)?;
            rewrite(tx, &c, label, progress, |_, record| {
                let mut body = record.body.clone();
                Ok(body.remove(from).map(|v| {
                    body.insert(to.clone(), v);
                    body
                }))
            })
        }
        Op::ChangeType { field, to, convert, .. } => {
            // In a down, the up's conversion of the same field (if any): a value it produced
            // that nobody changed since gets the value it was converted from.
            let reversing = undo.and_then(|u| {
                u.up.iter().find_map(|s| match s {
                    Step::Op(Op::ChangeType { collection, field: f, to, convert, .. })
                        if *collection == name && f == field =>
                    {
                        Some((u.first_seq, *convert, *to))
                    }
                    _ => None,
                })
            });
            let c = set_schema(tx, op, label, progress)?;
            rewrite(tx, &c, label, progress, |conn, record| {
                let current = record.body.get(field);
                if let Some((first_seq, up_convert, up_to)) = reversing {
                    if let Some(original) = value_before(conn, record, first_seq, field)? {
                        let converted = up_convert.apply(&original, up_to).ok().flatten();
                        if converted.and_then(|v| canonical(field, up_to, v)).as_ref() == current {
                            return Ok(Some(with_value(&record.body, field, Some(original))));
                        }
                    }
                }
                let Some(value) = current else { return Ok(None) };
                let converted = convert.apply(value, *to).map_err(|reason| Error::Validation {
                    collection: name.clone(),
                    id: Some(record.id.clone()),
                    field: Some(field.clone()),
                    reason,
                })?;
                Ok(Some(with_value(&record.body, field, converted)))
            })
        }
        Op::UpdateRecords { filter, set, unset, .. } => {
            let c = collection::load(tx.conn, &name)?;
            let filter = filter.as_deref().map(|f| crate::data::query::Filter::new(&c.schema, f)).transpose()?;
            rewrite(tx, &c, label, progress, |_, record| {
                if filter.as_ref().is_some_and(|f| !f.matches(&record.body)) {
                    return Ok(None);
                }
                let mut body = record.body.clone();
                for (field, expr) in set {
                    let value = expr.eval(&record.body).map_err(|reason| Error::Validation {
                        collection: name.clone(),
                        id: Some(record.id.clone()),
                        field: Some(field.clone()),
                        reason,
                    })?;
                    body = with_value(&body, field, Some(value));
                }
                for field in unset {
                    body.remove(field);
                }
                Ok(Some(body))
            })
        }
    }
}

/// The schema of `op`'s collection once `op` has applied to the store's schemas.
fn schema_after(conn: &Connection, op: &Op) -> Result<CollectionSchema> {
    let mut schemas: Schemas =
        collection::load_all(conn)?.into_iter().map(|c| (c.name().to_string(), c.schema)).collect();
    op.apply_schema(&mut schemas).map_err(Error::NotAllowed)?;
    schemas.remove(op.collection()).ok_or_else(|| Error::UnknownCollection { collection: op.collection().to_string() })
}

/// Sets the schema `op` leads to, leaving the records to the caller; returns the collection
/// as it now is.
fn set_schema(tx: &mut Tx<'_>, op: &Op, label: &str, progress: Progress<'_>) -> Result<Collection> {
    let old = collection::load(tx.conn, op.collection())?;
    let schema = schema_after(tx.conn, op)?;
    let total = collection::record_count(tx.conn, &old)?;
    tx.set_schema(&old, Collection::new(schema, old.table.clone()), &mut |done| progress(label, done, total))?;
    collection::load(tx.conn, op.collection())
}

/// Writes every record (live and deleted) whose body `f` changes, validated against `c`'s
/// schema, as a new version. `f` returns `None` for "as it is" (the body is still validated:
/// a new required field or default applies to it). Returns the number of records written.
fn rewrite(
    tx: &mut Tx<'_>,
    c: &Collection,
    label: &str,
    progress: Progress<'_>,
    mut f: impl FnMut(&Connection, &Record) -> Result<Option<Map<String, Value>>>,
) -> Result<u64> {
    let total = collection::record_count(tx.conn, c)?;
    let mut scan = ScanOptions { include_deleted: true, ..ScanOptions::default() };
    let (mut done, mut written) = (0u64, 0u64);
    progress(label, 0, total);
    loop {
        let page = record::scan(tx.conn, c, &scan)?;
        let Some(last) = page.last() else { break };
        scan.after = Some(last.id.clone());
        for record in page {
            let body = f(tx.conn, &record)?.unwrap_or_else(|| record.body.clone());
            let body = c.schema.normalize_stored(Some(&record.id), Value::Object(body))?;
            if body != record.body {
                let deleted = record.deleted_at.is_some();
                tx.write_state(c, &record.id, Some(&record), NewState { body, deleted, op: ChangeOp::Replace })?;
                written += 1;
            }
            done += 1;
            if done.is_multiple_of(500) {
                progress(label, done, total);
            }
        }
    }
    progress(label, done, total);
    Ok(written)
}

/// The value `field` had in `record` at change-log seq `seq`, if it had one.
fn value_before(conn: &Connection, record: &Record, seq: u64, field: &str) -> Result<Option<Value>> {
    let Some(change) = changes::version_at(conn, record.seq.0, seq)? else { return Ok(None) };
    Ok(match change.after {
        Some(Value::Object(mut body)) => body.remove(field),
        _ => None,
    })
}

/// `value` as a field of type `kind` stores it (date-times in canonical form), or `None`
/// when it is not a valid value of that type.
fn canonical(field: &str, kind: FieldType, value: Value) -> Option<Value> {
    let schema = CollectionSchema {
        name: String::new(),
        description: String::new(),
        fields: vec![FieldDef::new(field, kind)],
        rules: Default::default(),
    };
    let mut body = Map::new();
    body.insert(field.to_string(), value);
    schema.normalize(None, Value::Object(body)).ok().and_then(|mut b| b.remove(field))
}

/// Brings back the records collection `name` held at change-log seq `seq` (before the `up`
/// that dropped it), each as a new version continuing its own history; deleted ones come back
/// deleted and purged ones stay purged.
fn restore_dropped(tx: &mut Tx<'_>, name: &str, seq: u64) -> Result<u64> {
    let c = tx.collection(name)?;
    let mut written = 0;
    for (id, at, created) in changes::newest_entries(tx.conn, name, seq)? {
        let Some(change) = changes::change_at(tx.conn, at)? else { continue };
        let Some(Value::Object(body)) = change.after.filter(|_| change.op != ChangeOp::Purge) else { continue };
        let body = c.schema.normalize_stored(Some(&id), Value::Object(body))?;
        let before = Record {
            collection: name.to_string(),
            id: id.clone(),
            version: change.version,
            created_at: Timestamp(created),
            updated_at: change.at,
            deleted_at: change.deleted.then_some(change.at),
            body: Map::new(),
            sha256: String::new(),
            seq: crate::engine::change::Seq(at),
            sealed: Vec::new(),
        };
        let state = NewState { body, deleted: change.deleted, op: ChangeOp::Revert };
        tx.write_after(&c, &id, None, Some(&before), state)?;
        written += 1;
    }
    Ok(written)
}
