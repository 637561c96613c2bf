//! What interrupted operations leave behind, and how it is told apart from work in progress.
//!
//! Backups are built in `backups/.tmp-<id>/`, migration rehearsals in `.migrate-plan-*/`,
//! attachments are staged in `blobs/.tmp/`, exports in `.cairn-export-*` beside their target.
//! A process killed in the middle leaves these behind, and nothing else would ever remove
//! them. Age alone cannot tell a dead operation from a slow one (a backup of a large store
//! takes minutes, and may run in another process that only reads the store), so each is
//! owned: the process working in it holds an advisory lock (`flock`) on a file in it — the
//! `.owner` file of a folder, the staged file itself — for as long as it works. The OS drops
//! the lock when the process dies. Whatever is found unlocked is a leftover: `check` reports
//! it, and the next writable open removes it (it is cairn's own scratch data, never the
//! user's). A folder made before its owner file existed counts as a leftover only after an
//! hour.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::layout::OWNER_FILE;
use crate::error::Result;

/// An owned folder without its owner file is this old before it counts as left over.
const UNOWNED_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Something an interrupted operation left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Leftover {
    pub path: PathBuf,
    /// What made it: `backup`, `attachment upload`, `migration rehearsal`, `export`.
    pub what: String,
    pub bytes: u64,
    /// Removed (by a writable open); otherwise only found.
    pub removed: bool,
}

/// True when nobody holds the lock on `path` (taking it for a moment to find out).
fn unlocked(path: &Path) -> bool {
    match File::open(path) {
        Ok(file) => match file.try_lock() {
            Ok(()) => true,
            Err(TryLockError::WouldBlock) => false,
            Err(TryLockError::Error(_)) => false,
        },
        Err(_) => false,
    }
}

fn older_than(path: &Path, age: std::time::Duration) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|elapsed| elapsed > age)
}

/// True when the owned folder `dir` is left over: its owner file is unlocked, or it has none
/// and is old.
fn folder_abandoned(dir: &Path) -> bool {
    let owner = dir.join(OWNER_FILE);
    if owner.exists() {
        unlocked(&owner)
    } else {
        older_than(dir, UNOWNED_GRACE)
    }
}

fn size_of(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path).into_iter().flatten().flatten().map(|e| size_of(&e.path())).sum()
}

/// Finds the leftovers in a data directory (and its `backups/`) and, with `remove`, removes
/// them.
pub(crate) fn sweep(dir: &Path, remove: bool) -> Result<Vec<Leftover>> {
    let mut found: Vec<(PathBuf, &str)> = Vec::new();
    let backups = crate::safety::backup::backups_dir(dir);
    for entry in std::fs::read_dir(&backups).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(crate::engine::layout::BACKUP_TMP_PREFIX)
            && folder_abandoned(&entry.path())
        {
            found.push((entry.path(), "backup"));
        }
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // A rehearsal's scratch copy is a store: it holds its own write lock while in use.
        if name.starts_with(crate::engine::layout::MIGRATE_SCRATCH_PREFIX) {
            let lock = entry.path().join(crate::engine::layout::LOCK_FILE);
            let abandoned = if lock.exists() { unlocked(&lock) } else { older_than(&entry.path(), UNOWNED_GRACE) };
            if abandoned {
                found.push((entry.path(), "migration rehearsal"));
            }
        }
    }
    let staging = crate::blobs::tmp_dir(dir);
    for entry in std::fs::read_dir(&staging).into_iter().flatten().flatten() {
        if unlocked(&entry.path()) {
            found.push((entry.path(), "attachment upload"));
        }
    }
    let mut out = Vec::new();
    for (path, what) in found {
        let bytes = size_of(&path);
        let removed = remove && remove_path(&path);
        out.push(Leftover { path, what: what.to_string(), bytes, removed });
    }
    if remove {
        // An empty staging folder is no leftover, but need not stay either.
        let _ = std::fs::remove_dir(&staging);
    }
    Ok(out)
}

/// Finds (and removes) the export folders an interrupted export left in `parent`.
pub(crate) fn sweep_exports(parent: &Path) -> Vec<Leftover> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(crate::engine::layout::EXPORT_TMP_PREFIX)
            && path.is_dir()
            && folder_abandoned(&path)
        {
            let bytes = size_of(&path);
            let removed = remove_path(&path);
            out.push(Leftover { path, what: "export".into(), bytes, removed });
        }
    }
    out
}

fn remove_path(path: &Path) -> bool {
    let removed = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match removed {
        Ok(()) => {
            tracing::info!(path = %path.display(), "removed what an interrupted operation left");
            true
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not remove what an interrupted operation left");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_folder_is_left_over_only_once_its_owner_is_gone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let backups = crate::safety::backup::backups_dir(tmp.path());
        let working = backups.join(format!("{}a", crate::engine::layout::BACKUP_TMP_PREFIX));
        let dead = backups.join(format!("{}b", crate::engine::layout::BACKUP_TMP_PREFIX));
        std::fs::create_dir_all(&working).expect("mkdir");
        std::fs::create_dir_all(&dead).expect("mkdir");
        let owner = crate::engine::owner::claim(&working).expect("claim");
        drop(crate::engine::owner::claim(&dead).expect("claim"));
        let fresh_unowned = backups.join(format!("{}c", crate::engine::layout::BACKUP_TMP_PREFIX));
        std::fs::create_dir_all(&fresh_unowned).expect("mkdir");

        let found = sweep(tmp.path(), false).expect("sweep");
        assert_eq!(found.iter().map(|l| l.path.clone()).collect::<Vec<_>>(), std::slice::from_ref(&dead));
        assert!(dead.exists(), "only found");
        let removed = sweep(tmp.path(), true).expect("sweep");
        assert!(removed[0].removed && !dead.exists());
        assert!(working.exists() && fresh_unowned.exists(), "work in progress and young folders stay");
        drop(owner);
        assert_eq!(sweep(tmp.path(), true).expect("sweep").len(), 1, "the owner is gone now");
    }
}
