//! Workload 5: the time to open a big store, and the memory it holds once open.
//!
//! Each open runs in a fresh child process (this same binary, with `--open-child`), so one
//! engine's caches, threads and allocator state never count in another's figures. The child
//! reads its resident set size from `/proc/self/statm` before and after the open (and the
//! anonymous part of it, `RssAnon` in `/proc/self/status`, after) and prints one line that
//! the parent parses.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::peer::{Durability, Engine, Result};
use crate::workload::{cpu_time, key};

/// The first argument that turns this binary into an open child.
pub const CHILD_FLAG: &str = "--open-child";
/// The child's last argument when it opens with [`Opener::Plain`].
pub const PLAIN_FLAG: &str = "--plain";

/// What one open in a child measured.
#[derive(Debug, Clone, Copy)]
pub struct OpenSample {
    pub seconds: f64,
    /// Resident memory of the child right before the open, in bytes.
    pub rss_before: u64,
    /// Resident memory right after the open returned, in bytes.
    pub rss_after: u64,
    /// The anonymous part of `rss_after` (heap and stacks, not pages of mapped files).
    pub anon_after: u64,
    /// CPU time (user and system, all threads) the open took: on a shared machine, where
    /// the wall time includes waiting for a core, the work the open did.
    pub cpu_seconds: f64,
}

/// How the child opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// [`Engine::open`] with [`Durability::Os`] (the comparison benchmark).
    Default,
    /// [`Engine::open_plain`] (the scale benchmark).
    Plain,
}

/// Opens `engine`'s store in `dir` in a child process and returns what it measured.
pub fn measure_in_child(engine: Engine, dir: &Path) -> Result<OpenSample> {
    measure_in_child_with(engine, dir, Opener::Default)
}

/// [`measure_in_child`], the child opening the store as `opener` says.
pub fn measure_in_child_with(engine: Engine, dir: &Path, opener: Opener) -> Result<OpenSample> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg(CHILD_FLAG).arg(engine.name()).arg(dir);
    if opener == Opener::Plain {
        command.arg(PLAIN_FLAG);
    }
    let output = command.output()?;
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
        [seconds, before, after, anon, cpu] => Ok(OpenSample {
            seconds: seconds.parse()?,
            rss_before: before.parse()?,
            rss_after: after.parse()?,
            anon_after: anon.parse()?,
            cpu_seconds: cpu.parse()?,
        }),
        _ => Err(format!("unexpected output from the open child: {stdout:?}").into()),
    }
}

/// The child's side: open, measure, check one key is there, print
/// `seconds before after anon_after cpu_seconds`. `args` are the child's arguments after [`CHILD_FLAG`]:
/// the engine's name, the directory, and [`PLAIN_FLAG`] or nothing.
pub fn run_child(args: &[String]) -> Result<()> {
    let (engine, dir, opener) = match args {
        [engine, dir] => (engine, dir, Opener::Default),
        [engine, dir, flag] if flag == PLAIN_FLAG => (engine, dir, Opener::Plain),
        _ => {
            return Err(
                format!("{CHILD_FLAG} takes ENGINE DIR [{PLAIN_FLAG}], not {args:?}").into(),
            )
        }
    };
    let dir = Path::new(dir);
    let engine = Engine::from_name(engine).ok_or_else(|| format!("no engine {engine:?}"))?;
    let rss_before = resident_bytes()?;
    let cpu_before = cpu_time();
    let start = Instant::now();
    let store = match opener {
        Opener::Default => engine.open(dir, Durability::Os)?,
        Opener::Plain => engine.open_plain(dir)?,
    };
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = cpu_time() - cpu_before;
    let rss_after = resident_bytes()?;
    let anon_after = status_bytes("RssAnon")?;
    // An open that returns before the data is readable would not count: read one key back.
    if store.get(&key(0))?.is_none() {
        return Err(format!("{} opened without key number 0", engine.name()).into());
    }
    println!("{seconds} {rss_before} {rss_after} {anon_after} {cpu_seconds}");
    Ok(())
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`, `RssAnon`...), in bytes.
pub fn status_bytes(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .ok_or_else(|| format!("/proc/self/status has no {field} line"))?;
    let kib: u64 = line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|e| format!("/proc/self/status: {line:?}: {e}"))?;
    Ok(kib * 1024)
}

/// Resident set size of this process (second field of `/proc/self/statm`, in pages).
pub fn resident_bytes() -> Result<u64> {
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
