//! Realtime subscriptions: what each subscriber is told (create, update, delete, enter,
//! leave), for what it may see only, resumed exactly, caught up from the log after falling
//! behind, reset when its resume point is from another history.

use std::time::Duration;

use cairn::{
    Access, CollectionSchema, Grantee, Principal, Realtime, RealtimeOptions, ResetReason, Resume, Seq, SessionOptions,
    Store, Watch, WatchItem, WatchSpec,
};
use serde_json::json;

use crate::temp_store;

fn principal(store: &Store, name: &str, role: &str) -> Principal {
    store.create_user(name, "a good password", role).expect("user");
    let session = store.login(name, "a good password", &SessionOptions::default()).expect("login");
    store.authenticate(&session.secret).expect("principal")
}

fn notes(store: &Store) {
    let schema = r#"{"name": "notes", "fields": [
        {"name": "title", "type": "text"},
        {"name": "n", "type": "integer"},
        {"name": "owner", "type": "text", "indexed": true}],
      "rules": {"list": "owner = @auth.id", "view": "owner = @auth.id", "create": "", "update": "owner = @auth.id",
                "delete": "owner = @auth.id", "owner": "owner"}}"#;
    store.create_collection(CollectionSchema::from_json(schema, "schema").expect("schema")).expect("collection");
}

/// Everything the watch has within `wait`, stopping at the first quiet moment.
fn drain(watch: &mut Watch, wait: Duration) -> Vec<WatchItem> {
    let mut out = Vec::new();
    while let Some(item) = watch.recv_timeout(wait).expect("recv") {
        out.push(item);
    }
    out
}

