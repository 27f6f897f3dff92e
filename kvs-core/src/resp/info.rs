//! The text of `INFO`: `# Section` headers and `field:value` lines, as Redis writes them.

use std::fmt::Write;

use super::commands::Engine;
use super::request::Args;
use crate::server::state::ServerState;
use crate::Result;

/// The Redis version whose replies kvs's commands follow. Clients read `redis_version` to pick
/// a dialect; kvs's own version is `kvs_version`.
pub(crate) const REDIS_VERSION: &str = "7.0.0";

const SECTIONS: &[&str] = &["server", "clients", "stats", "keyspace"];

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
                 redis_mode:standalone\r\nos:{} {}\r\narch_bits:{}\r\nprocess_id:{}\r\n\
                 tcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\n",
                crate::VERSION,
                std::env::consts::OS,
                std::env::consts::ARCH,
                usize::BITS,
                std::process::id(),
                stats.port,
                stats.uptime_secs,
                stats.uptime_secs / 86_400,
            ),
            "clients" => write!(
                text,
                "# Clients\r\nconnected_clients:{}\r\n",
                stats.connected
            ),
            "stats" => write!(
                text,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
                 keyspace_hits:{}\r\nkeyspace_misses:{}\r\n",
                stats.connections_received, stats.commands, stats.hits, stats.misses
            ),
            _ => {
                text.push_str("# Keyspace\r\n");
                // Redis lists only databases that hold keys.
                match engine.len()? {
                    0 => Ok(()),
                    keys => write!(text, "db0:keys={keys},expires=0,avg_ttl=0\r\n"),
                }
            }
        };
    }
    Ok(text)
}
