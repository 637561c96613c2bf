//! Folder ingest (JOB-4): a watched folder whose files, once stable, are hashed into the blob
//! store, recorded in a collection and handed to jobs, by the first rule whose glob matches.
//!
//! A file is stable when its size and modification time have not changed for the settle
//! time, or at once when it was renamed into the folder (the usual "write elsewhere, then
//! move" of careful producers). Changes are noticed by `notify` and by a periodic rescan
//! (which alone finds what arrived while cairn was down).
//!
//! Ingesting is idempotent: a file already taken in (same path, size and modification
//! time) is passed over, and one whose content was taken in before (same hash, same
//! collection) is recorded as a duplicate of that record instead of making another. The
//! record, the file's ingest row and the jobs commit in one transaction, so a crash leaves a
//! file either wholly ingested or not at all (and the next scan takes it). A file a rule's
//! checks turn away (size, type by magic bytes) is moved to the rejected folder with a note
//! of why, reported and audited — never deleted. Files no rule's glob matches, and hidden
//! files (a leading `.`: the partial files of many downloaders), are left alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use globset::{Glob, GlobMatcher};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::blobs::content::sniff;
use crate::engine::store::Store;
use crate::error::{Error, Result};
use crate::jobs::NewJob;

fn default_settle() -> u64 {
    2000
}

fn default_rescan() -> u64 {
    10_000
}

/// A job a rule enqueues for each file it takes in. String values in `args` may name
/// `{record}`, `{collection}`, `{path}`, `{name}`, `{stem}`, `{size}`, `{mime}`, `{hash}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestJob {
    pub kind: String,
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default)]
    pub args: Value,
}

fn default_queue() -> String {
    crate::jobs::DEFAULT_QUEUE.into()
}

/// Which files a rule takes, and what it makes of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestRule {
    /// Matched against the path relative to the folder (`*.wav`, `**/*.mp3`).
    pub glob: String,
    #[serde(default)]
    pub min_size: Option<u64>,
    #[serde(default)]
    pub max_size: Option<u64>,
    /// The types allowed, by the content's magic bytes (`audio/wav`, or `audio/*`); any if
    /// empty.
    #[serde(default)]
    pub mime: Vec<String>,
    pub collection: String,
    /// The `attachment` field the file goes in.
    pub field: String,
    /// Other fields of the record (string values are templates, as in [`IngestJob`]).
    #[serde(default)]
    pub set: serde_json::Map<String, Value>,
    #[serde(default)]
    pub jobs: Vec<IngestJob>,
}

/// A watched folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSpec {
    pub folder: PathBuf,
    /// Where turned-away files go; `<folder>/.rejected` if absent.
    #[serde(default)]
    pub rejected_dir: Option<PathBuf>,
    #[serde(default = "default_settle")]
    pub settle_ms: u64,
    #[serde(default = "default_rescan")]
    pub rescan_ms: u64,
    pub rules: Vec<IngestRule>,
}

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Ingested {
    /// A new record.
    Ingested { path: PathBuf, collection: String, record: String, jobs: Vec<i64> },
    /// Content taken in before: no new record.
    Duplicate { path: PathBuf, collection: String, record: String },
    /// Turned away and moved.
    Rejected { path: PathBuf, moved_to: PathBuf, reason: String },
    /// It could not be taken in now (it will be tried again).
    Failed { path: PathBuf, error: String },
}

impl IngestSpec {
    fn rejected(&self) -> PathBuf {
        self.rejected_dir.clone().unwrap_or_else(|| self.folder.join(".rejected"))
    }

    /// Checks the spec and compiles its globs.
    pub(crate) fn compile(&self) -> Result<Vec<GlobMatcher>> {
        let bad =
            |reason: String| Error::InvalidInput { source_name: format!("ingest {}", self.folder.display()), reason };
        if !self.folder.is_absolute() {
            return Err(bad("the folder must be an absolute path".into()));
        }
        if self.rules.is_empty() {
            return Err(bad("no rules: nothing would be taken in".into()));
        }
        self.rules
            .iter()
            .map(|rule| {
                for job in &rule.jobs {
                    NewJob::new(&job.kind, Value::Null).queue(&job.queue).validate()?;
                }
                Glob::new(&rule.glob)
                    .map(|g| g.compile_matcher())
                    .map_err(|e| bad(format!("glob {:?}: {e}", rule.glob)))
            })
            .collect()
    }
}

