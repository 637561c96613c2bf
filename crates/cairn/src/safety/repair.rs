//! `repair` (SAFE-3): puts right what `check` found, from the store itself and from backups,
//! and sets aside what it cannot. It never deletes.
//!
//! Order:
//! 1. the damaged state is copied into `quarantine/repair-<time>/` (`store.db`, its WAL,
//!    damaged blob files, the check report) before anything changes;
//! 2. structural damage — SQLite cannot open the file, `integrity_check` fails, one of
//!    cairn's tables or indexes is missing or altered, the catalog disagrees with the change
//!    log — is repaired by rebuilding the database (see `rebuild`): a new file from every row
//!    that can still be read and verified, the change log, and the verified backups;
//! 3. tables, views and triggers cairn did not create are moved out: their SQL (and a
//!    table's rows) go into the quarantine folder's `objects.jsonl`;
//! 4. damaged change-log entries (which hold the record bodies) are restored byte for byte
//!    from the newest verified backup whose copy of that entry verifies; the seq names one
//!    entry forever, so the backup's is the original;
//! 5. record rows that are damaged, missing or disagree with the change log are rebuilt from
//!    the newest entry the log holds for their id (everything in a record row is derived from
//!    the log); rows no entry ever wrote, and records whose newest entry could not be
//!    restored, are moved out of the table into the quarantine folder's `records.jsonl`;
//! 6. damaged, missing or out-of-chain audit entries are restored from the backups;
//! 7. damaged or missing blobs are copied back from the newest verified backup holding a good
//!    copy; the damaged file goes to the quarantine folder;
//! 8. derived structures are rebuilt: SQLite's indexes (`REINDEX`), value columns, tag and
//!    full-text indexes, blob reference counts;
//! 9. `check` runs again, and the report says what was repaired and what remains.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::collection::Collection;
use crate::engine::change::Seq;
use crate::engine::fsutil;
use crate::engine::layout::{DB_FILE, QUARANTINE_DIR, WAL_FILE};
use crate::engine::sql::quote;
use crate::engine::store::Progress;
use crate::engine::store::{Store, StoreOptions};
use crate::error::{Error, Result};
use crate::safety::backup::{self, BackupStatus, Manifest};
use crate::safety::check::{CheckOptions, CheckReport, ProblemKind};
use crate::safety::rebuild::RebuildReport;

/// How [`Store::repair`] runs. Defaults: rebuild the database only when the damage needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepairOptions {
    /// The actor recorded for the repair's changes and its audit entry. Default: `"local"`.
    pub actor: String,
    /// Rebuild the database even when nothing structural is wrong. Default: false.
    pub rebuild: bool,
}

impl Default for RepairOptions {
    fn default() -> Self {
        RepairOptions { actor: "local".into(), rebuild: false }
    }
}

/// What [`Store::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RepairReport {
    /// Where the damaged state was copied, and what could not be repaired was moved; `None`
    /// when the store was whole and nothing was done.
    pub quarantine: Option<PathBuf>,
    /// Problems `check` found before.
    pub problems_before: usize,
    /// When the database was rebuilt, where its contents came from.
    pub rebuilt: Option<RebuildReport>,
    /// Tables, views, triggers and indexes cairn did not create, moved into quarantine.
    pub objects_quarantined: Vec<String>,
    /// Change-log entries restored from a backup (seq, backup id).
    pub changes_restored: Vec<(u64, String)>,
    /// Record rows rebuilt from the change log (`collection/id`).
    pub records_rebuilt: Vec<String>,
    /// Records whose newest change-log entry was damaged and in no backup, written again
    /// from the newest verified backup holding them, as a new version (`collection/id`,
    /// backup id). Their damaged entry stays in the log (its bytes also in quarantine) and
    /// `check` still reports it: history before the new version cannot be read.
    pub records_restored_as_new_versions: Vec<(String, String)>,
    /// Records moved into quarantine (`collection/id`, why).
    pub records_quarantined: Vec<(String, String)>,
    /// Audit entries restored from a backup (seq, backup id).
    pub audit_restored: Vec<(u64, String)>,
    /// Blobs restored from a backup (hash, backup id).
    pub blobs_restored: Vec<(String, String)>,
    /// Blobs no backup had a good copy of.
    pub blobs_unrepaired: Vec<String>,
    /// The check before the repair.
    pub before: CheckReport,
    /// The check after the repair.
    pub after: CheckReport,
}

