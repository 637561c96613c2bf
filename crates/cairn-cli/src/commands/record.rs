use std::path::PathBuf;

use anyhow::Result;
use cairn::{Change, Record, ScanOptions};
use clap::{Args, Subcommand};

use super::Context;
use crate::input::{json_arg, read_text};
use crate::output::{clip, table};

#[derive(Debug, Subcommand)]
pub enum RecordCommand {
    /// Create a record, or replace it when ID exists. Without ID, an id is generated.
    Put {
        /// The collection.
        collection: String,
        /// Record id (generated UUIDv7 when omitted).
        id: Option<String>,
        /// The body as JSON; `-` reads stdin.
        #[arg(long, short = 'b', value_name = "JSON")]
        body: Option<String>,
        /// Read the body from a file.
        #[arg(long, short = 'f', value_name = "PATH", conflicts_with = "body")]
        file: Option<PathBuf>,
        #[command(flatten)]
        expect: Expect,
    },
    /// Print a record.
    Get {
        /// The collection.
        collection: String,
        /// The record's id.
        id: String,
        /// Show it even if it is soft-deleted.
        #[arg(long)]
        deleted: bool,
    },
    /// List records in id order, one page at a time.
    List {
        /// The collection.
        collection: String,
        /// Start after this id.
        #[arg(long)]
        after: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Include soft-deleted records.
        #[arg(long)]
        deleted: bool,
    },
    /// Apply a JSON Merge Patch (RFC 7396) to a record.
    Patch {
        /// The collection.
        collection: String,
        /// The record's id.
        id: String,
        /// The patch as JSON; `-` reads stdin.
        patch: Option<String>,
        /// Read it from this file instead.
        #[arg(long, short = 'f', value_name = "PATH", conflicts_with = "patch")]
        file: Option<PathBuf>,
        #[command(flatten)]
        expect: Expect,
    },
    /// Soft-delete a record (revert or undo bring it back).
    Delete {
        /// The collection.
        collection: String,
        /// The record's id.
        id: String,
        #[command(flatten)]
        expect: Expect,
    },
    /// Remove a soft-deleted record for good (its history stays).
    Purge {
        /// The collection.
        collection: String,
        /// The record's id.
        id: String,
    },
    /// Show every change of a record.
    History {
        /// The collection.
        collection: String,
        /// The record's id.
        id: String,
    },
    /// Bring a record back to an earlier version (a new change).
    Revert {
        /// The collection.
        collection: String,
        /// The record's id.
        id: String,
        /// The version to bring back.
        version: u64,
        #[command(flatten)]
        expect: Expect,
    },
    /// Undo a record's latest change.
    Undo {
        /// The collection.
        collection: String,
        /// The record's id.
        id: String,
    },
    /// Redo a record's latest undo.
    Redo {
        /// The collection.
        collection: String,
        /// The record's id.
        id: String,
    },
    /// Apply a JSON array of operations atomically: all or nothing.
    Batch {
        /// File with `[{"op": "create", "collection": …, "body": …}, …]`; `-` reads stdin.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct Expect {
    /// Fail with exit code 3 unless the record is at this version.
    #[arg(long, value_name = "VERSION")]
    expect: Option<u64>,
}

pub fn run(ctx: &Context, cmd: RecordCommand) -> Result<()> {
    match cmd {
        RecordCommand::Put { collection, id, body, file, expect } => {
            let body = json_arg(body.as_deref(), file.as_deref(), "body")?;
            let store = ctx.open_write()?;
            let record = match id {
                Some(id) => store.put(&collection, &id, body, expect.expect)?,
                None => store.create(&collection, body)?,
            };
            print_written(ctx, "stored", &record);
        }
        RecordCommand::Get { collection, id, deleted } => {
            let store = ctx.open_read()?;
            let record =
                if deleted { store.get_including_deleted(&collection, &id)? } else { store.get(&collection, &id)? };
            ctx.out.show(&record, || print_record(&record));
        }
        RecordCommand::List { collection, after, limit, deleted } => {
            let options = ScanOptions { include_deleted: deleted, ..ScanOptions::page(after, limit) };
            let records = ctx.open_read()?.scan(&collection, &options)?;
            ctx.out.show(&records, || {
                let rows = records
                    .iter()
                    .map(|r| {
                        let state = if r.deleted_at.is_some() { " (deleted)" } else { "" };
                        vec![
                            format!("{}{state}", r.id),
                            r.version.to_string(),
                            r.updated_at.to_string(),
                            clip(&serde_json::Value::Object(r.body.clone()).to_string(), 70),
                        ]
                    })
                    .collect();
                println!("{}", table(&["id", "version", "updated", "body"], rows));
                let mut sealed: Vec<String> = records.iter().flat_map(|r| r.sealed.clone()).collect();
                sealed.sort();
                sealed.dedup();
                super::note_sealed(&sealed);
                if let Some(last) = records.last().filter(|_| records.len() == limit) {
                    println!("more: cairn list {collection} --after {}", last.id);
                }
            });
        }
        RecordCommand::Patch { collection, id, patch, file, expect } => {
            let patch = json_arg(patch.as_deref(), file.as_deref(), "patch")?;
            let record = ctx.open_write()?.patch(&collection, &id, patch, expect.expect)?;
            print_written(ctx, "patched", &record);
        }
        RecordCommand::Delete { collection, id, expect } => {
            let record = ctx.open_write()?.delete(&collection, &id, expect.expect)?;
            print_written(ctx, "deleted", &record);
        }
        RecordCommand::Purge { collection, id } => {
            let version = ctx.open_write()?.purge(&collection, &id)?;
            let report = serde_json::json!({"collection": collection, "id": id, "purged_as_version": version});
            ctx.out.show(&report, || {
                println!("purged {collection}/{id} (history kept; `cairn history {collection} {id}`)")
            });
        }
        RecordCommand::History { collection, id } => {
            let history = ctx.open_read()?.history(&collection, &id)?;
            ctx.out.show(&history, || print_changes(&history, false));
        }
        RecordCommand::Revert { collection, id, version, expect } => {
            let record = ctx.open_write()?.revert(&collection, &id, version, expect.expect)?;
            print_written(ctx, &format!("reverted to version {version} as"), &record);
        }
        RecordCommand::Undo { collection, id } => {
            let record = ctx.open_write()?.undo(&collection, &id)?;
            print_written(ctx, "undone, now", &record);
        }
        RecordCommand::Redo { collection, id } => {
            let record = ctx.open_write()?.redo(&collection, &id)?;
            print_written(ctx, "redone, now", &record);
        }
        RecordCommand::Batch { file } => {
            let ops = cairn::parse_batch(&read_text(&file)?, &file.display().to_string())?;
            let results = ctx.open_write()?.batch(ops)?;
            ctx.out.show(&results, || {
                println!("committed {} operations atomically", results.len());
                for r in &results {
                    println!("  {}: {}/{} version {}", r.index, r.record.collection, r.record.id, r.record.version);
                }
            });
        }
    }
    Ok(())
}

fn print_written(ctx: &Context, what: &str, record: &Record) {
    ctx.out.show(record, || {
        let state = if record.deleted_at.is_some() { " (deleted)" } else { "" };
        println!("{what} {}/{} version {}{state}", record.collection, record.id, record.version)
    });
}

fn print_record(record: &Record) {
    let state = record.deleted_at.map(|t| format!("  deleted {t}")).unwrap_or_default();
    println!(
        "{}/{}  version {}  created {}  updated {}{state}\nsha256 {}",
        record.collection, record.id, record.version, record.created_at, record.updated_at, record.sha256
    );
    println!("{}", serde_json::to_string_pretty(&record.body).unwrap_or_default());
    super::note_sealed(&record.sealed);
}

/// Prints changes as a table; `with_target` adds the collection/id column.
pub fn print_changes(changes: &[Change], with_target: bool) {
    let rows = changes
        .iter()
        .map(|c| {
            let mut row = vec![c.seq.to_string()];
            if with_target {
                row.push(if c.id.is_empty() {
                    c.collection.clone()
                } else if c.collection.is_empty() {
                    c.id.clone()
                } else {
                    format!("{}/{}", c.collection, c.id)
                });
            }
            row.extend([
                c.op.as_str().to_string(),
                c.version.to_string(),
                c.actor.clone(),
                c.at.to_string(),
                clip(&what_changed(c), 60),
            ]);
            row
        })
        .collect();
    let mut header = vec!["seq"];
    if with_target {
        header.push("target");
    }
    header.extend(["op", "version", "actor", "at", "change"]);
    println!("{}", table(&header, rows));
}

/// A one-line summary of a change: the fields whose values differ between before and after.
fn what_changed(c: &Change) -> String {
    use serde_json::Value;
    match (&c.before, &c.after) {
        (_, None) => "(gone)".to_string(),
        (None, Some(after)) => format!("new: {}", clip(&after.to_string(), 50)),
        (Some(Value::Object(before)), Some(Value::Object(after))) => {
            let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
            keys.sort();
            keys.dedup();
            let changed: Vec<String> = keys
                .into_iter()
                .filter(|k| before.get(*k) != after.get(*k))
                .map(|k| match after.get(k) {
                    Some(v) => format!("{k}={}", clip(&v.to_string(), 24)),
                    None => format!("-{k}"),
                })
                .collect();
            let mut text = changed.join(" ");
            if c.deleted {
                text = format!("(deleted) {text}");
            }
            text
        }
        (Some(_), Some(after)) => clip(&after.to_string(), 50),
    }
}
