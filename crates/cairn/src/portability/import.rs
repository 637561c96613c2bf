//! Import (SAFE-6) of a full export (see `export.rs`): everything is validated before
//! anything is written, and then applied in one transaction after a verified backup.
//!
//! Validation is the import itself, run inside a transaction that is rolled back (a dry
//! run): every file against the manifest's SHA-256 and size, the schemas against the store's
//! (a collection that exists must have the same schema: change it with a migration first),
//! every record through the same validation a write gets, record ids repeated within a file,
//! every relation against the records the store would then hold, every attachment against
//! the export's blobs and the store's. `--dry-run` stops there and reports; otherwise a
//! verified backup is taken (nothing is written if it fails), the export's attachments are
//! staged, and the same import runs again in a transaction that commits, moving the staged
//! attachments into the blob store inside it (a failure removes them again: a failed import
//! leaves nothing). A record that exists with other content is a conflict: `fail` (the
//! default) refuses the import and lists them, `skip` keeps the store's, `overwrite` writes
//! the export's as a new version.
//!
//! The export folder may come from anyone, so it is read as a foreign folder (see
//! `foreign`): only the paths the format names (collection names checked like schema names,
//! blob names as SHA-256 hex), never through a link, only regular files, each read no
//! further than the size its manifest declares, and each record line no longer than
//! `records.max_body_bytes` (refused while it is read).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::changes::ChangeOp;
use crate::data::record::NewState;
use crate::data::schema::{CollectionSchema, FieldType};
use crate::engine::store::Progress;
use crate::engine::store::Store;
use crate::engine::writer::Tx;
use crate::error::{Error, Result};
use crate::portability::export::{
    creation_order, ExportFile, ExportManifest, ExportSettings, EXPORT_FORMAT, EXPORT_VERSION,
};
use crate::safety::backup::{BackupOptions, BackupReason};

/// What to do with a record that exists in the store with other content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OnConflict {
    /// Refuse the import, listing the conflicts (default).
    #[default]
    Fail,
    /// Keep the store's record.
    Skip,
    /// Write the export's record as a new version.
    Overwrite,
}

/// Options of [`Store::import`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportOptions {
    /// Validate and report; write nothing. Default: false.
    pub dry_run: bool,
    /// Default: [`OnConflict::Fail`].
    pub on_conflict: OnConflict,
    /// Take a verified backup first (nothing is written if it fails). Default: true.
    pub backup: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { dry_run: false, on_conflict: OnConflict::Fail, backup: true }
    }
}

/// Counts for one collection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ImportCounts {
    pub collection: String,
    /// The collection did not exist and is (or would be) created.
    pub created_collection: bool,
    /// Records in the export.
    pub records: u64,
    pub created: u64,
    pub overwritten: u64,
    /// Conflicts left as the store has them (`skip`).
    pub skipped: u64,
    /// Records the store already holds exactly so.
    pub unchanged: u64,
}

/// What [`Store::import`] did, or with `dry_run` would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ImportReport {
    pub dry_run: bool,
    pub collections: Vec<ImportCounts>,
    /// Records that exist with other content, as `collection/id` (the first 100).
    pub conflicts: Vec<String>,
    pub conflict_count: u64,
    /// Attachments in the export, and how many of them the store did not hold yet.
    pub blobs: u64,
    pub blobs_added: u64,
    /// Settings set and setting definitions added.
    pub settings: u64,
    /// The verified backup taken first.
    pub backup: Option<String>,
}

/// One line of a collection file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: String,
    #[serde(default)]
    deleted: bool,
    body: Value,
}

/// The largest manifest (it lists every attachment).
const MAX_MANIFEST: u64 = 256 << 20;
/// What a record line may hold beyond its body (its id, the keys around it).
const LINE_OVERHEAD: usize = 4096;

/// An export, read and checked against its manifest.
struct Export {
    folder: crate::engine::foreign::ForeignDir,
    manifest: ExportManifest,
    schemas: Vec<CollectionSchema>,
    settings: ExportSettings,
    keyring: Option<crate::governance::keys::ExportedKeyring>,
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidInput { source_name: what.into(), reason: reason.into() }
}

