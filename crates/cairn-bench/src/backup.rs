//! P6: backup throughput against copying the same files, verification against reading them,
//! restore time, and the longest stall a writer sees while a backup runs.
//!
//! Data: a store of about `--mb` megabytes: sessions of ~16 KB JSON (compressed on disk by
//! record compression) and incompressible attachments of 64–512 KB, about a fifth of the
//! bytes in the database and the rest in blobs.
//!
//! Baselines, in the same run on the same files: `std::fs::copy` + fsync of `store.db` and
//! every blob file into a fresh directory (what `cp -r` and `sync` do), and one sequential
//! read of those files. The page cache is dropped before each measured step when the process
//! may (root), so both sides read from the disk; otherwise both read from memory.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use cairn::{BackupOptions, CollectionSchema, RestoreOptions, Store, StoreOptions};
use clap::Args;
use serde_json::json;

use crate::Gen;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Approximate store size in MB.
    #[arg(long, default_value_t = 1024)]
    mb: u64,
}

fn files_of(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == cairn::layout::BACKUPS_DIR || name == cairn::layout::QUARANTINE_DIR {
            continue;
        }
        if entry.file_type()?.is_dir() {
            files_of(&entry.path(), out)?;
        } else if name == cairn::layout::DB_FILE || dir.to_string_lossy().contains(cairn::layout::BLOBS_DIR) {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Writes dirty pages out and drops the page cache; false when this process may not.
fn drop_caches() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// The slowest single create while `during` runs, and the count of creates.
fn writer_stall(store: &Store, during: impl FnOnce() -> Result<()>) -> Result<(Duration, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || -> Result<(Duration, u64)> {
            let (mut worst, mut n) = (Duration::ZERO, 0u64);
            // Bounded: at most 200,000 creates.
            while !stop.load(Ordering::Relaxed) && n < 200_000 {
                let start = Instant::now();
                store.create("ticks", json!({"n": n}))?;
                worst = worst.max(start.elapsed());
                n += 1;
            }
            Ok((worst, n))
        })
    };
    let outcome = during();
    stop.store(true, Ordering::Relaxed);
    let stall = writer.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    outcome?;
    Ok(stall)
}

