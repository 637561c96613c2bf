//! P1 and P2: durable write throughput.
//!
//! P1 baseline: raw rusqlite with the same pragmas as cairn (WAL, synchronous=FULL), one
//! INSERT of the same ~1 KB JSON per transaction. P1 subject: `Store::create_with_id` from
//! one thread, which also validates, checksums and appends to the change log. P2: 16 threads
//! calling `create_with_id` at once, which group commit folds into shared fsyncs; its rate is
//! compared with P1's single-writer cairn rate.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use cairn::{CollectionSchema, Store, StoreOptions};
use clap::Args;
use serde_json::{json, Value};

use crate::median;

#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Records written per measurement.
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// Alternating rounds; the median of each series is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent writers for P2.
    #[arg(long, default_value_t = 16)]
    writers: usize,
}

fn schema() -> Result<CollectionSchema> {
    Ok(CollectionSchema::from_json(
        r#"{"name": "sessions", "fields": [
            {"name": "name", "type": "text", "required": true},
            {"name": "description", "type": "text"},
            {"name": "status", "type": "text"},
            {"name": "started_at", "type": "datetime"},
            {"name": "tags", "type": "tags"},
            {"name": "summary", "type": "json"}]}"#,
        "bench schema",
    )?)
}

/// A Taskerino-like session body of about 1 KB.
fn body(i: usize) -> Value {
    json!({
        "name": format!("Customer call {i} with Acme about the checkout flow"),
        "description": "Walked through the checkout flow and found the retry logic drops the second payment attempt. \
            Agreed to ship the onboarding checklist behind a flag next sprint. Latency spikes line up with the nightly backup job.",
        "status": "completed",
        "started_at": "2025-10-13T10:00:00.000Z",
        "tags": ["acme", "meeting", "billing"],
        "summary": {
            "narrative": "The team reviewed the payment retry bug, agreed on a fix and a rollout plan, and flagged the backup job as the likely cause of latency spikes in the evening.",
            "highlights": ["Retry logic drops the second attempt", "Checklist ships behind a flag"],
            "actionItems": ["Move the nightly backup", "Write the migration plan with rollbacks", format!("Follow up on ticket {i}")]
        }
    })
}

pub(crate) fn raw_rusqlite(dir: &Path, count: usize) -> Result<f64> {
    let conn = rusqlite::Connection::open(dir.join("raw.db"))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous = FULL; CREATE TABLE records (id TEXT PRIMARY KEY, body BLOB NOT NULL)")?;
    let bodies: Vec<Vec<u8>> = (0..count).map(|i| cairn::json::canonical(&body(i))).collect();
    let mut insert = conn.prepare("INSERT INTO records (id, body) VALUES (?1, ?2)")?;
    let start = Instant::now();
    for (i, b) in bodies.iter().enumerate() {
        insert.execute(rusqlite::params![format!("r{i}"), b])?;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

fn open_store(dir: &Path) -> Result<Store> {
    let store = Store::open(dir.join("cairn"), StoreOptions::default())?;
    store.create_collection(schema()?)?;
    Ok(store)
}

pub(crate) fn cairn_single(dir: &Path, count: usize) -> Result<f64> {
    let store = open_store(dir)?;
    let bodies: Vec<Value> = (0..count).map(body).collect();
    let start = Instant::now();
    for (i, b) in bodies.into_iter().enumerate() {
        store.create_with_id("sessions", &format!("r{i}"), b)?;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

fn cairn_concurrent(dir: &Path, count: usize, writers: usize) -> Result<f64> {
    let store = open_store(dir)?;
    let per = count.div_ceil(writers);
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || -> Result<()> {
                for i in 0..per {
                    store.create_with_id("sessions", &format!("w{w}-{i}"), body(i))?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    }
    let rate = (per * writers) as f64 / start.elapsed().as_secs_f64();
    let stats = store.write_stats();
    eprintln!("  {writers} writers: mean group size {:.1}", stats.requests as f64 / stats.groups.max(1) as f64);
    Ok(rate)
}

pub fn run(args: &WriteArgs) -> Result<()> {
    let (mut raw, mut single, mut concurrent) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        // A fresh directory per measurement so no run inherits another's file sizes, and the
        // order flips every round so that neither side always runs on a warmer (or busier)
        // machine.
        let fresh = || tempfile::tempdir().context("temp dir");
        if round % 2 == 1 {
            raw.push(raw_rusqlite(fresh()?.path(), args.count)?);
            single.push(cairn_single(fresh()?.path(), args.count)?);
            concurrent.push(cairn_concurrent(fresh()?.path(), args.count, args.writers)?);
        } else {
            concurrent.push(cairn_concurrent(fresh()?.path(), args.count, args.writers)?);
            single.push(cairn_single(fresh()?.path(), args.count)?);
            raw.push(raw_rusqlite(fresh()?.path(), args.count)?);
        }
        eprintln!(
            "round {round}: raw {:.0}/s, cairn {:.0}/s, cairn x{} writers {:.0}/s",
            raw[round - 1],
            single[round - 1],
            args.writers,
            concurrent[round - 1]
        );
    }
    let (raw, single, concurrent) = (median(raw), median(single), median(concurrent));
    println!("durable creates of ~1 KB JSON, {} per measurement, median of {} rounds", args.count, args.rounds);
    println!(
        "P1 cairn single writer vs raw rusqlite (same pragmas): {single:.0}/s vs {raw:.0}/s = {:.2}x (target >= 0.90x)",
        single / raw
    );
    println!(
        "P2 cairn {} concurrent writers vs cairn single writer:  {concurrent:.0}/s vs {single:.0}/s = {:.2}x (target >= 8x)",
        args.writers,
        concurrent / single
    );
    Ok(())
}
