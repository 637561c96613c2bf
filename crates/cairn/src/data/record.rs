//! Records (CORE-2) and their checksums (CORE-4).
//!
//! A record is an id, a version, timestamps and a body: a JSON object valid under its
//! collection's schema. The body is stored as canonical JSON (object keys sorted, no
//! whitespace), and the SHA-256 of those exact bytes is stored beside it. Every read
//! recomputes the hash before parsing; a mismatch is [`Error::Corruption`] naming the record,
//! never data returned.
//!
//! Versions start at 1 and grow by one with every change, across deletes and purges: an id's
//! versions never repeat, so the change log's (collection, id, version) names one state.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::data::changes::{Body, ChangeOp, NewChange};
use crate::data::collection::{self, Collection};
use crate::data::ids::{new_id, validate_id};
use crate::data::index;
use crate::data::schema::json_kind;
use crate::engine::canonical::canonical_object;
use crate::engine::change::Seq;
use crate::engine::hash::{hex, sha256};
use crate::engine::store::Store;
use crate::engine::timestamp::Timestamp;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// A stored record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Record {
    /// The collection it belongs to.
    pub collection: String,
    /// Its id, unique within the collection.
    pub id: String,
    /// 1 when created, one more after every change.
    pub version: u64,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When it was soft-deleted; `None` for live records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Timestamp>,
    /// The fields, normalised by the schema.
    pub body: Map<String, Value>,
    /// SHA-256 (hex) of the canonical body.
    pub sha256: String,
    /// The change-log entry that wrote this version (and holds its body).
    pub seq: Seq,
    /// Encrypted fields that have a value this handle cannot open (its key is locked); they
    /// are not in `body`. See [`Record::field`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sealed: Vec<String>,
}

impl Record {
    /// The longest record id, in bytes.
    pub const MAX_ID_LEN: usize = crate::data::ids::MAX_ID_LEN;
}

impl Record {
    /// A field's value: `None` when the record does not have it, [`Error::KeyLocked`] when it
    /// is encrypted and the store's key is locked.
    pub fn field(&self, name: &str) -> Result<Option<&Value>> {
        if self.sealed.iter().any(|s| s == name) {
            return Err(crate::data::encryption::sealed_error(&self.collection, &self.id, name));
        }
        Ok(self.body.get(name))
    }
}

/// Paging through a collection in id order; see [`Store::scan`].
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Start after this id (exclusive). Default: from the start.
    pub after: Option<String>,
    /// Most records returned. Default: 500.
    pub limit: usize,
    /// Include soft-deleted records. Default: false.
    pub include_deleted: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions { after: None, limit: 500, include_deleted: false }
    }
}

impl ScanOptions {
    /// The first `limit` records after `after`.
    pub fn page(after: Option<String>, limit: usize) -> Self {
        ScanOptions { after, limit, ..Self::default() }
    }
}

/// Parses a JSON document given by a user; errors name the input and the line and column.
pub fn parse_json(text: &str, source_name: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::invalid_input(source_name, e.to_string()))
}

/// Builds a record from a row selected by [`crate::data::collection::RecordSql`] (id, version,
/// created_at, updated_at, deleted_at, body, sha256, seq), verifying its checksum.
fn from_row(conn: &Connection, collection: &str, row: &Row<'_>) -> Result<Record> {
    let id: String = row.get(0)?;
    let body: Option<Vec<u8>> = row.get(5)?;
    let stored: Vec<u8> = row.get(6)?;
    let Some(body) = body else {
        return Err(Error::Corruption {
            location: format!("record `{collection}/{id}`"),
            detail: "its body is missing from the change log".into(),
        });
    };
    let body = verified_body(conn, collection, &id, &body, &stored)?;
    Ok(Record {
        collection: collection.to_string(),
        version: row.get(1)?,
        created_at: Timestamp(row.get(2)?),
        updated_at: Timestamp(row.get(3)?),
        deleted_at: row.get::<_, Option<i64>>(4)?.map(Timestamp),
        body,
        sha256: hex(&stored),
        seq: Seq(row.get(7)?),
        id,
        sealed: Vec::new(),
    })
}

