//! Opening a data directory, and the [`Store`] handle every operation hangs off.
//!
//! A data directory holds `store.db` (SQLite, WAL mode, `synchronous=FULL`: a commit that
//! returned is on disk), `cairn.lock`, and the `quarantine/` folder where cairn moves whatever
//! it must set aside instead of deleting it. One process holds the write lock; others may open
//! the store read-only.
//!
//! cairn's own tables are created and upgraded by the numbered SQL files in
//! `store/migrations/`, applied in order inside a transaction each; `PRAGMA user_version`
//! records how far a store has come and `PRAGMA application_id` marks the file as cairn's.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

pub(crate) use super::lock::WriteLock;
pub(crate) use super::pool::{PooledConn, ReadPool};
use crate::engine::extensions::Extensions;
use crate::engine::hub::Hub;
use crate::engine::layout::{DB_FILE, LOCK_FILE, QUARANTINE_DIR};
use crate::engine::writer::{Tx, WriteStats, Writer};
use crate::error::{Error, Result};

/// How long operations report progress: called with a step's name, the units done and the
/// units in all (0 when not known), as often as is cheap. The one progress type of the API.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Prepared statements kept per connection: a few per collection plus cairn's own.
pub(crate) const STATEMENT_CACHE: usize = 256;

/// `PRAGMA application_id` of a cairn store ("cair").
pub(crate) const APPLICATION_ID: i32 = 0x6361_6972;

/// cairn's own table migrations, in order. Entry `i` brings a store to format version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("format/0001_initial.sql"),
    include_str!("format/0002_blobs.sql"),
    include_str!("format/0003_dicts.sql"),
    include_str!("format/0004_migrations.sql"),
    include_str!("format/0005_audit.sql"),
    include_str!("format/0006_keys.sql"),
    include_str!("format/0007_access.sql"),
    include_str!("format/0008_idempotency.sql"),
    include_str!("format/0009_grants.sql"),
    include_str!("format/0010_lineage.sql"),
    include_str!("format/0011_jobs.sql"),
];

/// The newest store format this build reads and writes.
pub const FORMAT_VERSION: u32 = MIGRATIONS.len() as u32;

/// How to open a store. All fields have defaults; unknown keys in a config file are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreOptions {
    /// Create the directory and the store when they do not exist. Default: `true`.
    pub create: bool,
    /// Open without the write lock; every write fails with [`Error::ReadOnly`]. Default: `false`.
    pub read_only: bool,
    /// The actor recorded in the change log for writes made through this handle.
    /// Default: `"local"`. See [`Store::as_actor`].
    pub actor: String,
    /// Read connections kept open between reads. Default: 4.
    pub read_connections: usize,
    /// Most write requests folded into one transaction (one fsync). Default: 512.
    pub max_batch: usize,
    /// How long to wait for another process to release the write lock before giving up with
    /// [`Error::Locked`], in milliseconds. Default: 5,000.
    pub lock_timeout_ms: u64,
    /// Open the store even when `store.db`, its `-wal`/`-shm`, `blobs/`, `backups/` or
    /// `quarantine/` is a symbolic link (e.g. attachments kept on another disk). Default:
    /// false — links there could send the store's writes anywhere, so such a store is refused.
    pub allow_links: bool,
    /// Take backups automatically, as the `backup.*` settings say: on open when the newest is
    /// old, on a clean close, on an interval. Default: `false` for the library (an embedding
    /// app chooses); the CLI and server turn it on.
    pub auto_backup: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            create: true,
            read_only: false,
            actor: "local".into(),
            read_connections: 4,
            max_batch: 512,
            lock_timeout_ms: 5_000,
            allow_links: false,
            auto_backup: false,
        }
    }
}

impl StoreOptions {
    /// Options for opening an existing store read-only.
    pub fn read_only() -> Self {
        StoreOptions { create: false, read_only: true, ..Self::default() }
    }

    /// Options for opening an existing store for writing, without creating one.
    pub fn existing() -> Self {
        StoreOptions { create: false, ..Self::default() }
    }
}

/// An open cairn store. Cheap to clone; all clones share one writer and one read pool.
///
/// The store closes when the last clone is dropped, or explicitly with [`Store::close`].
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    pub(crate) actor: Arc<str>,
}

impl Store {
    /// The on-disk format this library writes; older stores are upgraded when opened.
    pub const FORMAT_VERSION: u32 = FORMAT_VERSION;
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) read_only: bool,
    pub(crate) readers: ReadPool,
    pub(crate) hub: Arc<Hub>,
    /// Data keys this handle has opened (see `keyring.rs`).
    pub(crate) keys: Arc<crate::engine::keyring::Keyring>,
    writer: Mutex<Option<Writer>>,
    lock: Option<WriteLock>,
    /// What the layers above keep on the handle; dropped after the writer stopped.
    extensions: Extensions,
}

