//! Collection rules for signed-in callers: lists restricted inside the query, records others
//! may not see answer "not found" on every verb, the owner set on create and never forged,
//! writes checked before and after, admins held to nothing.

use cairn::{Access, CollectionSchema, ErrorKind, Grantee, Principal, Query, Search, SessionOptions, Store};
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
fn without_a_rule_only_admins_and_grants_let_anyone_in_and_bad_rules_are_refused() {
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
    assert!(store.query_as(&ana, "plain", &Query::default()).expect("no list rule").rows.is_empty());
    assert_eq!(store.get_as(&ana, "plain", "p1").expect_err("no view rule").kind(), ErrorKind::NotFound);
    assert_eq!(store.get_as(&ana, "plain", "nope").expect_err("the same for any id").kind(), ErrorKind::NotFound);
    let create = store.transaction({
        let ana = ana.clone();
        move |tx| tx.create_as(&ana, "plain", None, json!({"title": "x"}))
    });
    assert_eq!(create.expect_err("no create rule").kind(), ErrorKind::Forbidden);
    assert_eq!(store.query_as(&admin, "plain", &Query::default()).expect("admin").rows.len(), 1);
    // A grant opens one record, even where no rule lets anyone in.
    store.grant("plain", "p1", &Grantee::User("ana".into()), Access::Read).expect("grant");
    assert_eq!(store.query_as(&ana, "plain", &Query::default()).expect("shared").rows.len(), 1);
    assert_eq!(store.get_as(&ana, "plain", "p1").expect("shared").id, "p1");

    for (rules, says) in [
        (r#"{"list": "colour = \"red\""}"#, "colour"),
        (r#"{"view": "title = @request.body"}"#, "@request.body"),
        (r#"{"view": "title > @request.now and"}"#, "rules.view"),
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

#[test]
fn a_shared_record_opens_exactly_as_granted_and_closes_when_revoked() {
    let (_dir, store) = temp_store();
    owned_notes(&store);
    let ana = principal(&store, "ana", "user");
    let bob = principal(&store, "bob", "user");
    let cy = principal(&store, "cy", "reviewer");
    let as_ana = |id: &'static str, title: &'static str| {
        let ana = ana.clone();
        store.transaction(move |tx| tx.create_as(&ana, "notes", Some(id), json!({"title": title}))).expect("create")
    };
    as_ana("a1", "ana's private plan");
    as_ana("a2", "ana's shared plan");
    let visible = |p: &Principal| -> Vec<String> {
        store.query_as(p, "notes", &Query::default()).expect("query").rows.into_iter().map(|r| r.id).collect()
    };
    let patch = |p: &Principal, id: &'static str| {
        let p = p.clone();
        store.transaction(move |tx| {
            tx.update_as(&p, "notes", id, |tx| tx.patch("notes", id, &json!({"title": "changed"}), None))
        })
    };
    assert!(visible(&bob).is_empty());

    // Only the owner (or an admin) says who a record is shared with; bob cannot even see a1.
    let share = |p: &Principal, id: &'static str, grantee: Grantee, access: Access| {
        let p = p.clone();
        store.transaction(move |tx| tx.grant(Some(&p), "notes", id, &grantee, access))
    };
    let err = share(&bob, "a2", Grantee::User("bob".into()), Access::Write).expect_err("not his");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let read = share(&ana, "a2", Grantee::User("bob".into()), Access::Read).expect("ana shares a2 with bob");
    assert_eq!((read.grantee.clone(), read.access), (Grantee::User("bob".into()), Access::Read));
    assert_eq!(visible(&bob), ["a2"]);
    assert_eq!(store.count_as(&bob, "notes", None).expect("count"), 1);
    let hits = store.search_as(&bob, "notes", &Search { terms: "plan".into(), ..Search::default() }).expect("search");
    assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["a2"]);
    assert_eq!(store.get_as(&bob, "notes", "a2").expect("shared").id, "a2");
    assert_eq!(store.history_as(&bob, "notes", "a2").expect("history").len(), 1);
    assert_eq!(store.get_as(&bob, "notes", "a1").expect_err("private").kind(), ErrorKind::NotFound);
    assert_eq!(patch(&bob, "a2").expect_err("read only").kind(), ErrorKind::Forbidden);
    let err = share(&bob, "a2", Grantee::User("bob".into()), Access::Write).expect_err("a reader is not the owner");
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");

    // Write lets bob change it — not delete it, and not take it over.
    let write = share(&ana, "a2", Grantee::User("bob".into()), Access::Write).expect("upgrade");
    assert_eq!(write.id, read.id, "sharing again with the same grantee sets the access");
    assert_eq!(patch(&bob, "a2").expect("a writer").body["title"], json!("changed"));
    let take = {
        let bob = bob.clone();
        let owner = json!({"owner": bob.user.id});
        store.transaction(move |tx| tx.update_as(&bob, "notes", "a2", |tx| tx.patch("notes", "a2", &owner, None)))
    };
    assert_eq!(take.expect_err("owner stays").kind(), ErrorKind::Forbidden);
    let delete = {
        let bob = bob.clone();
        store.transaction(move |tx| tx.delete_as(&bob, "notes", "a2", None))
    };
    assert_eq!(delete.expect_err("no delete").kind(), ErrorKind::Forbidden);

    // A role grant opens it to every user of the role; revoking closes it on the next read.
    let role = share(&ana, "a1", Grantee::Role("reviewer".into()), Access::Read).expect("role");
    assert_eq!(visible(&cy), ["a1"]);
    assert!(!visible(&bob).contains(&"a1".to_string()));
    assert_eq!(store.grants("notes", Some("a1")).expect("grants"), std::slice::from_ref(&role));
    assert_eq!(store.grants("notes", None).expect("all").len(), 2);
    store.revoke_grant(&role.id).expect("revoke");
    assert!(visible(&cy).is_empty());
    assert_eq!(store.revoke_grant(&role.id).expect_err("gone").kind(), ErrorKind::NotFound);
    let err = store.grant("notes", "a1", &Grantee::User("nobody".into()), Access::Read).expect_err("no user");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = store.grant("notes", "zz", &Grantee::User("bob".into()), Access::Read).expect_err("no record");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // Grants are audited; a purged record takes its grants with it.
    let trail = store.audit_log(Some("action = \"grant.create\" or action = \"grant.revoke\""), 0, 100).expect("audit");
    let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["grant.create", "grant.create", "grant.create", "grant.revoke"], "{trail:?}");
    store.delete("notes", "a2", None).expect("delete");
    store.purge("notes", "a2").expect("purge");
    assert!(store.grants("notes", Some("a2")).expect("none").is_empty());
    store.create_with_id("notes", "a2", json!({"title": "a new record, same id"})).expect("reuse");
    assert!(visible(&bob).is_empty(), "a new record under the id inherits no grant");
}

mod property {
    use std::collections::BTreeSet;

    use cairn::{CollectionSchema, Query};
    use proptest::prelude::*;
    use serde_json::json;

    use super::principal;

    /// A rule, and the same rule written as plain Rust over (owner, team, n) and the caller; a
    /// record is listed when the rule allows it or it is shared with the caller or their role.
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
        fn what_each_user_lists_is_what_the_rule_or_a_grant_allows(
            rule in rule(),
            records in prop::collection::vec((0usize..3, 0usize..2, -6i64..6), 0..25),
            // Grants: (record index, to user k or to role k, as write?).
            grants in prop::collection::vec((0usize..25, 0usize..3, any::<bool>(), any::<bool>()), 0..6),
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
            let mut shared: BTreeSet<(usize, String)> = BTreeSet::new(); // (record, user name or role)
            for (record, k, to_role, write) in &grants {
                if *record >= records.len() {
                    continue;
                }
                let (grantee, key) = if *to_role {
                    (cairn::Grantee::Role(teams[k % 2].into()), teams[k % 2].to_string())
                } else {
                    (cairn::Grantee::User(users[*k].user.name.clone()), users[*k].user.name.clone())
                };
                let access = if *write { cairn::Access::Write } else { cairn::Access::Read };
                store.grant("items", &format!("r{record:02}"), &grantee, access).expect("grant");
                shared.insert((*record, key));
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
                    .filter(|(i, (owner, team, n))| {
                        rule.allows(&users[*owner].user.id, teams[*team], *n, &caller.user.id, &caller.user.role)
                            || shared.contains(&(*i, caller.user.name.clone()))
                            || shared.contains(&(*i, caller.user.role.clone()))
                    })
                    .map(|(i, _)| format!("r{i:02}"))
                    .collect();
                prop_assert_eq!(&listed, &expected, "{} as {}", rule.text(), caller.user.name);
                prop_assert_eq!(store.count_as(caller, "items", None).expect("count"), expected.len() as u64);
            }
        }
    }
}
