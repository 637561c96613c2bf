//! The query engine against the reference evaluator: random schemas (which fields are
//! indexed), random records, random filters and sorts; every page walked by cursor and by
//! offset must equal filtering and sorting all records in memory.

use std::cmp::Ordering;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::eval::{sql_cmp, value_of};
use super::*;
use crate::data::condition::Condition;
use crate::{CollectionSchema, Store, StoreOptions};

/// Fields of the generated schema: name and type; `indexed` is chosen per case.
const FIELDS: [(&str, FieldType); 7] = [
    ("s", FieldType::Text),
    ("n", FieldType::Integer),
    ("x", FieldType::Number),
    ("b", FieldType::Bool),
    ("d", FieldType::Datetime),
    ("t", FieldType::Tags),
    ("j", FieldType::Json),
];

fn schema(indexed: &[bool]) -> CollectionSchema {
    let fields = FIELDS
        .iter()
        .zip(indexed)
        .map(|((name, kind), on)| FieldDef { indexed: *on && *kind != FieldType::Json, ..FieldDef::new(*name, *kind) })
        .collect();
    CollectionSchema { name: "items".into(), description: String::new(), fields, rules: Default::default() }
}

const WORDS: [&str; 5] = ["alpha", "Beta", "gamma", "élan", "ALPHA"];
const DATES: [&str; 4] =
    ["2025-01-01T00:00:00.000Z", "2025-06-01T12:00:00.000Z", "2025-06-01T12:00:00.000500Z", "2026-03-15T08:30:00.000Z"];

fn record() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(0..WORDS.len()),
        proptest::option::of(-3i64..4),
        proptest::option::of(prop_oneof![
            (-2i64..3).prop_map(|i| json!(i)),
            (-20i64..20).prop_map(|i| json!(i as f64 / 4.0))
        ]),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0..DATES.len()),
        proptest::option::of(proptest::sample::subsequence(vec!["red", "green", "blue"], 0..3)),
        proptest::option::of((proptest::option::of(-2i64..3), proptest::option::of(0..WORDS.len()))),
    )
        .prop_map(|(s, n, x, b, d, t, j)| {
            let mut m = Map::new();
            if let Some(s) = s {
                m.insert("s".into(), json!(WORDS[s]));
            }
            if let Some(n) = n {
                m.insert("n".into(), json!(n));
            }
            if let Some(x) = x {
                m.insert("x".into(), x);
            }
            if let Some(b) = b {
                m.insert("b".into(), json!(b));
            }
            if let Some(d) = d {
                m.insert("d".into(), json!(DATES[d]));
            }
            if let Some(t) = t {
                m.insert("t".into(), json!(t));
            }
            if let Some((a, w)) = j {
                let mut inner = Map::new();
                if let Some(a) = a {
                    inner.insert("a".into(), json!(a));
                }
                if let Some(w) = w {
                    inner.insert("w".into(), json!(WORDS[w]));
                }
                m.insert("j".into(), Value::Object(inner));
            }
            Value::Object(m)
        })
}

