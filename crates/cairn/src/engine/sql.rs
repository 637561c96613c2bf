//! The one place where names from schemas become SQL identifiers.
//!
//! Values never enter SQL text: they are bound as `?N` parameters. Identifiers cannot be
//! bound, so every collection and field name is checked against a strict pattern when its
//! schema is created, and quoted here again before use.

/// True when `name` is a valid collection or field name: `[a-z][a-z0-9_]*`, at most 48 bytes.
pub(crate) fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 48
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// Quotes an identifier that has passed [`is_valid_name`] (or is built from such names).
pub(crate) fn quote(ident: &str) -> String {
    debug_assert!(ident.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "unvalidated identifier {ident}");
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The table holding a collection's records.
pub(crate) fn records_table(collection: &str) -> String {
    format!("c_{collection}")
}

/// The column holding an indexed or unique field's value.
pub(crate) fn value_column(field: &str) -> String {
    format!("v_{field}")
}

/// The index over a value column.
pub(crate) fn value_index(collection: &str, field: &str) -> String {
    format!("c_{collection}__v_{field}")
}

/// The table of indexed tags: one row per (field, tag, record).
pub(crate) fn tags_table(collection: &str) -> String {
    format!("c_{collection}__tags")
}

/// Column `i` of a row as an owned value. rusqlite's own conversion panics on TEXT that is not
/// UTF-8, which damaged data can hold; here such text comes back as a BLOB of its bytes.
pub(crate) fn value_at(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<rusqlite::types::Value> {
    use rusqlite::types::{Value, ValueRef};
    Ok(match row.get_ref(i)? {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Integer(n),
        ValueRef::Real(x) => Value::Real(x),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(text) => Value::Text(text.to_string()),
            Err(_) => Value::Blob(t.to_vec()),
        },
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

/// Column `i` as text, with bytes that are not UTF-8 replaced: for reading rows that may be
/// damaged, where the checksum that covers the text then reports the damage.
pub(crate) fn text_at(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<String> {
    use rusqlite::types::ValueRef;
    Ok(match row.get_ref(i)? {
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(x) => x.to_string(),
        ValueRef::Null => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_strict() {
        assert!(is_valid_name("sessions"));
        assert!(is_valid_name("ai_settings2"));
        for bad in ["", "Sessions", "1abc", "a-b", "a b", "a\"b", "x;drop", &"a".repeat(49)] {
            assert!(!is_valid_name(bad), "{bad:?} accepted");
        }
    }
}
