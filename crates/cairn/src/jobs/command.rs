//! External-command jobs (JOB-3). A job of kind `command` with args
//! `{"command": "<name>", "params": {…}}` runs the program the configuration's allow-list
//! names `<name>`, never any other (a name not on the list is refused, recorded and audited):
//!
//! - the argument vector comes from the command's template, each `{param}` replaced by the
//!   job's value for it after that value is checked against its declared type (string,
//!   integer, number, boolean, one of a list, or a path confined to allowed folders) and
//!   pattern; it is passed as an argv array, never through a shell, so metacharacters in a
//!   value are only characters;
//! - the environment is cleared but for the variables the command lists;
//! - it runs in a working directory inside the allowed folders (or a fresh empty one), in a
//!   process group of its own, under `prlimit` for CPU time, memory, open files and file
//!   size (the workspace forbids `unsafe`, so the limits are set by that program);
//! - a timeout (or a cancel) sends SIGTERM to the whole group, then SIGKILL after a grace;
//!   the group is killed when the command ends in any case, so nothing it started lingers;
//! - stdout and stderr are kept up to a cap each, with a flag when cut;
//! - exit status, signal, duration and output are kept on the job, and every run is audited;
//! - a declared mapping turns the command's JSON output into a record, written in the same
//!   transaction as the job's completion.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::store::Store;
use crate::error::{Error, Result};
use crate::jobs::worker::{CancelToken, Done, Failure, Handler, JobContext, Workers};

/// The kind of the jobs that run external commands.
pub const COMMAND_KIND: &str = "command";

/// Where `prlimit` is looked for.
const PRLIMIT: [&str; 2] = ["/usr/bin/prlimit", "/bin/prlimit"];

/// A declared parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    /// A file or folder; it must lie inside one of the command's allowed folders.
    Path,
    /// One of `values`.
    Enum,
}

fn yes() -> bool {
    true
}

/// A parameter of a command's argument template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// A regular expression the whole value (as text) must match.
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// The values an `enum` may take.
    #[serde(default)]
    pub values: Vec<String>,
    /// For a path: it must exist.
    #[serde(default = "yes")]
    pub must_exist: bool,
    #[serde(default = "yes")]
    pub required: bool,
    /// The longest value, in characters.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
}

fn default_max_len() -> usize {
    4096
}

/// Resource limits, each unset for none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub cpu_seconds: Option<u64>,
    pub memory_mb: Option<u64>,
    pub open_files: Option<u64>,
    pub file_size_mb: Option<u64>,
}

impl Limits {
    fn prlimit_args(&self) -> Vec<String> {
        let mb = |m: u64| m.saturating_mul(1024 * 1024);
        // prlimit's resource names: CPU seconds, address space and file size in bytes, and
        // open file descriptors.
        [
            ("cpu", self.cpu_seconds),
            ("as", self.memory_mb.map(mb)),
            ("nofile", self.open_files),
            ("fsize", self.file_size_mb.map(mb)),
        ]
        .into_iter()
        .filter_map(|(resource, limit)| limit.map(|limit| format!("--{resource}={limit}")))
        .collect()
    }
}

/// How a command's stdout becomes a record: stdout is a JSON object whose fields, plus
/// `set` (values from templates of the job's parameters), make the record's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputMapping {
    pub collection: String,
    /// Which fields of stdout's object to keep (all when empty).
    #[serde(default)]
    pub fields: Vec<String>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
}

fn default_timeout() -> u64 {
    300
}

fn default_grace() -> u64 {
    5
}

fn default_cap() -> usize {
    1024 * 1024
}

/// One allow-listed command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// The program, by absolute path.
    pub program: PathBuf,
    /// The argument template: each element one argv entry, `{param}` replaced.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    /// Folders path parameters (and the working directory) must lie in.
    #[serde(default)]
    pub allowed_dirs: Vec<PathBuf>,
    /// Environment variables passed on from cairn's environment; every other is cleared.
    #[serde(default)]
    pub env: Vec<String>,
    /// Environment variables set to fixed values.
    #[serde(default)]
    pub set_env: BTreeMap<String, String>,
    /// Where it runs (inside an allowed folder); a fresh empty folder if absent.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Between SIGTERM and SIGKILL.
    #[serde(default = "default_grace")]
    pub kill_grace_seconds: u64,
    #[serde(default)]
    pub limits: Limits,
    /// The most of stdout, and of stderr, kept.
    #[serde(default = "default_cap")]
    pub output_cap_bytes: usize,
    #[serde(default)]
    pub output: Option<OutputMapping>,
}

