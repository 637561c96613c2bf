//! Rebuilding a store's database from what can still be read, when SQLite cannot use it.
//!
//! `repair` rebuilds when the damage is structural: SQLite cannot open the file, a b-tree is
//! malformed, one of cairn's tables or indexes is missing or altered, or the catalog disagrees
//! with the change log. Patching such a file in place is not possible (SQLite refuses to
//! touch a malformed b-tree), so a fresh database is built beside it and swapped in.
//!
//! Where the rows come from, for each table:
//! - `cairn_changes` and `cairn_audit`: every row the old file still holds, read page by page
//!   (see `salvage`): first by walking the table's b-tree, then from every other leaf page
//!   (rows under a damaged interior page); a row is kept only if it verifies against its own
//!   hash. Entries still missing come from the verified backups, newest first, again only if
//!   they verify. The seq (and for the audit trail, the hash chain) names each entry forever,
//!   so a backup's copy is the original.
//! - `cairn_dicts`: the same, verified by their keys (a dictionary's key is its SHA-256).
//! - `cairn_meta`, `cairn_keyring`, `cairn_keys`, `cairn_migrations`, `cairn_users`,
//!   `cairn_tokens`, `cairn_idempotency`, `cairn_grants`: the rows of the old
//!   table, then rows the newest backup has and the old table lacks.
//! - `cairn_collections`, `cairn_settings`, `cairn_setting_defs`: derived from the change log
//!   (see `catalog`), as are every collection's record rows, value columns, tags and full-text
//!   index (the rows are derived data; see `repair`).
//! - `cairn_blobs`: the old rows whose files are there, then the backup's, then a row for each
//!   blob file no row lists; reference counts are recounted from the records.
//!
//! The new database is built in `.rebuild-staging/`, checked with `integrity_check`, fsynced,
//! and swapped in through the restore journal (the old `store.db`, `-wal` and `-shm` go into
//! the repair's quarantine folder). The caller holds the write lock.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use crate::engine::layout::DB_FILE;
use crate::engine::layout::REBUILD_STAGING_DIR;
use crate::engine::store::Progress;
use crate::error::{Error, Result};
use crate::safety::backup::Manifest;
use crate::safety::salvage::{Cell, Row, Salvage};
use rusqlite::types::Value;

/// What a rebuild found and where it took it from.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RebuildReport {
    /// Change-log entries read back from the damaged file.
    pub changes_salvaged: u64,
    /// Entries whose cell in the damaged file had one bit wrong, put right by their hash.
    pub changes_corrected: Vec<u64>,
    /// Entries kept as they are although they fail their hash: no source had a good copy
    /// (`repair` then deals with the records they belong to).
    pub changes_damaged: Vec<u64>,
    /// Change-log entries taken from backups (seq, backup id).
    pub changes_from_backups: Vec<(u64, String)>,
    /// Change-log entries no source had: seqs missing from 1 to the highest known.
    pub changes_lost: Vec<u64>,
    /// Audit entries read back, put right by their hash, and taken from backups (seq,
    /// backup id).
    pub audit_salvaged: u64,
    pub audit_corrected: Vec<u64>,
    pub audit_from_backups: Vec<(u64, String)>,
    /// Audit entries no source had.
    pub audit_lost: Vec<u64>,
    /// Tables (other than the change log and audit trail) that had rows only a backup could
    /// give: (table, backup id).
    pub tables_from_backups: Vec<(String, String)>,
    /// Records whose newest entry is lost, rebuilt from the newest entry that survived
    /// (`collection/id`, the lost seq).
    pub records_behind: Vec<(String, u64)>,
    /// Collections and record rows rebuilt.
    pub collections: u64,
    pub records: u64,
    pub blobs: u64,
    /// Leaf pages of the damaged file that could not be read.
    pub bad_pages: u64,
}

/// cairn's own tables that hold data nothing else can derive, with their column count and
/// the position of their `INTEGER PRIMARY KEY` (stored as the rowid), if any.
const KEPT_TABLES: [(&str, usize, Option<usize>); 8] = [
    ("cairn_meta", 2, None),
    ("cairn_keyring", 8, Some(0)),
    ("cairn_keys", 4, Some(0)),
    ("cairn_migrations", 8, Some(0)),
    ("cairn_users", 7, None),
    ("cairn_tokens", 9, None),
    ("cairn_idempotency", 6, None),
    ("cairn_grants", 8, None),
];

