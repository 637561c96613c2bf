//! Queries (CORE-5): filters, sorting, pagination and projections, compiled to SQL.
//!
//! A filter is parsed into an [`Expr`] (see `query/parse.rs` and `docs/query.md`), checked
//! against the collection's schema (unknown fields, type mismatches and misplaced operators are
//! errors that point into the filter text), then compiled to SQL in which every value is a
//! bound `?N` parameter and every identifier comes from the validated schema. Fields with a
//! value column (indexed or unique) are read from it, others from the body with
//! `json_extract`. `query/eval.rs` holds the same semantics evaluated in Rust; property tests
//! check that both agree.
//!
//! Semantics: a missing field matches no comparison, `in`, `contains` or `has`, only
//! `is null`; `not` negates a whole condition, so `not (status = "done")` includes records
//! without a status while `status != "done"` does not. Sorting puts missing values last in
//! both directions and breaks ties by id, so every order is total and cursors are exact.

pub(crate) mod eval;
pub(crate) mod parse;
#[cfg(test)]
mod tests;

use rusqlite::types::Value as SqlValue;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::data::collection::{self, Collection};
use crate::data::condition::Condition;
use crate::data::index;
use crate::data::schema::{CollectionSchema, FieldDef, FieldType};
use crate::engine::sql::{quote, tags_table, value_column};
use crate::engine::store::Store;
use crate::engine::timestamp::{datetime_micros, parse_datetime, Timestamp};
use crate::error::{Error, Result};

pub(crate) use parse::parse_filter;
pub use parse::{CmpOp, Expr, Lit, LitValue, Pred, Test};

/// The most records one page may hold.
pub const MAX_LIMIT: usize = 10_000;

/// What to fetch from a collection. Defaults: no filter, sorted by id, 50 per page, the
/// collection's summary fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Query {
    /// What records must match (see `docs/query.md`): filter text (`Some("a = 1".into())`),
    /// a parsed [`Condition`], or several ANDed; `None` matches every live record.
    pub filter: Option<Condition>,
    /// Sort keys, e.g. `-started_at,name` (a leading `-` sorts descending). Ties are broken
    /// by id, ascending.
    pub sort: Option<String>,
    /// Records per page (1 to [`Query::MAX_LIMIT`]). Default 50.
    pub limit: usize,
    /// Skip this many records (not with `cursor`).
    pub offset: Option<usize>,
    /// Continue after the page that returned this cursor (not with `offset`).
    pub cursor: Option<String>,
    /// Fields to return; `None` means the summary fields (all fields when none is marked).
    pub fields: Option<Vec<String>>,
}

impl Query {
    /// The most rows one page returns; larger limits are refused.
    pub const MAX_LIMIT: usize = MAX_LIMIT;
}

impl Default for Query {
    fn default() -> Self {
        Query { filter: None, sort: None, limit: 50, offset: None, cursor: None, fields: None }
    }
}

impl Query {
    /// ANDs `condition` onto this query's filter: a record must match both (a server adds its
    /// permission rules to a caller's query this way).
    pub fn restrict(mut self, condition: impl Into<Condition>) -> Query {
        self.filter = Some(match self.filter.take() {
            Some(filter) => filter.and(condition),
            None => condition.into(),
        });
        self
    }
}

/// One record of a query result: its metadata and the projected fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Row {
    /// The record id.
    pub id: String,
    /// Its version.
    pub version: u64,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// The requested fields that it has.
    pub fields: Map<String, Value>,
    /// Requested encrypted fields it has but this handle cannot open (the key is locked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sealed: Vec<String>,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Page {
    /// The records, in order.
    pub rows: Vec<Row>,
    /// Pass as [`Query::cursor`] to get the next page; `None` after the last page.
    pub next_cursor: Option<String>,
}

/// A value as SQLite compares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum SqlVal {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl SqlVal {
    fn to_sql(&self) -> SqlValue {
        match self {
            SqlVal::Null => SqlValue::Null,
            SqlVal::Int(i) => SqlValue::Integer(*i),
            SqlVal::Real(r) => SqlValue::Real(*r),
            SqlVal::Text(t) => SqlValue::Text(t.clone()),
        }
    }

    fn from_sql(v: SqlValue) -> Self {
        match v {
            SqlValue::Null | SqlValue::Blob(_) => SqlVal::Null,
            SqlValue::Integer(i) => SqlVal::Int(i),
            SqlValue::Real(r) => SqlVal::Real(r),
            SqlValue::Text(t) => SqlVal::Text(t),
        }
    }
}

