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

/// The entries of a data directory's MANIFEST (see `manifest.rs`): id, state (1 closed,
/// 2 active, 3 obsolete), length and fingerprint. Parsed here independently of the library.
#[allow(dead_code)]
pub fn manifest_entries(dir: &Path) -> Vec<(u32, u8, u64, u32)> {
    let bytes = fs::read(dir.join("MANIFEST")).expect("a MANIFEST");
    assert_eq!(&bytes[..8], b"kvs-man\x01");
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    assert_eq!(
        crc32fast::hash(body).to_le_bytes(),
        crc,
        "MANIFEST checksum"
    );
    let count = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 12 + 17 * count + 4);
    body[12..]
        .chunks_exact(17)
        .map(|e| {
            (
                u32::from_le_bytes(e[..4].try_into().unwrap()),
                e[4],
                u64::from_le_bytes(e[5..13].try_into().unwrap()),
                u32::from_le_bytes(e[13..17].try_into().unwrap()),
            )
        })
        .collect()
}

/// A command that runs the `#[ignore]`d test `name` of the running test binary alone, in a
/// child process: how kvs-core's tests crash, fork, or put limits on a process of their own
/// without touching the test harness's. Add the child's environment, then spawn it.
#[allow(dead_code)]
pub fn child_test(name: &str) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().expect("test binary"));
    command.args([
        "--ignored",
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
    ]);
    command
}

/// Runs `command` (from [`child_test`]) to its end and fails, with its status (the signal, if
/// one ended it) and both outputs, unless it passed; returns its stdout.
#[allow(dead_code)]
pub fn run_child_test(mut command: std::process::Command) -> String {
    use std::os::unix::process::ExitStatusExt;
    let output = command.output().expect("spawn child test");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child test {:?} failed: {} (signal {:?})\nstdout:\n{stdout}\nstderr:\n{}",
        command.get_args().nth(2).unwrap_or_default(),
        output.status,
        output.status.signal(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Size of a version-2 record header (see `format.rs`).
#[allow(dead_code)]
pub const V2_HEADER: usize = 17;

/// A version-2 log record built by hand from the layout `format.rs` documents: `kind` (0x11
/// set, 0x12 remove, 0x13 seal, 0x14 set with deadline, 0x15 batch), `extra` (the deadline
/// field of a 0x14 record, else empty), key and value; header_crc over bytes 4..17, body_crc
/// over everything from byte 17 on.
#[allow(dead_code)]
pub fn v2_record(kind: u8, extra: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = [extra, key, value].concat();
    let mut header = vec![kind];
    header.extend_from_slice(&(key.len() as u32).to_le_bytes());
    header.extend_from_slice(&(value.len() as u32).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    let mut record = crc32fast::hash(&header).to_le_bytes().to_vec();
    record.extend_from_slice(&header);
    record.extend_from_slice(&body);
    record
}

/// The length of the record starting at `bytes[at..]`, of either format version (its kind
/// byte says which), from its header: for walking a log file's records in tests.
#[allow(dead_code)]
pub fn record_len_at(bytes: &[u8], at: usize) -> usize {
    let u32_at = |i: usize| u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().unwrap());
    let (key_len, value_len) = (u32_at(5) as usize, u32_at(9) as usize);
    match bytes[at + 4] {
        1..=3 => 13 + key_len + value_len,
        0x14 => V2_HEADER + 8 + key_len + value_len,
        0x11..=0x15 => V2_HEADER + key_len + value_len,
        kind => panic!("no record at {at}: kind {kind}"),
    }
}

/// Where the records of the log file at `path` end (version 1 or 2): its length once the
/// store is closed. While a store is open its active file is longer, allocated ahead of its
/// records and zero past them (see `writer.rs`), so its length says nothing about them.
#[allow(dead_code)]
pub fn records_end(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 8;
    // A version-1 header is 13 bytes, a version-2 one 17; kind 0 is no record (a zero tail).
    while at + 13 <= bytes.len() && bytes[at + 4] != 0 {
        at += record_len_at(&bytes, at);
    }
    assert!(
        at <= bytes.len(),
        "{}: a record runs past the end",
        path.display()
    );
    at as u64
}

/// A version-1 log record (release 0.1.0) built by hand from the layout `format.rs`
/// documents: crc over everything after it, kind (1 set, 2 remove, 3 seal), lengths, key,
/// value.
#[allow(dead_code)]
pub fn v1_record(kind: u8, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(&(key.len() as u32).to_le_bytes());
    body.extend_from_slice(&(value.len() as u32).to_le_bytes());
    body.extend_from_slice(key);
    body.extend_from_slice(value);
    let mut record = crc32fast::hash(&body).to_le_bytes().to_vec();
    record.extend_from_slice(&body);
    record
}
