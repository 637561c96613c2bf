//! The form a canonical record body takes on disk (CORE-10).
//!
//! A stored body is one of three forms, told apart by its first byte:
//! - `{`: the canonical JSON as it is;
//! - `0x28` (a zstd frame's magic): zstd without a dictionary;
//! - `0x01`, an 8-byte dictionary key, then a zstd frame made with that dictionary.
//!
//! When each form is used (the settings, the collection's trained dictionary) is decided by
//! the data layer (`data/compress.rs`); this file encodes and decodes. Checksums are over the
//! canonical body, so a body's form can change without touching anything that refers to it.
//!
//! Dictionaries live in `cairn_dicts` and are never removed: any body in the change log may
//! need one. A dictionary's key is the first 8 bytes of its SHA-256, so the process-wide cache
//! of decoders below is right for every store a process opens, and a damaged dictionary row
//! is detected when it is loaded.
//! Alternative considered: zstd's own 32-bit dictionary id in the frame header; it would have
//! to be allocated per store, and a cache shared by several stores could then confuse two.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, LazyLock, RwLock};

use rusqlite::{Connection, OptionalExtension};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use crate::engine::hash::sha256;
use crate::error::{Error, Result};

/// The first bytes of a zstd frame; a stored JSON body never starts with them (`(`).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The first byte of a body compressed with a dictionary.
const DICT_TAG: u8 = 0x01;
pub(crate) const KEY_LEN: usize = 8;
/// zstd's level 3 (its default): most of the ratio at a fraction of the higher levels' cost.
const LEVEL: i32 = 3;

/// A dictionary's key: the first 8 bytes of its SHA-256.
pub(crate) type DictKey = [u8; KEY_LEN];

pub(crate) fn dict_key(dict: &[u8]) -> DictKey {
    let mut key = [0; KEY_LEN];
    key.copy_from_slice(&sha256(dict)[..KEY_LEN]);
    key
}

/// Decoders of every dictionary this process has met, by key. Dictionaries are at most
/// `MAX_DICT_BYTES` and trained by hand, so the cache stays small.
static DECODERS: LazyLock<RwLock<HashMap<DictKey, Arc<DecoderDictionary<'static>>>>> = LazyLock::new(Default::default);

/// The form a stored body has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    Plain,
    Zstd,
    Dict(DictKey),
}

pub(crate) fn form_of(stored: &[u8]) -> Form {
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
                        .ok_or_else(|| Error::Internal("dictionary-compressed bodies need a store on disk".into()))?;
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
    /// A policy: bodies of at least `min_bytes` are compressed, and with `dict` (a trained
    /// dictionary's bytes) those of at least `dict_min_bytes` use it — each only when that
    /// saves an eighth.
    pub(crate) fn new(min_bytes: usize, dict_min_bytes: usize, dict: Option<&[u8]>) -> Policy {
        Policy {
            min_bytes,
            dict_min_bytes,
            dict: dict.map(|d| EncoderDict { key: dict_key(d), dict: EncoderDictionary::copy(d, LEVEL) }),
        }
    }

    /// The same policy with `dict` as its dictionary.
    pub(crate) fn with_dict(&self, dict: &[u8]) -> Policy {
        Policy::new(self.min_bytes, self.dict_min_bytes, Some(dict))
    }

    /// The same policy without a dictionary.
    pub(crate) fn without_dict(&self) -> Policy {
        Policy { min_bytes: self.min_bytes, dict_min_bytes: self.dict_min_bytes, dict: None }
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
    pub(crate) fn may_improve(&self, stored: &[u8]) -> bool {
        let current = self.dict.as_ref().map(|d| d.key);
        match form_of(stored) {
            Form::Plain => stored.len() >= self.min_bytes || (current.is_some() && stored.len() >= self.dict_min_bytes),
            Form::Zstd => current.is_some(),
            Form::Dict(key) => current != Some(key),
        }
    }
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
        conn.execute_batch(include_str!("format/0003_dicts.sql")).expect("table");
        let mut damaged = dict.clone();
        damaged[100] ^= 1;
        conn.execute(
            "INSERT INTO cairn_dicts (key, collection, dict, samples, created_at) VALUES (?1, 'n', ?2, 1, 0)",
            rusqlite::params![&dict_key(&dict)[..], damaged],
        )
        .expect("insert");
        let err = load_dict(&conn, &dict_key(&dict)).expect_err("damaged");
        assert!(err.is_corruption(), "{err}");
        let err = load_dict(&conn, &[9; KEY_LEN]).expect_err("missing");
        assert!(err.to_string().contains("does not have it"), "{err}");
    }
}
