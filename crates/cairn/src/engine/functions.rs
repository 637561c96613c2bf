//! The SQL functions cairn registers on every connection it opens. Index expressions and
//! stored queries call them, so they are part of the on-disk format: `cairn_body` (a stored
//! body as JSON text), `cairn_ts` (a date-time as microseconds since the epoch) and
//! `cairn_contains` (case-insensitive substring).

use rusqlite::Connection;

use crate::engine::timestamp::{datetime_micros, parse_datetime};
use crate::error::Result;

/// Case-insensitive substring test, as the SQL function `cairn_contains` does it.
pub(crate) fn contains(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// Registers cairn's SQL functions on a connection.
pub(crate) fn register(conn: &Connection) -> Result<()> {
    use rusqlite::functions::FunctionFlags;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("cairn_contains", 2, flags, |ctx| {
        let haystack = ctx.get_raw(0).as_str().ok();
        let needle = ctx.get_raw(1).as_str().ok();
        Ok(match (haystack, needle) {
            (Some(h), Some(n)) => Some(contains(h, n)),
            _ => None,
        })
    })?;
    crate::engine::body::register_body_function(conn)?;
    conn.create_scalar_function("cairn_ts", 1, flags, |ctx| {
        Ok(ctx.get_raw(0).as_str().ok().and_then(parse_datetime).map(datetime_micros))
    })?;
    Ok(())
}
