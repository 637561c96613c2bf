//! Enforcing collection rules (SRV-4) for a signed-in caller (see `data/rules.rs` for what a
//! rule is).
//!
//! Reads are restricted inside the query: the list rule is ANDed into every list, count and
//! search, so a record the caller may not see is never read, counted or paged over. A record
//! asked for by id that the view rule hides answers "not found" — the same as one that does
//! not exist — on every verb, so an id guess learns nothing. Writes check the record as it
//! is before (it must be visible, and the update or delete rule must allow it) and, for
//! creates and updates, as it would be after; a refusal rolls the write back. The owner
//! field is set to the caller on create and cannot be changed afterwards. Admins are held to
//! no rule.
//!
//! A grant (`access/grants.rs`) opens one record to a user or a role beyond the rules: read
//! (it is listed, counted, searched and viewed) or write (it can also be changed, never
//! deleted). Lists AND "the list rule, or a grant" into their SQL; a collection without a
//! list rule lists only what is shared with the caller.

use serde_json::Value;

use crate::access::tokens::Principal;
use crate::access::ADMIN_ROLE;
use crate::data::condition::Condition;
use crate::data::grants::{self, Access, SharedWith};
use crate::data::query::{Page, Query};
use crate::data::record::Record;
use crate::data::rules::{bind, AuthValues};
use crate::data::schema::CollectionSchema;
use crate::data::search::{Hit, Search};
use crate::engine::store::Store;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// What a caller does with a collection's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    List,
    View,
    Create,
    Update,
    Delete,
}

/// What a rule lets a caller at.
#[derive(Debug, Clone)]
pub(crate) enum Allowed {
    /// Every record (an admin, or an empty rule).
    All,
    /// The records matching the bound rule.
    If(Condition),
    /// None by the rules (there is none for this verb); grants may still open some.
    Nothing,
}

impl Allowed {
    /// Whether `record` passes (grants aside).
    fn admits(&self, schema: &CollectionSchema, record: &Record) -> Result<bool> {
        match self {
            Allowed::All => Ok(true),
            Allowed::If(condition) => condition.matches(schema, &record.body),
            Allowed::Nothing => Ok(false),
        }
    }
}

/// What the rule for `verb` lets `principal` at.
pub(crate) fn rule(schema: &CollectionSchema, verb: Verb, principal: &Principal) -> Result<Allowed> {
    if principal.user.role == ADMIN_ROLE {
        return Ok(Allowed::All);
    }
    let rules = &schema.rules;
    let text = match verb {
        Verb::List => &rules.list,
        Verb::View => &rules.view,
        Verb::Create => &rules.create,
        Verb::Update => &rules.update,
        Verb::Delete => &rules.delete,
    };
    let Some(text) = text else { return Ok(Allowed::Nothing) };
    let now = crate::engine::timestamp::Timestamp::now().to_string();
    let auth = AuthValues { id: &principal.user.id, name: &principal.user.name, role: &principal.user.role, now: &now };
    Ok(match bind(text, &auth)? {
        None => Allowed::All,
        Some(text) => Allowed::If(Condition::parse(&text)?),
    })
}

/// The records `principal` may list: those the list rule lets in, or shared with them;
/// `None` when nothing restricts them.
fn listable(schema: &CollectionSchema, principal: &Principal) -> Result<Option<Condition>> {
    let rule = match rule(schema, Verb::List, principal)? {
        Allowed::All => return Ok(None),
        Allowed::If(condition) => Some(condition),
        Allowed::Nothing => None,
    };
    Ok(Some(Condition::rule_or_shared(rule, shared_with(principal))))
}

/// Whose grants open records to `principal`.
pub(crate) fn shared_with(principal: &Principal) -> SharedWith {
    SharedWith { user_id: principal.user.id.clone(), role: principal.user.role.clone() }
}

fn forbidden(collection: &str, reason: impl Into<String>) -> Error {
    Error::Forbidden { collection: collection.to_string(), reason: reason.into() }
}

fn not_found(collection: &str, id: &str) -> Error {
    Error::NotFound { collection: collection.to_string(), id: id.to_string(), deleted: false }
}

/// `record` if `principal` may view it — by the view rule or, only when the rule does not
/// let them, a grant; "not found" otherwise, as if it did not exist.
fn viewable(
    conn: &rusqlite::Connection,
    principal: &Principal,
    schema: &CollectionSchema,
    record: Record,
) -> Result<Record> {
    if rule(schema, Verb::View, principal)?.admits(schema, &record)?
        || grants::access(conn, &shared_with(principal), &schema.name, &record.id)?.is_some()
    {
        Ok(record)
    } else {
        Err(not_found(&schema.name, &record.id))
    }
}

impl Store {
    /// The collection's schema (not `Store::collection`, which also counts its records).
    fn schema_of(&self, collection: &str) -> Result<CollectionSchema> {
        Ok(crate::data::collection::load(&*self.reader()?, collection)?.schema)
    }

    /// A page of the records `principal` may list.
    pub fn query_as(&self, principal: &Principal, collection: &str, query: &Query) -> Result<Page> {
        match listable(&self.schema_of(collection)?, principal)? {
            None => self.query(collection, query),
            Some(condition) => self.query(collection, &query.clone().restrict(condition)),
        }
    }

