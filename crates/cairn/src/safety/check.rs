//! `check` (SAFE-3): everything that can be verified about a store, reported, nothing changed
//! but the stray-file guard's moves.
//!
//! In order: SQLite's `integrity_check`; the WAL file's header; every record (its body against
//! its checksum, its row against the change-log entry that wrote it: collection, id, version,
//! deleted flag, times); the change log (every row's hash, seqs 1..max without gaps, every
//! prev_seq pointing back); value-column, tag and full-text indexes against the bodies; blob
//! hashes and reference counts; stray files. A problem names where it is and what is wrong;
//! the same checks verify backups (see `backup`), where they run on the copy.
//!
//! Problems carry what `repair` needs to act on them (collection and id, seq, or hash).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::data::collection::Collection;
use crate::engine::change::Seq;
use crate::engine::layout::DB_FILE;
use crate::engine::sql::{quote, tags_table, value_column};
use crate::engine::store::Progress;
use crate::engine::store::Store;
use crate::error::{Error, Result};

/// What kind of damage a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// SQLite cannot use the database as it is: `integrity_check` failed, the file does not
    /// open, or one of cairn's tables or indexes is missing or altered (`repair` rebuilds it).
    Integrity,
    /// The write-ahead log's header is not a valid WAL header for this database.
    Wal,
    /// A record's body failed its checksum, or its row disagrees with the change log.
    Record,
    /// A change-log entry failed its hash, or the log has a gap or a bad link.
    ChangeLog,
    /// A value column or the tags table disagrees with a record's body.
    Index,
    /// The full-text index disagrees with a record's body.
    FullText,
    /// A blob's content does not match its hash, or its file is missing.
    Blob,
    /// A blob's reference count disagrees with the links in the records.
    BlobRefs,
    /// A stray database copy or orphaned journal file (moved to quarantine when the store was
    /// open for writing).
    StrayFile,
    /// A collection's catalog row, a setting or a setting definition disagrees with the
    /// change log that wrote it.
    Catalog,
    /// The database holds a table, index, trigger or view cairn did not create (`repair`
    /// moves it into quarantine). One of cairn's own missing or altered is [`Integrity`].
    ///
    /// [`Integrity`]: ProblemKind::Integrity
    SchemaObject,
    /// An audit-trail entry was edited, inserted or removed, or the trail's head disagrees.
    Audit,
    /// A temporary file or folder an interrupted operation left behind.
    Leftover,
}

/// One thing `check` found wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Problem {
    pub kind: ProblemKind,
    /// Where: `sessions/abc`, `change log entry 17`, `blob 3fa2…`, a path.
    pub location: String,
    pub detail: String,
    /// The record involved, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The change-log entry involved, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
    /// The blob involved, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// The SQL object involved (table, index, trigger, view), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

impl Problem {
    fn new(kind: ProblemKind, location: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            location: location.into(),
            detail: detail.into(),
            collection: None,
            id: None,
            seq: None,
            hash: None,
            object: None,
        }
    }

    fn record(kind: ProblemKind, collection: &str, id: &str, detail: impl Into<String>) -> Self {
        Problem {
            collection: Some(collection.to_string()),
            id: Some(id.to_string()),
            ..Problem::new(kind, format!("{collection}/{id}"), detail)
        }
    }
}

/// What [`Store::check`] covers. Defaults: everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckOptions {
    /// Re-hash every blob (the slowest part on stores with many attachments). Default: true.
    pub blobs: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { blobs: true }
    }
}

/// What [`Store::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CheckReport {
    pub collections: u64,
    /// Records checked, deleted ones included.
    pub records: u64,
    /// Change-log entries checked.
    pub changes: u64,
    /// Blobs re-hashed and their content bytes.
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Everything wrong; empty when the store is whole.
    pub problems: Vec<Problem>,
    /// Stray files found at open and now, moved into quarantine unless the store is open
    /// read-only (then they are also problems).
    pub strays: Vec<crate::safety::guard::StrayFile>,
    /// What interrupted operations left (also problems; the next writable open removes them).
    pub leftovers: Vec<crate::safety::leftovers::Leftover>,
}

