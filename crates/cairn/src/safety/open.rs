//! Opening a store with recovery, and closing it: the orchestration around the engine's
//! database open (engine/store.rs), in the order that keeps data safe.
//!
//! 1. An interrupted restore is finished first, under the write lock: it may have moved
//!    `store.db` aside for a moment (safety/restore.rs).
//! 2. Links where cairn's own entries belong are refused, and stray files are moved into
//!    quarantine — before SQLite opens the store, so no stray journal is ever taken for its own
//!    (safety/guard.rs).
//! 3. The database is opened (and created or upgraded).
//! 4. Opened for writing: blobs an interrupted `gc` had moved aside are put back, leftovers of
//!    interrupted work are removed (safety/leftovers.rs), and the disk-space reserve is written
//!    (data/space.rs).
//! 5. With automatic backups, a backup is taken when the newest is old, and a thread takes one
//!    on an interval; it holds the store weakly and ends when the store closes.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use crate::data::builtin_settings::{BACKUP_INTERVAL_SECONDS, BACKUP_ON_CLOSE, BACKUP_ON_OPEN_AFTER_SECONDS};
use crate::engine::layout::RESTORE_JOURNAL_FILE;
use crate::engine::store::{Store, StoreOptions, WriteLock};
use crate::error::{Error, Result};
use crate::safety::backup::{BackupOptions, BackupReason};
use crate::safety::guard::StrayFile;
use crate::safety::leftovers::Leftover;

/// What opening found and did.
#[derive(Debug, Default)]
struct Opened {
    strays: Vec<StrayFile>,
    leftovers: Vec<Leftover>,
}

/// Automatic backups are on for this handle; dropping this (the store closing) stops the
/// interval thread.
#[derive(Debug, Default)]
struct AutoBackups {
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Drop for AutoBackups {
    fn drop(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
    }
}

impl Store {
    /// Opens (or, with `options.create`, creates) the store in `dir`; see the module docs for
    /// what happens around the database.
    ///
    /// Refuses a directory that holds other files but no store, a `store.db` that is not
    /// cairn's, a store written by a newer cairn, a store whose own entries are links (unless
    /// [`StoreOptions::allow_links`]), and — unless `read_only` — a store another process holds
    /// for writing.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let dir = dir.as_ref();
        let wait = std::time::Duration::from_millis(options.lock_timeout_ms);
        let mut lock: Option<WriteLock> = None;
        if !options.read_only && dir.join(RESTORE_JOURNAL_FILE).exists() {
            lock = Some(WriteLock::acquire_waiting(dir, wait)?);
            crate::safety::restore::recover(dir)?;
        }
        if options.read_only && crate::safety::restore::interrupted(dir) {
            return Err(Error::NotAllowed(format!(
                "a restore of {} was interrupted; open the store for writing to finish it",
                dir.display()
            )));
        }
        if dir.join(crate::engine::layout::DB_FILE).exists() {
            if lock.is_none() && !options.read_only {
                lock = Some(WriteLock::acquire_waiting(dir, wait)?);
                crate::safety::restore::recover(dir)?;
            }
        } else {
            // Nothing is touched in a directory that is not a store and will not become one.
            crate::engine::store::check_can_create(dir, &options)?;
        }
        crate::safety::guard::check_links(dir, options.allow_links)?;
        let strays = crate::safety::guard::sweep(dir, options.read_only)?;
        let store = Store::open_database(dir, &options, lock)?;
        let mut leftovers = Vec::new();
        if !options.read_only {
            crate::blobs::recover(dir)?;
            leftovers = crate::safety::leftovers::sweep(dir, true)?;
            store.keep_reserve();
        }
        store.extensions().insert(Opened { strays, leftovers });
        if options.auto_backup && !options.read_only {
            store.extensions().insert(AutoBackups::default());
            store.backup_if_stale(BACKUP_ON_OPEN_AFTER_SECONDS, BackupReason::OnOpen);
            store.start_interval_backups()?;
        }
        Ok(store)
    }

    /// Stray files the guard moved into quarantine (or, read-only, only found) at open.
    pub fn strays(&self) -> Vec<StrayFile> {
        self.extensions().get::<Opened>().map(|o| o.strays.clone()).unwrap_or_default()
    }

    /// What interrupted operations (backups, uploads, rehearsals) had left, removed when this
    /// handle opened the store for writing.
    pub fn leftovers(&self) -> Vec<Leftover> {
        self.extensions().get::<Opened>().map(|o| o.leftovers.clone()).unwrap_or_default()
    }

    /// Stops the writer after the writes already queued, checkpoints the WAL into `store.db`
    /// and releases the lock. Other clones of this handle fail with [`Error::WriterStopped`]
    /// on their next write.
    ///
    /// With automatic backups and the `backup.on_close` setting, a backup is taken first; if
    /// it fails, the store still closes and the error is returned.
    pub fn close(self) -> Result<()> {
        let mut backup = Ok(());
        if self.extensions().get::<AutoBackups>().is_some()
            && self.setting_value::<bool>(BACKUP_ON_CLOSE).unwrap_or(false)
        {
            backup = self.backup(&BackupOptions::because(BackupReason::OnClose), &mut |_, _, _| {}).map(|_| ());
        }
        let closed = self.shutdown();
        self.write_pending_failures();
        // An empty staging folder of attachment uploads need not stay.
        let _ = std::fs::remove_dir(crate::blobs::tmp_dir(self.dir()));
        closed.and(backup)
    }

    /// Starts the thread that takes a backup every `backup.interval_seconds` (when it is not
    /// 0). It holds the store weakly and ends when the store closes.
    fn start_interval_backups(&self) -> Result<()> {
        let seconds = self.setting_value::<i64>(BACKUP_INTERVAL_SECONDS)?;
        let Some(auto) = self.extensions().get::<AutoBackups>() else { return Ok(()) };
        if seconds <= 0 {
            return Ok(());
        }
        let weak = Arc::downgrade(&self.inner);
        let actor = self.actor.clone();
        let stop = auto.stop.clone();
        drop(auto);
        let period = std::time::Duration::from_secs(seconds as u64);
        std::thread::Builder::new()
            .name("cairn-backups".into())
            .spawn(move || loop {
                let (flag, wake) = &*stop;
                let stopped = flag.lock().unwrap_or_else(|p| p.into_inner());
                let (stopped, _) = wake.wait_timeout(stopped, period).unwrap_or_else(|p| p.into_inner());
                if *stopped {
                    return;
                }
                drop(stopped);
                let Some(inner) = weak.upgrade() else { return };
                let store = Store { inner, actor: actor.clone() };
                store.backup_if_stale(BACKUP_INTERVAL_SECONDS, BackupReason::Interval);
            })
            .map_err(|e| Error::io("start the backup thread for", self.dir(), e))?;
        Ok(())
    }
}

/// For operations that run with the store closed (restore, migrate): opens the store in
/// `dir` to append their entry. A store that cannot be opened gets none (logged).
pub(crate) fn append_to(dir: &std::path::Path, actor: &str, action: &str, target: &str, outcome: &str, detail: &str) {
    let options = StoreOptions { actor: actor.into(), ..StoreOptions::existing() };
    match Store::open(dir, options) {
        Ok(store) => {
            store.audit(action, target, outcome, detail);
            if let Err(e) = store.close() {
                tracing::warn!(error = %e, action, "closing the store after its audit entry failed");
            }
        }
        Err(e) => tracing::error!(error = %e, action, target, outcome, "no audit entry: the store cannot be opened"),
    }
}
