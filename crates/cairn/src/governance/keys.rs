//! Field encryption (GOV-1).
//!
//! Fields flagged `encrypted` are sealed with XChaCha20-Poly1305 under a random 256-bit data
//! key before they reach the change log, so neither `store.db`, its WAL, backups nor exports
//! hold their plaintext. A sealed value is a JSON string
//! `cairn-enc:1:k<generation>:<base64url(nonce ‖ ciphertext ‖ tag)>`; the plaintext is the
//! canonical JSON of the value and the header (`cairn-enc:1:k<generation>`) is the associated
//! data, so a value cannot be passed off as sealed under another key. Every value gets a fresh
//! 192-bit random nonce, so equal values do not look equal.
//!
//! Data keys are stored only wrapped (the same cipher) under a key-encryption key derived from
//! a passphrase with Argon2id, or from a key file (SHA-256 of a domain tag, the salt and the
//! file's bytes). A wrong secret fails the wrapping's authentication tag, so it is told apart
//! from damage without any separate check value.
//!
//! A store handle is locked until [`Store::unlock`] (or [`Store::key_init`]). Locked, records
//! still read: encrypted fields are left out of their body and named in `sealed`, and
//! [`crate::Record::field`] gives [`Error::KeyLocked`] for them; writes that would have to
//! seal or read a sealed value fail with that error, others go through (a patch of other
//! fields keeps the sealed values as they are).
//!
//! Rotation (`Store::rotate_key`) either re-wraps the data keys under a new secret, or also
//! seals every value again under a new data key — in the record rows and in the whole change
//! log, rewriting each entry's checksum — and retires the old key, in one transaction. Readers
//! that started before keep working: the handle keeps every key it has opened until it is
//! locked, and another process finds a new key by reading the keyring again.
//!
//! Alternative considered: encrypting the whole database (SQLCipher). It would hide
//! everything, but needs the key for every read and a non-standard SQLite build; the seeds
//! ask for sensitive fields (contact details, rates) to be protected while the rest of the
//! data stays usable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, AeadCore, OsRng, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::data::changes::Body;
use crate::data::collection::Collection;
use crate::engine::canonical::canonical_json;
use crate::data::schema::CollectionSchema;
use crate::engine::store::Store;
use crate::engine::timestamp::Timestamp;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// How every sealed value starts.
const PREFIX: &str = "cairn-enc:1:";
const NONCE_LEN: usize = 24;
/// Argon2id cost for new passphrases: OWASP's recommended minimum (19 MiB, 2 passes, 1 lane).
const ARGON2_M_COST: u32 = 19 * 1024;
const ARGON2_T_COST: u32 = 2;
const ARGON2_P_COST: u32 = 1;
/// Costs above these in a keyring are refused rather than run: a damaged or forged keyring
/// must not make an unlock allocate gigabytes or run for hours.
const MAX_M_COST: u32 = 1024 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 16;
const MIN_PASSPHRASE_CHARS: usize = 8;
const MIN_KEY_FILE_BYTES: usize = 32;
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// Change-log entries re-sealed per statement page during rotation.
const PAGE: i64 = 500;

type Key = Zeroizing<[u8; 32]>;

/// The secret that opens a store's data keys.
pub enum Secret {
    /// A passphrase of at least 8 characters, stretched with Argon2id.
    Passphrase(Zeroizing<String>),
    /// A file of at least 32 bytes (leading and trailing whitespace ignored), e.g. one made by
    /// [`generate_key_file`].
    KeyFile(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Passphrase(_) => f.write_str("Secret::Passphrase(..)"),
            Secret::KeyFile(path) => f.debug_tuple("Secret::KeyFile").field(path).finish(),
        }
    }
}

impl Secret {
    /// A passphrase.
    pub fn passphrase(text: impl Into<String>) -> Self {
        Secret::Passphrase(Zeroizing::new(text.into()))
    }

    /// A key file.
    pub fn key_file(path: impl Into<PathBuf>) -> Self {
        Secret::KeyFile(path.into())
    }

    fn method(&self) -> &'static str {
        match self {
            Secret::Passphrase(_) => "passphrase",
            Secret::KeyFile(_) => "key_file",
        }
    }
}

/// Writes a new key file: 32 random bytes as hex, readable by the owner only. Refuses a path
/// that exists.
pub fn generate_key_file(path: &Path) -> Result<()> {
    let mut key: Key = Zeroizing::new([0; 32]);
    OsRng.fill_bytes(&mut *key);
    let text = Zeroizing::new(format!("{}\n", crate::engine::hash::hex(&*key)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| Error::io("create key file", path, e))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| Error::io("write key file", path, e))?;
    file.sync_all().map_err(|e| Error::io("sync key file", path, e))
}

/// What [`Store::key_status`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyStatus {
    /// The store has a keyring (`cairn key init` ran).
    pub initialized: bool,
    /// This handle holds the active data key.
    pub unlocked: bool,
    /// `passphrase` or `key_file`.
    pub method: Option<String>,
    /// How the key-encryption key is derived, e.g. `argon2id m=19456 KiB t=2 p=1`.
    pub derivation: Option<String>,
    /// The data keys, oldest first.
    pub keys: Vec<KeyInfo>,
    /// Every encrypted field, as `collection.field`.
    pub encrypted_fields: Vec<String>,
}

