//! Backups (SAFE-1): online, verified, rotated snapshots of the database and the blobs.
//!
//! A backup is a plain directory `backups/<id>/` holding `store.db` (a self-contained SQLite
//! file in rollback-journal mode), `blobs/` laid out as in a store, and `manifest.json`
//! listing every file with its size and SHA-256, the counts per collection, the change-log
//! seq the snapshot corresponds to, and the result of its verification. A backup directory
//! is a store: `cairn --dir backups/<id> get …` reads it.
//!
//! The snapshot is `VACUUM INTO` on a read connection: it runs inside one read transaction,
//! so it is consistent at one commit, and in WAL mode writers never wait for it (the longest
//! writer stall is reported by the benchmark, not assumed). The online backup API was the
//! alternative; it restarts whenever another connection writes, so under steady writes it may
//! never finish. The seq and counts are read from the copy itself, so they describe exactly
//! what it holds.
//!
//! Blobs are copied, hashed in the same pass; a blob an earlier backup in the same folder
//! already holds is hard-linked from that backup instead (incremental by hash). Blobs are
//! never hard-linked from the live store: a backup must not share an inode, and so its bytes,
//! with the data it protects.
//!
//! The backup is built in `backups/.tmp-<id>/`, verified there (manifest hashes, `PRAGMA
//! integrity_check`, every record and change-log checksum, every blob's content, the counts),
//! and renamed into place only when all of that passed. A failure removes the partial
//! directory, writes `backups/failed/<id>.json`, logs an error, sends
//! [`StoreEvent::BackupFailed`], and returns an error: never skipped silently.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::engine::change::Seq;
use crate::engine::fsutil;
use crate::engine::layout::{BACKUPS_DIR, BACKUP_FAILED_DIR, BACKUP_TMP_PREFIX, DB_FILE, MANIFEST_FILE};
use crate::engine::store::Progress;
use crate::engine::store::{Store, StoreOptions};
use crate::engine::timestamp::Timestamp;
use crate::error::{Error, Result};
use crate::safety::check::CheckOptions;

/// The version of the manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackupReason {
    /// Asked for (`cairn backup create`).
    Manual,
    /// When the store was opened and the newest backup was old.
    OnOpen,
    /// When the store was closed cleanly.
    OnClose,
    /// On the interval while a process held the store.
    Interval,
    /// Of the state a restore replaced.
    PreRestore,
    /// Before `repair` changed anything.
    PreRepair,
    /// Before a migration.
    PreMigration,
    /// Before an import.
    PreImport,
    /// By a schedule (the built-in `cairn.backup` job).
    Scheduled,
}

impl BackupReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupReason::Manual => "manual",
            BackupReason::OnOpen => "on_open",
            BackupReason::OnClose => "on_close",
            BackupReason::Interval => "interval",
            BackupReason::PreRestore => "pre_restore",
            BackupReason::PreRepair => "pre_repair",
            BackupReason::PreMigration => "pre_migration",
            BackupReason::PreImport => "pre_import",
            BackupReason::Scheduled => "scheduled",
        }
    }
}

/// Record counts of one collection in a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionCounts {
    pub name: String,
    pub schema_version: u64,
    pub live: u64,
    pub deleted: u64,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the backup directory, `/`-separated.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// How a backup went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupStats {
    /// How long the database snapshot took (writers were not blocked meanwhile).
    pub snapshot_ms: u64,
    /// How long verification took.
    pub verify_ms: u64,
    pub total_ms: u64,
    /// Blob files hard-linked from an earlier backup, and copied.
    pub blobs_linked: u64,
    pub blobs_copied: u64,
    /// Bytes written (the snapshot and copied blobs).
    pub bytes_written: u64,
    /// Unreferenced blobs `gc` removed between the snapshot and their copy; dropped from the
    /// copy's blob table, since no record links them.
    pub blobs_collected_meanwhile: u64,
}

/// The result of verifying a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    pub at: String,
    pub ok: bool,
    /// What was wrong; empty when `ok`.
    pub problems: Vec<String>,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub reason: BackupReason,
    /// When the snapshot was taken, RFC 3339, and as milliseconds since the epoch.
    pub created_at: String,
    pub created_at_ms: i64,
    pub cairn_version: String,
    /// The store's format version (cairn's own tables).
    pub store_format: u32,
    /// The change-log seq the snapshot corresponds to: it holds exactly the changes 1..=seq.
    pub seq: Seq,
    pub collections: Vec<CollectionCounts>,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub files: Vec<FileEntry>,
    pub stats: BackupStats,
    pub verification: Option<Verification>,
    /// SHA-256 of this manifest's JSON with this field empty: an edited manifest fails.
    pub checksum: String,
}

impl Manifest {
    /// The backup manifest format this library writes and reads.
    pub const FORMAT: u32 = MANIFEST_FORMAT;
}