/// Checks a stored body against its SHA-256 and parses it; any mismatch is corruption.
pub(crate) fn verified_body(
    conn: &Connection,
    collection: &str,
    id: &str,
    stored: &[u8],
    sha: &[u8],
) -> Result<Map<String, Value>> {
    let corrupt = |detail: String| Error::Corruption { location: format!("record `{collection}/{id}`"), detail };
    let body = &*crate::engine::body::body_bytes(conn, stored).map_err(|e| match e {
        Error::Corruption { location, detail } => corrupt(format!("{location}: {detail}")),
        other => other,
    })?;
    if sha != sha256(body).as_slice() {
        return Err(corrupt("the body does not match its SHA-256 checksum".into()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(corrupt(format!("the body is {} instead of an object", json_kind(&other)))),
        Err(e) => Err(corrupt(format!("the body is not JSON: {e}"))),
    }
}

/// Reads one record (live or deleted), verifying its checksum.
pub(crate) fn read(conn: &Connection, collection: &Collection, id: &str) -> Result<Option<Record>> {
    let mut stmt = conn.prepare_cached(&collection.sql.select)?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(row) => from_row(conn, collection.name(), row).map(Some),
        None => Ok(None),
    }
}

/// One page of records in id order, checksums verified.
pub(crate) fn scan(conn: &Connection, collection: &Collection, options: &ScanOptions) -> Result<Vec<Record>> {
    let sql = if options.include_deleted { &collection.sql.scan_all } else { &collection.sql.scan_live };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params![options.after.as_deref().unwrap_or(""), options.limit as i64])?;
    let mut out: Vec<Record> = Vec::new();
    while let Some(row) = rows.next()? {
        let record = from_row(conn, collection.name(), row)?;
        // Callers page on by the last id; a damaged table that hands back ids out of order
        // would send them round forever.
        let previous = out.last().map(|r| r.id.as_str()).or(options.after.as_deref());
        if let Some(previous) = previous.filter(|p| record.id.as_str() <= *p) {
            return Err(Error::Corruption {
                location: format!("collection `{}`", collection.name()),
                detail: format!(
                    "record `{}` comes after `{previous}` in a scan by id: the table is damaged",
                    record.id
                ),
            });
        }
        out.push(record);
    }
    Ok(out)
}

/// The state a write leaves a record in.
pub(crate) struct NewState {
    pub(crate) body: Map<String, Value>,
    pub(crate) deleted: bool,
    pub(crate) op: ChangeOp,
}

