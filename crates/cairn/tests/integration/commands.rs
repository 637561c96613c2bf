//! External-command jobs: every refusal and every way a command can misbehave ends with a
//! clear outcome recorded on the job and in the audit trail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::{Commands, ErrorKind, Job, JobState, NewJob, Store, WorkerOptions, Workers};
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/commands").join(name)
}

/// The allow-list the tests use, with `allowed` as the one folder paths may be in.
fn commands(allowed: &Path) -> Commands {
    let toml = format!(
        r#"
[echo]
program = "{echo}"
args = ["--file", "{{file}}", "--label={{label}}", "{{count}}"]
allowed_dirs = ["{allowed}"]
set_env = {{ PATH = "/usr/bin:/bin" }}
params.file = {{ type = "path" }}
params.label = {{ type = "string", pattern = "[A-Za-z0-9 ;$()`|&<>*'\"-]+" }}
params.count = {{ type = "integer", min = 1, max = 10, required = false }}

[hang]
program = "{hang}"
timeout_seconds = 1
kill_grace_seconds = 1
set_env = {{ PATH = "/usr/bin:/bin" }}

[flood]
program = "{flood}"
output_cap_bytes = 1048576
set_env = {{ PATH = "/usr/bin:/bin" }}

[env]
program = "{env}"
env = ["CAIRN_TEST_PASSED"]
set_env = {{ PATH = "/usr/bin:/bin" }}

[hog]
program = "/usr/bin/python3"
args = ["-c", "b = bytearray(600 * 1024 * 1024); print(len(b))"]
limits = {{ memory_mb = 200, cpu_seconds = 20, open_files = 64, file_size_mb = 10 }}
"#,
        echo = fixture("echo-args").display(),
        hang = fixture("hang").display(),
        flood = fixture("flood").display(),
        env = fixture("show-env").display(),
        allowed = allowed.display(),
    );
    Commands::from_toml(&toml, "test commands").expect("commands parse")
}

struct Bench {
    _tmp: tempfile::TempDir,
    allowed: PathBuf,
    store: Store,
    commands: Commands,
}

fn bench() -> Bench {
    let tmp = tempfile::tempdir().expect("tempdir");
    let allowed = tmp.path().join("media");
    std::fs::create_dir(&allowed).expect("mkdir");
    std::fs::write(allowed.join("a.wav"), b"RIFF").expect("write");
    let store = Store::open(tmp.path().join("store"), cairn::StoreOptions::default()).expect("open");
    let commands = commands(&allowed);
    Bench { _tmp: tmp, allowed, store, commands }
}

