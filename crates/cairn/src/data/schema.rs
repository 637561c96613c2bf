//! Collection schemas (CORE-1): typed fields, required/default/unique, and flags.
//!
//! A schema is data (JSON or TOML), validated once when a collection is created or updated.
//! Records are validated and normalised against it on every write: defaults filled in, `null`
//! values dropped (absent and null mean the same), date-times rewritten to canonical UTC.
//! Normalising on write means equal records have equal bytes, so checksums and unique
//! indexes see one form per value.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::data::rules::Rules;

use crate::data::ids::validate_id;
use crate::engine::sql::is_valid_name;
use crate::engine::timestamp::{format_datetime, parse_datetime};
use crate::error::{Error, Result};

/// The definition of a collection: its name and its fields, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSchema {
    /// Collection name: `[a-z][a-z0-9_]*`, at most 48 bytes.
    pub name: String,
    /// Free text shown by `collection show`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The fields a record may hold. Records with other fields are refused.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    /// Who may do what with the records through the server (none: admins only).
    #[serde(default, skip_serializing_if = "Rules::is_empty")]
    pub rules: Rules,
}

/// One field of a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// Field name: `[a-z][a-z0-9_]*`, at most 48 bytes; `id` is reserved.
    pub name: String,
    /// The value type.
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// For `relation` fields: the collection the related ids belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// A record must have a (non-null) value.
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    /// Value used when a written record does not have the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// No two live records may hold the same value.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unique: bool,
    /// Kept in an index for queries.
    #[serde(default, skip_serializing_if = "is_false")]
    pub indexed: bool,
    /// Included in full-text search.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fulltext: bool,
    /// Stored encrypted (cannot be indexed, unique or full-text).
    #[serde(default, skip_serializing_if = "is_false")]
    pub encrypted: bool,
    /// Personal data, redacted by exports that ask for it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pii: bool,
    /// Shown in lists (the default projection).
    #[serde(default, skip_serializing_if = "is_false")]
    pub summary: bool,
    /// Free text shown by `collection show`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The type of a field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FieldType {
    /// A JSON string.
    Text,
    /// A JSON integer within the signed 64-bit range.
    Integer,
    /// Any finite JSON number.
    Number,
    /// `true` or `false`.
    Bool,
    /// An RFC 3339 date-time or `YYYY-MM-DD` date, stored as canonical UTC text.
    Datetime,
    /// Any JSON value.
    Json,
    /// A list of distinct, non-empty strings.
    Tags,
    /// The id of a record in the collection named by `collection`.
    Relation,
    /// One attachment: `{"hash": sha256 hex, "name", "mime", "size"}`.
    Attachment,
    /// A list of attachments.
    Attachments,
}

impl FieldType {
    /// The type's name as written in schema files.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Bool => "bool",
            FieldType::Datetime => "datetime",
            FieldType::Json => "json",
            FieldType::Tags => "tags",
            FieldType::Relation => "relation",
            FieldType::Attachment => "attachment",
            FieldType::Attachments => "attachments",
        }
    }

    /// True for the types whose values fit one SQL column (and can be unique or indexed
    /// there).
    pub(crate) fn scalar(self) -> bool {
        matches!(
            self,
            FieldType::Text
                | FieldType::Integer
                | FieldType::Number
                | FieldType::Bool
                | FieldType::Datetime
                | FieldType::Relation
        )
    }
}

impl CollectionSchema {
    /// The full-text fields, in order.
    pub(crate) fn fulltext_fields(&self) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| f.fulltext && matches!(f.kind, FieldType::Text | FieldType::Tags))
            .map(|f| f.name.clone())
            .collect()
    }
}

impl FieldDef {
    /// True when the field has a value column (indexed or unique scalars).
    pub(crate) fn has_column(&self) -> bool {
        (self.indexed || self.unique) && self.kind.scalar()
    }

    /// True when the field's tags are kept in the tags table.
    pub(crate) fn has_tag_index(&self) -> bool {
        self.indexed && self.kind == FieldType::Tags
    }

    /// A field of the given name and type with every flag off.
    pub fn new(name: impl Into<String>, kind: FieldType) -> Self {
        FieldDef {
            name: name.into(),
            kind,
            collection: None,
            required: false,
            default: None,
            unique: false,
            indexed: false,
            fulltext: false,
            encrypted: false,
            pii: false,
            summary: false,
            description: String::new(),
        }
    }
}

