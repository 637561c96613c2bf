//! Folder ingest: a slowly written file is taken in once, when complete; duplicates are
//! recognised; rejected files are moved and reported, never deleted; a restart in the
//! middle of ingesting (a SIGKILLed process) neither loses a file nor takes one twice.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn::{CollectionSchema, Ingest, IngestSpec, Ingested, JobFilter, Store, StoreOptions};
use serde_json::json;

const WAV: &[u8] = b"RIFF\x24\x00\x00\x00WAVEfmt ";

fn media_schema() -> CollectionSchema {
    CollectionSchema::from_json(
        r#"{"name": "media", "fields": [
            {"name": "title", "type": "text", "summary": true},
            {"name": "source", "type": "text"},
            {"name": "audio", "type": "attachment"}]}"#,
        "media",
    )
    .expect("schema")
}

fn spec(folder: &Path, settle_ms: u64) -> IngestSpec {
    serde_json::from_value(json!({
        "folder": folder,
        "settle_ms": settle_ms,
        "rescan_ms": 200,
        "rules": [{
            "glob": "**/*.wav",
            "mime": ["audio/*"],
            "min_size": 12,
            "max_size": 1_000_000,
            "collection": "media",
            "field": "audio",
            "set": {"title": "{stem}", "source": "{path}"},
            "jobs": [{"kind": "transcribe", "queue": "media", "args": {"media": "{record}", "file": "{path}"}}]
        }]
    }))
    .expect("spec")
}

fn setup() -> (tempfile::TempDir, PathBuf, Store) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let folder = tmp.path().join("inbox");
    std::fs::create_dir(&folder).expect("mkdir");
    let store = Store::open(tmp.path().join("store"), StoreOptions::default()).expect("open");
    store.create_collection(media_schema()).expect("media");
    (tmp, folder, store)
}

fn wav(bytes: usize, seed: u8) -> Vec<u8> {
    let mut data = WAV.to_vec();
    data.extend((0..bytes).map(|i| (i as u8).wrapping_mul(seed)));
    data
}

#[test]
fn a_file_is_taken_in_once_it_is_stable_and_only_once() {
    let (_tmp, folder, store) = setup();
    let mut ingest = Ingest::new(store.clone(), spec(&folder, 1000)).expect("ingest");
    let t0 = Instant::now();
    let path = folder.join("talk.wav");
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(&wav(100, 3)).expect("write");
    assert!(ingest.scan(t0).is_empty(), "just seen: not stable yet");
    assert!(ingest.scan(t0 + Duration::from_millis(900)).is_empty(), "not settled yet");
    // It grows: the clock starts again.
    file.write_all(&wav(100, 5)).expect("write more");
    file.sync_all().expect("sync");
    // A different mtime granularity must not matter: size changed.
    assert!(ingest.scan(t0 + Duration::from_millis(1100)).is_empty(), "changed: not stable");
    assert!(ingest.scan(t0 + Duration::from_millis(2000)).is_empty(), "still settling");
    let outcomes = ingest.scan(t0 + Duration::from_millis(2200));
    let [Ingested::Ingested { collection, record, jobs, .. }] = outcomes.as_slice() else {
        panic!("one file ingested: {outcomes:?}");
    };
    assert_eq!(collection, "media");
    let media = store.get("media", record).expect("record");
    assert_eq!(media.body["title"], "talk");
    assert_eq!(media.body["audio"]["size"], (WAV.len() * 2 + 200) as u64, "the whole file, not a part");
    assert_eq!(media.body["audio"]["mime"], "audio/wav");
    let job = store.queue().get(jobs[0]).expect("job");
    assert_eq!((job.kind.as_str(), job.queue.as_str()), ("transcribe", "media"));
    assert_eq!(job.args["media"], json!(record));
    // Rescans (and a new watcher after a restart) pass over it.
    assert!(ingest.scan(t0 + Duration::from_secs(10)).is_empty());
    let mut fresh = Ingest::new(store.clone(), spec(&folder, 0)).expect("ingest");
    assert!(fresh.scan(Instant::now()).is_empty());
    assert!(path.exists(), "the source file is left where it was");
}

