//! Taskerino on cairn: the desktop app whose storage plan (seed 004) cairn was founded on.
//!
//! Everything here is built on cairn's public API only, as any application's own code would be:
//! - [`schema`]: Taskerino's collections as cairn schemas;
//! - [`demo`]: a store filled with realistic, repeatable sample data (`cairn demo`);
//! - [`import`]: the importer for the app's legacy data folder or export file
//!   (`cairn import-legacy`).

pub mod demo;
mod import;
pub mod schema;

pub use import::{import, BackupOnly, LegacyOptions, LegacyReport};
