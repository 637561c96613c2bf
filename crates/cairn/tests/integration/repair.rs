//! Check and repair (SAFE-3) against random damage: bits flipped in copies of a populated
//! store — in record data, in blobs, and in SQLite's own structure (b-tree page headers, cell
//! pointers, interior pages, `sqlite_schema`, the catalog). Every flip that changes data or
//! structure is reported by `check` (also when SQLite can no longer open the file), and
//! `repair` brings back every record, change-log entry, schema, setting, audit entry and blob
//! exactly, from what the damaged file still holds and from the store's verified backup.

use std::path::Path;

use cairn::{BackupOptions, CheckOptions, CheckReport, ProblemKind, RepairOptions, Store, StoreOptions};
use rusqlite::types::Value as SqlValue;

use crate::backup::{copy_dir as copy_tree, populated, snapshot};

/// Everything a repair must bring back exactly, as SQLite returns it; `Err` when SQLite
/// cannot read it. Root pages and blob times are left out: a rebuilt file places tables
/// elsewhere, and blob rows carry no checksum (their content is checked by hash).
fn state(dir: &Path, audit_upto: i64) -> Result<Vec<Vec<SqlValue>>, rusqlite::Error> {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join(cairn::layout::DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let mut out = Vec::new();
    for sql in [
        "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_stat%' ORDER BY name",
        "SELECT * FROM cairn_collections ORDER BY name",
        "SELECT * FROM cairn_settings ORDER BY key",
        "SELECT * FROM cairn_setting_defs ORDER BY key",
        "SELECT * FROM c_docs ORDER BY id",
        "SELECT * FROM cairn_changes ORDER BY seq",
        "SELECT hash, size, stored_size, codec, refs FROM cairn_blobs ORDER BY hash",
        "SELECT * FROM cairn_audit WHERE seq <= ?1 ORDER BY seq",
    ] {
        let mut stmt = conn.prepare(sql)?;
        let columns = stmt.column_count();
        let bind: &[&dyn rusqlite::ToSql] = if sql.contains("?1") { &[&audit_upto] } else { &[] };
        // Through ValueRef: rusqlite's Value conversion panics on TEXT that is not UTF-8.
        let rows = stmt.query_map(bind, |r| {
            (0..columns)
                .map(|i| {
                    r.get_ref(i).map(|v| match v {
                        rusqlite::types::ValueRef::Text(t) => SqlValue::Blob(t.to_vec()),
                        other => SqlValue::from(other),
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}

/// True when SQLite finds the file's structure whole.
fn structure_ok(dir: &Path) -> bool {
    rusqlite::Connection::open_with_flags(dir.join(cairn::layout::DB_FILE), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)))
        .is_ok_and(|r| r == "ok")
}

fn blob_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join(cairn::layout::BLOBS_DIR)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// True when a blob file still holds the content its name (the SHA-256) says.
fn content_intact(path: &Path) -> bool {
    let name = path.file_name().expect("name").to_string_lossy().into_owned();
    let bytes = std::fs::read(path).expect("read");
    let (hash, content) = match name.strip_suffix(".zst") {
        Some(hash) => (hash.to_string(), zstd::stream::decode_all(&bytes[..]).ok()),
        None => (name, Some(bytes)),
    };
    content.is_some_and(|c| {
        cairn_hex(&sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), &c))) == hash
    })
}

fn cairn_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn flip(path: &Path, offset: usize, bit: u8) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset] ^= 1 << bit;
    std::fs::write(path, bytes).expect("write");
}

/// Where things sit in a database file: byte ranges of b-tree page headers, cell-pointer
/// arrays, and the used parts of interior pages.
struct Layout {
    headers: Vec<std::ops::Range<usize>>,
    pointers: Vec<std::ops::Range<usize>>,
    interior: Vec<std::ops::Range<usize>>,
}

fn layout(file: &[u8], page_size: usize) -> Layout {
    let mut out = Layout { headers: Vec::new(), pointers: Vec::new(), interior: Vec::new() };
    for (i, page) in file.chunks(page_size).enumerate() {
        let start = if i == 0 { 100 } else { 0 };
        let kind = page[start];
        if !matches!(kind, 0x02 | 0x05 | 0x0a | 0x0d) {
            continue;
        }
        let header = if matches!(kind, 0x02 | 0x05) { 12 } else { 8 };
        let cells = u16::from_be_bytes([page[start + 3], page[start + 4]]) as usize;
        let base = i * page_size;
        out.headers.push(base + start..base + start + header);
        if cells > 0 {
            out.pointers.push(base + start + header..base + start + header + 2 * cells);
        }
        if header == 12 {
            // What an interior page uses: its header, pointers and cells (the rest is free).
            out.interior.push(base + start..base + start + header + 2 * cells);
            let first_cell = u16::from_be_bytes([page[start + 5], page[start + 6]]) as usize;
            if first_cell > start && first_cell < page_size {
                out.interior.push(base + first_cell..base + page_size);
            }
        }
    }
    out
}

/// The byte ranges of the cells on the pages of the tree rooted at `root` (pages found by
/// following interior pages).
fn tree_cells(file: &[u8], page_size: usize, root: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        let base = (n - 1) * page_size;
        let page = &file[base..base + page_size];
        let start = if n == 1 { 100 } else { 0 };
        let kind = page[start];
        let header = if matches!(kind, 0x02 | 0x05) { 12 } else { 8 };
        let cells = u16::from_be_bytes([page[start + 3], page[start + 4]]) as usize;
        if header == 12 {
            stack.push(u32::from_be_bytes(page[start + 8..start + 12].try_into().expect("4 bytes")) as usize);
        }
        let mut offsets: Vec<usize> = (0..cells)
            .map(|c| u16::from_be_bytes([page[start + header + 2 * c], page[start + header + 2 * c + 1]]) as usize)
            .collect();
        offsets.sort_unstable();
        for (j, at) in offsets.iter().enumerate() {
            let end = offsets.get(j + 1).copied().unwrap_or(page_size);
            if header == 12 {
                stack.push(u32::from_be_bytes(page[*at..*at + 4].try_into().expect("4 bytes")) as usize);
            }
            out.push(base + at..base + end);
        }
    }
    out
}

