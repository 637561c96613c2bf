//! Realtime: `cairn serve` (the release binary, its own process, so that its memory is its
//! own) with `--subscribers` SSE streams open — half on the whole collection, half on a filter
//! that matches a tenth of the records — while 16 writers create records over HTTP at
//! `--rate` commits per second for `--seconds`.
//!
//! Printed: events delivered per second; delivery latency (p50, p99) from just before a
//! create is sent to the moment a subscriber has read its event (so it includes the commit's
//! fsync), against the baseline of the same creates' round trip measured in the same run
//! with no subscriber; the writers' achieved rate with subscribers as a ratio of the rate
//! without; and the server's resident memory fresh, at its peak under load, and after.
//! Events missing at the end are counted (there should be none). Everything is bounded by
//! `--seconds` and listens on 127.0.0.1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::serve::{spawn_cairn, Server};

#[derive(Debug, clap::Args)]
pub struct RealtimeArgs {
    /// The `cairn` binary (build it with `cargo build --release -p cairn-cli`).
    #[arg(long, default_value = "target/release/cairn")]
    cairn: std::path::PathBuf,
    /// SSE subscribers (half with a filter).
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    /// Commits per second, over all writers.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// How long the writers write.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

const WRITERS: usize = 16;

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Latencies in 0.1 ms buckets up to 10 s (the last bucket holds the rest).
struct Histogram(Vec<AtomicU64>);

impl Histogram {
    fn new() -> Histogram {
        Histogram((0..100_001).map(|_| AtomicU64::new(0)).collect())
    }

    fn add(&self, micros: u64) {
        let bucket = ((micros / 100) as usize).min(self.0.len() - 1);
        self.0[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        let wanted = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, bucket) in self.0.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= wanted {
                return (i as f64 + 1.0) / 10.0;
            }
        }
        f64::NAN
    }
}

/// Creates records at `rate` per second over `WRITERS` connections for `seconds`; each
/// create's round trip goes into `round_trips`. Returns how many were created.
async fn write(
    server: &Server,
    rate: u64,
    seconds: u64,
    round_trips: Arc<Histogram>,
    filtered: Arc<AtomicU64>,
) -> Result<u64> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(WRITERS).build()?;
    let url = format!("{}/api/collections/live/records", server.base);
    let per_writer = rate as f64 / WRITERS as f64;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (http, url, auth, round_trips, filtered) =
            (http.clone(), url.clone(), server.auth.clone(), round_trips.clone(), filtered.clone());
        tasks.push(tokio::spawn(async move {
            let mut gen = crate::Gen(w as u64 * 7919 + 1);
            let mut made = 0u64;
            loop {
                let due = start + Duration::from_secs_f64(made as f64 / per_writer);
                if due >= deadline {
                    return Ok::<u64, anyhow::Error>(made);
                }
                tokio::time::sleep_until(due.into()).await;
                let n = gen.below(100);
                let t = now_micros();
                let response =
                    http.post(&url).header("authorization", &auth).json(&json!({"n": n, "t": t})).send().await?;
                if response.status() != 201 {
                    bail!("create: {}", response.status());
                }
                round_trips.add(now_micros().saturating_sub(t));
                if n < 10 {
                    filtered.fetch_add(1, Ordering::Relaxed);
                }
                made += 1;
            }
        }));
    }
    let mut made = 0;
    for task in tasks {
        made += task.await??;
    }
    Ok(made)
}