impl Export {
    fn open(dir: &Path, progress: Progress<'_>) -> Result<Export> {
        let folder = crate::engine::foreign::ForeignDir::open(dir)?;
        let name = folder.display("manifest.json").display().to_string();
        let text = folder.read("manifest.json", MAX_MANIFEST)?;
        let manifest: ExportManifest = serde_json::from_slice(&text).map_err(|e| invalid(&name, e.to_string()))?;
        if manifest.format != EXPORT_FORMAT {
            return Err(invalid(&name, format!("format {:?} is not a cairn export", manifest.format)));
        }
        if manifest.version > EXPORT_VERSION {
            return Err(invalid(
                &name,
                format!(
                    "export version {} is newer than this cairn reads ({EXPORT_VERSION}); a newer cairn is needed",
                    manifest.version
                ),
            ));
        }
        if let Some(redacted) = &manifest.redacted {
            return Err(invalid(
                &name,
                format!("this export was redacted ({redacted}); a redacted export cannot be imported in full"),
            ));
        }
        let mut files: Vec<(&ExportFile, String)> =
            vec![(&manifest.schemas, "schemas.json".to_string()), (&manifest.settings, "settings.json".to_string())];
        // Names that become paths are checked before any path is made of them.
        for c in &manifest.collections {
            if !crate::engine::sql::is_valid_name(&c.name) {
                return Err(invalid(&name, format!("collection name {:?} is not a valid name", c.name)));
            }
            files.push((&c.file, format!("collections/{}.jsonl", c.name)));
        }
        for b in &manifest.blobs {
            if !crate::engine::hash::is_hex_digest(&b.sha256) {
                return Err(invalid(
                    &name,
                    format!("blob name {:?} is not a SHA-256 (64 lowercase hex digits)", b.sha256),
                ));
            }
            files.push((b, format!("blobs/{}", b.sha256)));
        }
        if let Some(keys) = &manifest.keys {
            files.push((keys, "keys.json".to_string()));
        }
        let total: u64 = files.iter().map(|(f, _)| f.bytes).sum();
        let mut done = 0;
        for (file, expected) in &files {
            // Paths come from the file: only the names this format uses, nothing that leaves
            // the export's folder.
            if file.path != *expected {
                return Err(invalid(&name, format!("unexpected file path {:?} (expected {expected:?})", file.path)));
            }
            let path = folder.display(&file.path);
            let mismatch = || {
                invalid(
                    path.display().to_string(),
                    format!("does not match the manifest ({} bytes, SHA-256 {})", file.bytes, file.sha256),
                )
            };
            let (bytes, sha256) = match crate::engine::fsutil::hash_reader(folder.bounded(&file.path, file.bytes)?) {
                Ok(hashed) => hashed,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Err(mismatch()),
                Err(e) => return Err(Error::io("read", &path, e)),
            };
            if bytes != file.bytes || sha256 != file.sha256 {
                return Err(mismatch());
            }
            done += bytes;
            progress("verify", done, total);
        }
        let declared: BTreeMap<&str, u64> = files.iter().map(|(f, _)| (f.path.as_str(), f.bytes)).collect();
        let read_json = |rel: &str| -> Result<Vec<u8>> { folder.read(rel, declared.get(rel).copied().unwrap_or(0)) };
        let schemas: Vec<CollectionSchema> =
            serde_json::from_slice(&read_json("schemas.json")?).map_err(|e| invalid("schemas.json", e.to_string()))?;
        let settings: ExportSettings = serde_json::from_slice(&read_json("settings.json")?)
            .map_err(|e| invalid("settings.json", e.to_string()))?;
        let names: BTreeSet<&str> = schemas.iter().map(|s| s.name.as_str()).collect();
        for c in &manifest.collections {
            if !names.contains(c.name.as_str()) {
                return Err(invalid(&name, format!("collection `{}` has records but no schema", c.name)));
            }
        }
        let keyring = match manifest.keys {
            Some(_) => Some(
                serde_json::from_slice(&read_json("keys.json")?).map_err(|e| invalid("keys.json", e.to_string()))?,
            ),
            None => None,
        };
        let schemas = creation_order(schemas)?;
        Ok(Export { folder, manifest, schemas, settings, keyring })
    }
}

