//! P3 and P4: reading a large store.
//!
//! Data: a Taskerino-like `sessions` collection (name, description, status, started_at, tags)
//! of `--records` records; status, started_at and tags indexed, name and description in the
//! full-text index. Baseline, measured in the same run: the seed's original design, one
//! monolithic `sessions.json` loaded whole and filtered in memory.
//!
//! P3 (open + first page, time and peak RSS) runs in fresh child processes, so that neither
//! side's memory includes the generator's.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use cairn::{CollectionSchema, Query, Search, Store, StoreOptions};
use clap::Args;
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Records in the collection.
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Timed repetitions of each query.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Keep the generated data here instead of a temporary directory (reused when present).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const FILTER: &str = r#"status = "completed" and started_at >= 2025-06-01 and tags has "acme""#;
const TAGS: [&str; 12] = [
    "acme",
    "globex",
    "initech",
    "meeting",
    "bug",
    "design",
    "billing",
    "hiring",
    "research",
    "idea",
    "urgent",
    "follow-up",
];
const WORDS: [&str; 16] = [
    "checkout",
    "retry",
    "payment",
    "onboarding",
    "latency",
    "backup",
    "migration",
    "dashboard",
    "candidate",
    "renewal",
    "audit",
    "invoice",
    "roadmap",
    "customer",
    "review",
    "sprint",
];

fn session(i: usize) -> Value {
    let mut g = crate::Gen((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC0FFEE);
    let mut next = |n: usize| g.below(n);
    let day = next(730);
    let (y, d) = if day < 365 { (2024, day) } else { (2025, day - 365) };
    let date = time::Date::from_ordinal_date(y, (d + 1) as u16).unwrap_or(time::Date::MIN);
    // Mostly a long tail of filler words, sometimes a business word: a query for two business
    // words then matches well under 1 % of sessions, as searches in real notes do.
    let words: Vec<String> = (0..24)
        .map(|_| if next(20) == 0 { WORDS[next(WORDS.len())].to_string() } else { format!("w{}", next(5000)) })
        .collect();
    let status = ["completed", "active", "interrupted"][next(3)];
    let name = format!("{} session {i}", WORDS[next(WORDS.len())]);
    let started_at = format!("{date}T{:02}:{:02}:00Z", next(24), next(60));
    let tags: std::collections::BTreeSet<&str> = [TAGS[next(TAGS.len())], TAGS[next(TAGS.len())]].into();
    json!({
        "name": name,
        "description": words.join(" "),
        "status": status,
        "started_at": started_at,
        "tags": tags,
    })
}

fn schema() -> Result<CollectionSchema> {
    Ok(CollectionSchema::from_json(
        r#"{"name": "sessions", "fields": [
            {"name": "name", "type": "text", "required": true, "fulltext": true, "summary": true},
            {"name": "description", "type": "text", "fulltext": true},
            {"name": "status", "type": "text", "indexed": true, "summary": true},
            {"name": "started_at", "type": "datetime", "indexed": true, "summary": true},
            {"name": "tags", "type": "tags", "indexed": true}]}"#,
        "bench schema",
    )?)
}

fn generate(dir: &Path, records: usize) -> Result<()> {
    if dir.join("store").join(cairn::layout::DB_FILE).exists() && dir.join("sessions.json").exists() {
        eprintln!("reusing data in {}", dir.display());
        return Ok(());
    }
    let start = Instant::now();
    let store = Store::open(dir.join("store"), StoreOptions::default())?;
    store.create_collection(schema()?)?;
    for chunk in (0..records).collect::<Vec<_>>().chunks(20_000) {
        let ids = chunk.to_vec();
        store.transaction(move |tx| {
            for i in ids {
                tx.create("sessions", Some(&format!("s{i:07}")), session(i))?;
            }
            Ok(())
        })?;
    }
    store.close()?;
    let all: Vec<Value> = (0..records)
        .map(|i| {
            let mut s = session(i);
            s["id"] = json!(format!("s{i:07}"));
            s
        })
        .collect();
    std::fs::write(dir.join("sessions.json"), serde_json::to_vec(&all)?)?;
    eprintln!("generated {records} sessions in {:.0?}", start.elapsed());
    Ok(())
}

/// Peak resident memory of this process in KiB (VmHWM), from /proc.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Child process: open + first page (`cairn`) or load + first page (`json`); prints
/// "elapsed_us peak_kib".
pub fn probe(which: &str, dir: &Path) -> Result<()> {
    let start = Instant::now();
    let rows = match which {
        "cairn" => {
            let store = Store::open(dir.join("store"), StoreOptions::read_only())?;
            store.query("sessions", &Query { limit: 20, ..Query::default() })?.rows.len()
        }
        "json" => {
            let all: Vec<Value> = serde_json::from_slice(&std::fs::read(dir.join("sessions.json"))?)?;
            all.iter().take(20).count()
        }
        other => bail!("unknown probe {other}"),
    };
    let elapsed = start.elapsed().as_micros();
    if rows != 20 {
        bail!("first page had {rows} rows");
    }
    println!("{elapsed} {}", peak_rss_kib().unwrap_or(0));
    Ok(())
}

