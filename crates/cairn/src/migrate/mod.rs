//! Schema migrations (SAFE-4): numbered migrations with `up` and `down`, applied with a
//! verified backup first, one transaction each, and undone as a whole when any fails.
//!
//! A migration is a file `NNNN_name.toml` (or `.json`) in a directory, numbered from 1
//! without gaps, holding a list of `up` operations and a list of `down` operations, or
//! `irreversible = true` instead of a `down` (see `docs/migrations.md` and [`Op`]). The
//! library also takes migrations built in code, whose steps may be closures over records.
//!
//! Running them (`up` or `down`):
//! 1. the store's applied migrations are compared with the files: each applied one is
//!    recorded with the SHA-256 of its text, and a file edited, renamed or removed since is
//!    refused before anything runs;
//! 2. every pending operation is applied to the schemas in memory, which finds unknown
//!    collections and fields, conversions that do not exist, and a `down` that does not give
//!    back the schema its `up` started from;
//! 3. the migrations are rehearsed on a scratch copy of the store (`VACUUM INTO` a temporary
//!    folder in the data directory), which finds what depends on the data (a value that does
//!    not convert, a required field a record lacks) — still before anything runs;
//! 4. a verified backup is taken; if it fails, nothing runs;
//! 5. each migration runs in one transaction holding the writer (steps, then its row in
//!    `cairn_migrations`), so a crash leaves the store at a migration boundary;
//! 6. when one fails, its transaction rolls back (full-text and value indexes are tables of
//!    the same database, so they roll back with it); if earlier migrations of the same run had
//!    committed, the backup of step 4 is restored (the replaced state kept in quarantine), so
//!    the store is exactly as it was before the run.
//!
//! Records that a migration changes are written as new versions (actor
//! `migration:NNNN_name`), so their history shows the migration. A `down` reverses exactly:
//! what its `up` removed (a field's values, a dropped collection's records, values a type
//! change converted) is found again in the change log as it was before the `up`.
//! Alternative considered: one transaction for a whole run; a crash would then lose every
//! migration done so far, and the issue asks for a transaction per migration.

mod apply;
mod expr;
mod op;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::layout::{DB_FILE, MIGRATE_SCRATCH_PREFIX};
use crate::engine::store::Progress;
use crate::engine::store::{Store, StoreOptions};
use crate::engine::timestamp::Timestamp;
use crate::error::{Error, Result};
use crate::safety::backup::{BackupOptions, BackupReason};
use crate::safety::restore::RestoreOptions;
pub use expr::ValueExpr;
use op::Schemas;
pub use op::{Conversion, Flag, Op};

/// A closure over one record's id and body, for data migrations written in code.
pub type TransformFn = dyn Fn(&str, &mut Map<String, Value>) -> std::result::Result<(), String> + Send + Sync;

/// One step of a migration: a declared operation, or (in code) a closure over records.
#[derive(Clone)]
pub(crate) enum Step {
    Op(Op),
    Transform(Transform),
}

#[derive(Clone)]
pub(crate) struct Transform {
    collection: String,
    label: String,
    f: Arc<TransformFn>,
}

impl Step {
    fn describe(&self) -> String {
        match self {
            Step::Op(op) => op.describe(),
            Step::Transform(t) => format!("transform {} ({})", t.collection, t.label),
        }
    }

    fn apply_schema(&self, schemas: &mut Schemas) -> std::result::Result<(), String> {
        match self {
            Step::Op(op) => op.apply_schema(schemas),
            Step::Transform(t) if schemas.contains_key(&t.collection) => Ok(()),
            Step::Transform(t) => Err(format!("unknown collection `{}`", t.collection)),
        }
    }

    /// What the checksum of a migration built in code covers for this step.
    fn identity(&self) -> Value {
        match self {
            Step::Op(op) => serde_json::to_value(op).unwrap_or(Value::Null),
            Step::Transform(t) => serde_json::json!({"op": "transform", "collection": t.collection, "label": t.label}),
        }
    }
}

/// One migration: a number, a name, `up` steps and (unless irreversible) `down` steps.
#[derive(Clone)]
pub struct Migration {
    number: u32,
    name: String,
    description: String,
    up: Vec<Step>,
    down: Option<Vec<Step>>,
    /// The text applied migrations are compared with: the file's, or a description of the
    /// steps for migrations built in code.
    source: Option<String>,
    /// Where it came from, for messages.
    origin: String,
}

impl std::fmt::Debug for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migration").field("number", &self.number).field("name", &self.name).finish_non_exhaustive()
    }
}

