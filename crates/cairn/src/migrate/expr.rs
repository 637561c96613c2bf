//! The small expression set of `update_records`: values computed from a record's fields.
//!
//! Deliberately small and total: no loops, no calls out, no clock, so that running the same
//! migration on the same records always writes the same bodies (a plan on a scratch copy
//! predicts the run exactly). Anything more is a closure in the library API.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::data::schema::json_kind;

/// An expression, written as a one-key table: `{ field = "title" }`, `{ add = [{ field = "n" },
/// { value = 1 }] }`. `null` (a missing field) flows through: arithmetic and text functions
/// of `null` are `null`, and setting a field to `null` removes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ValueExpr {
    /// A literal JSON value.
    Value(Value),
    /// The record's value of a field.
    Field(String),
    /// The arguments as text, joined (`null`s are skipped).
    Concat(Vec<ValueExpr>),
    /// The sum of numbers.
    Add(Vec<ValueExpr>),
    /// The first number minus the others.
    Sub(Vec<ValueExpr>),
    /// The product of numbers.
    Mul(Vec<ValueExpr>),
    /// Text in lower case.
    Lower(Box<ValueExpr>),
    /// Text in upper case.
    Upper(Box<ValueExpr>),
    /// Text without leading and trailing white space.
    Trim(Box<ValueExpr>),
    /// The first argument that is not `null`.
    Coalesce(Vec<ValueExpr>),
}

impl ValueExpr {
    /// Checks fields and argument counts; `known` says whether a field exists.
    pub(crate) fn check(&self, known: &dyn Fn(&str) -> Result<(), String>) -> Result<(), String> {
        match self {
            ValueExpr::Value(_) => Ok(()),
            ValueExpr::Field(f) => known(f),
            ValueExpr::Sub(args) if args.len() < 2 => Err("`sub` needs at least two arguments".into()),
            ValueExpr::Concat(args)
            | ValueExpr::Add(args)
            | ValueExpr::Sub(args)
            | ValueExpr::Mul(args)
            | ValueExpr::Coalesce(args) => {
                if args.is_empty() {
                    return Err("an expression needs at least one argument".into());
                }
                args.iter().try_for_each(|a| a.check(known))
            }
            ValueExpr::Lower(a) | ValueExpr::Upper(a) | ValueExpr::Trim(a) => a.check(known),
        }
    }

    /// The expression's value for `body`.
    pub(crate) fn eval(&self, body: &Map<String, Value>) -> Result<Value, String> {
        match self {
            ValueExpr::Value(v) => Ok(v.clone()),
            ValueExpr::Field(f) => Ok(body.get(f).cloned().unwrap_or(Value::Null)),
            ValueExpr::Concat(args) => {
                let mut out = String::new();
                for a in args {
                    match a.eval(body)? {
                        Value::Null => {}
                        Value::String(s) => out.push_str(&s),
                        Value::Number(n) => out.push_str(&n.to_string()),
                        Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
                        other => {
                            out.push_str(&String::from_utf8_lossy(&crate::engine::canonical::canonical_json(&other)))
                        }
                    }
                }
                Ok(Value::String(out))
            }
            ValueExpr::Add(args) => arithmetic("add", args, body, i64::checked_add, |a, b| a + b),
            ValueExpr::Sub(args) => arithmetic("sub", args, body, i64::checked_sub, |a, b| a - b),
            ValueExpr::Mul(args) => arithmetic("mul", args, body, i64::checked_mul, |a, b| a * b),
            ValueExpr::Lower(a) => text_fn("lower", a, body, |s| s.to_lowercase()),
            ValueExpr::Upper(a) => text_fn("upper", a, body, |s| s.to_uppercase()),
            ValueExpr::Trim(a) => text_fn("trim", a, body, |s| s.trim().to_string()),
            ValueExpr::Coalesce(args) => {
                for a in args {
                    let v = a.eval(body)?;
                    if !v.is_null() {
                        return Ok(v);
                    }
                }
                Ok(Value::Null)
            }
        }
    }
}

