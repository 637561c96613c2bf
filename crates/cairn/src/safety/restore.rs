//! Restore (SAFE-2): a verified backup back into the store, into another directory, or one
//! collection or record at a time.
//!
//! A full restore never runs on an unverified backup: it re-verifies the backup first, then
//! takes a verified pre-restore backup of the current state, then swaps. The swap has to
//! replace several files (`store.db`, its `-wal` and `-shm`, `blobs/`), which no rename does
//! at once, so it is journalled:
//!
//! 1. the backup is copied into `.restore-staging/` and fsynced (a crash here leaves the store
//!    as it was; the next open removes the staging folder);
//! 2. `restore.json` is written durably, naming the staging folder and where the replaced
//!    files go (`quarantine/replaced-<time>/`): from this moment the restore will complete;
//! 3. for each of `store.db-wal`, `store.db-shm`, `store.db`, `blobs`: the current one is
//!    renamed into the quarantine folder (unless it is already there), then the staged one is
//!    renamed into place; every step can be repeated, so the next open simply runs them again
//!    after a crash (roll forward);
//! 4. the journal is removed.
//!
//! The old WAL goes first so that no moment exists where a new `store.db` sits beside the old
//! database's WAL. Nothing is deleted: what was replaced stays in quarantine.
//!
//! Alternative considered: restoring into a sibling directory and renaming directories; the
//! data directory is the unit users and apps point at (and holds the lock and backups), so
//! it cannot itself be swapped.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::fsutil;
use crate::engine::layout::{DB_FILE, QUARANTINE_DIR, RESTORE_JOURNAL_FILE, RESTORE_STAGING_DIR, SHM_FILE, WAL_FILE};
use crate::engine::store::Progress;
use crate::engine::store::{Store, StoreOptions};
use crate::error::{Error, Result};
use crate::safety::backup::{self, BackupOptions, BackupReason, BackupStatus, Manifest};

/// What a restore replaces, in the order it replaces them.
const ITEMS: [&str; 4] = [WAL_FILE, SHM_FILE, DB_FILE, crate::engine::layout::BLOBS_DIR];
/// What a rebuild (see `rebuild`) replaces: the database, not the blobs.
pub(crate) const DATABASE_ITEMS: [&str; 3] = [WAL_FILE, SHM_FILE, DB_FILE];

/// A swap in progress: `staging` holds the new files, `replaced` receives the old ones.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Journal {
    /// The backup restored, or `rebuild`.
    pub(crate) backup: String,
    pub(crate) staging: PathBuf,
    pub(crate) replaced: PathBuf,
    /// What is swapped, in order. Journals written before this field existed swap all of
    /// [`ITEMS`].
    #[serde(default = "all_items")]
    pub(crate) items: Vec<String>,
}

fn all_items() -> Vec<String> {
    ITEMS.map(String::from).to_vec()
}

/// What [`Store::restore`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RestoreReport {
    pub backup: String,
    /// The backup of the state that was replaced (none when there was no store yet, or the
    /// restore went into another directory).
    pub pre_restore_backup: Option<String>,
    /// Where the replaced files were moved.
    pub replaced_into: Option<PathBuf>,
    /// Why the replaced store could not be opened, when it could not: it was then not backed
    /// up first, and is kept whole in `replaced_into`.
    pub damaged: Option<String>,
    /// The store directory written.
    pub target: PathBuf,
    /// The backup's manifest: what the store now holds.
    pub manifest: Manifest,
}

/// What a record-level restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RecordsRestored {
    /// The collection was missing and was created from the backup's schema.
    pub collection_created: bool,
    /// Records written as new versions (created, replaced or undeleted).
    pub restored: Vec<String>,
    /// Records already equal to the backup's.
    pub unchanged: u64,
    /// Blobs copied from the backup because the store no longer had them.
    pub blobs_copied: u64,
}

