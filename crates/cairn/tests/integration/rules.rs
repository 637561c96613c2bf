//! Collection rules for signed-in callers: lists restricted inside the query, records others
//! may not see answer "not found" on every verb, the owner set on create and never forged,
//! writes checked before and after, admins held to nothing.

use cairn::{CollectionSchema, ErrorKind, Principal, Query, Search, SessionOptions, Store};
use serde_json::json;

use crate::temp_store;

fn principal(store: &Store, name: &str, role: &str) -> Principal {
    store.create_user(name, "a good password", role).expect("user");
    let session = store.login(name, "a good password", &SessionOptions::default()).expect("login");
    store.authenticate(&session.secret).expect("principal")
}

fn owned_notes(store: &Store) {
    let schema = r#"{"name": "notes", "fields": [
        {"name": "title", "type": "text", "fulltext": true},
        {"name": "owner", "type": "text", "indexed": true},
        {"name": "team", "type": "text"}],
      "rules": {"list": "owner = @auth.id or team = @auth.role", "view": "owner = @auth.id or team = @auth.role",
                "create": "", "update": "owner = @auth.id", "delete": "owner = @auth.id", "owner": "owner"}}"#;
    store.create_collection(CollectionSchema::from_json(schema, "schema").expect("schema")).expect("collection");
}

