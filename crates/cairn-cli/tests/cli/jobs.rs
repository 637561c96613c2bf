//! `cairn jobs`, `cairn schedule`, `cairn worker` and `cairn watch`, and the Selenite worked
//! example end to end: an audio file dropped into a watched folder becomes a `media` record
//! and a transcription job; `cairn worker` runs the allow-listed stand-in engine, whose
//! output becomes a `transcripts` record with timed segments; the transcript exports as txt,
//! srt, vtt, json and md.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{cairn, code, json, stderr, stdout};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/selenite").join(name)
}

fn ok(out: &std::process::Output) -> Value {
    assert_eq!(code(out), 0, "stdout: {}\nstderr: {}", stdout(out), stderr(out));
    json(out)
}

#[test]
fn jobs_and_schedules_from_the_command_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    assert_eq!(code(&cairn(&dir, &["init"])), 0);
    let made = ok(&cairn(
        &dir,
        &["--json", "jobs", "enqueue", "report", r#"{"month": "2026-11"}"#, "--queue", "slow", "--unique"],
    ));
    let id = made["job"]["id"].as_i64().expect("id").to_string();
    let again = ok(&cairn(
        &dir,
        &["--json", "jobs", "enqueue", "report", r#"{"month": "2026-11"}"#, "--queue", "slow", "--unique"],
    ));
    assert_eq!((again["duplicate"].as_bool(), again["job"]["id"].to_string()), (Some(true), id.clone()));
    let listed = ok(&cairn(&dir, &["--json", "jobs", "list", "--queue", "slow"]));
    assert_eq!(listed.as_array().expect("list").len(), 1);
    let human = cairn(&dir, &["jobs", "list"]);
    assert!(stdout(&human).contains("report") && stdout(&human).contains("available"), "{}", stdout(&human));
    assert_eq!(ok(&cairn(&dir, &["--json", "jobs", "cancel", &id]))["state"], "cancelled");
    assert_eq!(ok(&cairn(&dir, &["--json", "jobs", "retry", &id]))["state"], "available");
    assert_eq!(ok(&cairn(&dir, &["--json", "jobs", "show", &id]))["args"]["month"], "2026-11");
    let stats = ok(&cairn(&dir, &["--json", "jobs", "stats"]));
    assert!(stats.as_array().expect("stats").iter().any(|q| q["queue"] == "slow" && q["available"] == 1));
    assert_eq!(ok(&cairn(&dir, &["--json", "jobs", "delete", &id]))["id"].to_string(), id);
    let missing = cairn(&dir, &["jobs", "show", &id]);
    assert_eq!(code(&missing), 4, "not found: {}", stderr(&missing));
    let bad = cairn(&dir, &["jobs", "enqueue", "has space"]);
    assert_eq!(code(&bad), 1, "invalid input: {}", stderr(&bad));
    assert!(stderr(&bad).contains("kind \"has space\""), "{}", stderr(&bad));
    assert_eq!(ok(&cairn(&dir, &["--json", "jobs", "prune"]))["pruned"], 0);

    let added = ok(&cairn(
        &dir,
        &["--json", "schedule", "add", "nightly", "0 2 * * *", "report", "--time-zone", "Europe/Berlin"],
    ));
    assert!(added["next_fire"].as_str().is_some(), "{added}");
    let twice = cairn(&dir, &["schedule", "add", "nightly", "0 2 * * *", "report"]);
    assert_ne!(code(&twice), 0, "a name is taken once");
    let bad_cron = cairn(&dir, &["schedule", "add", "broken", "0 25 * * *", "report"]);
    assert_eq!(code(&bad_cron), 1, "{}", stderr(&bad_cron));
    let run = ok(&cairn(&dir, &["--json", "schedule", "run-now", "nightly"]));
    assert_eq!(run["job"]["kind"], "report");
    assert_eq!(ok(&cairn(&dir, &["--json", "schedule", "disable", "nightly"]))["enabled"], false);
    let list = ok(&cairn(&dir, &["--json", "schedule", "list"]));
    assert_eq!(list.as_array().expect("list").len(), 1);
    assert_eq!(ok(&cairn(&dir, &["--json", "schedule", "remove", "nightly"]))["name"], "nightly");
}

fn write_config(tmp: &Path, inbox: &Path) -> PathBuf {
    let config = tmp.join("cairn.toml");
    let text = format!(
        r#"
[jobs]
concurrency = 1

[jobs.builtin]
backup = ""
verify_backups = ""
check = ""
prune_jobs = ""

[jobs.commands.transcribe]
program = "{program}"
args = ["{{file}}"]
allowed_dirs = ["{inbox}"]
set_env = {{ PATH = "/usr/bin:/bin" }}
timeout_seconds = 60
params.file = {{ type = "path", must_exist = true }}
params.media = {{ type = "string", pattern = "[A-Za-z0-9_-]+" }}
output = {{ collection = "transcripts", set = {{ media = "{{media}}" }} }}

[[jobs.ingest]]
folder = "{inbox}"
settle_ms = 300

[[jobs.ingest.rules]]
glob = "*.wav"
mime = ["audio/*"]
collection = "media"
field = "audio"
set = {{ title = "{{stem}}" }}
jobs = [{{ kind = "command", queue = "transcription", args = {{ command = "transcribe", params = {{ file = "{{path}}", media = "{{record}}" }} }} }}]
"#,
        program = fixture("transcribe").display(),
        inbox = inbox.display(),
    );
    std::fs::write(&config, text).expect("config");
    config
}

#[test]
fn selenite_a_dropped_recording_becomes_a_transcript_that_exports_in_five_formats() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir(&inbox).expect("inbox");
    let config = write_config(tmp.path(), &inbox);
    let config = config.to_str().expect("utf8");
    assert_eq!(code(&cairn(&dir, &["init"])), 0);
    for schema in ["media.json", "transcripts.json"] {
        let out = cairn(&dir, &["collection", "create", fixture(schema).to_str().expect("utf8")]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let mut wav = b"RIFF\x24\x00\x00\x00WAVEfmt ".to_vec();
    wav.extend((0..4000u32).map(|i| (i % 251) as u8));
    std::fs::write(inbox.join("episode-12.wav"), &wav).expect("drop");
    std::fs::write(inbox.join("notes.wav"), b"not audio at all, whatever the name says").expect("drop");

    let watched = cairn(&dir, &["--json", "watch", "--config", config, "--once"]);
    assert_eq!(code(&watched), 0, "{}", stderr(&watched));
    let outcomes: Vec<Value> =
        stdout(&watched).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let ingested = outcomes.iter().find(|o| o["outcome"] == "ingested").expect("ingested");
    let media_id = ingested["record"].as_str().expect("record").to_string();
    assert!(outcomes.iter().any(|o| o["outcome"] == "rejected"), "{outcomes:?}");
    assert!(inbox.join(".rejected/notes.wav").exists(), "moved aside, not deleted");
    // A second look takes nothing twice.
    let again = cairn(&dir, &["--json", "watch", "--config", config, "--once"]);
    assert_eq!(stdout(&again).trim(), "", "nothing new");

    let media = ok(&cairn(&dir, &["--json", "get", "media", &media_id]));
    assert_eq!(
        (&media["body"]["title"], &media["body"]["audio"]["mime"]),
        (&Value::from("episode-12"), &Value::from("audio/wav"))
    );
    let waiting = ok(&cairn(&dir, &["--json", "jobs", "list", "--queue", "transcription"]));
    let job = waiting[0]["id"].as_i64().expect("job").to_string();

    let worked = cairn(&dir, &["worker", "--config", config, "--until-idle"]);
    assert_eq!(code(&worked), 0, "{}", stderr(&worked));
    let done = ok(&cairn(&dir, &["--json", "jobs", "show", &job]));
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        (&done["progress"], &done["progress_message"]),
        (&Value::from(100.0), &Value::from("transcribing")),
        "{done}"
    );
    let transcripts =
        ok(&cairn(&dir, &["--json", "query", "transcripts", "--filter", &format!("media = '{media_id}'")]));
    let transcript = &transcripts["rows"][0];
    let id = transcript["id"].as_str().expect("transcript id").to_string();
    assert_eq!(transcript["fields"]["segments"].as_array().expect("segments").len(), 3, "{transcript}");
    assert!(transcript["fields"]["segments"][2]["text"].as_str().expect("text").contains(&wav.len().to_string()));

    let export = |format: &str| {
        let out = cairn(&dir, &["export", "transcripts", "--record", &id, "--format", format, "--out", "-"]);
        assert_eq!(code(&out), 0, "{format}: {}", stderr(&out));
        stdout(&out)
    };
    assert!(export("srt").starts_with("1\n00:00:00,000 --> 00:00:02,500\nHost: Welcome to the show.\n\n2\n"));
    assert!(export("vtt").starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n<v Host>Welcome to the show.\n"));
    assert!(export("txt").starts_with("Host: Welcome to the show.\nGuest: Thanks for having me.\n"));
    assert!(export("md").contains("- **[00:00:02] Guest:** Thanks for having me."));
    let segments: Value = serde_json::from_str(&export("json")).expect("json");
    assert_eq!(segments[1]["end"], 6.25);
    let to_file = tmp.path().join("episode-12.srt");
    let out = cairn(
        &dir,
        &["export", "transcripts", "--record", &id, "--format", "srt", "--out", to_file.to_str().expect("utf8")],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let refused = cairn(
        &dir,
        &["export", "transcripts", "--record", &id, "--format", "srt", "--out", to_file.to_str().expect("utf8")],
    );
    assert_eq!(code(&refused), 2, "an existing file is not replaced without --force");
    let no_segments = cairn(&dir, &["export", "media", "--record", &media_id, "--format", "srt", "--out", "-"]);
    assert_eq!(code(&no_segments), 1, "{}", stderr(&no_segments));
    assert!(stderr(&no_segments).contains("no field \"segments\""), "{}", stderr(&no_segments));
    let no_record = cairn(&dir, &["export", "transcripts", "--format", "srt", "--out", "-"]);
    assert_eq!(code(&no_record), 2, "{}", stderr(&no_record));
}