/// The values templates may name.
fn template_values(path: &Path, size: u64, mime: &str, hash: &str) -> BTreeMap<&'static str, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    BTreeMap::from([
        ("path", path.to_string_lossy().into_owned()),
        ("name", name),
        ("stem", stem),
        ("size", size.to_string()),
        ("mime", mime.to_string()),
        ("hash", hash.to_string()),
    ])
}

/// `value` with `{name}` in its strings replaced.
fn fill(value: &Value, values: &BTreeMap<&'static str, String>) -> Value {
    match value {
        Value::String(s) => {
            let mut out = s.clone();
            for (name, v) in values {
                out = out.replace(&format!("{{{name}}}"), v);
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, values)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), fill(v, values))).collect()),
        other => other.clone(),
    }
}

fn mime_allowed(allowed: &[String], mime: &str) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a == mime || a.strip_suffix("/*").is_some_and(|family| mime.starts_with(&format!("{family}/"))))
}

/// A file's size and modification time (ns), if it is a regular file.
fn stat(path: &Path) -> Option<(u64, i64)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos() as i64;
    Some((meta.len(), mtime))
}

/// One watched folder's ingest, driven by [`Ingest::scan`] (the watcher thread calls it).
#[derive(Debug)]
pub struct Ingest {
    store: Store,
    spec: IngestSpec,
    globs: Vec<GlobMatcher>,
    /// Files seen but not yet stable: (size, mtime) and since when unchanged.
    pending: HashMap<PathBuf, ((u64, i64), Instant)>,
    /// Files renamed in: stable at once.
    renamed: HashSet<PathBuf>,
}

impl Ingest {
    pub fn new(store: Store, spec: IngestSpec) -> Result<Ingest> {
        let globs = spec.compile()?;
        Ok(Ingest { store, spec, globs, pending: HashMap::new(), renamed: HashSet::new() })
    }

    /// Marks a file as complete now (it was renamed into the folder).
    pub fn renamed_in(&mut self, path: &Path) {
        self.renamed.insert(path.to_path_buf());
    }

    /// Looks at every file of the folder once: takes in those stable for the settle time
    /// (as of `now`), and starts the clock for the others.
    pub fn scan(&mut self, now: Instant) -> Vec<Ingested> {
        let mut outcomes = Vec::new();
        self.scan_each(now, |outcome| outcomes.push(outcome));
        outcomes
    }

    /// [`Ingest::scan`], telling `report` of each file as soon as it is decided.
    pub fn scan_each(&mut self, now: Instant, mut report: impl FnMut(Ingested)) {
        let rejected = self.spec.rejected();
        let mut files = Vec::new();
        walk(&self.spec.folder, &rejected, &mut files);
        let settle = Duration::from_millis(self.spec.settle_ms);
        let seen: HashSet<PathBuf> = files.iter().cloned().collect();
        self.pending.retain(|p, _| seen.contains(p));
        for path in files {
            let Some(rule) = self.rule_for(&path) else { continue };
            let Some(state) = stat(&path) else { continue };
            let stable = match self.pending.get(&path) {
                _ if self.renamed.remove(&path) => true,
                Some((before, since)) if *before == state => now.duration_since(*since) >= settle,
                _ => {
                    self.pending.insert(path.clone(), (state, now));
                    settle.is_zero()
                }
            };
            if !stable {
                continue;
            }
            self.pending.remove(&path);
            let outcome = match self.take(&path, state, rule) {
                Ok(Some(outcome)) => {
                    // The jobs are read back only for listeners (the console's live list).
                    if let (Ingested::Ingested { jobs, .. }, true) = (&outcome, self.store.job_listeners()) {
                        let queue = self.store.queue();
                        let enqueued: Vec<_> = jobs.iter().filter_map(|id| queue.get(*id).ok()).collect();
                        self.store.jobs_changed(&enqueued);
                    }
                    outcome
                }
                Ok(None) => continue,
                Err(e) => Ingested::Failed { path: path.clone(), error: e.to_string() },
            };
            match &outcome {
                Ingested::Rejected { path, reason, .. } => {
                    tracing::warn!(path = %path.display(), reason, "an ingested file was rejected");
                }
                Ingested::Failed { path, error } => {
                    tracing::warn!(path = %path.display(), error, "a file could not be ingested; it will be tried again");
                }
                _ => {}
            }
            report(outcome);
        }
    }

