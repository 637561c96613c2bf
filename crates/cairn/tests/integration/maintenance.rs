//! The built-in maintenance jobs and the jobs runtime: schedules follow the configuration
//! without being rewritten at every start; backup, verify, check, blob GC and pruning run
//! as jobs and report what they did; a damaged backup makes the verify job fail visibly.

use std::time::{Duration, Instant};

use cairn::{
    BackupOptions, BackupReason, Done, JobContext, JobFilter, JobState, JobsConfig, JobsRuntime, NewJob, Store,
    Workers, BACKUP_KIND, BLOB_GC_KIND, CHECK_KIND, PRUNE_JOBS_KIND, VERIFY_BACKUPS_KIND,
};
use serde_json::json;

fn config() -> JobsConfig {
    JobsConfig { scheduler: false, lease_seconds: 5, ..JobsConfig::default() }
}

/// Waits (at most 60 s) until job `id` is finished, and returns it.
fn finished(store: &Store, id: i64) -> cairn::Job {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = store.queue().get(id).expect("job");
        if job.state.is_finished() || Instant::now() > deadline {
            return job;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn schedules_follow_the_configuration_and_a_restart_rewrites_nothing() {
    let (_dir, store) = crate::temp_store();
    let mut config = config();
    config.schedules = vec![cairn::ScheduleSpec::new("nightly-report", "0 2 * * *", "report")];
    config.apply_schedules(&store).expect("apply");
    let names: Vec<String> = store.queue().schedules().expect("list").into_iter().map(|s| s.spec.name).collect();
    assert_eq!(names, ["cairn.backup", "cairn.check", "cairn.prune_jobs", "cairn.verify_backups", "nightly-report"]);
    let audited = || store.audit_log(Some("action = 'schedule.add'"), 0, 100).expect("audit").len();
    assert_eq!(audited(), 5);
    config.apply_schedules(&store).expect("again");
    assert_eq!(audited(), 5, "an unchanged schedule is not written again");
    // Turning one off removes it; changing one replaces it; one added by hand stays.
    store.queue().add_schedule(cairn::ScheduleSpec::new("by-hand", "@hourly", "k"), false).expect("add");
    config.builtin.check = String::new();
    config.builtin.backup = "0 1 * * *".into();
    config.apply_schedules(&store).expect("changed");
    assert!(store.queue().schedule("cairn.check").is_err());
    assert_eq!(store.queue().schedule("cairn.backup").expect("backup").spec.cron, "0 1 * * *");
    assert!(store.queue().schedule("by-hand").is_ok());
    // A configuration that cannot run is refused as a whole.
    for bad in [
        JobsConfig { concurrency: 0, ..config.clone() },
        JobsConfig { schedules: vec![cairn::ScheduleSpec::new("cairn.mine", "@daily", "k")], ..config.clone() },
        JobsConfig { schedules: vec![cairn::ScheduleSpec::new("x", "not cron", "k")], ..config.clone() },
    ] {
        let e = JobsRuntime::start(&store, &bad, &Workers::new(), "w").expect_err("refused");
        assert_eq!(e.kind(), cairn::ErrorKind::InvalidInput, "{e}");
    }
}

#[test]
fn the_builtin_jobs_do_their_work_and_report_it() {
    let (_dir, store) = crate::with_notes();
    store.create("notes", json!({"title": "keep me"})).expect("note");
    let mut app = Workers::new();
    app.register("app.noop", |_: &JobContext| Ok(Done::new()));
    let runtime = JobsRuntime::start(&store, &config(), &app, "test").expect("start");
    let queue = store.queue();
    let enqueue = |kind: &str, args| queue.enqueue(NewJob::new(kind, args).queue("maintenance")).expect(kind).job.id;
    let backup = finished(&store, enqueue(BACKUP_KIND, json!({})));
    assert_eq!(backup.state, JobState::Completed, "{:?}", backup.errors);
    let id = backup.result.as_ref().expect("result")["backup"].as_str().expect("id").to_string();
    let taken = store.backups().expect("list").into_iter().find(|b| b.id == id).expect("listed");
    assert_eq!(taken.manifest.expect("manifest").reason, BackupReason::Scheduled);
    assert!(backup.progress.is_some(), "progress was reported");

    let verify = finished(&store, enqueue(VERIFY_BACKUPS_KIND, json!({})));
    assert_eq!(verify.state, JobState::Completed, "{:?}", verify.errors);
    assert_eq!(verify.result.as_ref().expect("result")["failed"], 0);
    let check = finished(&store, enqueue(CHECK_KIND, json!({"blobs": true})));
    assert_eq!(check.state, JobState::Completed, "{:?}", check.errors);
    let gc = finished(&store, enqueue(BLOB_GC_KIND, json!({})));
    assert_eq!(gc.state, JobState::Completed, "{:?}", gc.errors);
    assert_eq!(gc.result.as_ref().expect("result")["removed"], 0, "nothing unlinked, nothing removed");
    let app_job = finished(&store, queue.enqueue(NewJob::new("app.noop", json!({}))).expect("app").job.id);
    assert_eq!(app_job.state, JobState::Completed, "the application's handlers run beside the built-in ones");
    let prune =
        finished(&store, enqueue(PRUNE_JOBS_KIND, json!({"retention": {"completed_seconds": 0, "failed_seconds": 0}})));
    assert_eq!(prune.state, JobState::Completed, "{:?}", prune.errors);
    assert!(prune.result.as_ref().expect("result")["pruned"].as_u64().expect("n") >= 5);
    let stats = runtime.stop(Duration::from_secs(5));
    assert!(stats.completed >= 6, "{stats:?}");
}

#[test]
fn a_damaged_backup_makes_the_verify_job_dead_with_the_backups_named() {
    let (_dir, store) = crate::with_notes();
    store.create("notes", json!({"title": "keep me"})).expect("note");
    let good = store.backup(&BackupOptions::default(), &mut |_, _, _| {}).expect("backup");
    let damaged = store.backup(&BackupOptions::default(), &mut |_, _, _| {}).expect("backup");
    let db = damaged.path.join(cairn::layout::DB_FILE);
    let mut bytes = std::fs::read(&db).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&db, bytes).expect("damage");
    let runtime = JobsRuntime::start(&store, &config(), &Workers::new(), "test").expect("start");
    let id = store.queue().enqueue(NewJob::new(VERIFY_BACKUPS_KIND, json!({}))).expect("enqueue").job.id;
    let job = finished(&store, id);
    runtime.stop(Duration::from_secs(5));
    assert_eq!(job.state, JobState::Discarded, "a verification failure is not retried");
    let error = job.errors.last().expect("error");
    assert!(error.error.contains("1 of 2 backups failed verification"), "{}", error.error);
    let detail = error.detail.as_ref().expect("detail");
    let failed: Vec<&str> = detail["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .filter(|b| b["ok"] == false)
        .map(|b| b["id"].as_str().expect("id"))
        .collect();
    assert_eq!(failed, [damaged.id.as_str()]);
    assert!(detail["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .any(|b| b["id"] == good.id.as_str() && b["ok"] == true));
    assert_eq!(
        store.queue().list(&JobFilter { state: Some(JobState::Discarded), ..Default::default() }).expect("list").len(),
        1
    );
}
