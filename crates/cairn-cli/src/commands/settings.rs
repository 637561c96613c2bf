use anyhow::Result;
use cairn::{Setting, SettingDef, SettingType};
use clap::Subcommand;
use serde_json::Value;

use super::Context;
use crate::output::{clip, table};
use crate::UsageError;

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// List every setting with its value and default.
    List,
    /// Print one setting's value (a secret one masked, unless --reveal).
    Get {
        /// The setting's key, e.g. records.max_body_bytes.
        key: String,
        /// Print a secret setting's value in the clear (needs the store's key).
        #[arg(long)]
        reveal: bool,
    },
    /// Set a setting (VALUE is JSON; for text settings plain words are fine). A secret
    /// setting's value is read from --value-file or standard input, never from the command
    /// line, and stored sealed with the store's key.
    Set {
        /// The setting's key.
        key: String,
        /// The new value (not for secret settings).
        value: Option<String>,
        /// Read the value from this file (its first line), or `-` for standard input.
        #[arg(long, value_name = "FILE", conflicts_with = "value")]
        value_file: Option<std::path::PathBuf>,
    },
    /// Put a setting back to its default.
    Reset {
        /// The setting's key.
        key: String,
    },
    /// Define an application setting.
    Define {
        /// The new setting's key: dot-separated names of a-z, 0-9 and _ (e.g. ui.theme).
        key: String,
        /// text, integer, number, bool, datetime, json or secret.
        #[arg(long = "type", value_parser = parse_type)]
        kind: SettingType,
        /// Default value (JSON, or plain text for text settings); none for secret settings.
        #[arg(long)]
        default: Option<String>,
        /// What the setting is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Smallest allowed value (numbers).
        #[arg(long)]
        min: Option<f64>,
        /// Largest allowed value (numbers).
        #[arg(long)]
        max: Option<f64>,
        /// Allowed values, comma-separated.
        #[arg(long, value_delimiter = ',')]
        choices: Vec<String>,
    },
}

fn parse_type(text: &str) -> std::result::Result<SettingType, String> {
    serde_json::from_value(Value::String(text.to_string()))
        .map_err(|_| "one of text, integer, number, bool, datetime, json, secret".to_string())
}

/// Parses a value typed on the command line: JSON, or plain text for text settings.
fn value_arg(kind: SettingType, text: &str) -> Result<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::String(s)) => Ok(Value::String(s)),
        _ if matches!(kind, SettingType::Text | SettingType::Datetime | SettingType::Secret) => {
            Ok(Value::String(text.to_string()))
        }
        Ok(v) => Ok(v),
        Err(e) => Err(UsageError(format!("{text:?} is not a JSON value: {e}")).into()),
    }
}

pub fn run(ctx: &Context, cmd: SettingsCommand) -> Result<()> {
    match cmd {
        SettingsCommand::List => {
            let settings = ctx.open_read()?.settings()?;
            ctx.out.show(&settings, || {
                let rows = settings
                    .iter()
                    .map(|s| {
                        let value = if s.is_default { format!("{} (default)", s.value) } else { s.value.to_string() };
                        vec![s.def.key.clone(), kind_name(s), value, clip(&s.def.description, 50)]
                    })
                    .collect();
                println!("{}", table(&["key", "type", "value", "description"], rows));
            });
        }
        SettingsCommand::Get { key, reveal: true } => {
            let store = ctx.open_read()?;
            let Some(secret) = store.secret(&key)? else {
                return Err(cairn::Error::InvalidSetting { key, reason: "the secret was never set".into() }.into());
            };
            let value = serde_json::json!({ "key": key, "value": secret.as_str() });
            ctx.out.show(&value, || println!("{}", secret.as_str()));
        }
        SettingsCommand::Get { key, reveal: false } => {
            let setting = ctx.open_read()?.setting(&key)?;
            ctx.out.show(&setting, || println!("{}", setting.value));
        }
        SettingsCommand::Set { key, value, value_file } => {
            let store = ctx.open_write()?;
            let kind = store.setting(&key)?.def.kind;
            let text = match (value, value_file) {
                (Some(_), _) if kind == SettingType::Secret => {
                    return Err(UsageError(format!(
                        "`{key}` is a secret setting: give its value with --value-file FILE (or `-` for standard input), not on the command line"
                    ))
                    .into())
                }
                (Some(text), _) => zeroize::Zeroizing::new(text),
                (None, Some(path)) => {
                    let text = zeroize::Zeroizing::new(crate::input::read_text(&path)?);
                    zeroize::Zeroizing::new(text.lines().next().unwrap_or_default().to_string())
                }
                (None, None) => return Err(UsageError("give the value, or --value-file FILE".into()).into()),
            };
            store.set_setting(&key, value_arg(kind, &text)?)?;
            let setting = store.setting(&key)?;
            ctx.out.show(&setting, || println!("{key} = {}", setting.value));
        }
        SettingsCommand::Reset { key } => {
            let store = ctx.open_write()?;
            store.reset_setting(&key)?;
            let setting = store.setting(&key)?;
            ctx.out.show(&setting, || println!("{key} = {} (default)", setting.value));
        }
        SettingsCommand::Define { key, kind, default, description, min, max, choices } => {
            let choices = if choices.is_empty() {
                None
            } else {
                Some(choices.iter().map(|c| value_arg(kind, c)).collect::<Result<Vec<_>>>()?)
            };
            let default = match default {
                Some(text) => value_arg(kind, &text)?,
                None if kind == SettingType::Secret => Value::Null,
                None => return Err(UsageError("give the setting's default with --default".into()).into()),
            };
            let def = SettingDef { key: key.clone(), kind, default, description, min, max, choices };
            let store = ctx.open_write()?;
            store.define_setting(def)?;
            let setting = store.setting(&key)?;
            ctx.out.show(&setting, || println!("defined {key} ({}) = {}", kind_name(&setting), setting.value));
        }
    }
    Ok(())
}

fn kind_name(s: &Setting) -> String {
    serde_json::to_value(s.def.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}
