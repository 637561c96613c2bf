//! Indexes (CORE-6): value columns for indexed and unique fields, and a table of tags.
//!
//! Every scalar field flagged `indexed` or `unique` has a column `v_<field>` in its
//! collection's table, written with the record in the same transaction, and a partial index
//! over live records (a UNIQUE one for unique fields). Date-times are stored there as integer
//! microseconds since the epoch, so they compare as instants, not as text. Indexed tags fields
//! have rows `(field, tag, id)` in `c_<collection>__tags`, so that `has` is an index lookup.
//! Deleted records hold no values and no tags: indexes cover live records only.
//!
//! Alternative considered: expression indexes on `json_extract(body, …)`. Bodies live in the
//! change log and will be compressed, so the values the planner needs are kept beside the row.

use std::collections::BTreeSet;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection};
use serde_json::{Map, Value};

use crate::data::collection::Collection;
use crate::data::record::ScanOptions;
use crate::data::schema::{FieldDef, FieldType};
use crate::engine::sql::{quote, tags_table, value_column, value_index};
use crate::engine::timestamp::{datetime_micros, micros_to_text, parse_datetime};
use crate::error::{Error, Result};

/// The value a field's column holds for a (normalised) JSON value.
pub(crate) fn column_value(f: &FieldDef, value: &Value) -> SqlValue {
    match (f.kind, value) {
        (FieldType::Datetime, Value::String(s)) => {
            parse_datetime(s).map_or(SqlValue::Null, |dt| SqlValue::Integer(datetime_micros(dt)))
        }
        (_, Value::Bool(b)) => SqlValue::Integer(i64::from(*b)),
        (_, Value::Number(n)) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => n.as_f64().map_or(SqlValue::Null, SqlValue::Real),
        },
        (_, Value::String(s)) => SqlValue::Text(s.clone()),
        _ => SqlValue::Null,
    }
}

/// The JSON value a column holds (the inverse of [`column_value`]).
pub(crate) fn column_json(f: &FieldDef, value: SqlValue) -> Option<Value> {
    match (f.kind, value) {
        (_, SqlValue::Null) => None,
        (FieldType::Datetime, SqlValue::Integer(us)) => micros_to_text(us).map(Value::String),
        (FieldType::Bool, SqlValue::Integer(i)) => Some(Value::Bool(i != 0)),
        (_, SqlValue::Integer(i)) => Some(Value::from(i)),
        (_, SqlValue::Real(r)) => serde_json::Number::from_f64(r).map(Value::Number),
        (_, SqlValue::Text(s)) => Some(Value::String(s)),
        (_, SqlValue::Blob(_)) => None,
    }
}

fn tags_of<'a>(body: Option<&'a Map<String, Value>>, field: &str) -> BTreeSet<&'a str> {
    body.and_then(|b| b.get(field)).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

/// Brings a record's rows in the tags table from `old` (its live body before, if any) to `new`
/// (its live body after, if any).
pub(crate) fn update_tags(
    conn: &Connection,
    c: &Collection,
    id: &str,
    old: Option<&Map<String, Value>>,
    new: Option<&Map<String, Value>>,
) -> Result<()> {
    if c.tag_fields.is_empty() {
        return Ok(());
    }
    let table = quote(&tags_table(c.name()));
    for field in &c.tag_fields {
        let (before, after) = (tags_of(old, field), tags_of(new, field));
        for tag in before.difference(&after) {
            conn.prepare_cached(&format!("DELETE FROM {table} WHERE field = ?1 AND tag = ?2 AND id = ?3"))?
                .execute(params![field, tag, id])?;
        }
        for tag in after.difference(&before) {
            conn.prepare_cached(&format!("INSERT INTO {table} (field, tag, id) VALUES (?1, ?2, ?3)"))?
                .execute(params![field, tag, id])?;
        }
    }
    Ok(())
}

/// Calls `f` on every live record, a page at a time, with the number done so far.
fn each_live(conn: &Connection, c: &Collection, mut f: impl FnMut(&crate::Record) -> Result<()>) -> Result<()> {
    let mut scan = ScanOptions::default();
    loop {
        let page = crate::data::record::scan(conn, c, &scan)?;
        let Some(last) = page.last() else { return Ok(()) };
        scan.after = Some(last.id.clone());
        for record in &page {
            f(record)?;
        }
    }
}