impl Bench {
    /// Enqueues a `command` job as-is (no check first) and runs it in a pool until it settles.
    fn run(&self, command: &str, params: Value) -> Job {
        let queue = self.store.queue();
        let job = NewJob::new(cairn::COMMAND_KIND, json!({"command": command, "params": params})).max_attempts(1);
        let id = queue.enqueue(job).expect("enqueue").job.id;
        let mut workers = Workers::new();
        workers.register_commands(&self.commands);
        let pool =
            workers.start(queue.clone(), WorkerOptions::named("cmd").concurrency(1).poll(Duration::from_millis(20)));
        let job = loop {
            let job = queue.get(id).expect("job");
            if job.state.is_finished() {
                break job;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        pool.stop(Duration::from_secs(5));
        job
    }

    fn audited(&self) -> Vec<String> {
        let trail = self.store.audit_log(Some("action = 'command.run'"), 0, 100).expect("audit");
        trail.iter().map(|e| e.outcome.clone()).collect()
    }
}

fn output(job: &Job) -> &Value {
    job.result.as_ref().or_else(|| job.errors.last().and_then(|e| e.detail.as_ref())).expect("a recorded run")
}

#[test]
fn arguments_reach_the_program_literally_and_shell_metacharacters_stay_characters() {
    let b = bench();
    let file = b.allowed.join("a.wav");
    let label = "x; touch pwned $(touch pwned2) `touch pwned3` | cat > out & echo *";
    let job = b.run("echo", json!({"file": file, "label": label, "count": 3}));
    assert_eq!(job.state, JobState::Completed, "{:?}", job.errors);
    let run = output(&job);
    let lines: Vec<&str> = run["stdout"].as_str().expect("stdout").lines().collect();
    let real = file.canonicalize().expect("real path");
    assert_eq!(lines, ["--file", real.to_str().expect("utf-8"), &format!("--label={label}"), "3"]);
    assert_eq!(run["exit_code"], 0);
    assert!(run["duration_ms"].is_u64());
    for leftover in ["pwned", "pwned2", "pwned3", "out"] {
        assert!(!b.allowed.join(leftover).exists(), "{leftover} was created: a shell ran");
    }
    assert_eq!(b.audited(), ["ok"]);
}

#[test]
fn refusals_are_recorded_and_never_run_anything() {
    let b = bench();
    let outside = b._tmp.path().join("secret.txt");
    std::fs::write(&outside, b"no").expect("write");
    let link = b.allowed.join("link.wav");
    std::os::unix::fs::symlink(&outside, &link).expect("symlink");
    let file = b.allowed.join("a.wav");
    let cases = [
        ("rm", json!({}), "not on the allow-list"),
        ("echo", json!({"file": file, "label": "bad\nline"}), "does not match"),
        ("echo", json!({"file": file, "label": "ok", "count": 11}), "outside"),
        ("echo", json!({"file": file, "label": "ok", "count": "3"}), "is not a integer"),
        ("echo", json!({"file": file, "label": "ok", "extra": 1}), "not a parameter"),
        ("echo", json!({"label": "ok"}), "file is required"),
        ("echo", json!({"file": outside, "label": "ok"}), "outside the allowed folders"),
        (
            "echo",
            json!({"file": format!("{}/../secret.txt", b.allowed.display()), "label": "ok"}),
            "outside the allowed folders",
        ),
        ("echo", json!({"file": link, "label": "ok"}), "outside the allowed folders"),
        ("echo", json!({"file": b.allowed.join("missing.wav"), "label": "ok"}), "does not exist"),
    ];
    for (command, params, expected) in &cases {
        let job = b.run(command, params.clone());
        assert_eq!(job.state, JobState::Discarded, "{command} {params}: refused, not retried");
        let error = &job.errors[0].error;
        assert!(error.contains(expected), "{command} {params}: {error}");
        assert!(job.result.is_none());
        // The same refusal comes before enqueueing, when the caller checks.
        let early = b.commands.job(command, params.clone()).expect_err("refused early");
        assert_eq!(early.kind(), ErrorKind::InvalidInput);
    }
    let outcomes = b.audited();
    assert_eq!(outcomes.len(), cases.len());
    assert!(outcomes.iter().all(|o| o.starts_with("refused:")), "{outcomes:?}");
}

#[test]
fn a_command_that_outlives_its_timeout_is_killed_with_its_whole_process_group() {
    let b = bench();
    let job = b.run("hang", json!({}));
    assert_eq!(job.state, JobState::Discarded, "one attempt, used up");
    let run = output(&job);
    assert_eq!(run["timed_out"], true);
    assert_eq!(run["signal"], 9, "it ignored SIGTERM, so SIGKILL ended it");
    assert!(job.errors[0].error.contains("timed out"), "{}", job.errors[0].error);
    let child: i32 = run["stdout"].as_str().and_then(|s| s.trim().parse().ok()).expect("the child's pid");
    let pid = rustix::process::Pid::from_raw(child).expect("pid");
    // The grandchild was in the group: it is gone too (or a zombie reaped by init at once).
    let mut gone = false;
    for _ in 0..200 {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        if rustix::process::test_kill_process(pid).is_err() || stat.contains(") Z ") {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(gone, "process {child} outlived the command's kill");
    assert_eq!(b.audited().len(), 1);
    assert!(b.audited()[0].contains("timed out"));
}

#[test]
fn output_over_the_cap_is_cut_and_flagged() {
    let b = bench();
    let job = b.run("flood", json!({}));
    assert_eq!(job.state, JobState::Completed, "{:?}", job.errors);
    let run = output(&job);
    assert_eq!(run["stdout"].as_str().map(str::len), Some(1024 * 1024));
    assert_eq!(run["stdout_truncated"], true);
    assert_eq!((run["stderr"].as_str(), &run["stderr_truncated"]), (Some("done\n"), &json!(false)));
}

#[test]
fn the_environment_is_cleared_but_for_what_the_command_lists() {
    // Both set in this process; only one is on the command's list.
    std::env::set_var("CAIRN_TEST_PASSED", "yes");
    std::env::set_var("CAIRN_TEST_SCRUBBED", "a secret");
    let b = bench();
    let job = b.run("env", json!({}));
    let stdout = output(&job)["stdout"].as_str().expect("stdout").to_string();
    assert_eq!(stdout, "passed=yes\nscrubbed=unset\nhome=unset\n");
}

#[test]
fn a_command_over_its_memory_limit_fails_with_a_recorded_reason() {
    if !Path::new("/usr/bin/python3").exists() {
        panic!("this test needs /usr/bin/python3 (CI installs it)");
    }
    let b = bench();
    let job = b.run("hog", json!({}));
    assert_eq!(job.state, JobState::Discarded);
    let run = output(&job);
    assert_ne!(run["exit_code"], 0);
    assert!(run["stderr"].as_str().is_some_and(|e| e.contains("MemoryError")), "{run}");
    assert!(job.errors[0].error.contains("exited with status 1"), "{}", job.errors[0].error);
}

#[test]
fn a_running_command_is_stopped_by_a_cancel() {
    let b = bench();
    let queue = b.store.queue();
    let commands = Commands::from_toml(
        &format!("[hang]\nprogram = \"{}\"\ntimeout_seconds = 60\nkill_grace_seconds = 1\n", fixture("hang").display()),
        "t",
    )
    .expect("parse");
    let id = queue.enqueue(commands.job("hang", json!({})).expect("job")).expect("enqueue").job.id;
    let mut workers = Workers::new();
    workers.register_commands(&commands);
    let pool = workers.start(queue.clone(), WorkerOptions::named("c").concurrency(1).lease(Duration::from_millis(300)));
    while queue.get(id).expect("job").state != JobState::Running {
        std::thread::sleep(Duration::from_millis(10));
    }
    queue.cancel(id).expect("cancel");
    let job = loop {
        let job = queue.get(id).expect("job");
        if job.state.is_finished() {
            break job;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(job.state, JobState::Cancelled);
    pool.stop(Duration::from_secs(5));
}

#[test]
fn a_bad_allow_list_is_refused_when_read() {
    for (toml, expected) in [
        ("[x]\nprogram = \"relative/path\"\n", "absolute"),
        ("[x]\nprogram = \"/bin/echo\"\nargs = [\"{nope}\"]\n", "not a declared parameter"),
        ("[x]\nprogram = \"/bin/echo\"\nparams.p = { type = \"path\" }\n", "no allowed_dirs"),
        ("[x]\nprogram = \"/bin/echo\"\nparams.p = { type = \"string\", pattern = \"(\" }\n", "pattern"),
        ("[x]\nprogram = \"/bin/echo\"\nshell = true\n", "unknown field"),
    ] {
        let e = Commands::from_toml(toml, "t").expect_err(toml);
        assert!(e.to_string().contains(expected), "{toml}: {e}");
    }
}
