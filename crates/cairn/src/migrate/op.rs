//! The operations a migration is made of, what each does to the schemas, and the declared
//! type conversions.
//!
//! Every operation is first applied to schemas held in memory: that is how a set of
//! migrations is checked before anything runs (unknown collections and fields, conversions
//! that do not exist between two types, a `down` that does not give back the schema its `up`
//! started from). The store then runs the same function to learn the schema it must set, so
//! the check and the run cannot disagree.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::expr::ValueExpr;
use crate::data::schema::{CollectionSchema, FieldDef, FieldType};

/// The schemas of a store, by collection name.
pub(crate) type Schemas = BTreeMap<String, CollectionSchema>;

/// One operation of a migration, as written in a migration file (`op = "…"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Op {
    /// Creates a collection. In a `down` whose `up` dropped it, its records come back from
    /// the change log as they were.
    CreateCollection { schema: CollectionSchema },
    /// Drops a collection (exported into `quarantine/` first, like `collection drop`).
    DropCollection { collection: String },
    /// Adds a field at `position` (0-based; default: last). Records get its default, if it
    /// has one; a required field without one fails on the first record without a value. In a
    /// `down` whose `up` removed the field, each record gets its value back.
    AddField {
        collection: String,
        field: FieldDef,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<usize>,
    },
    /// Removes a field and its values.
    RemoveField { collection: String, field: String },
    /// Renames a field; values move with it.
    RenameField { collection: String, from: String, to: String },
    /// Changes a field's type, converting each value as `convert` says. `target` names the
    /// collection when the new type is `relation`. In a `down` whose `up` changed the same
    /// field, a value the `up` converted and nobody changed since gets its original back.
    ChangeType {
        collection: String,
        field: String,
        to: FieldType,
        convert: Conversion,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    /// Indexes a field (as `indexed = true`).
    AddIndex { collection: String, field: String },
    /// Drops a field's index.
    DropIndex { collection: String, field: String },
    /// Adds a text or tags field to full-text search.
    AddFulltext { collection: String, field: String },
    /// Takes a field out of full-text search.
    DropFulltext { collection: String, field: String },
    /// Turns a flag on.
    SetFlag { collection: String, field: String, flag: Flag },
    /// Turns a flag off.
    UnsetFlag { collection: String, field: String, flag: Flag },
    /// Rewrites records: for those matching `filter` (all when absent), each field of `set`
    /// gets its expression's value (evaluated on the record as it was; `null` removes the
    /// field) and each field of `unset` is removed.
    UpdateRecords {
        collection: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        set: BTreeMap<String, ValueExpr>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unset: Vec<String>,
    },
}

/// A flag of a field that `set_flag` and `unset_flag` change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    Required,
    Unique,
    Indexed,
    Fulltext,
    Pii,
    Summary,
}

/// How `change_type` turns a value of the old type into one of the new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Conversion {
    /// Keep the value as it is; it must already be valid for the new type (integer → number,
    /// number → integer when whole, text ↔ relation/datetime, anything ↔ json).
    Cast,
    /// Text → integer, number, bool (`true`/`false`), datetime or json, by parsing it.
    Parse,
    /// Integer, number, bool, datetime, relation, json or tags → text (json and tags as JSON).
    Format,
    /// Number → integer, to the nearest (halves away from zero).
    Round,
    /// Number → integer, dropping the fraction.
    Truncate,
    /// Text → tags: split at commas, trimmed, empty and repeated ones dropped.
    Split,
    /// Tags → text, joined with ", ".
    Join,
    /// Text → tags and attachment → attachments: a list of the one value.
    Wrap,
    /// Tags → text and attachments → attachment: the single element (an empty list removes
    /// the value; more than one is an error).
    Unwrap,
}

impl Flag {
    fn name(self) -> &'static str {
        match self {
            Flag::Required => "required",
            Flag::Unique => "unique",
            Flag::Indexed => "indexed",
            Flag::Fulltext => "fulltext",
            Flag::Pii => "pii",
            Flag::Summary => "summary",
        }
    }

    fn slot(self, f: &mut FieldDef) -> &mut bool {
        match self {
            Flag::Required => &mut f.required,
            Flag::Unique => &mut f.unique,
            Flag::Indexed => &mut f.indexed,
            Flag::Fulltext => &mut f.fulltext,
            Flag::Pii => &mut f.pii,
            Flag::Summary => &mut f.summary,
        }
    }
}

