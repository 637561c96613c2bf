//! The seam between the HTTP layer and storage: what the routes need, and nothing of how a
//! store keeps it. Arguments are owned so that an implementation can move them onto a
//! blocking thread (the embedded store) or into a database client (PostgreSQL, later).

use std::future::Future;
use std::io::Read;
use std::pin::Pin;

use cairn::{
    Access, Change, CollectionInfo, Grant, Grantee, IssuedToken, Once, OnceOptions, Page, Principal, Query, Record,
    Resume, Seq, SessionOptions, TokenInfo, User, WatchItem, WatchSpec,
};
use serde::Serialize;
use serde_json::Value;

/// What a backend call returns.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = cairn::Result<T>> + Send + 'a>>;

/// Storage as the routes see it.
pub trait Backend: Send + Sync + 'static {
    /// Every collection.
    fn collections(&self) -> BackendFuture<'_, Vec<CollectionInfo>>;
    /// One collection.
    fn collection(&self, name: String) -> BackendFuture<'_, CollectionInfo>;
    /// A live record the caller may view (the collection's rules; admins see all).
    fn get(&self, caller: Principal, collection: String, id: String) -> BackendFuture<'_, Record>;
    /// Makes one record write as the caller (held to the collection's rules).
    fn write(&self, caller: Principal, write: RecordWrite) -> BackendFuture<'_, Record>;
    /// Makes one record write once for an idempotency key, storing its answer (the record,
    /// with the status the write answers) in the same transaction; a retry gets that answer.
    fn write_once(&self, caller: Principal, options: OnceOptions, write: RecordWrite) -> BackendFuture<'_, Once>;
    /// A page of the records the caller may list.
    fn query(&self, caller: Principal, collection: String, query: Query) -> BackendFuture<'_, Page>;
    /// How many live records the caller may list match `filter`.
    fn count(&self, caller: Principal, collection: String, filter: Option<String>) -> BackendFuture<'_, u64>;
    /// Every change of one record the caller may view, oldest first.
    fn history(&self, caller: Principal, collection: String, id: String) -> BackendFuture<'_, Vec<Change>>;
    /// Up to `limit` changes after `since`.
    fn changes_since(&self, since: Seq, limit: usize) -> BackendFuture<'_, Vec<Change>>;
    /// Who `token` lets in.
    fn authenticate(&self, token: String) -> BackendFuture<'_, Principal>;
    /// Signs a user in: a new session.
    fn login(&self, name: String, password: String, options: SessionOptions) -> BackendFuture<'_, IssuedToken>;
    /// Revokes a token (signing out).
    fn revoke_token(&self, id: String) -> BackendFuture<'_, TokenInfo>;
    /// Sets a user's password, revoking its sessions but `keep`.
    fn set_password(&self, name: String, password: String, keep: Option<String>) -> BackendFuture<'_, User>;
    /// Creates a collection.
    fn create_collection(&self, schema: cairn::CollectionSchema) -> BackendFuture<'_, CollectionInfo>;
    /// Changes a collection's schema.
    fn update_collection(&self, schema: cairn::CollectionSchema) -> BackendFuture<'_, CollectionInfo>;
    /// Drops a collection (its records kept in quarantine); `confirm` must be its name.
    fn drop_collection(&self, name: String, confirm: String) -> BackendFuture<'_, cairn::DropReport>;
    /// Every user.
    fn users(&self) -> BackendFuture<'_, Vec<User>>;
    /// Makes a user.
    fn create_user(&self, name: String, password: String, role: String) -> BackendFuture<'_, User>;
    /// Disables a user and revokes its tokens.
    fn disable_user(&self, name: String) -> BackendFuture<'_, User>;
    /// Every token, or one user's.
    fn tokens(&self, user: Option<String>) -> BackendFuture<'_, Vec<TokenInfo>>;
    /// Makes an API key.
    fn create_api_key(&self, user: String, options: cairn::ApiKeyOptions) -> BackendFuture<'_, IssuedToken>;
    /// Stores `content` (read as it arrives) and links it from `field` of a record the caller
    /// may change; the record as it is now, and the attachment.
    fn attach(
        &self,
        caller: Principal,
        collection: String,
        id: String,
        field: String,
        upload: cairn::Upload,
        content: Box<dyn Read + Send>,
    ) -> BackendFuture<'_, (Record, cairn::Attachment)>;
    /// The attachment `hash` in `field` of a record the caller may view, and its content (a
    /// read to the end checks it against the hash).
    fn open_attachment(
        &self,
        caller: Principal,
        collection: String,
        id: String,
        field: String,
        hash: String,
    ) -> BackendFuture<'_, (cairn::Attachment, Box<dyn Read + Send>)>;
    /// Removes a soft-deleted record for good (admins); its history stays.
    fn purge(&self, caller: Principal, collection: String, id: String) -> BackendFuture<'_, u64>;
    /// Who a record is shared with (the caller must be an admin or its owner).
    fn grants(&self, caller: Principal, collection: String, id: String) -> BackendFuture<'_, Vec<Grant>>;
    /// Shares a record with a user or a role, as the caller (an admin or its owner).
    fn grant(
        &self,
        caller: Principal,
        collection: String,
        id: String,
        grantee: Grantee,
        access: Access,
    ) -> BackendFuture<'_, Grant>;
    /// Withdraws a grant, as the caller (an admin or the record's owner).
    fn revoke_grant(&self, caller: Principal, grant: String) -> BackendFuture<'_, Grant>;
    /// Full-text search within what the caller may list.
    fn search(
        &self,
        caller: Principal,
        collection: String,
        search: cairn::Search,
    ) -> BackendFuture<'_, Vec<cairn::Hit>>;
    /// Applies `ops` all or nothing, as the caller (an admin).
    fn batch(&self, caller: Principal, ops: Vec<cairn::BatchOp>) -> BackendFuture<'_, Vec<cairn::BatchResult>>;
    /// Every setting.
    fn settings(&self) -> BackendFuture<'_, Vec<cairn::Setting>>;
    /// Sets one setting; returns it as it is now.
    fn set_setting(&self, key: String, value: Value) -> BackendFuture<'_, cairn::Setting>;
    /// Audit entries after `after` matching `filter`, at most `limit`.
    fn audit_log(&self, filter: Option<String>, after: u64, limit: usize) -> BackendFuture<'_, Vec<cairn::AuditEntry>>;
    /// Every backup, newest first.
    fn backups(&self) -> BackendFuture<'_, Vec<cairn::BackupInfo>>;
    /// Makes an export of everything (admins), to be sent as a tar archive.
    fn export(&self, options: cairn::ExportOptions) -> BackendFuture<'_, cairn::ExportArchive>;
    /// Takes a backup now.
    fn backup(&self) -> BackendFuture<'_, cairn::BackupInfo>;
    /// Replaces the whole store with backup `id` (its state now is backed up first); calls
    /// wait while it runs.
    fn restore(&self, backup: String) -> BackendFuture<'_, cairn::RestoreReport>;
    /// Brings records of one collection (or one record) back from backup `id` as new
    /// versions, as the caller (an admin); the rest of the store is untouched.
    fn restore_records(
        &self,
        caller: Principal,
        backup: String,
        collection: String,
        id: Option<String>,
    ) -> BackendFuture<'_, cairn::RecordsRestored>;
    /// Verifies a backup again.
    fn verify_backup(&self, id: String) -> BackendFuture<'_, cairn::BackupInfo>;
    /// Appends to the audit trail as `actor` (a refused request, for instance).
    fn audit(
        &self,
        actor: String,
        action: String,
        target: String,
        outcome: String,
        detail: String,
    ) -> BackendFuture<'_, ()>;
    /// Jobs matching `filter`, newest first.
    fn jobs(&self, filter: cairn::JobFilter) -> BackendFuture<'_, Vec<cairn::Job>>;
    /// One job.
    fn job(&self, id: i64) -> BackendFuture<'_, cairn::Job>;
    /// Each queue's jobs by state.
    fn job_stats(&self) -> BackendFuture<'_, Vec<cairn::QueueStats>>;
    /// Enqueues a job as the caller (an admin).
    fn enqueue(&self, caller: Principal, job: cairn::NewJob) -> BackendFuture<'_, cairn::Enqueued>;
    /// Cancels, retries, restarts or deletes a job as the caller; returns it as it is now
    /// (as it was, for a delete).
    fn job_action(&self, caller: Principal, id: i64, action: JobAction) -> BackendFuture<'_, cairn::Job>;
    /// Listens to job changes from now on (they end when the store closes or is restored).
    fn job_events(&self) -> BackendFuture<'_, cairn::JobEvents>;
    /// Every schedule.
    fn schedules(&self) -> BackendFuture<'_, Vec<cairn::Schedule>>;
    /// Adds a schedule (or replaces the one of its name, keeping when it last fired).
    fn put_schedule(
        &self,
        caller: Principal,
        spec: cairn::ScheduleSpec,
        replace: bool,
    ) -> BackendFuture<'_, cairn::Schedule>;
    /// Removes a schedule; the jobs it enqueued stay.
    fn remove_schedule(&self, caller: Principal, name: String) -> BackendFuture<'_, cairn::Schedule>;
    /// Enqueues a schedule's job now, outside its timetable.
    fn run_schedule(&self, caller: Principal, name: String) -> BackendFuture<'_, cairn::Enqueued>;
    /// How many write groups and requests the backend has committed.
    fn write_stats(&self) -> BackendFuture<'_, cairn::WriteStats>;
    /// Whether the backend can take writes now, and why not.
    fn readiness(&self, min_free_bytes: u64, max_backup_age_seconds: u64) -> BackendFuture<'_, Readiness>;
    /// Closes storage once the server has drained (taking the shutdown backup when the
    /// store's settings ask for one). Later calls fail.
    fn close(&self) -> BackendFuture<'_, ()>;

    /// Subscribes `caller` to realtime events of `spec`, from `resume`.
    fn watch(&self, caller: Principal, spec: WatchSpec, resume: Resume) -> BackendFuture<'_, Box<dyn Subscription>>;

    /// A single-use stream ticket for `caller`, good for `lifetime`.
    fn issue_ticket(&self, caller: Principal, lifetime: std::time::Duration) -> BackendFuture<'_, String>;

    /// Who a stream ticket was issued to, as their token lets them in now; the ticket is
    /// used up.
    fn redeem_ticket(&self, ticket: String) -> BackendFuture<'_, Principal>;

    /// Who `caller`'s token lets in now (it may have been revoked since).
    fn recheck(&self, caller: Principal) -> BackendFuture<'_, Principal>;
}

