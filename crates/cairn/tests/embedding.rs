//! The embedding example (`examples/embedded.rs`) runs as a test: what it shows an
//! application developer must keep working.

#[allow(dead_code)] // its `main`, which the test does not call
#[path = "../examples/embedded.rs"]
mod embedded;

use cairn::{BackupReason, Backups};

#[test]
fn the_embedding_example_writes_queries_follows_and_backs_up_on_close() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let summary = embedded::run(&dir).expect("the example runs");
    assert_eq!(summary.written, 100, "4 threads × 25 tasks");
    assert_eq!(summary.open_tasks, 4 * 16, "tasks with i % 3 != 0 are open");
    assert_eq!(summary.followed, 100, "the feed saw every write once");
    let backups = Backups::of(&dir).list().expect("list");
    assert_eq!(summary.backups, backups.len());
    assert!(
        backups.iter().any(|b| b.manifest.as_ref().is_some_and(|m| m.reason == BackupReason::OnClose)),
        "{backups:?}"
    );

    // Run again on the same folder: the collection is kept, the feed starts at the end.
    let again = embedded::run(&dir).expect("the example runs again");
    assert_eq!((again.written, again.followed, again.open_tasks), (100, 100, 2 * 4 * 16));
}