impl Conversion {
    fn name(self) -> &'static str {
        match self {
            Conversion::Cast => "cast",
            Conversion::Parse => "parse",
            Conversion::Format => "format",
            Conversion::Round => "round",
            Conversion::Truncate => "truncate",
            Conversion::Split => "split",
            Conversion::Join => "join",
            Conversion::Wrap => "wrap",
            Conversion::Unwrap => "unwrap",
        }
    }

    /// Whether this conversion exists from `from` to `to`.
    pub(crate) fn check(self, from: FieldType, to: FieldType) -> Result<(), String> {
        use FieldType::*;
        let ok = match self {
            Conversion::Cast => matches!(
                (from, to),
                (Integer, Number)
                    | (Number, Integer)
                    | (Text, Relation | Datetime)
                    | (Relation | Datetime, Text)
                    | (Json, _)
                    | (_, Json)
            ),
            Conversion::Parse => from == Text && matches!(to, Integer | Number | Bool | Datetime | Json),
            Conversion::Format => {
                to == Text && matches!(from, Integer | Number | Bool | Datetime | Relation | Json | Tags)
            }
            Conversion::Round | Conversion::Truncate => (from, to) == (Number, Integer),
            Conversion::Split => (from, to) == (Text, Tags),
            Conversion::Join => (from, to) == (Tags, Text),
            Conversion::Wrap => matches!((from, to), (Text, Tags) | (Attachment, Attachments)),
            Conversion::Unwrap => matches!((from, to), (Tags, Text) | (Attachments, Attachment)),
        };
        if ok {
            return Ok(());
        }
        let hint = match (from, to) {
            (Text, Integer | Number | Bool) => "; use convert = \"parse\"",
            (_, Text) => "; use convert = \"format\"",
            (Number, Integer) => "; use convert = \"round\" or \"truncate\"",
            _ => "",
        };
        Err(format!("there is no `{}` conversion from {} to {}{hint}", self.name(), from.as_str(), to.as_str()))
    }

    /// Converts one value to type `to`; `Ok(None)` removes it.
    pub(crate) fn apply(self, value: &Value, to: FieldType) -> Result<Option<Value>, String> {
        let text = |v: &Value| -> Result<String, String> {
            match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("expected text, got {}", crate::data::schema::json_kind(other))),
            }
        };
        let number = |v: &Value| -> Result<f64, String> {
            v.as_f64().ok_or_else(|| format!("expected a number, got {}", crate::data::schema::json_kind(v)))
        };
        let whole = |x: f64| -> Result<Option<Value>, String> {
            // i64::MAX is not exactly representable; stay below 2^63.
            if x.is_finite() && x.abs() < 9.2e18 {
                Ok(Some(Value::from(x as i64)))
            } else {
                Err(format!("{x} does not fit an integer"))
            }
        };
        match self {
            Conversion::Cast => Ok(Some(value.clone())),
            Conversion::Parse => {
                let s = text(value)?;
                let t = s.trim();
                let fail = |what: &str| format!("cannot parse {s:?} as {what}");
                match to {
                    FieldType::Integer => {
                        t.parse::<i64>().map(|i| Some(Value::from(i))).map_err(|_| fail("an integer"))
                    }
                    FieldType::Number => match t.parse::<i64>() {
                        Ok(i) => Ok(Some(Value::from(i))),
                        Err(_) => t
                            .parse::<f64>()
                            .ok()
                            .and_then(serde_json::Number::from_f64)
                            .map(|n| Some(Value::Number(n)))
                            .ok_or_else(|| fail("a number")),
                    },
                    FieldType::Bool => match t {
                        "true" => Ok(Some(Value::Bool(true))),
                        "false" => Ok(Some(Value::Bool(false))),
                        _ => Err(fail("true or false")),
                    },
                    FieldType::Json => serde_json::from_str(t).map(Some).map_err(|_| fail("JSON")),
                    // Date-times stay text; the new type's validation reads and normalises them.
                    _ => Ok(Some(Value::String(t.to_string()))),
                }
            }
            Conversion::Format => Ok(Some(Value::String(match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => String::from_utf8(crate::engine::canonical::canonical_json(other)).unwrap_or_default(),
            }))),
            Conversion::Round => whole(number(value)?.round()),
            Conversion::Truncate => whole(number(value)?.trunc()),
            Conversion::Split => {
                let s = text(value)?;
                let mut tags: Vec<Value> = Vec::new();
                for tag in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !tags.iter().any(|t| t == tag) {
                        tags.push(Value::String(tag.to_string()));
                    }
                }
                Ok((!tags.is_empty()).then_some(Value::Array(tags)))
            }
            Conversion::Join => match value {
                Value::Array(items) => {
                    let parts: Result<Vec<String>, String> = items.iter().map(text).collect();
                    Ok(Some(Value::String(parts?.join(", "))))
                }
                other => Err(format!("expected a list of tags, got {}", crate::data::schema::json_kind(other))),
            },
            Conversion::Wrap => Ok(Some(Value::Array(vec![value.clone()]))),
            Conversion::Unwrap => match value {
                Value::Array(items) if items.len() <= 1 => Ok(items.first().cloned()),
                Value::Array(items) => Err(format!("a list of {} values cannot become one", items.len())),
                other => Err(format!("expected a list, got {}", crate::data::schema::json_kind(other))),
            },
        }
    }
}

