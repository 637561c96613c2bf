//! The change log: a property test against a reference model, undo/redo, subscriptions.

use std::collections::BTreeMap;
use std::time::Duration;

use cairn::{ChangeOp, Error, Record, ScanOptions, Store};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use crate::with_notes;

/// What the reference model knows about a record.
#[derive(Debug, Clone, PartialEq)]
struct State {
    version: u64,
    body: Map<String, Value>,
    deleted: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Create(usize, Value),
    Replace(usize, Value),
    Patch(usize, Value),
    Delete(usize),
    Purge(usize),
    Revert(usize, u64),
    Undo(usize),
    Redo(usize),
    UndoThenRedo(usize),
}

const IDS: [&str; 4] = ["a", "b", "c", "d"];

fn field_value(name: &'static str) -> BoxedStrategy<Value> {
    match name {
        "title" => "[a-z]{0,6}".prop_map(Value::from).boxed(),
        "n" => (-5i64..5).prop_map(Value::from).boxed(),
        _ => proptest::sample::subsequence(vec!["x", "y", "z"], 0..3).prop_map(|t| json!(t)).boxed(),
    }
}

/// An object with the fields that are present.
fn object(title: Option<Value>, n: Option<Value>, tags: Option<Value>) -> Value {
    let fields = [("title", title), ("n", n), ("tags", tags)];
    Value::Object(fields.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?))).collect())
}

fn body() -> impl Strategy<Value = Value> {
    let (title, n, tags) = (field_value("title"), field_value("n"), field_value("tags"));
    (proptest::option::weighted(0.9, title), proptest::option::of(n), proptest::option::of(tags))
        .prop_map(|(title, n, tags)| object(title, n, tags))
}

fn patch() -> impl Strategy<Value = Value> {
    let entry = |name: &'static str| proptest::option::of(prop_oneof![Just(Value::Null), field_value(name)]);
    (entry("title"), entry("n"), entry("tags")).prop_map(|(title, n, tags)| object(title, n, tags))
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..IDS.len();
    prop_oneof![
        3 => (id.clone(), body()).prop_map(|(i, b)| Op::Create(i, b)),
        2 => (id.clone(), body()).prop_map(|(i, b)| Op::Replace(i, b)),
        3 => (id.clone(), patch()).prop_map(|(i, p)| Op::Patch(i, p)),
        1 => id.clone().prop_map(Op::Delete),
        1 => id.clone().prop_map(Op::Purge),
        1 => (id.clone(), 1u64..8).prop_map(|(i, v)| Op::Revert(i, v)),
        1 => id.clone().prop_map(Op::Undo),
        1 => id.clone().prop_map(Op::Redo),
        1 => id.prop_map(Op::UndoThenRedo),
    ]
}

/// RFC 7396, written independently of the library's implementation.
fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        if v.is_null() {
            target.remove(k);
        } else {
            target.insert(k.clone(), v.clone());
        }
    }
}

fn valid(body: &Map<String, Value>) -> bool {
    body.contains_key("title")
}