impl CheckReport {
    /// The report for a store that could not be opened because its database is damaged
    /// (`None` for other reasons a store does not open: missing, locked, another program's).
    pub fn from_open_error(error: &Error) -> Option<CheckReport> {
        let Error::Corruption { location, detail } = error else { return None };
        let problem = Problem::new(ProblemKind::Integrity, location.clone(), detail.clone());
        Some(CheckReport { problems: vec![problem], ..CheckReport::default() })
    }

    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems of one kind.
    pub fn of_kind(&self, kind: ProblemKind) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(move |p| p.kind == kind)
    }
}

impl Store {
    /// Verifies the whole store (see the module docs) and reports every problem; exits early
    /// only when the database cannot be read at all. Stray files found by the guard when the
    /// store was opened are included.
    pub fn check(&self, options: &CheckOptions, progress: Progress<'_>) -> Result<CheckReport> {
        // Strays first: SQLite would take a stray `store.db-journal` for its own hot journal.
        let mut report = CheckReport { strays: self.strays().to_vec(), ..CheckReport::default() };
        report.strays.extend(crate::safety::guard::sweep(self.dir(), self.is_read_only())?);
        let conn = self.reader()?;
        integrity(&conn, &mut report)?;
        wal_header(self.dir(), &conn, &mut report)?;
        // The catalog against the change log; when its rows cannot be used, the log's schemas
        // still let every record be checked.
        let derived = crate::safety::catalog::Catalog::from_log(&conn);
        match (&derived, crate::safety::catalog::Catalog::stored(&conn)) {
            (Ok(derived), Ok(stored)) => {
                for (location, detail) in stored.differences(derived) {
                    report.problems.push(Problem::new(ProblemKind::Catalog, location, detail));
                }
            }
            (_, Err(e)) => report.problems.push(Problem::new(ProblemKind::Integrity, "catalog", e.to_string())),
            (Err(e), _) => {
                let detail = format!("could not be checked: {}", error_detail(e));
                report.problems.push(Problem::new(ProblemKind::Catalog, "catalog", detail));
            }
        }
        let collections = match crate::data::collection::load_all(&conn) {
            Ok(c) => c,
            Err(e) => match derived.as_ref().map(|d| d.collections()) {
                Ok(Ok(from_log)) => {
                    report.problems.push(Problem::new(ProblemKind::Catalog, "collections", e.to_string()));
                    from_log
                }
                _ => {
                    report.problems.push(Problem::new(ProblemKind::Integrity, "collections", e.to_string()));
                    return Ok(report);
                }
            },
        };
        let checked = check_objects(&conn, &collections, &mut report);
        unchecked(&mut report, ProblemKind::Integrity, "database schema", checked);
        report.collections = collections.len() as u64;
        // Only for progress: a table too damaged to count is reported by the checks below.
        let total: i64 = collections
            .iter()
            .map(|c| count(&conn, &format!("SELECT count(*) FROM {}", quote(&c.table))).unwrap_or(0))
            .sum();
        for c in &collections {
            let mut bodies = BTreeMap::new();
            let before = report.problems.len();
            let checked =
                check_records(&conn, c, &mut report, &mut bodies, &mut |done| progress("records", done, total as u64));
            unchecked(&mut report, ProblemKind::Record, c.name(), checked);
            // Index entries of records already reported damaged say nothing new.
            let damaged: BTreeSet<String> = report.problems[before..].iter().filter_map(|p| p.id.clone()).collect();
            let checked = check_indexes(&conn, c, &bodies, &damaged, &mut report);
            unchecked(&mut report, ProblemKind::Index, c.name(), checked);
        }
        let checked = check_change_log(&conn, &mut report, progress);
        unchecked(&mut report, ProblemKind::ChangeLog, "change log", checked);
        drop(conn);
        match self.verify_audit() {
            Ok(audit) => {
                for p in audit.problems {
                    let problem = Problem::new(ProblemKind::Audit, format!("audit entry {}", p.seq), p.detail);
                    report.problems.push(Problem { seq: Some(Seq(p.seq)), ..problem });
                }
            }
            Err(e) => unchecked(&mut report, ProblemKind::Audit, "audit trail", Err(e)),
        }
        if options.blobs {
            let blobs = match self.verify_blobs(progress) {
                Ok(blobs) => blobs,
                Err(e) => {
                    unchecked(&mut report, ProblemKind::Blob, "blobs", Err(e));
                    crate::blobs::VerifyReport::default()
                }
            };
            report.blobs = blobs.checked;
            report.blob_bytes = blobs.bytes;
            for (hash, detail) in blobs.corrupt {
                report.problems.push(Problem {
                    hash: Some(hash.to_string()),
                    ..Problem::new(ProblemKind::Blob, format!("blob {hash}"), detail)
                });
            }
            for hash in blobs.missing {
                report.problems.push(Problem {
                    hash: Some(hash.to_string()),
                    ..Problem::new(ProblemKind::Blob, format!("blob {hash}"), "its file is missing")
                });
            }
        }
        let conn = self.reader()?;
        let checked = check_blob_rows(self.dir(), &conn, &mut report);
        unchecked(&mut report, ProblemKind::Blob, "blob table", checked);
        let checked = check_refs(&conn, &mut report);
        unchecked(&mut report, ProblemKind::BlobRefs, "reference counts", checked);
        report.leftovers = crate::safety::leftovers::sweep(self.dir(), false)?;
        for left in &report.leftovers {
            let detail =
                format!("{} bytes an interrupted {} left; the next writable open removes it", left.bytes, left.what);
            report.problems.push(Problem::new(ProblemKind::Leftover, left.path.display().to_string(), detail));
        }
        for stray in report.strays.iter().filter(|s| s.moved_to.is_none()) {
            let (location, detail) = (stray.path.display().to_string(), stray.describe());
            report.problems.push(Problem::new(ProblemKind::StrayFile, location, detail));
        }
        Ok(report)
    }
}

