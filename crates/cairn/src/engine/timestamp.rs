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

    pub(crate) fn to_datetime(self) -> Option<OffsetDateTime> {
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

/// Reads what [`Serialize`] writes: an RFC 3339 date-time (to the millisecond).
impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let dt =
            parse_datetime(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a date-time")))?;
        Ok(Timestamp((dt.unix_timestamp_nanos() / 1_000_000) as i64))
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

/// The canonical text of a date-time: UTC, `Z`, milliseconds, or microseconds when given
/// (finer digits are dropped: date-times are kept to the microsecond, so that they fit an
/// integer index column exactly). Equal instants have equal text, so checksums and unique
/// indexes see one value.
pub(crate) fn format_datetime(dt: OffsetDateTime) -> String {
    let dt = dt.to_offset(time::UtcOffset::UTC);
    let micros = dt.nanosecond() / 1_000;
    let (frac, digits) = if micros.is_multiple_of(1_000) { (micros / 1_000, 3) } else { (micros, 6) };
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

/// Microseconds since the Unix epoch: how date-times are stored in index columns. Finer
/// digits are dropped toward the past (floor), as [`format_datetime`] drops them, so a
/// literal and a stored value written with the same text are the same instant, also before
/// 1970.
pub(crate) fn datetime_micros(dt: OffsetDateTime) -> i64 {
    dt.unix_timestamp_nanos().div_euclid(1_000) as i64
}

/// The canonical text of a microsecond timestamp (the inverse of [`datetime_micros`]).
pub(crate) fn micros_to_text(micros: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).ok().map(format_datetime)
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
        let dt = parse_datetime("2025-10-13T10:30:00.123456789Z").expect("valid");
        assert_eq!(format_datetime(dt), "2025-10-13T10:30:00.123456Z", "kept to the microsecond");
        assert!(parse_datetime("yesterday").is_none());
        assert!(parse_datetime("2025-13-01").is_none());
    }

    #[test]
    fn timestamps_display_as_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
    }
}
