//! Room to make room: a reserve file given up when the disk is full.
//!
//! On a full disk every write fails, and so would the writes that free space: a delete or a
//! purge appends to the change log, `blob gc` commits a transaction, even writing the record
//! of a failed backup needs a few bytes. A user would be stuck with a tool that cannot help.
//! So a writable store keeps `cairn.reserve`, a file of zeros (`storage.reserve_bytes`,
//! 8 MiB by default; 0 turns it off). When an operation that frees space (delete, purge,
//! blob gc, backup rotation, compact, dropping a collection) or the record of a failed backup
//! fails for lack of space, the reserve is removed and the operation tried once more. It is
//! written again once the disk has room for it twice over (after the next such operation, or
//! at the next writable open).
//!
//! Ordinary writes never use the reserve: they fail cleanly, and the store stays as it was.

use std::io::Write;
use std::path::Path;

use crate::engine::layout::RESERVE_FILE;
use crate::engine::store::Store;
use crate::error::{Error, Result};

/// Bytes free for this user on the file system holding `dir`.
pub(crate) fn available(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Makes the reserve `size` bytes (written, not sparse, and fsynced) when the disk has room
/// for it twice over; true when it is in place. A reserve that cannot be written whole is
/// removed again.
pub(crate) fn refill(dir: &Path, size: u64) -> bool {
    let path = dir.join(RESERVE_FILE);
    let have = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if size == 0 {
        let _ = std::fs::remove_file(&path);
        return true;
    }
    if have >= size {
        return true;
    }
    if available(dir).is_none_or(|free| free < 2 * (size - have)) {
        return false;
    }
    let written = std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut file| {
        let zeros = vec![0u8; 1 << 20];
        let mut left = size - have;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    });
    if let Err(e) = written {
        tracing::warn!(error = %e, "could not write the space reserve");
        let _ = std::fs::remove_file(&path);
        return false;
    }
    true
}

/// Gives the reserve up; true when there was one to give.
pub(crate) fn release(dir: &Path) -> bool {
    let path = dir.join(RESERVE_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::warn!(dir = %dir.display(), "the disk is full: released the space reserve so that space can be freed");
            let _ = crate::engine::fsutil::sync_dir(dir);
            true
        }
        Err(_) => false,
    }
}

impl Error {
    /// True when the operation failed because the disk (or the file system) is full.
    pub fn is_disk_full(&self) -> bool {
        let full_text = |text: &str| {
            let text = text.to_ascii_lowercase();
            text.contains("disk is full") || text.contains("no space left") || text.contains("quota exceeded")
        };
        match self {
            // SQLITE_FULL.
            Error::Database { code, message } => code.is_some_and(|c| c & 0xff == 13) || full_text(message),
            Error::Io { cause: source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || source.raw_os_error() == Some(28)
                    || full_text(&source.to_string())
            }
            Error::CommitFailed(text) => full_text(text),
            Error::BackupFailed { reason, .. } => full_text(reason),
            Error::Batch { cause, .. } | Error::MigrationFailed { cause, .. } => cause.is_disk_full(),
            _ => false,
        }
    }
}

impl Store {
    /// Bytes free for this process on the file system holding the store (`None` when the
    /// file system cannot say).
    pub fn disk_available(&self) -> Option<u64> {
        available(self.dir())
    }

    /// The reserve's size, as the setting says.
    fn reserve_size(&self) -> u64 {
        self.setting_value::<i64>(crate::data::builtin_settings::STORAGE_RESERVE_BYTES)
            .map(|n| n.max(0) as u64)
            .unwrap_or(0)
    }

    /// Runs `op`, which frees space; if it fails for lack of space, gives up the reserve and
    /// runs it once more. Afterwards the reserve is written again if there is room.
    pub(crate) fn freeing<T>(&self, op: impl Fn() -> Result<T>) -> Result<T> {
        let result = match op() {
            Err(e) if e.is_disk_full() && !self.is_read_only() && release(self.dir()) => op(),
            other => other,
        };
        if result.is_ok() && !self.is_read_only() {
            refill(self.dir(), self.reserve_size());
        }
        result
    }

    /// Writes the reserve if it is missing (at a writable open).
    pub(crate) fn keep_reserve(&self) {
        if !refill(self.dir(), self.reserve_size()) {
            tracing::warn!(dir = %self.dir().display(), "the disk has no room for the space reserve");
        }
    }
}