impl Store {
    /// Opens the database of the store in `dir` (creating it, with `options.create`, in a
    /// directory that holds nothing else), taking the write lock unless read-only or `lock`
    /// already holds it. Nothing around the database is looked at: `Store::open`
    /// (safety/open.rs) adds the recovery and checks that must run first, and is what
    /// everything but the engine's own tests uses.
    ///
    /// Refuses a directory that holds other files but no store, a `store.db` that is not
    /// cairn's, a store written by a newer cairn, and — unless `read_only` — a store another
    /// process holds for writing.
    pub(crate) fn open_database(dir: &Path, options: &StoreOptions, lock: Option<WriteLock>) -> Result<Store> {
        let dir = dir.to_path_buf();
        let db_path = dir.join(DB_FILE);
        if !db_path.exists() {
            check_can_create(&dir, options)?;
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        }
        let lock = match lock {
            Some(lock) => Some(lock),
            None if options.read_only => None,
            None => Some(WriteLock::acquire_waiting(&dir, std::time::Duration::from_millis(options.lock_timeout_ms))?),
        };
        // The lock is held from here on, so nobody else creates the db in between.
        let keys = Arc::new(crate::engine::keyring::Keyring::default());
        let hub = Arc::new(Hub::default());
        let writer = if options.read_only {
            let conn = Connection::open_with_flags(&db_path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| not_a_store(&dir, e))?;
            check_format(&dir, &conn, false)?;
            None
        } else {
            let conn = open_write_connection(&dir, &db_path)?;
            let quarantine = dir.join(QUARANTINE_DIR);
            std::fs::create_dir_all(&quarantine).map_err(|e| Error::io("create directory", &quarantine, e))?;
            Some(Writer::new(conn, hub.clone(), dir.clone(), keys.clone(), options.max_batch.max(1)))
        };
        let readers = ReadPool::new(db_path, options.read_connections);
        let inner = Inner {
            dir,
            read_only: options.read_only,
            readers,
            hub,
            keys,
            writer: Mutex::new(writer),
            lock,
            extensions: Extensions::default(),
        };
        Ok(Store { inner: Arc::new(inner), actor: Arc::from(options.actor.as_str()) })
    }

    /// The state the layers above keep on this handle.
    pub(crate) fn extensions(&self) -> &Extensions {
        &self.inner.extensions
    }

    /// Closes the store and hands back its write lock, for operations that replace its files
    /// (restore). Fails when other handles to the store are open.
    pub(crate) fn into_lock(self) -> Result<WriteLock> {
        let mut inner = Arc::try_unwrap(self.inner)
            .map_err(|_| Error::NotAllowed("the store has other open handles; close them first".into()))?;
        let writer = inner.writer.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            // The files are about to be replaced (and kept in quarantine): a database too
            // damaged to checkpoint does not stop that.
            if let Err(e) = writer.shutdown() {
                tracing::warn!(error = %e, "closing the writer before replacing the store's files failed");
            }
        }
        inner.lock.take().ok_or(Error::ReadOnly)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// True when opened with [`StoreOptions::read_only`].
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// A handle to the same store whose writes are recorded under `actor` in the change log.
    /// A handle on a store still open elsewhere (for work that holds only a weak
    /// reference, like the realtime fan-out), acting as cairn itself.
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Store {
        Store { inner, actor: Arc::from("cairn") }
    }

    pub fn as_actor(&self, actor: &str) -> Store {
        Store { inner: self.inner.clone(), actor: Arc::from(actor) }
    }

    /// The actor recorded for this handle's writes.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// Stops the writer after the writes already queued, checkpoints the WAL into `store.db`
    /// and releases nothing else: the lock goes with the last handle. Other clones fail with
    /// [`Error::WriterStopped`] on their next write.
    pub(crate) fn shutdown(&self) -> Result<()> {
        let writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        match writer {
            Some(writer) => writer.shutdown(),
            None => Ok(()),
        }
    }