/// Builds a new database for the store in `dir` from its damaged one and `backups` (verified,
/// newest first), and swaps it in. The damaged files end up in `quarantine`.
pub(crate) fn rebuild(
    dir: &Path,
    quarantine: &Path,
    backups: &[(PathBuf, Manifest)],
    progress: Progress<'_>,
) -> Result<RebuildReport> {
    let staging = dir.join(REBUILD_STAGING_DIR);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io("remove", &staging, e))?;
    }
    std::fs::create_dir(&staging).map_err(|e| Error::io("create directory", &staging, e))?;
    let target = staging.join(DB_FILE);
    let mut report = RebuildReport::default();
    {
        let salvage = Salvage::open(&dir.join(DB_FILE))?;
        let conn = Connection::open(&target)?;
        conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
        crate::engine::functions::register(&conn)?;
        crate::engine::store::apply_format(&conn, crate::engine::store::FORMAT_VERSION)?;
        conn.execute_batch(&format!("PRAGMA user_version = {}", crate::engine::store::FORMAT_VERSION))?;
        let backups: Vec<(Connection, String)> = backups
            .iter()
            .filter_map(|(path, m)| {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                Connection::open_with_flags(path.join(DB_FILE), flags).ok().map(|c| (c, m.id.clone()))
            })
            .collect();
        conn.execute_batch("BEGIN")?;
        fill(&conn, &salvage, &backups, &mut report, progress)?;
        conn.execute_batch("COMMIT")?;
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(Error::Corruption {
                location: target.display().to_string(),
                detail: format!("the rebuilt database does not pass integrity_check: {check}"),
            });
        }
    }
    std::fs::File::open(&target).and_then(|f| f.sync_all()).map_err(|e| Error::io("fsync", &target, e))?;
    crate::engine::fsutil::sync_dir(&staging)?;
    let journal = crate::safety::restore::Journal {
        backup: "rebuild".into(),
        staging,
        replaced: quarantine.join("replaced"),
        items: crate::safety::restore::DATABASE_ITEMS.map(String::from).to_vec(),
    };
    crate::safety::restore::swap(dir, &journal)?;
    tracing::warn!(dir = %dir.display(), "rebuilt the database from what could be read and from backups");
    Ok(report)
}

