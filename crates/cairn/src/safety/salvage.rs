//! Reading rows out of a damaged SQLite file page by page, without SQLite.
//!
//! When SQLite can no longer open a store (a damaged `sqlite_schema`) or cannot scan a table
//! (a damaged interior page), the rows are usually still there, in the leaf pages of their
//! b-trees. This module reads the file format directly (as SQLite's own recovery extension
//! does): the database header, b-tree pages, cells, overflow chains and records, with the
//! committed frames of the `-wal` file laid over the database pages. It never writes.
//!
//! Two ways to find rows, both tolerant of damage (a bad page is skipped, never followed in a
//! loop, never trusted beyond its bounds):
//! - [`Salvage::walk`] follows a b-tree from its root page, as SQLite would;
//! - [`Salvage::scan`] reads every table-leaf page of the file, whatever tree it belongs to,
//!   so rows under a damaged interior page are found too. Such a page may also be a stale
//!   copy on the freelist, so callers accept scanned rows only when they verify (cairn's
//!   change-log and audit rows carry their own hashes) and prefer rows a walk found.
//!
//! The file format is SQLite's documented one (<https://sqlite.org/fileformat2.html>); rusqlite
//! does not expose the recovery extension, and the `sqlite3` shell cannot be assumed.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A value of a record, as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Real(f64),
    /// Text as stored (UTF-8 in a cairn store; not checked here).
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl Cell {
    /// As an SQLite value to bind; text that is not UTF-8 is refused (`None`).
    pub(crate) fn to_sql(&self) -> Option<rusqlite::types::Value> {
        use rusqlite::types::Value;
        Some(match self {
            Cell::Null => Value::Null,
            Cell::Int(n) => Value::Integer(*n),
            Cell::Real(x) => Value::Real(*x),
            Cell::Text(t) => Value::Text(String::from_utf8(t.clone()).ok()?),
            Cell::Blob(b) => Value::Blob(b.clone()),
        })
    }

    pub(crate) fn as_int(&self) -> Option<i64> {
        match self {
            Cell::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub(crate) fn as_text(&self) -> Option<&str> {
        match self {
            Cell::Text(t) => std::str::from_utf8(t).ok(),
            _ => None,
        }
    }
}

/// Where a cell is: its page, and its slot in the page's cell-pointer array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct CellRef {
    pub(crate) page: u32,
    pub(crate) slot: usize,
}

/// One row found in a b-tree: the rowid (table trees) and the record's values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) rowid: Option<i64>,
    pub(crate) values: Vec<Cell>,
    pub(crate) at: CellRef,
}

impl Row {
    /// The values with the rowid put in place of column `alias` (an `INTEGER PRIMARY KEY`,
    /// which SQLite stores as NULL in the record).
    pub(crate) fn with_rowid_at(&self, alias: usize) -> Vec<Cell> {
        let mut values = self.values.clone();
        if let (Some(rowid), Some(slot)) = (self.rowid, values.get_mut(alias)) {
            if *slot == Cell::Null {
                *slot = Cell::Int(rowid);
            }
        }
        values
    }
}

/// A row of `sqlite_schema`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaEntry {
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) table: String,
    pub(crate) root: u32,
}

/// How much of a walk or scan could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Coverage {
    /// Pages read and understood.
    pub(crate) pages: u64,
    /// Pages that were not b-tree pages of the expected kind, or whose cells ran out of bounds.
    pub(crate) bad_pages: u64,
    /// Cells that could not be decoded.
    pub(crate) bad_cells: u64,
    /// Pages a walk reached that hold (or should hold) rows: its leaves and the pages it
    /// could not make sense of. Where a damaged row of the tree must be.
    pub(crate) leaves: Vec<u32>,
}

const LEAF_TABLE: u8 = 0x0d;
const INTERIOR_TABLE: u8 = 0x05;
const LEAF_INDEX: u8 = 0x0a;
const INTERIOR_INDEX: u8 = 0x02;