/// Runs the import in `tx` (committed or rolled back by the caller).
fn apply(
    tx: &mut Tx<'_>,
    export: &Export,
    on_conflict: OnConflict,
    dry_run: bool,
    progress: Progress<'_>,
) -> Result<ImportReport> {
    let mut report = ImportReport { dry_run, blobs: export.manifest.blobs.len() as u64, ..ImportReport::default() };
    // Only what differs is written, so importing the same export twice changes nothing.
    for def in &export.settings.definitions {
        if crate::data::settings::setting(tx.conn, &def.key).ok().map(|s| s.def).as_ref() != Some(def) {
            tx.define_setting(def.clone())?;
            report.settings += 1;
        }
    }
    if let Some(keyring) = &export.keyring {
        crate::governance::keys::import_keyring(tx.conn, keyring)?;
    }
    for (key, value) in &export.settings.values {
        // Secrets travel sealed, under the keyring just adopted.
        if crate::data::settings::is_secret(tx.conn, key) {
            let sealed = value.as_str().unwrap_or_default();
            if crate::data::settings::sealed_secret(tx.conn, key)?.as_deref() != Some(sealed) {
                tx.set_sealed_setting(key, sealed)?;
                report.settings += 1;
            }
            continue;
        }
        let current = crate::data::settings::setting(tx.conn, key).ok();
        if current.is_none_or(|s| s.is_default || s.value != *value) {
            tx.set_setting(key, value.clone())?;
            report.settings += 1;
        }
    }
    let generations = crate::engine::keyring::generations(tx.conn)?;
    let mut created_collections = BTreeSet::new();
    for schema in &export.schemas {
        match crate::data::collection::load(tx.conn, &schema.name) {
            Ok(existing) if existing.schema == *schema => {}
            Ok(_) => {
                return Err(Error::NotAllowed(format!(
                "collection `{}` exists with a different schema than the export's; change it with a migration first",
                schema.name
            )))
            }
            Err(Error::UnknownCollection { .. }) => {
                tx.create_collection(schema.clone())?;
                created_collections.insert(schema.name.clone());
            }
            Err(e) => return Err(e),
        }
    }
    if dry_run {
        for blob in &export.manifest.blobs {
            crate::data::attachments::placeholder(tx.conn, &blob.sha256, blob.bytes, tx.now)?;
        }
    }

    let total: u64 = export.manifest.collections.iter().map(|c| c.records).sum();
    let mut done = 0u64;
    // (target collection, target id) → where the first reference to it is.
    let mut references: BTreeMap<(String, String), (String, String, String)> = BTreeMap::new();
    for entry in &export.manifest.collections {
        let c = tx.collection(&entry.name)?;
        let mut counts = ImportCounts {
            collection: entry.name.clone(),
            created_collection: created_collections.contains(&entry.name),
            ..ImportCounts::default()
        };
        let path = export.folder.display(&entry.file.path);
        let mut input = std::io::BufReader::new(export.folder.bounded(&entry.file.path, entry.file.bytes)?);
        let max_line = usize::try_from(tx.max_body_bytes()?).unwrap_or(usize::MAX).saturating_add(LINE_OVERHEAD);
        let mut seen = BTreeSet::new();
        let mut line = Vec::new();
        let mut n = 0;
        loop {
            let at = format!("{}:{}", entry.file.path, n + 1);
            match crate::engine::foreign::read_line_bounded(&mut input, &mut line, max_line) {
                Ok(true) => n += 1,
                Ok(false) => break,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(invalid(&at, format!("{e} (over records.max_body_bytes); refused while reading")))
                }
                Err(e) => return Err(Error::io("read", &path, e)),
            }
            let Line { id, deleted, body } = serde_json::from_slice(&line).map_err(|e| invalid(&at, e.to_string()))?;
            crate::data::ids::validate_id(&id)?;
            if !seen.insert(id.clone()) {
                return Err(invalid(&at, format!("record `{id}` appears twice")));
            }
            let body = c.schema.normalize_stored(Some(&id), body)?;
            crate::data::encryption::check_sealed_keys(&c.schema, &id, &body, &generations)?;
            counts.records += 1;
            for f in c.schema.fields.iter().filter(|f| f.kind == FieldType::Relation && !deleted) {
                if let (Some(Value::String(target)), Some(collection)) = (body.get(&f.name), &f.collection) {
                    references
                        .entry((collection.clone(), target.clone()))
                        .or_insert_with(|| (entry.name.clone(), id.clone(), f.name.clone()));
                }
            }
            let existing = crate::data::record::read(tx.conn, &c, &id)?;
            match existing {
                None => {
                    tx.write_state(&c, &id, None, NewState { body, deleted, op: ChangeOp::Create })?;
                    counts.created += 1;
                }
                Some(current) if current.body == body && current.deleted_at.is_some() == deleted => {
                    counts.unchanged += 1
                }
                Some(current) => {
                    report.conflict_count += 1;
                    if report.conflicts.len() < 100 {
                        report.conflicts.push(format!("{}/{id}", entry.name));
                    }
                    match on_conflict {
                        OnConflict::Fail | OnConflict::Skip => counts.skipped += 1,
                        OnConflict::Overwrite => {
                            tx.write_state(&c, &id, Some(&current), NewState { body, deleted, op: ChangeOp::Replace })?;
                            counts.overwritten += 1;
                        }
                    }
                }
            }
            done += 1;
            if done.is_multiple_of(500) {
                progress("records", done, total);
            }
        }
        if counts.records != entry.records {
            return Err(invalid(
                &entry.file.path,
                format!("holds {} records, the manifest says {}", counts.records, entry.records),
            ));
        }
        report.collections.push(counts);
    }
    progress("records", done, total);
    for ((collection, target), (from, id, field)) in &references {
        let c = tx.collection(collection)?;
        if crate::data::record::read(tx.conn, &c, target)?.is_none_or(|r| r.deleted_at.is_some()) {
            return Err(Error::Validation {
                collection: from.clone(),
                id: Some(id.clone()),
                field: Some(field.clone()),
                reason: format!("refers to `{collection}/{target}`, which is neither in the export nor in the store"),
            });
        }
    }
    Ok(report)
}