/// Options of [`Store::restore`]. Defaults: in place, from the store's own `backups/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestoreOptions {
    /// Restore into this directory instead (it must not exist or be empty); the store itself
    /// is not touched.
    pub to: Option<PathBuf>,
    /// Where the backups are. Default: `backups/` in the store directory.
    pub backups_dir: Option<PathBuf>,
}

/// Loads a backup's manifest after verifying the backup again; refuses anything not
/// verified now and before.
fn restorable(root: &Path, id: &str, progress: Progress<'_>) -> Result<(PathBuf, Manifest)> {
    let listed = backup::list_backups(root)?;
    let Some(info) = listed.into_iter().find(|b| b.id == id && b.status != BackupStatus::Failed) else {
        return Err(Error::BackupNotFound { id: id.to_string() });
    };
    if info.status != BackupStatus::Good {
        let reason = info.error.unwrap_or_else(|| "it is not verified".into());
        return Err(Error::BackupNotRestorable { id: id.to_string(), reason });
    }
    let again = backup::verify_backup(root, id, progress)?;
    match (again.status, again.manifest) {
        (BackupStatus::Good, Some(manifest)) => Ok((again.path, manifest)),
        _ => Err(Error::BackupNotRestorable {
            id: id.to_string(),
            reason: format!("it failed verification just now: {}", again.error.unwrap_or_default()),
        }),
    }
}

impl Store {
    /// Restores backup `id` of the store in `dir` (see the module docs). The store must not be
    /// open in this or another process; this takes its write lock.
    pub fn restore(dir: &Path, id: &str, options: &RestoreOptions, progress: Progress<'_>) -> Result<RestoreReport> {
        let result = restore_now(dir, id, options, progress);
        // Recorded in the store as it is now: the restored one (whose trail is the backup's), or
        // the one that stayed. A restore into another directory leaves the store alone.
        let refused = matches!(result, Err(Error::Locked { .. } | Error::NoStore { .. } | Error::NotAStore { .. }));
        if options.to.is_none() && !refused {
            crate::safety::open::append_to(dir, "local", "restore", id, &crate::engine::trail::outcome(&result), "");
        }
        result
    }
}

/// What [`Store::restore_in_place`] leaves: the store opened again, and the restore's outcome.
#[derive(Debug)]
#[non_exhaustive]
pub struct Reopened {
    /// The store as it is now: restored, or as it was when the restore failed. An error only
    /// when it could not be opened again.
    pub store: Result<Store>,
    /// What the restore did, or why it did nothing.
    pub restored: Result<RestoreReport>,
}

impl Store {
    /// Restores the store this handle has open from backup `id`, for a process that keeps
    /// the store open (a server): the handle is closed — it must be the only one open on the
    /// store, or nothing happens and it is given back — the store is restored as
    /// [`Store::restore`] does (the pre-restore backup first), and it is opened again with
    /// `reopen`. A restore that fails leaves the store as it was, opened again.
    pub fn restore_in_place(self, id: &str, reopen: &StoreOptions, progress: Progress<'_>) -> Reopened {
        // A backup that is not there is answered without closing anything.
        let listed = backup::list_backups(&backup::backups_dir(self.dir()));
        if let Err(e) = listed.and_then(|all| {
            all.into_iter().find(|b| b.id == id).map(drop).ok_or_else(|| Error::BackupNotFound { id: id.to_string() })
        }) {
            return Reopened { store: Ok(self), restored: Err(e) };
        }
        if std::sync::Arc::strong_count(&self.inner) > 1 {
            let busy = Error::NotAllowed(
                "other handles on this store are open in this process; a restore needs it closed everywhere".into(),
            );
            return Reopened { store: Ok(self), restored: Err(busy) };
        }
        let dir = self.dir().to_path_buf();
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "closing the store before a restore");
        }
        let restored = Store::restore(&dir, id, &RestoreOptions::default(), progress);
        let store = Store::open(&dir, StoreOptions { create: false, ..reopen.clone() });
        Reopened { store, restored }
    }
}