fn fill(
    conn: &Connection,
    salvage: &Salvage,
    backups: &[(Connection, String)],
    report: &mut RebuildReport,
    progress: Progress<'_>,
) -> Result<()> {
    let roots: BTreeMap<String, u32> = salvage.schema().into_iter().map(|e| (e.name, e.root)).collect();
    // Every cell of the file read as a row, by shape; such rows count only if they verify.
    let mut loose: BTreeMap<usize, Vec<Row>> = BTreeMap::new();
    salvage.scan(&mut |row| {
        if matches!(row.values.len(), 6 | 9 | 11) && row.values.first() == Some(&Cell::Null) {
            loose.entry(row.values.len()).or_default().push(row);
        }
    });
    progress("salvage", 1, 4);

    // Tables nothing derives: the old rows, then what the newest backup adds.
    for (table, columns, alias) in KEPT_TABLES {
        if let Some(root) = roots.get(table) {
            salvage.walk(*root, &mut |row| {
                if row.values.len() != columns {
                    return;
                }
                let cells = alias.map_or_else(|| row.values.clone(), |a| row.with_rowid_at(a));
                if let Some(values) = cells.iter().map(Cell::to_sql).collect::<Option<Vec<_>>>() {
                    // A row whose types the STRICT table refuses is damage: left out.
                    let _ = conn.execute(&insert_sql(table, columns), params_from_iter(values));
                }
            });
        }
        if let Some((backup, id)) = backups.first() {
            let before = count(conn, table)?;
            copy_all(backup, conn, table, columns)?;
            if count(conn, table)? > before {
                report.tables_from_backups.push((table.to_string(), id.clone()));
            }
        }
    }
    // Dictionaries next: compressed bodies need them to be verified.
    let dict = Verified { table: "cairn_dicts", columns: 6, verify: &|v: &[Value]| dict_verifies(v) };
    let dicts = recover(conn, salvage, &roots, &dict, loose.remove(&6).unwrap_or_default(), backups, 0)?;
    report.bad_pages += dicts.bad_pages;
    let changes = Verified {
        table: "cairn_changes",
        columns: 11,
        verify: &|v: &[Value]| crate::data::changes::values_verify(conn, v),
    };
    // The newest entry any record row of the damaged file names: entries up to it existed,
    // even if the log's last pages are gone.
    let newest = record_seqs(salvage, &roots).into_iter().max().unwrap_or(0);
    let changes = recover(conn, salvage, &roots, &changes, loose.remove(&11).unwrap_or_default(), backups, newest)?;
    report.changes_salvaged = changes.salvaged;
    report.changes_corrected = changes.corrected;
    report.changes_from_backups = changes.from_backups;
    report.changes_damaged = changes.damaged;
    report.changes_lost = changes.lost;
    report.bad_pages += changes.bad_pages;
    progress("salvage", 2, 4);
    let audit = Verified {
        table: "cairn_audit",
        columns: 9,
        verify: &|v: &[Value]| crate::governance::audit::values_verify(v),
    };
    // The trail's head (in cairn_meta, filled above) names its newest entry.
    let head: Option<String> =
        conn.query_row("SELECT value FROM cairn_meta WHERE key = 'audit_head'", [], |r| r.get(0)).optional()?;
    let newest = head.and_then(|h| h.split_once(':').and_then(|(s, _)| s.parse().ok())).unwrap_or(0);
    let audit = recover(conn, salvage, &roots, &audit, loose.remove(&9).unwrap_or_default(), backups, newest)?;
    report.audit_salvaged = audit.salvaged;
    report.audit_corrected = audit.corrected;
    report.audit_from_backups = audit.from_backups;
    report.audit_lost = audit.lost;

    progress("salvage", 3, 4);

    // The catalog and every collection's rows, from the log.
    let catalog = crate::safety::catalog::Catalog::from_log(conn)?;
    catalog.write(conn)?;
    let collections = catalog.collections()?;
    let current = record_heads(salvage, &roots, &collections);
    // Records whose newest entry is damaged get, last (every scan below would stop at it), a
    // row that points at that entry and fails its checksum: it keeps the record's place, and
    // `repair` then writes the newest good copy over it as a new version.
    let mut behind = Vec::new();
    for c in &collections {
        crate::data::collections::create_tables(conn, c)?;
        let latest = crate::safety::check::latest_changes(conn, c.name())?;
        for id in latest.keys() {
            match crate::safety::repair::rebuild_row(conn, c, id, &latest)? {
                Ok(()) => report.records += 1,
                Err(_) => behind.push((c.clone(), id.clone(), latest.get(id).map_or(0, |(seq, _)| *seq))),
            }
            let head = latest.get(id).map(|(seq, _)| *seq);
            if let Some(lost) = current.get(&(c.name().to_string(), id.clone())).filter(|s| head < Some(**s)) {
                report.records_behind.push((format!("{}/{id}", c.name()), *lost));
            }
        }
        crate::safety::repair::rebuild_indexes(conn, c)?;
        report.collections += 1;
    }
    report.blobs = blob_rows(conn, salvage, &roots, backups)?;
    crate::blobs::recount_refs(conn, crate::engine::timestamp::Timestamp::now())?;
    for (c, id, seq) in behind {
        placeholder_row(conn, &c, &id, seq)?;
    }
    progress("salvage", 4, 4);
    Ok(())
}

/// A table whose rows carry their own proof (a hash over the row, or a key that is the
/// content's hash), keyed by an `INTEGER PRIMARY KEY` in its first column.
struct Verified<'a> {
    table: &'static str,
    columns: usize,
    verify: &'a dyn Fn(&[Value]) -> bool,
}

/// Where the rows of a verified table came from.
#[derive(Debug, Default)]
struct Recovered {
    salvaged: u64,
    corrected: Vec<u64>,
    from_backups: Vec<(u64, String)>,
    /// Kept although they do not verify: no source had a good copy, and dropping them would
    /// free their key for reuse.
    damaged: Vec<u64>,
    lost: Vec<u64>,
    bad_pages: u64,
}

