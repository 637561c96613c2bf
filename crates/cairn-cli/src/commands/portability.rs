//! `cairn export` and `cairn import`: a full export of the store, and importing one.

use std::path::PathBuf;

use anyhow::Result;
use cairn::{ExportOptions, ImportOptions, OnConflict, Redaction, ReportFormat, ReportOptions};
use clap::{Args, ValueEnum};

use super::{phase_bar, Context};
use crate::output::table;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A report of this collection (with --format) instead of a full export.
    #[arg(requires = "format")]
    collection: Option<String>,
    /// Full export: the folder to write (must not exist): manifest.json, schemas.json,
    /// settings.json, collections/*.jsonl and, with --blobs, blobs/. Report: the file.
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Report format (needs COLLECTION): csv, xlsx; or a transcript of one record's timed
    /// segments (needs --record): txt, srt, vtt, json, md.
    #[arg(long, value_enum, requires = "collection")]
    format: Option<Format>,
    /// Transcript: the record whose segments to write (`--out -` writes to stdout).
    #[arg(long, value_name = "ID", requires = "collection")]
    record: Option<String>,
    /// Transcript: the field that holds the segments (`[{start, end, text, speaker?}]`).
    #[arg(long, default_value = "segments", requires = "record")]
    field: String,
    /// Report: only records matching this filter.
    #[arg(long, requires = "collection")]
    filter: Option<String>,
    /// Report: these columns (comma-separated; `id` or field names).
    #[arg(long, value_delimiter = ',', requires = "collection")]
    columns: Option<Vec<String>>,
    /// Report: one row per value of this field, with a count.
    #[arg(long, requires = "collection")]
    group_by: Option<String>,
    /// Report: with --group-by, add up this number field per group.
    #[arg(long, requires = "group_by")]
    sum: Option<String>,
    /// Also export the attachments records link to.
    #[arg(long)]
    blobs: bool,
    /// Redact fields flagged `pii` (and those of --redact-field): mask, hash or drop them. A
    /// redacted export says so in its manifest and cannot be imported.
    #[arg(long, value_enum)]
    redact: Option<Redact>,
    /// Another field to redact, as collection.field (repeatable; needs --redact).
    #[arg(long = "redact-field", value_name = "COLLECTION.FIELD", requires = "redact")]
    redact_fields: Vec<String>,
    /// Also carry secret settings, sealed as stored (never with --redact).
    #[arg(long, conflicts_with = "redact")]
    secrets: bool,
    /// Report: replace the output file if it exists (otherwise it is refused).
    #[arg(long, requires = "collection")]
    force: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Xlsx,
    Txt,
    Srt,
    Vtt,
    Json,
    Md,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Redact {
    Mask,
    Hash,
    Drop,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A folder written by `cairn export`.
    path: PathBuf,
    /// Validate everything and report counts and conflicts; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// What to do with records that exist with other content.
    #[arg(long, value_enum, default_value_t = Conflict::Fail)]
    on_conflict: Conflict,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Conflict {
    Fail,
    Skip,
    Overwrite,
}

pub fn run_export(ctx: &Context, args: ExportArgs) -> Result<()> {
    let store = ctx.open_write_or_read()?;
    if let (Some(collection), Some(format)) = (&args.collection, args.format) {
        let report = match format {
            Format::Csv => Some(ReportFormat::Csv),
            Format::Xlsx => Some(ReportFormat::Xlsx),
            _ => None,
        };
        let Some(report) = report else {
            let Some(id) = &args.record else {
                return Err(crate::UsageError("a transcript format needs --record ID".into()).into());
            };
            let format = cairn::TranscriptFormat::parse(&format!("{format:?}"))?;
            let text = store.transcript(collection, id, &args.field, format)?;
            if args.out.as_os_str() == "-" {
                print!("{text}");
            } else {
                if args.out.exists() && !args.force {
                    let shown = args.out.display();
                    return Err(crate::UsageError(format!("{shown} exists; give --force to replace it")).into());
                }
                std::fs::write(&args.out, &text).map_err(|e| cairn::Error::io("write", &args.out, e))?;
                eprintln!("{collection}/{id} written to {} as {}", args.out.display(), format.extension());
            }
            return Ok(());
        };
        if args.record.is_some() {
            return Err(
                crate::UsageError("--record goes with a transcript format (txt, srt, vtt, json, md)".into()).into()
            );
        }
        let options = ReportOptions {
            format: report,
            filter: args.filter,
            columns: args.columns,
            group_by: args.group_by,
            sum: args.sum,
            overwrite: args.force,
        };
        let summary = store.report(collection, &options, &args.out)?;
        ctx.out.show(&summary, || {
            println!("{} row(s) of {} written to {}", summary.rows, summary.columns.join(", "), args.out.display());
        });
        return Ok(());
    }
    let bar = phase_bar(ctx);
    let redact = args.redact.map(|r| match r {
        Redact::Mask => Redaction::Mask,
        Redact::Hash => Redaction::Hash,
        Redact::Drop => Redaction::Drop,
    });
    let options = ExportOptions { blobs: args.blobs, redact, redact_fields: args.redact_fields, secrets: args.secrets };
    let manifest = store.export(&args.out, &options, &mut |p, d, t| bar.update(p, d, t));
    bar.finish();
    let manifest = manifest?;
    ctx.out.show(&manifest, || {
        for c in &manifest.collections {
            println!("{:<24} {:>9} records ({} deleted)", c.name, c.records, c.deleted);
        }
        println!("{} attachment(s); written to {}", manifest.blobs.len(), args.out.display());
        if let Some(redacted) = &manifest.redacted {
            println!("redacted: {redacted}");
        }
    });
    Ok(())
}

pub fn run_import(ctx: &Context, args: ImportArgs) -> Result<()> {
    let store = ctx.open_create()?;
    let on_conflict = match args.on_conflict {
        Conflict::Fail => OnConflict::Fail,
        Conflict::Skip => OnConflict::Skip,
        Conflict::Overwrite => OnConflict::Overwrite,
    };
    let options = ImportOptions { dry_run: args.dry_run, on_conflict, ..ImportOptions::default() };
    let bar = phase_bar(ctx);
    let report = store.import(&args.path, &options, &mut |p, d, t| bar.update(p, d, t));
    bar.finish();
    let report = report?;
    ctx.out.show(&report, || {
        let rows = report
            .collections
            .iter()
            .map(|c| {
                vec![
                    format!("{}{}", c.collection, if c.created_collection { " (new)" } else { "" }),
                    c.records.to_string(),
                    c.created.to_string(),
                    c.overwritten.to_string(),
                    c.skipped.to_string(),
                    c.unchanged.to_string(),
                ]
            })
            .collect();
        println!("{}", table(&["collection", "in export", "created", "overwritten", "skipped", "unchanged"], rows));
        if report.conflict_count > 0 {
            println!("{} conflict(s): {}", report.conflict_count, report.conflicts.join(", "));
        }
        println!("{} attachment(s), {} new; {} setting(s)", report.blobs, report.blobs_added, report.settings);
        if report.dry_run {
            println!("dry run: nothing was written");
        } else if let Some(id) = &report.backup {
            println!("backup taken first: {id}");
        }
    });
    Ok(())
}

#[derive(Debug, Args)]
pub struct LegacyArgs {
    /// The application whose files these are.
    #[arg(value_enum)]
    app: LegacyApp,
    /// Its data directory (sessions.json, notes.json, …) or its single-file 1.0.0 export.
    path: PathBuf,
    /// Refuse the whole import on any problem instead of skipping and reporting.
    #[arg(long)]
    strict: bool,
    /// Where the attachment files are (default: attachments/ beside the input).
    #[arg(long, value_name = "DIR")]
    attachments: Option<PathBuf>,
    /// Report what would be imported and skipped; write nothing (the counts are the real
    /// run's).
    #[arg(long)]
    dry_run: bool,
    /// Also import the records only the app's backup files (*.backup.json) hold.
    #[arg(long)]
    from_backups: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LegacyApp {
    Taskerino,
}

pub fn run_legacy(ctx: &Context, args: LegacyArgs) -> Result<()> {
    let LegacyApp::Taskerino = args.app;
    let store = ctx.open_create()?;
    let options = cairn_taskerino::LegacyOptions {
        strict: args.strict,
        attachments: args.attachments,
        dry_run: args.dry_run,
        from_backups: args.from_backups,
    };
    let bar = phase_bar(ctx);
    let report = cairn_taskerino::import(&store, &args.path, &options, &mut |p, d, t| bar.update(p, d, t));
    bar.finish();
    let report = report?;
    ctx.out.show(&report, || print_legacy(&args.path, &report));
    if !report.is_complete() {
        let skipped = report.skipped.len() + report.left_out.len();
        let only = report.only_in_backups.iter().filter(|b| !b.imported).count();
        return Err(crate::Incomplete(format!(
            "the import finished, but {skipped} thing(s) were skipped or left out and {only} record(s) only in backups were not imported (see above)"
        ))
        .into());
    }
    Ok(())
}

fn print_legacy(path: &std::path::Path, report: &cairn_taskerino::LegacyReport) {
    println!("{} ({})", path.display(), report.format);
    let mut names: Vec<&String> = report.imported.keys().chain(report.skipped_by_collection.keys()).collect();
    names.sort();
    names.dedup();
    let rows = names
        .into_iter()
        .map(|c| {
            let imported = report.imported.get(c).copied().unwrap_or(0);
            let skipped = report.skipped_by_collection.get(c).copied().unwrap_or(0);
            vec![c.clone(), imported.to_string(), skipped.to_string()]
        })
        .collect();
    println!("{}", table(&["collection", "imported", "skipped"], rows));
    if report.existing > 0 {
        println!("{} record(s) already in the store were left as they are", report.existing);
    }
    println!("{} attachment(s); {} orphan file(s) kept in `attachments`", report.attachments, report.orphans.len());
    println!("settings: {}", if report.settings.is_empty() { "none".into() } else { report.settings.join(", ") });
    for notice in &report.notices {
        println!("note: {notice}");
    }
    for (field, n) in &report.dropped_fields {
        println!("dropped field {field} ({n} record(s))");
    }
    for b in &report.only_in_backups {
        let what = if b.imported { "imported from" } else { "ONLY IN BACKUP (not imported; use --from-backups)" };
        println!("{} {}/{}: {what} {}", if b.imported { "restored" } else { "missing" }, b.collection, b.id, b.backup);
    }
    for (label, list) in [("skipped", &report.skipped), ("left out of", &report.left_out)] {
        for s in list {
            let at = s.index.map(|i| format!(" #{i}")).unwrap_or_default();
            let id = s.id.as_deref().map(|id| format!(" ({id})")).unwrap_or_default();
            println!("{label} {}{at}{id}: {}", s.source, s.reason);
        }
    }
    if report.dry_run {
        println!("dry run: nothing was written");
    } else if let Some(id) = &report.backup {
        println!("backup taken first: {id}");
    }
}
