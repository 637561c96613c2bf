//! Legacy Taskerino import (SAFE-7): the app's data as it really is on disk, into the
//! predefined Taskerino schema (`crate::schema`).
//!
//! What it reads, from a data directory:
//! - the monolithic collection files (`sessions.json`, `notes.json`, `tasks.json`,
//!   `topics.json`, `companies.json`, `contacts.json`) and the settings files
//!   (`aiSettings.json`, `preferences.json`);
//! - the per-entity layout of the storage plan's phase 2: `sessions/index.json` with
//!   `sessions/session-<id>.json` (or `.json.gz`) per record, for every collection; when both
//!   layouts are there, a record the folder lacks is taken from the monolithic file;
//! - the backups the app left beside its files (`<collection>.<ms>.backup.json`,
//!   `<collection>.pre-migration.backup.json`): records a backup holds and the data lacks —
//!   exactly what the app lost in its data-loss incident — are reported, and imported with
//!   `from_backups` (the newest backup's copy);
//! - attachments in `attachments/`: content files named by SHA-256 (flat or in two-letter
//!   folders) or by attachment id (with or without an extension), metadata files `<id>.json`,
//!   and inline base64 `data`; attachment files no record links are imported too, as records
//!   of `attachments` with `orphan = true` (so that nothing collects them).
//!
//! Or from its single-file 1.0.0 export (`version`, `exportedAt` and the eight collections).
//!
//! Files are read as UTF-8 (with or without a BOM) or UTF-16 (with a BOM, or recognised by
//! its zero bytes). A list is split into its records before any is parsed, so a record that
//! does not parse — truncated, nested too deep, not JSON — is skipped alone and the rest of
//! its file is imported. Times are epoch milliseconds or ISO strings in every date field and
//! keep their values; `createdAt` fills `timestamp` (notes) or `started_at` (sessions) when
//! those are missing. Arrays of related ids keep the ids that exist (the others are reported).
//! API keys and tokens in `aiSettings` become secret settings, sealed with the store's key, or
//! are reported and left out when the store has no unlocked key: never stored in the clear.
//!
//! Everything is written in one transaction after a verified backup, each record on its own
//! (see `load`): a record the schema or the store refuses is skipped with its reason. A dry
//! run runs the same transaction and rolls it back, so it reports the same counts. With
//! `strict`, any problem refuses the whole import. When nothing can be read at all, nothing
//! is written.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Map, Value};

use cairn::load::{
    EntryKind as Kind, ForeignDir as Foreign, LoadPlan, LoadRecord, LoadSetting, Loader, Skipped, StagedBlob,
};
use cairn::{
    BackupOptions, BackupReason, CollectionSchema, Error, FieldType, Progress, Result, ScanOptions, SettingDef,
    SettingType, Store,
};

/// The collections, in the order they are written (relation targets first).
const COLLECTIONS: [&str; 6] = ["companies", "contacts", "topics", "sessions", "notes", "tasks"];
/// Settings-like files (and export members), kept as JSON settings.
const SETTINGS: [(&str, &str); 2] = [("aiSettings", "taskerino.ai_settings"), ("preferences", "taskerino.preferences")];
/// Largest legacy file read (a monolithic file holds every record of a collection).
const MAX_FILE_BYTES: u64 = 4 << 30;
/// Largest attachment metadata file, and largest per-entity record file.
const MAX_SMALL_FILE: u64 = 256 << 20;

/// Options of [`Store::import_taskerino`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacyOptions {
    /// Any problem refuses the whole import. Default: skip and report.
    pub strict: bool,
    /// Where attachment files are. Default: `attachments/` beside the input.
    pub attachments: Option<PathBuf>,
    /// Report only; write nothing. The counts are the real run's.
    pub dry_run: bool,
    /// Also import the records that only the app's backup files hold.
    pub from_backups: bool,
}

/// A record a backup file holds and the data files lack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BackupOnly {
    pub collection: String,
    pub id: String,
    /// The newest backup file holding it.
    pub backup: String,
    /// Imported (with `from_backups`).
    pub imported: bool,
}

/// What [`Store::import_taskerino`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LegacyReport {
    pub dry_run: bool,
    /// The input's layout: `directory`, `per-entity`, `mixed` or `export 1.0.0`.
    pub format: String,
    /// Records imported, by collection.
    pub imported: BTreeMap<String, u64>,
    /// Records skipped, by collection (each is in `skipped` with its reason).
    pub skipped_by_collection: BTreeMap<String, u64>,
    /// Records whose id the store already had (left as they are).
    pub existing: u64,
    /// Attachments stored (distinct contents).
    pub attachments: u64,
    /// Attachment files no record links, kept as records of `attachments`.
    pub orphans: Vec<String>,
    /// Settings written (secret ones sealed).
    pub settings: Vec<String>,
    /// Records only a backup file holds.
    pub only_in_backups: Vec<BackupOnly>,
    /// Fields the schema has no place for, by `collection.field`, with how many records had them.
    pub dropped_fields: BTreeMap<String, u64>,
    /// Things noticed that did not stop anything (records outside an index, one layout filling
    /// in for the other).
    pub notices: Vec<String>,
    /// Records (and settings, and attachment files) not imported, and why.
    pub skipped: Vec<Skipped>,
    /// Parts left out of records that were imported: references to records that are nowhere,
    /// links to attachments that are missing or damaged.
    pub left_out: Vec<Skipped>,
    pub backup: Option<String>,
}

impl LegacyReport {
    /// True when everything in the input was imported (or was there already).
    pub fn is_complete(&self) -> bool {
        self.skipped.is_empty() && self.left_out.is_empty() && self.only_in_backups.iter().all(|b| b.imported)
    }
}

/// One record as read, before mapping: where it came from and what it is (or why it is not).
#[derive(Debug)]
struct Entry {
    source: String,
    index: Option<usize>,
    value: std::result::Result<Value, String>,
}

