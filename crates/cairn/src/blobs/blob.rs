//! Attachments (BLOB-1, BLOB-2, BLOB-3): a content-addressed blob store under `blobs/`.
//!
//! A blob is named by the SHA-256 of its content and lives at `blobs/ab/cd/<hash>` (stored as
//! is) or `blobs/ab/cd/<hash>.zst` (zstd-compressed), so equal content is stored once. A put
//! streams the input through the hasher (and the compressor, unless the content is already
//! compressed or compresses badly) into a temporary file in `blobs/.tmp`, fsyncs it, and only
//! then, inside a write transaction, renames it into place, fsyncs the directory and records
//! the blob in `cairn_blobs`. Memory stays constant whatever the size.
//!
//! Records link to blobs through `attachment(s)` fields. `cairn_blobs.refs` counts the links
//! held by live records and changes in the same transaction as the record write that adds or
//! drops one (create, replace, patch, delete, revert, undo, redo); a write that would link to
//! a blob the store does not have fails. A blob nobody links to becomes collectable after a
//! grace period; `gc` removes it then, never earlier, and says what it removed.
//!
//! Reads re-hash while streaming out: a blob whose bytes changed on disk is an error at the
//! end of the stream, and `export_blob` writes a file only after the whole blob verified.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::data::collection::Collection;
use crate::data::schema::FieldType;
use crate::engine::hash::hex;
use crate::engine::layout::{BLOBS_DIR, BLOB_TMP_DIR, BLOB_TRASH_DIR};
use crate::engine::store::Store;
use crate::engine::timestamp::Timestamp;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// How much of the input is read ahead to recognise its type and judge its compressibility.
const SNIFF_BYTES: usize = 1 << 20;
/// Compression is kept only when it saves at least this share of the size.
const MIN_SAVING: f64 = 0.05;

/// How a blob's bytes are kept on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// As given.
    Raw,
    /// zstd-compressed.
    Zstd,
}

impl Codec {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Codec::Raw => "raw",
            Codec::Zstd => "zstd",
        }
    }

    pub(crate) fn parse(text: &str) -> Codec {
        if text == "zstd" {
            Codec::Zstd
        } else {
            Codec::Raw
        }
    }

    /// The codec named `text`, if it is one cairn writes.
    pub(crate) fn from_name(text: &str) -> Option<Codec> {
        match text {
            "raw" => Some(Codec::Raw),
            "zstd" => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// What the store knows about one blob.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BlobInfo {
    pub hash: String,
    /// Size of the content.
    pub size: u64,
    /// Size on disk.
    pub stored_size: u64,
    pub codec: Codec,
    /// Links from live records.
    pub refs: u64,
    pub created_at: Timestamp,
    /// When the last link went away (`None` while linked).
    pub unreferenced_since: Option<Timestamp>,
}

/// An attachment as stored in a record: `{"hash", "name", "mime", "size"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Attachment {
    pub hash: String,
    pub name: String,
    pub mime: String,
    pub size: u64,
}

impl Attachment {
    fn to_json(&self) -> Value {
        json!({"hash": self.hash, "name": self.name, "mime": self.mime, "size": self.size})
    }
}

/// A file being attached: its name and, optionally, the type the uploader claims.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    /// The file name shown to users (no folders).
    pub name: String,
    /// Declared MIME type; checked against the content. `None`: taken from the content, or
    /// the name's extension, or `application/octet-stream`.
    pub mime: Option<String>,
}

fn blob_root(dir: &Path) -> PathBuf {
    dir.join(BLOBS_DIR)
}

/// Where `gc` moves a blob aside until its transaction committed.
pub(crate) fn trash_path(dir: &Path, hash: &str, codec: Codec) -> PathBuf {
    let path = blob_path(dir, hash, codec);
    blob_root(dir).join(BLOB_TRASH_DIR).join(path.file_name().unwrap_or_default())
}

/// Where a blob lives.
pub(crate) fn blob_path(dir: &Path, hash: &str, codec: Codec) -> PathBuf {
    let name = match codec {
        Codec::Raw => hash.to_string(),
        Codec::Zstd => format!("{hash}.zst"),
    };
    blob_root(dir).join(&hash[..2]).join(&hash[2..4]).join(name)
}