/// A database file (and its WAL) opened for salvage.
#[derive(Debug)]
pub(crate) struct Salvage {
    db: File,
    path: PathBuf,
    /// Committed WAL frames: page number → offset of the page's newest image in the WAL.
    wal: BTreeMap<u32, u64>,
    wal_file: Option<File>,
    page_size: usize,
    usable: usize,
    pages: u32,
}

impl Salvage {
    /// Opens `db` (and `db-wal` beside it, when present) for reading pages.
    pub(crate) fn open(db: &Path) -> Result<Salvage> {
        let file = File::open(db).map_err(|e| Error::io("open", db, e))?;
        let len = file.metadata().map_err(|e| Error::io("stat", db, e))?.len();
        let mut header = [0u8; 100];
        let read = read_up_to(&file, 0, &mut header).map_err(|e| Error::io("read", db, e))?;
        let wal_path = PathBuf::from(format!("{}-wal", db.display()));
        let wal_header = read_wal_header(&wal_path);
        // The page size is in the header; if that is damaged, the WAL's header knows it too.
        let from_header = |h: &[u8]| {
            let raw = u16::from_be_bytes([h[16], h[17]]) as usize;
            let size = if raw == 1 { 65536 } else { raw };
            (size.is_power_of_two() && (512..=65536).contains(&size)).then_some(size)
        };
        let page_size = (read == 100)
            .then(|| from_header(&header))
            .flatten()
            .or(wal_header.as_ref().map(|w| w.page_size))
            .unwrap_or(4096);
        let reserved = if read == 100 { header[20] as usize } else { 0 };
        let usable = if reserved < page_size / 2 { page_size - reserved } else { page_size };
        let mut salvage = Salvage {
            db: file,
            path: db.to_path_buf(),
            wal: BTreeMap::new(),
            wal_file: None,
            page_size,
            usable,
            pages: (len / page_size as u64).min(u64::from(u32::MAX)) as u32,
        };
        if let Some(w) = wal_header.filter(|w| w.page_size == page_size) {
            salvage.load_wal(&wal_path, &w);
        }
        Ok(salvage)
    }

    /// Reads the committed frames of the WAL: frames are valid while their salts match the
    /// header and their running checksum holds; only those up to the last commit frame count.
    fn load_wal(&mut self, path: &Path, header: &WalHeader) {
        let Ok(file) = File::open(path) else { return };
        let frame = 24 + self.page_size;
        let mut offset = 32u64;
        let mut sums = header.checksum;
        let mut pending: Vec<(u32, u64)> = Vec::new();
        let mut buf = vec![0u8; frame];
        let mut db_pages = None;
        loop {
            match read_up_to(&file, offset, &mut buf) {
                Ok(n) if n == frame => {}
                _ => break,
            }
            let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
            if word(8) != header.salt.0 || word(12) != header.salt.1 {
                break;
            }
            sums = wal_checksum(header.big_endian, sums, &buf[..8]);
            sums = wal_checksum(header.big_endian, sums, &buf[24..]);
            if (word(16), word(20)) != sums {
                break;
            }
            pending.push((word(0), offset + 24));
            if word(4) != 0 {
                // A commit frame: everything up to here is committed.
                for (page, at) in pending.drain(..) {
                    self.wal.insert(page, at);
                }
                db_pages = Some(word(4));
            }
            offset += frame as u64;
        }
        if let Some(pages) = db_pages {
            self.pages = self.pages.max(pages);
            self.wal_file = Some(file);
        }
    }

    /// Page `n` (1-based), from the WAL when it has a committed image, else from the file.
    pub(crate) fn page(&self, n: u32) -> Option<Vec<u8>> {
        if n == 0 || n > self.pages {
            return None;
        }
        let mut buf = vec![0u8; self.page_size];
        let (file, offset) = match (self.wal.get(&n), &self.wal_file) {
            (Some(at), Some(wal)) => (wal, *at),
            _ => (&self.db, (u64::from(n) - 1) * self.page_size as u64),
        };
        let read = read_up_to(file, offset, &mut buf).ok()?;
        (read == self.page_size).then_some(buf)
    }