pub fn run(args: &BackupArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, StoreOptions::default())?;
    store.create_collection(CollectionSchema::from_json(
        r#"{"name": "sessions", "fields": [{"name": "name", "type": "text"}, {"name": "notes", "type": "text"},
            {"name": "files", "type": "attachments"}]}"#,
        "P6",
    )?)?;
    store.create_collection(CollectionSchema::from_json(
        r#"{"name": "ticks", "fields": [{"name": "n", "type": "integer"}]}"#,
        "ticks",
    )?)?;
    let target = args.mb * 1_000_000;
    let mut g = Gen(6);
    let (mut written, mut i) = (0u64, 0usize);
    eprintln!("generating a store of about {} MB", args.mb);
    while written < target {
        let mut files = Vec::new();
        if i % 2 == 0 {
            let mut bytes = b"\x89PNG\r\n\x1A\n".to_vec();
            let len = 64 * 1024 + g.below(448 * 1024);
            bytes.extend(g.noise(len));
            written += bytes.len() as u64;
            let info = store.put_blob(&bytes[..])?;
            files.push(
                json!({"hash": info.hash, "name": format!("shot-{i}.png"), "mime": "image/png", "size": info.size}),
            );
        }
        let notes: String = (0..1200).map(|_| format!("{:x} ", g.next_u64() % 65536)).collect();
        let body = json!({"name": format!("session {i}"), "notes": notes, "files": files});
        written += body.to_string().len() as u64 / 2;
        store.create("sessions", body)?;
        i += 1;
    }
    store.close()?;
    let store = Store::open(&dir, StoreOptions::default())?;
    let mut files = Vec::new();
    files_of(&dir, &mut files)?;
    let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
    eprintln!(
        "{} files, {} MB (store.db {} MB)",
        files.len(),
        bytes / 1_000_000,
        std::fs::metadata(dir.join(cairn::layout::DB_FILE))?.len() / 1_000_000
    );

    // Baseline: copy every file and fsync it.
    let copy = tmp.path().join("copy");
    let cold = drop_caches();
    let start = Instant::now();
    for (n, file) in files.iter().enumerate() {
        let to = copy.join(format!("{n}"));
        if n == 0 {
            std::fs::create_dir_all(&copy)?;
        }
        std::fs::copy(file, &to)?;
        std::fs::File::open(&to)?.sync_all()?;
    }
    let cp = start.elapsed();
    drop_caches();
    let start = Instant::now();
    let mut read = 0u64;
    for file in &files {
        read += std::io::copy(&mut std::fs::File::open(file)?, &mut std::io::sink())?;
    }
    let seq_read = start.elapsed();
    std::fs::remove_dir_all(&copy)?;

    // Writers alone, for the stall baseline, then a backup while they write.
    let (quiet_stall, _) = writer_stall(&store, || {
        std::thread::sleep(Duration::from_secs(3));
        Ok(())
    })?;
    let mut info = None;
    drop_caches();
    let start = Instant::now();
    let (stall, ticks) = writer_stall(&store, || {
        info = Some(store.backup(&BackupOptions::default(), &mut |_, _, _| {})?);
        Ok(())
    })?;
    let backup = start.elapsed();
    let info = info.ok_or_else(|| anyhow::anyhow!("no backup"))?;
    let manifest = info.manifest.clone().ok_or_else(|| anyhow::anyhow!("no manifest"))?;
    let copy_part = Duration::from_millis(manifest.stats.total_ms - manifest.stats.verify_ms);
    drop_caches();
    let start = Instant::now();
    store.verify_backup(&info.id, &mut |_, _, _| {})?;
    let verify = start.elapsed();
    store.close()?;
    drop_caches();
    let start = Instant::now();
    cairn::Store::restore(&dir, &info.id, &RestoreOptions::default(), &mut |_, _, _| {})?;
    let restore = start.elapsed();

    let size = manifest.size();
    let ratio = |a: f64, b: f64| a / b;
    println!("P6 store: {} MB in {} files; backup {} MB", bytes / 1_000_000, files.len(), size / 1_000_000);
    let (b, c) = (mb_per_s(size, backup), mb_per_s(bytes, cp));
    println!(
        "P6 backup (snapshot + blobs + verification): {b:.0} MB/s vs copy+fsync {c:.0} MB/s = {:.2}x (target >= 0.5x)",
        ratio(b, c)
    );
    let bc = mb_per_s(size, copy_part);
    println!("P6   of which snapshot + blob copy: {bc:.0} MB/s = {:.2}x of copy+fsync", ratio(bc, c));
    let (v, r) = (mb_per_s(size, verify), mb_per_s(read, seq_read));
    println!("P6 verify: {v:.0} MB/s vs sequential read {r:.0} MB/s = {:.2}x (target >= 0.5x)", ratio(v, r));
    println!("P6 restore of the {} MB store (re-verify, pre-restore backup, copy, swap): {:.1} s; copy+fsync of the same files {:.1} s = {:.2}x",
        bytes / 1_000_000, restore.as_secs_f64(), cp.as_secs_f64(), ratio(cp.as_secs_f64(), restore.as_secs_f64()));
    println!(
        "P6 longest single write during the backup: {:.1} ms ({ticks} writes); without a backup: {:.1} ms",
        stall.as_secs_f64() * 1e3,
        quiet_stall.as_secs_f64() * 1e3
    );
    println!("P6 snapshot took {} ms of the backup", manifest.stats.snapshot_ms);
    println!(
        "P6 page cache dropped before each step: {}",
        if cold { "yes (cold reads)" } else { "no (not root: warm reads)" }
    );
    Ok(())
}
