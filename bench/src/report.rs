//! The results table: medians per engine and workload, ratios, and the Markdown page.

use std::fmt::Write as _;
use std::path::Path;

use crate::peer::Engine;
use crate::workload::Sample;

/// What a row's figures are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Operations per second; higher is better.
    OpsPerSec,
    /// Milliseconds; lower is better.
    Millis,
    /// Mebibytes; lower is better.
    MiB,
    /// Bytes; lower is better.
    Bytes,
    /// A ratio of two figures; lower is better.
    Ratio,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::OpsPerSec => "ops/s",
            Unit::Millis => "ms, lower is better",
            Unit::MiB => "MiB, lower is better",
            Unit::Bytes => "bytes, lower is better",
            Unit::Ratio => "ratio, lower is better",
        }
    }

    pub fn format(self, value: f64) -> String {
        match self {
            Unit::OpsPerSec if value >= 1e6 => format!("{:.2}M", value / 1e6),
            Unit::OpsPerSec if value >= 1e4 => format!("{:.0}k", value / 1e3),
            Unit::OpsPerSec if value >= 1e3 => format!("{:.1}k", value / 1e3),
            Unit::OpsPerSec => format!("{value:.0}"),
            Unit::Millis if value >= 100.0 => format!("{value:.0}"),
            Unit::Millis if value >= 1.0 => format!("{value:.1}"),
            Unit::Millis => format!("{value:.2}"),
            Unit::MiB => format!("{value:.1}"),
            Unit::Bytes => format!("{value:.0}"),
            Unit::Ratio => format!("{value:.2}x"),
        }
    }
}

/// One workload's samples, per engine in [`Engine::ALL`] order.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub unit: Unit,
    pub samples: [Vec<f64>; Engine::COUNT],
    /// Cores kept busy during each sample, for timed workloads.
    pub cpus: [Vec<f64>; Engine::COUNT],
}

impl Row {
    pub fn new(label: impl Into<String>, unit: Unit) -> Row {
        Row {
            label: label.into(),
            unit,
            samples: Default::default(),
            cpus: Default::default(),
        }
    }

    pub fn push_sample(&mut self, engine: Engine, sample: Sample) {
        self.push(engine, sample.ops_per_sec);
        self.cpus[engine as usize].push(sample.cpus);
    }

    pub fn push(&mut self, engine: Engine, value: f64) {
        self.samples[engine as usize].push(value);
    }

    pub fn median(&self, engine: Engine) -> Option<f64> {
        median(&self.samples[engine as usize])
    }

    /// kvs's median over `peer`'s.
    pub fn ratio(&self, peer: Engine) -> Option<f64> {
        Some(self.median(Engine::Kvs)? / self.median(peer)?)
    }

    fn spread(&self, engine: Engine) -> String {
        let s = &self.samples[engine as usize];
        let min = s.iter().copied().fold(f64::INFINITY, f64::min);
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if s.is_empty() {
            "-".into()
        } else {
            format!("{} - {}", self.unit.format(min), self.unit.format(max))
        }
    }

    pub fn cell(&self, engine: Engine) -> String {
        self.median(engine)
            .map_or_else(|| "-".into(), |m| self.unit.format(m))
    }

    pub fn ratio_cell(&self, peer: Engine) -> String {
        self.ratio(peer)
            .map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
    }
}

/// The median, or `None` for no samples.
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

const PEERS: [Engine; 3] = [Engine::Sled, Engine::Fjall, Engine::Lmdb];

/// The table as aligned text, for the terminal.
pub fn text_table(rows: &[Row]) -> String {
    let header: Vec<String> = ["workload".to_string()]
        .into_iter()
        .chain(Engine::ALL.iter().map(|e| e.name().to_string()))
        .chain(PEERS.iter().map(|p| format!("kvs/{}", p.name())))
        .collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            [format!("{} ({})", row.label, row.unit.label())]
                .into_iter()
                .chain(Engine::ALL.iter().map(|&e| row.cell(e)))
                .chain(PEERS.iter().map(|&p| row.ratio_cell(p)))
                .collect()
        })
        .collect();
    align(&header, &body, false)
}

/// A target of the speed work: kvs's ratio over one peer on one workload, with the ratio the
/// benchmark measured before that work (on the 2-core development machine, at a quiet moment).
pub struct Goal {
    /// The start of the workload's row label.
    pub workload: &'static str,
    pub peer: Engine,
    pub before: f64,
    pub goal: f64,
}

/// The targets the benchmark reports on, after its table.
pub const GOALS: [Goal; 4] = [
    Goal {
        workload: "1. set, 100 B values",
        peer: Engine::Fjall,
        before: 2.42,
        goal: 4.0,
    },
    Goal {
        workload: "3. get, random of 100k, 1 thread",
        peer: Engine::Lmdb,
        before: 1.56,
        goal: 2.0,
    },
    Goal {
        workload: "3. get, random of 100k, 2 threads",
        peer: Engine::Lmdb,
        before: 1.44,
        goal: 2.0,
    },
    Goal {
        workload: "4. durable set, 8 threads",
        peer: Engine::Sled,
        before: 1.68,
        goal: 3.0,
    },
];

