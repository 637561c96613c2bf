//! `cairn user create|list|disable|reset-password` and `cairn token create|list|revoke`:
//! who may use the store through `cairn serve`. Passwords come from `--password-file` (its
//! first line) or `CAIRN_PASSWORD`, never from the command line, where other users and shell
//! history would see them; a token is printed once, when it is made.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Context;
use crate::output::table;
use crate::UsageError;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Make a user. With --admin: the admin bootstrap — running it again changes nothing.
    Create(CreateArgs),
    /// Every user: name, role, disabled.
    List,
    /// Disable a user and revoke all its sessions and API keys.
    Disable {
        /// The user's name.
        name: String,
    },
    /// Give a user a new password (from --password-file or CAIRN_PASSWORD); its sessions are
    /// revoked.
    ResetPassword {
        /// The user's name.
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The user's name: 1 to 64 of letters, digits and . _ - @.
    name: String,
    /// Make an admin (idempotent: an existing admin of this name is left as it is).
    #[arg(long, conflicts_with = "role")]
    admin: bool,
    /// The role (default: user).
    #[arg(long)]
    role: Option<String>,
    #[command(flatten)]
    password: PasswordArgs,
}

#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// The password: the first line of this file (or set CAIRN_PASSWORD).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

impl PasswordArgs {
    fn read(&self) -> Result<zeroize::Zeroizing<String>> {
        // Read from the environment here, not as an argument: an argument could also be
        // given on the command line.
        let from_env = std::env::var("CAIRN_PASSWORD").ok().map(zeroize::Zeroizing::new);
        match (&self.password_file, &from_env) {
            (Some(path), None) => {
                let text = zeroize::Zeroizing::new(crate::input::read_text(path)?);
                Ok(zeroize::Zeroizing::new(text.lines().next().unwrap_or_default().to_string()))
            }
            (None, Some(text)) => Ok(zeroize::Zeroizing::new(text.to_string())),
            (None, None) => {
                Err(UsageError("give the password with --password-file FILE or CAIRN_PASSWORD".into()).into())
            }
            (Some(_), Some(_)) => Err(UsageError("give --password-file or CAIRN_PASSWORD, not both".into()).into()),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make an API key for a user; it is printed once.
    Create {
        /// Whose key it is.
        #[arg(long)]
        user: String,
        /// A name to tell keys apart.
        #[arg(long)]
        name: String,
        /// What the key may do: read (GET requests only) and/or write (repeatable; none:
        /// everything its user may).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Days until it stops working (default: never).
        #[arg(long)]
        expires_days: Option<u32>,
    },
    /// Sessions and API keys (never their secrets), newest first.
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a session or API key by its id.
    Revoke {
        /// The token's id (the 16 hex digits after `cairn_k_` or `cairn_s_`).
        id: String,
    },
}

pub fn run(ctx: &Context, command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Create(args) => {
            let password = args.password.read()?;
            let store = ctx.open_create()?;
            let (user, made) = if args.admin {
                store.bootstrap_admin(&args.name, &password)?
            } else {
                let role = args.role.as_deref().unwrap_or(cairn::User::DEFAULT_ROLE);
                (store.create_user(&args.name, &password, role)?, true)
            };
            ctx.out.show(&serde_json::json!({"user": user, "created": made}), || {
                if made {
                    println!("created {} ({})", user.name, user.role);
                } else {
                    println!("{} exists already as {}; nothing changed", user.name, user.role);
                }
            });
        }
        UserCommand::List => {
            let users = ctx.open_read()?.users()?;
            ctx.out.show(&users, || {
                let rows = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.name.clone(),
                            u.role.clone(),
                            if u.disabled { "disabled" } else { "" }.into(),
                            u.created_at.to_string(),
                        ]
                    })
                    .collect();
                println!("{}", table(&["name", "role", "", "created"], rows));
            });
        }
        UserCommand::Disable { name } => {
            let user = ctx.open_write()?.disable_user(&name)?;
            ctx.out.show(&user, || println!("disabled {}; its sessions and API keys are revoked", user.name));
        }
        UserCommand::ResetPassword { name, password } => {
            let password = password.read()?;
            let user = ctx.open_write()?.set_password(&name, &password, None)?;
            ctx.out.show(&user, || println!("new password set for {}; its sessions are revoked", user.name));
        }
    }
    Ok(())
}

pub fn run_token(ctx: &Context, command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create { user, name, scopes, expires_days } => {
            let expires_at =
                expires_days.map(|d| cairn::Timestamp(cairn::Timestamp::now().0 + i64::from(d) * 86_400_000));
            let options = cairn::ApiKeyOptions { name, scopes, expires_at };
            let issued = ctx.open_write()?.create_api_key(&user, &options)?;
            ctx.out.show(&serde_json::json!({"token": issued.secret, "info": issued.info}), || {
                println!("{}", issued.secret);
                eprintln!("API key {} for {user}: shown this once; store it now", issued.info.id);
            });
        }
        TokenCommand::List { user } => {
            let tokens = ctx.open_read()?.tokens(user.as_deref())?;
            ctx.out.show(&tokens, || {
                let rows = tokens
                    .iter()
                    .map(|t| {
                        let state = match (t.revoked_at, t.expires_at) {
                            (Some(at), _) => format!("revoked {at}"),
                            (None, Some(at)) => format!("expires {at}"),
                            (None, None) => String::new(),
                        };
                        let kind = match t.kind {
                            cairn::TokenKind::Session => "session",
                            cairn::TokenKind::ApiKey => "api key",
                        };
                        vec![
                            t.id.clone(),
                            kind.into(),
                            t.name.clone(),
                            t.scopes.join(" "),
                            t.created_at.to_string(),
                            state,
                        ]
                    })
                    .collect();
                println!("{}", table(&["id", "kind", "name", "scopes", "created", ""], rows));
            });
        }
        TokenCommand::Revoke { id } => {
            let token = ctx.open_write()?.revoke_token(&id)?;
            ctx.out.show(&token, || println!("revoked {}", token.id));
        }
    }
    Ok(())
}
