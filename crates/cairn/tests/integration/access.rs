//! Users, sessions and API keys: made, checked, revoked; secrets never stored; the same
//! answer for every failed sign-in; kept through a rebuild.

use cairn::{ApiKeyOptions, ErrorKind, RepairOptions, SessionOptions, Store, StoreOptions, Timestamp, TokenKind, User};

use crate::temp_store;

fn audit_actions(store: &Store) -> Vec<(String, String, String)> {
    store.audit_log(None, 0, 1000).expect("audit").into_iter().map(|e| (e.action, e.target, e.outcome)).collect()
}

#[test]
fn users_are_made_once_and_bad_names_roles_and_passwords_are_refused() {
    let (_dir, store) = temp_store();
    let ana = store.create_user("ana", "correct horse", User::DEFAULT_ROLE).expect("create");
    assert_eq!((ana.name.as_str(), ana.role.as_str(), ana.disabled), ("ana", "user", false));
    let again = store.create_user("ana", "another one", "editor").expect_err("taken");
    assert_eq!(again.kind(), ErrorKind::AlreadyExists);
    for (name, password, role, says) in [
        ("bad name", "correct horse", "user", "user name"),
        ("bo", "short", "user", "8 characters"),
        ("bo", "correct horse", "Admin", "role"),
    ] {
        let err = store.create_user(name, password, role).expect_err(name);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
    assert_eq!(store.users().expect("users").iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["ana"]);
    assert_eq!(store.user("nobody").expect_err("unknown").kind(), ErrorKind::NotFound);
}

#[test]
fn the_admin_bootstrap_is_idempotent_and_never_promotes() {
    let (_dir, store) = temp_store();
    let (admin, made) = store.bootstrap_admin("root", "first password").expect("bootstrap");
    assert!(made && admin.role == User::ADMIN_ROLE);
    let (same, made) = store.bootstrap_admin("root", "second password").expect("again");
    assert!(!made && same == admin, "nothing changes the second time");
    store.login("root", "first password", &SessionOptions::default()).expect("the first password still works");
    assert!(store.login("root", "second password", &SessionOptions::default()).is_err());

    store.create_user("eve", "eve's password", "user").expect("user");
    let err = store.bootstrap_admin("eve", "eve's password").expect_err("not promoted");
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert_eq!(store.user("eve").expect("eve").role, "user");
}

#[test]
fn signing_in_makes_a_session_and_every_failure_reads_the_same() {
    let (dir, store) = temp_store();
    store.create_user("ana", "correct horse", "user").expect("ana");
    store.create_user("bob", "bob's password", "user").expect("bob");
    let session = store.login("ana", "correct horse", &SessionOptions::default()).expect("login");
    assert!(session.secret.starts_with(&format!("cairn_s_{}_", session.info.id)), "{}", session.secret);
    let who = store.authenticate(&session.secret).expect("authenticate");
    assert_eq!((who.user.name.as_str(), who.token.kind), ("ana", TokenKind::Session));

    store.disable_user("bob").expect("disable");
    let failures: Vec<String> = [("ana", "wrong horse"), ("nobody", "correct horse"), ("bob", "bob's password")]
        .iter()
        .map(|(name, password)| {
            let err = store.login(name, password, &SessionOptions::default()).expect_err(name);
            assert_eq!(err.kind(), ErrorKind::Unauthenticated);
            err.to_string()
        })
        .collect();
    assert!(failures.iter().all(|f| f == &failures[0]), "one answer for every failure: {failures:?}");
    let actions = audit_actions(&store);
    assert!(actions.contains(&("user.login".into(), "nobody".into(), "refused".into())), "{actions:?}");

    // A forged or damaged token lets no one in.
    let (id, _) = session.secret.rsplit_once('_').expect("secret");
    for forged in [
        format!("{id}_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        session.secret.replacen("cairn_s_", "cairn_k_", 1),
        format!("{}x", session.secret),
        "cairn_s_zz".to_string(),
        String::new(),
    ] {
        assert_eq!(store.authenticate(&forged).expect_err(&forged).kind(), ErrorKind::Unauthenticated);
    }

    // Neither the password nor the token is anywhere in the store's files.
    store.close().expect("close");
    let files: Vec<_> = std::fs::read_dir(dir.path().join("store")).expect("dir").flatten().collect();
    assert!(files.iter().any(|e| e.file_name() == "store.db"), "the scan reads the store's files");
    for entry in files {
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).expect("read");
            for secret in ["correct horse", session.secret.as_str()] {
                assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} in {:?}", entry.path());
            }
        }
    }
}

