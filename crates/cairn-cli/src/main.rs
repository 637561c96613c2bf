//! `cairn`: the command-line face of the cairn library. Commands parse arguments, call the
//! library and format its answers; no behaviour lives here.
//!
//! Exit codes: 0 ok, 1 error, 2 usage, 3 version conflict, 4 not found, 5 corruption detected,
//! 6 key locked or wrong, 7 finished but incomplete (an import skipped something).

mod commands;
mod input;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::output::Output;

/// cairn: a local-first data engine that does not lose data.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about = "A local-first data engine that does not lose data", after_help = EXIT_CODES)]
pub struct Cli {
    /// Data directory of the store.
    #[arg(long, global = true, env = "CAIRN_DIR", value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,

    /// Actor recorded in the change log for writes.
    #[arg(long, global = true, env = "CAIRN_ACTOR", default_value = "cli")]
    actor: String,

    /// Do not take automatic backups (see the backup.* settings).
    #[arg(long, global = true, env = "CAIRN_NO_AUTO_BACKUP")]
    no_auto_backup: bool,

    /// Open a store whose store.db, -wal, -shm, blobs/, backups/ or quarantine/ is a symbolic
    /// link (e.g. attachments kept on another disk); without it such a store is refused.
    #[arg(long, global = true, env = "CAIRN_ALLOW_LINKS")]
    allow_links: bool,

    /// Seconds a write waits for another process that is writing to the store.
    #[arg(long, global = true, env = "CAIRN_WAIT", value_name = "SECS", default_value_t = 5.0)]
    wait: f64,

    /// Key file that opens the store's encryption key (see `cairn key`).
    #[arg(long, global = true, env = "CAIRN_KEY_FILE", value_name = "FILE")]
    key_file: Option<PathBuf>,

    /// File whose first line is the passphrase that opens the store's encryption key; or set
    /// CAIRN_PASSPHRASE.
    #[arg(long, global = true, env = "CAIRN_PASSPHRASE_FILE", value_name = "FILE")]
    passphrase_file: Option<PathBuf>,

    #[command(subcommand)]
    command: commands::Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 error, 2 usage, 3 version conflict, 4 not found, 5 corruption detected, 6 key locked or wrong, 7 finished but incomplete (an import skipped something).";

/// A mistake in how the command was called (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Work that finished but did not do all it was asked (exit code 7): an import that skipped
/// records. What was skipped has been printed.
#[derive(Debug)]
pub struct Incomplete(pub String);

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Incomplete {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output::new(cli.json);
    let dir = match cli.dir.clone().or_else(|| dirs::data_dir().map(|d| d.join("cairn"))) {
        Some(dir) => dir,
        None => {
            out.error("no data directory: pass --dir DIR or set CAIRN_DIR", None);
            return ExitCode::from(2);
        }
    };
    let key = commands::KeySource {
        key_file: cli.key_file,
        passphrase_file: cli.passphrase_file,
        passphrase: std::env::var("CAIRN_PASSPHRASE").ok(),
    };
    let wait = std::time::Duration::try_from_secs_f64(cli.wait.max(0.0)).unwrap_or(std::time::Duration::MAX);
    let ctx = commands::Context {
        dir,
        wait,
        actor: cli.actor,
        out,
        auto_backup: !cli.no_auto_backup,
        allow_links: cli.allow_links,
        key,
    };
    // A reader that went away (`cairn list … | head -1`) ends the output quietly: printing
    // panics on a broken pipe, and that panic is caught here, after the store was closed by
    // unwinding, instead of being shown.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_pipe(info.payload()) {
            default_hook(info);
        }
    }));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commands::run(&ctx, cli.command)));
    let result = match outcome {
        Ok(result) => result,
        Err(payload) if is_broken_pipe(payload.as_ref()) => return ExitCode::SUCCESS,
        Err(payload) => std::panic::resume_unwind(payload),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            ctx.out.error(&message(&e), hint(&e).as_deref());
            if let Some(snippet) = e.downcast_ref::<cairn::Error>().and_then(cairn::Error::filter_snippet) {
                if !ctx.out.json {
                    eprintln!("{snippet}");
                }
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// True for the panic `println!` raises when standard output is a closed pipe.
fn is_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    text.contains("Broken pipe") || text.contains("os error 32")
}

/// The error and its causes, each said once: cairn's errors already name their cause (an OS
/// error) in their message, which the chain would repeat.
fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for part in e.chain().map(|c| c.to_string()) {
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// The exit code of a failed command: from the library error's kind (README, "Exit codes").
fn exit_code(e: &anyhow::Error) -> u8 {
    use cairn::ErrorKind as K;
    if e.downcast_ref::<UsageError>().is_some() {
        return 2;
    }
    if e.downcast_ref::<Incomplete>().is_some() {
        return 7;
    }
    let Some(err) = e.downcast_ref::<cairn::Error>() else { return 1 };
    match err.kind() {
        K::Conflict => 3,
        K::NotFound => 4,
        K::Corruption => 5,
        K::KeyLocked | K::WrongKey => 6,
        // A filter or query is a command-line argument: a mistake in it is a usage error.
        K::InvalidInput if matches!(err, cairn::Error::InvalidFilter { .. } | cairn::Error::InvalidQuery(_)) => 2,
        _ => 1,
    }
}

/// What to do next, in the CLI's terms: the library's messages say what went wrong and where,
/// never which command or flag to use.
fn hint(e: &anyhow::Error) -> Option<String> {
    use cairn::Error as E;
    let err = e.downcast_ref::<cairn::Error>()?;
    let text = match err {
        E::NoStore { .. } => "create one with `cairn init` (or try `cairn demo`); --dir chooses the directory".into(),
        E::NotFound { collection, id, deleted: true } => {
            format!("see `cairn history {collection} {id}`; `cairn revert {collection} {id} VERSION` brings it back")
        }
        E::BackupNotFound { .. } => "see `cairn backup list`".into(),
        E::ConfirmationRequired { token: Some(token), .. } => format!("add --confirm {token}"),
        E::Locked { .. } => "wait longer with --wait SECS, or read with a read-only command".into(),
        E::KeyLocked { .. } => {
            "give --key-file, --passphrase-file or CAIRN_PASSPHRASE (`cairn key` manages the key)".into()
        }
        E::Conflict { collection, id, .. } => {
            format!("read `cairn get {collection} {id}` again and retry with its current version")
        }
        E::PathExists { .. } => "choose another path, or add --force where the command has it".into(),
        _ if err.kind() == cairn::ErrorKind::Corruption => {
            "run `cairn check` for the whole picture, then `cairn repair` (damaged state is copied into quarantine first)"
                .into()
        }
        _ => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command and every argument a user can give says what it is for.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if command.get_about().is_none() && path != "cairn" {
                missing.push(format!("command `{path}`"));
            }
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("`{path}` argument `{}`", arg.get_id()));
                }
            }
            for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "cairn", &mut missing);
        assert!(missing.is_empty(), "without help text:\n{}", missing.join("\n"));
    }
}
