//! Owning temporary work: the process working in a temporary folder (a backup being built,
//! an export being written) or on a staged file (an attachment upload) holds an advisory lock
//! (`flock`) on it for as long as it works. The OS drops the lock when the process dies, so
//! whatever is found unlocked was left by an interrupted operation (see `safety/leftovers.rs`).

use std::fs::File;
use std::path::Path;

use crate::engine::layout::OWNER_FILE;
use crate::error::{Error, Result};

/// A temporary folder's owner lock, held until dropped.
#[derive(Debug)]
pub(crate) struct Owner {
    _file: File,
}

/// Creates `dir`'s owner file and locks it: until the `Owner` is dropped (or the process
/// dies), the folder is work in progress.
pub(crate) fn claim(dir: &Path) -> Result<Owner> {
    let path = dir.join(OWNER_FILE);
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    file.try_lock().map_err(|e| Error::io("lock", &path, std::io::Error::other(e.to_string())))?;
    Ok(Owner { _file: file })
}

/// Locks a staged file for as long as `file` is open.
pub(crate) fn claim_file(file: &File, path: &Path) -> Result<()> {
    file.try_lock().map_err(|e| Error::io("lock", path, std::io::Error::other(e.to_string())))
}
