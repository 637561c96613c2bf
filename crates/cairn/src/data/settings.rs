//! Typed settings (CORE-9): a key/value table with definitions, defaults and validation.
//!
//! Every key has a definition: its type, its default, optional bounds or choices. cairn's own
//! settings are built in (they cannot be redefined); applications define theirs with
//! [`Store::define_setting`]. Values are validated on every set, stored as JSON, and changes
//! go through the change log like any other mutation. Reading a key that was never set
//! returns its default.

use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::changes::{Body, ChangeOp, NewChange, SETTING_VALUE_OPS};
use crate::engine::canonical::canonical_json;
use crate::engine::store::Store;
use crate::engine::timestamp::parse_datetime;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// The type of a setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SettingType {
    /// A string.
    Text,
    /// A signed 64-bit integer.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Bool,
    /// An RFC 3339 date-time.
    Datetime,
    /// Any JSON value.
    Json,
    /// Text that must never be stored, shown or exported in the clear (an API key, a
    /// token): sealed with the store's key (see `keys`), masked when listed. A secret
    /// setting has no default.
    Secret,
}

/// The definition of a setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingDef {
    /// `[a-z][a-z0-9_]*` segments separated by dots, e.g. `ui.theme`.
    pub key: String,
    /// The value type.
    #[serde(rename = "type")]
    pub kind: SettingType,
    /// The value when never set.
    pub default: Value,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// Smallest allowed value (numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest allowed value (numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The only allowed values, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<Value>>,
}

/// A setting's definition with its current value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Setting {
    /// The definition.
    #[serde(flatten)]
    pub def: SettingDef,
    /// The current value (the default when never set).
    pub value: Value,
    /// True when the value is the default because it was never set (or was reset).
    pub is_default: bool,
    /// True for cairn's own settings.
    pub builtin: bool,
}

impl Setting {
    /// What a secret setting's value reads as wherever it is shown.
    pub const SECRET_MASK: &'static str = SECRET_MASK;
}

/// What a secret setting's value reads as, wherever settings are listed.
pub const SECRET_MASK: &str = "********";

fn builtin(key: &str) -> Option<SettingDef> {
    crate::data::builtin_settings::builtin_settings().into_iter().find(|d| d.key == key)
}

fn valid_key(key: &str) -> bool {
    key.len() <= 128 && key.split('.').all(crate::engine::sql::is_valid_name)
}

