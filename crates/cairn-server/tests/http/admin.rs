//! Search, batches, revert/undo/redo, settings, the audit trail and backups over HTTP.

use axum::http::Method;
use cairn_server::ServerConfig;
use serde_json::json;

use crate::{app, call};

#[tokio::test]
async fn search_and_all_or_nothing_batches() {
    let (_tmp, store, api) = app(ServerConfig::default());
    store
        .create_collection(
            cairn::CollectionSchema::from_json(
                r#"{"name": "docs", "fields": [{"name": "text", "type": "text", "fulltext": true}]}"#,
                "docs",
            )
            .expect("schema"),
        )
        .expect("docs");
    store.create_with_id("docs", "d1", json!({"text": "the quick brown fox"})).expect("d1");
    store.create_with_id("docs", "d2", json!({"text": "a lazy dog"})).expect("d2");
    let hits = call(&api, Method::GET, "/api/collections/docs/search?q=fox", None, &[]).await;
    assert_eq!(hits.status, 200, "{hits:?}");
    let ids: Vec<&str> =
        hits.body["items"].as_array().expect("items").iter().map(|h| h["id"].as_str().expect("id")).collect();
    assert_eq!(ids, ["d1"]);
    call(&api, Method::GET, "/api/collections/docs/search", None, &[]).await.problem(400, "invalid_input");

    let ok = json!([
        {"op": "create", "collection": "notes", "id": "b1", "body": {"title": "one"}},
        {"op": "patch", "collection": "docs", "id": "d2", "patch": {"text": "a lazy cat"}, "expected": 1}
    ]);
    let done = call(&api, Method::POST, "/api/batch", Some(&ok.to_string()), &[]).await;
    assert_eq!(done.status, 200, "{done:?}");
    assert_eq!(done.body["items"].as_array().map(Vec::len), Some(2));
    let bad = json!([
        {"op": "create", "collection": "notes", "id": "b2", "body": {"title": "two"}},
        {"op": "create", "collection": "notes", "id": "b3", "body": {"title": 3}}
    ]);
    let refused = call(&api, Method::POST, "/api/batch", Some(&bad.to_string()), &[]).await;
    refused.problem(400, "invalid_input");
    assert!(store.get("notes", "b2").is_err(), "nothing of a refused batch is written");
    call(&api, Method::POST, "/api/batch", Some(r#"[{"op": "explode"}]"#), &[]).await.problem(400, "invalid_input");
    call(&api, Method::POST, "/api/batch", Some("[]"), &[]).await.problem(400, "invalid_input");
}

#[tokio::test]
async fn revert_undo_and_redo_make_new_versions() {
    let (_tmp, store, api) = app(ServerConfig::default());
    store.create_with_id("notes", "n1", json!({"title": "v1"})).expect("n1");
    store.patch("notes", "n1", json!({"title": "v2"}), None).expect("v2");
    let base = "/api/collections/notes/records/n1";
    let reverted =
        call(&api, Method::POST, &format!("{base}/revert"), Some(r#"{"version": 1}"#), &[("if-match", "\"2\"")]).await;
    assert_eq!((reverted.status.as_u16(), reverted.body["version"].as_u64()), (200, Some(3)), "{reverted:?}");
    assert_eq!(reverted.body["body"]["title"], "v1");
    let stale =
        call(&api, Method::POST, &format!("{base}/revert"), Some(r#"{"version": 2}"#), &[("if-match", "\"2\"")]).await;
    stale.problem(412, "precondition_failed");
    call(&api, Method::POST, &format!("{base}/revert"), Some(r#"{"v": 1}"#), &[]).await.problem(400, "invalid_input");
    call(&api, Method::POST, &format!("{base}/revert"), Some(r#"{"version": 99}"#), &[])
        .await
        .problem(404, "not_found");
    let undone = call(&api, Method::POST, &format!("{base}/undo"), None, &[]).await;
    assert_eq!((undone.status.as_u16(), &undone.body["body"]["title"]), (200, &json!("v2")));
    let redone = call(&api, Method::POST, &format!("{base}/redo"), None, &[]).await;
    assert_eq!((redone.status.as_u16(), &redone.body["body"]["title"]), (200, &json!("v1")));
    call(&api, Method::POST, &format!("{base}/redo"), None, &[]).await.problem(409, "not_allowed");
    // A deleted record is brought back by undo (and can be reverted), but not patched.
    assert_eq!(call(&api, Method::DELETE, base, None, &[]).await.status, 204);
    call(&api, Method::PATCH, base, Some(r#"{"title": "x"}"#), &[]).await.problem(404, "not_found");
    let back = call(&api, Method::POST, &format!("{base}/undo"), None, &[]).await;
    assert_eq!(
        (back.status.as_u16(), &back.body["body"]["title"], &back.body["deleted_at"]),
        (200, &json!("v1"), &json!(null)),
        "{back:?}"
    );
    assert_eq!(call(&api, Method::DELETE, base, None, &[]).await.status, 204);
    let reverted = call(&api, Method::POST, &format!("{base}/revert"), Some(r#"{"version": 2}"#), &[]).await;
    assert_eq!((reverted.status.as_u16(), &reverted.body["body"]["title"]), (200, &json!("v2")), "{reverted:?}");
}

#[tokio::test]
async fn settings_audit_and_backups_for_admins() {
    let (_tmp, store, api) = app(ServerConfig::default());
    let settings = call(&api, Method::GET, "/api/settings", None, &[]).await;
    assert!(
        settings.body["items"].as_array().expect("items").iter().any(|s| s["key"] == "backup.keep_last"),
        "{settings:?}"
    );
    let set = call(&api, Method::PUT, "/api/settings/backup.keep_last", Some(r#"{"value": 3}"#), &[]).await;
    assert_eq!((set.status.as_u16(), &set.body["value"]), (200, &json!(3)), "{set:?}");
    call(&api, Method::PUT, "/api/settings/backup.keep_last", Some(r#"{"value": "many"}"#), &[])
        .await
        .problem(400, "invalid_input");
    call(&api, Method::PUT, "/api/settings/backup.keep_last", Some(r#"{"value": 3, "x": 1}"#), &[])
        .await
        .problem(400, "invalid_input");
    call(&api, Method::PUT, "/api/settings/no.such", Some(r#"{"value": 1}"#), &[]).await.problem(404, "not_found");

    let taken = call(&api, Method::POST, "/api/backups", None, &[]).await;
    assert_eq!(taken.status, 201, "{taken:?}");
    let id = taken.body["id"].as_str().expect("id").to_string();
    let listed = call(&api, Method::GET, "/api/backups", None, &[]).await;
    assert_eq!(listed.body["items"][0]["id"], id.as_str());
    let verified = call(&api, Method::POST, &format!("/api/backups/{id}/verify"), None, &[]).await;
    assert_eq!((verified.status.as_u16(), &verified.body["status"]), (200, &json!("good")), "{verified:?}");
    call(&api, Method::POST, "/api/backups/no-such/verify", None, &[]).await.problem(404, "not_found");

    let audit = call(&api, Method::GET, "/api/audit?filter=action%20%3D%20%22user.create%22", None, &[]).await;
    assert_eq!(audit.status, 200, "{audit:?}");
    assert!(audit.body["items"].as_array().expect("items").iter().all(|e| e["action"] == "user.create"));
    assert!(!audit.body["items"].as_array().expect("items").is_empty());
    call(&api, Method::GET, "/api/audit?limit=0", None, &[]).await.problem(400, "invalid_input");

    store.create_user("ana", "ana's password", "user").expect("ana");
    let ana = crate::Api {
        router: api.router.clone(),
        token: store.login("ana", "ana's password", &cairn::SessionOptions::default()).expect("login").secret,
    };
    for (method, uri, body) in [
        (Method::GET, "/api/settings", None),
        (Method::GET, "/api/audit", None),
        (Method::POST, "/api/backups", None),
        (Method::POST, "/api/export", Some("{}")),
        (Method::POST, &format!("/api/backups/{id}/restore"), Some(&format!(r#"{{"confirm": "{id}"}}"#) as &str)),
    ] {
        call(&ana, method.clone(), uri, body, &[]).await.problem(403, "forbidden");
    }
}

#[tokio::test]
async fn an_export_downloads_as_an_archive_that_imports() {
    let (tmp, store, api) = app(ServerConfig::default());
    store.create_with_id("notes", "n1", json!({"title": "exported", "n": 7})).expect("n1");
    let (status, headers, body) =
        crate::call_raw(&api, Method::POST, "/api/export", b"{}".to_vec(), &[("content-type", "application/json")])
            .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/x-tar");
    assert!(headers["content-disposition"].to_str().expect("text").starts_with("attachment"));
    let unpacked = tmp.path().join("unpacked");
    tar::Archive::new(&body.expect("body")[..]).unpack(&unpacked).expect("a tar archive");
    let other = cairn::Store::open(tmp.path().join("other"), cairn::StoreOptions::default()).expect("other");
    other.import(&unpacked.join("cairn-export"), &cairn::ImportOptions::default(), &mut |_, _, _| {}).expect("import");
    assert_eq!(other.get("notes", "n1").expect("n1").body["n"], 7);

    call(&api, Method::POST, "/api/export", Some(r#"{"blobs": "yes"}"#), &[]).await.problem(400, "invalid_input");
    call(&api, Method::POST, "/api/export", Some(r#"{"everything": true}"#), &[]).await.problem(400, "invalid_input");
    let bad_field = r#"{"redact": "mask", "redact_fields": ["notes.nope"]}"#;
    call(&api, Method::POST, "/api/export", Some(bad_field), &[]).await.problem(400, "invalid_input");
}

#[tokio::test]
async fn a_restore_needs_the_backups_id_and_brings_back_the_whole_store_or_some_records() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = cairn::Store::open(tmp.path().join("store"), cairn::StoreOptions::default()).expect("open");
    store
        .create_collection(
            cairn::CollectionSchema::from_json(
                r#"{"name": "notes", "fields": [{"name": "title", "type": "text"}]}"#,
                "s",
            )
            .expect("schema"),
        )
        .expect("notes");
    store.create_with_id("notes", "kept", json!({"title": "before the backup"})).expect("kept");
    store.bootstrap_admin("root", "root password").expect("admin");
    let token = store.login("root", "root password", &cairn::SessionOptions::default()).expect("login").secret;
    let backup = store.backup(&cairn::BackupOptions::default(), &mut |_, _, _| {}).expect("backup").id;
    let holder = store.clone();
    let api = crate::Api {
        router: cairn_server::app(std::sync::Arc::new(cairn_server::Embedded::new(store)), ServerConfig::default()),
        token,
    };
    let restore = format!("/api/backups/{backup}/restore");
    let confirm = json!({"confirm": backup}).to_string();

    // After the backup: a new record, and the kept one changed.
    call(&api, Method::POST, "/api/collections/notes/records?id=later", Some(r#"{"title": "after"}"#), &[]).await;
    call(&api, Method::PATCH, "/api/collections/notes/records/kept", Some(r#"{"title": "changed"}"#), &[]).await;

    call(&api, Method::POST, &restore, Some("{}"), &[]).await.problem(400, "invalid_input");
    call(&api, Method::POST, &restore, Some(r#"{"confirm": "another"}"#), &[]).await.problem(409, "not_allowed");
    call(&api, Method::POST, &restore, Some(&format!(r#"{{"confirm": "{backup}", "record": "kept"}}"#)), &[])
        .await
        .problem(400, "invalid_input");
    call(&api, Method::POST, "/api/backups/nope/restore", Some(r#"{"confirm": "nope"}"#), &[])
        .await
        .problem(404, "not_found");

    // Some records: only the one named comes back, as a new version.
    let some = json!({"confirm": backup, "collection": "notes", "record": "kept"}).to_string();
    let answer = call(&api, Method::POST, &restore, Some(&some), &[]).await;
    assert_eq!((answer.status.as_u16(), &answer.body["restored"]), (200, &json!(["kept"])), "{answer:?}");
    let kept = call(&api, Method::GET, "/api/collections/notes/records/kept", None, &[]).await;
    assert_eq!(
        (kept.body["body"]["title"].as_str(), kept.body["version"].as_u64()),
        (Some("before the backup"), Some(3))
    );
    assert_eq!(call(&api, Method::GET, "/api/collections/notes/records/later", None, &[]).await.status, 200);

    // The whole store, while another handle holds it open: refused, nothing changes.
    call(&api, Method::POST, &restore, Some(&confirm), &[]).await.problem(409, "not_allowed");
    drop(holder);
    let whole = call(&api, Method::POST, &restore, Some(&confirm), &[]).await;
    assert_eq!(whole.status, 200, "{whole:?}");
    assert!(whole.body["pre_restore_backup"].as_str().is_some(), "{whole:?}");
    call(&api, Method::GET, "/api/collections/notes/records/later", None, &[]).await.problem(404, "not_found");
    let kept = call(&api, Method::GET, "/api/collections/notes/records/kept", None, &[]).await;
    assert_eq!(
        (kept.body["body"]["title"].as_str(), kept.body["version"].as_u64()),
        (Some("before the backup"), Some(1))
    );
    let backups = call(&api, Method::GET, "/api/backups", None, &[]).await;
    assert!(
        backups.body["items"].as_array().expect("items").iter().any(|b| b["manifest"]["reason"] == "pre_restore"),
        "{backups:?}"
    );
    // The restored store takes writes.
    let after =
        call(&api, Method::POST, "/api/collections/notes/records", Some(r#"{"title": "after the restore"}"#), &[])
            .await;
    assert_eq!(after.status, 201, "{after:?}");
}

#[tokio::test]
async fn collections_users_and_api_keys_are_managed_over_http() {
    let (_tmp, store, api) = app(ServerConfig::default());
    let schema = r#"{"name": "tasks", "fields": [{"name": "title", "type": "text", "required": true}]}"#;
    let made = call(&api, Method::POST, "/api/collections", Some(schema), &[]).await;
    assert_eq!((made.status.as_u16(), &made.body["schema"]["name"]), (201, &json!("tasks")), "{made:?}");
    call(&api, Method::POST, "/api/collections", Some(schema), &[]).await.problem(409, "already_exists");
    call(&api, Method::POST, "/api/collections", Some(r#"{"name": "Bad Name"}"#), &[])
        .await
        .problem(400, "invalid_input");
    let changed = r#"{"name": "tasks", "fields": [{"name": "title", "type": "text", "required": true}, {"name": "done", "type": "bool"}]}"#;
    let updated = call(&api, Method::PUT, "/api/collections/tasks", Some(changed), &[]).await;
    assert_eq!((updated.status.as_u16(), updated.body["schema_version"].as_u64()), (200, Some(2)), "{updated:?}");
    call(&api, Method::PUT, "/api/collections/other", Some(changed), &[]).await.problem(400, "invalid_input");
    store.create_with_id("tasks", "t1", json!({"title": "keep me"})).expect("t1");
    call(&api, Method::DELETE, "/api/collections/tasks", Some("{}"), &[]).await.problem(400, "invalid_input");
    call(&api, Method::DELETE, "/api/collections/tasks", Some(r#"{"confirm": "notes"}"#), &[])
        .await
        .problem(409, "not_allowed");
    let dropped = call(&api, Method::DELETE, "/api/collections/tasks", Some(r#"{"confirm": "tasks"}"#), &[]).await;
    assert_eq!((dropped.status.as_u16(), &dropped.body["records_kept_in_quarantine"]), (200, &json!(1)), "{dropped:?}");
    assert!(dropped.body.get("quarantine_dir").is_none(), "no server path is sent");

    let user =
        call(&api, Method::POST, "/api/users", Some(r#"{"name": "ana", "password": "ana's password"}"#), &[]).await;
    assert_eq!((user.status.as_u16(), &user.body["role"]), (201, &json!("user")), "{user:?}");
    call(&api, Method::POST, "/api/users", Some(r#"{"name": "ana", "password": "ana's password"}"#), &[])
        .await
        .problem(409, "already_exists");
    call(&api, Method::POST, "/api/users", Some(r#"{"name": "bo", "password": "short"}"#), &[])
        .await
        .problem(400, "invalid_input");
    call(&api, Method::POST, "/api/users", Some(r#"{"name": "bo", "password": "long enough", "admin": true}"#), &[])
        .await
        .problem(400, "invalid_input");
    let listed = call(&api, Method::GET, "/api/users", None, &[]).await;
    assert!(!listed.body.to_string().contains("argon2"), "no password hash is sent");

    let key = call(
        &api,
        Method::POST,
        "/api/tokens",
        Some(r#"{"user": "ana", "name": "ci", "scopes": ["read"], "expires_days": 30}"#),
        &[],
    )
    .await;
    assert_eq!(key.status, 201, "{key:?}");
    assert_eq!(key.headers["cache-control"], "no-store");
    let secret = key.body["token"].as_str().expect("token").to_string();
    assert_eq!(store.authenticate(&secret).expect("ana's key").user.name, "ana");
    let id = key.body["info"]["id"].as_str().expect("id").to_string();
    let tokens = call(&api, Method::GET, "/api/tokens?user=ana", None, &[]).await;
    assert!(tokens.body.to_string().contains(&id) && !tokens.body.to_string().contains(&secret));
    call(&api, Method::POST, "/api/tokens", Some(r#"{"user": "ana", "name": "x", "expires_days": 0}"#), &[])
        .await
        .problem(400, "invalid_input");
    call(&api, Method::POST, "/api/tokens", Some(r#"{"user": "nobody", "name": "x"}"#), &[])
        .await
        .problem(404, "not_found");
    let revoked = call(&api, Method::DELETE, &format!("/api/tokens/{id}"), None, &[]).await;
    assert_eq!(revoked.status, 200);
    assert!(store.authenticate(&secret).is_err());

    let reset =
        call(&api, Method::POST, "/api/users/ana/password", Some(r#"{"password": "a new password"}"#), &[]).await;
    assert_eq!(reset.status, 200, "{reset:?}");
    store.login("ana", "a new password", &cairn::SessionOptions::default()).expect("the new password");
    let disabled = call(&api, Method::POST, "/api/users/ana/disable", None, &[]).await;
    assert_eq!(disabled.body["disabled"], true);
    call(&api, Method::POST, "/api/users/nobody/disable", None, &[]).await.problem(404, "not_found");
}
