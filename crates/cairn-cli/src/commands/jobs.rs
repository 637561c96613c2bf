//! `cairn jobs …`, `cairn schedule …`, `cairn worker` and `cairn watch`: the durable job
//! queue from the command line (docs/jobs.md).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use cairn::{CatchUp, Job, JobFilter, JobState, JobsConfig, JobsRuntime, NewJob, Retention, ScheduleSpec, Workers};
use clap::{Args, Subcommand};

use super::Context;
use crate::output::{clip, table};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Jobs, newest first.
    List {
        /// available, scheduled, running, retryable, completed, cancelled or discarded (dead).
        #[arg(long)]
        state: Option<String>,
        /// Only this queue's jobs.
        #[arg(long)]
        queue: Option<String>,
        /// Only jobs of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only jobs older than this id (the next page).
        #[arg(long)]
        before: Option<i64>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One job in full: arguments, attempts, progress, result, every error.
    Show {
        /// The job's id.
        id: i64,
    },
    /// Enqueue a job of KIND with ARGS (a JSON object, `-` for stdin; default `{}`).
    Enqueue {
        /// What runs it: a handler's kind, `command`, or a built-in `cairn.*` task.
        kind: String,
        /// The arguments, a JSON object (`-` reads stdin).
        args: Option<String>,
        /// Read the arguments from this file.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// The queue it waits in.
        #[arg(long, default_value = cairn::DEFAULT_QUEUE)]
        queue: String,
        /// Lower runs first.
        #[arg(long, default_value_t = 0)]
        priority: i64,
        /// Not before this many seconds from now.
        #[arg(long, value_name = "SECONDS")]
        delay: Option<u64>,
        /// Attempts before it is dead (1 to 1000).
        #[arg(long, default_value_t = cairn::DEFAULT_MAX_ATTEMPTS)]
        max_attempts: i64,
        /// A label (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Only if no job of this kind, queue and arguments is waiting or running.
        #[arg(long)]
        unique: bool,
        /// … nor was enqueued within this many seconds.
        #[arg(long, value_name = "SECONDS", requires = "unique")]
        unique_within: Option<u64>,
    },
    /// Cancel a job: a waiting one at once; a running one is told to stop.
    Cancel {
        /// The job's id.
        id: i64,
    },
    /// Run a dead or cancelled job again, with fresh attempts.
    Retry {
        /// The job's id.
        id: i64,
    },
    /// Run a job again from the start.
    Restart {
        /// The job's id.
        id: i64,
    },
    /// Delete a job that is not running.
    Delete {
        /// The job's id.
        id: i64,
    },
    /// Delete finished jobs past their retention.
    Prune {
        /// Keep completed jobs this long.
        #[arg(long, default_value_t = Retention::default().completed_seconds)]
        completed_seconds: u64,
        /// Keep cancelled and dead jobs this long.
        #[arg(long, default_value_t = Retention::default().failed_seconds)]
        failed_seconds: u64,
    },
    /// Each queue's jobs by state.
    Stats,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Every schedule, with its last and next fire.
    List,
    /// Add a schedule: NAME fires a job of KIND on CRON (five fields, six with seconds, or
    /// `@daily`…).
    Add {
        /// The schedule's name.
        name: String,
        /// When: a cron expression (quote it).
        cron: String,
        /// The kind of job each occurrence enqueues.
        kind: String,
        /// An IANA time zone.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// The queue its jobs wait in.
        #[arg(long, default_value = cairn::DEFAULT_QUEUE)]
        queue: String,
        /// The job's arguments, a JSON object.
        #[arg(long)]
        args: Option<String>,
        /// After downtime, run none, one or all of the missed occurrences.
        #[arg(long, default_value = "one")]
        catch_up: String,
        /// How late a missed occurrence may be and still run.
        #[arg(long, default_value_t = 86_400)]
        window_seconds: u64,
        /// Replace the schedule of this name (keeping when it last fired).
        #[arg(long)]
        replace: bool,
    },
    /// Remove a schedule (its jobs stay).
    Remove {
        /// The schedule's name.
        name: String,
    },
    /// Enqueue a schedule's job now.
    RunNow {
        /// The schedule's name.
        name: String,
    },
    /// Turn a schedule on (it starts from now, without catching up).
    Enable {
        /// The schedule's name.
        name: String,
    },
    /// Turn a schedule off.
    Disable {
        /// The schedule's name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The configuration file whose `[jobs]` section says what to run (docs/jobs.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Jobs run at once (default: the configuration's).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Serve only this queue (repeatable; default: the configuration's, or all).
    #[arg(long = "queue")]
    queues: Vec<String>,
    /// Do not fire schedules from this process.
    #[arg(long)]
    no_scheduler: bool,
    /// Stop once nothing is running and nothing can be claimed (for batch runs).
    #[arg(long)]
    until_idle: bool,
    /// How long running jobs get to finish when the worker is stopped, in seconds.
    #[arg(long, default_value_t = 30)]
    grace: u64,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The configuration file whose `[[jobs.ingest]]` folders are watched.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Look at the folders once (files must be stable for their settle time) and exit.
    #[arg(long)]
    once: bool,
}

fn job_rows(jobs: &[Job]) -> Vec<Vec<String>> {
    jobs.iter()
        .map(|j| {
            let progress = j.progress.map(|p| format!("{p:.0}%")).unwrap_or_default();
            let error = j.errors.last().map(|e| clip(&e.error, 40)).unwrap_or_default();
            vec![
                j.id.to_string(),
                j.kind.clone(),
                j.queue.clone(),
                j.state.as_str().to_string(),
                format!("{}/{}", j.attempts_used, j.max_attempts),
                progress,
                j.run_at.to_string(),
                error,
            ]
        })
        .collect()
}

fn show_job(ctx: &Context, job: &Job) {
    ctx.out.show(job, || {
        println!("job {} ({}) in {}: {}", job.id, job.kind, job.queue, job.state.as_str());
        println!("  args: {}", job.args);
        println!("  attempts: {} of {}; run at {}", job.attempts_used, job.max_attempts, job.run_at);
        if let Some(p) = job.progress {
            println!("  progress: {p:.0}% {}", job.progress_message.as_deref().unwrap_or(""));
        }
        if let Some(result) = &job.result {
            println!("  result: {result}");
        }
        for e in &job.errors {
            println!("  attempt {} at {}: {}", e.attempt, e.at, e.error);
        }
    });
}

pub fn run(ctx: &Context, command: JobsCommand) -> Result<()> {
    match command {
        JobsCommand::List { state, queue, kind, before, limit } => {
            let store = ctx.open_read()?;
            let state = state.as_deref().map(JobState::parse).transpose()?;
            let jobs = store.queue().list(&JobFilter { state, queue, kind, before_id: before, limit })?;
            ctx.out.show(&jobs, || {
                let header = ["id", "kind", "queue", "state", "attempts", "progress", "run at", "last error"];
                println!("{}", table(&header, job_rows(&jobs)));
            });
        }
        JobsCommand::Show { id } => show_job(ctx, &ctx.open_read()?.queue().get(id)?),
        JobsCommand::Enqueue {
            kind,
            args,
            file,
            queue,
            priority,
            delay,
            max_attempts,
            tags,
            unique,
            unique_within,
        } => {
            let args = match (&args, &file) {
                (None, None) => serde_json::json!({}),
                _ => crate::input::json_arg(args.as_deref(), file.as_deref(), "arguments")?,
            };
            let mut job = NewJob::new(&kind, args).queue(&queue).priority(priority).max_attempts(max_attempts);
            job.tags = tags;
            if let Some(seconds) = delay {
                job = job
                    .run_at(cairn::Timestamp(cairn::Timestamp::now().0 + (seconds.min(u32::MAX as u64) as i64) * 1000));
            }
            if unique {
                let options = cairn::UniqueOptions::by_args();
                job = job.unique(match unique_within {
                    Some(seconds) => options.within(seconds),
                    None => options,
                });
            }
            let enqueued = ctx.open_write()?.queue().enqueue(job)?;
            ctx.out.show(&enqueued, || {
                let how = if enqueued.duplicate { "already enqueued" } else { "enqueued" };
                println!("job {} {how} ({})", enqueued.job.id, enqueued.job.state.as_str());
            });
        }
        JobsCommand::Cancel { id } => show_job(ctx, &ctx.open_write()?.queue().cancel(id)?),
        JobsCommand::Retry { id } => show_job(ctx, &ctx.open_write()?.queue().retry(id)?),
        JobsCommand::Restart { id } => show_job(ctx, &ctx.open_write()?.queue().restart(id)?),
        JobsCommand::Delete { id } => {
            let job = ctx.open_write()?.queue().delete(id)?;
            ctx.out.show(&job, || println!("job {} deleted", job.id));
        }
        JobsCommand::Prune { completed_seconds, failed_seconds } => {
            let pruned = ctx.open_write()?.queue().prune(&Retention { completed_seconds, failed_seconds })?;
            ctx.out.show(&serde_json::json!({"pruned": pruned}), || println!("{pruned} finished jobs deleted"));
        }
        JobsCommand::Stats => {
            let stats = ctx.open_read()?.queue().stats()?;
            ctx.out.show(&stats, || {
                let rows = stats
                    .iter()
                    .map(|q| {
                        let counts =
                            [q.available, q.scheduled, q.running, q.retryable, q.completed, q.cancelled, q.discarded];
                        let mut row = vec![q.queue.clone()];
                        row.extend(counts.iter().map(u64::to_string));
                        row.push(q.max_running.map(|n| n.to_string()).unwrap_or_default());
                        row.push(if q.paused { "paused".into() } else { String::new() });
                        row
                    })
                    .collect();
                let header = [
                    "queue",
                    "available",
                    "scheduled",
                    "running",
                    "retryable",
                    "completed",
                    "cancelled",
                    "dead",
                    "limit",
                    "",
                ];
                println!("{}", table(&header, rows));
            });
        }
    }
    Ok(())
}

pub fn run_schedule(ctx: &Context, command: ScheduleCommand) -> Result<()> {
    let show = |schedule: &cairn::Schedule, verb: &str| {
        ctx.out.show(schedule, || {
            let next = schedule.next_fire.map(|t| t.to_string()).unwrap_or_else(|| "never".into());
            println!(
                "schedule {} {verb}: {} {} → {} (next {next})",
                schedule.spec.name, schedule.spec.cron, schedule.spec.time_zone, schedule.spec.kind
            );
        })
    };
    match command {
        ScheduleCommand::List => {
            let schedules = ctx.open_read()?.queue().schedules()?;
            ctx.out.show(&schedules, || {
                let rows = schedules
                    .iter()
                    .map(|s| {
                        let when = |t: Option<cairn::Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
                        vec![
                            s.spec.name.clone(),
                            format!("{} {}", s.spec.cron, s.spec.time_zone),
                            s.spec.kind.clone(),
                            s.spec.catch_up.as_str().to_string(),
                            if s.enabled { "on".into() } else { "off".into() },
                            // A schedule that never fired keeps its creation time there.
                            when(s.last_fire.filter(|t| *t != s.created_at)),
                            when(s.next_fire),
                        ]
                    })
                    .collect();
                println!("{}", table(&["name", "when", "kind", "catch up", "", "last fire", "next fire"], rows));
            });
        }
        ScheduleCommand::Add { name, cron, kind, time_zone, queue, args, catch_up, window_seconds, replace } => {
            let mut spec = ScheduleSpec::new(&name, &cron, &kind)
                .time_zone(&time_zone)
                .queue(&queue)
                .catch_up(CatchUp::parse(&catch_up)?, window_seconds);
            if let Some(args) = args {
                spec = spec.args(cairn::json::parse(&args, "--args")?);
            }
            show(&ctx.open_write()?.queue().add_schedule(spec, replace)?, if replace { "set" } else { "added" });
        }
        ScheduleCommand::Remove { name } => show(&ctx.open_write()?.queue().remove_schedule(&name)?, "removed"),
        ScheduleCommand::RunNow { name } => {
            let enqueued = ctx.open_write()?.queue().run_schedule_now(&name)?;
            ctx.out.show(&enqueued, || println!("job {} enqueued", enqueued.job.id));
        }
        ScheduleCommand::Enable { name } => show(&ctx.open_write()?.queue().enable_schedule(&name, true)?, "on"),
        ScheduleCommand::Disable { name } => show(&ctx.open_write()?.queue().enable_schedule(&name, false)?, "off"),
    }
    Ok(())
}

fn jobs_config(file: Option<&std::path::Path>) -> Result<JobsConfig> {
    let config = super::serve::read_config(file)?.jobs;
    config.validate()?;
    Ok(config)
}

/// Runs the configured workers, schedules and watched folders until SIGINT or SIGTERM (or,
/// with `--until-idle`, until there is nothing left to do).
pub fn run_worker(ctx: &Context, args: WorkerArgs) -> Result<()> {
    let mut config = jobs_config(args.config.as_deref())?;
    if let Some(n) = args.concurrency {
        config.concurrency = n;
    }
    if !args.queues.is_empty() {
        config.queues = args.queues.clone();
    }
    config.scheduler &= !args.no_scheduler;
    config.workers = true;
    let store = ctx.open_write()?;
    let name = format!("worker-{}", std::process::id());
    let runtime = JobsRuntime::start(&store, &config, &Workers::new(), &name)?;
    eprintln!("cairn: {name} running the jobs of {} ({} at once)", ctx.dir.display(), config.concurrency);
    if args.until_idle {
        // Idle twice in a row, a poll apart: a job just finished may have enqueued another.
        let mut idle_before = false;
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let idle = runtime.is_idle()?;
            if idle && idle_before {
                break;
            }
            idle_before = idle;
        }
    } else {
        let signals = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        signals.block_on(async {
            super::serve::shutdown_signal()?.await;
            anyhow::Ok(())
        })?;
    }
    let stats = runtime.stop(Duration::from_secs(args.grace));
    eprintln!(
        "cairn: {name} stopped: {} completed, {} failed, {} cancelled, {} given back",
        stats.completed, stats.failed, stats.cancelled, stats.released
    );
    store.close()?;
    Ok(())
}

