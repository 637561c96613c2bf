//! Users: made, listed, disabled, given a new password, and the idempotent admin bootstrap.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use crate::access::{check_name, check_password, check_role, ADMIN_ROLE};
use crate::engine::store::Store;
use crate::engine::timestamp::Timestamp;
use crate::error::{Error, Result};

/// A user, as anyone may see it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct User {
    pub id: String,
    pub name: String,
    pub role: String,
    /// A disabled user cannot sign in, and its tokens let no one in.
    pub disabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl User {
    /// The role that may do everything.
    pub const ADMIN_ROLE: &'static str = ADMIN_ROLE;
    /// The role of a user made without one.
    pub const DEFAULT_ROLE: &'static str = crate::access::USER_ROLE;
    /// The shortest password accepted, in characters.
    pub const MIN_PASSWORD_CHARS: usize = crate::access::MIN_PASSWORD_CHARS;
}

pub(crate) const USER_COLUMNS: &str = "id, name, role, disabled, created_at, updated_at";

pub(crate) fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
        role: row.get(2)?,
        disabled: row.get::<_, i64>(3)? != 0,
        created_at: Timestamp(row.get(4)?),
        updated_at: Timestamp(row.get(5)?),
    })
}

pub(crate) fn find_user(conn: &Connection, name: &str) -> Result<Option<User>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM cairn_users WHERE name = ?1"))?
        .query_row([name], user_from_row)
        .optional()?)
}

fn user_named(conn: &Connection, name: &str) -> Result<User> {
    find_user(conn, name)?.ok_or_else(|| Error::UserNotFound { name: name.to_string() })
}

/// The Argon2id hash of `password`, as a PHC string.
pub(crate) fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing a password failed: {e}")))
}

/// Whether `password` is the one `phc` was made from. An unreadable hash lets no one in.
pub(crate) fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// A hash to verify against when the name is unknown, so that answering takes as long.
pub(crate) fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("no user has this password").unwrap_or_default())
}

impl Store {
    /// Makes a user with `role` ([`User::ADMIN_ROLE`], [`User::DEFAULT_ROLE`], or a role of the application's).
    pub fn create_user(&self, name: &str, password: &str, role: &str) -> Result<User> {
        check_name(name)?;
        check_role(role)?;
        check_password(password)?;
        let hash = hash_password(password)?;
        let (name, role) = (name.to_string(), role.to_string());
        self.write(move |tx| {
            if find_user(tx.conn, &name)?.is_some() {
                return Err(Error::UserExists { name });
            }
            let id = crate::data::ids::new_id();
            tx.conn.execute(
                "INSERT INTO cairn_users (id, name, role, password_hash, disabled, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)",
                params![id, name, role, hash, tx.now.0],
            )?;
            tx.audit("user.create", &name, "ok", &format!("role {role}"))?;
            user_named(tx.conn, &name)
        })
    }

    /// Makes the admin `name` unless it exists; running it again changes nothing (not even
    /// the password). Returns the user and whether it was made now. A user of that name with
    /// another role is refused, never promoted.
    pub fn bootstrap_admin(&self, name: &str, password: &str) -> Result<(User, bool)> {
        if let Some(user) = find_user(&*self.reader()?, name)? {
            return if user.role == ADMIN_ROLE {
                Ok((user, false))
            } else {
                Err(Error::NotAllowed(format!("user {name:?} exists with role {:?}, not {ADMIN_ROLE:?}", user.role)))
            };
        }
        match self.create_user(name, password, ADMIN_ROLE) {
            Ok(user) => Ok((user, true)),
            // Made by someone else in between: the same outcome.
            Err(Error::UserExists { .. }) => self.bootstrap_admin(name, password),
            Err(e) => Err(e),
        }
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<User>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM cairn_users ORDER BY name"))?;
        let users = stmt.query_map([], user_from_row)?.collect::<rusqlite::Result<_>>()?;
        Ok(users)
    }

    /// One user.
    pub fn user(&self, name: &str) -> Result<User> {
        user_named(&*self.reader()?, name)
    }

    /// Disables a user and revokes every token it has.
    pub fn disable_user(&self, name: &str) -> Result<User> {
        let name = name.to_string();
        self.write(move |tx| {
            let user = user_named(tx.conn, &name)?;
            tx.conn.execute(
                "UPDATE cairn_users SET disabled = 1, updated_at = ?2 WHERE id = ?1",
                params![user.id, tx.now.0],
            )?;
            let revoked = crate::access::tokens::revoke_all(tx.conn, &user.id, None, tx.now)?;
            tx.audit("user.disable", &name, "ok", &format!("{revoked} token(s) revoked"))?;
            user_named(tx.conn, &name)
        })
    }

    /// Sets a user's password and revokes its sessions, all but `keep` (the session that
    /// asked for the change, when a user changes its own password). API keys stay: they are
    /// not made with the password.
    pub fn set_password(&self, name: &str, password: &str, keep: Option<&str>) -> Result<User> {
        check_password(password)?;
        let hash = hash_password(password)?;
        let (name, keep) = (name.to_string(), keep.map(str::to_string));
        self.write(move |tx| {
            let user = user_named(tx.conn, &name)?;
            tx.conn.execute(
                "UPDATE cairn_users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1",
                params![user.id, hash, tx.now.0],
            )?;
            let revoked = crate::access::tokens::revoke_sessions(tx.conn, &user.id, keep.as_deref(), tx.now)?;
            tx.audit("user.password", &name, "ok", &format!("{revoked} other session(s) revoked"))?;
            user_named(tx.conn, &name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsf", &hash));
        assert!(!verify_password("correct horse", "not a phc string"));
        assert!(!verify_password("anything", dummy_hash()));
        assert_ne!(hash_password("correct horse").expect("again"), hash, "salted");
    }
}
