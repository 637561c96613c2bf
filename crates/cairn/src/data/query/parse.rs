//! The filter language: lexer and recursive-descent parser.
//!
//! ```text
//! filter    := or
//! or        := and ("or" and)*
//! and       := unary ("and" unary)*
//! unary     := "not" unary | "(" filter ")" | predicate
//! predicate := path ( op literal
//!                   | ["not"] "in" "(" literal ("," literal)* ")"
//!                   | "contains" string | "has" string
//!                   | "is" ["not"] "null" )
//! path      := name ("." name)*
//! op        := "=" | "!=" | "<" | "<=" | ">" | ">="
//! literal   := string | number | "true" | "false" | date | datetime
//! ```
//!
//! Keywords are case-insensitive. Strings take double or single quotes with `\` escapes.
//! Dates (`2025-06-01`) and date-times (`2025-06-01T09:30:00Z`) are written bare. Every node
//! keeps the byte offset where it starts, so errors can point at the spot.

use crate::error::{Error, Result};

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Expr {
    /// Both hold.
    And(Box<Expr>, Box<Expr>),
    /// Either holds.
    Or(Box<Expr>, Box<Expr>),
    /// The inner filter does not hold (a missing field makes a predicate false, so `not`
    /// of it is true).
    Not(Box<Expr>),
    /// A predicate on one field.
    Pred(Pred),
}

/// A condition on one field (or a path into a json field).
#[derive(Debug, Clone, PartialEq)]
pub struct Pred {
    /// The field, then keys inside it for json fields.
    pub path: Vec<String>,
    /// Byte offset of the path in the filter text.
    pub pos: usize,
    /// What is tested.
    pub test: Test,
}

/// What a predicate tests.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Test {
    /// `field op value`.
    Cmp(CmpOp, Lit),
    /// `field in (a, b)`.
    In(Vec<Lit>),
    /// `field not in (a, b)`: a comparison like `!=` — a record without the field matches no
    /// comparison, so it does not match this either (unlike `not (field in (a, b))`).
    NotIn(Vec<Lit>),
    /// `field contains "text"`: case-insensitive substring.
    Contains(Lit),
    /// `field has "tag"`: tag membership.
    Has(Lit),
    /// `field is null` (true) or `field is not null` (false).
    IsNull(bool),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A literal value with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Lit {
    /// The value.
    pub value: LitValue,
    /// Byte offset in the filter text.
    pub pos: usize,
}

/// The value of a literal.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LitValue {
    /// A quoted string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// A bare date or date-time, as written.
    Date(String),
}

impl LitValue {
    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            LitValue::Str(s) => format!("the text {s:?}"),
            LitValue::Int(i) => format!("the integer {i}"),
            LitValue::Float(f) => format!("the number {f}"),
            LitValue::Bool(b) => format!("`{b}`"),
            LitValue::Date(d) => format!("the date {d}"),
        }
    }
}

/// An expression written back in the filter language, parenthesised only where needed, so
/// that parsing the text gives the same expression (positions aside).
impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn operand(f: &mut std::fmt::Formatter<'_>, e: &Expr, bare: fn(&Expr) -> bool) -> std::fmt::Result {
            if bare(e) {
                write!(f, "{e}")
            } else {
                write!(f, "({e})")
            }
        }
        match self {
            Expr::And(a, b) => {
                let bare = |e: &Expr| matches!(e, Expr::And(..) | Expr::Not(_) | Expr::Pred(_));
                operand(f, a, bare)?;
                f.write_str(" and ")?;
                operand(f, b, |e| matches!(e, Expr::Not(_) | Expr::Pred(_)))
            }
            Expr::Or(a, b) => {
                let bare = |_: &Expr| true;
                operand(f, a, bare)?;
                f.write_str(" or ")?;
                operand(f, b, |e| !matches!(e, Expr::Or(..)))
            }
            Expr::Not(e) => {
                f.write_str("not ")?;
                operand(f, e, |e| matches!(e, Expr::Not(_) | Expr::Pred(_)))
            }
            Expr::Pred(p) => write!(f, "{p}"),
        }
    }
}