/// `check` on a copy, whether or not SQLite can still open it.
fn check(dir: &Path) -> CheckReport {
    match Store::open(dir, StoreOptions::default()) {
        Ok(store) => {
            let report = store.check(&CheckOptions::default(), &mut |_, _, _| {}).expect("check runs");
            // A file SQLite finds malformed may fail to checkpoint on close; repair copes.
            let _ = store.close();
            report
        }
        Err(e) => CheckReport::from_open_error(&e).unwrap_or_else(|| panic!("the store does not open: {e}")),
    }
}

#[test]
fn random_bit_flips_in_data_and_structure_are_found_by_check_and_undone_by_repair() {
    // Seeded so that a failure can be replayed: CAIRN_FLIP_SEED=N explores other flips,
    // CAIRN_FLIP_RUNS=N runs more of them.
    let seed: u64 = std::env::var("CAIRN_FLIP_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261130);
    let runs: usize = std::env::var("CAIRN_FLIP_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(520);
    // CAIRN_FLIP_ONLY=N replays run N alone (the flips before it are drawn, not made).
    let only: Option<usize> = std::env::var("CAIRN_FLIP_ONLY").ok().and_then(|s| s.parse().ok());
    let mut rng = fastrand::Rng::with_seed(seed);
    println!("flip seed {seed}, {runs} runs");
    let tmp = tempfile::tempdir().expect("tempdir");
    let template = tmp.path().join("template");
    {
        let store = populated(&template, 40);
        store.set_setting(cairn::settings::RECORDS_MAX_BODY_BYTES, serde_json::json!(65536)).expect("setting");
        store.backup(&BackupOptions::default(), &mut |_, _, _| {}).expect("backup");
        store.close().expect("close: the WAL is checkpointed into store.db");
        // No free pages holding stale copies of rows: a flip in the file lands in live data
        // more often.
        rusqlite::Connection::open(template.join(cairn::layout::DB_FILE))
            .expect("db")
            .execute_batch("VACUUM")
            .expect("vacuum");
    }
    let audit_entries: i64 = rusqlite::Connection::open(template.join(cairn::layout::DB_FILE))
        .and_then(|c| c.query_row("SELECT count(*) FROM cairn_audit", [], |r| r.get(0)))
        .expect("audit entries");
    let pristine = state(&template, audit_entries).expect("pristine state");
    let (expected_records, expected_blobs) = {
        let store = Store::open(&template, StoreOptions::read_only()).expect("open");
        let blobs: Vec<(String, Vec<u8>)> = store
            .blobs(None, 1000)
            .expect("blobs")
            .into_iter()
            .map(|b| {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut store.open_blob(&b.hash).expect("open"), &mut bytes).expect("read");
                (b.hash.to_string(), bytes)
            })
            .collect();
        (snapshot(&store, "docs"), blobs)
    };
    let file = std::fs::read(template.join(cairn::layout::DB_FILE)).expect("db bytes");
    let db_len = file.len();
    let conn = rusqlite::Connection::open(template.join(cairn::layout::DB_FILE)).expect("db");
    let page_size: usize = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).expect("page size");
    let root = |name: &str| -> usize {
        conn.query_row("SELECT rootpage FROM sqlite_schema WHERE name = ?1", [name], |r| r.get(0)).expect("root")
    };
    let (catalog_cells, audit_cells) =
        (tree_cells(&file, page_size, root("cairn_collections")), tree_cells(&file, page_size, root("cairn_audit")));
    let schema_cells = tree_cells(&file, page_size, 1);
    // Where record data sits: the stored bodies of the change log, and each record id (in its
    // row, its change-log entries and the indexes) with the bytes around it.
    let needles: Vec<Vec<u8>> = conn
        .prepare("SELECT after FROM cairn_changes WHERE after IS NOT NULL")
        .expect("bodies")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<rusqlite::Result<_>>()
        .expect("collect");
    drop(conn);
    let ids: Vec<Vec<u8>> = expected_records.keys().map(|id| id.as_bytes().to_vec()).collect();
    let locate = |needles: &[Vec<u8>]| {
        let mut found: Vec<std::ops::Range<usize>> = Vec::new();
        for needle in needles {
            let mut from = 0;
            while let Some(at) = file[from..].windows(needle.len()).position(|w| w == &needle[..]) {
                let start = from + at;
                found.push(start.saturating_sub(12).max(page_size)..(start + needle.len() + 4).min(db_len));
                from = start + needle.len();
            }
        }
        found
    };
    let structure = layout(&file, page_size);
    let classes: Vec<(&str, Vec<std::ops::Range<usize>>)> = vec![
        ("record bodies", locate(&needles)),
        ("record ids", locate(&ids)),
        ("anywhere", std::iter::once(100..db_len).collect()),
        ("page headers", structure.headers.clone()),
        ("cell pointers", structure.pointers.clone()),
        ("interior pages", structure.interior.clone()),
        ("sqlite_schema rows", schema_cells),
        ("catalog rows", catalog_cells),
        ("audit rows", audit_cells),
    ];
    for (name, ranges) in &classes {
        assert!(!ranges.is_empty(), "no {name} located in the template");
    }
    let blobs = blob_files(&template);
    assert!(!blobs.is_empty());

    let mut counts: std::collections::BTreeMap<&str, (u32, u32)> = std::collections::BTreeMap::new();
    for run in 0..runs {
        let dir = tmp.path().join(format!("run{run}"));
        copy_tree(&template, &dir);
        // One flip in ten lands in a blob file, the others in the database's classes in turn.
        let (class, target, damaged_blob) = if run % 10 == 9 {
            let blob = &blobs[rng.usize(..blobs.len())];
            let rel = blob.strip_prefix(&template).expect("inside");
            let path = dir.join(rel);
            let len = std::fs::metadata(&path).expect("blob").len() as usize;
            flip(&path, rng.usize(..len), rng.u8(0..8));
            // Some bits of a zstd frame (window size, reserved bits) do not change what it
            // decodes to: such a flip damages nothing.
            ("blobs", format!("{run} blob {}", rel.display()), !content_intact(&path))
        } else {
            let (class, ranges) = &classes[run % 10 % classes.len()];
            let range = &ranges[rng.usize(..ranges.len())];
            let offset = rng.usize(range.clone());
            flip(&dir.join(cairn::layout::DB_FILE), offset, rng.u8(0..8));
            (*class, format!("{run} {class} at offset {offset} (page {})", offset / page_size + 1), false)
        };
        if only.is_some_and(|n| n != run) {
            std::fs::remove_dir_all(&dir).expect("clean the run's copy");
            continue;
        }
        let now = state(&dir, audit_entries);
        let damaged = damaged_blob || now.as_ref().ok() != Some(&pristine) || !structure_ok(&dir);
        let entry = counts.entry(class).or_default();
        entry.0 += 1;
        entry.1 += u32::from(damaged);

        let report = check(&dir);
        if damaged && report.is_ok() {
            let first =
                now.as_ref().map(|rows| (0..rows.len().max(pristine.len())).find(|i| rows.get(*i) != pristine.get(*i)));
            let detail = match first {
                Ok(Some(i)) => {
                    let text = |row: Option<&Vec<SqlValue>>| {
                        row.map(|r| {
                            r.iter()
                                .map(|v| match v {
                                    SqlValue::Blob(b) => String::from_utf8_lossy(b).into_owned(),
                                    other => format!("{other:?}"),
                                })
                                .collect::<Vec<_>>()
                                .join(" | ")
                        })
                        .unwrap_or_default()
                    };
                    let (a, b) = (text(now.as_ref().ok().and_then(|r| r.get(i))), text(pristine.get(i)));
                    let at = a.chars().zip(b.chars()).position(|(x, y)| x != y).unwrap_or(0);
                    format!(
                        "row {i} differs at {at}: {:?} was {:?}",
                        a.chars().skip(at.saturating_sub(30)).take(60).collect::<String>(),
                        b.chars().skip(at.saturating_sub(30)).take(60).collect::<String>()
                    )
                }
                Ok(None) => "integrity_check fails".to_string(),
                Err(e) => format!("SQLite cannot read it: {e}"),
            };
            panic!("{target}: damage went unreported: {detail}");
        }
        if !report.is_ok() {
            let repaired = cairn::Store::repair(&dir, &RepairOptions::default(), &mut |_, _, _| {})
                .unwrap_or_else(|e| panic!("{target}: repair failed: {e}; check found {:?}", report.problems));
            assert!(
                repaired.after.is_ok(),
                "{target}: problems remain {:?}; rebuild {:?}",
                repaired.after.problems,
                repaired.rebuilt
            );
            let after = state(&dir, audit_entries).unwrap_or_else(|e| panic!("{target}: unreadable after repair: {e}"));
            if let Some(i) = (0..pristine.len().max(after.len())).find(|i| pristine.get(*i) != after.get(*i)) {
                panic!(
                    "{target}: row {i} differs after repair: {:.300}",
                    format!("{:?} vs {:?}", after.get(i), pristine.get(i))
                );
            }
            let store = Store::open(&dir, StoreOptions::read_only()).expect("open after repair");
            assert_eq!(snapshot(&store, "docs"), expected_records, "{target}: records differ after repair");
            for (hash, bytes) in &expected_blobs {
                let mut read = Vec::new();
                std::io::Read::read_to_end(&mut store.open_blob(hash).expect("blob"), &mut read)
                    .unwrap_or_else(|e| panic!("{target}: blob {hash} after repair: {e}"));
                assert!(&read == bytes, "{target}: blob {hash} differs after repair");
            }
        }
        std::fs::remove_dir_all(&dir).expect("clean the run's copy");
    }
    println!("flips (runs, of which damaging) per class: {counts:?}");
    let damaging: u32 = counts.values().map(|c| c.1).sum();
    assert!(
        only.is_some() || damaging as usize >= runs / 3,
        "too few flips damaged anything to prove much: {counts:?}"
    );
}