/// One data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct KeyInfo {
    /// `k1`, `k2`… as named in sealed values.
    pub id: String,
    pub created_at: Timestamp,
    /// New values are sealed with it.
    pub active: bool,
}

/// What [`Store::rotate_key`] should do.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Rotation {
    /// Wrap the data keys under this secret from now on.
    pub new_secret: Option<Secret>,
    /// Make a new data key, seal every value again with it and retire the old ones.
    pub reencrypt: bool,
}

impl Rotation {
    /// Re-wrap under `secret`.
    pub fn rewrap(secret: Secret) -> Self {
        Rotation { new_secret: Some(secret), reencrypt: false }
    }

    /// A new data key (and, with `secret`, a new secret too).
    pub fn reencrypt(secret: Option<Secret>) -> Self {
        Rotation { new_secret: secret, reencrypt: true }
    }
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RotationReport {
    /// The active data key afterwards.
    pub active: String,
    /// Data keys removed (every value they sealed is sealed under `active` now).
    pub retired: Vec<String>,
    /// Values sealed again, over the record rows and the change log.
    pub values: u64,
    /// Change-log entries rewritten.
    pub entries: u64,
    /// The secret changed.
    pub rewrapped: bool,
}

/// True when `text` has the form of a sealed value.
pub(crate) fn is_sealed(text: &str) -> bool {
    parse(text).is_some()
}

/// The key generation a sealed value names.
pub(crate) fn generation_of(text: &str) -> Option<u32> {
    parse(text).map(|(g, _)| g)
}

/// The key generation and the encoded bytes of a sealed value.
fn parse(text: &str) -> Option<(u32, &str)> {
    let rest = text.strip_prefix(PREFIX)?.strip_prefix('k')?;
    let (generation, data) = rest.split_once(':')?;
    if generation.is_empty() || generation.len() > 9 || !generation.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((generation.parse().ok()?, data))
}

fn key_id(generation: u32) -> String {
    format!("k{generation}")
}

fn header(generation: u32) -> String {
    format!("{PREFIX}k{generation}")
}

fn random_key() -> Key {
    let mut key: Key = Zeroizing::new([0; 32]);
    OsRng.fill_bytes(&mut *key);
    key
}

fn encrypt(key: &Key, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.as_slice().into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let sealed = cipher
        .encrypt(&nonce, Payload { msg: plaintext, aad })
        .expect("XChaCha20-Poly1305 encrypts any message shorter than 256 GiB");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    out
}

/// `None` when the bytes are too short or fail authentication.
fn decrypt(key: &Key, aad: &[u8], data: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if data.len() < NONCE_LEN + 16 {
        return None;
    }
    let (nonce, sealed) = data.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.as_slice().into());
    cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad }).ok().map(Zeroizing::new)
}

fn seal_value(generation: u32, key: &Key, value: &Value) -> String {
    let header = header(generation);
    let plaintext = Zeroizing::new(canonical_json(value));
    let data = encrypt(key, header.as_bytes(), &plaintext);
    format!("{header}:{}", URL_SAFE_NO_PAD.encode(data))
}

/// Outcome of opening one sealed value.
enum Opened {
    Value(Value),
    /// Its key is not held.
    NoKey,
}

fn open_value(keys: &HashMap<u32, Key>, text: &str) -> std::result::Result<Opened, String> {
    let Some((generation, data)) = parse(text) else {
        return Err("the value is not in sealed form".into());
    };
    let Some(key) = keys.get(&generation) else {
        return Ok(Opened::NoKey);
    };
    let data = URL_SAFE_NO_PAD.decode(data).map_err(|e| format!("the sealed value is not base64: {e}"))?;
    let plaintext = decrypt(key, header(generation).as_bytes(), &data)
        .ok_or_else(|| format!("the value does not decrypt under key {}: it is damaged", key_id(generation)))?;
    serde_json::from_slice(&plaintext).map(Opened::Value).map_err(|e| format!("the decrypted value is not JSON: {e}"))
}

/// The wrapping parameters of a store's keyring.
#[derive(Debug, Clone)]
struct Wrapping {
    method: String,
    salt: Vec<u8>,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    created_at: Timestamp,
}

impl Wrapping {
    fn new(secret: &Secret, created_at: Timestamp) -> Self {
        let mut salt = vec![0; 16];
        OsRng.fill_bytes(&mut salt);
        Wrapping {
            method: secret.method().to_string(),
            salt,
            m_cost: ARGON2_M_COST,
            t_cost: ARGON2_T_COST,
            p_cost: ARGON2_P_COST,
            created_at,
        }
    }

    fn describe(&self) -> String {
        match self.method.as_str() {
            "passphrase" => format!("argon2id m={} KiB t={} p={}", self.m_cost, self.t_cost, self.p_cost),
            _ => "sha-256 of the key file".to_string(),
        }
    }

