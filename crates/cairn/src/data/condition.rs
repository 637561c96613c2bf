//! Filters as values: a [`Condition`] is what a query or a search must match — text in the
//! filter language (docs/query.md), an expression built in code, or several of these ANDed.
//!
//! A condition can be parsed once and run many times, and a caller can AND more conditions
//! onto a query it was given (a server adds its permission rules this way) without splicing
//! text. Each clause keeps its own text, so an error points into the clause it is about.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::data::query::parse::{parse_filter, Expr};
use crate::data::schema::CollectionSchema;
use crate::error::Result;

/// A filter a record must match: one or more clauses, all of which must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Condition {
    clauses: Vec<Clause>,
}

impl Condition {
    /// The longest filter text accepted, in bytes.
    pub const MAX_LEN: usize = crate::data::query::parse::MAX_FILTER_LEN;
}

/// One clause: its text, and the expression when it has been parsed.
#[derive(Debug, Clone, PartialEq)]
struct Clause {
    text: Arc<str>,
    expr: Option<Arc<Expr>>,
}

impl Condition {
    /// Parses `text` now, so that a syntax error shows here and running the condition again
    /// does not parse it again. (Whether its fields exist is checked against the collection
    /// it runs on.)
    pub fn parse(text: &str) -> Result<Condition> {
        let expr = parse_filter(text)?;
        Ok(Condition { clauses: vec![Clause { text: Arc::from(text), expr: Some(Arc::new(expr)) }] })
    }

    /// A condition from an expression built in code. It is written in the filter language
    /// and parsed back, so errors can point into that text; an expression that cannot be
    /// written (a name the language cannot spell, a number that is not finite) is refused.
    pub fn from_expr(expr: &Expr) -> Result<Condition> {
        Condition::parse(&expr.to_string())
    }

    /// This condition and `other`: a record must match both.
    pub fn and(mut self, other: impl Into<Condition>) -> Condition {
        self.clauses.extend(other.into().clauses);
        self
    }

    /// True when there is no clause: every record matches.
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// The clauses, each with its text and its expression (parsed now if it was given as
    /// text).
    pub(crate) fn clauses(&self) -> Result<Vec<(&str, Arc<Expr>)>> {
        self.clauses
            .iter()
            .map(|c| {
                let expr = match &c.expr {
                    Some(expr) => expr.clone(),
                    None => Arc::new(parse_filter(&c.text)?),
                };
                Ok((&*c.text, expr))
            })
            .collect()
    }

    /// True when `body` matches every clause, evaluated in memory against `schema` (the
    /// reference semantics the SQL a query runs is tested against).
    pub fn matches(&self, schema: &CollectionSchema, body: &Map<String, Value>) -> Result<bool> {
        for (text, expr) in self.clauses()? {
            crate::data::query::check_filter(schema, text, &expr)?;
            if !crate::data::query::eval::matches(schema, &expr, body) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The condition written as one filter: each clause parenthesised, joined by `and`.
impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.clauses.as_slice() {
            [] => Ok(()),
            [one] => f.write_str(&one.text),
            many => {
                let parts: Vec<String> = many.iter().map(|c| format!("({})", c.text)).collect();
                f.write_str(&parts.join(" and "))
            }
        }
    }
}

/// A condition travels as its filter text (the clauses joined by `and`).
impl serde::Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(deserializer).map(Condition::from)
    }
}

/// Filter text, parsed when the condition is first used (an error shows then).
impl From<&str> for Condition {
    fn from(text: &str) -> Self {
        Condition { clauses: vec![Clause { text: Arc::from(text), expr: None }] }
    }
}

impl From<String> for Condition {
    fn from(text: String) -> Self {
        Condition::from(text.as_str())
    }
}

impl From<&String> for Condition {
    fn from(text: &String) -> Self {
        Condition::from(text.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn clauses_keep_their_own_text_and_join_with_and() {
        let c = Condition::parse("a = 1 or b = 2").expect("parse").and("c is null");
        assert_eq!(c.to_string(), "(a = 1 or b = 2) and (c is null)");
        assert_eq!(c.clauses().expect("clauses").len(), 2);
        assert!(Condition::default().is_empty());
        let err = Condition::from("a = ").clauses().expect_err("parsed on use");
        assert!(err.filter_snippet().is_some(), "{err}");
        assert!(Condition::parse("a = ").is_err(), "parsed at once");
    }

    #[test]
    fn an_expression_written_back_parses_to_itself() {
        for text in [
            r#"a = 1 and (b = "x\"y" or not c is null) and d in (1, 2.5, true)"#,
            "not (a = 1 and b = 2) or c not in (\"p\", 'q')",
            "m.k.j >= 2024-01-02T03:04:05Z and t has \"tag\" and s contains \"Ab\"",
            "(a = 1 or b = 2) and (c = 3 or d = 4)",
            "a = 1 or (b = 2 or c = 3)",
            "x = -1.5e300 and y = 0.0 and z != -7",
        ] {
            let expr = parse_filter(text).expect(text);
            let written = expr.to_string();
            let again = parse_filter(&written).unwrap_or_else(|e| panic!("{written}: {e}"));
            assert_eq!(strip(&again), strip(&expr), "{text} → {written}");
        }
    }

    /// An expression with every position zeroed, to compare structure only.
    pub(crate) fn strip(e: &Expr) -> Expr {
        use crate::data::query::parse::{Lit, Pred, Test};
        let lit = |l: &Lit| Lit { value: l.value.clone(), pos: 0 };
        match e {
            Expr::And(a, b) => Expr::And(Box::new(strip(a)), Box::new(strip(b))),
            Expr::Or(a, b) => Expr::Or(Box::new(strip(a)), Box::new(strip(b))),
            Expr::Not(a) => Expr::Not(Box::new(strip(a))),
            Expr::Pred(p) => Expr::Pred(Pred {
                path: p.path.clone(),
                pos: 0,
                test: match &p.test {
                    Test::Cmp(op, l) => Test::Cmp(*op, lit(l)),
                    Test::In(ls) => Test::In(ls.iter().map(lit).collect()),
                    Test::NotIn(ls) => Test::NotIn(ls.iter().map(lit).collect()),
                    Test::Contains(l) => Test::Contains(lit(l)),
                    Test::Has(l) => Test::Has(lit(l)),
                    Test::IsNull(b) => Test::IsNull(*b),
                },
            }),
        }
    }
}