    /// How many records matching `filter` `principal` may list.
    pub fn count_as(&self, principal: &Principal, collection: &str, filter: Option<&str>) -> Result<u64> {
        let filter = filter.map(Condition::parse).transpose()?;
        let condition = match (listable(&self.schema_of(collection)?, principal)?, filter) {
            (None, filter) => filter,
            (Some(rule), None) => Some(rule),
            (Some(rule), Some(filter)) => Some(rule.and(filter)),
        };
        self.count_where(collection, condition)
    }

    /// Full-text search within what `principal` may list.
    pub fn search_as(&self, principal: &Principal, collection: &str, search: &Search) -> Result<Vec<Hit>> {
        let mut search = search.clone();
        if let Some(rule) = listable(&self.schema_of(collection)?, principal)? {
            search.filter = Some(match search.filter.take() {
                Some(filter) => rule.and(filter),
                None => rule,
            });
        }
        self.search(collection, &search)
    }

    /// A record `principal` may view (by the view rule or a grant); any other answers "not
    /// found".
    pub fn get_as(&self, principal: &Principal, collection: &str, id: &str) -> Result<Record> {
        let conn = self.reader()?;
        let schema = crate::data::collection::load(&conn, collection)?.schema;
        let record = self.get(collection, id)?;
        viewable(&conn, principal, &schema, record)
    }

    /// A record's history, if `principal` may view the record.
    pub fn history_as(&self, principal: &Principal, collection: &str, id: &str) -> Result<Vec<crate::Change>> {
        self.get_as(principal, collection, id)?;
        self.history(collection, id)
    }
}

impl Tx<'_> {
    /// Creates a record as `principal`: the owner field is set to them, and the create rule
    /// must allow the record as it would be.
    pub fn create_as(
        &mut self,
        principal: &Principal,
        collection: &str,
        id: Option<&str>,
        mut body: Value,
    ) -> Result<Record> {
        let schema = self.collection(collection)?.schema.clone();
        let create = rule(&schema, Verb::Create, principal)?;
        if matches!(create, Allowed::Nothing) {
            return Err(forbidden(collection, format!("no create rule lets role {:?} in", principal.user.role)));
        }
        if principal.user.role != ADMIN_ROLE {
            if let (Some(owner), Value::Object(members)) = (&schema.rules.owner, &mut body) {
                members.insert(owner.clone(), Value::String(principal.user.id.clone()));
            }
        }
        let record = self.create(collection, id, body)?;
        if !create.admits(&schema, &record)? {
            return Err(forbidden(collection, "the create rule does not allow this record"));
        }
        Ok(record)
    }

    /// Changes a record as `principal` with `change` (a replace, patch, revert, undo…): the
    /// record must be visible to them (else "not found"), and either a grant lets them write
    /// it or the update rule allows it as it is and as it would be; its owner stays.
    pub fn update_as(
        &mut self,
        principal: &Principal,
        collection: &str,
        id: &str,
        change: impl FnOnce(&mut Tx<'_>) -> Result<Record>,
    ) -> Result<Record> {
        let schema = self.collection(collection)?.schema.clone();
        // A soft-deleted record can still be changed by undo, redo and revert (the change
        // itself refuses anything else on a deleted record).
        let stored = self.get_including_deleted(collection, id)?;
        let before = viewable(self.conn, principal, &schema, stored)?;
        let write_granted = principal.user.role != ADMIN_ROLE
            && grants::access(self.conn, &shared_with(principal), collection, id)? == Some(Access::Write);
        let update = if write_granted { Allowed::All } else { rule(&schema, Verb::Update, principal)? };
        if !update.admits(&schema, &before)? {
            return Err(forbidden(collection, "the update rule does not allow changing this record"));
        }
        let after = change(self)?;
        if principal.user.role != ADMIN_ROLE {
            if let Some(owner) = &schema.rules.owner {
                if before.body.get(owner) != after.body.get(owner) {
                    return Err(forbidden(collection, format!("the owner field `{owner}` cannot be changed")));
                }
            }
        }
        if !update.admits(&schema, &after)? {
            return Err(forbidden(collection, "the update rule does not allow the record this change makes"));
        }
        Ok(after)
    }

    /// Deletes a record as `principal`: visible to them, and allowed by the delete rule (a
    /// grant does not let anyone delete).
    pub fn delete_as(
        &mut self,
        principal: &Principal,
        collection: &str,
        id: &str,
        expected: Option<u64>,
    ) -> Result<Record> {
        let schema = self.collection(collection)?.schema.clone();
        let before = self.visible_to(principal, &schema, id)?;
        if !rule(&schema, Verb::Delete, principal)?.admits(&schema, &before)? {
            return Err(forbidden(collection, "the delete rule does not allow deleting this record"));
        }
        self.delete(collection, id, expected)
    }

    /// The record if `principal` may view it; "not found" otherwise, as if it did not exist.
    pub(crate) fn visible_to(&mut self, principal: &Principal, schema: &CollectionSchema, id: &str) -> Result<Record> {
        let record = self.get(&schema.name, id)?;
        viewable(self.conn, principal, schema, record)
    }
}