/// Fills a verified table: the rows of its b-tree that verify, then verified rows anywhere in
/// the file, then the backups' (newest first), then single-bit corrections of the cells of
/// its pages that did not verify, and last the damaged rows themselves for keys nothing else
/// gave.
fn recover(
    conn: &Connection,
    salvage: &Salvage,
    roots: &BTreeMap<String, u32>,
    spec: &Verified<'_>,
    loose: Vec<Row>,
    backups: &[(Connection, String)],
    newest: u64,
) -> Result<Recovered> {
    let mut out = Recovered::default();
    let mut verified_cells = BTreeSet::new();
    let mut damaged: BTreeMap<u64, (Vec<Value>, crate::safety::salvage::CellRef)> = BTreeMap::new();
    let mut suspects = Vec::new();
    let mut tree = Vec::new();
    let mut tree_keys: BTreeMap<i64, Vec<crate::safety::salvage::CellRef>> = BTreeMap::new();
    let coverage = match roots.get(spec.table) {
        Some(root) => salvage.walk(*root, &mut |row| tree.push(row)),
        None => Default::default(),
    };
    out.bad_pages = coverage.bad_pages;
    for (row, from_tree) in tree.into_iter().map(|r| (r, true)).chain(loose.into_iter().map(|r| (r, false))) {
        if row.values.len() != spec.columns {
            continue;
        }
        let values = row.with_rowid_at(0).iter().map(Cell::to_sql).collect::<Option<Vec<_>>>();
        match values {
            Some(values) if (spec.verify)(&values) => {
                if from_tree {
                    if let Some(key) = row.rowid {
                        tree_keys.entry(key).or_default().push(row.at);
                    }
                }
                verified_cells.insert(row.at);
                out.salvaged += u64::from(insert(conn, spec, &values)?);
            }
            Some(values) if from_tree => {
                if let Some(key) = row.rowid.and_then(|k| u64::try_from(k).ok()) {
                    damaged.entry(key).or_insert((values, row.at));
                }
                suspects.push(row.at);
            }
            _ if from_tree => suspects.push(row.at),
            _ => {}
        }
    }
    // Two slots of a tree that read the same row: one of them is a damaged pointer that now
    // points at its neighbour, so neither reading proves its slot whole.
    for cells in tree_keys.values().filter(|cells| cells.len() > 1) {
        for at in cells {
            verified_cells.remove(at);
            suspects.push(*at);
        }
    }
    for (backup, id) in backups {
        for key in copy_missing(backup, conn, spec)? {
            out.from_backups.push((key, id.clone()));
        }
    }
    let missing = missing_keys(conn, spec, damaged.keys().copied().chain([newest]))?;
    // Cells of the table's own pages that did not verify (or did not decode) may hold a row
    // one bit away from a good one: put right, it fills a gap, or proves the damaged reading
    // of its cell was not a row of its own (a flipped key).
    if !missing.is_empty() || !damaged.is_empty() {
        let mut cells: BTreeSet<crate::safety::salvage::CellRef> = suspects.into_iter().collect();
        for page in coverage.leaves {
            for slot in 0..salvage.slots(page) {
                let at = crate::safety::salvage::CellRef { page, slot };
                if !verified_cells.contains(&at) {
                    cells.insert(at);
                }
            }
        }
        for at in cells {
            let mut found = None;
            salvage.corrections(at, &mut |row, moved| {
                let key = row.rowid.and_then(|k| u64::try_from(k).ok());
                let values = row.with_rowid_at(0).iter().map(Cell::to_sql).collect::<Option<Vec<_>>>();
                match (key, values) {
                    // A pointer put right onto a row another slot of the tree holds reads a
                    // stale copy left in the page's free space, which proves nothing about
                    // this cell.
                    (Some(key), _) if moved && tree_keys.contains_key(&(key as i64)) => false,
                    (Some(key), Some(values)) if row.values.len() == spec.columns && (spec.verify)(&values) => {
                        found = Some((key, values));
                        true
                    }
                    _ => false,
                }
            });
            if let Some((key, values)) = found {
                if insert(conn, spec, &values)? {
                    out.corrected.push(key);
                }
                damaged.retain(|_, (_, cell)| *cell != at);
            }
        }
    }
    let missing = missing_keys(conn, spec, damaged.keys().copied().chain([newest]))?;
    for key in &missing {
        if let Some((values, _)) = damaged.get(key) {
            if insert(conn, spec, values)? {
                out.damaged.push(*key);
            }
        }
    }
    out.lost = missing_keys(conn, spec, [newest].into_iter())?.into_iter().collect();
    Ok(out)
}

/// Keys from 1 to the highest known (in the table or `also`) that the table lacks.
fn missing_keys(conn: &Connection, spec: &Verified<'_>, also: impl Iterator<Item = u64>) -> Result<BTreeSet<u64>> {
    let have = keys(conn, spec.table)?;
    let max = have.last().copied().into_iter().chain(also).max().unwrap_or(0);
    Ok((1..=max).filter(|k| !have.contains(k)).collect())
}

