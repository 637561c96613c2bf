//! Keys held in memory and the sealed-value format (GOV-1's primitives).
//!
//! A sealed value is a JSON string `cairn-enc:1:k<generation>:<base64url(nonce ‖ ciphertext ‖
//! tag)>`: XChaCha20-Poly1305 under a random 256-bit data key, over the canonical JSON of the
//! value, with the header (`cairn-enc:1:k<generation>`) as associated data, so a value cannot
//! be passed off as sealed under another key. Every value gets a fresh 192-bit random nonce,
//! so equal values do not look equal.
//!
//! Data keys are stored only wrapped (the same cipher) under a key-encryption key derived from
//! a passphrase with Argon2id, or from a key file (SHA-256 of a domain tag, the salt and the
//! file's bytes). A wrong secret fails the wrapping's authentication tag, so it is told apart
//! from damage without any separate check value.
//!
//! Which fields are sealed is the data layer's business (`data/encryption.rs`); managing the
//! keys (creating, unlocking, rotating) is governance's (`governance/keys.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, AeadCore, OsRng, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::engine::canonical::canonical_json;
use crate::engine::timestamp::Timestamp;
use crate::error::{Error, Result};

/// How every sealed value starts.
pub(crate) const PREFIX: &str = "cairn-enc:1:";

pub(crate) const NONCE_LEN: usize = 24;

/// Argon2id cost for new passphrases: OWASP's recommended minimum (19 MiB, 2 passes, 1 lane).
pub(crate) const ARGON2_M_COST: u32 = 19 * 1024;

pub(crate) const ARGON2_T_COST: u32 = 2;

pub(crate) const ARGON2_P_COST: u32 = 1;

/// Costs above these in a keyring are refused rather than run: a damaged or forged keyring
/// must not make an unlock allocate gigabytes or run for hours.
pub(crate) const MAX_M_COST: u32 = 1024 * 1024;

pub(crate) const MAX_T_COST: u32 = 64;

pub(crate) const MAX_P_COST: u32 = 16;

pub(crate) const MIN_PASSPHRASE_CHARS: usize = 8;

pub(crate) const MIN_KEY_FILE_BYTES: usize = 32;

pub(crate) const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

pub(crate) type Key = Zeroizing<[u8; 32]>;

/// The secret that opens a store's data keys.
pub enum Secret {
    /// A passphrase of at least 8 characters, stretched with Argon2id.
    Passphrase(Zeroizing<String>),
    /// A file of at least 32 bytes (leading and trailing whitespace ignored), e.g. one made by
    /// [`generate_key_file`](crate::generate_key_file).
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

    pub(crate) fn method(&self) -> &'static str {
        match self {
            Secret::Passphrase(_) => "passphrase",
            Secret::KeyFile(_) => "key_file",
        }
    }
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
pub(crate) fn parse(text: &str) -> Option<(u32, &str)> {
    let rest = text.strip_prefix(PREFIX)?.strip_prefix('k')?;
    let (generation, data) = rest.split_once(':')?;
    if generation.is_empty() || generation.len() > 9 || !generation.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((generation.parse().ok()?, data))
}

pub(crate) fn key_id(generation: u32) -> String {
    format!("k{generation}")
}

pub(crate) fn header(generation: u32) -> String {
    format!("{PREFIX}k{generation}")
}