impl Tx<'_> {
    /// Reads a record inside the transaction (sees this transaction's own writes).
    pub fn get(&mut self, collection: &str, id: &str) -> Result<Record> {
        let c = self.collection(collection)?;
        let record = live(&c, id, read(self.conn, &c, id)?)?;
        self.opened(&c, record)
    }

    /// Reads a record inside the transaction whether or not it is soft-deleted (what undo,
    /// redo and revert start from).
    pub(crate) fn get_including_deleted(&mut self, collection: &str, id: &str) -> Result<Record> {
        let c = self.collection(collection)?;
        let record = read(self.conn, &c, id)?.ok_or_else(|| Error::NotFound {
            collection: collection.into(),
            id: id.into(),
            deleted: false,
        })?;
        self.opened(&c, record)
    }

    /// A stored record as callers see it: encrypted fields opened where this handle can.
    pub(crate) fn opened(&self, c: &Collection, mut record: Record) -> Result<Record> {
        record.sealed = self.open_some(c, &record.id, &mut record.body)?;
        Ok(record)
    }

    /// Writes a plaintext body (already normalised): encrypted fields are sealed on the
    /// way to the log, and the record returned holds the plaintext.
    fn write_plain(&mut self, c: &Collection, id: &str, current: Option<&Record>, new: NewState) -> Result<Record> {
        if !c.has_encrypted {
            return self.write_state(c, id, current, new);
        }
        let plain = new.body.clone();
        let mut body = new.body;
        self.seal(c, id, &mut body)?;
        let mut record = self.write_state(c, id, current, NewState { body, ..new })?;
        record.body = plain;
        Ok(record)
    }

    /// Replacing a record whose encrypted values this handle cannot read would drop them
    /// unseen; that is refused.
    fn check_replaceable(&self, c: &Collection, current: &Record) -> Result<()> {
        if c.has_encrypted && !self.keys_unlocked() {
            let mut body = current.body.clone();
            self.open_all(c, &current.id, &mut body)?;
        }
        Ok(())
    }

    /// Creates a record; `id` is generated (UUIDv7) when `None`.
    pub fn create(&mut self, collection: &str, id: Option<&str>, body: Value) -> Result<Record> {
        let c = self.collection(collection)?;
        let id = match id {
            Some(id) => {
                validate_id(id)?;
                id.to_string()
            }
            None => new_id(),
        };
        if self.conn.prepare_cached(&c.sql.exists)?.exists([&id])? {
            return Err(Error::AlreadyExists { collection: collection.to_string(), id });
        }
        let body = c.schema.normalize(Some(&id), body)?;
        self.write_plain(&c, &id, None, NewState { body, deleted: false, op: ChangeOp::Create })
    }

    /// Replaces a record's body whole. `expected`: the version the caller last saw.
    pub fn replace(&mut self, collection: &str, id: &str, body: Value, expected: Option<u64>) -> Result<Record> {
        let c = self.collection(collection)?;
        let current = self.current(&c, id, expected)?;
        self.check_replaceable(&c, &current)?;
        let body = c.schema.normalize(Some(id), body)?;
        self.write_plain(&c, id, Some(&current), NewState { body, deleted: false, op: ChangeOp::Replace })
    }

    /// Writes `body` (as stored: encrypted fields sealed) as the record's new version unless
    /// the record is live with that body already; creates, replaces or undeletes. True when
    /// it wrote.
    pub(crate) fn restore_body(&mut self, collection: &str, id: &str, body: Value) -> Result<bool> {
        let c = self.collection(collection)?;
        let body = c.schema.normalize_stored(Some(id), body)?;
        if c.has_encrypted {
            crate::data::encryption::check_sealed_keys(
                &c.schema,
                id,
                &body,
                &crate::engine::keyring::generations(self.conn)?,
            )?;
        }
        let current = read(self.conn, &c, id)?;
        if current.as_ref().is_some_and(|r| r.deleted_at.is_none() && r.body == body) {
            return Ok(false);
        }
        let op = if current.is_some() { ChangeOp::Replace } else { ChangeOp::Create };
        self.write_state(&c, id, current.as_ref(), NewState { body, deleted: false, op })?;
        Ok(true)
    }

    /// Repair: writes `copy` (a record read from a backup) as a new version of a record whose
    /// newest change-log entry is damaged. The new version follows the highest version the
    /// log holds for the id and names the record row's entry as its predecessor; index, tag
    /// and reference counts are left to the rebuild that repair runs afterwards, since the
    /// damaged body they would start from cannot be read.
    pub(crate) fn write_over_damaged(&mut self, c: &Collection, id: &str, copy: Record) -> Result<Record> {
        let head: Option<u64> = self.conn.prepare_cached(&c.sql.head)?.query_row([id], |r| r.get(0)).optional()?;
        let newest: Option<u64> = self.conn.query_row(
            "SELECT max(version) FROM cairn_changes WHERE collection = ?1 AND record_id = ?2",
            params![c.name(), id],
            |r| r.get(0),
        )?;
        let current = head.map(|seq| Record {
            collection: c.name().to_string(),
            id: id.to_string(),
            version: newest.unwrap_or(copy.version).max(copy.version),
            created_at: copy.created_at,
            updated_at: copy.updated_at,
            deleted_at: None,
            body: Map::new(),
            sha256: String::new(),
            seq: Seq(seq),
            sealed: Vec::new(),
        });
        if !c.tag_fields.is_empty() {
            let tags = crate::engine::sql::quote(&crate::engine::sql::tags_table(c.name()));
            self.conn.execute(&format!("DELETE FROM {tags} WHERE id = ?1"), [id])?;
        }
        let deleted = copy.deleted_at.is_some();
        if c.has_encrypted {
            crate::data::encryption::check_sealed_keys(
                &c.schema,
                id,
                &copy.body,
                &crate::engine::keyring::generations(self.conn)?,
            )?;
        }
        self.write_state(c, id, current.as_ref(), NewState { body: copy.body, deleted, op: ChangeOp::Revert })
    }

    /// Creates the record with this id, or replaces it when it exists. With `expected`, a
    /// missing record counts as version 0.
    pub fn put(&mut self, collection: &str, id: &str, body: Value, expected: Option<u64>) -> Result<Record> {
        let c = self.collection(collection)?;
        validate_id(id)?;
        match (read(self.conn, &c, id)?, expected) {
            (None, None | Some(0)) => self.create(collection, Some(id), body),
            (None, Some(expected)) => {
                Err(Error::Conflict { collection: collection.to_string(), id: id.to_string(), expected, actual: 0 })
            }
            (Some(_), _) => self.replace(collection, id, body, expected),
        }
    }

    /// Applies a JSON Merge Patch (RFC 7396): `null` removes a field, objects merge, anything
    /// else replaces.
    pub fn patch(&mut self, collection: &str, id: &str, patch: &Value, expected: Option<u64>) -> Result<Record> {
        let c = self.collection(collection)?;
        if !patch.is_object() {
            return Err(Error::Validation {
                collection: collection.to_string(),
                id: Some(id.to_string()),
                field: None,
                reason: format!("a patch must be a JSON object, got {}", json_kind(patch)),
            });
        }
        let current = self.current(&c, id, expected)?;
        let new = |body| NewState { body, deleted: false, op: ChangeOp::Patch };
        if c.has_encrypted && !self.keys_unlocked() {
            // Locked: the sealed values this patch does not touch are kept as they are.
            let touched = patch.as_object().into_iter().flatten().map(|(k, _)| k);
            if let Some(field) = touched.filter_map(|k| c.schema.field(k)).find(|f| f.encrypted) {
                return Err(crate::data::encryption::locked(collection, id, &field.name, "cannot be written"));
            }
            let mut merged = Value::Object(current.body.clone());
            json_patch::merge(&mut merged, patch);
            let body = c.schema.normalize_stored(Some(id), merged)?;
            let record = self.write_state(&c, id, Some(&current), new(body))?;
            return self.opened(&c, record);
        }
        let mut plain = current.body.clone();
        self.open_all(&c, id, &mut plain)?;
        let mut merged = Value::Object(plain);
        json_patch::merge(&mut merged, patch);
        let body = c.schema.normalize(Some(id), merged)?;
        self.write_plain(&c, id, Some(&current), new(body))
    }

    /// Soft-deletes a record: it disappears from reads but stays, with its history, until
    /// purged; `revert` or `undo` bring it back.
    pub fn delete(&mut self, collection: &str, id: &str, expected: Option<u64>) -> Result<Record> {
        let c = self.collection(collection)?;
        let current = self.current(&c, id, expected)?;
        let body = current.body.clone();
        let deleted =
            self.write_state(&c, id, Some(&current), NewState { body, deleted: true, op: ChangeOp::Delete })?;
        self.audit("delete", &format!("{collection}/{id}"), "ok", &format!("version {}", deleted.version))?;
        self.opened(&c, deleted)
    }

    /// Removes a soft-deleted record from its collection for good. Its history stays in the
    /// change log. Returns the version number the purge was logged under.
    pub fn purge(&mut self, collection: &str, id: &str) -> Result<u64> {
        let c = self.collection(collection)?;
        let Some(current) = read(self.conn, &c, id)? else {
            return Err(Error::NotFound { collection: collection.to_string(), id: id.to_string(), deleted: false });
        };
        if current.deleted_at.is_none() {
            return Err(Error::NotAllowed(format!("record `{collection}/{id}` is live; delete it before purging")));
        }
        self.conn.prepare_cached(&c.sql.delete)?.execute([id])?;
        // A record made later under this id must not inherit who this one was shared with.
        crate::data::grants::forget(self.conn, collection, Some(id))?;
        let version = current.version + 1;
        self.log(NewChange {
            collection,
            id,
            op: ChangeOp::Purge,
            version,
            deleted: true,
            prev_seq: Some(current.seq.0),
            after: None,
        })?;
        self.audit("purge", &format!("{collection}/{id}"), "ok", &format!("version {version}"))?;
        Ok(version)
    }

    /// The live record `id`, checked against the version the caller expects.
    fn current(&mut self, c: &Collection, id: &str, expected: Option<u64>) -> Result<Record> {
        let record = live(c, id, read(self.conn, c, id)?)?;
        match expected {
            Some(expected) if expected != record.version => Err(Error::Conflict {
                collection: c.name().to_string(),
                id: id.to_string(),
                expected,
                actual: record.version,
            }),
            _ => Ok(record),
        }
    }

    /// Writes a record's new state and appends the change. `current` is the row as it is
    /// (`None` when there is none: a create, or bringing back a purged record).
    pub(crate) fn write_state(
        &mut self,
        c: &Collection,
        id: &str,
        current: Option<&Record>,
        new: NewState,
    ) -> Result<Record> {
        self.write_after(c, id, current, current, new)
    }

    /// [`Tx::write_state`] for a record that has no row but whose history goes on from
    /// `predecessor` (a version read from the change log: a record of a dropped collection
    /// coming back). Its versions, created time and history continue from there.
    pub(crate) fn write_after(
        &mut self,
        c: &Collection,
        id: &str,
        current: Option<&Record>,
        predecessor: Option<&Record>,
        new: NewState,
    ) -> Result<Record> {
        let NewState { body, deleted, op } = new;
        let bytes = canonical_object(&body);
        let limit = self.max_body_bytes()?;
        if bytes.len() as u64 > limit {
            return Err(Error::BodyTooLarge {
                collection: c.name().to_string(),
                id: Some(id.to_string()),
                size: bytes.len(),
                limit,
            });
        }
        // A deleted record keeps its body but leaves the indexes.
        let columns: Vec<SqlValue> = c
            .sql
            .value_fields
            .iter()
            .map(|f| body.get(&f.name).filter(|_| !deleted).map_or(SqlValue::Null, |v| index::column_value(f, v)))
            .collect();
        for (field, check) in &c.sql.unique_checks {
            let position = c.sql.value_fields.iter().position(|f| &f.name == field);
            let Some(value) = position.map(|i| &columns[i]).filter(|v| **v != SqlValue::Null) else { continue };
            let other: Option<String> =
                self.conn.prepare_cached(check)?.query_row(params![value, id], |r| r.get(0)).optional()?;
            if let Some(other_id) = other {
                return Err(Error::Unique {
                    collection: c.name().to_string(),
                    id: id.to_string(),
                    field: field.clone(),
                    other_id,
                });
            }
        }

        // A record created again after a purge continues its versions and its history.
        let (version, prev_seq) = match predecessor {
            Some(before) => (before.version + 1, Some(before.seq.0)),
            None => match self.last_purge(c.name(), id)? {
                Some((seq, version)) => (version + 1, Some(seq)),
                None => (1, None),
            },
        };
        let created_at = predecessor.map(|r| r.created_at).unwrap_or(self.now);
        let deleted_at = if deleted { Some(predecessor.and_then(|r| r.deleted_at).unwrap_or(self.now)) } else { None };
        let body_bytes = Body::new(&bytes);
        let checksum = body_bytes.sha256;
        let seq =
            self.log(NewChange { collection: c.name(), id, op, version, deleted, prev_seq, after: Some(body_bytes) })?;
        let mut stmt = self.conn.prepare_cached(if current.is_some() { &c.sql.update } else { &c.sql.insert })?;
        let fixed: [&dyn rusqlite::ToSql; 7] =
            [&id, &(version as i64), &created_at.0, &self.now.0, &deleted_at.map(|t| t.0), &seq, &checksum.as_slice()];
        stmt.execute(rusqlite::params_from_iter(
            fixed.into_iter().chain(columns.iter().map(|v| v as &dyn rusqlite::ToSql)),
        ))?;
        drop(stmt);
        let live_before = current.filter(|r| r.deleted_at.is_none()).map(|r| &r.body);
        let live_after = Some(&body).filter(|_| !deleted);
        index::update_tags(self.conn, c, id, live_before, live_after)?;
        if live_before.is_some() || live_after.is_some() {
            crate::data::search::update_fts(self.conn, c, id, live_after)?;
            crate::data::attachments::update_refs(self.conn, c, id, live_before, live_after, self.now)?;
        }
        Ok(Record {
            collection: c.name().to_string(),
            id: id.to_string(),
            version,
            created_at,
            updated_at: self.now,
            deleted_at,
            body,
            sha256: hex(&checksum),
            seq: Seq(seq),
            sealed: Vec::new(),
        })
    }
}