impl Store {
    /// Repairs the store in `dir` (see the module docs), which must not be open elsewhere for
    /// writing; this takes its write lock. Works on a store SQLite can no longer open. Runs
    /// `check` before and after; the store's audit trail records the repair.
    pub fn repair(dir: &Path, options: &RepairOptions, progress: Progress<'_>) -> Result<RepairReport> {
        let open_options = StoreOptions { actor: options.actor.clone(), ..StoreOptions::existing() };
        let (store, before) = match Store::open(dir, open_options.clone()) {
            Ok(store) => {
                let before = store.check(&CheckOptions::default(), progress)?;
                (Some(store), before)
            }
            Err(e) => match CheckReport::from_open_error(&e) {
                Some(report) => (None, report),
                None => return Err(e),
            },
        };
        if before.is_ok() && !options.rebuild {
            if let Some(store) = store {
                store.audit("repair", "", "ok", "0 problem(s) before, 0 after");
                store.close()?;
            }
            return Ok(RepairReport { after: before.clone(), before, ..RepairReport::default() });
        }
        let quarantine = fsutil::unique_dir(&dir.join(QUARANTINE_DIR), "repair")?;
        let mut report = RepairReport {
            quarantine: Some(quarantine.clone()),
            problems_before: before.problems.len(),
            ..RepairReport::default()
        };
        let backups = good_backups(dir)?;
        let store = if options.rebuild || store.is_none() || needs_rebuild(&before) {
            let lock = match store {
                Some(store) => store.into_lock()?,
                None => crate::engine::store::lock(dir)?,
            };
            copy_database(dir, &quarantine, &before)?;
            let rebuilt = crate::safety::rebuild::rebuild(dir, &quarantine, &backups, progress);
            drop(lock);
            match rebuilt {
                Ok(rebuilt) => report.rebuilt = Some(rebuilt),
                Err(e) => {
                    crate::safety::open::append_to(dir, &options.actor, "repair", "", &format!("failed: {e}"), "");
                    return Err(e);
                }
            }
            Store::open(dir, open_options)?
        } else {
            let store = store.ok_or_else(|| Error::Internal("the store is not open".into()))?;
            store.copy_damaged_state(&quarantine, &before)?;
            store
        };
        report.before = before;
        let result = store.repair_in_place(&quarantine, &backups, &mut report, progress);
        let detail = match &result {
            Ok(()) => format!("{} problem(s) before, {} after", report.problems_before, report.after.problems.len()),
            Err(_) => String::new(),
        };
        store.audit("repair", "", &crate::engine::trail::outcome(&result), &detail);
        store.close()?;
        result.map(|()| report)
    }
}

/// Damage the database is rebuilt for: structure SQLite cannot use, a catalog that disagrees
/// with the log, and damaged change-log or audit entries (a rebuild reads every copy of them
/// the damaged file still holds, puts right single bits by their hashes, and takes the rest
/// from the backups).
fn needs_rebuild(report: &CheckReport) -> bool {
    report.problems.iter().any(|p| {
        matches!(p.kind, ProblemKind::Integrity | ProblemKind::Catalog | ProblemKind::ChangeLog | ProblemKind::Audit)
    })
}

/// Copies `store.db` and its WAL into `to` (the store is closed and locked).
fn copy_database(dir: &Path, to: &Path, before: &CheckReport) -> Result<()> {
    for name in [DB_FILE, WAL_FILE] {
        let from = dir.join(name);
        if from.exists() {
            std::fs::copy(&from, to.join(name)).map_err(|e| Error::io("copy into quarantine", &from, e))?;
        }
    }
    fsutil::write_durably(&to.join("check-before.json"), &serde_json::to_vec_pretty(before).unwrap_or_default())
}