/// A check that could not finish (SQLite could not read what it needed) is itself a problem;
/// the other checks still run.
fn unchecked(report: &mut CheckReport, kind: ProblemKind, location: &str, outcome: Result<()>) {
    if let Err(e) = outcome {
        let detail = format!("could not be checked: {}", error_detail(&e));
        let problem = Problem::new(kind, location, detail);
        let collection = matches!(kind, ProblemKind::Record | ProblemKind::Index).then(|| location.to_string());
        report.problems.push(Problem { collection, ..problem });
    }
}

fn count(conn: &Connection, sql: &str) -> Result<i64> {
    Ok(conn.query_row(sql, [], |r| r.get(0))?)
}

fn integrity(conn: &Connection, report: &mut CheckReport) -> Result<()> {
    // A damaged schema makes even the pragma fail to prepare: that too is a finding.
    let lines: rusqlite::Result<Vec<String>> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut stmt| stmt.query_map([], |r| crate::engine::sql::text_at(r, 0))?.collect());
    match lines {
        Ok(lines) if lines == ["ok"] => {}
        Ok(lines) => {
            for line in lines {
                report.problems.push(Problem::new(ProblemKind::Integrity, DB_FILE, line));
            }
        }
        Err(e) => report.problems.push(Problem::new(ProblemKind::Integrity, DB_FILE, e.to_string())),
    }
    Ok(())
}

