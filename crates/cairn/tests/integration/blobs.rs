//! Attachments: deduplication, reference counts (against a reference model), collection after
//! the grace period, compression choices, corruption detection and upload refusals.

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;

use cairn::{Codec, CollectionSchema, Error, Store, Upload};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::temp_store;

fn docs_schema() -> CollectionSchema {
    CollectionSchema::from_json(
        r#"{"name": "docs", "fields": [
            {"name": "title", "type": "text", "summary": true},
            {"name": "file", "type": "attachment"},
            {"name": "files", "type": "attachments"}]}"#,
        "docs schema",
    )
    .expect("schema")
}

fn with_docs() -> (tempfile::TempDir, Store) {
    let (dir, store) = temp_store();
    store.create_collection(docs_schema()).expect("docs");
    (dir, store)
}

fn upload(name: &str) -> Upload {
    Upload { name: name.into(), mime: None }
}

fn read_all(store: &Store, hash: &str) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    store.open_blob(hash).expect("open blob").read_to_end(&mut out)?;
    Ok(out)
}

const NOW: Option<Duration> = Some(Duration::ZERO);

#[test]
fn the_same_content_is_stored_once_and_collected_only_when_unlinked() {
    let (_dir, store) = with_docs();
    for id in ["a", "b"] {
        store.create_with_id("docs", id, json!({"title": id})).expect("doc");
    }
    let content = b"quarterly report, the same bytes twice ".repeat(100);
    let (_, first) = store.attach("docs", "a", "file", &content[..], &upload("report.txt")).expect("attach a");
    let (record, second) = store.attach("docs", "b", "files", &content[..], &upload("copy.txt")).expect("attach b");
    assert_eq!(first.hash, second.hash);
    assert_eq!(record.body["files"][0]["name"], "copy.txt");
    assert_eq!(store.blobs(None, 10).expect("ls").len(), 1, "stored once");
    assert_eq!(store.blob(&first.hash).expect("stat").refs, 2);
    assert_eq!(read_all(&store, first.hash.as_str()).expect("read"), content);

    store.delete("docs", "a", None).expect("delete a");
    assert_eq!(store.blob(&first.hash).expect("stat").refs, 1);
    let report = store.gc_blobs(&cairn::GcOptions { grace: NOW, dry_run: false }).expect("gc");
    assert!(report.removed.is_empty(), "a linked blob is never collected");

    store.delete("docs", "b", None).expect("delete b");
    let info = store.blob(&first.hash).expect("stat");
    assert_eq!((info.refs, info.unreferenced_since.is_some()), (0, true));
    let kept = store.gc_blobs(&cairn::GcOptions { grace: None, dry_run: false }).expect("gc with the default grace");
    assert_eq!((kept.removed.len(), kept.kept_in_grace), (0, 1), "within the grace period");
    let dry = store.gc_blobs(&cairn::GcOptions { grace: NOW, dry_run: true }).expect("dry run");
    assert_eq!(dry.removed.len(), 1);
    assert!(store.blob(&first.hash).is_ok(), "a dry run removes nothing");
    let removed = store.gc_blobs(&cairn::GcOptions { grace: NOW, dry_run: false }).expect("gc");
    assert_eq!(removed.removed.iter().map(|b| b.hash.as_str()).collect::<Vec<_>>(), [first.hash.as_str()]);
    assert!(matches!(store.blob(&first.hash), Err(Error::BlobNotFound { .. })));
    assert!(store.verify_blobs(&mut |_, _, _| {}).expect("verify").unlisted_files.is_empty(), "its file is gone");

    // Bringing back a record whose blob was collected fails and names what is missing.
    let err = store.undo("docs", "b").expect_err("the blob is gone");
    assert!(
        matches!(&err, Error::Validation { field: Some(f), .. } if f == "files")
            && err.to_string().contains(first.hash.as_str()),
        "{err}"
    );
    assert!(store.get("docs", "b").is_err(), "b stays deleted");
}

