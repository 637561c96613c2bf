//! The catalog as the change log says it is: collections (`cairn_collections`), setting
//! definitions (`cairn_setting_defs`) and setting values (`cairn_settings`).
//!
//! Every change to these tables is logged with its full new content (the schema, the
//! definition, the value) in the same transaction, so the tables are derived data, like record
//! rows: `check` compares them with the log, and `repair` and the rebuild write them from it.
//! The log's entries are verified by their hashes; the tables carry no checksum of their own.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};

/// A collection's catalog row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CollectionRow {
    pub(crate) table: String,
    /// The schema's canonical JSON.
    pub(crate) schema: String,
    pub(crate) schema_version: u64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

/// The three catalog tables' contents, keyed by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Catalog {
    pub(crate) collections: BTreeMap<String, CollectionRow>,
    /// Definition JSON by key.
    pub(crate) defs: BTreeMap<String, String>,
    /// (value JSON, updated_at) by key.
    pub(crate) settings: BTreeMap<String, (String, i64)>,
}

impl Catalog {
    /// The catalog the change log describes. Fails when an entry it needs is damaged.
    pub(crate) fn from_log(conn: &Connection) -> Result<Catalog> {
        let mut out = Catalog::default();
        // The partial index `cairn_changes_by_key` holds exactly these entries (and purges,
        // grants and revokes, which are about records).
        let rows: Vec<(u64, String, String, String, u64, i64)> = conn
            .prepare(
                "SELECT seq, collection, record_id, op, version, at FROM cairn_changes
                 WHERE op NOT IN ('create', 'replace', 'patch', 'delete', 'revert', 'undo', 'redo') AND op NOT IN ('purge', 'grant', 'revoke')
                 ORDER BY seq",
            )?
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    crate::engine::sql::text_at(r, 1)?,
                    crate::engine::sql::text_at(r, 2)?,
                    crate::engine::sql::text_at(r, 3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        for (seq, collection, key, op, version, at) in rows {
            match op.as_str() {
                "collection_create" | "collection_update" => {
                    let schema = body_text(conn, seq)?;
                    let created_at = match (op.as_str(), out.collections.get(&collection)) {
                        ("collection_update", Some(row)) => row.created_at,
                        _ => at,
                    };
                    let table = crate::engine::sql::records_table(&collection);
                    out.collections.insert(
                        collection,
                        CollectionRow { table, schema, schema_version: version, created_at, updated_at: at },
                    );
                }
                "collection_drop" => {
                    out.collections.remove(&collection);
                }
                "setting_define" => {
                    out.defs.insert(key, body_text(conn, seq)?);
                }
                "setting_set" => {
                    out.settings.insert(key, (body_text(conn, seq)?, at));
                }
                "setting_reset" => {
                    out.settings.remove(&key);
                }
                other => {
                    return Err(Error::Corruption {
                        location: format!("change log entry {seq}"),
                        detail: format!("unknown op {other:?}"),
                    })
                }
            }
        }
        Ok(out)
    }

    /// What the catalog tables hold now.
    pub(crate) fn stored(conn: &Connection) -> Result<Catalog> {
        let mut out = Catalog::default();
        let mut stmt = conn.prepare(
            "SELECT name, table_name, schema, schema_version, created_at, updated_at FROM cairn_collections",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let row = CollectionRow {
                table: crate::engine::sql::text_at(r, 1)?,
                schema: crate::engine::sql::text_at(r, 2)?,
                schema_version: r.get::<_, i64>(3)? as u64,
                created_at: r.get(4)?,
                updated_at: r.get(5)?,
            };
            out.collections.insert(crate::engine::sql::text_at(r, 0)?, row);
        }
        let mut stmt = conn.prepare("SELECT key, def FROM cairn_setting_defs")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            out.defs.insert(crate::engine::sql::text_at(r, 0)?, crate::engine::sql::text_at(r, 1)?);
        }
        let mut stmt = conn.prepare("SELECT key, value, updated_at FROM cairn_settings")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            out.settings.insert(crate::engine::sql::text_at(r, 0)?, (crate::engine::sql::text_at(r, 1)?, r.get(2)?));
        }
        Ok(out)
    }

    /// Where `self` (stored) differs from `expected` (the log): (location, what is wrong).
    pub(crate) fn differences(&self, expected: &Catalog) -> Vec<(String, String)> {
        let mut out = Vec::new();
        diff(&self.collections, &expected.collections, "collection", &mut out, |stored, want| {
            if stored.table != want.table {
                Some(format!("its table is {:?}, not {:?}", stored.table, want.table))
            } else if stored.schema != want.schema {
                Some("its stored schema differs from the one the change log recorded".into())
            } else if stored.schema_version != want.schema_version {
                Some(format!(
                    "its schema version is {}, the change log says {}",
                    stored.schema_version, want.schema_version
                ))
            } else if (stored.created_at, stored.updated_at) != (want.created_at, want.updated_at) {
                Some("its creation or update time differs from the change log".into())
            } else {
                None
            }
        });
        diff(&self.defs, &expected.defs, "setting definition", &mut out, |stored, want| {
            (stored != want).then(|| "it differs from the definition the change log recorded".to_string())
        });
        diff(&self.settings, &expected.settings, "setting", &mut out, |stored, want| {
            (stored != want).then(|| "its value or update time differs from the change log".to_string())
        });
        out
    }

    /// Replaces the catalog tables' rows with `self`. Tables of collections are not touched.
    pub(crate) fn write(&self, conn: &Connection) -> Result<()> {
        conn.execute_batch(
            "DELETE FROM cairn_collections; DELETE FROM cairn_setting_defs; DELETE FROM cairn_settings;",
        )?;
        for (name, row) in &self.collections {
            conn.execute(
                "INSERT INTO cairn_collections (name, table_name, schema, schema_version, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![name, row.table, row.schema, row.schema_version as i64, row.created_at, row.updated_at],
            )?;
        }
        for (key, def) in &self.defs {
            conn.execute("INSERT INTO cairn_setting_defs (key, def) VALUES (?1, ?2)", params![key, def])?;
        }
        for (key, (value, at)) in &self.settings {
            conn.execute(
                "INSERT INTO cairn_settings (key, value, updated_at) VALUES (?1, ?2, ?3)",
                params![key, value, at],
            )?;
        }
        Ok(())
    }

    /// The collections, as the engine uses them.
    pub(crate) fn collections(&self) -> Result<Vec<crate::data::collection::Collection>> {
        self.collections
            .iter()
            .map(|(name, row)| {
                let schema = serde_json::from_str(&row.schema).map_err(|e| Error::Corruption {
                    location: format!("schema of collection `{name}` in the change log"),
                    detail: e.to_string(),
                })?;
                Ok(crate::data::collection::Collection::new(schema, row.table.clone()))
            })
            .collect()
    }
}