/// How a filter sees a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Number,
    Bool,
    Datetime,
    Tags,
    /// A json field, an attachment: only `is null`.
    Opaque,
    /// A path inside a json field: any value, compared as SQLite would.
    Dynamic,
}

/// A path resolved against a schema.
pub(crate) struct Resolved<'a> {
    pub(crate) field: &'a FieldDef,
    pub(crate) subpath: Vec<String>,
}

impl Resolved<'_> {
    pub(crate) fn kind(&self) -> Kind {
        if !self.subpath.is_empty() {
            return Kind::Dynamic;
        }
        match self.field.kind {
            FieldType::Text | FieldType::Relation => Kind::Text,
            FieldType::Integer | FieldType::Number => Kind::Number,
            FieldType::Bool => Kind::Bool,
            FieldType::Datetime => Kind::Datetime,
            FieldType::Tags => Kind::Tags,
            FieldType::Json | FieldType::Attachment | FieldType::Attachments => Kind::Opaque,
        }
    }

    fn has_column(&self) -> bool {
        self.subpath.is_empty() && self.field.has_column()
    }

    fn json_path(&self) -> String {
        let mut path = format!("$.{}", self.field.name);
        for key in &self.subpath {
            path.push('.');
            path.push_str(key);
        }
        path
    }

    fn describe(&self) -> String {
        let path = std::iter::once(self.field.name.as_str())
            .chain(self.subpath.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(".");
        format!(
            "`{path}` ({})",
            if self.subpath.is_empty() { self.field.kind.as_str() } else { "a value inside a json field" }
        )
    }
}

fn filter_error(text: &str, pos: usize, reason: String) -> Error {
    Error::InvalidFilter { filter: text.to_string(), position: pos, reason }
}

/// Resolves a path against the schema; `text` is the filter (for errors).
pub(crate) fn resolve<'a>(
    schema: &'a CollectionSchema,
    path: &[String],
    pos: usize,
    text: &str,
) -> Result<Resolved<'a>> {
    let Some(field) = schema.field(&path[0]) else {
        let names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
        return Err(filter_error(
            text,
            pos,
            format!("unknown field `{}` in collection `{}` (fields: {})", path[0], schema.name, names.join(", ")),
        ));
    };
    if path.len() > 1 && field.kind != FieldType::Json {
        return Err(filter_error(
            text,
            pos,
            format!("`{}` is a {} field; only json fields have paths inside them", field.name, field.kind.as_str()),
        ));
    }
    if field.encrypted {
        return Err(filter_error(text, pos, format!("`{}` is encrypted and cannot be queried", field.name)));
    }
    Ok(Resolved { field, subpath: path[1..].to_vec() })
}

/// The SQL value of a literal compared with `resolved`, or a type error.
pub(crate) fn literal_value(resolved: &Resolved<'_>, lit: &Lit, text: &str) -> Result<SqlVal> {
    let mismatch = || {
        filter_error(
            text,
            lit.pos,
            format!("type mismatch: {} cannot be compared with {}", resolved.describe(), lit.value.describe()),
        )
    };
    Ok(match (resolved.kind(), &lit.value) {
        (Kind::Text, LitValue::Str(s)) => SqlVal::Text(s.clone()),
        (Kind::Number, LitValue::Int(i)) => SqlVal::Int(*i),
        (Kind::Number, LitValue::Float(f)) => SqlVal::Real(*f),
        (Kind::Bool, LitValue::Bool(b)) => SqlVal::Int(i64::from(*b)),
        (Kind::Datetime, LitValue::Date(s) | LitValue::Str(s)) => match parse_datetime(s) {
            Some(dt) => SqlVal::Int(datetime_micros(dt)),
            None => {
                return Err(filter_error(
                    text,
                    lit.pos,
                    format!("type mismatch: {} needs a date or date-time, and {s:?} is neither", resolved.describe()),
                ))
            }
        },
        (Kind::Dynamic, LitValue::Str(s) | LitValue::Date(s)) => SqlVal::Text(s.clone()),
        (Kind::Dynamic, LitValue::Int(i)) => SqlVal::Int(*i),
        (Kind::Dynamic, LitValue::Float(f)) => SqlVal::Real(*f),
        (Kind::Dynamic, LitValue::Bool(b)) => SqlVal::Int(i64::from(*b)),
        (Kind::Tags, _) => {
            return Err(filter_error(
                text,
                lit.pos,
                format!("{} holds tags: test membership with `has \"tag\"`", resolved.describe()),
            ))
        }
        (Kind::Opaque, _) => {
            return Err(filter_error(
                text,
                lit.pos,
                format!("{} can only be tested with `is null` / `is not null`", resolved.describe()),
            ))
        }
        _ => return Err(mismatch()),
    })
}

