-- Format version 6: field encryption keys (see keys.rs). Data keys are stored only wrapped
-- (XChaCha20-Poly1305) under a key derived from a passphrase (Argon2id, with the parameters
-- and salt below) or from a key file; nothing here opens them without that secret.
CREATE TABLE cairn_keyring (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    method     TEXT NOT NULL,
    salt       BLOB NOT NULL,
    m_cost     INTEGER NOT NULL,
    t_cost     INTEGER NOT NULL,
    p_cost     INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    changed_at INTEGER NOT NULL
) STRICT;

-- One row per data key; values name theirs as k<generation>. Exactly one is active (the one
-- new values are sealed with); the others are kept until no value is sealed with them.
CREATE TABLE cairn_keys (
    generation INTEGER PRIMARY KEY,
    wrapped    BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    active     INTEGER NOT NULL
) STRICT;
