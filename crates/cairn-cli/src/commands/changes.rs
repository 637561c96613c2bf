use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::record::print_changes;
use super::Context;

#[derive(Debug, Args)]
pub struct ChangesArgs {
    /// Print changes after this seq.
    #[arg(long, default_value_t = 0)]
    since: u64,
    /// Most changes to print (without --follow).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Keep printing new changes as they commit (Ctrl-C to stop).
    #[arg(long)]
    follow: bool,
}

pub fn run(ctx: &Context, args: ChangesArgs) -> Result<()> {
    let store = ctx.open_read()?;
    if !args.follow {
        let changes = store.changes_since(cairn::Seq(args.since), args.limit)?;
        ctx.out.show(&changes, || print_changes(&changes, true));
        return Ok(());
    }
    // Another process owns the writer, so in-process subscriptions cannot see its commits;
    // poll the log instead. Each line is flushed as it is printed.
    let mut last = cairn::Seq(args.since);
    loop {
        let changes = store.changes_since(last, 500)?;
        for change in &changes {
            ctx.out.line(change, || {
                let target = if change.collection.is_empty() {
                    change.id.clone()
                } else {
                    format!("{}/{}", change.collection, change.id)
                };
                println!(
                    "{:>8}  {:<18} {:<32} v{:<4} {} {}",
                    change.seq,
                    change.op.as_str(),
                    target,
                    change.version,
                    change.actor,
                    change.at
                );
            });
            last = change.seq;
        }
        if changes.is_empty() {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
