//! Fuzzes what a realtime client sends that the library reads: epochs (a resume point's
//! history) and subscription specs as JSON. No input may panic; an epoch that parses writes
//! back to the same text and parses to itself. Run: `cargo fuzz run realtime` (from this
//! folder's parent).
#![no_main]

use cairn::{Epoch, WatchSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(epoch) = text.parse::<Epoch>() {
        let written = epoch.to_string();
        assert_eq!(written.parse::<Epoch>().expect("written back, it parses"), epoch);
    }
    if let Ok(spec) = serde_json::from_str::<WatchSpec>(text) {
        let again = serde_json::to_string(&spec).expect("a spec writes as JSON");
        assert_eq!(serde_json::from_str::<WatchSpec>(&again).expect("and reads back"), spec);
    }
});