/// Turns a read into "the live record" or the right not-found error.
fn live(c: &Collection, id: &str, record: Option<Record>) -> Result<Record> {
    match record {
        Some(r) if r.deleted_at.is_none() => Ok(r),
        other => {
            Err(Error::NotFound { collection: c.name().to_string(), id: id.to_string(), deleted: other.is_some() })
        }
    }
}

impl Store {
    /// Reads a live record, verifying its checksum.
    pub fn get(&self, collection: &str, id: &str) -> Result<Record> {
        let conn = self.reader()?;
        let c = collection::load(&conn, collection)?;
        let record = live(&c, id, read(&conn, &c, id)?)?;
        self.opened(&conn, &c, record)
    }

    /// A stored record as callers see it: encrypted fields opened where this handle can.
    pub(crate) fn opened(&self, conn: &Connection, c: &Collection, mut record: Record) -> Result<Record> {
        record.sealed = self.open_body(conn, &c.schema, &record.id, &mut record.body)?;
        Ok(record)
    }

    /// Reads a record whether or not it is soft-deleted.
    pub fn get_including_deleted(&self, collection: &str, id: &str) -> Result<Record> {
        let conn = self.reader()?;
        let c = collection::load(&conn, collection)?;
        let record = read(&conn, &c, id)?.ok_or_else(|| Error::NotFound {
            collection: collection.into(),
            id: id.into(),
            deleted: false,
        })?;
        self.opened(&conn, &c, record)
    }