#[test]
fn a_caller_sees_counts_and_changes_only_what_the_rules_let_them() {
    let (_dir, store) = temp_store();
    owned_notes(&store);
    let ana = principal(&store, "ana", "user");
    let bob = principal(&store, "bob", "user");
    let admin = principal(&store, "root", "admin");
    let forged = json!({"title": "ana's secret", "owner": bob.user.id});
    let a1 = store
        .transaction({
            let ana = ana.clone();
            move |tx| tx.create_as(&ana, "notes", Some("a1"), forged)
        })
        .expect("create");
    assert_eq!(a1.body["owner"], json!(ana.user.id), "the owner is the caller, whatever the body says");
    let bob_note = json!({"title": "bob's note"});
    store
        .transaction({
            let bob = bob.clone();
            move |tx| tx.create_as(&bob, "notes", Some("b1"), bob_note)
        })
        .expect("create");
    store.create_with_id("notes", "t1", json!({"title": "team secret note", "team": "editor"})).expect("t1");

    let ids = |p: &Principal, filter: Option<&str>| -> Vec<String> {
        let query = Query { filter: filter.map(Into::into), ..Query::default() };
        store.query_as(p, "notes", &query).expect("query").rows.into_iter().map(|r| r.id).collect()
    };
    assert_eq!(ids(&bob, None), ["b1"]);
    assert!(ids(&bob, Some("title = \"ana's secret\"")).is_empty(), "a filter on her fields finds nothing");
    assert!(ids(&bob, Some(&format!("owner = \"{}\"", ana.user.id))).is_empty());
    assert_eq!(ids(&admin, None), ["a1", "b1", "t1"], "admins see everything");
    assert_eq!(store.count_as(&bob, "notes", None).expect("count"), 1);
    assert_eq!(store.count_as(&bob, "notes", Some("title = \"ana's secret\"")).expect("count"), 0);
    let hits = store.search_as(&bob, "notes", &Search { terms: "secret".into(), ..Search::default() }).expect("search");
    assert!(hits.is_empty(), "{hits:?}");

    // By id, what bob may not see does not exist, on every verb.
    let missing = store.get_as(&bob, "notes", "nope").expect_err("missing");
    for err in [
        store.get_as(&bob, "notes", "a1").expect_err("get"),
        store.history_as(&bob, "notes", "a1").expect_err("history"),
        store
            .transaction({
                let bob = bob.clone();
                move |tx| {
                    tx.update_as(&bob, "notes", "a1", |tx| tx.patch("notes", "a1", &json!({"title": "mine"}), None))
                }
            })
            .expect_err("patch"),
        store
            .transaction({
                let bob = bob.clone();
                move |tx| tx.delete_as(&bob, "notes", "a1", None)
            })
            .expect_err("delete"),
    ] {
        assert_eq!(err.kind(), missing.kind(), "{err}");
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
    assert_eq!(store.get("notes", "a1").expect("a1").version, 1, "nothing changed");

    // A role: editors see the team's note but may not change it (the update rule is the owner's).
    let eve = principal(&store, "eve", "editor");
    assert_eq!(ids(&eve, None), ["t1"]);
    let err = store
        .transaction({
            let eve = eve.clone();
            move |tx| tx.update_as(&eve, "notes", "t1", |tx| tx.patch("notes", "t1", &json!({"title": "x"}), None))
        })
        .expect_err("not hers");
    assert_eq!(err.kind(), ErrorKind::Forbidden);

    // The owner changes her note, but can neither give it away nor write past the rule.
    store
        .transaction({
            let ana = ana.clone();
            move |tx| {
                tx.update_as(&ana, "notes", "a1", |tx| tx.patch("notes", "a1", &json!({"title": "renamed"}), None))
            }
        })
        .expect("her own");
    let bob_id = bob.user.id.clone();
    let err = store
        .transaction({
            let ana = ana.clone();
            move |tx| {
                tx.update_as(&ana, "notes", "a1", move |tx| tx.patch("notes", "a1", &json!({"owner": bob_id}), None))
            }
        })
        .expect_err("the owner cannot be changed");
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    assert_eq!(store.get("notes", "a1").expect("a1").body["owner"], json!(ana.user.id), "rolled back");
    store
        .transaction({
            let ana = ana.clone();
            move |tx| tx.delete_as(&ana, "notes", "a1", None)
        })
        .expect("her own");
}

#[test]
fn without_a_rule_only_admins_may_and_bad_rules_are_refused() {
    let (_dir, store) = temp_store();
    store
        .create_collection(
            CollectionSchema::from_json(r#"{"name": "plain", "fields": [{"name": "title", "type": "text"}]}"#, "s")
                .expect("schema"),
        )
        .expect("plain");
    store.create_with_id("plain", "p1", json!({"title": "t"})).expect("p1");
    let ana = principal(&store, "ana", "user");
    let admin = principal(&store, "root", "admin");
    assert_eq!(
        store.query_as(&ana, "plain", &Query::default()).expect_err("no list rule").kind(),
        ErrorKind::Forbidden
    );
    assert_eq!(store.get_as(&ana, "plain", "p1").expect_err("no view rule").kind(), ErrorKind::Forbidden);
    assert_eq!(store.get_as(&ana, "plain", "nope").expect_err("the same for any id").kind(), ErrorKind::Forbidden);
    assert_eq!(store.query_as(&admin, "plain", &Query::default()).expect("admin").rows.len(), 1);

    for (rules, says) in [
        (r#"{"list": "colour = \"red\""}"#, "colour"),
        (r#"{"view": "title = @request.body"}"#, "@request.body"),
        (r#"{"list": "title ="}"#, "rules.list"),
        (r#"{"owner": "nope"}"#, "owner"),
        (r#"{"lists": ""}"#, "lists"),
    ] {
        let text = format!(r#"{{"name": "bad", "fields": [{{"name": "title", "type": "text"}}], "rules": {rules}}}"#);
        let err = CollectionSchema::from_json(&text, "schema")
            .and_then(|s| store.create_collection(s).map(drop))
            .expect_err(rules);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(says), "{rules}: {err}");
    }
}

mod property {
    use std::collections::BTreeSet;

    use cairn::{CollectionSchema, Query};
    use proptest::prelude::*;
    use serde_json::json;

    use super::principal;

    /// A rule, and the same rule written as plain Rust over (owner, team, n) and the caller.
    #[derive(Debug, Clone)]
    enum Rule {
        Own,
        Team,
        Above(i64),
        OwnOr(i64),
        OwnAnd(i64),
        TeamOrBelow(i64),
    }

    impl Rule {
        fn text(&self) -> String {
            match self {
                Rule::Own => "owner = @auth.id".into(),
                Rule::Team => "team = @auth.role".into(),
                Rule::Above(k) => format!("n > {k}"),
                Rule::OwnOr(k) => format!("owner = @auth.id or n > {k}"),
                Rule::OwnAnd(k) => format!("owner = @auth.id and n < {k}"),
                Rule::TeamOrBelow(k) => format!("(team = @auth.role) or not (n >= {k})"),
            }
        }

        fn allows(&self, owner: &str, team: &str, n: i64, caller: &str, role: &str) -> bool {
            match self {
                Rule::Own => owner == caller,
                Rule::Team => team == role,
                Rule::Above(k) => n > *k,
                Rule::OwnOr(k) => owner == caller || n > *k,
                Rule::OwnAnd(k) => owner == caller && n < *k,
                Rule::TeamOrBelow(k) => team == role || n < *k,
            }
        }
    }

    fn rule() -> impl Strategy<Value = Rule> {
        prop_oneof![
            Just(Rule::Own),
            Just(Rule::Team),
            (-5i64..5).prop_map(Rule::Above),
            (-5i64..5).prop_map(Rule::OwnOr),
            (-5i64..5).prop_map(Rule::OwnAnd),
            (-5i64..5).prop_map(Rule::TeamOrBelow),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

        #[test]
        fn what_each_user_lists_is_what_the_rule_allows(
            rule in rule(),
            records in prop::collection::vec((0usize..3, 0usize..2, -6i64..6), 0..25),
        ) {
            let (_dir, store) = crate::temp_store();
            let schema = json!({"name": "items", "fields": [
                    {"name": "owner", "type": "text", "indexed": true},
                    {"name": "team", "type": "text"},
                    {"name": "n", "type": "integer", "indexed": true}],
                "rules": {"list": rule.text()}});
            store.create_collection(CollectionSchema::from_json(&schema.to_string(), "schema").expect("schema")).expect("items");
            let users = [principal(&store, "u0", "red"), principal(&store, "u1", "blue"), principal(&store, "u2", "red")];
            let teams = ["red", "blue"];
            for (i, (owner, team, n)) in records.iter().enumerate() {
                let body = json!({"owner": users[*owner].user.id, "team": teams[*team], "n": n});
                store.create_with_id("items", &format!("r{i:02}"), body).expect("record");
            }
            for caller in &users {
                let listed: BTreeSet<String> = store
                    .query_as(caller, "items", &Query { limit: 100, ..Query::default() })
                    .expect("query")
                    .rows
                    .into_iter()
                    .map(|r| r.id)
                    .collect();
                let expected: BTreeSet<String> = records
                    .iter()
                    .enumerate()
                    .filter(|(_, (owner, team, n))| {
                        rule.allows(&users[*owner].user.id, teams[*team], *n, &caller.user.id, &caller.user.role)
                    })
                    .map(|(i, _)| format!("r{i:02}"))
                    .collect();
                prop_assert_eq!(&listed, &expected, "{} as {}", rule.text(), caller.user.name);
                prop_assert_eq!(store.count_as(caller, "items", None).expect("count"), expected.len() as u64);
            }
        }
    }
}
