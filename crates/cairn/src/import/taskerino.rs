//! Legacy Taskerino import (SAFE-7): the app's monolithic collection files
//! (`sessions.json`, `notes.json`, `tasks.json`, `topics.json`, `companies.json`,
//! `contacts.json`, `aiSettings.json`, `preferences.json` in a directory) or its single-file
//! 1.0.0 export (`version`, `exportedAt`, `appVersion` and the eight collections), into the
//! predefined Taskerino schema (`crate::taskerino`).
//!
//! Field names map from camelCase (`startTime` → `started_at`, `companyId` → `company`…);
//! fields the schema does not have are dropped and counted. Attachments referenced by id
//! (`attachmentId`, or an attachment object's `id`) or by `hash` are looked up in the
//! attachments directory — content files named by their SHA-256 (flat or in two-letter
//! folders, as the app stored them) and metadata files `<id>.json` — and stored in the blob
//! store; a session's screenshots and audio segments become its attachments.
//!
//! What cannot be imported is skipped and reported with the reason: a record without an id,
//! of the wrong type or with a value its field refuses, a repeated id, an attachment whose
//! file is missing, a reference to a record that is nowhere, a file that does not parse (a
//! truncated file). With `strict`, any of these refuses the whole import. When nothing can be
//! parsed at all, nothing is written. Everything else is written in one transaction after a
//! verified backup; records whose id the store already has are left as they are (reported).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::backup::{BackupOptions, BackupReason, Progress};
use crate::changes::ChangeOp;
use crate::error::{Error, Result};
use crate::record::NewState;
use crate::schema::FieldType;
use crate::store::Store;

/// The collections, in the order they are written (relation targets first), with the legacy
/// file each comes from.
const COLLECTIONS: [(&str, &str); 6] = [
    ("companies", "companies.json"),
    ("contacts", "contacts.json"),
    ("topics", "topics.json"),
    ("sessions", "sessions.json"),
    ("notes", "notes.json"),
    ("tasks", "tasks.json"),
];
/// Settings-like files, kept as JSON settings.
const SETTINGS: [(&str, &str, &str); 2] = [
    ("aiSettings", "aiSettings.json", "taskerino.ai_settings"),
    ("preferences", "preferences.json", "taskerino.preferences"),
];

/// Options of [`Store::import_taskerino`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacyOptions {
    /// Any problem refuses the whole import. Default: skip and report.
    pub strict: bool,
    /// Where attachment files are. Default: `attachments/` beside the input.
    pub attachments: Option<PathBuf>,
    /// Report only; write nothing.
    pub dry_run: bool,
}

/// Something that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Skipped {
    /// The legacy file (or `export.json` collection) it was in.
    pub source: String,
    /// Its position in the file's list, when it is a record.
    pub index: Option<usize>,
    pub id: Option<String>,
    pub reason: String,
}

/// What [`Store::import_taskerino`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LegacyReport {
    pub dry_run: bool,
    /// The input's format: `directory` or `export 1.0.0`.
    pub format: String,
    /// Records imported, by collection.
    pub imported: BTreeMap<String, u64>,
    /// Records whose id the store already had (left as they are).
    pub existing: u64,
    /// Attachments stored (distinct files).
    pub attachments: u64,
    /// Settings files kept as settings.
    pub settings: Vec<String>,
    /// Fields the schema has no place for, by `collection.field`, with how many records had them.
    pub dropped_fields: BTreeMap<String, u64>,
    pub skipped: Vec<Skipped>,
    pub backup: Option<String>,
}

