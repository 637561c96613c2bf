//! Keeping the blob store right: verifying every blob, collecting those nothing links to after
//! their grace period, recounting links, and finishing what a crash interrupted.

use super::*;

/// What `verify_blobs` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    pub checked: u64,
    pub bytes: u64,
    /// Blobs whose content does not match their hash (or cannot be decoded), with why.
    pub corrupt: Vec<(ContentHash, String)>,
    /// Blobs the store lists whose file is gone.
    pub missing: Vec<ContentHash>,
    /// Files in the blob folders the store does not list.
    pub unlisted_files: Vec<PathBuf>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}
/// How [`Store::gc_blobs`] runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// How long a blob must have had no live link before it goes. Default (`None`): the
    /// store's setting `blobs.gc_grace_seconds` (seven days unless changed).
    pub grace: Option<std::time::Duration>,
    /// Only report what would go.
    pub dry_run: bool,
}

/// What `gc_blobs` removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct GcReport {
    pub dry_run: bool,
    pub removed: Vec<BlobInfo>,
    /// Files no row listed (left by puts whose transaction failed), older than the grace.
    pub removed_files: Vec<PathBuf>,
    pub bytes_freed: u64,
    /// Unreferenced blobs kept because their grace period has not passed.
    pub kept_in_grace: u64,
}

/// What `rebuild_blob_refs` changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RefsReport {
    pub blobs: u64,
    /// (hash, count before, count after) for every count that was wrong.
    pub corrected: Vec<(ContentHash, u64, u64)>,
    /// (collection, id, field, hash) of links to blobs the store does not have.
    pub dangling: Vec<(String, String, String, String)>,
}

/// Every file in the shard folders, with the hash and codec its name says.
/// Every blob file under `blobs/` (not the temp or trash folders): (path, name without
/// `.zst`, codec).
pub(crate) fn files(dir: &Path) -> Result<Vec<(PathBuf, String, Codec)>> {
    let root = blob_root(dir);
    let mut out = Vec::new();
    let list = |p: &Path| -> Result<Vec<std::fs::DirEntry>> {
        match std::fs::read_dir(p) {
            Ok(entries) => entries.collect::<std::io::Result<_>>().map_err(|e| Error::io("list", p, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("list", p, e)),
        }
    };
    for a in list(&root)? {
        if a.file_name().to_string_lossy().starts_with('.') || !a.path().is_dir() {
            continue;
        }
        for b in list(&a.path())? {
            for file in list(&b.path())? {
                let name = file.file_name().to_string_lossy().to_string();
                let (hash, codec) = match name.strip_suffix(".zst") {
                    Some(h) => (h.to_string(), Codec::Zstd),
                    None => (name, Codec::Raw),
                };
                out.push((file.path(), hash, codec));
            }
        }
    }
    Ok(out)
}

/// Puts back blobs a `gc` moved aside before a crash could tell whether it committed: if it
/// did, they are now unlisted files that the next `gc` removes; if not, they are needed.
pub(crate) fn recover(dir: &Path) -> Result<()> {
    let trash = blob_root(dir).join(BLOB_TRASH_DIR);
    if let Ok(entries) = std::fs::read_dir(&trash) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let hash = name.strip_suffix(".zst").unwrap_or(&name).to_string();
            if !crate::engine::hash::is_hex_digest(&hash) {
                continue;
            }
            let codec = if name.ends_with(".zst") { Codec::Zstd } else { Codec::Raw };
            let target = blob_path(dir, &hash, codec);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
            }
            std::fs::rename(entry.path(), &target).map_err(|e| Error::io("restore", &target, e))?;
            tracing::warn!(hash, "put back a blob an interrupted gc had moved aside");
        }
    }
    Ok(())
}

/// Sets every blob's reference count to the links the live records hold (see
/// [`Store::rebuild_blob_refs`]).
pub(crate) fn recount_refs(conn: &Connection, now: Timestamp) -> Result<RefsReport> {
    let (counts, dangling) = count_links(conn)?;
    let mut report = RefsReport { dangling, ..RefsReport::default() };
    let rows: Vec<(String, i64)> = conn
        .prepare("SELECT hash, refs FROM cairn_blobs")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    report.blobs = rows.len() as u64;
    for (hash, refs) in rows {
        let actual = counts.get(&hash).copied().unwrap_or(0);
        if actual != refs as u64 {
            report.corrected.push((ContentHash::trusted(hash.clone()), refs as u64, actual));
            conn.execute(
                "UPDATE cairn_blobs SET refs = ?2,
                        unreferenced_since = CASE WHEN ?2 = 0 THEN coalesce(unreferenced_since, ?3) END
                 WHERE hash = ?1",
                params![hash, actual as i64, now.0],
            )?;
        }
    }
    Ok(report)
}

/// A link to a blob the store does not have: (collection, id, field, hash).
pub(crate) type DanglingLink = (String, String, String, String);

/// Counts every blob's links from the live records; also returns the links to blobs the
/// store does not have, as (collection, id, field, hash).
pub(crate) fn count_links(conn: &Connection) -> Result<(BTreeMap<String, u64>, Vec<DanglingLink>)> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut dangling = Vec::new();
    for c in crate::data::collection::load_all(conn)? {
        let mut scan = crate::data::record::ScanOptions::default();
        loop {
            let page = crate::data::record::scan(conn, &c, &scan)?;
            let Some(last) = page.last() else { break };
            scan.after = Some(last.id.clone());
            for record in &page {
                for (field, hash) in crate::data::attachments::links(&c, &record.body) {
                    *counts.entry(hash.to_string()).or_default() += 1;
                    if read_info(conn, hash)?.is_none() {
                        dangling.push((c.name().to_string(), record.id.clone(), field.to_string(), hash.to_string()));
                    }
                }
            }
        }
    }
    Ok((counts, dangling))
}

