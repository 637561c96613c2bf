//! The job queue in the store (JOB-1): enqueue (also inside a record write's transaction),
//! claim, lease heartbeats, fenced completion, failure and progress, the reaper of expired
//! leases, and the admin's cancel, retry, restart, delete and prune.
//!
//! Every write here is one transaction of the store's write path, which begins with
//! `BEGIN IMMEDIATE`; a claim takes each job with one `UPDATE … RETURNING` in priority,
//! run-at, id order. A worker's writes name the [`Lease`] it claimed and change nothing
//! unless the job is still running under that very attempt, so a worker that lost its lease
//! (the reaper gave the job to another) gets [`Error::LeaseLost`] and cannot record a second
//! completion.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::canonical::canonical_json;
use crate::engine::hash::{hex, sha256};
use crate::engine::store::Store;
use crate::engine::timestamp::Timestamp;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};
use crate::jobs::backoff::Backoff;
use crate::jobs::worker::Failure;
use crate::jobs::{AttemptError, Clock, Job, JobState, Lease, NewJob, SystemClock};

const JOB_COLS: &str = "id, kind, queue, args, state, priority, run_at, attempt, attempt_base, max_attempts, tags, \
     unique_key, lease_owner, lease_until, cancel_requested, progress, progress_message, result, errors, \
     created_by, created_at, attempted_at, finished_at";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let json = |i: usize| -> rusqlite::Result<Value> {
        let text: String = row.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    let state: String = row.get(4)?;
    let attempt: i64 = row.get(7)?;
    let base: i64 = row.get(8)?;
    let result: Option<String> = row.get(17)?;
    let errors: String = row.get(18)?;
    Ok(Job {
        id: row.get(0)?,
        kind: row.get(1)?,
        queue: row.get(2)?,
        args: json(3)?,
        // The table's CHECK allows only the known states.
        state: JobState::parse(&state).unwrap_or(JobState::Discarded),
        priority: row.get(5)?,
        run_at: Timestamp(row.get(6)?),
        attempt,
        attempts_used: attempt - base,
        max_attempts: row.get(9)?,
        tags: serde_json::from_value(json(10)?).unwrap_or_default(),
        unique_key: row.get(11)?,
        lease_owner: row.get(12)?,
        lease_until: row.get::<_, Option<i64>>(13)?.map(Timestamp),
        cancel_requested: row.get(14)?,
        progress: row.get(15)?,
        progress_message: row.get(16)?,
        result: result.and_then(|r| serde_json::from_str(&r).ok()),
        errors: serde_json::from_str(&errors).unwrap_or_default(),
        created_by: row.get(19)?,
        created_at: Timestamp(row.get(20)?),
        attempted_at: row.get::<_, Option<i64>>(21)?.map(Timestamp),
        finished_at: row.get::<_, Option<i64>>(22)?.map(Timestamp),
    })
}

pub(crate) fn job_by_id(conn: &Connection, id: i64) -> Result<Job> {
    conn.prepare_cached(&format!("SELECT {JOB_COLS} FROM cairn_jobs WHERE id = ?1"))?
        .query_row([id], job_from_row)
        .optional()?
        .ok_or(Error::JobNotFound { id })
}

/// The jobs a claim may take (?2 now, ?4 the kinds and ?5 the queues, as JSON arrays): due,
/// of a kind and queue asked for, in a queue neither paused nor at its limit.
const CLAIMABLE: &str = "j.state IN ('available', 'scheduled', 'retryable') AND j.run_at <= ?2
    AND j.kind IN (SELECT value FROM json_each(?4))
    AND (?5 IS NULL OR j.queue IN (SELECT value FROM json_each(?5)))
    AND NOT EXISTS (
        SELECT 1 FROM cairn_job_queues q WHERE q.name = j.queue AND (q.paused = 1
            OR q.max_running <= (SELECT count(*) FROM cairn_jobs r WHERE r.queue = j.queue AND r.state = 'running')))";

/// What enqueueing did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Enqueued {
    pub job: Job,
    /// True when a unique job with the same key was already there; `job` is that one.
    pub duplicate: bool,
}

/// Which jobs a worker may claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimFilter {
    /// The kinds it has handlers for.
    pub kinds: Vec<String>,
    /// The queues it serves; all when `None`.
    pub queues: Option<Vec<String>>,
}

