//! The subcommands. Each module maps its arguments onto one library call and formats the
//! answer.

mod audit;
mod backup;
mod blob;
mod changes;
mod collection;
mod demo;
mod jobs;
mod key;
mod migrate;
mod portability;
mod query;
mod record;
mod serve;
mod settings;
mod shell;
mod user;

use std::path::PathBuf;

use anyhow::Result;
use cairn::{Store, StoreOptions};
use clap::Subcommand;

use crate::output::Output;

pub struct Context {
    pub dir: PathBuf,
    /// How long a write waits for another process to release the store (`--wait`).
    pub wait: std::time::Duration,
    pub actor: String,
    pub out: Output,
    /// Take backups automatically (the `backup.*` settings); off with `--no-auto-backup`.
    pub auto_backup: bool,
    /// Open a store through symbolic links (`--allow-links`).
    pub allow_links: bool,
    /// Where the secret that opens the store's encryption key comes from, if anywhere.
    pub key: KeySource,
}

/// How a value this command cannot open is shown in tables.
pub const SEALED_CELL: &str = "[encrypted: key locked]";

/// Says which encrypted fields were left out because no secret was given.
pub fn note_sealed(fields: &[String]) {
    if !fields.is_empty() {
        println!(
            "encrypted, not shown: {} (give --key-file, --passphrase-file or CAIRN_PASSPHRASE to read)",
            fields.join(", ")
        );
    }
}

/// `--key-file`, `--passphrase-file` or `CAIRN_PASSPHRASE`.
#[derive(Debug, Default)]
pub struct KeySource {
    pub key_file: Option<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
    pub passphrase: Option<String>,
}

impl KeySource {
    /// The secret given, if one was; more than one is a usage error.
    pub fn secret(&self) -> Result<Option<cairn::Secret>> {
        match (&self.key_file, &self.passphrase_file, &self.passphrase) {
            (None, None, None) => Ok(None),
            (Some(path), None, None) => Ok(Some(cairn::Secret::key_file(path))),
            (None, Some(path), None) => Ok(Some(passphrase_from_file(path)?)),
            (None, None, Some(text)) => Ok(Some(cairn::Secret::passphrase(text.clone()))),
            _ => Err(crate::UsageError(
                "give one of --key-file, --passphrase-file and CAIRN_PASSPHRASE, not several".into(),
            )
            .into()),
        }
    }
}

/// The first line of `path`, without its line ending.
pub fn passphrase_from_file(path: &std::path::Path) -> Result<cairn::Secret> {
    let text = zeroize::Zeroizing::new(crate::input::read_text(path)?);
    let line = text.lines().next().unwrap_or_default();
    Ok(cairn::Secret::passphrase(line))
}

impl Context {
    /// Opens the store for writing; it must exist.
    pub fn open_write(&self) -> Result<Store> {
        self.open_writable(StoreOptions::existing())
    }

    /// Opens the store for writing, creating it when the directory has none (imports).
    pub fn open_create(&self) -> Result<Store> {
        self.open_writable(StoreOptions::default())
    }

    /// The options a writable open uses, from `base` and the global flags.
    pub fn writable_options(&self, base: StoreOptions) -> StoreOptions {
        StoreOptions { actor: self.actor.clone(), auto_backup: self.auto_backup, allow_links: self.allow_links, ..base }
    }

    fn open_writable(&self, base: StoreOptions) -> Result<Store> {
        let options = self.writable_options(base);
        // Another process writing: say whom this waits for, then wait (`--wait`).
        let now = StoreOptions { lock_timeout_ms: 0, ..options.clone() };
        let store = match Store::open(&self.dir, now) {
            Err(cairn::Error::Locked { pid, .. }) if !self.wait.is_zero() => {
                let holder = pid.map_or("another process".to_string(), |pid| format!("process {pid}"));
                eprintln!(
                    "waiting up to {:.1} s for {holder}, which is writing to the store…",
                    self.wait.as_secs_f64()
                );
                let waiting = StoreOptions { lock_timeout_ms: self.wait.as_millis() as u64, ..options };
                Store::open(&self.dir, waiting)?
            }
            other => other?,
        };
        self.warn_strays(&store);
        self.unlock(&store)?;
        Ok(store)
    }