impl Manifest {
    fn seal(&mut self) {
        self.checksum = String::new();
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        self.checksum = crate::engine::hash::hex(&crate::engine::hash::sha256(&bytes));
    }

    fn is_sealed(&self) -> bool {
        let mut copy = self.clone();
        copy.seal();
        copy.checksum == self.checksum
    }

    /// Total bytes of the files listed.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// True when the backup passed its last verification.
    pub fn is_verified(&self) -> bool {
        self.verification.as_ref().is_some_and(|v| v.ok)
    }
}

/// The state of a backup as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackupStatus {
    /// Verified; may be restored.
    Good,
    /// Its last verification failed, or its manifest is missing, unreadable or edited.
    Damaged,
    /// Taking it failed; only the failure record is left.
    Failed,
}

/// A backup as [`Store::backups`] lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BackupInfo {
    pub id: String,
    pub path: PathBuf,
    pub status: BackupStatus,
    /// The manifest, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    /// Why the backup is damaged or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds since it was taken.
    pub age_seconds: i64,
}

/// What [`Store::backup`] does. Defaults: a manual backup into the store's `backups/`,
/// rotated afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupOptions {
    pub reason: BackupReason,
    /// The folder of backups. Default: `backups/` in the data directory.
    pub dir: Option<PathBuf>,
    /// Apply the rotation settings afterwards. Default: true.
    pub rotate: bool,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions { reason: BackupReason::Manual, dir: None, rotate: true }
    }
}

impl BackupOptions {
    /// A backup taken for `reason`, otherwise the defaults.
    pub fn because(reason: BackupReason) -> Self {
        BackupOptions { reason, ..Self::default() }
    }
}

/// Something a store reports as it happens, besides changes; see [`Store::events`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StoreEvent {
    BackupCreated { id: String, reason: BackupReason },
    BackupFailed { id: String, reason: BackupReason, error: String },
    RotationProblem { detail: String },
}

/// A folder of backups: a store's own `backups/` ([`Backups::of`]) or one elsewhere
/// ([`Backups::at`]). Listing and verifying need no open store, so they work on a store that
/// will not open, or that another process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backups {
    root: PathBuf,
}

impl Backups {
    /// The backups of the store in `store_dir`.
    pub fn of(store_dir: &Path) -> Backups {
        Backups { root: backups_dir(store_dir) }
    }

    /// The backups in the folder `root`.
    pub fn at(root: impl AsRef<Path>) -> Backups {
        Backups { root: root.as_ref().to_path_buf() }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every backup in the folder, newest first, failed ones included.
    pub fn list(&self) -> Result<Vec<BackupInfo>> {
        list_backups(&self.root)
    }

    /// Verifies backup `id` again and records the result in its manifest.
    pub fn verify(&self, id: &str, progress: Progress<'_>) -> Result<BackupInfo> {
        verify_backup(&self.root, id, progress)
    }
}

/// The backups folder of a store directory.
pub(crate) fn backups_dir(store_dir: &Path) -> PathBuf {
    store_dir.join(BACKUPS_DIR)
}

impl Store {
    /// Takes a backup, verifies it and, with `options.rotate`, applies rotation. An error
    /// means no backup was added (see the module docs for how a failure is reported).
    pub fn backup(&self, options: &BackupOptions, progress: Progress<'_>) -> Result<BackupInfo> {
        let result = self.backup_now(options, progress);
        let target = match &result {
            Ok(info) => info.id.clone(),
            Err(Error::BackupFailed { id, .. }) => id.clone(),
            Err(_) => String::new(),
        };
        self.audit("backup", &target, &crate::engine::trail::outcome(&result), options.reason.as_str());
        result
    }

    fn backup_now(&self, options: &BackupOptions, progress: Progress<'_>) -> Result<BackupInfo> {
        let root = options.dir.clone().unwrap_or_else(|| backups_dir(self.dir()));
        let id = new_id(&root, options.reason)?;
        let tmp = root.join(format!("{BACKUP_TMP_PREFIX}{id}"));
        let outcome = self.build_backup(&root, &tmp, &id, options.reason, progress);
        let info = match outcome {
            Ok(info) => info,
            Err(e) => {
                if tmp.exists() {
                    let _ = std::fs::remove_dir_all(&tmp);
                }
                let error = e.to_string();
                tracing::error!(id, reason = options.reason.as_str(), error, "backup failed");
                let record = serde_json::json!({
                    "id": id, "reason": options.reason, "at": Timestamp::now().to_string(), "error": error,
                });
                self.record_failure(&root, &id, record);
                self.emit(StoreEvent::BackupFailed { id: id.clone(), reason: options.reason, error: error.clone() });
                return Err(Error::BackupFailed { id, reason: error });
            }
        };
        self.emit(StoreEvent::BackupCreated { id: info.id.clone(), reason: options.reason });
        if options.rotate {
            if let Err(e) = self.rotate_backups_in(&root) {
                tracing::error!(error = %e, "backup rotation failed");
                self.emit(StoreEvent::RotationProblem { detail: e.to_string() });
            }
        }
        Ok(info)
    }

