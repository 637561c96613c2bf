//! Concurrent writers: optimistic versions lose no update, and group commit isolates failures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cairn::Error;
use serde_json::json;

use crate::with_notes;

#[test]
fn read_modify_write_with_expected_versions_loses_no_update() {
    let (_dir, store) = with_notes();
    let counters = ["c0", "c1"];
    for id in counters {
        store.create_with_id("notes", id, json!({"title": id, "n": 0})).expect("create counter");
    }
    let successes: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let conflicts = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (store, successes, conflicts) = (store.clone(), successes.clone(), conflicts.clone());
            std::thread::spawn(move || {
                for i in 0..1000 {
                    let which = (t + i) % 2;
                    let current = store.get("notes", counters[which]).expect("get");
                    let n = current.body["n"].as_i64().expect("n");
                    match store.patch("notes", counters[which], json!({"n": n + 1}), Some(current.version)) {
                        Ok(_) => {
                            successes[which].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(Error::Conflict { .. }) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let mut total = 0;
    for (which, id) in counters.iter().enumerate() {
        let ok = successes[which].load(Ordering::Relaxed);
        let record = store.get("notes", id).expect("get");
        assert_eq!(record.body["n"].as_u64(), Some(ok), "{id}: the counter equals the number of successful updates");
        assert_eq!(record.version, ok + 1);
        total += ok;
    }
    let conflicts = conflicts.load(Ordering::Relaxed);
    assert_eq!(total + conflicts, 8000);
    assert!(conflicts > 0, "8 writers on 2 records must collide");
}

#[test]
fn a_failing_write_does_not_fail_the_others_in_its_group() {
    let (_dir, store) = with_notes();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                for i in 0..50 {
                    let good = store.create_with_id("notes", &format!("t{t}-{i}"), json!({"title": "fine"}));
                    let bad = store.create_with_id("notes", &format!("bad{t}-{i}"), json!({"title": 42}));
                    assert!(matches!(bad, Err(Error::Validation { .. })));
                    ok += usize::from(good.is_ok());
                }
                ok
            })
        })
        .collect();
    let ok: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert_eq!(ok, 800);
    assert_eq!(store.collection("notes").expect("info").live_records, 800);
    assert_eq!(store.last_seq().expect("seq").get(), 801);
}

#[test]
fn every_caller_is_answered_even_when_the_store_closes_under_load() {
    use std::sync::mpsc;
    use std::time::Duration;

    let (dir, store) = with_notes();
    let (done, finished) = mpsc::channel();
    let threads: Vec<_> = (0..12)
        .map(|t| {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..400 {
                    let id = format!("t{t}-{i}");
                    let result = match i % 7 {
                        // Invalid: fails alone.
                        3 => store.create_with_id("notes", &id, json!({"title": 1})).map(|_| false),
                        // Panics inside the transaction: rolled back, writer survives.
                        5 => store
                            .transaction(|tx| -> cairn::Result<bool> {
                                tx.create("notes", Some("never"), json!({"title": "x"}))?;
                                panic!("caller bug");
                            })
                            .map(|_| false),
                        _ => store.create_with_id("notes", &id, json!({"title": "ok"})).map(|_| true),
                    };
                    match result {
                        Ok(true) => acked.push(id),
                        Ok(false) => unreachable!("invalid writes never succeed"),
                        Err(Error::WriterStopped) => break,
                        Err(Error::Validation { .. } | Error::Internal(_)) => {}
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                done.send(()).expect("report");
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    store.clone().close().expect("close while writers run");
    for _ in 0..threads.len() {
        finished.recv_timeout(Duration::from_secs(60)).expect("a writer thread hung: some caller was never answered");
    }
    let acked: Vec<String> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
    drop(store);
    let store = cairn::Store::open(dir.path().join("store"), cairn::StoreOptions::default()).expect("reopen");
    for id in &acked {
        store.get("notes", id).unwrap_or_else(|e| panic!("acknowledged {id} missing: {e}"));
    }
    assert_eq!(
        store.collection("notes").expect("info").live_records,
        acked.len() as u64,
        "nothing unacknowledged committed"
    );
    assert!(store.get("notes", "never").is_err());
}
