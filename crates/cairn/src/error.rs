//! Errors returned by cairn.
//!
//! Policy: every variant carries what a user needs to find the problem (the collection,
//! record id, field, key or path involved) and says it in its message. Bad input is always an
//! error value, never a panic. Corruption is its own variant so that callers (and the CLI's
//! exit code 5) can tell "your data is damaged" apart from "your request was wrong".

use std::path::PathBuf;

/// The result type of every fallible cairn operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in cairn.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory exists but does not hold a cairn store (and is not empty).
    #[error("{path} is not a cairn store: {reason}")]
    NotAStore { path: PathBuf, reason: String },

    /// There is no store at this path and the open did not ask to create one.
    #[error("no cairn store at {path} (create one with `cairn init`)")]
    NoStore { path: PathBuf },

    /// The store was written by a newer cairn whose format this build does not know.
    #[error("store at {path} has format version {found}, this cairn supports up to {supported}; upgrade cairn")]
    TooNew { path: PathBuf, found: u32, supported: u32 },

    /// Another process holds the store's write lock.
    #[error("store at {path} is locked for writing by {}; open it read-only or stop that process", holder_text(.pid))]
    Locked { path: PathBuf, pid: Option<u32> },

    /// A write was attempted on a store opened read-only.
    #[error("store is open read-only")]
    ReadOnly,

    /// The named collection does not exist.
    #[error("unknown collection `{collection}`")]
    UnknownCollection { collection: String },

    /// A collection with this name already exists.
    #[error("collection `{collection}` already exists")]
    CollectionExists { collection: String },

    /// A collection schema is invalid.
    #[error("invalid schema for collection `{collection}`{}: {reason}", field_text(.field))]
    InvalidSchema { collection: String, field: Option<String>, reason: String },

    /// A record does not satisfy its collection's schema.
    #[error("invalid record in `{collection}`{}{}: {reason}", id_text(.id), field_text(.field))]
    Validation { collection: String, id: Option<String>, field: Option<String>, reason: String },

    /// A record id is malformed.
    #[error("invalid record id {id:?}: {reason}")]
    InvalidId { id: String, reason: String },

    /// A record body is larger than the store's `records.max_body_bytes` setting.
    #[error("record in `{collection}`{} is {size} bytes, over the limit of {limit} bytes (setting records.max_body_bytes)", id_text(.id))]
    BodyTooLarge { collection: String, id: Option<String>, size: usize, limit: u64 },

    /// The record does not exist (or is soft-deleted, when `deleted` is true).
    #[error("record `{collection}/{id}` {}", if *.deleted { "is deleted (see `cairn history`, or revert it)" } else { "not found" })]
    NotFound { collection: String, id: String, deleted: bool },

    /// A record with this id already exists (live or soft-deleted).
    #[error("record `{collection}/{id}` already exists")]
    AlreadyExists { collection: String, id: String },

    /// The write named a version that is no longer the record's current version.
    #[error("version conflict on `{collection}/{id}`: expected version {expected}, found {actual}")]
    Conflict { collection: String, id: String, expected: u64, actual: u64 },

    /// A unique field already holds this value in another record.
    #[error("unique field `{field}` of `{collection}/{id}` has the same value as record `{other_id}`")]
    Unique { collection: String, id: String, field: String, other_id: String },

    /// Stored data failed its checksum or SQLite reported a damaged file.
    #[error("corruption detected in {location}: {detail}")]
    Corruption { location: String, detail: String },

    /// An upload was refused: its name or declared type (BLOB-3).
    #[error("upload {name:?} refused: {reason}")]
    InvalidUpload { name: String, reason: String },

    /// A blob is larger than the store's `blobs.max_bytes` setting.
    #[error("blob is over the limit of {limit} bytes (setting blobs.max_bytes)")]
    BlobTooLarge { limit: u64 },

    /// The store has no blob with this hash.
    #[error("no blob {hash} in the store")]
    BlobNotFound { hash: String },

    /// The record has no version with this number in its history.
    #[error("record `{collection}/{id}` has no version {version} in its history")]
    VersionNotFound { collection: String, id: String, version: u64 },

    /// Undo or redo has nothing to act on.
    #[error("nothing to {action} for `{collection}/{id}`")]
    NothingTo { action: &'static str, collection: String, id: String },

    /// The operation is not allowed in the record's or store's current state.
    #[error("{0}")]
    NotAllowed(String),

    /// A destructive operation needs explicit confirmation.
    #[error("{what} needs confirmation: {hint}")]
    ConfirmationRequired { what: String, hint: String },

    /// A query filter could not be parsed or does not fit the collection's schema.
    #[error("invalid filter at position {position}: {reason}")]
    InvalidFilter { filter: String, position: usize, reason: String },

    /// A query (sort, fields, cursor, limit) is invalid.
    #[error("invalid query: {0}")]
    InvalidQuery(String),

    /// The setting key is not defined.
    #[error("unknown setting `{key}`")]
    UnknownSetting { key: String },

    /// A setting value or definition is invalid.
    #[error("invalid setting `{key}`: {reason}")]
    InvalidSetting { key: String, reason: String },

    /// Input given to cairn (a JSON body, a schema file, an argument) could not be used.
    #[error("invalid input in {source_name}: {reason}")]
    InvalidInput { source_name: String, reason: String },

    /// A file-system operation failed.
    #[error("{action} {path}: {cause}")]
    Io { action: &'static str, path: PathBuf, cause: std::io::Error },

    /// SQLite returned an error that is not corruption.
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),

    /// The transaction could not be committed; none of its writes took effect.
    #[error("commit failed, nothing was written: {0}")]
    CommitFailed(String),

    /// An operation of a batch failed; nothing of the batch was written.
    #[error("operation {index} of the batch failed, nothing was written: {cause}")]
    Batch { index: usize, cause: Box<Error> },

    /// A backup could not be taken or did not verify; nothing was added to the backups.
    #[error("backup {id} failed: {reason}")]
    BackupFailed { id: String, reason: String },

    /// There is no backup with this id.
    #[error("no backup `{id}` (see `cairn backup list`)")]
    BackupNotFound { id: String },

    /// A backup may not be restored: it is unverified, damaged or edited.
    #[error("backup `{id}` cannot be restored: {reason}")]
    BackupNotRestorable { id: String, reason: String },

    /// The store was closed; it accepts no more writes.
    #[error("the store's writer has stopped")]
    WriterStopped,

    /// A migration file (or the set of them) is malformed; nothing ran.
    #[error("migration {source_name}: {reason}")]
    InvalidMigration { source_name: String, reason: String },

    /// The migrations applied to the store no longer match the files: a file was edited,
    /// removed or renumbered after it was applied. Nothing ran.
    #[error("migration {number} ({name}): {reason}")]
    MigrationHistory { number: u32, name: String, reason: String },

    /// A migration step failed. `outcome` says what state the store was left in (as it was
    /// before the run, unless no backup could undo earlier migrations); `cause` names the
    /// record and field.
    #[error("migration {number} ({name}), {direction} step {step} ({op}) failed; {outcome}: {cause}")]
    MigrationFailed {
        number: u32,
        name: String,
        direction: &'static str,
        step: usize,
        op: String,
        outcome: String,
        cause: Box<Error>,
    },

    /// An encrypted value cannot be read or written: the store's key is locked (or there is
    /// none yet).
    #[error("{target}: {reason} (unlock with `cairn key unlock`, --key-file or CAIRN_PASSPHRASE)")]
    KeyLocked { target: String, reason: String },

    /// The passphrase or key file does not open the store's key.
    #[error("wrong key: {reason}")]
    WrongKey { reason: String },

    /// `down` would have to pass a migration that cannot be reversed.
    #[error("migration {number} ({name}) is irreversible and cannot be undone: {reason}")]
    Irreversible { number: u32, name: String, reason: String },
}