/// A realtime subscription as the routes see it: its items in order, how far it has been
/// judged, and the history its seqs belong to.
pub trait Subscription: futures_core::Stream<Item = cairn::Result<WatchItem>> + Send + Sync + Unpin {
    /// Every change up to here was delivered or did not concern the subscriber.
    fn position(&self) -> Seq;
    /// The epoch of the seqs it delivers.
    fn epoch(&self) -> String;
    /// The subscriber's token now names `principal` (a role may have changed).
    fn set_principal(&self, principal: Principal) -> cairn::Result<()>;
}

impl Subscription for cairn::Watch {
    fn position(&self) -> Seq {
        cairn::Watch::position(self)
    }

    fn epoch(&self) -> String {
        cairn::Watch::epoch(self).to_string()
    }

    fn set_principal(&self, principal: Principal) -> cairn::Result<()> {
        cairn::Watch::set_principal(self, principal)
    }
}

/// A write of one record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RecordWrite {
    /// Create, with `id` or a new one.
    Create { collection: String, id: Option<String>, body: Value },
    /// Replace the body; `expected` is the version the caller last saw.
    Replace { collection: String, id: String, body: Value, expected: Option<u64> },
    /// Apply a JSON merge patch.
    Patch { collection: String, id: String, patch: Value, expected: Option<u64> },
    /// Soft-delete.
    Delete { collection: String, id: String, expected: Option<u64> },
    /// Bring back the body of `version`, as a new version.
    Revert { collection: String, id: String, version: u64, expected: Option<u64> },
    /// Undo the record's last change.
    Undo { collection: String, id: String },
    /// Redo what the last undo took back.
    Redo { collection: String, id: String },
}

