//! The library's layers (docs/architecture.md) as a test: a module may use its own layer and
//! the layers below it, never one above. Layers are the folders of `src/`, bottom first;
//! files directly in `src/` (the error type at the bottom, opening and the crate root at the
//! top) have fixed places. Only `crate::` paths are read, as `import_circles.py` does; test
//! modules (after `#[cfg(test)]`) are left out.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom first.
const LAYERS: [&str; 9] =
    ["engine", "data", "blobs", "governance", "access", "safety", "portability", "migrate", "jobs"];

/// The layer of a file, by its path under `src/`.
fn layer_of(rel: &Path) -> usize {
    let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
    let first = first.trim_end_matches(".rs");
    match first {
        // The error type is used by every layer.
        "error" => 0,
        "lib" => LAYERS.len(),
        other => LAYERS.iter().position(|l| *l == other).unwrap_or_else(|| panic!("{} is in no layer", rel.display())),
    }
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("list").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layers a file's `crate::` paths name (including those inside `use crate::{…}`).
fn used_layers(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut used = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find("};").or_else(|| group.find('}')).unwrap_or(group.len())];
            for item in inner.split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                used.insert(name);
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            used.insert(name);
        }
    }
    used
}

#[test]
fn imports_only_go_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let own = layer_of(rel);
        let text = std::fs::read_to_string(file).expect("read");
        for name in used_layers(&text) {
            if let Some(target) = LAYERS.iter().position(|l| *l == name) {
                if target > own {
                    upward.push(format!("{} uses crate::{name}", rel.display()));
                }
            }
        }
    }
    assert!(upward.is_empty(), "imports going up the layers:\n{}", upward.join("\n"));
}

#[test]
fn the_checker_sees_paths_and_groups() {
    let used = used_layers(
        "use crate::data::record;\nuse crate::{engine::sql, safety::guard};\n#[cfg(test)]\nuse crate::portability;",
    );
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ["data", "engine", "safety"]);
    assert_eq!(layer_of(Path::new("data/query/parse.rs")), 1);
    assert_eq!(layer_of(Path::new("lib.rs")), LAYERS.len());
}

/// String literals of the library's code (not comments, not test modules).
fn literals(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = Vec::new();
    for line in code.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find('"') {
            let after = &rest[start + 1..];
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let Some(end) = end else { break };
            out.push(after[..end].to_string());
            rest = &after[end + 1..];
        }
    }
    out
}

/// What only the CLI may say: its commands, flags and environment variables.
fn speaks_cli(text: &str) -> bool {
    text.contains("`cairn ")
        || text.contains("CAIRN_")
        || text.split_whitespace().any(|w| {
            let w = w.trim_start_matches(['(', '`']);
            w.len() > 2 && w.starts_with("--") && w.as_bytes()[2].is_ascii_lowercase()
        })
}

#[test]
fn library_messages_name_no_cli_command_or_flag() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src").display().to_string();
        for text in literals(&std::fs::read_to_string(&file).expect("read")) {
            if speaks_cli(&text) {
                found.push(format!("{rel}: {text:?}"));
            }
        }
    }
    assert!(found.is_empty(), "library messages speaking CLI:\n{}", found.join("\n"));
    assert!(speaks_cli("run `cairn check` first") && speaks_cli("use --force") && speaks_cli("set CAIRN_DIR"));
    assert!(!speaks_cli("a -- b") && !speaks_cli("records.max_body_bytes"));
}