/// The input, read and split into records.
#[derive(Debug, Default)]
struct Input {
    format: String,
    /// Records of each collection, in file order.
    records: BTreeMap<String, Vec<Entry>>,
    /// Settings values by export member name.
    settings: Vec<(String, String, Value)>,
    /// Backup files of each collection, newest first: (file name, records).
    backups: BTreeMap<String, Vec<(String, Vec<Entry>)>>,
    attachments_dir: Option<PathBuf>,
    notices: Vec<String>,
}

/// Imports Taskerino's legacy data (a data directory, or its 1.0.0 export file) into `store`;
/// see the module docs.
pub fn import(store: &Store, path: &Path, options: &LegacyOptions, progress: Progress<'_>) -> Result<LegacyReport> {
    let result = import_now(store, path, options, progress);
    if !options.dry_run {
        let detail = match &result {
            Ok(r) => format!("{} record(s), {} skipped", r.imported.values().sum::<u64>(), r.skipped.len()),
            Err(_) => String::new(),
        };
        store.audit("import_legacy", &path.display().to_string(), &cairn::load::audit_outcome(&result), &detail);
    }
    result
}

fn import_now(store: &Store, path: &Path, options: &LegacyOptions, progress: Progress<'_>) -> Result<LegacyReport> {
    let mut report = LegacyReport { dry_run: options.dry_run, ..LegacyReport::default() };
    let input = read_input(path, &mut report.skipped)?;
    report.format = input.format.clone();
    report.notices = input.notices.clone();
    let attachments = Attachments::new(options.attachments.as_deref().or(input.attachments_dir.as_deref()));
    let schemas: BTreeMap<String, CollectionSchema> =
        crate::schema::schemas().into_iter().map(|s| (s.name.clone(), s)).collect();

    // The records of each collection: the data's, then (reported, or with `from_backups`
    // taken) those only a backup holds.
    let mut chosen: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for collection in COLLECTIONS {
        let mut entries = Vec::new();
        let mut ids = BTreeSet::new();
        for entry in input.records.get(collection).into_iter().flatten() {
            if let Some(id) = entry.value.as_ref().ok().and_then(|v| v.get("id")).and_then(Value::as_str) {
                ids.insert(id.to_string());
            }
            entries.push(Entry { source: entry.source.clone(), index: entry.index, value: entry.value.clone() });
        }
        for (file, list) in input.backups.get(collection).into_iter().flatten() {
            for entry in list {
                let Some(id) = entry.value.as_ref().ok().and_then(|v| v.get("id")).and_then(Value::as_str) else {
                    continue;
                };
                if !ids.insert(id.to_string()) {
                    continue;
                }
                report.only_in_backups.push(BackupOnly {
                    collection: collection.to_string(),
                    id: id.to_string(),
                    backup: file.clone(),
                    imported: options.from_backups,
                });
                if options.from_backups {
                    entries.push(Entry { source: file.clone(), index: entry.index, value: entry.value.clone() });
                }
            }
        }
        chosen.insert(collection.to_string(), entries);
    }

    // Every id the input holds, so that references can be checked before writing.
    let mut known: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (collection, entries) in &chosen {
        for entry in entries {
            if let Some(id) = entry.value.as_ref().ok().and_then(|v| v.get("id")).and_then(Value::as_str) {
                known.entry(collection.clone()).or_default().insert(id.to_string());
            }
        }
    }
    for collection in COLLECTIONS {
        if store.collection(collection).is_err() {
            continue;
        }
        let mut scan = ScanOptions { include_deleted: true, ..Default::default() };
        loop {
            let page = store.scan(collection, &scan)?;
            let Some(last) = page.last() else { break };
            scan.after = Some(last.id.clone());
            known.entry(collection.to_string()).or_default().extend(page.into_iter().map(|r| r.id));
        }
    }

    let mut loader = store.loader()?;
    let mut plan = LoadPlan { collections: crate::schema::schemas(), ..LoadPlan::default() };
    let mut used_files: BTreeSet<String> = BTreeSet::new();
    for collection in COLLECTIONS {
        let schema = &schemas[collection];
        let mut seen = BTreeSet::new();
        for entry in chosen.remove(collection).unwrap_or_default() {
            let skip = |id: Option<&str>, reason: String| Skipped {
                source: entry.source.clone(),
                index: entry.index,
                id: id.map(str::to_string),
                reason,
            };
            let legacy = match &entry.value {
                Ok(Value::Object(map)) => map,
                Ok(other) => {
                    report
                        .skipped
                        .push(skip(None, format!("expected a record object, got {}", cairn::json::kind(other))));
                    continue;
                }
                Err(reason) => {
                    report.skipped.push(skip(None, reason.clone()));
                    continue;
                }
            };
            let id = match legacy.get("id") {
                Some(Value::String(id)) if cairn::validate_id(id).is_ok() => id.clone(),
                Some(Value::String(id)) => {
                    report.skipped.push(skip(Some(id), "the id is not a valid record id".into()));
                    continue;
                }
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    report.skipped.push(skip(None, "missing id".into()));
                    continue;
                }
            };
            if !seen.insert(id.clone()) {
                report.skipped.push(skip(Some(&id), "duplicate id (an earlier record has it)".into()));
                continue;
            }
            let mut problems = Vec::new();
            let body = map_record(
                schema,
                legacy,
                &known,
                &attachments,
                &mut loader,
                &mut used_files,
                &mut report.dropped_fields,
                &mut problems,
            );
            match body {
                Ok(body) => {
                    for problem in problems {
                        report.left_out.push(skip(Some(&id), problem));
                    }
                    plan.records.push(LoadRecord {
                        collection: collection.to_string(),
                        id,
                        body,
                        source: entry.source.clone(),
                        index: entry.index,
                    })
                }
                Err(reason) => report.skipped.push(skip(Some(&id), reason)),
            }
        }
    }
    // Attachment files no record links: kept, as `attachments` records. Links and pipes
    // among them are never read.
    let (files, refused) = attachments.content_files();
    for rel in refused {
        report.skipped.push(Skipped {
            source: format!("attachments/{rel}"),
            index: None,
            id: None,
            reason: "not a regular file (a link, pipe or device): not read".into(),
        });
    }
    for rel in files {
        if used_files.contains(&rel) {
            continue;
        }
        match attachments.stage_file(&rel, &mut loader) {
            Ok(blob) => {
                let size = blob.size;
                let name = cairn::sanitize_name(&rel.replace('/', "_")).unwrap_or_else(|_| "attachment".into());
                let mime = blob.sniffed.map(String::from).or_else(|| cairn::mime_for_name(&name).map(String::from));
                let mut link = json!({"hash": blob.hash, "name": name, "size": size});
                if let Some(mime) = &mime {
                    link["mime"] = json!(mime);
                }
                let body = json!({"name": name, "mime": mime, "size": size, "file": link, "orphan": true, "source": format!("attachments/{rel}")});
                let Value::Object(body) = body else { continue };
                plan.records.push(LoadRecord {
                    collection: "attachments".into(),
                    id: format!("orphan-{}", &blob.hash.as_str()[..16]),
                    body,
                    source: format!("attachments/{rel}"),
                    index: None,
                });
                report.orphans.push(rel);
            }
            Err(e) => report.skipped.push(Skipped {
                source: format!("attachments/{rel}"),
                index: None,
                id: None,
                reason: format!("an attachment file no record links could not be read: {e}"),
            }),
        }
    }
    plan.settings = settings_plan(&input.settings, &mut report);

    if options.strict && !report.is_complete() {
        let reason = match report.skipped.first().or(report.left_out.first()) {
            Some(first) => format!(
                "{} problem(s) in a strict import, nothing was written; the first: {} {}{}: {}",
                report.skipped.len() + report.left_out.len(),
                first.source,
                first.index.map(|i| format!("#{i}")).unwrap_or_default(),
                first.id.as_deref().map(|id| format!(" ({id})")).unwrap_or_default(),
                first.reason
            ),
            None => format!(
                "{} record(s) only in the app's backup files, in a strict import; nothing was written (import them from the backups)",
                report.only_in_backups.len()
            ),
        };
        return Err(Error::invalid_input(path.display().to_string(), reason));
    }
    if !options.dry_run {
        report.backup = Some(
            store
                .backup(&BackupOptions { rotate: false, ..BackupOptions::because(BackupReason::PreImport) }, progress)?
                .id,
        );
    }
    let outcome = loader.run(&plan, options.dry_run, progress)?;
    report.attachments = outcome.blobs;
    report.existing = outcome.existing;
    report.imported = outcome.imported;
    report.settings = outcome.settings;
    report.skipped.extend(outcome.skipped);
    for s in &report.skipped {
        let collection = match COLLECTIONS.iter().find(|c| s.source.starts_with(*c)) {
            Some(c) => c,
            None if s.source.starts_with("attachments") => "attachments",
            None => "other",
        };
        *report.skipped_by_collection.entry(collection.to_string()).or_default() += 1;
    }
    Ok(report)
}