/// The allow-list: commands by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Commands {
    pub commands: BTreeMap<String, CommandSpec>,
}

/// What one run of a command did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CommandRun {
    pub command: String,
    pub argv: Vec<String>,
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    pub duration_ms: u64,
    pub stdout: String,
    pub stdout_truncated: bool,
    pub stderr: String,
    pub stderr_truncated: bool,
}

impl CommandRun {
    /// Whether it exited with status 0 on its own.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.cancelled
    }

    fn summary(&self) -> String {
        if self.timed_out {
            format!("timed out after {} ms and was killed", self.duration_ms)
        } else if self.cancelled {
            "cancelled".into()
        } else if let Some(signal) = self.signal {
            format!("killed by signal {signal}")
        } else {
            format!("exited with status {}", self.exit_code.unwrap_or(-1))
        }
    }
}

fn refused(command: &str, reason: impl Into<String>) -> Error {
    Error::CommandRefused { command: command.into(), reason: reason.into() }
}

/// `path` with `.` and `..` taken out lexically (for paths that do not exist yet).
fn normalized(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The real path of `path`: links resolved as far as it exists, the rest normalized.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => resolved(parent).join(name),
        _ => normalized(path),
    }
}

/// The placeholders of a template element.
fn placeholders(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        out.push(&after[..close]);
        rest = &after[close + 1..];
    }
    out
}

impl CommandSpec {
    /// Checks the command's own definition (at configuration time).
    pub fn check(&self, name: &str) -> Result<()> {
        if !self.program.is_absolute() {
            return Err(refused(name, format!("program {} must be an absolute path", self.program.display())));
        }
        for template in self.args.iter().chain(self.output.iter().flat_map(|o| o.set.values())) {
            for p in placeholders(template) {
                if !self.params.contains_key(p) {
                    return Err(refused(
                        name,
                        format!("the template names {{{p}}}, which is not a declared parameter"),
                    ));
                }
            }
        }
        for (param, spec) in &self.params {
            if let Some(pattern) = &spec.pattern {
                regex::Regex::new(pattern)
                    .map_err(|e| refused(name, format!("parameter {param}: pattern {pattern:?}: {e}")))?;
            }
            if spec.kind == ParamType::Enum && spec.values.is_empty() {
                return Err(refused(name, format!("parameter {param} is an enum with no values")));
            }
            if spec.kind == ParamType::Path && self.allowed_dirs.is_empty() {
                return Err(refused(name, format!("parameter {param} is a path, and no allowed_dirs are set")));
            }
        }
        if let Some(dir) = &self.working_dir {
            self.confined(name, "working_dir", dir)?;
        }
        if self.timeout_seconds == 0 {
            return Err(refused(name, "timeout_seconds must be at least 1"));
        }
        Ok(())
    }

    /// `path`, resolved, if it lies inside an allowed folder.
    fn confined(&self, name: &str, what: &str, path: &Path) -> Result<PathBuf> {
        if !path.is_absolute() {
            return Err(refused(name, format!("{what} {} is not an absolute path", path.display())));
        }
        let real = resolved(path);
        if self.allowed_dirs.iter().any(|dir| real.starts_with(resolved(dir))) {
            Ok(real)
        } else {
            Err(refused(name, format!("{what} {} is outside the allowed folders", path.display())))
        }
    }

    /// The job's arguments checked and turned into text, by parameter name.
    pub fn values(&self, name: &str, args: &Value) -> Result<BTreeMap<String, String>> {
        let empty = Map::new();
        let given = match args {
            Value::Object(map) => map,
            Value::Null => &empty,
            _ => return Err(refused(name, "the job's args must be an object of parameters")),
        };
        for key in given.keys() {
            if !self.params.contains_key(key) {
                return Err(refused(name, format!("{key:?} is not a parameter of this command")));
            }
        }
        let mut values = BTreeMap::new();
        for (param, spec) in &self.params {
            let Some(value) = given.get(param).filter(|v| !v.is_null()) else {
                if spec.required {
                    return Err(refused(name, format!("parameter {param} is required")));
                }
                values.insert(param.clone(), String::new());
                continue;
            };
            values.insert(param.clone(), self.value(name, param, spec, value)?);
        }
        Ok(values)
    }