impl ClaimFilter {
    pub fn new(kinds: &[&str]) -> Self {
        ClaimFilter { kinds: kinds.iter().map(|k| k.to_string()).collect(), queues: None }
    }

    pub fn queues(mut self, queues: &[&str]) -> Self {
        self.queues = Some(queues.iter().map(|q| q.to_string()).collect());
        self
    }
}

/// What a heartbeat or a progress report learns about its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Beat {
    /// Someone asked for the job to be cancelled: stop, then report [`Queue::cancelled`].
    pub cancel_requested: bool,
    pub lease_until: Timestamp,
}

/// Which jobs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    /// Only jobs with a smaller id (the next page of a newest-first list).
    pub before_id: Option<i64>,
    /// At most this many (100 when 0).
    pub limit: usize,
}

/// How long finished jobs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Completed jobs, in seconds.
    pub completed_seconds: u64,
    /// Cancelled and dead jobs (kept longer: their errors are what someone will look for).
    pub failed_seconds: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { completed_seconds: 7 * 86_400, failed_seconds: 30 * 86_400 }
    }
}

/// One queue's jobs by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct QueueStats {
    pub queue: String,
    pub available: u64,
    pub scheduled: u64,
    pub running: u64,
    pub retryable: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub discarded: u64,
    /// The queue's limit on running jobs across all workers, if it has one.
    pub max_running: Option<u32>,
    pub paused: bool,
}

/// The store's job queue, as seen through one clock and one backoff policy.
#[derive(Debug, Clone)]
pub struct Queue {
    store: Store,
    clock: Arc<dyn Clock>,
    backoff: Backoff,
}

impl Store {
    /// The job queue, on the system clock with the default backoff.
    pub fn queue(&self) -> Queue {
        Queue { store: self.clone(), clock: Arc::new(SystemClock), backoff: Backoff::default() }
    }
}

/// The unique key of `job` enqueued at `now`, if it is unique.
fn unique_key(job: &NewJob, now: Timestamp) -> Option<String> {
    let unique = job.unique.as_ref()?;
    let period = unique.period_seconds.map(|s| {
        let ms = s.saturating_mul(1000).min(i64::MAX as u64) as i64;
        now.0.div_euclid(ms)
    });
    let basis = serde_json::json!({
        "kind": job.kind,
        "queue": job.queue,
        "args": if unique.by_args { job.args.clone() } else { Value::Null },
        "period": period,
    });
    Some(hex(&sha256(&canonical_json(&basis))))
}

impl Tx<'_> {
    /// Enqueues a job in this transaction: it exists if and only if the transaction's other
    /// writes commit. A unique job whose key another job holds is not added; that job is
    /// returned with `duplicate` set.
    pub fn enqueue(&mut self, job: &NewJob) -> Result<Enqueued> {
        enqueue_at(self, job, self.now)
    }
}

fn enqueue_at(tx: &mut Tx<'_>, job: &NewJob, now: Timestamp) -> Result<Enqueued> {
    job.validate()?;
    let key = unique_key(job, now);
    let run_at = job.run_at.unwrap_or(now);
    let state = if run_at > now { JobState::Scheduled } else { JobState::Available };
    let args = String::from_utf8(canonical_json(&job.args)).map_err(|e| Error::Internal(e.to_string()))?;
    let inserted = tx
        .conn
        .prepare_cached(&format!(
            "INSERT INTO cairn_jobs (kind, queue, args, state, priority, run_at, max_attempts, tags, unique_key,
                 unique_basis, unique_completed, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12)
             ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
             RETURNING {JOB_COLS}"
        ))?
        .query_row(
            params![
                job.kind,
                job.queue,
                args,
                state.as_str(),
                job.priority,
                run_at.0,
                job.max_attempts,
                serde_json::to_string(&job.tags).unwrap_or_else(|_| "[]".into()),
                key,
                job.unique.as_ref().is_some_and(|u| u.period_seconds.is_some()),
                tx.actor,
                now.0,
            ],
            job_from_row,
        )
        .optional()?;
    if let Some(job) = inserted {
        return Ok(Enqueued { job, duplicate: false });
    }
    let holder = tx
        .conn
        .prepare_cached(&format!("SELECT {JOB_COLS} FROM cairn_jobs WHERE unique_key = ?1"))?
        .query_row([&key], job_from_row)?;
    Ok(Enqueued { job: holder, duplicate: true })
}

