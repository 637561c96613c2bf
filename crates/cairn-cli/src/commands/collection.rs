use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;
use cairn::{CollectionInfo, DropOptions};
use clap::Subcommand;

use super::Context;
use crate::input::schema_file;
use crate::output::table;

#[derive(Debug, Subcommand)]
pub enum CollectionCommand {
    /// Create a collection from a schema file (.json or .toml; `-` reads JSON from stdin).
    Create {
        /// Schema file (.toml or .json; `-` reads JSON from standard input).
        schema: PathBuf,
    },
    /// List collections with their record counts.
    List,
    /// Show a collection's schema and counts.
    Show {
        /// The collection's name.
        name: String,
    },
    /// Replace a collection's schema (refused if stored records would not fit it).
    Update {
        /// Schema file (.toml or .json; `-` reads JSON from standard input).
        schema: PathBuf,
    },
    /// Drop a collection; its schema and records are first exported into quarantine/.
    Drop {
        /// The collection's name.
        name: String,
        /// The collection's name again, to confirm (asked for interactively when omitted).
        #[arg(long, value_name = "NAME")]
        confirm: Option<String>,
    },
}

pub fn run(ctx: &Context, cmd: CollectionCommand) -> Result<()> {
    match cmd {
        CollectionCommand::Create { schema } => {
            let store = ctx.open_write()?;
            let info = store.create_collection(schema_file(&schema)?)?;
            ctx.out.show(&info, || {
                println!("created collection `{}` with {} fields", info.schema.name, info.schema.fields.len())
            });
        }
        CollectionCommand::Update { schema } => {
            let store = ctx.open_write()?;
            let info = store.update_collection(schema_file(&schema)?)?;
            ctx.out.show(&info, || {
                println!("updated collection `{}` (schema version {})", info.schema.name, info.schema_version)
            });
        }
        CollectionCommand::List => {
            let list = ctx.open_read()?.collections()?;
            ctx.out.show(&list, || {
                let rows = list
                    .iter()
                    .map(|c| {
                        vec![
                            c.schema.name.clone(),
                            c.schema.fields.len().to_string(),
                            c.live_records.to_string(),
                            c.deleted_records.to_string(),
                            c.updated_at.to_string(),
                        ]
                    })
                    .collect();
                println!("{}", table(&["collection", "fields", "records", "deleted", "schema updated"], rows));
            });
        }
        CollectionCommand::Show { name } => {
            let info = ctx.open_read()?.collection(&name)?;
            ctx.out.show(&info, || print_collection(&info));
        }
        CollectionCommand::Drop { name, confirm } => {
            let store = ctx.open_write()?;
            let info = store.collection(&name)?;
            let confirm = match confirm {
                Some(c) => c,
                None if std::io::stdin().is_terminal() => ask(&info)?,
                None => String::new(),
            };
            let report = store.drop_collection(&name, &DropOptions::confirm(&confirm))?;
            ctx.out.show(&report, || {
                println!(
                    "dropped collection `{}`; its schema and {} records are in {}",
                    report.collection,
                    report.records,
                    report.quarantine_dir.display()
                )
            });
        }
    }
    Ok(())
}

fn ask(info: &CollectionInfo) -> Result<String> {
    eprint!(
        "Drop `{}` ({} records, {} deleted)? They will be moved to quarantine/. Type the name to confirm: ",
        info.schema.name, info.live_records, info.deleted_records
    );
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

fn print_collection(info: &CollectionInfo) {
    println!("collection {}  (schema version {})", info.schema.name, info.schema_version);
    if !info.schema.description.is_empty() {
        println!("{}", info.schema.description);
    }
    println!(
        "{} records, {} deleted; created {}, schema updated {}",
        info.live_records, info.deleted_records, info.created_at, info.updated_at
    );
    let rows = info
        .schema
        .fields
        .iter()
        .map(|f| {
            let mut kind = f.kind.as_str().to_string();
            if let Some(target) = &f.collection {
                kind = format!("{kind} → {target}");
            }
            let flags: Vec<&str> = [
                (f.required, "required"),
                (f.unique, "unique"),
                (f.indexed, "indexed"),
                (f.fulltext, "fulltext"),
                (f.encrypted, "encrypted"),
                (f.pii, "pii"),
                (f.summary, "summary"),
            ]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
            let default = f.default.as_ref().map(|d| d.to_string()).unwrap_or_default();
            vec![f.name.clone(), kind, flags.join(" "), default]
        })
        .collect();
    println!("{}", table(&["field", "type", "flags", "default"], rows));
}
