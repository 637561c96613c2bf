//! cairn's benchmark harness. Every figure is printed as a ratio against a baseline measured
//! in the same run on the same machine, because absolute numbers on a shared machine say
//! little. Rounds alternate baseline and subject so that drift in machine load hits both.
//!
//! `cargo run --release -p cairn-bench -- write` runs P1 and P2; `-- query` runs P3 and P4;
//! `-- blobs` runs P5; `-- backup` runs P6; `-- serve` runs P7 and P8 (`cairn serve` against
//! PocketBase, with wrk); `-- realtime` runs the realtime delivery benchmark; `-- jobs` runs P10.

mod backup;
mod blobs;
mod jobs;
mod query;
mod realtime;
mod serve;
mod write;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cairn-bench", about = "cairn benchmarks: ratios against same-run baselines")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// P1: durable single-writer creates vs raw rusqlite; P2: 16 concurrent writers vs P1.
    Write(write::WriteArgs),
    /// P3: open + first page (time, peak RSS); P4: filtered/sorted/paged and full-text queries.
    Query(query::QueryArgs),
    /// P5: on-disk size of records and attachments, attachment put/get throughput.
    Blobs(blobs::BlobArgs),
    /// P6: backup and verify throughput vs copy and read, restore time, writer stalls.
    Backup(backup::BackupArgs),
    /// P7: requests per second and p99 of `cairn serve` vs PocketBase; P8: their RSS.
    Serve(serve::ServeArgs),
    /// Realtime: SSE subscribers while writers commit; delivery rate, latency, server RSS.
    Realtime(realtime::RealtimeArgs),
    /// P10: no-op jobs completed per second by 4 workers vs P1's durable create rate; claim latency.
    Jobs(jobs::JobsArgs),
    /// (internal) One cold P3 measurement in this process: `cairn` or `json`, then the data dir.
    #[command(hide = true)]
    Probe { which: String, dir: std::path::PathBuf },
}

fn main() -> Result<()> {
    match Cli::parse().bench {
        Bench::Write(args) => write::run(&args),
        Bench::Query(args) => query::run(&args),
        Bench::Blobs(args) => blobs::run(&args),
        Bench::Backup(args) => backup::run(&args),
        Bench::Serve(args) => serve::run(&args),
        Bench::Realtime(args) => realtime::run(&args),
        Bench::Jobs(args) => jobs::run(&args),
        Bench::Probe { which, dir } => query::probe(&which, &dir),
    }
}

/// The median of some measurements.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// A small deterministic generator (xorshift*), so every run sees the same data.
#[derive(Debug)]
pub struct Gen(pub u64);

impl Gen {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn noise(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}
