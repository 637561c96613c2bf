//! cairn: a local-first data engine that does not lose data.
//!
//! A store is a directory holding an SQLite database in WAL mode with `synchronous=FULL`.
//! Records live in collections with typed schemas; every body carries a SHA-256 checked on
//! each read; every mutation is appended to a change log in the same transaction; concurrent
//! writes are folded into group commits, and a write returns only once it is on disk.
//!
//! ```
//! use cairn::{CollectionSchema, Store, StoreOptions};
//! use serde_json::json;
//!
//! # fn main() -> cairn::Result<()> {
//! # let dir = tempfile::tempdir().expect("tempdir");
//! let store = Store::open(dir.path(), StoreOptions::default())?;
//! store.create_collection(CollectionSchema::from_json(
//!     r#"{"name": "notes", "fields": [
//!         {"name": "title", "type": "text", "required": true, "summary": true},
//!         {"name": "tags", "type": "tags"}]}"#,
//!     "schema",
//! )?)?;
//!
//! let note = store.create("notes", json!({"title": "Call Acme", "tags": ["acme"]}))?;
//! let edited = store.patch("notes", &note.id, json!({"title": "Call Acme back"}), Some(note.version))?;
//! assert_eq!(edited.version, 2);
//!
//! // A write that names a stale version is refused instead of overwriting.
//! let stale = store.patch("notes", &note.id, json!({"title": "lost?"}), Some(1));
//! assert!(stale.unwrap_err().is_conflict());
//!
//! // History and undo come from the change log.
//! assert_eq!(store.history("notes", &note.id)?.len(), 2);
//! let undone = store.undo("notes", &note.id)?;
//! assert_eq!(undone.body["title"], "Call Acme");
//! # Ok(())
//! # }
//! ```

mod access;
mod blobs;
mod data;
mod engine;
mod error;
mod governance;
mod jobs;
mod migrate;
mod portability;
mod safety;

// The public API, grouped as an application meets it. Every operation is a method of
// `Store` (or, for a store that is closed or will not open, an associated function of it)
// taking its options by reference and reporting progress through one callback type,
// `Progress`. The layers behind it are described in docs/architecture.md.

// Opening, errors, progress.
pub use engine::store::{Progress, Store, StoreOptions};
pub use error::{Error, ErrorKind, Result};

// Collections and their schemas.
pub use data::collections::{CollectionInfo, DropOptions, DropReport};
pub use data::index::IndexInfo;
pub use data::rules::Rules;
pub use data::schema::{CollectionSchema, FieldDef, FieldType};

// Records, history and transactions.
pub use data::batch::{parse_batch, BatchOp, BatchResult};
pub use data::changes::{Change, ChangeOp};
pub use data::idempotency::{Once, OnceOptions, StoredAnswer};
pub use data::ids::validate_id;
pub use data::record::{Record, ScanOptions};
pub use engine::change::Seq;
pub use engine::lineage::Epoch;
pub use engine::timestamp::Timestamp;
pub use engine::writer::{Tx, WriteStats};

// Finding records: filters, queries, full-text search.
pub use data::condition::Condition;
pub use data::query::{CmpOp, Expr, Lit, LitValue, Page, Pred, Query, Row, Test};
pub use data::search::{Hit, Search};

// Following changes.
pub use data::feed::{Feed, FeedEvent, FeedOptions, GapReason, Subscription};
pub use safety::backup::StoreEvent;

// Attachments.
pub use blobs::{
    mime_for_name, sanitize_name, Attachment, BlobInfo, BlobReader, Codec, GcOptions, GcReport, RefsReport, Upload,
    VerifyReport,
};
pub use engine::hash::ContentHash;

// Settings.
pub use data::settings::{Setting, SettingDef, SettingType};

// Storage: body compression.
pub use data::compress::{CompactOptions, CompactReport, TrainReport};

// Backups, restore, check and repair.
pub use safety::backup::{
    BackupInfo, BackupOptions, BackupReason, BackupStats, BackupStatus, Backups, CollectionCounts, FileEntry, Manifest,
    RotationPolicy, Verification,
};
pub use safety::check::{CheckOptions, CheckReport, Problem, ProblemKind};
pub use safety::guard::StrayFile;
pub use safety::leftovers::Leftover;
pub use safety::rebuild::RebuildReport;
pub use safety::repair::{RepairOptions, RepairReport};
pub use safety::restore::{RecordsRestored, Reopened, RestoreOptions, RestoreReport};