    /// The key-encryption key for `secret`.
    fn derive(&self, secret: &Secret) -> Result<Key> {
        if secret.method() != self.method {
            let wanted = if self.method == "passphrase" { "a passphrase" } else { "a key file" };
            return Err(Error::WrongKey { reason: format!("this store's key is opened with {wanted}") });
        }
        let mut kek: Key = Zeroizing::new([0; 32]);
        match secret {
            Secret::Passphrase(text) => {
                check_passphrase(text)?;
                if self.m_cost > MAX_M_COST || self.t_cost > MAX_T_COST || self.p_cost > MAX_P_COST {
                    return Err(Error::Corruption {
                        location: "the keyring".into(),
                        detail: format!("its Argon2id costs ({}) are out of range", self.describe()),
                    });
                }
                let params = argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(32)).map_err(|e| {
                    Error::Corruption { location: "the keyring".into(), detail: format!("Argon2id parameters: {e}") }
                })?;
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(text.as_bytes(), &self.salt, &mut *kek)
                    .map_err(|e| Error::Corruption {
                        location: "the keyring".into(),
                        detail: format!("Argon2id: {e}"),
                    })?;
            }
            Secret::KeyFile(path) => {
                let bytes = read_key_file(path)?;
                let mut h = Sha256::new();
                h.update(b"cairn key file v1\0");
                h.update(&self.salt);
                h.update(bytes.trim_ascii());
                kek.copy_from_slice(&h.finalize());
            }
        }
        Ok(kek)
    }
}

fn check_passphrase(text: &str) -> Result<()> {
    if text.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(Error::invalid_input(
            "the passphrase",
            format!("it must have at least {MIN_PASSPHRASE_CHARS} characters"),
        ));
    }
    Ok(())
}

fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("read key file", path, e))?;
    if !meta.is_file() || meta.len() > MAX_KEY_FILE_BYTES {
        return Err(Error::invalid_input(
            path.display().to_string(),
            format!("a key file is a regular file of at most {MAX_KEY_FILE_BYTES} bytes"),
        ));
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| Error::io("read key file", path, e))?);
    if bytes.trim_ascii().len() < MIN_KEY_FILE_BYTES {
        return Err(Error::invalid_input(
            path.display().to_string(),
            format!("a key file holds at least {MIN_KEY_FILE_BYTES} bytes (make one with `cairn key generate-file`)"),
        ));
    }
    Ok(bytes)
}

fn wrap(kek: &Key, generation: u32, key: &Key) -> Vec<u8> {
    encrypt(kek, format!("cairn-key:{generation}").as_bytes(), key.as_slice())
}

fn unwrap(kek: &Key, generation: u32, wrapped: &[u8]) -> Option<Key> {
    let bytes = decrypt(kek, format!("cairn-key:{generation}").as_bytes(), wrapped)?;
    let mut key: Key = Zeroizing::new([0; 32]);
    if bytes.len() != 32 {
        return None;
    }
    key.copy_from_slice(&bytes);
    Some(key)
}

fn load_wrapping(conn: &Connection) -> Result<Option<Wrapping>> {
    Ok(conn
        .prepare_cached("SELECT method, salt, m_cost, t_cost, p_cost, created_at FROM cairn_keyring WHERE id = 1")?
        .query_row([], |r| {
            Ok(Wrapping {
                method: r.get(0)?,
                salt: r.get(1)?,
                m_cost: r.get(2)?,
                t_cost: r.get(3)?,
                p_cost: r.get(4)?,
                created_at: Timestamp(r.get(5)?),
            })
        })
        .optional()?)
}

struct StoredKey {
    generation: u32,
    wrapped: Vec<u8>,
    created_at: Timestamp,
    active: bool,
}

