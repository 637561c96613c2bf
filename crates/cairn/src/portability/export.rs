//! Full export (SAFE-6): a store's schemas, settings, records and (optionally) attachments as
//! plain files another cairn, or any program, can read.
//!
//! An export is a directory:
//!
//! ```text
//! manifest.json            format, version, time, counts, and the SHA-256 and size of every file
//! schemas.json             the collections' schemas, in an order in which they can be created
//! settings.json            application setting definitions and every value that was set
//! collections/<name>.jsonl one record per line: {"id", "body"} plus "deleted": true when deleted
//! blobs/<sha256>           the attachments records link to (with `blobs`)
//! ```
//!
//! It is read at one commit (one read transaction) and streamed: one page of records in
//! memory at a time, each file hashed as it is written. It is built in a temporary folder
//! beside the target and renamed into place once every file is synced, so a directory with a
//! manifest is a complete export. Versions, times and history are not exported: they belong
//! to the store and its backups; an export carries the data, so that export → import into an
//! empty store → export gives the same files apart from the manifest's time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::data::collection::{self, Collection};
use crate::data::record::ScanOptions;
use crate::data::schema::CollectionSchema;
use crate::data::settings::SettingDef;
use crate::engine::canonical::canonical_json;
use crate::engine::layout::EXPORT_TMP_PREFIX;
use crate::engine::store::Progress;
use crate::engine::store::Store;
use crate::engine::timestamp::Timestamp;
use crate::error::{Error, Result};

/// `format` of an export's manifest.
pub const EXPORT_FORMAT: &str = "cairn-export";
/// The newest export version this build writes and reads.
pub const EXPORT_VERSION: u32 = 1;

/// Options of [`Store::export`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportOptions {
    /// Also copy the attachments records link to. Default: false.
    pub blobs: bool,
    /// Redact the fields flagged `pii` or `encrypted`, and those of `redact_fields`, this way
    /// (GOV-2).
    /// Default: none. A redacted export says so in its manifest and cannot be imported.
    pub redact: Option<Redaction>,
    /// More fields to redact, as `collection.field`.
    pub redact_fields: Vec<String>,
    /// Carry secret settings (sealed, as stored, with the wrapped keys that open them).
    /// Default: false — an export holds no secrets unless asked; a redacted one never does.
    pub secrets: bool,
}

/// How redacted values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Redaction {
    /// The value becomes the text `"[redacted]"`.
    Mask,
    /// The value becomes `"sha256:<hex>"` of the value keyed with a secret drawn for this
    /// export and kept nowhere: equal values stay equal within the export (so they can still
    /// be counted and joined), but cannot be guessed back or linked across exports.
    Hash,
    /// The field is left out.
    Drop,
}

/// The fields to redact per collection, and the key `hash` uses.
struct Redactor {
    mode: Redaction,
    fields: BTreeMap<String, BTreeSet<String>>,
    key: [u8; 32],
}

impl Redactor {
    fn new(mode: Redaction, collections: &[Collection], extra: &[String]) -> Result<Redactor> {
        let mut fields: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for c in collections {
            for f in c.schema.fields.iter().filter(|f| f.pii || f.encrypted) {
                fields.entry(c.name().to_string()).or_default().insert(f.name.clone());
            }
        }
        for named in extra {
            let Some((collection, field)) = named.split_once('.') else {
                return Err(Error::invalid_input(
                    "redact fields",
                    format!("{named:?}: name fields as collection.field"),
                ));
            };
            let known = collections.iter().any(|c| c.name() == collection && c.schema.field(field).is_some());
            if !known {
                return Err(Error::invalid_input("redact fields", format!("no field `{named}` in the store")));
            }
            fields.entry(collection.to_string()).or_default().insert(field.to_string());
        }
        // Two UUIDv7s carry 148 random bits; hashed, they key this export's hashes.
        let seed = format!("{}{}", uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        Ok(Redactor { mode, fields, key: crate::engine::hash::sha256(seed.as_bytes()) })
    }

    fn apply(&self, collection: &str, body: &mut serde_json::Map<String, Value>) {
        let Some(fields) = self.fields.get(collection) else { return };
        for field in fields {
            let Some(value) = body.get_mut(field) else { continue };
            match self.mode {
                Redaction::Mask => *value = Value::String("[redacted]".into()),
                Redaction::Hash => {
                    let mut h = Sha256::new();
                    h.update(self.key);
                    h.update(canonical_json(value));
                    *value = Value::String(format!("sha256:{}", crate::engine::hash::hex(&h.finalize())));
                }
                Redaction::Drop => {
                    body.remove(field);
                }
            }
        }
    }

    fn describe(&self) -> Value {
        let fields: Vec<String> =
            self.fields.iter().flat_map(|(c, fs)| fs.iter().map(move |f| format!("{c}.{f}"))).collect();
        json!({"mode": self.mode, "fields": fields})
    }
}

/// One file of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportFile {
    /// Path inside the export, with `/`.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A collection's part of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportCollection {
    pub name: String,
    /// Records exported (deleted ones included).
    pub records: u64,
    pub deleted: u64,
    pub file: ExportFile,
}

