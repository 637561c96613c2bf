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

/// A file the user asked for (an attachment saved, a report): written beside `path` under a
/// temporary name, fsynced, then renamed into place — so a failure leaves no half file. An
/// existing `path` is refused unless `overwrite`. The file gets the usual permissions (0666
/// less the umask), not a temporary file's 0600.
pub(crate) fn write_output(
    path: &Path,
    overwrite: bool,
    write: impl FnOnce(&Path, &mut std::fs::File) -> Result<()>,
) -> Result<()> {
    write_file(path, overwrite, true, write)
}

/// [`write_output`], with the folder's fsync left to the caller when `sync_folder` is false
/// (an export writes thousands of files into a folder it fsyncs once).
pub(crate) fn write_file(
    path: &Path,
    overwrite: bool,
    sync_folder: bool,
    write: impl FnOnce(&Path, &mut std::fs::File) -> Result<()>,
) -> Result<()> {
    if !overwrite && std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::PathExists {
            path: path.to_path_buf(),
            reason: "exists; it is not overwritten unless that is asked for explicitly".into(),
        });
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".cairn-output-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(&folder)
        .map_err(|e| Error::io("create in", &folder, e))?;
    let temp_path = temp.path().to_path_buf();
    write(&temp_path, temp.as_file_mut())?;
    std::fs::File::open(&temp_path).and_then(|f| f.sync_all()).map_err(|e| Error::io("fsync", &temp_path, e))?;
    if overwrite {
        temp.persist(path).map_err(|e| Error::io("rename into", path, e.error))?;
    } else {
        // Refused at the last moment too, if someone made the file meanwhile.
        temp.persist_noclobber(path).map_err(|e| Error::io("rename into", path, e.error))?;
    }
    if sync_folder {
        sync_dir(&folder)?;
    }
    Ok(())
}

/// Creates a new folder `<parent>/<prefix>-<UTC time>` (with `-2`, `-3`… when taken) and
/// returns it. The time sorts as text.
pub(crate) fn unique_dir(parent: &Path, prefix: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
    let stamp = file_stamp(crate::engine::timestamp::Timestamp::now());
    for n in 1..1000 {
        let name = if n == 1 { format!("{prefix}-{stamp}") } else { format!("{prefix}-{stamp}-{n}") };
        let path = parent.join(name);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create directory", &path, e)),
        }
    }
    Err(Error::Internal(format!("too many folders named {prefix}-{stamp}* in {}", parent.display())))
}

/// A timestamp as it appears in file names: `20261123T163501.123Z`.
pub(crate) fn file_stamp(t: crate::engine::timestamp::Timestamp) -> String {
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

/// Copies what `input` holds into `to` (which must not exist), fsyncs it, and returns its size
/// and SHA-256.
pub(crate) fn copy_reader_hashed(mut input: impl std::io::Read, to: &Path) -> Result<(u64, String)> {
    use sha2::Digest;
    use std::io::Write;
    let mut output =
        std::fs::File::options().write(true).create_new(true).open(to).map_err(|e| Error::io("create", to, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read a copy of", to, e)),
        };
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(|e| Error::io("write", to, e))?;
        total += n as u64;
    }
    output.sync_all().map_err(|e| Error::io("fsync", to, e))?;
    Ok((total, crate::engine::hash::hex(&hasher.finalize())))
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

/// The size and SHA-256 of what `input` holds, read to its end.
pub(crate) fn hash_reader(mut input: impl std::io::Read) -> std::io::Result<(u64, String)> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, crate::engine::hash::hex(&hasher.finalize())))
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
    Ok((total, crate::engine::hash::hex(&hasher.finalize())))
}
