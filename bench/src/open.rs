//! Workload 5: the time to open a big store, and the memory it holds once open.
//!
//! Each open runs in a fresh child process (this same binary, with `--open-child`), so one
//! engine's caches, threads and allocator state never count in another's figures. The child
//! reads its resident set size from `/proc/self/statm` before and after the open and prints
//! one line that the parent parses.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::peer::{Durability, Engine, Result};
use crate::workload::key;

/// The first argument that turns this binary into an open child.
pub const CHILD_FLAG: &str = "--open-child";

/// What one open in a child measured.
#[derive(Debug, Clone, Copy)]
pub struct OpenSample {
    pub seconds: f64,
    /// Resident memory of the child right before the open, in bytes.
    pub rss_before: u64,
    /// Resident memory right after the open returned, in bytes.
    pub rss_after: u64,
}

/// Opens `engine`'s store in `dir` in a child process and returns what it measured.
pub fn measure_in_child(engine: Engine, dir: &Path) -> Result<OpenSample> {
    let output = Command::new(std::env::current_exe()?)
        .arg(CHILD_FLAG)
        .arg(engine.name())
        .arg(dir)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "opening {} in a child failed ({}): {}{}",
            engine.name(),
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    match fields[..] {
        [seconds, before, after] => Ok(OpenSample {
            seconds: seconds.parse()?,
            rss_before: before.parse()?,
            rss_after: after.parse()?,
        }),
        _ => Err(format!("unexpected output from the open child: {stdout:?}").into()),
    }
}

/// The child's side: open, measure, check one key is there, print `seconds before after`.
pub fn run_child(engine: &str, dir: &Path) -> Result<()> {
    let engine = Engine::from_name(engine).ok_or_else(|| format!("no engine {engine:?}"))?;
    let rss_before = resident_bytes()?;
    let start = Instant::now();
    let store = engine.open(dir, Durability::Os)?;
    let seconds = start.elapsed().as_secs_f64();
    let rss_after = resident_bytes()?;
    // An open that returns before the data is readable would not count: read one key back.
    if store.get(&key(0))?.is_none() {
        return Err(format!("{} opened without key number 0", engine.name()).into());
    }
    println!("{seconds} {rss_before} {rss_after}");
    Ok(())
}

/// Resident set size of this process (second field of `/proc/self/statm`, in pages).
fn resident_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("/proc/self/statm has no resident field")?
        .parse()?;
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * u64::try_from(page_size).unwrap_or(4096))
}
