//! The data directory's write lock: an advisory file lock on `cairn.lock` holding the pid.
//!
//! The OS releases the lock when the process dies, so a killed writer never leaves a stale
//! lock behind; the pid inside is only there to name the holder in the error.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::engine::layout::LOCK_FILE;
use crate::error::{Error, Result};

/// Holds the exclusive lock until dropped.
#[derive(Debug)]
pub(crate) struct WriteLock {
    _file: File,
    path: PathBuf,
}

impl WriteLock {
    /// Takes the lock, waiting up to `wait` for another holder to let it go (polling: `flock`
    /// cannot wait with a timeout).
    pub(crate) fn acquire_waiting(dir: &Path, wait: std::time::Duration) -> Result<Self> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Self::acquire(dir) {
                Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        // A lock this process released a moment ago can still be held by a child that another
        // thread is spawning: between fork and exec the child shares the lock file's open file
        // description. When the file names this process, wait for that exec (bounded) before
        // calling the store locked.
        let mut retries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
                    let pid: Option<u32> = text.trim().parse().ok();
                    if pid == Some(std::process::id()) && retries < 100 {
                        retries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        continue;
                    }
                    return Err(Error::Locked { path: dir.to_path_buf(), pid });
                }
                Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
            }
        }
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_data()
        };
        write_pid(&mut file).map_err(|e| Error::io("write lock file", &path, e))?;
        Ok(WriteLock { _file: file, path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
