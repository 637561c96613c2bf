//! Putting blobs: the input is streamed through the hasher (and the compressor, unless the
//! content is already compressed or compresses badly) into a temporary file in `blobs/.tmp`,
//! fsynced, and only then, inside a write transaction, renamed into place and recorded.

use super::*;

/// Compression is kept only when it saves at least this share of the size.
pub(crate) const MIN_SAVING: f64 = 0.05;

/// A blob written to a temporary file, hashed, fsynced, not yet in the store.
#[derive(Debug)]
pub(crate) struct Staged {
    file: tempfile::NamedTempFile,
    pub(crate) hash: String,
    pub(crate) size: u64,
    stored_size: u64,
    codec: Codec,
    pub(crate) sniffed: Option<&'static str>,
}

/// Hashes and counts what passes through, refusing more than `limit` bytes.
pub(crate) struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
    limit: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.size + buf.len() as u64 > self.limit {
            return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, "blob over the size limit"));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn read_head(input: &mut impl Read, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(limit.min(64 * 1024));
    input.take(limit as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Streams `input` into a temporary file under `dir/blobs/.tmp`: hashed, compressed when
/// worth it, fsynced.
pub(crate) fn stage(dir: &Path, mut input: impl Read, limit: u64) -> Result<Staged> {
    let tmp_dir = blob_root(dir).join(BLOB_TMP_DIR);
    std::fs::create_dir_all(&tmp_dir).map_err(|e| Error::io("create", &tmp_dir, e))?;
    let read_error = |e: std::io::Error| Error::io("read the blob's input", Path::new("-"), e);
    let head = read_head(&mut input, SNIFF_BYTES).map_err(read_error)?;
    let sniffed = sniff(&head);
    // Compress unless the type is compressed already or a sample shows little gain.
    let compress = match sniffed {
        Some((_, true)) => false,
        _ if head.len() < 128 => false,
        _ => zstd::bulk::compress(&head, 1)
            .map(|c| (c.len() as f64) < head.len() as f64 * (1.0 - MIN_SAVING))
            .unwrap_or(false),
    };
    let file = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(|e| Error::io("create", &tmp_dir, e))?;
    let temp_path = file.path().to_path_buf();
    // Locked while this put works on it: what nobody holds is an interrupted put's.
    crate::engine::owner::claim_file(file.as_file(), &temp_path)?;
    let write_error = |e: std::io::Error| -> Error {
        if e.kind() == std::io::ErrorKind::FileTooLarge {
            Error::BlobTooLarge { limit }
        } else {
            Error::io("write", &temp_path, e)
        }
    };
    let handle = file.as_file().try_clone().map_err(|e| Error::io("open", &temp_path, e))?;
    let (hash, size) = if compress {
        let encoder = zstd::Encoder::new(BufWriter::with_capacity(256 * 1024, handle), 3).map_err(write_error)?;
        let mut sink = Hashing { inner: encoder, hasher: Sha256::new(), size: 0, limit };
        sink.write_all(&head).map_err(write_error)?;
        copy(&mut input, &mut sink).map_err(|e| e.into_error(write_error, read_error))?;
        let Hashing { inner, hasher, size, .. } = sink;
        inner.finish().and_then(|mut w| w.flush()).map_err(write_error)?;
        (hex(&hasher.finalize()), size)
    } else {
        let mut sink =
            Hashing { inner: BufWriter::with_capacity(256 * 1024, handle), hasher: Sha256::new(), size: 0, limit };
        sink.write_all(&head).map_err(write_error)?;
        copy(&mut input, &mut sink).map_err(|e| e.into_error(write_error, read_error))?;
        sink.flush().map_err(write_error)?;
        (hex(&sink.hasher.finalize()), sink.size)
    };
    drop(head);
    let stored_size = file.as_file().metadata().map_err(|e| Error::io("stat", &temp_path, e))?.len();
    let mut staged = Staged { file, hash, size, stored_size, codec: Codec::Raw, sniffed: sniffed.map(|s| s.0) };
    if compress {
        staged.codec = Codec::Zstd;
        if stored_size as f64 >= size as f64 * (1.0 - MIN_SAVING) {
            // The sample misjudged the rest: keep the content as it is.
            staged = decompress_staged(&tmp_dir, staged)?;
        }
    }
    staged.file.as_file().sync_all().map_err(|e| Error::io("fsync", &temp_path, e))?;
    Ok(staged)
}

pub(crate) fn decompress_staged(tmp_dir: &Path, staged: Staged) -> Result<Staged> {
    let raw = tempfile::NamedTempFile::new_in(tmp_dir).map_err(|e| Error::io("create", tmp_dir, e))?;
    let source = File::open(staged.file.path()).map_err(|e| Error::io("open", staged.file.path(), e))?;
    let mut decoder = zstd::Decoder::new(source).map_err(|e| Error::io("decompress", staged.file.path(), e))?;
    let mut out = BufWriter::new(raw.as_file());
    std::io::copy(&mut decoder, &mut out).map_err(|e| Error::io("write", raw.path(), e))?;
    out.flush().map_err(|e| Error::io("write", raw.path(), e))?;
    drop(out);
    Ok(Staged { file: raw, stored_size: staged.size, codec: Codec::Raw, ..staged })
}

/// A copy failure: reading the input or writing the blob.
pub(crate) enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
}

impl CopyError {
    fn into_error(self, write: impl Fn(std::io::Error) -> Error, read: impl Fn(std::io::Error) -> Error) -> Error {
        match self {
            CopyError::Read(e) => read(e),
            CopyError::Write(e) => write(e),
        }
    }
}

pub(crate) fn copy(input: &mut impl Read, out: &mut impl Write) -> std::result::Result<(), CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
}

