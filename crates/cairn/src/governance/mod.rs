//! Governance: the encryption keys and the audit trail.

pub(crate) mod audit;
pub(crate) mod keys;
