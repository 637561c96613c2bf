//! Full-text search (CORE-7): FTS5 over a collection's `fulltext` fields.
//!
//! Each collection with full-text fields has an FTS5 table `c_<name>__fts` (the record id
//! unindexed, then one column per field; tags are indexed as their words) and a map
//! `c_<name>__fts_ids` from record id to FTS row, both written in the same transaction as the
//! record. The tokenizer folds case and removes diacritics, so `resume` finds `Résumé`.
//! Results are ranked by bm25, come with highlighted snippets, combine with a filter and page
//! by offset (ranks shift as the corpus changes, so a keyset cursor could not be exact).
//!
//! Search terms are not passed to FTS5 raw: they are split into words, `prefix*` words and
//! `"quoted phrases"`, each quoted for FTS5, and all must match. So no input is a syntax error
//! and none can reach another column or operator.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::data::collection::{self, Collection};
use crate::data::query::MAX_LIMIT;
use crate::engine::sql::quote;
use crate::engine::store::Store;
use crate::error::{Error, Result};

pub(crate) fn fts_table(collection: &str) -> String {
    format!("c_{collection}__fts")
}

pub(crate) fn fts_ids_table(collection: &str) -> String {
    format!("c_{collection}__fts_ids")
}

/// The text a field contributes to the index.
pub(crate) fn field_text(body: &Map<String, Value>, field: &str) -> Option<String> {
    match body.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")),
        _ => None,
    }
}

/// Replaces a record's FTS row: removes the old one (if any), adds `body` (if live).
pub(crate) fn update_fts(conn: &Connection, c: &Collection, id: &str, body: Option<&Map<String, Value>>) -> Result<()> {
    if c.fulltext_fields.is_empty() {
        return Ok(());
    }
    let (fts, ids) = (quote(&fts_table(c.name())), quote(&fts_ids_table(c.name())));
    let old: Option<i64> = conn
        .prepare_cached(&format!("SELECT fts_rowid FROM {ids} WHERE id = ?1"))?
        .query_row([id], |r| r.get(0))
        .optional()?;
    if let Some(rowid) = old {
        conn.prepare_cached(&format!("DELETE FROM {fts} WHERE rowid = ?1"))?.execute([rowid])?;
        conn.prepare_cached(&format!("DELETE FROM {ids} WHERE id = ?1"))?.execute([id])?;
    }
    let Some(body) = body else { return Ok(()) };
    let columns: Vec<String> = c.fulltext_fields.iter().map(|f| quote(f)).collect();
    let marks: Vec<String> = (2..=c.fulltext_fields.len() + 1).map(|i| format!("?{i}")).collect();
    let sql = format!("INSERT INTO {fts} (id, {}) VALUES (?1, {})", columns.join(", "), marks.join(", "));
    let mut values: Vec<Option<String>> = vec![Some(id.to_string())];
    values.extend(c.fulltext_fields.iter().map(|f| field_text(body, f)));
    conn.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(values))?;
    let rowid = conn.last_insert_rowid();
    conn.prepare_cached(&format!("INSERT INTO {ids} (id, fts_rowid) VALUES (?1, ?2)"))?.execute(params![id, rowid])?;
    Ok(())
}

/// Makes the FTS table of `new` match its full-text fields: rebuilt from the live records
/// when the set of fields changed, dropped when there are none.
pub(crate) fn sync_fts(
    conn: &Connection,
    old: Option<&Collection>,
    new: &Collection,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let before = old.map(|o| o.fulltext_fields.clone()).unwrap_or_default();
    if before == new.fulltext_fields {
        return Ok(());
    }
    let (fts, ids) = (quote(&fts_table(new.name())), quote(&fts_ids_table(new.name())));
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {fts}; DROP TABLE IF EXISTS {ids};"))?;
    if new.fulltext_fields.is_empty() {
        return Ok(());
    }
    let columns: Vec<String> = new.fulltext_fields.iter().map(|f| quote(f)).collect();
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE {fts} USING fts5(id UNINDEXED, {}, tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3');
         CREATE TABLE {ids} (id TEXT PRIMARY KEY NOT NULL, fts_rowid INTEGER NOT NULL) WITHOUT ROWID, STRICT;",
        columns.join(", ")
    ))?;
    let mut scan = crate::data::record::ScanOptions::default();
    let mut done = 0u64;
    loop {
        let page = crate::data::record::scan(conn, new, &scan)?;
        let Some(last) = page.last() else { break };
        scan.after = Some(last.id.clone());
        for record in &page {
            update_fts(conn, new, &record.id, Some(&record.body))?;
            done += 1;
        }
        progress(done);
    }
    Ok(())
}

/// A full-text search. Defaults: no filter, 20 hits, the collection's summary fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Search {
    /// Words (all must match), `prefix*` words and `"quoted phrases"`.
    pub terms: String,
    /// What the hits must also match (see `docs/query.md`): filter text or a [`Condition`](crate::Condition).
    pub filter: Option<crate::data::condition::Condition>,
    /// Hits per page (1 to 10,000). Default 20.
    pub limit: usize,
    /// Skip this many hits.
    pub offset: usize,
    /// Fields to return with each hit; `None` means the summary fields.
    pub fields: Option<Vec<String>>,
    /// Marks put around matched words in snippets. Default `[` and `]`.
    pub highlight: (String, String),
}