    fn value(&self, name: &str, param: &str, spec: &ParamSpec, value: &Value) -> Result<String> {
        let bad = |reason: String| refused(name, format!("parameter {param}: {reason}"));
        let text = match (spec.kind, value) {
            (ParamType::String | ParamType::Enum | ParamType::Path, Value::String(s)) => s.clone(),
            (ParamType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            (ParamType::Number, Value::Number(n)) => n.to_string(),
            (ParamType::Boolean, Value::Bool(b)) => b.to_string(),
            (kind, other) => return Err(bad(format!("{other} is not a {kind:?}").to_lowercase())),
        };
        if text.chars().count() > spec.max_len {
            return Err(bad(format!("longer than {} characters", spec.max_len)));
        }
        if text.contains('\0') {
            return Err(bad("contains a NUL character".into()));
        }
        if let Value::Number(n) = value {
            let n = n.as_f64().unwrap_or(f64::NAN);
            if spec.min.is_some_and(|min| n < min) || spec.max.is_some_and(|max| n > max) {
                return Err(bad(format!("{n} is outside [{:?}, {:?}]", spec.min, spec.max)));
            }
        }
        if spec.kind == ParamType::Enum && !spec.values.contains(&text) {
            return Err(bad(format!("{text:?} is not one of {:?}", spec.values)));
        }
        if let Some(pattern) = &spec.pattern {
            let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| bad(e.to_string()))?;
            if !re.is_match(&text) {
                return Err(bad(format!("{text:?} does not match {pattern:?}")));
            }
        }
        if spec.kind == ParamType::Path {
            let real = self.confined(name, &format!("parameter {param}"), Path::new(&text))?;
            if spec.must_exist && !real.exists() {
                return Err(bad(format!("{text} does not exist")));
            }
            return Ok(real.to_string_lossy().into_owned());
        }
        Ok(text)
    }

    /// The argv (program first) for checked `values`.
    fn argv(&self, values: &BTreeMap<String, String>) -> Vec<String> {
        let mut argv = vec![self.program.to_string_lossy().into_owned()];
        argv.extend(self.args.iter().map(|t| fill(t, values)));
        argv
    }
}

/// `template` with each `{param}` replaced by its value (in one piece: never split).
fn fill(template: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// Reads a pipe to its end, keeping up to `cap` bytes.
/// The prefix of a stderr line that reports progress: `cairn-progress: <percent> [message]`.
pub const PROGRESS_PREFIX: &str = "cairn-progress:";

/// Reads `pipe` to its end, keeping up to `cap` bytes; with `progress`, every complete line
/// that reports progress is sent on as it arrives.
fn capture(
    mut pipe: impl Read + Send + 'static,
    cap: usize,
    progress: Option<mpsc::Sender<(f64, String)>>,
) -> JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut truncated = false;
        let mut line = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = cap.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                    truncated |= n > room;
                    let Some(progress) = &progress else { continue };
                    for &byte in &buf[..n] {
                        if byte != b'\n' {
                            // A line longer than any progress report is not one.
                            if line.len() < 1024 {
                                line.push(byte);
                            }
                            continue;
                        }
                        if let Some(report) = progress_line(&String::from_utf8_lossy(&line)) {
                            progress.send(report).ok();
                        }
                        line.clear();
                    }
                }
            }
        }
        (kept, truncated)
    })
}

/// `cairn-progress: 42.5 decoding` → (42.5, "decoding").
fn progress_line(line: &str) -> Option<(f64, String)> {
    let rest = line.trim().strip_prefix(PROGRESS_PREFIX)?.trim_start();
    let (number, message) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let percent: f64 = number.trim_end_matches('%').parse().ok().filter(|p: &f64| p.is_finite())?;
    Some((percent.clamp(0.0, 100.0), message.trim().to_string()))
}

fn signal_group(child: &Child, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw) {
        // ESRCH (the group is gone) is what we want anyway.
        rustix::process::kill_process_group(pid, signal).ok();
    }
}

