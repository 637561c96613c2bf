//! The SQL objects a store holds, against the ones cairn creates.
//!
//! A store's `sqlite_schema` must list exactly what cairn's own format files create for its
//! format version, plus each collection's tables and indexes as its schema makes them — no
//! trigger, view or table anyone else added. A trigger planted in a backup would otherwise run
//! on every write once the backup is restored. The expected set is built by running the same
//! code on an empty in-memory database and compared object by object: tables by their columns
//! and by their SQL with whitespace folded — except record tables, whose SQL ALTER TABLE
//! rewrites as value columns come and go — and everything else by its SQL. SQLite's statistics tables
//! (`sqlite_stat1`, `sqlite_stat4`, written by `PRAGMA optimize`) are SQLite's, not foreign.

use std::collections::BTreeMap;

use rusqlite::Connection;

use crate::data::collection::Collection;
use crate::error::Result;

/// One object of `sqlite_schema` and what it consists of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Object {
    /// `table`, `index`, `view` or `trigger`.
    pub(crate) kind: String,
    /// The table it belongs to.
    pub(crate) table: String,
    /// Its columns and flags (tables), normalised.
    pub(crate) shape: String,
    /// Its SQL with whitespace folded.
    pub(crate) text: String,
    /// The SQL as stored (for quarantining an unknown object).
    pub(crate) sql: Option<String>,
}

/// A difference between the objects found and those expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch {
    pub(crate) name: String,
    pub(crate) detail: String,
    /// True for an object cairn never creates (it can be set aside); false for one of cairn's
    /// own that is missing or altered (the database needs rebuilding).
    pub(crate) unknown: bool,
    pub(crate) kind: String,
}

