-- Format version 8: idempotency keys (see data/idempotency.rs). A write made with a key
-- stores the answer it gave in its own transaction, so a retry of the same request is
-- answered from here instead of writing again.
CREATE TABLE cairn_idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       INTEGER NOT NULL,
    response     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (scope, key)
) STRICT;
CREATE INDEX cairn_idempotency_by_age ON cairn_idempotency (created_at);
