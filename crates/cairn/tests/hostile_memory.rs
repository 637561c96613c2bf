//! An export whose collection file is one 300 MB JSON Lines record is refused in bounded
//! memory: `records.max_body_bytes` applies while the line is read, not after it was
//! buffered. Its own test binary, so that the peak resident memory measured is this test's.

#[path = "support/rss.rs"]
mod rss;

use std::io::Write;

use cairn::{ExportOptions, ImportOptions, Store, StoreOptions};
use serde_json::json;
use sha2::{Digest, Sha256};

const RECORD_BYTES: usize = 300 << 20;

#[test]
fn a_300_mb_record_is_refused_in_bounded_memory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = Store::open(tmp.path().join("source"), StoreOptions::default()).expect("source");
    let schema = r#"{"name": "notes", "fields": [{"name": "title", "type": "text"}]}"#;
    source.create_collection(cairn::CollectionSchema::from_json(schema, "schema").expect("schema")).expect("create");
    source.create_with_id("notes", "a", json!({"title": "small"})).expect("record");
    let exp = tmp.path().join("exp");
    source.export(&exp, &ExportOptions::default(), &mut |_, _, _| {}).expect("export");
    source.close().expect("close");

    // The collection file becomes one record of 300 MB, written and hashed in chunks, and
    // declared honestly in the manifest.
    let manifest_path = exp.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("manifest")).expect("json");
    let rel = manifest["collections"][0]["file"]["path"].as_str().expect("path").to_string();
    let mut file = std::io::BufWriter::new(std::fs::File::create(exp.join(&rel)).expect("create"));
    let mut hash = Sha256::new();
    let mut put = |bytes: &[u8]| {
        hash.update(bytes);
        file.write_all(bytes).expect("write");
    };
    put(br#"{"id":"big","version":1,"body":{"title":""#);
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..RECORD_BYTES >> 20 {
        put(&chunk);
    }
    put(b"\"}}\n");
    file.flush().expect("flush");
    drop(file);
    let bytes = std::fs::metadata(exp.join(&rel)).expect("size").len();
    manifest["collections"][0]["file"]["bytes"] = json!(bytes);
    manifest["collections"][0]["file"]["sha256"] =
        json!(hash.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>());
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).expect("json")).expect("write manifest");

    let store = Store::open(tmp.path().join("store"), StoreOptions::default()).expect("store");
    let err = store.import(&exp, &ImportOptions::default(), &mut |_, _, _| {}).expect_err("too long");
    assert!(err.to_string().contains("records.max_body_bytes"), "{err}");
    assert!(store.collections().expect("collections").is_empty(), "nothing was imported");
    let peak = rss::peak_rss_mib();
    assert!(peak < 200, "peak resident memory {peak} MiB for a {} MiB record", RECORD_BYTES >> 20);
}
