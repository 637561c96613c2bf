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

use serde_json::Value;

use crate::access::tokens::Principal;
use crate::access::ADMIN_ROLE;
use crate::data::condition::Condition;
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

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::List => "list",
            Verb::View => "view",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
        }
    }
}

/// What `principal` is held to for `verb`: `Ok(None)` when nothing restricts them (an admin,
/// or an empty rule); a forbidden error when no rule lets them at all.
pub(crate) fn rule(schema: &CollectionSchema, verb: Verb, principal: &Principal) -> Result<Option<Condition>> {
    if principal.user.role == ADMIN_ROLE {
        return Ok(None);
    }
    let rules = &schema.rules;
    let text = match verb {
        Verb::List => &rules.list,
        Verb::View => &rules.view,
        Verb::Create => &rules.create,
        Verb::Update => &rules.update,
        Verb::Delete => &rules.delete,
    };
    let Some(text) = text else {
        return Err(Error::Forbidden {
            collection: schema.name.clone(),
            reason: format!("no {} rule lets role {:?} in", verb.as_str(), principal.user.role),
        });
    };
    let auth = AuthValues { id: &principal.user.id, name: &principal.user.name, role: &principal.user.role };
    bind(text, &auth)?.map(|text| Condition::parse(&text)).transpose()
}

/// Whether `record` passes `condition` (none passes everything).
fn passes(schema: &CollectionSchema, condition: &Option<Condition>, record: &Record) -> Result<bool> {
    match condition {
        None => Ok(true),
        Some(condition) => condition.matches(schema, &record.body),
    }
}

fn not_found(collection: &str, id: &str) -> Error {
    Error::NotFound { collection: collection.to_string(), id: id.to_string(), deleted: false }
}

impl Store {
    /// The collection's schema (not `Store::collection`, which also counts its records).
    fn schema_of(&self, collection: &str) -> Result<CollectionSchema> {
        Ok(crate::data::collection::load(&*self.reader()?, collection)?.schema)
    }

    /// A page of the records `principal` may list.
    pub fn query_as(&self, principal: &Principal, collection: &str, query: &Query) -> Result<Page> {
        let schema = self.schema_of(collection)?;
        match rule(&schema, Verb::List, principal)? {
            None => self.query(collection, query),
            Some(condition) => self.query(collection, &query.clone().restrict(condition)),
        }
    }

    /// How many records matching `filter` `principal` may list.
    pub fn count_as(&self, principal: &Principal, collection: &str, filter: Option<&str>) -> Result<u64> {
        let schema = self.schema_of(collection)?;
        let condition = match (rule(&schema, Verb::List, principal)?, filter) {
            (None, filter) => filter.map(Condition::parse).transpose()?,
            (Some(rule), None) => Some(rule),
            (Some(rule), Some(filter)) => Some(rule.and(Condition::parse(filter)?)),
        };
        self.count(collection, condition.map(|c| c.to_string()).as_deref())
    }

    /// Full-text search within what `principal` may list.
    pub fn search_as(&self, principal: &Principal, collection: &str, search: &Search) -> Result<Vec<Hit>> {
        let schema = self.schema_of(collection)?;
        let mut search = search.clone();
        if let Some(rule) = rule(&schema, Verb::List, principal)? {
            search.filter = Some(match search.filter.take() {
                Some(filter) => rule.and(filter),
                None => rule,
            });
        }
        self.search(collection, &search)
    }

    /// A record `principal` may view; any other answers "not found".
    pub fn get_as(&self, principal: &Principal, collection: &str, id: &str) -> Result<Record> {
        let schema = self.schema_of(collection)?;
        let view = rule(&schema, Verb::View, principal)?;
        let record = self.get(collection, id)?;
        if passes(&schema, &view, &record)? {
            Ok(record)
        } else {
            Err(not_found(collection, id))
        }
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
        if principal.user.role != ADMIN_ROLE {
            if let (Some(owner), Value::Object(members)) = (&schema.rules.owner, &mut body) {
                members.insert(owner.clone(), Value::String(principal.user.id.clone()));
            }
        }
        let record = self.create(collection, id, body)?;
        if !passes(&schema, &create, &record)? {
            return Err(Error::Forbidden {
                collection: collection.into(),
                reason: "the create rule does not allow this record".into(),
            });
        }
        Ok(record)
    }

    /// Changes a record as `principal` with `change` (a replace, patch, revert, undo…): the
    /// record must be visible to them (else "not found") and the update rule must allow it as
    /// it is and as it would be; its owner stays.
    pub fn update_as(
        &mut self,
        principal: &Principal,
        collection: &str,
        id: &str,
        change: impl FnOnce(&mut Tx<'_>) -> Result<Record>,
    ) -> Result<Record> {
        let schema = self.collection(collection)?.schema.clone();
        let before = self.visible_to(principal, &schema, id)?;
        let update = rule(&schema, Verb::Update, principal)?;
        if !passes(&schema, &update, &before)? {
            return Err(Error::Forbidden {
                collection: collection.into(),
                reason: "the update rule does not allow changing this record".into(),
            });
        }
        let after = change(self)?;
        if principal.user.role != ADMIN_ROLE {
            if let Some(owner) = &schema.rules.owner {
                if before.body.get(owner) != after.body.get(owner) {
                    return Err(Error::Forbidden {
                        collection: collection.into(),
                        reason: format!("the owner field `{owner}` cannot be changed"),
                    });
                }
            }
        }
        if !passes(&schema, &update, &after)? {
            return Err(Error::Forbidden {
                collection: collection.into(),
                reason: "the update rule does not allow the record this change makes".into(),
            });
        }
        Ok(after)
    }

    /// Deletes a record as `principal`: visible to them, and allowed by the delete rule.
    pub fn delete_as(
        &mut self,
        principal: &Principal,
        collection: &str,
        id: &str,
        expected: Option<u64>,
    ) -> Result<Record> {
        let schema = self.collection(collection)?.schema.clone();
        let before = self.visible_to(principal, &schema, id)?;
        let delete = rule(&schema, Verb::Delete, principal)?;
        if !passes(&schema, &delete, &before)? {
            return Err(Error::Forbidden {
                collection: collection.into(),
                reason: "the delete rule does not allow deleting this record".into(),
            });
        }
        self.delete(collection, id, expected)
    }

    /// The record if `principal` may view it; "not found" otherwise, as if it did not exist.
    fn visible_to(&mut self, principal: &Principal, schema: &CollectionSchema, id: &str) -> Result<Record> {
        let view = rule(schema, Verb::View, principal)?;
        let record = self.get(&schema.name, id)?;
        if passes(schema, &view, &record)? {
            Ok(record)
        } else {
            Err(not_found(&schema.name, id))
        }
    }
}
