//! The write path: group commit with a rotating leader.
//!
//! There is one write connection. A caller that wants to write queues its request; if no
//! group is being committed, it becomes the leader: it takes every queued request (up to
//! `max_batch`), runs each inside its own SAVEPOINT of one `BEGIN IMMEDIATE` transaction on
//! its own thread, and commits once: one fsync for the whole group. Requests that arrive
//! meanwhile queue up, and when the leader is done one of their callers leads the next group.
//! A request that fails rolls back to its savepoint and fails alone; the others still commit.
//! Nobody is told "done" before the COMMIT returned, and with `synchronous=FULL` that means
//! the WAL is on disk. Committed changes are published to subscribers in seq order before
//! callers are answered.
//!
//! Alternatives measured: a dedicated writer thread fed by a channel costs two thread
//! hand-offs per write, which on a machine with a fast fsync was a third of a lone writer's
//! time (P1); one transaction per caller behind a mutex costs one fsync per write, which is
//! what group commit exists to avoid (P2).

use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::engine::change::Change;
use crate::engine::hub::Hub;
use crate::engine::keyring::Keyring;
use crate::engine::timestamp::Timestamp;
use crate::error::{Error, Result};

/// The shared write path of a store. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

struct Shared {
    stats: WriteCounters,
    queue: Mutex<Queue>,
    /// Signalled when a request is queued while the leader gathers its group.
    arrived: Condvar,
    /// Signalled when nobody leads any more (for `shutdown`).
    idle: Condvar,
    core: Mutex<Core>,
    max_batch: usize,
}

struct Queue {
    jobs: VecDeque<Box<dyn Job>>,
    /// Someone holds leadership: it is committing a group, or has been handed it.
    leading: bool,
    /// The leader waits for more requests (see `MAX_GATHER`).
    gathering: bool,
    /// Size of the last group: how many callers are likely to write again right away.
    expected: usize,
    closed: bool,
}

/// What only the leader touches.
struct Core {
    conn: Connection,
    cache: TxCache,
    hub: Arc<Hub>,
    dir: PathBuf,
    keys: Arc<Keyring>,
}

/// Longest a leader waits for the callers of the previous group to queue again. Under
/// concurrency those callers are being woken and need a moment; without the wait, groups
/// shrink to whoever happened to be scheduled in time. A lone writer's previous group had one
/// request, its own, so it never waits.
const MAX_GATHER: Duration = Duration::from_micros(300);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent: the queue is only
    // pushed and drained, and a failed group is rolled back by SQLite.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a waiting caller is told.
enum Signal<T> {
    /// Its request's group finished.
    Done(Result<T>),
    /// Leadership was handed to it: its request is the oldest one queued.
    Lead,
}

