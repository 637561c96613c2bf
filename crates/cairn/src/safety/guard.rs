//! The stray-file guard (SAFE-5): database copies and orphaned journal files in the data
//! directory are moved into `quarantine/` and reported, never deleted.
//!
//! Such files are how hand-made data layers lose data: a `store.db.bak` someone restores by
//! renaming, a `-wal` left beside a copy that SQLite then applies to the wrong file, a
//! `-journal` from a tool that opened the database in rollback mode. The guard runs before
//! SQLite opens the store (so no stray journal is ever "recovered" into it) and during `check`.
//!
//! What counts as stray: any file in the data directory other than cairn's own
//! (`store.db` and its `-wal`/`-shm`, the lock, the restore journal) that starts with the
//! SQLite header or whose name ends in `-wal`, `-shm` or `-journal`, including
//! `store.db-journal` (a WAL-mode store never has one), and any symbolic link (the link is
//! moved, its target never touched). Other unknown files are left alone.
//!
//! Links where cairn's own files and folders belong (`store.db`, its `-wal` and `-shm`,
//! `blobs/`, `backups/`, `quarantine/`) would redirect the store's writes outside its
//! directory: opening such a store is refused, naming which, unless links are explicitly
//! allowed (`StoreOptions::allow_links`, e.g. for attachments kept on another disk).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::layout::{DB_FILE, LOCK_FILE, QUARANTINE_DIR, SHM_FILE, WAL_FILE};
use crate::error::{Error, Result};

/// A stray file the guard found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StrayFile {
    /// Where it was.
    pub path: PathBuf,
    /// Where it is now (inside `quarantine/`); `None` when the store was open read-only and
    /// it could only be reported.
    pub moved_to: Option<PathBuf>,
    /// Why it is stray.
    pub reason: String,
    pub size: u64,
}

impl StrayFile {
    pub(crate) fn describe(&self) -> String {
        match &self.moved_to {
            Some(to) => format!("{}; moved to {}", self.reason, to.display()),
            None => format!("{}; left in place (store open read-only)", self.reason),
        }
    }
}

/// Files of cairn's own in the data directory, never stray.
fn is_own(name: &str) -> bool {
    matches!(name, DB_FILE | LOCK_FILE | crate::engine::layout::RESTORE_JOURNAL_FILE)
        || name == WAL_FILE
        || name == SHM_FILE
}

fn stray_reason(path: &Path, name: &str) -> Option<String> {
    if is_own(name) {
        return None;
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return Some(if base == DB_FILE {
                format!("a {suffix} file beside a WAL-mode store, left by another program")
            } else {
                format!("a {suffix} file of `{base}`, not of this store")
            });
        }
    }
    let mut head = [0u8; 16];
    let is_sqlite =
        std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head == b"SQLite format 3\0";
    is_sqlite.then(|| "a copy of an SQLite database beside the store".to_string())
}

/// Cairn's own entries of the data directory, which must not be links.
const OWN_ENTRIES: [&str; 6] =
    [DB_FILE, WAL_FILE, SHM_FILE, crate::engine::layout::BLOBS_DIR, crate::engine::layout::BACKUPS_DIR, QUARANTINE_DIR];

/// Refuses a data directory where one of cairn's own entries is a symbolic link.
pub(crate) fn check_links(dir: &Path, allowed: bool) -> Result<()> {
    if allowed {
        return Ok(());
    }
    for name in OWN_ENTRIES {
        let path = dir.join(name);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::NotAllowed(format!(
                "{} is a symbolic link; a store is not opened through links, which could send its writes outside {} (allow them explicitly with the `allow_links` option)",
                path.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Finds stray files in `dir` and, unless `report_only`, moves them into
/// `quarantine/strays-<time>/`, with a `report.json` beside them.
pub(crate) fn sweep(dir: &Path, report_only: bool) -> Result<Vec<StrayFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut strays = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type().map_err(|e| Error::io("inspect", &path, e))?;
        if kind.is_symlink() && !OWN_ENTRIES.contains(&name.as_str()) {
            let reason = "a symbolic link in the data directory (cairn does not follow links here)".to_string();
            strays.push(StrayFile { path, moved_to: None, reason, size: 0 });
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        if let Some(reason) = stray_reason(&path, &name) {
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            strays.push(StrayFile { path, moved_to: None, reason, size });
        }
    }
    if strays.is_empty() || report_only {
        return Ok(strays);
    }
    let target = crate::engine::fsutil::unique_dir(&dir.join(QUARANTINE_DIR), "strays")?;
    for stray in &mut strays {
        let to = target.join(stray.path.file_name().unwrap_or_default());
        std::fs::rename(&stray.path, &to).map_err(|e| Error::io("move to quarantine", &stray.path, e))?;
        tracing::warn!(from = %stray.path.display(), to = %to.display(), reason = %stray.reason, "moved a stray file into quarantine");
        stray.moved_to = Some(to);
    }
    let report = serde_json::to_vec_pretty(&strays).unwrap_or_default();
    crate::engine::fsutil::write_durably(&target.join("report.json"), &report)?;
    crate::engine::fsutil::sync_dir(&target)?;
    crate::engine::fsutil::sync_dir(dir)?;
    Ok(strays)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strays_are_moved_and_own_files_and_other_files_stay() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let sqlite = b"SQLite format 3\0rest of a database page";
        for (name, content) in [
            ("store.db", &sqlite[..]),
            ("store.db-wal", b"wal"),
            ("cairn.lock", b"1"),
            ("notes.txt", b"the user's own file"),
            ("store.db.bak", &sqlite[..]),
            ("old.db-wal", b"orphan"),
            ("store.db-journal", b"rollback"),
        ] {
            std::fs::write(dir.join(name), content).expect("write");
        }
        std::fs::create_dir(dir.join("quarantine")).expect("quarantine");
        let found = sweep(dir, true).expect("report only");
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(dir.join("store.db.bak").exists(), "report-only moves nothing");

        let moved = sweep(dir, false).expect("sweep");
        let mut names: Vec<String> =
            moved.iter().map(|s| s.path.file_name().expect("name").to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["old.db-wal", "store.db-journal", "store.db.bak"]);
        for stray in &moved {
            let to = stray.moved_to.as_ref().expect("moved");
            assert!(to.starts_with(dir.join("quarantine")) && to.exists(), "{to:?}");
            assert!(!stray.path.exists());
        }
        for kept in ["store.db", "store.db-wal", "cairn.lock", "notes.txt"] {
            assert!(dir.join(kept).exists(), "{kept}");
        }
        let report = moved[0].moved_to.as_ref().and_then(|p| p.parent()).expect("folder").join("report.json");
        assert!(std::fs::read_to_string(report).expect("report").contains("store.db.bak"));
        assert!(sweep(dir, false).expect("again").is_empty());
    }
}