fn diff<T>(
    stored: &BTreeMap<String, T>,
    expected: &BTreeMap<String, T>,
    what: &str,
    out: &mut Vec<(String, String)>,
    compare: impl Fn(&T, &T) -> Option<String>,
) {
    for (key, want) in expected {
        match stored.get(key) {
            None => out.push((format!("{what} `{key}`"), "its catalog row is missing".into())),
            Some(have) => {
                if let Some(detail) = compare(have, want) {
                    out.push((format!("{what} `{key}`"), detail));
                }
            }
        }
    }
    for key in stored.keys().filter(|k| !expected.contains_key(*k)) {
        out.push((format!("{what} `{key}`"), "the change log never created it".into()));
    }
}

/// The verified body of entry `seq`, as text.
fn body_text(conn: &Connection, seq: u64) -> Result<String> {
    crate::data::changes::verified_row(conn, seq)?.ok_or_else(|| Error::Corruption {
        location: format!("change log entry {seq}"),
        detail: "it is missing".into(),
    })?;
    let stored: Option<Vec<u8>> = conn
        .prepare_cached("SELECT after FROM cairn_changes WHERE seq = ?1")?
        .query_row([seq], |r| r.get(0))
        .optional()?
        .flatten();
    let stored = stored.ok_or_else(|| Error::Corruption {
        location: format!("change log entry {seq}"),
        detail: "a schema or setting entry has no body".into(),
    })?;
    let bytes = crate::engine::body::body_bytes(conn, &stored)?;
    String::from_utf8(bytes.into_owned())
        .map_err(|e| Error::Corruption { location: format!("change log entry {seq}"), detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_catalog_derived_from_the_log_equals_the_tables_through_every_kind_of_change() {
        let (_dir, store) = crate::engine::store::temp_store();
        let schema = |name: &str, fields: serde_json::Value| {
            serde_json::from_value::<crate::CollectionSchema>(json!({"name": name, "fields": fields})).expect("schema")
        };
        store.create_collection(schema("notes", json!([{"name": "title", "type": "text"}]))).expect("create");
        store
            .update_collection(schema("notes", json!([{"name": "title", "type": "text", "indexed": true}])))
            .expect("update");
        store.create_collection(schema("gone", json!([]))).expect("create");
        store.drop_collection("gone", &crate::DropOptions::confirm("gone")).expect("drop");
        store.set_setting(crate::settings::RECORDS_MAX_BODY_BYTES, json!(4096)).expect("set");
        let def = crate::SettingDef {
            key: "ui.theme".into(),
            kind: crate::SettingType::Text,
            default: json!("light"),
            description: String::new(),
            min: None,
            max: None,
            choices: None,
        };
        store.define_setting(def).expect("define");
        store.set_setting("ui.theme", json!("dark")).expect("set");
        store.reset_setting("ui.theme").expect("reset");
        let conn = store.reader().expect("reader");
        let (stored, derived) = (Catalog::stored(&conn).expect("stored"), Catalog::from_log(&conn).expect("log"));
        assert_eq!(stored, derived);
        assert_eq!(derived.collections["notes"].schema_version, 2);
        assert!(stored.differences(&derived).is_empty());
        let mut edited = stored.clone();
        edited.collections.get_mut("notes").expect("notes").schema = "{}".into();
        edited.settings.insert("x".into(), ("1".into(), 0));
        let found = edited.differences(&derived);
        assert_eq!(found.len(), 2, "{found:?}");
    }
}
