//! Attachments: the content-addressed blob store.

pub(crate) mod blob;