/// A random filter, as text.
fn predicate() -> impl Strategy<Value = String> {
    let op = proptest::sample::select(vec!["=", "!=", "<", "<=", ">", ">="]);
    let word = (0..WORDS.len()).prop_map(|i| format!("{:?}", WORDS[i]));
    prop_oneof![
        (op.clone(), word.clone()).prop_map(|(o, w)| format!("s {o} {w}")),
        (op.clone(), -3i64..4).prop_map(|(o, v)| format!("n {o} {v}")),
        (op.clone(), -8i64..8).prop_map(|(o, v)| format!("x {o} {}", v as f64 / 4.0)),
        (prop_oneof![Just("="), Just("!=")], any::<bool>()).prop_map(|(o, v)| format!("b {o} {v}")),
        (op.clone(), 0..DATES.len()).prop_map(|(o, i)| format!("d {o} {}", DATES[i])),
        (op.clone()).prop_map(|o| format!("d {o} 2025-06-01")),
        proptest::sample::select(vec!["red", "green", "blue", "pink"]).prop_map(|t| format!("t has {t:?}")),
        (op.clone(), -2i64..3).prop_map(|(o, v)| format!("j.a {o} {v}")),
        (op, word.clone()).prop_map(|(o, w)| format!("j.w {o} {w}")),
        proptest::sample::subsequence(vec![-1i64, 0, 1, 2], 1..3)
            .prop_map(|vs| format!("n in ({})", vs.iter().map(i64::to_string).collect::<Vec<_>>().join(", "))),
        // `not in` is a comparison: a record without the field matches neither it nor `in`.
        proptest::sample::subsequence(vec![-1i64, 0, 1, 2], 1..3)
            .prop_map(|vs| format!("n not in ({})", vs.iter().map(i64::to_string).collect::<Vec<_>>().join(", "))),
        proptest::sample::subsequence(WORDS.to_vec(), 1..3).prop_map(|ws| format!(
            "s not in ({})",
            ws.iter().map(|w| format!("{w:?}")).collect::<Vec<_>>().join(", ")
        )),
        proptest::sample::select(vec!["al", "ALP", "É", "a", "zzz"]).prop_map(|w| format!("s contains {w:?}")),
        proptest::sample::select(vec!["s", "n", "x", "b", "d", "t", "j", "j.a"]).prop_flat_map(
            |f| any::<bool>().prop_map(move |not| format!("{f} is {}null", if not { "not " } else { "" }))
        ),
    ]
}

fn filter() -> impl Strategy<Value = String> {
    predicate().prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) and ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) or ({b})")),
            inner.prop_map(|a| format!("not ({a})")),
        ]
    })
}

fn sort() -> impl Strategy<Value = String> {
    let key = proptest::sample::select(vec!["s", "-s", "n", "-n", "x", "-x", "b", "d", "-d", "j.a", "-j.w"]);
    proptest::collection::vec(key, 0..3).prop_map(|keys| keys.join(","))
}