/// The settings files: `aiSettings`'s keys and tokens become secret settings (sealed, or
/// reported when the store cannot seal them), everything else JSON settings.
fn settings_plan(settings: &[(String, String, Value)], report: &mut LegacyReport) -> Vec<LoadSetting> {
    let json_def = |key: &str| SettingDef {
        key: key.to_string(),
        kind: SettingType::Json,
        default: Value::Null,
        description: "kept from a legacy Taskerino import".into(),
        min: None,
        max: None,
        choices: None,
    };
    let mut out = Vec::new();
    for (member, key, value) in settings {
        let mut value = value.clone();
        if let Value::Object(map) = &mut value {
            let secret_keys: Vec<String> = map.keys().filter(|k| is_secret_name(k)).cloned().collect();
            for name in secret_keys {
                let Some(secret) = map.remove(&name) else { continue };
                let secret_key = format!("{key}.{}", snake(&name));
                match secret {
                    Value::String(text) if !text.is_empty() => out.push(LoadSetting {
                        def: SettingDef { kind: SettingType::Secret, ..json_def(&secret_key) },
                        value: Value::String(text),
                        source: format!("{member}.{name}"),
                    }),
                    Value::Null => {}
                    Value::String(_) => {}
                    _ => report.skipped.push(Skipped {
                        source: format!("{member}.{name}"),
                        index: None,
                        id: Some(secret_key),
                        reason: "a secret that is not text was left out".into(),
                    }),
                }
            }
        }
        out.push(LoadSetting { def: json_def(key), value, source: member.clone() });
    }
    out
}

/// Names of settings that hold secrets (`apiKey`, `openaiToken`, `password`…).
fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase().replace(['_', '-'], "");
    ["apikey", "token", "secret", "password", "passwd"].iter().any(|s| lower.contains(s))
}