/// (kind, id, seq) of each event; resets as ("reset:<reason>", "", seq).
fn summary(items: &[WatchItem]) -> Vec<(String, String, u64)> {
    items
        .iter()
        .map(|item| match item {
            WatchItem::Event(e) => (format!("{:?}", e.kind).to_lowercase(), e.id.clone(), e.seq.get()),
            WatchItem::Reset { reason, seq, .. } => (format!("reset:{reason:?}"), String::new(), seq.get()),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn admin(store: &Store) -> Principal {
    principal(store, "root", "admin")
}

const QUIET: Duration = Duration::from_millis(400);

#[test]
fn a_filtered_subscriber_sees_records_enter_update_and_leave() {
    let (_dir, store) = temp_store();
    notes(&store);
    let root = admin(&store);
    let realtime = store.realtime(&RealtimeOptions::default()).expect("realtime");
    let spec = WatchSpec::collection("notes").filter("n >= 10").fields(&["title", "n"]);
    let mut watch = realtime.watch(root.clone(), spec, &Resume::default()).expect("watch");

    store.create_with_id("notes", "a", json!({"title": "small", "n": 1})).expect("a");
    let b = store.create_with_id("notes", "b", json!({"title": "big", "n": 20, "owner": "x"})).expect("b");
    store.patch("notes", "a", json!({"n": 11}), None).expect("a enters");
    store.patch("notes", "a", json!({"title": "still big"}), None).expect("a changes");
    store.patch("notes", "b", json!({"n": 2}), None).expect("b leaves");
    store.delete("notes", "a", None).expect("a deleted");
    store.undo("notes", "a").expect("a back");

    let items = drain(&mut watch, QUIET);
    let kinds: Vec<(String, String)> = summary(&items).into_iter().map(|(k, id, _)| (k, id)).collect();
    let expected = [("create", "b"), ("enter", "a"), ("update", "a"), ("leave", "b"), ("delete", "a"), ("enter", "a")];
    assert_eq!(kinds, expected.map(|(k, id)| (k.to_string(), id.to_string())));
    let WatchItem::Event(first) = &items[0] else { panic!() };
    assert_eq!(first.seq, b.seq);
    assert_eq!(
        first.record,
        *json!({"title": "big", "n": 20}).as_object().expect("object"),
        "only the fields asked for"
    );
    let WatchItem::Event(update) = &items[2] else { panic!() };
    assert_eq!(update.changed, ["title"]);
    let WatchItem::Event(leave) = &items[3] else { panic!() };
    assert_eq!(leave.record["n"], json!(20), "a leave shows the record as the subscriber last saw it");
    assert_eq!(watch.position(), store.last_seq().expect("seq"), "judged through the newest change");

    // Subscribers to whom a change means the same share one event, written as JSON once.
    let mut twins: Vec<Watch> = (0..2)
        .map(|_| realtime.watch(root.clone(), WatchSpec::collection("notes"), &Resume::default()).expect("twin"))
        .collect();
    store.patch("notes", "a", json!({"n": 12}), None).expect("seen by both");
    let shared: Vec<_> = twins
        .iter_mut()
        .map(|w| match w.recv_timeout(QUIET).expect("recv") {
            Some(WatchItem::Event(e)) => e,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(std::sync::Arc::ptr_eq(&shared[0], &shared[1]), "one event for both");
    assert_eq!(shared[0].to_json(), serde_json::to_string(&*shared[0]).expect("json"));
    drop(twins);

    let record = WatchSpec::collection("notes").record("b");
    let mut one = realtime.watch(root, record, &Resume::default()).expect("watch one");
    store.patch("notes", "a", json!({"n": 30}), None).expect("other record");
    store.patch("notes", "b", json!({"n": 3}), None).expect("b");
    assert_eq!(summary(&drain(&mut one, QUIET)).into_iter().map(|s| s.0).collect::<Vec<_>>(), ["update"]);
}

#[test]
fn a_user_is_told_only_about_what_they_may_see_and_about_sharing() {
    let (_dir, store) = temp_store();
    notes(&store);
    let ana = principal(&store, "ana", "user");
    let bob = principal(&store, "bob", "user");
    let realtime = store.realtime(&RealtimeOptions::default()).expect("realtime");
    let mut bobs = realtime.watch(bob.clone(), WatchSpec::collection("notes"), &Resume::default()).expect("watch");

    let create = |p: &Principal, id: &str| {
        let (p, id) = (p.clone(), id.to_string());
        store.transaction(move |tx| tx.create_as(&p, "notes", Some(&id), json!({"title": "private", "n": 1})))
    };
    create(&ana, "a1").expect("ana's");
    create(&bob, "b1").expect("bob's");
    store.patch("notes", "a1", json!({"n": 2}), None).expect("ana's changes");
    let grant = store.grant("notes", "a1", &Grantee::User("bob".into()), Access::Read).expect("share");
    store.patch("notes", "a1", json!({"n": 3}), None).expect("shared change");
    store.revoke_grant(&grant.id).expect("unshare");
    store.patch("notes", "a1", json!({"n": 4}), None).expect("private again");
    store.delete("notes", "a1", None).expect("deleted");

    let seen = summary(&drain(&mut bobs, QUIET));
    let kinds: Vec<(&str, &str)> = seen.iter().map(|(k, id, _)| (k.as_str(), id.as_str())).collect();
    assert_eq!(kinds, [("create", "b1"), ("enter", "a1"), ("update", "a1"), ("leave", "a1")]);

    // Resuming from before the grant replays the same, from the log.
    let since = Seq(seen[0].2);
    let resume = Resume { since: Some(since), epoch: Some(realtime.epoch().clone()) };
    let mut again = realtime.watch(bob, WatchSpec::collection("notes"), &resume).expect("resume");
    let replayed = summary(&drain(&mut again, QUIET));
    assert_eq!(replayed, seen[1..].to_vec(), "the same events, from the log");
}

#[test]
fn a_resume_misses_nothing_and_repeats_nothing_at_the_seam() {
    let (_dir, store) = temp_store();
    notes(&store);
    let root = admin(&store);
    let realtime = store.realtime(&RealtimeOptions { buffer: 8 }).expect("realtime");
    for i in 0..50 {
        store.create_with_id("notes", &format!("r{i}"), json!({"n": i})).expect("create");
    }
    let since = store.last_seq().expect("seq");
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                store.patch("notes", &format!("r{}", i % 50), json!({"n": 1000 + i}), None).expect("patch");
            }
        })
    };
    // Registered while the writer runs, from a point behind it, with a queue far smaller than
    // what comes: the watch catches up from the log, goes live, overflows, catches up again.
    let resume = Resume { since: Some(since), epoch: Some(realtime.epoch().clone()) };
    let mut watch = realtime.watch(root.clone(), WatchSpec::collection("notes"), &resume).expect("watch");
    std::thread::sleep(Duration::from_millis(200));
    writer.join().expect("writer");
    let seqs: Vec<u64> = summary(&drain(&mut watch, QUIET)).into_iter().map(|s| s.2).collect();
    let last = store.last_seq().expect("seq").get();
    assert_eq!(seqs, ((since.get() + 1)..=last).collect::<Vec<_>>(), "every change once, in order");
    assert_eq!(realtime.subscribers(), 1);
    drop(watch);
    store.patch("notes", "r1", json!({"n": 0}), None).expect("one more");
    std::thread::sleep(QUIET);
    assert_eq!(realtime.subscribers(), 0, "a dropped watch is forgotten");
}

#[test]
fn a_resume_point_from_another_history_or_beyond_the_log_is_a_reset() {
    let (_dir, store) = temp_store();
    notes(&store);
    let root = admin(&store);
    store.create_with_id("notes", "a", json!({"n": 1})).expect("a");
    let realtime = store.realtime(&RealtimeOptions::default()).expect("realtime");
    let spec = || WatchSpec::collection("notes");
    let epoch = realtime.epoch().clone();
    let head = store.last_seq().expect("seq");
    let other = cairn::Epoch { generation: epoch.generation + 1, ..epoch.clone() };
    for (resume, reason) in [
        (Resume { since: Some(Seq(1)), epoch: None }, ResetReason::Epoch),
        (Resume { since: Some(Seq(1)), epoch: Some(other) }, ResetReason::Epoch),
        (Resume { since: Some(head + 5), epoch: Some(epoch.clone()) }, ResetReason::Unavailable),
    ] {
        let head = store.last_seq().expect("seq");
        let mut watch = realtime.watch(root.clone(), spec(), &resume).expect("watch");
        let items = drain(&mut watch, Duration::from_millis(100));
        assert_eq!(summary(&items), [(format!("reset:{reason:?}"), String::new(), head.get())]);
        store.patch("notes", "a", json!({"n": 2}), None).expect("after the reset");
        let after = summary(&drain(&mut watch, QUIET));
        assert_eq!(after.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["update"], "live after a reset");
    }
    // Bad subscriptions are refused with what is wrong.
    for (spec, needle) in [
        (WatchSpec::collection("nope"), "nope"),
        (WatchSpec::collection("notes").filter("n >"), "filter"),
        (WatchSpec::collection("notes").filter("nope = 1"), "nope"),
        (WatchSpec::collection("notes").fields(&["nope"]), "nope"),
        (WatchSpec::collection("notes").record("bad id/"), "id"),
    ] {
        let err = realtime.watch(root.clone(), spec, &Resume::default()).expect_err("refused");
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn dropping_the_collection_ends_the_subscription() {
    let (_dir, store) = temp_store();
    notes(&store);
    let root = admin(&store);
    let realtime: Realtime = store.realtime(&RealtimeOptions::default()).expect("realtime");
    let mut watch = realtime.watch(root, WatchSpec::collection("notes"), &Resume::default()).expect("watch");
    store.create_with_id("notes", "a", json!({"n": 1})).expect("a");
    store.drop_collection("notes", &cairn::DropOptions { confirm: "notes".into() }).expect("drop");
    let items = summary(&drain(&mut watch, QUIET));
    assert_eq!(items.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["create", "reset:CollectionDropped"]);
    assert!(watch.is_ended());
}

#[test]
fn a_restore_starts_a_new_history() {
    let (dir, store) = temp_store();
    notes(&store);
    let before = store.epoch().expect("epoch");
    let backup = store.backup(&Default::default(), &mut |_, _, _| {}).expect("backup");
    store.create_with_id("notes", "a", json!({"n": 1})).expect("a");
    let path = dir.path().join("store");
    drop(store);
    cairn::Store::restore(&path, &backup.id, &Default::default(), &mut |_, _, _| {}).expect("restore");
    let reopened = Store::open(&path, cairn::StoreOptions::default()).expect("open");
    let after = reopened.epoch().expect("epoch");
    assert_eq!(after.store_id, before.store_id, "the same store");
    assert_eq!(after.generation, before.generation + 1, "a later history");
}
