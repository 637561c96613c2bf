//! Record ids: what an id may be, and new ones.

use crate::error::{Error, Result};

/// The longest record id accepted.
pub const MAX_ID_LEN: usize = 128;

/// Checks a record id: 1 to 128 characters of `A-Z a-z 0-9 _ - . :`, starting with a letter
/// or digit. Ids go into file names, URLs and command lines, so the set is kept plain.
pub fn validate_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        Some("an id cannot be empty".to_string())
    } else if id.len() > MAX_ID_LEN {
        Some(format!("an id is at most {MAX_ID_LEN} characters"))
    } else if !id.as_bytes()[0].is_ascii_alphanumeric() {
        Some("an id starts with a letter or digit".to_string())
    } else {
        id.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
            .map(|c| format!("character {c:?} is not allowed (use A-Z a-z 0-9 _ - . :)"))
    };
    match reason {
        Some(reason) => Err(Error::InvalidId { id: id.to_string(), reason }),
        None => Ok(()),
    }
}

/// A new time-sortable id (UUIDv7).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        for ok in ["a", "session-1697040000000-0.123", "A:b_c", &"x".repeat(128)] {
            validate_id(ok).expect(ok);
        }
        for bad in ["", "-a", ".hidden", "a/b", "../etc", "a b", "é", &"x".repeat(129)] {
            assert!(matches!(validate_id(bad), Err(Error::InvalidId { .. })), "{bad:?}");
        }
        validate_id(&new_id()).expect("generated ids are valid");
    }
}
