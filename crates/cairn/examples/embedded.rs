//! Embedding cairn the way a desktop app's commands would (a Tauri app, for instance): open
//! the store once at start-up, share the handle with every command thread, write and query
//! from them, follow changes from async code, and back up when the app closes.
//!
//! Run it with `cargo run -p cairn --example embedded` (it works in a temporary folder), or
//! pass a folder to keep the store: `cargo run -p cairn --example embedded -- ./my-data`.

use std::path::Path;
use std::sync::Arc;

use cairn::{Backups, CollectionSchema, FeedEvent, FeedOptions, Query, Store, StoreOptions};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp;
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("store")
        }
    };
    let summary = run(&dir)?;
    println!("{summary}");
    Ok(())
}

/// What the run saw, for the caller to print (and for the test that runs this example).
#[derive(Debug)]
pub struct Summary {
    pub written: usize,
    pub open_tasks: usize,
    pub followed: usize,
    pub backups: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {} tasks from 4 threads; {} are open; the feed followed {} changes; {} backup(s) after close",
            self.written, self.open_tasks, self.followed, self.backups
        )
    }
}

pub fn run(dir: &Path) -> cairn::Result<Summary> {
    // Open once. With `auto_backup`, the `backup.*` settings take backups on open (when the
    // newest is old), on an interval, and on a clean close, which this app asks for.
    let store = Arc::new(Store::open(dir, StoreOptions { auto_backup: true, ..StoreOptions::default() })?);
    store.set_setting(cairn::settings::BACKUP_ON_CLOSE, json!(true))?;
    if store.collection("tasks").is_err() {
        store.create_collection(CollectionSchema::from_json(
            r#"{"name": "tasks", "fields": [
                {"name": "title", "type": "text", "required": true, "fulltext": true},
                {"name": "done", "type": "bool", "indexed": true, "default": false},
                {"name": "owner", "type": "text", "indexed": true}]}"#,
            "tasks schema",
        )?)?;
    }
    let since = store.last_seq()?;

    // Follow changes from async code: a feed is awaited, not a thread per subscriber. It
    // starts after `since`, so it sees every write below, in commit order, exactly once.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| cairn::Error::io("start the async runtime", dir, e))?;
    let mut feed = store.feed(&FeedOptions::since(since))?;

    // Share the handle: every command thread writes through the same store; concurrent
    // writes are folded into group commits, and each returns once it is on disk.
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || -> cairn::Result<usize> {
                for i in 0..25 {
                    store.create(
                        "tasks",
                        json!({"title": format!("task {i} of thread {t}"), "owner": format!("user{t}"), "done": i % 3 == 0}),
                    )?;
                }
                Ok(25)
            })
        })
        .collect();
    let mut written = 0;
    for writer in writers {
        written += writer.join().map_err(|_| cairn::Error::Internal("a writer thread panicked".into()))??;
    }

    // Query with a filter, and AND a rule the app adds (a permission, say) without editing
    // the caller's filter text.
    let query = Query { filter: Some("done = false".into()), limit: Query::MAX_LIMIT, ..Query::default() }
        .restrict("owner in (\"user0\", \"user1\", \"user2\", \"user3\")");
    let open_tasks = store.query("tasks", &query)?.rows.len();

    let followed = runtime.block_on(async {
        let mut seen = 0;
        while seen < written {
            match feed.next().await {
                Some(Ok(FeedEvent::Change(_))) => seen += 1,
                // A reader that fell behind its buffer is told so, and resumes from its last seq.
                Some(Ok(FeedEvent::Gap { last_seq, .. })) => feed = store.feed(&FeedOptions::since(last_seq))?,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(seen)
    })?;
    drop(feed);

    // Close when the app quits: the last handle closes the store, which takes its backup.
    let store = Arc::try_unwrap(store).map_err(|_| cairn::Error::Internal("the store is still shared".into()))?;
    store.close()?;
    let backups = Backups::of(dir).list()?.len();
    Ok(Summary { written, open_tasks, followed, backups })
}
