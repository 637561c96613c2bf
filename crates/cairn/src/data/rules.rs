//! Collection rules (SRV-4): who may list, view, create, update and delete a collection's
//! records through the server, as filters (docs/query.md) that may name the caller —
//! `@auth.id`, `@auth.name`, `@auth.role` — or the request — `@request.now` — and an owner
//! field the server fills in. A record can also be shared beyond the rules (`data/grants.rs`).
//!
//! A rule that is absent lets only admins in; an empty rule lets anyone signed in. The rules
//! are part of the schema, so they are versioned with it in the change log. This file
//! defines them and binds the caller's values into them (outside string literals only, as
//! quoted literals); `access/rules.rs` enforces them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A collection's rules; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Which records a caller may list, count and search (ANDed into the query).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// Which records a caller may read by id; others answer "not found".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
    /// What a record a caller creates must look like.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create: Option<String>,
    /// Which records a caller may change (checked on the record as it is before, and after).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
    /// Which records a caller may delete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete: Option<String>,
    /// A text field set to the caller's user id when a record is created and kept as it was
    /// on every change, so that it cannot be forged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Rules {
    /// True when no rule is set (only admins may use the collection's records).
    pub fn is_empty(&self) -> bool {
        *self == Rules::default()
    }

    /// Each rule that is set, with its name.
    pub(crate) fn each(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("list", &self.list),
            ("view", &self.view),
            ("create", &self.create),
            ("update", &self.update),
            ("delete", &self.delete),
        ]
        .into_iter()
        .filter_map(|(name, rule)| rule.as_deref().map(|r| (name, r)))
    }
}

/// The caller's values a rule may name, and the request's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthValues<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub role: &'a str,
    /// `@request.now`: when the request is checked, as an RFC 3339 instant (a datetime
    /// field compares with it as an instant: `publish_at <= @request.now`).
    pub now: &'a str,
}

/// Writes `value` as a filter string literal.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `rule` with the caller's values in place of `@auth.…` (outside string literals), as filter
/// text; an empty rule is `None` (no restriction). An unknown `@` name is refused.
pub(crate) fn bind(rule: &str, auth: &AuthValues<'_>) -> Result<Option<String>> {
    if rule.trim().is_empty() {
        return Ok(None);
    }
    let mut out = String::with_capacity(rule.len() + 32);
    let mut chars = rule.char_indices().peekable();
    let mut quote: Option<char> = None;
    while let Some((at, c)) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == '\\' {
                    if let Some((_, escaped)) = chars.next() {
                        out.push(escaped);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '@' => {
                let name: String = rule[at + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                    .collect();
                let value = match name.as_str() {
                    "auth.id" => auth.id,
                    "auth.name" => auth.name,
                    "auth.role" => auth.role,
                    "request.now" => auth.now,
                    _ => {
                        return Err(Error::invalid_input(
                            "rule",
                            format!(
                                "@{name} names nothing a rule can use \
                                 (@auth.id, @auth.name, @auth.role, @request.now)"
                            ),
                        ))
                    }
                };
                out.push_str(&quoted(value));
                for _ in 0..name.chars().count() {
                    chars.next();
                }
            }
            None => out.push(c),
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> AuthValues<'static> {
        AuthValues { id: "u-1", name: "ana \"the\" admin", role: "editor", now: "2026-12-01T06:00:00Z" }
    }

    #[test]
    fn the_callers_values_are_bound_as_literals_outside_strings_only() {
        let bound = bind(r#"owner = @auth.id or (role = @auth.role and note = "@auth.id")"#, &auth()).expect("bind");
        assert_eq!(bound.expect("a rule"), r#"owner = "u-1" or (role = "editor" and note = "@auth.id")"#);
        let named = bind("who = @auth.name", &auth()).expect("bind").expect("rule");
        assert!(named.contains(r#""ana \"the\" admin""#), "{named}");
        assert!(crate::data::condition::Condition::parse(&named).is_ok(), "the quoted value parses: {named}");
        assert!(bind("  ", &auth()).expect("empty").is_none());
        let timed = bind("publish_at <= @request.now", &auth()).expect("bind").expect("rule");
        assert_eq!(timed, r#"publish_at <= "2026-12-01T06:00:00Z""#);
        let err = bind("owner = @request.id", &auth()).expect_err("unknown name");
        assert!(err.to_string().contains("@request.id"), "{err}");
    }
}
