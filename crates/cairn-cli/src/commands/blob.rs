//! `cairn attach`, `cairn blob …` and `cairn compact`: attachments, the blob store and
//! record compression.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use cairn::{BlobInfo, Upload};
use clap::{Args, Subcommand};

use super::Context;
use crate::output::table;
use crate::UsageError;

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The collection.
    collection: String,
    /// The record's id.
    id: String,
    /// An `attachment` field (set) or `attachments` field (appended to).
    field: String,
    /// The file to attach.
    file: PathBuf,
    /// Declared MIME type, checked against the content (default: from the content or name).
    #[arg(long)]
    mime: Option<String>,
    /// Name to record (default: the file's name).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum BlobCommand {
    /// Write a blob's content to a file (or stdout), verified against its hash.
    Get {
        /// The blob's SHA-256 (64 hex digits).
        hash: String,
        /// Write here; the file appears only after the whole blob verified.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace the output file if it exists (otherwise it is refused).
        #[arg(long, requires = "output")]
        force: bool,
    },
    /// List blobs with their sizes and link counts.
    Ls {
        /// Continue after this hash.
        #[arg(long)]
        after: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one blob.
    Stat {
        /// The blob's SHA-256 (64 hex digits).
        hash: String,
    },
    /// Re-hash every blob (exit code 5 when any is damaged or missing).
    Verify,
    /// Remove blobs no record has linked to for the grace period, and report them.
    Gc {
        /// Override the grace period (setting blobs.gc_grace_seconds), e.g. 0s, 12h, 7d.
        #[arg(long)]
        grace: Option<String>,
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Recount every blob's links from the records and correct the counts.
    RebuildRefs,
}

pub fn run_attach(ctx: &Context, args: AttachArgs) -> Result<()> {
    let store = ctx.open_write()?;
    let name = match args.name {
        Some(name) => name,
        None => args.file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
    };
    let file = std::fs::File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let upload = Upload { name, mime: args.mime };
    let (record, attachment) = store.attach(&args.collection, &args.id, &args.field, file, &upload)?;
    let report = serde_json::json!({ "attachment": attachment, "record_version": record.version });
    ctx.out.show(&report, || {
        println!(
            "attached {} ({}, {} bytes) to {}/{} as {}; blob {}",
            attachment.name, attachment.mime, attachment.size, args.collection, args.id, args.field, attachment.hash
        );
    });
    store.close()?;
    Ok(())
}

/// A progress bar for `done of total` work, hidden under `--json`.
fn progress_bar(ctx: &Context, template: &str) -> Result<indicatif::ProgressBar> {
    let bar = if ctx.out.json { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(0) };
    bar.set_style(indicatif::ProgressStyle::with_template(template).map_err(|e| UsageError(e.to_string()))?);
    Ok(bar)
}

#[derive(Debug, clap::Args)]
pub struct CompactArgs {
    /// Train a zstd dictionary per collection first; kept only where it saves a tenth.
    #[arg(long)]
    train: bool,
    /// Only these collections (repeatable; default: all).
    #[arg(long = "collection", value_name = "NAME")]
    collections: Vec<String>,
}

pub fn run_compact(ctx: &Context, args: CompactArgs) -> Result<()> {
    let store = ctx.open_write()?;
    let bar = progress_bar(ctx, "compacting {bar:30} {pos}/{len} bodies")?;
    let options = cairn::CompactOptions { train: args.train, collections: args.collections };
    let report = store.compact(&options, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    ctx.out.show(&report, || {
        for t in &report.trained {
            match &t.reason {
                None => println!(
                    "{}: trained a {}-byte dictionary on {} bodies; held-out bodies {} -> {} bytes",
                    t.collection, t.dict_bytes, t.samples, t.held_out_bytes_before, t.held_out_bytes_after
                ),
                Some(reason) => println!("{}: no dictionary kept ({reason})", t.collection),
            }
        }
        println!(
            "compressed {} of {} bodies: {} -> {} bytes",
            report.compressed, report.bodies, report.bytes_before, report.bytes_after
        );
    });
    store.close()?;
    Ok(())
}

fn parse_duration(text: &str) -> Result<std::time::Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| UsageError(format!("{text:?} is not a duration like 30s, 12h or 7d")))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(UsageError(format!("unknown unit {unit:?} in {text:?}: use s, m, h or d")).into()),
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(seconds)))
}

