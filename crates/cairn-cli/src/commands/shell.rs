//! `cairn completions` and `cairn man`: shell completions (clap_complete) and manual pages
//! (clap_mangen), generated from the same argument definitions the binary parses.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, CommandFactory};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write one page per command (cairn.1, cairn-backup.1, …) into this folder instead of
    /// printing the main page.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Prints the completion script for `shell` (e.g. `cairn completions bash > /etc/bash_completion.d/cairn`).
pub fn completions(args: CompletionsArgs) -> Result<()> {
    let mut command = crate::Cli::command();
    clap_complete::generate(args.shell, &mut command, "cairn", &mut std::io::stdout());
    Ok(())
}

/// Prints the manual page, or writes every command's into a folder.
pub fn man(args: ManArgs) -> Result<()> {
    let command = crate::Cli::command();
    let Some(out) = args.out else {
        clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
        return Ok(());
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut pages = vec![("cairn".to_string(), command.clone())];
    for sub in command.get_subcommands() {
        pages.push((format!("cairn-{}", sub.get_name()), sub.clone().name(format!("cairn-{}", sub.get_name()))));
    }
    for (name, page) in pages {
        let path = out.join(format!("{name}.1"));
        let mut bytes = Vec::new();
        clap_mangen::Man::new(page).render(&mut bytes)?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
