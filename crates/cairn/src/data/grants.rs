//! Sharing, as the data layer sees it: the `cairn_grants` table (format 9) that lets a user,
//! or every user of a role, read or change one record beyond what its collection's rules
//! allow. `access/grants.rs` makes and revokes grants; here is what reads and writes need —
//! who a grant is for ([`SharedWith`]), whether one record is shared, and forgetting the
//! grants of records that are gone for good (so a new record under the same id inherits
//! nothing).

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::Result;

/// Whose grants open records: one user, and the users of their role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SharedWith {
    pub user_id: String,
    pub role: String,
}

/// What a grant lets its grantee do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Read the record (get, list, count, search, history, attachments).
    Read,
    /// Read it and change it (replace, patch, revert, undo, redo); not delete it.
    Write,
}

impl Access {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Access> {
        match text {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            _ => None,
        }
    }
}

/// The SQL condition "record `r` is shared with `?user` or `?role`" for a collection whose
/// name is parameter `?collection`.
pub(crate) fn shared_sql(collection: &str, user: &str, role: &str) -> String {
    format!(
        "r.id IN (SELECT g.record_id FROM cairn_grants g WHERE g.collection = {collection} \
         AND ((g.grantee_kind = 'user' AND g.grantee = {user}) OR (g.grantee_kind = 'role' AND g.grantee = {role})))"
    )
}

/// The most a grant lets `who` do with one record, if any grant does.
pub(crate) fn access(conn: &Connection, who: &SharedWith, collection: &str, id: &str) -> Result<Option<Access>> {
    let best: Option<String> = conn
        .prepare_cached(
            "SELECT max(access) FROM cairn_grants WHERE collection = ?1 AND record_id = ?2 \
             AND ((grantee_kind = 'user' AND grantee = ?3) OR (grantee_kind = 'role' AND grantee = ?4))",
        )?
        .query_row(params![collection, id, who.user_id, who.role], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(best.as_deref().and_then(Access::parse))
}

/// Forgets the grants of a record (`Some(id)`) or of a whole collection, when they are gone
/// for good; returns how many.
pub(crate) fn forget(conn: &Connection, collection: &str, id: Option<&str>) -> Result<usize> {
    Ok(match id {
        Some(id) => conn
            .prepare_cached("DELETE FROM cairn_grants WHERE collection = ?1 AND record_id = ?2")?
            .execute(params![collection, id])?,
        None => conn.prepare_cached("DELETE FROM cairn_grants WHERE collection = ?1")?.execute([collection])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_outranks_read_as_text_too() {
        // `max(access)` in SQL picks the stronger grant because "write" > "read".
        assert!("write" > "read");
        assert!(Access::Write > Access::Read);
        for a in [Access::Read, Access::Write] {
            assert_eq!(Access::parse(a.as_str()), Some(a));
        }
        assert_eq!(Access::parse("admin"), None);
    }
}
