//! P5: storage efficiency and attachment throughput on a Taskerino-like data set.
//!
//! Data: `--sessions` sessions of 5–70 KB (screenshot and audio-segment metadata, AI summary,
//! notes, ten attachment links each) and `--attachments` attachments, 45 % of them repeats of
//! earlier content: screenshots (PNG, noise: incompressible), audio segments (MP3, noise) and
//! text notes (compressible). Sizes are scaled down from real screenshots so that a run fits a
//! small machine; the mix and the duplicate share are what matter for the ratios.
//!
//! Figures: the store's size (store.db) against the same sessions as one JSON file; the blob
//! store's size against the attachment bytes as given (repeats counted each time, as the
//! seed's per-session files stored them); put and get throughput against copying the same
//! files with `std::fs::copy` + fsync and reading them back, in the same run.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use cairn::{CollectionSchema, Store, StoreOptions};
use clap::Args;
use serde_json::{json, Value};

use crate::Gen;

#[derive(Debug, Args)]
pub struct BlobArgs {
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    #[arg(long, default_value_t = 100_000)]
    attachments: usize,
}

const WORDS: [&str; 40] = [
    "the", "user", "opened", "checkout", "page", "and", "reviewed", "invoice", "for", "acme", "customer", "meeting",
    "notes", "about", "renewal", "terminal", "error", "retry", "payment", "design", "review", "slack", "message",
    "browser", "tab", "code", "editor", "function", "summary", "focused", "on", "task", "deadline", "friday", "budget",
    "email", "draft", "call", "with", "team",
];

fn sentence(g: &mut Gen, words: usize) -> String {
    (0..words).map(|_| WORDS[g.below(WORDS.len())]).collect::<Vec<_>>().join(" ")
}

/// An attachment's content: (name, bytes).
fn content(i: usize) -> (String, Vec<u8>) {
    let mut g = Gen(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
    match g.below(100) {
        0..60 => {
            let mut bytes = b"\x89PNG\r\n\x1A\n".to_vec();
            let len = 8 * 1024 + g.below(56 * 1024);
            bytes.extend(g.noise(len));
            (format!("screenshot-{i}.png"), bytes)
        }
        60..85 => {
            let mut bytes = b"ID3\x04\0\0\0\0\0\0".to_vec();
            let len = 16 * 1024 + g.below(80 * 1024);
            bytes.extend(g.noise(len));
            (format!("segment-{i}.mp3"), bytes)
        }
        _ => {
            let len = 1024 + g.below(15 * 1024);
            let mut text = String::new();
            while text.len() < len {
                text.push_str(&sentence(&mut g, 12));
                text.push_str(".\n");
            }
            (format!("note-{i}.txt"), text.into_bytes())
        }
    }
}

fn session(i: usize, links: Vec<Value>) -> Value {
    let mut g = Gen(0xC0FF_EE00 ^ (i as u64 + 1));
    let target = 5 * 1024 + g.below(65 * 1024);
    let mut screenshots = Vec::new();
    let mut audio = Vec::new();
    let mut size = 0;
    while size < target {
        let shot = json!({
            "timestamp": format!("2025-0{}-1{}T10:{:02}:00Z", 1 + g.below(9), g.below(10), g.below(60)),
            "app": (["Chrome", "VS Code", "Slack", "Terminal", "Figma"][g.below(5)]),
            "ocr": sentence(&mut g, 25),
            "analysis": {"activity": sentence(&mut g, 4), "confidence": g.below(100) as f64 / 100.0},
        });
        size += shot.to_string().len();
        screenshots.push(shot);
        if g.below(3) == 0 {
            let segment = json!({"start": g.below(3600), "transcript": sentence(&mut g, 40)});
            size += segment.to_string().len();
            audio.push(segment);
        }
    }
    json!({
        "name": format!("Session {i}: {}", sentence(&mut g, 4)),
        "status": (["completed", "interrupted"][g.below(2)]),
        "summary": sentence(&mut g, 120),
        "notes": sentence(&mut g, 60),
        "screenshots": screenshots,
        "audio": audio,
        "attachments": links,
    })
}

fn schema() -> Result<CollectionSchema> {
    Ok(CollectionSchema::from_json(
        r#"{"name": "sessions", "fields": [
            {"name": "name", "type": "text", "summary": true},
            {"name": "status", "type": "text", "indexed": true},
            {"name": "summary", "type": "text", "fulltext": true},
            {"name": "notes", "type": "text"},
            {"name": "screenshots", "type": "json"},
            {"name": "audio", "type": "json"},
            {"name": "attachments", "type": "attachments"}]}"#,
        "P5 schema",
    )?)
}

