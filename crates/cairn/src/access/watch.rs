//! What a realtime subscriber is told about one change (SRV-2): the subscription
//! ([`WatchSpec`]: a collection, one record of it, or the records matching a filter), and the
//! judgement of each committed change against it for one caller.
//!
//! A change is judged on the record as it was before and as it is after, each time asking
//! "may the caller list it (its collection's list rule, or the view rule for a one-record
//! subscription, or a grant), and does it match the filter?". In before and in after: an
//! update. Only after: a create (or `enter`, when an existing record came into view: it was
//! edited into the filter, shared, undeleted). Only before: a delete (or `leave`: edited out
//! of the filter, unshared, no longer allowed by the rule). Neither: nothing is sent, so a
//! subscriber learns nothing about records it may not see. A grant or revoke is a change of
//! its own in the log, judged for the grantee against the record as it is now.
//!
//! Everything is evaluated in memory on the bodies the change carries; the database is
//! asked only for what a change does not carry — the grants of its record, when the rule
//! alone does not let the caller in, and the record itself for a grant — once per change
//! for every subscriber ([`Lookups`]), and as they were at that change, so that replaying
//! the log from a resume point tells a subscriber the same as it was told live.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::access::rules::{rule, shared_with, Allowed, Verb};
use crate::access::tokens::Principal;
use crate::access::ADMIN_ROLE;
use crate::data::condition::Condition;
use crate::data::grants::SharedWith;
use crate::data::schema::CollectionSchema;
use crate::engine::change::{Change, ChangeOp, Seq};
use crate::engine::timestamp::Timestamp;
use crate::error::{Error, Result};

/// The most fields a subscription may ask for.
const MAX_FIELDS: usize = 256;

/// What a subscriber follows: a collection, one of its records, or its records matching a
/// filter; optionally only some fields of each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WatchSpec {
    pub collection: String,
    /// One record's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// A filter in cairn's query language (docs/query.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Only these fields of each record (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

impl WatchSpec {
    /// Every record of `collection`.
    pub fn collection(collection: &str) -> WatchSpec {
        WatchSpec { collection: collection.to_string(), ..WatchSpec::default() }
    }

    /// Only the record `id`.
    pub fn record(mut self, id: &str) -> WatchSpec {
        self.record = Some(id.to_string());
        self
    }

    /// Only records matching `filter`.
    pub fn filter(mut self, filter: &str) -> WatchSpec {
        self.filter = Some(filter.to_string());
        self
    }

    /// Only these fields of each record.
    pub fn fields(mut self, fields: &[&str]) -> WatchSpec {
        self.fields = Some(fields.iter().map(|f| f.to_string()).collect());
        self
    }
}

/// What happened to a record, as one subscriber sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WatchKind {
    /// A record was created and is visible.
    Create,
    /// A visible record changed and stays visible.
    Update,
    /// A visible record was deleted (or purged).
    Delete,
    /// An existing record came into view: edited into the filter, shared, brought back.
    Enter,
    /// A record went out of view: edited out of the filter, unshared, no longer allowed.
    Leave,
}

impl WatchKind {
    /// The kind's name, as it is serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchKind::Create => "create",
            WatchKind::Update => "update",
            WatchKind::Delete => "delete",
            WatchKind::Enter => "enter",
            WatchKind::Leave => "leave",
        }
    }
}

/// One event for one subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: WatchKind,
    /// The change's position in the log: resume after it.
    pub seq: Seq,
    pub collection: String,
    pub id: String,
    /// The change-log op behind it (a `leave` may come from a `patch` or a `revoke`).
    pub op: ChangeOp,
    /// The record's version after the change.
    pub version: u64,
    pub at: Timestamp,
    pub actor: String,
    /// The record (only the fields asked for): as it is now for create, update and enter;
    /// as the subscriber last saw it for delete and leave.
    pub record: Map<String, Value>,
    /// For updates: the fields (of those asked for) whose values changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    #[serde(skip)]
    json: JsonOnce,
}