impl Store {
    fn repair_in_place(
        &self,
        quarantine: &Path,
        backups: &[(PathBuf, Manifest)],
        report: &mut RepairReport,
        progress: Progress<'_>,
    ) -> Result<()> {
        let before = self.check(&CheckOptions::default(), progress)?;
        let foreign: Vec<String> = before.of_kind(ProblemKind::SchemaObject).filter_map(|p| p.object.clone()).collect();
        if !foreign.is_empty() {
            report.objects_quarantined = self.quarantine_objects(&foreign, quarantine)?;
        }

        // Change-log entries, from the newest backup whose copy verifies.
        let mut seqs: Vec<u64> = before
            .problems
            .iter()
            .filter(|p| matches!(p.kind, ProblemKind::ChangeLog | ProblemKind::Record))
            .filter_map(|p| p.seq.map(Seq::get))
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        let intact = |seq: u64| -> Result<bool> {
            Ok(crate::data::changes::verified_row(&*self.reader()?, seq).is_ok_and(|r| r.is_some()))
        };
        for seq in seqs {
            if intact(seq)? {
                continue;
            }
            for (dir, manifest) in backups.iter().filter(|(_, m)| m.seq.0 >= seq) {
                let Some(row) = backup_change_row(dir, seq)? else { continue };
                self.write(move |tx| {
                    tx.conn.execute(
                        "INSERT OR REPLACE INTO cairn_changes (seq, collection, record_id, op, version, actor, at, deleted, prev_seq, after, sha256)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                        rusqlite::params_from_iter(row),
                    )?;
                    Ok(())
                })?;
                if intact(seq)? {
                    report.changes_restored.push((seq, manifest.id.clone()));
                    break;
                }
            }
        }

        // Record rows, from the change log.
        let mut targets: Vec<(String, String)> = before
            .problems
            .iter()
            .filter(|p| matches!(p.kind, ProblemKind::Record | ProblemKind::ChangeLog))
            .filter_map(|p| Some((p.collection.clone()?, p.id.clone()?)))
            .collect();
        targets.sort();
        targets.dedup();
        // The newest good copy of each of them in a backup, for records the log cannot rebuild.
        let mut copies = BTreeMap::new();
        for (collection, id) in &targets {
            for (dir, manifest) in backups {
                let copy = Store::open(dir, crate::engine::store::StoreOptions::read_only())
                    .and_then(|b| b.stored_record(collection, id));
                if let Ok(Some(record)) = copy {
                    copies.insert((collection.clone(), id.clone()), (record, manifest.id.clone()));
                    break;
                }
            }
        }
        let records_file = quarantine.join("records.jsonl");
        let (rebuilt, as_new, quarantined) = self.write(move |tx| {
            let (mut rebuilt, mut as_new, mut quarantined) = (Vec::new(), Vec::new(), Vec::new());
            let mut latest: BTreeMap<String, BTreeMap<String, (u64, String)>> = BTreeMap::new();
            let mut out = Vec::new();
            for (collection, id) in targets {
                let Ok(c) = tx.collection(&collection) else { continue };
                // One pass over the log per collection, not per record.
                if !latest.contains_key(&collection) {
                    latest.insert(collection.clone(), crate::safety::check::latest_changes(tx.conn, &collection)?);
                }
                let newest = latest.get(&collection).cloned().unwrap_or_default();
                match rebuild_row(tx.conn, &c, &id, &newest)? {
                    Ok(()) => rebuilt.push(format!("{collection}/{id}")),
                    Err(why) if copies.contains_key(&(collection.clone(), id.clone())) => {
                        let Some((record, backup)) = copies.remove(&(collection.clone(), id.clone())) else { continue };
                        if let Some(raw) = raw_row(tx.conn, &c, &id)? {
                            let line = serde_json::json!({"collection": collection, "id": id, "why": why, "row": raw});
                            out.extend_from_slice(line.to_string().as_bytes());
                            out.push(b'\n');
                        }
                        tx.write_over_damaged(&c, &id, record)?;
                        as_new.push((format!("{collection}/{id}"), backup));
                    }
                    Err(why) => {
                        if let Some(raw) = raw_row(tx.conn, &c, &id)? {
                            out.extend_from_slice(
                                serde_json::json!({"collection": collection, "id": id, "why": why, "row": raw})
                                    .to_string()
                                    .as_bytes(),
                            );
                            out.push(b'\n');
                            tx.conn.prepare_cached(&c.sql.delete)?.execute([&id])?;
                            crate::data::search::update_fts(tx.conn, &c, &id, None)?;
                        }
                        quarantined.push((format!("{collection}/{id}"), why));
                    }
                }
            }
            // Rows whose id is not text cannot be named by id: set aside by their bytes.
            for c in crate::data::collection::load_all(tx.conn)? {
                let table = quote(&c.table);
                let invalid: Vec<Vec<u8>> = tx
                    .conn
                    .prepare(&format!("SELECT CAST(id AS BLOB), typeof(id) FROM {table}"))?
                    .query_map([], |r| {
                        Ok((r.get::<_, Option<Vec<u8>>>(0)?.unwrap_or_default(), r.get::<_, String>(1)?))
                    })?
                    .filter_map(|row| row.ok())
                    .filter(|(bytes, kind)| kind != "text" || std::str::from_utf8(bytes).is_err())
                    .map(|(bytes, _)| bytes)
                    .collect();
                for bytes in invalid {
                    let hex = crate::engine::hash::hex(&bytes);
                    out.extend_from_slice(
                        serde_json::json!({"collection": c.name(), "id_hex": hex, "why": "its id is not valid text"})
                            .to_string()
                            .as_bytes(),
                    );
                    out.push(b'\n');
                    tx.conn.execute(&format!("DELETE FROM {table} WHERE CAST(id AS BLOB) = ?1"), [&bytes])?;
                    quarantined.push((format!("{}/{hex}", c.name()), "its id is not valid text".to_string()));
                }
            }
            if !out.is_empty() {
                fsutil::write_durably(&records_file, &out)?;
            }
            Ok((rebuilt, as_new, quarantined))
        })?;
        report.records_rebuilt = rebuilt;
        report.records_restored_as_new_versions = as_new;
        report.records_quarantined = quarantined;

        // Audit entries.
        if before.of_kind(ProblemKind::Audit).next().is_some() {
            report.audit_restored = self.restore_audit(backups)?;
        }

        // Blobs: damaged or missing files and rows, and links to blobs the store lost.
        let mut hashes: Vec<String> = before
            .problems
            .iter()
            .filter(|p| matches!(p.kind, ProblemKind::Blob | ProblemKind::BlobRefs))
            .filter_map(|p| p.hash.clone())
            .collect();
        hashes.sort();
        hashes.dedup();
        let mut lost = Vec::new();
        for hash in hashes {
            if self.blob_is_whole(&hash) {
                continue;
            }
            match self.restore_blob_from(&hash, backups, quarantine)? {
                Some(id) => report.blobs_restored.push((hash, id)),
                None => {
                    lost.push(hash.clone());
                    report.blobs_unrepaired.push(hash);
                }
            }
        }
        if !lost.is_empty() {
            // Rows whose content no backup has (or whose hash is itself damaged): set aside,
            // so that the blob table lists only what the store can deliver.
            let file = quarantine.join("blobs.jsonl");
            self.write(move |tx| {
                let mut lines = Vec::new();
                for hash in &lost {
                    let row = tx
                        .conn
                        .query_row("SELECT * FROM cairn_blobs WHERE hash = ?1", [hash], |r| {
                            (0..7)
                                .map(|i| crate::engine::sql::value_at(r, i).map(|v| format!("{v:?}")))
                                .collect::<rusqlite::Result<Vec<_>>>()
                        })
                        .optional()?;
                    if let Some(row) = row {
                        lines.extend_from_slice(serde_json::json!({"hash": hash, "row": row}).to_string().as_bytes());
                        lines.push(b'\n');
                        tx.conn.execute("DELETE FROM cairn_blobs WHERE hash = ?1", [hash])?;
                    }
                }
                fsutil::write_durably(&file, &lines)
            })?;
        }

        // Derived structures.
        self.write(|tx| {
            tx.conn.execute_batch("REINDEX")?;
            for c in crate::data::collection::load_all(tx.conn)? {
                rebuild_indexes(tx.conn, &c)?;
            }
            Ok(())
        })?;
        if let Err(e) = self.rebuild_blob_refs() {
            tracing::warn!(error = %e, "reference counts could not be rebuilt");
        }
        report.after = self.check(&CheckOptions::default(), progress)?;
        fsutil::write_durably(&quarantine.join("repair.json"), &serde_json::to_vec_pretty(&report).unwrap_or_default())
    }

