//! Field encryption (GOV-1): fields flagged `encrypted` are sealed (engine/keyring.rs) before
//! they reach the change log, so neither `store.db`, its WAL, backups nor exports hold their
//! plaintext.
//!
//! A store handle is locked until it is unlocked (`governance/keys.rs`). Locked, records still
//! read: encrypted fields are left out of their body and named in `sealed`, and
//! [`crate::Record::field`] gives [`Error::KeyLocked`] for them; writes that would have to seal
//! or read a sealed value fail with that error, others go through (a patch of other fields
//! keeps the sealed values as they are).

use std::collections::HashMap;

use rusqlite::Connection;
use serde_json::{Map, Value};

use crate::data::collection::Collection;
use crate::data::schema::CollectionSchema;
use crate::engine::keyring::Keyring;
use crate::engine::store::Store;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// Seals the encrypted fields of a plaintext body.
pub(crate) fn seal_fields(
    keys: &Keyring,
    schema: &CollectionSchema,
    id: &str,
    body: &mut Map<String, Value>,
) -> Result<()> {
    for f in schema.fields.iter().filter(|f| f.encrypted) {
        let Some(value) = body.get_mut(&f.name) else { continue };
        let Some(sealed) = keys.seal(value) else {
            return Err(locked(&schema.name, id, &f.name, "cannot be written"));
        };
        *value = Value::String(sealed);
    }
    Ok(())
}

/// Opens the sealed fields of a stored body in place; returns the encrypted fields left out
/// because their key is not held. With `conn`, a key this handle does not know (a rotation by
/// another process) is looked up in the keyring first.
pub(crate) fn open_fields(
    keys: &Keyring,
    conn: Option<&Connection>,
    schema: &CollectionSchema,
    id: &str,
    body: &mut Map<String, Value>,
) -> Result<Vec<String>> {
    let mut sealed = Vec::new();
    for f in schema.fields.iter().filter(|f| f.encrypted) {
        let Some(Value::String(text)) = body.get(&f.name) else { continue };
        let opened = keys.open(conn, text).map_err(|detail| Error::Corruption {
            location: format!("field `{}` of record `{}/{id}`", f.name, schema.name),
            detail,
        })?;
        match opened {
            Some(value) => {
                body.insert(f.name.clone(), value);
            }
            None => {
                body.remove(&f.name);
                sealed.push(f.name.clone());
            }
        }
    }
    Ok(sealed)
}

/// Opens the sealed fields of changes' bodies (each by its collection's schema as it is now;
/// a dropped collection's bodies stay as stored).
pub(crate) fn open_changes(
    keys: &Keyring,
    conn: &Connection,
    changes: &mut [crate::engine::change::Change],
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
                for name in open_fields(keys, Some(conn), schema, &change.id, map)? {
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
pub(crate) fn may_be_sealed(change: &crate::engine::change::Change) -> bool {
    !change.id.is_empty()
        && !change.collection.is_empty()
        && [&change.before, &change.after].into_iter().flatten().any(|body| {
            body.as_object()
                .is_some_and(|m| m.values().any(|v| v.as_str().is_some_and(crate::engine::keyring::is_sealed)))
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
            seal_fields(self.keys, &c.schema, id, body)?;
        }
        Ok(())
    }

    /// Opens a stored body for a caller. A field this handle cannot open is an error here:
    /// the write being prepared would otherwise drop or misread it.
    pub(crate) fn open_all(&self, c: &Collection, id: &str, body: &mut Map<String, Value>) -> Result<()> {
        if c.has_encrypted {
            if let Some(field) = open_fields(self.keys, None, &c.schema, id, body)?.first() {
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
        open_fields(self.keys, None, &c.schema, id, body)
    }

    /// True when this handle holds the active data key.
    pub(crate) fn keys_unlocked(&self) -> bool {
        self.keys.is_unlocked()
    }
}

/// Checks that every sealed value of a stored body names a key of `generations`.
pub(crate) fn check_sealed_keys(
    schema: &CollectionSchema,
    id: &str,
    body: &Map<String, Value>,
    generations: &std::collections::BTreeSet<u32>,
) -> Result<()> {
    for f in schema.fields.iter().filter(|f| f.encrypted) {
        if let Some((generation, _)) = body.get(&f.name).and_then(Value::as_str).and_then(crate::engine::keyring::parse)
        {
            if !generations.contains(&generation) {
                return Err(Error::Validation {
                    collection: schema.name.clone(),
                    id: Some(id.to_string()),
                    field: Some(f.name.clone()),
                    reason: format!(
                        "sealed under key {}, which this store's keyring does not hold (it comes from before a key rotation, or from another store)",
                        crate::engine::keyring::key_id(generation)
                    ),
                });
            }
        }
    }
    Ok(())
}

impl Store {
    /// Opens the sealed fields of a record read for a caller; see [`open_fields`].
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
        open_fields(&self.inner.keys, Some(conn), schema, id, body)
    }
}