/// SQL under construction: text plus its bound parameters.
#[derive(Default)]
struct Sql {
    params: Vec<SqlValue>,
    needs_body: bool,
    /// Conditions are checked row by row (an ordered walk), never used to find rows.
    row_at_a_time: bool,
}

impl Sql {
    fn param(&mut self, value: SqlValue) -> String {
        self.params.push(value);
        format!("?{}", self.params.len())
    }

    /// The SQL expression reading a resolved path.
    fn value_expr(&mut self, resolved: &Resolved<'_>) -> String {
        if resolved.has_column() {
            return format!("r.{}", quote(&value_column(&resolved.field.name)));
        }
        self.needs_body = true;
        let path = self.param(SqlValue::Text(resolved.json_path()));
        let extract = format!("json_extract(cairn_body(b.after), {path})");
        if resolved.kind() == Kind::Datetime {
            format!("cairn_ts({extract})")
        } else {
            extract
        }
    }
}

/// The operands of a chain of `and` (or of `or`), left to right.
fn chain<'e>(expr: &'e Expr, and: bool, out: &mut Vec<&'e Expr>) {
    match (expr, and) {
        (Expr::And(a, b), true) | (Expr::Or(a, b), false) => {
            chain(a, and, out);
            chain(b, and, out);
        }
        (other, _) => out.push(other),
    }
}

/// Compiled operands joined as a balanced tree of `op`: SQLite refuses expressions nested
/// deeper than 1,000, and a filter of a thousand `or`s parses as a chain that deep.
fn balanced(parts: &[String], op: &str) -> String {
    match parts {
        [one] => one.clone(),
        _ => {
            let (left, right) = parts.split_at(parts.len() / 2);
            format!("({} {op} {})", balanced(left, op), balanced(right, op))
        }
    }
}