    fn build_backup(
        &self,
        root: &Path,
        tmp: &Path,
        id: &str,
        reason: BackupReason,
        progress: Progress<'_>,
    ) -> Result<BackupInfo> {
        let started = Instant::now();
        std::fs::create_dir_all(tmp).map_err(|e| Error::io("create directory", tmp, e))?;
        // Held until the backup is in place: a `.tmp-` folder nobody holds is a leftover.
        let owner = crate::engine::owner::claim(tmp)?;
        let db = tmp.join(DB_FILE);
        let created = Timestamp::now();
        progress("snapshot", 0, 1);
        {
            let conn = self.reader()?;
            let path = db
                .to_str()
                .ok_or_else(|| Error::invalid_input(db.display().to_string(), "a backup path must be UTF-8"))?;
            conn.execute("VACUUM INTO ?1", [path]).map_err(|e| backup_io(&db, e))?;
        }
        let snapshot_ms = started.elapsed().as_millis() as u64;
        progress("snapshot", 1, 1);
        let copy = Connection::open(&db)?;
        let (collections, seq, blobs) = snapshot_contents(&copy)?;
        let store_format: u32 = copy.query_row("PRAGMA user_version", [], |r| r.get(0))?;

        // Blobs: hard-linked from the newest earlier backup that holds the same file, else copied.
        let previous = newest_good(root)?;
        let mut stats = BackupStats { snapshot_ms, ..BackupStats::default() };
        let mut files = Vec::new();
        let total = blobs.len() as u64;
        let mut blob_bytes = 0u64;
        for (done, (hash, codec, refs, size)) in blobs.into_iter().enumerate() {
            let rel = crate::blobs::blob_path(Path::new(""), &hash, codec);
            let rel_text = rel_string(&rel);
            let target = tmp.join(&rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
            }
            let earlier = previous
                .as_ref()
                .and_then(|(dir, m)| m.files.iter().find(|f| f.path == rel_text).map(|f| (dir.join(&rel), f.clone())));
            // Only a regular file is linked (never a symbolic link a crafted backup holds),
            // and never one that is the live blob's own file (a hard link a crafted backup
            // made to it): a backup shares no bytes with the store. The verification below
            // hashes the linked file like every other.
            let live = source_of(self.dir(), &hash, codec).and_then(|p| std::fs::metadata(p).ok());
            let linkable = |p: &Path| {
                std::fs::symlink_metadata(p).is_ok_and(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.file_type().is_file() && live.as_ref().is_none_or(|l| (l.dev(), l.ino()) != (m.dev(), m.ino()))
                })
            };
            let entry = match earlier {
                Some((from, entry)) if linkable(&from) && std::fs::hard_link(&from, &target).is_ok() => {
                    stats.blobs_linked += 1;
                    entry
                }
                _ => match source_of(self.dir(), &hash, codec) {
                    Some(source) => {
                        // A raw blob's file is its content, so its SHA-256 is its name; the
                        // verification below reads and hashes every file anyway, so the
                        // copy itself is left to the kernel (copy_file_range).
                        let (size, sha256) = match codec {
                            crate::blobs::Codec::Raw => (fsutil::copy_synced(&source, &target)?, hash.clone()),
                            crate::blobs::Codec::Zstd => fsutil::copy_hashed(&source, &target)?,
                        };
                        stats.blobs_copied += 1;
                        stats.bytes_written += size;
                        FileEntry { path: rel_text, size, sha256 }
                    }
                    None if refs == 0 => {
                        copy.execute("DELETE FROM cairn_blobs WHERE hash = ?1", [&hash])?;
                        stats.blobs_collected_meanwhile += 1;
                        continue;
                    }
                    None => {
                        return Err(Error::Corruption {
                            location: format!("blob {hash}"),
                            detail: format!("{refs} record links need it but its file is missing; check the store"),
                        })
                    }
                },
            };
            blob_bytes += size;
            files.push(entry);
            progress("blobs", done as u64 + 1, total);
        }
        drop(copy);
        let (size, sha256) = fsutil::hash_file(&db)?;
        stats.bytes_written += size;
        files.push(FileEntry { path: DB_FILE.into(), size, sha256 });
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for dir in blob_dirs(tmp)? {
            fsutil::sync_dir(&dir)?;
        }
        let blob_count = files.len() as u64 - 1;
        let mut manifest = Manifest {
            format: MANIFEST_FORMAT,
            id: id.to_string(),
            reason,
            created_at: created.to_string(),
            created_at_ms: created.0,
            cairn_version: env!("CARGO_PKG_VERSION").to_string(),
            store_format,
            seq: Seq(seq),
            collections,
            blobs: blob_count,
            blob_bytes,
            files,
            stats,
            verification: None,
            checksum: String::new(),
        };
        let verify_started = Instant::now();
        let verification = verify_dir(tmp, &manifest, progress)?;
        manifest.stats.verify_ms = verify_started.elapsed().as_millis() as u64;
        manifest.stats.total_ms = started.elapsed().as_millis() as u64;
        let ok = verification.ok;
        let problems = verification.problems.join("; ");
        manifest.verification = Some(verification);
        if !ok {
            return Err(Error::Corruption {
                location: format!("backup {id}"),
                detail: format!("verification failed: {problems}"),
            });
        }
        write_manifest(tmp, &mut manifest)?;
        let target = root.join(id);
        std::fs::rename(tmp, &target).map_err(|e| Error::io("rename backup into place", &target, e))?;
        // In place, it is no temporary folder any more: its owner file goes, then the lock.
        let _ = std::fs::remove_file(target.join(crate::engine::layout::OWNER_FILE));
        drop(owner);
        fsutil::sync_dir(root)?;
        tracing::info!(id, reason = reason.as_str(), seq, "backup created and verified");
        Ok(BackupInfo {
            id: id.to_string(),
            path: target,
            status: BackupStatus::Good,
            manifest: Some(manifest),
            error: None,
            age_seconds: 0,
        })
    }

