//! Stream tickets: a browser's `EventSource` cannot send an Authorization header, so a
//! signed-in caller trades its token for a ticket — short-lived, good for one connection —
//! and puts that in the stream's URL, where a leaked copy is worth little: it expires within
//! seconds and is gone once used.
//!
//! Tickets live in the handle's memory only, as the SHA-256 of their secret (like tokens),
//! with the principal that asked and an expiry. Redeeming one removes it and checks the
//! token behind it again ([`Store::recheck`]): a ticket outlives no revocation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;

use crate::access::tokens::Principal;
use crate::engine::hash::sha256;
use crate::engine::store::Store;
use crate::error::{Error, Result};

/// The most tickets outstanding at once per store; expired ones are dropped first.
const MAX_OUTSTANDING: usize = 10_000;

/// The longest a ticket may live.
pub const MAX_TICKET_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Tickets {
    issued: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

fn refused() -> Error {
    Error::Unauthenticated { reason: "the ticket is unknown, already used or expired".into() }
}

impl Store {
    /// A single-use ticket for `principal`, good for `lifetime` (at most
    /// [`MAX_TICKET_LIFETIME`]).
    pub fn issue_ticket(&self, principal: &Principal, lifetime: Duration) -> Result<String> {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let ticket = format!("cairn_t_{}", URL_SAFE_NO_PAD.encode(secret));
        let tickets = self.extensions().get_or_default::<Tickets>();
        let mut issued = tickets.issued.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        issued.retain(|_, (_, expires)| *expires > now);
        if issued.len() >= MAX_OUTSTANDING {
            return Err(Error::NotAllowed(format!(
                "{MAX_OUTSTANDING} stream tickets are outstanding; use or let some expire first"
            )));
        }
        issued.insert(sha256(ticket.as_bytes()), (principal.clone(), now + lifetime.min(MAX_TICKET_LIFETIME)));
        Ok(ticket)
    }

    /// The principal a ticket was issued to, as their token lets them in now; the ticket is
    /// used up, whatever the answer.
    pub fn redeem_ticket(&self, ticket: &str) -> Result<Principal> {
        let tickets = self.extensions().get_or_default::<Tickets>();
        let found = tickets.issued.lock().unwrap_or_else(|p| p.into_inner()).remove(&sha256(ticket.as_bytes()));
        match found {
            Some((principal, expires)) if expires > Instant::now() => self.recheck(&principal),
            _ => Err(refused()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_is_good_once_and_not_after_it_expires_or_its_token_is_revoked() {
        let (_dir, store) = crate::engine::store::temp_store();
        store.create_user("ana", "a good password", "user").expect("user");
        let session = store.login("ana", "a good password", &Default::default()).expect("login");
        let ana = store.authenticate(&session.secret).expect("principal");
        let ticket = store.issue_ticket(&ana, Duration::from_secs(30)).expect("ticket");
        assert!(ticket.starts_with("cairn_t_"));
        assert_eq!(store.redeem_ticket(&ticket).expect("redeemed").user.name, "ana");
        let again = store.redeem_ticket(&ticket).expect_err("used");
        assert_eq!(again.kind(), crate::ErrorKind::Unauthenticated);
        assert!(store.redeem_ticket("cairn_t_made_up").is_err());
        let expired = store.issue_ticket(&ana, Duration::ZERO).expect("ticket");
        assert!(store.redeem_ticket(&expired).is_err(), "expired");
        let pending = store.issue_ticket(&ana, Duration::from_secs(30)).expect("ticket");
        store.revoke_token(&ana.token.id).expect("revoke");
        assert!(store.redeem_ticket(&pending).is_err(), "its token was revoked");
    }
}