impl WatchEvent {
    /// The event as JSON text, written once however many subscribers it goes to (the
    /// fan-out shares one event among the subscribers it is the same for).
    pub fn to_json(&self) -> &str {
        self.json.0.get_or_init(|| serde_json::to_string(self).unwrap_or_default())
    }
}

/// A value's JSON, computed once; no part of the value's identity.
#[derive(Clone, Default)]
struct JsonOnce(std::sync::OnceLock<String>);

impl PartialEq for JsonOnce {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for JsonOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

/// Why a subscription cannot go on as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResetReason {
    /// The seq to resume from belongs to another store, or to this store before a restore
    /// brought it back to an earlier state (the epoch differs).
    Epoch,
    /// The seq to resume from is beyond the log's end.
    Unavailable,
    /// The collection was dropped; the subscription has ended.
    CollectionDropped,
    /// The collection's schema changed so that the subscription's filter or fields no
    /// longer fit it; the subscription has ended.
    SchemaChanged,
}

/// What a judgement says to send.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    Nothing,
    Event(Arc<WatchEvent>),
    /// The subscription has ended.
    End(ResetReason),
}

/// What judging one change needs from the database, read at most once per change for every
/// subscriber that needs it (one value per change).
pub(crate) struct Lookups<'a> {
    conn: &'a Connection,
    /// (grant id, grantee kind, grantee) of the change's record.
    grants: Option<Vec<(String, String, String)>>,
    /// The change's record as it is now: (body, deleted).
    record: Option<Option<(Map<String, Value>, bool)>>,
    /// Schemas by collection, as they are now.
    schemas: HashMap<String, Option<CollectionSchema>>,
    /// The events made for this change, by kind and the fields asked for: subscribers to
    /// whom the change means the same share one.
    events: HashMap<(WatchKind, Option<Vec<String>>), Arc<WatchEvent>>,
}