    /// Every backup in the store's `backups/`, newest first, failed ones included (also a
    /// failure whose record could not be written yet).
    pub fn backups(&self) -> Result<Vec<BackupInfo>> {
        let root = backups_dir(self.dir());
        self.write_pending_failures();
        let mut list = list_backups(&root)?;
        let pending = self.extensions().get_or_default::<PendingFailures>();
        let pending = pending.0.lock().unwrap_or_else(|p| p.into_inner());
        for (at, id, record) in pending.iter().filter(|(at, _, _)| *at == root) {
            if list.iter().any(|b| &b.id == id) {
                continue;
            }
            let age = record["at"].as_str().and_then(crate::engine::timestamp::parse_datetime);
            list.push(BackupInfo {
                id: id.clone(),
                path: at.join(BACKUP_FAILED_DIR).join(format!("{id}.json")),
                status: BackupStatus::Failed,
                manifest: None,
                error: record["error"].as_str().map(String::from),
                age_seconds: age.map_or(0, |at| Timestamp::now().0 / 1000 - at.unix_timestamp()),
            });
        }
        list.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(list)
    }

    /// Writes the record of a failed backup into `failed/`. On a full disk the space reserve
    /// is given up for it; if it still cannot be written, it is kept in memory (listed by
    /// [`Store::backups`]) and written at the next chance, at the latest when the store closes.
    fn record_failure(&self, root: &Path, id: &str, record: serde_json::Value) {
        let failed = root.join(BACKUP_FAILED_DIR);
        let existed = failed.exists();
        let write = || {
            std::fs::create_dir_all(&failed)
                .map_err(|e| Error::io("create directory", &failed, e))
                .and_then(|()| fsutil::write_durably(&failed.join(format!("{id}.json")), record.to_string().as_bytes()))
        };
        let written = match write() {
            Err(e) if e.is_disk_full() && !self.is_read_only() && crate::data::space::release(self.dir()) => write(),
            other => other,
        };
        if let Err(e) = written {
            tracing::error!(error = %e, id, "could not record the failed backup yet; it is kept in memory");
            if !existed {
                let _ = std::fs::remove_dir(&failed);
            }
            let pending = self.extensions().get_or_default::<PendingFailures>();
            pending.0.lock().unwrap_or_else(|p| p.into_inner()).push((root.to_path_buf(), id.to_string(), record));
        }
    }

    /// Writes the failure records kept in memory, where it can now.
    pub(crate) fn write_pending_failures(&self) {
        write_failure_records(
            &mut self.extensions().get_or_default::<PendingFailures>().0.lock().unwrap_or_else(|p| p.into_inner()),
        );
    }

    /// Verifies a backup again and records the result in its manifest.
    pub fn verify_backup(&self, id: &str, progress: Progress<'_>) -> Result<BackupInfo> {
        verify_backup(&backups_dir(self.dir()), id, progress)
    }

    /// Applies the rotation settings to the store's backups; returns the ids removed.
    pub fn rotate_backups(&self) -> Result<Vec<String>> {
        self.freeing(|| self.rotate_backups_in(&backups_dir(self.dir())))
    }