#[test]
fn a_new_password_revokes_the_other_sessions_and_disabling_revokes_everything() {
    let (_dir, store) = temp_store();
    store.create_user("ana", "correct horse", "user").expect("ana");
    let here = store.login("ana", "correct horse", &SessionOptions::default()).expect("here");
    let elsewhere = store.login("ana", "correct horse", &SessionOptions::default()).expect("elsewhere");
    let key =
        store.create_api_key("ana", &ApiKeyOptions { name: "sync".into(), ..ApiKeyOptions::default() }).expect("key");
    store.set_password("ana", "battery staple", Some(&here.info.id)).expect("new password");
    assert!(store.authenticate(&here.secret).is_ok(), "the session that changed it stays");
    assert!(store.authenticate(&elsewhere.secret).is_err(), "the other session is revoked");
    assert!(store.authenticate(&key.secret).is_ok(), "API keys are not made with the password");
    assert!(store.login("ana", "correct horse", &SessionOptions::default()).is_err());
    store.login("ana", "battery staple", &SessionOptions::default()).expect("the new password");

    store.disable_user("ana").expect("disable");
    assert!(store.authenticate(&here.secret).is_err() && store.authenticate(&key.secret).is_err());
    let actions = audit_actions(&store);
    for action in ["user.create", "user.password", "user.disable", "token.create"] {
        assert!(actions.iter().any(|(a, t, o)| a == action && t == "ana" && o == "ok"), "{action}: {actions:?}");
    }
}

#[test]
fn api_keys_have_a_visible_prefix_scopes_an_expiry_and_can_be_revoked() {
    let (_dir, store) = temp_store();
    store.create_user("ana", "correct horse", "user").expect("ana");
    let options = ApiKeyOptions { name: "ci".into(), scopes: vec!["read".into()], expires_at: None };
    let key = store.create_api_key("ana", &options).expect("key");
    assert!(key.secret.starts_with(&format!("cairn_k_{}_", key.info.id)));
    let who = store.authenticate(&key.secret).expect("authenticate");
    assert_eq!((who.token.kind, who.token.scopes.clone()), (TokenKind::ApiKey, vec!["read".to_string()]));
    let listed = store.tokens(Some("ana")).expect("tokens");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "ci");

    let expired =
        ApiKeyOptions { name: "old".into(), expires_at: Some(Timestamp(Timestamp::now().0 - 1000)), ..options };
    let old = store.create_api_key("ana", &expired).expect("expired key");
    assert_eq!(store.authenticate(&old.secret).expect_err("expired").kind(), ErrorKind::Unauthenticated);

    let revoked = store.revoke_token(&key.info.id).expect("revoke");
    assert!(revoked.revoked_at.is_some());
    assert!(store.authenticate(&key.secret).is_err());
    assert_eq!(store.revoke_token(&key.info.id).expect("again").revoked_at, revoked.revoked_at, "unchanged");
    assert_eq!(store.revoke_token("0000000000000000").expect_err("unknown").kind(), ErrorKind::NotFound);
    assert_eq!(
        store.create_api_key("nobody", &ApiKeyOptions::default()).expect_err("no user").kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn users_and_tokens_survive_a_rebuild_of_the_database() {
    let (dir, store) = temp_store();
    store.create_user("ana", "correct horse", "user").expect("ana");
    let key =
        store.create_api_key("ana", &ApiKeyOptions { name: "k".into(), ..ApiKeyOptions::default() }).expect("key");
    store.close().expect("close");
    let dir = dir.path().join("store");
    let options = RepairOptions { rebuild: true, ..RepairOptions::default() };
    let report = Store::repair(&dir, &options, &mut |_, _, _| {}).expect("rebuild");
    assert!(report.rebuilt.is_some(), "the database was rebuilt");
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    assert_eq!(store.authenticate(&key.secret).expect("still lets ana in").user.name, "ana");
    store.login("ana", "correct horse", &SessionOptions::default()).expect("the password too");
}