impl Tx<'_> {
    /// Moves a staged blob into the store (or drops it when the store has it already).
    pub(crate) fn commit_blob(&mut self, staged: Staged) -> Result<BlobInfo> {
        self.place_blob(staged).map(|(info, _)| info)
    }

    /// [`Tx::commit_blob`], also returning the file it placed, if it placed one: if the
    /// transaction then fails, the caller removes it, so that nothing of the failed write
    /// stays behind.
    pub(crate) fn place_blob(&mut self, staged: Staged) -> Result<(BlobInfo, Option<PathBuf>)> {
        if let Some(info) = read_info(self.conn, &staged.hash)? {
            if blob_path(self.dir, info.hash.as_str(), info.codec).exists() {
                return Ok((info, None));
            }
            // The row outlived its file (damage): the new copy heals it.
        }
        let path = blob_path(self.dir, &staged.hash, staged.codec);
        let parent = path.parent().unwrap_or(self.dir).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| Error::io("create", &parent, e))?;
        staged.file.persist(&path).map_err(|e| Error::io("rename a blob into", &path, e.error))?;
        crate::engine::fsutil::sync_dir(&parent)?;
        self.conn
            .prepare_cached(
                "INSERT INTO cairn_blobs (hash, size, stored_size, codec, refs, created_at, unreferenced_since)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)
                 ON CONFLICT (hash) DO UPDATE SET stored_size = excluded.stored_size, codec = excluded.codec",
            )?
            .execute(params![
                staged.hash,
                staged.size as i64,
                staged.stored_size as i64,
                staged.codec.as_str(),
                self.now.0
            ])?;
        let info =
            read_info(self.conn, &staged.hash)?.ok_or_else(|| Error::CommitFailed("blob row vanished".into()))?;
        Ok((info, Some(path)))
    }
}

impl Store {
    pub(crate) fn setting_u64(&self, key: &str) -> Result<u64> {
        Ok(self.setting_value::<i64>(key)?.max(0) as u64)
    }

