//! Cron schedules (JOB-2): a named cron expression in a time zone that enqueues a job at each
//! occurrence. The last occurrence handled is stored with the schedule and moved in the same
//! transaction as the jobs it enqueues, so a restart neither repeats a run nor loses track of
//! one it missed, and two schedulers ticking at once cannot both fire the same occurrence.
//!
//! What a missed occurrence (the process was down) becomes is the schedule's catch-up policy:
//! `none` runs only occurrences that are due now (at most a minute late), `one` runs the most
//! recent missed occurrence within the catch-up window once, `all` runs every missed
//! occurrence within the window. Occurrences follow the time zone's wall clock through DST
//! changes (croner's rules: a time the clock skips runs at the first instant after the gap; a
//! time the clock repeats runs once).

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::canonical::canonical_json;
use crate::engine::timestamp::Timestamp;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};
use crate::jobs::queue::{Enqueued, Queue};
use crate::jobs::NewJob;

/// How late an occurrence may be and still count as due now (policy `none`).
pub const DUE_GRACE_MS: i64 = 60_000;
/// The most occurrences one tick fires for one schedule (policy `all`).
pub const MAX_FIRES_PER_TICK: usize = 1000;

/// What a schedule does with occurrences it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    None,
    One,
    All,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::One => "one",
            CatchUp::All => "all",
        }
    }

    pub fn parse(s: &str) -> Result<CatchUp> {
        match s {
            "none" => Ok(CatchUp::None),
            "one" => Ok(CatchUp::One),
            "all" => Ok(CatchUp::All),
            other => Err(Error::InvalidInput {
                source_name: "schedule catch_up".into(),
                reason: format!("{other:?} is not one of none, one, all"),
            }),
        }
    }
}

fn default_tz() -> String {
    "UTC".into()
}

fn default_catch_up() -> CatchUp {
    CatchUp::One
}

fn default_window() -> u64 {
    86_400
}

fn default_queue() -> String {
    crate::jobs::DEFAULT_QUEUE.into()
}

/// A schedule to add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ScheduleSpec {
    pub name: String,
    /// Five fields (minute hour day month weekday), six with seconds first, or an alias
    /// such as `@daily`.
    pub cron: String,
    /// An IANA time zone name (`Europe/Berlin`); UTC if absent.
    #[serde(default = "default_tz")]
    pub time_zone: String,
    /// The kind of job each occurrence enqueues.
    pub kind: String,
    #[serde(default = "default_queue")]
    pub queue: String,
    /// An object; `scheduled_at` is added to it for each occurrence.
    #[serde(default = "empty_args")]
    pub args: Value,
    #[serde(default = "default_catch_up")]
    pub catch_up: CatchUp,
    /// How late (seconds) a missed occurrence may be and still run (`one`, `all`).
    #[serde(default = "default_window")]
    pub catch_up_window_seconds: u64,
}

fn empty_args() -> Value {
    Value::Object(Default::default())
}

impl ScheduleSpec {
    pub fn new(name: &str, cron: &str, kind: &str) -> Self {
        ScheduleSpec {
            name: name.into(),
            cron: cron.into(),
            time_zone: default_tz(),
            kind: kind.into(),
            queue: default_queue(),
            args: empty_args(),
            catch_up: default_catch_up(),
            catch_up_window_seconds: default_window(),
        }
    }

    pub fn time_zone(mut self, tz: &str) -> Self {
        self.time_zone = tz.into();
        self
    }

    pub fn args(mut self, args: Value) -> Self {
        self.args = args;
        self
    }

    pub fn queue(mut self, queue: &str) -> Self {
        self.queue = queue.into();
        self
    }

    pub fn catch_up(mut self, policy: CatchUp, window_seconds: u64) -> Self {
        self.catch_up = policy;
        self.catch_up_window_seconds = window_seconds;
        self
    }

    pub(crate) fn validate(&self) -> Result<(Cron, Tz)> {
        let bad = |reason: String| Error::InvalidInput { source_name: format!("schedule {:?}", self.name), reason };
        if self.name.is_empty()
            || self.name.len() > 100
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        {
            return Err(bad("a name is 1 to 100 letters, digits, `_`, `-`, `.` or `:`".into()));
        }
        let cron = parse_cron(&self.cron).map_err(|e| bad(e.to_string()))?;
        let tz = Tz::from_str(&self.time_zone).map_err(|_| bad(format!("unknown time zone {:?}", self.time_zone)))?;
        NewJob::new(&self.kind, self.args.clone()).queue(&self.queue).validate()?;
        if !(self.args.is_null() || self.args.is_object()) {
            return Err(bad("args must be an object (each run adds `scheduled_at` to it)".into()));
        }
        Ok((cron, tz))
    }
}