impl Default for Search {
    fn default() -> Self {
        Search {
            terms: String::new(),
            filter: None,
            limit: 20,
            offset: 0,
            fields: None,
            highlight: ("[".into(), "]".into()),
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Hit {
    /// The record id.
    pub id: String,
    /// bm25 rank: lower is better.
    pub rank: f64,
    /// The best-matching passage, matched words between the highlight marks.
    pub snippet: String,
    /// The requested fields.
    pub fields: Map<String, Value>,
    /// Requested encrypted fields it has but this handle cannot open (the key is locked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sealed: Vec<String>,
}

/// Turns user terms into an FTS5 query of quoted terms, all required.
pub(crate) fn fts_query(terms: &str) -> Result<String> {
    let mut parts = Vec::new();
    let mut rest = terms.trim();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('"') {
            let end = after.find('"').unwrap_or(after.len());
            let phrase = after[..end].trim();
            if !phrase.is_empty() {
                parts.push(format!("\"{}\"", phrase.replace('"', "\"\"")));
            }
            rest = after.get(end + 1..).unwrap_or("").trim_start();
            continue;
        }
        let end = rest.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(rest.len());
        let word = &rest[..end];
        rest = rest[end..].trim_start();
        let (stem, prefix) = match word.strip_suffix('*') {
            Some(stem) => (stem.trim_end_matches('*'), true),
            None => (word, false),
        };
        // Punctuation alone (e.g. "-" or "&") is not a term.
        if !stem.chars().any(char::is_alphanumeric) {
            continue;
        }
        parts.push(format!("\"{}\"{}", stem.replace('"', "\"\""), if prefix { "*" } else { "" }));
    }
    if parts.is_empty() {
        return Err(Error::InvalidQuery("search terms are empty: give at least one word".into()));
    }
    Ok(parts.join(" AND "))
}

impl Store {
    /// Full-text search over a collection's `fulltext` fields, best matches first.
    pub fn search(&self, collection: &str, search: &Search) -> Result<Vec<Hit>> {
        let conn = self.reader()?;
        let c = collection::load(&conn, collection)?;
        if c.fulltext_fields.is_empty() {
            return Err(Error::InvalidQuery(format!(
                "collection `{collection}` has no fulltext fields; flag some with `fulltext`"
            )));
        }
        if search.limit == 0 || search.limit > MAX_LIMIT {
            return Err(Error::InvalidQuery(format!("limit must be between 1 and {MAX_LIMIT}")));
        }
        let matched = fts_query(&search.terms)?;
        let fields = crate::data::query::projection(&c, search.fields.as_ref())?;
        let (filter_sql, mut params, needs_body) = match &search.filter {
            Some(filter) => crate::data::query::compile_filter(&c, filter)?,
            None => ("1".to_string(), Vec::new(), false),
        };
        let (fts, t) = (quote(&fts_table(c.name())), quote(&c.table));
        // Soft-deleted records leave the full-text index, so without a filter the page is
        // chosen from the index alone; a filter needs each match's record row (and body).
        let record_join = match (&search.filter, needs_body) {
            (None, _) => String::new(),
            (Some(_), false) => format!("JOIN {t} r ON r.id = f.id AND r.deleted_at IS NULL"),
            (Some(_), true) => {
                format!("JOIN {t} r ON r.id = f.id AND r.deleted_at IS NULL JOIN cairn_changes b ON b.seq = r.seq")
            }
        };
        let n = params.len();
        let (m, a, b, l, o) = (n + 1, n + 2, n + 3, n + 4, n + 5);
        params.extend([
            rusqlite::types::Value::Text(matched),
            rusqlite::types::Value::Text(search.highlight.0.clone()),
            rusqlite::types::Value::Text(search.highlight.1.clone()),
            rusqlite::types::Value::Integer(search.limit as i64),
            rusqlite::types::Value::Integer(search.offset as i64),
        ]);
        // The page is chosen first (ties in rank broken by index row); record rows, bodies
        // and snippets are read for its rows only. CROSS JOIN fixes that join order: the
        // planner would otherwise start from the whole match and look each row up in the page.
        let sql = format!(
            "SELECT r.id, p.rank, snippet({fts}, -1, ?{a}, ?{b}, '…', 16), c.after, r.sha256
             FROM (SELECT f.rowid AS fts_rowid, f.rank AS rank FROM {fts} f {record_join}
                   WHERE {fts} MATCH ?{m} AND {filter_sql}
                   ORDER BY f.rank, f.rowid LIMIT ?{l} OFFSET ?{o}) p
             CROSS JOIN {fts} ON {fts}.rowid = p.fts_rowid AND {fts} MATCH ?{m}
             CROSS JOIN {t} r ON r.id = {fts}.id AND r.deleted_at IS NULL
             CROSS JOIN cairn_changes c ON c.seq = r.seq
             ORDER BY p.rank, p.fts_rowid"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        let mut hits = Vec::new();
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let body: Option<Vec<u8>> = row.get(3)?;
            let sha: Vec<u8> = row.get(4)?;
            let mut all =
                crate::data::record::verified_body(&conn, c.name(), &id, body.as_deref().unwrap_or_default(), &sha)?;
            let mut fields = fields.iter().filter_map(|f| all.remove(f).map(|v| (f.clone(), v))).collect();
            let sealed = self.open_body(&conn, &c.schema, &id, &mut fields)?;
            hits.push(Hit {
                rank: row.get(1)?,
                snippet: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
                fields,
                id,
                sealed,
            });
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::fts_query;

    #[test]
    fn user_terms_become_safe_fts_queries() {
        assert_eq!(fts_query("meet* acme").expect("q"), r#""meet"* AND "acme""#);
        assert_eq!(fts_query(r#""checkout flow" retry"#).expect("q"), r#""checkout flow" AND "retry""#);
        assert_eq!(
            fts_query(r#"don't OR name:x NEAR( "a""#).expect("q"),
            r#""don't" AND "OR" AND "name:x" AND "NEAR(" AND "a""#
        );
        assert_eq!(fts_query("a\"b").expect("q"), r#""a" AND "b""#);
        assert!(fts_query("  - & ").is_err());
        assert!(fts_query("").is_err());
    }
}
