//! What a commit changed: the entries the write path publishes and the change log keeps
//! (data/changes.rs stores and reads them).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::timestamp::Timestamp;

/// A position in the change log. Every committed change takes the next one, so seqs are
/// strictly increasing and without gaps, and a seq names its entry forever (backups,
/// repairs and feeds refer to entries by it). `Seq(0)` is the position before the first
/// change. Serialised as a bare number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `seq + n`: the position `n` changes later.
impl std::ops::Add<u64> for Seq {
    type Output = Seq;
    fn add(self, n: u64) -> Seq {
        Seq(self.0 + n)
    }
}

impl From<u64> for Seq {
    fn from(seq: u64) -> Seq {
        Seq(seq)
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChangeOp {
    /// A record was created.
    Create,
    /// A record's body was replaced.
    Replace,
    /// A record was patched.
    Patch,
    /// A record was soft-deleted.
    Delete,
    /// A soft-deleted record was removed for good.
    Purge,
    /// A record was brought back to an earlier version.
    Revert,
    /// A record's last change was undone.
    Undo,
    /// A record's last undo was redone.
    Redo,
    /// A collection was created (`after` is its schema).
    CollectionCreate,
    /// A collection's schema changed.
    CollectionUpdate,
    /// A collection was dropped (`before` is its schema).
    CollectionDrop,
    /// A setting was set (`id` is its key).
    SettingSet,
    /// A setting went back to its default.
    SettingReset,
    /// A setting was defined.
    SettingDefine,
    /// A record was shared (or a grant's access changed); `after` is the grant:
    /// `{"grant", "grantee_kind", "grantee", "access"}` (a user grantee by id).
    Grant,
    /// A grant was withdrawn; `after` is the grant that was.
    Revoke,
}

impl ChangeOp {
    /// The op's name as stored in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Create => "create",
            ChangeOp::Replace => "replace",
            ChangeOp::Patch => "patch",
            ChangeOp::Delete => "delete",
            ChangeOp::Purge => "purge",
            ChangeOp::Revert => "revert",
            ChangeOp::Undo => "undo",
            ChangeOp::Redo => "redo",
            ChangeOp::CollectionCreate => "collection_create",
            ChangeOp::CollectionUpdate => "collection_update",
            ChangeOp::CollectionDrop => "collection_drop",
            ChangeOp::SettingSet => "setting_set",
            ChangeOp::SettingReset => "setting_reset",
            ChangeOp::SettingDefine => "setting_define",
            ChangeOp::Grant => "grant",
            ChangeOp::Revoke => "revoke",
        }
    }

    pub(crate) const ALL: [ChangeOp; 16] = [
        ChangeOp::Create,
        ChangeOp::Replace,
        ChangeOp::Patch,
        ChangeOp::Delete,
        ChangeOp::Purge,
        ChangeOp::Revert,
        ChangeOp::Undo,
        ChangeOp::Redo,
        ChangeOp::CollectionCreate,
        ChangeOp::CollectionUpdate,
        ChangeOp::CollectionDrop,
        ChangeOp::SettingSet,
        ChangeOp::SettingReset,
        ChangeOp::SettingDefine,
        ChangeOp::Grant,
        ChangeOp::Revoke,
    ];

    pub(crate) fn parse(text: &str) -> Option<ChangeOp> {
        Self::ALL.into_iter().find(|op| op.as_str() == text)
    }

    /// True for changes to a record (as opposed to schemas and settings).
    pub fn is_record_op(self) -> bool {
        matches!(
            self,
            ChangeOp::Create
                | ChangeOp::Replace
                | ChangeOp::Patch
                | ChangeOp::Delete
                | ChangeOp::Purge
                | ChangeOp::Revert
                | ChangeOp::Undo
                | ChangeOp::Redo
        )
    }
}

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Change {
    /// Position in the log: strictly increasing, without gaps.
    pub seq: Seq,
    /// The collection (empty for settings).
    pub collection: String,
    /// The record id (the setting key for settings; empty for collection changes).
    pub id: String,
    /// What happened.
    pub op: ChangeOp,
    /// The record's version after the change.
    pub version: u64,
    /// Who made it.
    pub actor: String,
    /// When it committed (the group's start time).
    pub at: Timestamp,
    /// True when the record is soft-deleted (or gone) after the change.
    pub deleted: bool,
    /// The body before the change, if there was one.
    pub before: Option<Value>,
    /// True when the record was soft-deleted before the change (`before` is then its
    /// deleted state).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub before_deleted: bool,
    /// The body after the change; `None` when the row is gone (purge, drop).
    pub after: Option<Value>,
    /// Encrypted fields of `before` or `after` this handle cannot open (the key is locked);
    /// they are left out of both.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sealed: Vec<String>,
}
