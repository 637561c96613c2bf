//! Managing the encryption keys (GOV-1): creating the keyring, unlocking and locking a handle,
//! its status, rotation, and carrying the wrapped keys in exports.
//!
//! A store handle is locked until [`Store::unlock`] (or [`Store::key_init`]). Rotation
//! (`Store::rotate_key`) either re-wraps the data keys under a new secret, or also seals every
//! value again under a new data key — in the record rows and in the whole change log,
//! rewriting each entry's checksum — and retires the old key, in one transaction. Readers that
//! started before keep working: the handle keeps every key it has opened until it is locked,
//! and another process finds a new key by reading the keyring again.
//!
//! Alternative considered: encrypting the whole database (SQLCipher). It would hide
//! everything, but needs the key for every read and a non-standard SQLite build; the seeds
//! ask for sensitive fields (contact details, rates) to be protected while the rest of the
//! data stays usable.

use std::collections::HashMap;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;
use rusqlite::{params, Connection};
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::data::changes::Body;
use crate::data::collection::Collection;
use crate::engine::canonical::canonical_json;
use crate::engine::keyring::{
    check_passphrase, is_sealed, key_id, load_keys, load_wrapping, open_value, random_key, seal_value, unwrap, wrap,
    Held, Key, Opened, Secret, Wrapping, PREFIX,
};
use crate::engine::store::Store;
use crate::engine::timestamp::Timestamp;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// Change-log entries re-sealed per statement page during rotation.
const PAGE: i64 = 500;

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

impl Store {
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
                return Err(Error::NotAllowed("this store has a key already; rotate it to change it".into()));
            }
            store_wrapping(tx.conn, &wrapping, tx.now)?;
            tx.conn.execute(
                "INSERT INTO cairn_keys (generation, wrapped, created_at, active) VALUES (1, ?1, ?2, 1)",
                params![wrapped, tx.now.0],
            )?;
            tx.audit("key.init", "keyring", "ok", &detail)
        });
        if result.is_err() {
            self.audit("key.init", "keyring", &crate::engine::trail::outcome(&result), "");
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
    Error::NotAllowed("this store has no key yet; create one first".into())
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