/// The cells of the goals table, one line per goal whose workload was measured: workload,
/// peer, ratio before, ratio now, goal, met or not.
fn goal_cells(rows: &[Row]) -> Vec<Vec<String>> {
    GOALS
        .iter()
        .filter_map(|goal| {
            let row = rows.iter().find(|r| r.label.starts_with(goal.workload))?;
            let now = row.ratio(goal.peer)?;
            Some(vec![
                goal.workload.to_string(),
                goal.peer.name().to_string(),
                format!("{:.2}x", goal.before),
                format!("{now:.2}x"),
                format!(">= {:.1}x", goal.goal),
                if now >= goal.goal { "met" } else { "not met" }.to_string(),
            ])
        })
        .collect()
}

const GOAL_HEADER: [&str; 6] = ["goal: kvs over", "peer", "before", "now", "goal", ""];

/// The goals table as aligned text.
pub fn goals_text(rows: &[Row]) -> String {
    let header: Vec<String> = GOAL_HEADER.iter().map(|h| h.to_string()).collect();
    align(&header, &goal_cells(rows), true)
}

/// The goals table as Markdown (empty if no goal's workload was measured).
fn goals_markdown(rows: &[Row]) -> String {
    let cells = goal_cells(rows);
    if cells.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "## Goals\n\nkvs's ratio over one peer, before the second round of speed work (measured \
         on this machine at a quiet moment) and in this run.\n\n| workload | peer | before | now | \
         goal | |\n|---|---|--:|--:|--:|---|\n",
    );
    for line in cells {
        let _ = writeln!(md, "| {} |", line.join(" | "));
    }
    md.push('\n');
    md
}

/// `header` and `body` as aligned text: the first column left-aligned, the others right-aligned
/// (the last one left-aligned too if `free_last`: a column of prose).
pub fn align(header: &[String], body: &[Vec<String>], free_last: bool) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            body.iter()
                .map(|r| r[c].len())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in std::iter::once(header).chain(body.iter().map(Vec::as_slice)) {
        for (c, cell) in line.iter().enumerate() {
            if c == 0 {
                let _ = write!(out, "{cell:<w$}", w = widths[c]);
            } else if free_last && c == line.len() - 1 {
                let _ = write!(out, "  {cell}");
            } else {
                let _ = write!(out, "  {cell:>w$}", w = widths[c]);
            }
        }
        out.push('\n');
    }
    out
}

/// Facts about the run that go above the table.
pub struct RunInfo {
    pub command: String,
    pub date: String,
    pub machine: String,
    pub load_before: String,
    pub load_after: String,
    pub revision: String,
    pub rounds: usize,
    pub seconds_per_sample: f64,
    pub durable_seconds_per_sample: f64,
    pub open_keys: u64,
    pub open_rounds: usize,
    pub data_dir: String,
}

/// Marks the end of the generated part of `results.md`: what follows it is kept on rewrite.
pub const END_MARKER: &str = "<!-- end of generated results: text below this line is kept -->";

