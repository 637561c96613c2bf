//! The change log (CORE-8): every mutation, in commit order.
//!
//! Each write appends `(seq, collection, id, op, version, actor, at, deleted, before, after)`
//! in its own transaction, so the log and the data can never disagree. Rows carry a SHA-256
//! over all their columns and are verified on read, like records. The log feeds:
//! - [`Store::changes_since`]: sync cursors and `cairn changes`;
//! - [`Store::subscribe`] and [`Store::feed`] (data/feed.rs): committed changes delivered in
//!   order in-process, resumable from any seq;
//! - [`Store::history`], [`Store::revert`], [`Store::undo`] and [`Store::redo`]: reverting is
//!   a new change that brings back an earlier state; history is never rewritten.
//!
//! Undo/redo is computed from the log alone: replaying a record's changes builds a stack of
//! states where an `undo` steps back, a `redo` steps forward, a purge empties the stack and
//! any other change drops the redo part and pushes. No extra state exists that could drift
//! from the log.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::data::collection::{self, Collection};
use crate::data::record::{self, NewState, Record};
use crate::engine::change::Seq;
pub use crate::engine::change::{Change, ChangeOp};
use crate::engine::store::Store;
use crate::engine::timestamp::Timestamp;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

pub(crate) struct NewChange<'a> {
    pub(crate) collection: &'a str,
    pub(crate) id: &'a str,
    pub(crate) op: ChangeOp,
    pub(crate) version: u64,
    pub(crate) deleted: bool,
    /// The entry whose `after` is this change's `before`.
    pub(crate) prev_seq: Option<u64>,
    pub(crate) after: Option<Body<'a>>,
}

/// A canonical JSON body with its SHA-256, computed once and used by both the record's
/// checksum and the change row's.
#[derive(Clone, Copy)]
pub(crate) struct Body<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) sha256: [u8; 32],
}

impl<'a> Body<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Body { bytes, sha256: crate::engine::hash::sha256(bytes) }
    }
}

/// SHA-256 over every column but itself (the body by its own SHA-256), each length-prefixed
/// so that no two rows hash alike.
fn row_hash(seq: u64, c: &NewChange<'_>, actor: &str, at: i64) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut field = |bytes: Option<&[u8]>| match bytes {
        Some(b) => {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        }
        None => h.update(u64::MAX.to_le_bytes()),
    };
    field(Some(&seq.to_le_bytes()));
    field(Some(c.collection.as_bytes()));
    field(Some(c.id.as_bytes()));
    field(Some(c.op.as_str().as_bytes()));
    field(Some(&c.version.to_le_bytes()));
    field(Some(actor.as_bytes()));
    field(Some(&at.to_le_bytes()));
    field(Some(&[u8::from(c.deleted)]));
    field(c.prev_seq.map(u64::to_le_bytes).as_ref().map(|b| b.as_slice()));
    field(c.after.as_ref().map(|b| b.sha256.as_slice()));
    h.finalize().into()
}

/// The next seq, cached by the writer: it is the store's only writer.
#[derive(Default)]
struct NextSeq(Option<u64>);

