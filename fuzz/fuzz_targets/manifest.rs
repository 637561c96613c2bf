//! Fuzzes manifests and the folders they describe. Run: `cargo fuzz run manifest` (from this
//! folder's parent).
//!
//! The first byte picks the mode:
//! - even: the rest is a backup `manifest.json`; no input may panic, and anything that parses
//!   must be a manifest whose checksum matches;
//! - odd: the rest builds a hostile folder from a genuine backup or export (the second byte
//!   picks which): entries whose paths are made of fuzzed components (`..`, `.`, empty,
//!   absolute, cairn's own names, a hash, names that reach the canary) and whose kinds are
//!   fuzzed (a regular file, a link to the canary file or folder outside, a link to
//!   `/dev/zero`, a FIFO, a folder), each listed in the manifest with a fuzzed size and hash,
//!   and the manifest resealed. Then the backup is verified or the export imported (a dry
//!   run). Nothing may panic or hang, the canaries outside must stay as they were with
//!   nothing added beside them, and a backup holding anything but regular files must never
//!   verify.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cairn::{BackupOptions, Error, ExportOptions, ImportOptions, Manifest, Store, StoreOptions, Upload};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sha2::{Digest, Sha256};

const CANARY: &[u8] = b"canary: never read through a hostile folder\n";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    backup: PathBuf,
    export: PathBuf,
    outside: PathBuf,
    work: PathBuf,
    last_seq: cairn::Seq,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = StoreOptions { auto_backup: false, ..StoreOptions::default() };
        let store = Store::open(dir.path().join("store"), options).expect("store");
        let schema = cairn::CollectionSchema::from_json(
            r#"{"name": "notes", "fields": [{"name": "title", "type": "text"}, {"name": "files", "type": "attachments"}]}"#,
            "schema",
        )
        .expect("schema");
        store.create_collection(schema).expect("collection");
        store.create_with_id("notes", "n1", json!({"title": "existing"})).expect("record");
        let upload = Upload { name: "a.txt".into(), mime: None };
        store.attach("notes", "n1", "files", &b"an attachment"[..], &upload).expect("attach");
        let backup = store.backup(&BackupOptions::default(), &mut |_, _, _| {}).expect("backup").path;
        let export = dir.path().join("export");
        store.export(&export, &ExportOptions { blobs: true, ..ExportOptions::default() }, &mut |_, _, _| {}).expect("export");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("canary-dir")).expect("outside");
        std::fs::write(outside.join("canary.txt"), CANARY).expect("canary");
        let last_seq = store.last_seq().expect("seq");
        Fixture { backup, export, outside, work: dir.path().join("work/w"), last_seq, store, _dir: dir }
    })
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads fuzz bytes one at a time (zero when they run out).
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }
}

/// A path component chosen by the fuzzer.
fn component(input: &mut Bytes<'_>) -> String {
    let hash = hex(b"an attachment");
    match input.byte() % 14 {
        0 => "..".into(),
        1 => ".".into(),
        2 => String::new(),
        3 => "blobs".into(),
        4 => "collections".into(),
        5 => "store.db".into(),
        6 => "manifest.json".into(),
        7 => "notes.jsonl".into(),
        8 => hash[..2].to_string(),
        9 => hash,
        10 => "outside".into(),
        11 => "canary.txt".into(),
        12 => "/".into(),
        _ => {
            let len = usize::from(input.byte() % 8);
            (0..len).map(|_| char::from(b'a' + input.byte() % 26)).collect()
        }
    }
}

/// Whether anything under `dir` is neither a regular file nor a folder.
fn holds_irregular(dir: &Path) -> bool {
    std::fs::read_dir(dir).expect("list").flatten().any(|entry| {
        let kind = entry.file_type().expect("type");
        if kind.is_dir() {
            holds_irregular(&entry.path())
        } else {
            !kind.is_file()
        }
    })
}

/// Makes an entry of kind chosen by the fuzzer at `rel` inside `root` (if the file system
/// lets it; a path that cannot be made is simply not made).
fn plant(root: &Path, rel: &str, input: &mut Bytes<'_>, outside: &Path) {
    let path = root.join(rel);
    // Only ever below the work folder: a component like `..` may not create anything above.
    // The manifest is the harness's to write (a FIFO manifest is in the hostile-input tests).
    let parts: Vec<&str> = rel.split('/').filter(|c| *c != ".").collect();
    if parts.is_empty()
        || parts.iter().any(|c| *c == ".." || c.is_empty())
        || rel.starts_with('/')
        || parts == ["manifest.json"]
    {
        return;
    }
    // The harness itself must not write through a link it planted earlier.
    let mut prefix = root.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        prefix.push(part);
        match std::fs::symlink_metadata(&prefix) {
            Ok(meta) if !meta.is_dir() => return,
            Ok(_) => {}
            Err(_) => drop(std::fs::create_dir(&prefix)),
        }
    }
    let _ = std::fs::remove_file(&path);
    match input.byte() % 6 {
        0 => {
            let len = usize::from(input.byte());
            let _ = std::fs::write(&path, vec![input.byte(); len]);
        }
        1 => drop(std::os::unix::fs::symlink(outside.join("canary.txt"), &path)),
        2 => drop(std::os::unix::fs::symlink(outside.join("canary-dir"), &path)),
        3 => drop(std::os::unix::fs::symlink("/dev/zero", &path)),
        4 => drop(rustix::fs::mknodat(rustix::fs::CWD, &path, rustix::fs::FileType::Fifo, 0o600.into(), 0)),
        _ => drop(std::fs::create_dir_all(&path)),
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Every name under `dir`, with file contents.
fn inventory(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("list").flatten() {
            let path = entry.path();
            if entry.file_type().expect("type").is_dir() {
                stack.push(path.clone());
            }
            let content = if entry.file_type().expect("type").is_file() {
                std::fs::read(&path).expect("read")
            } else {
                Vec::new()
            };
            out.push((path, content));
        }
    }
    out.sort();
    out
}