#[test]
fn links_must_point_at_stored_blobs() {
    let (_dir, store) = with_docs();
    let missing = "ab".repeat(32);
    let err = store
        .create_with_id("docs", "x", json!({"file": {"hash": missing, "name": "x.bin"}}))
        .expect_err("no such blob");
    assert!(
        matches!(&err, Error::Validation { id: Some(id), field: Some(f), .. } if id == "x" && f == "file"),
        "{err}"
    );
    let blob = store.put_blob(&b"hello"[..]).expect("put");
    assert_eq!(blob.refs, 0);
    let record =
        store.create_with_id("docs", "x", json!({"file": {"hash": blob.hash, "name": "x.txt"}})).expect("link");
    assert_eq!(store.blob(&blob.hash).expect("stat").refs, 1);
    // One transaction: a failure later in it undoes the link.
    let failed = store.transaction(move |tx| {
        tx.patch("docs", "x", &json!({"files": [{"hash": blob.hash, "name": "again.txt"}]}), None)?;
        tx.create("docs", Some("x"), json!({}))
    });
    assert!(matches!(failed, Err(Error::AlreadyExists { .. })));
    assert_eq!(store.blob(record.body["file"]["hash"].as_str().expect("hash")).expect("stat").refs, 1);
}

#[test]
fn content_is_compressed_only_when_it_pays() {
    let (_dir, store) = temp_store();
    let text = b"The checkout flow drops the second payment attempt. ".repeat(2000);
    let compressed = store.put_blob(&text[..]).expect("text");
    assert_eq!(compressed.codec, Codec::Zstd);
    assert!(compressed.stored_size * 4 < compressed.size, "{compressed:?}");
    assert_eq!(read_all(&store, compressed.hash.as_str()).expect("read"), text);

    let mut png = b"\x89PNG\r\n\x1A\n".to_vec();
    png.extend(std::iter::repeat_n(0u8, 50_000));
    let image = store.put_blob(&png[..]).expect("png");
    assert_eq!(image.codec, Codec::Raw, "PNG is compressed already: stored as is");

    let mut rng = fastrand::Rng::with_seed(7);
    let noise: Vec<u8> = (0..300_000).map(|_| rng.u8(..)).collect();
    let random = store.put_blob(&noise[..]).expect("noise");
    assert_eq!((random.codec, random.stored_size), (Codec::Raw, 300_000), "incompressible");
    assert_eq!(read_all(&store, random.hash.as_str()).expect("read"), noise);

    let empty = store.put_blob(&b""[..]).expect("empty");
    assert_eq!(empty.hash, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert!(read_all(&store, empty.hash.as_str()).expect("read").is_empty());
}

/// Flips one byte of a blob's file on disk.
fn damage(store: &Store, hash: &str, codec: Codec) {
    let name = if codec == Codec::Zstd { format!("{hash}.zst") } else { hash.to_string() };
    let path = store.dir().join("blobs").join(&hash[..2]).join(&hash[2..4]).join(name);
    let mut bytes = std::fs::read(&path).expect("blob file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, bytes).expect("write damage");
}

#[test]
fn damaged_blobs_are_detected_by_get_and_verify() {
    let (dir, store) = temp_store();
    let raw = store.put_blob(&(0..=255u8).cycle().take(100_000).collect::<Vec<_>>()[..]).expect("raw");
    let packed = store.put_blob(&b"compressible line\n".repeat(5000)[..]).expect("zstd");
    let fine = store.put_blob(&b"untouched"[..]).expect("fine");
    assert!(store.verify_blobs(&mut |_, _, _| {}).expect("verify").is_ok());
    damage(&store, raw.hash.as_str(), raw.codec);
    damage(&store, packed.hash.as_str(), packed.codec);

    for hash in [raw.hash.as_str(), packed.hash.as_str()] {
        let err = read_all(&store, hash).expect_err("damaged content must not read back");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
        let out = dir.path().join("out.bin");
        let err = store.export_blob(hash, &out, false).expect_err("export refuses");
        assert!(err.is_corruption(), "{err}");
        assert!(!out.exists(), "no file is left behind");
    }
    let mut calls = 0;
    let report = store
        .verify_blobs(&mut |_, _, total| {
            calls += 1;
            assert_eq!(total, 3);
        })
        .expect("verify");
    assert_eq!(calls, 3, "progress after each blob");
    let corrupt: BTreeSet<&str> = report.corrupt.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(corrupt, [raw.hash.as_str(), packed.hash.as_str()].into());
    assert!(!report.is_ok());
    assert_eq!(read_all(&store, fine.hash.as_str()).expect("read"), b"untouched");

    // A missing file is reported too.
    let path = dir
        .path()
        .join("store/blobs")
        .join(&fine.hash.as_str()[..2])
        .join(&fine.hash.as_str()[2..4])
        .join(fine.hash.as_str());
    std::fs::remove_file(path).expect("remove");
    assert_eq!(store.verify_blobs(&mut |_, _, _| {}).expect("verify").missing, std::slice::from_ref(&fine.hash));
    assert!(store.open_blob(&fine.hash).expect_err("missing").is_corruption());
}

#[test]
fn uploads_are_refused_with_clear_errors() {
    let (_dir, store) = with_docs();
    store.create_with_id("docs", "d", json!({"title": "d"})).expect("doc");
    let png = b"\x89PNG\r\n\x1A\n0000000000000000".to_vec();
    let attach = |name: &str, mime: Option<&str>, content: &[u8]| {
        store.attach("docs", "d", "file", content, &Upload { name: name.into(), mime: mime.map(String::from) })
    };
    let refused = |result: cairn::Result<(cairn::Record, cairn::Attachment)>, needle: &str| {
        let err = result.expect_err("refused");
        assert!(matches!(err, Error::InvalidUpload { .. }), "{err}");
        assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
    };
    refused(attach("photo.jpg", Some("image/jpeg"), &png), "content is image/png");
    refused(attach("photo.png", Some("image/png"), b"just text"), "does not start like one");
    refused(attach("../../etc/passwd", None, b"x"), "path traversal");
    refused(attach("a/b.txt", None, b"x"), "folders");
    refused(attach("bell\u{7}.txt", None, b"x"), "control characters");
    refused(attach("", None, b"x"), "required");
    refused(attach("CON.txt", None, b"x"), "reserved");
    refused(attach(&"n".repeat(300), None, b"x"), "255 bytes");
    refused(attach("x.bin", Some("nonsense"), b"x"), "not a MIME type");

    store.set_setting("blobs.max_bytes", json!(1000)).expect("limit");
    let err = attach("big.bin", None, &[7u8; 1001]).expect_err("too large");
    assert!(matches!(err, Error::BlobTooLarge { limit: 1000 }), "{err}");
    attach("fits.bin", None, &[7u8; 1000]).expect("exactly the limit");

    let err = store.attach("docs", "d", "title", &b"x"[..], &upload("x.txt")).expect_err("not an attachment field");
    assert!(matches!(err, Error::Validation { .. }), "{err}");
    let err = store.attach("docs", "nobody", "file", &b"x"[..], &upload("x.txt")).expect_err("no record");
    assert!(err.is_not_found(), "{err}");

    // Nothing refused was stored or linked.
    assert_eq!(store.blobs(None, 10).expect("ls").len(), 1);
    let d = store.get("docs", "d").expect("d");
    assert_eq!(d.body["file"]["name"], "fits.bin");
    assert_eq!(d.body["file"]["mime"], "application/octet-stream");
}

// ---------------------------------------------------------------------------------------
// Reference counts against a reference model

const CONTENTS: usize = 4;
const RECORDS: [&str; 3] = ["r0", "r1", "r2"];

fn content(i: usize) -> Vec<u8> {
    format!("attachment content number {i}; ").repeat(20 + i).into_bytes()
}

#[derive(Debug, Clone)]
enum Op {
    Create(usize, Option<usize>, Vec<usize>),
    Replace(usize, Option<usize>, Vec<usize>),
    Patch(usize, Option<usize>),
    Delete(usize),
    Purge(usize),
    Revert(usize, usize),
    Gc,
    Put(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let rec = 0..RECORDS.len();
    let blob = 0..CONTENTS;
    let links = proptest::collection::vec(blob.clone(), 0..3);
    prop_oneof![
        3 => (rec.clone(), proptest::option::of(blob.clone()), links.clone()).prop_map(|(r, f, l)| Op::Create(r, f, l)),
        2 => (rec.clone(), proptest::option::of(blob.clone()), links).prop_map(|(r, f, l)| Op::Replace(r, f, l)),
        2 => (rec.clone(), proptest::option::of(blob.clone())).prop_map(|(r, f)| Op::Patch(r, f)),
        2 => rec.clone().prop_map(Op::Delete),
        1 => rec.clone().prop_map(Op::Purge),
        2 => (rec, 1usize..8).prop_map(|(r, v)| Op::Revert(r, v)),
        1 => Just(Op::Gc),
        1 => blob.prop_map(Op::Put),
    ]
}

/// A record's links: the `file` attachment and the `files` list.
type Links = (Option<usize>, Vec<usize>);

#[derive(Debug, Default, Clone)]
struct ModelRecord {
    /// Each version's state: `None` for a purge, else the links and whether it is deleted.
    versions: Vec<Option<(Links, bool)>>,
}

impl ModelRecord {
    fn state(&self) -> Option<&(Links, bool)> {
        self.versions.last().and_then(Option::as_ref)
    }
}

#[derive(Debug, Default)]
struct Model {
    records: Vec<ModelRecord>,
    stored: BTreeSet<usize>,
}

impl Model {
    fn refs(&self, blob: usize) -> u64 {
        self.records
            .iter()
            .filter_map(|r| r.state().filter(|(_, deleted)| !deleted))
            .map(|((file, files), _)| {
                (file == &Some(blob)) as u64 + files.iter().filter(|&&b| b == blob).count() as u64
            })
            .sum()
    }

    fn all_stored(&self, (file, files): &Links) -> bool {
        file.iter().chain(files).all(|b| self.stored.contains(b))
    }

    /// Applies `op` if it is valid; returns whether it was.
    fn apply(&mut self, op: &Op) -> bool {
        let push = |model: &mut Model, r: usize, state: Option<(Links, bool)>| model.records[r].versions.push(state);
        match op {
            Op::Create(r, file, files) => {
                let links = (*file, files.clone());
                if self.records[*r].state().is_some() || !self.all_stored(&links) {
                    return false;
                }
                push(self, *r, Some((links, false)));
            }
            Op::Replace(r, file, files) => {
                let links = (*file, files.clone());
                if !matches!(self.records[*r].state(), Some((_, false))) || !self.all_stored(&links) {
                    return false;
                }
                push(self, *r, Some((links, false)));
            }
            Op::Patch(r, file) => {
                let Some(((_, files), false)) = self.records[*r].state().cloned() else { return false };
                let links = (*file, files);
                if !self.all_stored(&links) {
                    return false;
                }
                push(self, *r, Some((links, false)));
            }
            Op::Delete(r) => {
                let Some((links, false)) = self.records[*r].state().cloned() else { return false };
                push(self, *r, Some((links, true)));
            }
            Op::Purge(r) => {
                if !matches!(self.records[*r].state(), Some((_, true))) {
                    return false;
                }
                push(self, *r, None);
            }
            Op::Revert(r, v) => {
                let Some(Some((links, deleted))) = self.records[*r].versions.get(v - 1).cloned() else { return false };
                if !deleted && !self.all_stored(&links) {
                    return false;
                }
                push(self, *r, Some((links, deleted)));
            }
            Op::Gc => {
                let unlinked: Vec<usize> = self.stored.iter().copied().filter(|&b| self.refs(b) == 0).collect();
                for b in unlinked {
                    self.stored.remove(&b);
                }
            }
            Op::Put(b) => {
                self.stored.insert(*b);
            }
        }
        true
    }
}

fn body(hashes: &[String], file: Option<usize>, files: &[usize]) -> Value {
    let att = |b: usize| json!({"hash": hashes[b], "name": format!("c{b}.txt")});
    let mut body = json!({"title": "t", "files": files.iter().map(|&b| att(b)).collect::<Vec<_>>()});
    if let Some(b) = file {
        body["file"] = att(b);
    }
    body
}

fn run_op(store: &Store, hashes: &[String], op: &Op) -> cairn::Result<()> {
    let id = |r: &usize| RECORDS[*r];
    match op {
        Op::Create(r, file, files) => store.create_with_id("docs", id(r), body(hashes, *file, files)).map(drop),
        Op::Replace(r, file, files) => store.replace("docs", id(r), body(hashes, *file, files), None).map(drop),
        Op::Patch(r, file) => {
            let value = file.map_or(Value::Null, |b| json!({"hash": hashes[b], "name": format!("c{b}.txt")}));
            store.patch("docs", id(r), json!({ "file": value }), None).map(drop)
        }
        Op::Delete(r) => store.delete("docs", id(r), None).map(drop),
        Op::Purge(r) => store.purge("docs", id(r)).map(drop),
        Op::Revert(r, v) => store.revert("docs", id(r), *v as u64, None).map(drop),
        Op::Gc => store.gc_blobs(&cairn::GcOptions { grace: NOW, dry_run: false }).map(drop),
        Op::Put(b) => store.put_blob(&content(*b)[..]).map(drop),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn reference_counts_follow_a_reference_model(ops in proptest::collection::vec(op(), 1..30)) {
        let (_dir, store) = with_docs();
        let mut model = Model { records: vec![ModelRecord::default(); RECORDS.len()], ..Model::default() };
        let hashes: Vec<String> = (0..CONTENTS)
            .map(|b| {
                model.stored.insert(b);
                store.put_blob(&content(b)[..]).expect("put").hash.to_string()
            })
            .collect();
        for (step, op) in ops.iter().enumerate() {
            let expected_ok = model.apply(op);
            let result = run_op(&store, &hashes, op);
            prop_assert_eq!(result.is_ok(), expected_ok, "step {} {:?}: {:?}", step, op, result);
            for (b, hash) in hashes.iter().enumerate() {
                match store.blob(hash) {
                    Ok(info) => {
                        prop_assert!(model.stored.contains(&b), "step {step}: blob {b} should be collected");
                        prop_assert_eq!(info.refs, model.refs(b), "step {} {:?}: refs of blob {}", step, op, b);
                        prop_assert_eq!(info.unreferenced_since.is_none(), info.refs > 0);
                    }
                    Err(Error::BlobNotFound { .. }) => prop_assert!(!model.stored.contains(&b), "step {step}: blob {b} lost"),
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
            }
        }
        // Recounting from the records finds nothing to correct.
        let report = store.rebuild_blob_refs().expect("rebuild");
        prop_assert!(report.corrected.is_empty() && report.dangling.is_empty(), "{:?}", report);
    }
}

#[test]
fn rebuild_refs_corrects_counts_from_the_records() {
    let (dir, store) = with_docs();
    store.create_with_id("docs", "a", json!({})).expect("a");
    let (_, att) = store.attach("docs", "a", "files", &b"one"[..], &upload("1.txt")).expect("attach");
    store.attach("docs", "a", "files", &b"one"[..], &upload("1-again.txt")).expect("attach again");
    assert_eq!(store.blob(&att.hash).expect("stat").refs, 2);
    store.close().expect("close");
    // Damage the count behind cairn's back.
    let db = rusqlite::Connection::open(dir.path().join("store").join(cairn::layout::DB_FILE)).expect("db");
    db.execute("UPDATE cairn_blobs SET refs = 7", []).expect("tamper");
    drop(db);
    let store = Store::open(dir.path().join("store"), cairn::StoreOptions::default()).expect("reopen");
    let report = store.rebuild_blob_refs().expect("rebuild");
    assert_eq!(report.corrected, [(att.hash.clone(), 7, 2)]);
    assert_eq!(store.blob(&att.hash).expect("stat").refs, 2);
}

// ---------------------------------------------------------------------------------------
// SIGKILL during puts

const PUT_CHILD_ENV: &str = "CAIRN_BLOB_CRASH_CHILD_DIR";
const PUT_TEST_NAME: &str = "blobs::a_put_killed_midway_leaves_nothing_half_done";

/// Killed at random moments while attaching files of 1 KiB to 8 MiB (each distinct, mostly
/// compressible) to `docs/doc`, the store must reopen with every acknowledged attachment
/// linked and readable, no blob listed without its file, no link without its blob, and every
/// count right.
#[test]
fn a_put_killed_midway_leaves_nothing_half_done() {
    if let Ok(dir) = std::env::var(PUT_CHILD_ENV) {
        put_child(std::path::Path::new(&dir));
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    {
        let store = Store::open(&dir, cairn::StoreOptions::default()).expect("create");
        store.create_collection(docs_schema()).expect("docs");
        store.create_with_id("docs", "doc", json!({"title": "doc"})).expect("doc");
        store.close().expect("close");
    }
    let mut acked: BTreeSet<String> = BTreeSet::new();
    for cycle in 0..8 {
        let cycle_text = cycle.to_string();
        let mut child = crate::ChildRun::spawn(
            PUT_TEST_NAME,
            &[(PUT_CHILD_ENV, dir.as_os_str()), ("CAIRN_BLOB_CRASH_CYCLE", std::ffi::OsStr::new(&cycle_text))],
        );
        child.wait_for(|l| l == "READY");
        std::thread::sleep(Duration::from_millis(fastrand::u64(20..600)));
        acked.extend(child.kill().iter().filter_map(|l| l.strip_prefix("ACK ").map(String::from)));

        let store = Store::open(&dir, cairn::StoreOptions::default()).expect("reopen after SIGKILL");
        let tmp_files = std::fs::read_dir(dir.join("blobs/.tmp")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(tmp_files, 0, "cycle {cycle}: unfinished puts are cleared on open");
        let doc = store.get("docs", "doc").expect("doc");
        let linked: BTreeSet<String> = doc.body["files"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f["hash"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        for hash in &acked {
            assert!(linked.contains(hash), "cycle {cycle}: acknowledged attachment {hash} lost");
        }
        for hash in &linked {
            assert_eq!(store.blob(hash).expect("linked blob listed").refs, 1, "cycle {cycle}");
        }
        let verify = store.verify_blobs(&mut |_, _, _| {}).expect("verify");
        assert!(verify.is_ok(), "cycle {cycle}: {verify:?}");
        let refs = store.rebuild_blob_refs().expect("recount");
        assert!(refs.corrected.is_empty() && refs.dangling.is_empty(), "cycle {cycle}: {refs:?}");
        // A blob listed but not linked can only be the one whose put was cut short between
        // its commit and the link; nothing else may be stray.
        assert!(store.blobs(None, 1000).expect("ls").iter().all(|b| linked.contains(b.hash.as_str()) || b.refs == 0));
        store.close().expect("close");
    }
    assert!(!acked.is_empty(), "no attachment was ever acknowledged");
}

/// The child: attaches ever new files to `docs/doc`, printing each acknowledged hash.
fn put_child(dir: &std::path::Path) -> ! {
    use std::io::Write;
    let store = Store::open(dir, cairn::StoreOptions::default()).expect("child open");
    let cycle: u64 = std::env::var("CAIRN_BLOB_CRASH_CYCLE").ok().and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut rng = fastrand::Rng::with_seed(cycle);
    let mut out = std::io::stdout();
    writeln!(out, "READY").expect("print");
    out.flush().expect("flush");
    for i in 0u64.. {
        let size = 1usize << rng.usize(10..24);
        let mut content = format!("cycle {cycle} file {i} ").into_bytes();
        content.extend((0..size).map(|j| if j % 7 == 0 { rng.u8(..) } else { b'a' + (j % 26) as u8 }));
        let (_, att) =
            store.attach("docs", "doc", "files", &content[..], &upload(&format!("f{cycle}-{i}.bin"))).expect("attach");
        writeln!(out, "ACK {}", att.hash).expect("print");
        out.flush().expect("flush");
    }
    unreachable!("the child attaches until it is killed")
}
