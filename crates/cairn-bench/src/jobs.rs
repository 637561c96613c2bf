//! P10: durable jobs. No-op jobs (100,000 by default) are enqueued (in batches, not timed),
//! then run to completion by a worker pool of 4; the completion rate is compared with P1's
//! rates in the same run (one durable cairn create per commit from one thread, and raw
//! rusqlite single-row commits with the same pragmas), since each job costs two durable
//! commits of its own (the claim and the completion), which group commit shares among the
//! workers. The latency of a claim (one `UPDATE … RETURNING` in its own durable commit) is
//! measured from 4 threads that claim and complete by hand.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn::{ClaimFilter, Done, JobContext, JobState, NewJob, Store, StoreOptions, WorkerOptions, Workers};
use clap::Args;
use serde_json::json;

use crate::median;

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Jobs per measurement.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Alternating rounds; the median of each series is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Workers (pool concurrency, and claiming threads).
    #[arg(long, default_value_t = 4)]
    workers: usize,
}

fn store_with_jobs(dir: &Path, count: usize) -> Result<Store> {
    let store = Store::open(dir.join("cairn"), StoreOptions::default())?;
    for batch in (0..count).collect::<Vec<_>>().chunks(1000) {
        let batch = batch.to_vec();
        store.transaction(move |tx| {
            for i in batch {
                tx.enqueue(&NewJob::new("noop", json!({"i": i})))?;
            }
            Ok(())
        })?;
    }
    Ok(store)
}

/// Jobs completed per second by a pool of `workers`.
fn pool_rate(dir: &Path, count: usize, workers: usize) -> Result<f64> {
    let store = store_with_jobs(dir, count)?;
    let mut handlers = Workers::new();
    handlers.register("noop", |_: &JobContext| Ok(Done::new()));
    let start = Instant::now();
    let options = WorkerOptions::named("bench").concurrency(workers).poll(Duration::from_millis(5));
    let pool = handlers.start(store.queue(), options);
    // Bounded: a stuck run ends after ten minutes with what it did.
    let deadline = start + Duration::from_secs(600);
    while (pool.stats().completed as usize) < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let done = pool.stats().completed as usize;
    pool.stop(Duration::from_secs(5));
    let left =
        store.queue().list(&cairn::JobFilter { state: Some(JobState::Available), limit: 1, ..Default::default() })?;
    anyhow::ensure!(done == count && left.is_empty(), "only {done} of {count} jobs completed");
    Ok(count as f64 / elapsed)
}

/// Claim latencies (ms) of `workers` threads claiming one job at a time and completing it.
fn claim_latencies(dir: &Path, count: usize, workers: usize) -> Result<Vec<f64>> {
    let store = store_with_jobs(dir, count)?;
    let queue = store.queue();
    let filter = Arc::new(ClaimFilter::new(&["noop"]));
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let (queue, filter) = (queue.clone(), filter.clone());
            std::thread::spawn(move || -> Result<Vec<f64>> {
                let mut ms = Vec::new();
                loop {
                    let start = Instant::now();
                    let claimed = queue.claim(&format!("w{w}"), &filter, 1, Duration::from_secs(60))?;
                    ms.push(start.elapsed().as_secs_f64() * 1000.0);
                    let Some(job) = claimed.into_iter().next() else { return Ok(ms) };
                    queue.complete(job.lease(), None)?;
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().map_err(|_| anyhow::anyhow!("claiming thread panicked"))??);
    }
    Ok(all)
}

pub fn run(args: &JobsArgs) -> Result<()> {
    let (mut raw, mut p1, mut pool, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let fresh = || tempfile::tempdir().context("temp dir");
    for round in 1..=args.rounds {
        let baseline = || crate::write::cairn_single(fresh()?.path(), args.count.min(2000));
        let raw_rate = || crate::write::raw_rusqlite(fresh()?.path(), args.count.min(2000));
        if round % 2 == 1 {
            raw.push(raw_rate()?);
            p1.push(baseline()?);
            pool.push(pool_rate(fresh()?.path(), args.count, args.workers)?);
        } else {
            pool.push(pool_rate(fresh()?.path(), args.count, args.workers)?);
            p1.push(baseline()?);
            raw.push(raw_rate()?);
        }
        let latencies = claim_latencies(fresh()?.path(), args.count.min(20_000), args.workers)?;
        let (p50, p99) = crate::query::percentiles(latencies);
        p50s.push(p50);
        p99s.push(p99);
        eprintln!(
            "round {round}: raw {:.0}/s, P1 cairn {:.0}/s, {} workers {:.0} jobs/s, claim p50 {p50:.2} ms p99 {p99:.2} ms",
            raw[round - 1],
            p1[round - 1],
            args.workers,
            pool[round - 1]
        );
    }
    let (raw, p1, pool, p50, p99) = (median(raw), median(p1), median(pool), median(p50s), median(p99s));
    println!("no-op jobs, {} per measurement, {} workers, median of {} rounds", args.count, args.workers, args.rounds);
    println!(
        "P10 jobs completed vs P1 cairn durable creates (one thread): {pool:.0}/s vs {p1:.0}/s = {:.2}x (target >= 0.50x)",
        pool / p1
    );
    println!(
        "    and vs raw rusqlite single-row commits (same pragmas): {pool:.0}/s vs {raw:.0}/s = {:.2}x",
        pool / raw
    );
    println!("    claim latency with {} claiming threads: p50 {p50:.2} ms, p99 {p99:.2} ms", args.workers);
    Ok(())
}