/// `manifest.json` of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ExportManifest {
    pub format: String,
    pub version: u32,
    /// When it was read (RFC 3339).
    pub exported_at: String,
    pub schemas: ExportFile,
    pub settings: ExportFile,
    pub collections: Vec<ExportCollection>,
    /// Attachment files, when exported.
    #[serde(default)]
    pub blobs: Vec<ExportFile>,
    /// The store's keyring (wrapped keys), when it has one and the export is not redacted:
    /// encrypted fields are exported sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<ExportFile>,
    /// Set when fields were redacted; such an export cannot be imported in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted: Option<Value>,
}

impl ExportManifest {
    /// The `format` every export's manifest names.
    pub const FORMAT: &'static str = EXPORT_FORMAT;
    /// The newest export format version this library reads and the one it writes.
    pub const VERSION: u32 = EXPORT_VERSION;
}

/// What `settings.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportSettings {
    pub(crate) definitions: Vec<SettingDef>,
    pub(crate) values: serde_json::Map<String, Value>,
}

/// Writes a file while hashing it.
struct HashedFile {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    hash: Sha256,
    bytes: u64,
}

impl HashedFile {
    fn create(path: PathBuf) -> Result<HashedFile> {
        let file = std::fs::File::create(&path).map_err(|e| Error::io("create", &path, e))?;
        Ok(HashedFile { out: std::io::BufWriter::with_capacity(256 * 1024, file), path, hash: Sha256::new(), bytes: 0 })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hash.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes).map_err(|e| Error::io("write", &self.path, e))
    }

    fn finish(self, rel: &str) -> Result<ExportFile> {
        let file = self.out.into_inner().map_err(|e| Error::io("write", &self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io("fsync", &self.path, e))?;
        Ok(ExportFile {
            path: rel.to_string(),
            bytes: self.bytes,
            sha256: crate::engine::hash::hex(&self.hash.finalize()),
        })
    }
}

/// The schemas in an order in which each one's relation targets exist before it.
pub(crate) fn creation_order(schemas: Vec<CollectionSchema>) -> Result<Vec<CollectionSchema>> {
    let names: BTreeSet<String> = schemas.iter().map(|s| s.name.clone()).collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let (mut ordered, mut left) = (Vec::new(), schemas);
    while !left.is_empty() {
        let before = left.len();
        let (ready, rest): (Vec<_>, Vec<_>) = left.into_iter().partition(|s| {
            s.fields
                .iter()
                .filter_map(|f| f.collection.as_deref())
                .all(|t| t == s.name || done.contains(t) || !names.contains(t))
        });
        done.extend(ready.iter().map(|s| s.name.clone()));
        ordered.extend(ready);
        left = rest;
        if left.len() == before {
            let cycle: Vec<&str> = left.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::NotAllowed(format!("collections {} refer to each other in a cycle", cycle.join(", "))));
        }
    }
    Ok(ordered)
}

impl Store {
    /// Exports the store into `out`, which must not exist yet. See the module docs.
    pub fn export(&self, out: &Path, options: &ExportOptions, progress: Progress<'_>) -> Result<ExportManifest> {
        let result = self.export_now(out, options, progress);
        let detail = match &result {
            Ok(m) => format!("{} collection(s), {} blob(s)", m.collections.len(), m.blobs.len()),
            Err(_) => String::new(),
        };
        self.audit("export", &out.display().to_string(), &crate::engine::trail::outcome(&result), &detail);
        result
    }

    fn export_now(&self, out: &Path, options: &ExportOptions, progress: Progress<'_>) -> Result<ExportManifest> {
        if out.exists() {
            return Err(Error::PathExists {
                path: out.to_path_buf(),
                reason: "exists; an export goes into a new path".into(),
            });
        }
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io("create directory", &parent, e))?;
        // What an earlier export here left when it was killed.
        crate::safety::leftovers::sweep_exports(&parent);
        let tmp = tempfile::Builder::new()
            .prefix(EXPORT_TMP_PREFIX)
            // The folder the user asked for: the usual permissions (0777 less the umask).
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .tempdir_in(&parent)
            .map_err(|e| Error::io("create a folder in", &parent, e))?;
        let root = tmp.path();
        let owner = crate::engine::owner::claim(root)?;
        std::fs::create_dir(root.join("collections")).map_err(|e| Error::io("create directory", root, e))?;

        // One read transaction: every file describes the same commit.
        let conn = self.reader()?;
        let txn = conn.unchecked_transaction()?;
        let collections = collection::load_all(&txn)?;
        let schemas = creation_order(collections.iter().map(|c| c.schema.clone()).collect())?;
        let redactor =
            options.redact.map(|mode| Redactor::new(mode, &collections, &options.redact_fields)).transpose()?;
        let mut file = HashedFile::create(root.join("schemas.json"))?;
        file.write(&serde_json::to_vec_pretty(&schemas).map_err(|e| Error::Internal(e.to_string()))?)?;
        let schemas_file = file.finish("schemas.json")?;