impl SettingDef {
    /// Checks `value` against this definition.
    pub fn check(&self, value: &Value) -> Result<()> {
        let fail = |reason: String| Err(Error::InvalidSetting { key: self.key.clone(), reason });
        let type_ok = match self.kind {
            SettingType::Text => value.is_string(),
            SettingType::Integer => value.is_i64(),
            SettingType::Number => value.is_number(),
            SettingType::Bool => value.is_boolean(),
            SettingType::Datetime => value.as_str().is_some_and(|s| parse_datetime(s).is_some()),
            SettingType::Json => true,
            SettingType::Secret => value.as_str().is_some_and(|s| !s.is_empty()),
        };
        if !type_ok {
            let kind = serde_json::to_value(self.kind).unwrap_or_default();
            return fail(format!("expected a {} value, got {value}", kind.as_str().unwrap_or("?")));
        }
        if let Some(n) = value.as_f64() {
            if self.min.is_some_and(|min| n < min) || self.max.is_some_and(|max| n > max) {
                let bound = |b: Option<f64>| b.map_or("-".to_string(), |b| b.to_string());
                return fail(format!("{value} is outside {}..={}", bound(self.min), bound(self.max)));
            }
        }
        if let Some(choices) = &self.choices {
            if !choices.contains(value) {
                let list: Vec<String> = choices.iter().map(Value::to_string).collect();
                return fail(format!("{value} is not one of {}", list.join(", ")));
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        if !valid_key(&self.key) {
            return Err(Error::InvalidSetting {
                key: self.key.clone(),
                reason: "keys are dot-separated names of a-z, 0-9 and _ (e.g. `ui.theme`)".into(),
            });
        }
        if let (Some(min), Some(max)) = (self.min, self.max) {
            if min > max {
                return Err(Error::InvalidSetting { key: self.key.clone(), reason: "min is greater than max".into() });
            }
        }
        if self.kind == SettingType::Secret {
            if !self.default.is_null() || self.min.is_some() || self.max.is_some() || self.choices.is_some() {
                return Err(Error::InvalidSetting {
                    key: self.key.clone(),
                    reason: "a secret setting has no default, bounds or choices (they would be stored in the clear)"
                        .into(),
                });
            }
            return Ok(());
        }
        self.check(&self.default).map_err(|e| match e {
            Error::InvalidSetting { key, reason } => {
                Error::InvalidSetting { key, reason: format!("default: {reason}") }
            }
            other => other,
        })
    }
}

fn definition(conn: &Connection, key: &str) -> Result<SettingDef> {
    if let Some(def) = builtin(key) {
        return Ok(def);
    }
    let text: Option<String> = conn
        .prepare_cached("SELECT def FROM cairn_setting_defs WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    let text = text.ok_or_else(|| Error::UnknownSetting { key: key.to_string() })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Corruption { location: format!("definition of setting `{key}`"), detail: e.to_string() })
}

fn stored_value(conn: &Connection, key: &str) -> Result<Option<Value>> {
    let text: Option<String> = conn
        .prepare_cached("SELECT value FROM cairn_settings WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| Error::Corruption { location: format!("value of setting `{key}`"), detail: e.to_string() })
    })
    .transpose()
}

/// A setting's current value.
pub(crate) fn value(conn: &Connection, key: &str) -> Result<Value> {
    Ok(setting(conn, key)?.value)
}

pub(crate) fn setting(conn: &Connection, key: &str) -> Result<Setting> {
    let def = definition(conn, key)?;
    let stored = stored_value(conn, key)?;
    // A secret is never handed out by listing; `Store::secret` opens it.
    let stored = match (def.kind, stored) {
        (SettingType::Secret, Some(_)) => Some(Value::String(SECRET_MASK.into())),
        (_, stored) => stored,
    };
    Ok(Setting {
        builtin: builtin(key).is_some(),
        is_default: stored.is_none(),
        value: stored.unwrap_or_else(|| def.default.clone()),
        def,
    })
}

/// True when `key` is defined as a secret setting.
pub(crate) fn is_secret(conn: &Connection, key: &str) -> bool {
    definition(conn, key).is_ok_and(|d| d.kind == SettingType::Secret)
}

/// A secret setting's stored (sealed) text, if it was set.
pub(crate) fn sealed_secret(conn: &Connection, key: &str) -> Result<Option<String>> {
    let def = definition(conn, key)?;
    if def.kind != SettingType::Secret {
        return Err(Error::InvalidSetting { key: key.into(), reason: "not a secret setting".into() });
    }
    match stored_value(conn, key)? {
        None => Ok(None),
        Some(Value::String(sealed)) if crate::engine::keyring::is_sealed(&sealed) => Ok(Some(sealed)),
        Some(_) => Err(Error::Corruption {
            location: format!("value of setting `{key}`"),
            detail: "a secret setting holds a value that is not sealed".into(),
        }),
    }
}

/// `records.max_body_bytes`, cached by the writer.
#[derive(Default)]
struct BodyLimit(Option<u64>);

impl Tx<'_> {
    /// Sets a setting after validating the value against its definition.
    pub fn set_setting(&mut self, key: &str, value: Value) -> Result<()> {
        let def = definition(self.conn, key)?;
        def.check(&value)?;
        let value = match def.kind {
            SettingType::Secret => Value::String(self.keys.seal_json(&format!("setting `{key}`"), &value)?),
            _ => value,
        };
        self.store_setting(key, value)
    }

    /// Sets a secret setting to a value already sealed under one of this store's keys (an
    /// import carries secrets sealed).
    pub(crate) fn set_sealed_setting(&mut self, key: &str, sealed: &str) -> Result<()> {
        let def = definition(self.conn, key)?;
        let generation = crate::engine::keyring::generation_of(sealed);
        let known = crate::engine::keyring::generations(self.conn)?;
        if def.kind != SettingType::Secret || generation.is_none_or(|g| !known.contains(&g)) {
            return Err(Error::InvalidSetting {
                key: key.into(),
                reason: "only a secret setting takes a sealed value, and only one sealed under a key this store has"
                    .into(),
            });
        }
        self.store_setting(key, Value::String(sealed.to_string()))
    }

    fn store_setting(&mut self, key: &str, value: Value) -> Result<()> {
        let after = canonical_json(&value);
        self.conn.execute(
            "INSERT INTO cairn_settings (key, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![key, std::str::from_utf8(&after).unwrap_or_default(), self.now.0],
        )?;
        self.cache.get::<BodyLimit>().0 = None;
        self.cache.get::<crate::data::compress::Policies>().0.clear();
        self.log(NewChange {
            collection: "",
            id: key,
            op: ChangeOp::SettingSet,
            version: 0,
            deleted: false,
            prev_seq: self.last_change_seq("", key, &SETTING_VALUE_OPS)?,
            after: Some(Body::new(&after)),
        })?;
        Ok(())
    }

    /// Removes a setting's stored value so that it reads as its default.
    pub fn reset_setting(&mut self, key: &str) -> Result<()> {
        definition(self.conn, key)?;
        self.conn.execute("DELETE FROM cairn_settings WHERE key = ?1", [key])?;
        self.cache.get::<BodyLimit>().0 = None;
        self.cache.get::<crate::data::compress::Policies>().0.clear();
        self.log(NewChange {
            collection: "",
            id: key,
            op: ChangeOp::SettingReset,
            version: 0,
            deleted: false,
            prev_seq: self.last_change_seq("", key, &SETTING_VALUE_OPS)?,
            after: None,
        })?;
        Ok(())
    }

    /// Defines (or redefines) an application setting. A stored value that the new
    /// definition would refuse makes the definition fail.
    pub fn define_setting(&mut self, def: SettingDef) -> Result<()> {
        def.validate()?;
        if builtin(&def.key).is_some() {
            return Err(Error::InvalidSetting { key: def.key, reason: "built-in settings cannot be redefined".into() });
        }
        if let Some(current) = stored_value(self.conn, &def.key)? {
            def.check(&current).map_err(|e| Error::InvalidSetting {
                key: def.key.clone(),
                reason: format!("the stored value does not fit the new definition ({e}); reset it first"),
            })?;
        }
        let text = canonical_json(&serde_json::to_value(&def).map_err(|e| Error::Internal(e.to_string()))?);
        self.conn.execute(
            "INSERT INTO cairn_setting_defs (key, def) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET def = excluded.def",
            params![def.key, std::str::from_utf8(&text).unwrap_or_default()],
        )?;
        self.log(NewChange {
            collection: "",
            id: &def.key,
            op: ChangeOp::SettingDefine,
            version: 0,
            deleted: false,
            prev_seq: self.last_change_seq("", &def.key, &[ChangeOp::SettingDefine])?,
            after: Some(Body::new(&text)),
        })?;
        Ok(())
    }

    /// The body size limit, cached by the writer until a setting changes.
    pub(crate) fn max_body_bytes(&mut self) -> Result<u64> {
        if let Some(limit) = self.cache.get::<BodyLimit>().0 {
            return Ok(limit);
        }
        let limit = setting(self.conn, crate::data::builtin_settings::RECORDS_MAX_BODY_BYTES)?
            .value
            .as_u64()
            .unwrap_or(1024 * 1024);
        self.cache.get::<BodyLimit>().0 = Some(limit);
        Ok(limit)
    }
}

impl Store {
    /// A setting with its definition and current value.
    pub fn setting(&self, key: &str) -> Result<Setting> {
        setting(&*self.reader()?, key)
    }