    fn rule_for(&self, path: &Path) -> Option<usize> {
        let relative = path.strip_prefix(&self.spec.folder).ok()?;
        self.globs.iter().position(|g| g.is_match(relative))
    }

    /// Ingests one stable file under rule `rule`; `None` when it was taken in before.
    fn take(&self, path: &Path, (size, mtime): (u64, i64), rule: usize) -> Result<Option<Ingested>> {
        let rule = &self.spec.rules[rule];
        let path_text = path.to_string_lossy().into_owned();
        let known: bool = self
            .store
            .reader()?
            .query_row(
                "SELECT 1 FROM cairn_ingested WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3",
                params![path_text, size as i64, mtime],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if known {
            return Ok(None);
        }
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        let mut head = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(&file, 64), &mut head)
            .map_err(|e| Error::io("read", path, e))?;
        let mime = sniff(&head).map(|(m, _)| m).unwrap_or("application/octet-stream");
        let reason = if rule.min_size.is_some_and(|min| size < min) {
            Some(format!("{size} bytes is under the rule's minimum of {} bytes", rule.min_size.unwrap_or(0)))
        } else if rule.max_size.is_some_and(|max| size > max) {
            Some(format!("{size} bytes is over the rule's maximum of {} bytes", rule.max_size.unwrap_or(0)))
        } else if !mime_allowed(&rule.mime, mime) {
            Some(format!("its content is {mime}, not one of {:?}", rule.mime))
        } else {
            None
        };
        if let Some(reason) = reason {
            return self.reject(path, &reason).map(Some);
        }
        let staged = crate::blobs::put::stage(
            self.store.dir(),
            std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?,
            self.store.setting_u64(crate::data::builtin_settings::BLOBS_MAX_BYTES)?,
        )?;
        // Changed while it was read: not stable after all.
        if stat(path) != Some((size, mtime)) {
            return Ok(None);
        }
        let (rule, path) = (rule.clone(), path.to_path_buf());
        let name = crate::blobs::content::sanitize_name(&path.file_name().unwrap_or_default().to_string_lossy())
            .unwrap_or_else(|_| "file".into());
        self.store.write(move |tx| {
            let again: Option<i64> = tx
                .conn
                .query_row(
                    "SELECT 1 FROM cairn_ingested WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3",
                    params![path_text, size as i64, mtime],
                    |r| r.get(0),
                )
                .optional()?;
            if again.is_some() {
                return Ok(None);
            }
            let hash = staged.hash.clone();
            let earlier: Option<String> = tx
                .conn
                .query_row(
                    "SELECT record_id FROM cairn_ingested WHERE hash = ?1 AND collection = ?2 AND outcome = 'ingested'
                     ORDER BY at LIMIT 1",
                    params![hash, rule.collection],
                    |r| r.get(0),
                )
                .optional()?;
            let record_row = |tx: &mut crate::engine::writer::Tx<'_>, outcome: &str, record: &str| {
                tx.conn.execute(
                    "INSERT INTO cairn_ingested (path, size, mtime_ns, hash, outcome, collection, record_id, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![path_text, size as i64, mtime, hash, outcome, rule.collection, record, tx.now.0],
                )
            };
            if let Some(record) = earlier {
                record_row(tx, "duplicate", &record)?;
                tx.audit(
                    "ingest.duplicate",
                    &path_text,
                    "ok",
                    &format!("same content as {}/{record}", rule.collection),
                )?;
                return Ok(Some(Ingested::Duplicate { path, collection: rule.collection, record }));
            }
            let info = tx.commit_blob(staged)?;
            let values = template_values(&path, size, mime, &hash);
            let mut body = match fill(&Value::Object(rule.set.clone()), &values) {
                Value::Object(map) => map,
                _ => serde_json::Map::new(),
            };
            body.insert(rule.field.clone(), json!({"hash": info.hash, "name": name, "mime": mime, "size": info.size}));
            let record = tx.create(&rule.collection, None, Value::Object(body))?;
            record_row(tx, "ingested", &record.id)?;
            let mut values = values;
            values.insert("record", record.id.clone());
            values.insert("collection", rule.collection.clone());
            let mut jobs = Vec::new();
            for job in &rule.jobs {
                let new = NewJob::new(&job.kind, fill(&job.args, &values)).queue(&job.queue);
                jobs.push(tx.enqueue(&new)?.job.id);
            }
            tx.audit("ingest.file", &path_text, "ok", &format!("{}/{}, jobs {jobs:?}", rule.collection, record.id))?;
            Ok(Some(Ingested::Ingested { path, collection: rule.collection, record: record.id, jobs }))
        })
    }

    /// Moves a turned-away file into the rejected folder, with a note of why beside it.
    fn reject(&self, path: &Path, reason: &str) -> Result<Ingested> {
        let rejected = self.spec.rejected();
        let relative = path.strip_prefix(&self.spec.folder).unwrap_or(path);
        let mut target = rejected.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        let mut n = 1;
        while target.exists() {
            target = rejected.join(format!("{}.{n}", relative.display()));
            n += 1;
        }
        std::fs::rename(path, &target).map_err(|e| Error::io("move a rejected file to", &target, e))?;
        let note = target.with_file_name(format!(
            "{}.rejected.txt",
            target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        ));
        crate::engine::fsutil::write_durably(&note, format!("{}\n{reason}\n", path.display()).as_bytes())?;
        self.store.audit(
            "ingest.reject",
            &path.to_string_lossy(),
            &format!("rejected: {reason}"),
            &target.to_string_lossy(),
        );
        Ok(Ingested::Rejected { path: path.to_path_buf(), moved_to: target, reason: reason.to_string() })
    }
}