    /// Stores the content read from `input` (streamed, in constant memory) and returns its
    /// entry. Nothing links to it yet: link it from a record within the grace period
    /// (setting `blobs.gc_grace_seconds`), or use [`Store::attach`], which does both at once.
    pub fn put_blob(&self, input: impl Read) -> Result<BlobInfo> {
        let staged = stage(self.dir(), input, self.setting_u64(crate::data::builtin_settings::BLOBS_MAX_BYTES)?)?;
        self.write(move |tx| tx.commit_blob(staged))
    }

    /// Stores a file's content and links it from field `field` of record `id` in one
    /// transaction: an `attachment` field is set, an `attachments` field gets it appended.
    /// The name is checked (no folders, no `..`, no control characters), the declared type
    /// must agree with the content's first bytes, and the size must be within
    /// `blobs.max_bytes`; each refusal is an [`Error::InvalidUpload`] or
    /// [`Error::BlobTooLarge`] and stores nothing.
    pub fn attach(
        &self,
        collection: &str,
        id: &str,
        field: &str,
        input: impl Read,
        upload: &Upload,
    ) -> Result<(crate::Record, Attachment)> {
        self.attach_with(
            collection,
            id,
            field,
            input,
            upload,
            Linking { check: &|store| store.get(collection, id).map(drop), link: Box::new(|tx, change| change(tx)) },
        )
    }

    /// [`Store::attach`], with the record looked at (before the upload is read) and changed
    /// as `linking` says: an upper layer holds them to a caller's permissions.
    pub(crate) fn attach_with(
        &self,
        collection: &str,
        id: &str,
        field: &str,
        input: impl Read,
        upload: &Upload,
        linking: Linking<'_>,
    ) -> Result<(crate::Record, Attachment)> {
        let name = sanitize_name(&upload.name)?;
        let c = crate::data::collection::load(&*self.reader()?, collection)?;
        let kind = c.schema.field(field).map(|f| f.kind);
        let many = match kind {
            Some(FieldType::Attachment) => false,
            Some(FieldType::Attachments) => true,
            _ => {
                return Err(Error::Validation {
                    collection: collection.to_string(),
                    id: Some(id.to_string()),
                    field: Some(field.to_string()),
                    reason: "not an attachment or attachments field".into(),
                })
            }
        };
        (linking.check)(self)?;
        let staged = stage(self.dir(), input, self.setting_u64(crate::data::builtin_settings::BLOBS_MAX_BYTES)?)?;
        let mime = checked_mime(upload.mime.as_deref(), &name, staged.sniffed)?;
        let (collection, id, field) = (collection.to_string(), id.to_string(), field.to_string());
        let link = linking.link;
        self.write(move |tx| {
            let info = tx.commit_blob(staged)?;
            let attachment = Attachment { hash: info.hash, name, mime, size: info.size };
            let linked = attachment.clone();
            let record = link(
                tx,
                Box::new(move |tx| {
                    let value = if many {
                        let mut list = match tx.get(&collection, &id)?.body.remove(&field) {
                            Some(Value::Array(items)) => items,
                            _ => Vec::new(),
                        };
                        list.push(linked.to_json());
                        Value::Array(list)
                    } else {
                        linked.to_json()
                    };
                    tx.patch(&collection, &id, &json!({ field.as_str(): value }), None)
                }),
            )?;
            Ok((record, attachment))
        })
    }
}

/// The change that links an upload into its record.
pub(crate) type LinkChange = Box<dyn FnOnce(&mut Tx<'_>) -> Result<crate::Record> + Send>;

/// How [`Store::attach_with`] looks at the record before reading the upload, and makes the
/// change that links it (given that change) in the write's transaction.
pub(crate) struct Linking<'a> {
    pub check: &'a dyn Fn(&Store) -> Result<()>,
    #[allow(clippy::type_complexity)]
    pub link: Box<dyn FnOnce(&mut Tx<'_>, LinkChange) -> Result<crate::Record> + Send>,
}
