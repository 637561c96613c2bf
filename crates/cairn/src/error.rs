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
    #[error("no cairn store at {path}")]
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
    #[error("record `{collection}/{id}` {}", if *.deleted { "is deleted (its history can bring it back)" } else { "not found" })]
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

    /// A destructive operation needs explicit confirmation; `token`, when there is one, is
    /// what confirms it (a collection's name).
    #[error("{what} needs confirmation: {hint}")]
    ConfirmationRequired { what: String, hint: String, token: Option<String> },

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

    /// SQLite returned an error that is not corruption. `code` is SQLite's extended result
    /// code, when there was one.
    #[error("sqlite: {message}")]
    Database { code: Option<i32>, message: String },

    /// Something that should not happen did (a bug): the operation was undone.
    #[error("internal error: {0}")]
    Internal(String),

    /// A file or folder the operation would create is already there; nothing was replaced.
    #[error("{} {reason}", .path.display())]
    PathExists { path: PathBuf, reason: String },

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
    #[error("no backup `{id}`")]
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
    #[error("{target}: {reason}")]
    KeyLocked { target: String, reason: String },

    /// The passphrase or key file does not open the store's key.
    #[error("wrong key: {reason}")]
    WrongKey { reason: String },

    /// No user has this name.
    #[error("no user is named {name:?}")]
    UserNotFound { name: String },

    /// A user of this name exists already.
    #[error("a user named {name:?} exists already")]
    UserExists { name: String },

    /// No token has this id.
    #[error("no token has the id {id:?}")]
    TokenNotFound { id: String },

    /// No grant has this id (or none the caller may see).
    #[error("no grant has the id {id:?}")]
    GrantNotFound { id: String },

    /// A collection rule does not let the caller do this.
    #[error("not allowed in `{collection}`: {reason}")]
    Forbidden { collection: String, reason: String },

    /// An idempotency key came back with another request than the one it was first used for.
    #[error("idempotency key {key:?} was used for another request")]
    KeyReused { key: String },

    /// A sign-in or a token that lets no one in. An unknown name and a wrong password get
    /// the same words, so that they cannot be told apart.
    #[error("not signed in: {reason}")]
    Unauthenticated { reason: String },

    /// No job has this id.
    #[error("no job has the id {id}")]
    JobNotFound { id: i64 },

    /// A worker wrote to a job under a lease it no longer holds: the lease expired and the
    /// job was given to another attempt, or it was finished or deleted meanwhile.
    #[error("job {id} is no longer held by attempt {attempt}: its lease was lost")]
    LeaseLost { id: i64, attempt: i64 },

    /// No schedule has this name.
    #[error("no schedule is named {name:?}")]
    ScheduleNotFound { name: String },

    /// A schedule of this name exists already.
    #[error("a schedule named {name:?} exists already")]
    ScheduleExists { name: String },

    /// An external command a job asked for is not allowed to run as asked: not on the
    /// allow-list, or an argument that fails its template.
    #[error("command `{command}` refused: {reason}")]
    CommandRefused { command: String, reason: String },

    /// `down` would have to pass a migration that cannot be reversed.
    #[error("migration {number} ({name}) is irreversible and cannot be undone: {reason}")]
    Irreversible { number: u32, name: String, reason: String },
}

/// What kind of error an [`Error`] is: stable across versions, for callers that map errors to
/// their own (a server to HTTP statuses, the CLI to exit codes) without reading messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// What was asked for does not exist: a record, version, collection, setting, blob, backup
    /// or store.
    NotFound,
    /// What was to be created exists already: a record id, a collection, an output path.
    AlreadyExists,
    /// A write lost a race or would break a rule against other data: a stale version, a
    /// unique value another record holds.
    Conflict,
    /// The request itself is wrong: a record that fails its schema, a malformed id, schema,
    /// filter, query, setting, migration or input file.
    InvalidInput,
    /// The request is too large: a record body or attachment over its limit.
    TooLarge,
    /// The request is well formed but not allowed in the current state: a write to a store
    /// opened read-only, a drop without confirmation, an undo with nothing to undo.
    NotAllowed,
    /// Another process holds the store for writing.
    Locked,
    /// The request names no one, or a name, password or token that lets no one in.
    Unauthenticated,
    /// The caller is known, and a rule does not let them do this.
    Forbidden,
    /// Encrypted data needs the store's key, and this handle has not unlocked it.
    KeyLocked,
    /// The passphrase or key file does not open the store's key.
    WrongKey,
    /// Stored data is damaged.
    Corruption,
    /// The store cannot serve this now: it was closed, or needs a newer cairn.
    Unavailable,
    /// The file system failed (disk full, permissions, a failed commit or backup).
    Io,
    /// A bug: something that should not happen did.
    Internal,
}

