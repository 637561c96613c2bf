//! Idempotency keys: a write sent with a key is made once, however often it is retried.
//!
//! The write and the answer it gave (a status and a body, as the caller formats them) are
//! stored in one transaction, keyed by a scope (who asked, and where) and the key. A request
//! with a key already stored gets the stored answer back without writing — if it is the same
//! request (the same hash); the same key with another request is refused. A write that
//! fails stores nothing, so its retry runs again. Keys are kept for a retention period,
//! after which the key may be used afresh; expired ones are removed as new ones come in.

use rusqlite::{params, OptionalExtension};

use crate::engine::store::Store;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// The longest idempotency key accepted, in bytes.
const MAX_KEY_BYTES: usize = 255;

/// An answer as stored with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The status the write answered (an HTTP status for the server).
    pub status: u16,
    /// The body it answered.
    pub body: String,
}

/// What a write with a key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Once {
    /// It ran now; this is its answer, stored with the key.
    Done(StoredAnswer),
    /// It had run before; this is the answer it gave then. Nothing was written.
    Replayed(StoredAnswer),
}

/// How a write with a key runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnceOptions {
    /// Who asked and where: a key means the same request only within its scope.
    pub scope: String,
    /// The caller's key.
    pub key: String,
    /// A hash of the whole request: a stored key with another hash is refused.
    pub request_hash: String,
    /// How long a key is kept. Default: 24 hours.
    pub retention_seconds: i64,
}

impl OnceOptions {
    /// `key` in `scope` for the request hashed as `request_hash`, kept 24 hours.
    pub fn new(scope: impl Into<String>, key: impl Into<String>, request_hash: impl Into<String>) -> OnceOptions {
        OnceOptions {
            scope: scope.into(),
            key: key.into(),
            request_hash: request_hash.into(),
            retention_seconds: 24 * 3600,
        }
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid_input(
            "idempotency key",
            format!("a key is 1 to {MAX_KEY_BYTES} visible ASCII characters"),
        ));
    }
    Ok(())
}

impl Store {
    /// Runs `write` once for `options.key`: the first time, in one transaction with storing
    /// its answer; again, only the stored answer comes back. The same key with another
    /// request hash is refused ([`Error::KeyReused`]).
    pub fn write_once<F>(&self, options: &OnceOptions, write: F) -> Result<Once>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<StoredAnswer> + Send + 'static,
    {
        check_key(&options.key)?;
        let options = options.clone();
        self.write(move |tx| {
            let horizon = tx.now.0.saturating_sub(options.retention_seconds.max(0).saturating_mul(1000));
            tx.conn.execute("DELETE FROM cairn_idempotency WHERE created_at < ?1", [horizon])?;
            let stored: Option<(String, u16, String)> = tx
                .conn
                .prepare_cached(
                    "SELECT request_hash, status, response FROM cairn_idempotency WHERE scope = ?1 AND key = ?2",
                )?
                .query_row(params![options.scope, options.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            if let Some((hash, status, body)) = stored {
                return if hash == options.request_hash {
                    Ok(Once::Replayed(StoredAnswer { status, body }))
                } else {
                    Err(Error::KeyReused { key: options.key })
                };
            }
            let answer = write(tx)?;
            tx.conn.execute(
                "INSERT INTO cairn_idempotency (scope, key, request_hash, status, response, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![options.scope, options.key, options.request_hash, answer.status, answer.body, tx.now.0],
            )?;
            Ok(Once::Done(answer))
        })
    }
}
