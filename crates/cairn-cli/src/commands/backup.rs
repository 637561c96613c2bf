//! `cairn backup …`, `cairn restore`, `cairn check` and `cairn repair`: data safety.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::Result;
use cairn::{BackupInfo, BackupOptions, BackupStatus, CheckOptions, RestoreOptions, Store};
use clap::{Args, Subcommand};

use super::{phase_bar, Context};
use crate::output::{clip, table};

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a verified backup now (exit code 1 when it fails; nothing is added then).
    Create,
    /// List backups, newest first: time, reason, size, counts, verified, age.
    List,
    /// Verify one backup again, or all (exit code 5 when any fails).
    Verify {
        /// The backup (see `cairn backup list`), or `latest` for the newest verified one.
        id: Option<String>,
        /// Verify every backup.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Apply the rotation settings (backup.keep_last / keep_daily / keep_weekly).
    Rotate,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup to restore (see `cairn backup list`), or `latest` for the newest verified one.
    id: String,
    /// Restore into this new or empty directory instead of over the store.
    #[arg(long, value_name = "DIR", conflicts_with = "collection")]
    to: Option<PathBuf>,
    /// Bring back only this collection, as new versions.
    #[arg(long)]
    collection: Option<String>,
    /// With --collection: only this record.
    #[arg(long = "id", value_name = "ID", requires = "collection")]
    record: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Skip re-hashing blobs.
    #[arg(long)]
    no_blobs: bool,
}

pub fn run(ctx: &Context, command: BackupCommand) -> Result<()> {
    match command {
        BackupCommand::Create => {
            let store = ctx.open_write_or_read()?;
            let bar = phase_bar(ctx);
            let info =
                store.backup(&BackupOptions::default(), &mut |phase, done, total| bar.update(phase, done, total));
            bar.finish();
            let info = info?;
            ctx.out.show(&info, || {
                let m = info.manifest.as_ref();
                println!(
                    "backup {} created and verified: {} bytes, up to change {}, {} blobs",
                    info.id,
                    m.map_or(0, |m| m.size()),
                    m.map_or(0, |m| m.seq.get()),
                    m.map_or(0, |m| m.blobs)
                );
            });
        }
        BackupCommand::List => {
            let list = cairn::Backups::of(&ctx.dir).list()?;
            ctx.out.show(&list.iter().map(summary).collect::<Vec<_>>(), || print_list(&list));
        }
        BackupCommand::Verify { id, all } => {
            let backups = cairn::Backups::of(&ctx.dir);
            let ids: Vec<String> = match (id, all) {
                (Some(id), _) => vec![resolve(&backups, &id)?],
                (None, true) => {
                    backups.list()?.into_iter().filter(|b| b.status != BackupStatus::Failed).map(|b| b.id).collect()
                }
                (None, false) => return Err(crate::UsageError("name a backup or pass --all".into()).into()),
            };
            let bar = phase_bar(ctx);
            let mut results = Vec::new();
            for id in ids {
                results.push(backups.verify(&id, &mut |phase, done, total| bar.update(phase, done, total))?);
            }
            bar.finish();
            ctx.out.show(&results, || print_list(&results));
            let bad: Vec<&str> =
                results.iter().filter(|b| b.status != BackupStatus::Good).map(|b| b.id.as_str()).collect();
            if !bad.is_empty() {
                let detail = format!("verification failed for {}", bad.join(", "));
                return Err(cairn::Error::Corruption { location: "backups".into(), detail }.into());
            }
        }
        BackupCommand::Rotate => {
            let store = ctx.open_write()?;
            let removed = store.rotate_backups()?;
            ctx.out.show(&removed, || println!("removed {} old backups: {}", removed.len(), removed.join(", ")));
        }
    }
    Ok(())
}

/// A backup without its file list, which can run to one line per attachment.
fn summary(b: &BackupInfo) -> serde_json::Value {
    let m = b.manifest.as_ref();
    serde_json::json!({
        "id": b.id,
        "status": b.status,
        "error": b.error,
        "age_seconds": b.age_seconds,
        "path": b.path,
        "reason": m.map(|m| m.reason),
        "created_at": m.map(|m| m.created_at.clone()),
        "bytes": m.map(|m| m.size()),
        "seq": m.map(|m| m.seq),
        "collections": m.map(|m| m.collections.clone()),
        "blobs": m.map(|m| m.blobs),
        "verification": m.and_then(|m| m.verification.clone()),
    })
}