pub(crate) fn random_key() -> Key {
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

pub(crate) fn seal_value(generation: u32, key: &Key, value: &Value) -> String {
    let header = header(generation);
    let plaintext = Zeroizing::new(canonical_json(value));
    let data = encrypt(key, header.as_bytes(), &plaintext);
    format!("{header}:{}", URL_SAFE_NO_PAD.encode(data))
}

/// Outcome of opening one sealed value.
pub(crate) enum Opened {
    Value(Value),
    /// Its key is not held.
    NoKey,
}

pub(crate) fn open_value(keys: &HashMap<u32, Key>, text: &str) -> std::result::Result<Opened, String> {
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
pub(crate) struct Wrapping {
    pub(crate) method: String,
    pub(crate) salt: Vec<u8>,
    pub(crate) m_cost: u32,
    pub(crate) t_cost: u32,
    pub(crate) p_cost: u32,
    pub(crate) created_at: Timestamp,
}

impl Wrapping {
    pub(crate) fn new(secret: &Secret, created_at: Timestamp) -> Self {
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

    pub(crate) fn describe(&self) -> String {
        match self.method.as_str() {
            "passphrase" => format!("argon2id m={} KiB t={} p={}", self.m_cost, self.t_cost, self.p_cost),
            _ => "sha-256 of the key file".to_string(),
        }
    }

    /// The key-encryption key for `secret`.
    pub(crate) fn derive(&self, secret: &Secret) -> Result<Key> {
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

pub(crate) fn check_passphrase(text: &str) -> Result<()> {
    if text.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(Error::invalid_input(
            "the passphrase",
            format!("it must have at least {MIN_PASSPHRASE_CHARS} characters"),
        ));
    }
    Ok(())
}

pub(crate) fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
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
            format!("a key file holds at least {MIN_KEY_FILE_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

pub(crate) fn wrap(kek: &Key, generation: u32, key: &Key) -> Vec<u8> {
    encrypt(kek, format!("cairn-key:{generation}").as_bytes(), key.as_slice())
}

pub(crate) fn unwrap(kek: &Key, generation: u32, wrapped: &[u8]) -> Option<Key> {
    let bytes = decrypt(kek, format!("cairn-key:{generation}").as_bytes(), wrapped)?;
    let mut key: Key = Zeroizing::new([0; 32]);
    if bytes.len() != 32 {
        return None;
    }
    key.copy_from_slice(&bytes);
    Some(key)
}

pub(crate) fn load_wrapping(conn: &Connection) -> Result<Option<Wrapping>> {
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

pub(crate) struct StoredKey {
    pub(crate) generation: u32,
    pub(crate) wrapped: Vec<u8>,
    pub(crate) created_at: Timestamp,
    pub(crate) active: bool,
}

pub(crate) fn load_keys(conn: &Connection) -> Result<Vec<StoredKey>> {
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
pub(crate) struct Held {
    pub(crate) kek: Option<Key>,
    pub(crate) keys: HashMap<u32, Key>,
    pub(crate) active: Option<u32>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.read();
        f.debug_struct("Keyring").field("keys", &held.keys.len()).field("active", &held.active).finish()
    }
}

impl Keyring {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Held> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Held> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_unlocked(&self) -> bool {
        self.read().active.is_some()
    }

    /// Seals `value` under the active key; `None` while no key is active (locked).
    pub(crate) fn seal(&self, value: &Value) -> Option<String> {
        let held = self.read();
        let (generation, key) = held.active.and_then(|g| held.keys.get(&g).map(|k| (g, k)))?;
        Some(seal_value(generation, key, value))
    }

    /// Opens one value in sealed form: `Ok(None)` when its key is not held — with `conn`, a
    /// key added since this handle unlocked (a rotation by another process) is looked up in
    /// the keyring first; `Err` says why the value does not open (it is damaged).
    pub(crate) fn open(&self, conn: Option<&Connection>, text: &str) -> std::result::Result<Option<Value>, String> {
        let mut opened = open_value(&self.read().keys, text)?;
        if let (Opened::NoKey, Some(conn)) = (&opened, conn) {
            if self.refresh(conn).map_err(|e| e.to_string())? {
                opened = open_value(&self.read().keys, text)?;
            }
        }
        Ok(match opened {
            Opened::Value(value) => Some(value),
            Opened::NoKey => None,
        })
    }

    /// Seals one value (a secret setting's) under the active key.
    pub(crate) fn seal_json(&self, target: &str, value: &Value) -> Result<String> {
        self.seal(value).ok_or_else(|| Error::KeyLocked {
            target: target.to_string(),
            reason: "secrets are stored sealed with the store's key, which is locked or not created yet".into(),
        })
    }

    /// Opens one sealed value; [`Error::KeyLocked`] when its key is not held.
    pub(crate) fn open_json(&self, conn: &Connection, target: &str, text: &str) -> Result<Value> {
        match self.open(Some(conn), text) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => {
                Err(Error::KeyLocked { target: target.to_string(), reason: "the store's key is locked".into() })
            }
            Err(detail) => Err(Error::Corruption { location: target.to_string(), detail }),
        }
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

/// The key generations the store's keyring holds.
pub(crate) fn generations(conn: &Connection) -> Result<std::collections::BTreeSet<u32>> {
    Ok(load_keys(conn)?.into_iter().map(|k| k.generation).collect())
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