    /// Moves tables, views, triggers and indexes cairn did not create out of the database:
    /// each one's SQL (and a table's rows, as JSON) goes into `objects.jsonl` first.
    fn quarantine_objects(&self, names: &[String], quarantine: &Path) -> Result<Vec<String>> {
        let names = names.to_vec();
        let file = quarantine.join("objects.jsonl");
        self.write(move |tx| {
            let mut lines = Vec::new();
            let mut moved = Vec::new();
            for name in &names {
                let row: Option<(String, Option<String>)> = tx
                    .conn
                    .query_row("SELECT type, sql FROM sqlite_schema WHERE name = ?1", [name], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                let Some((kind, sql)) = row else { continue };
                let mut rows = Vec::new();
                if kind == "table" {
                    let mut stmt = tx.conn.prepare(&format!("SELECT * FROM {}", quote_any(name)))?;
                    let columns = stmt.column_count();
                    let mut found = stmt.query([])?;
                    while let Some(r) = found.next()? {
                        let values: Vec<String> = (0..columns)
                            .map(|i| crate::engine::sql::value_at(r, i).map(|v| format!("{v:?}")))
                            .collect::<rusqlite::Result<_>>()?;
                        rows.push(values);
                    }
                }
                let line = serde_json::json!({"type": kind, "name": name, "sql": sql, "rows": rows});
                lines.extend_from_slice(line.to_string().as_bytes());
                lines.push(b'\n');
                let verb = match kind.as_str() {
                    "table" => "TABLE",
                    "view" => "VIEW",
                    "trigger" => "TRIGGER",
                    _ => "INDEX",
                };
                // An index on a table dropped first is gone already.
                tx.conn.execute_batch(&format!("DROP {verb} IF EXISTS {}", quote_any(name)))?;
                moved.push(name.clone());
            }
            fsutil::write_durably(&file, &lines)?;
            Ok(moved)
        })
    }

    /// Copies audit entries the store lacks, or holds damaged, from the backups (newest
    /// first; an entry is taken only when it verifies), then re-points the trail's head when
    /// the entries are whole again and the old head named none past them.
    fn restore_audit(&self, backups: &[(PathBuf, Manifest)]) -> Result<Vec<(u64, String)>> {
        let sources: Vec<(PathBuf, String)> = backups.iter().map(|(p, m)| (p.join(DB_FILE), m.id.clone())).collect();
        self.write(move |tx| {
            let mut restored = Vec::new();
            for (path, id) in &sources {
                let Ok(backup) = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
                    continue;
                };
                let Ok(mut stmt) = backup.prepare("SELECT * FROM cairn_audit ORDER BY seq") else { continue };
                let rows: Vec<Vec<rusqlite::types::Value>> = stmt
                    .query_map([], |r| (0..9).map(|i| crate::engine::sql::value_at(r, i)).collect())?
                    .collect::<rusqlite::Result<_>>()?;
                for row in rows {
                    let rusqlite::types::Value::Integer(seq) = row[0] else { continue };
                    let seq = seq as u64;
                    if crate::governance::audit::entry_verifies(tx.conn, seq)? {
                        continue;
                    }
                    let old: Option<Vec<rusqlite::types::Value>> = tx
                        .conn
                        .query_row("SELECT * FROM cairn_audit WHERE seq = ?1", [seq as i64], |r| {
                            (0..9).map(|i| crate::engine::sql::value_at(r, i)).collect()
                        })
                        .optional()?;
                    tx.conn.execute(
                        "INSERT OR REPLACE INTO cairn_audit VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        rusqlite::params_from_iter(&row),
                    )?;
                    if crate::governance::audit::entry_verifies(tx.conn, seq)? {
                        restored.push((seq, id.clone()));
                    } else if let Some(old) = old {
                        tx.conn.execute(
                            "INSERT OR REPLACE INTO cairn_audit VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                            rusqlite::params_from_iter(&old),
                        )?;
                    }
                }
            }
            crate::governance::audit::repoint_head(tx.conn)?;
            Ok(restored)
        })
    }

