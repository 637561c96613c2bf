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
    /// With --follow: follow a running `cairn serve` at this URL instead of the local store —
    /// the realtime events of one --collection that its token may see, resumed across
    /// disconnects and server restarts.
    #[arg(long, value_name = "URL", requires_all = ["follow", "collection"])]
    server: Option<String>,
    /// The collection to follow on the server.
    #[arg(long, requires = "server")]
    collection: Option<String>,
    /// Only records matching this filter (cairn's query language).
    #[arg(long, requires = "server")]
    filter: Option<String>,
    /// With --since: the epoch the seq belongs to (printed when following starts); without
    /// it the server cannot trust --since and starts over.
    #[arg(long, requires = "server")]
    epoch: Option<String>,
    /// A file whose first line is the token to use (else the CAIRN_TOKEN environment
    /// variable). Tokens are not taken as arguments: other users could read them.
    #[arg(long, value_name = "FILE", requires = "server")]
    token_file: Option<std::path::PathBuf>,
}

pub fn run(ctx: &Context, args: ChangesArgs) -> Result<()> {
    if let Some(server) = &args.server {
        return follow_server(ctx, server, &args);
    }
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

/// `changes --follow --server`: the server's realtime stream of one collection, one line per
/// event, resumed after disconnects (cairn_server::client::Follower).
fn follow_server(ctx: &Context, server: &str, args: &ChangesArgs) -> Result<()> {
    use cairn_server::client::{Client, Follower, StreamEvent, StreamQuery};
    let token = match &args.token_file {
        Some(file) => {
            zeroize::Zeroizing::new(crate::input::read_text(file)?.lines().next().unwrap_or_default().to_string())
        }
        None => zeroize::Zeroizing::new(std::env::var("CAIRN_TOKEN").map_err(|_| {
            crate::UsageError(
                "--server needs a token: --token-file FILE, or the CAIRN_TOKEN environment variable".into(),
            )
        })?),
    };
    let since = match (&args.epoch, args.since) {
        (Some(epoch), since) => Some((cairn::Seq(since), epoch.clone())),
        (None, 0) => None,
        (None, _) => {
            return Err(crate::UsageError("--since with --server needs the --epoch it belongs to".into()).into())
        }
    };
    let query = StreamQuery {
        collection: args.collection.clone().unwrap_or_default(),
        filter: args.filter.clone(),
        ..StreamQuery::default()
    };
    let client = Client::new(server, &token)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut follower = Follower::new(client, query, since);
        let mut announced: Option<String> = None;
        loop {
            let event = follower.next().await?;
            if let Some((seq, epoch)) = follower.position().filter(|(_, e)| announced.as_deref() != Some(*e)) {
                eprintln!("cairn: following epoch {epoch} (resume with --since <seq> --epoch {epoch}; now at {seq})");
                announced = Some(epoch.to_string());
            }
            match &event {
                StreamEvent::Event(e) => ctx.out.line(e, || {
                    let kind = e.kind.as_str();
                    println!("{:>8}  {:<6} {:<40} v{:<4} {} {}", e.seq, kind, format!("{}/{}", e.collection, e.id), e.version, e.actor, e.at);
                }),
                StreamEvent::Reset { reason, seq, epoch } => {
                    eprintln!("cairn: the server cannot resume ({reason:?}): fetch what you follow again; events go on after {seq} in epoch {epoch}");
                    ctx.out.line(&serde_json::json!({"type": "reset", "reason": reason, "seq": seq, "epoch": epoch}), || {});
                }
                _ => {}
            }
        }
    })
}
