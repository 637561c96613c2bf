//! Everything a process runs for the jobs of one store, from one `[jobs]` configuration: a
//! worker pool (the built-in maintenance handlers, the allow-listed commands and any handlers
//! the application registers), the scheduler that fires due schedules, and the ingest
//! watchers. `cairn worker`, `cairn serve` and an embedding application start it the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::store::Store;
use crate::error::{Error, Result};
use crate::jobs::builtin::BuiltinSchedules;
use crate::jobs::command::Commands;
use crate::jobs::ingest::{IngestSpec, IngestWatcher};
use crate::jobs::queue::Retention;
use crate::jobs::schedule::ScheduleSpec;
use crate::jobs::worker::{PoolStats, WorkerOptions, WorkerPool, Workers};

/// The `[jobs]` section of a configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Run workers in this process. Default: true.
    pub workers: bool,
    /// Jobs run at once. Default: 2.
    pub concurrency: usize,
    /// The queues served; all when empty.
    pub queues: Vec<String>,
    /// How long a claim holds a job without a heartbeat, in seconds. Default: 30.
    pub lease_seconds: u64,
    /// Fire due schedules from this process. Default: true (several processes may: a
    /// schedule's occurrence fires once however many tick).
    pub scheduler: bool,
    /// How long finished jobs are kept.
    pub retention: Retention,
    /// When the built-in maintenance jobs run.
    pub builtin: BuiltinSchedules,
    /// Further schedules, kept in the store as the configuration says at each start.
    pub schedules: Vec<ScheduleSpec>,
    /// The programs command jobs may run, by name.
    pub commands: Commands,
    /// Watched folders.
    pub ingest: Vec<IngestSpec>,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            workers: true,
            concurrency: 2,
            queues: Vec::new(),
            lease_seconds: 30,
            scheduler: true,
            retention: Retention::default(),
            builtin: BuiltinSchedules::default(),
            schedules: Vec::new(),
            commands: Commands::default(),
            ingest: Vec::new(),
        }
    }
}

