//! `cairn audit list|verify`: the hash-chained audit trail.

use anyhow::Result;
use clap::Subcommand;

use super::Context;
use crate::output::{clip, table};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List entries, oldest first.
    List {
        /// Keep entries matching this filter over seq, at, actor, action, target, outcome,
        /// detail (e.g. `action = "purge" and at >= 2026-01-01`).
        #[arg(long)]
        filter: Option<String>,
        /// Start after this seq.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Check every entry's hash and the chain (exit code 5 when an entry was edited, inserted
    /// or removed).
    Verify,
}

pub fn run(ctx: &Context, command: AuditCommand) -> Result<()> {
    let store = ctx.open_read()?;
    match command {
        AuditCommand::List { filter, after, limit } => {
            let entries = store.audit_log(filter.as_deref(), after, limit)?;
            ctx.out.show(&entries, || {
                let rows = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.seq.to_string(),
                            e.at.to_string(),
                            e.actor.clone(),
                            e.action.clone(),
                            clip(&e.target, 40),
                            clip(&e.outcome, 40),
                            clip(&e.detail, 40),
                        ]
                    })
                    .collect();
                println!("{}", table(&["seq", "at", "actor", "action", "target", "outcome", "detail"], rows));
            });
            Ok(())
        }
        AuditCommand::Verify => {
            let report = store.verify_audit()?;
            ctx.out.show(&report, || {
                for p in &report.problems {
                    println!("entry {}: {}", p.seq, p.detail);
                }
                println!("{} entries, {} problem(s)", report.entries, report.problems.len());
            });
            if report.is_ok() {
                Ok(())
            } else {
                Err(cairn::Error::Corruption {
                    location: "audit trail".into(),
                    detail: format!("{} problem(s)", report.problems.len()),
                }
                .into())
            }
        }
    }
}