impl std::fmt::Display for Pred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path.join("."))?;
        let list = |lits: &[Lit]| lits.iter().map(|l| l.value.to_string()).collect::<Vec<_>>().join(", ");
        match &self.test {
            Test::Cmp(op, lit) => write!(f, " {} {}", op.as_str(), lit.value),
            Test::In(lits) => write!(f, " in ({})", list(lits)),
            Test::NotIn(lits) => write!(f, " not in ({})", list(lits)),
            Test::Contains(lit) => write!(f, " contains {}", lit.value),
            Test::Has(lit) => write!(f, " has {}", lit.value),
            Test::IsNull(true) => f.write_str(" is null"),
            Test::IsNull(false) => f.write_str(" is not null"),
        }
    }
}

impl std::fmt::Display for LitValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LitValue::Str(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        '\t' => f.write_str("\\t")?,
                        '\r' => f.write_str("\\r")?,
                        c if c.is_control() => write!(f, "\\u{:04x}", u32::from(c))?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
            LitValue::Int(i) => write!(f, "{i}"),
            // `{:?}` keeps a fraction or exponent, so the text parses back as a float.
            LitValue::Float(x) => write!(f, "{x:?}"),
            LitValue::Bool(b) => write!(f, "{b}"),
            LitValue::Date(d) => f.write_str(d),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Str(String),
    Int(i64),
    Float(f64),
    Date(String),
    Op(CmpOp),
    LParen,
    RParen,
    Comma,
    Dot,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Name(n) => format!("`{n}`"),
            Tok::Str(s) => format!("the text {s:?}"),
            Tok::Int(i) => format!("the number {i}"),
            Tok::Float(f) => format!("the number {f}"),
            Tok::Date(d) => format!("the date {d}"),
            Tok::Op(op) => format!("`{}`", op.as_str()),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Dot => "`.`".into(),
            Tok::End => "the end of the filter".into(),
        }
    }
}

/// The longest filter accepted, in bytes; also bounds nesting (and so recursion depth).
pub const MAX_FILTER_LEN: usize = 16 * 1024;
const MAX_DEPTH: usize = 64;

fn error(text: &str, pos: usize, reason: impl Into<String>) -> Error {
    Error::InvalidFilter { filter: text.to_string(), position: pos, reason: reason.into() }
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' | b')' | b',' | b'.' => {
                let tok = match c {
                    b'(' => Tok::LParen,
                    b')' => Tok::RParen,
                    b',' => Tok::Comma,
                    _ => Tok::Dot,
                };
                out.push((tok, i));
                i += 1;
            }
            b'=' => {
                // `==` is accepted as a courtesy.
                i += if bytes.get(i + 1) == Some(&b'=') { 2 } else { 1 };
                out.push((Tok::Op(CmpOp::Eq), start));
            }
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                out.push((Tok::Op(CmpOp::Ne), i));
                i += 2;
            }
            b'<' | b'>' => {
                let eq = bytes.get(i + 1) == Some(&b'=');
                let op = match (c, eq) {
                    (b'<', true) => CmpOp::Le,
                    (b'<', false) => CmpOp::Lt,
                    (_, true) => CmpOp::Ge,
                    _ => CmpOp::Gt,
                };
                out.push((Tok::Op(op), i));
                i += if eq { 2 } else { 1 };
            }
            b'"' | b'\'' => {
                let (s, end) = lex_string(text, i)?;
                out.push((Tok::Str(s), start));
                i = end;
            }
            b'0'..=b'9' | b'-' => {
                let end = bytes[i + 1..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b':')))
                    .map_or(bytes.len(), |p| i + 1 + p);
                let word = &text[i..end];
                out.push((lex_number_or_date(text, word, i)?, start));
                i = end;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map_or(bytes.len(), |p| i + p);
                out.push((Tok::Name(text[i..end].to_string()), start));
                i = end;
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(error(text, i, format!("unexpected character {ch:?}")));
            }
        }
    }
    out.push((Tok::End, text.len()));
    Ok(out)
}

