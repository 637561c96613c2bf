-- Format version 4: the application's schema migrations that have been applied (see
-- migrate.rs). A row is added in the same transaction as the migration it records and
-- removed in the same transaction as its `down`; `source` is the migration's text as it was
-- applied, `checksum` its SHA-256, so an edited file is detected. `first_seq` is the last
-- change-log seq before the migration ran: the record bodies it changed are found there again
-- when its `down` brings back what the `up` removed.
CREATE TABLE cairn_migrations (
    number     INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    source     TEXT NOT NULL,
    applied_at INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    first_seq  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL
) STRICT;
