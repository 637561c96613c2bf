//! `cairn migrate …` and `cairn init --migrations`: schema migrations (see docs/migrations.md).

use std::path::PathBuf;

use anyhow::Result;
use cairn::{Direction, MigrateOptions, MigrateReport, MigrationState, Migrations, Seed};
use clap::{Args, Subcommand};

use super::{phase_bar, Context};
use crate::output::{clip, table};

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The folder of migration files (NNNN_name.toml or .json).
    #[arg(long, short = 'm', env = "CAIRN_MIGRATIONS", value_name = "DIR", default_value = "migrations")]
    migrations: PathBuf,
    #[command(subcommand)]
    command: MigrateCommand,
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// List every migration: applied, pending, edited since applied, or missing.
    Status,
    /// Run the pending migrations (or, with --down, the downs) on a scratch copy and report
    /// each step and how many records it writes; the store is not changed.
    Plan {
        /// Plan a `down` instead.
        #[arg(long)]
        down: bool,
        /// As for `up --to` / `down --to`.
        #[arg(long, value_name = "N")]
        to: Option<u32>,
    },
    /// Apply pending migrations (all, or up to and including --to N), after a verified backup.
    Up(RunArgs),
    /// Undo the last migration, or down to --to N applied (0: all), after a verified backup.
    Down(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Stop once the store is at this migration number.
    #[arg(long, value_name = "N")]
    to: Option<u32>,
    /// Skip the rehearsal on a scratch copy (errors that depend on the data then show up
    /// during the run, which is still undone as a whole).
    #[arg(long)]
    no_rehearsal: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Apply every migration in this folder (running init again applies only new ones).
    #[arg(long, value_name = "DIR")]
    migrations: Option<PathBuf>,
    /// Then upsert these records by id (a .json or .toml table of collections).
    #[arg(long, value_name = "FILE")]
    seed: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: MigrateArgs) -> Result<()> {
    let migrations = Migrations::from_dir(&args.migrations)?;
    match args.command {
        MigrateCommand::Status => status(ctx, &migrations),
        MigrateCommand::Plan { down, to } => {
            let direction = if down { Direction::Down } else { Direction::Up };
            let bar = phase_bar(ctx);
            let plan =
                cairn::Store::plan_migrations(&ctx.dir, &migrations, direction, to, &mut |p, d, t| bar.update(p, d, t));
            bar.finish();
            let plan = plan?;
            ctx.out.show(&plan, || print_report(&plan, true));
            Ok(())
        }
        MigrateCommand::Up(run) => migrate(ctx, &migrations, Direction::Up, run),
        MigrateCommand::Down(run) => migrate(ctx, &migrations, Direction::Down, run),
    }
}

fn status(ctx: &Context, migrations: &Migrations) -> Result<()> {
    let list = cairn::Store::migration_status(&ctx.dir, migrations)?;
    ctx.out.show(&list, || {
        if list.is_empty() {
            println!("no migrations");
            return;
        }
        let rows = list
            .iter()
            .map(|m| {
                let state = match m.state {
                    MigrationState::Applied => "applied",
                    MigrationState::Pending => "pending",
                    MigrationState::Edited => "EDITED since applied",
                    MigrationState::Missing => "MISSING file",
                };
                vec![
                    m.number.to_string(),
                    m.name.clone(),
                    state.to_string(),
                    m.applied_at.map(|t| t.to_string()).unwrap_or_default(),
                    if m.reversible { "yes".into() } else { "no".into() },
                    clip(&m.description, 40),
                ]
            })
            .collect();
        println!("{}", table(&["#", "name", "state", "applied at", "reversible", "description"], rows));
    });
    Ok(())
}

fn migrate(ctx: &Context, migrations: &Migrations, direction: Direction, run: RunArgs) -> Result<()> {
    let options = MigrateOptions { to: run.to, rehearse: !run.no_rehearsal, ..MigrateOptions::default() };
    let report = with_bar(ctx, |progress| cairn::Store::migrate(&ctx.dir, migrations, direction, &options, progress))?;
    ctx.out.show(&report, || print_report(&report, false));
    Ok(())
}

pub fn init(ctx: &Context, args: InitArgs) -> Result<()> {
    let migrations = args.migrations.as_deref().map(Migrations::from_dir).transpose()?;
    let seed = args.seed.as_deref().map(Seed::from_file).transpose()?;
    let options = MigrateOptions::default();
    let report = with_bar(ctx, |progress| {
        cairn::Store::init(&ctx.dir, migrations.as_ref(), seed.as_ref(), &options, &ctx.actor, progress)
    })?;
    let dir = ctx.dir.display().to_string();
    ctx.out.show(&report, || {
        if report.created {
            println!("created a cairn store in {dir}");
        } else {
            println!("{dir} already holds a cairn store (format {})", cairn::Store::FORMAT_VERSION);
        }
        if let Some(m) = &report.migrations {
            print_report(m, false);
        }
        if seed.is_some() {
            let written: u64 = report.seeded.values().sum();
            println!("seed: {written} record(s) written, {} already as seeded", report.seed_unchanged);
        }
        if report.created && migrations.is_none() {
            println!("next: cairn --dir {dir} collection create SCHEMA.json");
        }
    });
    Ok(())
}

fn with_bar<T>(ctx: &Context, f: impl FnOnce(&mut dyn FnMut(&str, u64, u64)) -> cairn::Result<T>) -> Result<T> {
    let bar = phase_bar(ctx);
    let result = f(&mut |phase, done, total| bar.update(phase, done, total));
    bar.finish();
    Ok(result?)
}

fn print_report(report: &MigrateReport, plan: bool) {
    if report.migrations.is_empty() {
        println!("nothing to do: {} migration(s) applied", report.applied);
        return;
    }
    let verb = match (plan, report.direction) {
        (true, Direction::Up) => "would apply",
        (true, Direction::Down) => "would undo",
        (false, Direction::Up) => "applied",
        (false, Direction::Down) => "undid",
    };
    for m in &report.migrations {
        println!("{verb} {:04} {}", m.number, m.name);
        for step in &m.steps {
            println!("  {:<60} {} record(s)", clip(&step.op, 60), step.records);
        }
    }
    if let Some(id) = &report.backup {
        println!("backup taken first: {id}");
    }
    println!("{} migration(s) applied {}", report.applied, if plan { "after it" } else { "now" });
}