fn lex_string(text: &str, start: usize) -> Result<(String, usize)> {
    let quote = text.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        let at = start + 1 + off;
        match c {
            c if c == quote => return Ok((out, at + 1)),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, '\'')) => out.push('\''),
                Some((_, 'u')) => {
                    let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                    let code = u32::from_str_radix(&hex, 16).ok().filter(|_| hex.len() == 4).and_then(char::from_u32);
                    match code {
                        Some(c) => out.push(c),
                        None => return Err(error(text, at, "\\u needs four hex digits of a valid character")),
                    }
                }
                Some((_, other)) => return Err(error(text, at, format!("unknown escape \\{other}"))),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(error(text, start, format!("unterminated string: no closing {quote}")))
}

fn lex_number_or_date(text: &str, word: &str, pos: usize) -> Result<Tok> {
    let digits_then_dash =
        word.len() >= 5 && word.as_bytes()[..4].iter().all(u8::is_ascii_digit) && word.as_bytes()[4] == b'-';
    if digits_then_dash {
        return match crate::engine::timestamp::parse_datetime(word) {
            Some(_) => Ok(Tok::Date(word.to_string())),
            None => Err(error(text, pos, format!("{word} is not a valid date (YYYY-MM-DD) or date-time (RFC 3339)"))),
        };
    }
    if let Ok(i) = word.parse::<i64>() {
        return Ok(Tok::Int(i));
    }
    match word.parse::<f64>() {
        Ok(f) if f.is_finite() && word.bytes().any(|b| b.is_ascii_digit()) => Ok(Tok::Float(f)),
        _ => Err(error(text, pos, format!("{word} is not a number"))),
    }
}

struct Parser<'a> {
    text: &'a str,
    toks: Vec<(Tok, usize)>,
    at: usize,
    depth: usize,
}

impl Expr {
    /// Parses filter text (see `docs/query.md`). An empty or blank filter is an error:
    /// callers that want "everything" pass no filter.
    pub fn parse(text: &str) -> Result<Expr> {
        parse_filter(text)
    }
}

/// Parses filter text into an [`Expr`] (see [`Expr::parse`]).
pub(crate) fn parse_filter(text: &str) -> Result<Expr> {
    if text.len() > MAX_FILTER_LEN {
        return Err(error(text, MAX_FILTER_LEN, format!("a filter is at most {MAX_FILTER_LEN} bytes")));
    }
    let mut p = Parser { text, toks: lex(text)?, at: 0, depth: 0 };
    let expr = p.or()?;
    match p.peek() {
        Tok::End => Ok(expr),
        other => {
            let found = other.describe();
            Err(p.err(format!("expected `and`, `or` or the end of the filter, found {found}")))
        }
    }
}

fn keyword(tok: &Tok, word: &str) -> bool {
    matches!(tok, Tok::Name(n) if n.eq_ignore_ascii_case(word))
}