fn compile(c: &Collection, text: &str, expr: &Expr, sql: &mut Sql) -> Result<String> {
    Ok(match expr {
        Expr::And(..) | Expr::Or(..) => {
            let and = matches!(expr, Expr::And(..));
            let mut operands = Vec::new();
            chain(expr, and, &mut operands);
            let parts = operands.into_iter().map(|e| compile(c, text, e, sql)).collect::<Result<Vec<_>>>()?;
            balanced(&parts, if and { "AND" } else { "OR" })
        }
        // NULL (a missing field) means false everywhere, so `not` must turn it into true.
        Expr::Not(a) => format!("(NOT coalesce({}, 0))", compile(c, text, a, sql)?),
        Expr::Pred(p) => {
            let resolved = resolve(&c.schema, &p.path, p.pos, text)?;
            let kind = resolved.kind();
            match &p.test {
                Test::IsNull(null) => {
                    let value = sql.value_expr(&resolved);
                    format!("({value} IS {}NULL)", if *null { "" } else { "NOT " })
                }
                Test::Cmp(op, lit) => {
                    let value = literal_value(&resolved, lit, text)?;
                    if kind == Kind::Bool && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                        return Err(filter_error(
                            text,
                            p.pos,
                            format!("{} is true or false: use = or !=", resolved.describe()),
                        ));
                    }
                    let column = sql.value_expr(&resolved);
                    let param = sql.param(value.to_sql());
                    format!("({column} {} {param})", op.as_str())
                }
                Test::In(lits) | Test::NotIn(lits) => {
                    let values = lits.iter().map(|l| literal_value(&resolved, l, text)).collect::<Result<Vec<_>>>()?;
                    let column = sql.value_expr(&resolved);
                    let params: Vec<String> = values.iter().map(|v| sql.param(v.to_sql())).collect();
                    // `NULL NOT IN (…)` is NULL: a missing field matches neither.
                    let not = if matches!(p.test, Test::NotIn(_)) { "NOT " } else { "" };
                    format!("({column} {not}IN ({}))", params.join(", "))
                }
                Test::Contains(lit) => {
                    if !matches!(kind, Kind::Text | Kind::Dynamic) {
                        return Err(filter_error(
                            text,
                            p.pos,
                            format!("`contains` needs a text field; {} is not one", resolved.describe()),
                        ));
                    }
                    let LitValue::Str(needle) = &lit.value else {
                        unreachable!("the parser only accepts strings here")
                    };
                    let column = sql.value_expr(&resolved);
                    let param = sql.param(SqlValue::Text(needle.clone()));
                    format!("cairn_contains({column}, {param})")
                }
                Test::Has(lit) => {
                    if kind != Kind::Tags {
                        return Err(filter_error(
                            text,
                            p.pos,
                            format!("`has` needs a tags field; {} is not one", resolved.describe()),
                        ));
                    }
                    let LitValue::Str(tag) = &lit.value else { unreachable!("the parser only accepts strings here") };
                    if resolved.field.has_tag_index() {
                        let field = sql.param(SqlValue::Text(resolved.field.name.clone()));
                        let tag = sql.param(SqlValue::Text(tag.clone()));
                        let tags = quote(&tags_table(c.name()));
                        if sql.row_at_a_time {
                            format!(
                                "(EXISTS (SELECT 1 FROM {tags} WHERE field = {field} AND tag = {tag} AND id = r.id))"
                            )
                        } else {
                            // A list the planner may also drive the query from.
                            format!("(r.id IN (SELECT id FROM {tags} WHERE field = {field} AND tag = {tag}))")
                        }
                    } else {
                        sql.needs_body = true;
                        let path = sql.param(SqlValue::Text(resolved.json_path()));
                        let tag = sql.param(SqlValue::Text(tag.clone()));
                        format!("(EXISTS (SELECT 1 FROM json_each(cairn_body(b.after), {path}) WHERE value = {tag}))")
                    }
                }
            }
        }
    })
}

/// One parsed sort key.
struct SortKey<'a> {
    resolved: Resolved<'a>,
    descending: bool,
}

fn parse_sort<'a>(schema: &'a CollectionSchema, text: &str) -> Result<Vec<SortKey<'a>>> {
    let mut keys = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (descending, name) = match part.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, part.strip_prefix('+').unwrap_or(part)),
        };
        let path: Vec<String> = name.split('.').map(String::from).collect();
        if path.iter().any(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')) {
            return Err(Error::InvalidQuery(format!("sort key {part:?} is not a field name")));
        }
        let resolved = resolve(schema, &path, 0, name).map_err(|e| match e {
            Error::InvalidFilter { reason, .. } => Error::InvalidQuery(format!("sort: {reason}")),
            other => other,
        })?;
        if matches!(resolved.kind(), Kind::Tags | Kind::Opaque) {
            return Err(Error::InvalidQuery(format!("cannot sort by {}", resolved.describe())));
        }
        keys.push(SortKey { resolved, descending });
    }
    Ok(keys)
}

/// A cursor: the sort values and id of the last row of a page, tied to its query.
#[derive(Serialize, Deserialize)]
struct Cursor {
    /// Fingerprint of collection, filter and sort.
    q: String,
    /// The last row's sort values.
    k: Vec<SqlVal>,
    /// The last row's id.
    id: String,
}

fn fingerprint(collection: &str, query: &Query) -> String {
    let text = format!(
        "{collection}\u{0}{}\u{0}{}",
        query.filter.as_ref().map(Condition::to_string).unwrap_or_default(),
        query.sort.as_deref().unwrap_or("")
    );
    crate::engine::hash::hex(&crate::engine::hash::sha256(text.as_bytes())[..8])
}

fn encode_cursor(cursor: &Cursor) -> String {
    crate::engine::hash::hex(&serde_json::to_vec(cursor).unwrap_or_default())
}

