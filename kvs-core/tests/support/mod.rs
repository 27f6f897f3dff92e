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
