//! The BOLA/IDOR matrix: two users with private records in a collection whose rules give each
//! their own. For every route that takes an id or a filter, user B never sees, counts,
//! changes or learns the existence of user A's records; routes that bypass the rules are for
//! admins only.

use axum::http::Method;
use cairn_server::ServerConfig;
use serde_json::json;

use crate::{app, call, Api};

fn signed_in(api: &Api, store: &cairn::Store, name: &str) -> (Api, String) {
    store.create_user(name, "a good password", "user").expect("user");
    let session = store.login(name, "a good password", &cairn::SessionOptions::default()).expect("login");
    let id = store.authenticate(&session.secret).expect("who").user.id;
    (Api { router: api.router.clone(), token: session.secret }, id)
}

#[tokio::test]
async fn one_user_never_reaches_anothers_records_through_any_route() {
    let (_tmp, store, admin) = app(ServerConfig::default());
    let schema = json!({"name": "diary", "fields": [
            {"name": "title", "type": "text", "fulltext": true},
            {"name": "owner", "type": "text", "indexed": true},
            {"name": "file", "type": "attachment"}],
        "rules": {"list": "owner = @auth.id", "view": "owner = @auth.id", "create": "",
                  "update": "owner = @auth.id", "delete": "owner = @auth.id", "owner": "owner"}});
    assert_eq!(call(&admin, Method::POST, "/api/collections", Some(&schema.to_string()), &[]).await.status, 201);
    let (a, a_id) = signed_in(&admin, &store, "ana");
    let (b, b_id) = signed_in(&admin, &store, "bob");
    let forged = json!({"title": "ana's private entry", "owner": b_id}).to_string();
    let created = call(&a, Method::POST, "/api/collections/diary/records?id=a1", Some(&forged), &[]).await;
    assert_eq!(
        (created.status.as_u16(), &created.body["body"]["owner"]),
        (201, &json!(a_id)),
        "the owner cannot be forged"
    );
    let own =
        call(&b, Method::POST, "/api/collections/diary/records?id=b1", Some(r#"{"title": "bob's entry"}"#), &[]).await;
    assert_eq!(own.status, 201);

    // By id: every verb on ana's record answers bob exactly as for a record that does not exist.
    let base = "/api/collections/diary/records";
    for id in ["a1", "does-not-exist"] {
        let cases: [(Method, String, Option<&str>); 8] = [
            (Method::GET, format!("{base}/{id}"), None),
            (Method::PATCH, format!("{base}/{id}"), Some(r#"{"title": "mine now"}"#)),
            (Method::PUT, format!("{base}/{id}"), Some(r#"{"title": "mine now"}"#)),
            (Method::DELETE, format!("{base}/{id}"), None),
            (Method::GET, format!("{base}/{id}/history"), None),
            (Method::POST, format!("{base}/{id}/revert"), Some(r#"{"version": 1}"#)),
            (Method::POST, format!("{base}/{id}/undo"), None),
            (Method::POST, format!("{base}/{id}/redo"), None),
        ];
        for (method, uri, body) in cases {
            let answer = call(&b, method.clone(), &uri, body, &[]).await;
            let detail = answer.problem(404, "not_found");
            assert!(!detail.contains("private"), "{method} {uri}: {detail}");
        }
    }
    assert_eq!(store.get("diary", "a1").expect("a1").version, 1, "nothing of ana's changed");

    // Attachments: bob can neither read ana's nor add to her record; purging is for admins.
    let upload = format!("{base}/a1/attachments/file?name=diary.txt");
    let (status, _, stored) = crate::call_raw(&a, Method::POST, &upload, b"dear diary".to_vec(), &[]).await;
    assert_eq!(status, 201, "{stored:?}");
    let hash = store.get("diary", "a1").expect("a1").body["file"]["hash"].as_str().expect("hash").to_string();
    let download = format!("{base}/a1/attachments/file/{hash}");
    assert_eq!(crate::call_raw(&a, Method::GET, &download, Vec::new(), &[]).await.0, 200);
    call(&b, Method::GET, &download, None, &[]).await.problem(404, "not_found");
    let (status, _, _) = crate::call_raw(&b, Method::POST, &upload, b"bob's words".to_vec(), &[]).await;
    assert_eq!(status, 404);
    call(&b, Method::POST, &format!("{base}/a1/purge"), None, &[]).await.problem(403, "forbidden");
    assert_eq!(store.get("diary", "a1").expect("a1").version, 2, "only ana's upload changed it");

    // By filter: lists, counts and searches leave ana's records out, whatever bob asks for.
    for filter in ["", "title%20%3D%20%22ana's%20private%20entry%22", &format!("owner%20%3D%20%22{a_id}%22")] {
        let list = call(&b, Method::GET, &format!("{base}?filter={filter}"), None, &[]).await;
        let ids: Vec<&str> =
            list.body["items"].as_array().expect("items").iter().map(|r| r["id"].as_str().expect("id")).collect();
        assert!(!ids.contains(&"a1"), "{filter}: {ids:?}");
        let count = call(&b, Method::GET, &format!("/api/collections/diary/count?filter={filter}"), None, &[]).await;
        assert!(count.body["count"].as_u64().expect("count") <= 1, "{filter}: {count:?}");
    }
    let hits = call(&b, Method::GET, "/api/collections/diary/search?q=private", None, &[]).await;
    assert_eq!(hits.body["items"], json!([]), "{hits:?}");

    // Routes that bypass the rules are for admins.
    let batch = json!([{"op": "patch", "collection": "diary", "id": "a1", "patch": {"title": "x"}}]).to_string();
    call(&b, Method::POST, "/api/batch", Some(&batch), &[]).await.problem(403, "forbidden");
    call(&b, Method::GET, "/api/changes", None, &[]).await.problem(403, "forbidden");
    call(&b, Method::GET, "/api/collections", None, &[]).await.problem(403, "forbidden");

    // Ana's own record is hers; the admin sees both.
    let mine = call(&a, Method::PATCH, &format!("{base}/a1"), Some(r#"{"title": "renamed"}"#), &[]).await;
    assert_eq!(mine.status, 200, "{mine:?}");
    let give_away = json!({"owner": b_id}).to_string();
    call(&a, Method::PATCH, &format!("{base}/a1"), Some(&give_away), &[]).await.problem(403, "forbidden");
    let all = call(&admin, Method::GET, base, None, &[]).await;
    assert_eq!(all.body["items"].as_array().map(Vec::len), Some(2));

    // The change log names who made each change; refusals are in the audit trail.
    let history = store.history("diary", "a1").expect("history");
    assert!(history.iter().all(|c| c.actor == "ana"), "{history:?}");
    let denied = store.audit_log(Some("action = \"request.denied\""), 0, 100).expect("audit");
    let seen: Vec<(String, String)> = denied.into_iter().map(|e| (e.actor, e.target)).collect();
    assert!(seen.contains(&("bob".into(), "POST /api/batch".into())), "{seen:?}");
    assert!(seen.contains(&("ana".into(), "PATCH /api/collections/diary/records/a1".into())), "{seen:?}");
}

#[tokio::test]
async fn a_shared_record_reaches_exactly_whom_it_is_granted_to_until_revoked() {
    let (_tmp, store, admin) = app(ServerConfig::default());
    let schema = json!({"name": "diary", "fields": [
            {"name": "title", "type": "text", "fulltext": true},
            {"name": "owner", "type": "text", "indexed": true}],
        "rules": {"list": "owner = @auth.id", "view": "owner = @auth.id", "create": "",
                  "update": "owner = @auth.id", "delete": "owner = @auth.id", "owner": "owner"}});
    assert_eq!(call(&admin, Method::POST, "/api/collections", Some(&schema.to_string()), &[]).await.status, 201);
    let (a, _) = signed_in(&admin, &store, "ana");
    let (b, _) = signed_in(&admin, &store, "bob");
    let base = "/api/collections/diary/records";
    for (id, title) in [("a1", "ana's private entry"), ("a2", "ana's shared entry")] {
        let body = json!({"title": title}).to_string();
        assert_eq!(call(&a, Method::POST, &format!("{base}?id={id}"), Some(&body), &[]).await.status, 201);
    }
    let listed = |api: &crate::Api| {
        let api = api.clone();
        async move {
            let list = call(&api, Method::GET, "/api/collections/diary/records", None, &[]).await;
            let mut ids: Vec<String> = list.body["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|r| r["id"].as_str().expect("id").to_string())
                .collect();
            ids.sort();
            ids
        }
    };

    // Only the owner shares; bob cannot share, list or revoke the grants of ana's records.
    let to_bob = |access: &str| json!({"grantee": {"user": "bob"}, "access": access}).to_string();
    call(&b, Method::POST, &format!("{base}/a2/grants"), Some(&to_bob("write")), &[]).await.problem(404, "not_found");
    let read = call(&a, Method::POST, &format!("{base}/a2/grants"), Some(&to_bob("read")), &[]).await;
    assert_eq!((read.status.as_u16(), &read.body["access"]), (201, &json!("read")), "{read:?}");
    let grant_id = read.body["id"].as_str().expect("grant id").to_string();
    for bad in [r#"{"grantee": {"group": "x"}, "access": "read"}"#, r#"{"grantee": {"user": "bob"}, "access": "all"}"#]
    {
        call(&a, Method::POST, &format!("{base}/a2/grants"), Some(bad), &[]).await.problem(400, "invalid_input");
    }
    let nobody = json!({"grantee": {"user": "nobody"}, "access": "read"}).to_string();
    call(&a, Method::POST, &format!("{base}/a2/grants"), Some(&nobody), &[]).await.problem(404, "not_found");

    // Read: bob sees, counts, searches and reads the history of a2 — and a1 stays invisible.
    assert_eq!(listed(&b).await, ["a2"]);
    let count = call(&b, Method::GET, "/api/collections/diary/count", None, &[]).await;
    assert_eq!(count.body["count"], 1);
    let hits = call(&b, Method::GET, "/api/collections/diary/search?q=entry", None, &[]).await;
    let hit_ids: Vec<&str> =
        hits.body["items"].as_array().expect("hits").iter().filter_map(|h| h["id"].as_str()).collect();
    assert_eq!(hit_ids, ["a2"], "{hits:?}");
    assert_eq!(call(&b, Method::GET, &format!("{base}/a2"), None, &[]).await.status, 200);
    assert_eq!(call(&b, Method::GET, &format!("{base}/a2/history"), None, &[]).await.status, 200);
    call(&b, Method::GET, &format!("{base}/a1"), None, &[]).await.problem(404, "not_found");
    let edit = Some(r#"{"title": "bob was here"}"#);
    call(&b, Method::PATCH, &format!("{base}/a2"), edit, &[]).await.problem(403, "forbidden");
    call(&b, Method::GET, &format!("{base}/a2/grants"), None, &[]).await.problem(403, "forbidden");
    call(&b, Method::DELETE, &format!("/api/grants/{grant_id}"), None, &[]).await.problem(403, "forbidden");

    // Write: bob may change a2, not delete it.
    let write = call(&a, Method::POST, &format!("{base}/a2/grants"), Some(&to_bob("write")), &[]).await;
    assert_eq!(write.body["id"], json!(grant_id), "the same grant, now write");
    assert_eq!(call(&b, Method::PATCH, &format!("{base}/a2"), edit, &[]).await.status, 200);
    call(&b, Method::DELETE, &format!("{base}/a2"), None, &[]).await.problem(403, "forbidden");
    let grants = call(&a, Method::GET, &format!("{base}/a2/grants"), None, &[]).await;
    assert_eq!(grants.body["items"].as_array().map(Vec::len), Some(1), "{grants:?}");

    // Revoked: the next request no longer reaches it.
    assert_eq!(call(&a, Method::DELETE, &format!("/api/grants/{grant_id}"), None, &[]).await.status, 200);
    assert!(listed(&b).await.is_empty());
    call(&b, Method::GET, &format!("{base}/a2"), None, &[]).await.problem(404, "not_found");
    call(&a, Method::DELETE, &format!("/api/grants/{grant_id}"), None, &[]).await.problem(404, "not_found");
    let trail = store.audit_log(Some("action = \"grant.create\" or action = \"grant.revoke\""), 0, 10).expect("audit");
    assert!(trail.iter().all(|e| e.actor == "ana") && trail.len() == 3, "{trail:?}");
}