fn load_keys(conn: &Connection) -> Result<Vec<StoredKey>> {
    let mut stmt =
        conn.prepare_cached("SELECT generation, wrapped, created_at, active FROM cairn_keys ORDER BY generation")?;
    let rows = stmt.query_map([], |r| {
        Ok(StoredKey { generation: r.get(0)?, wrapped: r.get(1)?, created_at: Timestamp(r.get(2)?), active: r.get(3)? })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The keys a store handle holds in memory.
#[derive(Default)]
pub(crate) struct Keyring {
    state: RwLock<Held>,
}

#[derive(Default)]
struct Held {
    kek: Option<Key>,
    keys: HashMap<u32, Key>,
    active: Option<u32>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.read();
        f.debug_struct("Keyring").field("keys", &held.keys.len()).field("active", &held.active).finish()
    }
}

impl Keyring {
    fn read(&self) -> RwLockReadGuard<'_, Held> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Held> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn is_unlocked(&self) -> bool {
        self.read().active.is_some()
    }

    /// Seals the encrypted fields of a plaintext body.
    pub(crate) fn seal(&self, schema: &CollectionSchema, id: &str, body: &mut Map<String, Value>) -> Result<()> {
        let held = self.read();
        for f in schema.fields.iter().filter(|f| f.encrypted) {
            let Some(value) = body.get_mut(&f.name) else { continue };
            let Some((generation, key)) = held.active.and_then(|g| held.keys.get(&g).map(|k| (g, k))) else {
                return Err(locked(&schema.name, id, &f.name, "cannot be written"));
            };
            *value = Value::String(seal_value(generation, key, value));
        }
        Ok(())
    }

    /// Seals one value (a secret setting's) under the active key.
    pub(crate) fn seal_json(&self, target: &str, value: &Value) -> Result<String> {
        let held = self.read();
        let Some((generation, key)) = held.active.and_then(|g| held.keys.get(&g).map(|k| (g, k))) else {
            return Err(Error::KeyLocked {
                target: target.to_string(),
                reason: "secrets are stored sealed with the store's key, which is locked or not created yet".into(),
            });
        };
        Ok(seal_value(generation, key, value))
    }

    /// Opens one sealed value; [`Error::KeyLocked`] when its key is not held.
    pub(crate) fn open_json(&self, conn: &Connection, target: &str, text: &str) -> Result<Value> {
        let corrupt = |detail: String| Error::Corruption { location: target.to_string(), detail };
        let mut opened = open_value(&self.read().keys, text).map_err(corrupt)?;
        if matches!(opened, Opened::NoKey) && self.refresh(conn)? {
            opened = open_value(&self.read().keys, text).map_err(corrupt)?;
        }
        match opened {
            Opened::Value(value) => Ok(value),
            Opened::NoKey => {
                Err(Error::KeyLocked { target: target.to_string(), reason: "the store's key is locked".into() })
            }
        }
    }

    /// Opens the sealed fields of a stored body in place; returns the encrypted fields left
    /// out because their key is not held. With `conn`, a key this handle does not know (a
    /// rotation by another process) is looked up in the keyring first.
    pub(crate) fn open(
        &self,
        conn: Option<&Connection>,
        schema: &CollectionSchema,
        id: &str,
        body: &mut Map<String, Value>,
    ) -> Result<Vec<String>> {
        let mut sealed = Vec::new();
        for f in schema.fields.iter().filter(|f| f.encrypted) {
            let Some(Value::String(text)) = body.get(&f.name) else { continue };
            let corrupt = |detail: String| Error::Corruption {
                location: format!("field `{}` of record `{}/{id}`", f.name, schema.name),
                detail,
            };
            let mut opened = open_value(&self.read().keys, text).map_err(corrupt)?;
            if let (Opened::NoKey, Some(conn)) = (&opened, conn) {
                if self.refresh(conn)? {
                    opened = open_value(&self.read().keys, text).map_err(corrupt)?;
                }
            }
            match opened {
                Opened::Value(value) => {
                    body.insert(f.name.clone(), value);
                }
                Opened::NoKey => {
                    body.remove(&f.name);
                    sealed.push(f.name.clone());
                }
            }
        }
        Ok(sealed)
    }

    /// Opens keys added to the keyring since this handle unlocked. True when it found any.
    fn refresh(&self, conn: &Connection) -> Result<bool> {
        let mut held = self.write();
        let Some(kek) = held.kek.clone() else { return Ok(false) };
        let mut found = false;
        for stored in load_keys(conn)? {
            if held.keys.contains_key(&stored.generation) {
                continue;
            }
            if let Some(key) = unwrap(&kek, stored.generation, &stored.wrapped) {
                held.keys.insert(stored.generation, key);
                found = true;
            }
        }
        Ok(found)
    }
}

/// Opens the sealed fields of changes' bodies (each by its collection's schema as it is now;
/// a dropped collection's bodies stay as stored).
pub(crate) fn open_changes(
    keys: &Keyring,
    conn: &Connection,
    changes: &mut [crate::data::changes::Change],
) -> Result<()> {
    let mut schemas: HashMap<String, Option<CollectionSchema>> = HashMap::new();
    for change in changes.iter_mut().filter(|c| may_be_sealed(c)) {
        if !schemas.contains_key(&change.collection) {
            let schema = match crate::data::collection::load(conn, &change.collection) {
                Ok(c) => Some(c.schema).filter(|s| s.fields.iter().any(|f| f.encrypted)),
                Err(Error::UnknownCollection { .. }) => None,
                Err(e) => return Err(e),
            };
            schemas.insert(change.collection.clone(), schema);
        }
        let Some(schema) = &schemas[&change.collection] else { continue };
        for body in [&mut change.before, &mut change.after].into_iter().flatten() {
            if let Value::Object(map) = body {
                for name in keys.open(Some(conn), schema, &change.id, map)? {
                    if !change.sealed.contains(&name) {
                        change.sealed.push(name);
                    }
                }
            }
        }
    }
    Ok(())
}

/// True when a change's body has a value in sealed form (only then is its schema looked up).
pub(crate) fn may_be_sealed(change: &crate::data::changes::Change) -> bool {
    !change.id.is_empty()
        && !change.collection.is_empty()
        && [&change.before, &change.after].into_iter().flatten().any(|body| {
            body.as_object().is_some_and(|m| m.values().any(|v| v.as_str().is_some_and(|s| s.starts_with(PREFIX))))
        })
}

pub(crate) fn locked(collection: &str, id: &str, field: &str, what: &str) -> Error {
    Error::KeyLocked {
        target: format!("field `{field}` of record `{collection}/{id}`"),
        reason: format!("it is encrypted and {what} while the store's key is locked"),
    }
}

/// The error a read of a sealed field gives.
pub(crate) fn sealed_error(collection: &str, id: &str, field: &str) -> Error {
    locked(collection, id, field, "cannot be read")
}

impl Tx<'_> {
    /// Seals a plaintext body's encrypted fields (see [`Keyring::seal`]).
    pub(crate) fn seal(&self, c: &Collection, id: &str, body: &mut Map<String, Value>) -> Result<()> {
        if c.has_encrypted {
            self.keys.seal(&c.schema, id, body)?;
        }
        Ok(())
    }

    /// Opens a stored body for a caller. A field this handle cannot open is an error here:
    /// the write being prepared would otherwise drop or misread it.
    pub(crate) fn open_all(&self, c: &Collection, id: &str, body: &mut Map<String, Value>) -> Result<()> {
        if c.has_encrypted {
            if let Some(field) = self.keys.open(None, &c.schema, id, body)?.first() {
                return Err(locked(c.name(), id, field, "cannot be read"));
            }
        }
        Ok(())
    }

    /// Opens what this handle can of a stored body; returns the fields it could not.
    pub(crate) fn open_some(&self, c: &Collection, id: &str, body: &mut Map<String, Value>) -> Result<Vec<String>> {
        if !c.has_encrypted {
            return Ok(Vec::new());
        }
        self.keys.open(None, &c.schema, id, body)
    }

    /// True when this handle holds the active data key.
    pub(crate) fn keys_unlocked(&self) -> bool {
        self.keys.is_unlocked()
    }
}