/// Inserts a row unless its key is taken; returns whether it was inserted.
fn insert(conn: &Connection, spec: &Verified<'_>, values: &[Value]) -> Result<bool> {
    Ok(conn.execute(&insert_sql(spec.table, spec.columns), params_from_iter(values)).unwrap_or(0) > 0)
}

/// Copies the rows of a verified table that `to` lacks from `from`, keeping those that
/// verify; returns their keys.
fn copy_missing(from: &Connection, to: &Connection, spec: &Verified<'_>) -> Result<Vec<u64>> {
    let have = keys(to, spec.table)?;
    // A backup of an older format may not have the table.
    let Ok(mut stmt) = from.prepare(&format!("SELECT * FROM {} ORDER BY 1", spec.table)) else { return Ok(Vec::new()) };
    if stmt.column_count() != spec.columns {
        return Ok(Vec::new());
    }
    let mut rows = stmt.query([])?;
    let mut added = Vec::new();
    while let Ok(Some(row)) = rows.next() {
        let Ok(key) = row.get::<_, i64>(0) else { continue };
        if have.contains(&(key as u64)) {
            continue;
        }
        let values: Vec<Value> =
            (0..spec.columns).map(|i| crate::engine::sql::value_at(row, i)).collect::<rusqlite::Result<_>>()?;
        if (spec.verify)(&values) && insert(to, spec, &values)? {
            added.push(key as u64);
        }
    }
    Ok(added)
}

/// Copies every row of `table` in `from` that `to` lacks (by primary key).
fn copy_all(from: &Connection, to: &Connection, table: &str, columns: usize) -> Result<()> {
    let Ok(mut stmt) = from.prepare(&format!("SELECT * FROM {table}")) else { return Ok(()) };
    if stmt.column_count() != columns {
        return Ok(());
    }
    let mut rows = stmt.query([])?;
    while let Ok(Some(row)) = rows.next() {
        let values: Vec<rusqlite::types::Value> =
            (0..columns).map(|i| crate::engine::sql::value_at(row, i)).collect::<rusqlite::Result<_>>()?;
        let _ = to.execute(&insert_sql(table, columns), params_from_iter(values));
    }
    Ok(())
}

/// `INSERT OR IGNORE` of a whole row: a key already present keeps its row.
fn insert_sql(table: &str, columns: usize) -> String {
    let marks: Vec<String> = (1..=columns).map(|i| format!("?{i}")).collect();
    format!("INSERT OR IGNORE INTO {table} VALUES ({})", marks.join(", "))
}

/// The keys (first column) of a table.
fn keys(conn: &Connection, table: &str) -> Result<BTreeSet<u64>> {
    Ok(conn
        .prepare(&format!("SELECT * FROM {table}"))?
        .query_map([], |r| r.get::<_, i64>(0).map(|k| k as u64))?
        .collect::<rusqlite::Result<_>>()?)
}

fn count(conn: &Connection, table: &str) -> Result<i64> {
    Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
}

/// A record row for `id` pointing at entry `seq` as its columns say (unverified), with a
/// checksum no body has.
fn placeholder_row(conn: &Connection, c: &crate::data::collection::Collection, id: &str, seq: u64) -> Result<()> {
    let Some(meta) = crate::data::changes::row_meta(conn, seq)? else { return Ok(()) };
    let deleted_at = meta.deleted.then_some(meta.at);
    let fixed: [&dyn rusqlite::ToSql; 7] =
        [&id, &(meta.version as i64), &meta.at, &meta.at, &deleted_at, &(seq as i64), &[0u8; 32].as_slice()];
    let nulls = vec![Value::Null; c.sql.value_fields.len()];
    conn.prepare_cached(&c.sql.insert)?
        .execute(params_from_iter(fixed.into_iter().chain(nulls.iter().map(|v| v as &dyn rusqlite::ToSql))))?;
    Ok(())
}

/// A dictionary row (id, key, collection, dict, samples, created_at): its key is the first 8
/// bytes of the dictionary's SHA-256.
fn dict_verifies(v: &[Value]) -> bool {
    matches!(v, [Value::Integer(_), Value::Blob(key), Value::Text(_), Value::Blob(dict), Value::Integer(_), Value::Integer(_)]
        if key.as_slice() == &crate::engine::hash::sha256(dict)[..8])
}