    /// Runs `f` inside its own savepoint of the next group commit (see `writer`), and
    /// returns once the commit is durable. If `f` fails, none of its writes take effect.
    pub(crate) fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        self.writer()?.submit(self.actor.clone(), f)
    }

    /// Runs `f` in a transaction of its own on this thread, holding the write connection
    /// until it commits (see `Writer::exclusive`); `f` may borrow from the caller.
    pub(crate) fn write_exclusive<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        self.writer()?.exclusive(&self.actor, true, f)
    }

    /// Runs `f` like [`Store::write_exclusive`] and then rolls everything back: a dry run.
    pub(crate) fn write_dry_run<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        self.writer()?.exclusive(&self.actor, false, f)
    }

    /// The write path, or why there is none.
    fn writer(&self) -> Result<Writer> {
        let writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner()).clone();
        writer.ok_or(if self.inner.read_only { Error::ReadOnly } else { Error::WriterStopped })
    }

    /// Counters of the write path since this store was opened (zero when read-only).
    pub fn write_stats(&self) -> WriteStats {
        let writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner()).clone();
        writer.map(|w| w.stats()).unwrap_or_default()
    }

    /// A read connection from the pool.
    pub(crate) fn reader(&self) -> Result<PooledConn<'_>> {
        self.inner.readers.get()
    }

    /// The path of the write lock file, when this handle holds it.
    pub fn lock_path(&self) -> Option<&Path> {
        self.inner.lock.as_ref().map(|l| l.path())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let writer = self.writer.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            if let Err(e) = writer.shutdown() {
                tracing::warn!(dir = %self.dir.display(), error = %e, "closing the store failed");
            }
        }
    }
}

/// Takes the write lock of a data directory without opening the store.
pub(crate) fn lock(dir: &Path) -> Result<WriteLock> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    WriteLock::acquire(dir)
}