impl Store {
    /// Opens the sealed fields of a record read for a caller; see [`Keyring::open`].
    pub(crate) fn open_body(
        &self,
        conn: &Connection,
        schema: &CollectionSchema,
        id: &str,
        body: &mut Map<String, Value>,
    ) -> Result<Vec<String>> {
        if !schema.fields.iter().any(|f| f.encrypted) {
            return Ok(Vec::new());
        }
        self.inner.keys.open(Some(conn), schema, id, body)
    }

    /// Creates the store's keyring: a new data key, wrapped under `secret`. The handle is
    /// unlocked afterwards. Refused when the store has a keyring already.
    pub fn key_init(&self, secret: &Secret) -> Result<KeyStatus> {
        if let Secret::Passphrase(text) = secret {
            check_passphrase(text)?;
        }
        let wrapping = Wrapping::new(secret, Timestamp::now());
        let kek = wrapping.derive(secret)?;
        let key = random_key();
        let wrapped = wrap(&kek, 1, &key);
        let detail = format!("k1, {}", wrapping.describe());
        let result = self.write_exclusive(|tx| {
            if load_wrapping(tx.conn)?.is_some() {
                return Err(Error::NotAllowed(
                    "this store has a key already; change it with `cairn key rotate`".into(),
                ));
            }
            store_wrapping(tx.conn, &wrapping, tx.now)?;
            tx.conn.execute(
                "INSERT INTO cairn_keys (generation, wrapped, created_at, active) VALUES (1, ?1, ?2, 1)",
                params![wrapped, tx.now.0],
            )?;
            tx.audit("key.init", "keyring", "ok", &detail)
        });
        if result.is_err() {
            self.audit("key.init", "keyring", &crate::governance::audit::outcome(&result), "");
        }
        result?;
        let mut held = self.inner.keys.write();
        held.kek = Some(kek);
        held.keys.insert(1, key);
        held.active = Some(1);
        drop(held);
        self.key_status()
    }

    /// Opens the store's data keys with `secret` for this handle (and its clones). A wrong
    /// secret is [`Error::WrongKey`] and, on a writable store, an audit entry.
    pub fn unlock(&self, secret: &Secret) -> Result<KeyStatus> {
        let conn = self.reader()?;
        let wrapping = load_wrapping(&conn)?.ok_or_else(no_keyring)?;
        let stored = load_keys(&conn)?;
        drop(conn);
        let opened = wrapping.derive(secret).and_then(|kek| {
            let mut keys = HashMap::new();
            let mut active = None;
            for s in &stored {
                let key = unwrap(&kek, s.generation, &s.wrapped).ok_or_else(|| Error::WrongKey {
                    reason: format!(
                        "the {} does not open key {}",
                        wrapping.method.replace('_', " "),
                        key_id(s.generation)
                    ),
                })?;
                keys.insert(s.generation, key);
                if s.active {
                    active = Some(s.generation);
                }
            }
            let active = active.ok_or_else(|| Error::Corruption {
                location: "the keyring".into(),
                detail: "no data key is marked active".into(),
            })?;
            Ok((kek, keys, active))
        });
        match opened {
            Ok((kek, keys, active)) => {
                let mut held = self.inner.keys.write();
                held.kek = Some(kek);
                held.keys.extend(keys);
                held.active = Some(active);
                drop(held);
                self.key_status()
            }
            Err(e) => {
                if matches!(e, Error::WrongKey { .. }) {
                    self.audit("key.unlock", "keyring", &format!("failed: {e}"), "");
                }
                Err(e)
            }
        }
    }

    /// Forgets the keys this handle (and its clones) hold.
    pub fn lock_keys(&self) {
        *self.inner.keys.write() = Held::default();
    }