#[test]
fn a_record_whose_newest_entry_no_backup_holds_comes_back_from_an_older_backup_as_a_new_version() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = populated(&dir, 10);
    store.backup(&BackupOptions::default(), &mut |_, _, _| {}).expect("backup");
    let in_backup = store.get("docs", "d007").expect("d007");
    let edited =
        store.patch("docs", "d007", serde_json::json!({"title": "edited after the backup"}), None).expect("patch");
    store.close().expect("close");

    let db = rusqlite::Connection::open(dir.join(cairn::layout::DB_FILE)).expect("db");
    db.execute("UPDATE cairn_changes SET actor = 'mallory' WHERE seq = ?1", [edited.seq.get()])
        .expect("damage the newest entry");
    drop(db);

    let report = cairn::Store::repair(&dir, &RepairOptions::default(), &mut |_, _, _| {}).expect("repair");
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    assert_eq!(report.records_restored_as_new_versions.len(), 1, "{report:?}");
    let back = store.get("docs", "d007").expect("readable again");
    assert_eq!(back.body, in_backup.body, "the backup's body");
    assert_eq!(back.version, edited.version + 1, "as a new version after the damaged one");
    let remaining: Vec<_> = report.after.problems.iter().map(|p| (p.kind, p.seq)).collect();
    assert_eq!(remaining, [(ProblemKind::ChangeLog, Some(edited.seq))], "only the damaged history entry is left");
    let quarantine = report.quarantine.expect("a quarantine folder");
    let quarantined = std::fs::read_to_string(quarantine.join("records.jsonl")).expect("quarantine file");
    assert!(quarantined.contains("d007"));
}

