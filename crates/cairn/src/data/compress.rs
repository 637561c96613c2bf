//! Record compression (CORE-10): the form a canonical body takes on disk, trained
//! per-collection dictionaries, and [`Store::compact`].
//!
//! A stored body is one of three forms, told apart by its first byte:
//! - `{`: the canonical JSON as it is;
//! - `0x28` (a zstd frame's magic): zstd without a dictionary, for bodies of at least
//!   `records.compress_min_bytes` (default 4 KiB) when that saves an eighth;
//! - `0x01`, an 8-byte dictionary key, then a zstd frame made with that dictionary, for bodies
//!   of at least `records.dict_min_bytes` (default 128 bytes) in a collection that has a
//!   trained dictionary, again only when that saves an eighth. Small bodies of one collection
//!   share most of their keys and phrasing, which plain zstd cannot exploit body by body.
//!
//! Checksums are over the canonical body, so `compact` can change a body's form without
//! touching its checksum, its change-log entry hash or anything that refers to it.
//!
//! Dictionaries live in `cairn_dicts` and are never removed: any body in the change log may
//! need one. A dictionary's key is the first 8 bytes of its SHA-256, so the process-wide cache
//! of decoders below is right for every store a process opens, and a damaged dictionary row
//! is detected when it is loaded. A collection's newest dictionary is the one new writes use.
//! Alternative considered: zstd's own 32-bit dictionary id in the frame header; it would have
//! to be allocated per store, and a cache shared by several stores could then confuse two.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, LazyLock, RwLock};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use crate::engine::hash::sha256;
use crate::engine::store::Store;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// The first bytes of a zstd frame; a stored JSON body never starts with them (`(`).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The first byte of a body compressed with a dictionary.
const DICT_TAG: u8 = 0x01;
const KEY_LEN: usize = 8;
/// zstd's level 3 (its default): most of the ratio at a fraction of the higher levels' cost.
const LEVEL: i32 = 3;

/// A dictionary's key: the first 8 bytes of its SHA-256.
type DictKey = [u8; KEY_LEN];

fn dict_key(dict: &[u8]) -> DictKey {
    let mut key = [0; KEY_LEN];
    key.copy_from_slice(&sha256(dict)[..KEY_LEN]);
    key
}

/// Decoders of every dictionary this process has met, by key. Dictionaries are at most
/// [`MAX_DICT_BYTES`] and trained by hand, so the cache stays small.
static DECODERS: LazyLock<RwLock<HashMap<DictKey, Arc<DecoderDictionary<'static>>>>> = LazyLock::new(Default::default);

/// The form a stored body has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Plain,
    Zstd,
    Dict(DictKey),
}

fn form_of(stored: &[u8]) -> Form {
    if stored.starts_with(&ZSTD_MAGIC) {
        Form::Zstd
    } else if stored.first() == Some(&DICT_TAG) && stored.len() > KEY_LEN {
        let mut key = [0; KEY_LEN];
        key.copy_from_slice(&stored[1..=KEY_LEN]);
        Form::Dict(key)
    } else {
        Form::Plain
    }
}

/// A stored body as canonical JSON bytes. `load` fetches a dictionary's bytes by key when this
/// process has not decoded with it before.
fn decode<'a>(stored: &'a [u8], load: &mut dyn FnMut(&DictKey) -> Result<Vec<u8>>) -> Result<Cow<'a, [u8]>> {
    let undecodable = |e: std::io::Error| Error::Corruption {
        location: "a compressed body".into(),
        detail: format!("it cannot be decoded: {e}"),
    };
    match form_of(stored) {
        Form::Plain => Ok(Cow::Borrowed(stored)),
        Form::Zstd => zstd::stream::decode_all(stored).map(Cow::Owned).map_err(undecodable),
        Form::Dict(key) => {
            let cached = DECODERS.read().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
            let dict = match cached {
                Some(dict) => dict,
                None => {
                    let bytes = load(&key)?;
                    let dict = Arc::new(DecoderDictionary::copy(&bytes));
                    DECODERS.write().unwrap_or_else(|p| p.into_inner()).insert(key, dict.clone());
                    dict
                }
            };
            let mut out = Vec::new();
            zstd::stream::read::Decoder::with_prepared_dictionary(&stored[1 + KEY_LEN..], &dict)
                .and_then(|mut d| d.read_to_end(&mut out))
                .map_err(undecodable)?;
            Ok(Cow::Owned(out))
        }
    }
}