impl Store {
    /// Imports a full export (see the module docs). With `options.dry_run` nothing is
    /// written; the report says what would be.
    pub fn import(&self, dir: &Path, options: &ImportOptions, progress: Progress<'_>) -> Result<ImportReport> {
        let result = self.import_now(dir, options, progress);
        if !options.dry_run {
            let detail = match &result {
                Ok(r) => format!(
                    "{} record(s) created, {} overwritten, {} skipped",
                    r.collections.iter().map(|c| c.created).sum::<u64>(),
                    r.collections.iter().map(|c| c.overwritten).sum::<u64>(),
                    r.collections.iter().map(|c| c.skipped).sum::<u64>()
                ),
                Err(_) => String::new(),
            };
            self.audit("import", &dir.display().to_string(), &crate::engine::trail::outcome(&result), &detail);
        }
        result
    }

    fn import_now(&self, dir: &Path, options: &ImportOptions, progress: Progress<'_>) -> Result<ImportReport> {
        let export = Export::open(dir, progress)?;
        let report = self.write_dry_run(|tx| apply(tx, &export, options.on_conflict, true, progress))?;
        if options.dry_run {
            return Ok(report);
        }
        if options.on_conflict == OnConflict::Fail && report.conflict_count > 0 {
            return Err(Error::NotAllowed(format!(
                "{} record(s) exist in the store with other content ({}{}); nothing was written: choose to skip or overwrite conflicting records",
                report.conflict_count,
                report.conflicts.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                if report.conflict_count > 5 { ", …" } else { "" }
            )));
        }
        let backup = if options.backup {
            let backup = BackupOptions { rotate: false, ..BackupOptions::because(BackupReason::PreImport) };
            Some(self.backup(&backup, progress)?.id)
        } else {
            None
        };
        // Attachments are staged now and moved into place by the transaction below.
        let limit = self.setting_value::<i64>(crate::data::builtin_settings::BLOBS_MAX_BYTES)?.max(0) as u64;
        let mut staged = Vec::new();
        for (i, blob) in export.manifest.blobs.iter().enumerate() {
            if self.blob(&blob.sha256).is_ok() {
                continue;
            }
            let one = crate::blobs::stage(self.dir(), export.folder.bounded(&blob.path, blob.bytes)?, limit)?;
            if one.hash != blob.sha256 {
                return Err(invalid(
                    export.folder.display(&blob.path).display().to_string(),
                    "changed while it was being imported",
                ));
            }
            staged.push(one);
            progress("blobs", i as u64 + 1, export.manifest.blobs.len() as u64);
        }
        let added = staged.len() as u64;
        let mut placed = Vec::new();
        let result = self.write_exclusive(|tx| {
            for one in staged {
                if let (_, Some(path)) = tx.place_blob(one)? {
                    placed.push(path);
                }
            }
            apply(tx, &export, options.on_conflict, false, progress)
        });
        let mut report = match result {
            Ok(report) => report,
            Err(e) => {
                // Rolled back: the attachments it placed belong to nothing.
                for path in &placed {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
        };
        report.blobs_added = added;
        report.backup = backup;
        Ok(report)
    }
}