fn hostile_backup(f: &Fixture, input: &mut Bytes<'_>) {
    let id = f.backup.file_name().expect("id");
    let root = f.work.join("backups");
    let folder = root.join(id);
    copy_tree(&f.backup, &folder);
    let path = folder.join(cairn::layout::MANIFEST_FILE);
    let mut manifest: Manifest = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("manifest");
    for _ in 0..input.byte() % 4 {
        let parts: Vec<String> = (0..1 + input.byte() % 4).map(|_| component(input)).collect();
        let rel = parts.join("/");
        plant(&folder, &rel, input, &f.outside);
        let (size, sha256) = match input.byte() % 3 {
            0 => (u64::from(input.byte()), hex(&[input.byte()])),
            1 => (CANARY.len() as u64, hex(CANARY)),
            _ => (std::fs::symlink_metadata(folder.join(&rel)).map_or(0, |m| m.len()), component(input)),
        };
        if input.byte() & 1 == 0 {
            manifest.files.push(cairn::FileEntry { path: rel, size, sha256 });
        }
    }
    manifest.checksum = String::new();
    manifest.checksum = hex(&serde_json::to_vec(&manifest).expect("json"));
    std::fs::write(&path, serde_json::to_vec(&manifest).expect("json")).expect("write");
    let irregular = holds_irregular(&folder);
    match cairn::Backups::at(root).verify(&id.to_string_lossy(), &mut |_, _, _| {}) {
        Ok(info) => {
            let ok = info.manifest.and_then(|m| m.verification).is_some_and(|v| v.ok);
            assert!(!(ok && irregular), "a backup holding a link, FIFO or device verified");
        }
        Err(Error::InvalidInput { .. } | Error::Corruption { .. } | Error::Io { .. } | Error::NotAllowed(_)) => {}
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

fn hostile_export(f: &Fixture, input: &mut Bytes<'_>) {
    let folder = f.work.join("export");
    copy_tree(&f.export, &folder);
    let path = folder.join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    for _ in 0..1 + input.byte() % 3 {
        let parts: Vec<String> = (0..1 + input.byte() % 4).map(|_| component(input)).collect();
        let rel = parts.join("/");
        plant(&folder, &rel, input, &f.outside);
        let name = component(input);
        let entry = json!({"path": rel, "bytes": input.byte(), "sha256": if input.byte() & 1 == 0 { name.clone() } else { hex(CANARY) }});
        match input.byte() % 3 {
            0 => manifest["blobs"].as_array_mut().expect("blobs").push(entry),
            1 => manifest["collections"]
                .as_array_mut()
                .expect("collections")
                .push(json!({"name": name, "records": 1, "deleted": 0, "file": entry})),
            _ => manifest["collections"][0]["file"] = entry,
        }
    }
    std::fs::write(&path, manifest.to_string()).expect("write");
    let options = ImportOptions { dry_run: true, ..ImportOptions::default() };
    let _ = f.store.import(&folder, &options, &mut |_, _, _| {});
    assert_eq!(f.store.last_seq().expect("seq"), f.last_seq, "a dry run wrote");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        match Manifest::parse(rest, "manifest.json") {
            Ok(manifest) => assert_eq!(manifest.format, cairn::Manifest::FORMAT),
            Err(Error::InvalidInput { .. } | Error::Corruption { .. }) => {}
            Err(other) => panic!("unexpected error kind: {other}"),
        }
        return;
    }
    let f = fixture();
    let before = inventory(&f.outside);
    let _ = std::fs::remove_dir_all(&f.work);
    let mut input = Bytes(rest);
    if input.byte() & 1 == 0 {
        hostile_backup(f, &mut input);
    } else {
        hostile_export(f, &mut input);
    }
    assert_eq!(inventory(&f.outside), before, "something outside the folder was read into or changed");
    let parent = f.work.parent().expect("parent");
    for entry in std::fs::read_dir(parent).expect("list").flatten() {
        assert_eq!(entry.file_name(), "w", "created beside the work folder: {:?}", entry.path());
    }
});