        let settings = export_settings(&txn, options.secrets && redactor.is_none())?;
        let mut file = HashedFile::create(root.join("settings.json"))?;
        file.write(&serde_json::to_vec_pretty(&settings).map_err(|e| Error::Internal(e.to_string()))?)?;
        let settings_file = file.finish("settings.json")?;

        // Sealed values travel sealed, with the wrapped keys that open them. A redacted export
        // is for other eyes: it redacts encrypted fields too and carries no keys.
        let keys_file = match crate::governance::keys::export_keyring(&txn)?.filter(|_| redactor.is_none()) {
            Some(keyring) => {
                let mut file = HashedFile::create(root.join("keys.json"))?;
                file.write(&serde_json::to_vec_pretty(&keyring).map_err(|e| Error::Internal(e.to_string()))?)?;
                Some(file.finish("keys.json")?)
            }
            None => None,
        };

        let total: u64 = collections.iter().map(|c| collection::record_count(&txn, c)).sum::<Result<u64>>()?;
        let (mut done, mut hashes) = (0u64, BTreeSet::new());
        let mut exported = Vec::new();
        for c in &collections {
            let rel = format!("collections/{}.jsonl", c.name());
            let mut file = HashedFile::create(root.join(&rel))?;
            let (mut records, mut deleted) = (0u64, 0u64);
            let mut scan = ScanOptions { include_deleted: true, ..ScanOptions::default() };
            loop {
                let page = crate::data::record::scan(&txn, c, &scan)?;
                let Some(last) = page.last() else { break };
                scan.after = Some(last.id.clone());
                for r in &page {
                    let mut body = r.body.clone();
                    if let Some(redactor) = &redactor {
                        redactor.apply(c.name(), &mut body);
                    }
                    let line = if r.deleted_at.is_some() {
                        deleted += 1;
                        json!({"id": r.id, "deleted": true, "body": body})
                    } else {
                        json!({"id": r.id, "body": body})
                    };
                    file.write(&canonical_json(&line))?;
                    file.write(b"\n")?;
                    if options.blobs {
                        hashes
                            .extend(crate::data::attachments::links(c, &body).into_iter().map(|(_, h)| h.to_string()));
                    }
                    records += 1;
                }
                done += page.len() as u64;
                progress("records", done, total);
            }
            exported.push(ExportCollection { name: c.name().to_string(), records, deleted, file: file.finish(&rel)? });
        }
        drop(txn);
        drop(conn);

        let mut blobs = Vec::new();
        if !hashes.is_empty() {
            std::fs::create_dir(root.join("blobs")).map_err(|e| Error::io("create directory", root, e))?;
        }
        for (i, hash) in hashes.iter().enumerate() {
            let rel = format!("blobs/{hash}");
            let info = self.copy_blob(hash, &root.join(&rel), false, false)?;
            blobs.push(ExportFile { path: rel, bytes: info.size, sha256: hash.clone() });
            progress("blobs", i as u64 + 1, hashes.len() as u64);
        }

        let manifest = ExportManifest {
            format: EXPORT_FORMAT.into(),
            version: EXPORT_VERSION,
            exported_at: Timestamp::now().to_string(),
            schemas: schemas_file,
            settings: settings_file,
            collections: exported,
            blobs,
            keys: keys_file,
            redacted: redactor.as_ref().map(Redactor::describe),
        };
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
        crate::engine::fsutil::write_file(&root.join("manifest.json"), false, true, |_, file| {
            std::io::Write::write_all(file, &text).map_err(|e| Error::io("write", root.join("manifest.json"), e))
        })?;
        crate::engine::fsutil::sync_dir(&root.join("collections"))?;
        let kept = tmp.keep();
        std::fs::rename(&kept, out).map_err(|e| Error::io("rename into", out, e))?;
        // Renamed, it is no temporary folder any more: its owner file goes, then the lock.
        let _ = std::fs::remove_file(out.join(crate::engine::layout::OWNER_FILE));
        drop(owner);
        crate::engine::fsutil::sync_dir(&parent)?;
        Ok(manifest)
    }
}

/// Application setting definitions, and the value of every setting that was set (secret
/// ones, sealed, only with `secrets`).
fn export_settings(conn: &rusqlite::Connection, secrets: bool) -> Result<ExportSettings> {
    let mut settings = ExportSettings::default();
    let mut stmt = conn.prepare("SELECT def FROM cairn_setting_defs ORDER BY key")?;
    for def in stmt.query_map([], |r| r.get::<_, String>(0))? {
        let def = def?;
        let def: SettingDef = serde_json::from_str(&def)
            .map_err(|e| Error::Corruption { location: "a setting definition".into(), detail: e.to_string() })?;
        settings.definitions.push(def);
    }
    let mut stmt = conn.prepare("SELECT key, value FROM cairn_settings ORDER BY key")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (key, value) = row?;
        if !secrets && crate::data::settings::is_secret(conn, &key) {
            continue;
        }
        let value: Value = serde_json::from_str(&value)
            .map_err(|e| Error::Corruption { location: format!("setting `{key}`"), detail: e.to_string() })?;
        settings.values.insert(key, value);
    }
    Ok(settings)
}
