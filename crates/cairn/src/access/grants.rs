//! Sharing one record beyond its collection's rules (SRV-4): a grant lets a user, or every
//! user of a role, read the record, or read and change it (never delete it). Grants are
//! made and revoked by admins, or by the record's owner (the user its collection's owner
//! field names); each is in the audit trail, written in the same transaction. A record that
//! is purged, or whose collection is dropped, loses its grants, so that nothing made later
//! under its name inherits them. How reads and writes honour grants: `access/rules.rs`.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::access::tokens::Principal;
use crate::access::users::find_user;
use crate::access::ADMIN_ROLE;
use crate::data::changes::{Body, ChangeOp, NewChange};
use crate::data::grants::Access;
use crate::data::ids::new_id;
use crate::data::record::Record;
use crate::data::schema::CollectionSchema;
use crate::engine::store::Store;
use crate::engine::timestamp::Timestamp;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// Who a grant is for: a user (by name) or every user of a role.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Grantee {
    User(String),
    Role(String),
}

/// One record shared with a grantee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Grant {
    pub id: String,
    pub collection: String,
    pub record_id: String,
    pub grantee: Grantee,
    pub access: Access,
    /// Who made it (the actor of the handle that granted it).
    pub granted_by: String,
    pub created_at: Timestamp,
}

/// The columns [`grant_from_row`] reads; a user grantee is named through `cairn_users`.
const GRANT_SELECT: &str = "SELECT g.id, g.collection, g.record_id, g.grantee_kind, \
     CASE g.grantee_kind WHEN 'user' THEN coalesce(u.name, g.grantee) ELSE g.grantee END, \
     g.access, g.granted_by, g.created_at \
     FROM cairn_grants g LEFT JOIN cairn_users u ON g.grantee_kind = 'user' AND u.id = g.grantee";

fn grant_from_row(row: &Row<'_>) -> rusqlite::Result<Grant> {
    let kind: String = row.get(3)?;
    let grantee: String = row.get(4)?;
    let access: String = row.get(5)?;
    Ok(Grant {
        id: row.get(0)?,
        collection: row.get(1)?,
        record_id: row.get(2)?,
        grantee: if kind == "role" { Grantee::Role(grantee) } else { Grantee::User(grantee) },
        // The table's CHECK allows only these two.
        access: Access::parse(&access).unwrap_or(Access::Read),
        granted_by: row.get(6)?,
        created_at: Timestamp(row.get(7)?),
    })
}

fn grant_by_id(conn: &Connection, id: &str) -> Result<Grant> {
    conn.prepare_cached(&format!("{GRANT_SELECT} WHERE g.id = ?1"))?
        .query_row([id], grant_from_row)
        .optional()?
        .ok_or_else(|| Error::GrantNotFound { id: id.to_string() })
}

/// The grants of one record, or of a collection's records, oldest first.
fn grants_of(conn: &Connection, collection: &str, record_id: Option<&str>) -> Result<Vec<Grant>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{GRANT_SELECT} WHERE g.collection = ?1 AND (?2 IS NULL OR g.record_id = ?2) ORDER BY g.created_at, g.id"
    ))?;
    let grants = stmt.query_map(params![collection, record_id], grant_from_row)?.collect::<rusqlite::Result<_>>()?;
    Ok(grants)
}

/// Whether `principal` may say who `record` is shared with: an admin, or its owner.
fn may_share(principal: &Principal, schema: &CollectionSchema, record: &Record) -> Result<()> {
    if principal.user.role == ADMIN_ROLE {
        return Ok(());
    }
    let owner = schema.rules.owner.as_ref().and_then(|owner| record.body.get(owner));
    if owner.and_then(|o| o.as_str()) == Some(principal.user.id.as_str()) {
        Ok(())
    } else {
        Err(Error::Forbidden {
            collection: schema.name.clone(),
            reason: "only admins and the record's owner may say who it is shared with".into(),
        })
    }
}