fn parse_cron(pattern: &str) -> std::result::Result<Cron, Error> {
    let parsed =
        croner::parser::CronParser::builder().seconds(croner::parser::Seconds::Optional).build().parse(pattern);
    parsed
        .map_err(|e| Error::InvalidInput { source_name: "cron expression".into(), reason: format!("{pattern:?}: {e}") })
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Schedule {
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    pub enabled: bool,
    /// The last occurrence handled (fired, or passed over by the catch-up policy).
    pub last_fire: Option<Timestamp>,
    /// The next occurrence after it.
    pub next_fire: Option<Timestamp>,
    pub created_at: Timestamp,
}

const SCHEDULE_COLS: &str =
    "name, cron, time_zone, kind, queue, args, catch_up, catch_up_window, enabled, last_fire, created_at";

fn schedule_from_row(row: &Row<'_>) -> rusqlite::Result<Schedule> {
    let args: String = row.get(5)?;
    let catch_up: String = row.get(6)?;
    let spec = ScheduleSpec {
        name: row.get(0)?,
        cron: row.get(1)?,
        time_zone: row.get(2)?,
        kind: row.get(3)?,
        queue: row.get(4)?,
        args: serde_json::from_str(&args).unwrap_or(Value::Null),
        // The table's CHECK allows only the three.
        catch_up: CatchUp::parse(&catch_up).unwrap_or(CatchUp::None),
        catch_up_window_seconds: row.get::<_, i64>(7)?.max(0) as u64,
    };
    let last_fire: Option<i64> = row.get(9)?;
    let created_at = Timestamp(row.get(10)?);
    let next_fire =
        spec.validate().ok().and_then(|(cron, tz)| next_after(&cron, tz, last_fire.unwrap_or(created_at.0)));
    Ok(Schedule { spec, enabled: row.get(8)?, last_fire: last_fire.map(Timestamp), next_fire, created_at })
}

fn schedule_by_name(conn: &Connection, name: &str) -> Result<Schedule> {
    conn.prepare_cached(&format!("SELECT {SCHEDULE_COLS} FROM cairn_schedules WHERE name = ?1"))?
        .query_row([name], schedule_from_row)
        .optional()?
        .ok_or_else(|| Error::ScheduleNotFound { name: name.into() })
}

/// The first occurrence strictly after `after_ms`.
fn next_after(cron: &Cron, tz: Tz, after_ms: i64) -> Option<Timestamp> {
    let after: DateTime<Tz> = tz.timestamp_millis_opt(after_ms).single()?;
    cron.find_next_occurrence(&after, false).ok().map(|t| Timestamp(t.with_timezone(&Utc).timestamp_millis()))
}

/// One occurrence a tick fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Fired {
    pub schedule: String,
    pub occurrence: Timestamp,
    pub job: Enqueued,
}

/// The occurrences of a schedule after `last` up to `now` that run, and the occurrence its
/// last fire moves to (the newest not after now, whether it ran or was passed over).
fn due(spec: &ScheduleSpec, cron: &Cron, tz: Tz, last: i64, now: i64) -> (Vec<i64>, Option<i64>) {
    let Some(newest) = tz
        .timestamp_millis_opt(now)
        .single()
        .and_then(|now| cron.find_previous_occurrence(&now, true).ok())
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
        .filter(|t| *t > last)
    else {
        return (Vec::new(), None);
    };
    let window = spec.catch_up_window_seconds.saturating_mul(1000).min(i64::MAX as u64) as i64;
    let oldest = match spec.catch_up {
        CatchUp::None => now.saturating_sub(DUE_GRACE_MS),
        CatchUp::One | CatchUp::All => now.saturating_sub(window.max(DUE_GRACE_MS)),
    };
    if spec.catch_up != CatchUp::All {
        let runs = if newest >= oldest { vec![newest] } else { Vec::new() };
        return (runs, Some(newest));
    }
    // Occurrences older than the window are passed over: walk from just before it.
    let mut cursor = last.max(oldest.saturating_sub(1));
    let mut runs = Vec::new();
    while let Some(next) = next_after(cron, tz, cursor).filter(|n| n.0 <= now) {
        runs.push(next.0);
        cursor = next.0;
        if runs.len() == MAX_FIRES_PER_TICK {
            // The rest fire at the next tick.
            return (runs, Some(cursor));
        }
    }
    (runs, Some(newest))
}

