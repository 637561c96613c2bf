//! Access (SRV-3): who may use a store through the server — users with roles and Argon2id
//! passwords, the sessions signing in makes, and API keys for programs.
//!
//! Nothing stored here lets anyone in: a password is kept as its Argon2id hash (a PHC
//! string, with the crate's default cost: 19 MiB, 2 passes), a token as the SHA-256 of its
//! random secret. A token is shown once, when it is made. Signing in with an unknown name, a
//! wrong password or a disabled user fails with the same error after the same work (a
//! dummy hash is verified when the name is unknown), so an answer tells nothing about which.
//! Every change (users made, disabled, passwords set, tokens made and revoked) is in the
//! audit trail, written in the same transaction.
//!
//! The tables (`cairn_users`, `cairn_tokens`, format 7) are in every backup and kept by the
//! rebuild; exports do not carry them.

pub(crate) mod attachments;
pub(crate) mod grants;
pub(crate) mod realtime;
pub(crate) mod rules;
pub(crate) mod tickets;
pub(crate) mod tokens;
pub(crate) mod users;
pub(crate) mod watch;

use crate::error::{Error, Result};

/// The role that may do everything.
pub(crate) const ADMIN_ROLE: &str = "admin";
/// The role of a user made without one.
pub(crate) const USER_ROLE: &str = "user";

/// The shortest password accepted, in characters.
pub(crate) const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password accepted, in characters (at most 1 KiB of UTF-8: hashing is
/// deliberately slow per byte too).
pub(crate) const MAX_PASSWORD_CHARS: usize = 256;

pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(
            "user name",
            format!("{name:?} is not a user name: 1 to 64 of letters, digits and . _ - @"),
        ))
    }
}

pub(crate) fn check_role(role: &str) -> Result<()> {
    let mut chars = role.chars();
    let ok = role.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(
            "role",
            format!("{role:?} is not a role: a lowercase letter, then up to 31 lowercase letters, digits or _"),
        ))
    }
}

pub(crate) fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::invalid_input(
            "password",
            format!("a password needs at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return Err(Error::invalid_input(
            "password",
            format!("a password may have at most {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roles_and_passwords_are_checked() {
        for ok in ["ana", "ana.b-c_d@example.org", "A1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "an a", "ana/../x", &"x".repeat(65), "ana\n"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for ok in ["admin", "user", "editor_2"] {
            assert!(check_role(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Admin", "2nd", "a-b", &"r".repeat(33)] {
            assert!(check_role(bad).is_err(), "{bad:?}");
        }
        assert!(check_password("1234567").is_err() && check_password("12345678").is_ok());
        assert!(check_password(&"p".repeat(MAX_PASSWORD_CHARS + 1)).is_err());
        assert!(check_password(&"\u{1F600}".repeat(MAX_PASSWORD_CHARS)).is_ok(), "256 characters of 4 bytes each");
    }
}