    fn rotate_backups_in(&self, root: &Path) -> Result<Vec<String>> {
        let policy = RotationPolicy {
            keep_last: self.setting_value::<i64>(crate::data::builtin_settings::BACKUP_KEEP_LAST)?.max(1) as usize,
            keep_daily: self.setting_value::<i64>(crate::data::builtin_settings::BACKUP_KEEP_DAILY)?.max(0) as u32,
            keep_weekly: self.setting_value::<i64>(crate::data::builtin_settings::BACKUP_KEEP_WEEKLY)?.max(0) as u32,
        };
        let all = list_backups(root)?;
        let good: Vec<(String, i64)> = all
            .iter()
            .filter(|b| b.status == BackupStatus::Good)
            .filter_map(|b| b.manifest.as_ref().map(|m| (b.id.clone(), m.created_at_ms)))
            .collect();
        let keep = plan_rotation(&good, Timestamp::now().0, &policy);
        let mut removed = Vec::new();
        for info in all.iter().filter(|b| b.status == BackupStatus::Good && !keep.contains(&b.id)) {
            std::fs::remove_dir_all(&info.path).map_err(|e| Error::io("remove old backup", &info.path, e))?;
            removed.push(info.id.clone());
        }
        for info in all.iter().filter(|b| b.status == BackupStatus::Damaged) {
            let detail = format!(
                "backup {} is damaged and kept for inspection: {}",
                info.id,
                info.error.clone().unwrap_or_default()
            );
            tracing::warn!("{detail}");
            self.emit(StoreEvent::RotationProblem { detail });
        }
        if !removed.is_empty() {
            fsutil::sync_dir(root)?;
        }
        Ok(removed)
    }

    /// Takes a backup when the newest good one is older than `backup.on_open_after_seconds`
    /// (0: never) and the store holds anything. Failures are loud but do not fail the open.
    pub(crate) fn backup_if_stale(&self, setting: &str, reason: BackupReason) {
        let due = || -> Result<bool> {
            let after = self.setting_value::<i64>(setting)?;
            if after <= 0 || self.last_seq()? == Seq(0) {
                return Ok(false);
            }
            let newest = self.backups()?.into_iter().find(|b| b.status == BackupStatus::Good);
            Ok(newest.is_none_or(|b| b.age_seconds >= after))
        };
        match due() {
            Ok(true) => {
                let _ = self.backup(&BackupOptions::because(reason), &mut |_, _, _| {});
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "could not decide whether a backup is due"),
        }
    }
}

/// Writes failure records kept in memory (backups folder, id, record); keeps those that still
/// cannot be written.
/// Records of failed backups that could not be written yet: (backups folder, id, record).
/// Written at the next chance; what is left when the store closes is written then, or logged.
#[derive(Debug, Default)]
struct PendingFailures(std::sync::Mutex<Vec<(PathBuf, String, serde_json::Value)>>);

impl Drop for PendingFailures {
    fn drop(&mut self) {
        let pending = self.0.get_mut().unwrap_or_else(|p| p.into_inner());
        write_failure_records(pending);
        for (_, id, record) in pending.iter() {
            tracing::error!(id, %record, "the record of a failed backup could not be written before the store closed");
        }
    }
}

/// Backup and rotation events' subscribers ([`Store::events`]).
#[derive(Debug, Default)]
struct EventSenders(std::sync::Mutex<Vec<std::sync::mpsc::Sender<StoreEvent>>>);

impl Store {
    /// A feed of backup and rotation events (successes and failures) from now on.
    pub fn events(&self) -> std::sync::mpsc::Receiver<StoreEvent> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.extensions().get_or_default::<EventSenders>().0.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    fn emit(&self, event: StoreEvent) {
        let Some(senders) = self.extensions().get::<EventSenders>() else { return };
        senders.0.lock().unwrap_or_else(|p| p.into_inner()).retain(|s| s.send(event.clone()).is_ok());
    }
}

fn write_failure_records(pending: &mut Vec<(PathBuf, String, serde_json::Value)>) {
    pending.retain(|(root, id, record)| {
        let failed = root.join(BACKUP_FAILED_DIR);
        let written = std::fs::create_dir_all(&failed)
            .map_err(|e| Error::io("create directory", &failed, e))
            .and_then(|()| fsutil::write_durably(&failed.join(format!("{id}.json")), record.to_string().as_bytes()));
        written.is_err()
    });
}

fn backup_io(path: &Path, e: rusqlite::Error) -> Error {
    Error::Io { action: "write snapshot", path: path.to_path_buf(), cause: std::io::Error::other(e.to_string()) }
}

/// A path relative to a backup as the manifest writes it: `/`-separated.
pub(crate) fn rel_string(rel: &Path) -> String {
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// The live file of a blob: in its shard folder, or in the trash when a `gc` that has not
/// committed yet moved it aside.
fn source_of(dir: &Path, hash: &str, codec: crate::blobs::Codec) -> Option<PathBuf> {
    let path = crate::blobs::blob_path(dir, hash, codec);
    if path.exists() {
        return Some(path);
    }
    let trash = crate::blobs::trash_path(dir, hash, codec);
    trash.exists().then_some(trash)
}

fn blob_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.join(crate::engine::layout::BLOBS_DIR)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
        out.push(dir);
    }
    out.push(root.to_path_buf());
    Ok(out)
}

type BlobRow = (String, crate::blobs::Codec, u64, u64);

