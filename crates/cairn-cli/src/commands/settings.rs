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
    /// Print one setting's value.
    Get { key: String },
    /// Set a setting (VALUE is JSON; for text settings plain words are fine).
    Set { key: String, value: String },
    /// Put a setting back to its default.
    Reset { key: String },
    /// Define an application setting.
    Define {
        key: String,
        #[arg(long = "type", value_parser = parse_type)]
        kind: SettingType,
        /// Default value (JSON, or plain text for text settings).
        #[arg(long)]
        default: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        min: Option<f64>,
        #[arg(long)]
        max: Option<f64>,
        /// Allowed values, comma-separated.
        #[arg(long, value_delimiter = ',')]
        choices: Vec<String>,
    },
}

fn parse_type(text: &str) -> std::result::Result<SettingType, String> {
    serde_json::from_value(Value::String(text.to_string()))
        .map_err(|_| "one of text, integer, number, bool, datetime, json".to_string())
}

/// Parses a value typed on the command line: JSON, or plain text for text settings.
fn value_arg(kind: SettingType, text: &str) -> Result<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::String(s)) => Ok(Value::String(s)),
        _ if matches!(kind, SettingType::Text | SettingType::Datetime) => Ok(Value::String(text.to_string())),
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
        SettingsCommand::Get { key } => {
            let setting = ctx.open_read()?.setting(&key)?;
            ctx.out.show(&setting, || println!("{}", setting.value));
        }
        SettingsCommand::Set { key, value } => {
            let store = ctx.open_write()?;
            let kind = store.setting(&key)?.def.kind;
            store.set_setting(&key, value_arg(kind, &value)?)?;
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
            let def = SettingDef {
                key: key.clone(),
                kind,
                default: value_arg(kind, &default)?,
                description,
                min,
                max,
                choices,
            };
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