impl Op {
    /// The collection the operation works on.
    pub fn collection(&self) -> &str {
        match self {
            Op::CreateCollection { schema } => &schema.name,
            Op::DropCollection { collection }
            | Op::AddField { collection, .. }
            | Op::RemoveField { collection, .. }
            | Op::RenameField { collection, .. }
            | Op::ChangeType { collection, .. }
            | Op::AddIndex { collection, .. }
            | Op::DropIndex { collection, .. }
            | Op::AddFulltext { collection, .. }
            | Op::DropFulltext { collection, .. }
            | Op::SetFlag { collection, .. }
            | Op::UnsetFlag { collection, .. }
            | Op::UpdateRecords { collection, .. } => collection,
        }
    }

    /// One line saying what the operation does, for plans and errors.
    pub fn describe(&self) -> String {
        let c = self.collection();
        match self {
            Op::CreateCollection { schema } => format!("create_collection {c} ({} fields)", schema.fields.len()),
            Op::DropCollection { .. } => format!("drop_collection {c}"),
            Op::AddField { field, .. } => format!("add_field {c}.{} ({})", field.name, field.kind.as_str()),
            Op::RemoveField { field, .. } => format!("remove_field {c}.{field}"),
            Op::RenameField { from, to, .. } => format!("rename_field {c}.{from} to {to}"),
            Op::ChangeType { field, to, convert, .. } => {
                format!("change_type {c}.{field} to {} ({})", to.as_str(), convert.name())
            }
            Op::AddIndex { field, .. } => format!("add_index {c}.{field}"),
            Op::DropIndex { field, .. } => format!("drop_index {c}.{field}"),
            Op::AddFulltext { field, .. } => format!("add_fulltext {c}.{field}"),
            Op::DropFulltext { field, .. } => format!("drop_fulltext {c}.{field}"),
            Op::SetFlag { field, flag, .. } => format!("set_flag {c}.{field} {}", flag.name()),
            Op::UnsetFlag { field, flag, .. } => format!("unset_flag {c}.{field} {}", flag.name()),
            Op::UpdateRecords { filter, set, unset, .. } => {
                let mut fields: Vec<&str> = set.keys().map(String::as_str).collect();
                fields.extend(unset.iter().map(String::as_str));
                let filter = filter.as_deref().map(|f| format!(" where {f}")).unwrap_or_default();
                format!("update_records {c} ({}){filter}", fields.join(", "))
            }
        }
    }

