//! Tokens: the sessions signing in makes and the API keys made for programs.
//!
//! A token is `cairn_s_<id>_<secret>` (a session) or `cairn_k_<id>_<secret>` (an API key):
//! `id` is 16 hex digits that may be shown and listed (an API key's visible prefix is
//! `cairn_k_<id>`), `secret` 32 random bytes in base64url. Only the SHA-256 of the whole
//! token is stored; a presented token is found by its id and its hash compared in constant
//! time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::access::users::{dummy_hash, find_user, user_from_row, verify_password, User, USER_COLUMNS};
use crate::engine::hash::{hex, sha256};
use crate::engine::store::Store;
use crate::engine::timestamp::Timestamp;
use crate::error::{Error, Result};

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Made by signing in with a name and password.
    Session,
    /// Made for a program, with scopes.
    ApiKey,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Session => "session",
            TokenKind::ApiKey => "api_key",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            TokenKind::Session => "cairn_s_",
            TokenKind::ApiKey => "cairn_k_",
        }
    }
}

/// A token as it may be listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TokenInfo {
    /// The part that may be shown (16 hex digits).
    pub id: String,
    pub kind: TokenKind,
    pub user_id: String,
    /// A label: the API key's name, or what signed in.
    pub name: String,
    /// What an API key may do (empty: what its user may); sessions have none.
    pub scopes: Vec<String>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

impl TokenInfo {
    /// The scopes an API key may have.
    pub const SCOPES: [&'static str; 2] = ["read", "write"];

    /// Whether this token may make changes (not a key limited to `read`).
    pub fn may_write(&self) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == "write")
    }
}

/// A token just made: `secret` is the whole token, shown this once and stored nowhere.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IssuedToken {
    pub secret: String,
    pub info: TokenInfo,
}

/// Who a token says is asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Principal {
    pub user: User,
    pub token: TokenInfo,
}

/// How a session is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// How long it lets its user in. Default: 14 days.
    pub lifetime_seconds: i64,
    /// A label (what signed in). Default: empty.
    pub label: String,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { lifetime_seconds: 14 * 24 * 3600, label: String::new() }
    }
}

/// How an API key is made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeyOptions {
    /// Its name, to tell keys apart when listing.
    pub name: String,
    /// What it may do, within what its user may: `read` (GET requests only) and/or `write`.
    /// Empty: everything its user may.
    pub scopes: Vec<String>,
    /// When it stops letting anyone in. Default: never.
    pub expires_at: Option<Timestamp>,
}

const TOKEN_COLUMNS: &str = "id, kind, user_id, name, scopes, created_at, expires_at, revoked_at";

fn token_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenInfo> {
    let kind: String = row.get(1)?;
    let scopes: String = row.get(4)?;
    Ok(TokenInfo {
        id: row.get(0)?,
        kind: if kind == "api_key" { TokenKind::ApiKey } else { TokenKind::Session },
        user_id: row.get(2)?,
        name: row.get(3)?,
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        created_at: Timestamp(row.get(5)?),
        expires_at: row.get::<_, Option<i64>>(6)?.map(Timestamp),
        revoked_at: row.get::<_, Option<i64>>(7)?.map(Timestamp),
    })
}

fn token_hash(token: &str) -> String {
    hex(&sha256(token.as_bytes()))
}

/// Equal bytes, compared without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Inserts a new token for `user_id`; returns it with its secret.
fn issue(
    conn: &Connection,
    user_id: &str,
    kind: TokenKind,
    name: &str,
    scopes: &[String],
    now: Timestamp,
    expires_at: Option<Timestamp>,
) -> Result<IssuedToken> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut id);
    OsRng.fill_bytes(&mut secret);
    let id = hex(&id);
    let token = format!("{}{id}_{}", kind.prefix(), URL_SAFE_NO_PAD.encode(secret));
    let scopes_json = serde_json::to_string(scopes).map_err(|e| Error::Internal(e.to_string()))?;
    conn.execute(
        "INSERT INTO cairn_tokens (id, user_id, kind, name, hash, scopes, created_at, expires_at, revoked_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)",
        params![id, user_id, kind.as_str(), name, token_hash(&token), scopes_json, now.0, expires_at.map(|t| t.0)],
    )?;
    let info = TokenInfo {
        id,
        kind,
        user_id: user_id.to_string(),
        name: name.to_string(),
        scopes: scopes.to_vec(),
        created_at: now,
        expires_at,
        revoked_at: None,
    };
    Ok(IssuedToken { secret: token, info })
}

/// Revokes every live token of a user (all but `keep`); returns how many.
pub(crate) fn revoke_all(conn: &Connection, user_id: &str, keep: Option<&str>, now: Timestamp) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE cairn_tokens SET revoked_at = ?3 WHERE user_id = ?1 AND revoked_at IS NULL AND id IS NOT ?2",
        params![user_id, keep, now.0],
    )?)
}

/// Revokes a user's live sessions (all but `keep`); returns how many.
pub(crate) fn revoke_sessions(conn: &Connection, user_id: &str, keep: Option<&str>, now: Timestamp) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE cairn_tokens SET revoked_at = ?3 \
         WHERE user_id = ?1 AND kind = 'session' AND revoked_at IS NULL AND id IS NOT ?2",
        params![user_id, keep, now.0],
    )?)
}

fn refused() -> Error {
    Error::Unauthenticated { reason: "the name or the password is wrong".into() }
}

/// The principal a token found by its id lets in, if it is live and its user is not
/// disabled.
fn principal_of(conn: &Connection, info: TokenInfo) -> Result<Principal> {
    if info.revoked_at.is_some() || info.expires_at.is_some_and(|at| at <= Timestamp::now()) {
        return Err(token_refused());
    }
    let user = conn
        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM cairn_users WHERE id = ?1"))?
        .query_row([&info.user_id], user_from_row)
        .optional()?
        .filter(|u| !u.disabled)
        .ok_or_else(token_refused)?;
    Ok(Principal { user, token: info })
}