/// Makes the physical indexes of `new` match its schema, given those of `old` (none for a new
/// collection): adds and fills value columns and tag rows, drops those no longer wanted.
/// `progress` is told how many records each build has covered.
pub(crate) fn sync_indexes(
    conn: &Connection,
    old: Option<&Collection>,
    new: &Collection,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let table = quote(&new.table);
    let old_fields = |pick: fn(&FieldDef) -> bool| -> Vec<FieldDef> {
        old.map(|o| o.schema.fields.iter().filter(|f| pick(f)).cloned().collect()).unwrap_or_default()
    };
    let (old_columns, old_tags) = (old_fields(FieldDef::has_column), old_fields(FieldDef::has_tag_index));

    // Columns: a field whose column definition changed (kind, unique) is rebuilt.
    let same = |a: &FieldDef, b: &FieldDef| a.kind == b.kind && a.unique == b.unique;
    for f in &old_columns {
        if !new.schema.fields.iter().any(|n| n.name == f.name && n.has_column() && same(n, f)) {
            conn.execute_batch(&format!(
                "DROP INDEX IF EXISTS {}; ALTER TABLE {table} DROP COLUMN {}",
                quote(&value_index(new.name(), &f.name)),
                quote(&value_column(&f.name))
            ))?;
        }
    }
    for f in new.schema.fields.iter().filter(|f| f.has_column()) {
        if old_columns.iter().any(|o| o.name == f.name && same(o, f)) {
            continue;
        }
        let column = quote(&value_column(&f.name));
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} ANY"))?;
        let mut seen = std::collections::HashMap::new();
        let mut done = 0u64;
        each_live(conn, new, |record| {
            done += 1;
            if done.is_multiple_of(1000) {
                progress(done);
            }
            let Some(value) = record.body.get(&f.name) else { return Ok(()) };
            let value = column_value(f, value);
            if f.unique {
                if let Some(other_id) = seen.insert(format!("{value:?}"), record.id.clone()) {
                    return Err(Error::Unique {
                        collection: new.name().to_string(),
                        id: record.id.clone(),
                        field: f.name.clone(),
                        other_id,
                    });
                }
            }
            conn.prepare_cached(&format!("UPDATE {table} SET {column} = ?2 WHERE id = ?1"))?
                .execute(params![record.id, value])?;
            Ok(())
        })?;
        progress(done);
        let unique = if f.unique { "UNIQUE " } else { "" };
        conn.execute_batch(&format!(
            "CREATE {unique}INDEX {} ON {table} ({column}) WHERE deleted_at IS NULL AND {column} IS NOT NULL",
            quote(&value_index(new.name(), &f.name))
        ))?;
    }

    // Tags.
    let tags = quote(&tags_table(new.name()));
    if !new.tag_fields.is_empty() {
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {tags} (
                field TEXT NOT NULL,
                tag   TEXT NOT NULL,
                id    TEXT NOT NULL,
                PRIMARY KEY (field, tag, id)
            ) WITHOUT ROWID, STRICT"
        ))?;
    }
    for f in &old_tags {
        if !new.tag_fields.contains(&f.name) {
            if new.tag_fields.is_empty() {
                conn.execute_batch(&format!("DROP TABLE IF EXISTS {tags}"))?;
                break;
            }
            conn.prepare(&format!("DELETE FROM {tags} WHERE field = ?1"))?.execute([&f.name])?;
        }
    }
    crate::data::search::sync_fts(conn, old, new, progress)?;
    for field in &new.tag_fields {
        if old_tags.iter().any(|o| &o.name == field) {
            continue;
        }
        let mut done = 0u64;
        let single = Collection { tag_fields: vec![field.clone()], ..new.clone() };
        each_live(conn, new, |record| {
            done += 1;
            if done.is_multiple_of(1000) {
                progress(done);
            }
            update_tags(conn, &single, &record.id, None, Some(&record.body))
        })?;
        progress(done);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_values_round_trip() {
        let cases = [
            (FieldType::Text, Value::from("x")),
            (FieldType::Integer, Value::from(-5)),
            (FieldType::Number, Value::from(2.5)),
            (FieldType::Bool, Value::from(true)),
            (FieldType::Datetime, Value::from("2025-06-01T10:00:00.123456Z")),
            (FieldType::Datetime, Value::from("1969-12-31T23:59:59.000Z")),
        ];
        for (kind, value) in cases {
            let f = FieldDef { indexed: true, ..FieldDef::new("f", kind) };
            assert_eq!(column_json(&f, column_value(&f, &value)), Some(value.clone()), "{kind:?}");
        }
        let f = FieldDef::new("at", FieldType::Datetime);
        let (a, b) = (
            column_value(&f, &Value::from("2025-01-01T00:00:00.5Z")),
            column_value(&f, &Value::from("2025-01-01T00:00:00.123456Z")),
        );
        assert!(
            matches!((a, b), (SqlValue::Integer(a), SqlValue::Integer(b)) if a > b),
            "instants compare as instants"
        );
    }
}

/// One index of a collection, as `cairn index list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct IndexInfo {
    /// The field.
    pub field: String,
    /// `value` (a column with an index), `unique`, or `tags` (the tags table).
    pub kind: &'static str,
}

impl crate::Store {
    /// The indexes of a collection.
    pub fn indexes(&self, collection: &str) -> Result<Vec<IndexInfo>> {
        let schema = self.collection(collection)?.schema;
        Ok(schema
            .fields
            .iter()
            .filter_map(|f| {
                let kind = if f.has_tag_index() {
                    "tags"
                } else if f.has_column() && f.unique {
                    "unique"
                } else if f.has_column() {
                    "value"
                } else {
                    return None;
                };
                Some(IndexInfo { field: f.name.clone(), kind })
            })
            .collect())
    }

    /// Indexes `field` (sets its `indexed` flag) and builds the index over the existing
    /// records. Readers are not blocked while it builds; `progress` is told how many records
    /// have been covered. Returns false when the field was indexed already (nothing changed).
    pub fn add_index(&self, collection: &str, field: &str, progress: impl FnMut(u64) + Send + 'static) -> Result<bool> {
        self.set_indexed(collection, field, true, Box::new(progress))
    }

    /// Drops the index of `field` (clears its `indexed` flag). Unique fields keep their column.
    /// Returns false when the field had no index (nothing changed).
    pub fn drop_index(&self, collection: &str, field: &str) -> Result<bool> {
        self.set_indexed(collection, field, false, Box::new(|_| {}))
    }

    fn set_indexed(
        &self,
        collection: &str,
        field: &str,
        on: bool,
        mut progress: Box<dyn FnMut(u64) + Send>,
    ) -> Result<bool> {
        let mut schema = self.collection(collection)?.schema;
        let Some(f) = schema.fields.iter_mut().find(|f| f.name == field) else {
            return Err(Error::InvalidSchema {
                collection: collection.to_string(),
                field: Some(field.to_string()),
                reason: "no such field".into(),
            });
        };
        if f.indexed == on {
            return Ok(false);
        }
        f.indexed = on;
        self.write(move |tx| tx.update_collection_reporting(schema, &mut *progress)).map(|()| true)
    }
}