/// Watches the configured folders, printing what became of each file.
pub fn run_watch(ctx: &Context, args: WatchArgs) -> Result<()> {
    let config = jobs_config(args.config.as_deref())?;
    if config.ingest.is_empty() {
        return Err(crate::UsageError("the configuration has no [[jobs.ingest]] folder to watch".into()).into());
    }
    let store = ctx.open_write()?;
    let out = ctx.out;
    let report = move |outcome: &cairn::Ingested| {
        out.line(outcome, || match outcome {
            cairn::Ingested::Ingested { path, collection, record, jobs } => {
                println!("ingested {} as {collection}/{record} (jobs {jobs:?})", path.display())
            }
            cairn::Ingested::Duplicate { path, collection, record } => {
                println!("duplicate {} of {collection}/{record}", path.display())
            }
            cairn::Ingested::Rejected { path, moved_to, reason } => {
                println!("rejected {}: {reason} (moved to {})", path.display(), moved_to.display())
            }
            cairn::Ingested::Failed { path, error } => println!("failed {}: {error} (will retry)", path.display()),
            _ => {}
        })
    };
    if args.once {
        for spec in &config.ingest {
            let mut ingest = cairn::Ingest::new(store.clone(), spec.clone())?;
            let start = Instant::now();
            ingest.scan_each(start, |o| report(&o));
            std::thread::sleep(Duration::from_millis(spec.settle_ms));
            ingest.scan_each(Instant::now(), |o| report(&o));
        }
    } else {
        let watchers = config
            .ingest
            .iter()
            .map(|spec| cairn::IngestWatcher::start(store.clone(), spec.clone(), report))
            .collect::<cairn::Result<Vec<_>>>()?;
        eprintln!("cairn: watching {} folder(s); stop with Ctrl-C", watchers.len());
        let signals = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        signals.block_on(async {
            super::serve::shutdown_signal()?.await;
            anyhow::Ok(())
        })?;
        for watcher in watchers {
            watcher.stop();
        }
    }
    store.close()?;
    Ok(())
}