impl Writer {
    pub(crate) fn new(conn: Connection, hub: Arc<Hub>, dir: PathBuf, keys: Arc<Keyring>, max_batch: usize) -> Self {
        let shared = Shared {
            stats: WriteCounters::default(),
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                leading: false,
                gathering: false,
                expected: 1,
                closed: false,
            }),
            arrived: Condvar::new(),
            idle: Condvar::new(),
            core: Mutex::new(Core { conn, cache: TxCache::default(), hub, dir, keys }),
            max_batch,
        };
        Writer { shared: Arc::new(shared) }
    }

    /// Queues `f` and returns once its group committed (or it failed).
    pub(crate) fn submit<T, F>(&self, actor: Arc<str>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, signals) = mpsc::channel();
        let lead_now = {
            let mut queue = lock(&self.shared.queue);
            if queue.closed {
                return Err(Error::WriterStopped);
            }
            queue.jobs.push_back(Box::new(TypedJob { f: Some(f), actor, out: None, reply }));
            if queue.gathering {
                self.shared.arrived.notify_one();
            }
            !std::mem::replace(&mut queue.leading, true)
        };
        if lead_now {
            self.lead();
        }
        loop {
            match signals.recv() {
                Ok(Signal::Done(result)) => return result,
                Ok(Signal::Lead) => self.lead(),
                Err(_) => return Err(Error::WriterStopped),
            }
        }
    }

    /// Commits one group. The caller holds leadership; on return (or unwind) it has been
    /// handed to the owner of the oldest queued request, or given up if none is queued.
    fn lead(&self) {
        struct HandOff<'a> {
            shared: &'a Shared,
            group: usize,
        }
        impl Drop for HandOff<'_> {
            fn drop(&mut self) {
                let mut queue = lock(&self.shared.queue);
                queue.expected = self.group.max(1);
                match queue.jobs.front() {
                    Some(next) => next.promote(),
                    None => {
                        queue.leading = false;
                        // Only `shutdown` waits for this, and only after closing the queue;
                        // notifying costs a syscall, so it is not done on every write.
                        if queue.closed {
                            self.shared.idle.notify_all();
                        }
                    }
                }
            }
        }
        let batch: Vec<Box<dyn Job>> = {
            let mut queue = lock(&self.shared.queue);
            let want = queue.expected.min(self.shared.max_batch);
            let deadline = Instant::now() + MAX_GATHER;
            while queue.jobs.len() < want && !queue.closed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                queue.gathering = true;
                queue = self.shared.arrived.wait_timeout(queue, left).unwrap_or_else(|p| p.into_inner()).0;
            }
            queue.gathering = false;
            let take = queue.jobs.len().min(self.shared.max_batch);
            queue.jobs.drain(..take).collect()
        };
        let _hand_off = HandOff { shared: &self.shared, group: batch.len() };
        if batch.is_empty() {
            return;
        }
        self.shared.stats.groups.fetch_add(1, Ordering::Relaxed);
        self.shared.stats.requests.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut core = lock(&self.shared.core);
        let Core { conn, cache, hub, dir, keys } = &mut *core;
        commit_group(conn, cache, hub, dir, keys, batch);
    }

    /// Runs `f` alone in its own transaction on the calling thread, holding the write
    /// connection throughout: for long operations (migrations) whose closure borrows from the
    /// caller and reports progress as it goes. Group commits wait meanwhile.
    ///
    /// With `commit` false the transaction is rolled back even when `f` succeeds: a dry run
    /// that goes through every check a real write does.
    pub(crate) fn exclusive<T>(
        &self,
        actor: &str,
        commit: bool,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        if lock(&self.shared.queue).closed {
            return Err(Error::WriterStopped);
        }
        let mut core = lock(&self.shared.core);
        let Core { conn, cache, hub, dir, keys } = &mut *core;
        if !conn.is_autocommit() {
            cache.invalidate();
            control(conn, "ROLLBACK")?;
        }
        control(conn, "BEGIN IMMEDIATE")?;
        let mut tx = Tx {
            conn,
            cache,
            actor,
            dir,
            keys,
            now: Timestamp::now(),
            publish: hub.has_subscribers(),
            changes: Vec::new(),
        };
        let result = catch_unwind(AssertUnwindSafe(|| f(&mut tx)))
            .unwrap_or_else(|_| Err(Error::Internal("the write closure panicked; its writes were rolled back".into())));
        let changes = std::mem::take(&mut tx.changes);
        let tx_publish = tx.publish;
        let outcome = match result {
            Ok(value) if !commit => Err(Ok(value)),
            Ok(value) => match control(conn, "COMMIT") {
                Ok(()) => Ok(value),
                Err(e) => Err(Err(Error::CommitFailed(e.to_string()))),
            },
            Err(e) => Err(Err(e)),
        };
        match outcome {
            Ok(value) => {
                published(hub, tx_publish, &changes);
                Ok(value)
            }
            // Rolled back: a failure, or a dry run's result.
            Err(answer) => {
                cache.invalidate();
                if let Err(rollback) = control(conn, "ROLLBACK") {
                    tracing::error!(error = %rollback, "rolling back an exclusive write failed");
                }
                answer
            }
        }
    }

    /// How many groups and requests this writer has committed (or failed) so far.
    pub(crate) fn stats(&self) -> WriteStats {
        WriteStats {
            groups: self.shared.stats.groups.load(Ordering::Relaxed),
            requests: self.shared.stats.requests.load(Ordering::Relaxed),
        }
    }

    /// Refuses new writes, lets the queued ones commit, and checkpoints the WAL into
    /// `store.db` so the file on its own is complete (readers may keep part of the WAL alive,
    /// which is harmless).
    pub(crate) fn shutdown(&self) -> Result<()> {
        let mut queue = lock(&self.shared.queue);
        queue.closed = true;
        self.shared.arrived.notify_all();
        while queue.leading || !queue.jobs.is_empty() {
            if !queue.leading {
                queue.leading = true;
                drop(queue);
                self.lead();
                queue = lock(&self.shared.queue);
                continue;
            }
            queue = self.shared.idle.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
        drop(queue);
        let core = lock(&self.shared.core);
        // Statistics for the query planner, as SQLite advises when closing a connection.
        // They are exact (no sampling limit): sampled statistics misjudged a 3-valued status
        // column as selective and made sorted first pages scan 1/3 of a collection.
        // `optimize` only re-analyzes tables whose size changed a lot since last time.
        core.conn.execute_batch("PRAGMA analysis_limit = 0; PRAGMA optimize = 0x10002;")?;
        core.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

#[derive(Default)]
struct WriteCounters {
    groups: AtomicU64,
    requests: AtomicU64,
}

/// Counters of the write path since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct WriteStats {
    /// Transactions committed (or rolled back) by group commit.
    pub groups: u64,
    /// Write requests they carried; `requests / groups` is the mean group size.
    pub requests: u64,
}

/// What the layers above cache between writes (the collections' schemas, the next seq, the
/// compression policies…), one value per type. Cleared whenever a savepoint or commit rolls
/// back, so nothing cached describes a schema or setting that did not commit.
#[derive(Default)]
pub(crate) struct TxCache {
    items: HashMap<TypeId, Box<dyn Any + Send>>,
}

impl TxCache {
    /// The cached value of type `T`, made with `T::default()` the first time.
    pub(crate) fn get<T: Default + Send + 'static>(&mut self) -> &mut T {
        self.items
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()))
            .downcast_mut::<T>()
            .expect("a cache entry is stored under its own type")
    }

    /// Forgets everything.
    pub(crate) fn invalidate(&mut self) {
        self.items.clear();
    }
}

