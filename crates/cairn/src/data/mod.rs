//! The data layer: collections and their schemas, records, the change log, indexes,
//! full-text search, queries, settings, batches, body compression and idempotency keys.

pub(crate) mod attachments;
pub(crate) mod batch;
pub(crate) mod builtin_settings;
pub(crate) mod changes;
pub(crate) mod collection;
pub(crate) mod collections;
pub(crate) mod compress;
pub(crate) mod condition;
pub(crate) mod encryption;
pub(crate) mod feed;
pub(crate) mod grants;
pub(crate) mod idempotency;
pub(crate) mod ids;
pub(crate) mod index;
pub(crate) mod query;
pub(crate) mod record;
pub(crate) mod rules;
pub(crate) mod schema;
pub(crate) mod search;
pub(crate) mod settings;
pub(crate) mod space;
