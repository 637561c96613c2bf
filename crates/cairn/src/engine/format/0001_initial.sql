-- cairn's own tables, format version 1. Never edit this file once shipped: add 0002_*.sql.
PRAGMA application_id = 1667328370; -- "cair"

CREATE TABLE cairn_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- One row per collection; its records live in the table named by table_name.
CREATE TABLE cairn_collections (
    name           TEXT PRIMARY KEY,
    table_name     TEXT NOT NULL UNIQUE,
    schema         TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) STRICT;

-- The change log: one row per mutation, appended in the mutation's transaction.
-- It is also where record bodies live: `after` is the canonical JSON a change produced (NULL
-- when the row is gone: purge, drop), each body is stored once, and a change's `before` is
-- the `after` of the change named by prev_seq. Record rows point at their body by seq.
-- sha256 covers every other column, so damage to history is detected like damage to records.
-- seq is assigned by cairn as max(seq) + 1; rows are never deleted, so seqs never repeat.
CREATE TABLE cairn_changes (
    seq        INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    op         TEXT NOT NULL,
    version    INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    at         INTEGER NOT NULL,
    deleted    INTEGER NOT NULL,
    prev_seq   INTEGER,
    after      BLOB,
    sha256     BLOB NOT NULL
) STRICT;
-- Finds the latest purge, schema or setting entry of a key. Record versions are deliberately
-- not in it (so a record write touches one b-tree of the log, not two): a record's history is
-- the prev_seq chain from its row, or from its latest purge. Queries repeat this WHERE clause
-- word for word so that SQLite can use the index.
CREATE INDEX cairn_changes_by_key ON cairn_changes (collection, record_id, seq)
    WHERE op NOT IN ('create', 'replace', 'patch', 'delete', 'revert', 'undo', 'redo');

CREATE TABLE cairn_setting_defs (
    key TEXT PRIMARY KEY,
    def TEXT NOT NULL
) STRICT;

CREATE TABLE cairn_settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