impl Tx<'_> {
    /// Appends a change and returns its seq; it becomes visible when the transaction commits.
    pub(crate) fn log(&mut self, c: NewChange<'_>) -> Result<u64> {
        // The writer is the store's only writer, so the next seq can be cached; any rollback
        // clears the cache (TxCache::invalidate).
        let seq = match self.cache.get::<NextSeq>().0 {
            Some(seq) => seq,
            None => self
                .conn
                .prepare_cached("SELECT coalesce(max(seq), 0) + 1 FROM cairn_changes")?
                .query_row([], |r| r.get(0))?,
        };
        self.cache.get::<NextSeq>().0 = Some(seq + 1);
        let hash = row_hash(seq, &c, self.actor, self.now.0);
        let policy = self.policy(c.collection)?;
        let stored = c.after.map(|b| policy.encode(b.bytes));
        self.conn
            .prepare_cached(
                "INSERT INTO cairn_changes (seq, collection, record_id, op, version, actor, at, deleted, prev_seq, after, sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                seq,
                c.collection,
                c.id,
                c.op.as_str(),
                c.version,
                self.actor,
                self.now.0,
                c.deleted,
                c.prev_seq,
                stored.as_deref(),
                hash
            ])?;
        if !self.publish {
            return Ok(seq);
        }
        let (before, before_deleted): (Option<Vec<u8>>, bool) = match c.prev_seq {
            Some(prev) => self
                .conn
                .prepare_cached("SELECT after, deleted FROM cairn_changes WHERE seq = ?1")?
                .query_row([prev], |r| Ok((r.get(0)?, r.get(1)?)))?,
            None => (None, false),
        };
        let parse = |b: Option<&[u8]>| {
            b.and_then(|b| crate::engine::body::body_bytes(self.conn, b).ok())
                .and_then(|b| serde_json::from_slice(&b).ok())
        };
        self.changes.push(Change {
            seq: Seq(seq),
            collection: c.collection.to_string(),
            id: c.id.to_string(),
            op: c.op,
            version: c.version,
            actor: self.actor.to_string(),
            at: self.now,
            deleted: c.deleted,
            before: parse(before.as_deref()),
            before_deleted,
            after: parse(c.after.map(|b| b.bytes)),
            sealed: Vec::new(),
        });
        Ok(seq)
    }

    /// The seq of the newest change to (collection, id) with one of `ops`, which must be
    /// purge, schema or setting ops (the ones [`KEY_INDEX_FILTER`] keeps).
    pub(crate) fn last_change_seq(&self, collection: &str, id: &str, ops: &[ChangeOp]) -> Result<Option<u64>> {
        last_keyed_change(self.conn, collection, id, ops)
    }

    /// The latest purge of a record: (seq, version), if it was ever purged.
    pub(crate) fn last_purge(&self, collection: &str, id: &str) -> Result<Option<(u64, u64)>> {
        let Some(seq) = self.last_change_seq(collection, id, &[ChangeOp::Purge])? else { return Ok(None) };
        let version = self
            .conn
            .prepare_cached("SELECT version FROM cairn_changes WHERE seq = ?1")?
            .query_row([seq], |r| r.get(0))?;
        Ok(Some((seq, version)))
    }

    /// Brings a record back to the state it had at `version`, as a new change.
    pub fn revert(&mut self, collection: &str, id: &str, version: u64, expected: Option<u64>) -> Result<Record> {
        let c = self.collection(collection)?;
        let history = history(self.conn, &c, id)?;
        let target = history
            .iter()
            .find(|c| c.version == version)
            .ok_or_else(|| Error::VersionNotFound { collection: collection.into(), id: id.into(), version })?
            .clone();
        self.restore_state(collection, id, &target, ChangeOp::Revert, expected)
    }

    /// Undoes the record's latest change that is not already undone.
    pub fn undo(&mut self, collection: &str, id: &str) -> Result<Record> {
        let c = self.collection(collection)?;
        let history = history(self.conn, &c, id)?;
        let (stack, pos) = undo_stack(&history);
        if pos == 0 {
            return Err(Error::NothingTo { action: "undo", collection: collection.into(), id: id.into() });
        }
        let target = stack[pos - 1].clone();
        self.restore_state(collection, id, &target, ChangeOp::Undo, None)
    }

    /// Redoes the record's latest undo, if nothing else changed it since.
    pub fn redo(&mut self, collection: &str, id: &str) -> Result<Record> {
        let c = self.collection(collection)?;
        let history = history(self.conn, &c, id)?;
        let (stack, pos) = undo_stack(&history);
        if pos + 1 >= stack.len() {
            return Err(Error::NothingTo { action: "redo", collection: collection.into(), id: id.into() });
        }
        let target = stack[pos + 1].clone();
        self.restore_state(collection, id, &target, ChangeOp::Redo, None)
    }

    fn restore_state(
        &mut self,
        collection: &str,
        id: &str,
        target: &Change,
        op: ChangeOp,
        expected: Option<u64>,
    ) -> Result<Record> {
        let c = self.collection(collection)?;
        let Some(Value::Object(body)) = target.after.clone() else {
            return Err(Error::NotAllowed(format!(
                "version {} of `{collection}/{id}` is a purge; there is no state to bring back",
                target.version
            )));
        };
        let current = record::read(self.conn, &c, id)?;
        if let (Some(expected), actual) = (expected, current.as_ref().map_or(0, |r| r.version)) {
            if expected != actual {
                return Err(Error::Conflict { collection: collection.into(), id: id.into(), expected, actual });
            }
        }
        // The body must satisfy the schema as it is now, which may have changed since.
        let body = c.schema.normalize_stored(Some(id), Value::Object(body))?;
        let record = self.write_state(&c, id, current.as_ref(), NewState { body, deleted: target.deleted, op })?;
        self.opened(&c, record)
    }
}