    /// Applies the operation to `schemas`, or says why it cannot apply.
    pub(crate) fn apply_schema(&self, schemas: &mut Schemas) -> Result<(), String> {
        let name = self.collection().to_string();
        if let Op::CreateCollection { schema } = self {
            if schemas.contains_key(&name) {
                return Err(format!("collection `{name}` already exists"));
            }
            schema.validate(&|other| schemas.contains_key(other)).map_err(|e| e.to_string())?;
            schemas.insert(name, schema.clone());
            return Ok(());
        }
        let Some(schema) = schemas.get(&name) else {
            return Err(format!("unknown collection `{name}`"));
        };
        let mut schema = schema.clone();
        let position = |schema: &CollectionSchema, field: &str| {
            schema.fields.iter().position(|f| f.name == field).ok_or_else(|| format!("unknown field `{name}.{field}`"))
        };
        match self {
            Op::CreateCollection { .. } => unreachable!("handled above"),
            Op::DropCollection { .. } => {
                let users: Vec<&str> = schemas
                    .values()
                    .filter(|s| s.name != name)
                    .filter(|s| s.fields.iter().any(|f| f.collection.as_deref() == Some(name.as_str())))
                    .map(|s| s.name.as_str())
                    .collect();
                if !users.is_empty() {
                    return Err(format!("collection `{name}` is the target of relations in {}", users.join(", ")));
                }
                schemas.remove(&name);
                return Ok(());
            }
            Op::AddField { field, position: at, .. } => {
                if schema.field(&field.name).is_some() {
                    return Err(format!("field `{name}.{}` already exists", field.name));
                }
                let at = at.unwrap_or(schema.fields.len());
                if at > schema.fields.len() {
                    return Err(format!("position {at} is past the last field ({} fields)", schema.fields.len()));
                }
                schema.fields.insert(at, field.clone());
            }
            Op::RemoveField { field, .. } => {
                let i = position(&schema, field)?;
                schema.fields.remove(i);
            }
            Op::RenameField { from, to, .. } => {
                let i = position(&schema, from)?;
                if schema.field(to).is_some() {
                    return Err(format!("field `{name}.{to}` already exists"));
                }
                schema.fields[i].name = to.clone();
            }
            Op::ChangeType { field, to, convert, target, .. } => {
                let i = position(&schema, field)?;
                let f = &mut schema.fields[i];
                if f.encrypted {
                    return Err(format!(
                        "field `{name}.{field}` is encrypted: its stored values are sealed and cannot be converted"
                    ));
                }
                if f.kind == *to {
                    return Err(format!("field `{name}.{field}` is already {}", to.as_str()));
                }
                convert.check(f.kind, *to)?;
                match (to, target) {
                    (FieldType::Relation, None) => return Err("a change to relation needs `target`".into()),
                    (FieldType::Relation, Some(_)) => {}
                    (_, Some(_)) => return Err("`target` is only for a change to relation".into()),
                    (_, None) => {}
                }
                if let Some(default) = &f.default {
                    f.default = convert.apply(default, *to).map_err(|e| format!("the default of `{field}`: {e}"))?;
                }
                f.kind = *to;
                f.collection = target.clone();
            }
            Op::AddIndex { field, .. } => set_flag(&mut schema, field, Flag::Indexed, true)?,
            Op::DropIndex { field, .. } => set_flag(&mut schema, field, Flag::Indexed, false)?,
            Op::AddFulltext { field, .. } => set_flag(&mut schema, field, Flag::Fulltext, true)?,
            Op::DropFulltext { field, .. } => set_flag(&mut schema, field, Flag::Fulltext, false)?,
            Op::SetFlag { field, flag, .. } => set_flag(&mut schema, field, *flag, true)?,
            Op::UnsetFlag { field, flag, .. } => set_flag(&mut schema, field, *flag, false)?,
            Op::UpdateRecords { filter, set, unset, .. } => {
                for field in set.keys().chain(unset) {
                    position(&schema, field)?;
                }
                let readable = |field: &str| match schema.field(field) {
                    None => Err(format!("unknown field `{field}`")),
                    Some(f) if f.encrypted => Err(format!(
                        "field `{name}.{field}` is encrypted: its stored values are sealed and cannot be computed with"
                    )),
                    Some(_) => Ok(()),
                };
                for field in set.keys() {
                    readable(field).map_err(|e| format!("in `set`: {e}"))?;
                }
                for expr in set.values() {
                    expr.check(&readable).map_err(|e| format!("in `set`: {e}"))?;
                }
                if let Some(filter) = filter {
                    crate::data::query::Filter::new(&schema, filter).map_err(|e| format!("filter: {e}"))?;
                }
                if set.is_empty() && unset.is_empty() {
                    return Err("update_records needs `set` or `unset`".into());
                }
            }
        }
        schema.validate(&|other| schemas.contains_key(other)).map_err(|e| e.to_string())?;
        schemas.insert(name, schema);
        Ok(())
    }
}

fn set_flag(schema: &mut CollectionSchema, field: &str, flag: Flag, on: bool) -> Result<(), String> {
    let collection = schema.name.clone();
    let Some(f) = schema.fields.iter_mut().find(|f| f.name == field) else {
        return Err(format!("unknown field `{collection}.{field}`"));
    };
    let slot = flag.slot(f);
    if *slot == on {
        let state = if on { "already" } else { "not" };
        return Err(format!("field `{collection}.{field}` is {state} {}", flag.name()));
    }
    *slot = on;
    Ok(())
}

