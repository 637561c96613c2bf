//! The job queue: enqueue in a record's transaction, claim order, leases and fencing,
//! backoff with an injectable clock, dead letters, unique jobs under concurrent enqueuers,
//! cancel/retry/restart/delete, queue limits, pruning, worker pools, and jobs in backups.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn::{
    Backoff, ClaimFilter, Done, Error, ErrorKind, Failure, JobContext, JobFilter, JobState, ManualClock, NewJob, Queue,
    Retention, Timestamp, UniqueOptions, WorkerOptions, Workers,
};
use serde_json::json;

const T0: Timestamp = Timestamp(1_800_000_000_000);
const LEASE: Duration = Duration::from_secs(30);

fn manual_queue(store: &cairn::Store) -> (Arc<ManualClock>, Queue) {
    let clock = ManualClock::new(T0);
    let queue = store.queue().with_clock(clock.clone()).with_backoff(Backoff { base_ms: 1000, cap_ms: 60_000 });
    (clock, queue)
}

fn any(kinds: &[&str]) -> ClaimFilter {
    ClaimFilter::new(kinds)
}

#[test]
fn a_job_enqueued_with_a_record_exists_only_if_the_record_does() {
    let (_dir, store) = crate::with_notes();
    let queue = store.queue();
    let job = store
        .transaction(|tx| {
            let note = tx.create("notes", None, json!({"title": "transcribe me"}))?;
            tx.enqueue(&NewJob::new("transcribe", json!({"note": note.id})))
        })
        .expect("commit");
    assert_eq!(queue.get(job.job.id).expect("job").state, JobState::Available);
    // A transaction that fails takes its job with it.
    let failed = store.transaction(|tx| {
        tx.enqueue(&NewJob::new("transcribe", json!({"note": "x"})))?;
        tx.create("notes", None, json!({"n": 1})) // no title: invalid
    });
    assert!(failed.is_err());
    assert_eq!(queue.list(&JobFilter::default()).expect("list").len(), 1, "the failed transaction enqueued nothing");
}

#[test]
fn claims_follow_priority_then_run_at_then_age() {
    let (_dir, store) = crate::temp_store();
    let (clock, queue) = manual_queue(&store);
    let later = Timestamp(T0.0 + 60_000);
    let a = queue.enqueue(NewJob::new("k", json!("a")).priority(5)).expect("a").job.id;
    let b = queue.enqueue(NewJob::new("k", json!("b")).priority(1)).expect("b").job.id;
    let c = queue.enqueue(NewJob::new("k", json!("c")).priority(1)).expect("c").job.id;
    let future = queue.enqueue(NewJob::new("k", json!("f")).priority(0).run_at(later)).expect("f");
    assert_eq!(future.job.state, JobState::Scheduled);
    let _other_kind = queue.enqueue(NewJob::new("other", json!(null)).priority(-10)).expect("other");
    let claimed: Vec<i64> = queue.claim("w", &any(&["k"]), 10, LEASE).expect("claim").iter().map(|j| j.id).collect();
    assert_eq!(claimed, [b, c, a], "a scheduled job waits for its time; another kind is left alone");
    clock.set(later);
    let claimed = queue.claim("w", &any(&["k"]), 10, LEASE).expect("claim");
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), [future.job.id]);
    assert_eq!(claimed[0].attempt, 1);
    assert_eq!(claimed[0].lease_owner.as_deref(), Some("w"));
}

