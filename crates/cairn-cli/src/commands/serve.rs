//! `cairn serve`: the REST API over the store in the data directory, until SIGINT or
//! SIGTERM; then requests in flight finish (within the drain deadline) and the store closes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use cairn::StoreOptions;
use cairn_server::{Embedded, ServerConfig};
use clap::Args;

use super::Context;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Default: 127.0.0.1:8080. Only loopback addresses are accepted
    /// (no TLS yet: put a TLS-terminating proxy in front for remote clients).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// A TOML file of server settings (docs/server.md); CAIRN_<SETTING> environment variables
    /// win over it, and flags over both.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the merged settings as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Make this admin before serving unless it exists (the idempotent bootstrap; its
    /// password is the first line of --bootstrap-admin-password-file).
    #[arg(long, value_name = "NAME", requires = "bootstrap_admin_password_file")]
    bootstrap_admin: Option<String>,
    /// The bootstrap admin's password file.
    #[arg(long, value_name = "FILE", requires = "bootstrap_admin")]
    bootstrap_admin_password_file: Option<PathBuf>,
}

/// The settings of `--config FILE` (the defaults without one), with the environment's
/// `CAIRN_<SETTING>` variables laid over them.
pub(super) fn read_config(file: Option<&std::path::Path>) -> Result<ServerConfig> {
    let config = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<ServerConfig>(&text)
                .with_context(|| format!("{} is not a server configuration", path.display()))?
        }
        None => ServerConfig::default(),
    };
    Ok(config.with_env(std::env::vars()).map_err(crate::UsageError)?)
}

pub fn run(ctx: &Context, args: ServeArgs) -> Result<()> {
    let mut config = read_config(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.print_config {
        print!("{}", toml::to_string(&config)?);
        return Ok(());
    }
    config.validate()?;
    let _log_writer = logging(&config)?;
    let store = ctx.open_create()?;
    if let (Some(name), Some(file)) = (&args.bootstrap_admin, &args.bootstrap_admin_password_file) {
        let text = zeroize::Zeroizing::new(crate::input::read_text(file)?);
        let (_, made) = store.bootstrap_admin(name, text.lines().next().unwrap_or_default())?;
        eprintln!("cairn: admin {name} {}", if made { "created" } else { "exists; unchanged" });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        // Signal handlers go in before anyone is told the server is up: a SIGTERM that comes
        // right after must still be a graceful shutdown.
        let shutdown = shutdown_signal()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        eprintln!("cairn: serving {} on http://{}", ctx.dir.display(), listener.local_addr()?);
        // After a restore over HTTP the store is opened again the way it was opened here.
        let backend = Embedded::reopening_with(store, ctx.writable_options(StoreOptions::existing()))
            .with_realtime_buffer(config.realtime_buffer)
            .with_jobs(config.jobs.clone(), cairn::Workers::new())?;
        cairn_server::serve(listener, Arc::new(backend), config, shutdown).await?;
        Ok(())
    })
}

/// A future that completes on SIGINT or SIGTERM, with both handlers installed now.
pub(super) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// JSON log lines, to daily files in `log_dir` (keeping `log_keep_files`) or to stderr; the
/// returned guard flushes the file writer when serving ends.
fn logging(config: &ServerConfig) -> Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| "info".into());
    let subscriber = tracing_subscriber::fmt().json().with_env_filter(filter);
    let Some(dir) = &config.log_dir else {
        let _ = subscriber.with_writer(std::io::stderr).try_init();
        return Ok(None);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating the log folder {}", dir.display()))?;
    let files = tracing_appender::rolling::RollingFileAppender::builder()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("cairn")
        .filename_suffix("log")
        .max_log_files(config.log_keep_files.max(1))
        .build(dir)
        .with_context(|| format!("opening a log file in {}", dir.display()))?;
    let (writer, guard) = tracing_appender::non_blocking(files);
    let _ = subscriber.with_writer(writer).try_init();
    Ok(Some(guard))
}
