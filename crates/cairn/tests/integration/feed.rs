//! The change feed: every seq after the one asked for, exactly once and in order, across the
//! seam between the log and live changes; an explicit gap for a reader that fell behind its
//! buffer, filled by resuming from its last seq; many feeds on one async thread.

use std::time::Duration;

use cairn::{CollectionSchema, FeedEvent, FeedOptions, GapReason, Store, StoreOptions};
use serde_json::json;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    let schema = r#"{"name": "events", "fields": [{"name": "n", "type": "integer"}]}"#;
    store.create_collection(CollectionSchema::from_json(schema, "schema").expect("schema")).expect("create");
    (dir, store)
}

/// Commits `total` changes from `writers` threads at once; returns when all committed.
fn write_concurrently(store: &Store, writers: usize, total: usize) -> std::thread::JoinHandle<()> {
    let store = store.clone();
    std::thread::spawn(move || {
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..total / writers {
                        store.create("events", json!({"n": w * 100_000 + i})).expect("write");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer");
        }
    })
}

/// Reads a feed until it has delivered `until`, failing on a gap; returns the seqs.
async fn seqs_until(feed: &mut cairn::Feed, until: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.last().copied().unwrap_or(feed.last_seq().get()) < until {
        let event = tokio::time::timeout(Duration::from_secs(60), feed.next())
            .await
            .expect("the feed delivers")
            .expect("not ended")
            .expect("no error");
        match event {
            FeedEvent::Change(change) => seqs.push(change.seq.get()),
            other => panic!("unexpected {other:?}"),
        }
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seq_once_in_order_across_the_seam_between_log_and_live() {
    let (_dir, store) = store();
    for i in 0..300 {
        store.create("events", json!({"n": i})).expect("history");
    }
    let since = store.last_seq().expect("seq").get() - 150;
    let mut feed = store.feed(&FeedOptions { buffer: 100_000, ..FeedOptions::since(since) }).expect("feed");
    let writing = write_concurrently(&store, 8, 5_000);
    // Read while the writers commit: the first 150 come from the log, the rest live.
    let first = seqs_until(&mut feed, since + 150).await;
    writing.join().expect("writers");
    let last = store.last_seq().expect("seq").get();
    let mut seqs = first;
    seqs.extend(seqs_until(&mut feed, last).await);
    let expected: Vec<u64> = (since + 1..=last).collect();
    assert_eq!(seqs.len(), expected.len(), "every seq once");
    assert!(seqs == expected, "in order, none missing or repeated");
    assert_eq!(last - since, 150 + 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_past_its_buffer_gets_a_gap_and_resuming_fills_it() {
    let (_dir, store) = store();
    let start = store.last_seq().expect("seq").get();
    let mut slow = store.feed(&FeedOptions { buffer: 16, ..FeedOptions::default() }).expect("feed");
    write_concurrently(&store, 8, 400).join().expect("writers");
    let last = store.last_seq().expect("seq").get();

    let mut seen = Vec::new();
    let gap = loop {
        match slow.next().await.expect("an event").expect("no error") {
            FeedEvent::Change(change) => seen.push(change.seq.get()),
            FeedEvent::Gap { last_seq, reason } => break (last_seq.get(), reason),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(gap.1, GapReason::Overflow);
    assert_eq!(gap.0, seen.last().copied().unwrap_or(start), "the gap names the last seq delivered");
    assert!(slow.next().await.is_none(), "a feed ends after its gap");
    assert!(slow.is_ended());

    let mut resumed = store.feed(&FeedOptions::since(gap.0)).expect("resume");
    seen.extend(seqs_until(&mut resumed, last).await);
    assert!(seen == (start + 1..=last).collect::<Vec<_>>(), "the resumed feed filled the gap exactly");
}

#[tokio::test(flavor = "current_thread")]
async fn a_seq_beyond_the_log_is_a_gap_and_many_feeds_share_one_thread() {
    let (_dir, store) = store();
    let last = store.last_seq().expect("seq").get();
    let mut beyond = store.feed(&FeedOptions::since(last + 50)).expect("feed");
    match beyond.next().await.expect("an event").expect("no error") {
        FeedEvent::Gap { last_seq, reason: GapReason::Unavailable } => assert_eq!(last_seq.get(), last + 50),
        other => panic!("unexpected {other:?}"),
    }
    assert!(beyond.next().await.is_none());

    // Fifty feeds awaited on this one thread, all served as changes commit elsewhere.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let mut feed = store.feed(&FeedOptions::since(last)).expect("feed");
            tokio::spawn(async move { seqs_until(&mut feed, last + 100).await })
        })
        .collect();
    let writing = write_concurrently(&store, 4, 100);
    for task in tasks {
        assert_eq!(task.await.expect("task"), (last + 1..=last + 100).collect::<Vec<_>>());
    }
    writing.join().expect("writers");
}

#[test]
fn the_blocking_subscription_refills_after_an_overflow_by_itself() {
    let (_dir, store) = store();
    let start = store.last_seq().expect("seq").get();
    let mut sub = store.subscribe(None).expect("subscribe");
    // More than the default buffer of 1,024 while nobody reads.
    write_concurrently(&store, 4, 2_000).join().expect("writers");
    let last = store.last_seq().expect("seq").get();
    let mut seqs = Vec::new();
    while let Some(change) = sub.recv_timeout(Duration::from_secs(10)).expect("recv") {
        seqs.push(change.seq.get());
        if change.seq.get() == last {
            break;
        }
    }
    assert!(seqs == (start + 1..=last).collect::<Vec<_>>());
}

#[test]
fn a_feed_that_registers_while_a_write_runs_still_gets_that_write() {
    // The write begins with no one listening, so it builds no change values to hand out; a
    // feed registers and reads the log while the write runs (finding nothing new), then the
    // write commits. The feed must still get it — from the log, told by the hub.
    let (_dir, store) = store();
    for mode in ["blocking", "async"] {
        let reader = store.clone();
        let since = store.last_seq().expect("seq");
        let (feeds, feed) = std::sync::mpsc::channel();
        let (subs, sub) = std::sync::mpsc::channel();
        let written = store
            .transaction(move |tx| {
                let mut registered = reader.feed(&FeedOptions::since(since)).expect("feed");
                assert!(registered.recv_timeout(Duration::ZERO).expect("read").is_none(), "nothing committed yet");
                let mut subscription = reader.subscribe(Some(since)).expect("subscribe");
                assert!(subscription.recv_timeout(Duration::ZERO).expect("read").is_none());
                feeds.send(registered).expect("send");
                subs.send(subscription).expect("send");
                tx.create("events", None, json!({"n": 1}))
            })
            .expect("write");
        let mut feed = feed.recv().expect("feed");
        let event = match mode {
            "blocking" => feed.recv_timeout(Duration::from_secs(5)).expect("recv"),
            _ => futures_lite_block_on(feed.next()).transpose().expect("recv"),
        };
        let Some(FeedEvent::Change(change)) = event else { panic!("{mode}: the write was missed: {event:?}") };
        assert_eq!(change.seq, written.seq);
        let mut subscription = sub.recv().expect("subscription");
        let change = subscription.recv_timeout(Duration::from_secs(5)).expect("recv").expect("the write");
        assert_eq!(change.seq, written.seq, "the blocking subscription too");
    }
}

/// Runs a future to completion on this thread (the feed's waker is all it needs).
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), future).await.expect("in time") })
}