/// The undo stack of a record: states (as the changes that produced them) and the position
/// of the current one.
fn undo_stack(history: &[Change]) -> (Vec<Change>, usize) {
    let mut stack: Vec<Change> = Vec::new();
    let mut pos = 0usize;
    for change in history {
        match change.op {
            ChangeOp::Undo if pos > 0 => pos -= 1,
            ChangeOp::Redo if pos + 1 < stack.len() => pos += 1,
            // A purge is deliberate and final: undo never crosses it (revert still can).
            ChangeOp::Purge => {
                stack.clear();
                pos = 0;
            }
            _ => {
                stack.truncate(pos + 1);
                stack.push(change.clone());
                pos = stack.len() - 1;
            }
        }
    }
    (stack, pos)
}

/// A change row with the `after` of its predecessor, which is its `before`.
const CHANGE_SELECT: &str =
    "SELECT c.seq, c.collection, c.record_id, c.op, c.version, c.actor, c.at, c.deleted, c.prev_seq,
        c.after, c.sha256, p.after, coalesce(p.deleted, 0)
     FROM cairn_changes c LEFT JOIN cairn_changes p ON p.seq = c.prev_seq";

/// A query on [`CHANGE_SELECT`] that leaves the predecessor's body out.
fn without_before(sql: &str) -> String {
    sql.replace("c.after, c.sha256, p.after, coalesce(p.deleted, 0)", "c.after, c.sha256, NULL, 0")
}

/// A change and the seq of its predecessor.
fn change_from_row(conn: &Connection, row: &Row<'_>) -> Result<(Change, Option<u64>)> {
    read_change(conn, row, true)
}

/// A change row, its hash verified; with `parse`, its bodies parsed too (a body whose hash
/// matches is the canonical JSON that was written, so verification alone does not need to).
fn read_change(conn: &Connection, row: &Row<'_>, parse: bool) -> Result<(Change, Option<u64>)> {
    let seq: u64 = row.get(0)?;
    let corrupt = |detail: String| Error::Corruption { location: format!("change log entry {seq}"), detail };
    let op_text = crate::engine::sql::text_at(row, 3)?;
    let op = ChangeOp::parse(&op_text).ok_or_else(|| corrupt(format!("unknown op {op_text:?}")))?;
    let collection = crate::engine::sql::text_at(row, 1)?;
    let id = crate::engine::sql::text_at(row, 2)?;
    let actor = crate::engine::sql::text_at(row, 5)?;
    let decode = |b: Option<Vec<u8>>| -> Result<Option<Vec<u8>>> {
        b.map(|b| crate::engine::body::body_bytes(conn, &b).map(|d| d.into_owned())).transpose().map_err(|e| match e {
            Error::Corruption { location, detail } => corrupt(format!("{location}: {detail}")),
            other => other,
        })
    };
    let after: Option<Vec<u8>> = decode(row.get(9)?)?;
    let stored: Vec<u8> = row.get(10)?;
    let before: Option<Vec<u8>> = decode(row.get(11)?)?;
    let new = NewChange {
        collection: &collection,
        id: &id,
        op,
        version: row.get(4)?,
        deleted: row.get(7)?,
        prev_seq: row.get(8)?,
        after: after.as_deref().map(Body::new),
    };
    let at: i64 = row.get(6)?;
    if row_hash(seq, &new, &actor, at).as_slice() != stored.as_slice() {
        return Err(corrupt("the entry does not match its SHA-256 checksum".into()));
    }
    let parse = |b: &Option<Vec<u8>>| -> Result<Option<Value>> {
        if !parse {
            return Ok(None);
        }
        b.as_deref().map(serde_json::from_slice).transpose().map_err(|e| corrupt(format!("body is not JSON: {e}")))
    };
    let (version, deleted, prev_seq) = (new.version, new.deleted, new.prev_seq);
    let change = Change {
        seq: Seq(seq),
        op,
        version,
        deleted,
        before: parse(&before)?,
        before_deleted: row.get(12)?,
        after: parse(&after)?,
        collection,
        id,
        actor,
        at: Timestamp(at),
        sealed: Vec::new(),
    };
    Ok((change, prev_seq))
}