impl Tx<'_> {
    /// [`may_share`] for a record the caller must be able to view ("not found" otherwise).
    fn may_share(&mut self, principal: &Principal, collection: &str, id: &str) -> Result<()> {
        let schema = self.collection(collection)?.schema.clone();
        let record = self.visible_to(principal, &schema, id)?;
        may_share(principal, &schema, &record)
    }

    /// Shares a live record with `grantee`; sharing it again with the same grantee sets the
    /// access. `principal`, when given, must be an admin or the record's owner.
    pub fn grant(
        &mut self,
        principal: Option<&Principal>,
        collection: &str,
        id: &str,
        grantee: &Grantee,
        access: Access,
    ) -> Result<Grant> {
        match principal {
            Some(principal) => self.may_share(principal, collection, id)?,
            None => drop(self.get(collection, id)?),
        }
        let (kind, key, name) = match grantee {
            Grantee::User(name) => {
                let user = find_user(self.conn, name)?.ok_or_else(|| Error::UserNotFound { name: name.clone() })?;
                ("user", user.id, name.clone())
            }
            Grantee::Role(role) => {
                crate::access::check_role(role)?;
                ("role", role.clone(), role.clone())
            }
        };
        let grant_id: String = self
            .conn
            .prepare_cached(
                "INSERT INTO cairn_grants (id, collection, record_id, grantee_kind, grantee, access, granted_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (collection, record_id, grantee_kind, grantee)
                 DO UPDATE SET access = excluded.access, granted_by = excluded.granted_by
                 RETURNING id",
            )?
            .query_row(
                params![new_id(), collection, id, kind, key, access.as_str(), self.actor, self.now.0],
                |r| r.get(0),
            )?;
        self.log_grant(ChangeOp::Grant, &grant_id, collection, id, (kind, &key), access)?;
        self.audit(
            "grant.create",
            &format!("{collection}/{id}"),
            "ok",
            &format!("{kind} {name}: {}", access.as_str()),
        )?;
        grant_by_id(self.conn, &grant_id)
    }

    /// Withdraws a grant. `principal`, when given, must be an admin or the owner of the
    /// record it shares.
    pub fn revoke_grant(&mut self, principal: Option<&Principal>, grant_id: &str) -> Result<Grant> {
        let grant = grant_by_id(self.conn, grant_id)?;
        if let Some(principal) = principal {
            // A grant on a record the caller cannot see is, to them, no grant at all.
            self.may_share(principal, &grant.collection, &grant.record_id).map_err(|e| match e.kind() {
                crate::ErrorKind::NotFound => Error::GrantNotFound { id: grant_id.into() },
                _ => e,
            })?;
        }
        let key: String = self
            .conn
            .prepare_cached("DELETE FROM cairn_grants WHERE id = ?1 RETURNING grantee")?
            .query_row([grant_id], |r| r.get(0))?;
        let (kind, name) = match &grant.grantee {
            Grantee::User(name) => ("user", name),
            Grantee::Role(role) => ("role", role),
        };
        self.log_grant(ChangeOp::Revoke, grant_id, &grant.collection, &grant.record_id, (kind, &key), grant.access)?;
        self.audit(
            "grant.revoke",
            &format!("{}/{}", grant.collection, grant.record_id),
            "ok",
            &format!("{kind} {name}: {}", grant.access.as_str()),
        )?;
        Ok(grant)
    }
}

impl Tx<'_> {
    /// Appends a grant or revoke to the change log, so that followers of the log (realtime
    /// subscribers) see a record enter or leave what its grantee may see, at its place in
    /// the order of changes. `grantee` is (kind, user id or role).
    fn log_grant(
        &mut self,
        op: ChangeOp,
        grant_id: &str,
        collection: &str,
        id: &str,
        grantee: (&str, &str),
        access: Access,
    ) -> Result<()> {
        let c = self.collection(collection)?;
        let (version, deleted) =
            crate::data::record::read(self.conn, &c, id)?.map_or((0, true), |r| (r.version, r.deleted_at.is_some()));
        let body = crate::engine::canonical::canonical_json(&serde_json::json!({
            "grant": grant_id,
            "grantee_kind": grantee.0,
            "grantee": grantee.1,
            "access": access.as_str(),
        }));
        self.log(NewChange { collection, id, op, version, deleted, prev_seq: None, after: Some(Body::new(&body)) })?;
        Ok(())
    }
}

impl Store {
    /// Shares a live record with a user or a role (see [`Tx::grant`]), as this handle's actor.
    pub fn grant(&self, collection: &str, id: &str, grantee: &Grantee, access: Access) -> Result<Grant> {
        let (collection, id, grantee) = (collection.to_string(), id.to_string(), grantee.clone());
        self.transaction(move |tx| tx.grant(None, &collection, &id, &grantee, access))
    }

    /// Withdraws a grant by its id.
    pub fn revoke_grant(&self, grant_id: &str) -> Result<Grant> {
        let grant_id = grant_id.to_string();
        self.transaction(move |tx| tx.revoke_grant(None, &grant_id))
    }

    /// Who a record is shared with, as `principal` sees it: they must be an admin or its
    /// owner; a record they cannot view answers "not found".
    pub fn grants_as(&self, principal: &Principal, collection: &str, id: &str) -> Result<Vec<Grant>> {
        let record = self.get_as(principal, collection, id)?;
        let conn = self.reader()?;
        let schema = crate::data::collection::load(&conn, collection)?.schema;
        may_share(principal, &schema, &record)?;
        grants_of(&conn, collection, Some(id))
    }

    /// The grants of one record, or of every record of a collection, oldest first.
    pub fn grants(&self, collection: &str, record_id: Option<&str>) -> Result<Vec<Grant>> {
        let conn = self.reader()?;
        crate::data::collection::load(&conn, collection)?;
        grants_of(&conn, collection, record_id)
    }
}