fn print_list(list: &[BackupInfo]) {
    let rows = list
        .iter()
        .map(|b| {
            let m = b.manifest.as_ref();
            let counts = m.map_or(String::new(), |m| {
                m.collections.iter().map(|c| format!("{} {}", c.name, c.live)).collect::<Vec<_>>().join(", ")
            });
            vec![
                b.id.clone(),
                m.map_or("-".into(), |m| m.reason.as_str().to_string()),
                m.map_or("-".into(), |m| m.size().to_string()),
                clip(&counts, 40),
                match b.status {
                    BackupStatus::Good => "verified".into(),
                    BackupStatus::Damaged => format!("DAMAGED: {}", clip(b.error.as_deref().unwrap_or(""), 50)),
                    _ => format!("FAILED: {}", clip(b.error.as_deref().unwrap_or(""), 50)),
                },
                age(b.age_seconds),
            ]
        })
        .collect();
    println!("{}", table(&["id", "reason", "bytes", "live records", "state", "age"], rows));
}

fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A backup id as given, `latest` meaning the newest verified backup.
fn resolve(backups: &cairn::Backups, id: &str) -> Result<String> {
    if id != "latest" {
        return Ok(id.to_string());
    }
    let newest = backups.list()?.into_iter().find(|b| b.status == BackupStatus::Good);
    Ok(newest.ok_or_else(|| cairn::Error::BackupNotFound { id: "latest (no verified backup)".into() })?.id)
}

pub fn run_restore(ctx: &Context, mut args: RestoreArgs) -> Result<()> {
    args.id = resolve(&cairn::Backups::of(&ctx.dir), &args.id)?;
    if let Some(collection) = &args.collection {
        let store = ctx.open_write()?;
        let report = store.restore_records(&args.id, collection, args.record.as_deref())?;
        ctx.out.show(&report, || {
            println!(
                "restored {} records of `{collection}` from {} as new versions ({} already equal, {} blobs copied back{})",
                report.restored.len(),
                args.id,
                report.unchanged,
                report.blobs_copied,
                if report.collection_created { "; the collection was created" } else { "" }
            );
        });
        return store.close().map_err(Into::into);
    }
    let backups = cairn::Backups::of(&ctx.dir);
    let options = RestoreOptions { to: args.to.clone(), backups_dir: None };
    if args.to.is_none() && !args.yes {
        confirm(ctx, &backups, &args.id)?;
    }
    let bar = phase_bar(ctx);
    let report =
        cairn::Store::restore(&ctx.dir, &args.id, &options, &mut |phase, done, total| bar.update(phase, done, total));
    bar.finish();
    let report = report?;
    ctx.out.show(&report, || {
        println!(
            "restored backup {} into {} (up to change {})",
            report.backup,
            report.target.display(),
            report.manifest.seq
        );
        if let Some(pre) = &report.pre_restore_backup {
            println!("the state it replaced is in backup {pre}");
        }
        if let Some(why) = &report.damaged {
            println!("the store it replaced could not be opened ({why}); it was kept whole instead");
        }
        if let Some(dir) = &report.replaced_into {
            println!("the replaced files were moved to {}", dir.display());
        }
    });
    Ok(())
}

/// Shows what a restore replaces and with what, and asks; refuses without a terminal.
fn confirm(ctx: &Context, backups: &cairn::Backups, id: &str) -> Result<()> {
    let backup = backups.list()?.into_iter().find(|b| b.id == id);
    let describe =
        |counts: Vec<(String, u64)>| counts.iter().map(|(n, c)| format!("{n} {c}")).collect::<Vec<_>>().join(", ");
    let current = Store::open(&ctx.dir, cairn::StoreOptions::read_only())
        .and_then(|s| s.collections())
        .map(|cs| describe(cs.into_iter().map(|c| (c.schema.name.clone(), c.live_records)).collect()))
        .unwrap_or_else(|e| format!("unreadable ({e})"));
    let incoming = backup
        .and_then(|b| b.manifest)
        .map(|m| {
            format!(
                "{} from {}: {}",
                m.id,
                m.created_at,
                describe(m.collections.into_iter().map(|c| (c.name, c.live)).collect())
            )
        })
        .unwrap_or_else(|| id.to_string());
    if ctx.out.json || !std::io::stdin().is_terminal() {
        return Err(cairn::Error::ConfirmationRequired {
            what: format!("restoring backup {id} over {}", ctx.dir.display()),
            hint: "pass --yes (the current state is backed up first)".into(),
            token: None,
        }
        .into());
    }
    eprintln!("This replaces the store in {}\n  now:    {current}\n  backup: {incoming}", ctx.dir.display());
    eprintln!("The current state is backed up first and the replaced files are kept in quarantine/.");
    eprint!("Type `yes` to restore: ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        return Err(cairn::Error::ConfirmationRequired {
            what: "restore".into(),
            hint: "not confirmed; nothing changed".into(),
            token: None,
        }
        .into());
    }
    Ok(())
}

