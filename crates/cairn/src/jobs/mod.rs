//! Durable jobs (JOB-1 … JOB-4): the queue in the store's own database (`queue.rs`), the
//! retry delays (`backoff.rs`), the worker pools that run registered handlers
//! (`worker.rs`), cron schedules (`schedule.rs`), allow-listed external commands
//! (`command.rs`), the folder ingest watcher (`ingest.rs`) and the built-in maintenance
//! jobs (`builtin.rs`).
//!
//! A job is at least once: a worker that dies mid-run leaves a lease that expires, and the
//! job runs again. What it records is exactly once: completion, failure and progress carry
//! the attempt they belong to ([`Lease`]), and the store accepts them only from the attempt
//! that holds the job now.

pub(crate) mod backoff;
pub(crate) mod builtin;
pub(crate) mod command;
pub(crate) mod events;
pub(crate) mod ingest;
pub(crate) mod queue;
pub(crate) mod runtime;
pub(crate) mod schedule;
pub(crate) mod worker;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::timestamp::Timestamp;
use crate::error::{Error, Result};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to run now.
    Available,
    /// Waiting for its run-at time.
    Scheduled,
    /// Held by a worker under a lease.
    Running,
    /// Failed, and waiting to run again after its backoff.
    Retryable,
    /// Done; its result is kept.
    Completed,
    /// Stopped by a cancel.
    Cancelled,
    /// Dead: out of attempts, or failed for good. Its errors are kept.
    Discarded,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Available,
        JobState::Scheduled,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Cancelled,
        JobState::Discarded,
    ];

    /// The state's stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Available => "available",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Discarded => "discarded",
        }
    }

    /// The state named `name` (`dead` is another name of `discarded`).
    pub fn parse(name: &str) -> Result<JobState> {
        if name == "dead" {
            return Ok(JobState::Discarded);
        }
        JobState::ALL.into_iter().find(|s| s.as_str() == name).ok_or_else(|| Error::InvalidInput {
            source_name: "job state".into(),
            reason: format!(
                "unknown state {name:?}; one of available, scheduled, running, retryable, completed, cancelled, discarded (dead)"
            ),
        })
    }

    /// Whether a job in this state is over (completed, cancelled or dead).
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Completed | JobState::Cancelled | JobState::Discarded)
    }
}

/// One failed attempt, as kept on the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttemptError {
    pub attempt: i64,
    pub at: Timestamp,
    pub error: String,
    /// What else was kept (an external command's exit status and output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub queue: String,
    pub args: Value,
    pub state: JobState,
    /// Lower runs first.
    pub priority: i64,
    pub run_at: Timestamp,
    /// The fencing attempt number: how many times the job was ever claimed.
    pub attempt: i64,
    /// Attempts used since the job was enqueued or last restarted.
    pub attempts_used: i64,
    pub max_attempts: i64,
    pub tags: Vec<String>,
    pub unique_key: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Timestamp>,
    pub cancel_requested: bool,
    pub progress: Option<f64>,
    pub progress_message: Option<String>,
    pub result: Option<Value>,
    pub errors: Vec<AttemptError>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub attempted_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

impl Job {
    /// The lease of the attempt that holds this job now (meaningful while it runs).
    pub fn lease(&self) -> Lease {
        Lease { id: self.id, attempt: self.attempt }
    }
}

/// What fences a worker's writes to a job: the job and the attempt the worker claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    pub id: i64,
    pub attempt: i64,
}

/// How a job is unique: while one job holds its key, enqueueing another with the same key
/// returns the one that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct UniqueOptions {
    /// Include the arguments in the key (otherwise kind and queue alone).
    pub by_args: bool,
    /// Only within a period of this many seconds (aligned to the Unix epoch); a completed
    /// job keeps its key for the rest of its period.
    pub period_seconds: Option<u64>,
}

impl UniqueOptions {
    /// Unique by kind, queue and arguments.
    pub fn by_args() -> Self {
        UniqueOptions { by_args: true, period_seconds: None }
    }

    /// … within periods of `seconds`.
    pub fn within(mut self, seconds: u64) -> Self {
        self.period_seconds = Some(seconds);
        self
    }
}

/// A job to enqueue. `NewJob::new(kind, args)` with the defaults: queue `default`,
/// priority 0, run now, 20 attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NewJob {
    pub kind: String,
    #[serde(default)]
    pub args: Value,
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default)]
    pub priority: i64,
    /// When it may run first; now if absent.
    #[serde(default)]
    pub run_at: Option<Timestamp>,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i64,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub unique: Option<UniqueOptions>,
}

fn default_queue() -> String {
    DEFAULT_QUEUE.to_string()
}

fn default_max_attempts() -> i64 {
    DEFAULT_MAX_ATTEMPTS
}

/// The queue a job goes to when it names none.
pub const DEFAULT_QUEUE: &str = "default";
/// How many attempts a job gets when it says nothing.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 20;

impl NewJob {
    pub fn new(kind: &str, args: Value) -> Self {
        NewJob {
            kind: kind.to_string(),
            args,
            queue: default_queue(),
            priority: 0,
            run_at: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            tags: Vec::new(),
            unique: None,
        }
    }

    pub fn queue(mut self, queue: &str) -> Self {
        self.queue = queue.to_string();
        self
    }

    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = priority;
        self
    }

    pub fn run_at(mut self, at: Timestamp) -> Self {
        self.run_at = Some(at);
        self
    }

    pub fn max_attempts(mut self, attempts: i64) -> Self {
        self.max_attempts = attempts;
        self
    }

    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }

    pub fn unique(mut self, unique: UniqueOptions) -> Self {
        self.unique = Some(unique);
        self
    }

    /// Checks what the table's constraints would otherwise turn into a database error.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidInput { source_name: "job".into(), reason });
        for (what, name) in [("kind", &self.kind), ("queue", &self.queue)] {
            if name.is_empty()
                || name.len() > 100
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
            {
                return bad(format!("{what} {name:?} must be 1 to 100 letters, digits, `_`, `-`, `.` or `:`"));
            }
        }
        if !(1..=1000).contains(&self.max_attempts) {
            return bad(format!("max_attempts must be between 1 and 1000, not {}", self.max_attempts));
        }
        if self.tags.len() > 20 || self.tags.iter().any(|t| t.is_empty() || t.len() > 100) {
            return bad("at most 20 tags, each of 1 to 100 characters".into());
        }
        if self.unique.as_ref().and_then(|u| u.period_seconds) == Some(0) {
            return bad("a unique period must be at least one second".into());
        }
        Ok(())
    }
}

/// Where a job's time comes from: the system clock, or one a test moves by hand.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that stands still until moved: for tests of backoff, leases and schedules.
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    pub fn new(at: Timestamp) -> Arc<Self> {
        Arc::new(ManualClock { ms: AtomicI64::new(at.0) })
    }

    pub fn set(&self, at: Timestamp) {
        self.ms.store(at.0, Ordering::SeqCst);
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.ms.load(Ordering::SeqCst))
    }
}
