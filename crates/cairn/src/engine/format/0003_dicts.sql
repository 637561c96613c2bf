-- Format version 3: trained compression dictionaries (see compress.rs). A body compressed with
-- one names it by key, the first 8 bytes of the dictionary's SHA-256. Rows are never deleted:
-- any body in the change log may need its dictionary. A collection's newest row (highest id)
-- is the dictionary its new writes use.
CREATE TABLE cairn_dicts (
    id         INTEGER PRIMARY KEY,
    key        BLOB NOT NULL UNIQUE,
    collection TEXT NOT NULL,
    dict       BLOB NOT NULL,
    samples    INTEGER NOT NULL,          -- bodies it was trained on
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX cairn_dicts_by_collection ON cairn_dicts (collection, id);