/// The body with `field`'s value replaced (`None` removes it).
pub(crate) fn with_value(body: &Map<String, Value>, field: &str, value: Option<Value>) -> Map<String, Value> {
    let mut out = body.clone();
    match value {
        Some(v) if !v.is_null() => {
            out.insert(field.to_string(), v);
        }
        _ => {
            out.remove(field);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conversions_exist_only_where_they_make_sense() {
        use FieldType::*;
        assert!(Conversion::Parse.check(Text, Integer).is_ok());
        assert!(Conversion::Cast.check(Integer, Number).is_ok());
        let e = Conversion::Cast.check(Text, Integer).expect_err("no cast from text");
        assert!(e.contains("parse"), "{e}");
        assert!(Conversion::Round.check(Text, Integer).is_err());
        assert!(Conversion::Split.check(Text, Tags).is_ok());
    }

    #[test]
    fn values_convert_or_say_why_not() {
        use FieldType::*;
        assert_eq!(Conversion::Parse.apply(&json!(" 42 "), Integer), Ok(Some(json!(42))));
        assert_eq!(Conversion::Parse.apply(&json!("2.5"), Number), Ok(Some(json!(2.5))));
        assert_eq!(Conversion::Parse.apply(&json!("true"), Bool), Ok(Some(json!(true))));
        assert!(Conversion::Parse.apply(&json!("2.5"), Integer).expect_err("not whole").contains("\"2.5\""));
        assert!(Conversion::Parse.apply(&json!("yes"), Bool).is_err());
        assert_eq!(Conversion::Parse.apply(&json!("[1]"), Json), Ok(Some(json!([1]))));
        assert_eq!(Conversion::Format.apply(&json!(7), Text), Ok(Some(json!("7"))));
        assert_eq!(Conversion::Round.apply(&json!(2.5), Integer), Ok(Some(json!(3))));
        assert_eq!(Conversion::Truncate.apply(&json!(-2.7), Integer), Ok(Some(json!(-2))));
        assert!(Conversion::Round.apply(&json!(1e300), Integer).is_err());
        assert_eq!(Conversion::Split.apply(&json!("a, b,,a"), Tags), Ok(Some(json!(["a", "b"]))));
        assert_eq!(Conversion::Split.apply(&json!(" , "), Tags), Ok(None));
        assert_eq!(Conversion::Join.apply(&json!(["a", "b"]), Text), Ok(Some(json!("a, b"))));
        assert_eq!(Conversion::Unwrap.apply(&json!([]), Text), Ok(None));
        assert!(Conversion::Unwrap.apply(&json!(["a", "b"]), Text).is_err());
    }

    #[test]
    fn schema_effects_check_what_they_touch() {
        let notes: CollectionSchema = serde_json::from_value(json!({"name": "notes", "fields": [
            {"name": "title", "type": "text"}, {"name": "n", "type": "text"}]}))
        .expect("schema");
        let mut schemas = Schemas::from([("notes".to_string(), notes)]);
        let op = |v: Value| serde_json::from_value::<Op>(v).expect("op");
        let bad = [
            json!({"op": "remove_field", "collection": "notes", "field": "ghost"}),
            json!({"op": "remove_field", "collection": "ghost", "field": "title"}),
            json!({"op": "rename_field", "collection": "notes", "from": "title", "to": "n"}),
            json!({"op": "change_type", "collection": "notes", "field": "n", "to": "integer", "convert": "cast"}),
            json!({"op": "drop_index", "collection": "notes", "field": "n"}),
            json!({"op": "add_field", "collection": "notes", "field": {"name": "x", "type": "text"}, "position": 9}),
            json!({"op": "update_records", "collection": "notes", "set": {"title": {"field": "ghost"}}}),
        ];
        for case in bad {
            assert!(op(case.clone()).apply_schema(&mut schemas).is_err(), "{case}");
        }
        op(json!({"op": "change_type", "collection": "notes", "field": "n", "to": "integer", "convert": "parse"}))
            .apply_schema(&mut schemas)
            .expect("applies");
        assert_eq!(schemas["notes"].fields[1].kind, FieldType::Integer);
        let unknown = serde_json::from_value::<Op>(json!({"op": "explode", "collection": "notes"}));
        assert!(unknown.expect_err("unknown op").to_string().contains("explode"));
    }
}