    /// Copies `store.db`, its WAL and the damaged blobs into `to`, while no write can commit.
    fn copy_damaged_state(&self, to: &Path, before: &CheckReport) -> Result<()> {
        let dir = self.dir().to_path_buf();
        let to = to.to_path_buf();
        let blobs: Vec<PathBuf> = before
            .of_kind(ProblemKind::Blob)
            .filter_map(|p| p.hash.as_ref())
            .flat_map(|h| {
                [crate::blobs::Codec::Raw, crate::blobs::Codec::Zstd].map(|c| crate::blobs::blob_path(&dir, h, c))
            })
            .filter(|p| p.exists())
            .collect();
        let report = serde_json::to_vec_pretty(before).unwrap_or_default();
        self.write(move |_tx| {
            for name in [DB_FILE, WAL_FILE] {
                let from = dir.join(name);
                if from.exists() {
                    std::fs::copy(&from, to.join(name)).map_err(|e| Error::io("copy into quarantine", &from, e))?;
                }
            }
            for blob in &blobs {
                let target = to.join(blob.file_name().unwrap_or_default());
                std::fs::copy(blob, &target).map_err(|e| Error::io("copy into quarantine", blob, e))?;
            }
            fsutil::write_durably(&to.join("check-before.json"), &report)
        })
    }