fn blob_rows(blobs: &[BlobInfo]) -> Vec<Vec<String>> {
    blobs
        .iter()
        .map(|b| {
            vec![
                b.hash.to_string(),
                b.size.to_string(),
                b.stored_size.to_string(),
                format!("{:?}", b.codec).to_lowercase(),
                b.refs.to_string(),
                b.unreferenced_since.map(|t| t.to_string()).unwrap_or_default(),
            ]
        })
        .collect()
}

const BLOB_HEADER: [&str; 6] = ["hash", "size", "stored", "codec", "refs", "unreferenced since"];

pub fn run(ctx: &Context, command: BlobCommand) -> Result<()> {
    match command {
        BlobCommand::Get { hash, output: Some(path), force } => {
            let info = ctx.open_read()?.export_blob(&hash, &path, force)?;
            ctx.out.show(&info, || eprintln!("wrote {} bytes to {}", info.size, path.display()));
        }
        BlobCommand::Get { hash, output: None, .. } => {
            let mut reader = ctx.open_read()?.open_blob(&hash)?;
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = std::io::copy(&mut reader, &mut stdout) {
                return Err(match e.kind() {
                    std::io::ErrorKind::InvalidData => {
                        cairn::Error::Corruption { location: format!("blob {hash}"), detail: e.to_string() }.into()
                    }
                    _ => anyhow::Error::from(e).context("writing the blob to stdout"),
                });
            }
            stdout.flush()?;
        }
        BlobCommand::Ls { after, limit } => {
            let blobs = ctx.open_read()?.blobs(after.as_deref(), limit)?;
            ctx.out.show(&blobs, || println!("{}", table(&BLOB_HEADER, blob_rows(&blobs))));
        }
        BlobCommand::Stat { hash } => {
            let info = ctx.open_read()?.blob(&hash)?;
            ctx.out.show(&info, || println!("{}", table(&BLOB_HEADER, blob_rows(std::slice::from_ref(&info)))));
        }
        BlobCommand::Verify => {
            let store = ctx.open_read()?;
            let bar = progress_bar(ctx, "verifying blobs {bar:30} {pos}/{len}")?;
            let report = store.verify_blobs(&mut |_, done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            ctx.out.show(&report, || {
                println!("{} blobs, {} bytes checked", report.checked, report.bytes);
                for (hash, why) in &report.corrupt {
                    println!("CORRUPT {hash}: {why}");
                }
                for hash in &report.missing {
                    println!("MISSING {hash}");
                }
                for path in &report.unlisted_files {
                    println!("unlisted file {} (removed by `blob gc` after the grace period)", path.display());
                }
            });
            if !report.is_ok() {
                let detail = format!("{} corrupt, {} missing", report.corrupt.len(), report.missing.len());
                return Err(cairn::Error::Corruption { location: "blob store".into(), detail }.into());
            }
        }
        BlobCommand::Gc { grace, dry_run } => {
            let grace = grace.as_deref().map(parse_duration).transpose()?;
            let store = if dry_run { ctx.open_read()? } else { ctx.open_write()? };
            let report = store.gc_blobs(&cairn::GcOptions { grace, dry_run })?;
            ctx.out.show(&report, || {
                let verb = if dry_run { "would remove" } else { "removed" };
                for b in &report.removed {
                    println!("{verb} blob {} ({} bytes on disk)", b.hash, b.stored_size);
                }
                for path in &report.removed_files {
                    println!("{verb} unlisted file {}", path.display());
                }
                println!(
                    "{verb} {} blobs and {} files, {} bytes; {} unlinked blobs kept within their grace period",
                    report.removed.len(),
                    report.removed_files.len(),
                    report.bytes_freed,
                    report.kept_in_grace
                );
            });
            store.close()?;
        }
        BlobCommand::RebuildRefs => {
            let store = ctx.open_write()?;
            let report = store.rebuild_blob_refs()?;
            ctx.out.show(&report, || {
                for (hash, before, after) in &report.corrected {
                    println!("corrected {hash}: {before} -> {after} links");
                }
                for (collection, id, field, hash) in &report.dangling {
                    println!("DANGLING {collection}/{id}.{field} -> {hash} (not in the blob store)");
                }
                println!("{} blobs recounted, {} counts corrected", report.blobs, report.corrected.len());
            });
            store.close()?;
            if !report.dangling.is_empty() {
                let detail = format!("{} links to blobs the store does not have", report.dangling.len());
                return Err(cairn::Error::Corruption { location: "attachments".into(), detail }.into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s").expect("0s").as_secs(), 0);
        assert_eq!(parse_duration("90").expect("90").as_secs(), 90);
        assert_eq!(parse_duration("12h").expect("12h").as_secs(), 43_200);
        assert_eq!(parse_duration("7d").expect("7d").as_secs(), 604_800);
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
