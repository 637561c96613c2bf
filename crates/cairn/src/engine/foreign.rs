//! Reading a folder someone else made: an export being imported, a backup being verified
//! or restored, a legacy data folder. Its files are named by the folder's own manifest or
//! index, and the folder may come from anyone, so nothing in it is trusted:
//!
//! - a path is built from components that are each checked (no `..`, no `/`, not empty) and
//!   is resolved beneath the folder one component at a time with `openat(O_NOFOLLOW)`, so a
//!   symbolic link at any component is refused, never followed out of the folder (rustix; no
//!   unsafe code; `openat2(RESOLVE_BENEATH)` would do the same but is missing on older
//!   kernels and in some sandboxes);
//! - a file is opened non-blocking and used only if it is a regular file: a FIFO, device,
//!   socket or directory is refused without ever waiting on it;
//! - a read is bounded: by the size a manifest declares (a reader fails at one byte more), or
//!   by a limit for what has no declared size;
//! - errors name the path as given, never facts about what a link pointed at.
//!
//! The folder itself (the path the user gave) may be reached through links; what is inside
//! may not.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::error::{Error, Result};

/// What an entry of a foreign folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EntryKind {
    File,
    Dir,
    Link,
    /// A FIFO, device or socket.
    Special,
}

fn kind_of(t: FileType) -> EntryKind {
    match t {
        FileType::RegularFile => EntryKind::File,
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Link,
        _ => EntryKind::Special,
    }
}

/// An open foreign folder.
#[derive(Debug)]
pub struct ForeignDir {
    root: OwnedFd,
    path: PathBuf,
}

/// Why a path given by a foreign folder is refused.
fn refused(path: &Path, why: &str) -> Error {
    Error::invalid_input(path.display().to_string(), why)
}

/// The components of a `/`-separated relative path, each checked.
fn components(rel: &str) -> std::result::Result<Vec<&str>, &'static str> {
    if rel.is_empty() || rel.starts_with('/') {
        return Err("not a path inside the folder");
    }
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts {
        if part.is_empty() || *part == "." || *part == ".." || part.contains(['\\', '\0']) {
            return Err("not a path inside the folder (empty, `.` or `..` components are refused)");
        }
    }
    Ok(parts)
}

impl ForeignDir {
    /// Opens the folder at `path`.
    pub fn open(path: &Path) -> Result<ForeignDir> {
        let root = rustix::fs::openat(
            rustix::fs::CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open folder", path, e.into()))?;
        Ok(ForeignDir { root, path: path.to_path_buf() })
    }

    /// The path of `rel` as the user would name it.
    pub fn display(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// The folder holding `rel`'s last component, opened without following links, and that
    /// component.
    fn parent<'r>(&self, rel: &'r str) -> Result<(OwnedFd, &'r str)> {
        let parts = components(rel).map_err(|why| refused(&self.display(rel), why))?;
        let (name, dirs) = parts.split_last().ok_or_else(|| refused(&self.display(rel), "empty path"))?;
        let mut dir =
            rustix::fs::openat(&self.root, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| Error::io("open folder", &self.path, e.into()))?;
        for (i, part) in dirs.iter().enumerate() {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            dir = rustix::fs::openat(&dir, *part, flags, Mode::empty()).map_err(|e| {
                let so_far = self.display(&dirs[..=i].join("/"));
                match e {
                    rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                        refused(&so_far, "is not a folder of its own (a link or a file); refused")
                    }
                    e => Error::io("open folder", so_far, e.into()),
                }
            })?;
        }
        Ok((dir, name))
    }

