//! Appending to the audit trail (GOV-4): administrative and destructive operations add an
//! entry (actor, action, target, outcome, time) chained by hash to the one before, in the same
//! transaction as what they report when they have one. Reading and verifying the trail is
//! governance's (`governance/audit.rs`), which describes the chain.

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::engine::store::Store;
use crate::engine::timestamp::Timestamp;
use crate::engine::writer::Tx;
use crate::error::Result;

/// The `cairn_meta` key holding `"<seq>:<hash hex>"` of the newest entry.
pub(crate) const HEAD_KEY: &str = "audit_head";

pub(crate) struct NewEntry<'a> {
    pub(crate) seq: u64,
    pub(crate) at: i64,
    pub(crate) actor: &'a str,
    pub(crate) action: &'a str,
    pub(crate) target: &'a str,
    pub(crate) outcome: &'a str,
    pub(crate) detail: &'a str,
}

/// SHA-256 over the previous hash and every field, each length-prefixed.
pub(crate) fn entry_hash(prev: &[u8], e: &NewEntry<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    let seq = e.seq.to_le_bytes();
    let at = e.at.to_le_bytes();
    for field in [prev, &seq, &at, e.actor.as_bytes(), e.action.as_bytes(), e.target.as_bytes()]
        .into_iter()
        .chain([e.outcome.as_bytes(), e.detail.as_bytes()])
    {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field);
    }
    h.finalize().into()
}

/// Appends an entry on `conn` (inside the caller's transaction).
fn append(
    conn: &Connection,
    at: Timestamp,
    actor: &str,
    action: &str,
    target: &str,
    outcome: &str,
    detail: &str,
) -> Result<()> {
    let last: Option<(u64, Vec<u8>)> = conn
        .prepare_cached("SELECT seq, hash FROM cairn_audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, vec![0u8; 32]),
    };
    let entry = NewEntry { seq, at: at.0, actor, action, target, outcome, detail };
    let hash = entry_hash(&prev, &entry);
    conn.prepare_cached(
        "INSERT INTO cairn_audit (seq, at, actor, action, target, outcome, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![seq, at.0, actor, action, target, outcome, detail, prev, hash.as_slice()])?;
    conn.prepare_cached("INSERT OR REPLACE INTO cairn_meta (key, value) VALUES (?1, ?2)")?
        .execute(params![HEAD_KEY, format!("{seq}:{}", crate::engine::hash::hex(&hash))])?;
    Ok(())
}

impl Tx<'_> {
    /// Appends an audit entry in this transaction, by this transaction's actor.
    pub(crate) fn audit(&mut self, action: &str, target: &str, outcome: &str, detail: &str) -> Result<()> {
        append(self.conn, self.now, self.actor, action, target, outcome, detail)
    }
}

/// `ok`, or `failed: <error>`: the outcome an audit entry records for a result.
pub fn outcome<T>(result: &Result<T>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => format!("failed: {e}"),
    }
}

impl Store {
    /// Appends an audit entry in a transaction of its own. A store opened read-only cannot
    /// write one; that, and a failure to write, is logged rather than returned, since the
    /// operation being recorded has already happened.
    pub fn audit(&self, action: &str, target: &str, outcome: &str, detail: &str) {
        if self.is_read_only() {
            tracing::warn!(action, target, outcome, "read-only store: no audit entry written");
            return;
        }
        let (action, target, outcome, detail) =
            (action.to_string(), target.to_string(), outcome.to_string(), detail.to_string());
        if let Err(e) = self.write(move |tx| tx.audit(&action, &target, &outcome, &detail)) {
            tracing::error!(error = %e, "could not write an audit entry");
        }
    }
}