/// True when a change-log row given as its eleven column values (`seq` … `sha256`, `after`
/// as stored) matches its hash: for rows read from somewhere other than the log itself (a
/// damaged file, a backup) before they are written back.
pub(crate) fn values_verify(conn: &Connection, v: &[rusqlite::types::Value]) -> bool {
    use rusqlite::types::Value as V;
    let [V::Integer(seq), V::Text(collection), V::Text(id), V::Text(op), V::Integer(version), V::Text(actor), V::Integer(at), V::Integer(deleted), prev, after, V::Blob(stored)] =
        v
    else {
        return false;
    };
    let prev_seq = match prev {
        V::Null => None,
        V::Integer(p) => Some(*p as u64),
        _ => return false,
    };
    let body = match after {
        V::Null => None,
        V::Blob(b) => match crate::engine::body::body_bytes(conn, b) {
            Ok(bytes) => Some(bytes.into_owned()),
            Err(_) => return false,
        },
        _ => return false,
    };
    let Some(op) = ChangeOp::parse(op) else { return false };
    let new = NewChange {
        collection,
        id,
        op,
        version: *version as u64,
        deleted: *deleted != 0,
        prev_seq,
        after: body.as_deref().map(Body::new),
    };
    *deleted <= 1 && *deleted >= 0 && row_hash(*seq as u64, &new, actor, *at).as_slice() == stored.as_slice()
}

/// An SQL list of op names. They are compile-time constants, so writing them into SQL text
/// is safe.
fn op_list(ops: impl Iterator<Item = ChangeOp>) -> String {
    ops.map(|op| format!("'{}'", op.as_str())).collect::<Vec<_>>().join(", ")
}

/// A change-log entry as stored, its hash verified, for rewriting its body in place (key
/// rotation).
pub(crate) struct StoredChange {
    pub(crate) seq: u64,
    pub(crate) collection: String,
    pub(crate) record_id: String,
    op: ChangeOp,
    version: u64,
    actor: String,
    at: i64,
    deleted: bool,
    prev_seq: Option<u64>,
    /// The decoded body.
    pub(crate) body: Option<Vec<u8>>,
}