/// `camelCase` → `snake_case`.
fn snake(legacy: &str) -> String {
    let mut out = String::new();
    for ch in legacy.chars() {
        if ch.is_ascii_uppercase() {
            if !out.is_empty() {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// The schema field a legacy key maps to.
fn field_name(collection: &str, legacy: &str) -> String {
    match (collection, legacy) {
        ("sessions", "startTime") => "started_at".into(),
        ("sessions", "endTime") => "ended_at".into(),
        ("topics", "type") => "kind".into(),
        (_, "companyId") => "company".into(),
        (_, "topicId") => "topic".into(),
        (_, "sessionId") => "session".into(),
        (_, "noteId") => "note".into(),
        (_, "dueDate") => "due_date".into(),
        (_, "createdAt") => "created_at".into(),
        (_, "updatedAt") => "updated_at".into(),
        (_, "completedAt") => "completed_at".into(),
        _ => snake(legacy),
    }
}

/// A legacy time as cairn's: epoch milliseconds (a number, or digits in a string) become
/// RFC 3339; anything else is left for the schema to parse (ISO strings, dates).
fn legacy_time(value: &Value) -> Value {
    let millis = match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) if !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    };
    match millis {
        Some(ms) => Value::String(cairn::Timestamp(ms).to_string()),
        None => value.clone(),
    }
}

/// Maps one legacy record onto the schema: field names, times, relations (only to records
/// that exist), attachments (staged). `problems` gets what was left out of it; the error is
/// why the record cannot be imported at all.
#[allow(clippy::too_many_arguments)]
fn map_record(
    schema: &CollectionSchema,
    legacy: &Map<String, Value>,
    known: &BTreeMap<String, BTreeSet<String>>,
    attachments: &Attachments,
    loader: &mut Loader<'_>,
    used_files: &mut BTreeSet<String>,
    dropped: &mut BTreeMap<String, u64>,
    problems: &mut Vec<String>,
) -> std::result::Result<Map<String, Value>, String> {
    let collection = schema.name.as_str();
    let exists = |target: &str, id: &str| known.get(target).is_some_and(|s| s.contains(id));
    let mut body = Map::new();
    let mut links: Vec<Value> = Vec::new();
    for (key, value) in legacy {
        if key == "id" || value.is_null() {
            continue;
        }
        let field = field_name(collection, key);
        let Some(def) = schema.field(&field) else {
            *dropped.entry(format!("{collection}.{key}")).or_insert(0) += 1;
            continue;
        };
        match def.kind {
            FieldType::Relation => {
                let target = def.collection.as_deref().unwrap_or_default();
                match value.as_str() {
                    Some(to) if exists(target, to) => {
                        body.insert(field, value.clone());
                    }
                    _ => problems.push(format!(
                        "`{key}` refers to {target} {value}, which is nowhere; the reference was left out"
                    )),
                }
            }
            // An array of related ids (`topicIds`…): the ids that exist are kept.
            FieldType::Tags if field.ends_with("_ids") => {
                let target = match field.as_str() {
                    "topic_ids" => "topics",
                    "company_ids" => "companies",
                    _ => "contacts",
                };
                let Value::Array(items) = value else {
                    return Err(format!("`{key}` should be a list of ids, got {}", cairn::json::kind(value)));
                };
                let mut kept = Vec::new();
                for item in items {
                    match item.as_str() {
                        Some(to) if exists(target, to) => kept.push(Value::String(to.to_string())),
                        _ => problems
                            .push(format!("`{key}` lists {target} {item}, which is nowhere; that id was left out")),
                    }
                }
                body.insert(field, Value::Array(kept));
            }
            FieldType::Attachments => links.extend(value.as_array().into_iter().flatten().cloned()),
            FieldType::Datetime => {
                body.insert(field, legacy_time(value));
            }
            _ => {
                body.insert(field, value.clone());
            }
        }
    }
    // The time a record was made fills the required time a schema names otherwise.
    for required in ["timestamp", "started_at"] {
        if schema.field(required).is_some() && !body.contains_key(required) {
            if let Some(created) = body.get("created_at").cloned() {
                body.insert(required.into(), created);
            }
        }
    }
    // A session's screenshots and audio segments point at attachments too.
    for list in ["screenshots", "audio_segments"] {
        for item in body.get(list).and_then(Value::as_array).into_iter().flatten() {
            if let Some(att) = item.get("attachmentId") {
                links.push(json!({"id": att, "hash": item.get("hash")}));
            }
        }
    }
    let mut resolved: Vec<Value> = Vec::new();
    for link in links {
        match attachments.resolve(&link, loader, used_files) {
            Ok(Some(attachment)) => {
                if !resolved.iter().any(|a| a["hash"] == attachment["hash"]) {
                    resolved.push(attachment);
                }
            }
            Ok(None) => problems.push(format!(
                "dangling attachment {}: no such file in the attachments directory; the link was left out",
                describe(&link)
            )),
            Err(e) => problems
                .push(format!("attachment {} could not be stored ({e}); the link was left out", describe(&link))),
        }
    }
    if !resolved.is_empty() {
        body.insert("attachments".into(), Value::Array(resolved));
    }
    // The schema's own check, so that a wrong type is named here with the legacy record.
    schema.normalize(Some("check"), Value::Object(body.clone())).map_err(|e| format!("wrong type: {e}"))?;
    Ok(body)
}

/// An attachment reference as the report names it (inline data left out).
fn describe(link: &Value) -> String {
    match link {
        Value::Object(map) => {
            let mut shown = map.clone();
            for big in ["data", "base64"] {
                if shown.contains_key(big) {
                    shown.insert(big.into(), json!("…"));
                }
            }
            Value::Object(shown).to_string()
        }
        other => other.to_string(),
    }
}

/// The attachments directory: content by hash or by id, metadata by id. Read as a foreign
/// folder (see `foreign`): a link or a pipe in it is never followed or read.
struct Attachments {
    folder: Option<Foreign>,
}

impl Attachments {
    fn new(dir: Option<&Path>) -> Self {
        Attachments { folder: dir.and_then(|d| Foreign::open(d).ok()) }
    }

    /// `rel` when it is a regular file of the folder.
    fn file(&self, rel: &str) -> Option<String> {
        let kind = self.folder.as_ref()?.kind(rel).ok()??;
        (kind == Kind::File).then(|| rel.to_string())
    }

    /// The content file of `hash`: `<hash>`, `<first two>/<hash>`, or `<hash>.<ext>`.
    fn by_hash(&self, hash: &str) -> Option<String> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let hash = hash.to_ascii_lowercase();
        self.file(&format!("{}/{hash}", &hash[..2])).or_else(|| self.file(&hash)).or_else(|| self.with_stem(&hash))
    }

    /// A regular file of the top folder named `<stem>.<ext>` (not a metadata file).
    fn with_stem(&self, stem: &str) -> Option<String> {
        let entries = self.folder.as_ref()?.list("").ok()?;
        entries.into_iter().filter(|(_, kind)| *kind == Kind::File).map(|(name, _)| name).find(|name| {
            let path = Path::new(name);
            path.file_stem().is_some_and(|s| s == stem) && path.extension().is_some_and(|e| e != "json")
        })
    }

    fn valid_id(id: &str) -> bool {
        !id.is_empty() && !id.contains(['/', '\\', '\0']) && !id.starts_with('.') && id.len() <= 200
    }

    /// An attachment by id: its metadata file `<id>.json` names the hash; or its content is a
    /// file named by the id (with or without an extension).
    fn by_id(&self, id: &str) -> Option<(String, Map<String, Value>)> {
        if !Self::valid_id(id) {
            return None;
        }
        let meta = self
            .file(&format!("{id}.json"))
            .and_then(|rel| self.folder.as_ref()?.read(&rel, MAX_SMALL_FILE).ok())
            .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok());
        if let Some(meta) = meta {
            if let Some(rel) = meta.get("hash").and_then(Value::as_str).and_then(|h| self.by_hash(h)) {
                return Some((rel, meta));
            }
        }
        let rel = self.file(id).or_else(|| self.with_stem(id))?;
        Some((rel, Map::new()))
    }

    /// Stages a file of the folder, streamed (attachments can be gigabytes).
    fn stage_file(&self, rel: &str, loader: &mut Loader<'_>) -> std::result::Result<StagedBlob, String> {
        let folder = self.folder.as_ref().ok_or("no attachments folder")?;
        let file = folder.file(rel).map_err(|e| e.to_string())?;
        loader.stage(file).map_err(|e| e.to_string())
    }

    /// Stages the attachment a link names and returns the link as cairn stores it; `None`
    /// when the link names nothing that exists.
    fn resolve(
        &self,
        link: &Value,
        loader: &mut Loader<'_>,
        used: &mut BTreeSet<String>,
    ) -> std::result::Result<Option<Value>, String> {
        let meta_of = |link: &Value| link.as_object().cloned().unwrap_or_default();
        // Inline content comes first: it is the attachment itself.
        let inline = link.get("data").or(link.get("base64")).and_then(Value::as_str).map(|data| {
            let data = data.split_once(";base64,").map_or(data, |(_, d)| d);
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data.trim())
                .map_err(|e| format!("its inline data is not base64: {e}"))
        });
        let (blob, meta, file) = match inline {
            Some(bytes) => (loader.stage(&bytes?[..]).map_err(|e| e.to_string())?, meta_of(link), None),
            None => {
                let by_hash = link.get("hash").and_then(Value::as_str).and_then(|h| self.by_hash(h));
                let found = match by_hash {
                    Some(rel) => Some((rel, meta_of(link))),
                    None => {
                        let id = match link {
                            Value::String(id) => Some(id.as_str()),
                            other => other.get("id").and_then(Value::as_str),
                        };
                        id.and_then(|id| self.by_id(id)).map(|(rel, mut meta)| {
                            for (k, v) in meta_of(link) {
                                meta.entry(k).or_insert(v);
                            }
                            (rel, meta)
                        })
                    }
                };
                let Some((rel, meta)) = found else { return Ok(None) };
                (self.stage_file(&rel, loader)?, meta, Some(rel))
            }
        };
        if let Some(named) = link.get("hash").and_then(Value::as_str).filter(|h| h.len() == 64) {
            if !named.eq_ignore_ascii_case(blob.hash.as_str()) {
                return Err(format!("its content's SHA-256 is {}, not the {named} it is named by", blob.hash));
            }
        }
        if let Some(file) = file {
            used.insert(file);
        }
        let mut attachment = Map::new();
        attachment.insert("hash".into(), json!(blob.hash));
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .map(|n| cairn::sanitize_name(n).unwrap_or_else(|_| "attachment".into()));
        if let Some(name) = name {
            attachment.insert("name".into(), json!(name));
        }
        if let Some(mime) = meta.get("mimeType").or(meta.get("mime")).and_then(Value::as_str) {
            attachment.insert("mime".into(), json!(mime));
        }
        attachment.insert("size".into(), json!(blob.size));
        Ok(Some(Value::Object(attachment)))
    }

    /// Every entry of the folder, two levels deep: its regular content files (metadata files
    /// left out), and the entries that are not regular files (never read; reported).
    fn content_files(&self) -> (Vec<String>, Vec<String>) {
        let Some(folder) = &self.folder else { return (Vec::new(), Vec::new()) };
        let (mut files, mut refused) = (Vec::new(), Vec::new());
        let mut stack = vec![(String::new(), 0)];
        while let Some((prefix, depth)) = stack.pop() {
            let Ok(entries) = folder.list(&prefix) else { continue };
            for (name, kind) in entries {
                let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
                match kind {
                    Kind::Dir if depth < 2 => stack.push((rel, depth + 1)),
                    Kind::File if !name.starts_with('.') && !self.is_metadata(&rel) => files.push(rel),
                    Kind::Link | Kind::Special => refused.push(rel),
                    _ => {}
                }
            }
        }
        files.sort();
        refused.sort();
        (files, refused)
    }

    /// A `.json` file that describes an attachment (its id, hash, type) rather than being one.
    fn is_metadata(&self, rel: &str) -> bool {
        rel.ends_with(".json")
            && self
                .folder
                .as_ref()
                .and_then(|f| f.read(rel, MAX_SMALL_FILE).ok())
                .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
                .is_some_and(|m| m.contains_key("hash") || m.contains_key("mimeType"))
    }
}