/// The reference: all live records, filtered and sorted in memory.
fn expected(
    schema: &CollectionSchema,
    records: &[(String, Map<String, Value>)],
    filters: &[&str],
    sort: &str,
) -> Vec<String> {
    let exprs: Vec<Expr> = filters.iter().map(|f| parse_filter(f).expect("generated filters parse")).collect();
    let keys: Vec<(Vec<String>, bool)> = sort
        .split(',')
        .filter(|k| !k.is_empty())
        .map(|k| match k.strip_prefix('-') {
            Some(rest) => (rest.split('.').map(String::from).collect(), true),
            None => (k.split('.').map(String::from).collect(), false),
        })
        .collect();
    let mut hits: Vec<&(String, Map<String, Value>)> =
        records.iter().filter(|(_, body)| exprs.iter().all(|e| eval::matches(schema, e, body))).collect();
    let key_values = |body: &Map<String, Value>| -> Vec<SqlVal> {
        keys.iter().map(|(path, _)| value_of(&resolve(schema, path, 0, "").expect("sort key"), body)).collect()
    };
    hits.sort_by(|(ida, a), (idb, b)| {
        let (ka, kb) = (key_values(a), key_values(b));
        for ((x, y), (_, descending)) in ka.iter().zip(&kb).zip(&keys) {
            let ord = match (x, y) {
                (SqlVal::Null, SqlVal::Null) => Ordering::Equal,
                (SqlVal::Null, _) => Ordering::Greater,
                (_, SqlVal::Null) => Ordering::Less,
                _ if *descending => sql_cmp(y, x),
                _ => sql_cmp(x, y),
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        ida.as_bytes().cmp(idb.as_bytes())
    });
    hits.into_iter().map(|(id, _)| id.clone()).collect()
}

fn check_case(
    indexed: Vec<bool>,
    records: Vec<Value>,
    filter: Option<String>,
    extra: Option<String>,
    form: u8,
    sort: String,
    limit: usize,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    let schema = schema(&indexed);
    store.create_collection(schema.clone()).expect("collection");
    let bodies = records.clone();
    let stored: Vec<(String, Map<String, Value>)> = store
        .transaction(move |tx| {
            let mut out = Vec::new();
            for (i, body) in bodies.into_iter().enumerate() {
                let id = format!("r{:02}", (i * 7) % 31);
                if out.iter().any(|(existing, _)| existing == &id) {
                    continue;
                }
                let record = tx.create("items", Some(&id), body)?;
                out.push((id, record.body));
            }
            Ok(out)
        })
        .expect("insert");
    // A deleted record must never appear.
    if let Some((id, _)) = stored.first() {
        store.delete("items", id, None).expect("delete");
    }
    let live: Vec<(String, Map<String, Value>)> = stored.iter().skip(1).cloned().collect();
    let filters: Vec<&str> = filter.iter().chain(extra.iter()).map(String::as_str).collect();
    let want = expected(&schema, &live, &filters, &sort);

    // The filter as text, parsed once, or built as an expression; the extra one ANDed on.
    let condition = |text: &str| -> Condition {
        match form % 3 {
            0 => Condition::from(text),
            1 => Condition::parse(text).expect("parses"),
            _ => Condition::from_expr(&parse_filter(text).expect("parses")).expect("written back"),
        }
    };
    let fields = Some(FIELDS.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>());
    let mut query =
        Query { filter: filter.as_deref().map(condition), sort: Some(sort.clone()), limit, fields, ..Query::default() };
    if let Some(extra) = &extra {
        query = query.restrict(condition(extra));
    }
    // By cursor.
    let mut got = Vec::new();
    let mut page = store.query("items", &query).expect("query");
    loop {
        for row in &page.rows {
            let body = &live.iter().find(|(id, _)| id == &row.id).expect("a live record").1;
            prop_assert_eq!(&row.fields, body, "projection of {}", row.id);
        }
        got.extend(page.rows.iter().map(|r| r.id.clone()));
        prop_assert!(got.len() <= want.len(), "more rows than expected: {got:?} vs {want:?}");
        let Some(cursor) = page.next_cursor.clone() else { break };
        page = store.query("items", &Query { cursor: Some(cursor), ..query.clone() }).expect("next page");
    }
    prop_assert_eq!(&got, &want, "filter {:?} and {:?} sort {:?}", filter, extra, sort);
    // In memory, the condition agrees with the reference record by record.
    if let Some(condition) = &query.filter {
        for (id, body) in &live {
            prop_assert_eq!(condition.matches(&schema, body).expect("checked"), want.contains(id), "{}", id);
        }
    }
    // By offset.
    let offset = limit.min(want.len());
    let page = store.query("items", &Query { offset: Some(offset), ..query.clone() }).expect("offset page");
    let by_offset: Vec<String> = page.rows.iter().map(|r| r.id.clone()).collect();
    prop_assert_eq!(by_offset, want.iter().skip(offset).take(limit).cloned().collect::<Vec<_>>());
    if extra.is_none() {
        prop_assert_eq!(store.count("items", filter.as_deref()).expect("count"), want.len() as u64);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn indexed_and_scanned_results_equal_the_reference(
        indexed in proptest::collection::vec(any::<bool>(), FIELDS.len()),
        records in proptest::collection::vec(record(), 0..25),
        filter in proptest::option::weighted(0.9, filter()),
        extra in proptest::option::weighted(0.5, filter()),
        form in any::<u8>(),
        sort in sort(),
        limit in 1usize..8,
    ) {
        check_case(indexed, records, filter, extra, form, sort, limit)?;
    }

    #[test]
    fn a_filter_written_back_parses_to_the_same_expression(filter in filter()) {
        let expr = parse_filter(&filter).expect("generated filters parse");
        let again = parse_filter(&expr.to_string()).expect("written back");
        prop_assert_eq!(crate::data::condition::tests::strip(&again), crate::data::condition::tests::strip(&expr));
    }

    #[test]
    fn no_filter_text_panics(text in "\\PC{0,80}") {
        let _ = parse_filter(&text);
    }

    #[test]
    fn no_filter_made_of_filter_tokens_panics(
        parts in proptest::collection::vec(proptest::sample::select(vec![
            "s", "j.a", "(", ")", "and", "or", "not", "=", "!=", "<", "in", "contains", "has", "is", "null",
            "\"x", "\"y\"", "'z'", "1", "-2.5e3", "2025-06-01", "2025-13-01", ",", ".", "true", "\\", "é",
        ]), 0..20)
    ) {
        let text = parts.join(" ");
        let _ = parse_filter(&text);
        let schema = schema(&[true; 7]);
        let _ = Filter::new(&schema, &text);
    }
}

#[test]
fn not_in_and_not_equal_agree_on_a_missing_field_and_not_in_parentheses_does_not() {
    let (_dir, store) = crate::engine::store::temp_store();
    store.create_collection(schema(&[false; 7])).expect("create");
    store.create_with_id("items", "with", json!({"s": "b"})).expect("with s");
    store.create_with_id("items", "without", json!({"n": 1})).expect("without s");
    let ids = |filter: &str| -> Vec<String> {
        let query = Query { filter: Some(filter.into()), ..Query::default() };
        store.query("items", &query).expect(filter).rows.into_iter().map(|r| r.id).collect()
    };
    assert_eq!(ids(r#"s not in ("a")"#), ["with"]);
    assert_eq!(ids(r#"s != "a""#), ["with"]);
    assert_eq!(ids(r#"not (s in ("a"))"#), ["with", "without"], "`not` negates the whole condition");
}

#[test]
fn long_chains_deep_nesting_and_fine_times_before_1970() {
    let (_dir, store) = crate::engine::store::temp_store();
    store.create_collection(schema(&[true; 7])).expect("create");
    for i in 0..5 {
        store.create_with_id("items", &format!("r{i}"), json!({"n": i})).expect("create");
    }
    // A thousand predicates joined by `or`, inside the 16 KiB limit.
    let long = (0..1000).map(|i| format!("n = {}", i % 3)).collect::<Vec<_>>().join(" or ");
    assert!(long.len() < 16 * 1024);
    let page = store.query("items", &Query { filter: Some(long.into()), ..Query::default() }).expect("a long chain");
    assert_eq!(page.rows.len(), 3);
    let long_and = (0..1000).map(|_| "n >= 0").collect::<Vec<_>>().join(" and ");
    assert_eq!(
        store.query("items", &Query { filter: Some(long_and.into()), ..Query::default() }).expect("and").rows.len(),
        5
    );
    // 64 levels of nesting, as documented; 65 refused at a position.
    let nested = |levels: usize| format!("{}n = 1{}", "(".repeat(levels), ")".repeat(levels));
    store.query("items", &Query { filter: Some(nested(64).into()), ..Query::default() }).expect("64 levels");
    let err =
        store.query("items", &Query { filter: Some(nested(65).into()), ..Query::default() }).expect_err("65 levels");
    assert!(matches!(err, Error::InvalidFilter { position: 64, .. }), "{err}");
    // A date-time with digits finer than a microsecond, before 1970: the literal and the
    // stored value written with the same text are the same instant.
    let text = "1969-12-31T23:59:59.9999995Z";
    store.create_with_id("items", "fine", json!({"d": text})).expect("fine");
    store.create_with_id("items", "epoch", json!({"d": "1970-01-01T00:00:00Z"})).expect("epoch");
    let query = Query { filter: Some(format!("d = {text}").into()), ..Query::default() };
    let found: Vec<String> = store.query("items", &query).expect("d").rows.into_iter().map(|r| r.id).collect();
    assert_eq!(found, ["fine"]);
}