/// Every regular file under `dir`, but hidden ones and the rejected folder.
fn walk(dir: &Path, rejected: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') || path == rejected {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, rejected, out),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
}

/// A running watcher: a thread that scans on file events and every rescan interval.
#[derive(Debug)]
pub struct IngestWatcher {
    stop: Arc<AtomicBool>,
    wake: mpsc::Sender<notify::Result<notify::Event>>,
    thread: Option<JoinHandle<()>>,
}

impl IngestWatcher {
    /// Starts watching `spec.folder` (created if missing). `on_outcome` hears of each file.
    pub fn start(
        store: Store,
        spec: IngestSpec,
        on_outcome: impl Fn(&Ingested) + Send + 'static,
    ) -> Result<IngestWatcher> {
        std::fs::create_dir_all(&spec.folder).map_err(|e| Error::io("create", &spec.folder, e))?;
        let mut ingest = Ingest::new(store, spec)?;
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(tx.clone()).map_err(|e| Error::InvalidInput {
            source_name: format!("ingest {}", ingest.spec.folder.display()),
            reason: format!("cannot watch the folder: {e}"),
        })?;
        notify::Watcher::watch(&mut watcher, &ingest.spec.folder, notify::RecursiveMode::Recursive).map_err(|e| {
            Error::InvalidInput {
                source_name: format!("ingest {}", ingest.spec.folder.display()),
                reason: format!("cannot watch the folder: {e}"),
            }
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cairn-ingest".into())
            .spawn(move || {
                let _watcher = watcher;
                let tick = Duration::from_millis(ingest.spec.settle_ms.clamp(50, 1000) / 2 + 25);
                let rescan = Duration::from_millis(ingest.spec.rescan_ms.max(100));
                let mut last_scan = Instant::now() - rescan;
                while !stopping.load(Ordering::SeqCst) {
                    let mut busy = !ingest.pending.is_empty();
                    match rx.recv_timeout(tick) {
                        Ok(Ok(event)) => {
                            busy = true;
                            if matches!(
                                event.kind,
                                notify::EventKind::Modify(notify::event::ModifyKind::Name(
                                    notify::event::RenameMode::To | notify::event::RenameMode::Both
                                ))
                            ) {
                                if let Some(to) = event.paths.last() {
                                    ingest.renamed_in(to);
                                }
                            }
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, "the ingest watcher reported an error"),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    if busy || last_scan.elapsed() >= rescan {
                        last_scan = Instant::now();
                        ingest.scan_each(Instant::now(), |outcome| on_outcome(&outcome));
                    }
                }
            })
            .map_err(|e| Error::io("start a thread for", Path::new("ingest"), e))?;
        Ok(IngestWatcher { stop, wake: tx, thread: Some(thread) })
    }

    /// Stops the watcher and waits for its thread (a file being ingested finishes first).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the thread if it waits for an event.
        self.wake.send(Err(notify::Error::generic("stopping"))).ok();
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

impl Drop for IngestWatcher {
    fn drop(&mut self) {
        self.halt();
    }
}
