//! Worker pools (JOB-1): threads that claim jobs of the kinds an application registered
//! handlers for, run them, and record the outcome under the attempt's lease.
//!
//! A pool has `concurrency` runner threads (its global limit) and one keeper thread that
//! extends the leases of the jobs it runs, passes on cancels (and lost leases) to their
//! handlers, and returns jobs whose workers died to the queue. Stopping lets running jobs
//! finish within a deadline, then tells the rest to stop and gives their jobs back.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::engine::store::Store;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};
use crate::jobs::queue::{ClaimFilter, Queue};
use crate::jobs::{Job, Lease};

/// Runs jobs of one kind. Registered with [`Workers::register`].
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt. Long work should look at [`JobContext::is_cancelled`] now and then
    /// (or wait on it) and report progress.
    fn run(&self, ctx: &JobContext) -> std::result::Result<Done, Failure>;
}

impl<F> Handler for F
where
    F: Fn(&JobContext) -> std::result::Result<Done, Failure> + Send + Sync + 'static,
{
    fn run(&self, ctx: &JobContext) -> std::result::Result<Done, Failure> {
        self(ctx)
    }
}

type Writes = Box<dyn FnOnce(&mut Tx<'_>) -> Result<()> + Send>;

/// A finished attempt: its result, and record writes that commit with its completion.
#[derive(Default)]
pub struct Done {
    result: Option<Value>,
    writes: Option<Writes>,
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Done").field("result", &self.result).field("writes", &self.writes.is_some()).finish()
    }
}

impl Done {
    pub fn new() -> Self {
        Done::default()
    }

    /// The result kept on the job.
    pub fn result(mut self, result: Value) -> Self {
        self.result = Some(result);
        self
    }

    /// Writes made in the completion's transaction: they happen if and only if this attempt
    /// still holds the job, so a job's effect on records is recorded once.
    pub fn writes(mut self, writes: impl FnOnce(&mut Tx<'_>) -> Result<()> + Send + 'static) -> Self {
        self.writes = Some(Box::new(writes));
        self
    }
}

/// A failed attempt: retried after its backoff, or (`discard`) dead at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub message: String,
    pub retry: bool,
    /// What else is kept with the error (a command's exit status and output).
    pub detail: Option<Value>,
}

impl Failure {
    /// A failure worth another attempt.
    pub fn retry(message: impl Into<String>) -> Self {
        Failure { message: message.into(), retry: true, detail: None }
    }

    /// A failure no attempt will fix (bad arguments): the job is dead at once.
    pub fn discard(message: impl Into<String>) -> Self {
        Failure { message: message.into(), retry: false, detail: None }
    }

    /// Keeps `detail` with the error.
    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let retry = !matches!(e.kind(), crate::ErrorKind::InvalidInput | crate::ErrorKind::NotFound);
        Failure { message: e.to_string(), retry, detail: None }
    }
}

/// Set when a job should stop: a cancel was asked, its lease was lost, or the pool stops.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl CancelToken {
    pub fn cancel(&self) {
        let (flag, cv) = &*self.inner;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    pub fn is_cancelled(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits up to `timeout` for a cancel; true when cancelled.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (flag, cv) = &*self.inner;
        let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = cv.wait_timeout_while(guard, timeout, |c| !*c).unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

/// What a handler gets: the job, its store, the cancel signal and a progress reporter.
#[derive(Debug)]
pub struct JobContext {
    job: Job,
    queue: Queue,
    cancel: CancelToken,
}

impl JobContext {
    pub fn job(&self) -> &Job {
        &self.job
    }

    pub fn args(&self) -> &Value {
        &self.job.args
    }

    pub fn store(&self) -> &Store {
        self.queue.store()
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Whether the job should stop now.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The cancel signal, to wait on or hand to a child process's watcher.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Records progress (fenced by this attempt's lease). A lost lease cancels the token.
    pub fn progress(&self, percent: f64, message: Option<&str>) -> Result<()> {
        match self.queue.progress(self.job.lease(), percent, message) {
            Ok(beat) => {
                if beat.cancel_requested {
                    self.cancel.cancel();
                }
                Ok(())
            }
            Err(e) => {
                if matches!(e, Error::LeaseLost { .. }) {
                    self.cancel.cancel();
                }
                Err(e)
            }
        }
    }
}

/// How a pool runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// The worker's name, recorded as the lease owner.
    pub name: String,
    /// How many jobs it runs at once.
    pub concurrency: usize,
    /// The queues it serves; all when `None`.
    pub queues: Option<Vec<String>>,
    /// How long a claim or heartbeat holds a job.
    pub lease: Duration,
    /// How long an idle runner waits before looking for work again.
    pub poll: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            name: format!("worker-{}", std::process::id()),
            concurrency: 4,
            queues: None,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(200),
        }
    }
}