/// Up to `limit` entries after `after`, in seq order, each verified against its hash.
pub(crate) fn stored_page(conn: &Connection, after: i64, limit: i64) -> Result<Vec<StoredChange>> {
    let sql = format!("{CHANGE_SELECT} WHERE c.seq > ?1 ORDER BY c.seq LIMIT ?2");
    let mut stmt = conn.prepare_cached(&without_before(&sql))?;
    let mut rows = stmt.query(params![after, limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let (change, prev_seq) = read_change(conn, row, false)?;
        let body = row
            .get::<_, Option<Vec<u8>>>(9)?
            .map(|b| crate::engine::body::body_bytes(conn, &b).map(|d| d.into_owned()));
        out.push(StoredChange {
            seq: change.seq.0,
            collection: change.collection,
            record_id: change.id,
            op: change.op,
            version: change.version,
            actor: change.actor,
            at: change.at.0,
            deleted: change.deleted,
            prev_seq,
            body: body.transpose()?,
        });
    }
    Ok(out)
}

/// Replaces an entry's body (same content, other bytes: values sealed again), with its
/// hash, and the checksum of the record row whose current state it is.
pub(crate) fn rewrite_body(
    tx: &mut Tx<'_>,
    entry: &StoredChange,
    body: Body<'_>,
    collection: Option<&crate::data::collection::Collection>,
) -> Result<()> {
    let new = NewChange {
        collection: &entry.collection,
        id: &entry.record_id,
        op: entry.op,
        version: entry.version,
        deleted: entry.deleted,
        prev_seq: entry.prev_seq,
        after: Some(body),
    };
    let hash = row_hash(entry.seq, &new, &entry.actor, entry.at);
    let stored = tx.policy(&entry.collection)?.encode(body.bytes).into_owned();
    tx.conn
        .prepare_cached("UPDATE cairn_changes SET after = ?1, sha256 = ?2 WHERE seq = ?3")?
        .execute(params![stored, hash, entry.seq])?;
    if let Some(c) = collection {
        tx.conn.execute(
            &format!("UPDATE {} SET sha256 = ?1 WHERE id = ?2 AND seq = ?3", crate::engine::sql::quote(&c.table)),
            params![body.sha256.as_slice(), entry.record_id, entry.seq],
        )?;
    }
    Ok(())
}

/// What `check` needs of one change-log row, read on its own and verified against its hash.
#[derive(Debug)]
pub(crate) struct ChangeRow {
    pub(crate) collection: String,
    pub(crate) id: String,
    pub(crate) version: u64,
    pub(crate) deleted: bool,
    pub(crate) at: i64,
    pub(crate) prev_seq: Option<u64>,
}

/// Reads change `seq` and checks its row hash and body; `Ok(None)` when there is no such row.
pub(crate) fn verified_row(conn: &Connection, seq: u64) -> Result<Option<ChangeRow>> {
    let sql = format!("{CHANGE_SELECT} WHERE c.seq = ?1");
    let mut stmt = conn.prepare_cached(&without_before(&sql))?;
    let mut rows = stmt.query([seq])?;
    let Some(row) = rows.next()? else { return Ok(None) };
    let (change, prev_seq) = read_change(conn, row, false)?;
    Ok(Some(ChangeRow {
        collection: change.collection,
        id: change.id,
        version: change.version,
        deleted: change.deleted,
        at: change.at.0,
        prev_seq,
    }))
}

/// Change `seq` with its body (`after`) read and verified; `before` is left out.
pub(crate) fn change_at(conn: &Connection, seq: u64) -> Result<Option<Change>> {
    let sql = format!("{CHANGE_SELECT} WHERE c.seq = ?1");
    let mut stmt = conn.prepare_cached(&without_before(&sql))?;
    let mut rows = stmt.query([seq])?;
    let Some(row) = rows.next()? else { return Ok(None) };
    Ok(Some(read_change(conn, row, true)?.0))
}

/// The entry of a record's history that was current at `seq`: walks back from `head` (the
/// record's current entry) to the newest entry at or before `seq`. `None` when the record's
/// history starts after `seq`.
pub(crate) fn version_at(conn: &Connection, head: u64, seq: u64) -> Result<Option<Change>> {
    let mut next = Some(head);
    while let Some(at) = next {
        if at <= seq {
            return change_at(conn, at);
        }
        let Some(meta) = row_meta(conn, at)? else {
            return Err(Error::Corruption {
                location: format!("change log entry {at}"),
                detail: "a record's history names an entry the log does not hold".into(),
            });
        };
        next = meta.prev_seq;
    }
    Ok(None)
}

/// For each record id the change log holds in `collection` up to `seq`: the seq of its newest
/// entry there, and when the record was (last) created. A dropped collection's records are
/// found this way: dropping removes the table, never the history.
pub(crate) fn newest_entries(conn: &Connection, collection: &str, seq: u64) -> Result<Vec<(String, u64, i64)>> {
    let sql = format!(
        "SELECT record_id, seq, op, at FROM cairn_changes WHERE collection = ?1 AND seq <= ?2 AND op IN ({}) ORDER BY seq",
        op_list(ChangeOp::ALL.into_iter().filter(|op| op.is_record_op()))
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params![collection, seq])?;
    let mut newest: std::collections::BTreeMap<String, (u64, i64)> = std::collections::BTreeMap::new();
    while let Some(row) = rows.next()? {
        let id = crate::engine::sql::text_at(row, 0)?;
        let (seq, op, at): (u64, String, i64) = (row.get(1)?, crate::engine::sql::text_at(row, 2)?, row.get(3)?);
        let entry = newest.entry(id).or_insert((seq, at));
        entry.0 = seq;
        if op == ChangeOp::Create.as_str() {
            entry.1 = at;
        }
    }
    Ok(newest.into_iter().map(|(id, (seq, created))| (id, seq, created)).collect())
}

/// Reads change `seq`'s columns without verifying its hash (the change-log check does that
/// for every row once); `Ok(None)` when there is no such row.
pub(crate) fn row_meta(conn: &Connection, seq: u64) -> Result<Option<ChangeRow>> {
    let row = conn
        .prepare_cached(
            "SELECT collection, record_id, version, deleted, at, prev_seq FROM cairn_changes WHERE seq = ?1",
        )?
        .query_row([seq], |r| {
            Ok(ChangeRow {
                collection: crate::engine::sql::text_at(r, 0)?,
                id: crate::engine::sql::text_at(r, 1)?,
                version: r.get(2)?,
                deleted: r.get(3)?,
                at: r.get(4)?,
                prev_seq: r.get(5)?,
            })
        })
        .optional()?;
    Ok(row)
}

/// Ops of the change log's schema entries.
pub(crate) const COLLECTION_OPS: [ChangeOp; 3] =
    [ChangeOp::CollectionCreate, ChangeOp::CollectionUpdate, ChangeOp::CollectionDrop];
/// Ops of the change log's setting value entries.
pub(crate) const SETTING_VALUE_OPS: [ChangeOp; 2] = [ChangeOp::SettingSet, ChangeOp::SettingReset];

fn query_changes(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Change>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(change_from_row(conn, row)?.0);
    }
    Ok(out)
}