/// Collections with their counts, the last seq and the blobs (hash, codec, refs, size) of a
/// snapshot.
fn snapshot_contents(conn: &Connection) -> Result<(Vec<CollectionCounts>, u64, Vec<BlobRow>)> {
    let seq: u64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM cairn_changes", [], |r| r.get(0))?;
    let tables: Vec<(String, String, u64)> = conn
        .prepare("SELECT name, table_name, schema_version FROM cairn_collections ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut collections = Vec::new();
    for (name, table, schema_version) in tables {
        let (live, deleted): (u64, u64) = conn.query_row(
            &format!(
                "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM {}",
                crate::engine::sql::quote(&table)
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        collections.push(CollectionCounts { name, schema_version, live, deleted });
    }
    let blobs = conn
        .prepare("SELECT hash, codec, refs, size FROM cairn_blobs ORDER BY hash")?
        .query_map([], |r| {
            let codec: String = r.get(1)?;
            Ok((r.get(0)?, crate::blobs::Codec::parse(&codec), r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok((collections, seq, blobs))
}

/// A new backup id: the UTC time and the reason, e.g. `20261123T163501.123Z-manual`.
fn new_id(root: &Path, reason: BackupReason) -> Result<String> {
    std::fs::create_dir_all(root).map_err(|e| Error::io("create directory", root, e))?;
    let base = format!("{}-{}", fsutil::file_stamp(Timestamp::now()), reason.as_str());
    for n in 1..1000 {
        let id = if n == 1 { base.clone() } else { format!("{base}-{n}") };
        if !root.join(&id).exists() && !root.join(format!("{BACKUP_TMP_PREFIX}{id}")).exists() {
            return Ok(id);
        }
    }
    Err(Error::Internal(format!("too many backups named {base}*")))
}

fn write_manifest(dir: &Path, manifest: &mut Manifest) -> Result<()> {
    manifest.seal();
    let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Internal(e.to_string()))?;
    fsutil::write_durably(&dir.join(MANIFEST_FILE), &bytes)
}

/// Reads a backup's manifest, refusing one that is not valid or was edited.
pub(crate) fn read_manifest(dir: &Path) -> Result<Manifest> {
    let folder = crate::engine::foreign::ForeignDir::open(dir)?;
    let bytes = folder.read(MANIFEST_FILE, MAX_MANIFEST_BYTES)?;
    Manifest::parse(&bytes, &folder.display(MANIFEST_FILE).display().to_string())
}

/// The largest manifest read (it lists every blob of a backup).
const MAX_MANIFEST_BYTES: u64 = 256 << 20;

impl Manifest {
    /// Parses `manifest.json`; refuses another format version and a manifest whose
    /// checksum does not match (edited by hand). `source` names the file in errors.
    pub fn parse(bytes: &[u8], source: &str) -> Result<Manifest> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| Error::invalid_input(source, e.to_string()))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(Error::invalid_input(
                source,
                format!("manifest format {} is not {MANIFEST_FORMAT}", manifest.format),
            ));
        }
        if !manifest.is_sealed() {
            return Err(Error::Corruption {
                location: source.to_string(),
                detail: "the manifest was edited: its checksum does not match".into(),
            });
        }
        Ok(manifest)
    }
}

/// The newest good backup in `root`, with its manifest.
fn newest_good(root: &Path) -> Result<Option<(PathBuf, Manifest)>> {
    Ok(list_backups(root)?
        .into_iter()
        .find(|b| b.status == BackupStatus::Good)
        .and_then(|b| b.manifest.map(|m| (b.path, m))))
}

/// Every backup in `root`, newest first.
pub(crate) fn list_backups(root: &Path) -> Result<Vec<BackupInfo>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("list", root, e)),
    };
    let now = Timestamp::now().0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || name == BACKUP_FAILED_DIR || !path.is_dir() {
            continue;
        }
        let info = match read_manifest(&path) {
            Ok(m) => BackupInfo {
                id: name,
                path,
                status: if m.is_verified() { BackupStatus::Good } else { BackupStatus::Damaged },
                error: m.verification.as_ref().filter(|v| !v.ok).map(|v| v.problems.join("; ")),
                age_seconds: (now - m.created_at_ms) / 1000,
                manifest: Some(m),
            },
            Err(e) => BackupInfo {
                id: name,
                path,
                status: BackupStatus::Damaged,
                manifest: None,
                error: Some(e.to_string()),
                age_seconds: 0,
            },
        };
        out.push(info);
    }
    if let Ok(entries) = std::fs::read_dir(root.join(BACKUP_FAILED_DIR)) {
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let record: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let at = record["at"].as_str().and_then(crate::engine::timestamp::parse_datetime);
            out.push(BackupInfo {
                id: record["id"].as_str().unwrap_or_default().to_string(),
                path,
                status: BackupStatus::Failed,
                manifest: None,
                error: record["error"].as_str().map(String::from),
                age_seconds: at.map_or(0, |at| (now / 1000) - at.unix_timestamp()),
            });
        }
    }
    // Ids start with the UTC time, so they sort by age.
    out.sort_by(|a, b| b.id.cmp(&a.id));
    Ok(out)
}