    /// True when a blob's row and file are right and its content matches its hash.
    fn blob_is_whole(&self, hash: &str) -> bool {
        let Ok(info) = self.blob(hash) else { return false };
        let path = crate::blobs::blob_path(self.dir(), hash, info.codec);
        let sized = std::fs::metadata(path).is_ok_and(|m| m.len() == info.stored_size);
        sized && self.open_blob(hash).is_ok_and(|mut r| std::io::copy(&mut r, &mut std::io::sink()).is_ok())
    }

    /// Restores a blob's row and file from the newest backup holding a good copy; a damaged
    /// file moves into `quarantine`. Returns the backup used.
    fn restore_blob_from(
        &self,
        hash: &str,
        backups: &[(PathBuf, Manifest)],
        quarantine: &Path,
    ) -> Result<Option<String>> {
        for (dir, manifest) in backups {
            let Some(row) = backup_blob_row(dir, hash)? else { continue };
            let codec = crate::blobs::Codec::parse(&row.3);
            let live = crate::blobs::blob_path(self.dir(), hash, codec);
            let rel = crate::blobs::blob_path(Path::new(""), hash, codec);
            let rel_text = backup::rel_string(&rel);
            let Some(entry) = manifest.files.iter().find(|f| f.path == rel_text) else { continue };
            // Copied out of the backup as a foreign folder: beneath it, a regular file, no
            // more than the manifest says, and only if it hashes to what the manifest says.
            let Ok(folder) = crate::engine::foreign::ForeignDir::open(dir) else { continue };
            if let Some(parent) = live.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
            }
            let staged = live.with_extension("repair");
            let _ = std::fs::remove_file(&staged);
            let copied = folder.bounded(&rel_text, entry.size).and_then(|r| fsutil::copy_reader_hashed(r, &staged));
            if !copied.is_ok_and(|(size, sha)| size == entry.size && sha == entry.sha256) {
                let _ = std::fs::remove_file(&staged);
                continue;
            }
            if live.exists() {
                let aside =
                    quarantine.join(format!("{}.damaged", live.file_name().unwrap_or_default().to_string_lossy()));
                std::fs::rename(&live, &aside).map_err(|e| Error::io("move into quarantine", &live, e))?;
            }
            std::fs::rename(&staged, &live).map_err(|e| Error::io("move into place", &staged, e))?;
            if let Some(parent) = live.parent() {
                fsutil::sync_dir(parent)?;
            }
            self.write(move |tx| {
                tx.conn.execute(
                    "INSERT INTO cairn_blobs (hash, size, stored_size, codec, refs, created_at, unreferenced_since)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)
                     ON CONFLICT (hash) DO UPDATE SET size = excluded.size, stored_size = excluded.stored_size,
                         codec = excluded.codec, created_at = excluded.created_at",
                    params![row.0, row.1, row.2, row.3, row.4],
                )?;
                Ok(())
            })?;
            let ok = self.open_blob(hash).and_then(|mut r| {
                std::io::copy(&mut r, &mut std::io::sink())
                    .map_err(|e| Error::Corruption { location: hash.to_string(), detail: e.to_string() })
            });
            if ok.is_ok() {
                return Ok(Some(manifest.id.clone()));
            }
        }
        Ok(None)
    }
}