fn dir_size(path: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path).with_context(|| format!("list {}", path.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

pub fn run(args: &BlobArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src)?;
    // Which content each attachment slot holds: 45 % repeat an earlier one.
    let mut g = Gen(42);
    let mut distinct = 0usize;
    let slots: Vec<usize> = (0..args.attachments)
        .map(|_| {
            if distinct > 0 && g.below(100) < 45 {
                g.below(distinct)
            } else {
                distinct += 1;
                distinct - 1
            }
        })
        .collect();
    let mut files: Vec<(PathBuf, String, u64)> = Vec::with_capacity(distinct);
    for i in 0..distinct {
        let (name, bytes) = content(i);
        let path = src.join(&name);
        std::fs::write(&path, &bytes)?;
        files.push((path, name, bytes.len() as u64));
    }
    let raw_attachment_bytes: u64 = slots.iter().map(|&s| files[s].2).sum();
    eprintln!("{} attachments ({distinct} distinct, {} MB as given)", slots.len(), raw_attachment_bytes / 1_000_000);

    // Baseline put: copy each attachment file and fsync it.
    let copies = tmp.path().join("copies");
    std::fs::create_dir_all(&copies)?;
    let start = Instant::now();
    for (n, &slot) in slots.iter().enumerate() {
        let target = copies.join(n.to_string());
        std::fs::copy(&files[slot].0, &target)?;
        std::fs::File::open(&target)?.sync_all()?;
    }
    let copy_put = start.elapsed().as_secs_f64();

    let store_dir = tmp.path().join("store");
    let store = Store::open(&store_dir, StoreOptions::default())?;
    store.create_collection(schema()?)?;
    let start = Instant::now();
    let mut hashes = Vec::with_capacity(slots.len());
    for &slot in &slots {
        let info = store.put_blob(std::fs::File::open(&files[slot].0)?)?;
        hashes.push(info.hash);
    }
    let cairn_put = start.elapsed().as_secs_f64();

    // Baseline get: read each copy back.
    let mut buf = vec![0u8; 256 * 1024];
    let start = Instant::now();
    for n in 0..slots.len() {
        let mut f = std::fs::File::open(copies.join(n.to_string()))?;
        while f.read(&mut buf)? > 0 {}
    }
    let copy_get = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for hash in &hashes {
        let mut reader = store.open_blob(hash)?;
        while reader.read(&mut buf)? > 0 {}
    }
    let cairn_get = start.elapsed().as_secs_f64();

    // Sessions, each linking its share of the attachments, written in batches.
    let per = slots.len().div_ceil(args.sessions.max(1));
    let mut json_file = Vec::new();
    let mut all = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        let links: Vec<Value> = (i * per..((i + 1) * per).min(slots.len()))
            .map(|n| json!({"hash": hashes[n], "name": files[slots[n]].1, "size": files[slots[n]].2}))
            .collect();
        all.push(session(i, links));
    }
    serde_json::to_writer(&mut json_file, &all)?;
    for (batch, chunk) in all.chunks(500).enumerate() {
        let chunk = chunk.to_vec();
        store.transaction(move |tx| {
            for (k, body) in chunk.into_iter().enumerate() {
                tx.create("sessions", Some(&format!("s{:05}", batch * 500 + k)), body)?;
            }
            Ok(())
        })?;
    }
    store.close()?;
    let db_size: u64 = ["store.db", "store.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(store_dir.join(f)).map(|m| m.len()).unwrap_or(0))
        .sum();
    let blob_size = dir_size(&store_dir.join(cairn::layout::BLOBS_DIR))?;
    let json_size = json_file.len() as u64;

    println!(
        "P5: {} sessions, {} attachments ({distinct} distinct), shared 2-core VM, one run",
        args.sessions,
        slots.len()
    );
    println!(
        "records: store.db {:.1} MB vs sessions JSON {:.1} MB = {:.3}x (target <= 0.40)",
        db_size as f64 / 1e6,
        json_size as f64 / 1e6,
        db_size as f64 / json_size as f64
    );
    println!(
        "attachments: blobs/ {:.1} MB vs {:.1} MB as given = {:.3}x (target <= 0.55)",
        blob_size as f64 / 1e6,
        raw_attachment_bytes as f64 / 1e6,
        blob_size as f64 / raw_attachment_bytes as f64
    );
    println!(
        "put: cairn {:.0} MB/s vs fs::copy + fsync {:.0} MB/s = {:.3}x",
        mb_per_s(raw_attachment_bytes, cairn_put),
        mb_per_s(raw_attachment_bytes, copy_put),
        copy_put / cairn_put
    );
    println!(
        "get: cairn (verified) {:.0} MB/s vs reading the copies {:.0} MB/s = {:.3}x",
        mb_per_s(raw_attachment_bytes, cairn_get),
        mb_per_s(raw_attachment_bytes, copy_get),
        copy_get / cairn_get
    );
    Ok(())
}
