//! The store's own maintenance as jobs: a backup, verifying the backups, `check`, blob
//! garbage collection and pruning finished jobs, each a handler of kind `cairn.<task>` and,
//! by configuration, a schedule of the same name.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::blobs::GcOptions;
use crate::jobs::queue::Retention;
use crate::jobs::schedule::{CatchUp, ScheduleSpec};
use crate::jobs::worker::{Done, Failure, JobContext, Workers};
use crate::safety::backup::{BackupOptions, BackupReason, BackupStatus};
use crate::safety::check::CheckOptions;

pub const BACKUP_KIND: &str = "cairn.backup";
pub const VERIFY_BACKUPS_KIND: &str = "cairn.verify_backups";
pub const CHECK_KIND: &str = "cairn.check";
pub const BLOB_GC_KIND: &str = "cairn.blob_gc";
pub const PRUNE_JOBS_KIND: &str = "cairn.prune_jobs";

/// The queue the built-in jobs run on (so a busy application queue does not hold them up).
pub const MAINTENANCE_QUEUE: &str = "maintenance";

/// When the built-in jobs run: a cron expression each, or an empty string for never.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuiltinSchedules {
    /// The time zone of every expression below. Default: `UTC`.
    pub time_zone: String,
    /// A verified backup. Default: daily at 03:00.
    pub backup: String,
    /// Verifying every backup again (bit rot, a disk going bad). Default: daily at 04:30.
    pub verify_backups: String,
    /// `check` over the whole store, blobs re-hashed. Default: Sundays at 04:00.
    pub check: String,
    /// Removing blobs no record has linked to for the grace period. Default: never — it
    /// deletes files, so it is a choice made in the configuration.
    pub blob_gc: String,
    /// Pruning finished jobs past their retention. Default: hourly at :17.
    pub prune_jobs: String,
}

impl Default for BuiltinSchedules {
    fn default() -> Self {
        BuiltinSchedules {
            time_zone: "UTC".into(),
            backup: "0 3 * * *".into(),
            verify_backups: "30 4 * * *".into(),
            check: "0 4 * * 0".into(),
            blob_gc: String::new(),
            prune_jobs: "17 * * * *".into(),
        }
    }
}

impl BuiltinSchedules {
    /// Every built-in schedule by name, `None` for those turned off. A missed maintenance
    /// run is caught up once (within a day), not once per missed occurrence.
    pub fn specs(&self, retention: &Retention) -> Vec<(&'static str, Option<ScheduleSpec>)> {
        let prune_args = json!({"retention": retention});
        [
            (BACKUP_KIND, &self.backup, json!({})),
            (VERIFY_BACKUPS_KIND, &self.verify_backups, json!({})),
            (CHECK_KIND, &self.check, json!({})),
            (BLOB_GC_KIND, &self.blob_gc, json!({})),
            (PRUNE_JOBS_KIND, &self.prune_jobs, prune_args),
        ]
        .into_iter()
        .map(|(kind, cron, args)| {
            let spec = (!cron.trim().is_empty()).then(|| {
                ScheduleSpec::new(kind, cron, kind)
                    .time_zone(&self.time_zone)
                    .queue(MAINTENANCE_QUEUE)
                    .args(args)
                    .catch_up(CatchUp::One, 86_400)
            });
            (kind, spec)
        })
        .collect()
    }
}

/// Reports a long task's `(stage, done, total)` as job progress, at most once per whole
/// percent or stage, so progress does not become a write per item.
fn reporter(ctx: &JobContext) -> impl FnMut(&str, u64, u64) + '_ {
    let mut last: Option<(String, u64)> = None;
    move |stage: &str, done: u64, total: u64| {
        let percent = (done.min(total) * 100).checked_div(total).unwrap_or(0);
        if last.as_ref().is_some_and(|(s, p)| s == stage && *p == percent) {
            return;
        }
        last = Some((stage.to_string(), percent));
        if let Err(e) = ctx.progress(percent as f64, Some(stage)) {
            tracing::debug!(error = %e, "progress of a maintenance job was not recorded");
        }
    }
}

fn backup(ctx: &JobContext) -> Result<Done, Failure> {
    let info = ctx.store().backup(&BackupOptions::because(BackupReason::Scheduled), &mut reporter(ctx))?;
    Ok(Done::new().result(json!({"backup": info.id, "status": info.status})))
}

fn verify_backups(ctx: &JobContext) -> Result<Done, Failure> {
    let store = ctx.store();
    let backups: Vec<_> = store.backups()?.into_iter().filter(|b| b.status != BackupStatus::Failed).collect();
    let mut report = Vec::new();
    let mut bad = 0;
    for (i, listed) in backups.iter().enumerate() {
        if ctx.is_cancelled() {
            return Err(Failure::retry("cancelled"));
        }
        ctx.progress((i * 100 / backups.len()) as f64, Some(&listed.id)).ok();
        match store.verify_backup(&listed.id, &mut |_, _, _| {}) {
            Ok(info) if info.status == BackupStatus::Good => report.push(json!({"id": info.id, "ok": true})),
            Ok(info) => {
                bad += 1;
                report.push(json!({"id": info.id, "ok": false, "error": info.error}));
            }
            Err(e) => {
                bad += 1;
                report.push(json!({"id": listed.id, "ok": false, "error": e.to_string()}));
            }
        }
    }
    let summary = json!({"verified": backups.len() - bad, "failed": bad, "backups": report});
    if bad > 0 {
        // Verifying the same bytes again would not heal them: the job is dead at once,
        // where someone looking at failed jobs will find it.
        return Err(Failure::discard(format!("{bad} of {} backups failed verification", backups.len())).detail(summary));
    }
    Ok(Done::new().result(summary))
}

fn check(ctx: &JobContext) -> Result<Done, Failure> {
    let options = CheckOptions { blobs: ctx.args()["blobs"].as_bool().unwrap_or(true) };
    let report = ctx.store().check(&options, &mut reporter(ctx))?;
    let detail = serde_json::to_value(&report).unwrap_or(Value::Null);
    if !report.is_ok() {
        let message =
            format!("check found {} problems (listed in the detail); a repair can fix them", report.problems.len());
        return Err(Failure::discard(message).detail(detail));
    }
    Ok(Done::new().result(detail))
}

fn blob_gc(ctx: &JobContext) -> Result<Done, Failure> {
    let report = ctx.store().gc_blobs(&GcOptions::default())?;
    Ok(Done::new().result(json!({
        "removed": report.removed.len(),
        "removed_files": report.removed_files.len(),
        "bytes_freed": report.bytes_freed,
        "kept_in_grace": report.kept_in_grace,
    })))
}

fn prune_jobs(ctx: &JobContext) -> Result<Done, Failure> {
    let retention: Retention = match ctx.args().get("retention") {
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|e| Failure::discard(format!("the job's retention is not one: {e}")))?,
        None => Retention::default(),
    };
    let pruned = ctx.queue().prune(&retention)?;
    Ok(Done::new().result(json!({"pruned": pruned})))
}

impl Workers {
    /// Registers the handlers of the built-in maintenance jobs.
    pub fn register_builtins(&mut self) -> &mut Self {
        self.register(BACKUP_KIND, backup)
            .register(VERIFY_BACKUPS_KIND, verify_backups)
            .register(CHECK_KIND, check)
            .register(BLOB_GC_KIND, blob_gc)
            .register(PRUNE_JOBS_KIND, prune_jobs)
    }
}
