-- Format version 5: the audit trail (see audit.rs). Entries are appended, never updated or
-- deleted; each hash covers the entry's fields and the previous entry's hash, and
-- cairn_meta.audit_head names the newest, so an edited, inserted or removed entry is found.
CREATE TABLE cairn_audit (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
) STRICT;