pub(crate) fn is_valid_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_hash(hash: &str) -> Result<()> {
    if is_valid_hash(hash) {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            source_name: "blob hash".into(),
            reason: format!("{hash:?} is not a SHA-256 hash (64 lowercase hex digits)"),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Content types

/// Content types recognised by their first bytes, and whether they are already compressed.
const MAGIC: &[(&str, &[u8], usize, bool)] = &[
    // (mime, magic, offset, compressed)
    ("image/jpeg", b"\xFF\xD8\xFF", 0, true),
    ("image/png", b"\x89PNG\r\n\x1A\n", 0, true),
    ("image/gif", b"GIF8", 0, true),
    ("image/webp", b"WEBP", 8, true),
    ("audio/wav", b"WAVE", 8, false),
    ("application/pdf", b"%PDF-", 0, false),
    ("audio/mpeg", b"ID3", 0, true),
    ("audio/ogg", b"OggS", 0, true),
    ("audio/flac", b"fLaC", 0, true),
    ("video/webm", b"\x1A\x45\xDF\xA3", 0, true),
    ("application/zip", b"PK\x03\x04", 0, true),
    ("application/gzip", b"\x1F\x8B", 0, true),
    ("application/zstd", b"\x28\xB5\x2F\xFD", 0, true),
    ("application/x-7z-compressed", b"7z\xBC\xAF\x27\x1C", 0, true),
    ("application/vnd.rar", b"Rar!\x1A\x07", 0, true),
    ("application/x-bzip2", b"BZh", 0, true),
    ("application/x-xz", b"\xFD7zXZ\x00", 0, true),
];

/// The type the content's first bytes show, and whether that type is already compressed.
fn sniff(head: &[u8]) -> Option<(&'static str, bool)> {
    // ISO base media (MP4, MOV, M4A, HEIC): a box of type `ftyp` at offset 4.
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return Some(match &head[8..12] {
            b"heic" | b"heix" | b"mif1" => ("image/heic", true),
            b"M4A " => ("audio/mp4", true),
            b"qt  " => ("video/quicktime", true),
            _ => ("video/mp4", true),
        });
    }
    // MPEG audio frames without an ID3 tag.
    if head.len() >= 2 && head[0] == 0xFF && matches!(head[1], 0xFB | 0xF3 | 0xF2) {
        return Some(("audio/mpeg", true));
    }
    MAGIC
        .iter()
        .find(|(_, magic, at, _)| head.get(*at..at + magic.len()) == Some(*magic))
        .map(|(mime, _, _, compressed)| (*mime, *compressed))
}

/// Types that are the same container under another name.
fn same_family(declared: &str, sniffed: &str) -> bool {
    let family = |m: &str| -> String {
        match m {
            "image/jpg" | "image/pjpeg" => "image/jpeg".into(),
            "audio/mp3" => "audio/mpeg".into(),
            "audio/x-wav" | "audio/wave" => "audio/wav".into(),
            "video/mp4" | "audio/mp4" | "video/quicktime" | "audio/x-m4a" | "image/heic" => "mp4".into(),
            "audio/ogg" | "video/ogg" | "application/ogg" => "ogg".into(),
            "video/webm" | "audio/webm" | "video/x-matroska" => "webm".into(),
            "application/x-zip-compressed" => "application/zip".into(),
            m if m.ends_with("+zip")
                || m.starts_with("application/vnd.openxmlformats-officedocument.")
                || m.starts_with("application/vnd.oasis.opendocument.") =>
            {
                "application/zip".into()
            }
            "application/x-gzip" => "application/gzip".into(),
            m => m.to_string(),
        }
    };
    family(declared) == family(sniffed)
}

/// The MIME type a file name's extension suggests.
pub fn mime_for_name(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" => "audio/ogg",
        "flac" => "audio/flac",
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "zst" => "application/zstd",
        "7z" => "application/x-7z-compressed",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "json" => "application/json",
        "html" | "htm" => "text/html",
        _ => return None,
    })
}

/// The MIME type to record for an upload, or why the declared one is refused.
fn checked_mime(declared: Option<&str>, name: &str, sniffed: Option<&str>) -> Result<String> {
    let refuse = |reason: String| Err(Error::InvalidUpload { name: name.to_string(), reason });
    let Some(declared) = declared else {
        return Ok(sniffed.or_else(|| mime_for_name(name)).unwrap_or("application/octet-stream").to_string());
    };
    let declared = declared.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b));
    match declared.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => {}
        _ => return refuse(format!("{declared:?} is not a MIME type (type/subtype)")),
    }
    if declared == "application/octet-stream" {
        return Ok(declared);
    }
    match sniffed {
        Some(found) if !same_family(&declared, found) => {
            refuse(format!("declared as {declared} but the content is {found}"))
        }
        None if MAGIC.iter().any(|(m, ..)| same_family(&declared, m))
            || declared.starts_with("video/")
            || declared.starts_with("image/") =>
        {
            refuse(format!("declared as {declared} but the content does not start like one"))
        }
        _ => Ok(declared),
    }
}