/// The state a job that leaves the running state (or waits) takes its unique key into.
const DROP_KEY: &str = "unique_key = CASE WHEN unique_completed = 1 THEN unique_key ELSE NULL END";

impl Queue {
    /// This queue on another clock (tests move a [`crate::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The queue's clock's time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Enqueues a job on its own (see [`Tx::enqueue`] to enqueue with other writes).
    pub fn enqueue(&self, job: NewJob) -> Result<Enqueued> {
        let now = self.now();
        let enqueued = self.store.write(move |tx| enqueue_at(tx, &job, now))?;
        if !enqueued.duplicate {
            self.store.jobs_changed([&enqueued.job]);
        }
        Ok(enqueued)
    }

    /// Claims up to `n` jobs for `worker`, each under a lease of `lease`: in one
    /// transaction, one statement a job, highest priority (lowest number) first, then
    /// earliest run-at, then oldest. A queue's `max_running` holds across every worker.
    pub fn claim(&self, worker: &str, filter: &ClaimFilter, n: usize, lease: Duration) -> Result<Vec<Job>> {
        if n == 0 || filter.kinds.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let kinds = serde_json::to_string(&filter.kinds).map_err(|e| Error::Internal(e.to_string()))?;
        let queues = filter.queues.as_ref().map(|q| serde_json::to_string(q).unwrap_or_else(|_| "[]".into()));
        let worker = worker.to_string();
        let until = now.0.saturating_add(lease.as_millis() as i64);
        let claimed = self.store.write(move |tx| {
            let mut stmt = tx.conn.prepare_cached(&format!(
                "UPDATE cairn_jobs SET state = 'running', attempt = attempt + 1, lease_owner = ?1, lease_until = ?3,
                     attempted_at = ?2, progress = NULL, progress_message = NULL
                 WHERE id = (SELECT j.id FROM cairn_jobs j WHERE {CLAIMABLE} ORDER BY j.priority, j.run_at, j.id LIMIT 1)
                 RETURNING {JOB_COLS}"
            ))?;
            let mut claimed = Vec::new();
            while claimed.len() < n {
                match stmt.query_row(params![worker, now.0, until, kinds, queues], job_from_row).optional()? {
                    Some(job) => claimed.push(job),
                    None => break,
                }
            }
            Ok(claimed)
        })?;
        self.store.jobs_changed(&claimed);
        Ok(claimed)
    }

    /// How many jobs `filter` could claim now (0: a worker with it has nothing to do).
    pub fn claimable(&self, filter: &ClaimFilter) -> Result<u64> {
        if filter.kinds.is_empty() {
            return Ok(0);
        }
        let kinds = serde_json::to_string(&filter.kinds).map_err(|e| Error::Internal(e.to_string()))?;
        let queues = filter.queues.as_ref().map(|q| serde_json::to_string(q).unwrap_or_else(|_| "[]".into()));
        let conn = self.store.reader()?;
        let mut stmt = conn.prepare_cached(&format!("SELECT count(*) FROM cairn_jobs j WHERE {CLAIMABLE}"))?;
        // ?1 and ?3 are the claim's worker and lease: unused here, but numbered alike.
        let n: i64 = stmt.query_row(params![Option::<String>::None, self.now().0, 0, kinds, queues], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Extends a lease to `extend` from now. Tells the worker whether a cancel was asked.
    pub fn heartbeat(&self, lease: Lease, extend: Duration) -> Result<Beat> {
        let until = self.now().0.saturating_add(extend.as_millis() as i64);
        self.store.write(move |tx| {
            tx.conn
                .prepare_cached(
                    "UPDATE cairn_jobs SET lease_until = max(lease_until, ?3)
                     WHERE id = ?1 AND attempt = ?2 AND state = 'running' RETURNING cancel_requested, lease_until",
                )?
                .query_row(params![lease.id, lease.attempt, until], |r| {
                    Ok(Beat { cancel_requested: r.get(0)?, lease_until: Timestamp(r.get(1)?) })
                })
                .optional()?
                .ok_or(Error::LeaseLost { id: lease.id, attempt: lease.attempt })
        })
    }

    /// Records how far the attempt holding `lease` is: a percentage and a message.
    pub fn progress(&self, lease: Lease, percent: f64, message: Option<&str>) -> Result<Beat> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(Error::InvalidInput {
                source_name: format!("progress of job {}", lease.id),
                reason: format!("{percent} is not a percentage between 0 and 100"),
            });
        }
        let message = message.map(|m| m.chars().take(1000).collect::<String>());
        let job = self.announced(self.store.write(move |tx| {
            tx.conn
                .prepare_cached(&format!(
                    "UPDATE cairn_jobs SET progress = ?3, progress_message = ?4
                     WHERE id = ?1 AND attempt = ?2 AND state = 'running' RETURNING {JOB_COLS}"
                ))?
                .query_row(params![lease.id, lease.attempt, percent, message], job_from_row)
                .optional()?
                .ok_or(Error::LeaseLost { id: lease.id, attempt: lease.attempt })
        }))?;
        Ok(Beat { cancel_requested: job.cancel_requested, lease_until: job.lease_until.unwrap_or(job.run_at) })
    }

