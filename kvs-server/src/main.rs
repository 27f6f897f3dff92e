//! `kvs-server`: serves the kvs store in the current directory over TCP.
//!
//! One port speaks both the kvs protocol (`kvs-client`, `kvs::KvsClient`, `kvs.Client`) and
//! RESP, the Redis protocol (`redis-cli`, `redis-benchmark`, Redis client libraries): each
//! connection's first byte tells which (see `kvs::resp`).
//!
//! With a password (`--requirepass`, `--requirepass-file` or `KVS_REQUIREPASS`), every client
//! must give it first; without one, listening beyond loopback logs a warning.
//!
//! Logs go to stderr (level from `RUST_LOG`, else `--log-level`). SIGINT and SIGTERM stop the
//! server gracefully: it stops accepting, finishes the requests in flight (waiting at most
//! `--drain-timeout`, 1 s, for clients to read their replies), flushes the engine and exits 0.
//! A second signal exits at once, with status 1.

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use kvs::thread_pool::{NaiveThreadPool, RayonThreadPool, SharedQueueThreadPool, ThreadPool};
use kvs::{
    AnyEngine, ClusterMode, EngineKind, KvStoreOptions, KvsEngine, KvsServer, ServerConfig,
    ShutdownHandle,
};

#[derive(Parser, Debug)]
#[command(
    name = "kvs-server",
    version,
    about = "Serves the kvs store in the current directory over TCP.",
    long_about = "Serves the kvs store in the current directory over TCP.\n\n\
                  The port speaks the kvs protocol (kvs-client) and RESP, the Redis protocol \
                  (redis-cli, redis-benchmark, Redis client libraries): Redis 7's string, \
                  expiry, keyspace, transaction, connection and server commands (COMMAND \
                  lists them). Each connection's first byte tells which: '*', a letter, a \
                  space or an empty line is RESP.\n\n\
                  With a password (--requirepass, --requirepass-file or KVS_REQUIREPASS, in \
                  that order), every client must give it first."
)]
struct Cli {
    /// Address to listen on, IPv4 or IPv6 IP:PORT.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:4000")]
    addr: SocketAddr,

    /// Storage engine. Default: the one recorded in the current directory, else kvs. A
    /// different engine than the recorded one is refused.
    #[arg(long, value_enum)]
    engine: Option<Engine>,

    /// Thread pool the connection workers run on.
    #[arg(long, value_enum, default_value_t = Pool::SharedQueue)]
    pool: Pool,

    /// Worker threads, each serving many connections, from 1 to 1024 (default: one per CPU).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,

    /// When a write is acknowledged (kvs engine): `os` once it reached the operating system
    /// (survives a crash of the server), `always` once fsynced to disk (also survives power
    /// loss; much slower).
    #[arg(long, value_enum, default_value_t = Sync::Os)]
    sync: Sync,

    /// Largest request or reply payload in bytes; a client announcing a larger request is
    /// disconnected. For RESP: the longest bulk string, and the most bytes of bulk strings in
    /// one command. From 1024 (room for an error reply) to 150994943 (144 MiB - 1: a larger
    /// kvs frame could not be told apart from a RESP request).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = kvs::protocol::DEFAULT_MAX_FRAME_LEN as u64,
        value_parser = clap::value_parser!(u64).range(MIN_FRAME_BYTES..=MAX_FRAME_BYTES)
    )]
    max_frame_bytes: u64,

    /// Seconds a client may leave a request half-sent or replies unread before it is
    /// disconnected (idle connections are kept). From 0.001 to 86400 (a day); fractions allowed.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "30",
        value_parser = parse_seconds,
        allow_negative_numbers = true
    )]
    client_timeout: Duration,

    /// Seconds a graceful shutdown (SIGINT, SIGTERM) waits for clients to read the replies to
    /// their last requests before closing their connections, from 0.001 to 86400.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "1",
        value_parser = parse_seconds,
        allow_negative_numbers = true
    )]
    drain_timeout: Duration,

    /// Most connections served at once, from 1 to 1000000; more are closed on arrival.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    max_connections: u32,

    /// Redis Cluster emulation for RESP clients: `off` answers CLUSTER as a Redis server
    /// without cluster support; `emulated` presents a cluster of one node owning all 16384
    /// hash slots (CLUSTER SLOTS, SHARDS, NODES, INFO, MYID, KEYSLOT), at the address each
    /// client connected to, so that cluster clients (redis-cli -c, redis-py's RedisCluster)
    /// work unchanged. No gossip, failover or slot migration.
    #[arg(long, value_enum, default_value_t = ClusterArg::Off)]
    cluster_mode: ClusterArg,

    /// A password every client must give first (RESP: AUTH or HELLO 3 AUTH default ...; kvs
    /// protocol: kvs-client --password). It shows in `ps`: prefer --requirepass-file or the
    /// KVS_REQUIREPASS environment variable. Either flag overrides KVS_REQUIREPASS; an empty
    /// password is refused.
    #[arg(long, value_name = "PASSWORD", conflicts_with = "requirepass_file")]
    requirepass: Option<String>,

    /// Read the password (see --requirepass) from the first line of FILE.
    #[arg(long, value_name = "FILE")]
    requirepass_file: Option<std::path::PathBuf>,

    /// Log level when RUST_LOG is not set.
    #[arg(
        long,
        value_name = "LEVEL",
        default_value = "info",
        value_parser = ["off", "error", "warn", "info", "debug", "trace"]
    )]
    log_level: String,
}