/// `camelCase` → `snake_case`, plus the legacy names that differ more.
fn field_name(collection: &str, legacy: &str) -> String {
    match (collection, legacy) {
        ("sessions", "startTime") => return "started_at".into(),
        ("sessions", "endTime") => return "ended_at".into(),
        ("topics", "type") => return "kind".into(),
        (_, "companyId") => return "company".into(),
        (_, "topicId") => return "topic".into(),
        (_, "sessionId") => return "session".into(),
        (_, "noteId") => return "note".into(),
        (_, "dueDate") => return "due_date".into(),
        _ => {}
    }
    let mut out = String::new();
    for ch in legacy.chars() {
        if ch.is_ascii_uppercase() {
            out.push('_');
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// The attachments directory: content by hash, metadata by id.
struct Attachments {
    dir: Option<PathBuf>,
}

impl Attachments {
    /// The content file of `hash`, if the directory holds it.
    fn content(&self, hash: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let hash = hash.to_ascii_lowercase();
        [dir.join(&hash[..2]).join(&hash), dir.join(&hash)].into_iter().find(|p| p.is_file())
    }

    /// An attachment by id: its metadata file names the hash.
    fn by_id(&self, id: &str) -> Option<(PathBuf, Map<String, Value>)> {
        let dir = self.dir.as_ref()?;
        if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
            return None;
        }
        let meta: Map<String, Value> =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{id}.json"))).ok()?).ok()?;
        let path = self.content(meta.get("hash")?.as_str()?)?;
        Some((path, meta))
    }
}

/// The parsed input: each collection's list (or why it could not be read), and settings.
struct Input {
    format: String,
    lists: Vec<(String, std::result::Result<Vec<Value>, String>)>,
    settings: Vec<(String, Value)>,
    attachments_dir: Option<PathBuf>,
}

fn read_input(path: &Path, skipped: &mut Vec<Skipped>) -> Result<Input> {
    let problem = |source: &str, reason: String| Skipped { source: source.to_string(), index: None, id: None, reason };
    if path.is_dir() {
        let attachments_dir = Some(path.join("attachments")).filter(|p| p.is_dir());
        let mut lists = Vec::new();
        let mut parsed_any = false;
        for (collection, file) in COLLECTIONS {
            let p = path.join(file);
            if !p.exists() {
                continue;
            }
            let list = match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
            {
                Ok(Value::Array(items)) => {
                    parsed_any = true;
                    Ok(items)
                }
                Ok(other) => Err(format!("expected a list of records, got {}", crate::schema::json_kind(&other))),
                Err(e) => Err(format!("cannot be read (truncated or not JSON): {e}")),
            };
            if let Err(reason) = &list {
                skipped.push(problem(file, reason.clone()));
            }
            lists.push((collection.to_string(), list));
        }
        let mut settings = Vec::new();
        for (_, file, key) in SETTINGS {
            let p = path.join(file);
            if !p.exists() {
                continue;
            }
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
            {
                Ok(value) => {
                    parsed_any = true;
                    settings.push((key.to_string(), value));
                }
                Err(e) => skipped.push(problem(file, format!("cannot be read (truncated or not JSON): {e}"))),
            }
        }
        if !parsed_any {
            return Err(Error::invalid_input(
                path.display().to_string(),
                "no Taskerino collection file (sessions.json, notes.json, …) could be parsed; nothing was written",
            ));
        }
        return Ok(Input { format: "directory".into(), lists, settings, attachments_dir });
    }
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::invalid_input(&name, format!("not a Taskerino export (truncated or not JSON): {e}; nothing was written"))
    })?;
    let Value::Object(mut map) = value else {
        return Err(Error::invalid_input(&name, "a Taskerino export is a JSON object"));
    };
    match map.get("version").and_then(Value::as_str) {
        Some("1.0.0") => {}
        Some(other) => return Err(Error::invalid_input(&name, format!("export version {other:?} is not 1.0.0"))),
        None => return Err(Error::invalid_input(&name, "not a Taskerino export: no `version`")),
    }
    if !map.get("exportedAt").is_some_and(Value::is_string) {
        return Err(Error::invalid_input(&name, "not a Taskerino export: no `exportedAt`"));
    }
    let mut lists = Vec::new();
    for (collection, _) in COLLECTIONS {
        match map.remove(collection) {
            Some(Value::Array(items)) => lists.push((collection.to_string(), Ok(items))),
            Some(other) => {
                let reason = format!("expected a list of records, got {}", crate::schema::json_kind(&other));
                skipped.push(problem(collection, reason.clone()));
                lists.push((collection.to_string(), Err(reason)));
            }
            None => {}
        }
    }
    let settings = SETTINGS.iter().filter_map(|(field, _, key)| Some((key.to_string(), map.remove(*field)?))).collect();
    let attachments_dir = path.parent().map(|p| p.join("attachments")).filter(|p| p.is_dir());
    Ok(Input { format: "export 1.0.0".into(), lists, settings, attachments_dir })
}

/// One record ready to write, and the attachment files it needs.
struct Prepared {
    collection: String,
    id: String,
    body: Map<String, Value>,
}

impl Store {
    /// Imports Taskerino's legacy files (a directory) or its 1.0.0 export (a file); see the
    /// module docs.
    pub fn import_taskerino(
        &self,
        path: &Path,
        options: &LegacyOptions,
        progress: Progress<'_>,
    ) -> Result<LegacyReport> {
        let result = self.import_taskerino_now(path, options, progress);
        if !options.dry_run {
            let detail = match &result {
                Ok(r) => format!("{} record(s), {} skipped", r.imported.values().sum::<u64>(), r.skipped.len()),
                Err(_) => String::new(),
            };
            self.audit("import_legacy", &path.display().to_string(), &crate::audit::outcome(&result), &detail);
        }
        result
    }