/// Reads a dictionary by key and checks it against the key, which is its hash.
fn load_dict(conn: &Connection, key: &DictKey) -> Result<Vec<u8>> {
    let name = crate::engine::hash::hex(key);
    let bytes: Option<Vec<u8>> = conn
        .prepare_cached("SELECT dict FROM cairn_dicts WHERE key = ?1")?
        .query_row([&key[..]], |r| r.get(0))
        .optional()?;
    let corrupt =
        |detail: &str| Error::Corruption { location: format!("compression dictionary {name}"), detail: detail.into() };
    let bytes = bytes.ok_or_else(|| corrupt("a body needs it but the store does not have it"))?;
    if dict_key(&bytes) != *key {
        return Err(corrupt("it does not match its SHA-256 key"));
    }
    Ok(bytes)
}

/// A stored body as canonical JSON bytes, reading dictionaries through `conn`.
pub(crate) fn body_bytes<'a>(conn: &Connection, stored: &'a [u8]) -> Result<Cow<'a, [u8]>> {
    decode(stored, &mut |key| load_dict(conn, key))
}

/// The `cairn_body(stored)` SQL function: a stored body as JSON text. A function cannot query
/// its own connection, so a dictionary this process has not met yet is read through a second,
/// read-only connection opened on first need. Every dictionary commits before any body that
/// uses it, so that connection always finds it.
pub(crate) fn register_body_function(conn: &Connection) -> Result<()> {
    use rusqlite::functions::FunctionFlags;
    let path = conn.path().map(std::path::PathBuf::from);
    let side: std::sync::Mutex<Option<Connection>> = std::sync::Mutex::new(None);
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("cairn_body", 1, flags, move |ctx| {
        let stored = match ctx.get_raw(0) {
            rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => b,
            _ => return Ok(None),
        };
        let mut load = |key: &DictKey| -> Result<Vec<u8>> {
            let mut side = side.lock().unwrap_or_else(|p| p.into_inner());
            let conn = match &mut *side {
                Some(conn) => conn,
                None => {
                    let path = path
                        .as_ref()
                        .filter(|p| !p.as_os_str().is_empty())
                        .ok_or_else(|| Error::NotAllowed("dictionary-compressed bodies need a store on disk".into()))?;
                    side.insert(Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?)
                }
            };
            load_dict(conn, key)
        };
        decode(stored, &mut load)
            .map(|b| Some(String::from_utf8_lossy(&b).into_owned()))
            .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))
    })?;
    Ok(())
}

/// A trained dictionary ready for compressing.
pub(crate) struct EncoderDict {
    key: DictKey,
    dict: EncoderDictionary<'static>,
}

impl std::fmt::Debug for EncoderDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncoderDict").field("key", &crate::engine::hash::hex(&self.key)).finish()
    }
}

/// How one collection's bodies are stored; the writer caches one per collection.
#[derive(Debug)]
pub(crate) struct Policy {
    min_bytes: usize,
    dict_min_bytes: usize,
    dict: Option<EncoderDict>,
}

impl Policy {
    /// Reads the settings and the collection's newest dictionary.
    fn load(conn: &Connection, collection: &str) -> Result<Policy> {
        let size = |key: &str, default: usize| -> Result<usize> {
            Ok(crate::data::settings::value(conn, key)?.as_u64().map_or(default, |n| n as usize))
        };
        let dict: Option<Vec<u8>> = conn
            .prepare_cached("SELECT dict FROM cairn_dicts WHERE collection = ?1 ORDER BY id DESC LIMIT 1")?
            .query_row([collection], |r| r.get(0))
            .optional()?;
        Ok(Policy {
            min_bytes: size(crate::data::builtin_settings::RECORDS_COMPRESS_MIN_BYTES, 4096)?,
            dict_min_bytes: size(crate::data::builtin_settings::RECORDS_DICT_MIN_BYTES, 128)?,
            dict: dict.map(|d| EncoderDict { key: dict_key(&d), dict: EncoderDictionary::copy(&d, LEVEL) }),
        })
    }

    /// A canonical body as it is to be stored: in the smallest form the policy allows that
    /// saves at least an eighth, else as it is.
    pub(crate) fn encode<'a>(&self, body: &'a [u8]) -> Cow<'a, [u8]> {
        let worth = |packed: usize| packed + body.len() / 8 <= body.len();
        if let Some(d) = self.dict.as_ref().filter(|_| body.len() >= self.dict_min_bytes) {
            let packed = zstd::bulk::Compressor::with_prepared_dictionary(&d.dict).and_then(|mut c| c.compress(body));
            if let Some(packed) = packed.ok().filter(|p| worth(p.len() + 1 + KEY_LEN)) {
                let mut out = Vec::with_capacity(1 + KEY_LEN + packed.len());
                out.push(DICT_TAG);
                out.extend_from_slice(&d.key);
                out.extend_from_slice(&packed);
                return Cow::Owned(out);
            }
        }
        if body.len() >= self.min_bytes {
            if let Some(packed) = zstd::bulk::compress(body, LEVEL).ok().filter(|p| worth(p.len())) {
                return Cow::Owned(packed);
            }
        }
        Cow::Borrowed(body)
    }

    /// True when re-encoding a body stored as `stored` might change its form: it does not use
    /// the collection's current dictionary, and is either plain but large enough for some
    /// compression, or compressed without the current dictionary while one exists.
    fn may_improve(&self, stored: &[u8]) -> bool {
        let current = self.dict.as_ref().map(|d| d.key);
        match form_of(stored) {
            Form::Plain => stored.len() >= self.min_bytes || (current.is_some() && stored.len() >= self.dict_min_bytes),
            Form::Zstd => current.is_some(),
            Form::Dict(key) => current != Some(key),
        }
    }
}