/// Verifies backup `id` in `root` again and records the result in its manifest.
pub(crate) fn verify_backup(root: &Path, id: &str, progress: Progress<'_>) -> Result<BackupInfo> {
    let path = root.join(id);
    if id.is_empty() || id.starts_with('.') || id.contains(['/', '\\']) || !path.is_dir() {
        return Err(Error::BackupNotFound { id: id.to_string() });
    }
    let mut manifest = match read_manifest(&path) {
        Ok(m) => m,
        Err(e) => {
            return Ok(BackupInfo {
                id: id.to_string(),
                path,
                status: BackupStatus::Damaged,
                manifest: None,
                error: Some(e.to_string()),
                age_seconds: 0,
            })
        }
    };
    let verification = verify_dir(&path, &manifest, progress)?;
    let ok = verification.ok;
    manifest.verification = Some(verification);
    write_manifest(&path, &mut manifest)?;
    let error = (!ok).then(|| manifest.verification.as_ref().map(|v| v.problems.join("; ")).unwrap_or_default());
    let age_seconds = (Timestamp::now().0 - manifest.created_at_ms) / 1000;
    let status = if ok { BackupStatus::Good } else { BackupStatus::Damaged };
    Ok(BackupInfo { id: id.to_string(), path, status, manifest: Some(manifest), error, age_seconds })
}