/// One SSE subscriber over a plain socket: counts its events and records their latency
/// (from the `t` each record carries) until `stop`.
async fn subscribe(
    address: String,
    auth: String,
    filter: bool,
    latencies: Arc<Histogram>,
    ready: Arc<AtomicU64>,
) -> Result<u64> {
    let mut stream = tokio::net::TcpStream::connect(&address).await?;
    let query = if filter { "collection=live&filter=n%20%3C%2010" } else { "collection=live" };
    let request = format!("GET /api/realtime?{query} HTTP/1.1\r\nhost: {address}\r\nauthorization: {auth}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut lines = BufReader::new(stream).lines();
    let mut events = 0u64;
    let mut counted_ready = false;
    while let Some(line) = lines.next_line().await? {
        if !counted_ready && line.starts_with("event: ready") {
            ready.fetch_add(1, Ordering::SeqCst);
            counted_ready = true;
        }
        let Some(data) = line.strip_prefix("data: ") else { continue };
        let Some(at) = data.find("\"t\":") else { continue };
        let digits: String = data[at + 4..].chars().take_while(char::is_ascii_digit).collect();
        if let Ok(t) = digits.parse::<u64>() {
            latencies.add(now_micros().saturating_sub(t));
            events += 1;
        }
    }
    Ok(events)
}

pub fn run(args: &RealtimeArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let server = spawn_cairn(&args.cairn)?;
    let schema =
        json!({"name": "live", "fields": [{"name": "n", "type": "integer"}, {"name": "t", "type": "integer"}]});
    server.call(reqwest::Method::POST, "/api/collections", Some(&schema))?;
    println!(
        "realtime: {} SSE subscribers (half filtered to 1 record in 10), {WRITERS} writers at {} commits/s for {} s",
        args.subscribers, args.rate, args.seconds
    );

    runtime.block_on(async {
        // Baseline: the creates alone.
        let alone = Arc::new(Histogram::new());
        let started = Instant::now();
        let made = write(&server, args.rate, args.seconds, alone.clone(), Arc::default()).await?;
        let rate_alone = made as f64 / started.elapsed().as_secs_f64();

        // The subscribers, then the same load.
        let latencies = Arc::new(Histogram::new());
        let ready = Arc::new(AtomicU64::new(0));
        let address = server.base.trim_start_matches("http://").to_string();
        let mut subscribers = Vec::new();
        for i in 0..args.subscribers {
            let task = subscribe(address.clone(), server.auth.clone(), i % 2 == 1, latencies.clone(), ready.clone());
            subscribers.push(tokio::spawn(task));
        }
        let wait = Instant::now();
        while ready.load(Ordering::SeqCst) < args.subscribers as u64 {
            if wait.elapsed() > Duration::from_secs(60) {
                bail!("only {} of {} subscribers were ready after 60 s", ready.load(Ordering::SeqCst), args.subscribers);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connected_kib = server.rss_kib()?;
        let peak = Arc::new(Mutex::new(connected_kib));
        let sampler = {
            let (peak, pid) = (peak.clone(), server.pid());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if let Ok(kib) = crate::serve::rss_of(pid) {
                        let mut peak = peak.lock().expect("peak");
                        *peak = (*peak).max(kib);
                    }
                }
            })
        };
        let with = Arc::new(Histogram::new());
        let filtered = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let made = write(&server, args.rate, args.seconds, with.clone(), filtered.clone()).await?;
        let rate_with = made as f64 / started.elapsed().as_secs_f64();
        let expected = (args.subscribers as u64).div_ceil(2) * made + (args.subscribers as u64 / 2) * filtered.load(Ordering::Relaxed);
        let drain = Instant::now();
        while latencies.count() < expected && drain.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let delivered = latencies.count();
        let delivery_seconds = started.elapsed().as_secs_f64();
        sampler.abort();
        let after_kib = server.rss_kib()?;
        let peak_kib = *peak.lock().expect("peak");
        for task in subscribers {
            task.abort();
        }

        println!("  writes alone:            {rate_alone:>9.0} commits/s, round trip p50 {:.1} ms, p99 {:.1} ms", alone.quantile_ms(0.5), alone.quantile_ms(0.99));
        println!("  writes with subscribers: {rate_with:>9.0} commits/s ({:.2}x), round trip p50 {:.1} ms, p99 {:.1} ms", rate_with / rate_alone, with.quantile_ms(0.5), with.quantile_ms(0.99));
        let (p50, p99) = (latencies.quantile_ms(0.5), latencies.quantile_ms(0.99));
        println!("  delivered:               {:>9.0} events/s ({delivered} of {expected}; {} missing)", delivered as f64 / delivery_seconds, expected.saturating_sub(delivered));
        println!("  delivery latency:        p50 {p50:.1} ms ({:.2}x the round trip alone), p99 {p99:.1} ms ({:.2}x) — target p99 < 100 ms", p50 / alone.quantile_ms(0.5), p99 / alone.quantile_ms(0.99));
        println!("  server RSS:              fresh {} MiB, {} subscribers connected {} MiB, peak {} MiB, after {} MiB — target < 150 MiB", server.fresh_kib / 1024, args.subscribers, connected_kib / 1024, peak_kib / 1024, after_kib / 1024);
        Ok(())
    })
}