impl Error {
    /// For [`Error::InvalidFilter`]: the filter text and a caret line under the position.
    pub fn filter_snippet(&self) -> Option<String> {
        match self {
            Error::InvalidFilter { filter, position, .. } => {
                let column = filter.get(..*position).map_or(*position, |s| s.chars().count());
                Some(format!("  {filter}\n  {}^", " ".repeat(column)))
            }
            _ => None,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), cause: source }
    }

    pub(crate) fn invalid_input(source_name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput { source_name: source_name.into(), reason: reason.into() }
    }

    /// True when this error reports damaged data.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }

    /// True when a record, version or collection that was asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::NotFound { .. }
                | Error::BlobNotFound { .. }
                | Error::UnknownCollection { .. }
                | Error::VersionNotFound { .. }
                | Error::UnknownSetting { .. }
                | Error::BackupNotFound { .. }
        )
    }

    /// True when a write lost a race on a record's version.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
                Error::Corruption { location: "store.db".into(), detail: e.to_string() }
            }
            _ => Error::Sqlite(e),
        }
    }
}

fn holder_text(pid: &Option<u32>) -> String {
    match pid {
        Some(pid) => format!("process {pid}"),
        None => "another process".to_string(),
    }
}

fn id_text(id: &Option<String>) -> String {
    id.as_ref().map(|id| format!(", record `{id}`")).unwrap_or_default()
}

fn field_text(field: &Option<String>) -> String {
    field.as_ref().map(|f| format!(", field `{f}`")).unwrap_or_default()
}