    /// Records the attempt holding `lease` as the job's completion, with its result.
    pub fn complete(&self, lease: Lease, result: Option<Value>) -> Result<Job> {
        self.complete_with(lease, result, |_| Ok(()))
    }

    /// Completes like [`Queue::complete`], with `writes` in the same transaction: the
    /// records a job makes are written if and only if its completion is (so a worker that lost
    /// its lease writes nothing, and a job's effect is recorded once).
    pub fn complete_with<F>(&self, lease: Lease, result: Option<Value>, writes: F) -> Result<Job>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<()> + Send + 'static,
    {
        let now = self.now();
        let result = result.map(|r| String::from_utf8_lossy(&canonical_json(&r)).into_owned());
        self.announced(self.store.write(move |tx| {
            let job = tx
                .conn
                .prepare_cached(&format!(
                    "UPDATE cairn_jobs SET state = 'completed', result = ?3, finished_at = ?4, lease_owner = NULL,
                         lease_until = NULL, progress = CASE WHEN progress IS NULL THEN NULL ELSE 100 END, {DROP_KEY}
                     WHERE id = ?1 AND attempt = ?2 AND state = 'running' RETURNING {JOB_COLS}"
                ))?
                .query_row(params![lease.id, lease.attempt, result, now.0], job_from_row)
                .optional()?
                .ok_or(Error::LeaseLost { id: lease.id, attempt: lease.attempt })?;
            writes(tx)?;
            Ok(job)
        }))
    }

    /// Records a failed attempt: the job waits for its backoff and runs again, or, when
    /// `retry` is false or it has used all its attempts, is dead (discarded) with every
    /// error kept. A job whose cancel was asked is cancelled instead.
    pub fn fail(&self, lease: Lease, error: &str, retry: bool) -> Result<Job> {
        self.fail_with(lease, &Failure { message: error.to_string(), retry, detail: None })
    }

    /// [`Queue::fail`] with what a handler returned, its detail kept with the error.
    pub fn fail_with(&self, lease: Lease, failure: &Failure) -> Result<Job> {
        let (now, backoff, failure) = (self.now(), self.backoff, failure.clone());
        self.announced(self.store.write(move |tx| settle_failure(tx.conn, lease, now, &failure, backoff)))
    }

    /// Records that the attempt holding `lease` stopped because it was cancelled.
    pub fn cancelled(&self, lease: Lease) -> Result<Job> {
        let now = self.now();
        self.announced(self.store.write(move |tx| {
            tx.conn
                .prepare_cached(&format!(
                    "UPDATE cairn_jobs SET state = 'cancelled', finished_at = ?3, lease_owner = NULL, lease_until = NULL,
                         unique_key = NULL
                     WHERE id = ?1 AND attempt = ?2 AND state = 'running' RETURNING {JOB_COLS}"
                ))?
                .query_row(params![lease.id, lease.attempt, now.0], job_from_row)
                .optional()?
                .ok_or(Error::LeaseLost { id: lease.id, attempt: lease.attempt })
        }))
    }

