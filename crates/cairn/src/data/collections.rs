//! Managing collections (CORE-1): creating, reading, updating and dropping schemas.
//!
//! A schema update never makes stored data invalid: it is refused when a live record would not
//! satisfy the new schema (use a migration to change the data first). Dropping a collection
//! writes its schema and every record (deleted ones too) into `quarantine/` and fsyncs them
//! before the table goes: nothing is deleted outright.

use std::io::Write;
use std::path::PathBuf;

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::data::changes::{Body, ChangeOp, NewChange, COLLECTION_OPS};
use crate::data::collection::{exists, load, Collection};
use crate::data::index;
use crate::data::record::ScanOptions;
use crate::data::schema::{CollectionSchema, FieldType};
use crate::engine::canonical::canonical_json;
use crate::engine::layout::QUARANTINE_DIR;
use crate::engine::sql::{quote, records_table, tags_table};
use crate::engine::store::Store;
use crate::engine::timestamp::Timestamp;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// A collection's schema and statistics.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct CollectionInfo {
    /// The schema.
    pub schema: CollectionSchema,
    /// Bumped by every schema update; 1 after creation.
    pub schema_version: u64,
    /// Records that are not deleted.
    pub live_records: u64,
    /// Soft-deleted records (not yet purged).
    pub deleted_records: u64,
    /// When the collection was created.
    pub created_at: Timestamp,
    /// When the schema last changed.
    pub updated_at: Timestamp,
}

/// Confirmation for [`Store::drop_collection`].
#[derive(Debug, Clone, Default)]
pub struct DropOptions {
    /// Must equal the collection's name.
    pub confirm: String,
}

impl DropOptions {
    /// Confirms dropping the collection `name`.
    pub fn confirm(name: &str) -> Self {
        DropOptions { confirm: name.to_string() }
    }
}

/// What a drop did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DropReport {
    /// The collection dropped.
    pub collection: String,
    /// Records exported (live and deleted).
    pub records: u64,
    /// Folder in `quarantine/` holding `schema.json` and `records.jsonl`.
    pub quarantine_dir: PathBuf,
}

/// Creates a collection's record table, its value-column and tag indexes and its full-text
/// index, filled from the records already in the table (none when it is new).
pub(crate) fn create_tables(conn: &Connection, c: &Collection) -> Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE {t} (
            id         TEXT PRIMARY KEY NOT NULL,
            version    INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            deleted_at INTEGER,
            seq        INTEGER NOT NULL,
            sha256     BLOB NOT NULL
        ) WITHOUT ROWID, STRICT",
        t = quote(&c.table)
    ))?;
    index::sync_indexes(conn, None, c, &mut |_| {})
}