    /// A setting's value, deserialized into `T`.
    pub fn setting_value<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let s = self.setting(key)?;
        serde_json::from_value(s.value)
            .map_err(|e| Error::InvalidSetting { key: key.to_string(), reason: e.to_string() })
    }

    /// Every defined setting, built-in ones first, then by key.
    pub fn settings(&self) -> Result<Vec<Setting>> {
        let conn = self.reader()?;
        let mut keys: Vec<String> =
            crate::data::builtin_settings::builtin_settings().into_iter().map(|d| d.key).collect();
        let defined: Vec<String> = conn
            .prepare("SELECT key FROM cairn_setting_defs ORDER BY key")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        keys.extend(defined);
        keys.iter().map(|k| setting(&conn, k)).collect()
    }

    /// A secret setting's value, opened with the store's key (`None` when it was never
    /// set). Fails with [`Error::KeyLocked`] when the key is locked.
    pub fn secret(&self, key: &str) -> Result<Option<zeroize::Zeroizing<String>>> {
        let conn = self.reader()?;
        let Some(sealed) = sealed_secret(&conn, key)? else { return Ok(None) };
        match self.inner.keys.open_json(&conn, &format!("setting `{key}`"), &sealed)? {
            Value::String(text) => Ok(Some(zeroize::Zeroizing::new(text))),
            _ => Err(Error::Corruption {
                location: format!("value of setting `{key}`"),
                detail: "the opened secret is not text".into(),
            }),
        }
    }