impl WorkerOptions {
    pub fn named(name: &str) -> Self {
        WorkerOptions { name: name.to_string(), ..Default::default() }
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    pub fn queues(mut self, queues: &[&str]) -> Self {
        self.queues = Some(queues.iter().map(|q| q.to_string()).collect());
        self
    }

    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

/// The handlers a worker pool runs, by job kind.
#[derive(Clone, Default)]
pub struct Workers {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: Vec<&String> = self.handlers.keys().collect();
        kinds.sort();
        f.debug_struct("Workers").field("kinds", &kinds).finish()
    }
}

impl Workers {
    pub fn new() -> Self {
        Workers::default()
    }

    /// Runs jobs of `kind` with `handler` (a later registration of the kind replaces it).
    pub fn register(&mut self, kind: &str, handler: impl Handler) -> &mut Self {
        self.handlers.insert(kind.to_string(), Arc::new(handler));
        self
    }

    /// The kinds with a handler, sorted.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.handlers.keys().cloned().collect();
        kinds.sort();
        kinds
    }

    /// Starts a pool on `queue`'s store.
    pub fn start(&self, queue: Queue, options: WorkerOptions) -> WorkerPool {
        let filter = ClaimFilter { kinds: self.kinds(), queues: options.queues.clone() };
        let shared = Arc::new(Shared {
            queue,
            handlers: self.handlers.clone(),
            filter,
            options,
            stopping: AtomicBool::new(false),
            running: Mutex::new(HashMap::new()),
            idle: Condvar::new(),
            bell: Condvar::new(),
            bell_lock: Mutex::new(()),
            stats: Counters::default(),
        });
        let mut threads = Vec::new();
        for i in 0..shared.options.concurrency {
            let shared = shared.clone();
            let name = format!("cairn-job-{}-{i}", shared.options.name);
            match std::thread::Builder::new().name(name).spawn(move || runner(&shared)) {
                Ok(handle) => threads.push(handle),
                Err(e) => tracing::error!(error = %e, "could not start a job runner thread"),
            }
        }
        let keeper_shared = shared.clone();
        let keeper = std::thread::Builder::new()
            .name(format!("cairn-job-keeper-{}", shared.options.name))
            .spawn(move || keeper(&keeper_shared))
            .map_err(|e| tracing::error!(error = %e, "could not start the job keeper thread"))
            .ok();
        WorkerPool { shared, threads, keeper }
    }
}

#[derive(Debug, Default)]
struct Counters {
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    lost: AtomicU64,
}

/// What a pool did, so far or in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Attempts whose outcome was refused because their lease was lost.
    pub lost: u64,
    /// Jobs still running when the pool stopped, given back to the queue.
    pub released: u64,
}

struct Shared {
    queue: Queue,
    handlers: HashMap<String, Arc<dyn Handler>>,
    filter: ClaimFilter,
    options: WorkerOptions,
    stopping: AtomicBool,
    running: Mutex<HashMap<Lease, CancelToken>>,
    /// Signalled when a job finishes (for `stop`).
    idle: Condvar,
    /// Rung to wake idle runners (new work, or stopping).
    bell: Condvar,
    bell_lock: Mutex<()>,
    stats: Counters,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn nap(&self, timeout: Duration) {
        let guard = self.bell_lock.lock().unwrap_or_else(|p| p.into_inner());
        if !self.stopping() {
            drop(self.bell.wait_timeout(guard, timeout));
        }
    }

    fn ring(&self) {
        let _guard = self.bell_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.bell.notify_all();
    }
}