fn token_refused() -> Error {
    Error::Unauthenticated { reason: "the token is unknown, expired or revoked".into() }
}

impl Store {
    /// Signs `name` in: a new session. An unknown name, a wrong password and a disabled user
    /// get the same error after the same work.
    pub fn login(&self, name: &str, password: &str, options: &SessionOptions) -> Result<IssuedToken> {
        let stored: Option<(User, String)> = {
            let conn = self.reader()?;
            match find_user(&conn, name)? {
                Some(user) => {
                    let hash: String = conn
                        .prepare_cached("SELECT password_hash FROM cairn_users WHERE id = ?1")?
                        .query_row([&user.id], |r| r.get(0))?;
                    Some((user, hash))
                }
                None => None,
            }
        };
        let verified = verify_password(password, stored.as_ref().map_or(dummy_hash(), |(_, hash)| hash.as_str()));
        let user = match stored {
            Some((user, _)) if verified && !user.disabled => user,
            _ => {
                self.audit("user.login", name, "refused", "");
                return Err(refused());
            }
        };
        let (label, lifetime) = (options.label.clone(), options.lifetime_seconds.max(1));
        self.write(move |tx| {
            let expires = Timestamp(tx.now.0.saturating_add(lifetime.saturating_mul(1000)));
            issue(tx.conn, &user.id, TokenKind::Session, &label, &[], tx.now, Some(expires))
        })
    }

    /// Who `token` lets in, if anyone: a live session or API key of a user who is not
    /// disabled.
    pub fn authenticate(&self, token: &str) -> Result<Principal> {
        let id = [TokenKind::Session, TokenKind::ApiKey]
            .iter()
            .find_map(|k| token.strip_prefix(k.prefix()))
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id)
            .filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(token_refused)?;
        let conn = self.reader()?;
        let found = conn
            .prepare_cached(&format!("SELECT {TOKEN_COLUMNS}, hash FROM cairn_tokens WHERE id = ?1"))?
            .query_row([id], |row| Ok((token_from_row(row)?, row.get::<_, String>(8)?)))
            .optional()?;
        let Some((info, hash)) = found else { return Err(token_refused()) };
        if !same(token_hash(token).as_bytes(), hash.as_bytes()) || !token.starts_with(info.kind.prefix()) {
            return Err(token_refused());
        }
        principal_of(&conn, info)
    }

    /// Who `principal`'s token lets in now: the same check as [`Store::authenticate`], by
    /// the token's id, for a caller who stays connected (a realtime stream) — their token
    /// may have been revoked or have expired since, their user disabled or given another
    /// role.
    pub fn recheck(&self, principal: &Principal) -> Result<Principal> {
        let conn = self.reader()?;
        let info = conn
            .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM cairn_tokens WHERE id = ?1"))?
            .query_row([&principal.token.id], token_from_row)
            .optional()?
            .ok_or_else(token_refused)?;
        principal_of(&conn, info)
    }

    /// Makes an API key for `user`.
    pub fn create_api_key(&self, user: &str, options: &ApiKeyOptions) -> Result<IssuedToken> {
        if let Some(unknown) = options.scopes.iter().find(|s| !TokenInfo::SCOPES.contains(&s.as_str())) {
            return Err(Error::invalid_input("scopes", format!("{unknown:?} is not a scope: read, write")));
        }
        let (user, options) = (user.to_string(), options.clone());
        self.write(move |tx| {
            let owner = find_user(tx.conn, &user)?.ok_or_else(|| Error::UserNotFound { name: user.clone() })?;
            let issued = issue(
                tx.conn,
                &owner.id,
                TokenKind::ApiKey,
                &options.name,
                &options.scopes,
                tx.now,
                options.expires_at,
            )?;
            tx.audit("token.create", &user, "ok", &format!("API key {} ({})", issued.info.id, options.name))?;
            Ok(issued)
        })
    }

    /// Every token, or those of one user; newest first. Revoked and expired ones are listed
    /// too, with when.
    pub fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenInfo>> {
        let conn = self.reader()?;
        let user_id = match user {
            Some(name) => Some(find_user(&conn, name)?.ok_or_else(|| Error::UserNotFound { name: name.into() })?.id),
            None => None,
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM cairn_tokens WHERE ?1 IS NULL OR user_id = ?1 ORDER BY created_at DESC, id"
        ))?;
        let tokens = stmt.query_map([user_id], token_from_row)?.collect::<rusqlite::Result<_>>()?;
        Ok(tokens)
    }

    /// Revokes a token by its id (signing out, or withdrawing an API key). Revoking one that
    /// is revoked already changes nothing.
    pub fn revoke_token(&self, id: &str) -> Result<TokenInfo> {
        let id = id.to_string();
        self.write(move |tx| {
            let changed = tx.conn.execute(
                "UPDATE cairn_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, tx.now.0],
            )?;
            let info = tx
                .conn
                .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM cairn_tokens WHERE id = ?1"))?
                .query_row([&id], token_from_row)
                .optional()?
                .ok_or_else(|| Error::TokenNotFound { id: id.clone() })?;
            if changed > 0 && info.kind == TokenKind::ApiKey {
                tx.audit("token.revoke", &id, "ok", &info.name)?;
            }
            Ok(info)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn comparison_needs_every_byte() {
        assert!(super::same(b"abc", b"abc"));
        assert!(!super::same(b"abc", b"abd") && !super::same(b"abc", b"ab"));
    }
}