const KEYWORDS: [&str; 10] = ["and", "or", "not", "in", "contains", "has", "is", "null", "true", "false"];

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].0
    }

    fn pos(&self) -> usize {
        self.toks[self.at].1
    }

    fn bump(&mut self) -> (Tok, usize) {
        let t = self.toks[self.at].clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        error(self.text, self.pos(), reason)
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        if keyword(self.peek(), word) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr> {
        let mut left = self.and()?;
        while self.eat_keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr> {
        let mut left = self.unary()?;
        while self.eat_keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    /// A level of nesting, opened at `pos`: each `not` and each `(` is one; at most
    /// [`MAX_DEPTH`].
    fn nest<T>(&mut self, pos: usize, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(error(self.text, pos, format!("the filter nests deeper than {MAX_DEPTH} levels")));
        }
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn unary(&mut self) -> Result<Expr> {
        let pos = self.pos();
        if self.eat_keyword("not") {
            return self.nest(pos, |p| Ok(Expr::Not(Box::new(p.unary()?))));
        }
        if *self.peek() == Tok::LParen {
            self.bump();
            return self.nest(pos, |p| {
                let inner = p.or()?;
                if *p.peek() != Tok::RParen {
                    let found = p.peek().describe();
                    return Err(p.err(format!("expected `)`, found {found}")));
                }
                p.bump();
                Ok(inner)
            });
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Expr> {
        let pos = self.pos();
        let path = self.path()?;
        let pred = |test| Expr::Pred(Pred { path: path.clone(), pos, test });
        let tok = self.peek().clone();
        match tok {
            Tok::Op(op) => {
                self.bump();
                let lit = self.literal(&format!("after `{}`", op.as_str()))?;
                Ok(pred(Test::Cmp(op, lit)))
            }
            ref t if keyword(t, "in") => {
                self.bump();
                Ok(pred(Test::In(self.list()?)))
            }
            ref t if keyword(t, "not") => {
                self.bump();
                if !self.eat_keyword("in") {
                    return Err(
                        self.err("expected `in` after `not` here (write `not` before the field to negate a condition)")
                    );
                }
                Ok(pred(Test::NotIn(self.list()?)))
            }
            ref t if keyword(t, "contains") => {
                self.bump();
                Ok(pred(Test::Contains(self.string("after `contains`")?)))
            }
            ref t if keyword(t, "has") => {
                self.bump();
                Ok(pred(Test::Has(self.string("after `has`")?)))
            }
            ref t if keyword(t, "is") => {
                self.bump();
                let negated = self.eat_keyword("not");
                if !self.eat_keyword("null") {
                    let found = self.peek().describe();
                    return Err(self.err(format!("expected `null`, found {found}")));
                }
                Ok(pred(Test::IsNull(!negated)))
            }
            other => Err(self.err(format!(
                "expected an operator (= != < <= > >=), `in`, `contains`, `has` or `is` after `{}`, found {}",
                path.join("."),
                other.describe()
            ))),
        }
    }

    fn path(&mut self) -> Result<Vec<String>> {
        let mut path = vec![self.name()?];
        while *self.peek() == Tok::Dot {
            self.bump();
            path.push(self.name()?);
        }
        Ok(path)
    }

    fn name(&mut self) -> Result<String> {
        match self.peek().clone() {
            Tok::Name(n) if !KEYWORDS.iter().any(|k| n.eq_ignore_ascii_case(k)) => {
                self.bump();
                Ok(n)
            }
            other => Err(self.err(format!("expected a field name, found {}", other.describe()))),
        }
    }

    fn list(&mut self) -> Result<Vec<Lit>> {
        if *self.peek() != Tok::LParen {
            let found = self.peek().describe();
            return Err(self.err(format!("expected `(` to start the list, found {found}")));
        }
        self.bump();
        let mut items = vec![self.literal("in the list")?];
        loop {
            match self.peek() {
                Tok::Comma => {
                    self.bump();
                    items.push(self.literal("in the list")?);
                }
                Tok::RParen => {
                    self.bump();
                    return Ok(items);
                }
                other => {
                    let found = other.describe();
                    return Err(self.err(format!("expected `,` or `)` in the list, found {found}")));
                }
            }
        }
    }

    fn literal(&mut self, context: &str) -> Result<Lit> {
        let pos = self.pos();
        let value = match self.peek().clone() {
            Tok::Str(s) => LitValue::Str(s),
            Tok::Int(i) => LitValue::Int(i),
            Tok::Float(f) => LitValue::Float(f),
            Tok::Date(d) => LitValue::Date(d),
            Tok::Name(n) if n.eq_ignore_ascii_case("true") => LitValue::Bool(true),
            Tok::Name(n) if n.eq_ignore_ascii_case("false") => LitValue::Bool(false),
            Tok::Name(n) if n.eq_ignore_ascii_case("null") => {
                return Err(self.err("use `is null` or `is not null` to test for a missing value"));
            }
            other => {
                return Err(self.err(format!(
                    "expected a value {context} (a \"string\", number, true/false or date), found {}",
                    other.describe()
                )))
            }
        };
        self.bump();
        Ok(Lit { value, pos })
    }

    fn string(&mut self, context: &str) -> Result<Lit> {
        let lit = self.literal(context)?;
        match lit.value {
            LitValue::Str(_) => Ok(lit),
            ref other => {
                Err(error(self.text, lit.pos, format!("expected a \"string\" {context}, found {}", other.describe())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(path: &str, test: Test) -> Expr {
        Expr::Pred(Pred { path: path.split('.').map(String::from).collect(), pos: 0, test })
    }

    fn strip(e: Expr) -> Expr {
        // Positions are checked separately; compare shapes here.
        match e {
            Expr::And(a, b) => Expr::And(Box::new(strip(*a)), Box::new(strip(*b))),
            Expr::Or(a, b) => Expr::Or(Box::new(strip(*a)), Box::new(strip(*b))),
            Expr::Not(a) => Expr::Not(Box::new(strip(*a))),
            Expr::Pred(mut p) => {
                p.pos = 0;
                p.test = match p.test {
                    Test::Cmp(op, l) => Test::Cmp(op, Lit { pos: 0, ..l }),
                    Test::In(ls) => Test::In(ls.into_iter().map(|l| Lit { pos: 0, ..l }).collect()),
                    Test::NotIn(ls) => Test::NotIn(ls.into_iter().map(|l| Lit { pos: 0, ..l }).collect()),
                    Test::Contains(l) => Test::Contains(Lit { pos: 0, ..l }),
                    Test::Has(l) => Test::Has(Lit { pos: 0, ..l }),
                    t => t,
                };
                Expr::Pred(p)
            }
        }
    }

    fn lit(v: LitValue) -> Lit {
        Lit { value: v, pos: 0 }
    }

    #[test]
    fn precedence_and_forms() {
        let e = strip(parse_filter(r#"status = "done" or n >= 2 and not tags has 'x'"#).expect("parses"));
        let expected = Expr::Or(
            Box::new(pred("status", Test::Cmp(CmpOp::Eq, lit(LitValue::Str("done".into()))))),
            Box::new(Expr::And(
                Box::new(pred("n", Test::Cmp(CmpOp::Ge, lit(LitValue::Int(2))))),
                Box::new(Expr::Not(Box::new(pred("tags", Test::Has(lit(LitValue::Str("x".into()))))))),
            )),
        );
        assert_eq!(e, expected);
        let e = strip(
            parse_filter("meta.source IS NOT NULL AND at < 2025-06-01 AND p NOT IN (1, 2.5, true)").expect("parses"),
        );
        assert!(matches!(e, Expr::And(_, _)));
        parse_filter("(a = 1 or b = 2) and c contains \"x\\\"y\\u00e9\"").expect("parses");
        parse_filter("at >= 2025-06-01T09:30:00+02:00").expect("date-time literal");
        parse_filter("n = -3 and x = 1.5e3").expect("numbers");
    }

    #[test]
    fn errors_point_at_the_problem() {
        let cases = [
            ("status = ", 9, "expected a value"),
            ("status = \"open", 9, "unterminated string"),
            ("status \"x\"", 7, "expected an operator"),
            ("(a = 1", 6, "expected `)`"),
            ("a = 1 b = 2", 6, "expected `and`, `or`"),
            ("a = null", 4, "is null"),
            ("a = 2025-13-45", 4, "not a valid date"),
            ("a ~ 1", 2, "unexpected character"),
            ("tags has 3", 9, "expected a \"string\""),
            ("and = 1", 0, "expected a field name"),
            ("", 0, "expected a field name"),
        ];
        for (text, pos, message) in cases {
            match parse_filter(text) {
                Err(Error::InvalidFilter { position, reason, .. }) => {
                    assert_eq!(position, pos, "{text:?}: {reason}");
                    assert!(reason.contains(message), "{text:?}: {reason}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{}a = 1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(matches!(parse_filter(&deep), Err(Error::InvalidFilter { .. })));
        let nots = format!("{}a = 1", "not ".repeat(3000));
        assert!(matches!(parse_filter(&nots), Err(Error::InvalidFilter { .. })));
    }
}