fn runner(shared: &Shared) {
    let mut backoff = Duration::from_millis(10);
    while !shared.stopping() {
        let claimed = shared.queue.claim(&shared.options.name, &shared.filter, 1, shared.options.lease);
        match claimed {
            Ok(jobs) if jobs.is_empty() => shared.nap(shared.options.poll),
            Ok(jobs) => {
                backoff = Duration::from_millis(10);
                for job in jobs {
                    run_one(shared, job);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming jobs failed; trying again");
                shared.nap(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn run_one(shared: &Shared, job: Job) {
    let lease = job.lease();
    let cancel = CancelToken::default();
    shared.running.lock().unwrap_or_else(|p| p.into_inner()).insert(lease, cancel.clone());
    let Some(handler) = shared.handlers.get(&job.kind).cloned() else {
        // The claim filter names only registered kinds.
        record(shared, lease, shared.queue.fail(lease, "no handler for this kind", false));
        return;
    };
    let ctx = JobContext { job, queue: shared.queue.clone(), cancel: cancel.clone() };
    let outcome = catch_unwind(AssertUnwindSafe(|| handler.run(&ctx)))
        .unwrap_or_else(|_| Err(Failure::retry("the handler panicked")));
    let cancel_requested = cancel.is_cancelled() && !shared.stopping();
    let result = match outcome {
        _ if cancel_requested && shared.queue.get(lease.id).is_ok_and(|j| j.cancel_requested) => {
            shared.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            shared.queue.cancelled(lease)
        }
        Ok(done) => {
            let writes = done.writes.unwrap_or_else(|| Box::new(|_| Ok(())));
            let r = shared.queue.complete_with(lease, done.result, writes);
            if r.is_ok() {
                shared.stats.completed.fetch_add(1, Ordering::Relaxed);
            }
            r
        }
        Err(failure) => {
            shared.stats.failed.fetch_add(1, Ordering::Relaxed);
            shared.queue.fail_with(lease, &failure)
        }
    };
    record(shared, lease, result);
}

/// Takes a finished attempt off the running list and logs an outcome that was refused.
fn record(shared: &Shared, lease: Lease, result: Result<Job>) {
    if let Err(e) = result {
        if matches!(e, Error::LeaseLost { .. }) {
            shared.stats.lost.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(job = lease.id, attempt = lease.attempt, error = %e, "the outcome of a job was not recorded");
    }
    shared.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&lease);
    shared.idle.notify_all();
}

/// Extends leases, passes on cancels, and reaps expired leases, until the pool stops.
fn keeper(shared: &Shared) {
    let every = (shared.options.lease / 3).max(Duration::from_millis(10));
    while !shared.stopping() {
        let leases: Vec<(Lease, CancelToken)> = {
            let running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
            running.iter().map(|(l, c)| (*l, c.clone())).collect()
        };
        for (lease, cancel) in leases {
            match shared.queue.heartbeat(lease, shared.options.lease) {
                Ok(beat) if beat.cancel_requested => cancel.cancel(),
                Ok(_) => {}
                Err(Error::LeaseLost { .. }) => cancel.cancel(),
                Err(e) => tracing::warn!(job = lease.id, error = %e, "a lease heartbeat failed"),
            }
        }
        match shared.queue.reap() {
            Ok(reaped) if !reaped.is_empty() => {
                tracing::info!(jobs = reaped.len(), "jobs whose lease expired were returned to the queue");
                shared.ring();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reaping expired leases failed"),
        }
        shared.nap(every);
    }
}

/// A running pool. Dropping it stops it with no grace (its jobs are released at once).
#[derive(Debug)]
pub struct WorkerPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    keeper: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("options", &self.options).finish()
    }
}

impl WorkerPool {
    /// Wakes idle runners to look for work now (after enqueueing).
    pub fn notify(&self) {
        self.shared.ring();
    }

    /// How many jobs it is running now.
    pub fn running(&self) -> usize {
        self.shared.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn stats(&self) -> PoolStats {
        let c = &self.shared.stats;
        PoolStats {
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            released: 0,
        }
    }

    /// Whether the pool runs nothing and has nothing it could claim now.
    pub fn is_idle(&self) -> Result<bool> {
        Ok(self.running() == 0 && self.shared.queue.claimable(&self.shared.filter)? == 0)
    }

    /// Stops claiming, lets running jobs finish for up to `grace`, then cancels the rest and
    /// gives their jobs back to the queue (without using up an attempt). Handlers that ignore
    /// the cancel are left to end on their own; whatever they record later is refused.
    pub fn stop(mut self, grace: Duration) -> PoolStats {
        self.shutdown(grace)
    }

    fn shutdown(&mut self, grace: Duration) -> PoolStats {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        shared.ring();
        let deadline = Instant::now() + grace;
        let mut running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
        while !running.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            running = shared.idle.wait_timeout(running, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        let left: Vec<(Lease, CancelToken)> = running.drain().collect();
        drop(running);
        let mut released = 0;
        for (lease, cancel) in left {
            cancel.cancel();
            match shared.queue.release(lease) {
                Ok(_) => released += 1,
                Err(e) => tracing::warn!(job = lease.id, error = %e, "could not give a job back"),
            }
        }
        if let Some(keeper) = self.keeper.take() {
            drop(keeper.join());
        }
        // Runners whose handler still runs past the grace are not waited for.
        for thread in std::mem::take(&mut self.threads) {
            if thread.is_finished() || released == 0 {
                drop(thread.join());
            }
        }
        PoolStats { released, ..self.stats() }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        if !self.shared.stopping() {
            self.shutdown(Duration::ZERO);
        }
    }
}
