//! The reference semantics of filters and sorting, evaluated in Rust over record bodies.
//!
//! The SQL compiler must agree with this exactly; the property tests check that it does. It
//! mirrors SQLite's comparison of values: NULL (a missing field) matches nothing, numbers
//! compare numerically, text byte-wise, and across kinds numbers sort before text.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::parse::{CmpOp, Expr, Test};
use super::{Kind, Resolved, SqlVal};
use crate::data::schema::CollectionSchema;

/// The value a field (or json path) has in a body, as SQL sees it.
pub(crate) fn value_of(resolved: &Resolved<'_>, body: &Map<String, Value>) -> SqlVal {
    let mut value = body.get(&resolved.field.name);
    for key in &resolved.subpath {
        value = value.and_then(|v| v.get(key));
    }
    let Some(value) = value else { return SqlVal::Null };
    match (resolved.kind(), value) {
        (_, Value::Null) => SqlVal::Null,
        (Kind::Datetime, Value::String(s)) => crate::engine::timestamp::parse_datetime(s)
            .map_or(SqlVal::Null, |dt| SqlVal::Int(crate::engine::timestamp::datetime_micros(dt))),
        (_, Value::Bool(b)) => SqlVal::Int(i64::from(*b)),
        (_, Value::Number(n)) => match n.as_i64() {
            Some(i) => SqlVal::Int(i),
            None => SqlVal::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        (_, Value::String(s)) => SqlVal::Text(s.clone()),
        // Lists and objects read as their JSON text, as json_extract returns them.
        (_, other) => {
            SqlVal::Text(String::from_utf8(crate::engine::canonical::canonical_json(other)).unwrap_or_default())
        }
    }
}

/// SQLite's ordering of values of any kind (NULL first, numbers, then text).
pub(crate) fn sql_cmp(a: &SqlVal, b: &SqlVal) -> Ordering {
    fn rank(v: &SqlVal) -> u8 {
        match v {
            SqlVal::Null => 0,
            SqlVal::Int(_) | SqlVal::Real(_) => 1,
            SqlVal::Text(_) => 2,
        }
    }
    match (a, b) {
        (SqlVal::Int(x), SqlVal::Int(y)) => x.cmp(y),
        (SqlVal::Int(x), SqlVal::Real(y)) => (*x as f64).total_cmp(y),
        (SqlVal::Real(x), SqlVal::Int(y)) => x.total_cmp(&(*y as f64)),
        (SqlVal::Real(x), SqlVal::Real(y)) => x.total_cmp(y),
        (SqlVal::Text(x), SqlVal::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// True when `body` matches `expr`. The filter must have passed `check`.
pub(crate) fn matches(schema: &CollectionSchema, expr: &Expr, body: &Map<String, Value>) -> bool {
    match expr {
        Expr::And(a, b) => matches(schema, a, body) && matches(schema, b, body),
        Expr::Or(a, b) => matches(schema, a, body) || matches(schema, b, body),
        Expr::Not(a) => !matches(schema, a, body),
        Expr::Pred(p) => {
            let Ok(resolved) = super::resolve(schema, &p.path, p.pos, "") else { return false };
            let value = value_of(&resolved, body);
            match &p.test {
                Test::IsNull(want_null) => (value == SqlVal::Null) == *want_null,
                _ if value == SqlVal::Null => false,
                Test::Cmp(op, lit) => {
                    let Ok(lit) = super::literal_value(&resolved, lit, "") else { return false };
                    let ord = sql_cmp(&value, &lit);
                    match op {
                        CmpOp::Eq => ord == Ordering::Equal,
                        CmpOp::Ne => ord != Ordering::Equal,
                        CmpOp::Lt => ord == Ordering::Less,
                        CmpOp::Le => ord != Ordering::Greater,
                        CmpOp::Gt => ord == Ordering::Greater,
                        CmpOp::Ge => ord != Ordering::Less,
                    }
                }
                Test::In(lits) => lits
                    .iter()
                    .filter_map(|l| super::literal_value(&resolved, l, "").ok())
                    .any(|l| sql_cmp(&value, &l) == Ordering::Equal),
                Test::NotIn(lits) => lits
                    .iter()
                    .filter_map(|l| super::literal_value(&resolved, l, "").ok())
                    .all(|l| sql_cmp(&value, &l) != Ordering::Equal),
                Test::Contains(lit) => match (&value, &lit.value) {
                    (SqlVal::Text(h), super::parse::LitValue::Str(n)) => crate::engine::functions::contains(h, n),
                    _ => false,
                },
                Test::Has(lit) => {
                    let super::parse::LitValue::Str(tag) = &lit.value else { return false };
                    body.get(&resolved.field.name)
                        .and_then(Value::as_array)
                        .is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some(tag)))
                }
            }
        }
    }
}