    /// Unlocks the store's key with the secret given, when one was and the store has a key.
    fn unlock(&self, store: &Store) -> Result<()> {
        if let Some(secret) = self.key.secret()? {
            if store.key_status()?.initialized {
                store.unlock(&secret)?;
            }
        }
        Ok(())
    }

    /// Opens for writing, or read-only when another process holds the store (no waiting).
    pub fn open_write_or_read(&self) -> Result<Store> {
        let no_wait = Context { wait: std::time::Duration::ZERO, ..self.clone_shallow() };
        match no_wait.open_write() {
            Err(e) if matches!(e.downcast_ref::<cairn::Error>(), Some(cairn::Error::Locked { .. })) => {
                let store = self.open_read()?;
                self.warn_strays(&store);
                Ok(store)
            }
            other => other,
        }
    }

    /// The same context (a copy of its settings).
    fn clone_shallow(&self) -> Context {
        Context {
            dir: self.dir.clone(),
            wait: self.wait,
            actor: self.actor.clone(),
            out: self.out,
            auto_backup: self.auto_backup,
            allow_links: self.allow_links,
            key: KeySource {
                key_file: self.key.key_file.clone(),
                passphrase_file: self.key.passphrase_file.clone(),
                passphrase: self.key.passphrase.clone(),
            },
        }
    }

    fn warn_strays(&self, store: &Store) {
        for left in store.leftovers().iter().filter(|l| l.removed) {
            eprintln!(
                "note: removed {} ({} bytes) that an interrupted {} left",
                left.path.display(),
                left.bytes,
                left.what
            );
        }
        for stray in store.strays() {
            let what = match &stray.moved_to {
                Some(to) => format!("moved to {}", to.display()),
                None => "left in place (store open read-only)".into(),
            };
            eprintln!("warning: stray file {}: {}; {what}", stray.path.display(), stray.reason);
        }
    }