fn as_map(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn state_of(r: &Record) -> State {
    State { version: r.version, body: r.body.clone(), deleted: r.deleted_at.is_some() }
}

/// All rows of `notes`, deleted ones included.
fn stored(store: &Store) -> BTreeMap<String, State> {
    let options = ScanOptions { include_deleted: true, ..ScanOptions::page(None, 100) };
    store.scan("notes", &options).expect("scan").iter().map(|r| (r.id.clone(), state_of(r))).collect()
}

/// Rebuilds the collection from nothing but the change log.
fn replay(store: &Store) -> BTreeMap<String, State> {
    let mut out = BTreeMap::new();
    for change in store.changes_since(cairn::Seq(0), 1_000_000).expect("changes") {
        if change.collection != "notes" || !change.op.is_record_op() {
            continue;
        }
        match change.after {
            Some(after) => {
                out.insert(
                    change.id.clone(),
                    State { version: change.version, body: as_map(&after), deleted: change.deleted },
                );
            }
            None => {
                out.remove(&change.id);
            }
        }
    }
    out
}

fn run_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (_dir, store) = with_notes();
    let mut model: BTreeMap<String, State> = BTreeMap::new();
    // Every state each id has had, by version, as the model saw it committed.
    let mut states: BTreeMap<(String, u64), Option<State>> = BTreeMap::new();
    let mut last_version: BTreeMap<String, u64> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Create(i, b) => {
                let id = IDS[i];
                let result = store.create_with_id("notes", id, b.clone());
                if model.contains_key(id) {
                    prop_assert!(matches!(result, Err(Error::AlreadyExists { .. })), "{result:?}");
                } else if !valid(&as_map(&b)) {
                    prop_assert!(matches!(result, Err(Error::Validation { .. })), "{result:?}");
                } else {
                    let r = result.expect("create");
                    let version = last_version.get(id).copied().unwrap_or(0) + 1;
                    prop_assert_eq!(state_of(&r), State { version, body: as_map(&b), deleted: false });
                    model.insert(id.into(), state_of(&r));
                }
            }
            Op::Replace(i, ref b) | Op::Patch(i, ref b) => {
                let id = IDS[i];
                let is_patch = matches!(op, Op::Patch(..));
                let result = if is_patch {
                    store.patch("notes", id, b.clone(), None)
                } else {
                    store.replace("notes", id, b.clone(), None)
                };
                match model.get(id) {
                    None | Some(State { deleted: true, .. }) => {
                        prop_assert!(matches!(result, Err(Error::NotFound { .. })), "{result:?}")
                    }
                    Some(current) => {
                        let mut body = if is_patch { current.body.clone() } else { Map::new() };
                        merge(&mut body, &as_map(b));
                        if valid(&body) {
                            let r = result.expect("write");
                            prop_assert_eq!(state_of(&r), State { version: current.version + 1, body, deleted: false });
                            model.insert(id.into(), state_of(&r));
                        } else {
                            prop_assert!(matches!(result, Err(Error::Validation { .. })), "{result:?}");
                        }
                    }
                }
            }
            Op::Delete(i) => {
                let id = IDS[i];
                let result = store.delete("notes", id, None);
                match model.get(id).cloned() {
                    Some(current) if !current.deleted => {
                        let r = result.expect("delete");
                        prop_assert_eq!(
                            state_of(&r),
                            State { version: current.version + 1, body: current.body, deleted: true }
                        );
                        model.insert(id.into(), state_of(&r));
                    }
                    _ => prop_assert!(matches!(result, Err(Error::NotFound { .. })), "{result:?}"),
                }
            }
            Op::Purge(i) => {
                let id = IDS[i];
                let result = store.purge("notes", id);
                match model.get(id).cloned() {
                    Some(current) if current.deleted => {
                        prop_assert_eq!(result.expect("purge"), current.version + 1);
                        model.remove(id);
                        states.insert((id.into(), current.version + 1), None);
                        last_version.insert(id.into(), current.version + 1);
                    }
                    Some(_) => {
                        prop_assert!(matches!(result, Err(Error::NotAllowed(_))), "{result:?}")
                    }
                    None => {
                        prop_assert!(matches!(result, Err(Error::NotFound { .. })), "{result:?}")
                    }
                }
            }
            Op::Revert(i, v) => {
                let id = IDS[i];
                let result = store.revert("notes", id, v, None);
                match states.get(&(id.to_string(), v)).cloned() {
                    Some(Some(target)) => {
                        let r = result.expect("revert");
                        prop_assert_eq!(&r.body, &target.body);
                        prop_assert_eq!(r.deleted_at.is_some(), target.deleted);
                        prop_assert_eq!(r.version, last_version[id] + 1);
                        model.insert(id.into(), state_of(&r));
                    }
                    Some(None) => {
                        prop_assert!(matches!(result, Err(Error::NotAllowed(_))), "{result:?}")
                    }
                    None => prop_assert!(matches!(result, Err(Error::VersionNotFound { .. })), "{result:?}"),
                }
            }
            Op::Undo(i) | Op::Redo(i) => {
                let id = IDS[i];
                let result = if matches!(op, Op::Undo(_)) { store.undo("notes", id) } else { store.redo("notes", id) };
                match result {
                    Ok(r) => {
                        // Undo and redo only ever bring back a state the record had.
                        let earlier = states.iter().any(|((sid, _), s)| {
                            sid == id
                                && s.as_ref().is_some_and(|s| s.body == r.body && s.deleted == r.deleted_at.is_some())
                        });
                        prop_assert!(earlier, "undo/redo produced a state never seen: {r:?}");
                        model.insert(id.into(), state_of(&r));
                    }
                    Err(
                        Error::NothingTo { .. }
                        | Error::NotAllowed(_)
                        | Error::Unique { .. }
                        | Error::Validation { .. },
                    ) => {}
                    Err(Error::NotFound { .. }) => prop_assert!(!last_version.contains_key(id)),
                    Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
                }
            }
            Op::UndoThenRedo(i) => {
                let id = IDS[i];
                let before = model.get(id).cloned();
                if let Ok(undone) = store.undo("notes", id) {
                    let redone = store.redo("notes", id).expect("redo right after undo");
                    let before = before.expect("a record that could be undone exists");
                    prop_assert_eq!(&redone.body, &before.body);
                    prop_assert_eq!(redone.deleted_at.is_some(), before.deleted);
                    prop_assert_eq!(redone.version, undone.version + 1);
                    // Record the intermediate state too.
                    states.insert((id.into(), undone.version), Some(state_of(&undone)));
                    model.insert(id.into(), state_of(&redone));
                }
            }
        }
        for (id, state) in &model {
            states.insert((id.clone(), state.version), Some(state.clone()));
            last_version.insert(id.clone(), state.version);
        }
    }
    let stored = stored(&store);
    prop_assert_eq!(&stored, &model, "store differs from the reference model");
    prop_assert_eq!(&replay(&store), &stored, "replaying the change log does not reproduce the store");
    // Every change has the seq after the previous one.
    let changes = store.changes_since(cairn::Seq(0), 1_000_000).expect("changes");
    prop_assert!(changes.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn change_log_replays_to_the_store_and_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run_ops(ops)?;
    }
}

