//! Record compression (CORE-10): which form each body is stored in (engine/body.rs has the
//! forms), trained per-collection dictionaries, and [`Store::compact`].
//!
//! Plain zstd is used for bodies of at least `records.compress_min_bytes` (default 4 KiB); a
//! collection's trained dictionary for bodies of at least `records.dict_min_bytes` (default
//! 128 bytes) — each only when it saves an eighth. Small bodies of one collection share most of
//! their keys and phrasing, which plain zstd cannot exploit body by body. A collection's
//! newest dictionary is the one new writes use.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::engine::body::{body_bytes, dict_key, Policy};
use crate::engine::store::Store;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// Reads the settings and the collection's newest dictionary.
pub(crate) fn load_policy(conn: &Connection, collection: &str) -> Result<Policy> {
    let size = |key: &str, default: usize| -> Result<usize> {
        Ok(crate::data::settings::value(conn, key)?.as_u64().map_or(default, |n| n as usize))
    };
    let dict: Option<Vec<u8>> = conn
        .prepare_cached("SELECT dict FROM cairn_dicts WHERE collection = ?1 ORDER BY id DESC LIMIT 1")?
        .query_row([collection], |r| r.get(0))
        .optional()?;
    Ok(Policy::new(
        size(crate::data::builtin_settings::RECORDS_COMPRESS_MIN_BYTES, 4096)?,
        size(crate::data::builtin_settings::RECORDS_DICT_MIN_BYTES, 128)?,
        dict.as_deref(),
    ))
}

/// The compression policies the writer holds, by collection (`""` for settings and schemas).
#[derive(Default)]
pub(crate) struct Policies(pub(crate) std::collections::HashMap<String, Arc<Policy>>);

impl Tx<'_> {
    /// The compression policy of a collection (`""` for settings and schemas), cached by the
    /// writer until a setting or dictionary changes.
    pub(crate) fn policy(&mut self, collection: &str) -> Result<Arc<Policy>> {
        if let Some(policy) = self.cache.get::<Policies>().0.get(collection) {
            return Ok(policy.clone());
        }
        let policy = Arc::new(load_policy(self.conn, collection)?);
        self.cache.get::<Policies>().0.insert(collection.to_string(), policy.clone());
        Ok(policy)
    }
}

/// The largest dictionary trained.
pub const MAX_DICT_BYTES: usize = 112 * 1024;
/// Bodies sampled for training, at most, and their total size at most.
const TRAIN_SAMPLES: i64 = 4000;
const TRAIN_SAMPLE_BYTES: usize = 16 << 20;
/// Fewer sampled bodies than this give zstd too little to find what they share.
const TRAIN_MIN_SAMPLES: usize = 20;
/// A dictionary is kept only when it makes the held-out bodies at least this much smaller
/// than the collection's current policy does (0.9 = a tenth smaller).
const TRAIN_KEEP_RATIO: f64 = 0.9;

/// What training a collection's dictionary found; see [`CompactOptions::train`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TrainReport {
    /// The collection.
    pub collection: String,
    /// Bodies sampled (the newest live records); one in five is held out to judge the result.
    pub samples: u64,
    /// Their total size, canonical JSON.
    pub sample_bytes: u64,
    /// Size of the trained dictionary.
    pub dict_bytes: u64,
    /// The held-out bodies' stored size under the policy before, and with the new dictionary.
    pub held_out_bytes_before: u64,
    pub held_out_bytes_after: u64,
    /// True when the dictionary paid (a tenth smaller at least) and was stored; it is then
    /// used for the collection's new writes and by `compact`.
    pub kept: bool,
    /// Why it was not kept, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What [`Store::compact`] does. Serialized keys match the fields; unknown keys are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactOptions {
    /// Train a dictionary for each collection (or those in `collections`) first, keeping it
    /// where it pays. Default: false.
    pub train: bool,
    /// Limit training and recompression to these collections. Default: empty, every
    /// collection and the change-log bodies of settings and schemas.
    pub collections: Vec<String>,
}

impl CompactOptions {
    /// The largest dictionary training makes.
    pub const MAX_DICT_BYTES: usize = MAX_DICT_BYTES;
}

/// What [`Store::compact`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CompactReport {
    /// Bodies in the change log that were looked at.
    pub bodies: u64,
    /// Bodies this run stored in a smaller form.
    pub compressed: u64,
    /// Their size before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// One report per collection trained.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trained: Vec<TrainReport>,
}

/// Change-log rows `compact` rewrites per write transaction.
const COMPACT_BATCH: i64 = 500;