pub(crate) fn check_can_create(dir: &Path, options: &StoreOptions) -> Result<()> {
    if !options.create || options.read_only {
        return Err(Error::NoStore { path: dir.to_path_buf() });
    }
    if dir.exists() && !dir.is_dir() {
        return Err(Error::NotAStore { path: dir.to_path_buf(), reason: "it is a file, not a directory".into() });
    }
    if dir.is_dir() {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
        let mut foreign = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != LOCK_FILE && name != QUARANTINE_DIR && name != crate::engine::layout::RESERVE_FILE {
                foreign.push(name);
            }
        }
        if !foreign.is_empty() {
            foreign.sort();
            foreign.truncate(5);
            return Err(Error::NotAStore {
                path: dir.to_path_buf(),
                reason: format!(
                    "it has no {DB_FILE} but holds other files ({}); choose an empty directory",
                    foreign.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// Why SQLite could not use `store.db`: damage, when the file (or the directory around it)
/// is cairn's — `repair` rebuilds it and `restore` replaces it — or another program's file.
fn not_a_store(dir: &Path, e: rusqlite::Error) -> Error {
    if is_cairn_dir(dir) {
        return Error::Corruption { location: DB_FILE.into(), detail: format!("SQLite cannot use it: {e}") };
    }
    Error::NotAStore { path: dir.to_path_buf(), reason: format!("{DB_FILE} cannot be opened as SQLite ({e})") }
}

/// True when `store.db` carries cairn's application id in its header, or the directory holds
/// what only a cairn store has (its quarantine folder, or verified backups).
fn is_cairn_dir(dir: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 72];
    let marked = std::fs::File::open(dir.join(DB_FILE)).and_then(|mut f| f.read_exact(&mut header)).is_ok()
        && header[68..72] == APPLICATION_ID.to_be_bytes();
    marked
        || dir.join(QUARANTINE_DIR).is_dir()
        || std::fs::read_dir(dir.join(crate::engine::layout::BACKUPS_DIR))
            .map(|entries| entries.flatten().any(|e| e.path().join(crate::engine::layout::MANIFEST_FILE).is_file()))
            .unwrap_or(false)
}

pub(crate) fn open_write_connection(dir: &Path, db_path: &Path) -> Result<Connection> {
    let conn = Connection::open(db_path).map_err(|e| not_a_store(dir, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let is_new = check_format(dir, &conn, true)?;
    let mode: String =
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(|e| not_a_store(dir, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::NotAStore {
            path: dir.to_path_buf(),
            reason: format!("cannot switch {DB_FILE} to WAL mode ({mode})"),
        });
    }
    // 32 MiB of page cache keeps a group's b-tree pages in memory instead of spilling them.
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY;",
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    crate::engine::functions::register(&conn)?;
    upgrade(&conn, is_new)?;
    Ok(conn)
}

/// Checks that `store.db` is a cairn store of a format this build knows. Returns true when
/// the file is empty (a store being created).
fn check_format(dir: &Path, conn: &Connection, writable: bool) -> Result<bool> {
    let read = |pragma: &str| -> Result<i64> {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0)).map_err(|e| not_a_store(dir, e))
    };
    let app_id = read("application_id")?;
    let version = read("user_version")?;
    let tables = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
        .map_err(|e| not_a_store(dir, e))?;
    if app_id == 0 && version == 0 && tables == 0 {
        if !writable {
            return Err(Error::NotAStore { path: dir.to_path_buf(), reason: format!("{DB_FILE} is empty") });
        }
        return Ok(true);
    }
    if app_id != i64::from(APPLICATION_ID) && is_cairn_dir(dir) {
        return Err(Error::Corruption {
            location: DB_FILE.into(),
            detail: format!("its application id is {app_id:#x}, not cairn's; the file was replaced or damaged"),
        });
    }
    if app_id != i64::from(APPLICATION_ID) {
        return Err(Error::NotAStore {
            path: dir.to_path_buf(),
            reason: format!("{DB_FILE} is an SQLite database of another program"),
        });
    }
    if version > i64::from(FORMAT_VERSION) {
        return Err(Error::TooNew { path: dir.to_path_buf(), found: version as u32, supported: FORMAT_VERSION });
    }
    Ok(false)
}

/// Applies cairn's own migrations that this store has not seen yet, each in a transaction.
fn upgrade(conn: &Connection, is_new: bool) -> Result<()> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i + 1;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied =
            conn.execute_batch(sql).and_then(|()| conn.execute_batch(&format!("PRAGMA user_version = {version}")));
        match applied {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
    }
    if is_new {
        conn.execute(
            "INSERT INTO cairn_meta (key, value) VALUES ('created_by', ?1), ('created_at', ?2)",
            rusqlite::params![concat!("cairn ", env!("CARGO_PKG_VERSION")), crate::Timestamp::now().to_string()],
        )?;
    }
    Ok(())
}

/// Creates cairn's own tables as format `version` has them, in an empty database (for
/// comparing a store's objects with what it should hold).
pub(crate) fn apply_format(conn: &Connection, version: u32) -> Result<()> {
    for sql in MIGRATIONS.iter().take(version as usize) {
        conn.execute_batch(sql)?;
    }
    Ok(())
}

/// A store in a fresh temp directory, for unit tests (the directory lives as long as the guard).
#[cfg(test)]
pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open store");
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        Store::open(&path, StoreOptions::default()).expect("create").close().expect("close");
        assert!(path.join(DB_FILE).exists() && path.join(QUARANTINE_DIR).is_dir());
        let store = Store::open(&path, StoreOptions::existing()).expect("reopen");
        let conn = store.reader().expect("reader");
        let (mode, sync): (String, i64) = conn
            .query_row("SELECT * FROM pragma_journal_mode(), pragma_synchronous()", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("pragmas");
        assert_eq!(mode, "wal");
        // The read connections have the default; the writer's FULL is checked in writer tests.
        let _ = sync;
    }

    #[test]
    fn refuses_missing_foreign_and_newer_stores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        assert!(matches!(Store::open(&missing, StoreOptions::existing()), Err(Error::NoStore { .. })));

        let foreign = dir.path().join("foreign");
        std::fs::create_dir(&foreign).expect("mkdir");
        std::fs::write(foreign.join("notes.txt"), "mine").expect("write");
        let err = Store::open(&foreign, StoreOptions::default()).expect_err("foreign dir");
        assert!(matches!(err, Error::NotAStore { .. }), "{err}");
        assert!(err.to_string().contains("notes.txt"));

        let other_sqlite = dir.path().join("other");
        std::fs::create_dir(&other_sqlite).expect("mkdir");
        Connection::open(other_sqlite.join(DB_FILE)).expect("db").execute_batch("CREATE TABLE t(x)").expect("ddl");
        assert!(matches!(Store::open(&other_sqlite, StoreOptions::default()), Err(Error::NotAStore { .. })));

        let garbage = dir.path().join("garbage");
        std::fs::create_dir(&garbage).expect("mkdir");
        std::fs::write(garbage.join(DB_FILE), vec![0x42u8; 8192]).expect("write");
        assert!(matches!(Store::open(&garbage, StoreOptions::default()), Err(Error::NotAStore { .. })));

        let newer = dir.path().join("newer");
        Store::open(&newer, StoreOptions::default()).expect("create").close().expect("close");
        Connection::open(newer.join(DB_FILE))
            .expect("db")
            .execute_batch(&format!("PRAGMA user_version = {}", FORMAT_VERSION + 1))
            .expect("bump");
        let err = Store::open(&newer, StoreOptions::default()).expect_err("newer");
        assert!(matches!(err, Error::TooNew { found, .. } if found == FORMAT_VERSION + 1), "{err}");
        assert!(matches!(Store::open(&newer, StoreOptions::read_only()), Err(Error::TooNew { .. })));
    }

    #[test]
    fn second_writer_is_refused_but_reader_allowed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("create");
        // File locks are per open file description, so a second open in this process conflicts too.
        let no_wait = StoreOptions { lock_timeout_ms: 0, ..StoreOptions::default() };
        let err = Store::open(dir.path(), no_wait).expect_err("second writer");
        assert!(matches!(err, Error::Locked { pid: Some(pid), .. } if pid == std::process::id()), "{err}");
        let reader = Store::open(dir.path(), StoreOptions::read_only()).expect("read-only");
        assert!(reader.is_read_only());
        drop(store);
        Store::open(dir.path(), StoreOptions::default()).expect("lock released on drop");
    }
}