    /// The keyring, whether this handle is unlocked, and which fields are encrypted.
    pub fn key_status(&self) -> Result<KeyStatus> {
        let conn = self.reader()?;
        let wrapping = load_wrapping(&conn)?;
        let keys = load_keys(&conn)?
            .into_iter()
            .map(|k| KeyInfo { id: key_id(k.generation), created_at: k.created_at, active: k.active })
            .collect();
        let encrypted_fields = crate::data::collection::load_all(&conn)?
            .iter()
            .flat_map(|c| {
                c.schema
                    .fields
                    .iter()
                    .filter(|f| f.encrypted)
                    .map(|f| format!("{}.{}", c.name(), f.name))
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(KeyStatus {
            initialized: wrapping.is_some(),
            unlocked: self.inner.keys.is_unlocked(),
            method: wrapping.as_ref().map(|w| w.method.clone()),
            derivation: wrapping.as_ref().map(Wrapping::describe),
            keys,
            encrypted_fields,
        })
    }

    /// Rotates the store's key; see [`Rotation`]. The handle must be unlocked. Everything
    /// happens in one transaction: a failure leaves keyring and values as they were.
    pub fn rotate_key(&self, rotation: &Rotation) -> Result<RotationReport> {
        if rotation.new_secret.is_none() && !rotation.reencrypt {
            return Err(Error::NotAllowed(
                "nothing to rotate: give a new passphrase or key file, or ask for a new data key".into(),
            ));
        }
        let (old_kek, held_keys) = {
            let held = self.inner.keys.read();
            match (&held.kek, held.active) {
                (Some(kek), Some(_)) => (kek.clone(), held.keys.clone()),
                _ => {
                    return Err(Error::KeyLocked {
                        target: "the keyring".into(),
                        reason: "rotating needs the current key; unlock the store first".into(),
                    })
                }
            }
        };
        let now = Timestamp::now();
        let new_wrapping = rotation.new_secret.as_ref().map(|s| (Wrapping::new(s, now), s));
        let new_kek = match &new_wrapping {
            Some((wrapping, secret)) => {
                if let Secret::Passphrase(text) = secret {
                    check_passphrase(text)?;
                }
                Some(wrapping.derive(secret)?)
            }
            None => None,
        };
        let kek = new_kek.clone().unwrap_or_else(|| old_kek.clone());
        // A new data key is held before the transaction commits, so that readers of this
        // handle can open the values the moment they are committed.
        let new_key = rotation.reencrypt.then(random_key);
        let result = self.write_exclusive(|tx| {
            let wrapping = load_wrapping(tx.conn)?.ok_or_else(no_keyring)?;
            let stored = load_keys(tx.conn)?;
            let mut report = RotationReport {
                active: String::new(),
                retired: Vec::new(),
                values: 0,
                entries: 0,
                rewrapped: new_wrapping.is_some(),
            };
            let mut keys = held_keys.clone();
            let mut active = stored.iter().find(|k| k.active).map(|k| k.generation);
            if let Some(key) = &new_key {
                let generation = stored.iter().map(|k| k.generation).max().unwrap_or(0) + 1;
                keys.insert(generation, key.clone());
                self.inner.keys.write().keys.insert(generation, key.clone());
                let (values, entries) = reseal_all(tx, &keys, generation, key)?;
                report.values = values;
                report.entries = entries;
                tx.conn.execute("DELETE FROM cairn_keys", [])?;
                tx.conn.execute(
                    "INSERT INTO cairn_keys (generation, wrapped, created_at, active) VALUES (?1, ?2, ?3, 1)",
                    params![generation, wrap(&kek, generation, key), tx.now.0],
                )?;
                report.retired = stored.iter().map(|k| key_id(k.generation)).collect();
                active = Some(generation);
            } else {
                for s in &stored {
                    let key = keys.get(&s.generation).ok_or_else(|| Error::KeyLocked {
                        target: format!("key {}", key_id(s.generation)),
                        reason: "it was added after this handle unlocked; unlock again".into(),
                    })?;
                    tx.conn.execute(
                        "UPDATE cairn_keys SET wrapped = ?1 WHERE generation = ?2",
                        params![wrap(&kek, s.generation, key), s.generation],
                    )?;
                }
            }
            match &new_wrapping {
                Some((w, _)) => {
                    store_wrapping(tx.conn, &Wrapping { created_at: wrapping.created_at, ..w.clone() }, tx.now)?
                }
                None => {
                    tx.conn.execute("UPDATE cairn_keyring SET changed_at = ?1 WHERE id = 1", [tx.now.0])?;
                }
            }
            report.active = key_id(active.unwrap_or(0));
            let detail = format!(
                "active {}{}{}",
                report.active,
                if report.retired.is_empty() {
                    String::new()
                } else {
                    format!(", retired {}", report.retired.join(" "))
                },
                match &new_wrapping {
                    Some((w, _)) => format!(", re-wrapped with {} ({})", w.method.replace('_', " "), w.describe()),
                    None => String::new(),
                }
            );
            tx.audit("key.rotate", "keyring", "ok", &detail)?;
            Ok((report, active))
        });
        match result {
            Ok((report, active)) => {
                let mut held = self.inner.keys.write();
                held.kek = Some(kek);
                held.active = active;
                Ok(report)
            }
            Err(e) => {
                self.audit("key.rotate", "keyring", &format!("failed: {e}"), "");
                Err(e)
            }
        }
    }
}

fn no_keyring() -> Error {
    Error::NotAllowed("this store has no key; create one with `cairn key init`".into())
}

fn store_wrapping(conn: &Connection, w: &Wrapping, now: Timestamp) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO cairn_keyring (id, method, salt, m_cost, t_cost, p_cost, created_at, changed_at)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![w.method, w.salt, w.m_cost, w.t_cost, w.p_cost, w.created_at.0, now.0],
    )?;
    Ok(())
}

