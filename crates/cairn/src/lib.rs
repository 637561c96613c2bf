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

mod blobs;
mod data;
mod engine;
mod error;
mod governance;
mod migrate;
mod portability;
mod safety;

/// cairn's own settings: their keys (`settings::BACKUP_KEEP_LAST`, …) and definitions.
pub mod settings {
    pub use crate::data::builtin_settings::*;
}

pub use blobs::{
    mime_for_name, sanitize_name, Attachment, BlobInfo, BlobReader, Codec, GcReport, RefsReport, Upload, VerifyReport,
};
pub use data::batch::{parse_batch, BatchOp, BatchResult};
pub use data::changes::{Change, ChangeOp};
pub use data::collections::{CollectionInfo, DropOptions, DropReport};
pub use data::compress::{CompactOptions, CompactReport, TrainReport, MAX_DICT_BYTES};
pub use data::condition::Condition;
pub use data::feed::{Feed, FeedEvent, FeedOptions, GapReason, Subscription, FEED_PAGE};
pub use data::ids::{new_id, validate_id, MAX_ID_LEN};
pub use data::index::IndexInfo;
pub use data::query::{
    parse_filter, CmpOp, Expr, Lit, LitValue, Page, Pred, Query, Row, Test, MAX_FILTER_LEN, MAX_LIMIT,
};
pub use data::record::{parse_json, Record, ScanOptions};
pub use data::schema::{json_kind, CollectionSchema, FieldDef, FieldType};
pub use data::search::{Hit, Search};
pub use data::settings::{Setting, SettingDef, SettingType, SECRET_MASK};
pub use engine::canonical::canonical_json;
pub use engine::foreign::{Bounded, EntryKind, ForeignDir};
pub use engine::keyring::Secret;
pub use engine::layout::{BACKUPS_DIR, BLOBS_DIR, DB_FILE, MANIFEST_FILE, QUARANTINE_DIR};
pub use engine::store::{Progress, Store, StoreOptions, FORMAT_VERSION};
pub use engine::timestamp::Timestamp;
pub use engine::trail::outcome as audit_outcome;
pub use engine::writer::{Tx, WriteStats};
pub use error::{Error, ErrorKind, Result};
pub use governance::audit::{AuditEntry, AuditProblem, AuditVerification};
pub use governance::keys::{generate_key_file, KeyInfo, KeyStatus, Rotation, RotationReport};
pub use migrate::{
    init, migrate, plan, status, Conversion, Direction, Flag, InitReport, MigrateOptions, MigrateReport, Migration,
    MigrationRun, MigrationState, MigrationStatus, Migrations, Op, Seed, StepReport, TransformFn, ValueExpr,
};
pub use portability::export::{
    ExportCollection, ExportFile, ExportManifest, ExportOptions, Redaction, EXPORT_FORMAT, EXPORT_VERSION,
};
pub use portability::import::{ImportCounts, ImportOptions, ImportReport, OnConflict};
pub use portability::load::{LoadOutcome, LoadPlan, LoadRecord, LoadSetting, Loader, Skipped, StagedBlob};
pub use portability::report::{ReportFormat, ReportOptions, ReportSummary};
pub use safety::backup::{
    backups_dir, list_backups, plan_rotation, verify_backup, BackupInfo, BackupOptions, BackupReason, BackupStats,
    BackupStatus, CollectionCounts, FileEntry, Manifest, RotationPolicy, StoreEvent, Verification, MANIFEST_FORMAT,
};
pub use safety::check::{CheckOptions, CheckReport, Problem, ProblemKind};
pub use safety::guard::StrayFile;
pub use safety::leftovers::Leftover;
pub use safety::rebuild::RebuildReport;
pub use safety::repair::{repair, RepairOptions, RepairReport};
pub use safety::restore::{restore, RecordsRestored, RestoreOptions, RestoreReport};
