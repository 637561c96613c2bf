//! Cron schedules: a restart across a scheduled time under each catch-up policy, DST
//! transitions in a real time zone, and two schedulers racing without a double fire.

use std::sync::Arc;
use std::time::Duration;

use cairn::{CatchUp, Clock, ErrorKind, JobFilter, ManualClock, ScheduleSpec, Store, StoreOptions, Timestamp};
use serde_json::json;

fn at(rfc3339: &str) -> Timestamp {
    let parsed: Timestamp = serde_json::from_value(json!(rfc3339)).expect("timestamp");
    parsed
}

fn fired_at(store: &Store) -> Vec<String> {
    let mut jobs = store.queue().list(&JobFilter::default()).expect("list");
    jobs.reverse();
    jobs.iter().map(|j| j.args["scheduled_at"].as_str().unwrap_or_default().to_string()).collect()
}

/// Adds an hourly schedule at 00:00, "closes" the store, reopens it at 05:30 and ticks.
fn restart_across(policy: CatchUp) -> Vec<String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let clock = ManualClock::new(at("2026-03-01T00:00:00Z"));
    {
        let store = Store::open(&dir, StoreOptions::default()).expect("open");
        let queue = store.queue().with_clock(clock.clone());
        let spec = ScheduleSpec::new("hourly", "0 * * * *", "report").catch_up(policy, 3 * 3600);
        queue.add_schedule(spec, false).expect("add");
        clock.set(at("2026-03-01T01:00:00.200Z"));
        assert_eq!(queue.tick().expect("tick").len(), 1, "fires on time");
        assert!(queue.tick().expect("tick again").is_empty(), "and only once");
        store.close().expect("close");
    }
    clock.set(at("2026-03-01T05:30:00Z"));
    let store = Store::open(&dir, StoreOptions::existing()).expect("reopen");
    let queue = store.queue().with_clock(clock.clone());
    queue.tick().expect("tick after restart");
    assert!(queue.tick().expect("tick again").is_empty(), "a second tick repeats nothing");
    let schedule = queue.schedule("hourly").expect("schedule");
    assert_eq!(schedule.last_fire, Some(at("2026-03-01T05:00:00Z")), "missed runs are handled, not revisited");
    assert_eq!(schedule.next_fire, Some(at("2026-03-01T06:00:00Z")));
    fired_at(&store)
}

#[test]
fn a_restart_across_scheduled_times_follows_the_catch_up_policy() {
    let on_time = "2026-03-01T01:00:00.000Z";
    assert_eq!(restart_across(CatchUp::None), [on_time], "none: missed runs are skipped");
    assert_eq!(restart_across(CatchUp::One), [on_time, "2026-03-01T05:00:00.000Z"], "one: the latest missed run");
    assert_eq!(
        restart_across(CatchUp::All),
        [on_time, "2026-03-01T03:00:00.000Z", "2026-03-01T04:00:00.000Z", "2026-03-01T05:00:00.000Z"],
        "all: every missed run within the three-hour window"
    );
}

/// Ticks a daily schedule every 10 minutes over `from..to` and returns the fire times.
fn fires_over(cron: &str, tz: &str, from: &str, to: &str) -> Vec<Timestamp> {
    let (_dir, store) = crate::temp_store();
    let clock = ManualClock::new(at(from));
    let queue = store.queue().with_clock(clock.clone());
    queue
        .add_schedule(ScheduleSpec::new("daily", cron, "k").time_zone(tz).catch_up(CatchUp::None, 0), false)
        .expect("add");
    let mut fired = Vec::new();
    while clock.now() < at(to) {
        clock.advance(Duration::from_secs(600));
        fired.extend(queue.tick().expect("tick").into_iter().map(|f| f.occurrence));
    }
    fired
}