/// The seqs the record rows of the damaged file point at, from every record table that can
/// be walked (`c_*` tables whose rows have a record row's shape).
fn record_seqs(salvage: &Salvage, roots: &BTreeMap<String, u32>) -> Vec<u64> {
    let mut out = Vec::new();
    for (_, root) in roots.iter().filter(|(name, _)| name.starts_with("c_")) {
        salvage.walk(*root, &mut |row| {
            let v = &row.values;
            if let (true, Some(Cell::Text(_)), Some(Cell::Int(seq)), Some(Cell::Blob(sha))) =
                (v.len() >= 7, v.first(), v.get(5), v.get(6))
            {
                if sha.len() == 32 {
                    out.push(*seq as u64);
                }
            }
        });
    }
    out
}

/// The seq each record row of the damaged file pointed at, where its table can be read: a
/// record whose entry is lost is then reported, not silently rebuilt at an older version.
fn record_heads(
    salvage: &Salvage,
    roots: &BTreeMap<String, u32>,
    collections: &[crate::data::collection::Collection],
) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for c in collections {
        let Some(root) = roots.get(&c.table) else { continue };
        // WITHOUT ROWID: (id, version, created_at, updated_at, deleted_at, seq, sha256, values…)
        salvage.walk(*root, &mut |row| {
            if let (Some(id), Some(seq)) =
                (row.values.first().and_then(Cell::as_text), row.values.get(5).and_then(Cell::as_int))
            {
                out.insert((c.name().to_string(), id.to_string()), seq as u64);
            }
        });
    }
    out
}

/// Blob rows: the damaged file's, then the backups', for files that are there; then a row for
/// every blob file no row lists. Returns how many rows there are.
fn blob_rows(
    conn: &Connection,
    salvage: &Salvage,
    roots: &BTreeMap<String, u32>,
    backups: &[(Connection, String)],
) -> Result<u64> {
    let dir = salvage.path().parent().unwrap_or(Path::new("."));
    let now = crate::engine::timestamp::Timestamp::now().0;
    let mut candidates: Vec<Vec<rusqlite::types::Value>> = Vec::new();
    if let Some(root) = roots.get("cairn_blobs") {
        salvage.walk(*root, &mut |row| {
            if let Some(values) = row.values.iter().map(Cell::to_sql).collect::<Option<Vec<_>>>() {
                if values.len() == 7 {
                    candidates.push(values);
                }
            }
        });
    }
    for (backup, _) in backups {
        if let Ok(mut stmt) = backup.prepare("SELECT * FROM cairn_blobs") {
            let rows = stmt.query_map([], |r| {
                (0..7).map(|i| crate::engine::sql::value_at(r, i)).collect::<rusqlite::Result<Vec<_>>>()
            });
            candidates.extend(rows.into_iter().flatten().flatten());
        }
    }
    for values in candidates {
        let (rusqlite::types::Value::Text(hash), rusqlite::types::Value::Text(codec)) = (&values[0], &values[3]) else {
            continue;
        };
        let Some(codec) = crate::blobs::Codec::from_name(codec) else { continue };
        let path = crate::blobs::blob_path(dir, hash, codec);
        let stored = matches!(values[2], rusqlite::types::Value::Integer(n) if std::fs::metadata(&path).is_ok_and(|m| m.len() == n as u64));
        if crate::engine::hash::is_hex_digest(hash) && stored {
            let _ = conn.execute(&insert_sql("cairn_blobs", 7), params_from_iter(values));
        }
    }
    for (path, hash, codec) in crate::blobs::files(dir)? {
        if !crate::engine::hash::is_hex_digest(&hash) {
            continue;
        }
        let listed: bool = conn
            .query_row("SELECT 1 FROM cairn_blobs WHERE hash = ?1", [&hash], |_| Ok(true))
            .optional()?
            .unwrap_or(false);
        if listed {
            continue;
        }
        let stored_size = std::fs::metadata(&path).map(|m| m.len()).map_err(|e| Error::io("stat", &path, e))?;
        let size = match codec {
            crate::blobs::Codec::Raw => stored_size,
            crate::blobs::Codec::Zstd => {
                let file = std::fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
                match zstd::Decoder::new(file).and_then(|mut d| std::io::copy(&mut d, &mut std::io::sink())) {
                    Ok(n) => n,
                    Err(_) => continue, // damaged: `check` reports the file, nothing lists it
                }
            }
        };
        conn.execute(
            "INSERT INTO cairn_blobs (hash, size, stored_size, codec, refs, created_at, unreferenced_since)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)",
            rusqlite::params![hash, size as i64, stored_size as i64, codec.as_str(), now],
        )?;
    }
    count(conn, "cairn_blobs").map(|n| n as u64)
}
