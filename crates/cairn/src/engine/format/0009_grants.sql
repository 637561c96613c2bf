-- Format version 9: records shared beyond what their collection's rules allow (see
-- access/grants.rs). A grant lets one user (by id) or every user of one role read, or read
-- and change, one record. Reads of a collection AND "its rule, or a grant" into their SQL.
CREATE TABLE cairn_grants (
    id           TEXT PRIMARY KEY,
    collection   TEXT NOT NULL,
    record_id    TEXT NOT NULL,
    grantee_kind TEXT NOT NULL CHECK (grantee_kind IN ('user', 'role')),
    grantee      TEXT NOT NULL,
    access       TEXT NOT NULL CHECK (access IN ('read', 'write')),
    granted_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (collection, record_id, grantee_kind, grantee)
) STRICT;
CREATE INDEX cairn_grants_by_grantee ON cairn_grants (collection, grantee_kind, grantee, record_id);