/// Text in UTF-8 (a BOM is dropped) or UTF-16 (by its BOM, or by the zero bytes that ASCII
/// characters leave in it).
fn decode_text(bytes: &[u8]) -> std::result::Result<String, String> {
    let utf16 = |bytes: &[u8], big: bool| -> std::result::Result<String, String> {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|p| if big { u16::from_be_bytes([p[0], p[1]]) } else { u16::from_le_bytes([p[0], p[1]]) })
            .collect();
        String::from_utf16(&units).map_err(|e| format!("not valid UTF-16: {e}"))
    };
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8(rest.to_vec()).map_err(|e| format!("not valid UTF-8: {e}")),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, false),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, true),
        [a, 0, ..] if *a != 0 => utf16(bytes, false),
        [0, b, ..] if *b != 0 => utf16(bytes, true),
        _ => String::from_utf8(bytes.to_vec()).map_err(|e| format!("not valid UTF-8 or UTF-16: {e}")),
    }
}

/// The raw text of each element of the JSON array that starts at byte `from` (its `[`),
/// found without parsing, so that one bad element does not hide the others, and the byte
/// after the array's `]`. An element is `Err` when the text ends inside it, or when a string
/// in it runs into a line break (JSON strings never hold one): the element ends there and the
/// next line starts afresh.
fn split_array_at(text: &str, from: usize) -> (Vec<std::result::Result<&str, String>>, usize) {
    let bytes = text.as_bytes();
    let (mut depth, mut in_string, mut escaped) = (0i64, false, false);
    let mut start = from + 1;
    let mut out = Vec::new();
    for i in from + 1..bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\n' => {
                    out.push(Err("a string in this record is not closed (broken record)".to_string()));
                    (in_string, escaped, depth, start) = (false, false, 0, i + 1);
                }
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' if depth == 0 => {
                let last = text[start..i].trim();
                if !last.is_empty() {
                    out.push(Ok(last));
                }
                return (out, i + 1);
            }
            b']' | b'}' if depth > 0 => depth -= 1,
            b',' if depth == 0 => {
                let element = text[start..i].trim();
                // The comma after a broken record that was already cut at its line break.
                if !(element.is_empty() && out.last().is_some_and(|e| e.is_err())) {
                    out.push(Ok(element));
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if !text[start..].trim().is_empty() {
        out.push(Err("the file ends inside this record (truncated)".to_string()));
    }
    (out, bytes.len())
}

/// The elements of a text that is a JSON array (see [`split_array_at`]).
fn split_list(text: &str) -> std::result::Result<Vec<std::result::Result<&str, String>>, String> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('[') {
        let got = trimmed.chars().next().map_or("nothing".to_string(), |c| format!("{c:?}"));
        return Err(format!("expected a list of records, found {got}"));
    }
    Ok(split_array_at(text, text.len() - trimmed.len()).0)
}