/// Runs command `name` (already checked) with checked `values`; its progress reports
/// (stderr lines `cairn-progress: <percent> [message]`) go to `progress` as they come.
pub fn run(
    name: &str,
    spec: &CommandSpec,
    values: &BTreeMap<String, String>,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(f64, &str),
) -> Result<CommandRun> {
    let argv = spec.argv(values);
    let limits = spec.limits.prlimit_args();
    let mut command = if limits.is_empty() {
        Command::new(&argv[0])
    } else {
        let prlimit = PRLIMIT
            .iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| refused(name, "resource limits are set and prlimit (util-linux) is not installed"))?;
        let mut c = Command::new(prlimit);
        c.args(&limits).arg("--").arg(&argv[0]);
        c
    };
    command.args(&argv[1..]);
    command.env_clear();
    for var in &spec.env {
        if let Some(value) = std::env::var_os(var) {
            command.env(var, value);
        }
    }
    command.envs(&spec.set_env);
    let scratch;
    match &spec.working_dir {
        Some(dir) => {
            command.current_dir(spec.confined(name, "working_dir", dir)?);
        }
        None => {
            scratch = tempfile::tempdir().map_err(|cause| Error::Io {
                action: "create a working folder in",
                path: std::env::temp_dir(),
                cause,
            })?;
            command.current_dir(scratch.path());
        }
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child =
        command.spawn().map_err(|cause| Error::Io { action: "start command", path: spec.program.clone(), cause })?;
    let (reports, reported) = mpsc::channel();
    let stdout = child.stdout.take().map(|p| capture(p, spec.output_cap_bytes, None));
    let stderr = child.stderr.take().map(|p| capture(p, spec.output_cap_bytes, Some(reports)));
    let timeout = Duration::from_secs(spec.timeout_seconds);
    let grace = Duration::from_secs(spec.kill_grace_seconds);
    let (mut timed_out, mut cancelled, mut termed_at) = (false, false, None::<Instant>);
    let status = loop {
        if let Some(status) =
            child.try_wait().map_err(|cause| Error::Io { action: "wait for", path: spec.program.clone(), cause })?
        {
            break status;
        }
        match termed_at {
            None if started.elapsed() >= timeout || cancel.is_cancelled() => {
                timed_out = !cancel.is_cancelled();
                cancelled = !timed_out;
                signal_group(&child, rustix::process::Signal::TERM);
                termed_at = Some(Instant::now());
            }
            Some(at) if at.elapsed() >= grace => {
                signal_group(&child, rustix::process::Signal::KILL);
            }
            _ => {}
        }
        for (percent, message) in reported.try_iter() {
            progress(percent, &message);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Whatever the command started is ended with it.
    signal_group(&child, rustix::process::Signal::KILL);
    let duration_ms = started.elapsed().as_millis() as u64;
    let take = |h: Option<JoinHandle<(Vec<u8>, bool)>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    let (out, out_cut) = take(stdout);
    let (err, err_cut) = take(stderr);
    for (percent, message) in reported.try_iter() {
        progress(percent, &message);
    }
    Ok(CommandRun {
        command: name.into(),
        argv,
        exit_code: status.code(),
        signal: std::os::unix::process::ExitStatusExt::signal(&status),
        timed_out,
        cancelled,
        duration_ms,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stdout_truncated: out_cut,
        stderr: String::from_utf8_lossy(&err).into_owned(),
        stderr_truncated: err_cut,
    })
}

impl Commands {
    /// Parses the allow-list from TOML (`[name]` tables) and checks every command.
    pub fn from_toml(text: &str, source: &str) -> Result<Commands> {
        let commands: Commands = toml::from_str(text)
            .map_err(|e| Error::InvalidInput { source_name: source.into(), reason: e.to_string() })?;
        commands.check()?;
        Ok(commands)
    }

    pub fn check(&self) -> Result<()> {
        self.commands.iter().try_for_each(|(name, spec)| spec.check(name))
    }

    fn spec(&self, name: &str) -> Result<&CommandSpec> {
        self.commands.get(name).ok_or_else(|| refused(name, "it is not on the allow-list"))
    }

    /// A job that runs command `name` with `params`, checked now (and again when it runs).
    pub fn job(&self, name: &str, params: Value) -> Result<crate::jobs::NewJob> {
        self.spec(name)?.values(name, &params)?;
        Ok(crate::jobs::NewJob::new(COMMAND_KIND, serde_json::json!({"command": name, "params": params})))
    }
}

/// The command and parameters a `command` job's args name.
fn requested(args: &Value) -> Result<(String, Value)> {
    let name = args.get("command").and_then(Value::as_str).ok_or_else(|| {
        refused("?", "the job's args must name a command: {\"command\": \"<name>\", \"params\": {…}}")
    })?;
    Ok((name.to_string(), args.get("params").cloned().unwrap_or(Value::Null)))
}

/// Runs `command` jobs: the allow-listed command a job names, or a refusal.
#[derive(Debug)]
struct CommandHandler {
    commands: Arc<Commands>,
}

fn audit(store: &Store, name: &str, job: i64, result: std::result::Result<&CommandRun, &Error>) {
    let (outcome, detail) = match result {
        Ok(run) if run.succeeded() => ("ok".to_string(), format!("{} ms", run.duration_ms)),
        Ok(run) => (format!("failed: {}", run.summary()), format!("{} ms", run.duration_ms)),
        Err(e) => (format!("refused: {e}"), String::new()),
    };
    store.audit("command.run", &format!("{name} (job {job})"), &outcome, &detail);
}

impl Handler for CommandHandler {
    fn run(&self, ctx: &JobContext) -> std::result::Result<Done, Failure> {
        let job = ctx.job();
        let mut name = String::from("?");
        let result = requested(&job.args).and_then(|(requested, params)| {
            name = requested;
            let spec = self.commands.spec(&name)?;
            let values = spec.values(&name, &params)?;
            let mut report = |percent: f64, message: &str| {
                let message = (!message.is_empty()).then_some(message);
                if let Err(e) = ctx.progress(percent, message) {
                    tracing::debug!(error = %e, "a command's progress was not recorded");
                }
            };
            let run = run(&name, spec, &values, ctx.cancel_token(), &mut report)?;
            Ok((spec, values, run))
        });
        let (spec, values, run) = match result {
            Ok(ran) => ran,
            Err(e) => {
                audit(ctx.store(), &name, job.id, Err(&e));
                // A refusal (not allowed, bad arguments) will not heal by retrying.
                return Err(match e {
                    Error::CommandRefused { .. } => Failure::discard(e.to_string()),
                    e => Failure::from(e),
                });
            }
        };
        audit(ctx.store(), &name, job.id, Ok(&run));
        let record = serde_json::to_value(&run).unwrap_or(Value::Null);
        if !run.succeeded() {
            return Err(Failure::retry(format!("command `{name}` {}", run.summary())).detail(record));
        }
        let mut done = Done::new().result(record);
        if let Some(mapping) = spec.output.clone() {
            let body =
                mapped_body(&name, &mapping, &run.stdout, &values).map_err(|e| Failure::discard(e.to_string()))?;
            done = done.writes(move |tx| tx.create(&mapping.collection, None, body).map(drop));
        }
        Ok(done)
    }
}

/// The record body the mapping makes of a command's stdout.
fn mapped_body(name: &str, mapping: &OutputMapping, stdout: &str, values: &BTreeMap<String, String>) -> Result<Value> {
    let parsed: Value = serde_json::from_str(stdout.trim())
        .map_err(|e| refused(name, format!("its output is not JSON, so it cannot become a record: {e}")))?;
    let Value::Object(mut body) = parsed else {
        return Err(refused(name, "its output is not a JSON object, so it cannot become a record"));
    };
    if !mapping.fields.is_empty() {
        let keep: BTreeSet<&String> = mapping.fields.iter().collect();
        body.retain(|k, _| keep.contains(k));
    }
    for (field, template) in &mapping.set {
        body.insert(field.clone(), Value::String(fill(template, values)));
    }
    Ok(Value::Object(body))
}

impl Workers {
    /// Runs `command` jobs with this allow-list (a job naming any other command is refused).
    pub fn register_commands(&mut self, commands: &Commands) -> &mut Self {
        self.register(COMMAND_KIND, CommandHandler { commands: Arc::new(commands.clone()) })
    }
}

#[cfg(test)]
mod tests {
    use super::progress_line;

    #[test]
    fn progress_lines_are_read_and_anything_else_is_not() {
        assert_eq!(progress_line("cairn-progress: 42.5 decoding audio"), Some((42.5, "decoding audio".into())));
        assert_eq!(progress_line("  cairn-progress:100%"), Some((100.0, String::new())));
        assert_eq!(progress_line("cairn-progress: 250 too much"), Some((100.0, "too much".into())));
        for line in ["progress: 10", "cairn-progress: NaN", "cairn-progress: ten", "cairn-progress:", "warning: x"] {
            assert_eq!(progress_line(line), None, "{line}");
        }
    }
}
