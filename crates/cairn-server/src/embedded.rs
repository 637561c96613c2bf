//! The embedded store behind the routes: each call runs on tokio's blocking pool (a write
//! returns only once its group commit is on disk, and must not hold an async worker).

use cairn::{
    Access, BackupStatus, Backups, Change, CollectionInfo, Grant, Grantee, IssuedToken, JobsConfig, JobsRuntime, Once,
    OnceOptions, Page, Principal, Query, Realtime, RealtimeOptions, Record, Resume, Seq, SessionOptions, Store,
    StoreOptions, StoredAnswer, TokenInfo, User, WatchSpec, Workers,
};

use std::sync::{Arc, Mutex, RwLock};

use crate::backend::{Backend, BackendFuture, JobAction, Readiness, RecordWrite, Subscription};

/// A [`Backend`] over an open [`Store`].
///
/// Every call holds the store for reading while it runs; a restore holds it for writing, so
/// it waits for the calls in flight and the calls after it wait for the restored store.
#[derive(Debug, Clone)]
pub struct Embedded {
    store: Arc<RwLock<Option<Store>>>,
    /// How the store is opened again after a restore.
    reopen: StoreOptions,
    /// The realtime fan-out of the store, started by the first subscriber; a restore stops
    /// it (its subscribers then subscribe again, to the restored store, and are reset).
    realtime: Arc<Mutex<Option<Arc<Realtime>>>>,
    realtime_options: RealtimeOptions,
    /// The jobs this process runs on the store; a restore stops them and starts them again
    /// on the restored store.
    jobs: Arc<Mutex<JobsHost>>,
}

/// How long running jobs get to finish when the server stops or restores.
const JOBS_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Default)]
struct JobsHost {
    config: Option<(JobsConfig, Workers)>,
    running: Option<JobsRuntime>,
}

impl JobsHost {
    fn stop(&mut self) {
        if let Some(runtime) = self.running.take() {
            let stats = runtime.stop(JOBS_GRACE);
            tracing::info!(released = stats.released, "the jobs of this process stopped");
        }
    }

    fn start(&mut self, store: &Store) -> cairn::Result<()> {
        if let Some((config, workers)) = &self.config {
            let name = format!("serve-{}", std::process::id());
            self.running = Some(JobsRuntime::start(store, config, workers, &name)?);
        }
        Ok(())
    }
}

impl Embedded {
    /// Serves `store`; the server closes it on shutdown. After a restore it is opened again
    /// with the default options (see [`Embedded::reopening_with`]).
    pub fn new(store: Store) -> Embedded {
        Embedded::reopening_with(store, StoreOptions::existing())
    }

    /// Serves `store`, opening it again with `options` after a restore.
    pub fn reopening_with(store: Store, options: StoreOptions) -> Embedded {
        Embedded {
            store: Arc::new(RwLock::new(Some(store))),
            reopen: options,
            realtime: Arc::default(),
            realtime_options: RealtimeOptions::default(),
            jobs: Arc::default(),
        }
    }

    /// Runs the workers, schedules and watchers `config` asks for on the store (with the
    /// handlers of `workers` besides the built-in ones) until the server stops.
    pub fn with_jobs(self, config: JobsConfig, workers: Workers) -> cairn::Result<Embedded> {
        {
            let held = self.store.read().unwrap_or_else(|p| p.into_inner());
            let store = held.as_ref().ok_or(cairn::Error::WriterStopped)?;
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.config = Some((config, workers));
            jobs.start(store)?;
        }
        Ok(self)
    }

    /// Holds up to `buffer` events per realtime subscriber before it must catch up from the
    /// change log (default: [`RealtimeOptions::default`]).
    pub fn with_realtime_buffer(mut self, buffer: usize) -> Embedded {
        self.realtime_options.buffer = buffer;
        self
    }

    /// Runs `work` on the store (held for reading) on tokio's blocking pool.
    fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> cairn::Result<T> + Send + 'static,
    ) -> BackendFuture<'_, T> {
        let store = self.store.clone();
        off_the_runtime(move || {
            let held = store.read().unwrap_or_else(|p| p.into_inner());
            match held.as_ref() {
                Some(store) => work(store),
                None => Err(cairn::Error::WriterStopped),
            }
        })
    }
}

