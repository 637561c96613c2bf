//! Data safety: backups, restore, check, repair and the rebuild, the stray-file guard and
//! leftovers of interrupted work.

pub(crate) mod backup;
pub(crate) mod catalog;
pub(crate) mod check;
pub(crate) mod guard;
pub(crate) mod leftovers;
pub(crate) mod objects;
pub(crate) mod open;
pub(crate) mod rebuild;
pub(crate) mod repair;
pub(crate) mod restore;
pub(crate) mod salvage;
