-- Format version 10: the store's lineage, so that a follower of its change log can tell
-- whether a seq it holds still means what it meant (engine/lineage.rs). `store_id` is drawn
-- once, when the store is made (or first opened by this version); `restore_generation`
-- grows by one at every restore, which brings back an earlier log. From this version on
-- the change log also holds grants and revokes (ops `grant`, `revoke`).
INSERT OR IGNORE INTO cairn_meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));
INSERT OR IGNORE INTO cairn_meta (key, value) VALUES ('restore_generation', '0');