/// Runs `work` on tokio's blocking pool.
fn off_the_runtime<'a, T: Send + 'static>(
    work: impl FnOnce() -> cairn::Result<T> + Send + 'static,
) -> BackendFuture<'a, T> {
    Box::pin(async move {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| cairn::Error::Internal(format!("a storage task did not finish: {e}")))?
    })
}

impl Backend for Embedded {
    fn collections(&self) -> BackendFuture<'_, Vec<CollectionInfo>> {
        self.blocking(|s| s.collections())
    }

    fn collection(&self, name: String) -> BackendFuture<'_, CollectionInfo> {
        self.blocking(move |s| s.collection(&name))
    }

    fn write(&self, caller: Principal, write: RecordWrite) -> BackendFuture<'_, Record> {
        // The change log names the user who made each change.
        self.blocking(move |s| s.as_actor(&caller.user.name).transaction(move |tx| write.apply(&caller, tx)))
    }

    fn write_once(&self, caller: Principal, options: OnceOptions, write: RecordWrite) -> BackendFuture<'_, Once> {
        self.blocking(move |s| {
            s.as_actor(&caller.user.name).write_once(&options, move |tx| {
                let status = write.status();
                let record = write.apply(&caller, tx)?;
                let body = serde_json::to_string(&record).map_err(|e| cairn::Error::Internal(e.to_string()))?;
                Ok(StoredAnswer { status, body })
            })
        })
    }

    fn get(&self, caller: Principal, collection: String, id: String) -> BackendFuture<'_, Record> {
        self.blocking(move |s| s.get_as(&caller, &collection, &id))
    }

    fn query(&self, caller: Principal, collection: String, query: Query) -> BackendFuture<'_, Page> {
        self.blocking(move |s| s.query_as(&caller, &collection, &query))
    }

    fn count(&self, caller: Principal, collection: String, filter: Option<String>) -> BackendFuture<'_, u64> {
        self.blocking(move |s| s.count_as(&caller, &collection, filter.as_deref()))
    }

    fn history(&self, caller: Principal, collection: String, id: String) -> BackendFuture<'_, Vec<Change>> {
        self.blocking(move |s| s.history_as(&caller, &collection, &id))
    }

    fn changes_since(&self, since: Seq, limit: usize) -> BackendFuture<'_, Vec<Change>> {
        self.blocking(move |s| s.changes_since(since, limit))
    }

    fn authenticate(&self, token: String) -> BackendFuture<'_, Principal> {
        self.blocking(move |s| s.authenticate(&token))
    }

    fn login(&self, name: String, password: String, options: SessionOptions) -> BackendFuture<'_, IssuedToken> {
        let password = zeroize::Zeroizing::new(password);
        self.blocking(move |s| s.login(&name, &password, &options))
    }

    fn revoke_token(&self, id: String) -> BackendFuture<'_, TokenInfo> {
        self.blocking(move |s| s.revoke_token(&id))
    }

    fn set_password(&self, name: String, password: String, keep: Option<String>) -> BackendFuture<'_, User> {
        let password = zeroize::Zeroizing::new(password);
        self.blocking(move |s| s.set_password(&name, &password, keep.as_deref()))
    }

    fn create_collection(&self, schema: cairn::CollectionSchema) -> BackendFuture<'_, CollectionInfo> {
        self.blocking(move |s| s.create_collection(schema))
    }

    fn update_collection(&self, schema: cairn::CollectionSchema) -> BackendFuture<'_, CollectionInfo> {
        self.blocking(move |s| s.update_collection(schema))
    }

    fn drop_collection(&self, name: String, confirm: String) -> BackendFuture<'_, cairn::DropReport> {
        self.blocking(move |s| s.drop_collection(&name, &cairn::DropOptions { confirm }))
    }

    fn users(&self) -> BackendFuture<'_, Vec<User>> {
        self.blocking(|s| s.users())
    }

    fn create_user(&self, name: String, password: String, role: String) -> BackendFuture<'_, User> {
        let password = zeroize::Zeroizing::new(password);
        self.blocking(move |s| s.create_user(&name, &password, &role))
    }

    fn disable_user(&self, name: String) -> BackendFuture<'_, User> {
        self.blocking(move |s| s.disable_user(&name))
    }

    fn tokens(&self, user: Option<String>) -> BackendFuture<'_, Vec<TokenInfo>> {
        self.blocking(move |s| s.tokens(user.as_deref()))
    }

    fn create_api_key(&self, user: String, options: cairn::ApiKeyOptions) -> BackendFuture<'_, IssuedToken> {
        self.blocking(move |s| s.create_api_key(&user, &options))
    }

    fn attach(
        &self,
        caller: Principal,
        collection: String,
        id: String,
        field: String,
        upload: cairn::Upload,
        content: Box<dyn std::io::Read + Send>,
    ) -> BackendFuture<'_, (Record, cairn::Attachment)> {
        self.blocking(move |s| {
            s.as_actor(&caller.user.name).attach_as(&caller, &collection, &id, &field, content, &upload)
        })
    }

    fn open_attachment(
        &self,
        caller: Principal,
        collection: String,
        id: String,
        field: String,
        hash: String,
    ) -> BackendFuture<'_, (cairn::Attachment, Box<dyn std::io::Read + Send>)> {
        self.blocking(move |s| {
            let (attachment, reader) = s.open_attachment_as(&caller, &collection, &id, &field, &hash)?;
            Ok((attachment, Box::new(reader) as Box<dyn std::io::Read + Send>))
        })
    }

    fn purge(&self, caller: Principal, collection: String, id: String) -> BackendFuture<'_, u64> {
        self.blocking(move |s| s.as_actor(&caller.user.name).purge(&collection, &id))
    }

    fn grants(&self, caller: Principal, collection: String, id: String) -> BackendFuture<'_, Vec<Grant>> {
        self.blocking(move |s| s.grants_as(&caller, &collection, &id))
    }

    fn grant(
        &self,
        caller: Principal,
        collection: String,
        id: String,
        grantee: Grantee,
        access: Access,
    ) -> BackendFuture<'_, Grant> {
        self.blocking(move |s| {
            s.as_actor(&caller.user.name)
                .transaction(move |tx| tx.grant(Some(&caller), &collection, &id, &grantee, access))
        })
    }

    fn revoke_grant(&self, caller: Principal, grant: String) -> BackendFuture<'_, Grant> {
        self.blocking(move |s| {
            s.as_actor(&caller.user.name).transaction(move |tx| tx.revoke_grant(Some(&caller), &grant))
        })
    }

    fn search(
        &self,
        caller: Principal,
        collection: String,
        search: cairn::Search,
    ) -> BackendFuture<'_, Vec<cairn::Hit>> {
        self.blocking(move |s| s.search_as(&caller, &collection, &search))
    }

    fn batch(&self, caller: Principal, ops: Vec<cairn::BatchOp>) -> BackendFuture<'_, Vec<cairn::BatchResult>> {
        self.blocking(move |s| s.as_actor(&caller.user.name).batch(ops))
    }

    fn settings(&self) -> BackendFuture<'_, Vec<cairn::Setting>> {
        self.blocking(|s| s.settings())
    }

    fn set_setting(&self, key: String, value: serde_json::Value) -> BackendFuture<'_, cairn::Setting> {
        self.blocking(move |s| {
            s.set_setting(&key, value)?;
            s.setting(&key)
        })
    }

    fn audit_log(&self, filter: Option<String>, after: u64, limit: usize) -> BackendFuture<'_, Vec<cairn::AuditEntry>> {
        self.blocking(move |s| s.audit_log(filter.as_deref(), after, limit))
    }

    fn jobs(&self, filter: cairn::JobFilter) -> BackendFuture<'_, Vec<cairn::Job>> {
        self.blocking(move |s| s.queue().list(&filter))
    }

    fn job(&self, id: i64) -> BackendFuture<'_, cairn::Job> {
        self.blocking(move |s| s.queue().get(id))
    }

    fn job_stats(&self) -> BackendFuture<'_, Vec<cairn::QueueStats>> {
        self.blocking(|s| s.queue().stats())
    }

    fn enqueue(&self, caller: Principal, job: cairn::NewJob) -> BackendFuture<'_, cairn::Enqueued> {
        self.blocking(move |s| s.as_actor(&caller.user.name).queue().enqueue(job))
    }

    fn job_action(&self, caller: Principal, id: i64, action: JobAction) -> BackendFuture<'_, cairn::Job> {
        self.blocking(move |s| {
            let queue = s.as_actor(&caller.user.name).queue();
            match action {
                JobAction::Cancel => queue.cancel(id),
                JobAction::Retry => queue.retry(id),
                JobAction::Restart => queue.restart(id),
                JobAction::Delete => queue.delete(id),
            }
        })
    }

    fn job_events(&self) -> BackendFuture<'_, cairn::JobEvents> {
        self.blocking(|s| Ok(s.job_events()))
    }

    fn schedules(&self) -> BackendFuture<'_, Vec<cairn::Schedule>> {
        self.blocking(|s| s.queue().schedules())
    }

    fn put_schedule(
        &self,
        caller: Principal,
        spec: cairn::ScheduleSpec,
        replace: bool,
    ) -> BackendFuture<'_, cairn::Schedule> {
        self.blocking(move |s| s.as_actor(&caller.user.name).queue().add_schedule(spec, replace))
    }

    fn remove_schedule(&self, caller: Principal, name: String) -> BackendFuture<'_, cairn::Schedule> {
        self.blocking(move |s| s.as_actor(&caller.user.name).queue().remove_schedule(&name))
    }

    fn run_schedule(&self, caller: Principal, name: String) -> BackendFuture<'_, cairn::Enqueued> {
        self.blocking(move |s| s.as_actor(&caller.user.name).queue().run_schedule_now(&name))
    }

    fn backups(&self) -> BackendFuture<'_, Vec<cairn::BackupInfo>> {
        self.blocking(|s| s.backups())
    }

    fn export(&self, options: cairn::ExportOptions) -> BackendFuture<'_, cairn::ExportArchive> {
        self.blocking(move |s| s.export_archive(&options, &mut |_, _, _| {}))
    }

    fn backup(&self) -> BackendFuture<'_, cairn::BackupInfo> {
        self.blocking(|s| s.backup(&cairn::BackupOptions::default(), &mut |_, _, _| {}))
    }

    fn verify_backup(&self, id: String) -> BackendFuture<'_, cairn::BackupInfo> {
        self.blocking(move |s| s.verify_backup(&id, &mut |_, _, _| {}))
    }

    fn audit(
        &self,
        actor: String,
        action: String,
        target: String,
        outcome: String,
        detail: String,
    ) -> BackendFuture<'_, ()> {
        self.blocking(move |s| {
            s.as_actor(&actor).audit(&action, &target, &outcome, &detail);
            Ok(())
        })
    }

    fn write_stats(&self) -> BackendFuture<'_, cairn::WriteStats> {
        self.blocking(|s| Ok(s.write_stats()))
    }

    fn readiness(&self, min_free_bytes: u64, max_backup_age_seconds: u64) -> BackendFuture<'_, Readiness> {
        self.blocking(move |s| {
            let mut reasons = Vec::new();
            if s.is_read_only() {
                reasons.push("the store is open read-only".to_string());
            } else if let Err(e) = s.transaction(|_| Ok(())) {
                // An empty transaction through the writer: it is running and can take the
                // write lock (nothing is written, so nothing is synced).
                reasons.push(format!("the store cannot take a write: {e}"));
            }
            let last_seq = s.last_seq()?;
            let disk_free_bytes = s.disk_available();
            if let Some(free) = disk_free_bytes.filter(|free| *free < min_free_bytes) {
                reasons.push(format!("{free} bytes free on the store's disk, under the {min_free_bytes} required"));
            }
            let newest = Backups::of(s.dir()).list()?.into_iter().find(|b| b.status == BackupStatus::Good);
            let backup_age_seconds = newest.as_ref().map(|b| b.age_seconds);
            if max_backup_age_seconds > 0 {
                match backup_age_seconds {
                    None => reasons.push("there is no verified backup".to_string()),
                    Some(age) if age > max_backup_age_seconds as i64 => reasons.push(format!(
                        "the newest verified backup is {age} s old, over the {max_backup_age_seconds} s allowed"
                    )),
                    Some(_) => {}
                }
            }
            Ok(Readiness { reasons, disk_free_bytes, backup_age_seconds, last_seq })
        })
    }

    fn restore_records(
        &self,
        caller: Principal,
        backup: String,
        collection: String,
        id: Option<String>,
    ) -> BackendFuture<'_, cairn::RecordsRestored> {
        self.blocking(move |s| s.as_actor(&caller.user.name).restore_records(&backup, &collection, id.as_deref()))
    }

    fn restore(&self, backup: String) -> BackendFuture<'_, cairn::RestoreReport> {
        let (store, reopen, realtime, jobs) =
            (self.store.clone(), self.reopen.clone(), self.realtime.clone(), self.jobs.clone());
        off_the_runtime(move || {
            let mut held = store.write().unwrap_or_else(|p| p.into_inner());
            // The fan-out follows the store being replaced; its subscribers come back to the
            // restored one (and are told to start over: its epoch is new). The jobs stop
            // (running ones get their grace, then go back to the queue) and start again.
            drop(realtime.lock().unwrap_or_else(|p| p.into_inner()).take());
            let mut jobs = jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.stop();
            let current = held.take().ok_or(cairn::Error::WriterStopped)?;
            let reopened = current.restore_in_place(&backup, &reopen, &mut |_, _, _| {});
            match reopened.store {
                Ok(store) => {
                    if let Err(e) = jobs.start(&store) {
                        tracing::error!(error = %e, "the jobs could not start again after a restore");
                    }
                    *held = Some(store);
                }
                Err(e) => tracing::error!(error = %e, "the store could not be opened again after a restore"),
            }
            reopened.restored
        })
    }

    fn watch(&self, caller: Principal, spec: WatchSpec, resume: Resume) -> BackendFuture<'_, Box<dyn Subscription>> {
        let (realtime, options) = (self.realtime.clone(), self.realtime_options.clone());
        self.blocking(move |s| {
            let fan_out = {
                let mut running = realtime.lock().unwrap_or_else(|p| p.into_inner());
                match running.as_ref() {
                    Some(fan_out) => fan_out.clone(),
                    None => running.insert(Arc::new(s.realtime(&options)?)).clone(),
                }
            };
            Ok(Box::new(fan_out.watch(caller, spec, &resume)?) as Box<dyn Subscription>)
        })
    }

    fn issue_ticket(&self, caller: Principal, lifetime: std::time::Duration) -> BackendFuture<'_, String> {
        self.blocking(move |s| s.issue_ticket(&caller, lifetime))
    }

    fn redeem_ticket(&self, ticket: String) -> BackendFuture<'_, Principal> {
        self.blocking(move |s| s.redeem_ticket(&ticket))
    }

    fn recheck(&self, caller: Principal) -> BackendFuture<'_, Principal> {
        self.blocking(move |s| s.recheck(&caller))
    }

    fn close(&self) -> BackendFuture<'_, ()> {
        let (store, realtime, jobs) = (self.store.clone(), self.realtime.clone(), self.jobs.clone());
        off_the_runtime(move || {
            jobs.lock().unwrap_or_else(|p| p.into_inner()).stop();
            drop(realtime.lock().unwrap_or_else(|p| p.into_inner()).take());
            let taken = store.write().unwrap_or_else(|p| p.into_inner()).take();
            taken.map_or(Ok(()), Store::close)
        })
    }
}