fn restore_now(dir: &Path, id: &str, options: &RestoreOptions, progress: Progress<'_>) -> Result<RestoreReport> {
    let root = options.backups_dir.clone().unwrap_or_else(|| backup::backups_dir(dir));
    let (source, manifest) = restorable(&root, id, progress)?;
    if let Some(to) = &options.to {
        return restore_elsewhere(&source, manifest, to, progress);
    }
    // The pre-restore backup, taken under the same lock the swap then uses. A store SQLite
    // cannot open cannot be backed up: it is moved aside whole instead (that is when a
    // restore matters most).
    let mut damaged = None;
    let mut live_generation = None;
    let (lock, pre) = if dir.join(DB_FILE).exists() {
        match Store::open(dir, StoreOptions::existing()) {
            Ok(store) => {
                live_generation = store.epoch().ok().map(|e| e.generation);
                let pre = store.backup(
                    &BackupOptions { reason: BackupReason::PreRestore, dir: Some(root.clone()), rotate: false },
                    progress,
                )?;
                (store.into_lock()?, Some(pre.id))
            }
            Err(e) if e.is_corruption() => {
                tracing::warn!(error = %e, "restoring over a store that cannot be opened; it is kept in quarantine");
                damaged = Some(e.to_string());
                (crate::engine::store::lock(dir)?, None)
            }
            Err(e) => return Err(e),
        }
    } else {
        (crate::engine::store::lock(dir)?, None)
    };
    let staging = dir.join(RESTORE_STAGING_DIR);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io("remove", &staging, e))?;
    }
    std::fs::create_dir(&staging).map_err(|e| Error::io("create directory", &staging, e))?;
    stage(&source, &manifest, &staging, Some(dir), progress)?;
    mark_restored(&staging, live_generation)?;
    let replaced = fsutil::unique_dir(&dir.join(QUARANTINE_DIR), "replaced")?;
    let journal =
        Journal { backup: id.to_string(), staging: staging.clone(), replaced: replaced.clone(), items: all_items() };
    swap(dir, &journal)?;
    drop(lock);
    tracing::info!(backup = id, "restored");
    Ok(RestoreReport {
        backup: id.to_string(),
        pre_restore_backup: pre,
        replaced_into: Some(replaced),
        damaged,
        target: dir.to_path_buf(),
        manifest,
    })
}

fn restore_elsewhere(source: &Path, manifest: Manifest, to: &Path, progress: Progress<'_>) -> Result<RestoreReport> {
    let empty = match std::fs::read_dir(to) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::io("list", to, e)),
    };
    if !empty {
        return Err(Error::PathExists {
            path: to.to_path_buf(),
            reason: "is not empty; a restore goes into a new or empty directory".into(),
        });
    }
    std::fs::create_dir_all(to).map_err(|e| Error::io("create directory", to, e))?;
    stage(source, &manifest, to, None, progress)?;
    mark_restored(to, None)?;
    Ok(RestoreReport {
        backup: manifest.id.clone(),
        pre_restore_backup: None,
        replaced_into: None,
        damaged: None,
        target: to.to_path_buf(),
        manifest,
    })
}

/// Raises the restore generation of the database staged in `dir` above its own and `live`'s
/// (engine/lineage.rs), so that followers of the log it replaces learn that their seqs no
/// longer mean what they did. A backup older than format 10 has no lineage yet: opening it
/// draws a new store id, which tells followers the same.
fn mark_restored(dir: &Path, live: Option<u64>) -> Result<()> {
    let path = dir.join(DB_FILE);
    let conn = rusqlite::Connection::open(&path)?;
    let format: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if format >= 10 {
        crate::engine::lineage::mark_restored(&conn, live)?;
    }
    conn.close().map_err(|(_, e)| e)?;
    std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(|e| Error::io("sync", &path, e))?;
    fsutil::sync_dir(dir)
}

