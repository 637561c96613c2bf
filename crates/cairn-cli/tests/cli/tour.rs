//! The README's tour, run line by line, as written, in order, against a fresh demo store
//! with the built binary: the tour and the demo cannot drift apart.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The lines of the first `sh` block after the tour's heading.
fn tour_lines(readme: &str) -> Vec<String> {
    let tour = readme.split("## A tour of the CLI").nth(1).expect("the README has a tour");
    let block = tour.split("```sh").nth(1).and_then(|b| b.split("```").next()).expect("a sh block");
    block.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

/// The exit code a line's comment announces (`# exit 3: …`), else 0.
fn expected_exit(line: &str) -> i32 {
    line.split(" # ")
        .nth(1)
        .and_then(|comment| comment.trim().strip_prefix("exit "))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn the_readme_tour_runs_as_written() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README");
    let lines = tour_lines(&readme);
    assert!(lines.len() > 40, "the tour is long: {}", lines.len());
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&repo.join("docs/tour"), &tmp.path().join("docs/tour"));
    let store = tmp.path().join("store");
    let bin: PathBuf = PathBuf::from(env!("CARGO_BIN_EXE_cairn")).parent().expect("bin dir").to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let run = |line: &str| {
        Command::new("sh")
            .args(["-c", line])
            .current_dir(tmp.path())
            .env("PATH", &path)
            .env("CAIRN_DIR", &store)
            .env("HOME", tmp.path())
            .env_remove("CAIRN_PASSPHRASE")
            .env_remove("CAIRN_KEY_FILE")
            .output()
            .expect("run sh")
    };
    let demo = run("cairn demo");
    assert_eq!(demo.status.code(), Some(0), "the demo: {}", String::from_utf8_lossy(&demo.stderr));
    for (n, line) in lines.iter().enumerate() {
        let out = run(line);
        let code = out.status.code().expect("exit code");
        assert_eq!(
            code,
            expected_exit(line),
            "tour line {}: `{line}`\nstdout: {}\nstderr: {}",
            n + 1,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_tour_reader_finds_lines_and_exit_codes() {
    let readme = "x\n## A tour of the CLI\ntext\n```sh\n# a comment\ncairn get a b   # exit 4: not found\n\ncairn list a\n```\n```sh\nnot this\n```";
    assert_eq!(tour_lines(readme), ["cairn get a b   # exit 4: not found", "cairn list a"]);
    assert_eq!(expected_exit("cairn get a b   # exit 4: not found"), 4);
    assert_eq!(expected_exit("cairn list a   # the list"), 0);
}
