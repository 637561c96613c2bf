//! Crash safety: a writer process killed with SIGKILL at random moments loses no write it
//! acknowledged.
//!
//! The test re-runs its own binary as the child writer (selected by an environment
//! variable), so the child is real cairn code in a separate process that the OS kills
//! outright: no destructors, no flushes, no chance to tidy up.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::{Store, StoreOptions};
use serde_json::json;

const CHILD_ENV: &str = "CAIRN_CRASH_CHILD_DIR";
const TEST_NAME: &str = "crash::acknowledged_writes_survive_sigkill";

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_writer(Path::new(&dir));
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    {
        let store = Store::open(&dir, StoreOptions::default()).expect("create");
        store.create_collection(crate::notes_schema()).expect("notes");
        store.close().expect("close");
    }
    // id -> (version acknowledged, title acknowledged)
    let mut acked: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for cycle in 0..24 {
        let cycle_text = cycle.to_string();
        let mut child = crate::ChildRun::spawn(
            TEST_NAME,
            &[(CHILD_ENV, dir.as_os_str()), ("CAIRN_CRASH_CYCLE", std::ffi::OsStr::new(&cycle_text))],
        );
        // Wait until the child writes, then let it run for a random while before the kill.
        child.wait_for(|l| l.starts_with("ACK "));
        std::thread::sleep(Duration::from_millis(fastrand::u64(1..150)));
        for line in child.kill().iter() {
            let mut parts = line.split(' ');
            if parts.next() != Some("ACK") {
                continue;
            }
            let (id, version, title) = (parts.next(), parts.next(), parts.next());
            let (Some(id), Some(version), Some(title)) = (id, version, title) else {
                continue;
            };
            let version: u64 = version.parse().expect("version");
            let entry = acked.entry(id.to_string()).or_insert((0, String::new()));
            if version > entry.0 {
                *entry = (version, title.to_string());
            }
        }

        let store = Store::open(&dir, StoreOptions::default()).expect("reopen after SIGKILL");
        for (id, (version, title)) in &acked {
            let record =
                store.get("notes", id).unwrap_or_else(|e| panic!("cycle {cycle}: acknowledged {id} lost: {e}"));
            assert!(record.version >= *version, "cycle {cycle}: {id} went back from v{version} to v{}", record.version);
            if record.version == *version {
                assert_eq!(record.body["title"], json!(title), "cycle {cycle}: {id}");
            }
        }
        drop(store);
        let conn = rusqlite::Connection::open(dir.join(cairn::layout::DB_FILE)).expect("sqlite");
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
        assert_eq!(check, "ok", "cycle {cycle}");
    }
    assert!(acked.len() > 24, "the children acknowledged {} records", acked.len());
}

/// The child: four threads creating and patching records as fast as group commit allows,
/// printing every acknowledged write. Never returns; it is killed.
fn child_writer(dir: &Path) -> ! {
    let store = Store::open(dir, StoreOptions::default()).expect("child open");
    let cycle = std::env::var("CAIRN_CRASH_CYCLE").unwrap_or_default();
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (store, out, cycle) = (store.clone(), out.clone(), cycle.clone());
            std::thread::spawn(move || {
                let ack = |id: &str, version: u64, title: &str| {
                    let mut out = out.lock().expect("stdout");
                    writeln!(out, "ACK {id} {version} {title}").expect("print");
                    out.flush().expect("flush");
                };
                let own = format!("counter-{cycle}-{t}");
                let r = store.create_with_id("notes", &own, json!({"title": "n0"})).expect("create counter");
                ack(&own, r.version, "n0");
                for i in 1u64.. {
                    let id = format!("c{cycle}-t{t}-{i}");
                    let title = format!("t{i}");
                    let r = store.create_with_id("notes", &id, json!({"title": title, "n": i})).expect("create");
                    ack(&id, r.version, &title);
                    let title = format!("n{i}");
                    let r = store.patch("notes", &own, json!({"title": title}), Some(i)).expect("patch");
                    ack(&own, r.version, &title);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    unreachable!("the child writer loops until it is killed")
}