/// Seals every sealed value in the change log again under `generation`, rewriting each
/// entry's body, body checksum and entry hash, and the checksum of the record rows that
/// point at it. Returns (values, entries).
fn reseal_all(tx: &mut Tx<'_>, keys: &HashMap<u32, Key>, generation: u32, key: &Key) -> Result<(u64, u64)> {
    let collections: HashMap<String, Collection> =
        crate::data::collection::load_all(tx.conn)?.into_iter().map(|c| (c.name().to_string(), c)).collect();
    let (mut values, mut entries) = (0u64, 0u64);
    let mut after_seq = 0i64;
    loop {
        let page: Vec<crate::data::changes::StoredChange> =
            crate::data::changes::stored_page(tx.conn, after_seq, PAGE)?;
        let Some(last) = page.last() else { break };
        after_seq = last.seq as i64;
        for entry in page {
            let Some(bytes) = entry.body.as_deref() else { continue };
            if !bytes.windows(PREFIX.len()).any(|w| w == PREFIX.as_bytes()) {
                continue;
            }
            let location = || format!("change-log entry {} (`{}/{}`)", entry.seq, entry.collection, entry.record_id);
            // A secret setting's value: the body is the sealed text itself.
            let secret = entry.collection.is_empty() && crate::data::settings::is_secret(tx.conn, &entry.record_id);
            if let (true, Ok(Value::String(text))) = (secret, serde_json::from_slice::<Value>(bytes)) {
                let plain = match open_value(keys, &text) {
                    Ok(Opened::Value(plain)) => plain,
                    Ok(Opened::NoKey) => {
                        return Err(Error::KeyLocked {
                            target: location(),
                            reason: "it is sealed with a key this handle does not hold; unlock again".into(),
                        })
                    }
                    Err(detail) => return Err(Error::Corruption { location: location(), detail }),
                };
                let resealed = Value::String(seal_value(generation, key, &plain));
                let canonical = canonical_json(&resealed);
                crate::data::changes::rewrite_body(tx, &entry, Body::new(&canonical), None)?;
                let (old, new) = (canonical_json(&Value::String(text)), canonical);
                tx.conn.execute(
                    "UPDATE cairn_settings SET value = ?1 WHERE key = ?2 AND value = ?3",
                    params![String::from_utf8_lossy(&new), entry.record_id, String::from_utf8_lossy(&old)],
                )?;
                values += 1;
                entries += 1;
                continue;
            }
            let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(bytes) else {
                return Err(Error::Corruption { location: location(), detail: "its body is not a JSON object".into() });
            };
            let schema = collections.get(&entry.collection).map(|c| &c.schema);
            let mut changed = 0;
            for (name, value) in body.iter_mut() {
                let Value::String(text) = value else { continue };
                if !is_sealed(text) {
                    continue;
                }
                // A field that exists and is not encrypted holds text that only looks sealed.
                let field = schema.and_then(|s| s.field(name));
                if field.is_some_and(|f| !f.encrypted) {
                    continue;
                }
                match open_value(keys, text) {
                    Ok(Opened::Value(plain)) => {
                        *value = Value::String(seal_value(generation, key, &plain));
                        changed += 1;
                    }
                    Ok(Opened::NoKey) => {
                        return Err(Error::KeyLocked {
                            target: format!("field `{name}` in {}", location()),
                            reason: "it is sealed with a key this handle does not hold; unlock again".into(),
                        })
                    }
                    Err(detail) => {
                        return Err(Error::Corruption { location: format!("field `{name}` in {}", location()), detail })
                    }
                }
            }
            if changed == 0 {
                continue;
            }
            let canonical = crate::engine::canonical::canonical_object(&body);
            crate::data::changes::rewrite_body(tx, &entry, Body::new(&canonical), collections.get(&entry.collection))?;
            values += changed;
            entries += 1;
        }
    }
    Ok((values, entries))
}

/// A store's keyring as an export carries it (`keys.json`): wrapped keys only, so the
/// export's sealed values open with the same secret as the store's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportedKeyring {
    method: String,
    /// Base64url.
    salt: String,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    created_at: i64,
    changed_at: i64,
    keys: Vec<ExportedKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportedKey {
    generation: u32,
    /// Base64url.
    wrapped: String,
    created_at: i64,
    active: bool,
}

/// The keyring of the store `conn` reads, if it has one.
pub(crate) fn export_keyring(conn: &Connection) -> Result<Option<ExportedKeyring>> {
    let Some(w) = load_wrapping(conn)? else { return Ok(None) };
    let changed_at: i64 = conn.query_row("SELECT changed_at FROM cairn_keyring WHERE id = 1", [], |r| r.get(0))?;
    let keys = load_keys(conn)?
        .into_iter()
        .map(|k| ExportedKey {
            generation: k.generation,
            wrapped: URL_SAFE_NO_PAD.encode(&k.wrapped),
            created_at: k.created_at.0,
            active: k.active,
        })
        .collect();
    Ok(Some(ExportedKeyring {
        method: w.method,
        salt: URL_SAFE_NO_PAD.encode(&w.salt),
        m_cost: w.m_cost,
        t_cost: w.t_cost,
        p_cost: w.p_cost,
        created_at: w.created_at.0,
        changed_at,
        keys,
    }))
}

