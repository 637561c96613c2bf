use anyhow::Result;
use cairn::{Store, StoreOptions};
use cairn_taskerino::demo::{install, DemoOptions};
use clap::Args;

use super::Context;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of sessions to generate (notes and tasks scale with it).
    #[arg(long, default_value_t = 120)]
    sessions: usize,
}

pub fn run(ctx: &Context, args: DemoArgs) -> Result<()> {
    let store = Store::open(
        &ctx.dir,
        StoreOptions { actor: ctx.actor.clone(), allow_links: ctx.allow_links, ..StoreOptions::default() },
    )?;
    let options = DemoOptions { sessions: args.sessions.max(1) };
    let report = install(&store, &options)?;
    store.close()?;
    let dir = ctx.dir.display().to_string();
    ctx.out.show(&serde_json::json!({"dir": dir, "report": report}), || {
        if report.created {
            println!("Created a Taskerino-like demo store in {dir}");
        } else {
            println!("The demo store in {dir} is already there; nothing was written.");
        }
        for (collection, n) in &report.counts {
            println!("  {collection:<10} {n:>5} records");
        }
        let d = shell_quote(&dir);
        if report.created {
            println!("\nEvery write above is durable, checksummed and in the change log.");
        }
        println!("\nTry (after `cargo install --path crates/cairn-cli`; or `cargo run --release --` for `cairn`):");
        println!("  cairn --dir {d} collection show sessions");
        println!("  cairn --dir {d} get sessions session-0001");
        println!("  cairn --dir {d} history tasks task-0001");
        println!("  cairn --dir {d} undo tasks task-0001");
        println!("  cairn --dir {d} patch notes note-0001 '{{\"pinned\": true}}' --expect 1");
        println!(
            "  cairn --dir {d} patch notes note-0001 '{{\"pinned\": false}}' --expect 1   # exit 3: version conflict"
        );
        println!("  cairn --dir {d} changes --since 0 --limit 10");
        println!("  cairn --dir {d} settings list");
        println!("  cairn --dir {d} backup create && cairn --dir {d} backup list");
        println!("  cairn --dir {d} check");
        println!("The README's tour goes through every command.");
    });
    Ok(())
}

fn shell_quote(text: &str) -> String {
    if text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-~".contains(c)) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}