    /// The rows of `sqlite_schema` that could be read.
    pub(crate) fn schema(&self) -> Vec<SchemaEntry> {
        let mut out = Vec::new();
        self.walk(1, &mut |row| {
            let v = &row.values;
            let (Some(kind), Some(name), Some(table), Some(root)) = (
                v.first().and_then(Cell::as_text),
                v.get(1).and_then(Cell::as_text),
                v.get(2).and_then(Cell::as_text),
                v.get(3).and_then(Cell::as_int),
            ) else {
                return;
            };
            if let Ok(root) = u32::try_from(root) {
                out.push(SchemaEntry { kind: kind.into(), name: name.into(), table: table.into(), root });
            }
        });
        out
    }

    /// Every row of the b-tree rooted at `root` that can be reached and decoded: table trees
    /// give their leaf rows, index trees (and `WITHOUT ROWID` tables) the entries of every
    /// page. Damaged pages are skipped; each page is visited at most once.
    pub(crate) fn walk(&self, root: u32, each: &mut dyn FnMut(Row)) -> Coverage {
        let mut coverage = Coverage::default();
        let mut seen = HashSet::new();
        let mut stack = vec![root];
        let mut expected: Option<bool> = None; // Some(true): a table tree
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            let Some(page) = self.page(n) else {
                coverage.bad_pages += 1;
                continue;
            };
            let start = if n == 1 { 100 } else { 0 };
            let Some(kind) = page.get(start).copied() else { continue };
            let is_table = matches!(kind, LEAF_TABLE | INTERIOR_TABLE);
            if !matches!(kind, LEAF_TABLE | INTERIOR_TABLE | LEAF_INDEX | INTERIOR_INDEX)
                || expected.is_some_and(|t| t != is_table)
            {
                coverage.bad_pages += 1;
                coverage.leaves.push(n);
                continue;
            }
            expected = Some(is_table);
            let Some(cells) = self.cell_offsets(&page, start) else {
                coverage.bad_pages += 1;
                coverage.leaves.push(n);
                continue;
            };
            coverage.pages += 1;
            if matches!(kind, INTERIOR_TABLE | INTERIOR_INDEX) {
                let right = be32(&page, start + 8);
                stack.extend(right.filter(|p| *p != 0));
            } else {
                coverage.leaves.push(n);
            }
            for (slot, at) in cells {
                let here = CellRef { page: n, slot };
                match kind {
                    INTERIOR_TABLE => stack.extend(be32(&page, at).filter(|p| *p != 0)),
                    INTERIOR_INDEX => {
                        stack.extend(be32(&page, at).filter(|p| *p != 0));
                        match self.payload(&page, at + 4, false).and_then(|p| decode_record(&p)) {
                            Some(values) => each(Row { rowid: None, values, at: here }),
                            None => coverage.bad_cells += 1,
                        }
                    }
                    _ => match self.leaf_cell(&page, at, kind == LEAF_TABLE, here) {
                        Some(row) => each(row),
                        None => coverage.bad_cells += 1,
                    },
                }
            }
        }
        coverage
    }

    /// Every cell of every page read as a table-leaf page, whatever its header says: a
    /// flipped type byte or cell count must not hide rows, and rows under a damaged interior
    /// page are found. Most of what this decodes from other kinds of pages is noise, so
    /// callers accept only rows that verify.
    pub(crate) fn scan(&self, each: &mut dyn FnMut(Row)) {
        for n in 1..=self.pages {
            let Some(page) = self.page(n) else { continue };
            for (slot, at) in self.leaf_slots(&page, if n == 1 { 100 } else { 0 }) {
                let Some(at) = at else { continue };
                if let Some(row) = self.leaf_cell(&page, at, true, CellRef { page: n, slot }) {
                    each(row);
                }
            }
        }
    }

    /// The rows the cell at `at` could be if one bit of it, or of its pointer, were flipped
    /// back; `accept` is shown each (with whether it was read through a corrected pointer,
    /// i.e. from elsewhere in the page) until it takes one. For rows that carry their own
    /// hash, exactly one variant verifies when a single bit rotted, so the original comes back.
    pub(crate) fn corrections(&self, at: CellRef, accept: &mut dyn FnMut(Row, bool) -> bool) -> bool {
        let Some(mut page) = self.page(at.page) else { return false };
        let start = if at.page == 1 { 100 } else { 0 };
        let slots = self.leaf_slots(&page, start);
        let pointer = start + 8 + 2 * at.slot;
        let Some(&(_, offset)) = slots.iter().find(|(slot, _)| *slot == at.slot) else { return false };
        // The cell's bytes reach to the next cell or the end of the page; a pointer that
        // points nowhere leaves only the pointer itself to put right.
        let valid: Vec<usize> = slots.iter().filter_map(|(_, o)| *o).collect();
        let cell = offset.map_or(0..0, |offset| {
            offset..valid.iter().copied().filter(|o| *o > offset).min().unwrap_or(self.usable).min(offset + 8192)
        });
        // Two slots never share a cell: a pointer flipped onto another cell's start is not
        // this cell's pointer put right.
        let others: HashSet<usize> =
            slots.iter().filter(|(slot, _)| *slot != at.slot).filter_map(|(_, o)| *o).collect();
        let bits = (pointer..pointer + 2).chain(cell).flat_map(|byte| (0..8).map(move |bit| (byte, bit)));
        for (byte, bit) in bits {
            if byte >= page.len() {
                continue;
            }
            page[byte] ^= 1 << bit;
            let cell = be16(&page, pointer).map(usize::from).filter(|o| *o < self.usable && !others.contains(o));
            let candidate = cell.and_then(|o| self.leaf_cell(&page, o, true, at));
            page[byte] ^= 1 << bit;
            if candidate.is_some_and(|row| accept(row, byte < pointer + 2)) {
                return true;
            }
        }
        false
    }

    /// How many cell-pointer slots page `n` has when read as a table leaf (see `scan`).
    pub(crate) fn slots(&self, n: u32) -> usize {
        self.page(n).map_or(0, |page| self.leaf_slots(&page, if n == 1 { 100 } else { 0 }).len())
    }

    /// Every cell-pointer slot of a page read as a table leaf, with its offset when it points
    /// inside the page: as many slots as the header counts, or as fit before the cell content
    /// area if that is more.
    fn leaf_slots(&self, page: &[u8], start: usize) -> Vec<(usize, Option<usize>)> {
        let array = start + 8;
        let counted = be16(page, start + 3).map_or(0, usize::from);
        let content = be16(page, start + 5).map_or(0, usize::from);
        let fits = if content > array && content <= self.usable { (content - array) / 2 } else { 0 };
        let count = counted.max(fits).min(self.usable.saturating_sub(array) / 2);
        (0..count)
            .map(|slot| {
                let at = be16(page, array + 2 * slot).map(usize::from);
                (slot, at.filter(|at| *at >= array + 2 && *at < self.usable))
            })
            .collect()
    }

    /// The offsets of a page's cells with their slots, each checked to lie inside the page.
    fn cell_offsets(&self, page: &[u8], start: usize) -> Option<Vec<(usize, usize)>> {
        let interior = matches!(page[start], INTERIOR_TABLE | INTERIOR_INDEX);
        let header = if interior { 12 } else { 8 };
        let count = be16(page, start + 3)? as usize;
        let array = start + header;
        if array + 2 * count > self.usable {
            return None;
        }
        let mut out = Vec::with_capacity(count);
        for slot in 0..count {
            let at = be16(page, array + 2 * slot)? as usize;
            if at < array + 2 * count || at >= self.usable {
                continue;
            }
            out.push((slot, at));
        }
        Some(out)
    }

    /// A leaf cell: `[payload size][rowid if table][payload…][overflow page]`.
    fn leaf_cell(&self, page: &[u8], at: usize, table: bool, here: CellRef) -> Option<Row> {
        if table {
            let (_, n) = varint(page.get(at..)?)?;
            let (rowid, m) = varint(page.get(at + n..)?)?;
            let payload = self.payload_with_size(page, at, at + n + m, true)?;
            Some(Row { rowid: Some(rowid as i64), values: decode_record(&payload)?, at: here })
        } else {
            let payload = self.payload(page, at, false)?;
            Some(Row { rowid: None, values: decode_record(&payload)?, at: here })
        }
    }

    /// The payload of an index cell starting at `at` (its size varint first).
    fn payload(&self, page: &[u8], at: usize, table: bool) -> Option<Vec<u8>> {
        let (_, n) = varint(page.get(at..)?)?;
        self.payload_with_size(page, at, at + n, table)
    }

    /// The whole payload whose size varint is at `size_at` and whose bytes start at `from`,
    /// following the overflow chain when it spills.
    fn payload_with_size(&self, page: &[u8], size_at: usize, from: usize, table: bool) -> Option<Vec<u8>> {
        let (size, _) = varint(page.get(size_at..)?)?;
        let size = usize::try_from(size).ok().filter(|s| *s <= 1 << 30)?;
        let u = self.usable;
        let max_local = if table { u - 35 } else { (u - 12) * 64 / 255 - 23 };
        let min_local = (u - 12) * 32 / 255 - 23;
        let local = if size <= max_local {
            size
        } else {
            let k = min_local + (size - min_local) % (u - 4);
            if k <= max_local {
                k
            } else {
                min_local
            }
        };
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(page.get(from..from + local)?);
        if local == size {
            return Some(out);
        }
        let mut next = be32(page, from + local)?;
        let mut seen = HashSet::new();
        while out.len() < size {
            if next == 0 || !seen.insert(next) {
                return None;
            }
            let overflow = self.page(next)?;
            let take = (size - out.len()).min(u - 4);
            out.extend_from_slice(overflow.get(4..4 + take)?);
            next = be32(&overflow, 0)?;
        }
        Some(out)
    }

    /// The file being read.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Decodes a record: a header of serial types, then the values.