#[test]
fn duplicate_content_is_recorded_once() {
    let (_tmp, folder, store) = setup();
    let mut ingest = Ingest::new(store.clone(), spec(&folder, 0)).expect("ingest");
    std::fs::write(folder.join("a.wav"), wav(50, 7)).expect("write");
    std::fs::create_dir(folder.join("sub")).expect("mkdir");
    std::fs::write(folder.join("sub/copy-of-a.wav"), wav(50, 7)).expect("write");
    let outcomes = ingest.scan(Instant::now());
    let ingested = outcomes.iter().filter(|o| matches!(o, Ingested::Ingested { .. })).count();
    let duplicates: Vec<_> = outcomes.iter().filter(|o| matches!(o, Ingested::Duplicate { .. })).collect();
    assert_eq!((ingested, duplicates.len()), (1, 1), "{outcomes:?}");
    assert_eq!(store.scan("media", &Default::default()).expect("scan").len(), 1);
    assert_eq!(store.queue().list(&JobFilter::default()).expect("jobs").len(), 1, "no job for the duplicate");
    assert_eq!(store.audit_log(Some("action = 'ingest.duplicate'"), 0, 10).expect("audit").len(), 1);
}

#[test]
fn a_file_that_fails_the_rules_is_moved_aside_and_reported_never_deleted() {
    let (_tmp, folder, store) = setup();
    let mut ingest = Ingest::new(store.clone(), spec(&folder, 0)).expect("ingest");
    std::fs::write(folder.join("fake.wav"), b"this is not audio at all").expect("write");
    std::fs::write(folder.join("tiny.wav"), b"RIFF").expect("write");
    std::fs::write(folder.join("notes.txt"), b"no rule matches me").expect("write");
    std::fs::write(folder.join(".partial.wav"), b"hidden: a download in progress").expect("write");
    let mut outcomes = ingest.scan(Instant::now());
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    for outcome in &outcomes {
        let Ingested::Rejected { path, moved_to, reason } = outcome else { panic!("{outcome:?}") };
        assert!(!path.exists() && moved_to.exists(), "moved, not deleted");
        assert!(moved_to.starts_with(folder.join(".rejected")));
        let note = std::fs::read_to_string(format!("{}.rejected.txt", moved_to.display())).expect("note");
        assert!(note.contains(reason.as_str()));
    }
    let reasons: Vec<String> = outcomes
        .iter()
        .map(|o| if let Ingested::Rejected { reason, .. } = o { reason.clone() } else { String::new() })
        .collect();
    assert!(reasons.iter().any(|r| r.contains("application/octet-stream")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("under the rule's minimum")), "{reasons:?}");
    assert!(folder.join("notes.txt").exists() && folder.join(".partial.wav").exists(), "left alone");
    assert!(store.scan("media", &Default::default()).expect("scan").is_empty());
    assert_eq!(store.audit_log(Some("action = 'ingest.reject'"), 0, 10).expect("audit").len(), 2);
    // A second file of the same name rejected later does not overwrite the first.
    std::fs::write(folder.join("tiny.wav"), b"RIFX").expect("write");
    let again = ingest.scan(Instant::now());
    let [Ingested::Rejected { moved_to, .. }] = again.as_slice() else { panic!("{again:?}") };
    assert!(moved_to.ends_with("tiny.wav.1"), "{}", moved_to.display());
}

#[test]
fn a_file_renamed_in_is_complete_at_once() {
    let (tmp, folder, store) = setup();
    let mut ingest = Ingest::new(store.clone(), spec(&folder, 60_000)).expect("ingest");
    let outside = tmp.path().join("staging.wav");
    std::fs::write(&outside, wav(10, 9)).expect("write");
    let inside = folder.join("moved.wav");
    std::fs::rename(&outside, &inside).expect("rename");
    ingest.renamed_in(&inside);
    let outcomes = ingest.scan(Instant::now());
    assert!(matches!(outcomes.as_slice(), [Ingested::Ingested { .. }]), "{outcomes:?}");
}