#[test]
fn a_worker_that_lost_its_lease_cannot_complete_fail_or_report_progress() {
    let (_dir, store) = crate::temp_store();
    let (clock, queue) = manual_queue(&store);
    let id = queue.enqueue(NewJob::new("k", json!({}))).expect("enqueue").job.id;
    let first = queue.claim("w1", &any(&["k"]), 1, LEASE).expect("claim").remove(0);
    queue.progress(first.lease(), 10.0, Some("started")).expect("progress while held");
    // w1 stalls past its lease; the reaper gives the job back, and w2 claims it.
    clock.advance(LEASE + Duration::from_secs(1));
    let reaped = queue.reap().expect("reap");
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].state, JobState::Retryable);
    clock.advance(Duration::from_secs(120)); // past any backoff
    let second = queue.claim("w2", &any(&["k"]), 1, LEASE).expect("claim").remove(0);
    assert_eq!((second.id, second.attempt), (id, 2));

    let lost = |e: Error| assert!(matches!(e, Error::LeaseLost { id: i, attempt: 1 } if i == id), "{e}");
    lost(queue.complete(first.lease(), Some(json!("w1 result"))).expect_err("stale complete"));
    lost(queue.fail(first.lease(), "w1 failed", true).expect_err("stale fail"));
    lost(queue.progress(first.lease(), 99.0, None).expect_err("stale progress"));
    lost(queue.heartbeat(first.lease(), LEASE).expect_err("stale heartbeat"));
    lost(queue.cancelled(first.lease()).expect_err("stale cancel"));
    let e = queue.complete(first.lease(), None).expect_err("again");
    assert_eq!(e.kind(), ErrorKind::Conflict);

    let done = queue.complete(second.lease(), Some(json!("w2 result"))).expect("w2 completes");
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result, Some(json!("w2 result")));
    // And once completed, no one (not even the holder of the last attempt) completes again.
    assert!(matches!(queue.complete(second.lease(), None), Err(Error::LeaseLost { .. })));
    let job = queue.get(id).expect("job");
    assert_eq!(job.errors.len(), 1, "the expired lease is recorded as the first attempt's error");
    assert!(job.errors[0].error.contains("lease of worker w1 expired"), "{:?}", job.errors);
}