/// The WAL's 32-byte header: magic, format 3007000, and the database's page size. A WAL
/// whose length is not a whole number of frames only has a torn last frame, which SQLite
/// ignores; that is not damage to committed data, so it is not reported.
fn wal_header(dir: &Path, conn: &Connection, report: &mut CheckReport) -> Result<()> {
    let path = dir.join(crate::engine::layout::WAL_FILE);
    let mut head = Vec::with_capacity(32);
    match std::fs::File::open(&path) {
        Ok(file) => file.take(32).read_to_end(&mut head).map_err(|e| Error::io("read", &path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    if head.is_empty() {
        return Ok(());
    }
    let word = |i: usize| head.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let page_size: i64 = count(conn, "PRAGMA page_size").unwrap_or(0);
    let problem = if head.len() < 32 {
        Some(format!("the header is {} bytes instead of 32", head.len()))
    } else if !matches!(word(0), Some(0x377f_0682 | 0x377f_0683)) {
        Some("it does not start with the WAL magic number".to_string())
    } else if word(4) != Some(3_007_000) {
        Some(format!("unknown WAL format {:?}", word(4)))
    } else if word(8).map(i64::from) != Some(page_size) {
        Some(format!("its page size {:?} is not the database's {page_size}", word(8)))
    } else {
        None
    };
    if let Some(detail) = problem {
        report.problems.push(Problem::new(ProblemKind::Wal, path.display().to_string(), detail));
    }
    Ok(())
}

/// Reads every record of `c` (deleted ones too) on its own, so that one damaged record does
/// not hide the others, and checks its row against the change log. Live bodies that verified
/// are left in `bodies` for the index checks.
fn check_records(
    conn: &Connection,
    c: &Collection,
    report: &mut CheckReport,
    bodies: &mut BTreeMap<String, Map<String, Value>>,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let listed: Vec<rusqlite::types::Value> = match conn
        .prepare(&format!("SELECT id FROM {} ORDER BY id", quote(&c.table)))?
        .query_map([], |r| crate::engine::sql::value_at(r, 0))?
        .collect::<rusqlite::Result<_>>()
    {
        Ok(ids) => ids,
        Err(e) => {
            let detail = format!("its records cannot be listed: {e}");
            report.problems.push(Problem::new(ProblemKind::Integrity, c.name(), detail));
            return Ok(());
        }
    };
    let mut ids = Vec::new();
    for id in listed {
        match id {
            rusqlite::types::Value::Text(id) => ids.push(id),
            other => {
                let detail = format!("a record's id is not text: {other:?}");
                let problem = Problem::new(ProblemKind::Record, format!("{}/?", c.name()), detail);
                report.problems.push(Problem { collection: Some(c.name().to_string()), ..problem });
            }
        }
    }
    let expected = latest_changes(conn, c.name())?;
    let present: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    for (id, (seq, op)) in &expected {
        if op != "purge" && !present.contains(id.as_str()) {
            let detail = format!("its row is missing; change log entry {seq} wrote its current version");
            report
                .problems
                .push(Problem { seq: Some(Seq(*seq)), ..Problem::record(ProblemKind::Record, c.name(), id, detail) });
        }
    }
    for id in ids.iter().filter(|id| !expected.contains_key(id.as_str())) {
        let detail = "no change-log entry ever wrote a record with this id";
        report.problems.push(Problem::record(ProblemKind::Record, c.name(), id, detail));
    }
    for id in ids {
        report.records += 1;
        if report.records.is_multiple_of(1000) {
            progress(report.records);
        }
        let record = match crate::data::record::read(conn, c, &id) {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            Err(e) => {
                let seq: Option<u64> =
                    conn.prepare_cached(&c.sql.head)?.query_row([&id], |r| r.get(0)).optional().unwrap_or(None);
                report.problems.push(Problem {
                    seq: seq.map(Seq),
                    ..Problem::record(ProblemKind::Record, c.name(), &id, error_detail(&e))
                });
                continue;
            }
        };
        // The entry's own hash is checked with the whole log below; here only what it says.
        let mismatch = match crate::data::changes::row_meta(conn, record.seq.0) {
            Ok(None) => Some(format!("change log entry {} that wrote it is missing", record.seq)),
            Err(e) => Some(format!("change log entry {} that wrote it is damaged: {}", record.seq, error_detail(&e))),
            Ok(Some(row)) => {
                let times = row_times(conn, record.seq.0, &row);
                if row.collection != c.name() || row.id != id {
                    Some(format!("change log entry {} belongs to `{}/{}`", record.seq, row.collection, row.id))
                } else if row.version != record.version {
                    Some(format!("its version {} is not the change log's {}", record.version, row.version))
                } else if row.deleted != record.deleted_at.is_some() {
                    Some("its deleted state disagrees with the change log".to_string())
                } else if row.at != record.updated_at.0 {
                    Some("its update time disagrees with the change log".to_string())
                } else if times.is_some_and(|(created, _)| created != record.created_at.0) {
                    Some("its creation time disagrees with the change log".to_string())
                } else if times.is_some_and(|(_, deleted)| deleted != record.deleted_at.map(|d| d.0)) {
                    Some("its deletion time disagrees with the change log".to_string())
                } else {
                    None
                }
            }
        };
        match mismatch {
            Some(detail) => report
                .problems
                .push(Problem { seq: Some(record.seq), ..Problem::record(ProblemKind::Record, c.name(), &id, detail) }),
            None if record.deleted_at.is_none() => {
                bodies.insert(id, record.body);
            }
            None => {}
        }
    }
    progress(report.records);
    Ok(())
}

/// For every record id of a collection (since it was last created), the seq and op of its
/// newest change-log entry that wrote it (grants and revokes do not).
pub(crate) fn latest_changes(conn: &Connection, collection: &str) -> Result<BTreeMap<String, (u64, String)>> {
    let created = [crate::data::changes::ChangeOp::CollectionCreate];
    let since = crate::data::changes::last_keyed_change(conn, collection, "", &created)?.unwrap_or(0);
    // SQLite takes the bare column `op` from the row holding max(seq).
    let rows = conn
        .prepare("SELECT record_id, max(seq), op FROM cairn_changes WHERE collection = ?1 AND record_id != '' AND seq > ?2 AND op NOT IN ('grant', 'revoke') GROUP BY record_id")?
        .query_map(rusqlite::params![collection, since], |r| {
            Ok((crate::engine::sql::text_at(r, 0)?, (r.get(1)?, crate::engine::sql::text_at(r, 2)?)))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// When the record's current incarnation was created, and since when it is deleted (if it
/// is): walking back its chain to the first entry or the one after a purge, and through the
/// run of deleted entries at its head. `None` when the chain is damaged (reported by the
/// change-log check).
pub(crate) fn row_times(
    conn: &Connection,
    seq: u64,
    row: &crate::data::changes::ChangeRow,
) -> Option<(i64, Option<i64>)> {
    let (mut created, mut deleted_since) = (row.at, row.deleted.then_some(row.at));
    let mut in_deleted_run = row.deleted;
    let (mut prev, mut at_seq) = (row.prev_seq, seq);
    while let Some(p) = prev {
        // Predecessors come strictly before: anything else is a damaged chain (reported by
        // the change-log check), and following it could go round forever.
        if p >= at_seq {
            return None;
        }
        at_seq = p;
        let (op, at, deleted, p_prev): (String, i64, bool, Option<u64>) = conn
            .prepare_cached("SELECT op, at, deleted, prev_seq FROM cairn_changes WHERE seq = ?1")
            .ok()?
            .query_row([p], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()
            .ok()??;
        if op == "purge" {
            break;
        }
        in_deleted_run &= deleted;
        if in_deleted_run {
            deleted_since = Some(at);
        }
        created = at;
        prev = p_prev;
    }
    Some((created, deleted_since))
}

fn error_detail(e: &Error) -> String {
    match e {
        Error::Corruption { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

/// Value columns, tag rows and full-text rows of the live records against their bodies.
fn check_indexes(
    conn: &Connection,
    c: &Collection,
    bodies: &BTreeMap<String, Map<String, Value>>,
    damaged: &BTreeSet<String>,
    report: &mut CheckReport,
) -> Result<()> {
    let table = quote(&c.table);
    for f in &c.sql.value_fields {
        let sql = format!("SELECT {} FROM {table} WHERE id = ?1", quote(&value_column(&f.name)));
        for (id, body) in bodies {
            let stored = conn.prepare_cached(&sql)?.query_row([id], |r| crate::engine::sql::value_at(r, 0))?;
            let expected =
                body.get(&f.name).map_or(rusqlite::types::Value::Null, |v| crate::data::index::column_value(f, v));
            if stored != expected {
                let detail = format!("index column of `{}` holds {stored:?}, the body says {expected:?}", f.name);
                report.problems.push(Problem::record(ProblemKind::Index, c.name(), id, detail));
            }
        }
    }
    if !c.tag_fields.is_empty() {
        let sql = format!("SELECT field, tag, id FROM {}", quote(&tags_table(c.name())));
        let stored: BTreeSet<(String, String, String)> = match conn
            .prepare(&sql)?
            .query_map([], |r| {
                Ok((
                    crate::engine::sql::text_at(r, 0)?,
                    crate::engine::sql::text_at(r, 1)?,
                    crate::engine::sql::text_at(r, 2)?,
                ))
            })?
            .collect()
        {
            Ok(rows) => rows,
            Err(e) => {
                report.problems.push(Problem::new(
                    ProblemKind::Index,
                    c.name(),
                    format!("its tags index cannot be read: {e}"),
                ));
                BTreeSet::new()
            }
        };
        let mut expected = BTreeSet::new();
        for (id, body) in bodies {
            for field in &c.tag_fields {
                for tag in body.get(field).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                    expected.insert((field.clone(), tag.to_string(), id.clone()));
                }
            }
        }
        for (field, tag, id) in expected.symmetric_difference(&stored).filter(|(_, _, id)| !damaged.contains(id)) {
            let detail = if stored.contains(&(field.clone(), tag.clone(), id.clone())) {
                format!("the tags index lists tag {tag:?} of `{field}` that the body does not have")
            } else {
                format!("the tags index lacks tag {tag:?} of `{field}`")
            };
            report.problems.push(Problem::record(ProblemKind::Index, c.name(), id, detail));
        }
    }
    check_fulltext(conn, c, bodies, damaged, report)
}

fn check_fulltext(
    conn: &Connection,
    c: &Collection,
    bodies: &BTreeMap<String, Map<String, Value>>,
    damaged: &BTreeSet<String>,
    report: &mut CheckReport,
) -> Result<()> {
    if c.fulltext_fields.is_empty() {
        return Ok(());
    }
    let (fts, ids) =
        (quote(&crate::data::search::fts_table(c.name())), quote(&crate::data::search::fts_ids_table(c.name())));
    let columns: Vec<String> = c.fulltext_fields.iter().map(|f| quote(f)).collect();
    let sql = format!(
        "SELECT f.id, {} FROM {ids} i JOIN {fts} f ON f.rowid = i.fts_rowid WHERE i.id = ?1",
        columns.join(", ")
    );
    for (id, body) in bodies {
        let row = conn.prepare_cached(&sql)?.query_row([id], |r| {
            let mut values = Vec::new();
            for i in 0..=columns.len() {
                values.push(r.get::<_, Option<String>>(i)?);
            }
            Ok(values)
        });
        let detail = match row.optional() {
            Err(e) => Some(format!("its full-text row cannot be read: {e}")),
            Ok(None) => Some("it is missing from the full-text index".to_string()),
            Ok(Some(values)) => {
                let mut expected = vec![Some(id.clone())];
                expected.extend(c.fulltext_fields.iter().map(|f| crate::data::search::field_text(body, f)));
                (values != expected).then(|| "its full-text row differs from its body".to_string())
            }
        };
        if let Some(detail) = detail {
            report.problems.push(Problem::record(ProblemKind::FullText, c.name(), id, detail));
        }
    }
    let indexed = count(conn, &format!("SELECT count(*) FROM {ids}"))?;
    if indexed != bodies.len() as i64 && damaged.is_empty() {
        let detail = format!("the full-text index lists {indexed} records, {} are live and whole", bodies.len());
        report.problems.push(Problem::new(ProblemKind::FullText, c.name(), detail));
    }
    Ok(())
}

/// The database's tables, indexes, triggers and views against what cairn creates for this
/// store's format and collections.
fn check_objects(conn: &Connection, collections: &[Collection], report: &mut CheckReport) -> Result<()> {
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let expected = crate::safety::objects::expected(version, collections)?;
    let found = crate::safety::objects::actual(conn)?;
    let records = collections.iter().map(|c| c.table.clone()).collect();
    for m in crate::safety::objects::compare(&found, &expected, &records) {
        // Only objects someone added can be set aside; one of cairn's (or SQLite's own
        // `sqlite_*`) missing, altered or renamed is structural damage.
        let kind = if m.unknown && !m.name.starts_with("sqlite_") {
            ProblemKind::SchemaObject
        } else {
            ProblemKind::Integrity
        };
        let problem = Problem::new(kind, format!("{} `{}`", m.kind, m.name), m.detail);
        report.problems.push(Problem { object: Some(m.name), ..problem });
    }
    Ok(())
}

/// Every change-log row's hash; seqs 1..max with no gap; every prev_seq pointing back.
fn check_change_log(conn: &Connection, report: &mut CheckReport, progress: Progress<'_>) -> Result<()> {
    let max: u64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM cairn_changes", [], |r| r.get(0))?;
    let mut expected = 1u64;
    let seqs: Vec<u64> = conn
        .prepare("SELECT seq FROM cairn_changes ORDER BY seq")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for seq in seqs {
        report.changes += 1;
        if report.changes.is_multiple_of(1000) {
            progress("change log", report.changes, max);
        }
        if seq > expected && seq - expected <= 1000 {
            // One problem per missing entry, so that repair can bring each back from a backup.
            for missing in expected..seq {
                let problem =
                    Problem::new(ProblemKind::ChangeLog, format!("change log entry {missing}"), "it is missing");
                report.problems.push(Problem { seq: Some(Seq(missing)), ..problem });
            }
        } else if seq != expected {
            let detail = format!("entries {expected} to {} are missing", seq.saturating_sub(1));
            report.problems.push(Problem::new(ProblemKind::ChangeLog, "change log", detail));
        }
        expected = seq + 1;
        let located = |detail: String| Problem {
            seq: Some(Seq(seq)),
            ..Problem::new(ProblemKind::ChangeLog, format!("change log entry {seq}"), detail)
        };
        match crate::data::changes::verified_row(conn, seq) {
            Ok(Some(row)) if row.prev_seq.is_some_and(|p| p >= seq) => {
                report.problems.push(located(format!("it names a later entry {:?} as its predecessor", row.prev_seq)));
            }
            Ok(_) => {}
            Err(e) => {
                let mut problem = located(error_detail(&e));
                let owner: Option<(String, String)> = conn
                    .query_row("SELECT collection, record_id FROM cairn_changes WHERE seq = ?1", [seq], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()
                    .unwrap_or(None);
                if let Some((collection, id)) = owner {
                    problem.collection = Some(collection);
                    problem.id = Some(id);
                }
                report.problems.push(problem);
            }
        }
    }
    progress("change log", report.changes, max);
    Ok(())
}

/// Each blob row's codec is one cairn writes, and its file has the size the row says.
fn check_blob_rows(dir: &Path, conn: &Connection, report: &mut CheckReport) -> Result<()> {
    let rows: Vec<(String, String, u64)> = conn
        .prepare("SELECT hash, codec, stored_size FROM cairn_blobs")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let already: BTreeSet<String> = report.of_kind(ProblemKind::Blob).filter_map(|p| p.hash.clone()).collect();
    for (hash, codec, stored_size) in rows.into_iter().filter(|r| !already.contains(&r.0)) {
        let valid_hash = crate::engine::hash::is_hex_digest(&hash);
        let detail = if !valid_hash {
            Some("its hash is not a SHA-256".to_string())
        } else if codec != "raw" && codec != "zstd" {
            Some(format!("unknown codec {codec:?}"))
        } else {
            let path = crate::blobs::blob_path(dir, &hash, crate::blobs::Codec::parse(&codec));
            match std::fs::metadata(&path) {
                Ok(m) if m.len() == stored_size => None,
                Ok(m) => Some(format!("its file is {} bytes, the store says {stored_size}", m.len())),
                Err(_) => Some("its file is missing".to_string()),
            }
        };
        if let Some(detail) = detail {
            report.problems.push(Problem {
                hash: Some(hash.clone()),
                ..Problem::new(ProblemKind::Blob, format!("blob {hash}"), detail)
            });
        }
    }
    Ok(())
}

/// Reference counts against the links of the live records.
fn check_refs(conn: &Connection, report: &mut CheckReport) -> Result<()> {
    let (counts, dangling) = match crate::blobs::count_links(conn) {
        Ok(found) => found,
        Err(e) if e.is_corruption() => {
            let detail = format!("not checked: a record could not be read ({e})");
            report.problems.push(Problem::new(ProblemKind::BlobRefs, "reference counts", detail));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for (collection, id, field, hash) in dangling {
        let detail = format!("field `{field}` links blob {hash}, which the store does not have");
        report
            .problems
            .push(Problem { hash: Some(hash), ..Problem::record(ProblemKind::BlobRefs, &collection, &id, detail) });
    }
    let rows: Vec<(String, u64)> = conn
        .prepare("SELECT hash, refs FROM cairn_blobs")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (hash, refs) in rows {
        let actual = counts.get(&hash).copied().unwrap_or(0);
        if actual != refs {
            let detail = format!("its count is {refs}, the records link it {actual} times");
            report.problems.push(Problem {
                hash: Some(hash.clone()),
                ..Problem::new(ProblemKind::BlobRefs, format!("blob {hash}"), detail)
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_header_is_checked_against_the_database() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let conn = Connection::open(tmp.path().join(DB_FILE)).expect("db");
        let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).expect("page size");
        let header = |magic: u32, format: u32, page: u32| {
            let mut h = Vec::new();
            for word in [magic, format, page, 0, 0, 0, 0, 0] {
                h.extend_from_slice(&word.to_be_bytes());
            }
            h
        };
        let wal = tmp.path().join(format!("{DB_FILE}-wal"));
        let cases = [
            (header(0x377f_0682, 3_007_000, page_size), None),
            (header(0x377f_0683, 3_007_000, page_size), None),
            (header(0x1234_5678, 3_007_000, page_size), Some("magic")),
            (header(0x377f_0682, 3_007_001, page_size), Some("format")),
            (header(0x377f_0682, 3_007_000, page_size * 2), Some("page size")),
            (header(0x377f_0682, 3_007_000, page_size)[..20].to_vec(), Some("20 bytes")),
        ];
        for (bytes, expected) in cases {
            std::fs::write(&wal, &bytes).expect("wal");
            let mut report = CheckReport::default();
            wal_header(tmp.path(), &conn, &mut report).expect("check");
            match expected {
                None => assert!(report.is_ok(), "{:?}", report.problems),
                Some(word) => {
                    assert_eq!(report.problems.len(), 1);
                    assert_eq!(report.problems[0].kind, ProblemKind::Wal);
                    assert!(report.problems[0].detail.contains(word), "{:?}", report.problems[0]);
                }
            }
        }
        std::fs::remove_file(&wal).expect("remove");
        let mut report = CheckReport::default();
        wal_header(tmp.path(), &conn, &mut report).expect("no WAL");
        assert!(report.is_ok());
    }
}
