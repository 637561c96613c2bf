//! Human tables or JSON, chosen once by `--json`.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    /// Prints `value` as JSON (with `--json`) or runs `human` to print it for people.
    pub fn show<T: Serialize>(&self, value: &T, human: impl FnOnce()) {
        self.print(value, serde_json::to_string_pretty, human);
    }

    /// One JSON line per item (for streams like `changes --follow`).
    pub fn line<T: Serialize>(&self, value: &T, human: impl FnOnce()) {
        self.print(value, serde_json::to_string, human);
    }

    fn print<T: Serialize>(&self, value: &T, to_json: fn(&T) -> serde_json::Result<String>, human: impl FnOnce()) {
        if !self.json {
            return human();
        }
        match to_json(value) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: cannot print JSON: {e}"),
        }
    }

    /// Prints an error, and what to do about it when there is a hint.
    pub fn error(&self, message: &str, hint: Option<&str>) {
        if self.json {
            let mut out = serde_json::json!({ "error": message });
            if let Some(hint) = hint {
                out["hint"] = hint.into();
            }
            eprintln!("{out}");
        } else {
            eprintln!("error: {message}");
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
        }
    }
}

pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    table
}

/// Shortens `text` to at most `max` characters for a table cell.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}
