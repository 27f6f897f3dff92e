//! The text of `INFO`: `# Section` headers and `field:value` lines, as Redis writes them.

use std::fmt::Write;

use super::commands::Engine;
use super::request::Args;
use crate::server::state::{unix_now, ServerState};
use crate::{KeyExpiry, Result, ScanFilter};

/// The Redis version whose replies kvs's commands follow. Clients read `redis_version` to pick
/// a dialect; kvs's own version is `kvs_version`.
pub(crate) const REDIS_VERSION: &str = "7.0.0";

/// The sections kvs has, in the order Redis writes them. `INFO`, `INFO default`, `INFO all`
/// and `INFO everything` give all of them.
const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "keyspace",
];

/// How many keys `INFO keyspace` looks at for `expires` and `avg_ttl` (one page of a scan):
/// all of them in a store of at most this many keys, else a sample from which the count of
/// keys with a deadline is estimated, so that `INFO` stays cheap on a large store (Redis's
/// `avg_ttl` is an estimate too).
const KEYSPACE_SAMPLE: usize = 1000;

/// Renders the sections named in `wanted` (none, `default`, `all` or `everything`: every
/// section kvs has). Unknown section names are skipped, as Redis does.
pub(crate) fn render(
    wanted: Args<'_, '_>,
    engine: &dyn Engine,
    state: &ServerState,
) -> Result<String> {
    let every = wanted.is_empty()
        || wanted.iter().any(|w| {
            [&b"default"[..], b"all", b"everything"]
                .iter()
                .any(|all| w.eq_ignore_ascii_case(all))
        });
    let stats = state.stats();
    let mut text = String::new();
    for &section in SECTIONS {
        if !every
            && !wanted
                .iter()
                .any(|w| w.eq_ignore_ascii_case(section.as_bytes()))
        {
            continue;
        }
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        // Writing to a String cannot fail.
        let _ = match section {
            "server" => write!(
                text,
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nkvs_version:{}\r\n\
                 redis_mode:standalone\r\nos:{} {}\r\narch_bits:{}\r\nmultiplexing_api:{}\r\n\
                 process_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\n\
                 uptime_in_seconds:{}\r\nuptime_in_days:{}\r\nexecutable:{}\r\n",
                crate::VERSION,
                std::env::consts::OS,
                std::env::consts::ARCH,
                usize::BITS,
                if cfg!(target_os = "linux") {
                    "epoll"
                } else {
                    "kqueue"
                },
                std::process::id(),
                state.run_id(),
                stats.port,
                unix_now().as_micros(),
                stats.uptime_secs,
                stats.uptime_secs / 86_400,
                std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            "clients" => write!(
                text,
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\
                 tracking_clients:0\r\n",
                stats.connected,
                state.settings().max_connections
            ),
            "memory" => {
                let rss = resident_bytes();
                write!(
                    text,
                    "# Memory\r\nused_memory:{rss}\r\nused_memory_human:{}\r\n\
                     used_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nmaxmemory:0\r\n\
                     maxmemory_human:0B\r\nmaxmemory_policy:noeviction\r\n\
                     mem_allocator:libc\r\n",
                    human(rss),
                    human(rss)
                )
            }
            "persistence" => write!(
                text,
                "# Persistence\r\nloading:0\r\nasync_loading:0\r\nrdb_bgsave_in_progress:0\r\n\
                 rdb_last_save_time:{}\r\nrdb_last_bgsave_status:ok\r\naof_enabled:1\r\n\
                 aof_rewrite_in_progress:0\r\naof_last_write_status:ok\r\n",
                state.last_save()
            ),
            "stats" => write!(
                text,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
                 keyspace_hits:{}\r\nkeyspace_misses:{}\r\n",
                stats.connections_received, stats.commands, stats.hits, stats.misses
            ),
            "replication" => write!(
                text,
                "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\
                 master_failover_state:no-failover\r\nmaster_replid:{}\r\n\
                 master_replid2:0000000000000000000000000000000000000000\r\n\
                 master_repl_offset:0\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:0\r\n",
                state.run_id()
            ),
            _ => {
                text.push_str("# Keyspace\r\n");
                // Redis lists only databases that hold keys.
                match keyspace(engine)? {
                    Keyspace { keys: 0, .. } => Ok(()),
                    Keyspace {
                        keys,
                        expires,
                        avg_ttl_ms,
                    } => write!(
                        text,
                        "db0:keys={keys},expires={expires},avg_ttl={avg_ttl_ms}\r\n"
                    ),
                }
            }
        };
    }
    Ok(text)
}

/// What `INFO keyspace` says of the store (kvs has one database, `db0`); the metrics
/// endpoint (`crate::server::metrics`) shows the same figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keyspace {
    /// Keys in the store.
    pub(crate) keys: usize,
    /// Keys with a deadline: exact in a store of at most [`KEYSPACE_SAMPLE`] keys, else
    /// estimated from that many.
    pub(crate) expires: usize,
    /// The average time to live of the keys with a deadline, in milliseconds (0 if none).
    pub(crate) avg_ttl_ms: u64,
}

/// The figures of `INFO keyspace`: a count of the keys and one page of a scan, so cheap on a
/// store of any size.
pub(crate) fn keyspace(engine: &dyn Engine) -> Result<Keyspace> {
    let keys = engine.len()?;
    let (expires, avg_ttl_ms) = if keys == 0 {
        (0, 0)
    } else {
        expiry_summary(engine, keys)?
    };
    Ok(Keyspace {
        keys,
        expires,
        avg_ttl_ms,
    })
}

/// How many of the `keys` keys have a deadline, and their average time to live in
/// milliseconds (0 if none), from the first [`KEYSPACE_SAMPLE`] keys of a scan: exact for a
/// store that small, else estimated from them.
fn expiry_summary(engine: &dyn Engine, keys: usize) -> Result<(usize, u64)> {
    let page = engine.scan_bytes(0, KEYSPACE_SAMPLE, &ScanFilter::all())?;
    let now = unix_now().as_millis() as u64;
    let mut with_deadline = 0usize;
    let mut ttl_sum = 0u128;
    for key in &page.keys {
        if let KeyExpiry::At(deadline) = engine.expiry_bytes(key)? {
            with_deadline += 1;
            ttl_sum += u128::from(deadline.saturating_sub(now));
        }
    }
    let sampled = page.keys.len();
    if with_deadline == 0 || sampled == 0 {
        return Ok((0, 0));
    }
    let avg_ttl = (ttl_sum / with_deadline as u128) as u64;
    let expires = if page.cursor == 0 {
        with_deadline
    } else {
        ((with_deadline as u128 * keys as u128) / sampled as u128) as usize
    };
    Ok((expires, avg_ttl))
}

/// The server's resident memory in bytes, as the operating system counts it (`VmRSS` of
/// `/proc/self/status` on Linux; 0 where that is not known). kvs has no allocator statistics,
/// so `used_memory` is this too.
pub(crate) fn resident_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Bytes as Redis's `_human` fields write them (`1.63M`).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}