    /// Opens the store read-only, so that reads work while another process writes.
    pub fn open_read(&self) -> Result<Store> {
        let store =
            Store::open(&self.dir, StoreOptions { allow_links: self.allow_links, ..StoreOptions::read_only() })?;
        self.unlock(&store)?;
        Ok(store)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a store in the data directory (nothing happens if one is there); with
    /// --migrations apply them, with --seed upsert seed records. Running it again is a no-op.
    Init(migrate::InitArgs),
    /// Create a store with a Taskerino-like schema and sample data, and show what to try.
    Demo(demo::DemoArgs),
    /// Define, inspect, change and drop collections.
    #[command(subcommand)]
    Collection(collection::CollectionCommand),
    #[command(flatten)]
    Record(record::RecordCommand),
    /// Query a collection: filter, sort, paginate, choose fields.
    Query(query::QueryArgs),
    /// Full-text search a collection's fulltext fields, best matches first.
    Search(query::SearchArgs),
    /// List, add and drop indexes.
    #[command(subcommand)]
    Index(query::IndexCommand),
    /// Attach a file to a record's attachment field (stored once, by content).
    Attach(blob::AttachArgs),
    /// Read, list, verify and collect attachment blobs.
    #[command(subcommand)]
    Blob(blob::BlobCommand),
    /// Store record bodies in the smallest form the current settings allow; `--train` trains
    /// per-collection dictionaries first.
    Compact(blob::CompactArgs),
    /// Print the change log.
    Changes(changes::ChangesArgs),
    /// Read and change typed settings.
    #[command(subcommand)]
    Settings(settings::SettingsCommand),
    /// Take, list, verify and rotate backups.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Restore a verified backup over the store (after backing up the current state), into
    /// another directory, or one collection or record as new versions.
    Restore(backup::RestoreArgs),
    /// Verify everything: integrity, checksums, change log, indexes, blobs, stray files
    /// (exit code 5 when anything is wrong).
    Check(backup::CheckArgs),
    /// Repair what check finds, from the change log and the newest good backups, rebuilding
    /// the database when SQLite cannot use it; damaged state is copied into quarantine/
    /// first and nothing is deleted.
    Repair(backup::RepairArgs),
    /// Schema migrations: status, plan, up, down (docs/migrations.md).
    Migrate(migrate::MigrateArgs),
    /// Export the whole store (schemas, settings, records, optionally attachments) into a folder.
    Export(portability::ExportArgs),
    /// Import a folder written by `export`: validated first, backed up, applied atomically.
    Import(portability::ImportArgs),
    /// Import another application's legacy files (Taskerino's data directory or 1.0.0 export).
    ImportLegacy(portability::LegacyArgs),
    /// The audit trail of administrative and destructive operations.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// The key that encrypts fields flagged `encrypted`: init, unlock, rotate, status.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Users who may sign in to `cairn serve`: create (--admin: the idempotent bootstrap),
    /// list, disable, reset-password.
    #[command(subcommand)]
    User(user::UserCommand),
    /// API keys and sessions: create, list, revoke.
    #[command(subcommand)]
    Token(user::TokenCommand),
    /// Serve the REST API over the store (docs/server.md), until SIGINT or SIGTERM.
    Serve(serve::ServeArgs),
    /// The durable job queue: list, show, enqueue, cancel, retry, restart, delete, prune,
    /// stats (docs/jobs.md).
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Cron schedules that enqueue jobs: list, add, remove, run-now, enable, disable.
    #[command(subcommand)]
    Schedule(jobs::ScheduleCommand),
    /// Run the jobs of the store (the `[jobs]` of --config: workers, schedules, watched
    /// folders) until SIGINT or SIGTERM. `cairn serve` runs them itself.
    Worker(jobs::WorkerArgs),
    /// Watch the configured ingest folders and take in each file once it is complete.
    Watch(jobs::WatchArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(shell::CompletionsArgs),
    /// Print the manual page (or write every command's with --out DIR).
    Man(shell::ManArgs),
}

pub fn run(ctx: &Context, command: Command) -> Result<()> {
    match command {
        Command::Init(args) => migrate::init(ctx, args),
        Command::Demo(args) => demo::run(ctx, args),
        Command::Collection(cmd) => collection::run(ctx, cmd),
        Command::Record(cmd) => record::run(ctx, cmd),
        Command::Query(args) => query::run(ctx, args),
        Command::Search(args) => query::run_search(ctx, args),
        Command::Index(cmd) => query::run_index(ctx, cmd),
        Command::Attach(args) => blob::run_attach(ctx, args),
        Command::Blob(cmd) => blob::run(ctx, cmd),
        Command::Compact(args) => blob::run_compact(ctx, args),
        Command::Changes(args) => changes::run(ctx, args),
        Command::Settings(cmd) => settings::run(ctx, cmd),
        Command::Backup(cmd) => backup::run(ctx, cmd),
        Command::Restore(args) => backup::run_restore(ctx, args),
        Command::Check(args) => backup::run_check(ctx, args),
        Command::Repair(args) => backup::run_repair(ctx, args),
        Command::Migrate(args) => migrate::run(ctx, args),
        Command::Audit(cmd) => audit::run(ctx, cmd),
        Command::Key(cmd) => key::run(ctx, cmd),
        Command::Export(args) => portability::run_export(ctx, args),
        Command::Import(args) => portability::run_import(ctx, args),
        Command::ImportLegacy(args) => portability::run_legacy(ctx, args),
        Command::User(cmd) => user::run(ctx, cmd),
        Command::Token(cmd) => user::run_token(ctx, cmd),
        Command::Serve(args) => serve::run(ctx, args),
        Command::Jobs(cmd) => jobs::run(ctx, cmd),
        Command::Schedule(cmd) => jobs::run_schedule(ctx, cmd),
        Command::Worker(args) => jobs::run_worker(ctx, args),
        Command::Watch(args) => jobs::run_watch(ctx, args),
        Command::Completions(args) => shell::completions(args),
        Command::Man(args) => shell::man(args),
    }
}

/// A progress bar for work reported in phases; hidden under `--json` and when stderr is not
/// a terminal (indicatif draws nothing there).
pub struct PhaseBar {
    bar: indicatif::ProgressBar,
}

pub fn phase_bar(ctx: &Context) -> PhaseBar {
    let bar = if ctx.out.json { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(0) };
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:>14} {bar:30} {pos}/{len}") {
        bar.set_style(style);
    }
    PhaseBar { bar }
}

impl PhaseBar {
    pub fn update(&self, phase: &str, done: u64, total: u64) {
        if self.bar.message() != phase {
            self.bar.set_message(phase.to_string());
        }
        self.bar.set_length(total);
        self.bar.set_position(done);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