impl<'a> Lookups<'a> {
    pub(crate) fn new(conn: &'a Connection) -> Lookups<'a> {
        Lookups { conn, grants: None, record: None, schemas: HashMap::new(), events: HashMap::new() }
    }

    pub(crate) fn forget_schema(&mut self, collection: &str) {
        self.schemas.remove(collection);
    }

    fn schema(&mut self, collection: &str) -> Result<Option<CollectionSchema>> {
        if !self.schemas.contains_key(collection) {
            let schema = match crate::data::collection::load(self.conn, collection) {
                Ok(c) => Some(c.schema.clone()),
                Err(Error::UnknownCollection { .. }) => None,
                Err(e) => return Err(e),
            };
            self.schemas.insert(collection.to_string(), schema);
        }
        Ok(self.schemas[collection].clone())
    }

    /// The grants of the change's record as they were just after change `seq`: (grant id,
    /// grantee kind, grantee). The log holds every grant and revoke (format 10); a grant
    /// in the table that the log never mentions was made before, and counts throughout.
    fn grants(&mut self, collection: &str, id: &str, seq: Seq) -> Result<&[(String, String, String)]> {
        if self.grants.is_none() {
            let entries = self
                .conn
                .prepare_cached(
                    "SELECT seq, op, after FROM cairn_changes WHERE collection = ?1 AND record_id = ?2 \
                     AND op IN ('grant', 'revoke') ORDER BY seq",
                )?
                .query_map(rusqlite::params![collection, id], |r| {
                    Ok((r.get::<_, u64>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut logged = std::collections::HashSet::new();
            let mut held: Vec<(String, String, String)> = Vec::new();
            for (at, op, stored) in entries {
                let body = crate::engine::body::body_bytes(self.conn, &stored)?;
                let grant: Value = serde_json::from_slice(&body).unwrap_or_default();
                let text = |name: &str| grant.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
                let entry = (text("grant"), text("grantee_kind"), text("grantee"));
                logged.insert(entry.0.clone());
                if at > seq.0 {
                    continue;
                }
                held.retain(|g| g.0 != entry.0);
                if op == ChangeOp::Grant.as_str() {
                    held.push(entry);
                }
            }
            let table = self
                .conn
                .prepare_cached(
                    "SELECT id, grantee_kind, grantee FROM cairn_grants WHERE collection = ?1 AND record_id = ?2",
                )?
                .query_map([collection, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<(String, String, String)>>>()?;
            held.extend(table.into_iter().filter(|g| !logged.contains(&g.0)));
            self.grants = Some(held);
        }
        Ok(self.grants.as_deref().unwrap_or_default())
    }

    /// The change's record as it was just after change `seq`: (body, deleted); `None` when
    /// it did not exist then, or its collection is gone.
    fn record(&mut self, collection: &str, id: &str, seq: Seq) -> Result<Option<&(Map<String, Value>, bool)>> {
        if self.record.is_none() {
            let state = match crate::data::collection::load(self.conn, collection) {
                Ok(c) => match crate::data::record::read(self.conn, &c, id)? {
                    Some(r) if r.seq <= seq => Some((r.body, r.deleted_at.is_some())),
                    Some(r) => crate::data::changes::version_at(self.conn, r.seq.0, seq.0)?.and_then(|c| {
                        let deleted = c.deleted;
                        c.after.and_then(|b| match b {
                            Value::Object(body) => Some((body, deleted)),
                            _ => None,
                        })
                    }),
                    None => None,
                },
                Err(Error::UnknownCollection { .. }) => None,
                Err(e) => return Err(e),
            };
            self.record = Some(state);
        }
        Ok(self.record.as_ref().and_then(|r| r.as_ref()))
    }
}

/// A change's body when it is an object of a record not deleted.
fn live_body(value: &Option<Value>, deleted: bool) -> Option<&Map<String, Value>> {
    value.as_ref().and_then(Value::as_object).filter(|_| !deleted)
}

/// True when a grant (kind, grantee) is for `who`.
fn grant_is_for(who: &SharedWith, kind: &str, grantee: &str) -> bool {
    (kind == "user" && grantee == who.user_id) || (kind == "role" && grantee == who.role)
}

/// One subscription of one caller, ready to judge changes.
#[derive(Debug)]
pub(crate) struct Matcher {
    spec: WatchSpec,
    principal: Principal,
    who: SharedWith,
    schema: CollectionSchema,
    filter: Option<Condition>,
    /// The rule, bound to the caller; rebound for every change when it reads the clock.
    rule: Allowed,
    rule_reads_clock: bool,
}

impl Matcher {
    /// Checks `spec` against the collection as it is: it exists, the record id is an id,
    /// the filter parses and names its fields, the fields exist.
    pub(crate) fn new(conn: &Connection, principal: Principal, spec: WatchSpec) -> Result<Matcher> {
        let schema = crate::data::collection::load(conn, &spec.collection)?.schema.clone();
        if let Some(id) = &spec.record {
            crate::data::ids::validate_id(id)?;
        }
        let filter = spec.filter.as_deref().map(Condition::parse).transpose()?;
        let mut matcher = Matcher {
            who: shared_with(&principal),
            principal,
            schema: schema.clone(),
            filter,
            rule: Allowed::Nothing,
            rule_reads_clock: false,
            spec,
        };
        matcher.fit(schema)?;
        Ok(matcher)
    }

    pub(crate) fn spec(&self) -> &WatchSpec {
        &self.spec
    }

    /// The collection's schema changed (or the caller did): checks the subscription
    /// against it again and binds the rule again.
    fn fit(&mut self, schema: CollectionSchema) -> Result<()> {
        if let Some(filter) = &self.filter {
            filter.check(&schema)?;
        }
        if let Some(fields) = &self.spec.fields {
            if fields.len() > MAX_FIELDS {
                return Err(Error::InvalidInput {
                    source_name: "fields".into(),
                    reason: format!("at most {MAX_FIELDS} fields may be asked for"),
                });
            }
            if let Some(unknown) = fields.iter().find(|f| !schema.fields.iter().any(|d| &d.name == *f)) {
                return Err(Error::InvalidInput {
                    source_name: "fields".into(),
                    reason: format!("collection `{}` has no field `{unknown}`", schema.name),
                });
            }
        }
        let verb = if self.spec.record.is_some() { Verb::View } else { Verb::List };
        let text = if self.spec.record.is_some() { &schema.rules.view } else { &schema.rules.list };
        self.rule_reads_clock = text.as_deref().is_some_and(|t| t.contains("@request.now"));
        self.rule = rule(&schema, verb, &self.principal)?;
        if let Allowed::If(condition) = &self.rule {
            condition.check(&schema)?;
        }
        self.schema = schema;
        Ok(())
    }

    /// The caller's user or role changed (their token was checked again).
    pub(crate) fn set_principal(&mut self, principal: Principal) -> Result<()> {
        self.who = shared_with(&principal);
        self.principal = principal;
        self.fit(self.schema.clone())
    }

    /// Whether the rule lets the caller see `body` (grants aside).
    fn rule_admits(&mut self, body: &Map<String, Value>) -> Result<bool> {
        if self.rule_reads_clock {
            let verb = if self.spec.record.is_some() { Verb::View } else { Verb::List };
            self.rule = rule(&self.schema, verb, &self.principal)?;
        }
        match &self.rule {
            Allowed::All => Ok(true),
            Allowed::If(condition) => condition.holds(&self.schema, body),
            Allowed::Nothing => Ok(false),
        }
    }

    fn filter_admits(&self, body: &Map<String, Value>) -> Result<bool> {
        match &self.filter {
            Some(filter) => filter.holds(&self.schema, body),
            None => Ok(true),
        }
    }

    /// Whether the subscriber sees `body` of the change's record, `shared` telling whether
    /// a grant opens it to them (asked only when the rule does not).
    fn sees(
        &mut self,
        body: Option<&Map<String, Value>>,
        shared: &mut dyn FnMut(&SharedWith) -> Result<bool>,
    ) -> Result<bool> {
        let Some(body) = body else { return Ok(false) };
        if !self.filter_admits(body)? {
            return Ok(false);
        }
        Ok(self.rule_admits(body)? || shared(&self.who)?)
    }

    /// What to send this subscriber for `change`.
    pub(crate) fn judge(&mut self, change: &Change, lookups: &mut Lookups<'_>) -> Result<Verdict> {
        if change.collection != self.spec.collection {
            return Ok(Verdict::Nothing);
        }
        match change.op {
            ChangeOp::CollectionDrop => return Ok(Verdict::End(ResetReason::CollectionDropped)),
            ChangeOp::CollectionUpdate => {
                lookups.forget_schema(&change.collection);
                let Some(schema) = lookups.schema(&change.collection)? else {
                    return Ok(Verdict::End(ResetReason::CollectionDropped));
                };
                return match self.fit(schema) {
                    Ok(()) => Ok(Verdict::Nothing),
                    Err(_) => Ok(Verdict::End(ResetReason::SchemaChanged)),
                };
            }
            _ => {}
        }
        if !change.op.is_record_op() && !matches!(change.op, ChangeOp::Grant | ChangeOp::Revoke) {
            return Ok(Verdict::Nothing);
        }
        if self.spec.record.as_ref().is_some_and(|id| *id != change.id) {
            return Ok(Verdict::Nothing);
        }
        if matches!(change.op, ChangeOp::Grant | ChangeOp::Revoke) {
            return self.judge_grant(change, lookups);
        }
        let admin = self.principal.user.role == ADMIN_ROLE;
        let (collection, id) = (change.collection.as_str(), change.id.as_str());
        let mut shared = |who: &SharedWith| -> Result<bool> {
            let grants = lookups.grants(collection, id, change.seq)?;
            Ok(!admin && grants.iter().any(|(_, kind, grantee)| grant_is_for(who, kind, grantee)))
        };
        let before = live_body(&change.before, change.before_deleted);
        let after = live_body(&change.after, change.deleted);
        let was = self.sees(before, &mut shared)?;
        let is = self.sees(after, &mut shared)?;
        let kind = match (was, is) {
            (false, false) => return Ok(Verdict::Nothing),
            (false, true) if change.op == ChangeOp::Create => WatchKind::Create,
            (false, true) => WatchKind::Enter,
            (true, true) => WatchKind::Update,
            (true, false) if matches!(change.op, ChangeOp::Delete | ChangeOp::Purge) => WatchKind::Delete,
            (true, false) => WatchKind::Leave,
        };
        let shown = if is { after } else { before };
        let changed = match (kind, before, after) {
            (WatchKind::Update, Some(b), Some(a)) => self.changed_fields(b, a),
            _ => Vec::new(),
        };
        Ok(Verdict::Event(self.event(kind, change, shown, changed, lookups)))
    }

    /// A grant or revoke: an `enter` or `leave` for the grantee when nothing else (the rule,
    /// another grant) lets them see the record, as it is now, and it matches the filter.
    fn judge_grant(&mut self, change: &Change, lookups: &mut Lookups<'_>) -> Result<Verdict> {
        let grant = change.after.as_ref().and_then(Value::as_object);
        let field = |name: &str| grant.and_then(|g| g.get(name)).and_then(Value::as_str).unwrap_or_default();
        let (grant_id, kind, grantee) = (field("grant"), field("grantee_kind"), field("grantee"));
        if self.principal.user.role == ADMIN_ROLE || !grant_is_for(&self.who, kind, grantee) {
            return Ok(Verdict::Nothing);
        }
        let Some((body, deleted)) = lookups.record(&change.collection, &change.id, change.seq)?.cloned() else {
            return Ok(Verdict::Nothing);
        };
        if deleted || !self.filter_admits(&body)? || self.rule_admits(&body)? {
            return Ok(Verdict::Nothing);
        }
        let who = self.who.clone();
        let others = lookups
            .grants(&change.collection, &change.id, change.seq)?
            .iter()
            .any(|(id, kind, grantee)| id != grant_id && grant_is_for(&who, kind, grantee));
        if others {
            return Ok(Verdict::Nothing);
        }
        let kind = if change.op == ChangeOp::Grant { WatchKind::Enter } else { WatchKind::Leave };
        Ok(Verdict::Event(self.event(kind, change, Some(&body), Vec::new(), lookups)))
    }

    /// The fields (of those asked for) whose values differ.
    fn changed_fields(&self, before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<String> {
        let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter(|name| before.get(*name) != after.get(*name))
            .filter(|name| self.spec.fields.as_ref().is_none_or(|fields| fields.contains(name)))
            .cloned()
            .collect()
    }

    /// The event for `kind` of `change` showing `record`: the one made already for another
    /// subscriber with the same fields, if any.
    fn event(
        &self,
        kind: WatchKind,
        change: &Change,
        record: Option<&Map<String, Value>>,
        changed: Vec<String>,
        lookups: &mut Lookups<'_>,
    ) -> Arc<WatchEvent> {
        let key = (kind, self.spec.fields.clone());
        if let Some(event) = lookups.events.get(&key) {
            return event.clone();
        }
        let mut record = record.cloned().unwrap_or_default();
        if let Some(fields) = &self.spec.fields {
            record.retain(|name, _| fields.contains(name));
        }
        let event = Arc::new(WatchEvent {
            kind,
            seq: change.seq,
            collection: change.collection.clone(),
            id: change.id.clone(),
            op: change.op,
            version: change.version,
            at: change.at,
            actor: change.actor.clone(),
            record,
            changed,
            json: JsonOnce::default(),
        });
        lookups.events.insert(key, event.clone());
        event
    }
}
