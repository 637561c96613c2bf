//! The audit trail (GOV-4): every administrative and destructive operation appends an entry
//! (actor, action, target, outcome, time) chained by hash to the one before.
//!
//! Entries live in `cairn_audit`. Each carries the SHA-256 of its own fields and of the
//! previous entry's hash, so editing an entry breaks its hash, and inserting or removing one
//! breaks the chain after it; the newest entry's seq and hash are also kept in `cairn_meta`
//! (`audit_head`), so removing entries from the end is found too. Someone who can rewrite
//! the whole database can rewrite the whole chain: the trail makes tampering evident to a
//! verifier with an earlier head (a backup keeps one), it does not prevent it.
//!
//! Record deletes and purges and collection drops append their entry in their own
//! transaction, so the entry exists exactly when the operation happened. Operations on the
//! files around the database (backup, restore, repair, migrate) append one when they finish,
//! with the outcome, failures included. A restore brings back the trail as the backup had it
//! and then appends its own entry; the trail it replaced stays in `quarantine/replaced-*`.
//!
//! Alternative considered: writing the trail to a separate append-only file. Keeping it in
//! the database puts each entry in the same transaction as the change it reports, and makes
//! backups and restores carry it.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::engine::store::Store;
use crate::engine::timestamp::Timestamp;
use crate::error::Result;

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Position in the trail: 1, 2, 3…
    pub seq: u64,
    pub at: Timestamp,
    /// Who did it (the store handle's actor).
    pub actor: String,
    /// What was done: `backup`, `restore`, `repair`, `migrate`, `delete`, `purge`,
    /// `drop_collection`…
    pub action: String,
    /// What it was done to: a record (`collection/id`), a collection, a backup id…
    pub target: String,
    /// `ok`, or `failed: …`.
    pub outcome: String,
    /// More about it (a backup's reason, the migrations run…), possibly empty.
    pub detail: String,
    /// SHA-256 of the entry, chained to the one before, in hex.
    pub hash: String,
}

/// Something `verify_audit` found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditProblem {
    /// The entry where the problem shows.
    pub seq: u64,
    pub detail: String,
}

/// What [`Store::verify_audit`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditVerification {
    /// Entries read.
    pub entries: u64,
    pub problems: Vec<AuditProblem>,
}

impl AuditVerification {
    /// True when the trail is intact.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// True when audit entry `seq` in `conn` matches its own hash (its link to the entry before
/// is [`Store::verify_audit`]'s business).
pub(crate) fn entry_verifies(conn: &Connection, seq: u64) -> Result<bool> {
    let row = conn
        .prepare_cached(
            "SELECT at, actor, action, target, outcome, detail, prev_hash, hash FROM cairn_audit WHERE seq = ?1",
        )?
        .query_row([seq], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                [
                    crate::engine::sql::text_at(r, 1)?,
                    crate::engine::sql::text_at(r, 2)?,
                    crate::engine::sql::text_at(r, 3)?,
                ],
                [crate::engine::sql::text_at(r, 4)?, crate::engine::sql::text_at(r, 5)?],
                r.get::<_, Vec<u8>>(6)?,
                r.get::<_, Vec<u8>>(7)?,
            ))
        })
        .optional()?;
    let Some((at, [actor, action, target], [outcome, detail], prev, hash)) = row else { return Ok(false) };
    let entry = crate::engine::trail::NewEntry {
        seq,
        at,
        actor: &actor,
        action: &action,
        target: &target,
        outcome: &outcome,
        detail: &detail,
    };
    Ok(crate::engine::trail::entry_hash(&prev, &entry).as_slice() == hash.as_slice())
}

/// True when an audit row given as its nine column values (`seq` … `hash`) matches its own
/// hash.
pub(crate) fn values_verify(v: &[rusqlite::types::Value]) -> bool {
    use rusqlite::types::Value as V;
    let [V::Integer(seq), V::Integer(at), V::Text(actor), V::Text(action), V::Text(target), V::Text(outcome), V::Text(detail), V::Blob(prev), V::Blob(hash)] =
        v
    else {
        return false;
    };
    let entry = crate::engine::trail::NewEntry { seq: *seq as u64, at: *at, actor, action, target, outcome, detail };
    crate::engine::trail::entry_hash(prev, &entry).as_slice() == hash.as_slice()
}

/// After a repair restored entries: when every entry verifies and follows the one before,
/// and the recorded head names no entry past the last one (which would mean entries were
/// removed from the end), the head is set to the last entry. Returns whether it moved.
pub(crate) fn repoint_head(conn: &Connection) -> Result<bool> {
    let rows: Vec<(u64, Vec<u8>, Vec<u8>)> = conn
        .prepare("SELECT seq, prev_hash, hash FROM cairn_audit ORDER BY seq")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut prev = vec![0u8; 32];
    for (i, (seq, stored_prev, hash)) in rows.iter().enumerate() {
        if *seq != i as u64 + 1 || stored_prev != &prev || !entry_verifies(conn, *seq)? {
            return Ok(false);
        }
        prev = hash.clone();
    }
    let Some((last, _, hash)) = rows.last() else { return Ok(false) };
    let head: Option<String> = conn
        .query_row("SELECT value FROM cairn_meta WHERE key = ?1", [crate::engine::trail::HEAD_KEY], |r| r.get(0))
        .optional()?;
    let named = head.as_deref().and_then(|h| h.split_once(':')).and_then(|(s, _)| s.parse::<u64>().ok());
    let wanted = format!("{last}:{}", crate::engine::hash::hex(hash));
    if head.as_deref() == Some(wanted.as_str()) || named.is_some_and(|s| s > *last) {
        return Ok(false);
    }
    conn.execute(
        "INSERT OR REPLACE INTO cairn_meta (key, value) VALUES (?1, ?2)",
        params![crate::engine::trail::HEAD_KEY, wanted],
    )?;
    Ok(true)
}