impl CollectionSchema {
    /// Reads a schema from JSON text; `source_name` names the input in errors.
    pub fn from_json(text: &str, source_name: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::invalid_input(source_name, e.to_string()))
    }

    /// Reads a schema from TOML text; `source_name` names the input in errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::invalid_input(source_name, e.to_string().trim_end().to_string()))
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Checks the schema on its own. `collection_exists` answers whether a relation target
    /// exists (the schema's own name always does).
    pub fn validate(&self, collection_exists: &dyn Fn(&str) -> bool) -> Result<()> {
        let err = |field: Option<&str>, reason: String| Error::InvalidSchema {
            collection: self.name.clone(),
            field: field.map(str::to_string),
            reason,
        };
        if !is_valid_name(&self.name) {
            return Err(err(
                None,
                "collection names are 1-48 characters of a-z, 0-9 and _, starting with a letter".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.fields {
            let name = Some(f.name.as_str());
            if !is_valid_name(&f.name) {
                return Err(err(
                    name,
                    "field names are 1-48 characters of a-z, 0-9 and _, starting with a letter".into(),
                ));
            }
            if f.name == "id" {
                return Err(err(name, "`id` is reserved for the record id".into()));
            }
            if !seen.insert(f.name.as_str()) {
                return Err(err(name, "field defined twice".into()));
            }
            match (f.kind, &f.collection) {
                (FieldType::Relation, None) => return Err(err(name, "a relation needs `collection`".into())),
                (FieldType::Relation, Some(target)) => {
                    if target != &self.name && !collection_exists(target) {
                        return Err(err(name, format!("relation target `{target}` does not exist")));
                    }
                }
                (_, Some(_)) => return Err(err(name, "`collection` is only allowed on relation fields".into())),
                (_, None) => {}
            }
            if f.unique && !f.kind.scalar() {
                return Err(err(name, format!("a {} field cannot be unique", f.kind.as_str())));
            }
            if f.indexed && matches!(f.kind, FieldType::Json | FieldType::Attachment | FieldType::Attachments) {
                return Err(err(name, format!("a {} field cannot be indexed", f.kind.as_str())));
            }
            if f.fulltext && !matches!(f.kind, FieldType::Text | FieldType::Tags) {
                return Err(err(name, "only text and tags fields can be full-text indexed".into()));
            }
            if f.encrypted && (f.indexed || f.unique || f.fulltext) {
                return Err(err(
                    name,
                    "an encrypted field cannot be indexed, unique or full-text: its stored value is ciphertext".into(),
                ));
            }
            if f.encrypted
                && matches!(
                    f.kind,
                    FieldType::Tags | FieldType::Relation | FieldType::Attachment | FieldType::Attachments
                )
            {
                return Err(err(
                    name,
                    format!(
                        "a {} field cannot be encrypted: cairn reads its values to keep links and counts",
                        f.kind.as_str()
                    ),
                ));
            }
            if f.encrypted && f.default.is_some() {
                return Err(err(name, "an encrypted field cannot have a default".into()));
            }
            if let Some(default) = &f.default {
                if default.is_null() {
                    return Err(err(name, "a default cannot be null (leave it out instead)".into()));
                }
                if f.unique {
                    return Err(err(name, "a unique field cannot have a default".into()));
                }
                check_value(f, default).map_err(|reason| err(name, format!("default: {reason}")))?;
            }
        }
        self.validate_rules().map_err(|reason| err(None, reason))
    }

    /// Checks that the rules' owner, if any, is an unencrypted text field. (That each rule
    /// is a filter over the schema is checked where schemas are saved: `collections.rs`.)
    fn validate_rules(&self) -> std::result::Result<(), String> {
        if let Some(owner) = &self.rules.owner {
            let field = self.fields.iter().find(|f| &f.name == owner);
            if !field.is_some_and(|f| f.kind == FieldType::Text && !f.encrypted) {
                return Err(format!(
                    "rules: the owner field `{owner}` must be an unencrypted text field of the schema"
                ));
            }
        }
        Ok(())
    }

    /// Validates a record body and returns its normalised form.
    ///
    /// `id` is only used in error messages. Values of encrypted fields are checked like any
    /// other: this is the plaintext form callers write.
    pub fn normalize(&self, id: Option<&str>, body: Value) -> Result<Map<String, Value>> {
        self.normalize_as(id, body, false)
    }

    /// [`CollectionSchema::normalize`] for a body as stored: an encrypted field may hold its
    /// sealed form (see `keys.rs`), which is kept as it is.
    pub(crate) fn normalize_stored(&self, id: Option<&str>, body: Value) -> Result<Map<String, Value>> {
        self.normalize_as(id, body, true)
    }

    fn normalize_as(&self, id: Option<&str>, body: Value, sealed_ok: bool) -> Result<Map<String, Value>> {
        let err = |field: Option<&str>, reason: String| Error::Validation {
            collection: self.name.clone(),
            id: id.map(str::to_string),
            field: field.map(str::to_string),
            reason,
        };
        let Value::Object(mut body) = body else {
            return Err(err(None, format!("a record body must be a JSON object, got {}", json_kind(&body))));
        };
        if let Some(key) = body.keys().find(|k| self.field(k).is_none()) {
            let reason = if key == "id" { "the id is not part of the body" } else { "unknown field" };
            return Err(err(Some(key), reason.to_string()));
        }
        body.retain(|_, v| !v.is_null());
        for f in &self.fields {
            match body.get_mut(&f.name) {
                Some(Value::String(s)) if sealed_ok && f.encrypted && crate::engine::keyring::is_sealed(s) => {}
                Some(_) if sealed_ok && f.encrypted => {
                    return Err(err(Some(&f.name), "the field is encrypted and this value is not sealed".into()))
                }
                Some(value) => {
                    if let Some(canonical) = check_value(f, value).map_err(|reason| err(Some(&f.name), reason))? {
                        *value = canonical;
                    }
                }
                None => match &f.default {
                    Some(default) => {
                        body.insert(f.name.clone(), default.clone());
                    }
                    None if f.required => return Err(err(Some(&f.name), "required field is missing".into())),
                    None => {}
                },
            }
        }
        Ok(body)
    }
}

/// Checks one non-null value against its field; returns a replacement when the value has a
/// canonical form different from the one given.
fn check_value(f: &FieldDef, value: &Value) -> std::result::Result<Option<Value>, String> {
    let expected = |what: &str| Err(format!("expected {what}, got {}", json_kind(value)));
    match f.kind {
        FieldType::Text => match value {
            Value::String(_) => Ok(None),
            _ => expected("text"),
        },
        FieldType::Integer => match value {
            Value::Number(n) if n.is_i64() => Ok(None),
            Value::Number(n) if n.is_u64() => Err(format!("integer {n} is out of range")),
            _ => expected("an integer"),
        },
        FieldType::Number => match value {
            Value::Number(_) => Ok(None),
            _ => expected("a number"),
        },
        FieldType::Bool => match value {
            Value::Bool(_) => Ok(None),
            _ => expected("true or false"),
        },
        FieldType::Datetime => match value {
            Value::String(s) => match parse_datetime(s) {
                Some(dt) => {
                    let canonical = format_datetime(dt);
                    Ok((canonical != *s).then_some(Value::String(canonical)))
                }
                None => Err(format!("{s:?} is not an RFC 3339 date-time or YYYY-MM-DD date")),
            },
            _ => expected("a date-time string"),
        },
        FieldType::Json => Ok(None),
        FieldType::Tags => {
            let Value::Array(items) = value else {
                return expected("a list of tags");
            };
            let mut seen = std::collections::HashSet::new();
            for item in items {
                match item {
                    Value::String(s) if s.trim().is_empty() => return Err("tags cannot be empty".into()),
                    Value::String(s) if !seen.insert(s.as_str()) => return Err(format!("tag {s:?} appears twice")),
                    Value::String(_) => {}
                    other => return Err(format!("tags must be strings, got {}", json_kind(other))),
                }
            }
            Ok(None)
        }
        FieldType::Relation => match value {
            Value::String(s) => validate_id(s).map(|_| None).map_err(|e| e.to_string()),
            _ => expected("a record id string"),
        },
        FieldType::Attachment => check_attachment(value).map(|_| None),
        FieldType::Attachments => {
            let Value::Array(items) = value else {
                return expected("a list of attachments");
            };
            for (i, item) in items.iter().enumerate() {
                check_attachment(item).map_err(|e| format!("attachment {i}: {e}"))?;
            }
            Ok(None)
        }
    }
}

fn check_attachment(value: &Value) -> std::result::Result<(), String> {
    let Value::Object(map) = value else {
        return Err(format!("expected an attachment object, got {}", json_kind(value)));
    };
    for key in map.keys() {
        if !matches!(key.as_str(), "hash" | "name" | "mime" | "size") {
            return Err(format!("unknown attachment key `{key}`"));
        }
    }
    match map.get("hash") {
        Some(Value::String(h))
            if h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {}
        _ => return Err("an attachment needs `hash`: 64 lowercase hex digits (SHA-256)".into()),
    }
    for key in ["name", "mime"] {
        if let Some(v) = map.get(key) {
            if !v.is_string() {
                return Err(format!("attachment `{key}` must be a string"));
            }
        }
    }
    if let Some(v) = map.get("size") {
        if !v.is_u64() {
            return Err("attachment `size` must be a non-negative integer".into());
        }
    }
    Ok(())
}

/// How messages name a JSON value's kind ("text", "a list", …).
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn notes() -> CollectionSchema {
        CollectionSchema::from_json(
            r#"{"name":"notes","fields":[
                {"name":"title","type":"text","required":true},
                {"name":"pinned","type":"bool","default":false},
                {"name":"count","type":"integer"},
                {"name":"at","type":"datetime"},
                {"name":"tags","type":"tags"},
                {"name":"topic","type":"relation","collection":"notes"}]}"#,
            "test",
        )
        .expect("schema parses")
    }

    #[test]
    fn normalises_defaults_nulls_and_datetimes() {
        let s = notes();
        s.validate(&|_| false).expect("valid");
        let body =
            s.normalize(Some("n1"), json!({"title":"a","count":null,"at":"2025-01-02T03:04:05+01:00"})).expect("valid");
        assert_eq!(Value::Object(body), json!({"title":"a","pinned":false,"at":"2025-01-02T02:04:05.000Z"}));
    }

    #[test]
    fn validation_errors_name_collection_record_and_field() {
        let s = notes();
        let e = s.normalize(Some("n1"), json!({"title": 5})).expect_err("wrong type");
        let text = e.to_string();
        assert!(text.contains("`notes`") && text.contains("`n1`") && text.contains("`title`"), "{text}");
        for (body, field) in [
            (json!({"pinned": true}), "title"),
            (json!({"title": "x", "nope": 1}), "nope"),
            (json!({"title": "x", "count": 1.5}), "count"),
            (json!({"title": "x", "at": "tuesday"}), "at"),
            (json!({"title": "x", "tags": ["a", "a"]}), "tags"),
            (json!({"title": "x", "tags": ["a", 1]}), "tags"),
            (json!({"title": "x", "topic": "bad id!"}), "topic"),
        ] {
            match s.normalize(None, body.clone()) {
                Err(Error::Validation { field: Some(f), .. }) => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(matches!(s.normalize(None, json!([1])), Err(Error::Validation { field: None, .. })));
    }

    #[test]
    fn bad_schemas_are_refused() {
        let cases = [
            r#"{"name":"Bad","fields":[]}"#,
            r#"{"name":"a","fields":[{"name":"id","type":"text"}]}"#,
            r#"{"name":"a","fields":[{"name":"x","type":"text"},{"name":"x","type":"text"}]}"#,
            r#"{"name":"a","fields":[{"name":"x","type":"relation"}]}"#,
            r#"{"name":"a","fields":[{"name":"x","type":"relation","collection":"ghost"}]}"#,
            r#"{"name":"a","fields":[{"name":"x","type":"json","unique":true}]}"#,
            r#"{"name":"a","fields":[{"name":"x","type":"text","encrypted":true,"indexed":true}]}"#,
            r#"{"name":"a","fields":[{"name":"x","type":"integer","default":"five"}]}"#,
            r#"{"name":"a","fields":[{"name":"x","type":"integer","fulltext":true}]}"#,
        ];
        for case in cases {
            let schema = CollectionSchema::from_json(case, "t").expect("parses");
            assert!(matches!(schema.validate(&|_| false), Err(Error::InvalidSchema { .. })), "{case}");
        }
        let unknown_key =
            CollectionSchema::from_json(r#"{"name":"a","fields":[{"name":"x","type":"text","colour":1}]}"#, "f.json");
        assert!(matches!(unknown_key, Err(Error::InvalidInput { .. })));
        let unknown_type =
            CollectionSchema::from_json(r#"{"name":"a","fields":[{"name":"x","type":"blob"}]}"#, "f.json");
        assert!(matches!(unknown_type, Err(Error::InvalidInput { .. })));
    }

    #[test]
    fn toml_schemas_parse() {
        let s = CollectionSchema::from_toml(
            "name = \"t\"\n[[fields]]\nname = \"title\"\ntype = \"text\"\nsummary = true\n",
            "t.toml",
        )
        .expect("parses");
        assert!(s.fields[0].summary);
    }
}
