//! Reading JSON and schema input from arguments, files and stdin.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::UsageError;

/// Reads text from a file, or from stdin when the path is `-`.
pub fn read_text(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// A JSON body given inline, or with `--file` (a path or `-` for stdin).
pub fn json_arg(inline: Option<&str>, file: Option<&Path>, what: &str) -> Result<Value> {
    let (text, source) = match (inline, file) {
        (Some(_), Some(_)) => return Err(UsageError(format!("give the {what} inline or with --file, not both")).into()),
        (Some("-"), None) => (read_text(Path::new("-"))?, "stdin".to_string()),
        (Some(text), None) => (text.to_string(), format!("the {what} argument")),
        (None, Some(path)) => (read_text(path)?, path.display().to_string()),
        (None, None) => {
            return Err(
                UsageError(format!("the {what} is missing: give it as JSON, `-` for stdin, or --file PATH")).into()
            )
        }
    };
    Ok(cairn::json::parse(&text, &source)?)
}

/// A collection schema from a `.json` or `.toml` file (or JSON on stdin).
pub fn schema_file(path: &Path) -> Result<cairn::CollectionSchema> {
    let text = read_text(path)?;
    let name = path.display().to_string();
    let is_toml = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    Ok(if is_toml {
        cairn::CollectionSchema::from_toml(&text, &name)?
    } else {
        cairn::CollectionSchema::from_json(&text, &name)?
    })
}