/// Quotes an SQL identifier whatever it holds (names of objects cairn did not create).
fn quote_any(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The verified backups of a store, newest first.
fn good_backups(dir: &Path) -> Result<Vec<(PathBuf, Manifest)>> {
    Ok(backup::list_backups(&backup::backups_dir(dir))?
        .into_iter()
        .filter(|b| b.status == BackupStatus::Good)
        .filter_map(|b| b.manifest.map(|m| (b.path, m)))
        .collect())
}

/// Change-log entry `seq` of a backup, when the backup's copy verifies.
fn backup_change_row(dir: &Path, seq: u64) -> Result<Option<Vec<rusqlite::types::Value>>> {
    let conn = Connection::open_with_flags(dir.join(DB_FILE), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    if !crate::data::changes::verified_row(&conn, seq).is_ok_and(|r| r.is_some()) {
        return Ok(None);
    }
    let row = conn
        .query_row(
            "SELECT seq, collection, record_id, op, version, actor, at, deleted, prev_seq, after, sha256 FROM cairn_changes WHERE seq = ?1",
            [seq],
            |r| (0..11).map(|i| crate::engine::sql::value_at(r, i)).collect::<rusqlite::Result<Vec<_>>>(),
        )
        .optional()?;
    Ok(row)
}

/// A blob's row: (hash, size, stored_size, codec, created_at).
type BlobRow = (String, i64, i64, String, i64);

/// A blob's row in a backup.
fn backup_blob_row(dir: &Path, hash: &str) -> Result<Option<BlobRow>> {
    let conn = Connection::open_with_flags(dir.join(DB_FILE), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn
        .query_row("SELECT hash, size, stored_size, codec, created_at FROM cairn_blobs WHERE hash = ?1", [hash], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?)
}

/// A record row as JSON, whatever state it is in, for the quarantine file.
fn raw_row(conn: &Connection, c: &Collection, id: &str) -> Result<Option<Value>> {
    let sql = format!(
        "SELECT id, version, created_at, updated_at, deleted_at, seq, hex(sha256) FROM {} WHERE id = ?1",
        quote(&c.table)
    );
    let row = conn
        .query_row(&sql, [id], |r| {
            Ok(serde_json::json!({
                "id": crate::engine::sql::value_at(r, 0).map(|v| format!("{v:?}"))?,
                "version": r.get::<_, Option<i64>>(1).ok().flatten(),
                "created_at": r.get::<_, Option<i64>>(2).ok().flatten(),
                "updated_at": r.get::<_, Option<i64>>(3).ok().flatten(),
                "deleted_at": r.get::<_, Option<i64>>(4).ok().flatten(),
                "seq": r.get::<_, Option<i64>>(5).ok().flatten(),
                "sha256": r.get::<_, Option<String>>(6).ok().flatten(),
            }))
        })
        .optional()?;
    Ok(row)
}

/// Rebuilds record `id`'s row from the newest change-log entry for it. The inner error says
/// why it cannot be (the entry is damaged, or no entry wrote this id).
/// `latest` is [`crate::safety::check::latest_changes`] of the collection.
pub(crate) fn rebuild_row(
    conn: &Connection,
    c: &Collection,
    id: &str,
    latest: &BTreeMap<String, (u64, String)>,
) -> Result<std::result::Result<(), String>> {
    let Some((seq, op)) = latest.get(id).cloned() else {
        return Ok(Err("no change-log entry ever wrote this id".into()));
    };
    let Ok(Some(row)) = crate::data::changes::verified_row(conn, seq) else {
        return Ok(Err(format!("change log entry {seq} is damaged and no verified backup has a good copy")));
    };
    conn.prepare_cached(&c.sql.delete)?.execute([id])?;
    if op == "purge" {
        return Ok(Ok(()));
    }
    let stored: Vec<u8> = conn.query_row("SELECT after FROM cairn_changes WHERE seq = ?1", [seq], |r| r.get(0))?;
    let bytes = crate::engine::body::body_bytes(conn, &stored)?.into_owned();
    let body: serde_json::Map<String, Value> = serde_json::from_slice(&bytes).unwrap_or_default();
    let (created_at, deleted_at) =
        crate::safety::check::row_times(conn, seq, &row).unwrap_or((row.at, row.deleted.then_some(row.at)));
    let columns: Vec<rusqlite::types::Value> = c
        .sql
        .value_fields
        .iter()
        .map(|f| {
            body.get(&f.name)
                .filter(|_| !row.deleted)
                .map_or(rusqlite::types::Value::Null, |v| crate::data::index::column_value(f, v))
        })
        .collect();
    let sha = crate::engine::hash::sha256(&bytes);
    let fixed: [&dyn rusqlite::ToSql; 7] =
        [&id, &(row.version as i64), &created_at, &row.at, &deleted_at, &(seq as i64), &sha.as_slice()];
    conn.prepare_cached(&c.sql.insert)?.execute(rusqlite::params_from_iter(
        fixed.into_iter().chain(columns.iter().map(|v| v as &dyn rusqlite::ToSql)),
    ))?;
    Ok(Ok(()))
}

/// Refills value columns, the tags table and the full-text index of a collection from the
/// live bodies.
pub(crate) fn rebuild_indexes(conn: &Connection, c: &Collection) -> Result<()> {
    let table = quote(&c.table);
    if !c.tag_fields.is_empty() {
        conn.execute(&format!("DELETE FROM {}", quote(&crate::engine::sql::tags_table(c.name()))), [])?;
    }
    let mut scan = crate::data::record::ScanOptions::default();
    loop {
        let page = crate::data::record::scan(conn, c, &scan)?;
        let Some(last) = page.last() else { break };
        scan.after = Some(last.id.clone());
        for record in &page {
            for f in &c.sql.value_fields {
                let value = record
                    .body
                    .get(&f.name)
                    .map_or(rusqlite::types::Value::Null, |v| crate::data::index::column_value(f, v));
                conn.prepare_cached(&format!(
                    "UPDATE {table} SET {} = ?2 WHERE id = ?1",
                    quote(&crate::engine::sql::value_column(&f.name))
                ))?
                .execute(params![record.id, value])?;
            }
            crate::data::index::update_tags(conn, c, &record.id, None, Some(&record.body))?;
        }
    }
    let without = Collection { fulltext_fields: Vec::new(), ..c.clone() };
    crate::data::search::sync_fts(conn, Some(&without), c, &mut |_| {})
}