impl Store {
    /// Audit entries, oldest first, that match `filter` (the filter language over the fields
    /// `seq`, `at`, `actor`, `action`, `target`, `outcome`, `detail`), after `after`, at most
    /// `limit`.
    pub fn audit_log(&self, filter: Option<&str>, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let filter = filter.map(|f| crate::data::query::Filter::new(&entry_schema(), f)).transpose()?;
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, actor, action, target, outcome, detail, hash FROM cairn_audit WHERE seq > ?1 ORDER BY seq",
        )?;
        // No seq is above i64::MAX (SQLite's integers), so nothing is after one that is.
        let mut rows = stmt.query([after.min(i64::MAX as u64) as i64])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            if out.len() >= limit {
                break;
            }
            let hash: Vec<u8> = row.get(7)?;
            let entry = AuditEntry {
                seq: row.get(0)?,
                at: Timestamp(row.get(1)?),
                actor: crate::engine::sql::text_at(row, 2)?,
                action: crate::engine::sql::text_at(row, 3)?,
                target: crate::engine::sql::text_at(row, 4)?,
                outcome: crate::engine::sql::text_at(row, 5)?,
                detail: crate::engine::sql::text_at(row, 6)?,
                hash: crate::engine::hash::hex(&hash),
            };
            if filter.as_ref().is_none_or(|f| f.matches(&entry_body(&entry))) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Walks the whole trail: every entry must match its hash, follow the one before
    /// (consecutive seq, previous hash), and the last must be the head recorded in
    /// `cairn_meta`.
    pub fn verify_audit(&self) -> Result<AuditVerification> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT seq, at, actor, action, target, outcome, detail, prev_hash, hash FROM cairn_audit ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        let mut problems = Vec::new();
        let (mut entries, mut expected_seq, mut prev) = (0u64, 1u64, vec![0u8; 32]);
        while let Some(row) = rows.next()? {
            entries += 1;
            let seq: u64 = row.get(0)?;
            let (actor, action, target) = (
                crate::engine::sql::text_at(row, 2)?,
                crate::engine::sql::text_at(row, 3)?,
                crate::engine::sql::text_at(row, 4)?,
            );
            let (outcome, detail) = (crate::engine::sql::text_at(row, 5)?, crate::engine::sql::text_at(row, 6)?);
            let stored_prev: Vec<u8> = row.get(7)?;
            let stored: Vec<u8> = row.get(8)?;
            let entry = crate::engine::trail::NewEntry {
                seq,
                at: row.get(1)?,
                actor: &actor,
                action: &action,
                target: &target,
                outcome: &outcome,
                detail: &detail,
            };
            if seq != expected_seq {
                let detail = if seq > expected_seq {
                    format!("entries {expected_seq}..{} are missing (removed)", seq - 1)
                } else {
                    "the entry repeats a seq already seen (inserted)".into()
                };
                problems.push(AuditProblem { seq, detail });
            }
            if stored_prev != prev {
                problems.push(AuditProblem {
                    seq,
                    detail: "the entry does not follow the one before it (an entry was inserted, removed or edited before it)".into(),
                });
            }
            if crate::engine::trail::entry_hash(&stored_prev, &entry).as_slice() != stored.as_slice() {
                problems.push(AuditProblem { seq, detail: "the entry does not match its hash (edited)".into() });
            }
            expected_seq = seq + 1;
            prev = stored;
        }
        let head: Option<String> = conn
            .query_row("SELECT value FROM cairn_meta WHERE key = ?1", [crate::engine::trail::HEAD_KEY], |r| r.get(0))
            .optional()?;
        let last = format!("{}:{}", expected_seq - 1, crate::engine::hash::hex(&prev));
        match head {
            Some(head) if head == last => {}
            None if entries == 0 => {}
            Some(head) => problems.push(AuditProblem {
                seq: expected_seq - 1,
                detail: format!("the trail ends at {last} but the store recorded {head} as its newest entry (entries removed from the end, or edited)"),
            }),
            None => problems.push(AuditProblem { seq: 0, detail: "the store has no record of the trail's newest entry".into() }),
        }
        Ok(AuditVerification { entries, problems })
    }
}

/// The fields of an entry as a schema, so that entries can be filtered like records.
fn entry_schema() -> crate::CollectionSchema {
    use crate::{FieldDef, FieldType};
    crate::CollectionSchema {
        name: "audit".into(),
        description: String::new(),
        fields: vec![
            FieldDef::new("seq", FieldType::Integer),
            FieldDef::new("at", FieldType::Datetime),
            FieldDef::new("actor", FieldType::Text),
            FieldDef::new("action", FieldType::Text),
            FieldDef::new("target", FieldType::Text),
            FieldDef::new("outcome", FieldType::Text),
            FieldDef::new("detail", FieldType::Text),
        ],
        rules: Default::default(),
    }
}

fn entry_body(e: &AuditEntry) -> Map<String, Value> {
    let value = json!({
        "seq": e.seq, "at": e.at.to_string(), "actor": e.actor, "action": e.action,
        "target": e.target, "outcome": e.outcome, "detail": e.detail,
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