/// A top-level member of a JSON object: a list split into its elements, or any other value's
/// raw text.
enum Member<'a> {
    List(Vec<std::result::Result<&'a str, String>>),
    Raw(&'a str),
}

/// The members of a text that is a JSON object, each found without parsing the others: a
/// broken record inside one member's list stays inside it.
fn split_object(text: &str) -> std::result::Result<Vec<(String, Member<'_>)>, String> {
    let bytes = text.as_bytes();
    let mut i = text.len() - text.trim_start().len();
    if bytes.get(i) != Some(&b'{') {
        return Err("expected an object".into());
    }
    i += 1;
    let skip_space = |mut i: usize| {
        while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace() || *b == b',') {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    loop {
        i = skip_space(i);
        if bytes.get(i) != Some(&b'"') {
            return Ok(out);
        }
        // The key: a string without escapes or line breaks in any real export.
        let Some(len) = text[i + 1..].find(['"', '\n']) else { return Ok(out) };
        let key = text[i + 1..i + 1 + len].to_string();
        i += len + 2;
        i = skip_space(i);
        if bytes.get(i) != Some(&b':') {
            return Ok(out);
        }
        i = skip_space(i + 1);
        if bytes.get(i) == Some(&b'[') {
            let (elements, end) = split_array_at(text, i);
            out.push((key, Member::List(elements)));
            i = end;
            continue;
        }
        // Any other value: to the next comma or brace at its own level.
        let (mut depth, mut in_string, mut escaped) = (0i64, false, false);
        let value_start = i;
        while let Some(&b) = bytes.get(i) {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' if depth > 0 => depth -= 1,
                    b',' | b'}' if depth == 0 => break,
                    _ => {}
                }
            }
            i += 1;
        }
        out.push((key, Member::Raw(text[value_start..i].trim())));
    }
}

/// A file's records: each element of its list parsed on its own.
fn parse_list(bytes: &[u8]) -> std::result::Result<Vec<std::result::Result<Value, String>>, String> {
    let text = decode_text(bytes)?;
    Ok(split_list(&text)?.into_iter().map(parse_element).collect())
}

/// One element of a list, parsed on its own.
fn parse_element(raw: std::result::Result<&str, String>) -> std::result::Result<Value, String> {
    raw.and_then(|raw| {
        if raw.is_empty() {
            return Err("an empty element".into());
        }
        serde_json::from_str::<Value>(raw)
            .map_err(|e| format!("cannot be parsed (truncated, too deep or not JSON): {e}"))
    })
}

/// A list file's entries, or one entry saying why the file gave none.
fn list_entries(source: &str, bytes: std::result::Result<Vec<u8>, String>) -> (Vec<Entry>, bool) {
    match bytes.and_then(|b| parse_list(&b)) {
        Ok(items) => {
            let entries = items
                .into_iter()
                .enumerate()
                .map(|(i, value)| Entry { source: source.to_string(), index: Some(i), value })
                .collect();
            (entries, true)
        }
        Err(reason) => (
            vec![Entry { source: source.to_string(), index: None, value: Err(format!("cannot be read: {reason}")) }],
            false,
        ),
    }
}

/// Reads one per-entity record file (`.json` or `.json.gz`).
fn read_entity(dir: &Foreign, rel: &str) -> std::result::Result<Value, String> {
    let bytes = dir.read(rel, MAX_SMALL_FILE).map_err(|e| e.to_string())?;
    let bytes = if rel.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .take(MAX_SMALL_FILE + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("not gzip: {e}"))?;
        if out.len() as u64 > MAX_SMALL_FILE {
            return Err(format!("decompresses to more than {MAX_SMALL_FILE} bytes"));
        }
        out
    } else {
        bytes
    };
    let text = decode_text(&bytes)?;
    serde_json::from_str(&text).map_err(|e| format!("cannot be parsed (truncated, too deep or not JSON): {e}"))
}

