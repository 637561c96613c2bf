//! Filters as values: a [`Condition`] is what a query or a search must match — text in the
//! filter language (docs/query.md), an expression built in code, or several of these ANDed.
//!
//! A condition can be parsed once and run many times, and a caller can AND more conditions
//! onto a query it was given (a server adds its permission rules this way) without splicing
//! text. Each clause keeps its own text, so an error points into the clause it is about.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::data::grants::SharedWith;
use crate::data::query::parse::{parse_filter, Expr};
use crate::data::schema::CollectionSchema;
use crate::error::{Error, Result};

/// A filter a record must match: one or more clauses, all of which must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Condition {
    clauses: Vec<Clause>,
}

impl Condition {
    /// The longest filter text accepted, in bytes.
    pub const MAX_LEN: usize = crate::data::query::parse::MAX_FILTER_LEN;
}

/// One clause: its text, and the expression when it has been parsed; for a permission rule,
/// also who the records shared through grants are open to (the clause is then "the rule
/// holds, or the record is shared with them", and an empty text is a rule that lets no one).
#[derive(Debug, Clone, PartialEq)]
struct Clause {
    text: Arc<str>,
    expr: Option<Arc<Expr>>,
    or_shared: Option<Arc<SharedWith>>,
}

/// A clause as it is run: its text, its expression (none for a rule that lets no one in
/// but grants), and who shared records are open to.
#[derive(Debug)]
pub(crate) struct ClauseRef<'a> {
    pub text: &'a str,
    pub expr: Option<Arc<Expr>>,
    pub or_shared: Option<&'a SharedWith>,
}

impl Condition {
    /// Parses `text` now, so that a syntax error shows here and running the condition again
    /// does not parse it again. (Whether its fields exist is checked against the collection
    /// it runs on.)
    pub fn parse(text: &str) -> Result<Condition> {
        let expr = parse_filter(text)?;
        Ok(Condition { clauses: vec![Clause { text: Arc::from(text), expr: Some(Arc::new(expr)), or_shared: None }] })
    }

    /// A permission: records `rule` lets in (none when it lets no one in), or shared with
    /// `who` through a grant. Each clause of the rule gets the alternative — (A and B) or S is
    /// (A or S) and (B or S) — so the rule is used as parsed. It runs only in SQL, where the
    /// grants are.
    pub(crate) fn rule_or_shared(rule: Option<Condition>, who: SharedWith) -> Condition {
        let who = Arc::new(who);
        let clauses = match rule {
            Some(rule) if !rule.is_empty() => {
                rule.clauses.into_iter().map(|clause| Clause { or_shared: Some(who.clone()), ..clause }).collect()
            }
            _ => vec![Clause { text: Arc::from(""), expr: None, or_shared: Some(who) }],
        };
        Condition { clauses }
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
    pub(crate) fn clauses(&self) -> Result<Vec<ClauseRef<'_>>> {
        self.clauses
            .iter()
            .map(|c| {
                // An empty rule text with grants is a rule that lets no one in but them.
                let expr = match &c.expr {
                    Some(expr) => Some(expr.clone()),
                    None if c.or_shared.is_some() && c.text.is_empty() => None,
                    None => Some(Arc::new(parse_filter(&c.text)?)),
                };
                Ok(ClauseRef { text: &c.text, expr, or_shared: c.or_shared.as_deref() })
            })
            .collect()
    }

    /// True when `body` matches every clause, evaluated in memory against `schema` (the
    /// reference semantics the SQL a query runs is tested against).
    pub fn matches(&self, schema: &CollectionSchema, body: &Map<String, Value>) -> Result<bool> {
        self.check(schema)?;
        self.holds(schema, body)
    }

    /// Checks every clause against `schema` (its fields exist, its values fit), so that
    /// [`Condition::holds`] can then run it many times without checking again.
    pub(crate) fn check(&self, schema: &CollectionSchema) -> Result<()> {
        for clause in self.clauses()? {
            if let Some(expr) = &clause.expr {
                crate::data::query::check_filter(schema, clause.text, expr)?;
            }
        }
        Ok(())
    }

    /// True when `body` matches every clause; the condition must have passed
    /// [`Condition::check`] against `schema`.
    pub(crate) fn holds(&self, schema: &CollectionSchema, body: &Map<String, Value>) -> Result<bool> {
        for clause in self.clauses()? {
            let Some(expr) = clause.expr.filter(|_| clause.or_shared.is_none()) else {
                return Err(Error::Internal("a permission with grants is evaluated in SQL only".into()));
            };
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
        let text = |c: &Clause| match &c.or_shared {
            None => c.text.to_string(),
            Some(who) if c.text.is_empty() => format!("shared with user {:?} or role {:?}", who.user_id, who.role),
            Some(who) => format!("{} or shared with user {:?} or role {:?}", c.text, who.user_id, who.role),
        };
        match self.clauses.as_slice() {
            [] => Ok(()),
            [one] => f.write_str(&text(one)),
            many => {
                let parts: Vec<String> = many.iter().map(|c| format!("({})", text(c))).collect();
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
        Condition { clauses: vec![Clause { text: Arc::from(text), expr: None, or_shared: None }] }
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
    fn a_permission_puts_the_grant_alternative_on_every_clause_and_runs_only_in_sql() {
        let who = || SharedWith { user_id: "u1".into(), role: "editor".into() };
        let rule = Condition::parse("a = 1").expect("parse").and("b = 2");
        let permission = Condition::rule_or_shared(Some(rule), who());
        let clauses = permission.clauses().expect("clauses");
        assert_eq!(clauses.len(), 2);
        assert!(clauses.iter().all(|c| c.expr.is_some() && c.or_shared == Some(&who())));
        let nobody = Condition::rule_or_shared(None, who());
        let only = nobody.clauses().expect("clauses");
        assert!(only.len() == 1 && only[0].expr.is_none() && only[0].or_shared.is_some());
        assert!(nobody.to_string().contains("shared with user \"u1\""), "{nobody}");
        let schema = CollectionSchema::from_json(r#"{"name": "t", "fields": [{"name": "a", "type": "integer"}]}"#, "s")
            .expect("schema");
        assert!(permission.matches(&schema, &Map::new()).is_err(), "grants are only in the database");
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
