//! The engine: opening a data directory, the write lock, the write path (group commit), the
//! read pool, SQL helpers, file helpers, and the on-disk format with its upgrades.

pub(crate) mod body;
pub(crate) mod canonical;
pub(crate) mod change;
pub(crate) mod extensions;
pub(crate) mod foreign;
pub(crate) mod fsutil;
pub(crate) mod functions;
pub(crate) mod hash;
pub(crate) mod hub;
pub(crate) mod keyring;
pub(crate) mod layout;
pub(crate) mod lineage;
pub(crate) mod lock;
pub(crate) mod owner;
pub(crate) mod pool;
pub(crate) mod sql;
pub(crate) mod store;
pub(crate) mod timestamp;
pub(crate) mod trail;
pub(crate) mod writer;