/// A migration file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrationFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    irreversible: bool,
    #[serde(default)]
    up: Vec<Op>,
    down: Option<Vec<Op>>,
}

impl Migration {
    /// An empty migration built in code; add steps with [`Migration::up`],
    /// [`Migration::down`] and the `*_with` closures. Until it has a `down` step it is
    /// irreversible, so that a forgotten `down` cannot pass for an empty one.
    pub fn new(number: u32, name: impl Into<String>) -> Migration {
        let name = name.into();
        Migration {
            number,
            origin: format!("{number:04}_{name}"),
            name,
            description: String::new(),
            up: Vec::new(),
            down: None,
            source: None,
        }
    }

    /// Adds an `up` operation.
    pub fn up(mut self, op: Op) -> Self {
        self.up.push(Step::Op(op));
        self
    }

    /// Adds a `down` operation (they run in the order added).
    pub fn down(mut self, op: Op) -> Self {
        self.down.get_or_insert_with(Vec::new).push(Step::Op(op));
        self
    }

    /// Adds an `up` step that calls `f` on every record of `collection` (live and deleted);
    /// the changed body is validated and written as a new version. `label` identifies the
    /// closure in the applied migration's checksum: change it when the closure changes.
    pub fn up_with(
        mut self,
        collection: &str,
        label: &str,
        f: impl Fn(&str, &mut Map<String, Value>) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.up.push(Step::Transform(Transform { collection: collection.into(), label: label.into(), f: Arc::new(f) }));
        self
    }

    /// The `down` counterpart of [`Migration::up_with`].
    pub fn down_with(
        mut self,
        collection: &str,
        label: &str,
        f: impl Fn(&str, &mut Map<String, Value>) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        let step = Step::Transform(Transform { collection: collection.into(), label: label.into(), f: Arc::new(f) });
        self.down.get_or_insert_with(Vec::new).push(step);
        self
    }

    /// Marks the migration irreversible: it has no `down`, and `down` past it refuses.
    pub fn irreversible(mut self) -> Self {
        self.down = None;
        self
    }

    /// Sets the description shown by `status`.
    pub fn describe(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    /// Reads a migration file; its name gives the number and name (`0003_add_priority.toml`).
    pub fn from_file(path: &Path) -> Result<Migration> {
        let origin = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let (number, name, toml) = parse_file_name(&origin)?;
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| invalid(&origin, "the file is not UTF-8 text"))?;
        Migration::parse(number, &name, &text, toml, &origin)
    }

    /// Parses a migration's text (TOML when `toml`, else JSON); `origin` names it in errors.
    pub fn parse(number: u32, name: &str, text: &str, toml: bool, origin: &str) -> Result<Migration> {
        let file: MigrationFile = if toml {
            toml::from_str(text).map_err(|e| invalid(origin, e.to_string().trim_end()))?
        } else {
            serde_json::from_str(text).map_err(|e| invalid(origin, e.to_string()))?
        };
        if file.up.is_empty() {
            return Err(invalid(origin, "a migration needs at least one `up` operation"));
        }
        let down = match (file.irreversible, file.down) {
            (true, Some(_)) => return Err(invalid(origin, "an irreversible migration has no `down`; remove one of them")),
            (false, None) => {
                return Err(invalid(
                    origin,
                    "there is no `down`: write the operations that undo `up` (an empty list when there is nothing to undo), or mark the migration `irreversible = true`",
                ))
            }
            (true, None) => None,
            (false, Some(ops)) => Some(ops.into_iter().map(Step::Op).collect()),
        };
        Ok(Migration {
            number,
            name: name.to_string(),
            description: file.description,
            up: file.up.into_iter().map(Step::Op).collect(),
            down,
            source: Some(text.to_string()),
            origin: origin.to_string(),
        })
    }

    /// The migration's number.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// The migration's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it has a `down`.
    pub fn is_reversible(&self) -> bool {
        self.down.is_some()
    }

    /// The text compared with what was applied.
    fn text(&self) -> String {
        match &self.source {
            Some(text) => text.clone(),
            None => {
                let steps = |s: &[Step]| Value::Array(s.iter().map(Step::identity).collect());
                let value = serde_json::json!({
                    "description": self.description,
                    "up": steps(&self.up),
                    "down": self.down.as_deref().map(steps),
                });
                String::from_utf8(crate::engine::canonical::canonical_json(&value)).unwrap_or_default()
            }
        }
    }