#[test]
fn a_damaged_blob_hash_in_the_blob_table_is_set_aside_and_the_real_row_restored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = populated(&dir, 10);
    store.backup(&BackupOptions::default(), &mut |_, _, _| {}).expect("backup");
    let hash = store.get("docs", "d005").expect("d005").body["file"]["hash"].as_str().expect("hash").to_string();
    store.close().expect("close");
    let db = rusqlite::Connection::open(dir.join(cairn::layout::DB_FILE)).expect("db");
    let damaged = format!("`{}", &hash[1..]);
    db.execute("UPDATE cairn_blobs SET hash = ?2 WHERE hash = ?1", [&hash, &damaged]).expect("damage");
    drop(db);

    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    let before = store.check(&CheckOptions::default(), &mut |_, _, _| {}).expect("check");
    assert!(before.problems.iter().any(|p| p.hash.as_deref() == Some(damaged.as_str())), "{:?}", before.problems);
    assert!(
        before.problems.iter().any(|p| p.kind == ProblemKind::BlobRefs),
        "the record's link dangles: {:?}",
        before.problems
    );
    store.close().expect("close");
    let report = cairn::Store::repair(&dir, &RepairOptions::default(), &mut |_, _, _| {}).expect("repair");
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    assert!(report.after.is_ok(), "{:?}", report.after.problems);
    assert!(report.blobs_restored.iter().any(|(h, _)| h == &hash));
    let quarantine = report.quarantine.expect("a quarantine folder");
    assert!(std::fs::read_to_string(quarantine.join("blobs.jsonl")).expect("set aside").contains(&damaged));
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut store.open_blob(&hash).expect("blob"), &mut content).expect("read");
    assert!(!content.is_empty());
}