/// A write transaction: the handle a write closure receives.
///
/// Everything done through one `Tx` commits together or not at all (CORE-3). It runs on the
/// leader's thread inside a group commit, so keep closures short: other writers wait for the
/// group to finish, and a closure must not call its store's write methods (it would wait for
/// itself).
pub struct Tx<'a> {
    pub(crate) conn: &'a Connection,
    pub(crate) cache: &'a mut TxCache,
    pub(crate) actor: &'a str,
    pub(crate) dir: &'a Path,
    /// The store handle's keys, for sealing and opening encrypted fields.
    pub(crate) keys: &'a Keyring,
    pub(crate) now: Timestamp,
    /// Whether anyone subscribes; if not, committed changes are not materialised.
    pub(crate) publish: bool,
    pub(crate) changes: Vec<Change>,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("actor", &self.actor).field("changes", &self.changes.len()).finish()
    }
}

impl Tx<'_> {
    /// The actor recorded for this transaction's changes.
    pub fn actor(&self) -> &str {
        self.actor
    }

    /// Runs `f` in a savepoint of its own: when it fails, its writes are undone and its
    /// error returned inside `Ok`, and the transaction goes on (for loads that skip a bad
    /// record and keep the rest). The outer `Err` is SQLite failing to take or undo the
    /// savepoint.
    pub(crate) fn attempt<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<Result<T>> {
        let mark = self.changes.len();
        control(self.conn, "SAVEPOINT cairn_attempt")?;
        match f(self) {
            Ok(value) => {
                control(self.conn, "RELEASE cairn_attempt")?;
                Ok(Ok(value))
            }
            Err(e) => {
                control(self.conn, "ROLLBACK TO cairn_attempt")?;
                control(self.conn, "RELEASE cairn_attempt")?;
                self.cache.invalidate();
                self.changes.truncate(mark);
                Ok(Err(e))
            }
        }
    }
}