    /// Gives a job back without using up an attempt (a worker stopping before it finished
    /// it): it is available again at once.
    pub fn release(&self, lease: Lease) -> Result<Job> {
        let now = self.now();
        self.announced(self.store.write(move |tx| {
            tx.conn
                .prepare_cached(&format!(
                    "UPDATE cairn_jobs SET state = 'available', run_at = ?3, attempt_base = attempt_base + 1,
                         lease_owner = NULL, lease_until = NULL
                     WHERE id = ?1 AND attempt = ?2 AND state = 'running' RETURNING {JOB_COLS}"
                ))?
                .query_row(params![lease.id, lease.attempt, now.0], job_from_row)
                .optional()?
                .ok_or(Error::LeaseLost { id: lease.id, attempt: lease.attempt })
        }))
    }

    /// Returns every job whose lease expired (its worker died or hung) to the queue, as a
    /// failed attempt: retryable after its backoff, or dead when out of attempts. The
    /// worker that held it can no longer record anything for it. Returns the jobs moved.
    pub fn reap(&self) -> Result<Vec<Job>> {
        let (now, backoff) = (self.now(), self.backoff);
        let moved = self.store.write(move |tx| {
            let expired: Vec<(Lease, String)> = tx
                .conn
                .prepare_cached(
                    "SELECT id, attempt, lease_owner FROM cairn_jobs WHERE state = 'running' AND lease_until < ?1",
                )?
                .query_map([now.0], |r| Ok((Lease { id: r.get(0)?, attempt: r.get(1)? }, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut moved = Vec::with_capacity(expired.len());
            for (lease, owner) in expired {
                let error = format!("the lease of worker {owner} expired: it stopped or stopped heartbeating");
                moved.push(settle_failure(tx.conn, lease, now, &Failure::retry(error), backoff)?);
            }
            Ok(moved)
        })?;
        self.store.jobs_changed(&moved);
        Ok(moved)
    }

    /// The job with this id.
    pub fn get(&self, id: i64) -> Result<Job> {
        let conn = self.store.reader()?;
        job_by_id(&conn, id)
    }

    /// Jobs, newest first.
    pub fn list(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let limit = if filter.limit == 0 { 100 } else { filter.limit.min(10_000) };
        let conn = self.store.reader()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {JOB_COLS} FROM cairn_jobs
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR queue = ?2) AND (?3 IS NULL OR kind = ?3)
               AND (?4 IS NULL OR id < ?4)
             ORDER BY id DESC LIMIT ?5"
        ))?;
        let jobs = stmt
            .query_map(
                params![filter.state.map(|s| s.as_str()), filter.queue, filter.kind, filter.before_id, limit as i64],
                job_from_row,
            )?
            .collect::<rusqlite::Result<_>>()?;
        Ok(jobs)
    }