fn run_probe(which: &str, dir: &Path) -> Result<(f64, f64)> {
    let out = Command::new(std::env::current_exe()?).args(["probe", which]).arg(dir).output()?;
    if !out.status.success() {
        bail!("probe {which} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<f64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(us)), Some(Ok(kib))) => Ok((us / 1000.0, kib / 1024.0)),
        _ => bail!("probe {which} printed {text:?}"),
    }
}

pub(crate) fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

fn time_runs(runs: usize, mut f: impl FnMut() -> Result<usize>) -> Result<(f64, f64, usize)> {
    let mut ms = Vec::with_capacity(runs);
    let mut n = 0;
    for _ in 0..runs {
        let start = Instant::now();
        n = f()?;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let (p50, p99) = percentiles(ms);
    Ok((p50, p99, n))
}

pub fn run(args: &QueryArgs) -> Result<()> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().context("temp dir")?;
            tmp.path().to_path_buf()
        }
    };
    generate(&dir, args.records)?;

    let (mut cairn_open, mut json_open) = (Vec::new(), Vec::new());
    for round in 0..3 {
        if round % 2 == 0 {
            cairn_open.push(run_probe("cairn", &dir)?);
            json_open.push(run_probe("json", &dir)?);
        } else {
            json_open.push(run_probe("json", &dir)?);
            cairn_open.push(run_probe("cairn", &dir)?);
        }
    }
    let med = |v: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| crate::median(v.iter().map(pick).collect());
    let (c_ms, c_mb) = (med(&cairn_open, |x| x.0), med(&cairn_open, |x| x.1));
    let (j_ms, j_mb) = (med(&json_open, |x| x.0), med(&json_open, |x| x.1));

    let store = Store::open(dir.join("store"), StoreOptions::read_only())?;
    let query = Query { filter: Some(FILTER.into()), sort: Some("-started_at".into()), limit: 20, ..Query::default() };
    let (q50, q99, q_rows) = time_runs(args.runs, || Ok(store.query("sessions", &query)?.rows.len()))?;
    let search = Search { terms: "checkout retry".into(), limit: 20, ..Search::default() };
    let (s50, s99, s_rows) = time_runs(args.runs, || Ok(store.search("sessions", &search)?.len()))?;

    // Baseline: the whole file in memory, filtered and sorted per query.
    let all: Vec<Value> = serde_json::from_slice(&std::fs::read(dir.join("sessions.json"))?)?;
    let cutoff = "2025-06-01";
    let base_runs = args.runs.min(20);
    let (b50, b99, b_rows) = time_runs(base_runs, || {
        let mut hits: Vec<&Value> = all
            .iter()
            .filter(|s| {
                s["status"] == "completed"
                    && s["started_at"].as_str().is_some_and(|d| d >= cutoff)
                    && s["tags"].as_array().is_some_and(|t| t.iter().any(|x| x == "acme"))
            })
            .collect();
        hits.sort_by(|a, b| b["started_at"].as_str().cmp(&a["started_at"].as_str()));
        Ok(hits.len().min(20))
    })?;
    let (t50, t99, t_rows) = time_runs(base_runs, || {
        // Without an index every document must be read to find (and rank) all matches.
        let hits: Vec<&Value> = all
            .iter()
            .filter(|s| s["description"].as_str().is_some_and(|d| d.contains("checkout") && d.contains("retry")))
            .collect();
        Ok(hits.len().min(20))
    })?;

    println!("{} sessions; medians of 3 cold child processes for P3, {} runs for cairn queries, {base_runs} for the baseline", args.records, args.runs);
    println!("P3 open + first page: cairn {c_ms:.1} ms, peak RSS {c_mb:.1} MB | monolithic JSON {j_ms:.0} ms, {j_mb:.0} MB | time {:.3}x, memory {:.3}x (targets < 50 ms, < 30 MB)", c_ms / j_ms, c_mb / j_mb);
    println!("P4 filtered+sorted page ({q_rows} rows): cairn p50 {q50:.2} ms p99 {q99:.2} ms | in-memory JSON ({b_rows}) p50 {b50:.1} ms p99 {b99:.1} ms | p50 {:.3}x (target p50 < 2 ms)", q50 / b50);
    println!("P4 full-text page ({s_rows} rows): cairn p50 {s50:.2} ms p99 {s99:.2} ms | substring scan ({t_rows}) p50 {t50:.1} ms p99 {t99:.1} ms | p50 {:.3}x (target p50 < 20 ms)", s50 / t50);
    Ok(())
}