pub(crate) fn decode_record(payload: &[u8]) -> Option<Vec<Cell>> {
    let (header_len, mut pos) = varint(payload)?;
    let header_len = usize::try_from(header_len).ok().filter(|h| *h <= payload.len() && *h >= pos)?;
    let mut types = Vec::new();
    while pos < header_len {
        let (t, n) = varint(payload.get(pos..header_len)?)?;
        types.push(t);
        pos += n;
    }
    if pos != header_len {
        return None;
    }
    let mut at = header_len;
    let mut values = Vec::with_capacity(types.len());
    for t in types {
        let len = match t {
            0 | 8 | 9 => 0,
            1 => 1,
            2 => 2,
            3 => 3,
            4 => 4,
            5 => 6,
            6 | 7 => 8,
            10 | 11 => return None,
            n => ((n - 12) / 2) as usize,
        };
        let bytes = payload.get(at..at.checked_add(len)?)?;
        at += len;
        let int = |b: &[u8]| {
            let mut v: i64 = if b[0] & 0x80 != 0 { -1 } else { 0 };
            for byte in b {
                v = (v << 8) | i64::from(*byte);
            }
            v
        };
        values.push(match t {
            0 => Cell::Null,
            8 => Cell::Int(0),
            9 => Cell::Int(1),
            1..=6 => Cell::Int(int(bytes)),
            7 => Cell::Real(f64::from_be_bytes(bytes.try_into().ok()?)),
            n if n % 2 == 0 => Cell::Blob(bytes.to_vec()),
            _ => Cell::Text(bytes.to_vec()),
        });
    }
    (at == payload.len()).then_some(values)
}

