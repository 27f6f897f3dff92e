//! What several of kvs-core's test files need to look at a data directory.

use std::fs;
use std::path::{Path, PathBuf};

/// The log files (`<id>.log`) of a data directory with their ids, oldest first.
#[allow(dead_code)] // each test crate uses its own part of this module
pub fn log_files_with_ids(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut files: Vec<(u32, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let id = path
                .file_name()?
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((id, path))
        })
        .collect();
    files.sort();
    files
}

/// The log files of a data directory, oldest first.
#[allow(dead_code)]
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    log_files_with_ids(dir)
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// SplitMix64: a small, seedable generator, so that a failing random test replays from its
/// seed.
#[allow(dead_code)]
pub struct Rng(pub u64);

#[allow(dead_code)]
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}