impl RecordWrite {
    /// The HTTP status of its success.
    pub fn status(&self) -> u16 {
        match self {
            RecordWrite::Create { .. } => 201,
            RecordWrite::Delete { .. } => 204,
            _ => 200,
        }
    }

    /// Whether the caller named the version it expects (a conflict is then 412).
    pub fn has_precondition(&self) -> bool {
        match self {
            RecordWrite::Create { .. } | RecordWrite::Undo { .. } | RecordWrite::Redo { .. } => false,
            RecordWrite::Replace { expected, .. }
            | RecordWrite::Patch { expected, .. }
            | RecordWrite::Delete { expected, .. }
            | RecordWrite::Revert { expected, .. } => expected.is_some(),
        }
    }

    /// Makes it in `tx` as `caller`, held to the collection's rules.
    pub fn apply(self, caller: &Principal, tx: &mut cairn::Tx<'_>) -> cairn::Result<Record> {
        match self {
            RecordWrite::Create { collection, id, body } => tx.create_as(caller, &collection, id.as_deref(), body),
            RecordWrite::Delete { collection, id, expected } => tx.delete_as(caller, &collection, &id, expected),
            RecordWrite::Replace { collection, id, body, expected } => {
                tx.update_as(caller, &collection, &id.clone(), |tx| tx.replace(&collection, &id, body, expected))
            }
            RecordWrite::Patch { collection, id, patch, expected } => {
                tx.update_as(caller, &collection, &id.clone(), |tx| tx.patch(&collection, &id, &patch, expected))
            }
            RecordWrite::Revert { collection, id, version, expected } => {
                tx.update_as(caller, &collection, &id.clone(), |tx| tx.revert(&collection, &id, version, expected))
            }
            RecordWrite::Undo { collection, id } => {
                tx.update_as(caller, &collection, &id.clone(), |tx| tx.undo(&collection, &id))
            }
            RecordWrite::Redo { collection, id } => {
                tx.update_as(caller, &collection, &id.clone(), |tx| tx.redo(&collection, &id))
            }
        }
    }
}

/// The answer of `/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// Why the backend is not ready; empty when it is.
    pub reasons: Vec<String>,
    /// Bytes free where the data lives, when known.
    pub disk_free_bytes: Option<u64>,
    /// Age of the newest verified backup, when there is one.
    pub backup_age_seconds: Option<i64>,
    /// The newest seq in the change log.
    pub last_seq: Seq,
}

impl Readiness {
    /// True when nothing stands in the way.
    pub fn is_ready(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// What can be done to a job once it is enqueued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    /// A waiting job is cancelled; a running one is told to stop.
    Cancel,
    /// A dead or cancelled job runs again, with fresh attempts.
    Retry,
    /// Any job runs again from the start (a running one is stopped first).
    Restart,
    /// A job that is not running is deleted.
    Delete,
}