impl JobsConfig {
    /// Refuses a configuration that cannot run: a bad schedule, command or ingest rule, a
    /// schedule named like a built-in one.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Error::InvalidInput { source_name: "[jobs]".into(), reason };
        if self.concurrency == 0 || self.lease_seconds == 0 {
            return Err(invalid("concurrency and lease_seconds must be at least 1".into()));
        }
        for (_, spec) in self.builtin.specs(&self.retention) {
            if let Some(spec) = spec {
                spec.validate()?;
            }
        }
        for spec in &self.schedules {
            if spec.name.starts_with("cairn.") {
                return Err(invalid(format!(
                    "schedule {:?}: names starting with cairn. are the built-in ones",
                    spec.name
                )));
            }
            spec.validate()?;
        }
        self.commands.check()?;
        for spec in &self.ingest {
            spec.compile()?;
        }
        Ok(())
    }

    /// The worker options these settings give, named `name`.
    pub fn worker_options(&self, name: &str) -> WorkerOptions {
        let queues: Vec<&str> = self.queues.iter().map(String::as_str).collect();
        let options =
            WorkerOptions::named(name).concurrency(self.concurrency).lease(Duration::from_secs(self.lease_seconds));
        if queues.is_empty() {
            options
        } else {
            options.queues(&queues)
        }
    }

    /// Makes the store's schedules what this configuration says: built-in ones added,
    /// changed or removed, configured ones added or changed (a schedule added by hand, with
    /// the CLI or the API, is left alone). An unchanged schedule is not written again, so a
    /// restart neither resets its last fire nor adds to the audit trail.
    pub fn apply_schedules(&self, store: &Store) -> Result<()> {
        let queue = store.queue();
        let wanted = self.builtin.specs(&self.retention).into_iter().map(|(name, spec)| (name.to_string(), spec));
        let configured = self.schedules.iter().map(|s| (s.name.clone(), Some(s.clone())));
        for (name, spec) in wanted.chain(configured) {
            let current = match queue.schedule(&name) {
                Ok(schedule) => Some(schedule.spec),
                Err(Error::ScheduleNotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            match (spec, current) {
                (Some(spec), Some(current)) if spec == current => {}
                (Some(spec), _) => drop(queue.add_schedule(spec, true)?),
                (None, Some(_)) => drop(queue.remove_schedule(&name)?),
                (None, None) => {}
            }
        }
        Ok(())
    }
}

/// The running jobs of a store in this process. Dropping it stops it with no grace.
#[derive(Debug)]
pub struct JobsRuntime {
    pool: Option<WorkerPool>,
    scheduler: Option<(Arc<Bell>, std::thread::JoinHandle<()>)>,
    watchers: Vec<IngestWatcher>,
}

/// Wakes the scheduler thread early (to stop).
#[derive(Debug, Default)]
struct Bell {
    stop: AtomicBool,
    lock: Mutex<()>,
    ring: Condvar,
}

impl JobsRuntime {
    /// Applies the configured schedules and starts what `config` asks for, with the built-in
    /// and command handlers besides those of `workers`.
    pub fn start(store: &Store, config: &JobsConfig, workers: &Workers, name: &str) -> Result<JobsRuntime> {
        config.validate()?;
        config.apply_schedules(store)?;
        let mut runtime = JobsRuntime { pool: None, scheduler: None, watchers: Vec::new() };
        if config.workers {
            let mut all = workers.clone();
            all.register_builtins().register_commands(&config.commands);
            runtime.pool = Some(all.start(store.queue(), config.worker_options(name)));
        }
        if config.scheduler {
            let bell = Arc::new(Bell::default());
            let (queue, ringing) = (store.queue(), bell.clone());
            let thread = std::thread::Builder::new()
                .name("cairn-scheduler".into())
                .spawn(move || {
                    while !ringing.stop.load(Ordering::SeqCst) {
                        if let Err(e) = queue.tick() {
                            tracing::warn!(error = %e, "the scheduler could not read the schedules");
                        }
                        let guard = ringing.lock.lock().unwrap_or_else(|p| p.into_inner());
                        if !ringing.stop.load(Ordering::SeqCst) {
                            drop(ringing.ring.wait_timeout(guard, Duration::from_secs(1)));
                        }
                    }
                })
                .map_err(|e| Error::io("start a thread for", std::path::Path::new("the scheduler"), e))?;
            runtime.scheduler = Some((bell, thread));
        }
        for spec in &config.ingest {
            let folder = spec.folder.display().to_string();
            let watcher = IngestWatcher::start(store.clone(), spec.clone(), move |outcome| {
                tracing::info!(folder, outcome = ?outcome, "ingest");
            })?;
            runtime.watchers.push(watcher);
        }
        Ok(runtime)
    }

    /// The pool's figures so far (zero when this process runs no workers).
    pub fn stats(&self) -> PoolStats {
        self.pool.as_ref().map(WorkerPool::stats).unwrap_or_default()
    }

    /// Whether the pool (if this process runs one) runs nothing and has nothing it could
    /// claim now.
    pub fn is_idle(&self) -> Result<bool> {
        self.pool.as_ref().map_or(Ok(true), WorkerPool::is_idle)
    }

    /// Stops the watchers and the scheduler, then the pool: running jobs get `grace` to
    /// finish and are given back to the queue after it.
    pub fn stop(mut self, grace: Duration) -> PoolStats {
        self.halt(grace)
    }

    fn halt(&mut self, grace: Duration) -> PoolStats {
        for watcher in self.watchers.drain(..) {
            watcher.stop();
        }
        if let Some((bell, thread)) = self.scheduler.take() {
            bell.stop.store(true, Ordering::SeqCst);
            {
                let _guard = bell.lock.lock().unwrap_or_else(|p| p.into_inner());
                bell.ring.notify_all();
            }
            thread.join().ok();
        }
        self.pool.take().map(|pool| pool.stop(grace)).unwrap_or_default()
    }
}

impl Drop for JobsRuntime {
    fn drop(&mut self) {
        self.halt(Duration::ZERO);
    }
}