fn info(conn: &Connection, name: &str) -> Result<CollectionInfo> {
    let collection = load(conn, name)?;
    let (schema_version, created_at, updated_at): (u64, i64, i64) = conn.query_row(
        "SELECT schema_version, created_at, updated_at FROM cairn_collections WHERE name = ?1",
        [name],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let (live, deleted): (u64, u64) = conn.query_row(
        &format!(
            "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM {}",
            quote(&collection.table)
        ),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(CollectionInfo {
        schema: collection.schema,
        schema_version,
        live_records: live,
        deleted_records: deleted,
        created_at: Timestamp(created_at),
        updated_at: Timestamp(updated_at),
    })
}

impl Tx<'_> {
    /// Creates a collection. See [`Store::create_collection`].
    pub fn create_collection(&mut self, schema: CollectionSchema) -> Result<()> {
        let conn = self.conn;
        schema.validate(&|name| exists(conn, name))?;
        check_rules(&schema)?;
        if exists(conn, &schema.name) {
            return Err(Error::CollectionExists { collection: schema.name });
        }
        let table = records_table(&schema.name);
        let json = canonical_json(&serde_json::to_value(&schema).map_err(|e| Error::Internal(e.to_string()))?);
        conn.execute(
            "INSERT INTO cairn_collections (name, table_name, schema, schema_version, created_at, updated_at)
             VALUES (?1, ?2, ?3, 1, ?4, ?4)",
            params![schema.name, table, std::str::from_utf8(&json).unwrap_or_default(), self.now.0],
        )?;
        let collection = Collection::new(schema, table);
        create_tables(conn, &collection)?;
        self.log(NewChange {
            collection: collection.name(),
            id: "",
            op: ChangeOp::CollectionCreate,
            version: 1,
            deleted: false,
            prev_seq: self.last_change_seq(collection.name(), "", &COLLECTION_OPS)?,
            after: Some(Body::new(&json)),
        })?;
        self.cache.get::<crate::data::collection::Collections>().0.remove(collection.name());
        Ok(())
    }

    /// Replaces a collection's schema. See [`Store::update_collection`].
    pub fn update_collection(&mut self, schema: CollectionSchema) -> Result<()> {
        self.update_collection_reporting(schema, &mut |_| {})
    }

    /// [`Tx::update_collection`], telling `progress` how many records index builds covered.
    pub(crate) fn update_collection_reporting(
        &mut self,
        schema: CollectionSchema,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let conn = self.conn;
        let old = load(conn, &schema.name)?;
        schema.validate(&|name| exists(conn, name))?;
        check_rules(&schema)?;
        for f in &schema.fields {
            if old.schema.field(&f.name).is_some_and(|o| o.encrypted != f.encrypted) {
                return Err(Error::InvalidSchema {
                    collection: schema.name.clone(),
                    field: Some(f.name.clone()),
                    reason: "whether an existing field is encrypted cannot change (its stored values would not follow); add a new field instead".into(),
                });
            }
        }
        let new = Collection::new(schema, old.table.clone());

        // Every live record must satisfy the new schema as it is stored now.
        let mut scan = ScanOptions { include_deleted: false, ..ScanOptions::default() };
        loop {
            let page = crate::data::record::scan(conn, &old, &scan)?;
            let Some(last) = page.last() else { break };
            scan.after = Some(last.id.clone());
            for record in &page {
                let normalized =
                    new.schema.normalize_stored(Some(&record.id), serde_json::Value::Object(record.body.clone()))?;
                if normalized != record.body {
                    let field = new
                        .schema
                        .fields
                        .iter()
                        .find(|f| normalized.get(&f.name) != record.body.get(&f.name))
                        .map(|f| f.name.clone());
                    return Err(Error::Validation {
                        collection: new.name().to_string(),
                        id: Some(record.id.clone()),
                        field,
                        reason: "the new schema would change this stored record (a new default or format); use a migration to change data".into(),
                    });
                }
            }
        }

        self.set_schema(&old, new, progress)
    }

    /// Makes `new` the collection's schema without looking at its records: value columns,
    /// tags, full-text and the catalog follow it, and the change is logged. The caller
    /// answers for the records (a migration rewrites them to fit right after).
    pub(crate) fn set_schema(
        &mut self,
        old: &Collection,
        new: Collection,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let conn = self.conn;
        index::sync_indexes(conn, Some(old), &new, progress)?;
        let after = canonical_json(&serde_json::to_value(&new.schema).map_err(|e| Error::Internal(e.to_string()))?);
        let version: u64 = conn.query_row(
            "UPDATE cairn_collections SET schema = ?2, schema_version = schema_version + 1, updated_at = ?3
             WHERE name = ?1 RETURNING schema_version",
            params![new.name(), std::str::from_utf8(&after).unwrap_or_default(), self.now.0],
            |r| r.get(0),
        )?;
        self.log(NewChange {
            collection: new.name(),
            id: "",
            op: ChangeOp::CollectionUpdate,
            version,
            deleted: false,
            prev_seq: self.last_change_seq(new.name(), "", &COLLECTION_OPS)?,
            after: Some(Body::new(&after)),
        })?;
        self.cache.get::<crate::data::collection::Collections>().0.remove(new.name());
        Ok(())
    }

    /// Drops a collection after exporting it into quarantine. See [`Store::drop_collection`].
    pub fn drop_collection(&mut self, name: &str, options: &DropOptions) -> Result<DropReport> {
        let conn = self.conn;
        let collection = load(conn, name)?;
        if options.confirm != name {
            return Err(Error::ConfirmationRequired {
                what: format!("dropping collection `{name}`"),
                hint: "confirm with the collection's name".into(),
                token: Some(name.to_string()),
            });
        }
        let referenced_by: Vec<String> = {
            let mut stmt = conn.prepare("SELECT name, schema FROM cairn_collections WHERE name != ?1")?;
            let rows = stmt.query_map([name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (other, schema) = row?;
                if let Ok(schema) = serde_json::from_str::<CollectionSchema>(&schema) {
                    if schema
                        .fields
                        .iter()
                        .any(|f| f.kind == FieldType::Relation && f.collection.as_deref() == Some(name))
                    {
                        out.push(other);
                    }
                }
            }
            out
        };
        if !referenced_by.is_empty() {
            return Err(Error::NotAllowed(format!(
                "collection `{name}` is the target of relations in {}; remove those fields first",
                referenced_by.join(", ")
            )));
        }

        let quarantine = self
            .dir
            .join(QUARANTINE_DIR)
            .join(format!("{}-dropped-collection-{name}", self.now.to_string().replace(':', "")));
        let records = export_to_quarantine(conn, &collection, &quarantine)?;
        conn.execute_batch(&format!(
            "DROP TABLE {}; DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {}",
            quote(&collection.table),
            quote(&tags_table(name)),
            quote(&crate::data::search::fts_table(name)),
            quote(&crate::data::search::fts_ids_table(name))
        ))?;
        let version: u64 =
            conn.query_row("DELETE FROM cairn_collections WHERE name = ?1 RETURNING schema_version", [name], |r| {
                r.get(0)
            })?;
        self.log(NewChange {
            collection: name,
            id: "",
            op: ChangeOp::CollectionDrop,
            version: version + 1,
            deleted: true,
            prev_seq: self.last_change_seq(name, "", &COLLECTION_OPS)?,
            after: None,
        })?;
        self.cache.get::<crate::data::collection::Collections>().0.remove(name);
        // A collection made later under this name must not inherit who these records were shared with.
        let grants = crate::data::grants::forget(conn, name, None)?;
        self.audit(
            "drop_collection",
            name,
            "ok",
            &format!("{records} records exported to {}; {grants} grants withdrawn", quarantine.display()),
        )?;
        Ok(DropReport { collection: name.to_string(), records, quarantine_dir: quarantine })
    }
}

/// Writes `schema.json` and `records.jsonl` (every record, deleted ones too, with their
/// metadata) into `dir`, fsynced. Returns the number of records written.
fn export_to_quarantine(conn: &Connection, collection: &Collection, dir: &std::path::Path) -> Result<u64> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create quarantine folder", dir, e))?;
    let write_file = |name: &str, fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>| -> Result<()> {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).map_err(|e| Error::io("create", &path, e))?;
        let mut out = std::io::BufWriter::new(file);
        fill(&mut out)?;
        let file = out.into_inner().map_err(|e| Error::io("write", &path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io("fsync", &path, e))
    };
    let io_err = |e: std::io::Error| Error::io("write", dir, e);
    write_file("schema.json", &mut |out| {
        serde_json::to_writer_pretty(&mut *out, &collection.schema).map_err(|e| io_err(e.into()))?;
        out.write_all(b"\n").map_err(io_err)
    })?;
    let mut count = 0u64;
    write_file("records.jsonl", &mut |out| {
        let mut scan = ScanOptions { include_deleted: true, ..ScanOptions::default() };
        loop {
            let page = crate::data::record::scan(conn, collection, &scan)?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            scan.after = Some(last.id.clone());
            for record in &page {
                serde_json::to_writer(&mut *out, record).map_err(|e| io_err(e.into()))?;
                out.write_all(b"\n").map_err(io_err)?;
                count += 1;
            }
        }
    })?;
    crate::engine::fsutil::sync_dir(dir)?;
    if let Some(parent) = dir.parent() {
        crate::engine::fsutil::sync_dir(parent)?;
    }
    Ok(count)
}

impl Store {
    /// Creates a collection from a schema.
    pub fn create_collection(&self, schema: CollectionSchema) -> Result<CollectionInfo> {
        let name = schema.name.clone();
        self.write(move |tx| tx.create_collection(schema))?;
        self.collection(&name)
    }

    /// Replaces a collection's schema. Refused when a stored live record would not satisfy the
    /// new schema as it is, or when a field made unique has duplicate values.
    pub fn update_collection(&self, schema: CollectionSchema) -> Result<CollectionInfo> {
        let name = schema.name.clone();
        self.write(move |tx| tx.update_collection(schema))?;
        self.collection(&name)
    }

    /// Drops a collection. `options.confirm` must equal `name`. The schema and every record are
    /// first exported into `quarantine/`; the report says where.
    pub fn drop_collection(&self, name: &str, options: &DropOptions) -> Result<DropReport> {
        self.freeing(|| {
            let (name, options) = (name.to_string(), options.clone());
            self.write(move |tx| tx.drop_collection(&name, &options))
        })
    }

    /// A collection's schema and counts.
    pub fn collection(&self, name: &str) -> Result<CollectionInfo> {
        info(&*self.reader()?, name)
    }

    /// All collections, by name.
    pub fn collections(&self) -> Result<Vec<CollectionInfo>> {
        let conn = self.reader()?;
        let names: Vec<String> = conn
            .prepare("SELECT name FROM cairn_collections ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        names.iter().map(|n| info(&conn, n)).collect()
    }
}

/// Each rule of `schema` must be a filter over it once a caller's values are bound.
fn check_rules(schema: &CollectionSchema) -> Result<()> {
    let sample = crate::data::rules::AuthValues { id: "id", name: "name", role: "role", now: "2000-01-01T00:00:00Z" };
    for (verb, rule) in schema.rules.each() {
        let invalid = |reason: String| Error::InvalidSchema {
            collection: schema.name.clone(),
            field: None,
            reason: format!("rules.{verb}: {reason}"),
        };
        if let Some(text) = crate::data::rules::bind(rule, &sample).map_err(|e| invalid(e.to_string()))? {
            crate::data::query::Filter::new(schema, &text).map_err(|e| invalid(e.to_string()))?;
        }
    }
    Ok(())
}
