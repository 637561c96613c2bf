//! `cairn key init|unlock|rotate|status|generate-file`: the key that encrypts fields flagged
//! `encrypted`. The secret comes from `--key-file`, `--passphrase-file` or `CAIRN_PASSPHRASE`
//! (never from the command line, where other users and shell history would see it); every
//! command given one unlocks the store with it.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Context;
use crate::output::table;
use crate::UsageError;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create the store's key, wrapped under the secret given (--key-file, --passphrase-file
    /// or CAIRN_PASSPHRASE).
    Init,
    /// Check that the secret given opens the store's key. Every cairn command given the
    /// secret unlocks the store for what it does; nothing stays unlocked afterwards.
    Unlock,
    /// Wrap the key under a new secret, and/or (--reencrypt) seal every value again under a
    /// new data key and retire the old one. One transaction; the current secret is needed.
    Rotate(RotateArgs),
    /// The keyring, the encrypted fields, and whether the secret given opens the key.
    Status,
    /// Write a new random key file (readable by its owner only) for `--key-file`.
    GenerateFile {
        /// Where to write it; an existing file is never overwritten.
        path: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The new passphrase: the first line of this file (or set CAIRN_NEW_PASSPHRASE).
    #[arg(long, value_name = "FILE", conflicts_with = "new_key_file")]
    new_passphrase_file: Option<PathBuf>,
    /// A key file to wrap the key under from now on.
    #[arg(long, value_name = "FILE")]
    new_key_file: Option<PathBuf>,
    /// Make a new data key, seal every value (records and their history) again with it and
    /// remove the old one.
    #[arg(long)]
    reencrypt: bool,
}

pub fn run(ctx: &Context, command: KeyCommand) -> Result<()> {
    match command {
        KeyCommand::GenerateFile { path } => {
            cairn::generate_key_file(&path)?;
            let report = serde_json::json!({"key_file": path});
            ctx.out.show(&report, || {
                println!(
                    "wrote {}; keep a copy somewhere safe: without it the encrypted fields cannot be read",
                    path.display()
                )
            });
            Ok(())
        }
        KeyCommand::Init => {
            let secret = ctx.key.secret()?.ok_or_else(no_secret)?;
            let store = ctx.open_write()?;
            let status = store.key_init(&secret)?;
            print_status(ctx, &status);
            Ok(())
        }
        KeyCommand::Unlock => {
            if ctx.key.secret()?.is_none() {
                return Err(no_secret());
            }
            // Opening unlocks with the secret given, or fails with `wrong key`.
            let store = ctx.open_write_or_read()?;
            let status = store.key_status()?;
            if !status.initialized {
                return Err(
                    cairn::Error::NotAllowed("this store has no key; create one with `cairn key init`".into()).into()
                );
            }
            print_status(ctx, &status);
            Ok(())
        }
        KeyCommand::Rotate(args) => {
            if ctx.key.secret()?.is_none() {
                return Err(no_secret());
            }
            let new_secret =
                match (&args.new_passphrase_file, &args.new_key_file, std::env::var("CAIRN_NEW_PASSPHRASE")) {
                    (Some(path), None, _) => Some(super::passphrase_from_file(path)?),
                    (None, Some(path), _) => Some(cairn::Secret::key_file(path)),
                    (None, None, Ok(text)) => Some(cairn::Secret::passphrase(text)),
                    _ => None,
                };
            let store = ctx.open_write()?;
            let rotation = match new_secret {
                Some(secret) if args.reencrypt => cairn::Rotation::reencrypt(Some(secret)),
                Some(secret) => cairn::Rotation::rewrap(secret),
                None if args.reencrypt => cairn::Rotation::reencrypt(None),
                None => {
                    return Err(UsageError(
                        "give a new secret (--new-passphrase-file, --new-key-file or CAIRN_NEW_PASSPHRASE), --reencrypt, or both".into(),
                    )
                    .into())
                }
            };
            let report = store.rotate_key(&rotation)?;
            ctx.out.show(&report, || {
                println!("active key {}", report.active);
                if report.rewrapped {
                    println!("wrapped under the new secret; the old one no longer opens the store");
                }
                if !report.retired.is_empty() {
                    println!(
                        "sealed {} value(s) in {} change-log entries again; retired {}",
                        report.values,
                        report.entries,
                        report.retired.join(", ")
                    );
                    println!("backups taken before still hold the old key, wrapped under the secret of their time");
                }
            });
            Ok(())
        }
        KeyCommand::Status => {
            let store = ctx.open_write_or_read()?;
            print_status(ctx, &store.key_status()?);
            Ok(())
        }
    }
}

fn no_secret() -> anyhow::Error {
    UsageError("give the secret with --key-file, --passphrase-file or CAIRN_PASSPHRASE".into()).into()
}

fn print_status(ctx: &Context, status: &cairn::KeyStatus) {
    ctx.out.show(status, || {
        if !status.initialized {
            println!("no key (create one with `cairn key init`)");
        } else {
            println!(
                "key: {} ({}), {}",
                status.method.as_deref().unwrap_or("?"),
                status.derivation.as_deref().unwrap_or("?"),
                if status.unlocked { "unlocked by the secret given" } else { "locked (no secret given)" }
            );
            let rows = status
                .keys
                .iter()
                .map(|k| vec![k.id.clone(), k.created_at.to_string(), if k.active { "active" } else { "" }.to_string()])
                .collect();
            println!("{}", table(&["key", "created", ""], rows));
        }
        if status.encrypted_fields.is_empty() {
            println!("no field is encrypted");
        } else {
            println!("encrypted fields (not indexable, not searchable): {}", status.encrypted_fields.join(", "));
        }
    });
}