impl Queue {
    /// Adds a schedule (or, with `replace`, replaces the one of that name, keeping when it
    /// last fired). Its first occurrence is the first after now.
    pub fn add_schedule(&self, spec: ScheduleSpec, replace: bool) -> Result<Schedule> {
        spec.validate()?;
        let now = self.now();
        self.store().write(move |tx| {
            let args = String::from_utf8_lossy(&canonical_json(&spec.args)).into_owned();
            let existing = schedule_by_name(tx.conn, &spec.name).ok();
            if existing.is_some() && !replace {
                return Err(Error::ScheduleExists { name: spec.name.clone() });
            }
            tx.conn
                .prepare_cached(
                    "INSERT INTO cairn_schedules (name, cron, time_zone, kind, queue, args, catch_up, catch_up_window,
                         enabled, last_fire, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?9)
                     ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, time_zone = excluded.time_zone,
                         kind = excluded.kind, queue = excluded.queue, args = excluded.args,
                         catch_up = excluded.catch_up, catch_up_window = excluded.catch_up_window",
                )?
                .execute(params![
                    spec.name,
                    spec.cron,
                    spec.time_zone,
                    spec.kind,
                    spec.queue,
                    args,
                    spec.catch_up.as_str(),
                    spec.catch_up_window_seconds.min(i64::MAX as u64) as i64,
                    now.0,
                ])?;
            let verb = if existing.is_some() { "replaced" } else { "added" };
            tx.audit(
                "schedule.add",
                &spec.name,
                "ok",
                &format!("{verb}: {} {} -> {}", spec.cron, spec.time_zone, spec.kind),
            )?;
            schedule_by_name(tx.conn, &spec.name)
        })
    }

    /// Removes a schedule (jobs it enqueued stay).
    pub fn remove_schedule(&self, name: &str) -> Result<Schedule> {
        let name = name.to_string();
        self.store().write(move |tx| {
            let schedule = schedule_by_name(tx.conn, &name)?;
            tx.conn.execute("DELETE FROM cairn_schedules WHERE name = ?1", [&name])?;
            tx.audit("schedule.remove", &name, "ok", &schedule.spec.cron)?;
            Ok(schedule)
        })
    }

    /// Turns a schedule on or off (an off schedule passes over what it would have fired).
    pub fn enable_schedule(&self, name: &str, enabled: bool) -> Result<Schedule> {
        let (name, now) = (name.to_string(), self.now());
        self.store().write(move |tx| {
            schedule_by_name(tx.conn, &name)?;
            // Turned on again, it starts from now rather than catching up while it was off.
            tx.conn.execute(
                "UPDATE cairn_schedules SET enabled = ?2, last_fire = CASE WHEN ?2 AND NOT enabled THEN ?3 ELSE last_fire END
                 WHERE name = ?1",
                params![name, enabled, now.0],
            )?;
            tx.audit("schedule.enable", &name, "ok", if enabled { "on" } else { "off" })?;
            schedule_by_name(tx.conn, &name)
        })
    }

    pub fn schedules(&self) -> Result<Vec<Schedule>> {
        let conn = self.store().reader()?;
        let mut stmt = conn.prepare_cached(&format!("SELECT {SCHEDULE_COLS} FROM cairn_schedules ORDER BY name"))?;
        let all = stmt.query_map([], schedule_from_row)?.collect::<rusqlite::Result<_>>()?;
        Ok(all)
    }

    pub fn schedule(&self, name: &str) -> Result<Schedule> {
        let conn = self.store().reader()?;
        schedule_by_name(&conn, name)
    }

    /// Enqueues a schedule's job now, outside its timetable (its last fire is not moved).
    pub fn run_schedule_now(&self, name: &str) -> Result<Enqueued> {
        let (name, now) = (name.to_string(), self.now());
        let enqueued = self.store().write(move |tx| {
            let schedule = schedule_by_name(tx.conn, &name)?;
            let job = fire(tx, &schedule.spec, now, now)?;
            tx.audit("schedule.run_now", &name, "ok", &format!("job {}", job.job.id))?;
            Ok(job)
        })?;
        self.store().jobs_changed([&enqueued.job]);
        Ok(enqueued)
    }

    /// Fires every enabled schedule's due occurrences (by its catch-up policy) as of the
    /// queue's clock, each schedule in one transaction with the move of its last fire.
    pub fn tick(&self) -> Result<Vec<Fired>> {
        let now = self.now();
        let mut fired = Vec::new();
        for schedule in self.schedules()? {
            if !schedule.enabled || schedule.next_fire.is_none_or(|n| n > now) {
                continue;
            }
            let name = schedule.spec.name.clone();
            let result = self.store().write(move |tx| {
                // Read again inside the transaction: another tick may have handled it.
                let schedule = schedule_by_name(tx.conn, &name)?;
                let (cron, tz) = schedule.spec.validate()?;
                let last = schedule.last_fire.unwrap_or(schedule.created_at).0;
                let (runs, newest) = due(&schedule.spec, &cron, tz, last, now.0);
                let mut fired = Vec::new();
                if let Some(newest) = newest {
                    tx.conn
                        .execute("UPDATE cairn_schedules SET last_fire = ?2 WHERE name = ?1", params![name, newest])?;
                }
                for occurrence in runs {
                    let job = fire(tx, &schedule.spec, Timestamp(occurrence), now)?;
                    fired.push(Fired { schedule: name.clone(), occurrence: Timestamp(occurrence), job });
                }
                Ok(fired)
            });
            match result {
                Ok(mut f) => {
                    self.store().jobs_changed(f.iter().filter(|f| !f.job.duplicate).map(|f| &f.job.job));
                    fired.append(&mut f);
                }
                Err(e) => tracing::warn!(schedule = %schedule.spec.name, error = %e, "a schedule could not fire"),
            }
        }
        Ok(fired)
    }
}