/// Checks a backup directory against its manifest: every file's size and SHA-256, then the
/// copy as a store (integrity, records, change log, indexes, blob contents) and its counts.
pub(crate) fn verify_dir(dir: &Path, manifest: &Manifest, progress: Progress<'_>) -> Result<Verification> {
    let mut problems = Vec::new();
    let total = manifest.files.len() as u64;
    // A backup holds only files cairn wrote: a link (or pipe, or device) anywhere in it is
    // refused, never followed — SQLite would otherwise open whatever `store.db` points at.
    let folder = crate::engine::foreign::ForeignDir::open(dir)?;
    for rel in folder.irregular()? {
        problems.push(format!("{rel} is a link, pipe or device; a backup holds only regular files"));
    }
    for (i, file) in manifest.files.iter().enumerate() {
        // Read beneath the backup only, no further than the size the manifest declares.
        let hashed = folder
            .bounded(&file.path, file.size)
            .and_then(|r| fsutil::hash_reader(r).map_err(|e| Error::io("read", folder.display(&file.path), e)));
        match hashed {
            Ok((size, sha)) if size == file.size && sha == file.sha256 => {}
            Ok((size, _)) if size != file.size => {
                problems.push(format!("{} is {size} bytes, the manifest says {}", file.path, file.size))
            }
            Ok(_) => problems.push(format!("{} does not match its SHA-256 in the manifest", file.path)),
            Err(Error::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::InvalidData => {
                problems.push(format!("{} is larger than the manifest says ({} bytes)", file.path, file.size))
            }
            Err(e) => problems.push(format!("{}: {e}", file.path)),
        }
        progress("verify files", i as u64 + 1, total);
    }
    if !problems.is_empty() {
        return Ok(Verification { at: Timestamp::now().to_string(), ok: false, problems });
    }
    let store = match Store::open(dir, StoreOptions::read_only()) {
        Ok(store) => store,
        Err(e) => {
            return Ok(Verification { at: Timestamp::now().to_string(), ok: false, problems: vec![e.to_string()] })
        }
    };
    // Raw blobs were just hashed as files (the file is the content); compressed ones are
    // decoded and hashed by the check.
    let report = store.check(&CheckOptions { blobs: false }, progress)?;
    problems.extend(report.problems.iter().map(|p| format!("{}: {}", p.location, p.detail)));
    for file in &manifest.files {
        let Some(name) =
            file.path.rsplit('/').next().filter(|_| file.path.starts_with(crate::engine::layout::BLOBS_DIR))
        else {
            continue;
        };
        match name.strip_suffix(".zst") {
            Some(hash) => {
                let read = store.open_blob(hash).and_then(|mut r| {
                    std::io::copy(&mut r, &mut std::io::sink())
                        .map_err(|e| Error::Corruption { location: format!("blob {hash}"), detail: e.to_string() })
                });
                if let Err(e) = read {
                    problems.push(e.to_string());
                }
            }
            None if name != file.sha256 => problems.push(format!("blob {name}: its content hashes to {}", file.sha256)),
            None => {}
        }
    }
    let conn = Connection::open_with_flags(dir.join(DB_FILE), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let (collections, seq, blobs) = snapshot_contents(&conn)?;
    if seq != manifest.seq.0 {
        problems.push(format!("the copy ends at change {seq}, the manifest says {}", manifest.seq));
    }
    if collections != manifest.collections {
        problems.push("the copy's collections or record counts differ from the manifest".into());
    }
    if blobs.len() as u64 != manifest.blobs {
        problems.push(format!("the copy lists {} blobs, the manifest {}", blobs.len(), manifest.blobs));
    }
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for (hash, codec, _, _) in &blobs {
        let rel = rel_string(&crate::blobs::blob_path(Path::new(""), hash, *codec));
        if !listed.contains(rel.as_str()) {
            problems.push(format!("blob {hash} is in the copy's table but not in the manifest"));
        }
    }
    Ok(Verification { at: Timestamp::now().to_string(), ok: problems.is_empty(), problems })
}

/// How many backups rotation keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// The newest this many.
    pub keep_last: usize,
    /// The newest of each of the last this many days (UTC), counting today.
    pub keep_daily: u32,
    /// The newest of each of the last this many weeks (Monday to Sunday, UTC).
    pub keep_weekly: u32,
}

const DAY_MS: i64 = 86_400_000;

/// The ids rotation keeps of `backups` (id, created ms): the newest `keep_last`, the newest
/// of each recent day and week, and always the newest. Pure, so it is property-tested.
fn plan_rotation(backups: &[(String, i64)], now_ms: i64, policy: &RotationPolicy) -> BTreeSet<String> {
    let mut sorted: Vec<&(String, i64)> = backups.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let mut keep: BTreeSet<String> = sorted.iter().take(policy.keep_last.max(1)).map(|b| b.0.clone()).collect();
    let day = |ms: i64| ms.div_euclid(DAY_MS);
    // 1970-01-01 was a Thursday: shifting by 3 days makes weeks start on Monday.
    let week = |ms: i64| (day(ms) + 3).div_euclid(7);
    let mut newest_of = |bucket: &dyn Fn(i64) -> i64, count: u32| {
        let mut seen = BTreeMap::new();
        for (id, at) in &sorted {
            let b = bucket(*at);
            if b <= bucket(now_ms) && bucket(now_ms) - b < i64::from(count) {
                seen.entry(b).or_insert_with(|| id.clone());
            }
        }
        keep.extend(seen.into_values());
    };
    newest_of(&day, policy.keep_daily);
    newest_of(&week, policy.keep_weekly);
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn rotation_keeps_what_it_promises(
            ages in proptest::collection::vec(0i64..60 * DAY_MS, 0..40),
            keep_last in 1usize..6, keep_daily in 0u32..10, keep_weekly in 0u32..6,
        ) {
            let now = 100 * 365 * DAY_MS;
            let backups: Vec<(String, i64)> = ages.iter().enumerate().map(|(i, age)| (format!("b{i:02}"), now - age)).collect();
            let policy = RotationPolicy { keep_last, keep_daily, keep_weekly };
            let keep = plan_rotation(&backups, now, &policy);
            let mut newest_first = backups.clone();
            newest_first.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
            // Kept ids are backups; the newest is always kept; so are the last N.
            prop_assert!(keep.iter().all(|id| backups.iter().any(|b| &b.0 == id)));
            for b in newest_first.iter().take(keep_last) {
                prop_assert!(keep.contains(&b.0));
            }
            // Every recent day and week with a backup keeps its newest one.
            for (span, count) in [(DAY_MS, keep_daily as i64), (7 * DAY_MS, keep_weekly as i64)] {
                let bucket = |ms: i64| if span == DAY_MS { ms.div_euclid(DAY_MS) } else { (ms.div_euclid(DAY_MS) + 3).div_euclid(7) };
                for b in &newest_first {
                    if bucket(now) - bucket(b.1) < count {
                        let newest = newest_first.iter().find(|o| bucket(o.1) == bucket(b.1)).expect("itself");
                        prop_assert!(keep.contains(&newest.0), "{:?} newest of its bucket", newest);
                    }
                }
            }
            // Nothing else: the kept set is exactly what the rules ask for.
            let bound = keep_last + keep_daily as usize + keep_weekly as usize;
            prop_assert!(keep.len() <= bound.max(1));
        }
    }

    #[test]
    fn rotation_keeps_daily_and_weekly_representatives() {
        let now = 20_000 * DAY_MS + 12 * 3_600_000;
        let hourly: Vec<(String, i64)> = (0..24 * 30).map(|h| (format!("h{h:04}"), now - h * 3_600_000)).collect();
        let policy = RotationPolicy { keep_last: 3, keep_daily: 7, keep_weekly: 4 };
        let keep = plan_rotation(&hourly, now, &policy);
        assert!(keep.contains("h0000") && keep.contains("h0001") && keep.contains("h0002"));
        assert!(keep.len() <= 3 + 7 + 4 && keep.len() >= 9, "{keep:?}");
        assert!(plan_rotation(&[], now, &policy).is_empty());
    }
}
