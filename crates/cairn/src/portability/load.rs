//! Loading a batch of records from another system, each on its own: a record that a
//! collection refuses (a wrong type, a value over `records.max_body_bytes`, a unique value
//! taken, an id that exists) is skipped with its reason, and everything else commits in one
//! transaction. Importers of other applications' data (the legacy Taskerino importer in
//! `cairn-taskerino`) stage their attachments with a [`Loader`], build a [`LoadPlan`] and run
//! it here.
//!
//! A dry run goes through exactly the same code in a transaction that is rolled back, so its
//! counts are the real run's. Attachments are staged (hashed, compressed, fsynced) before the
//! transaction and moved into the blob store inside it; if the transaction fails, the files it
//! placed are removed again, so a failed load leaves nothing behind.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::blobs::Staged;
use crate::data::changes::ChangeOp;
use crate::data::record::NewState;
use crate::data::schema::CollectionSchema;
use crate::data::settings::SettingDef;
use crate::engine::hash::ContentHash;
use crate::engine::store::Progress;
use crate::engine::store::Store;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};

/// A record to load.
#[derive(Debug, Clone)]
pub struct LoadRecord {
    pub collection: String,
    pub id: String,
    pub body: Map<String, Value>,
    /// Where it came from, for the report (a file, and its position there).
    pub source: String,
    pub index: Option<usize>,
}

/// A setting to load: defined when `def` is given and the store lacks it.
#[derive(Debug, Clone)]
pub struct LoadSetting {
    pub def: SettingDef,
    pub value: Value,
    pub source: String,
}

/// Everything a load writes.
#[derive(Debug, Default)]
pub struct LoadPlan {
    /// Created when missing; a collection that exists must have every field of this schema,
    /// of the same type (its flags, indexes and further fields are its own).
    pub collections: Vec<CollectionSchema>,
    pub settings: Vec<LoadSetting>,
    pub records: Vec<LoadRecord>,
}

/// Something a load did not write, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The file (or collection of an export) it came from.
    pub source: String,
    /// Its position in the file's list, when it is a record.
    pub index: Option<usize>,
    pub id: Option<String>,
    pub reason: String,
}

/// What a load wrote.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    pub imported: BTreeMap<String, u64>,
    /// Records whose id the store already had (left as they are).
    pub existing: u64,
    pub settings: Vec<String>,
    pub skipped: Vec<Skipped>,
    /// Distinct attachments staged.
    pub blobs: u64,
}

/// An attachment staged for a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedBlob {
    pub hash: ContentHash,
    pub size: u64,
    /// The type its first bytes show, if recognised.
    pub sniffed: Option<&'static str>,
}

/// Stages attachments, then runs a [`LoadPlan`].
pub struct Loader<'s> {
    store: &'s Store,
    limit: u64,
    staged: BTreeMap<String, Staged>,
}

impl std::fmt::Debug for Loader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader").field("staged", &self.staged.len()).finish()
    }
}

impl Store {
    /// A loader for this store: stage attachments with it, then run a [`LoadPlan`].
    pub fn loader(&self) -> Result<Loader<'_>> {
        let limit = self.setting_value::<i64>(crate::data::builtin_settings::BLOBS_MAX_BYTES)?.max(0) as u64;
        Ok(Loader { store: self, limit, staged: BTreeMap::new() })
    }
}

impl Loader<'_> {
    /// Hashes (and compresses where it pays) an attachment into a temporary file; the same
    /// content staged twice is kept once.
    pub fn stage(&mut self, input: impl Read) -> Result<StagedBlob> {
        let staged = crate::blobs::stage(self.store.dir(), input, self.limit)?;
        let blob =
            StagedBlob { hash: ContentHash::trusted(staged.hash.clone()), size: staged.size, sniffed: staged.sniffed };
        self.staged.entry(blob.hash.to_string()).or_insert(staged);
        Ok(blob)
    }

    /// Writes the plan in one transaction (rolled back when `dry_run`), each record and
    /// setting in a savepoint of its own.
    pub fn run(self, plan: &LoadPlan, dry_run: bool, progress: Progress<'_>) -> Result<LoadOutcome> {
        let Loader { store, staged, .. } = self;
        let mut placed: Vec<PathBuf> = Vec::new();
        let blobs = staged.len() as u64;
        let write = |tx: &mut Tx<'_>| -> Result<LoadOutcome> {
            let mut out = LoadOutcome { blobs, ..LoadOutcome::default() };
            for schema in &plan.collections {
                match crate::data::collection::load(tx.conn, &schema.name) {
                    Ok(c) => {
                        for f in &schema.fields {
                            let same = c
                                .schema
                                .field(&f.name)
                                .is_some_and(|have| have.kind == f.kind && have.collection == f.collection);
                            if !same {
                                return Err(Error::NotAllowed(format!(
                                    "collection `{}` exists with another schema than the one imported into (field `{}` is missing or of another type); import into a new store or migrate it first",
                                    schema.name, f.name
                                )));
                            }
                        }
                    }
                    Err(Error::UnknownCollection { .. }) => tx.create_collection(schema.clone())?,
                    Err(e) => return Err(e),
                }
            }
            for staged in staged.into_values() {
                if dry_run {
                    crate::data::attachments::placeholder(tx.conn, &staged.hash, staged.size, tx.now)?;
                } else if let (_, Some(path)) = tx.place_blob(staged)? {
                    placed.push(path);
                }
            }
            for s in &plan.settings {
                let written = tx.attempt(|tx| {
                    if crate::data::settings::setting(tx.conn, &s.def.key).map(|d| d.def).ok().as_ref() != Some(&s.def)
                    {
                        tx.define_setting(s.def.clone())?;
                    }
                    tx.set_setting(&s.def.key, s.value.clone())
                })?;
                match written {
                    Ok(()) => out.settings.push(s.def.key.clone()),
                    Err(e) => out.skipped.push(Skipped {
                        source: s.source.clone(),
                        index: None,
                        id: Some(s.def.key.clone()),
                        reason: e.to_string(),
                    }),
                }
            }
            let total = plan.records.len() as u64;
            for (done, r) in plan.records.iter().enumerate() {
                let written = tx.attempt(|tx| {
                    let c = tx.collection(&r.collection)?;
                    if crate::data::record::read(tx.conn, &c, &r.id)?.is_some() {
                        return Ok(false);
                    }
                    let body = c.schema.normalize(Some(&r.id), Value::Object(r.body.clone()))?;
                    tx.write_state(&c, &r.id, None, NewState { body, deleted: false, op: ChangeOp::Create })?;
                    Ok(true)
                })?;
                match written {
                    Ok(true) => *out.imported.entry(r.collection.clone()).or_default() += 1,
                    Ok(false) => out.existing += 1,
                    Err(e) => out.skipped.push(Skipped {
                        source: r.source.clone(),
                        index: r.index,
                        id: Some(r.id.clone()),
                        reason: e.to_string(),
                    }),
                }
                if done % 500 == 0 {
                    progress("records", done as u64, total);
                }
            }
            progress("records", total, total);
            Ok(out)
        };
        let result = if dry_run { store.write_dry_run(write) } else { store.write_exclusive(write) };
        if result.is_err() {
            // The transaction rolled back: the files it placed belong to nothing.
            for path in &placed {
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a blob of a failed load");
                }
            }
        }
        result
    }
}