/// Enqueues one occurrence's job: its args with `scheduled_at`, unique for the occurrence.
fn fire(tx: &mut Tx<'_>, spec: &ScheduleSpec, occurrence: Timestamp, now: Timestamp) -> Result<Enqueued> {
    let mut args = match &spec.args {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    args.insert("scheduled_at".into(), serde_json::to_value(occurrence).unwrap_or(Value::Null));
    let mut job = NewJob::new(&spec.kind, Value::Object(args)).queue(&spec.queue).run_at(now);
    job.tags = vec![format!("schedule:{}", spec.name)];
    tx.enqueue(&job)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).expect("time").timestamp_millis()
    }

    fn hourly(policy: CatchUp) -> (ScheduleSpec, Cron, Tz) {
        let spec = ScheduleSpec::new("h", "0 * * * *", "k").catch_up(policy, 3 * 3600);
        let (cron, tz) = spec.validate().expect("valid");
        (spec, cron, tz)
    }

    #[test]
    fn catch_up_policies_choose_what_runs() {
        let last = at("2026-01-01T00:00:00Z");
        let now = at("2026-01-01T05:30:00Z");
        let (spec, cron, tz) = hourly(CatchUp::None);
        assert_eq!(due(&spec, &cron, tz, last, now), (vec![], Some(at("2026-01-01T05:00:00Z"))));
        let (spec, cron, tz) = hourly(CatchUp::One);
        assert_eq!(
            due(&spec, &cron, tz, last, now),
            (vec![at("2026-01-01T05:00:00Z")], Some(at("2026-01-01T05:00:00Z")))
        );
        let (spec, cron, tz) = hourly(CatchUp::All);
        let runs = vec![at("2026-01-01T03:00:00Z"), at("2026-01-01T04:00:00Z"), at("2026-01-01T05:00:00Z")];
        assert_eq!(due(&spec, &cron, tz, last, now), (runs, Some(at("2026-01-01T05:00:00Z"))), "within the window");
        // On time, every policy fires.
        for policy in [CatchUp::None, CatchUp::One, CatchUp::All] {
            let (spec, cron, tz) = hourly(policy);
            let (runs, _) = due(&spec, &cron, tz, at("2026-01-01T05:00:00Z"), at("2026-01-01T06:00:00.500Z"));
            assert_eq!(runs, vec![at("2026-01-01T06:00:00Z")], "{policy:?}");
        }
    }

    #[test]
    fn bad_specs_are_refused() {
        for (cron, tz) in [("61 * * * *", "UTC"), ("* * *", "UTC"), ("0 * * * *", "Mars/Olympus")] {
            let e = ScheduleSpec::new("s", cron, "k").time_zone(tz).validate().expect_err(cron);
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{e}");
        }
    }
}