    /// SHA-256 of the migration's text, in hex.
    pub fn checksum(&self) -> String {
        crate::engine::hash::hex(&crate::engine::hash::sha256(self.text().as_bytes()))
    }
}

fn invalid(source_name: &str, reason: impl Into<String>) -> Error {
    Error::InvalidMigration { source_name: source_name.to_string(), reason: reason.into() }
}

/// `0003_add_priority.toml` → (3, "add_priority", toml).
fn parse_file_name(file: &str) -> Result<(u32, String, bool)> {
    let bad = || {
        invalid(
            file,
            "migration files are named NNNN_name.toml or NNNN_name.json (a number, `_`, a name of a-z, 0-9, _ and -)",
        )
    };
    let (stem, toml) = match (file.strip_suffix(".toml"), file.strip_suffix(".json")) {
        (Some(stem), _) => (stem, true),
        (_, Some(stem)) => (stem, false),
        _ => return Err(bad()),
    };
    let (digits, name) = stem.split_once('_').ok_or_else(bad)?;
    let number: u32 = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().map_err(|_| bad())?
    } else {
        return Err(bad());
    };
    let name_ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if number == 0 || !name_ok {
        return Err(bad());
    }
    Ok((number, name.to_string(), toml))
}

/// An ordered set of migrations numbered 1..=n.
#[derive(Clone, Debug, Default)]
pub struct Migrations {
    list: Vec<Migration>,
}

impl Migrations {
    /// Checks that the migrations are numbered 1, 2, 3… without gaps or repeats.
    pub fn new(mut list: Vec<Migration>) -> Result<Migrations> {
        list.sort_by_key(|m| m.number);
        for (i, m) in list.iter().enumerate() {
            let expected = i as u32 + 1;
            if m.number == expected {
                continue;
            }
            let reason = if i > 0 && list[i - 1].number == m.number {
                format!("{} and {} have the same number", list[i - 1].origin, m.origin)
            } else if expected < m.number {
                format!(
                    "migration {expected} is missing: numbers must run 1, 2, 3… without gaps (next found: {})",
                    m.origin
                )
            } else {
                format!("numbers start at 1, found {}", m.origin)
            };
            return Err(invalid("set", reason));
        }
        Ok(Migrations { list })
    }

    /// Reads every `NNNN_name.toml` / `.json` file of `dir` (other files, such as a README,
    /// are ignored; a `.toml` or `.json` file with another name is an error).
    pub fn from_dir(dir: &Path) -> Result<Migrations> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read migrations folder", dir, e))?;
        let mut list = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read migrations folder", dir, e))?;
            let path = entry.path();
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.starts_with('.') || !path.is_file() || !(file.ends_with(".toml") || file.ends_with(".json")) {
                continue;
            }
            list.push(Migration::from_file(&path)?);
        }
        Migrations::new(list).map_err(|e| match e {
            Error::InvalidMigration { reason, .. } => invalid(&dir.display().to_string(), reason),
            other => other,
        })
    }

    /// The migrations, in order.
    pub fn list(&self) -> &[Migration] {
        &self.list
    }

    fn get(&self, number: u32) -> Option<&Migration> {
        number.checked_sub(1).and_then(|i| self.list.get(i as usize))
    }
}

/// Which way a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// Options of [`Store::migrate`] and [`Store::plan_migrations`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrateOptions {
    /// Up: apply migrations up to and including this number (default: all). Down: undo
    /// migrations until this many remain applied (default: one fewer than now; 0 undoes all).
    pub to: Option<u32>,
    /// Run the migrations on a scratch copy of the store before the real run, so that errors
    /// that depend on the data are found before anything changes. Default: `true`.
    pub rehearse: bool,
    /// Take a verified backup before the first migration (nothing runs if it fails), and
    /// restore it if a later migration of the run fails. Default: `true`.
    pub backup: bool,
    /// Where backups go. Default: `backups/` in the data directory.
    pub backups_dir: Option<PathBuf>,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions { to: None, rehearse: true, backup: true, backups_dir: None }
    }
}

/// What one step did (or, in a plan, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StepReport {
    /// The operation, in one line.
    pub op: String,
    /// Records written as new versions (or re-created).
    pub records: u64,
}

/// One migration of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MigrationRun {
    pub number: u32,
    pub name: String,
    pub steps: Vec<StepReport>,
}

/// What [`Store::migrate`] did or [`Store::plan_migrations`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MigrateReport {
    pub direction: Direction,
    /// The migrations run, in the order they ran.
    pub migrations: Vec<MigrationRun>,
    /// The verified backup taken first.
    pub backup: Option<String>,
    /// How many migrations are applied afterwards.
    pub applied: u32,
}

