//! A store's lineage: which store a change-log position belongs to, and whether the log it
//! names is still the one that was followed.
//!
//! A seq names one change forever within one history. Two things end a history: another
//! store (its seqs mean other changes), and a restore (the log goes back to an earlier point
//! and then grows again with different changes under the same seqs). An [`Epoch`] names a
//! history: the store's id, drawn when it was made, and its restore generation, which every
//! restore raises above both the live store's and the backup's. A follower keeps the epoch
//! with its last seq and resumes only when both still hold.

use std::fmt;
use std::str::FromStr;

use rusqlite::{Connection, OptionalExtension};

use crate::engine::store::Store;
use crate::error::{Error, Result};

const STORE_ID_KEY: &str = "store_id";
const GENERATION_KEY: &str = "restore_generation";

/// One history of one store: its id and restore generation, written `<store id>.<generation>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Epoch {
    /// Drawn at random when the store was made; kept by backups, restores and repairs.
    pub store_id: String,
    /// How many restores brought this store back to an earlier state.
    pub generation: u64,
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.store_id, self.generation)
    }
}

impl FromStr for Epoch {
    type Err = Error;

    fn from_str(text: &str) -> Result<Epoch> {
        let bad = || Error::InvalidInput {
            source_name: "epoch".into(),
            reason: format!("{text:?} is not an epoch (<store id>.<generation>)"),
        };
        let (id, generation) = text.rsplit_once('.').ok_or_else(bad)?;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad());
        }
        Ok(Epoch { store_id: id.to_string(), generation: generation.parse().map_err(|_| bad())? })
    }
}

fn meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn.query_row("SELECT value FROM cairn_meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

/// The epoch recorded in a store's database.
pub(crate) fn read(conn: &Connection) -> Result<Epoch> {
    let corrupt = |detail: &str| Error::Corruption { location: "cairn_meta".into(), detail: detail.into() };
    let store_id = meta(conn, STORE_ID_KEY)?.ok_or_else(|| corrupt("the store id is missing"))?;
    let generation = meta(conn, GENERATION_KEY)?
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| corrupt("the restore generation is missing or not a number"))?;
    Ok(Epoch { store_id, generation })
}

/// Marks a database just restored: its generation becomes one more than both its own and
/// `live` (the generation of the store it replaces, when that could be read).
pub(crate) fn mark_restored(conn: &Connection, live: Option<u64>) -> Result<u64> {
    let own = read(conn)?.generation;
    let next = own.max(live.unwrap_or(0)) + 1;
    conn.execute(
        "UPDATE cairn_meta SET value = ?1 WHERE key = ?2",
        rusqlite::params![next.to_string(), GENERATION_KEY],
    )?;
    Ok(next)
}

impl Store {
    /// The history this handle's change log belongs to; see [`Epoch`].
    pub fn epoch(&self) -> Result<Epoch> {
        read(&*self.reader()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_reads_back_and_rejects_what_is_not_one() {
        let epoch = Epoch { store_id: "0af3".into(), generation: 2 };
        assert_eq!(epoch.to_string().parse::<Epoch>().expect("parse"), epoch);
        for bad in ["", "abc", ".1", "a.b", "a.-1", "a b.1", "a.1.2"] {
            assert!(bad.parse::<Epoch>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stores_get_their_own_ids_and_a_restore_raises_the_generation() {
        let (_a, one) = crate::engine::store::temp_store();
        let (_b, two) = crate::engine::store::temp_store();
        let (e1, e2) = (one.epoch().expect("epoch"), two.epoch().expect("epoch"));
        assert_ne!(e1.store_id, e2.store_id);
        assert_eq!((e1.generation, e1.store_id.len()), (0, 32));
        let conn = rusqlite::Connection::open_in_memory().expect("db");
        conn.execute_batch(include_str!("format/0001_initial.sql")).expect("meta");
        conn.execute_batch(include_str!("format/0010_lineage.sql")).expect("lineage");
        assert_eq!(mark_restored(&conn, Some(4)).expect("mark"), 5);
        assert_eq!(mark_restored(&conn, None).expect("mark"), 6);
    }
}