    /// Validates and stores a setting; a secret setting's value is sealed with the store's
    /// key first (which must be unlocked).
    pub fn set_setting(&self, key: &str, value: Value) -> Result<()> {
        let key = key.to_string();
        self.write(move |tx| tx.set_setting(&key, value))
    }

    /// Puts a setting back to its default.
    pub fn reset_setting(&self, key: &str) -> Result<()> {
        let key = key.to_string();
        self.write(move |tx| tx.reset_setting(&key))
    }

    /// Defines an application setting.
    pub fn define_setting(&self, def: SettingDef) -> Result<()> {
        self.write(move |tx| tx.define_setting(def))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_are_typed_defaulted_and_validated() {
        let (_dir, store) = crate::engine::store::temp_store();
        assert_eq!(
            store.setting_value::<u64>(crate::data::builtin_settings::RECORDS_MAX_BODY_BYTES).expect("default"),
            1024 * 1024
        );
        assert!(matches!(
            store.set_setting(crate::data::builtin_settings::RECORDS_MAX_BODY_BYTES, json!("big")),
            Err(Error::InvalidSetting { .. })
        ));
        assert!(matches!(
            store.set_setting(crate::data::builtin_settings::RECORDS_MAX_BODY_BYTES, json!(10)),
            Err(Error::InvalidSetting { .. })
        ));
        assert!(matches!(store.set_setting("nope", json!(1)), Err(Error::UnknownSetting { .. })));
        store.set_setting(crate::data::builtin_settings::RECORDS_MAX_BODY_BYTES, json!(4096)).expect("set");
        assert_eq!(
            store.setting(crate::data::builtin_settings::RECORDS_MAX_BODY_BYTES).expect("get").value,
            json!(4096)
        );

        let theme = SettingDef {
            key: "ui.theme".into(),
            kind: SettingType::Text,
            default: json!("light"),
            description: String::new(),
            min: None,
            max: None,
            choices: Some(vec![json!("light"), json!("dark")]),
        };
        store.define_setting(theme.clone()).expect("define");
        assert_eq!(store.setting_value::<String>("ui.theme").expect("default"), "light");
        assert!(matches!(store.set_setting("ui.theme", json!("pink")), Err(Error::InvalidSetting { .. })));
        store.set_setting("ui.theme", json!("dark")).expect("set");
        let bad_default = SettingDef { default: json!(3), ..theme.clone() };
        assert!(matches!(store.define_setting(bad_default), Err(Error::InvalidSetting { .. })));
        let bad_key = SettingDef { key: "UI theme".into(), ..theme };
        assert!(matches!(store.define_setting(bad_key), Err(Error::InvalidSetting { .. })));
        store.reset_setting("ui.theme").expect("reset");
        let s = store.setting("ui.theme").expect("get");
        assert!(s.is_default && s.value == json!("light"));
        assert_eq!(store.settings().expect("list").len(), crate::settings::builtin_settings().len() + 1);
    }
}