/// Where one migration stands in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// Applied, and its file is the one applied.
    Applied,
    /// Not applied yet.
    Pending,
    /// Applied, but its file changed since.
    Edited,
    /// Applied, but there is no file with its number.
    Missing,
}

/// A line of [`Store::migration_status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MigrationStatus {
    pub number: u32,
    pub name: String,
    pub state: MigrationState,
    pub reversible: bool,
    pub description: String,
    pub applied_at: Option<Timestamp>,
    /// The checksum recorded when it was applied, else the file's.
    pub checksum: String,
}

/// A row of `cairn_migrations`.
struct Applied {
    number: u32,
    name: String,
    checksum: String,
    applied_at: i64,
    first_seq: u64,
}

fn applied(conn: &Connection) -> Result<Vec<Applied>> {
    // A store of format 3 or older opened read-only has not been upgraded: nothing applied.
    let table: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'cairn_migrations'",
        [],
        |r| r.get(0),
    )?;
    if !table {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare_cached("SELECT number, name, checksum, applied_at, first_seq FROM cairn_migrations ORDER BY number")?;
    let rows = stmt.query_map([], |r| {
        Ok(Applied {
            number: r.get(0)?,
            name: r.get(1)?,
            checksum: r.get(2)?,
            applied_at: r.get(3)?,
            first_seq: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

impl Store {
    /// Every migration of `migrations` and every one applied to the store in `dir`, by number.
    /// Opens the store read-only, so it works while another process holds it.
    pub fn migration_status(dir: &Path, migrations: &Migrations) -> Result<Vec<MigrationStatus>> {
        let store = Store::open(dir, StoreOptions::read_only())?;
        let applied = applied(&*store.reader()?)?;
        let mut out = Vec::new();
        let last = migrations.list.len().max(applied.last().map_or(0, |a| a.number as usize));
        for number in 1..=last as u32 {
            let file = migrations.get(number);
            let done = applied.iter().find(|a| a.number == number);
            let state = match (file, done) {
                (Some(m), Some(a)) if m.checksum() == a.checksum && m.name == a.name => MigrationState::Applied,
                (Some(_), Some(_)) => MigrationState::Edited,
                (None, Some(_)) => MigrationState::Missing,
                (_, None) => MigrationState::Pending,
            };
            let Some(name) = done.map(|a| a.name.clone()).or_else(|| file.map(|m| m.name.clone())) else { continue };
            out.push(MigrationStatus {
                number,
                name,
                state,
                reversible: file.is_some_and(Migration::is_reversible),
                description: file.map(|m| m.description.clone()).unwrap_or_default(),
                applied_at: done.map(|a| Timestamp(a.applied_at)),
                checksum: done
                    .map(|a| a.checksum.clone())
                    .or_else(|| file.map(Migration::checksum))
                    .unwrap_or_default(),
            });
        }
        Ok(out)
    }
}

/// Refuses a store whose applied migrations do not match `migrations`.
fn verify_history(applied: &[Applied], migrations: &Migrations) -> Result<()> {
    for a in applied {
        let history = |reason: String| Error::MigrationHistory { number: a.number, name: a.name.clone(), reason };
        let Some(m) = migrations.get(a.number) else {
            return Err(history(format!(
                "it was applied to this store but there is no migration {} any more; put its file back",
                a.number
            )));
        };
        if m.name != a.name {
            return Err(history(format!("it was applied under this name, and the file now says `{}`", m.name)));
        }
        let now = m.checksum();
        if now != a.checksum {
            return Err(history(format!(
                "{} was edited after it was applied (checksum {} then, {} now); restore the applied text and put the change in a new migration",
                m.origin,
                &a.checksum[..a.checksum.len().min(12)],
                &now[..12]
            )));
        }
    }
    Ok(())
}

/// The migrations a run would go through, in order, each with its `cairn_migrations` row
/// when it is being undone; checks history, irreversibility and every step's schema effect.
fn prepare<'m>(
    conn: &Connection,
    migrations: &'m Migrations,
    direction: Direction,
    to: Option<u32>,
) -> Result<Vec<(&'m Migration, Option<Applied>)>> {
    let applied = applied(conn)?;
    verify_history(&applied, migrations)?;
    let count = applied.len() as u32;
    let total = migrations.list.len() as u32;
    let mut schemas: Schemas =
        crate::data::collection::load_all(conn)?.into_iter().map(|c| (c.name().to_string(), c.schema)).collect();
    let step_error = |m: &Migration, dir: &str, i: usize, step: &Step, reason: String| {
        invalid(&format!("{} ({dir} step {}: {})", m.origin, i + 1, step.describe()), reason)
    };
    match direction {
        Direction::Up => {
            let target = to.unwrap_or(total);
            if target > total {
                return Err(invalid("set", format!("there is no migration {target} (the last is {total})")));
            }
            if target < count {
                return Err(Error::NotAllowed(format!(
                    "the store is at migration {count}; going back to {target} is a down migration"
                )));
            }
            let mut work = Vec::new();
            for m in &migrations.list[count as usize..target as usize] {
                let before = schemas.clone();
                for (i, step) in m.up.iter().enumerate() {
                    step.apply_schema(&mut schemas).map_err(|r| step_error(m, "up", i, step, r))?;
                }
                if let Some(down) = &m.down {
                    let mut back = schemas.clone();
                    for (i, step) in down.iter().enumerate() {
                        step.apply_schema(&mut back).map_err(|r| step_error(m, "down", i, step, r))?;
                    }
                    if let Some(what) = schema_difference(&before, &back) {
                        return Err(invalid(&m.origin, format!("its `down` does not undo its `up`: {what}")));
                    }
                }
                work.push((m, None));
            }
            Ok(work)
        }
        Direction::Down => {
            let target = to.unwrap_or(count.saturating_sub(1));
            if target > count {
                return Err(Error::NotAllowed(format!(
                    "the store is at migration {count}; going forward to {target} is an up migration"
                )));
            }
            let mut work = Vec::new();
            for row in applied.into_iter().skip(target as usize).rev() {
                let Some(m) = migrations.get(row.number) else { unreachable!("verify_history found every file") };
                let Some(down) = &m.down else {
                    return Err(Error::Irreversible {
                        number: m.number,
                        name: m.name.clone(),
                        reason: format!(
                            "it is marked irreversible (it has no `down`), so the store cannot go below migration {}; restore a backup taken before it instead",
                            m.number
                        ),
                    });
                };
                for (i, step) in down.iter().enumerate() {
                    step.apply_schema(&mut schemas).map_err(|r| step_error(m, "down", i, step, r))?;
                }
                work.push((m, Some(row)));
            }
            Ok(work)
        }
    }
}

/// The first difference between two sets of schemas, in words.
fn schema_difference(a: &Schemas, b: &Schemas) -> Option<String> {
    for name in a.keys().chain(b.keys()) {
        match (a.get(name), b.get(name)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                let names = |s: &crate::CollectionSchema| s.fields.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
                if names(x) != names(y) {
                    return Some(format!(
                        "collection `{name}` has fields [{}] before and [{}] after",
                        names(x).join(", "),
                        names(y).join(", ")
                    ));
                }
                let field = x.fields.iter().zip(&y.fields).find(|(f, g)| f != g).map(|(f, _)| f.name.clone());
                return Some(match field {
                    Some(field) => format!("field `{name}.{field}` is not defined as it was"),
                    None => format!("collection `{name}` is not defined as it was"),
                });
            }
            (Some(_), None) => return Some(format!("collection `{name}` is gone")),
            (None, _) => return Some(format!("collection `{name}` is left behind")),
        }
    }
    None
}

fn last_seq(conn: &Connection) -> Result<u64> {
    Ok(conn.query_row("SELECT coalesce(max(seq), 0) FROM cairn_changes", [], |r| r.get(0))?)
}

/// Runs one migration in one transaction. On failure, the error is
/// [`Error::MigrationFailed`] with an empty `outcome` for the caller to fill.
fn execute(
    store: &Store,
    m: &Migration,
    direction: Direction,
    row: Option<&Applied>,
    progress: Progress<'_>,
) -> Result<MigrationRun> {
    let store = store.as_actor(&format!("migration:{:04}_{}", m.number, m.name));
    let steps: &[Step] = match direction {
        Direction::Up => &m.up,
        Direction::Down => m.down.as_deref().unwrap_or_default(),
    };
    let undo = row.map(|r| apply::Undo { first_seq: r.first_seq, up: &m.up });
    store.write_exclusive(|tx| {
        let first_seq = last_seq(tx.conn)?;
        let mut run = MigrationRun { number: m.number, name: m.name.clone(), steps: Vec::new() };
        for (i, step) in steps.iter().enumerate() {
            let label = format!("{:04} step {}", m.number, i + 1);
            let records = apply::run_step(tx, step, undo.as_ref(), &label, progress).map_err(|e| {
                Error::MigrationFailed {
                    number: m.number,
                    name: m.name.clone(),
                    direction: direction.as_str(),
                    step: i + 1,
                    op: step.describe(),
                    outcome: String::new(),
                    cause: Box::new(e),
                }
            })?;
            run.steps.push(StepReport { op: step.describe(), records });
        }
        match direction {
            Direction::Up => {
                tx.conn.execute(
                    "INSERT INTO cairn_migrations (number, name, checksum, source, applied_at, actor, first_seq, last_seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![m.number, m.name, m.checksum(), m.text(), tx.now.0, tx.actor, first_seq, last_seq(tx.conn)?],
                )?;
            }
            Direction::Down => {
                tx.conn.execute("DELETE FROM cairn_migrations WHERE number = ?1", [m.number])?;
            }
        }
        Ok(run)
    })
}

impl Store {
    /// Applies (`Direction::Up`) or undoes (`Direction::Down`) migrations on the store in `dir`,
    /// as the module docs describe. The store must not be open elsewhere (this takes its write
    /// lock). Nothing runs when the history does not match, a file is wrong, the rehearsal fails
    /// or the backup fails; a failure during the run leaves the store as it was before it.
    pub fn migrate(
        dir: &Path,
        migrations: &Migrations,
        direction: Direction,
        options: &MigrateOptions,
        progress: Progress<'_>,
    ) -> Result<MigrateReport> {
        let result = run(dir, migrations, direction, options, progress);
        let ran = match &result {
            Ok(report) => !report.migrations.is_empty(),
            Err(e) => matches!(e, Error::MigrationFailed { .. } | Error::BackupFailed { .. }),
        };
        if ran {
            let detail = match &result {
                Ok(r) => {
                    r.migrations.iter().map(|m| format!("{:04}_{}", m.number, m.name)).collect::<Vec<_>>().join(", ")
                }
                Err(_) => String::new(),
            };
            crate::safety::open::append_to(
                dir,
                "migrate",
                "migrate",
                direction.as_str(),
                &crate::engine::trail::outcome(&result),
                &detail,
            );
        }
        result
    }
}

/// [`migrate`] without its audit entry (a rehearsal's scratch copy needs none).
fn run(
    dir: &Path,
    migrations: &Migrations,
    direction: Direction,
    options: &MigrateOptions,
    progress: Progress<'_>,
) -> Result<MigrateReport> {
    let store = Store::open(dir, StoreOptions { actor: "migrate".into(), ..StoreOptions::existing() })?;
    let work = prepare(&*store.reader()?, migrations, direction, options.to)?;
    let mut report = MigrateReport { direction, migrations: Vec::new(), backup: None, applied: 0 };
    if work.is_empty() {
        report.applied = applied(&*store.reader()?)?.len() as u32;
        store.close()?;
        return Ok(report);
    }
    if options.rehearse {
        rehearse(&store, migrations, direction, options.to, progress).map_err(|e| match e {
            Error::MigrationFailed { number, name, direction, step, op, cause, .. } => Error::MigrationFailed {
                number,
                name,
                direction,
                step,
                op,
                outcome: "found by a rehearsal on a scratch copy, before anything ran; the store is unchanged".into(),
                cause,
            },
            other => other,
        })?;
    }
    if options.backup {
        let backup =
            BackupOptions { reason: BackupReason::PreMigration, dir: options.backups_dir.clone(), rotate: false };
        report.backup = Some(store.backup(&backup, progress)?.id);
    }
    for (m, row) in &work {
        match execute(&store, m, direction, row.as_ref(), progress) {
            Ok(run) => report.migrations.push(run),
            Err(e) => {
                let done: Vec<String> = report.migrations.iter().map(|r| r.number.to_string()).collect();
                let outcome = undo_run(store, dir, &done, report.backup.as_deref(), options, progress);
                return Err(match e {
                    Error::MigrationFailed { number, name, direction, step, op, cause, .. } => {
                        Error::MigrationFailed { number, name, direction, step, op, outcome, cause }
                    }
                    other => Error::MigrationFailed {
                        number: m.number,
                        name: m.name.clone(),
                        direction: direction.as_str(),
                        step: 0,
                        op: "commit".into(),
                        outcome,
                        cause: Box::new(other),
                    },
                });
            }
        }
    }
    report.applied = applied(&*store.reader()?)?.len() as u32;
    store.close()?;
    Ok(report)
}

/// After a failed migration (already rolled back): undoes the migrations of the run that
/// committed before it by restoring the pre-run backup. Returns what state the store is in.
fn undo_run(
    store: Store,
    dir: &Path,
    done: &[String],
    backup: Option<&str>,
    options: &MigrateOptions,
    progress: Progress<'_>,
) -> String {
    if done.is_empty() {
        drop(store);
        return "the store is unchanged".into();
    }
    let Some(id) = backup else {
        return format!(
            "migration(s) {} of this run stay applied: no backup was taken that could undo them",
            done.join(", ")
        );
    };
    if let Err(e) = store.close() {
        return format!("closing the store to undo migration(s) {} failed ({e}); restore backup {id}", done.join(", "));
    }
    let restore = RestoreOptions { to: None, backups_dir: options.backups_dir.clone() };
    match Store::restore(dir, id, &restore, progress) {
        Ok(_) => format!(
            "migration(s) {} of this run were undone by restoring backup {id}; the store is as it was before the run",
            done.join(", ")
        ),
        Err(e) => format!(
            "restoring backup {id} to undo migration(s) {} failed ({e}); restore backup {id} to undo them",
            done.join(", ")
        ),
    }
}

/// Runs the migrations on a scratch copy of `store` and reports what they did there.
fn rehearse(
    store: &Store,
    migrations: &Migrations,
    direction: Direction,
    to: Option<u32>,
    progress: Progress<'_>,
) -> Result<MigrateReport> {
    let scratch = tempfile::Builder::new()
        .prefix(MIGRATE_SCRATCH_PREFIX)
        .tempdir_in(store.dir())
        .map_err(|e| Error::io("create scratch folder in", store.dir(), e))?;
    let db = scratch.path().join(DB_FILE);
    let path = db.to_str().ok_or_else(|| Error::invalid_input(db.display().to_string(), "the path must be UTF-8"))?;
    progress("copy", 0, 1);
    store
        .reader()?
        .execute("VACUUM INTO ?1", [path])
        .map_err(|e| Error::io("copy the store into", &db, std::io::Error::other(e)))?;
    progress("copy", 1, 1);
    let options = MigrateOptions { to, rehearse: false, backup: false, backups_dir: None };
    run(scratch.path(), migrations, direction, &options, progress)
}

impl Store {
    /// What `migrate` would do, found by running it on a scratch copy of the store: the
    /// migrations, each step and how many records it writes. The store is not changed; it is
    /// opened read-only, so this works while another process holds it.
    pub fn plan_migrations(
        dir: &Path,
        migrations: &Migrations,
        direction: Direction,
        to: Option<u32>,
        progress: Progress<'_>,
    ) -> Result<MigrateReport> {
        let store = Store::open(dir, StoreOptions::read_only())?;
        prepare(&*store.reader()?, migrations, direction, to)?;
        rehearse(&store, migrations, direction, to, progress)
    }
}

/// Seed records: upserted by id into their collections by [`Store::init`].
#[derive(Debug, Clone, Default)]
pub struct Seed {
    /// By collection: (id, body) in file order.
    records: BTreeMap<String, Vec<SeedRecord>>,
}

type SeedRecord = (String, Map<String, Value>);

impl Seed {
    /// Reads a seed file: a table of collections, each a list of records with an `id`
    /// (`.toml` or `.json`).
    pub fn from_file(path: &Path) -> Result<Seed> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        let value: Value = if name.ends_with(".toml") {
            toml::from_str(&text).map_err(|e| Error::invalid_input(&name, e.to_string().trim_end()))?
        } else {
            serde_json::from_str(&text).map_err(|e| Error::invalid_input(&name, e.to_string()))?
        };
        Seed::from_value(value, &name)
    }

    /// Reads seed records from a JSON value shaped like a seed file.
    pub fn from_value(value: Value, source_name: &str) -> Result<Seed> {
        let Value::Object(collections) = value else {
            return Err(Error::invalid_input(source_name, "a seed file is a table of collections"));
        };
        let mut records = BTreeMap::new();
        for (collection, list) in collections {
            let Value::Array(list) = list else {
                return Err(Error::invalid_input(source_name, format!("`{collection}` must be a list of records")));
            };
            let mut out = Vec::new();
            for (i, record) in list.into_iter().enumerate() {
                let at = format!("{source_name}: {collection}[{i}]");
                let Value::Object(mut body) = record else {
                    return Err(Error::invalid_input(at, "a seed record is a table"));
                };
                let Some(Value::String(id)) = body.remove("id") else {
                    return Err(Error::invalid_input(at, "a seed record needs a text `id` (seeds are upserted by id)"));
                };
                crate::data::ids::validate_id(&id)?;
                out.push((id, body));
            }
            records.insert(collection, out);
        }
        Ok(Seed { records })
    }
}

/// What [`Store::init`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct InitReport {
    /// The store did not exist before.
    pub created: bool,
    pub migrations: Option<MigrateReport>,
    /// Seed records written (created or changed), by collection.
    pub seeded: BTreeMap<String, u64>,
    /// Seed records that were already as the seed says.
    pub seed_unchanged: u64,
}

impl Store {
    /// Creates the store in `dir` if needed, applies every pending migration, then upserts the
    /// seed records by id in one transaction. Running it again changes nothing.
    pub fn init(
        dir: &Path,
        migrations: Option<&Migrations>,
        seed: Option<&Seed>,
        options: &MigrateOptions,
        actor: &str,
        progress: Progress<'_>,
    ) -> Result<InitReport> {
        let created = !dir.join(DB_FILE).exists();
        Store::open(dir, StoreOptions::default())?.close()?;
        let migrations = migrations.map(|m| Store::migrate(dir, m, Direction::Up, options, progress)).transpose()?;
        let mut report = InitReport { created, migrations, seeded: BTreeMap::new(), seed_unchanged: 0 };
        if let Some(seed) = seed {
            let store = Store::open(dir, StoreOptions { actor: actor.into(), ..StoreOptions::existing() })?;
            let (seeded, unchanged) = store.write_exclusive(|tx| {
                let (mut seeded, mut unchanged) = (BTreeMap::new(), 0);
                for (collection, records) in &seed.records {
                    for (id, body) in records {
                        if tx.restore_body(collection, id, Value::Object(body.clone()))? {
                            *seeded.entry(collection.clone()).or_insert(0) += 1;
                        } else {
                            unchanged += 1;
                        }
                    }
                }
                Ok((seeded, unchanged))
            })?;
            store.close()?;
            report.seeded = seeded;
            report.seed_unchanged = unchanged;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_give_number_and_name() {
        assert_eq!(parse_file_name("0003_add_priority.toml").expect("ok"), (3, "add_priority".into(), true));
        assert_eq!(parse_file_name("12_x-y.json").expect("ok"), (12, "x-y".into(), false));
        for bad in ["0000_zero.toml", "abc_x.toml", "0003-add.toml", "0003_.toml", "0003_Add.toml", "3.toml"] {
            assert!(matches!(parse_file_name(bad), Err(Error::InvalidMigration { .. })), "{bad}");
        }
    }

    #[test]
    fn numbering_must_have_no_gaps_or_repeats() {
        let m = |n| Migration::new(n, format!("m{n}"));
        assert!(Migrations::new(vec![m(2), m(1), m(3)]).is_ok());
        let gap = Migrations::new(vec![m(1), m(2), m(4)]).expect_err("gap").to_string();
        assert!(gap.contains("migration 3 is missing"), "{gap}");
        let twice = Migrations::new(vec![m(1), m(1)]).expect_err("repeat").to_string();
        assert!(twice.contains("same number"), "{twice}");
    }

    #[test]
    fn files_need_up_and_down_or_irreversible() {
        let up = "[[up]]\nop = \"add_index\"\ncollection = \"notes\"\nfield = \"title\"\n";
        let no_down = Migration::parse(1, "a", up, true, "0001_a.toml").expect_err("no down").to_string();
        assert!(no_down.contains("irreversible = true"), "{no_down}");
        assert!(Migration::parse(1, "a", &format!("irreversible = true\n{up}"), true, "f").is_ok());
        assert!(Migration::parse(1, "a", &format!("down = []\n{up}"), true, "f").is_ok());
        let both = format!("irreversible = true\ndown = []\n{up}");
        assert!(Migration::parse(1, "a", &both, true, "f").is_err());
        let unknown = Migration::parse(1, "a", "down = []\n[[up]]\nop = \"explode\"\n", true, "0001_a.toml");
        let text = unknown.expect_err("unknown op").to_string();
        assert!(text.contains("0001_a.toml") && text.contains("explode"), "{text}");
        assert!(Migration::parse(1, "a", "down = []\nup = []\n", true, "f").is_err(), "empty up");
        assert!(Migration::parse(1, "a", r#"{"up": [], "colour": 1}"#, false, "f").is_err());
    }
}