    /// A record (live or deleted) as stored: encrypted fields sealed. For copying records
    /// between stores (restore, repair) without the key and without losing them.
    pub(crate) fn stored_record(&self, collection: &str, id: &str) -> Result<Option<Record>> {
        let conn = self.reader()?;
        read(&conn, &collection::load(&conn, collection)?, id)
    }

    /// Records in id order, one page at a time; continue with `after` = the last id seen.
    pub fn scan(&self, collection: &str, options: &ScanOptions) -> Result<Vec<Record>> {
        let conn = self.reader()?;
        let c = collection::load(&conn, collection)?;
        scan(&conn, &c, options)?.into_iter().map(|r| self.opened(&conn, &c, r)).collect()
    }

    /// Creates a record with a new UUIDv7 id.
    pub fn create(&self, collection: &str, body: Value) -> Result<Record> {
        let collection = collection.to_string();
        self.write(move |tx| tx.create(&collection, None, body))
    }

    /// Creates a record with the id the caller chose.
    pub fn create_with_id(&self, collection: &str, id: &str, body: Value) -> Result<Record> {
        let (collection, id) = (collection.to_string(), id.to_string());
        self.write(move |tx| tx.create(&collection, Some(&id), body))
    }

    /// Creates or replaces the record `id`. See [`Tx::put`].
    pub fn put(&self, collection: &str, id: &str, body: Value, expected: Option<u64>) -> Result<Record> {
        let (collection, id) = (collection.to_string(), id.to_string());
        self.write(move |tx| tx.put(&collection, &id, body, expected))
    }

