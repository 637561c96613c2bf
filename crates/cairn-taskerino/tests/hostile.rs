//! A legacy Taskerino folder made by someone else to reach outside itself: links and FIFOs
//! where the app kept its files. Each is skipped and said (never followed, never waited on),
//! the rest of the folder imports, the canaries outside are untouched, and a folder that is
//! not one is refused without changing the store (see `cairn/tests/integration/hostile.rs`).

#[path = "../../cairn/tests/support/scene.rs"]
mod scene;

use std::path::Path;

use cairn::{CheckOptions, Store, StoreOptions};
use cairn_taskerino::{LegacyOptions, LegacyReport};
use serde_json::json;

use scene::*;

/// Writes a small Taskerino data folder: a session with a screenshot stored by hash.
fn legacy_folder(dir: &Path) -> String {
    let content = b"\x89PNG\r\n\x1a\n a genuine screenshot";
    let hash = hex(content);
    let folder = dir.join("attachments").join(&hash[..2]);
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join(&hash), content).expect("write");
    let sessions = json!([
        {"id": "s1", "name": "One", "status": "completed", "startTime": "2025-10-20T09:00:00Z",
         "screenshots": [{"timestamp": "2025-10-20T09:05:00Z", "attachmentId": "shot-1", "hash": hash}]},
        {"id": "s2", "name": "Two", "status": "active", "startTime": "2025-10-21T09:00:00Z"}
    ]);
    write_json(&dir.join("sessions.json"), &sessions);
    write_json(
        &dir.join("notes.json"),
        &json!([{"id": "n1", "content": "a note", "timestamp": "2025-10-20T09:10:00Z"}]),
    );
    hash
}

fn import_legacy(store: &Path, folder: &Path) -> cairn::Result<LegacyReport> {
    let (store, folder) = (store.to_path_buf(), folder.to_path_buf());
    returns("import-legacy", move || {
        let store = Store::open(&store, StoreOptions::default()).expect("open");
        let result = cairn_taskerino::import(&store, &folder, &LegacyOptions::default(), &mut quiet());
        store.close().expect("close");
        result
    })
}

#[test]
fn a_legacy_folder_cannot_bring_in_a_file_it_links_to() {
    let scene = scene();
    let folder = scene.path("taskerino");
    let hash = legacy_folder(&folder);
    // The screenshot named by hash is a link to the canary.
    let file = folder.join("attachments").join(&hash[..2]).join(&hash);
    symlink(&scene.outside.join("canary.txt"), &file);
    let target = scene.path("legacy-store");
    let report = import_legacy(&target, &folder).expect("the rest imports");
    assert!(!report.is_complete(), "the linked attachment is reported");
    let said: Vec<String> = report.skipped.iter().map(|s| format!("{}: {}", s.source, s.reason)).collect();
    assert!(said.iter().any(|s| s.contains(&hash) && s.contains("not a regular file")), "{said:?}");
    assert!(!said.iter().any(|s| s.contains(&hex(CANARY))), "{said:?}");
    let store = Store::open(&target, StoreOptions::read_only()).expect("open");
    assert!(store.open_blob(hex(CANARY)).expect_err("never stored").is_not_found());
    assert!(store.blobs(None, 100).expect("blobs").is_empty(), "no blob came in through the link");
    assert_eq!(store.count("sessions", None).expect("sessions"), 2);
    let check = store.check(&CheckOptions::default(), &mut quiet()).expect("check");
    assert!(check.is_ok(), "{:?}", check.problems);
    drop(store);

    // A FIFO for sessions.json, and a link for notes.json: skipped without waiting, said.
    let folder = scene.path("taskerino-2");
    legacy_folder(&folder);
    write_json(&folder.join("topics.json"), &json!([{"id": "t1", "name": "Checkout"}]));
    mkfifo(&folder.join("sessions.json"));
    symlink(&scene.outside.join("canary.txt"), &folder.join("notes.json"));
    let report = import_legacy(&scene.path("legacy-store-2"), &folder).expect("returns");
    let said: Vec<String> = report.skipped.iter().map(|s| format!("{}: {}", s.source, s.reason)).collect();
    for name in ["sessions.json", "notes.json"] {
        assert!(said.iter().any(|s| s.contains(name) && s.contains("not a regular file")), "{name}: {said:?}");
    }
    assert!(!said.iter().any(|s| s.contains("canary")), "{said:?}");

    // Into the scene's store, which must not change when the whole folder is a FIFO's sibling.
    let err = import_legacy(&scene.store, &folder.join("sessions.json")).expect_err("a FIFO is not a folder or file");
    scene.assert_refusal(&err, "sessions.json");
    scene.assert_untouched();
}
