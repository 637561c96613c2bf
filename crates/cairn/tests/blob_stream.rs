//! A 2 GiB attachment goes in and comes out in bounded memory. Its own test binary, so that
//! the peak resident memory measured is this test's alone.

#[path = "support/rss.rs"]
mod rss;

use std::io::Read;

use cairn::{Store, StoreOptions};

const SIZE: u64 = 2 << 30;

/// 2 GiB generated on the fly from 64 distinct 64 KiB blocks (4 MiB, more than zstd's window
/// at the level used), each half noise and half text, so compression is tried and kept.
struct Generated {
    left: u64,
    pos: u64,
    blocks: std::sync::Arc<Vec<Vec<u8>>>,
}

const BLOCK: u64 = 64 * 1024;

impl Generated {
    fn new() -> Self {
        let mut rng = fastrand::Rng::with_seed(1);
        let blocks = (0..64)
            .map(|_| {
                let mut block: Vec<u8> = (0..BLOCK / 2).map(|_| rng.u8(..)).collect();
                block.extend(
                    b"session notes, screenshot metadata and a summary. ".iter().cycle().take(BLOCK as usize / 2),
                );
                block
            })
            .collect();
        Generated { left: SIZE, pos: 0, blocks: std::sync::Arc::new(blocks) }
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let block = &self.blocks[((self.pos / BLOCK) % 64) as usize];
        let offset = (self.pos % BLOCK) as usize;
        let n = buf.len().min(block.len() - offset).min(self.left as usize);
        buf[..n].copy_from_slice(&block[offset..offset + n]);
        self.left -= n as u64;
        self.pos += n as u64;
        Ok(n)
    }
}

#[test]
fn two_gib_in_and_out_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    let input = Generated::new();
    let info = store.put_blob(input).expect("put 2 GiB");
    assert_eq!(info.size, SIZE);
    assert!(info.stored_size < SIZE, "compressed: {info:?}");

    // Read back through the verifying reader and compare with the generator, chunk by chunk.
    let mut reader = store.open_blob(&info.hash).expect("open");
    let mut expected = Generated::new();
    let (mut got, mut want) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut got).expect("read back");
        if n == 0 {
            break;
        }
        expected.read_exact(&mut want[..n]).expect("generator");
        assert!(got[..n] == want[..n], "content differs near byte {total}");
        total += n as u64;
    }
    assert_eq!(total, SIZE);
    let peak = rss::peak_rss_mib();
    assert!(peak < 200, "peak resident memory {peak} MiB");
}