#[test]
fn missing_change_log_entries_come_back_from_a_backup() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = populated(&dir, 10);
    store.backup(&BackupOptions::default(), &mut |_, _, _| {}).expect("backup");
    let expected = snapshot(&store, "docs");
    let seq = store.get("docs", "d004").expect("d004").seq.get();
    store.close().expect("close");
    let db = rusqlite::Connection::open(dir.join(cairn::layout::DB_FILE)).expect("db");
    db.execute("DELETE FROM cairn_changes WHERE seq = ?1", [seq]).expect("lose an entry");
    drop(db);

    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    let report = store.check(&CheckOptions::default(), &mut |_, _, _| {}).expect("check");
    assert!(
        report.problems.iter().any(|p| p.kind == ProblemKind::ChangeLog && p.seq == Some(cairn::Seq(seq))),
        "{:?}",
        report.problems
    );
    store.close().expect("close");
    let repaired = cairn::Store::repair(&dir, &RepairOptions::default(), &mut |_, _, _| {}).expect("repair");
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    assert!(repaired.after.is_ok(), "{:?}", repaired.after.problems);
    let rebuilt = repaired.rebuilt.expect("a damaged change log is rebuilt");
    assert!(rebuilt.changes_from_backups.iter().any(|(s, _)| *s == seq), "{rebuilt:?}");
    assert_eq!(snapshot(&store, "docs"), expected);
}