trait Job: Send {
    /// Runs the request; returns false when it failed and its savepoint must roll back.
    fn run(&mut self, tx: &mut Tx<'_>) -> bool;
    /// Fails the request before it ran.
    fn abort(&mut self, error: Error);
    fn actor(&self) -> &str;
    /// Hands leadership to the request's caller.
    fn promote(&self);
    /// Answers the caller once the group's fate is known.
    fn complete(self: Box<Self>, commit: std::result::Result<(), String>);
}

struct TypedJob<T, F> {
    f: Option<F>,
    actor: Arc<str>,
    out: Option<Result<T>>,
    reply: mpsc::Sender<Signal<T>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
{
    fn run(&mut self, tx: &mut Tx<'_>) -> bool {
        let Some(f) = self.f.take() else { return false };
        let result = match catch_unwind(AssertUnwindSafe(|| f(tx))) {
            Ok(result) => result,
            Err(_) => Err(Error::Internal("the write closure panicked; its writes were rolled back".into())),
        };
        let ok = result.is_ok();
        self.out = Some(result);
        ok
    }

    fn abort(&mut self, error: Error) {
        self.f = None;
        self.out = Some(Err(error));
    }

    fn actor(&self) -> &str {
        &self.actor
    }

    fn promote(&self) {
        // A caller that is gone cannot lead; nothing waits on it either (it never is: the
        // caller blocks until its request is answered).
        let _ = self.reply.send(Signal::Lead);
    }

    fn complete(self: Box<Self>, commit: std::result::Result<(), String>) {
        let answer = match (self.out, commit) {
            (Some(Ok(_)), Err(msg)) => Err(Error::CommitFailed(msg)),
            (Some(out), _) => out,
            (None, Err(msg)) => Err(Error::CommitFailed(msg)),
            (None, Ok(())) => Err(Error::WriterStopped),
        };
        // The caller may have given up waiting; that is not the writer's problem.
        let _ = self.reply.send(Signal::Done(answer));
    }
}

/// Runs a transaction-control statement through the statement cache.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn commit_group(
    conn: &Connection,
    cache: &mut TxCache,
    hub: &Hub,
    dir: &Path,
    keys: &Keyring,
    mut batch: Vec<Box<dyn Job>>,
) {
    let fail_all = |batch: Vec<Box<dyn Job>>, msg: String| {
        for job in batch {
            job.complete(Err(msg.clone()));
        }
    };
    // A transaction left open by an earlier failure (a failed rollback, a panic) would make
    // every BEGIN fail: roll it back. Nothing in it was acknowledged.
    if !conn.is_autocommit() {
        cache.invalidate();
        if let Err(e) = control(conn, "ROLLBACK") {
            return fail_all(batch, format!("cannot roll back an unfinished transaction: {e}"));
        }
    }
    if let Err(e) = control(conn, "BEGIN IMMEDIATE") {
        return fail_all(batch, e.to_string());
    }
    let now = Timestamp::now();
    let publish = hub.has_subscribers();
    // A lone request needs no savepoint: if it fails, the whole transaction rolls back and
    // nobody else is in it.
    let isolate = batch.len() > 1;
    let mut committed = Vec::new();
    // Set when the group cannot be committed safely: a failed request's writes could not be
    // undone, or a successful one's savepoint could not be released.
    let mut broken: Option<String> = None;
    for job in &mut batch {
        if isolate {
            if let Err(e) = control(conn, "SAVEPOINT cairn_job") {
                job.abort(e.into());
                continue;
            }
        }
        let actor = job.actor().to_string();
        let mut tx = Tx { conn, cache, actor: &actor, dir, keys, now, publish, changes: Vec::new() };
        let ok = job.run(&mut tx);
        let changes = std::mem::take(&mut tx.changes);
        if ok {
            if isolate {
                if let Err(e) = control(conn, "RELEASE cairn_job") {
                    broken = Some(format!("cannot release a savepoint: {e}"));
                    break;
                }
            }
            committed.extend(changes);
            continue;
        }
        cache.invalidate();
        if !isolate {
            // The lone request failed: roll everything back and answer with its own error. If
            // the rollback fails, the next group rolls back the leftover transaction.
            if let Err(e) = control(conn, "ROLLBACK") {
                tracing::error!(error = %e, "rolling back a failed write failed");
            }
            for job in batch {
                job.complete(Ok(()));
            }
            return;
        }
        if let Err(e) = control(conn, "ROLLBACK TO cairn_job").and_then(|()| control(conn, "RELEASE cairn_job")) {
            broken = Some(format!("cannot undo a failed write: {e}"));
            break;
        }
    }
    let outcome = match broken {
        Some(msg) => Err(msg),
        None => control(conn, "COMMIT").map_err(|e| e.to_string()),
    };
    match outcome {
        Ok(()) => {
            published(hub, publish, &committed);
            for job in batch {
                job.complete(Ok(()));
            }
        }
        Err(msg) => {
            cache.invalidate();
            if let Err(e) = control(conn, "ROLLBACK") {
                tracing::error!(error = %e, "rolling back a failed group failed");
            }
            tracing::error!(error = %msg, "group commit failed; nothing of it was written");
            fail_all(batch, msg);
        }
    }
}

/// After a commit: the group's changes to the subscribers — or, when the group began with no
/// one listening and so built none, word to whoever registered since that they must read
/// the log.
fn published(hub: &crate::engine::hub::Hub, built: bool, changes: &[crate::engine::change::Change]) {
    if built {
        hub.publish(changes);
    } else if hub.has_subscribers() {
        hub.lapse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::layout::DB_FILE;
    use crate::{CollectionSchema, Store, StoreOptions};
    use serde_json::json;

    type Reply = mpsc::Receiver<Signal<()>>;

    fn job<F>(f: F) -> (Box<dyn Job>, Reply)
    where
        F: FnOnce(&mut Tx<'_>) -> Result<()> + Send + 'static,
    {
        let (reply, answer) = mpsc::channel();
        (Box::new(TypedJob { f: Some(f), actor: Arc::from("test"), out: None, reply }), answer)
    }

    fn answer(rx: &Reply) -> Result<()> {
        match rx.try_recv().expect("answered") {
            Signal::Done(result) => result,
            Signal::Lead => panic!("unexpected promotion"),
        }
    }

    #[test]
    fn a_failed_commit_fails_the_whole_group_and_writes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("s");
        let store = Store::open(&dir, StoreOptions::default()).expect("open");
        let schema = r#"{"name": "notes", "fields": [{"name": "title", "type": "text"}]}"#;
        store.create_collection(CollectionSchema::from_json(schema, "s").expect("schema")).expect("notes");
        store.close().expect("close");

        let conn = crate::engine::store::open_write_connection(&dir, &dir.join(DB_FILE)).expect("connection");
        conn.execute_batch(
            "CREATE TABLE parent (y INTEGER PRIMARY KEY);
             CREATE TABLE child (x INTEGER REFERENCES parent (y) DEFERRABLE INITIALLY DEFERRED);",
        )
        .expect("tables");
        // A transaction someone left open: the group must roll it back, not commit it.
        conn.execute_batch("BEGIN; INSERT INTO parent VALUES (42);").expect("leftover");

        let (good, good_answer) = job(|tx| tx.create("notes", Some("a"), json!({"title": "fine"})).map(drop));
        // Violates the deferred foreign key, which only COMMIT checks.
        let (bad, bad_answer) = job(|tx| tx.conn.execute_batch("INSERT INTO child VALUES (7)").map_err(Error::from));
        let hub = Hub::default();
        let mut state = TxCache::default();
        commit_group(&conn, &mut state, &hub, &dir, &Keyring::default(), vec![good, bad]);

        for rx in [&good_answer, &bad_answer] {
            assert!(matches!(answer(rx), Err(Error::CommitFailed(msg)) if msg.contains("FOREIGN KEY")));
        }
        assert!(conn.is_autocommit(), "nothing is left open");
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).expect("count");
        assert_eq!(count("SELECT count(*) FROM c_notes"), 0);
        assert_eq!(count("SELECT count(*) FROM child"), 0);
        assert_eq!(count("SELECT count(*) FROM parent"), 0, "the leftover transaction was rolled back");
        assert_eq!(count("SELECT count(*) FROM cairn_changes WHERE record_id = 'a'"), 0);

        // The next group works normally.
        let (next, next_answer) = job(|tx| tx.create("notes", Some("b"), json!({"title": "ok"})).map(drop));
        commit_group(&conn, &mut state, &hub, &dir, &Keyring::default(), vec![next]);
        answer(&next_answer).expect("committed");
        assert_eq!(count("SELECT count(*) FROM c_notes"), 1);
    }
}
