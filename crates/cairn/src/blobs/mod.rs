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
//! Reads re-hash while streaming out (read.rs). Puts are in put.rs, content types and file
//! names in content.rs, verification, collection and recovery in maintain.rs; the link counts
//! a record write moves are the data layer's (data/attachments.rs).

pub(crate) mod content;
mod maintain;
pub(crate) mod put;
mod read;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::data::schema::FieldType;
use crate::engine::hash::{hex, ContentHash};
use crate::engine::layout::{BLOBS_DIR, BLOB_TMP_DIR, BLOB_TRASH_DIR};
use crate::engine::store::Store;
use crate::engine::timestamp::Timestamp;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

pub use self::content::*;
pub use self::maintain::*;
pub(crate) use self::put::*;
pub use self::read::*;

/// How a blob's bytes are kept on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
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
    pub hash: ContentHash,
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
    pub hash: ContentHash,
    pub name: String,
    pub mime: String,
    pub size: u64,
}

impl Attachment {
    pub(crate) fn to_json(&self) -> Value {
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

pub(crate) fn blob_root(dir: &Path) -> PathBuf {
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

/// The columns `info_from_row` reads, in its order.
pub(crate) const INFO_COLUMNS: &str = "hash, size, stored_size, codec, refs, created_at, unreferenced_since";

pub(crate) fn read_info(conn: &Connection, hash: &str) -> Result<Option<BlobInfo>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {INFO_COLUMNS} FROM cairn_blobs WHERE hash = ?1"))?
        .query_row([hash], info_from_row)
        .optional()?)
}

pub(crate) fn info_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BlobInfo> {
    Ok(BlobInfo {
        hash: ContentHash::trusted(r.get(0)?),
        size: r.get::<_, i64>(1)? as u64,
        stored_size: r.get::<_, i64>(2)? as u64,
        codec: Codec::parse(&r.get::<_, String>(3)?),
        refs: r.get::<_, i64>(4)? as u64,
        created_at: Timestamp(r.get(5)?),
        unreferenced_since: r.get::<_, Option<i64>>(6)?.map(Timestamp),
    })
}

/// Where puts stage their files (see `leftovers` for what an interrupted one leaves).
pub(crate) fn tmp_dir(dir: &Path) -> PathBuf {
    blob_root(dir).join(BLOB_TMP_DIR)
}