fn text_fn(
    name: &str,
    arg: &ValueExpr,
    body: &Map<String, Value>,
    f: impl Fn(&str) -> String,
) -> Result<Value, String> {
    match arg.eval(body)? {
        Value::Null => Ok(Value::Null),
        Value::String(s) => Ok(Value::String(f(&s))),
        other => Err(format!("`{name}` needs text, got {}", json_kind(&other))),
    }
}

/// Integers stay integers while they fit; otherwise (or with any fraction) the result is a
/// float, which must be finite.
fn arithmetic(
    name: &str,
    args: &[ValueExpr],
    body: &Map<String, Value>,
    int: fn(i64, i64) -> Option<i64>,
    float: fn(f64, f64) -> f64,
) -> Result<Value, String> {
    let mut values = Vec::with_capacity(args.len());
    for a in args {
        match a.eval(body)? {
            Value::Null => return Ok(Value::Null),
            Value::Number(n) => values.push(n),
            other => return Err(format!("`{name}` needs numbers, got {}", json_kind(&other))),
        }
    }
    let mut ints = values.iter().map(Number::as_i64);
    if let Some(Some(first)) = ints.next() {
        let mut acc = Some(first);
        for next in ints {
            acc = match (acc, next) {
                (Some(a), Some(b)) => int(a, b),
                _ => None,
            };
        }
        if let Some(result) = acc {
            return Ok(Value::from(result));
        }
    }
    let mut floats = values.iter().map(|n| n.as_f64().unwrap_or(f64::NAN));
    let first = floats.next().unwrap_or(f64::NAN);
    let result = floats.fold(first, float);
    Number::from_f64(result).map(Value::Number).ok_or_else(|| format!("`{name}` gave {result}, which is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(expr: Value, body: Value) -> Result<Value, String> {
        let expr: ValueExpr = serde_json::from_value(expr).expect("expression");
        expr.eval(body.as_object().expect("object"))
    }

    #[test]
    fn expressions_compute_from_fields() {
        let body = json!({"n": 2, "x": 1.5, "t": "  Hi ", "big": i64::MAX});
        assert_eq!(eval(json!({"add": [{"field": "n"}, {"value": 1}]}), body.clone()), Ok(json!(3)));
        assert_eq!(eval(json!({"sub": [{"field": "n"}, {"field": "x"}]}), body.clone()), Ok(json!(0.5)));
        assert_eq!(
            eval(json!({"add": [{"field": "big"}, {"value": 1}]}), body.clone()),
            Ok(json!(9.223372036854776e18))
        );
        assert_eq!(eval(json!({"mul": [{"field": "n"}, {"field": "gone"}]}), body.clone()), Ok(Value::Null));
        assert_eq!(eval(json!({"lower": {"trim": {"field": "t"}}}), body.clone()), Ok(json!("hi")));
        assert_eq!(
            eval(json!({"concat": [{"field": "t"}, {"field": "n"}, {"field": "gone"}]}), body.clone()),
            Ok(json!("  Hi 2"))
        );
        assert_eq!(eval(json!({"coalesce": [{"field": "gone"}, {"value": "d"}]}), body.clone()), Ok(json!("d")));
        assert!(eval(json!({"add": [{"field": "t"}, {"value": 1}]}), body.clone())
            .expect_err("text")
            .contains("numbers"));
        assert!(eval(json!({"upper": {"field": "n"}}), body).expect_err("number").contains("text"));
    }

    #[test]
    fn checks_fields_and_arity() {
        let known = |f: &str| if f == "a" { Ok(()) } else { Err(format!("unknown field `{f}`")) };
        let check = |v: Value| serde_json::from_value::<ValueExpr>(v).expect("expression").check(&known);
        assert!(check(json!({"add": [{"field": "a"}, {"value": 1}]})).is_ok());
        assert!(check(json!({"add": [{"field": "b"}]})).expect_err("unknown").contains("`b`"));
        assert!(check(json!({"sub": [{"field": "a"}]})).is_err());
        assert!(check(json!({"concat": []})).is_err());
        assert!(serde_json::from_value::<ValueExpr>(json!({"now": true})).is_err());
    }
}
