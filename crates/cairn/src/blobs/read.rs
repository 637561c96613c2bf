//! Reading blobs: a reader re-hashes while it streams, so a blob whose bytes changed on disk is
//! an error at the end of the stream; an exported file appears only after the whole blob
//! verified.

use super::*;

/// Streams a blob's content, re-hashing it: the read that reaches the end fails with
/// `InvalidData` when the content is not what its hash says.
pub struct BlobReader {
    inner: Box<dyn Read + Send>,
    hasher: Sha256,
    read: u64,
    info: BlobInfo,
    checked: bool,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader").field("hash", &self.info.hash).field("read", &self.read).finish()
    }
}

impl BlobReader {
    /// The blob being read.
    pub fn info(&self) -> &BlobInfo {
        &self.info
    }

    fn corrupt(&self, detail: String) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("blob {} is corrupt: {detail}", self.info.hash))
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.checked {
            return Ok(0);
        }
        let n = self.inner.read(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::Interrupted => e,
            _ => self.corrupt(format!("cannot be decoded ({e})")),
        })?;
        self.read += n as u64;
        if self.read > self.info.size {
            return Err(self.corrupt(format!("longer than its {} bytes", self.info.size)));
        }
        if n == 0 {
            let got = hex(&std::mem::take(&mut self.hasher).finalize());
            if self.read != self.info.size {
                return Err(self.corrupt(format!("{} bytes instead of {}", self.read, self.info.size)));
            }
            if self.info.hash != got {
                return Err(self.corrupt(format!("its content hashes to {got}")));
            }
            self.checked = true;
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

pub(crate) fn open_reader(dir: &Path, info: BlobInfo) -> Result<BlobReader> {
    let path = blob_path(dir, info.hash.as_str(), info.codec);
    let file = File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Corruption {
            location: format!("blob {}", info.hash),
            detail: format!("its file {} is missing", path.display()),
        },
        _ => Error::io("open", &path, e),
    })?;
    let inner: Box<dyn Read + Send> = match info.codec {
        Codec::Raw => Box::new(BufReader::with_capacity(256 * 1024, file)),
        Codec::Zstd => Box::new(zstd::Decoder::new(file).map_err(|e| Error::io("decompress", &path, e))?),
    };
    Ok(BlobReader { inner, hasher: Sha256::new(), read: 0, info, checked: false })
}

/// Turns a stream failure into the right error: damage is `Corruption`.
pub(crate) fn stream_error(hash: &str, path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::InvalidData {
        Error::Corruption { location: format!("blob {hash}"), detail: e.to_string() }
    } else {
        Error::io("copy blob to", path, e)
    }
}

impl Store {
    /// What the store knows about a blob (`hash`: a [`ContentHash`], or its text).
    pub fn blob(&self, hash: impl AsRef<str>) -> Result<BlobInfo> {
        let hash = hash.as_ref();
        ContentHash::parse(hash)?;
        read_info(&*self.reader()?, hash)?.ok_or_else(|| Error::BlobNotFound { hash: hash.to_string() })
    }

    /// Blobs in hash order, `limit` at a time after `after`.
    pub fn blobs(&self, after: Option<&str>, limit: usize) -> Result<Vec<BlobInfo>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {INFO_COLUMNS} FROM cairn_blobs WHERE hash > ?1 ORDER BY hash LIMIT ?2"
        ))?;
        let rows: Vec<BlobInfo> = stmt
            .query_map(params![after.unwrap_or(""), limit as i64], info_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        // Callers page on by the last hash; a damaged b-tree handing back hashes out of order
        // would send them round forever.
        let mut previous = after;
        for info in &rows {
            if previous.is_some_and(|p| info.hash.as_str() <= p) {
                return Err(Error::Corruption { location: "blob table".into(), detail: "hashes out of order".into() });
            }
            previous = Some(info.hash.as_str());
        }
        Ok(rows)
    }

    /// A stream of a blob's content, verified against its hash as it is read.
    pub fn open_blob(&self, hash: impl AsRef<str>) -> Result<BlobReader> {
        open_reader(self.dir(), self.blob(hash)?)
    }

    /// Writes a blob's content to `path`, which appears only once the whole content
    /// verified: a damaged blob leaves no file behind. An existing `path` is refused unless
    /// `overwrite`.
    pub fn export_blob(&self, hash: impl AsRef<str>, path: &Path, overwrite: bool) -> Result<BlobInfo> {
        self.copy_blob(hash.as_ref(), path, overwrite, true)
    }

    /// [`Store::export_blob`]; the folder fsynced only when `sync_folder`.
    pub(crate) fn copy_blob(&self, hash: &str, path: &Path, overwrite: bool, sync_folder: bool) -> Result<BlobInfo> {
        let mut reader = self.open_blob(hash)?;
        crate::engine::fsutil::write_file(path, overwrite, sync_folder, |_, file| {
            let mut out = BufWriter::with_capacity(256 * 1024, file);
            std::io::copy(&mut reader, &mut out).map_err(|e| stream_error(hash, path, e))?;
            out.flush().map_err(|e| Error::io("write", path, e))
        })?;
        Ok(reader.info.clone())
    }
}
