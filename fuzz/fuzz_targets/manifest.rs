//! Fuzzes the backup manifest reader: no input may panic; anything that parses must be a
//! manifest whose checksum matches. Run: `cargo fuzz run manifest` (from this folder's parent).
#![no_main]

use cairn::{Error, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Manifest::parse(data, "manifest.json") {
        Ok(manifest) => assert_eq!(manifest.format, cairn::MANIFEST_FORMAT),
        Err(Error::InvalidInput { .. } | Error::Corruption { .. }) => {}
        Err(other) => panic!("unexpected error kind: {other}"),
    }
});