fn read_input(path: &Path, problems: &mut Vec<Skipped>) -> Result<Input> {
    // The path the user gave may be reached through links; what is inside it may not.
    let meta = std::fs::metadata(path).map_err(|e| Error::io("read", path, e))?;
    if meta.is_dir() {
        return read_directory(path, problems);
    }
    read_export(path)
}

fn read_directory(path: &Path, problems: &mut Vec<Skipped>) -> Result<Input> {
    let dir = Foreign::open(path)?;
    let top = dir.list("")?;
    let kind_of = |name: &str| top.iter().find(|(n, _)| n == name).map(|(_, k)| *k);
    let attachments_dir = (kind_of("attachments") == Some(Kind::Dir)).then(|| path.join("attachments"));
    let mut input = Input { attachments_dir, ..Input::default() };
    let mut parsed_any = false;
    let (mut monolithic, mut per_entity) = (false, false);
    // A link or a pipe where a data file should be is reported, never followed or read.
    for (name, kind) in &top {
        let data = name.ends_with(".json") || COLLECTIONS.contains(&name.as_str());
        if data && matches!(kind, Kind::Link | Kind::Special) {
            problems.push(Skipped {
                source: name.clone(),
                index: None,
                id: None,
                reason: "not a regular file or folder (a link, pipe or device): not read".into(),
            });
        }
    }
    let names: Vec<String> = top.iter().filter(|(_, k)| *k == Kind::File).map(|(n, _)| n.clone()).collect();
    for collection in COLLECTIONS {
        let mut entries = Vec::new();
        let mut ids = BTreeSet::new();
        if kind_of(collection) == Some(Kind::Dir) {
            per_entity = true;
            let (records, ok) = read_folder(&dir, collection, &mut input.notices, problems);
            parsed_any |= ok;
            for entry in &records {
                if let Some(id) = entry.value.as_ref().ok().and_then(|v| v.get("id")).and_then(Value::as_str) {
                    ids.insert(id.to_string());
                }
            }
            entries.extend(records);
        }
        let source = format!("{collection}.json");
        if kind_of(&source) == Some(Kind::File) {
            monolithic = true;
            let (records, ok) = list_entries(&source, dir.read(&source, MAX_FILE_BYTES).map_err(|e| e.to_string()));
            parsed_any |= ok;
            let mut filled = 0;
            for entry in records {
                let id = entry.value.as_ref().ok().and_then(|v| v.get("id")).and_then(Value::as_str).map(String::from);
                if let Some(id) = &id {
                    if ids.contains(id) {
                        continue;
                    }
                }
                if per_entity && id.is_some() {
                    filled += 1;
                }
                entries.push(entry);
            }
            if filled > 0 {
                input.notices.push(format!("{filled} record(s) of {collection} only in {source}, beside the {collection}/ folder: imported from it"));
            }
        }
        // The app's own backups, newest first (the pre-migration one is the oldest).
        let mut backups: Vec<(i128, String)> = names
            .iter()
            .filter_map(|name| {
                let middle = name.strip_prefix(&format!("{collection}."))?.strip_suffix(".backup.json")?;
                let order = if middle == "pre-migration" { -1 } else { middle.parse::<i128>().ok()? };
                Some((order, name.clone()))
            })
            .collect();
        backups.sort_by_key(|b| std::cmp::Reverse(b.0));
        for (_, name) in backups {
            let (records, ok) = list_entries(&name, dir.read(&name, MAX_FILE_BYTES).map_err(|e| e.to_string()));
            parsed_any |= ok;
            input.backups.entry(collection.to_string()).or_default().push((name, records));
        }
        input.records.insert(collection.to_string(), entries);
    }
    for (member, key) in SETTINGS {
        let file = format!("{member}.json");
        if kind_of(&file) != Some(Kind::File) {
            continue;
        }
        let parsed = dir
            .read(&file, MAX_SMALL_FILE)
            .map_err(|e| e.to_string())
            .and_then(|b| decode_text(&b))
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()));
        match parsed {
            Ok(value) => {
                parsed_any = true;
                input.settings.push((member.to_string(), key.to_string(), value));
            }
            Err(e) => problems.push(Skipped {
                source: format!("{member}.json"),
                index: None,
                id: None,
                reason: format!("cannot be read (truncated or not JSON): {e}"),
            }),
        }
    }
    if !parsed_any {
        return Err(Error::invalid_input(
            path.display().to_string(),
            "no Taskerino collection file (sessions.json, notes/index.json, …) could be read; nothing was written",
        ));
    }
    input.format = match (monolithic, per_entity) {
        (true, true) => "mixed",
        (false, true) => "per-entity",
        _ => "directory",
    }
    .into();
    Ok(input)
}