/// Makes an export's keyring the store's: adopted when the store has none, accepted when it
/// is the same one, refused otherwise (the export's values would not open with the store's
/// secret). True when it was adopted.
pub(crate) fn import_keyring(conn: &Connection, keyring: &ExportedKeyring) -> Result<bool> {
    if let Some(current) = export_keyring(conn)? {
        if current.keys == keyring.keys && current.salt == keyring.salt {
            return Ok(false);
        }
        return Err(Error::NotAllowed(
            "the export's encrypted values are sealed under another key than this store's; import it into a store without a key"
                .into(),
        ));
    }
    let bad = |reason: &str| Error::invalid_input("keys.json", reason.to_string());
    if !matches!(keyring.method.as_str(), "passphrase" | "key_file") {
        return Err(bad("unknown method"));
    }
    if keyring.keys.iter().filter(|k| k.active).count() != 1 {
        return Err(bad("exactly one key must be active"));
    }
    let salt = URL_SAFE_NO_PAD.decode(&keyring.salt).map_err(|_| bad("the salt is not base64url"))?;
    conn.execute(
        "INSERT INTO cairn_keyring (id, method, salt, m_cost, t_cost, p_cost, created_at, changed_at)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            keyring.method,
            salt,
            keyring.m_cost,
            keyring.t_cost,
            keyring.p_cost,
            keyring.created_at,
            keyring.changed_at
        ],
    )?;
    for k in &keyring.keys {
        let wrapped = URL_SAFE_NO_PAD.decode(&k.wrapped).map_err(|_| bad("a wrapped key is not base64url"))?;
        conn.execute(
            "INSERT INTO cairn_keys (generation, wrapped, created_at, active) VALUES (?1, ?2, ?3, ?4)",
            params![k.generation, wrapped, k.created_at, k.active],
        )
        .map_err(|_| bad("a key generation appears twice"))?;
    }
    Ok(true)
}

/// The key generations the store's keyring holds.
pub(crate) fn generations(conn: &Connection) -> Result<std::collections::BTreeSet<u32>> {
    Ok(load_keys(conn)?.into_iter().map(|k| k.generation).collect())
}

/// Checks that every sealed value of a stored body names a key of `generations`.
pub(crate) fn check_sealed_keys(
    schema: &CollectionSchema,
    id: &str,
    body: &Map<String, Value>,
    generations: &std::collections::BTreeSet<u32>,
) -> Result<()> {
    for f in schema.fields.iter().filter(|f| f.encrypted) {
        if let Some((generation, _)) = body.get(&f.name).and_then(Value::as_str).and_then(parse) {
            if !generations.contains(&generation) {
                return Err(Error::Validation {
                    collection: schema.name.clone(),
                    id: Some(id.to_string()),
                    field: Some(f.name.clone()),
                    reason: format!(
                        "sealed under key {}, which this store's keyring does not hold (it comes from before a key rotation, or from another store)",
                        key_id(generation)
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sealed_values_open_only_with_their_key_and_header() {
        let key = random_key();
        let keys: HashMap<u32, Key> = [(3, key.clone())].into_iter().collect();
        let value = json!({"rate": 12.5, "note": "ünïcode"});
        let sealed = seal_value(3, &key, &value);
        assert!(sealed.starts_with("cairn-enc:1:k3:") && is_sealed(&sealed));
        assert_ne!(sealed, seal_value(3, &key, &value), "a fresh nonce every time");
        assert!(matches!(open_value(&keys, &sealed), Ok(Opened::Value(v)) if v == value));
        // The same bytes under another key id: the header is authenticated.
        let moved = sealed.replacen("k3", "k4", 1);
        let other: HashMap<u32, Key> = [(4, key.clone())].into_iter().collect();
        assert!(open_value(&other, &moved).is_err());
        assert!(matches!(open_value(&HashMap::new(), &sealed), Ok(Opened::NoKey)));
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(open_value(&keys, &String::from_utf8(tampered).expect("utf8")).is_err());
        assert!(open_value(&keys, "cairn-enc:1:k3:!!").is_err());
        assert!(open_value(&keys, "cairn-enc:1:k3:AAAA").is_err(), "too short");
    }

    #[test]
    fn only_well_formed_headers_count_as_sealed() {
        for text in ["cairn-enc:1:k1:", "cairn-enc:1:k12:abc"] {
            assert!(is_sealed(text), "{text}");
        }
        for text in
            ["", "cairn-enc:1:", "cairn-enc:1:k:abc", "cairn-enc:1:kx:abc", "cairn-enc:2:k1:abc", "cairn-enc:1:k1"]
        {
            assert!(!is_sealed(text), "{text}");
        }
        assert!(!is_sealed("cairn-enc:1:k99999999999:abc"), "generation out of range");
    }

    #[test]
    fn wrapped_keys_need_the_right_kek_and_generation() {
        let (kek, key) = (random_key(), random_key());
        let wrapped = wrap(&kek, 2, &key);
        assert_eq!(unwrap(&kek, 2, &wrapped).as_deref(), Some(&*key));
        assert!(unwrap(&random_key(), 2, &wrapped).is_none());
        assert!(unwrap(&kek, 3, &wrapped).is_none());
        assert!(unwrap(&kek, 2, &wrapped[..10]).is_none());
    }

    #[test]
    fn passphrases_derive_the_same_kek_and_costs_are_bounded() {
        let secret = Secret::passphrase("long enough passphrase");
        let mut w = Wrapping::new(&secret, Timestamp(0));
        w.m_cost = 64;
        w.t_cost = 1;
        assert_eq!(*w.derive(&secret).expect("derive"), *w.derive(&secret).expect("derive"));
        assert_ne!(
            *w.derive(&secret).expect("derive"),
            *w.derive(&Secret::passphrase("another passphrase")).expect("d")
        );
        w.m_cost = MAX_M_COST + 1;
        assert!(matches!(w.derive(&secret), Err(Error::Corruption { .. })));
    }
}