/// The objects of `conn`'s main database, by name.
pub(crate) fn actual(conn: &Connection) -> Result<BTreeMap<String, Object>> {
    // Damaged names may not be UTF-8: read lossily, they then match nothing expected.
    let rows: Vec<(String, String, String, Option<String>)> = conn
        .prepare("SELECT type, name, tbl_name, sql FROM main.sqlite_schema")?
        .query_map([], |r| {
            let sql = match r.get_ref(3)? {
                rusqlite::types::ValueRef::Null => None,
                _ => Some(crate::engine::sql::text_at(r, 3)?),
            };
            Ok((
                crate::engine::sql::text_at(r, 0)?,
                crate::engine::sql::text_at(r, 1)?,
                crate::engine::sql::text_at(r, 2)?,
                sql,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = BTreeMap::new();
    // SQLite's own statistics tables, made by `PRAGMA optimize` when a store closes.
    for (kind, name, table, sql) in rows.into_iter().filter(|r| !r.1.starts_with("sqlite_stat")) {
        let virtual_table =
            sql.as_deref().is_some_and(|s| s.trim_start().to_ascii_uppercase().starts_with("CREATE VIRTUAL"));
        let shape = if kind == "table" && !virtual_table { table_shape(conn, &name)? } else { String::new() };
        let text = normalize(sql.as_deref());
        out.insert(name, Object { kind, table, shape, text, sql });
    }
    Ok(out)
}

/// The objects a store of format `version` with `collections` has.
pub(crate) fn expected(version: u32, collections: &[Collection]) -> Result<BTreeMap<String, Object>> {
    let conn = Connection::open_in_memory()?;
    crate::engine::store::apply_format(&conn, version)?;
    for c in collections {
        crate::data::collections::create_tables(&conn, c)?;
    }
    actual(&conn)
}

/// Compares, naming each object that is unknown, missing or different. Every object's SQL
/// text is compared (a CHECK constraint lives only there); for `record_tables`, whose text
/// ALTER TABLE rewrites as value columns come and go, the column definitions are compared as
/// a set.
pub(crate) fn compare(
    found: &BTreeMap<String, Object>,
    expected: &BTreeMap<String, Object>,
    record_tables: &std::collections::BTreeSet<String>,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for (name, have) in found {
        match expected.get(name) {
            None => out.push(Mismatch {
                name: name.clone(),
                kind: have.kind.clone(),
                detail: format!("a {} cairn did not create (on `{}`)", have.kind, have.table),
                unknown: true,
            }),
            Some(want)
                if want.kind != have.kind
                    || want.table != have.table
                    || want.shape != have.shape
                    || !same_text(&want.text, &have.text, record_tables.contains(name)) =>
            {
                out.push(Mismatch {
                    name: name.clone(),
                    kind: have.kind.clone(),
                    detail: format!("this {} differs from what cairn creates", have.kind),
                    unknown: false,
                })
            }
            Some(_) => {}
        }
    }
    for (name, want) in expected.iter().filter(|(name, _)| !found.contains_key(*name)) {
        out.push(Mismatch {
            name: name.clone(),
            kind: want.kind.clone(),
            detail: format!("this {} of cairn's is missing", want.kind),
            unknown: false,
        });
    }
    out
}

/// A table's columns (name, type, not null, default, primary key, hidden) in name order, and
/// whether it is STRICT or WITHOUT ROWID.
fn table_shape(conn: &Connection, name: &str) -> Result<String> {
    let mut columns: Vec<String> = conn
        .prepare("SELECT name, type, \"notnull\", dflt_value, pk, hidden FROM pragma_table_xinfo(?1)")?
        .query_map([name], |r| {
            Ok(format!(
                "{} {} {} {:?} {} {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    columns.sort();
    let flags: Option<(i64, i64)> = conn
        .prepare("SELECT wr, strict FROM pragma_table_list WHERE schema = 'main' AND name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .ok();
    Ok(format!("{flags:?} {}", columns.join("; ")))
}

/// True when two CREATE statements are the same; for a record table, whatever order its
/// column definitions were added in.
fn same_text(want: &str, have: &str, record_table: bool) -> bool {
    if !record_table {
        return want == have;
    }
    let parts = |sql: &str| -> Option<(String, Vec<String>, String)> {
        let open = sql.find('(')?;
        let close = sql.rfind(')')?;
        let mut defs = Vec::new();
        let (mut depth, mut quoted, mut from) = (0i32, false, open + 1);
        for (i, ch) in sql.char_indices().take(close).skip(open + 1) {
            match ch {
                '"' => quoted = !quoted,
                '(' if !quoted => depth += 1,
                ')' if !quoted => depth -= 1,
                ',' if !quoted && depth == 0 => {
                    defs.push(sql[from..i].trim().to_string());
                    from = i + 1;
                }
                _ => {}
            }
        }
        defs.push(sql[from..close].trim().to_string());
        defs.sort();
        Some((sql[..open].to_string(), defs, sql[close..].to_string()))
    };
    parts(want).is_some_and(|w| parts(have) == Some(w))
}

fn normalize(sql: Option<&str>) -> String {
    sql.map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_store_holds_exactly_the_expected_objects_and_planted_ones_are_named() {
        let (_dir, store) = crate::engine::store::temp_store();
        let schema = |fields: serde_json::Value| {
            serde_json::from_value::<crate::CollectionSchema>(json!({"name": "notes", "fields": fields}))
                .expect("schema")
        };
        store.create_collection(schema(json!([{"name": "title", "type": "text", "fulltext": true}]))).expect("create");
        // Added columns rewrite the table's SQL: still the same shape as a fresh create.
        let indexed = json!([{"name": "title", "type": "text", "fulltext": true},
                             {"name": "n", "type": "integer", "indexed": true},
                             {"name": "tags", "type": "tags", "indexed": true}]);
        store.update_collection(schema(indexed)).expect("update");
        let conn = store.reader().expect("reader");
        let collections = crate::data::collection::load_all(&conn).expect("collections");
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
        let want = expected(version, &collections).expect("expected");
        let found = actual(&conn).expect("actual");
        let records: std::collections::BTreeSet<String> = collections.iter().map(|c| c.table.clone()).collect();
        assert_eq!(compare(&found, &want, &records), Vec::new());
        drop(conn);

        let db = Connection::open(store.dir().join(crate::engine::layout::DB_FILE)).expect("db");
        db.execute_batch(
            "CREATE TABLE loot (x); CREATE VIEW peek AS SELECT 1;
             CREATE TRIGGER grab AFTER INSERT ON cairn_changes BEGIN INSERT INTO loot VALUES (new.seq); END;
             DROP INDEX cairn_changes_by_key;",
        )
        .expect("plant");
        let found = actual(&db).expect("actual");
        let mut got: Vec<(String, bool)> =
            compare(&found, &want, &records).into_iter().map(|m| (m.name, m.unknown)).collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("cairn_changes_by_key".to_string(), false),
                ("grab".to_string(), true),
                ("loot".to_string(), true),
                ("peek".to_string(), true)
            ]
        );
    }
}
