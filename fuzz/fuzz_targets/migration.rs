//! Fuzzes the migration file reader (TOML and JSON) and the seed reader: no input may panic;
//! a bad one is an `InvalidMigration` / `InvalidInput` error naming the file. Run:
//! `cargo fuzz run migration` (from this folder's parent).
#![no_main]

use cairn::{Error, Migration, Seed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    match Migration::parse(1, "fuzz", text, first % 2 == 0, "0001_fuzz") {
        Ok(m) => assert_eq!(m.checksum().len(), 64),
        Err(Error::InvalidMigration { source_name, .. }) => assert_eq!(source_name, "0001_fuzz"),
        Err(other) => panic!("unexpected error kind: {other}"),
    }
    if let Ok(value) = serde_json::from_str(text) {
        match Seed::from_value(value, "seed.json") {
            Ok(_) | Err(Error::InvalidInput { .. } | Error::InvalidId { .. }) => {}
            Err(other) => panic!("unexpected seed error kind: {other}"),
        }
    }
});