impl Tx<'_> {
    /// The compression policy of a collection (`""` for settings and schemas), cached by the
    /// writer until a setting or dictionary changes.
    pub(crate) fn policy(&mut self, collection: &str) -> Result<Arc<Policy>> {
        if let Some(policy) = self.state.policies.get(collection) {
            return Ok(policy.clone());
        }
        let policy = Arc::new(Policy::load(self.conn, collection)?);
        self.state.policies.insert(collection.to_string(), policy.clone());
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
        let before = Policy::load(&conn, collection)?;
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
        let after = Policy {
            dict: Some(EncoderDict { key: dict_key(&dict), dict: EncoderDictionary::copy(&dict, LEVEL) }),
            ..before
        };
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
            tx.state.policies.remove(&name);
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
    let plain = Policy { min_bytes: policy.min_bytes, dict_min_bytes: policy.dict_min_bytes, dict: None };
    plain.encode(body).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min_bytes: usize) -> Policy {
        Policy { min_bytes, dict_min_bytes: 64, dict: None }
    }

    #[test]
    fn forms_round_trip_and_small_bodies_stay_plain() {
        let small = br#"{"a":1}"#;
        assert!(matches!(policy(4096).encode(small), Cow::Borrowed(_)));
        let big = format!(r#"{{"text":"{}"}}"#, "all work and no play ".repeat(400)).into_bytes();
        let packed = policy(4096).encode(&big).into_owned();
        assert_eq!(form_of(&packed), Form::Zstd);
        let mut no_dicts = |_: &DictKey| -> Result<Vec<u8>> { panic!("no dictionary needed") };
        assert_eq!(decode(&packed, &mut no_dicts).expect("decode"), &big[..]);
        assert_eq!(form_of(&big), Form::Plain);
    }

    #[test]
    fn dictionary_bodies_decode_through_the_loader_and_a_bad_dictionary_is_corruption() {
        let samples: Vec<Vec<u8>> = (0..200)
            .map(|i| {
                format!(
                    r#"{{"kind":"note","owner":"user-{}","status":"open","title":"Call client number {i}"}}"#,
                    i % 7
                )
                .into_bytes()
            })
            .collect();
        let dict = zstd::dict::from_samples(&samples, 4096).expect("train");
        let policy = Policy {
            min_bytes: 4096,
            dict_min_bytes: 32,
            dict: Some(EncoderDict { key: dict_key(&dict), dict: EncoderDictionary::copy(&dict, LEVEL) }),
        };
        let body = br#"{"kind":"note","owner":"user-3","status":"open","title":"Call client number 4711"}"#;
        let packed = policy.encode(body).into_owned();
        assert_eq!(form_of(&packed), Form::Dict(dict_key(&dict)));
        assert!(packed.len() < body.len() / 2, "{} vs {}", packed.len(), body.len());
        let mut loads = 0;
        let decoded = decode(&packed, &mut |key| {
            loads += 1;
            assert_eq!(*key, dict_key(&dict));
            Ok(dict.clone())
        })
        .expect("decode");
        assert_eq!(&*decoded, &body[..]);
        assert!(loads <= 1);

        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(include_str!("../engine/format/0003_dicts.sql")).expect("table");
        let mut damaged = dict.clone();
        damaged[100] ^= 1;
        conn.execute(
            "INSERT INTO cairn_dicts (key, collection, dict, samples, created_at) VALUES (?1, 'n', ?2, 1, 0)",
            params![&dict_key(&dict)[..], damaged],
        )
        .expect("insert");
        let err = load_dict(&conn, &dict_key(&dict)).expect_err("damaged");
        assert!(err.is_corruption(), "{err}");
        let err = load_dict(&conn, &[9; KEY_LEN]).expect_err("missing");
        assert!(err.to_string().contains("does not have it"), "{err}");
    }
}