/// SQLite's variable-length integer: 1 to 9 bytes, big-endian, 7 bits a byte but the ninth.
pub(crate) fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..8 {
        let byte = *b.get(i)?;
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte < 0x80 {
            return Some((v, i + 1));
        }
    }
    Some(((v << 8) | u64::from(*b.get(8)?), 9))
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads as much of `buf` as the file holds from `offset`.
fn read_up_to(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    let mut done = 0;
    while done < buf.len() {
        match file.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[derive(Debug)]
struct WalHeader {
    big_endian: bool,
    page_size: usize,
    salt: (u32, u32),
    checksum: (u32, u32),
}

fn read_wal_header(path: &Path) -> Option<WalHeader> {
    let file = File::open(path).ok()?;
    let mut h = [0u8; 32];
    if read_up_to(&file, 0, &mut h).ok()? != 32 {
        return None;
    }
    let word = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let magic = word(0);
    if magic & !1 != 0x377f_0682 || word(4) != 3_007_000 {
        return None;
    }
    let big_endian = magic & 1 == 1;
    let sums = wal_checksum(big_endian, (0, 0), &h[..24]);
    if sums != (word(24), word(28)) {
        return None;
    }
    let page_size = match word(8) {
        1 => 65536,
        n => n as usize,
    };
    Some(WalHeader { big_endian, page_size, salt: (word(16), word(20)), checksum: sums })
}

/// The WAL's running checksum over `data` (a multiple of 8 bytes), continuing from `sums`.
fn wal_checksum(big_endian: bool, sums: (u32, u32), data: &[u8]) -> (u32, u32) {
    let (mut s0, mut s1) = sums;
    for pair in data.chunks_exact(8) {
        let word = |b: &[u8]| {
            let b = [b[0], b[1], b[2], b[3]];
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        s0 = s0.wrapping_add(word(&pair[..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&pair[4..])).wrapping_add(s0);
    }
    (s0, s1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn sample(path: &Path, rows: usize) -> Connection {
        let conn = Connection::open(path).expect("db");
        conn.execute_batch(
            "PRAGMA page_size = 1024;
             CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB, x REAL, n INTEGER);
             CREATE TABLE w (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID;",
        )
        .expect("ddl");
        for i in 0..rows {
            // Every fifth row spills into overflow pages.
            let data = vec![(i % 251) as u8; if i % 5 == 0 { 3000 } else { 20 }];
            conn.execute(
                "INSERT INTO t (id, name, data, x, n) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![i as i64 + 1, format!("row {i}"), data, i as f64 / 3.0, -(i as i64) * 1_000_003],
            )
            .expect("insert");
            conn.execute("INSERT INTO w (k, v) VALUES (?1, ?2)", rusqlite::params![format!("k{i:05}"), i as i64])
                .expect("insert");
        }
        conn
    }

    fn expected(conn: &Connection) -> Vec<Vec<Cell>> {
        let mut stmt = conn.prepare("SELECT id, name, data, x, n FROM t ORDER BY id").expect("select");
        stmt.query_map([], |r| {
            Ok(vec![
                Cell::Int(r.get(0)?),
                Cell::Text(r.get::<_, String>(1)?.into_bytes()),
                Cell::Blob(r.get(2)?),
                Cell::Real(r.get(3)?),
                Cell::Int(r.get(4)?),
            ])
        })
        .expect("rows")
        .collect::<rusqlite::Result<_>>()
        .expect("collect")
    }

    /// SQLite stores a REAL that has no fraction as an integer in the record.
    fn real_at_3(mut row: Vec<Cell>) -> Vec<Cell> {
        if let Some(Cell::Int(n)) = row.get(3) {
            row[3] = Cell::Real(*n as f64);
        }
        row
    }

    /// Compares row by row, printing only the first difference (rows hold kilobytes).
    fn assert_same(got: &[Vec<Cell>], want: &[Vec<Cell>]) {
        assert_eq!(got.len(), want.len(), "row count");
        if let Some(i) = (0..want.len()).find(|i| got[*i] != want[*i]) {
            panic!("row {i} differs: {:.200} vs {:.200}", format!("{:?}", got[i]), format!("{:?}", want[i]));
        }
    }

    #[test]
    fn a_walk_reads_what_sqlite_reads_including_overflow_and_without_rowid_tables() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("a.db");
        let conn = sample(&path, 400);
        let want = expected(&conn);
        drop(conn);
        let s = Salvage::open(&path).expect("open");
        let schema = s.schema();
        let root = |name: &str| schema.iter().find(|e| e.name == name).expect("in schema").root;
        let mut rows = Vec::new();
        let coverage = s.walk(root("t"), &mut |row| rows.push(real_at_3(row.with_rowid_at(0))));
        assert_eq!(coverage.bad_pages + coverage.bad_cells, 0);
        rows.sort_by_key(|r| r[0].as_int());
        assert_same(&rows, &want);
        let mut keys = Vec::new();
        s.walk(root("w"), &mut |row| keys.push(row.values[0].as_text().map(String::from)));
        assert_eq!(keys.len(), 400, "every entry of the WITHOUT ROWID table, interior cells included");
    }

    #[test]
    fn a_scan_finds_rows_under_a_destroyed_interior_page_and_wal_frames_are_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("a.db");
        let conn = sample(&path, 400);
        let want = expected(&conn);
        drop(conn);
        let s = Salvage::open(&path).expect("open");
        let root = s.schema().iter().find(|e| e.name == "t").expect("t").root;
        drop(s);
        // Destroy the root (an interior page): SQLite cannot scan the table any more.
        let mut bytes = std::fs::read(&path).expect("read");
        let at = (root as usize - 1) * 1024;
        bytes[at..at + 1024].fill(0x55);
        std::fs::write(&path, &bytes).expect("write");
        let broken = Connection::open(&path).expect("db");
        assert!(broken
            .prepare("SELECT count(*) FROM t")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
            .is_err());
        drop(broken);

        let s = Salvage::open(&path).expect("open");
        let mut rows: BTreeMap<i64, Vec<Cell>> = BTreeMap::new();
        s.scan(&mut |row| {
            let shaped = row.values.len() == 5 && row.values[0] == Cell::Null && row.values[1].as_text().is_some();
            if let (true, Some(id)) = (shaped, row.rowid) {
                rows.entry(id).or_insert_with(|| real_at_3(row.with_rowid_at(0)));
            }
        });
        let rows: Vec<Vec<Cell>> = rows.into_values().collect();
        assert_same(&rows, &want);

        // Writes that are only in the WAL are seen too.
        let wal_path = tmp.path().join("b.db");
        let conn = sample(&wal_path, 50);
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;").expect("wal");
        conn.execute("UPDATE t SET name = 'only in the wal' WHERE id = 7", []).expect("update");
        let s = Salvage::open(&wal_path).expect("open");
        let mut found = false;
        s.scan(&mut |row| found |= row.rowid == Some(7) && row.values[1] == Cell::Text(b"only in the wal".to_vec()));
        assert!(found, "the committed WAL frame replaces the page");
        drop(conn);
    }

    #[test]
    fn varints_and_bad_records() {
        assert_eq!(varint(&[0x05]), Some((5, 1)));
        assert_eq!(varint(&[0x81, 0x00]), Some((128, 2)));
        assert_eq!(varint(&[0xff; 9]), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x81]), None);
        assert_eq!(decode_record(&[0x02, 0x01, 0x2a]), Some(vec![Cell::Int(42)]));
        assert_eq!(decode_record(&[0x02, 0x01]), None, "value past the end");
        assert_eq!(decode_record(&[0x09, 0x01]), None, "header past the end");
        assert_eq!(decode_record(&[0x02, 0x0a]), None, "reserved serial type");
    }
}