/// Overwrites page `n` (1-based) of a database file with `byte`.
fn smash_page(db: &Path, n: usize, byte: u8) {
    let mut bytes = std::fs::read(db).expect("read");
    let page_size = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    bytes[(n - 1) * page_size..n * page_size].fill(byte);
    std::fs::write(db, bytes).expect("write");
}

#[test]
fn a_store_sqlite_cannot_open_is_rebuilt_with_the_writes_made_after_its_newest_backup() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = populated(&dir, 300);
    store.backup(&BackupOptions::default(), &mut |_, _, _| {}).expect("backup");
    // Written after the backup: only the damaged file holds these.
    for i in (10..50).filter(|i| i % 7 != 2) {
        store
            .patch("docs", &format!("d{i:03}"), serde_json::json!({"title": format!("after the backup {i}")}), None)
            .expect("patch");
    }
    store.create_with_id("docs", "late", serde_json::json!({"title": "created after the backup"})).expect("create");
    let expected = snapshot(&store, "docs");
    let last_seq = store.last_seq().expect("seq").get();
    store.close().expect("close");

    // The change log's root (an interior page) destroyed: SQLite cannot scan the log. And
    // one letter of `sqlite_schema` changed: SQLite cannot open the file at all.
    let db = dir.join(cairn::layout::DB_FILE);
    let root: usize = {
        let conn = rusqlite::Connection::open(&db).expect("db");
        conn.execute_batch(
            "PRAGMA writable_schema = ON;
             UPDATE sqlite_schema SET sql = replace(sql, 'CREATE INDEX', 'CREATE INDEY') WHERE name = 'cairn_changes_by_key';",
        )
        .expect("damage the schema");
        conn.query_row("SELECT rootpage FROM sqlite_schema WHERE name = 'cairn_changes'", [], |r| r.get(0))
            .expect("root")
    };
    smash_page(&db, root, 0x55);
    let err = Store::open(&dir, StoreOptions::default()).expect_err("SQLite cannot open it");
    assert!(err.is_corruption(), "{err}");
    let report = CheckReport::from_open_error(&err).expect("a check report");
    assert_eq!(report.problems[0].kind, ProblemKind::Integrity);
    assert!(report.problems[0].detail.contains("malformed"), "names SQLite's error: {:?}", report.problems);

    let repaired = cairn::Store::repair(&dir, &RepairOptions::default(), &mut |_, _, _| {}).expect("repair");
    assert!(repaired.after.is_ok(), "{:?}", repaired.after.problems);
    let rebuilt = repaired.rebuilt.expect("rebuilt");
    assert_eq!(rebuilt.changes_salvaged, last_seq, "every entry read back from the damaged file: {rebuilt:?}");
    assert!(rebuilt.changes_lost.is_empty() && rebuilt.changes_from_backups.is_empty(), "{rebuilt:?}");
    let quarantine = repaired.quarantine.expect("quarantine");
    assert!(quarantine.join(cairn::layout::DB_FILE).exists(), "the damaged file is kept");
    let store = Store::open(&dir, StoreOptions::default()).expect("opens again");
    assert_eq!(snapshot(&store, "docs"), expected, "every record exactly back, the later writes too");
    assert_eq!(store.last_seq().expect("seq").get(), last_seq, "the log is whole");
    store.patch("docs", "late", serde_json::json!({"title": "writable again"}), None).expect("write");
}

