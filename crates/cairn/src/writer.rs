//! The write path: one thread owns the write connection and commits in groups.
//!
//! Callers hand the writer a closure and wait. The writer takes every request that is queued
//! (up to `max_batch`), runs each inside its own SAVEPOINT of one `BEGIN IMMEDIATE`
//! transaction, and commits once: one fsync for the whole group. A request that fails rolls
//! back to its savepoint and fails alone; the others still commit. Nobody is told "done"
//! before the COMMIT returned, and with `synchronous=FULL` that means the WAL is on disk.
//! Committed changes are published to subscribers in seq order before callers are answered.
//!
//! Alternative considered: one transaction per caller on a shared connection behind a mutex.
//! It costs one fsync per write, which is what group commit exists to avoid (P2).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::changes::{Change, Hub};
use crate::collection::Collection;
use crate::error::{Error, Result};
use crate::timestamp::Timestamp;

/// Handle to the writer thread.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: mpsc::Sender<Msg>,
    thread: JoinHandle<Result<()>>,
}

enum Msg {
    Job(Box<dyn Job>),
    Shutdown,
}

/// A write request waiting for its group to commit.
pub(crate) struct Pending<T> {
    reply: mpsc::Receiver<Result<T>>,
}

impl<T> Pending<T> {
    pub(crate) fn wait(self) -> Result<T> {
        self.reply.recv().unwrap_or(Err(Error::WriterStopped))
    }
}

impl Writer {
    pub(crate) fn spawn(conn: Connection, hub: Arc<Hub>, dir: PathBuf, max_batch: usize) -> Result<Self> {
        let (queue, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("cairn-writer".into())
            .spawn(move || writer_loop(conn, rx, hub, dir, max_batch))
            .map_err(|e| Error::io("start writer thread for", "store", e))?;
        Ok(Writer { queue, thread })
    }

    pub(crate) fn submit<T, F>(&self, actor: Arc<str>, f: F) -> Result<Pending<T>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = mpsc::sync_channel(1);
        let job = TypedJob { f: Some(f), actor, out: None, reply };
        self.queue.send(Msg::Job(Box::new(job))).map_err(|_| Error::WriterStopped)?;
        Ok(Pending { reply: rx })
    }

    /// Finishes the queued writes, checkpoints the WAL and stops the thread.
    pub(crate) fn shutdown(self) -> Result<()> {
        let _ = self.queue.send(Msg::Shutdown);
        self.thread.join().unwrap_or(Err(Error::WriterStopped))
    }
}

/// The writer's caches. Cleared whenever a savepoint or commit rolls back, so they never
/// describe a schema or setting that did not commit.
#[derive(Default)]
pub(crate) struct WriterState {
    pub(crate) collections: HashMap<String, Arc<Collection>>,
    pub(crate) max_body_bytes: Option<u64>,
}

impl WriterState {
    pub(crate) fn invalidate(&mut self) {
        self.collections.clear();
        self.max_body_bytes = None;
    }
}

/// A write transaction: the handle a write closure receives.
///
/// Everything done through one `Tx` commits together or not at all (CORE-3). It runs on the
/// writer thread, so keep closures short: other writers wait for the group to finish.
pub struct Tx<'a> {
    pub(crate) conn: &'a Connection,
    pub(crate) state: &'a mut WriterState,
    pub(crate) actor: &'a str,
    pub(crate) dir: &'a Path,
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
}

trait Job: Send {
    /// Runs the request; returns false when it failed and its savepoint must roll back.
    fn run(&mut self, tx: &mut Tx<'_>) -> bool;
    /// Fails the request before it ran.
    fn abort(&mut self, error: Error);
    fn actor(&self) -> &str;
    /// Answers the caller once the group's fate is known.
    fn complete(self: Box<Self>, commit: std::result::Result<(), String>);
}

struct TypedJob<T, F> {
    f: Option<F>,
    actor: Arc<str>,
    out: Option<Result<T>>,
    reply: mpsc::SyncSender<Result<T>>,
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
            Err(_) => Err(Error::NotAllowed("the write closure panicked; its writes were rolled back".into())),
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

    fn complete(self: Box<Self>, commit: std::result::Result<(), String>) {
        let answer = match (self.out, commit) {
            (Some(Ok(_)), Err(msg)) => Err(Error::CommitFailed(msg)),
            (Some(out), _) => out,
            (None, _) => Err(Error::WriterStopped),
        };
        // The caller may have given up waiting; that is not the writer's problem.
        let _ = self.reply.send(answer);
    }
}

/// Longest a group waits for callers who are likely to write again (see `writer_loop`).
const MAX_GATHER: Duration = Duration::from_micros(500);

fn writer_loop(
    conn: Connection,
    queue: mpsc::Receiver<Msg>,
    hub: Arc<Hub>,
    dir: PathBuf,
    max_batch: usize,
) -> Result<()> {
    let mut state = WriterState::default();
    let mut stopping = false;
    // Callers answered by the last group usually write again at once, but on a busy machine
    // they need a moment to be scheduled. Waiting briefly for as many as the last group had
    // keeps groups large under concurrency (Postgres' commit_delay idea, made adaptive); a
    // lone writer had a group of one, so it never waits.
    let mut expected = 1usize;
    while !stopping {
        let first = match queue.recv() {
            Ok(Msg::Job(job)) => job,
            Ok(Msg::Shutdown) | Err(_) => break,
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + MAX_GATHER;
        while batch.len() < max_batch {
            let next = if batch.len() < expected {
                queue.recv_timeout(deadline.saturating_duration_since(Instant::now())).map_err(drop)
            } else {
                queue.try_recv().map_err(drop)
            };
            match next {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Shutdown) => {
                    stopping = true;
                    break;
                }
                Err(()) => break,
            }
        }
        expected = batch.len();
        commit_group(&conn, &mut state, &hub, &dir, batch);
    }
    // Fold the WAL into store.db so the file on its own is complete; readers may keep part
    // of it alive, which is harmless.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// Runs a transaction-control statement through the statement cache.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn commit_group(conn: &Connection, state: &mut WriterState, hub: &Hub, dir: &Path, mut batch: Vec<Box<dyn Job>>) {
    if let Err(e) = control(conn, "BEGIN IMMEDIATE") {
        let msg = e.to_string();
        for job in batch {
            job.complete(Err(msg.clone()));
        }
        return;
    }
    let now = Timestamp::now();
    let publish = hub.has_subscribers();
    let mut committed = Vec::new();
    for job in &mut batch {
        if let Err(e) = control(conn, "SAVEPOINT cairn_job") {
            job.abort(e.into());
            continue;
        }
        let actor = job.actor().to_string();
        let mut tx = Tx { conn, state, actor: &actor, dir, now, publish, changes: Vec::new() };
        let ok = job.run(&mut tx);
        let changes = std::mem::take(&mut tx.changes);
        if ok {
            match control(conn, "RELEASE cairn_job") {
                Ok(()) => committed.extend(changes),
                Err(e) => job.abort(e.into()),
            }
        } else {
            state.invalidate();
            if let Err(e) = control(conn, "ROLLBACK TO cairn_job").and_then(|()| control(conn, "RELEASE cairn_job")) {
                tracing::error!(error = %e, "rolling back a failed write failed");
            }
        }
    }
    match control(conn, "COMMIT") {
        Ok(()) => {
            hub.publish(&committed);
            for job in batch {
                job.complete(Ok(()));
            }
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            state.invalidate();
            let msg = e.to_string();
            tracing::error!(error = %msg, "group commit failed");
            for job in batch {
                job.complete(Err(msg.clone()));
            }
        }
    }
}