impl Store {
    /// Trains a zstd dictionary on the newest bodies of a collection and keeps it when it
    /// makes held-out bodies at least a tenth smaller than the current policy does. New writes
    /// use it at once; existing bodies change form only through [`Store::compact`].
    pub fn train_dictionary(&self, collection: &str) -> Result<TrainReport> {
        let conn = self.reader()?;
        let table = crate::data::collection::load(&conn, collection)?.table;
        let mut samples = Vec::new();
        let mut total = 0;
        {
            let sql = format!(
                "SELECT b.after FROM {} r JOIN cairn_changes b ON b.seq = r.seq
                 WHERE r.deleted_at IS NULL ORDER BY r.seq DESC LIMIT ?1",
                crate::engine::sql::quote(&table)
            );
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query([TRAIN_SAMPLES])?;
            while let Some(row) = rows.next()? {
                let stored: Vec<u8> = row.get(0)?;
                let body = body_bytes(&conn, &stored)?.into_owned();
                total += body.len();
                samples.push(body);
                if total >= TRAIN_SAMPLE_BYTES {
                    break;
                }
            }
        }
        let before = load_policy(&conn, collection)?;
        drop(conn);
        let mut report = TrainReport {
            collection: collection.to_string(),
            samples: samples.len() as u64,
            sample_bytes: total as u64,
            ..TrainReport::default()
        };
        if samples.len() < TRAIN_MIN_SAMPLES {
            report.reason =
                Some(format!("{} live records; training needs at least {TRAIN_MIN_SAMPLES}", samples.len()));
            return Ok(report);
        }
        let (mut held_out, mut train) = (Vec::new(), Vec::new());
        for (i, sample) in samples.into_iter().enumerate() {
            if i.is_multiple_of(5) {
                held_out.push(sample)
            } else {
                train.push(sample)
            }
        }
        let train_bytes: usize = train.iter().map(Vec::len).sum();
        let dict = match zstd::dict::from_samples(&train, (train_bytes / 10).clamp(4096, MAX_DICT_BYTES)) {
            Ok(dict) => dict,
            Err(e) => {
                report.reason = Some(format!("zstd could not train on these bodies: {e}"));
                return Ok(report);
            }
        };
        report.dict_bytes = dict.len() as u64;
        let after = before.with_dict(&dict);
        for body in &held_out {
            report.held_out_bytes_before += before_size(&after, body) as u64;
            report.held_out_bytes_after += after.encode(body).len() as u64;
        }
        if report.held_out_bytes_after as f64 > report.held_out_bytes_before as f64 * TRAIN_KEEP_RATIO {
            report.reason = Some("the dictionary saves less than a tenth on held-out bodies".into());
            return Ok(report);
        }
        let key = dict_key(&dict);
        let (name, count) = (collection.to_string(), report.samples);
        self.write(move |tx| {
            tx.conn.execute(
                "INSERT INTO cairn_dicts (key, collection, dict, samples, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (key) DO NOTHING",
                params![&key[..], name, dict, count as i64, tx.now.0],
            )?;
            tx.cache.get::<Policies>().0.remove(&name);
            Ok(())
        })?;
        report.kept = true;
        Ok(report)
    }

    /// Stores every change-log body in the smallest form the current policy allows: bodies
    /// written before compression existed, before a dictionary was trained, or under other
    /// settings. With [`CompactOptions::train`], trains dictionaries first. Works in batches,
    /// each its own write transaction, so other writers wait for one batch at most;
    /// `progress(done, total)` after each. What is freed is reused by SQLite; the file shrinks
    /// only with `VACUUM`.
    pub fn compact(&self, options: &CompactOptions, progress: &mut dyn FnMut(u64, u64)) -> Result<CompactReport> {
        let mut report = CompactReport::default();
        let conn = self.reader()?;
        for name in &options.collections {
            crate::data::collection::load(&conn, name)?;
        }
        let names: Vec<String> = if options.collections.is_empty() {
            crate::data::collection::load_all(&conn)?.into_iter().map(|c| c.schema.name).collect()
        } else {
            options.collections.clone()
        };
        let only = Arc::new(options.collections.clone());
        let total: i64 = conn.query_row(
            "SELECT count(*) FROM cairn_changes WHERE after IS NOT NULL
             AND (?1 = '[]' OR collection IN (SELECT value FROM json_each(?1)))",
            [serde_json::to_string(&*only).unwrap_or_default()],
            |r| r.get(0),
        )?;
        drop(conn);
        if options.train {
            for name in &names {
                report.trained.push(self.train_dictionary(name)?);
            }
        }
        report.bodies = total as u64;
        let (mut after_seq, mut done) = (0i64, 0u64);
        loop {
            let batch = self.freeing(|| {
                let only = only.clone();
                self.write(move |tx| {
                    let rows: Vec<(i64, String, Vec<u8>)> = tx
                        .conn
                        .prepare_cached(
                            "SELECT seq, collection, after FROM cairn_changes WHERE seq > ?1 AND after IS NOT NULL
                         ORDER BY seq LIMIT ?2",
                        )?
                        .query_map(params![after_seq, COMPACT_BATCH], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect::<rusqlite::Result<_>>()?;
                    let mut batch = Batch { last: rows.last().map(|r| r.0), ..Batch::default() };
                    for (seq, collection, stored) in &rows {
                        if !only.is_empty() && !only.contains(collection) {
                            continue;
                        }
                        batch.rows += 1;
                        let policy = tx.policy(collection)?;
                        if !policy.may_improve(stored) {
                            continue;
                        }
                        let body = body_bytes(tx.conn, stored).map_err(|e| Error::Corruption {
                            location: format!("change log entry {seq}"),
                            detail: e.to_string(),
                        })?;
                        let packed = policy.encode(&body);
                        if packed.len() < stored.len() {
                            tx.conn
                                .prepare_cached("UPDATE cairn_changes SET after = ?2 WHERE seq = ?1")?
                                .execute(params![seq, &*packed])?;
                            batch.compressed += 1;
                            batch.before += stored.len() as u64;
                            batch.after += packed.len() as u64;
                        }
                    }
                    Ok(batch)
                })
            })?;
            let Some(last) = batch.last else { break };
            if last <= after_seq {
                return Err(Error::Corruption { location: "change log".into(), detail: "seqs out of order".into() });
            }
            after_seq = last;
            done += batch.rows;
            report.compressed += batch.compressed;
            report.bytes_before += batch.before;
            report.bytes_after += batch.after;
            progress(done, report.bodies);
        }
        Ok(report)
    }
}

/// One batch of `compact`.
#[derive(Default)]
struct Batch {
    last: Option<i64>,
    rows: u64,
    compressed: u64,
    before: u64,
    after: u64,
}

/// A body's stored size under `policy` without its dictionary.
fn before_size(policy: &Policy, body: &[u8]) -> usize {
    policy.without_dict().encode(body).len()
}
