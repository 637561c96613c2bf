//! Portability: exports, imports (cairn's own and other applications'), reports.

pub(crate) mod archive;
pub(crate) mod export;
pub(crate) mod import;
pub(crate) mod load;
pub(crate) mod report;
pub(crate) mod transcript;