#[test]
fn writes_made_with_a_completion_happen_only_for_the_attempt_that_holds_the_job() {
    let (_dir, store) = crate::with_notes();
    let (clock, queue) = manual_queue(&store);
    queue.enqueue(NewJob::new("k", json!({}))).expect("enqueue");
    let stale = queue.claim("w1", &any(&["k"]), 1, LEASE).expect("claim").remove(0);
    clock.advance(LEASE * 2);
    queue.reap().expect("reap");
    clock.advance(Duration::from_secs(120));
    let fresh = queue.claim("w2", &any(&["k"]), 1, LEASE).expect("claim").remove(0);
    let write =
        |title: &'static str| move |tx: &mut cairn::Tx<'_>| tx.create("notes", None, json!({"title": title})).map(drop);
    assert!(queue.complete_with(stale.lease(), None, write("stale")).is_err());
    queue.complete_with(fresh.lease(), None, write("fresh")).expect("fresh");
    let titles: Vec<String> = store
        .scan("notes", &Default::default())
        .expect("scan")
        .iter()
        .map(|r| r.body["title"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(titles, ["fresh"]);
}

#[test]
fn retries_back_off_exponentially_with_jitter_then_the_job_is_dead_with_every_error() {
    let (_dir, store) = crate::temp_store();
    let (clock, queue) = manual_queue(&store);
    let backoff = queue.backoff();
    let id = queue.enqueue(NewJob::new("k", json!({})).max_attempts(5)).expect("enqueue").job.id;
    for attempt in 1..=5 {
        let now = queue.now();
        let job = queue.claim("w", &any(&["k"]), 1, LEASE).expect("claim").pop().expect("due");
        assert_eq!(job.attempts_used, attempt);
        let failed = queue.fail(job.lease(), &format!("boom {attempt}"), true).expect("fail");
        if attempt < 5 {
            assert_eq!(failed.state, JobState::Retryable);
            let delay = failed.run_at.0 - now.0;
            let ceiling = backoff.ceiling(attempt).as_millis() as i64;
            assert!((0..=ceiling).contains(&delay), "attempt {attempt}: delay {delay} ms outside [0, {ceiling}]");
            assert_eq!(ceiling, (1000_i64 << (attempt - 1)).min(60_000), "the formula: min(cap, base·2^(n-1))");
            // Not claimable before its time (unless the jitter drew zero).
            if delay > 0 {
                assert!(queue.claim("w", &any(&["k"]), 1, LEASE).expect("early").is_empty());
            }
            clock.set(failed.run_at);
        } else {
            assert_eq!(failed.state, JobState::Discarded, "out of attempts");
            assert!(failed.finished_at.is_some());
        }
    }
    let dead = queue.get(id).expect("job");
    let errors: Vec<&str> = dead.errors.iter().map(|e| e.error.as_str()).collect();
    assert_eq!(errors, ["boom 1", "boom 2", "boom 3", "boom 4", "boom 5"]);
    assert_eq!(dead.errors.iter().map(|e| e.attempt).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    let listed = queue.list(&JobFilter { state: Some(JobState::parse("dead").expect("alias")), ..Default::default() });
    assert_eq!(listed.expect("list").len(), 1);
}

#[test]
fn a_failure_that_will_not_heal_is_dead_at_once() {
    let (_dir, store) = crate::temp_store();
    let (_clock, queue) = manual_queue(&store);
    queue.enqueue(NewJob::new("k", json!({}))).expect("enqueue");
    let job = queue.claim("w", &any(&["k"]), 1, LEASE).expect("claim").remove(0);
    let dead = queue.fail(job.lease(), "bad arguments", false).expect("fail");
    assert_eq!((dead.state, dead.errors.len()), (JobState::Discarded, 1));
}

#[test]
fn unique_jobs_hold_under_eight_concurrent_enqueuers() {
    let (_dir, store) = crate::temp_store();
    let queue = store.queue();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        let args = json!({"file": format!("f{}", i % 5)});
                        queue.enqueue(NewJob::new("scan", args).unique(UniqueOptions::by_args())).expect("enqueue")
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
    let created: Vec<_> = results.iter().filter(|r| !r.duplicate).collect();
    assert_eq!(created.len(), 5, "one job per distinct argument set");
    let ids: BTreeSet<i64> = results.iter().map(|r| r.job.id).collect();
    assert_eq!(ids.len(), 5, "every duplicate names the job that holds the key");
    assert_eq!(queue.list(&JobFilter::default()).expect("list").len(), 5);

    // Once the holder completes, the key is free again (no period given).
    let job = queue.claim("w", &any(&["scan"]), 1, LEASE).expect("claim").remove(0);
    queue.complete(job.lease(), None).expect("complete");
    let again = queue.enqueue(NewJob::new("scan", job.args.clone()).unique(UniqueOptions::by_args())).expect("again");
    assert!(!again.duplicate);
}

#[test]
fn a_unique_period_keeps_the_key_through_completion() {
    let (_dir, store) = crate::temp_store();
    let (clock, queue) = manual_queue(&store);
    let unique = || UniqueOptions::by_args().within(3600);
    let first = queue.enqueue(NewJob::new("digest", json!({})).unique(unique())).expect("first");
    let job = queue.claim("w", &any(&["digest"]), 1, LEASE).expect("claim").remove(0);
    queue.complete(job.lease(), None).expect("complete");
    let same_hour = queue.enqueue(NewJob::new("digest", json!({})).unique(unique())).expect("same hour");
    assert!(same_hour.duplicate);
    assert_eq!(same_hour.job.id, first.job.id);
    clock.advance(Duration::from_secs(3600));
    assert!(!queue.enqueue(NewJob::new("digest", json!({})).unique(unique())).expect("next hour").duplicate);
}

#[test]
fn cancel_retry_restart_and_delete() {
    let (_dir, store) = crate::temp_store();
    let (_clock, queue) = manual_queue(&store);
    // A waiting job is cancelled at once.
    let waiting = queue.enqueue(NewJob::new("k", json!(1))).expect("enqueue").job.id;
    assert_eq!(queue.cancel(waiting).expect("cancel").state, JobState::Cancelled);
    let e = queue.cancel(waiting).expect_err("finished");
    assert_eq!(e.kind(), ErrorKind::NotAllowed);
    // A running one is told; its worker stops and says so.
    let running = queue.enqueue(NewJob::new("k", json!(2))).expect("enqueue").job.id;
    let job = queue.claim("w", &any(&["k"]), 1, LEASE).expect("claim").pop().expect("job");
    assert_eq!(job.id, running);
    let asked = queue.cancel(running).expect("cancel");
    assert_eq!((asked.state, asked.cancel_requested), (JobState::Running, true));
    assert!(queue.heartbeat(job.lease(), LEASE).expect("beat").cancel_requested);
    assert_eq!(queue.delete(running).expect_err("running").kind(), ErrorKind::NotAllowed);
    assert_eq!(queue.restart(running).expect_err("running").kind(), ErrorKind::NotAllowed);
    assert_eq!(queue.cancelled(job.lease()).expect("stopped").state, JobState::Cancelled);
    // Retry brings it back with its history; restart from scratch.
    let retried = queue.retry(running).expect("retry");
    assert_eq!((retried.state, retried.attempts_used, retried.cancel_requested), (JobState::Available, 0, false));
    let job = queue.claim("w", &any(&["k"]), 1, LEASE).expect("claim").pop().expect("job");
    assert_eq!(job.attempt, 2, "the fencing attempt only grows");
    queue.fail(job.lease(), "nope", false).expect("fail");
    let restarted = queue.restart(running).expect("restart");
    assert!(restarted.errors.is_empty() && restarted.attempts_used == 0);
    assert_eq!(queue.delete(running).expect("delete").id, running);
    assert!(matches!(queue.get(running), Err(Error::JobNotFound { .. })));
    assert!(matches!(queue.cancel(12345), Err(Error::JobNotFound { id: 12345 })));
    // Every admin action is audited.
    let trail = store
        .audit_log(Some("action in ('job.cancel', 'job.retry', 'job.restart', 'job.delete')"), 0, 100)
        .expect("audit");
    let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["job.cancel", "job.cancel", "job.retry", "job.restart", "job.delete"]);
}

#[test]
fn a_queue_limit_holds_across_workers_and_pausing_stops_claims() {
    let (_dir, store) = crate::temp_store();
    let (_clock, queue) = manual_queue(&store);
    for i in 0..5 {
        queue.enqueue(NewJob::new("k", json!(i)).queue("media")).expect("enqueue");
    }
    queue.configure_queue("media", Some(2), false).expect("limit");
    assert_eq!(queue.claim("w1", &any(&["k"]), 5, LEASE).expect("claim").len(), 2);
    assert!(queue.claim("w2", &any(&["k"]), 5, LEASE).expect("claim").is_empty(), "the limit is store-wide");
    queue.configure_queue("media", Some(2), true).expect("pause");
    let stats = queue.stats().expect("stats");
    assert_eq!((stats[0].running, stats[0].available, stats[0].paused), (2, 3, true));
    queue.configure_queue("media", None, false).expect("unlimited");
    assert_eq!(queue.claim("w2", &any(&["k"]), 5, LEASE).expect("claim").len(), 3);
    assert!(queue.configure_queue("media", Some(0), false).is_err());
}

#[test]
fn pruning_deletes_only_finished_jobs_past_their_retention() {
    let (_dir, store) = crate::temp_store();
    let (clock, queue) = manual_queue(&store);
    let done = queue.enqueue(NewJob::new("k", json!(1))).expect("enqueue").job.id;
    let dead = queue.enqueue(NewJob::new("k", json!(2))).expect("enqueue").job.id;
    for job in queue.claim("w", &any(&["k"]), 2, LEASE).expect("claim") {
        if job.id == done {
            queue.complete(job.lease(), None).expect("complete");
        } else {
            queue.fail(job.lease(), "x", false).expect("fail");
        }
    }
    let waiting = queue.enqueue(NewJob::new("k", json!(3))).expect("enqueue").job.id;
    let retention = Retention { completed_seconds: 3600, failed_seconds: 7200 };
    assert_eq!(queue.prune(&retention).expect("prune"), 0, "nothing is old enough");
    clock.advance(Duration::from_secs(3601));
    assert_eq!(queue.prune(&retention).expect("prune"), 1);
    assert!(queue.get(done).is_err() && queue.get(dead).is_ok());
    clock.advance(Duration::from_secs(3600));
    assert_eq!(queue.prune(&retention).expect("prune"), 1);
    assert!(queue.get(waiting).is_ok(), "a job that has not run is never pruned");
}

#[test]
fn bad_jobs_are_refused_before_they_reach_the_table() {
    let (_dir, store) = crate::temp_store();
    let queue = store.queue();
    for job in [
        NewJob::new("", json!(null)),
        NewJob::new("has space", json!(null)),
        NewJob::new("k", json!(null)).queue(""),
        NewJob::new("k", json!(null)).max_attempts(0),
        NewJob::new("k", json!(null)).unique(UniqueOptions::by_args().within(0)),
    ] {
        assert_eq!(queue.enqueue(job).expect_err("bad").kind(), ErrorKind::InvalidInput);
    }
    let job = queue.enqueue(NewJob::new("k", json!(null))).expect("ok");
    let e = queue.progress(job.job.lease(), 101.0, None).expect_err("not a percentage");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn a_pool_runs_handlers_reports_progress_and_honours_a_cancel() {
    let (_dir, store) = crate::with_notes();
    let queue = store.queue();
    let mut workers = Workers::new();
    workers.register("note", |ctx: &JobContext| {
        ctx.progress(50.0, Some("halfway"))?;
        let title = ctx.args()["title"].as_str().unwrap_or_default().to_string();
        Ok(Done::new()
            .result(json!({"ok": true}))
            .writes(move |tx| tx.create("notes", None, json!({"title": title})).map(drop)))
    });
    workers.register("flaky", |_: &JobContext| Err(Failure::discard("always")));
    workers.register("slow", |ctx: &JobContext| {
        // Runs until cancelled.
        while !ctx.cancel_token().wait(Duration::from_millis(20)) {}
        Err(Failure::retry("stopped"))
    });
    let pool = workers.start(queue.clone(), WorkerOptions::named("t").concurrency(3).lease(Duration::from_millis(300)));
    let note = queue.enqueue(NewJob::new("note", json!({"title": "from a job"}))).expect("note").job.id;
    let flaky = queue.enqueue(NewJob::new("flaky", json!({}))).expect("flaky").job.id;
    let slow = queue.enqueue(NewJob::new("slow", json!({}))).expect("slow").job.id;
    pool.notify();
    let settled = |id: i64, state: JobState| {
        for _ in 0..1000 {
            if queue.get(id).expect("job").state == state {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("job {id} never became {state:?}: {:?}", queue.get(id));
    };
    settled(note, JobState::Completed);
    settled(flaky, JobState::Discarded);
    settled(slow, JobState::Running);
    let job = queue.get(note).expect("note job");
    assert_eq!((job.progress, job.result.clone()), (Some(100.0), Some(json!({"ok": true}))));
    assert_eq!(store.scan("notes", &Default::default()).expect("scan").len(), 1);
    queue.cancel(slow).expect("cancel");
    settled(slow, JobState::Cancelled);
    let stats = pool.stop(Duration::from_secs(5));
    assert_eq!((stats.completed, stats.cancelled, stats.released), (1, 1, 0));
}

#[test]
fn stopping_a_pool_waits_for_its_jobs_then_gives_back_the_rest() {
    let (_dir, store) = crate::temp_store();
    let queue = store.queue();
    let started = Arc::new(AtomicUsize::new(0));
    let mut workers = Workers::new();
    let seen = started.clone();
    workers.register("quick", move |_: &JobContext| {
        seen.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        Ok(Done::new())
    });
    workers.register("stubborn", |ctx: &JobContext| {
        ctx.cancel_token().wait(Duration::from_secs(30));
        Ok(Done::new())
    });
    let quick = queue.enqueue(NewJob::new("quick", json!({}))).expect("quick").job.id;
    let stubborn = queue.enqueue(NewJob::new("stubborn", json!({}))).expect("stubborn").job.id;
    let pool = workers.start(queue.clone(), WorkerOptions::named("s").concurrency(2));
    while pool.running() < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = pool.stop(Duration::from_millis(500));
    assert_eq!(stats.released, 1);
    assert_eq!(queue.get(quick).expect("quick").state, JobState::Completed, "finished within the grace");
    let back = queue.get(stubborn).expect("stubborn");
    assert_eq!((back.state, back.attempts_used), (JobState::Available, 0), "given back, attempt not used");
}

#[test]
fn jobs_are_in_every_backup() {
    let (_dir, store) = crate::temp_store();
    let queue = store.queue();
    let id = queue.enqueue(NewJob::new("k", json!({"keep": true}))).expect("enqueue").job.id;
    let backup = store.backup(&Default::default(), &mut |_, _, _| {}).expect("backup");
    let target = tempfile::tempdir().expect("tempdir");
    let restored_dir = target.path().join("restored");
    let options = cairn::RestoreOptions { to: Some(restored_dir.clone()), ..Default::default() };
    cairn::Store::restore(store.dir(), &backup.id, &options, &mut |_, _, _| {}).expect("restore");
    let restored = cairn::Store::open(&restored_dir, cairn::StoreOptions::existing()).expect("open");
    assert_eq!(restored.queue().get(id).expect("job").args, json!({"keep": true}));
}

const CRASH_CHILD_ENV: &str = "CAIRN_JOBS_CRASH_CHILD";
const CRASH_LEASE: Duration = Duration::from_millis(300);

/// The workers of the crash test: each job sleeps a little, then completes by writing one
/// `done` record naming the job and the attempt, in the completion's transaction.
fn crash_workers(store: &cairn::Store, name: &str) -> cairn::WorkerPool {
    let mut workers = Workers::new();
    workers.register("work", |ctx: &JobContext| {
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..30)));
        let (job, attempt) = (ctx.job().id, ctx.job().attempt);
        Ok(Done::new().writes(move |tx| tx.create("done", None, json!({"job": job, "attempt": attempt})).map(drop)))
    });
    let queue = store.queue().with_backoff(Backoff { base_ms: 20, cap_ms: 200 });
    workers.start(queue, WorkerOptions::named(name).concurrency(4).lease(CRASH_LEASE).poll(Duration::from_millis(20)))
}

/// A worker process is SIGKILLed at random moments, 24 times; afterwards (and after one
/// last pool drains the queue) every job was completed exactly once: one completion, one
/// record written with it, none lost, and jobs whose worker died were run again.
#[test]
fn a_worker_killed_at_random_moments_completes_every_job_exactly_once() {
    if let Ok(dir) = std::env::var(CRASH_CHILD_ENV) {
        let store = cairn::Store::open(&dir, cairn::StoreOptions::existing()).expect("open");
        let _pool = crash_workers(&store, &format!("child-{}", std::process::id()));
        println!("ready");
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let (_tmp, store) = crate::temp_store();
    store
        .create_collection(
            cairn::CollectionSchema::from_json(
                r#"{"name": "done", "fields": [{"name": "job", "type": "integer"}, {"name": "attempt", "type": "integer"}]}"#,
                "done",
            )
            .expect("schema"),
        )
        .expect("done");
    let jobs = 1500;
    for i in 0..jobs {
        store.queue().enqueue(NewJob::new("work", json!({"i": i})).max_attempts(1000)).expect("enqueue");
    }
    let dir = store.dir().to_path_buf();
    store.close().expect("close");
    // About ten seconds of work; each child gets 50..250 ms of it before it is killed.
    for _ in 0..24 {
        let mut child = crate::ChildRun::spawn(
            "jobs::a_worker_killed_at_random_moments_completes_every_job_exactly_once",
            &[(CRASH_CHILD_ENV, dir.as_os_str())],
        );
        child.wait_for(|l| l == "ready");
        std::thread::sleep(Duration::from_millis(fastrand::u64(50..250)));
        child.kill();
    }
    let store = cairn::Store::open(&dir, cairn::StoreOptions::existing()).expect("reopen");
    let completed = |store: &cairn::Store| {
        let filter = JobFilter { state: Some(JobState::Completed), limit: 10_000, ..Default::default() };
        store.queue().list(&filter).expect("list").len()
    };
    assert!(completed(&store) < jobs, "the kills landed while jobs were left");
    // One last worker, in this process, runs what the killed ones left once their leases expire.
    let pool = crash_workers(&store, "drain");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while completed(&store) < jobs && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    pool.stop(Duration::from_secs(5));
    let all = store.queue().list(&JobFilter { limit: 10_000, ..Default::default() }).expect("list");
    assert_eq!(all.len(), jobs);
    assert!(all.iter().all(|j| j.state == JobState::Completed), "every job completed");
    let mut written: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    let everything = cairn::ScanOptions { limit: 100_000, ..Default::default() };
    for record in store.scan("done", &everything).expect("scan") {
        let job = record.body["job"].as_i64().expect("job");
        written.entry(job).or_default().push(record.body["attempt"].as_i64().expect("attempt"));
    }
    for job in &all {
        let attempts = written.get(&job.id).cloned().unwrap_or_default();
        assert_eq!(attempts, vec![job.attempt], "job {} completed once, by the attempt that holds it", job.id);
    }
    assert!(all.iter().any(|j| j.attempt > 1), "some jobs were re-run after their worker died");
}

#[test]
fn listeners_hear_of_every_change_of_a_job_and_of_what_they_missed() {
    let (tmp, store) = crate::temp_store();
    let events = store.job_events();
    let queue = store.queue();
    let next = || match events.wait(Duration::from_secs(5)) {
        Some(cairn::JobEvent::Changed(job)) => (job.id, job.state, job.progress),
        other => panic!("expected a change, got {other:?}"),
    };
    let id = queue.enqueue(NewJob::new("k", json!({}))).expect("enqueue").job.id;
    assert_eq!(next(), (id, JobState::Available, None));
    let job = queue.claim("w", &any(&["k"]), 1, LEASE).expect("claim").remove(0);
    assert_eq!(next(), (id, JobState::Running, None));
    queue.heartbeat(job.lease(), LEASE).expect("beat");
    queue.progress(job.lease(), 40.0, Some("reading")).expect("progress");
    assert_eq!(next(), (id, JobState::Running, Some(40.0)), "a heartbeat is not an event; progress is");
    queue.complete(job.lease(), None).expect("complete");
    assert_eq!(next(), (id, JobState::Completed, Some(100.0)));
    queue.delete(id).expect("delete");
    assert_eq!(events.wait(Duration::from_secs(5)), Some(cairn::JobEvent::Deleted(id)));
    // A refused change is no event.
    assert!(queue.cancel(id).is_err());
    assert_eq!(events.wait(Duration::ZERO), None);
    // One who stops reading is told it missed events rather than holding the queue up.
    for i in 0..cairn::JOB_EVENTS_CAPACITY + 1 {
        queue.enqueue(NewJob::new("k", json!({"i": i}))).expect("enqueue");
    }
    assert_eq!(events.wait(Duration::ZERO), Some(cairn::JobEvent::Missed));
    queue.enqueue(NewJob::new("k", json!({"after": true}))).expect("enqueue");
    assert!(matches!(events.wait(Duration::ZERO), Some(cairn::JobEvent::Changed(_))), "and hears again after");
    drop((queue, store));
    assert_eq!(events.wait(Duration::from_secs(5)), Some(cairn::JobEvent::Closed), "the store closed");
    drop(tmp);
}