    /// What `rel` is, without following a link; `None` when it does not exist.
    pub fn kind(&self, rel: &str) -> Result<Option<EntryKind>> {
        let (dir, name) = self.parent(rel)?;
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(kind_of(FileType::from_raw_mode(stat.st_mode)))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io("inspect", self.display(rel), e.into())),
        }
    }

    /// Opens `rel`, which must be a regular file (never waiting on a FIFO, never following a
    /// link).
    pub fn file(&self, rel: &str) -> Result<File> {
        let (dir, name) = self.parent(rel)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = rustix::fs::openat(&dir, name, flags, Mode::empty()).map_err(|e| match e {
            rustix::io::Errno::LOOP => {
                refused(&self.display(rel), "is a symbolic link; files of this folder must be regular files")
            }
            e => Error::io("open", self.display(rel), e.into()),
        })?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| Error::io("inspect", self.display(rel), e.into()))?;
        match kind_of(FileType::from_raw_mode(stat.st_mode)) {
            EntryKind::File => Ok(File::from(fd)),
            EntryKind::Dir => Err(refused(&self.display(rel), "is a folder, not a file")),
            _ => Err(refused(&self.display(rel), "is not a regular file (a pipe, device or socket); refused")),
        }
    }

    /// `rel`'s content, refused when it holds more than `max` bytes (read up to `max + 1`,
    /// never further).
    pub fn read(&self, rel: &str, max: u64) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.bounded(rel, max)?.read_to_end(&mut bytes).map_err(|e| Error::io("read", self.display(rel), e))?;
        Ok(bytes)
    }

    /// A reader of `rel` that fails as soon as it would read more than `max` bytes.
    pub fn bounded(&self, rel: &str, max: u64) -> Result<Bounded<File>> {
        Ok(Bounded::new(self.file(rel)?, max))
    }

    /// The entries of the folder `rel` (`""` for the folder itself), with what each is.
    pub fn list(&self, rel: &str) -> Result<Vec<(String, EntryKind)>> {
        let dir = if rel.is_empty() {
            rustix::fs::openat(&self.root, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| Error::io("open folder", &self.path, e.into()))?
        } else {
            let (parent, name) = self.parent(rel)?;
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            rustix::fs::openat(&parent, name, flags, Mode::empty()).map_err(|e| match e {
                rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                    refused(&self.display(rel), "is not a folder of its own (a link or a file); refused")
                }
                e => Error::io("open folder", self.display(rel), e.into()),
            })?
        };
        let mut out = Vec::new();
        let entries = rustix::fs::Dir::read_from(&dir).map_err(|e| Error::io("list", self.display(rel), e.into()))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", self.display(rel), e.into()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            // The entry's own type, looked up again when the directory does not say.
            let kind = match entry.file_type() {
                FileType::Unknown => match rustix::fs::statat(&dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) => kind_of(FileType::from_raw_mode(stat.st_mode)),
                    Err(_) => EntryKind::Special,
                },
                t => kind_of(t),
            };
            out.push((name, kind));
        }
        out.sort();
        Ok(out)
    }

    /// Every entry under the folder that is not a regular file or a folder (links, pipes,
    /// devices), as relative paths.
    pub fn irregular(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            for (name, kind) in self.list(&rel)? {
                let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                match kind {
                    EntryKind::Dir => stack.push(child),
                    EntryKind::File => {}
                    EntryKind::Link | EntryKind::Special => out.push(child),
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// A reader that refuses to go past a limit: reading byte `limit + 1` is an error, so a file
/// larger than declared (or a stream without end) is never read further.
#[derive(Debug)]
pub struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Bounded<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        Bounded { inner, left: limit, limit }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // One more byte tells a file of exactly the limit from a longer one.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("longer than the {} bytes expected", self.limit),
                )),
            };
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Reads one line (without its `\n`) into `line`, refusing a line longer than `max` bytes
/// while reading it — never buffering more. `Ok(false)` at the end.
pub(crate) fn read_line_bounded(
    input: &mut impl std::io::BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<bool> {
    line.clear();
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Ok(!line.is_empty());
        }
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(at) => (at, true),
            None => (available.len(), false),
        };
        if line.len() + take > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line longer than {max} bytes"),
            ));
        }
        line.extend_from_slice(&available[..take]);
        input.consume(if done { take + 1 } else { take });
        if done {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_pipes_and_escapes_are_refused_regular_files_read_within_bounds() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (root, outside) = (tmp.path().join("folder"), tmp.path().join("outside"));
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("canary"), b"secret").expect("canary");
        std::fs::write(root.join("sub/ok.txt"), b"hello").expect("file");
        std::os::unix::fs::symlink(outside.join("canary"), root.join("link.txt")).expect("link");
        std::os::unix::fs::symlink(&outside, root.join("linked-dir")).expect("dir link");
        let fifo = root.join("pipe");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());

        let f = ForeignDir::open(&root).expect("open");
        assert_eq!(f.read("sub/ok.txt", 5).expect("read"), b"hello");
        assert!(f.read("sub/ok.txt", 4).is_err(), "one byte over the bound");
        for bad in [
            "link.txt",
            "linked-dir/canary",
            "../outside/canary",
            "sub/../../outside/canary",
            "/etc/passwd",
            "pipe",
            "sub",
            "",
        ] {
            let err = f.read(bad, 1 << 20).expect_err(bad);
            assert!(!err.to_string().contains("secret"), "{bad}: {err}");
        }
        assert_eq!(f.kind("link.txt").expect("kind"), Some(EntryKind::Link));
        assert_eq!(f.kind("missing").expect("kind"), None);
        assert_eq!(f.irregular().expect("walk"), ["link.txt", "linked-dir", "pipe"]);
        let names: Vec<String> = f.list("").expect("list").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["link.txt", "linked-dir", "pipe", "sub"]);
    }

    #[test]
    fn lines_are_bounded_while_they_are_read() {
        let text = b"short\na much longer line\nend";
        let mut input = std::io::BufReader::with_capacity(4, &text[..]);
        let mut line = Vec::new();
        assert!(read_line_bounded(&mut input, &mut line, 10).expect("first"));
        assert_eq!(line, b"short");
        assert!(read_line_bounded(&mut input, &mut line, 10).is_err(), "refused before it is buffered whole");
        let mut input = &b"a\nb"[..];
        assert!(read_line_bounded(&mut input, &mut line, 10).expect("a") && line == b"a");
        assert!(read_line_bounded(&mut input, &mut line, 10).expect("b") && line == b"b");
        assert!(!read_line_bounded(&mut input, &mut line, 10).expect("end"));
    }
}
