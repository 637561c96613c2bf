//! File-system helpers for durable writes.

use std::path::Path;

use crate::error::{Error, Result};

/// fsyncs a directory so that entries created or renamed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let handle = std::fs::File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    handle.sync_all().map_err(|e| Error::io("fsync directory", dir, e))
}