/// A per-entity folder: `index.json` and one file per record. Records whose file is missing
/// are reported; files the index does not list are imported (and noticed).
fn read_folder(
    dir: &Foreign,
    collection: &str,
    notices: &mut Vec<String>,
    problems: &mut Vec<Skipped>,
) -> (Vec<Entry>, bool) {
    let listing = dir.list(collection).unwrap_or_default();
    let has_index = listing.iter().any(|(n, k)| n == "index.json" && *k == Kind::File);
    let index = has_index.then(|| dir.read(&format!("{collection}/index.json"), MAX_FILE_BYTES));
    let listed: Option<Vec<String>> = match index.unwrap_or_else(|| Err(Error::NotAllowed("no index".into()))) {
        Ok(bytes) => match parse_list(&bytes) {
            Ok(items) => Some(
                items
                    .into_iter()
                    .filter_map(|v| v.ok()?.get("id").and_then(|id| id.as_str().map(String::from)))
                    .collect(),
            ),
            Err(reason) => {
                problems.push(Skipped {
                    source: format!("{collection}/index.json"),
                    index: None,
                    id: None,
                    reason: format!("cannot be read ({reason}); the record files were read without it"),
                });
                None
            }
        },
        Err(_) => None,
    };
    let files: Vec<(String, Kind)> = listing
        .into_iter()
        .filter(|(name, _)| name != "index.json" && (name.ends_with(".json") || name.ends_with(".json.gz")))
        .collect();
    let mut entries = Vec::new();
    let mut found = BTreeSet::new();
    for (name, kind) in files {
        let source = format!("{collection}/{name}");
        let value = match kind {
            Kind::File => read_entity(dir, &source),
            _ => Err("not a regular file (a link, pipe or device): not read".to_string()),
        };
        if let Some(id) = value.as_ref().ok().and_then(|v| v.get("id")).and_then(Value::as_str) {
            found.insert(id.to_string());
        }
        entries.push(Entry { source, index: None, value });
    }
    if let Some(listed) = &listed {
        let unlisted: Vec<&String> = found.iter().filter(|id| !listed.contains(id)).collect();
        if !unlisted.is_empty() {
            notices.push(format!(
                "{} record file(s) in {collection}/ that index.json does not list: imported",
                unlisted.len()
            ));
        }
        for id in listed.iter().filter(|id| !found.contains(*id)) {
            problems.push(Skipped {
                source: format!("{collection}/index.json"),
                index: None,
                id: Some(id.clone()),
                reason: "listed in index.json but its record file is missing".into(),
            });
        }
    }
    let ok = !entries.is_empty() || listed.is_some();
    (entries, ok)
}

fn read_export(path: &Path) -> Result<Input> {
    let name = path.display().to_string();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let bytes = Foreign::open(&parent)?.read(&file_name, MAX_FILE_BYTES)?;
    let text = decode_text(&bytes).map_err(|e| Error::invalid_input(&name, e))?;
    let members = split_object(&text)
        .map_err(|e| Error::invalid_input(&name, format!("not a Taskerino export: {e}; nothing was written")))?;
    let mut raw: BTreeMap<String, &str> = BTreeMap::new();
    let mut lists: BTreeMap<String, Vec<std::result::Result<&str, String>>> = BTreeMap::new();
    for (key, member) in members {
        match member {
            Member::List(elements) => {
                lists.insert(key, elements);
            }
            Member::Raw(text) => {
                raw.insert(key, text);
            }
        }
    }
    let text_field = |key: &str| raw.get(key).and_then(|t| serde_json::from_str::<String>(t).ok());
    match text_field("version").as_deref() {
        Some("1.0.0") => {}
        Some(other) => return Err(Error::invalid_input(&name, format!("export version {other:?} is not 1.0.0"))),
        None => return Err(Error::invalid_input(&name, "not a Taskerino export: no `version`; nothing was written")),
    }
    if text_field("exportedAt").is_none() {
        return Err(Error::invalid_input(&name, "not a Taskerino export: no `exportedAt`; nothing was written"));
    }
    let mut input = Input {
        format: "export 1.0.0".into(),
        attachments_dir: path.parent().map(|p| p.join("attachments")).filter(|p| p.is_dir()),
        ..Input::default()
    };
    for collection in COLLECTIONS {
        if let Some(elements) = lists.remove(collection) {
            let entries = elements
                .into_iter()
                .enumerate()
                .map(|(i, raw)| Entry { source: collection.to_string(), index: Some(i), value: parse_element(raw) })
                .collect();
            input.records.insert(collection.to_string(), entries);
        }
    }
    for (member, key) in SETTINGS {
        if let Some(value) = raw.get(member).and_then(|t| serde_json::from_str(t).ok()) {
            input.settings.push((member.to_string(), key.to_string(), value));
        }
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_into_records_that_parse_alone() {
        let items = parse_list(br#"[{"id": "a"}, {"id": "b", "x": [1, 2, {"y": "]"}]}, {"id": "c", "x": tru}, 7]"#)
            .expect("list");
        assert_eq!(items.len(), 4);
        assert!(items[0].is_ok() && items[1].is_ok() && items[2].is_err() && items[3].is_ok());
        let truncated = parse_list(br#"[{"id": "a"}, {"id": "b", "n"#).expect("list");
        assert_eq!(truncated.len(), 2);
        assert!(truncated[1].as_ref().is_err_and(|e| e.contains("truncated")));
        let deep = format!("[{{\"id\": \"ok\"}}, {}{}]", "[".repeat(10_000), "]".repeat(10_000));
        let items = parse_list(deep.as_bytes()).expect("list");
        assert!(items[0].is_ok() && items[1].is_err(), "the deep record fails alone");
        assert!(parse_list(b"{\"not\": \"a list\"}").is_err());
        assert_eq!(parse_list(b"[]").expect("empty").len(), 0);
    }

    #[test]
    fn text_is_read_in_utf8_with_or_without_bom_and_utf16() {
        let text = "[{\"name\": \"Zoë\"}]";
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice(text.as_bytes());
        let le: Vec<u8> = [0xFF, 0xFE].into_iter().chain(text.encode_utf16().flat_map(u16::to_le_bytes)).collect();
        let be: Vec<u8> = [0xFE, 0xFF].into_iter().chain(text.encode_utf16().flat_map(u16::to_be_bytes)).collect();
        let bare_le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        for bytes in [text.as_bytes().to_vec(), bom, le, be, bare_le] {
            assert_eq!(decode_text(&bytes).expect("decodes"), text);
        }
    }

    #[test]
    fn legacy_times_and_names() {
        assert_eq!(legacy_time(&json!(1_729_414_800_000_i64)), json!("2024-10-20T09:00:00.000Z"));
        assert_eq!(legacy_time(&json!("1729414800000")), json!("2024-10-20T09:00:00.000Z"));
        assert_eq!(legacy_time(&json!("2025-10-21")), json!("2025-10-21"));
        assert_eq!(field_name("notes", "createdAt"), "created_at");
        assert_eq!(field_name("sessions", "topicIds"), "topic_ids");
        assert!(is_secret_name("apiKey") && is_secret_name("openai_api_key") && !is_secret_name("model"));
    }
}