// Schema migrations.
pub use migrate::{
    Conversion, Direction, Flag, InitReport, MigrateOptions, MigrateReport, Migration, MigrationRun, MigrationState,
    MigrationStatus, Migrations, Op, Seed, StepReport, TransformFn, ValueExpr,
};

// Export, import and reports.
pub use portability::archive::ExportArchive;
pub use portability::export::{ExportCollection, ExportFile, ExportManifest, ExportOptions, Redaction};
pub use portability::import::{ImportCounts, ImportOptions, ImportReport, OnConflict};
pub use portability::report::{ReportFormat, ReportOptions, ReportSummary};
pub use portability::transcript::{
    render as render_transcript, segments as transcript_segments, Segment, TranscriptFormat,
};

// Users, sessions and API keys (for the server).
pub use access::grants::{Grant, Grantee};
pub use access::realtime::{Realtime, RealtimeOptions, Resume, Watch, WatchItem};
pub use access::tickets::MAX_TICKET_LIFETIME;
pub use access::tokens::{ApiKeyOptions, IssuedToken, Principal, SessionOptions, TokenInfo, TokenKind};
pub use access::users::User;
pub use access::watch::{ResetReason, WatchEvent, WatchKind, WatchSpec};
pub use data::grants::Access;

// Durable jobs: the queue, worker pools, schedules, external commands, folder ingest.
pub use jobs::backoff::Backoff;
pub use jobs::builtin::{
    BuiltinSchedules, BACKUP_KIND, BLOB_GC_KIND, CHECK_KIND, MAINTENANCE_QUEUE, PRUNE_JOBS_KIND, VERIFY_BACKUPS_KIND,
};
pub use jobs::command::{CommandRun, CommandSpec, Commands, Limits, OutputMapping, ParamSpec, ParamType, COMMAND_KIND};
pub use jobs::events::{JobEvent, JobEvents, JOB_EVENTS_CAPACITY};
pub use jobs::ingest::{Ingest, IngestJob, IngestRule, IngestSpec, IngestWatcher, Ingested};
pub use jobs::queue::{Beat, ClaimFilter, Enqueued, JobFilter, Queue, QueueStats, Retention};
pub use jobs::runtime::{JobsConfig, JobsRuntime};
pub use jobs::schedule::{CatchUp, Fired, Schedule, ScheduleSpec};
pub use jobs::worker::{
    CancelToken, Done, Failure, Handler, JobContext, PoolStats, WorkerOptions, WorkerPool, Workers,
};
pub use jobs::{
    AttemptError, Clock, Job, JobState, Lease, ManualClock, NewJob, SystemClock, UniqueOptions, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_QUEUE,
};

// Encryption and the audit trail.
pub use engine::keyring::Secret;
pub use governance::audit::{AuditEntry, AuditProblem, AuditVerification};
pub use governance::keys::{generate_key_file, KeyInfo, KeyStatus, Rotation, RotationReport};

/// For importers of other applications' data (such as `cairn-taskerino`): a load plan
/// written in one transaction after a verified backup, and a reader for folders someone
/// else made that follows no link and never blocks on a special file.
pub mod load {
    pub use crate::engine::foreign::{Bounded, EntryKind, ForeignDir};
    pub use crate::engine::trail::outcome as audit_outcome;
    pub use crate::portability::load::{LoadOutcome, LoadPlan, LoadRecord, LoadSetting, Loader, Skipped, StagedBlob};
}

/// JSON as cairn reads and writes it.
pub mod json {
    /// Parses JSON input with cairn's limits on size and nesting.
    pub use crate::data::record::parse_json as parse;
    /// How messages name a JSON value's kind ("text", "a list", …).
    pub use crate::data::schema::json_kind as kind;
    /// Canonical JSON (sorted keys, no whitespace): what checksums are computed over.
    pub use crate::engine::canonical::canonical_json as canonical;
}

/// The names of a store directory's files and folders.
pub mod layout {
    pub use crate::engine::layout::{BACKUPS_DIR, BLOBS_DIR, DB_FILE, MANIFEST_FILE, QUARANTINE_DIR};
}

/// cairn's own settings: their keys (`settings::BACKUP_KEEP_LAST`, …) and definitions.
pub mod settings {
    pub use crate::data::builtin_settings::*;
}