    /// Replaces a live record's body. With `expected`, fails with [`Error::Conflict`] unless
    /// the record is still at that version.
    pub fn replace(&self, collection: &str, id: &str, body: Value, expected: Option<u64>) -> Result<Record> {
        let (collection, id) = (collection.to_string(), id.to_string());
        self.write(move |tx| tx.replace(&collection, &id, body, expected))
    }

    /// Applies a JSON Merge Patch (RFC 7396) to a live record.
    pub fn patch(&self, collection: &str, id: &str, patch: Value, expected: Option<u64>) -> Result<Record> {
        let (collection, id) = (collection.to_string(), id.to_string());
        self.write(move |tx| tx.patch(&collection, &id, &patch, expected))
    }

    /// Soft-deletes a live record.
    /// On a full disk it may use the space reserve (see `space`).
    pub fn delete(&self, collection: &str, id: &str, expected: Option<u64>) -> Result<Record> {
        self.freeing(|| {
            let (collection, id) = (collection.to_string(), id.to_string());
            self.write(move |tx| tx.delete(&collection, &id, expected))
        })
    }

    /// Removes a soft-deleted record for good (its history stays in the change log).
    /// On a full disk it may use the space reserve (see `space`).
    pub fn purge(&self, collection: &str, id: &str) -> Result<u64> {
        self.freeing(|| {
            let (collection, id) = (collection.to_string(), id.to_string());
            self.write(move |tx| tx.purge(&collection, &id))
        })
    }

    /// Runs `f` as one transaction: all of its writes, across any collections, commit
    /// together or none do (CORE-3). `f` may run on another caller's thread, inside the group
    /// commit that includes it: keep it short, and do not call this store's write methods from it.
    pub fn transaction<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        self.write(f)
    }
}
