//! The names of everything cairn keeps in a data directory (docs/design.md, "The data
//! directory"), in one place: what the guard, the leftovers sweep, backups and restore must
//! agree on.

/// The SQLite file.
pub const DB_FILE: &str = "store.db";
/// SQLite's write-ahead log beside it.
pub(crate) const WAL_FILE: &str = "store.db-wal";
/// SQLite's shared-memory index of the log.
pub(crate) const SHM_FILE: &str = "store.db-shm";
/// The advisory lock held by the one writing process; holds its pid.
pub(crate) const LOCK_FILE: &str = "cairn.lock";
/// Room kept for freeing room on a full disk.
pub(crate) const RESERVE_FILE: &str = "cairn.reserve";
/// What cairn set aside instead of deleting.
pub const QUARANTINE_DIR: &str = "quarantine";
/// The blob store.
pub const BLOBS_DIR: &str = "blobs";
/// Inside `blobs/`: puts in progress.
pub(crate) const BLOB_TMP_DIR: &str = ".tmp";
/// Inside `blobs/`: blobs `gc` moved aside until its transaction committed.
pub(crate) const BLOB_TRASH_DIR: &str = ".trash";
/// Verified backups, one folder each.
pub const BACKUPS_DIR: &str = "backups";
/// A backup's (and an export's) list of files.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Inside `backups/`: a backup being built is `.tmp-<id>`.
pub(crate) const BACKUP_TMP_PREFIX: &str = ".tmp-";
/// Inside `backups/`: records of failed backups.
pub(crate) const BACKUP_FAILED_DIR: &str = "failed";
/// A restore in progress: its journal, and the folder it stages into.
pub(crate) const RESTORE_JOURNAL_FILE: &str = "restore.json";
pub(crate) const RESTORE_STAGING_DIR: &str = ".restore-staging";
/// A database being rebuilt by `repair`.
pub(crate) const REBUILD_STAGING_DIR: &str = ".rebuild-staging";
/// Beside an export's target: the export being written is `.cairn-export-…`.
pub(crate) const EXPORT_TMP_PREFIX: &str = ".cairn-export-";
/// Beside the store: a migration plan's scratch copy is `.migrate-plan-…`.
pub(crate) const MIGRATE_SCRATCH_PREFIX: &str = ".migrate-plan-";
/// Inside a temporary folder: the file its owner holds locked while it works.
pub(crate) const OWNER_FILE: &str = ".owner";