fn decode_cursor(token: &str, expected: &str, keys: usize) -> Result<Cursor> {
    let bad = |why: &str| Error::InvalidQuery(format!("invalid cursor: {why}"));
    if !token.len().is_multiple_of(2) || token.len() > 64 * 1024 {
        return Err(bad("not a cursor this engine issued"));
    }
    let bytes: Option<Vec<u8>> =
        (0..token.len()).step_by(2).map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    let cursor: Cursor =
        bytes.and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(|| bad("not a cursor this engine issued"))?;
    if cursor.q != expected || cursor.k.len() != keys {
        return Err(bad("it belongs to a different query (collection, filter or sort changed)"));
    }
    Ok(cursor)
}

/// The WHERE condition "comes after (k, id)" for the sort keys, with missing values last.
fn after_condition(keys: &[(String, bool)], cursor: &Cursor, sql: &mut Sql) -> String {
    fn build(keys: &[(String, bool)], values: &[SqlVal], id: &str, sql: &mut Sql) -> String {
        let Some(((expr, descending), rest)) = keys.split_first() else {
            let id = sql.param(SqlValue::Text(id.to_string()));
            return format!("r.id > {id}");
        };
        let tail = build(rest, &values[1..], id, sql);
        match &values[0] {
            SqlVal::Null => format!("({expr} IS NULL AND {tail})"),
            value => {
                let v1 = sql.param(value.to_sql());
                let v2 = sql.param(value.to_sql());
                let beyond = if *descending { "<" } else { ">" };
                format!("({expr} {beyond} {v1} OR {expr} IS NULL OR ({expr} = {v2} AND {tail}))")
            }
        }
    }
    build(keys, &cursor.k, &cursor.id, sql)
}

/// A query compiled for one collection.
struct Plan {
    sql: String,
    params: Vec<SqlValue>,
    /// Number of sort key columns selected after the fixed ones.
    keys: usize,
    /// Fields read from value columns (selected after the keys), or `None` when the body is read.
    columns: Option<Vec<FieldDef>>,
    projection: Vec<String>,
}

/// The fields a page returns: those asked for (checked), or the summary fields, or all.
pub(crate) fn projection(c: &Collection, fields: Option<&Vec<String>>) -> Result<Vec<String>> {
    if let Some(fields) = fields {
        if let Some(f) = fields.iter().find(|f| c.schema.field(f).is_none()) {
            return Err(Error::InvalidQuery(format!("unknown field `{f}` in collection `{}`", c.name())));
        }
        return Ok(fields.clone());
    }
    let summary: Vec<String> = c.schema.fields.iter().filter(|f| f.summary).map(|f| f.name.clone()).collect();
    Ok(if summary.is_empty() { c.schema.fields.iter().map(|f| f.name.clone()).collect() } else { summary })
}

/// A filter compiled to an SQL condition over `r` (the record row) and, when the third value
/// is true, `b` (its body, a `cairn_changes` row), with its parameters numbered from `?1`.
pub(crate) fn compile_filter(c: &Collection, filter: &Condition) -> Result<(String, Vec<SqlValue>, bool)> {
    let mut sql = Sql::default();
    let parts = compile_clauses(c, filter, &mut sql)?;
    let condition = if parts.is_empty() { "1".to_string() } else { parts.join(" AND ") };
    Ok((condition, sql.params, sql.needs_body))
}

/// Each clause of `filter` as an SQL condition over `r` (and `b`); a permission clause is
/// "its rule holds, or a grant shares the record".
fn compile_clauses(c: &Collection, filter: &Condition, sql: &mut Sql) -> Result<Vec<String>> {
    let mut parts = Vec::new();
    for clause in filter.clauses()? {
        let rule = clause.expr.map(|expr| compile(c, clause.text, &expr, sql)).transpose()?;
        parts.push(match (rule, clause.or_shared) {
            (Some(rule), None) => rule,
            (rule, Some(who)) => {
                let (collection, user, role) = (
                    sql.param(SqlValue::Text(c.name().to_string())),
                    sql.param(SqlValue::Text(who.user_id.clone())),
                    sql.param(SqlValue::Text(who.role.clone())),
                );
                let shared = crate::data::grants::shared_sql(&collection, &user, &role);
                match rule {
                    Some(rule) => format!("(coalesce({rule}, 0) OR {shared})"),
                    None => format!("({shared})"),
                }
            }
            (None, None) => "1".to_string(),
        });
    }
    Ok(parts)
}