    /// Every queue that has jobs or a limit, with its jobs counted by state.
    pub fn stats(&self) -> Result<Vec<QueueStats>> {
        let conn = self.store.reader()?;
        let mut by_queue = std::collections::BTreeMap::<String, QueueStats>::new();
        let mut stmt = conn.prepare_cached("SELECT queue, state, count(*) FROM cairn_jobs GROUP BY queue, state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
        for row in rows {
            let (queue, state, n) = row?;
            let stats = by_queue.entry(queue.clone()).or_insert_with(|| QueueStats { queue, ..Default::default() });
            let n = n as u64;
            match JobState::parse(&state)? {
                JobState::Available => stats.available = n,
                JobState::Scheduled => stats.scheduled = n,
                JobState::Running => stats.running = n,
                JobState::Retryable => stats.retryable = n,
                JobState::Completed => stats.completed = n,
                JobState::Cancelled => stats.cancelled = n,
                JobState::Discarded => stats.discarded = n,
            }
        }
        let mut stmt = conn.prepare_cached("SELECT name, max_running, paused FROM cairn_job_queues")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<u32>>(1)?, r.get(2)?)))?;
        for row in rows {
            let (queue, max_running, paused) = row?;
            let stats = by_queue.entry(queue.clone()).or_insert_with(|| QueueStats { queue, ..Default::default() });
            stats.max_running = max_running;
            stats.paused = paused;
        }
        Ok(by_queue.into_values().collect())
    }

    /// Sets how many of a queue's jobs may run at once across every worker (`None`: no
    /// limit), and whether the queue is paused (nothing is claimed from it).
    pub fn configure_queue(&self, queue: &str, max_running: Option<u32>, paused: bool) -> Result<()> {
        NewJob::new("queue", Value::Null).queue(queue).validate()?;
        if max_running == Some(0) {
            return Err(Error::InvalidInput {
                source_name: format!("queue {queue}"),
                reason: "max_running must be at least 1 (pause the queue to run nothing)".into(),
            });
        }
        let queue = queue.to_string();
        self.store.write(move |tx| {
            tx.conn
                .prepare_cached(
                    "INSERT INTO cairn_job_queues (name, max_running, paused) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET max_running = excluded.max_running, paused = excluded.paused",
                )?
                .execute(params![queue, max_running, paused])?;
            tx.audit("queue.configure", &queue, "ok", &format!("max_running {max_running:?}, paused {paused}"))?;
            Ok(())
        })
    }

    /// Cancels a job: one that waits is cancelled at once; a running one is told (its next
    /// heartbeat learns it) and is cancelled when its worker stops, or when its lease
    /// expires. A finished job cannot be cancelled.
    pub fn cancel(&self, id: i64) -> Result<Job> {
        let now = self.now();
        self.admin(id, "job.cancel", move |tx, job| {
            match job.state {
                JobState::Running => {
                    tx.conn.execute("UPDATE cairn_jobs SET cancel_requested = 1 WHERE id = ?1", [id])?
                }
                state if state.is_finished() => return Err(finished(job, "cancelled")),
                _ => tx.conn.execute(
                    "UPDATE cairn_jobs SET state = 'cancelled', finished_at = ?2, unique_key = NULL WHERE id = ?1",
                    params![id, now.0],
                )?,
            };
            Ok(())
        })
    }

    /// Runs a waiting, failed, cancelled or dead job again now, keeping its errors; a dead
    /// one gets a fresh set of attempts.
    pub fn retry(&self, id: i64) -> Result<Job> {
        self.again(id, "job.retry", false)
    }

    /// Runs a job again from the start: as if newly enqueued (attempts, errors, progress and
    /// result cleared), whatever state it was in but running.
    pub fn restart(&self, id: i64) -> Result<Job> {
        self.again(id, "job.restart", true)
    }

    fn again(&self, id: i64, action: &'static str, fresh: bool) -> Result<Job> {
        let now = self.now();
        self.admin(id, action, move |tx, job| {
            match job.state {
                JobState::Running => {
                    return Err(Error::NotAllowed(format!("job {id} is running; cancel it first")));
                }
                JobState::Completed if !fresh => return Err(finished(job, "retried (restart it instead)")),
                _ => {}
            }
            let holder: Option<i64> = tx
                .conn
                .query_row(
                    "SELECT h.id FROM cairn_jobs j JOIN cairn_jobs h ON h.unique_key = j.unique_basis AND h.id != j.id
                     WHERE j.id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(holder) = holder {
                return Err(Error::NotAllowed(format!(
                    "job {holder} holds the same unique key; job {id} cannot run again"
                )));
            }
            let keep_attempts = !fresh && !job.state.is_finished();
            tx.conn.execute(
                "UPDATE cairn_jobs SET state = 'available', run_at = ?2, finished_at = NULL, cancel_requested = 0,
                     unique_key = unique_basis,
                     attempt_base = CASE WHEN ?3 THEN attempt_base ELSE attempt END,
                     errors = CASE WHEN ?4 THEN '[]' ELSE errors END,
                     result = CASE WHEN ?4 THEN NULL ELSE result END,
                     progress = CASE WHEN ?4 THEN NULL ELSE progress END,
                     progress_message = CASE WHEN ?4 THEN NULL ELSE progress_message END
                 WHERE id = ?1",
                params![id, now.0, keep_attempts, fresh],
            )?;
            Ok(())
        })
    }

    /// Deletes a job that is not running (cancel a running one first).
    pub fn delete(&self, id: i64) -> Result<Job> {
        let job = self.admin(id, "job.delete", move |tx, job| {
            if job.state == JobState::Running {
                return Err(Error::NotAllowed(format!("job {id} is running; cancel it first")));
            }
            tx.conn.execute("DELETE FROM cairn_jobs WHERE id = ?1", [id])?;
            Ok(())
        })?;
        self.store.job_deleted(id);
        Ok(job)
    }

    /// Deletes finished jobs older than the retention: completed ones after
    /// `completed_seconds`, cancelled and dead ones after `failed_seconds`. Returns how many.
    pub fn prune(&self, retention: &Retention) -> Result<u64> {
        let now = self.now().0;
        let secs = |s: u64| now.saturating_sub(s.saturating_mul(1000).min(i64::MAX as u64) as i64);
        let (completed, failed) = (secs(retention.completed_seconds), secs(retention.failed_seconds));
        self.store.write(move |tx| {
            let n = tx
                .conn
                .prepare_cached(
                    "DELETE FROM cairn_jobs WHERE (state = 'completed' AND finished_at < ?1)
                     OR (state IN ('cancelled', 'discarded') AND finished_at < ?2)",
                )?
                .execute(params![completed, failed])? as u64;
            if n > 0 {
                tx.audit("job.prune", "jobs", "ok", &format!("{n} finished jobs deleted"))?;
            }
            Ok(n)
        })
    }

    /// Runs an admin's change to one job in a transaction, audits it, and returns the job as
    /// it is afterwards (or as it was, once deleted).
    /// `result`, its job announced to the listeners when it is one.
    fn announced(&self, result: Result<Job>) -> Result<Job> {
        if let Ok(job) = &result {
            self.store.jobs_changed([job]);
        }
        result
    }

    fn admin<F>(&self, id: i64, action: &'static str, f: F) -> Result<Job>
    where
        F: FnOnce(&mut Tx<'_>, &Job) -> Result<()> + Send + 'static,
    {
        self.store
            .write(move |tx| {
                let before = job_by_id(tx.conn, id)?;
                f(tx, &before)?;
                tx.audit(action, &format!("job/{id}"), "ok", &format!("{} ({})", before.kind, before.state.as_str()))?;
                match job_by_id(tx.conn, id) {
                    Err(Error::JobNotFound { .. }) => Ok((before, false)),
                    other => other.map(|job| (job, true)),
                }
            })
            .map(|(job, exists)| {
                if exists {
                    self.store.jobs_changed([&job]);
                }
                job
            })
    }
}

fn finished(job: &Job, verb: &str) -> Error {
    Error::NotAllowed(format!("job {} is {} and cannot be {verb}", job.id, job.state.as_str()))
}

/// Ends the attempt holding `lease` as failed: retryable after a backoff, dead when out of
/// attempts (or `retry` is false), cancelled when a cancel was asked.
fn settle_failure(conn: &Connection, lease: Lease, now: Timestamp, failure: &Failure, backoff: Backoff) -> Result<Job> {
    let (used, max, cancel): (i64, i64, bool) = conn
        .prepare_cached(
            "SELECT attempt - attempt_base, max_attempts, cancel_requested FROM cairn_jobs
             WHERE id = ?1 AND attempt = ?2 AND state = 'running'",
        )?
        .query_row(params![lease.id, lease.attempt], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
        .ok_or(Error::LeaseLost { id: lease.id, attempt: lease.attempt })?;
    let entry = AttemptError {
        attempt: lease.attempt,
        at: now,
        error: failure.message.chars().take(10_000).collect(),
        detail: failure.detail.clone(),
    };
    let entry = serde_json::to_string(&entry).map_err(|e| Error::Internal(e.to_string()))?;
    let (state, run_at) = if cancel {
        (JobState::Cancelled, now)
    } else if !failure.retry || used >= max {
        (JobState::Discarded, now)
    } else {
        (JobState::Retryable, Timestamp(now.0.saturating_add(backoff.random_delay(used).as_millis() as i64)))
    };
    let finished_at = state.is_finished().then_some(now.0);
    let job = conn
        .prepare_cached(&format!(
            "UPDATE cairn_jobs SET state = ?3, run_at = ?4, finished_at = ?5, lease_owner = NULL, lease_until = NULL,
                 errors = json_insert(errors, '$[#]', json(?6)),
                 unique_key = CASE WHEN ?5 IS NULL THEN unique_key ELSE NULL END
             WHERE id = ?1 AND attempt = ?2 RETURNING {JOB_COLS}"
        ))?
        .query_row(params![lease.id, lease.attempt, state.as_str(), run_at.0, finished_at, entry], job_from_row)?;
    Ok(job)
}
