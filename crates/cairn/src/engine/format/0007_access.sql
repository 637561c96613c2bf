-- Format version 7: who may use the store through the server (see access/). Passwords are
-- kept only as Argon2id hashes (PHC strings) and tokens only as SHA-256 hashes of their
-- random secrets: nothing in these tables lets anyone in.
CREATE TABLE cairn_users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

-- Sessions (made by signing in) and API keys (made for a program), one table: both are a
-- secret whose hash names a user. `id` is the part that may be shown (an API key's prefix).
CREATE TABLE cairn_tokens (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('session', 'api_key')),
    name       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
) STRICT;
CREATE INDEX cairn_tokens_by_user ON cairn_tokens (user_id, kind);
