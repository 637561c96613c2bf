//! File-system helpers for durable writes.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// fsyncs a directory so that entries created or renamed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let handle = std::fs::File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    handle.sync_all().map_err(|e| Error::io("fsync directory", dir, e))
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the whole new one:
/// a temp file beside it, fsynced, renamed over it, the directory fsynced.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| Error::io("create temp file in", parent, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io("write", tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io("fsync", tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io("rename into", path, e.error))?;
    sync_dir(parent)
}

/// Creates a new folder `<parent>/<prefix>-<UTC time>` (with `-2`, `-3`… when taken) and
/// returns it. The time sorts as text.
pub(crate) fn unique_dir(parent: &Path, prefix: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
    let stamp = file_stamp(crate::timestamp::Timestamp::now());
    for n in 1..1000 {
        let name = if n == 1 { format!("{prefix}-{stamp}") } else { format!("{prefix}-{stamp}-{n}") };
        let path = parent.join(name);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create directory", &path, e)),
        }
    }
    Err(Error::NotAllowed(format!("too many folders named {prefix}-{stamp}* in {}", parent.display())))
}

/// A timestamp as it appears in file names: `20261123T163501.123Z`.
pub(crate) fn file_stamp(t: crate::timestamp::Timestamp) -> String {
    t.to_string().replace(['-', ':'], "")
}

/// Copies `from` to `to` (which must not exist), fsyncs it, and returns the SHA-256 of the
/// bytes copied, so that a copy is hashed in the same pass that makes it.
pub(crate) fn copy_hashed(from: &Path, to: &Path) -> Result<(u64, String)> {
    use std::io::Write;
    let mut output =
        std::fs::File::options().write(true).create_new(true).open(to).map_err(|e| Error::io("create", to, e))?;
    let hashed = read_hashed(from, &mut |chunk| output.write_all(chunk).map_err(|e| Error::io("write", to, e)))?;
    output.sync_all().map_err(|e| Error::io("fsync", to, e))?;
    Ok(hashed)
}

/// Copies `from` to `to` (which must not exist) and fsyncs it; returns the bytes copied.
pub(crate) fn copy_synced(from: &Path, to: &Path) -> Result<u64> {
    if to.exists() {
        return Err(Error::io("create", to, std::io::Error::from(std::io::ErrorKind::AlreadyExists)));
    }
    let size = std::fs::copy(from, to).map_err(|e| Error::io("copy", from, e))?;
    std::fs::File::open(to).and_then(|f| f.sync_all()).map_err(|e| Error::io("fsync", to, e))?;
    Ok(size)
}

/// The size and SHA-256 of a file, read once.
pub(crate) fn hash_file(path: &Path) -> Result<(u64, String)> {
    read_hashed(path, &mut |_| Ok(()))
}

/// Reads a file through, handing each chunk to `each`; returns its size and SHA-256.
fn read_hashed(path: &Path, each: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<(u64, String)> {
    use sha2::Digest;
    use std::io::Read;
    let mut input = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        each(&buf[..n])?;
        total += n as u64;
    }
    Ok((total, crate::record::hex(&hasher.finalize())))
}