#[test]
fn undo_and_redo_walk_a_records_history() {
    let (_dir, store) = with_notes();
    store.create_with_id("notes", "a", json!({"title": "v1"})).expect("create");
    store.patch("notes", "a", json!({"title": "v2"}), None).expect("v2");
    store.patch("notes", "a", json!({"title": "v3"}), None).expect("v3");
    let title = |r: Record| r.body["title"].as_str().map(str::to_string).expect("title");
    assert_eq!(title(store.undo("notes", "a").expect("undo")), "v2");
    assert_eq!(title(store.undo("notes", "a").expect("undo")), "v1");
    assert!(matches!(store.undo("notes", "a"), Err(Error::NothingTo { action: "undo", .. })));
    assert_eq!(title(store.redo("notes", "a").expect("redo")), "v2");
    assert_eq!(title(store.redo("notes", "a").expect("redo")), "v3");
    assert!(matches!(store.redo("notes", "a"), Err(Error::NothingTo { action: "redo", .. })));
    // A new edit after an undo drops the redo branch.
    store.undo("notes", "a").expect("undo");
    store.patch("notes", "a", json!({"title": "v4"}), None).expect("edit");
    assert!(matches!(store.redo("notes", "a"), Err(Error::NothingTo { .. })));
    // Undo of a delete brings the record back.
    store.delete("notes", "a", None).expect("delete");
    assert_eq!(title(store.undo("notes", "a").expect("undelete")), "v4");
    let ops: Vec<ChangeOp> = store.history("notes", "a").expect("history").iter().map(|c| c.op).collect();
    assert_eq!(ops.len(), 11);
    assert_eq!(ops.last(), Some(&ChangeOp::Undo));
    assert!(store.history("notes", "a").expect("history").iter().all(|c| c.actor == "local"));
}

#[test]
fn subscribers_get_every_committed_change_in_order() {
    let (_dir, store) = with_notes();
    let mut from_start = store.subscribe(Some(cairn::Seq(0))).expect("subscribe from 0");
    let mut live = store.subscribe(None).expect("subscribe");
    let mut slow = store.subscribe(None).expect("subscribe");
    // A failed write publishes nothing.
    assert!(store.create("notes", json!({"title": 1})).is_err());
    let editor = store.as_actor("editor");
    // More than a subscriber's buffer, so `slow` falls behind and must catch up from the log.
    let total = 1500;
    let ids: Vec<String> = (0..total).map(|i| format!("r{i:05}")).collect();
    let batch = ids.clone();
    editor
        .transaction(move |tx| {
            for id in &batch {
                tx.create("notes", Some(id), json!({"title": "t"}))?;
            }
            Ok(())
        })
        .expect("commit");
    let first = from_start.recv_timeout(Duration::from_secs(5)).expect("recv").expect("collection create");
    assert_eq!((first.seq.get(), first.op), (1, ChangeOp::CollectionCreate));
    for sub in [&mut from_start, &mut live, &mut slow] {
        for (n, id) in ids.iter().enumerate() {
            let change = sub.recv_timeout(Duration::from_secs(5)).expect("recv").expect("a change");
            assert_eq!(
                (change.seq.get(), change.id.as_str(), change.op),
                (n as u64 + 2, id.as_str(), ChangeOp::Create)
            );
            assert_eq!(change.actor, "editor");
        }
        assert!(sub.recv_timeout(Duration::from_millis(20)).expect("recv").is_none());
    }
}