pub(crate) fn changes_since(conn: &Connection, seq: u64, limit: usize) -> Result<Vec<Change>> {
    let sql = format!("{CHANGE_SELECT} WHERE c.seq > ?1 ORDER BY c.seq LIMIT ?2");
    // No seq is above i64::MAX (SQLite's integers), so nothing is after one that is.
    query_changes(conn, &sql, params![seq.min(i64::MAX as u64) as i64, limit.min(i64::MAX as usize) as i64])
}

/// Keeps only purge, schema and setting entries; the same text as the partial index
/// `cairn_changes_by_key`, so that SQLite uses it.
const KEY_INDEX_FILTER: &str = "op NOT IN ('create', 'replace', 'patch', 'delete', 'revert', 'undo', 'redo')";

pub(crate) fn last_keyed_change(
    conn: &Connection,
    collection: &str,
    id: &str,
    ops: &[ChangeOp],
) -> Result<Option<u64>> {
    debug_assert!(ops.iter().all(|op| !matches!(
        op,
        ChangeOp::Create
            | ChangeOp::Replace
            | ChangeOp::Patch
            | ChangeOp::Delete
            | ChangeOp::Revert
            | ChangeOp::Undo
            | ChangeOp::Redo
    )));
    let sql = format!(
        "SELECT max(seq) FROM cairn_changes WHERE collection = ?1 AND record_id = ?2 AND {KEY_INDEX_FILTER} AND op IN ({})",
        op_list(ops.iter().copied())
    );
    Ok(conn.prepare_cached(&sql)?.query_row([collection, id], |r| r.get(0))?)
}

