//! Millisecond UTC timestamps, stored as integers and shown as RFC 3339.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A point in time with millisecond precision (milliseconds since the Unix epoch, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    fn to_datetime(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000).ok()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(dt) => f.write_str(&format_datetime(dt)),
            None => write!(f, "@{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses an RFC 3339 date-time or a plain `YYYY-MM-DD` date (midnight UTC).
pub(crate) fn parse_datetime(text: &str) -> Option<OffsetDateTime> {
    if let Ok(dt) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(dt);
    }
    let date = time::Date::parse(text, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(date.midnight().assume_utc())
}

/// The canonical text of a date-time: UTC, `Z`, milliseconds unless finer precision is present.
/// Canonical forms of equal instants are equal, so checksums and uniqueness see one value.
pub(crate) fn format_datetime(dt: OffsetDateTime) -> String {
    let dt = dt.to_offset(time::UtcOffset::UTC);
    let nanos = dt.nanosecond();
    let (frac, digits) = if nanos.is_multiple_of(1_000_000) {
        (nanos / 1_000_000, 3)
    } else if nanos.is_multiple_of(1_000) {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:0width$}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        frac,
        width = digits
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_normalise_to_utc_millis() {
        let dt = parse_datetime("2025-10-13T12:30:00+02:00").expect("valid");
        assert_eq!(format_datetime(dt), "2025-10-13T10:30:00.000Z");
        let dt = parse_datetime("2025-10-13").expect("valid");
        assert_eq!(format_datetime(dt), "2025-10-13T00:00:00.000Z");
        let dt = parse_datetime("2025-10-13T10:30:00.123456Z").expect("valid");
        assert_eq!(format_datetime(dt), "2025-10-13T10:30:00.123456Z");
        assert!(parse_datetime("yesterday").is_none());
        assert!(parse_datetime("2025-13-01").is_none());
    }

    #[test]
    fn timestamps_display_as_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
    }
}
