-- Format version 2: the blob store's index. Files live under blobs/ (see blob.rs); this table
-- lists each blob once, with how it is stored and how many links live records hold to it.
-- refs changes in the same transaction as the record writes that add or drop links.
CREATE TABLE cairn_blobs (
    hash               TEXT PRIMARY KEY,        -- SHA-256 of the content, lowercase hex
    size               INTEGER NOT NULL,        -- bytes of content
    stored_size        INTEGER NOT NULL,        -- bytes on disk
    codec              TEXT NOT NULL CHECK (codec IN ('raw', 'zstd')),
    refs               INTEGER NOT NULL CHECK (refs >= 0),
    created_at         INTEGER NOT NULL,
    unreferenced_since INTEGER                  -- NULL while refs > 0
) WITHOUT ROWID, STRICT;
CREATE INDEX cairn_blobs_unreferenced ON cairn_blobs (unreferenced_since) WHERE refs = 0;