/// Copies a backup's files into `target`, checking each against the manifest. A blob the
/// live store `reuse` already holds with the same bytes is hard-linked from it instead (its
/// old directory moves to quarantine, so the inode is not shared with anything in use).
fn stage(
    source: &Path,
    manifest: &Manifest,
    target: &Path,
    reuse: Option<&Path>,
    progress: Progress<'_>,
) -> Result<()> {
    let total = manifest.files.len() as u64;
    // The backup is read as a foreign folder: beneath it, regular files only, no further
    // than the manifest says.
    let folder = crate::engine::foreign::ForeignDir::open(source)?;
    for (i, file) in manifest.files.iter().enumerate() {
        let to = target.join(&file.path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
        }
        let live = reuse
            .map(|dir| dir.join(&file.path))
            .filter(|p| file.path != DB_FILE && std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file()));
        let linked = live.is_some_and(|live| {
            fsutil::hash_file(&live).is_ok_and(|(size, sha)| size == file.size && sha == file.sha256)
                && std::fs::hard_link(&live, &to).is_ok()
        });
        if !linked {
            let (size, sha) = fsutil::copy_reader_hashed(folder.bounded(&file.path, file.size)?, &to)?;
            if size != file.size || sha != file.sha256 {
                return Err(Error::Corruption {
                    location: format!("backup {} file {}", manifest.id, file.path),
                    detail: "it changed while being restored".into(),
                });
            }
        }
        progress("restore", i as u64 + 1, total);
    }
    let mut dirs = vec![target.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
            dirs.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
        i += 1;
    }
    for dir in dirs.iter().rev() {
        fsutil::sync_dir(dir)?;
    }
    Ok(())
}

/// Writes the journal durably, then carries out the swap it describes: from the moment the
/// journal exists, the swap completes, now or at the next writable open.
pub(crate) fn swap(dir: &Path, journal: &Journal) -> Result<()> {
    let text = serde_json::to_vec_pretty(journal).map_err(|e| Error::Internal(e.to_string()))?;
    fsutil::write_durably(&dir.join(RESTORE_JOURNAL_FILE), &text)?;
    roll_forward(dir, journal)
}

/// Carries out a journalled swap; safe to run again after a crash at any point.
fn roll_forward(dir: &Path, journal: &Journal) -> Result<()> {
    std::fs::create_dir_all(&journal.replaced).map_err(|e| Error::io("create directory", &journal.replaced, e))?;
    for item in &journal.items {
        let (current, old, staged) = (dir.join(item), journal.replaced.join(item), journal.staging.join(item));
        if !old.exists() && current.symlink_metadata().is_ok() {
            std::fs::rename(&current, &old).map_err(|e| Error::io("move aside", &current, e))?;
            fsutil::sync_dir(&journal.replaced)?;
            fsutil::sync_dir(dir)?;
        }
        if staged.symlink_metadata().is_ok() {
            std::fs::rename(&staged, &current).map_err(|e| Error::io("move into place", &staged, e))?;
            fsutil::sync_dir(dir)?;
        }
    }
    if journal.staging.exists() {
        std::fs::remove_dir_all(&journal.staging).map_err(|e| Error::io("remove", &journal.staging, e))?;
    }
    let path = dir.join(RESTORE_JOURNAL_FILE);
    std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
    fsutil::sync_dir(dir)
}

/// Before a store opens for writing: finishes a restore a crash interrupted, or removes the
/// staging folder of one that never reached its journal.
pub(crate) fn recover(dir: &Path) -> Result<()> {
    let path = dir.join(RESTORE_JOURNAL_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let journal: Journal = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Corruption { location: path.display().to_string(), detail: e.to_string() })?;
            tracing::warn!(backup = journal.backup, "finishing a restore that was interrupted");
            roll_forward(dir, &journal)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            for staging in [dir.join(RESTORE_STAGING_DIR), dir.join(crate::engine::layout::REBUILD_STAGING_DIR)] {
                if staging.exists() {
                    std::fs::remove_dir_all(&staging).map_err(|e| Error::io("remove", &staging, e))?;
                }
            }
            Ok(())
        }
        Err(e) => Err(Error::io("read", &path, e)),
    }
}