#[test]
fn restore_replaces_a_store_sqlite_cannot_open_and_keeps_it_in_quarantine() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = populated(&dir, 20);
    let backup = store.backup(&BackupOptions::default(), &mut |_, _, _| {}).expect("backup");
    let expected = snapshot(&store, "docs");
    store.close().expect("close");
    smash_page(&dir.join(cairn::layout::DB_FILE), 1, 0x00);
    let damaged = std::fs::read(dir.join(cairn::layout::DB_FILE)).expect("damaged bytes");
    assert!(Store::open(&dir, StoreOptions::default()).expect_err("unopenable").is_corruption());

    let report = cairn::Store::restore(&dir, &backup.id, &cairn::RestoreOptions::default(), &mut |_, _, _| {})
        .expect("restore over a store that will not open");
    assert!(report.pre_restore_backup.is_none() && report.damaged.is_some(), "{report:?}");
    let replaced = report.replaced_into.expect("replaced into quarantine");
    assert_eq!(
        std::fs::read(replaced.join(cairn::layout::DB_FILE)).expect("kept"),
        damaged,
        "kept whole, byte for byte"
    );
    let store = Store::open(&dir, StoreOptions::default()).expect("opens");
    assert_eq!(snapshot(&store, "docs"), expected);
    let trail = store.audit_log(Some(r#"action = "restore""#), 0, 10).expect("audit");
    assert_eq!(trail.len(), 1, "the restore is in the restored store's trail");
}

#[test]
fn check_reports_an_edited_audit_entry_and_repair_brings_it_back_from_a_backup() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = populated(&dir, 10);
    store.delete("docs", "d005", None).expect("delete");
    store.backup(&BackupOptions::default(), &mut |_, _, _| {}).expect("backup");
    store.close().expect("close");
    let db = rusqlite::Connection::open(dir.join(cairn::layout::DB_FILE)).expect("db");
    db.execute("UPDATE cairn_audit SET actor = 'nobody' WHERE seq = 2", []).expect("edit");
    drop(db);
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    assert!(!store.verify_audit().expect("verify").is_ok());
    let report = store.check(&CheckOptions::default(), &mut |_, _, _| {}).expect("check");
    assert!(
        report.problems.iter().any(|p| p.kind == ProblemKind::Audit && p.seq == Some(cairn::Seq(2))),
        "{:?}",
        report.problems
    );
    store.close().expect("close");
    let repaired = cairn::Store::repair(&dir, &RepairOptions::default(), &mut |_, _, _| {}).expect("repair");
    assert!(repaired.after.is_ok(), "{:?}", repaired.after.problems);
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    assert!(store.verify_audit().expect("verify").is_ok());
    assert_ne!(store.audit_log(None, 1, 1).expect("entry 2")[0].actor, "nobody");
}

#[test]
fn a_table_view_and_trigger_planted_in_the_store_are_reported_and_moved_to_quarantine() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = populated(&dir, 5);
    store.close().expect("close");
    let db = rusqlite::Connection::open(dir.join(cairn::layout::DB_FILE)).expect("db");
    db.execute_batch(
        "CREATE TABLE loot (seq INTEGER, after BLOB); INSERT INTO loot VALUES (0, x'00');
         CREATE VIEW peek AS SELECT * FROM cairn_changes;
         CREATE TRIGGER grab AFTER INSERT ON cairn_changes BEGIN INSERT INTO loot VALUES (new.seq, new.after); END;",
    )
    .expect("plant");
    drop(db);
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    let report = store.check(&CheckOptions::default(), &mut |_, _, _| {}).expect("check");
    let mut named: Vec<String> = report.of_kind(ProblemKind::SchemaObject).filter_map(|p| p.object.clone()).collect();
    named.sort();
    assert_eq!(named, ["grab", "loot", "peek"], "{:?}", report.problems);
    store.close().expect("close");
    let repaired = cairn::Store::repair(&dir, &RepairOptions::default(), &mut |_, _, _| {}).expect("repair");
    assert!(repaired.after.is_ok(), "{:?}", repaired.after.problems);
    let kept = std::fs::read_to_string(repaired.quarantine.expect("quarantine").join("objects.jsonl")).expect("kept");
    assert!(
        kept.contains("CREATE TRIGGER grab") && kept.contains("CREATE VIEW peek") && kept.contains("loot"),
        "{kept}"
    );
    let store = Store::open(&dir, StoreOptions::default()).expect("open");
    store.create_with_id("docs", "after", serde_json::json!({"title": "no trigger copies this"})).expect("write");
    let conn = rusqlite::Connection::open(dir.join(cairn::layout::DB_FILE)).expect("db");
    let loot: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema WHERE name IN ('loot', 'peek', 'grab')", [], |r| r.get(0))
        .expect("n");
    assert_eq!(loot, 0);
}