/// Checks a parsed filter against a schema: its fields exist and its values fit them.
pub(crate) fn check_filter(schema: &CollectionSchema, text: &str, expr: &Expr) -> Result<()> {
    let collection = Collection::new(schema.clone(), String::new());
    compile(&collection, text, expr, &mut Sql::default()).map(drop)
}

/// Rows the ordered walk (see [`plan`]) reads per row the page asks for before giving up.
/// Tiny under test, so that property tests often see a walk cut short and the fallback.
const WALK_FACTOR: usize = if cfg!(test) { 2 } else { 50 };
/// No ordered walk is tried when it would read more rows than this.
const MAX_WALK: usize = 200_000;

/// Compiles a query. With `walk`, the page is chosen from the first `walk` live rows in sort
/// order only, read along the first sort key's index (or the primary key): SQLite's planner
/// does not credit `ORDER BY … LIMIT` with stopping early, so for a filter that many rows match
/// it would rather collect every match from another index and sort them all. Rows whose first
/// key is missing sort last, so they are left out of the walk. The walk's page is the right one
/// whenever it is full; `run` falls back to the planner's choice otherwise. `None` is returned
/// when no walk applies (a sort key without a value column, or a cursor past the walkable rows).
fn plan(c: &Collection, query: &Query, count_only: bool, walk: Option<usize>) -> Result<Option<Plan>> {
    if query.limit == 0 || query.limit > MAX_LIMIT {
        return Err(Error::InvalidQuery(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    if query.cursor.is_some() && query.offset.is_some() {
        return Err(Error::InvalidQuery("use a cursor or an offset, not both".into()));
    }
    let mut sql = Sql { row_at_a_time: walk.is_some(), ..Sql::default() };
    let mut conditions = vec!["r.deleted_at IS NULL".to_string()];
    if let Some(filter) = &query.filter {
        conditions.extend(compile_clauses(c, filter, &mut sql)?);
    }
    let table = quote(&c.table);
    if count_only {
        let from = if sql.needs_body {
            format!("{table} r JOIN cairn_changes b ON b.seq = r.seq")
        } else {
            format!("{table} r")
        };
        let text = format!("SELECT count(*) FROM {from} WHERE {}", conditions.join(" AND "));
        return Ok(Some(Plan { sql: text, params: sql.params, keys: 0, columns: None, projection: Vec::new() }));
    }

    let keys = parse_sort(&c.schema, query.sort.as_deref().unwrap_or(""))?;
    let key_exprs: Vec<(String, bool)> = keys.iter().map(|k| (sql.value_expr(&k.resolved), k.descending)).collect();
    let cursor = match &query.cursor {
        Some(token) => Some(decode_cursor(token, &fingerprint(c.name(), query), keys.len())?),
        None => None,
    };
    if let Some(cursor) = &cursor {
        conditions.push(after_condition(&key_exprs, cursor, &mut sql));
    }

    let projection = projection(c, query.fields.as_ref())?;
    // Lazy loading: when every projected field has a value column, the body is not read.
    let column_fields: Option<Vec<FieldDef>> =
        projection.iter().map(|name| c.schema.field(name).filter(|f| f.has_column()).cloned()).collect();
    let mut select = vec!["r.id".to_string(), "r.version".into(), "r.updated_at".into()];
    select.extend(key_exprs.iter().enumerate().map(|(i, (e, _))| format!("{e} AS k{i}")));
    match &column_fields {
        Some(fields) => select.extend(fields.iter().map(|f| format!("r.{}", quote(&value_column(&f.name))))),
        None => select.extend(["r.seq".to_string(), "r.sha256".into()]),
    }
    // ORDER BY the sort keys (missing values last), then the id.
    let order = |keys: &[String], id: &str| -> String {
        let mut order: Vec<String> = key_exprs
            .iter()
            .zip(keys)
            .map(|((_, desc), k)| format!("{k} {} NULLS LAST", if *desc { "DESC" } else { "ASC" }))
            .collect();
        order.push(format!("{id} ASC"));
        order.join(", ")
    };
    let inner_keys: Vec<String> = key_exprs.iter().map(|(e, _)| e.clone()).collect();
    let rows = match walk {
        None => format!("{table} r"),
        Some(_) if keys.iter().any(|k| !k.resolved.has_column()) => return Ok(None),
        Some(n) => {
            let mut bounds = vec!["r.deleted_at IS NULL".to_string()];
            if let Some(((first, descending), _)) = key_exprs.split_first() {
                bounds.push(format!("{first} IS NOT NULL"));
                // Start the walk at the cursor: a range the index can seek to.
                match cursor.as_ref().map(|c| &c.k[0]) {
                    Some(SqlVal::Null) => return Ok(None),
                    Some(value) => {
                        let v = sql.param(value.to_sql());
                        bounds.push(format!("{first} {} {v}", if *descending { "<=" } else { ">=" }));
                    }
                    None => {}
                }
            } else if let Some(cursor) = &cursor {
                let id = sql.param(SqlValue::Text(cursor.id.clone()));
                bounds.push(format!("r.id > {id}"));
            }
            let n = sql.param(SqlValue::Integer(n as i64));
            format!(
                "(SELECT r.* FROM {table} r WHERE {} ORDER BY {} LIMIT {n}) r",
                bounds.join(" AND "),
                order(&inner_keys, "r.id")
            )
        }
    };
    // The body is joined here only when the filter or a sort key reads it.
    let from = if sql.needs_body { format!("{rows} JOIN cairn_changes b ON b.seq = r.seq") } else { rows };
    let limit = sql.param(SqlValue::Integer(query.limit as i64));
    let offset = sql.param(SqlValue::Integer(query.offset.unwrap_or(0) as i64));
    let page = format!(
        "SELECT {} FROM {from} WHERE {} ORDER BY {} LIMIT {limit} OFFSET {offset}",
        select.join(", "),
        conditions.join(" AND "),
        order(&inner_keys, "r.id")
    );
    let text = match &column_fields {
        Some(_) => page,
        // Bodies are read for the page's rows only, after the page is chosen.
        None => {
            let aliases: Vec<String> = (0..key_exprs.len()).map(|i| format!("p.k{i}")).collect();
            let mut outer = vec!["p.id".to_string(), "p.version".into(), "p.updated_at".into()];
            outer.extend(aliases.iter().cloned());
            outer.extend(["b.after".to_string(), "p.sha256".into()]);
            format!(
                "SELECT {} FROM ({page}) p CROSS JOIN cairn_changes b ON b.seq = p.seq ORDER BY {}",
                outer.join(", "),
                order(&aliases, "p.id")
            )
        }
    };
    Ok(Some(Plan { sql: text, params: sql.params, keys: keys.len(), columns: column_fields, projection }))
}

/// The ordered walk worth trying for a query, if any: a filter narrows the rows and a page
/// small enough that reading `WALK_FACTOR` rows for each of its rows is cheap.
fn walk_length(query: &Query) -> Option<usize> {
    let wanted = query.limit.saturating_add(query.offset.unwrap_or(0));
    let n = wanted.saturating_mul(WALK_FACTOR);
    (query.filter.as_ref().is_some_and(|f| !f.is_empty()) && n <= MAX_WALK).then_some(n)
}

/// The plans `run` tries, in order (for `explain`).
fn plans(c: &Collection, query: &Query) -> Result<Vec<Plan>> {
    let mut plans = Vec::new();
    if let Some(n) = walk_length(query) {
        plans.extend(plan(c, query, false, Some(n))?);
    }
    plans.extend(plan(c, query, false, None)?);
    Ok(plans)
}

fn run(conn: &Connection, c: &Collection, query: &Query) -> Result<Page> {
    // The planner's plan is compiled only when the walk does not fill the page.
    if let Some(walk) = walk_length(query).map(|n| plan(c, query, false, Some(n))).transpose()?.flatten() {
        let page = run_plan(conn, c, query, &walk)?;
        if page.rows.len() == query.limit {
            return Ok(page);
        }
    }
    let own = plan(c, query, false, None)?.expect("without a walk there is always a plan");
    run_plan(conn, c, query, &own)
}

fn run_plan(conn: &Connection, c: &Collection, query: &Query, plan: &Plan) -> Result<Page> {
    let mut stmt = conn.prepare_cached(&plan.sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(plan.params.iter()))?;
    let mut out = Vec::new();
    let mut last_keys = Vec::new();
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let keys: Vec<SqlVal> = (0..plan.keys)
            .map(|i| crate::engine::sql::value_at(row, 3 + i).map(SqlVal::from_sql))
            .collect::<rusqlite::Result<_>>()?;
        let base = 3 + plan.keys;
        let mut fields = Map::new();
        match &plan.columns {
            Some(columns) => {
                for (i, f) in columns.iter().enumerate() {
                    if let Some(v) = index::column_json(f, crate::engine::sql::value_at(row, base + i)?) {
                        fields.insert(f.name.clone(), v);
                    }
                }
            }
            None => {
                let body: Option<Vec<u8>> = row.get(base)?;
                let sha: Vec<u8> = row.get(base + 1)?;
                let mut all =
                    crate::data::record::verified_body(conn, c.name(), &id, body.as_deref().unwrap_or_default(), &sha)?;
                for name in &plan.projection {
                    if let Some(v) = all.remove(name) {
                        fields.insert(name.clone(), v);
                    }
                }
            }
        }
        out.push(Row { version: row.get(1)?, updated_at: Timestamp(row.get(2)?), fields, id, sealed: Vec::new() });
        last_keys.push(keys);
    }
    let next_cursor = match (out.last(), last_keys.pop()) {
        (Some(last), Some(k)) if out.len() == query.limit && query.offset.is_none() => {
            Some(encode_cursor(&Cursor { q: fingerprint(c.name(), query), k, id: last.id.clone() }))
        }
        _ => None,
    };
    Ok(Page { rows: out, next_cursor })
}

/// A filter checked against a collection's schema and evaluated in Rust, with the same
/// semantics as queries: for deciding in-process whether a record (or a change's `after`
/// body) is of interest, e.g. to a subscriber.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    schema: CollectionSchema,
    expr: Expr,
}

impl Filter {
    /// Parses `text` and checks it against `schema`.
    pub(crate) fn new(schema: &CollectionSchema, text: &str) -> Result<Filter> {
        let expr = parse_filter(text)?;
        let collection = Collection::new(schema.clone(), String::new());
        compile(&collection, text, &expr, &mut Sql::default())?;
        Ok(Filter { schema: schema.clone(), expr })
    }

    /// True when a record body matches.
    pub(crate) fn matches(&self, body: &Map<String, Value>) -> bool {
        eval::matches(&self.schema, &self.expr, body)
    }
}

impl Store {
    /// Runs a query; see [`Query`] and `docs/query.md`.
    pub fn query(&self, collection: &str, query: &Query) -> Result<Page> {
        let conn = self.reader()?;
        let c = collection::load(&conn, collection)?;
        let mut page = run(&conn, &c, query)?;
        for row in &mut page.rows {
            row.sealed = self.open_body(&conn, &c.schema, &row.id, &mut row.fields)?;
        }
        Ok(page)
    }

    /// The exact number of live records matching `filter` (all of them when `None`).
    pub fn count(&self, collection: &str, filter: Option<&str>) -> Result<u64> {
        self.count_where(collection, filter.map(Condition::from))
    }

    /// How many live records match `filter` (a condition, which may hold permissions).
    pub(crate) fn count_where(&self, collection: &str, filter: Option<Condition>) -> Result<u64> {
        let conn = self.reader()?;
        let c = collection::load(&conn, collection)?;
        let query = Query { filter, ..Query::default() };
        let plan = plan(&c, &query, true, None)?.expect("a count always has a plan");
        let count =
            conn.prepare_cached(&plan.sql)?.query_row(rusqlite::params_from_iter(plan.params.iter()), |r| r.get(0))?;
        Ok(count)
    }

    /// How SQLite will run a query: one line per step, naming the indexes used or `SCAN`.
    pub fn explain(&self, collection: &str, query: &Query) -> Result<Vec<String>> {
        let conn = self.reader()?;
        let c = collection::load(&conn, collection)?;
        let plans = plans(&c, query)?;
        let mut lines = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            if plans.len() > 1 {
                lines.push(match i {
                    0 => "-- first: an ordered walk of the first rows in sort order".to_string(),
                    _ => "-- then, when that page is not full:".to_string(),
                });
            }
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", plan.sql))?;
            let rows = stmt.query_map(rusqlite::params_from_iter(plan.params.iter()), |r| r.get::<_, String>(3))?;
            for row in rows {
                lines.push(row?);
            }
        }
        Ok(lines)
    }
}