/// Windows device names, refused as file names everywhere so that exports stay portable.
const RESERVED_NAMES: &[&str] = &[
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8", "com9", "lpt1", "lpt2",
    "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

/// A file name cleaned of surrounding spaces and checked: no folders, no traversal, no control
/// characters, not a device name, at most 255 bytes.
pub fn sanitize_name(name: &str) -> Result<String> {
    let refuse = |reason: &str| Err(Error::InvalidUpload { name: name.to_string(), reason: reason.to_string() });
    let clean = name.trim();
    if clean.is_empty() {
        return refuse("a file name is required");
    }
    if clean == "." || clean == ".." || clean.split(['/', '\\']).any(|part| part == "..") {
        return refuse("path traversal (`..`) is not allowed in a file name");
    }
    if clean.contains(['/', '\\']) {
        return refuse("a file name cannot contain folders (`/` or `\\`)");
    }
    if clean.chars().any(|c| c.is_control()) {
        return refuse("a file name cannot contain control characters");
    }
    if clean.len() > 255 {
        return refuse("a file name is at most 255 bytes");
    }
    let stem = clean.split('.').next().unwrap_or_default().trim_end().to_ascii_lowercase();
    if RESERVED_NAMES.contains(&stem.as_str()) {
        return refuse("this is a reserved device name on Windows");
    }
    Ok(clean.to_string())
}

// ---------------------------------------------------------------------------------------
// Putting blobs

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
struct Hashing<W> {
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

fn read_head(input: &mut impl Read, limit: usize) -> std::io::Result<Vec<u8>> {
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

fn decompress_staged(tmp_dir: &Path, staged: Staged) -> Result<Staged> {
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
enum CopyError {
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

fn copy(input: &mut impl Read, out: &mut impl Write) -> std::result::Result<(), CopyError> {
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

/// The columns `info_from_row` reads, in its order.
const INFO_COLUMNS: &str = "hash, size, stored_size, codec, refs, created_at, unreferenced_since";

fn read_info(conn: &Connection, hash: &str) -> Result<Option<BlobInfo>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {INFO_COLUMNS} FROM cairn_blobs WHERE hash = ?1"))?
        .query_row([hash], info_from_row)
        .optional()?)
}

fn info_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BlobInfo> {
    Ok(BlobInfo {
        hash: r.get(0)?,
        size: r.get::<_, i64>(1)? as u64,
        stored_size: r.get::<_, i64>(2)? as u64,
        codec: Codec::parse(&r.get::<_, String>(3)?),
        refs: r.get::<_, i64>(4)? as u64,
        created_at: Timestamp(r.get(5)?),
        unreferenced_since: r.get::<_, Option<i64>>(6)?.map(Timestamp),
    })
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
            if blob_path(self.dir, &info.hash, info.codec).exists() {
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

// ---------------------------------------------------------------------------------------
// Reference counts

/// The blob hashes a body links to, with the field of each link.
pub(crate) fn links<'a>(c: &Collection, body: &'a Map<String, Value>) -> Vec<(&'a str, &'a str)> {
    let mut out = Vec::new();
    for f in &c.schema.fields {
        let Some((field, value)) = body.get_key_value(&f.name) else { continue };
        let items: &[Value] = match (&f.kind, value) {
            (FieldType::Attachment, v) => std::slice::from_ref(v),
            (FieldType::Attachments, Value::Array(items)) => items,
            _ => continue,
        };
        out.extend(items.iter().filter_map(|item| item.get("hash")?.as_str()).map(|h| (field.as_str(), h)));
    }
    out
}

/// For dry runs only: a row for a blob an import would add, so that records linking to it
/// validate; the dry run's rollback removes it.
pub(crate) fn placeholder(conn: &Connection, hash: &str, size: u64, now: Timestamp) -> Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO cairn_blobs (hash, size, stored_size, codec, refs, created_at, unreferenced_since)
         VALUES (?1, ?2, ?2, 'raw', 0, ?3, ?3)",
        params![hash, size, now.0],
    )?;
    Ok(())
}

/// Moves reference counts from the links of `before` to those of `after` (live bodies).
pub(crate) fn update_refs(
    conn: &Connection,
    c: &Collection,
    id: &str,
    before: Option<&Map<String, Value>>,
    after: Option<&Map<String, Value>>,
    now: Timestamp,
) -> Result<()> {
    if !c.schema.fields.iter().any(|f| matches!(f.kind, FieldType::Attachment | FieldType::Attachments)) {
        return Ok(());
    }
    let mut delta: std::collections::BTreeMap<&str, (i64, &str)> = std::collections::BTreeMap::new();
    for (field, hash) in after.map(|b| links(c, b)).unwrap_or_default() {
        delta.entry(hash).or_insert((0, field)).0 += 1;
    }
    for (field, hash) in before.map(|b| links(c, b)).unwrap_or_default() {
        delta.entry(hash).or_insert((0, field)).0 -= 1;
    }
    let mut stmt = conn.prepare_cached(
        "UPDATE cairn_blobs SET refs = max(refs + ?2, 0),
                unreferenced_since = CASE WHEN refs + ?2 <= 0 THEN ?3 ELSE NULL END
         WHERE hash = ?1",
    )?;
    for (hash, (d, field)) in delta.into_iter().filter(|(_, (d, _))| *d != 0) {
        if stmt.execute(params![hash, d, now.0])? == 0 && d > 0 {
            return Err(Error::Validation {
                collection: c.name().to_string(),
                id: Some(id.to_string()),
                field: Some(field.to_string()),
                reason: format!(
                    "attachment {hash} is not in the blob store (never stored, or collected); \
                     attach the file again or restore it from a backup"
                ),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Reading blobs

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
            if got != self.info.hash {
                return Err(self.corrupt(format!("its content hashes to {got}")));
            }
            self.checked = true;
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn open_reader(dir: &Path, info: BlobInfo) -> Result<BlobReader> {
    let path = blob_path(dir, &info.hash, info.codec);
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
fn stream_error(hash: &str, path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::InvalidData {
        Error::Corruption { location: format!("blob {hash}"), detail: e.to_string() }
    } else {
        Error::io("copy blob to", path, e)
    }
}

// ---------------------------------------------------------------------------------------
// Reports

/// What `verify_blobs` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    pub checked: u64,
    pub bytes: u64,
    /// Blobs whose content does not match their hash (or cannot be decoded), with why.
    pub corrupt: Vec<(String, String)>,
    /// Blobs the store lists whose file is gone.
    pub missing: Vec<String>,
    /// Files in the blob folders the store does not list.
    pub unlisted_files: Vec<PathBuf>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

/// What `gc_blobs` removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct GcReport {
    pub dry_run: bool,
    pub removed: Vec<BlobInfo>,
    /// Files no row listed (left by puts whose transaction failed), older than the grace.
    pub removed_files: Vec<PathBuf>,
    pub bytes_freed: u64,
    /// Unreferenced blobs kept because their grace period has not passed.
    pub kept_in_grace: u64,
}

/// What `rebuild_blob_refs` changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RefsReport {
    pub blobs: u64,
    /// (hash, count before, count after) for every count that was wrong.
    pub corrected: Vec<(String, u64, u64)>,
    /// (collection, id, field, hash) of links to blobs the store does not have.
    pub dangling: Vec<(String, String, String, String)>,
}

/// Every file in the shard folders, with the hash and codec its name says.
/// Every blob file under `blobs/` (not the temp or trash folders): (path, name without
/// `.zst`, codec).
pub(crate) fn files(dir: &Path) -> Result<Vec<(PathBuf, String, Codec)>> {
    let root = blob_root(dir);
    let mut out = Vec::new();
    let list = |p: &Path| -> Result<Vec<std::fs::DirEntry>> {
        match std::fs::read_dir(p) {
            Ok(entries) => entries.collect::<std::io::Result<_>>().map_err(|e| Error::io("list", p, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("list", p, e)),
        }
    };
    for a in list(&root)? {
        if a.file_name().to_string_lossy().starts_with('.') || !a.path().is_dir() {
            continue;
        }
        for b in list(&a.path())? {
            for file in list(&b.path())? {
                let name = file.file_name().to_string_lossy().to_string();
                let (hash, codec) = match name.strip_suffix(".zst") {
                    Some(h) => (h.to_string(), Codec::Zstd),
                    None => (name, Codec::Raw),
                };
                out.push((file.path(), hash, codec));
            }
        }
    }
    Ok(out)
}

/// Puts back blobs a `gc` moved aside before a crash could tell whether it committed: if it
/// did, they are now unlisted files that the next `gc` removes; if not, they are needed.
pub(crate) fn recover(dir: &Path) -> Result<()> {
    let trash = blob_root(dir).join(BLOB_TRASH_DIR);
    if let Ok(entries) = std::fs::read_dir(&trash) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let hash = name.strip_suffix(".zst").unwrap_or(&name).to_string();
            if !is_valid_hash(&hash) {
                continue;
            }
            let codec = if name.ends_with(".zst") { Codec::Zstd } else { Codec::Raw };
            let target = blob_path(dir, &hash, codec);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
            }
            std::fs::rename(entry.path(), &target).map_err(|e| Error::io("restore", &target, e))?;
            tracing::warn!(hash, "put back a blob an interrupted gc had moved aside");
        }
    }
    Ok(())
}

/// Where puts stage their files (see `leftovers` for what an interrupted one leaves).
pub(crate) fn tmp_dir(dir: &Path) -> PathBuf {
    blob_root(dir).join(BLOB_TMP_DIR)
}

impl Store {
    fn setting_u64(&self, key: &str) -> Result<u64> {
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
        self.get(collection, id)?;
        let staged = stage(self.dir(), input, self.setting_u64(crate::data::builtin_settings::BLOBS_MAX_BYTES)?)?;
        let mime = checked_mime(upload.mime.as_deref(), &name, staged.sniffed)?;
        let (collection, id, field) = (collection.to_string(), id.to_string(), field.to_string());
        self.write(move |tx| {
            let info = tx.commit_blob(staged)?;
            let attachment = Attachment { hash: info.hash, name, mime, size: info.size };
            let value = if many {
                let mut list = match tx.get(&collection, &id)?.body.remove(&field) {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                list.push(attachment.to_json());
                Value::Array(list)
            } else {
                attachment.to_json()
            };
            let record = tx.patch(&collection, &id, &json!({ field.as_str(): value }), None)?;
            Ok((record, attachment))
        })
    }

    /// What the store knows about a blob.
    pub fn blob(&self, hash: &str) -> Result<BlobInfo> {
        check_hash(hash)?;
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
            previous = Some(&info.hash);
        }
        Ok(rows)
    }

    /// A stream of a blob's content, verified against its hash as it is read.
    pub fn open_blob(&self, hash: &str) -> Result<BlobReader> {
        open_reader(self.dir(), self.blob(hash)?)
    }

    /// Writes a blob's content to `path`, which appears only once the whole content
    /// verified: a damaged blob leaves no file behind. An existing `path` is refused unless
    /// `overwrite`.
    pub fn export_blob(&self, hash: &str, path: &Path, overwrite: bool) -> Result<BlobInfo> {
        self.copy_blob(hash, path, overwrite, true)
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

    /// Re-hashes every blob; `progress(done, total)` is called after each.
    pub fn verify_blobs(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let total: i64 = self.reader()?.query_row("SELECT count(*) FROM cairn_blobs", [], |r| r.get(0))?;
        let mut after: Option<String> = None;
        loop {
            let page = self.blobs(after.as_deref(), 500)?;
            let Some(last) = page.last() else { break };
            after = Some(last.hash.clone());
            for info in page {
                let hash = info.hash.clone();
                match open_reader(self.dir(), info) {
                    Err(Error::Corruption { .. }) => report.missing.push(hash),
                    Err(e) => return Err(e),
                    Ok(mut reader) => match std::io::copy(&mut reader, &mut std::io::sink()) {
                        Ok(n) => report.bytes += n,
                        Err(e) => report.corrupt.push((hash, e.to_string())),
                    },
                }
                report.checked += 1;
                progress(report.checked, total as u64);
            }
        }
        let conn = self.reader()?;
        for (path, hash, _) in files(self.dir())? {
            if !is_valid_hash(&hash) || read_info(&conn, &hash)?.is_none() {
                report.unlisted_files.push(path);
            }
        }
        Ok(report)
    }

    /// Removes blobs no live record has linked to for at least `grace` (default: setting
    /// `blobs.gc_grace_seconds`), and files no row lists that are as old. With `dry_run`,
    /// only reports. Blobs are moved aside inside the transaction that drops their rows and
    /// deleted once it committed; a crash in between puts them back on the next open.
    pub fn gc_blobs(&self, grace: Option<std::time::Duration>, dry_run: bool) -> Result<GcReport> {
        let grace = match grace {
            Some(g) => g,
            None => {
                std::time::Duration::from_secs(self.setting_u64(crate::data::builtin_settings::BLOBS_GC_GRACE_SECONDS)?)
            }
        };
        if dry_run {
            let conn = self.reader()?;
            return collect(&conn, self.dir(), Timestamp::now(), grace, true);
        }
        let dir = self.dir().to_path_buf();
        // On a full disk, the space reserve lets the transaction commit (see `space`).
        self.freeing(|| match self.write(move |tx| collect(tx.conn, tx.dir, tx.now, grace, false)) {
            Ok(report) => {
                let trash = blob_root(&dir).join(BLOB_TRASH_DIR);
                if let Ok(entries) = std::fs::read_dir(&trash) {
                    for entry in entries.flatten() {
                        std::fs::remove_file(entry.path()).map_err(|e| Error::io("remove", entry.path(), e))?;
                    }
                }
                Ok(report)
            }
            Err(e) => {
                recover(&dir)?;
                Err(e)
            }
        })
    }

    /// Recounts every blob's links from the live records and corrects the counts; reports
    /// links to blobs the store does not have.
    pub fn rebuild_blob_refs(&self) -> Result<RefsReport> {
        self.write(|tx| recount_refs(tx.conn, tx.now))
    }
}

/// Sets every blob's reference count to the links the live records hold (see
/// [`Store::rebuild_blob_refs`]).
pub(crate) fn recount_refs(conn: &Connection, now: Timestamp) -> Result<RefsReport> {
    let (counts, dangling) = count_links(conn)?;
    let mut report = RefsReport { dangling, ..RefsReport::default() };
    let rows: Vec<(String, i64)> = conn
        .prepare("SELECT hash, refs FROM cairn_blobs")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    report.blobs = rows.len() as u64;
    for (hash, refs) in rows {
        let actual = counts.get(&hash).copied().unwrap_or(0);
        if actual != refs as u64 {
            report.corrected.push((hash.clone(), refs as u64, actual));
            conn.execute(
                "UPDATE cairn_blobs SET refs = ?2,
                        unreferenced_since = CASE WHEN ?2 = 0 THEN coalesce(unreferenced_since, ?3) END
                 WHERE hash = ?1",
                params![hash, actual as i64, now.0],
            )?;
        }
    }
    Ok(report)
}

/// A link to a blob the store does not have: (collection, id, field, hash).
pub(crate) type DanglingLink = (String, String, String, String);

/// Counts every blob's links from the live records; also returns the links to blobs the
/// store does not have, as (collection, id, field, hash).
pub(crate) fn count_links(conn: &Connection) -> Result<(BTreeMap<String, u64>, Vec<DanglingLink>)> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut dangling = Vec::new();
    for c in crate::data::collection::load_all(conn)? {
        let mut scan = crate::data::record::ScanOptions::default();
        loop {
            let page = crate::data::record::scan(conn, &c, &scan)?;
            let Some(last) = page.last() else { break };
            scan.after = Some(last.id.clone());
            for record in &page {
                for (field, hash) in links(&c, &record.body) {
                    *counts.entry(hash.to_string()).or_default() += 1;
                    if read_info(conn, hash)?.is_none() {
                        dangling.push((c.name().to_string(), record.id.clone(), field.to_string(), hash.to_string()));
                    }
                }
            }
        }
    }
    Ok((counts, dangling))
}

/// Finds (and unless `dry_run`, removes: rows dropped, files moved to the trash) what `gc`
/// may collect.
fn collect(
    conn: &Connection,
    dir: &Path,
    now: Timestamp,
    grace: std::time::Duration,
    dry_run: bool,
) -> Result<GcReport> {
    let cutoff = now.0.saturating_sub(i64::try_from(grace.as_micros()).unwrap_or(i64::MAX));
    let mut report = GcReport { dry_run, ..GcReport::default() };
    let doomed: Vec<BlobInfo> = conn
        .prepare(&format!("SELECT {INFO_COLUMNS} FROM cairn_blobs WHERE refs = 0 ORDER BY hash"))?
        .query_map([], info_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    let trash = blob_root(dir).join(BLOB_TRASH_DIR);
    if !dry_run {
        std::fs::create_dir_all(&trash).map_err(|e| Error::io("create", &trash, e))?;
    }
    let move_aside = |path: &Path| -> Result<()> {
        let name = path.file_name().unwrap_or_default();
        std::fs::rename(path, trash.join(name)).map_err(|e| Error::io("move aside", path, e))
    };
    for info in doomed {
        if info.unreferenced_since.is_none_or(|t| t.0 > cutoff) {
            report.kept_in_grace += 1;
            continue;
        }
        if !dry_run {
            conn.prepare_cached("DELETE FROM cairn_blobs WHERE hash = ?1 AND refs = 0")?.execute([&info.hash])?;
            let path = blob_path(dir, &info.hash, info.codec);
            if path.exists() {
                move_aside(&path)?;
            }
        }
        report.bytes_freed += info.stored_size;
        report.removed.push(info);
    }
    let cutoff_time = std::time::SystemTime::now().checked_sub(grace).unwrap_or(std::time::UNIX_EPOCH);
    for (path, hash, codec) in files(dir)? {
        let listed = is_valid_hash(&hash) && read_info(conn, &hash)?.is_some_and(|i| i.codec == codec);
        let removed_now = report.removed.iter().any(|i| i.hash == hash);
        let old = path.metadata().and_then(|m| m.modified()).map(|t| t <= cutoff_time).unwrap_or(false);
        if listed || removed_now || !old {
            continue;
        }
        report.bytes_freed += path.metadata().map(|m| m.len()).unwrap_or(0);
        if !dry_run {
            move_aside(&path)?;
        }
        report.removed_files.push(path);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_types_by_their_first_bytes() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest"), Some(("image/jpeg", true)));
        assert_eq!(sniff(b"\x89PNG\r\n\x1A\n...."), Some(("image/png", true)));
        assert_eq!(sniff(b"\0\0\0\x18ftypmp42\0\0"), Some(("video/mp4", true)));
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), Some(("audio/wav", false)));
        assert_eq!(sniff(b"%PDF-1.7"), Some(("application/pdf", false)));
        assert_eq!(sniff(b"{\"plain\": \"json\"}"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn declared_types_must_agree_with_the_content() {
        let png = Some("image/png");
        assert_eq!(checked_mime(Some("image/png"), "a.png", png).expect("same"), "image/png");
        assert_eq!(checked_mime(Some("IMAGE/PNG; q=1"), "a.png", png).expect("normalised"), "image/png");
        assert_eq!(checked_mime(None, "a.bin", png).expect("from content"), "image/png");
        assert_eq!(checked_mime(None, "notes.txt", None).expect("from name"), "text/plain");
        assert_eq!(
            checked_mime(Some("application/octet-stream"), "a", png).expect("no claim"),
            "application/octet-stream"
        );
        assert_eq!(
            checked_mime(
                Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
                "a.xlsx",
                Some("application/zip")
            )
            .expect("zip family"),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        );
        assert!(matches!(checked_mime(Some("image/jpeg"), "a.jpg", png), Err(Error::InvalidUpload { .. })));
        assert!(matches!(checked_mime(Some("image/png"), "a.png", None), Err(Error::InvalidUpload { .. })));
        assert!(matches!(checked_mime(Some("text/plain"), "a.txt", png), Err(Error::InvalidUpload { .. })));
        assert!(matches!(checked_mime(Some("not a type"), "a", None), Err(Error::InvalidUpload { .. })));
    }

    #[test]
    fn file_names_are_cleaned_or_refused() {
        assert_eq!(sanitize_name("  report.pdf ").expect("trimmed"), "report.pdf");
        assert_eq!(sanitize_name("Résumé (final).docx").expect("unicode"), "Résumé (final).docx");
        for bad in ["", "  ", "..", "../etc/passwd", "a/b.txt", "a\\b.txt", "x\u{0}y", "tab\there", "CON", "nul.txt"] {
            assert!(matches!(sanitize_name(bad), Err(Error::InvalidUpload { .. })), "{bad:?} accepted");
        }
        assert!(sanitize_name(&"a".repeat(256)).is_err());
        assert!(sanitize_name(&"a".repeat(255)).is_ok());
    }
}