/// Every change of one record, oldest first: the prev_seq chain from its current version (or,
/// for a purged record, from its latest purge). Empty when the record never existed.
pub(crate) fn history(conn: &Connection, collection: &Collection, id: &str) -> Result<Vec<Change>> {
    let head: Option<u64> = conn.prepare_cached(&collection.sql.head)?.query_row([id], |r| r.get(0)).optional()?;
    let mut next = match head {
        Some(seq) => Some(seq),
        None => last_keyed_change(conn, collection.name(), id, &[ChangeOp::Purge])?,
    };
    let sql = format!("{CHANGE_SELECT} WHERE c.seq = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut out = Vec::new();
    while let Some(seq) = next {
        let mut rows = stmt.query([seq])?;
        let Some(row) = rows.next()? else {
            return Err(Error::Corruption {
                location: format!("history of `{}/{id}`", collection.name()),
                detail: format!("change log entry {seq} is missing"),
            });
        };
        let (change, prev) = change_from_row(conn, row)?;
        if change.collection != collection.name() || change.id != id || prev.is_some_and(|p| p >= seq) {
            return Err(Error::Corruption {
                location: format!("history of `{}/{id}`", collection.name()),
                detail: format!("change log entry {seq} does not belong to this record's history"),
            });
        }
        out.push(change);
        next = prev;
    }
    out.reverse();
    Ok(out)
}

fn last_seq(conn: &Connection) -> Result<u64> {
    Ok(conn.query_row("SELECT coalesce(max(seq), 0) FROM cairn_changes", [], |r| r.get(0))?)
}

impl Store {
    /// Up to `limit` changes with a seq greater than `seq`, in order.
    pub fn changes_since(&self, seq: Seq, limit: usize) -> Result<Vec<Change>> {
        let conn = self.reader()?;
        let mut changes = changes_since(&conn, seq.0, limit)?;
        crate::data::encryption::open_changes(&self.inner.keys, &conn, &mut changes)?;
        Ok(changes)
    }

    /// The seq of the newest committed change (0 for an empty log).
    pub fn last_seq(&self) -> Result<Seq> {
        last_seq(&*self.reader()?).map(Seq)
    }

    /// Every change of one record, oldest first. Works for purged records too.
    pub fn history(&self, collection: &str, id: &str) -> Result<Vec<Change>> {
        let conn = self.reader()?;
        let mut history = history(&conn, &collection::load(&conn, collection)?, id)?;
        if history.is_empty() {
            return Err(Error::NotFound { collection: collection.into(), id: id.into(), deleted: false });
        }
        crate::data::encryption::open_changes(&self.inner.keys, &conn, &mut history)?;
        Ok(history)
    }

    /// Brings a record back to its state at `version` (a new change with op `revert`).
    /// Works on deleted and purged records too.
    pub fn revert(&self, collection: &str, id: &str, version: u64, expected: Option<u64>) -> Result<Record> {
        let (collection, id) = (collection.to_string(), id.to_string());
        self.write(move |tx| tx.revert(&collection, &id, version, expected))
    }

    /// Undoes the record's latest change (a new change with op `undo`).
    pub fn undo(&self, collection: &str, id: &str) -> Result<Record> {
        let (collection, id) = (collection.to_string(), id.to_string());
        self.write(move |tx| tx.undo(&collection, &id))
    }

    /// Redoes the record's latest undo (a new change with op `redo`).
    pub fn redo(&self, collection: &str, id: &str) -> Result<Record> {
        let (collection, id) = (collection.to_string(), id.to_string());
        self.write(move |tx| tx.redo(&collection, &id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_lookups_use_the_partial_index() {
        let (_dir, store) = crate::engine::store::temp_store();
        let conn = store.reader().expect("reader");
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT max(seq) FROM cairn_changes WHERE collection = ?1 AND record_id = ?2 AND {KEY_INDEX_FILTER} AND op IN ({})",
            op_list([ChangeOp::Purge].into_iter())
        );
        let plan: Vec<String> = conn
            .prepare(&sql)
            .expect("prepare")
            .query_map(["c", "i"], |r| r.get::<_, String>(3))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert!(plan.iter().any(|step| step.contains("cairn_changes_by_key")), "{plan:?}");
    }
}