impl ErrorKind {
    /// The kind's stable name (`not_found`, `conflict`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::NotAllowed => "not_allowed",
            ErrorKind::Locked => "locked",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::KeyLocked => "key_locked",
            ErrorKind::WrongKey => "wrong_key",
            ErrorKind::Corruption => "corruption",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The error's kind; see [`ErrorKind`]. An error that wraps another (a batch operation, a
    /// migration step) has the kind of what failed inside it.
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        match self {
            Error::NotAStore { .. } => K::InvalidInput,
            Error::NoStore { .. } => K::NotFound,
            Error::TooNew { .. } => K::Unavailable,
            Error::Locked { .. } => K::Locked,
            Error::ReadOnly => K::NotAllowed,
            Error::UnknownCollection { .. } => K::NotFound,
            Error::CollectionExists { .. } => K::AlreadyExists,
            Error::InvalidSchema { .. } => K::InvalidInput,
            Error::Validation { .. } => K::InvalidInput,
            Error::InvalidId { .. } => K::InvalidInput,
            Error::BodyTooLarge { .. } => K::TooLarge,
            Error::NotFound { .. } => K::NotFound,
            Error::AlreadyExists { .. } => K::AlreadyExists,
            Error::Conflict { .. } => K::Conflict,
            Error::Unique { .. } => K::Conflict,
            Error::Corruption { .. } => K::Corruption,
            Error::InvalidUpload { .. } => K::InvalidInput,
            Error::BlobTooLarge { .. } => K::TooLarge,
            Error::BlobNotFound { .. } => K::NotFound,
            Error::VersionNotFound { .. } => K::NotFound,
            Error::NothingTo { .. } => K::NotAllowed,
            Error::NotAllowed(_) => K::NotAllowed,
            Error::ConfirmationRequired { .. } => K::NotAllowed,
            Error::InvalidFilter { .. } => K::InvalidInput,
            Error::InvalidQuery(_) => K::InvalidInput,
            Error::UnknownSetting { .. } => K::NotFound,
            Error::InvalidSetting { .. } => K::InvalidInput,
            Error::InvalidInput { .. } => K::InvalidInput,
            Error::Io { .. } => K::Io,
            Error::Database { code, .. } => match code.map(|c| c & 0xff) {
                // SQLITE_BUSY, SQLITE_LOCKED: another connection holds the database.
                Some(5 | 6) => K::Locked,
                // SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_READONLY.
                Some(10 | 13 | 14 | 8) => K::Io,
                _ => K::Internal,
            },
            Error::Internal(_) => K::Internal,
            Error::PathExists { .. } => K::AlreadyExists,
            Error::CommitFailed(_) => K::Io,
            Error::Batch { cause, .. } => cause.kind(),
            Error::BackupFailed { .. } => K::Io,
            Error::BackupNotFound { .. } => K::NotFound,
            Error::BackupNotRestorable { .. } => K::NotAllowed,
            Error::WriterStopped => K::Unavailable,
            Error::InvalidMigration { .. } => K::InvalidInput,
            Error::MigrationHistory { .. } => K::InvalidInput,
            Error::MigrationFailed { cause, .. } => cause.kind(),
            Error::KeyLocked { .. } => K::KeyLocked,
            Error::WrongKey { .. } => K::WrongKey,
            Error::Irreversible { .. } => K::NotAllowed,
            Error::Unauthenticated { .. } => K::Unauthenticated,
            Error::UserNotFound { .. } | Error::TokenNotFound { .. } | Error::GrantNotFound { .. } => K::NotFound,
            Error::UserExists { .. } => K::AlreadyExists,
            Error::KeyReused { .. } => K::InvalidInput,
            Error::Forbidden { .. } => K::Forbidden,
            Error::JobNotFound { .. } | Error::ScheduleNotFound { .. } => K::NotFound,
            Error::LeaseLost { .. } => K::Conflict,
            Error::ScheduleExists { .. } => K::AlreadyExists,
            Error::CommandRefused { .. } => K::InvalidInput,
        }
    }

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

    /// An I/O failure: what was being done (`"read"`, `"create directory"`…), to which path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), cause: source }
    }

    /// Input that cannot be used: which input (a file, a field, a flag's value) and why.
    pub fn invalid_input(source_name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput { source_name: source_name.into(), reason: reason.into() }
    }

    /// True when this error reports damaged data ([`ErrorKind::Corruption`]).
    pub fn is_corruption(&self) -> bool {
        self.kind() == ErrorKind::Corruption
    }

    /// True when something asked for does not exist ([`ErrorKind::NotFound`]).
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    /// True when a write lost a race on a record's version or a unique value
    /// ([`ErrorKind::Conflict`]).
    pub fn is_conflict(&self) -> bool {
        self.kind() == ErrorKind::Conflict
    }
}