#[test]
fn the_watcher_takes_in_a_slowly_written_file_once_after_it_is_complete() {
    let (_tmp, folder, store) = setup();
    let (tx, rx) = std::sync::mpsc::channel();
    let watcher = cairn::IngestWatcher::start(store.clone(), spec(&folder, 400), move |o| {
        tx.send(o.clone()).ok();
    })
    .expect("watch");
    let path = folder.join("slow.wav");
    let mut file = std::fs::File::create(&path).expect("create");
    for i in 0..10u8 {
        file.write_all(&wav(1000, i + 1)).expect("write");
        file.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(file);
    let outcome = rx.recv_timeout(Duration::from_secs(30)).expect("ingested");
    let Ingested::Ingested { record, .. } = outcome else { panic!("{outcome:?}") };
    let media = store.get("media", &record).expect("record");
    assert_eq!(media.body["audio"]["size"], (10 * (1000 + WAV.len())) as u64, "the complete file");
    assert!(rx.recv_timeout(Duration::from_millis(1500)).is_err(), "and only once");
    watcher.stop();
}

const CHILD_ENV: &str = "CAIRN_INGEST_CHILD";

/// Ingests the folder in a child process that is SIGKILLed mid-way, then once more: every
/// file is in exactly once.
#[test]
fn a_restart_during_ingest_neither_loses_nor_doubles_a_file() {
    if let Ok(dirs) = std::env::var(CHILD_ENV) {
        let (store_dir, folder) = dirs.split_once('|').expect("dirs");
        let store = Store::open(store_dir, StoreOptions::existing()).expect("open");
        let mut ingest = Ingest::new(store, spec(Path::new(folder), 0)).expect("ingest");
        println!("ready");
        loop {
            ingest.scan_each(Instant::now(), |outcome| println!("{outcome:?}"));
        }
    }
    let (tmp, folder, store) = setup();
    let files = 60;
    for i in 0..files {
        std::fs::write(folder.join(format!("f{i:03}.wav")), wav(20_000, i as u8 + 1)).expect("write");
    }
    let store_dir = store.dir().to_path_buf();
    store.close().expect("close");
    let arg = format!("{}|{}", store_dir.display(), folder.display());
    // Kill a few milliseconds after the first file of each run is in: mid-way through the rest.
    let mut interrupted = 0;
    for _ in 0..20 {
        let mut child = crate::ChildRun::spawn(
            "ingest::a_restart_during_ingest_neither_loses_nor_doubles_a_file",
            &[(CHILD_ENV, std::ffi::OsStr::new(&arg))],
        );
        child.wait_for(|l| l == "ready");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && !child.lines.lock().expect("lines").iter().any(|l| l.starts_with("Ingested"))
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..5)));
        if !child.kill().iter().any(|l| l.starts_with("Ingested")) {
            break;
        }
        interrupted += 1;
    }
    assert!(interrupted >= 2, "the kills landed while files were left to ingest");
    let store = Store::open(&store_dir, StoreOptions::existing()).expect("reopen");
    let mut ingest = Ingest::new(store.clone(), spec(&folder, 0)).expect("ingest");
    ingest.scan(Instant::now());
    let records = store.scan("media", &Default::default()).expect("scan");
    let mut sources: Vec<String> =
        records.iter().map(|r| r.body["source"].as_str().unwrap_or_default().to_string()).collect();
    sources.sort();
    let before = sources.len();
    sources.dedup();
    assert_eq!((before, sources.len()), (files as usize, files as usize), "each file once");
    assert_eq!(
        store.queue().list(&JobFilter { limit: 1000, ..Default::default() }).expect("jobs").len(),
        files as usize
    );
    let report = store.check(&Default::default(), &mut |_, _, _| {}).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
    drop(tmp);
}