/// The Markdown page: the run's facts, the table, the spread, the footnotes, the plot.
pub fn markdown(info: &RunInfo, rows: &[Row], plot_file: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# kvs performance: KvStore against sled, fjall and LMDB\n"
    );
    let _ = writeln!(md, "Generated by the comparison benchmark in `bench/`:\n");
    let _ = writeln!(md, "```sh\n{}\n```\n", info.command);
    let _ = writeln!(md, "- Date: {}", info.date);
    let _ = writeln!(md, "- Machine: {}", info.machine);
    let _ = writeln!(
        md,
        "- Load average (1, 5, 15 min) at start: {}; at end: {} (the machine is shared)",
        info.load_before, info.load_after
    );
    let _ = writeln!(md, "- kvs revision: {}", info.revision);
    let _ = writeln!(md, "- Data directory: {}", info.data_dir);
    let _ = writeln!(
        md,
        "- Each figure is the median of {} rounds; a round measures every engine in turn (the \
         starting engine rotates), each sample runs {:.2} s ({:.2} s for durable sets).\n",
        info.rounds, info.seconds_per_sample, info.durable_seconds_per_sample
    );
    let _ = writeln!(
        md,
        "| workload | unit | kvs | sled | fjall | lmdb | kvs/sled | kvs/fjall | kvs/lmdb |"
    );
    let _ = writeln!(md, "|---|---|--:|--:|--:|--:|--:|--:|--:|");
    for row in rows {
        let _ = write!(md, "| {} | {} |", row.label, row.unit.label());
        for e in Engine::ALL {
            let _ = write!(md, " {} |", row.cell(e));
        }
        for p in PEERS {
            let _ = write!(md, " {} |", row.ratio_cell(p));
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "\nRatios are kvs's median over the peer's: above 1 is better for kvs in ops/s rows, \
         below 1 is better for kvs in ms and MiB rows.\n"
    );
    let _ = writeln!(md, "![The same table as bar charts]({plot_file})\n");
    md.push_str(&goals_markdown(rows));
    let _ = writeln!(md, "## Spread (lowest - highest sample)\n");
    let _ = writeln!(md, "| workload | kvs | sled | fjall | lmdb |");
    let _ = writeln!(md, "|---|--:|--:|--:|--:|");
    for row in rows {
        let _ = write!(md, "| {} |", row.label);
        for e in Engine::ALL {
            let _ = write!(md, " {} |", row.spread(e));
        }
        md.push('\n');
    }
    let _ = writeln!(md, "\n## Cores kept busy (median)\n");
    let _ = writeln!(
        md,
        "CPU time of the benchmark process (engines' background threads included) over wall \
         time, out of the machine's cores. A multi-threaded row well under its thread count \
         means threads waited: for a lock, for an fsync, or for a core another process had.\n"
    );
    let _ = writeln!(md, "| workload | kvs | sled | fjall | lmdb |");
    let _ = writeln!(md, "|---|--:|--:|--:|--:|");
    for row in rows.iter().filter(|r| r.cpus.iter().any(|c| !c.is_empty())) {
        let _ = write!(md, "| {} |", row.label);
        for e in Engine::ALL {
            let cell =
                median(&row.cpus[e as usize]).map_or_else(|| "-".into(), |c| format!("{c:.2}"));
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
    let _ = writeln!(md, "\n## What each call promises\n");
    md.push_str(&footnotes(info.open_keys, info.open_rounds));
    md
}

fn footnotes(open_keys: u64, open_rounds: usize) -> String {
    format!(
        "Keys are 16 bytes (hex digits, in random order: no engine gets sorted inserts); values \
are cut from random bytes at random offsets (they do not compress). Engines are used through \
their public APIs with default settings unless said here.

| engine | sets (workloads 1, 2) | durable sets (workload 4) | get |
|---|---|---|---|
| kvs | `KvStore`, default options (`SyncPolicy::Os`): the record is written to the log file \
(`write(2)`) before the call returns; it survives a crash of the process | \
`SyncPolicy::Always`: `fdatasync` before returning, group commit across threads | `get_bytes`, an owned `Vec<u8>` |
| sled 0.34 | `SledKvsEngine`: `insert`, then `Db::flush` before returning, as kvs ships it; \
so in workloads 1-2 sled does more than the others | the same, and here sled does *less* than \
the others: on Linux its flush is `sync_file_range(WAIT_BEFORE, WRITE, WAIT_AFTER)`, which waits \
for the device to take the data but neither flushes the device's write cache nor commits file \
metadata (weaker than `fdatasync`) | `SledKvsEngine::get_bytes` (copies to a `Vec<u8>`) |
| fjall 3.1 | `Keyspace::insert`: the journal is flushed to the OS (fjall's default, \
`PersistMode::Buffer`) | `insert`, then `Database::persist(PersistMode::SyncData)` (fdatasync) | \
`Keyspace::get`, copied to a `Vec<u8>` |
| lmdb (heed 0.23) | one write transaction per set, environment opened with `MDB_NOSYNC`: the \
commit writes its pages to the file but does not fsync | one write transaction per set, synced \
commit (LMDB's default) | a read transaction per get, the value copied to a `Vec<u8>` |

- Workloads 1 and 2 write into a fresh, empty store for every sample.
- Workload 3 reads from a store of 100,000 keys with 100-byte values, built once, closed and \
reopened before the first sample; everything is in the page cache. With 2 threads both \
threads read the same store.
- Workload 4 writes into one store per engine, kept across rounds; 8 threads each write \
their own keys.
- Workload 5 builds a store of {keys} keys with 100-byte values per engine, closes it, \
then opens it {open_rounds} times per engine, each time in a fresh child process of the \
benchmark (page cache warm). The time runs until open returns; the memory is the child's \
resident set (`/proc/self/statm`) right after open, which includes the process's own \
baseline of about 2-4 MiB. LMDB maps its file and reads nothing at open, so its resident \
memory grows only as pages are read later; sled, too, reads its tree lazily. kvs replays its \
log into the in-memory index at open, so its open does all the work up front.
",
        keys = thousands(open_keys)
    )
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Writes `page` to `path`, keeping whatever followed [`END_MARKER`] in the old file.
pub fn write_page(path: &Path, page: &str) -> std::io::Result<()> {
    let kept = std::fs::read_to_string(path)
        .ok()
        .and_then(|old| {
            old.find(END_MARKER)
                .map(|at| old[at + END_MARKER.len()..].to_string())
        })
        .unwrap_or_else(|| "\n".into());
    std::fs::write(path, format!("{page}\n{END_MARKER}{kept}"))
}

/// Today's date and time in UTC, `YYYY-MM-DD HH:MM UTC`, from the system clock.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(200_000), "200,000");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn rewriting_the_page_keeps_the_notes_below_the_marker() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("results.md");
        write_page(&path, "first")?;
        let old = std::fs::read_to_string(&path)?;
        std::fs::write(&path, format!("{old}\n## Notes\nkept\n"))?;
        write_page(&path, "second")?;
        let new = std::fs::read_to_string(&path)?;
        assert!(new.starts_with("second\n"));
        assert!(new.contains("## Notes\nkept\n"));
        assert!(!new.contains("first"));
        Ok(())
    }
}