/// True when a restore is waiting to be finished by an open for writing.
pub(crate) fn interrupted(dir: &Path) -> bool {
    dir.join(RESTORE_JOURNAL_FILE).exists()
}

impl Store {
    /// Brings one collection (or one record, with `id`) back from backup `backup_id` as new
    /// versions: records that differ from the backup's, are deleted or are gone are written
    /// with the backup's body; others are left alone, as are records the backup does not have.
    /// A collection the store no longer has is created from the backup's schema, and blobs
    /// the records link are copied back when the store lacks them.
    pub fn restore_records(&self, backup_id: &str, collection: &str, id: Option<&str>) -> Result<RecordsRestored> {
        let result = self.restore_records_now(backup_id, collection, id);
        let target = match id {
            Some(id) => format!("{collection}/{id} from {backup_id}"),
            None => format!("{collection} from {backup_id}"),
        };
        let detail = result.as_ref().map(|r| format!("{} record(s) restored", r.restored.len())).unwrap_or_default();
        self.audit("restore_records", &target, &crate::engine::trail::outcome(&result), &detail);
        result
    }

    fn restore_records_now(&self, backup_id: &str, collection: &str, id: Option<&str>) -> Result<RecordsRestored> {
        let root = backup::backups_dir(self.dir());
        let listed = backup::list_backups(&root)?;
        let Some(info) = listed.into_iter().find(|b| b.id == backup_id && b.status != BackupStatus::Failed) else {
            return Err(Error::BackupNotFound { id: backup_id.to_string() });
        };
        if info.status != BackupStatus::Good {
            return Err(Error::BackupNotRestorable {
                id: backup_id.to_string(),
                reason: info.error.unwrap_or_default(),
            });
        }
        let old = Store::open(&info.path, StoreOptions::read_only())?;
        let schema = old.collection(collection)?.schema;
        let mut report = RecordsRestored::default();
        if self.collection(collection).is_err() {
            self.create_collection(schema.clone())?;
            report.collection_created = true;
        }
        // Bodies as stored: encrypted fields stay sealed (the backup's handle holds no key).
        let records = match id {
            Some(id) => match old.stored_record(collection, id)? {
                Some(record) if record.deleted_at.is_none() => vec![record],
                other => {
                    let deleted = other.is_some();
                    return Err(Error::NotFound { collection: collection.into(), id: id.into(), deleted });
                }
            },
            None => {
                let conn = old.reader()?;
                let stored = crate::data::collection::load(&conn, collection)?;
                let mut all = Vec::new();
                let mut scan = crate::data::record::ScanOptions::default();
                loop {
                    let page = crate::data::record::scan(&conn, &stored, &scan)?;
                    let Some(last) = page.last() else { break };
                    scan.after = Some(last.id.clone());
                    all.extend(page);
                }
                all
            }
        };
        let c = crate::data::collection::Collection::new(schema, String::new());
        for record in &records {
            for (_, hash) in crate::data::attachments::links(&c, &record.body) {
                if self.blob(hash).is_err() {
                    self.put_blob(old.open_blob(hash)?)?;
                    report.blobs_copied += 1;
                }
            }
        }
        let name = collection.to_string();
        let (restored, unchanged) = self.write(move |tx| {
            let (mut restored, mut unchanged) = (Vec::new(), 0u64);
            for record in records {
                match tx.restore_body(&name, &record.id, record.body.into())? {
                    true => restored.push(record.id),
                    false => unchanged += 1,
                }
            }
            Ok((restored, unchanged))
        })?;
        report.restored = restored;
        report.unchanged = unchanged;
        Ok(report)
    }
}