#[doc(hidden)]
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
                Error::Corruption { location: "store.db".into(), detail: e.to_string() }
            }
            _ => Error::Database {
                code: match &e {
                    rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code),
                    _ => None,
                },
                message: e.to_string(),
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant, once: adding one without deciding its kind fails to compile here.
    fn every_variant() -> Vec<(Error, ErrorKind)> {
        use ErrorKind as K;
        let s = String::new;
        let p = PathBuf::new;
        let inner = || Box::new(Error::Conflict { collection: s(), id: s(), expected: 1, actual: 2 });
        let all = vec![
            (Error::NotAStore { path: p(), reason: s() }, K::InvalidInput),
            (Error::NoStore { path: p() }, K::NotFound),
            (Error::TooNew { path: p(), found: 9, supported: 1 }, K::Unavailable),
            (Error::Locked { path: p(), pid: None }, K::Locked),
            (Error::ReadOnly, K::NotAllowed),
            (Error::UnknownCollection { collection: s() }, K::NotFound),
            (Error::CollectionExists { collection: s() }, K::AlreadyExists),
            (Error::InvalidSchema { collection: s(), field: None, reason: s() }, K::InvalidInput),
            (Error::Validation { collection: s(), id: None, field: None, reason: s() }, K::InvalidInput),
            (Error::InvalidId { id: s(), reason: s() }, K::InvalidInput),
            (Error::BodyTooLarge { collection: s(), id: None, size: 2, limit: 1 }, K::TooLarge),
            (Error::NotFound { collection: s(), id: s(), deleted: false }, K::NotFound),
            (Error::AlreadyExists { collection: s(), id: s() }, K::AlreadyExists),
            (Error::Conflict { collection: s(), id: s(), expected: 1, actual: 2 }, K::Conflict),
            (Error::Unique { collection: s(), id: s(), field: s(), other_id: s() }, K::Conflict),
            (Error::Corruption { location: s(), detail: s() }, K::Corruption),
            (Error::InvalidUpload { name: s(), reason: s() }, K::InvalidInput),
            (Error::BlobTooLarge { limit: 1 }, K::TooLarge),
            (Error::BlobNotFound { hash: s() }, K::NotFound),
            (Error::VersionNotFound { collection: s(), id: s(), version: 1 }, K::NotFound),
            (Error::NothingTo { action: "undo", collection: s(), id: s() }, K::NotAllowed),
            (Error::NotAllowed(s()), K::NotAllowed),
            (Error::ConfirmationRequired { what: s(), hint: s(), token: None }, K::NotAllowed),
            (Error::InvalidFilter { filter: s(), position: 0, reason: s() }, K::InvalidInput),
            (Error::InvalidQuery(s()), K::InvalidInput),
            (Error::UnknownSetting { key: s() }, K::NotFound),
            (Error::InvalidSetting { key: s(), reason: s() }, K::InvalidInput),
            (Error::InvalidInput { source_name: s(), reason: s() }, K::InvalidInput),
            (Error::Io { action: "read", path: p(), cause: std::io::Error::other("x") }, K::Io),
            (Error::Database { code: Some(13), message: s() }, K::Io),
            (Error::Database { code: Some(5), message: s() }, K::Locked),
            (Error::Database { code: None, message: s() }, K::Internal),
            (Error::Internal(s()), K::Internal),
            (Error::PathExists { path: p(), reason: s() }, K::AlreadyExists),
            (Error::CommitFailed(s()), K::Io),
            (Error::Batch { index: 0, cause: inner() }, K::Conflict),
            (Error::BackupFailed { id: s(), reason: s() }, K::Io),
            (Error::BackupNotFound { id: s() }, K::NotFound),
            (Error::BackupNotRestorable { id: s(), reason: s() }, K::NotAllowed),
            (Error::WriterStopped, K::Unavailable),
            (Error::InvalidMigration { source_name: s(), reason: s() }, K::InvalidInput),
            (Error::MigrationHistory { number: 1, name: s(), reason: s() }, K::InvalidInput),
            (
                Error::MigrationFailed {
                    number: 1,
                    name: s(),
                    direction: "up",
                    step: 1,
                    op: s(),
                    outcome: s(),
                    cause: inner(),
                },
                K::Conflict,
            ),
            (Error::KeyLocked { target: s(), reason: s() }, K::KeyLocked),
            (Error::WrongKey { reason: s() }, K::WrongKey),
            (Error::Irreversible { number: 1, name: s(), reason: s() }, K::NotAllowed),
            (Error::Unauthenticated { reason: s() }, K::Unauthenticated),
            (Error::UserNotFound { name: s() }, K::NotFound),
            (Error::UserExists { name: s() }, K::AlreadyExists),
            (Error::TokenNotFound { id: s() }, K::NotFound),
            (Error::GrantNotFound { id: s() }, K::NotFound),
            (Error::KeyReused { key: s() }, K::InvalidInput),
            (Error::Forbidden { collection: s(), reason: s() }, K::Forbidden),
            (Error::JobNotFound { id: 1 }, K::NotFound),
            (Error::LeaseLost { id: 1, attempt: 1 }, K::Conflict),
            (Error::ScheduleNotFound { name: s() }, K::NotFound),
            (Error::ScheduleExists { name: s() }, K::AlreadyExists),
            (Error::CommandRefused { command: s(), reason: s() }, K::InvalidInput),
        ];
        for (e, _) in &all {
            // No wildcard: a new variant must be added to the table above.
            match e {
                Error::NotAStore { .. }
                | Error::NoStore { .. }
                | Error::TooNew { .. }
                | Error::Locked { .. }
                | Error::ReadOnly
                | Error::UnknownCollection { .. }
                | Error::CollectionExists { .. }
                | Error::InvalidSchema { .. }
                | Error::Validation { .. }
                | Error::InvalidId { .. }
                | Error::BodyTooLarge { .. }
                | Error::NotFound { .. }
                | Error::AlreadyExists { .. }
                | Error::Conflict { .. }
                | Error::Unique { .. }
                | Error::Corruption { .. }
                | Error::InvalidUpload { .. }
                | Error::BlobTooLarge { .. }
                | Error::BlobNotFound { .. }
                | Error::VersionNotFound { .. }
                | Error::NothingTo { .. }
                | Error::NotAllowed(_)
                | Error::ConfirmationRequired { .. }
                | Error::InvalidFilter { .. }
                | Error::InvalidQuery(_)
                | Error::UnknownSetting { .. }
                | Error::InvalidSetting { .. }
                | Error::InvalidInput { .. }
                | Error::Io { .. }
                | Error::Database { .. }
                | Error::Internal(_)
                | Error::PathExists { .. }
                | Error::CommitFailed(_)
                | Error::Batch { .. }
                | Error::BackupFailed { .. }
                | Error::BackupNotFound { .. }
                | Error::BackupNotRestorable { .. }
                | Error::WriterStopped
                | Error::InvalidMigration { .. }
                | Error::MigrationHistory { .. }
                | Error::MigrationFailed { .. }
                | Error::KeyLocked { .. }
                | Error::WrongKey { .. }
                | Error::Irreversible { .. }
                | Error::Unauthenticated { .. }
                | Error::UserNotFound { .. }
                | Error::UserExists { .. }
                | Error::TokenNotFound { .. }
                | Error::GrantNotFound { .. }
                | Error::KeyReused { .. }
                | Error::Forbidden { .. }
                | Error::JobNotFound { .. }
                | Error::LeaseLost { .. }
                | Error::ScheduleNotFound { .. }
                | Error::ScheduleExists { .. }
                | Error::CommandRefused { .. } => {}
            }
        }
        all
    }

    #[test]
    fn every_variant_has_its_documented_kind() {
        for (error, kind) in every_variant() {
            assert_eq!(error.kind(), kind, "{error:?}");
        }
        let names: std::collections::BTreeSet<&str> = every_variant().iter().map(|(_, k)| k.as_str()).collect();
        assert_eq!(names.len(), 15, "every kind is used by some variant: {names:?}");
    }

    #[test]
    fn a_disk_full_database_error_is_io_and_disk_full() {
        let e = Error::Database { code: Some(13), message: "database or disk is full".into() };
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.is_disk_full());
    }
}
