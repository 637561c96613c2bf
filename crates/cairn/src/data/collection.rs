//! What a collection is once loaded: its schema and the tables and columns that hold its
//! records (CORE-1). Each collection's records live in their own table `c_<name>`, with a
//! column per indexed field. Creating, changing and dropping collections is
//! data/collections.rs.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};

use crate::data::schema::CollectionSchema;
use crate::data::schema::FieldDef;
use crate::engine::sql::{quote, value_column};
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// A collection as the engine uses it: its schema, where its records live, and the SQL that
/// reads and writes them, built once per schema rather than on every call.
#[derive(Debug, Clone)]
pub(crate) struct Collection {
    pub(crate) schema: CollectionSchema,
    pub(crate) table: String,
    pub(crate) sql: RecordSql,
    /// Indexed tags fields, kept in the tags table.
    pub(crate) tag_fields: Vec<String>,
    /// Fields in the full-text index.
    pub(crate) fulltext_fields: Vec<String>,
    /// Some field is encrypted (see `keys.rs`).
    pub(crate) has_encrypted: bool,
}

/// Statements over one collection's table. Parameters: `?1` is always the record id.
#[derive(Debug, Clone)]
pub(crate) struct RecordSql {
    pub(crate) select: String,
    pub(crate) exists: String,
    /// The seq of the record's current version.
    pub(crate) head: String,
    pub(crate) scan_live: String,
    pub(crate) scan_all: String,
    pub(crate) insert: String,
    pub(crate) update: String,
    pub(crate) delete: String,
    /// Fields with a value column, in the order `insert` and `update` bind them after the
    /// seven fixed columns.
    pub(crate) value_fields: Vec<FieldDef>,
    /// (field, statement finding another live record with the same value as `?1`, not `?2`)
    pub(crate) unique_checks: Vec<(String, String)>,
}

impl Collection {
    pub(crate) fn new(schema: CollectionSchema, table: String) -> Self {
        let t = quote(&table);
        // The body lives in the change log entry that wrote it (see the migration's notes).
        let cols = "r.id, r.version, r.created_at, r.updated_at, r.deleted_at, b.after, r.sha256, r.seq";
        let from = format!("{t} r JOIN cairn_changes b ON b.seq = r.seq");
        let value_fields: Vec<FieldDef> = schema.fields.iter().filter(|f| f.has_column()).cloned().collect();
        let unique: Vec<&str> = value_fields.iter().filter(|f| f.unique).map(|f| f.name.as_str()).collect();
        let mut columns: Vec<String> =
            ["id", "version", "created_at", "updated_at", "deleted_at", "seq", "sha256"].map(String::from).to_vec();
        columns.extend(value_fields.iter().map(|f| quote(&value_column(&f.name))));
        let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let sets: Vec<String> = columns.iter().enumerate().skip(1).map(|(i, c)| format!("{c} = ?{}", i + 1)).collect();
        let sql = RecordSql {
            select: format!("SELECT {cols} FROM {from} WHERE r.id = ?1"),
            exists: format!("SELECT 1 FROM {t} WHERE id = ?1"),
            head: format!("SELECT seq FROM {t} WHERE id = ?1"),
            scan_live: format!(
                "SELECT {cols} FROM {from} WHERE r.id > ?1 AND r.deleted_at IS NULL ORDER BY r.id LIMIT ?2"
            ),
            scan_all: format!("SELECT {cols} FROM {from} WHERE r.id > ?1 ORDER BY r.id LIMIT ?2"),
            insert: format!("INSERT INTO {t} ({}) VALUES ({})", columns.join(", "), marks.join(", ")),
            update: format!("UPDATE {t} SET {} WHERE id = ?1", sets.join(", ")),
            delete: format!("DELETE FROM {t} WHERE id = ?1"),
            unique_checks: unique
                .iter()
                .map(|f| {
                    let check = format!(
                        "SELECT id FROM {t} WHERE {} = ?1 AND deleted_at IS NULL AND id != ?2 LIMIT 1",
                        quote(&value_column(f))
                    );
                    (f.to_string(), check)
                })
                .collect(),
            value_fields,
        };
        let tag_fields = schema.fields.iter().filter(|f| f.has_tag_index()).map(|f| f.name.clone()).collect();
        let fulltext_fields = schema.fulltext_fields();
        let has_encrypted = schema.fields.iter().any(|f| f.encrypted);
        Collection { schema, table, sql, tag_fields, fulltext_fields, has_encrypted }
    }

    pub(crate) fn name(&self) -> &str {
        &self.schema.name
    }
}

/// Reads a collection's catalog entry.
pub(crate) fn load(conn: &Connection, name: &str) -> Result<Collection> {
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT schema, table_name FROM cairn_collections WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((schema, table)) = row else {
        return Err(Error::UnknownCollection { collection: name.to_string() });
    };
    let schema = serde_json::from_str(&schema)
        .map_err(|e| Error::Corruption { location: format!("schema of collection `{name}`"), detail: e.to_string() })?;
    Ok(Collection::new(schema, table))
}

/// Every collection's catalog entry, in name order.
pub(crate) fn load_all(conn: &Connection) -> Result<Vec<Collection>> {
    let names: Vec<String> = conn
        .prepare_cached("SELECT name FROM cairn_collections ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    names.iter().map(|name| load(conn, name)).collect()
}

/// Records in a collection, live and deleted.
pub(crate) fn record_count(conn: &Connection, c: &Collection) -> Result<u64> {
    Ok(conn.query_row(&format!("SELECT count(*) FROM {}", quote(&c.table)), [], |r| r.get(0))?)
}

pub(crate) fn exists(conn: &Connection, name: &str) -> bool {
    conn.prepare_cached("SELECT 1 FROM cairn_collections WHERE name = ?1")
        .and_then(|mut s| s.exists([name]))
        .unwrap_or(false)
}

/// The collections the writer has loaded, by name.
#[derive(Default)]
pub(crate) struct Collections(pub(crate) std::collections::HashMap<String, Arc<Collection>>);

impl Tx<'_> {
    /// The collection `name`, from the writer's cache.
    pub(crate) fn collection(&mut self, name: &str) -> Result<Arc<Collection>> {
        if let Some(c) = self.cache.get::<Collections>().0.get(name) {
            return Ok(c.clone());
        }
        let c = Arc::new(load(self.conn, name)?);
        self.cache.get::<Collections>().0.insert(name.to_string(), c.clone());
        Ok(c)
    }
}