pub fn run_check(ctx: &Context, args: CheckArgs) -> Result<()> {
    let report = match ctx.open_write_or_read() {
        Ok(store) => {
            let bar = phase_bar(ctx);
            let report = store.check(&CheckOptions { blobs: !args.no_blobs }, &mut |phase, done, total| {
                bar.update(phase, done, total)
            });
            bar.finish();
            report?
        }
        // A store SQLite cannot open is a finding, not a failure to check.
        Err(e) => match e.downcast_ref::<cairn::Error>().and_then(cairn::CheckReport::from_open_error) {
            Some(report) => report,
            None => return Err(e),
        },
    };
    ctx.out.show(&report, || {
        println!(
            "checked {} collections, {} records, {} change-log entries, {} blobs ({} bytes)",
            report.collections, report.records, report.changes, report.blobs, report.blob_bytes
        );
        for stray in &report.strays {
            println!("stray file {}: {}", stray.path.display(), stray.reason);
        }
        for p in &report.problems {
            println!("{:?} {}: {}", p.kind, p.location, p.detail);
        }
        let verdict = if report.is_ok() {
            "no problems"
        } else {
            "PROBLEMS FOUND: run `cairn repair`, or `cairn restore ID` to go back to a backup"
        };
        println!("{verdict}");
    });
    if !report.is_ok() {
        let detail = format!("{} problems", report.problems.len());
        return Err(cairn::Error::Corruption { location: "store".into(), detail }.into());
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Rebuild the database from what can be read and the backups even when nothing
    /// structural is wrong.
    #[arg(long)]
    rebuild: bool,
}

pub fn run_repair(ctx: &Context, args: RepairArgs) -> Result<()> {
    let options = cairn::RepairOptions { actor: ctx.actor.clone(), rebuild: args.rebuild };
    let bar = phase_bar(ctx);
    let report = cairn::Store::repair(&ctx.dir, &options, &mut |phase, done, total| bar.update(phase, done, total));
    bar.finish();
    let report = report?;
    ctx.out.show(&report, || print_repair(&report));
    if !report.after.is_ok() {
        let detail = format!("{} problems remain after repair", report.after.problems.len());
        return Err(cairn::Error::Corruption { location: "store".into(), detail }.into());
    }
    Ok(())
}

fn print_repair(report: &cairn::RepairReport) {
    let Some(quarantine) = &report.quarantine else {
        println!("no problems found; nothing to repair");
        return;
    };
    println!("{} problems found; damaged state copied to {}", report.problems_before, quarantine.display());
    if let Some(r) = &report.rebuilt {
        println!(
            "rebuilt the database: {} collections, {} records, {} blobs; {} change-log entries read back from the damaged file, {} from backups",
            r.collections,
            r.records,
            r.blobs,
            r.changes_salvaged,
            r.changes_from_backups.len()
        );
        for seq in &r.changes_lost {
            println!("LOST change-log entry {seq}: neither the damaged file nor any verified backup has it");
        }
        for (record, seq) in &r.records_behind {
            println!("{record} is back at an older version: its newest entry {seq} is lost");
        }
        for seq in &r.audit_lost {
            println!("LOST audit entry {seq}");
        }
        for (table, backup) in &r.tables_from_backups {
            println!("rows of {table} taken from backup {backup}");
        }
    }
    for name in &report.objects_quarantined {
        println!("moved `{name}` (not created by cairn) into quarantine");
    }
    for (seq, backup) in &report.changes_restored {
        println!("restored change-log entry {seq} from backup {backup}");
    }
    for record in &report.records_rebuilt {
        println!("rebuilt record row {record} from the change log");
    }
    for (record, backup) in &report.records_restored_as_new_versions {
        println!("restored {record} from backup {backup} as a new version (its damaged history entry remains)");
    }
    for (record, why) in &report.records_quarantined {
        println!("moved {record} into quarantine: {why}");
    }
    for (seq, backup) in &report.audit_restored {
        println!("restored audit entry {seq} from backup {backup}");
    }
    for (hash, backup) in &report.blobs_restored {
        println!("restored blob {hash} from backup {backup}");
    }
    for hash in &report.blobs_unrepaired {
        println!("UNREPAIRED blob {hash}: no verified backup has a good copy");
    }
    for p in &report.after.problems {
        println!("remaining {:?} {}: {}", p.kind, p.location, p.detail);
    }
    println!("{}", if report.after.is_ok() { "the store checks clean" } else { "PROBLEMS REMAIN" });
}