    fn import_taskerino_now(
        &self,
        path: &Path,
        options: &LegacyOptions,
        progress: Progress<'_>,
    ) -> Result<LegacyReport> {
        let mut report = LegacyReport { dry_run: options.dry_run, ..LegacyReport::default() };
        let input = read_input(path, &mut report.skipped)?;
        report.format = input.format.clone();
        let attachments = Attachments { dir: options.attachments.clone().or(input.attachments_dir.clone()) };
        let schemas: BTreeMap<String, crate::CollectionSchema> =
            crate::taskerino::schemas().into_iter().map(|s| (s.name.clone(), s)).collect();

        // Every id the input holds, so that references can be checked before writing.
        let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (collection, list) in &input.lists {
            for item in list.iter().flatten() {
                if let Some(id) = item.get("id").and_then(Value::as_str) {
                    ids.entry(collection.clone()).or_default().insert(id.to_string());
                }
            }
        }
        let conn = self.reader()?;
        let known = |collection: &str, id: &str| -> bool {
            ids.get(collection).is_some_and(|s| s.contains(id))
                || crate::collection::load(&conn, collection)
                    .ok()
                    .and_then(|c| crate::record::read(&conn, &c, id).ok().flatten())
                    .is_some()
        };

        let mut prepared: Vec<Prepared> = Vec::new();
        let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (collection, list) in &input.lists {
            let Ok(list) = list else { continue };
            let schema = &schemas[collection];
            let source = if input.format == "directory" { format!("{collection}.json") } else { collection.clone() };
            let mut seen = BTreeSet::new();
            for (index, item) in list.iter().enumerate() {
                let skip = |id: Option<&str>, reason: String| Skipped {
                    source: source.clone(),
                    index: Some(index),
                    id: id.map(str::to_string),
                    reason,
                };
                let Value::Object(legacy) = item else {
                    report
                        .skipped
                        .push(skip(None, format!("expected a record object, got {}", crate::schema::json_kind(item))));
                    continue;
                };
                let id = match legacy.get("id") {
                    Some(Value::String(id)) if crate::record::validate_id(id).is_ok() => id.clone(),
                    Some(Value::String(id)) => {
                        report.skipped.push(skip(Some(id), "the id is not a valid record id".into()));
                        continue;
                    }
                    _ => {
                        report.skipped.push(skip(None, "missing id".into()));
                        continue;
                    }
                };
                if !seen.insert(id.clone()) {
                    report.skipped.push(skip(Some(&id), "duplicate id (an earlier record has it)".into()));
                    continue;
                }
                let mut body = Map::new();
                let mut links: Vec<Value> = Vec::new();
                for (key, value) in legacy {
                    if key == "id" || value.is_null() {
                        continue;
                    }
                    let field = field_name(collection, key);
                    let Some(def) = schema.field(&field) else {
                        *report.dropped_fields.entry(format!("{collection}.{key}")).or_insert(0) += 1;
                        continue;
                    };
                    match def.kind {
                        FieldType::Relation => {
                            let target = def.collection.as_deref().unwrap_or_default();
                            match value.as_str() {
                                Some(to) if known(target, to) => {
                                    body.insert(field, value.clone());
                                }
                                _ => report.skipped.push(skip(
                                    Some(&id),
                                    format!("`{key}` refers to {target} {value}, which is nowhere; the reference was left out"),
                                )),
                            }
                        }
                        FieldType::Attachments => {
                            for a in value.as_array().into_iter().flatten() {
                                links.push(a.clone());
                            }
                        }
                        _ => {
                            body.insert(field, value.clone());
                        }
                    }
                }
                // A session's screenshots and audio segments point at attachments too.
                for list in ["screenshots", "audio_segments"] {
                    for item in body.get(list).and_then(Value::as_array).into_iter().flatten() {
                        if let Some(att) = item.get("attachmentId") {
                            links.push(serde_json::json!({"id": att, "hash": item.get("hash")}));
                        }
                    }
                }
                let mut resolved = Vec::new();
                for link in links {
                    let by_hash = link.get("hash").and_then(Value::as_str).and_then(|h| {
                        attachments.content(h).map(|p| (p, link.as_object().cloned().unwrap_or_default()))
                    });
                    let by_id = || match &link {
                        Value::String(aid) => attachments.by_id(aid),
                        other => other.get("id").and_then(Value::as_str).and_then(|aid| attachments.by_id(aid)),
                    };
                    match by_hash.or_else(by_id) {
                        Some((file, meta)) => {
                            let Some(hash) = file.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()) else { continue };
                            let mut att = Map::new();
                            att.insert("hash".into(), Value::String(hash.clone()));
                            if let Some(name) = meta.get("name").and_then(Value::as_str) {
                                att.insert("name".into(), Value::String(crate::blob::sanitize_name(name).unwrap_or_else(|_| "attachment".into())));
                            }
                            if let Some(mime) = meta.get("mimeType").or(meta.get("mime")).and_then(Value::as_str) {
                                att.insert("mime".into(), Value::String(mime.to_string()));
                            }
                            if !resolved.iter().any(|a: &Value| a["hash"] == hash.as_str()) {
                                resolved.push(Value::Object(att));
                            }
                            files.insert(hash, file);
                        }
                        None => report.skipped.push(skip(
                            Some(&id),
                            format!("dangling attachment {link}: no such file in the attachments directory; the link was left out"),
                        )),
                    }
                }
                if !resolved.is_empty() {
                    body.insert("attachments".into(), Value::Array(resolved));
                }
                if let Err(e) = schema.normalize(Some(&id), Value::Object(body.clone())) {
                    report.skipped.push(skip(Some(&id), format!("wrong type: {e}")));
                    continue;
                }
                prepared.push(Prepared { collection: collection.clone(), id, body });
            }
        }
        drop(conn);
        if options.strict && !report.skipped.is_empty() {
            let first = &report.skipped[0];
            return Err(Error::invalid_input(
                path.display().to_string(),
                format!(
                    "{} problem(s) with --strict, nothing was written; the first: {} {}{}: {}",
                    report.skipped.len(),
                    first.source,
                    first.index.map(|i| format!("#{i}")).unwrap_or_default(),
                    first.id.as_deref().map(|id| format!(" ({id})")).unwrap_or_default(),
                    first.reason
                ),
            ));
        }
        report.attachments = files.len() as u64;
        report.settings = input.settings.iter().map(|(k, _)| k.clone()).collect();
        if options.dry_run {
            for p in &prepared {
                *report.imported.entry(p.collection.clone()).or_insert(0) += 1;
            }
            return Ok(report);
        }
        report.backup = Some(
            self.backup(&BackupOptions { rotate: false, ..BackupOptions::because(BackupReason::PreImport) }, progress)?
                .id,
        );
        for (i, (hash, file)) in files.iter().enumerate() {
            if self.blob(hash).is_err() {
                let f = std::fs::File::open(file).map_err(|e| Error::io("open", file, e))?;
                let stored = self.put_blob(f)?;
                if &stored.hash != hash {
                    return Err(Error::invalid_input(
                        file.display().to_string(),
                        format!("its content's SHA-256 is {}, not the {hash} it is named by", stored.hash),
                    ));
                }
            }
            progress("attachments", i as u64 + 1, files.len() as u64);
        }
        let total = prepared.len() as u64;
        let (imported, existing) = self.write_exclusive(|tx| {
            for schema in crate::taskerino::schemas() {
                match crate::collection::load(tx.conn, &schema.name) {
                    Ok(c) if c.schema == schema => {}
                    Ok(_) => {
                        return Err(Error::NotAllowed(format!(
                            "collection `{}` exists with another schema than Taskerino's; import into a new store",
                            schema.name
                        )))
                    }
                    Err(Error::UnknownCollection { .. }) => tx.create_collection(schema)?,
                    Err(e) => return Err(e),
                }
            }
            for (key, value) in &input.settings {
                if crate::settings::setting(tx.conn, key).is_err() {
                    tx.define_setting(crate::SettingDef {
                        key: key.clone(),
                        kind: crate::SettingType::Json,
                        default: Value::Null,
                        description: "kept from a legacy Taskerino import".into(),
                        min: None,
                        max: None,
                        choices: None,
                    })?;
                }
                tx.set_setting(key, value.clone())?;
            }
            let (mut imported, mut existing) = (BTreeMap::new(), 0u64);
            for (done, p) in prepared.iter().enumerate() {
                let c = tx.collection(&p.collection)?;
                if crate::record::read(tx.conn, &c, &p.id)?.is_some() {
                    existing += 1;
                    continue;
                }
                let body = c.schema.normalize(Some(&p.id), Value::Object(p.body.clone()))?;
                tx.write_state(&c, &p.id, None, NewState { body, deleted: false, op: ChangeOp::Create })?;
                *imported.entry(p.collection.clone()).or_insert(0u64) += 1;
                if done % 500 == 0 {
                    progress("records", done as u64, total);
                }
            }
            Ok((imported, existing))
        })?;
        report.imported = imported;
        report.existing = existing;
        Ok(report)
    }
}