/// Finds (and unless `dry_run`, removes: rows dropped, files moved to the trash) what `gc`
/// may collect.
pub(crate) fn collect(
    conn: &Connection,
    dir: &Path,
    now: Timestamp,
    grace: std::time::Duration,
    dry_run: bool,
) -> Result<GcReport> {
    let cutoff = now.0.saturating_sub(i64::try_from(grace.as_micros()).unwrap_or(i64::MAX));
    let mut report = GcReport { dry_run, ..GcReport::default() };
    let doomed: Vec<BlobInfo> = conn
        .prepare(&format!("SELECT {INFO_COLUMNS} FROM cairn_blobs WHERE refs = 0 ORDER BY hash"))?
        .query_map([], info_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    let trash = blob_root(dir).join(BLOB_TRASH_DIR);
    if !dry_run {
        std::fs::create_dir_all(&trash).map_err(|e| Error::io("create", &trash, e))?;
    }
    let move_aside = |path: &Path| -> Result<()> {
        let name = path.file_name().unwrap_or_default();
        std::fs::rename(path, trash.join(name)).map_err(|e| Error::io("move aside", path, e))
    };
    for info in doomed {
        if info.unreferenced_since.is_none_or(|t| t.0 > cutoff) {
            report.kept_in_grace += 1;
            continue;
        }
        if !dry_run {
            conn.prepare_cached("DELETE FROM cairn_blobs WHERE hash = ?1 AND refs = 0")?
                .execute([info.hash.as_str()])?;
            let path = blob_path(dir, info.hash.as_str(), info.codec);
            if path.exists() {
                move_aside(&path)?;
            }
        }
        report.bytes_freed += info.stored_size;
        report.removed.push(info);
    }
    let cutoff_time = std::time::SystemTime::now().checked_sub(grace).unwrap_or(std::time::UNIX_EPOCH);
    for (path, hash, codec) in files(dir)? {
        let listed =
            crate::engine::hash::is_hex_digest(&hash) && read_info(conn, &hash)?.is_some_and(|i| i.codec == codec);
        let removed_now = report.removed.iter().any(|i| i.hash == hash);
        let old = path.metadata().and_then(|m| m.modified()).map(|t| t <= cutoff_time).unwrap_or(false);
        if listed || removed_now || !old {
            continue;
        }
        report.bytes_freed += path.metadata().map(|m| m.len()).unwrap_or(0);
        if !dry_run {
            move_aside(&path)?;
        }
        report.removed_files.push(path);
    }
    Ok(report)
}

impl Store {
    /// Re-hashes every blob; progress (step `blobs`) is reported after each.
    pub fn verify_blobs(&self, progress: crate::engine::store::Progress<'_>) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let total: i64 = self.reader()?.query_row("SELECT count(*) FROM cairn_blobs", [], |r| r.get(0))?;
        let mut after: Option<String> = None;
        loop {
            let page = self.blobs(after.as_deref(), 500)?;
            let Some(last) = page.last() else { break };
            after = Some(last.hash.to_string());
            for info in page {
                let hash = info.hash.clone();
                match open_reader(self.dir(), info) {
                    Err(Error::Corruption { .. }) => report.missing.push(hash),
                    Err(e) => return Err(e),
                    Ok(mut reader) => match std::io::copy(&mut reader, &mut std::io::sink()) {
                        Ok(n) => report.bytes += n,
                        Err(e) => report.corrupt.push((hash, e.to_string())),
                    },
                }
                report.checked += 1;
                progress("blobs", report.checked, total as u64);
            }
        }
        let conn = self.reader()?;
        for (path, hash, _) in files(self.dir())? {
            if !crate::engine::hash::is_hex_digest(&hash) || read_info(&conn, &hash)?.is_none() {
                report.unlisted_files.push(path);
            }
        }
        Ok(report)
    }

    /// Removes blobs no live record has linked to for at least the grace period, and files
    /// no row lists that are as old (see [`GcOptions`]). Blobs are moved aside inside the
    /// transaction that drops their rows and deleted once it committed; a crash in between
    /// puts them back on the next open.
    pub fn gc_blobs(&self, options: &GcOptions) -> Result<GcReport> {
        let GcOptions { grace, dry_run } = *options;
        let grace = match grace {
            Some(g) => g,
            None => {
                std::time::Duration::from_secs(self.setting_u64(crate::data::builtin_settings::BLOBS_GC_GRACE_SECONDS)?)
            }
        };
        if dry_run {
            let conn = self.reader()?;
            return collect(&conn, self.dir(), Timestamp::now(), grace, true);
        }
        let dir = self.dir().to_path_buf();
        // On a full disk, the space reserve lets the transaction commit (see `space`).
        self.freeing(|| match self.write(move |tx| collect(tx.conn, tx.dir, tx.now, grace, false)) {
            Ok(report) => {
                let trash = blob_root(&dir).join(BLOB_TRASH_DIR);
                if let Ok(entries) = std::fs::read_dir(&trash) {
                    for entry in entries.flatten() {
                        std::fs::remove_file(entry.path()).map_err(|e| Error::io("remove", entry.path(), e))?;
                    }
                }
                Ok(report)
            }
            Err(e) => {
                recover(&dir)?;
                Err(e)
            }
        })
    }

    /// Recounts every blob's links from the live records and corrects the counts; reports
    /// links to blobs the store does not have.
    pub fn rebuild_blob_refs(&self) -> Result<RefsReport> {
        self.write(|tx| recount_refs(tx.conn, tx.now))
    }
}