/// The smallest `--max-frame-bytes`: below it, the server's own error replies (which name the
/// limit and the size at fault) would not fit in a frame.
const MIN_FRAME_BYTES: u64 = 1024;

/// The largest `--max-frame-bytes` (see `kvs::ServerConfig::MAX_FRAME_LEN` for why).
const MAX_FRAME_BYTES: u64 = kvs::ServerConfig::MAX_FRAME_LEN as u64;

/// The bounds of `--client-timeout` and `--drain-timeout`, in seconds.
const TIMEOUT_SECS: std::ops::RangeInclusive<f64> = 0.001..=86_400.0;

/// Parses a timeout: a number of seconds within [`TIMEOUT_SECS`].
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !TIMEOUT_SECS.contains(&secs) {
        return Err(format!(
            "{text} is not in {}..={} seconds",
            TIMEOUT_SECS.start(),
            TIMEOUT_SECS.end()
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Engine {
    Kvs,
    Sled,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Pool {
    /// Fixed threads sharing one job queue.
    SharedQueue,
    /// rayon's work-stealing pool.
    Rayon,
    /// A new thread per job.
    Naive,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ClusterArg {
    Off,
    Emulated,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Sync {
    Os,
    Always,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&cli.log_level))
        .target(env_logger::Target::Stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvs-server: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The environment variable that holds the password when neither `--requirepass` nor
/// `--requirepass-file` is given.
const PASSWORD_VAR: &str = "KVS_REQUIREPASS";

/// The password clients must give, if any: `--requirepass`, else the first line of
/// `--requirepass-file` (they cannot both be given), else `KVS_REQUIREPASS`. An empty one is
/// an error, wherever it comes from: a server that looks protected must be.
fn password(cli: &Cli) -> Result<Option<Vec<u8>>, String> {
    let (password, source) = if let Some(password) = &cli.requirepass {
        (password.as_bytes().to_vec(), "--requirepass".to_string())
    } else if let Some(file) = &cli.requirepass_file {
        let text = std::fs::read(file)
            .map_err(|e| format!("cannot read the password file {}: {e}", file.display()))?;
        let line = text.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        (
            line.to_vec(),
            format!("the first line of {}", file.display()),
        )
    } else if let Some(value) = std::env::var_os(PASSWORD_VAR) {
        use std::os::unix::ffi::OsStrExt;
        (value.as_bytes().to_vec(), PASSWORD_VAR.to_string())
    } else {
        return Ok(None);
    };
    if password.is_empty() {
        return Err(format!(
            "the password ({source}) is empty: give a non-empty password, or none"
        ));
    }
    Ok(Some(password))
}

/// What the start-up line says of the store: how long opening it took and, where counting is
/// cheap (the kvs engine's index knows), how many keys it holds. sled counts by reading every
/// key, which would hold up the start of a large store: its keys are not counted here.
fn opened_line(store: &AnyEngine, took: std::time::Duration) -> String {
    let took = format!("store opened in {} ms", took.as_millis());
    match store {
        AnyEngine::Kvs(kvs) => match kvs.len() {
            Ok(keys) => format!("{took}, {keys} keys"),
            Err(_) => took,
        },
        AnyEngine::Sled(_) => took,
    }
}

fn run(cli: Cli) -> Result<(), String> {
    // Signals are caught from the very start, so that one arriving while the store opens
    // still ends in a clean shutdown rather than the default abrupt exit.
    let stop = Stop::on_signals()?;
    let password = password(&cli)?;

    let dir = std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?;
    let engine = cli.engine.map(|e| match e {
        Engine::Kvs => EngineKind::Kvs,
        Engine::Sled => EngineKind::Sled,
    });
    let sync = match cli.sync {
        Sync::Os => kvs::SyncPolicy::Os,
        Sync::Always => kvs::SyncPolicy::Always,
    };
    let opening = std::time::Instant::now();
    let store = AnyEngine::open_with(&dir, engine, KvStoreOptions::default().sync(sync))
        .map_err(|e| e.to_string())?;
    let opened = opened_line(&store, opening.elapsed());

    let listener =
        TcpListener::bind(cli.addr).map_err(|e| format!("cannot listen on {}: {e}", cli.addr))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}: {e}", cli.addr))?;

    let threads = cli.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, |n| u32::try_from(n.get()).unwrap_or(2))
    });
    let config = ServerConfig::default()
        .workers(threads as usize)
        // Both fit: the parser bounded them far below `usize::MAX`.
        .max_frame_len(usize::try_from(cli.max_frame_bytes).unwrap_or(usize::MAX))
        .client_timeout(cli.client_timeout)
        .drain_timeout(cli.drain_timeout)
        .max_connections(usize::try_from(cli.max_connections).unwrap_or(usize::MAX))
        .cluster_mode(match cli.cluster_mode {
            ClusterArg::Off => ClusterMode::Off,
            ClusterArg::Emulated => ClusterMode::Emulated,
        });
    let config = match &password {
        Some(password) => config
            .requirepass(password.clone())
            .map_err(|e| e.to_string())?,
        None => config,
    };
    log::info!(
        "kvs-server {}, engine {}, listening on {local} ({threads} threads, {} pool, sync {}, \
         cluster mode {}); {opened}",
        kvs::VERSION,
        store.kind(),
        value_name(cli.pool),
        value_name(cli.sync),
        value_name(cli.cluster_mode),
    );
    if password.is_some() {
        log::info!("clients must give the password before anything else");
    } else if !local.ip().is_loopback() {
        log::warn!(
            "listening on {local}, beyond this machine, without a password: anyone who can \
             reach it can read and change every key; give one with --requirepass-file or \
             {PASSWORD_VAR}, or listen on 127.0.0.1"
        );
    }
    match cli.pool {
        Pool::SharedQueue => {
            serve::<SharedQueueThreadPool>(store, threads, config, listener, &stop)
        }
        Pool::Rayon => serve::<RayonThreadPool>(store, threads, config, listener, &stop),
        Pool::Naive => serve::<NaiveThreadPool>(store, threads, config, listener, &stop),
    }
}

/// How an option value is written on the command line.
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

fn serve<P: ThreadPool>(
    store: AnyEngine,
    threads: u32,
    config: ServerConfig,
    listener: TcpListener,
    stop: &Stop,
) -> Result<(), String> {
    let pool = P::new(threads).map_err(|e| format!("cannot start threads: {e}"))?;
    let server = KvsServer::with_config(store, pool, config);
    stop.attach(server.shutdown_handle());
    server.serve(listener).map_err(|e| e.to_string())?;
    log::info!("kvs-server stopped");
    Ok(())
}

/// Turns SIGINT and SIGTERM into a shutdown of the server, once there is one.
#[derive(Clone, Default)]
struct Stop {
    state: Arc<Mutex<StopState>>,
}

#[derive(Default)]
struct StopState {
    requested: bool,
    handle: Option<ShutdownHandle>,
}

impl Stop {
    fn on_signals() -> Result<Stop, String> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .map_err(|e| format!("cannot handle signals: {e}"))?;
        let stop = Stop::default();
        let on_signal = stop.clone();
        std::thread::Builder::new()
            .name("kvs-signals".to_string())
            .spawn(move || {
                for (count, signal) in signals.forever().enumerate() {
                    let name = if signal == SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    };
                    if count == 0 {
                        log::info!("{name} received; shutting down");
                        on_signal.request();
                    } else {
                        // A second signal means "now": acknowledged writes are already in
                        // the operating system, so nothing acknowledged is lost.
                        log::warn!("{name} received again; exiting without waiting");
                        std::process::exit(1);
                    }
                }
            })
            .map_err(|e| format!("cannot handle signals: {e}"))?;
        Ok(stop)
    }

    fn request(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.requested = true;
        if let Some(handle) = &state.handle {
            handle.shutdown();
        }
    }

    fn attach(&self, handle: ShutdownHandle) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.requested {
            handle.shutdown();
        }
        state.handle = Some(handle);
    }
}