#[test]
fn dst_transitions_neither_skip_nor_repeat_a_daily_run() {
    // New York springs forward on 2026-03-08 (02:00 -> 03:00): 02:30 does not exist that day
    // and runs at the first instant after the gap, 03:00 EDT (07:00Z).
    let spring = fires_over("30 2 * * *", "America/New_York", "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z");
    assert_eq!(spring, [at("2026-03-07T07:30:00Z"), at("2026-03-08T07:00:00Z"), at("2026-03-09T06:30:00Z")]);
    // It falls back on 2026-11-01 (02:00 -> 01:00): 01:30 happens twice and runs once.
    let fall = fires_over("30 1 * * *", "America/New_York", "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z");
    assert_eq!(fall, [at("2026-10-31T05:30:00Z"), at("2026-11-01T05:30:00Z"), at("2026-11-02T06:30:00Z")]);
    // An hourly schedule keeps firing every real hour through the repeated hour.
    let hourly = fires_over("0 * * * *", "America/New_York", "2026-11-01T04:30:00Z", "2026-11-01T07:30:00Z");
    assert_eq!(hourly, [at("2026-11-01T05:00:00Z"), at("2026-11-01T06:00:00Z"), at("2026-11-01T07:00:00Z")]);
}

#[test]
fn two_schedulers_racing_fire_each_occurrence_once() {
    let (_dir, store) = crate::temp_store();
    let clock = ManualClock::new(at("2026-05-01T00:00:00Z"));
    let queue = store.queue().with_clock(clock.clone());
    queue
        .add_schedule(ScheduleSpec::new("minutely", "* * * * *", "k").catch_up(CatchUp::All, 3600), false)
        .expect("add");
    let fired = Arc::new(std::sync::Mutex::new(0usize));
    for minute in 1..=20 {
        clock.set(Timestamp(at("2026-05-01T00:00:00Z").0 + minute * 60_000 + 100));
        let racers: Vec<_> = (0..4)
            .map(|_| {
                let (queue, fired) = (queue.clone(), fired.clone());
                std::thread::spawn(move || {
                    let n = queue.tick().expect("tick").len();
                    *fired.lock().expect("count") += n;
                })
            })
            .collect();
        racers.into_iter().for_each(|r| r.join().expect("racer"));
    }
    assert_eq!(*fired.lock().expect("count"), 20);
    let mut times = fired_at(&store);
    let n = times.len();
    times.dedup();
    assert_eq!((n, times.len()), (20, 20), "twenty jobs, no two for the same minute");
}

#[test]
fn schedules_are_managed_and_bad_ones_refused() {
    let (_dir, store) = crate::temp_store();
    let clock = ManualClock::new(at("2026-05-01T00:00:00Z"));
    let queue = store.queue().with_clock(clock.clone());
    let spec = ScheduleSpec::new("nightly", "0 3 * * *", "cairn.backup").time_zone("Europe/Berlin");
    let added = queue.add_schedule(spec.clone(), false).expect("add");
    assert_eq!(added.next_fire, Some(at("2026-05-01T01:00:00Z")), "03:00 in Berlin (CEST) is 01:00Z");
    assert_eq!(queue.add_schedule(spec.clone(), false).expect_err("twice").kind(), ErrorKind::AlreadyExists);
    queue.add_schedule(spec.catch_up(CatchUp::All, 60), true).expect("replace");
    let now = queue.run_schedule_now("nightly").expect("run now");
    assert_eq!(now.job.kind, "cairn.backup");
    let timetable = queue.schedule("nightly").expect("get");
    assert_eq!(timetable.last_fire, Some(at("2026-05-01T00:00:00Z")), "running now does not move its timetable");
    queue.enable_schedule("nightly", false).expect("off");
    clock.advance(Duration::from_secs(86_400));
    assert!(queue.tick().expect("tick").is_empty(), "an off schedule fires nothing");
    queue.enable_schedule("nightly", true).expect("on");
    assert!(queue.tick().expect("tick").is_empty(), "turned on, it does not catch up while it was off");
    queue.remove_schedule("nightly").expect("remove");
    assert_eq!(queue.remove_schedule("nightly").expect_err("gone").kind(), ErrorKind::NotFound);
    for bad in [
        ScheduleSpec::new("x", "not cron", "k"),
        ScheduleSpec::new("x", "0 * * * *", "k").time_zone("Nowhere/Town"),
        ScheduleSpec::new("bad name", "0 * * * *", "k"),
        ScheduleSpec::new("x", "0 * * * *", "k").args(json!([1])),
    ] {
        assert_eq!(queue.add_schedule(bad, false).expect_err("bad").kind(), ErrorKind::InvalidInput);
    }
    let trail = store.audit_log(Some("action = 'schedule.add'"), 0, 10).expect("audit");
    assert_eq!(trail.len(), 2);
}
