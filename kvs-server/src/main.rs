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
//!
//! `--config FILE` reads any of the options from a TOML file (the command line overrides it);
//! `--metrics-addr` serves Prometheus metrics over HTTP; under systemd (`Type=notify`), the
//! server says `READY=1` on `$NOTIFY_SOCKET` once it serves and `STOPPING=1` as it stops.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use kvs::thread_pool::{NaiveThreadPool, RayonThreadPool, SharedQueueThreadPool, ThreadPool};
use kvs::{
    AnyEngine, ClusterMode, EngineKind, KvStoreOptions, KvsEngine, KvsServer, MetricsEndpoint,
    ServerConfig, ShutdownHandle,
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
                  that order), every client must give it first.\n\n\
                  --config FILE reads options from a TOML file, each under its long flag's \
                  name (addr = \"127.0.0.1:4000\", threads = 4, client-timeout = 2.5); a flag \
                  given on the command line overrides the file.\n\n\
                  Under systemd (Type=notify), it sends READY=1 to $NOTIFY_SOCKET once the \
                  store is open and the port bound, and STOPPING=1 as it shuts down."
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

    /// Read options from the TOML file FILE: `name = value` lines, each name a long flag's
    /// without its `--` (strings quoted, numbers bare). Flags on the command line override
    /// it; an unknown name or a bad value is a usage error naming the file and the name.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Serve Prometheus metrics (the figures of INFO) over HTTP at http://IP:PORT/metrics.
    /// Off by default.
    #[arg(long, value_name = "IP:PORT")]
    metrics_addr: Option<SocketAddr>,
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

/// How a config-file value is written in TOML, by the long flag it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileType {
    /// A string: `addr = "127.0.0.1:4000"`.
    Text,
    /// An integer: `threads = 4`.
    Integer,
    /// A number of seconds, an integer or a float: `client-timeout = 2.5`.
    Seconds,
}

impl FileType {
    fn expected(self) -> &'static str {
        match self {
            FileType::Text => "a string (in double quotes)",
            FileType::Integer => "an integer",
            FileType::Seconds => "a number of seconds (an integer or a float)",
        }
    }
}

/// Every option a config file may give: each long flag but `--config`, `--help` and
/// `--version`, with the TOML type of its value. A test checks that it lists exactly the
/// flags there are.
const FILE_OPTIONS: &[(&str, FileType)] = &[
    ("addr", FileType::Text),
    ("engine", FileType::Text),
    ("pool", FileType::Text),
    ("threads", FileType::Integer),
    ("sync", FileType::Text),
    ("max-frame-bytes", FileType::Integer),
    ("client-timeout", FileType::Seconds),
    ("drain-timeout", FileType::Seconds),
    ("max-connections", FileType::Integer),
    ("cluster-mode", FileType::Text),
    ("requirepass", FileType::Text),
    ("requirepass-file", FileType::Text),
    ("log-level", FileType::Text),
    ("metrics-addr", FileType::Text),
];

/// The exit status of a usage error, as clap exits with for a bad flag.
const USAGE_ERROR: u8 = 2;

/// The command line, with the options of `--config FILE` under those given on it. A bad flag
/// exits as clap does (status 2); a config file that cannot be read, is not TOML, or gives an
/// unknown option or a bad value is an `Err` naming the file (and the option, or the line).
fn parse_command_line() -> Result<Cli, String> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(&args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let Some(file) = cli.config.clone() else {
        return Ok(cli);
    };
    let on_command_line = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let from_file = config_file_args(&file, on_command_line)?;
    let mut merged = Vec::with_capacity(args.len() + from_file.len());
    merged.extend(args.first().cloned());
    merged.extend(from_file.into_iter().map(OsString::from));
    merged.extend(args.into_iter().skip(1));
    Cli::try_parse_from(merged).map_err(|e| format!("{}: {}", file.display(), clap_message(&e)))
}

/// The options of the config file `file` as command-line arguments (`--name=value`), leaving
/// out those given on the command line (`on_command_line`, by clap's id of the option): each
/// checked alone, as its flag would be, so that an error names the file and the option.
fn config_file_args(
    file: &Path,
    on_command_line: impl Fn(&str) -> bool,
) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the config file {}: {e}", file.display()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        format!("{}: {}", file.display(), e.to_string().trim_end())
    })?;
    let at = |key: &str| format!("{}: `{key}`", file.display());
    if table.contains_key("requirepass") && table.contains_key("requirepass-file") {
        return Err(format!(
            "{}: `requirepass` and `requirepass-file` cannot both be given",
            file.display()
        ));
    }
    // A password given on the command line, in either way, replaces the file's.
    let password_on_command_line =
        on_command_line("requirepass") || on_command_line("requirepass_file");
    let mut args = Vec::with_capacity(table.len());
    for (key, value) in &table {
        let Some(&(_, kind)) = FILE_OPTIONS.iter().find(|(name, _)| name == key) else {
            let names: Vec<&str> = FILE_OPTIONS.iter().map(|(name, _)| *name).collect();
            return Err(format!(
                "{}: unknown option; the options are {}",
                at(key),
                names.join(", ")
            ));
        };
        let text = match (kind, value) {
            (FileType::Text, toml::Value::String(s)) => s.clone(),
            (FileType::Integer | FileType::Seconds, toml::Value::Integer(i)) => i.to_string(),
            (FileType::Seconds, toml::Value::Float(f)) => f.to_string(),
            (kind, value) => {
                // A password, even of the wrong type, is never shown.
                let shown = if key == "requirepass" {
                    String::new()
                } else {
                    format!(" ({value})")
                };
                return Err(format!(
                    "{}: must be {}, not {}{shown}",
                    at(key),
                    kind.expected(),
                    article(value.type_str())
                ));
            }
        };
        let arg = format!("--{key}={text}");
        if let Err(e) = Cli::try_parse_from(["kvs-server", arg.as_str()]) {
            return Err(format!("{}: {}", at(key), clap_message(&e)));
        }
        let id = key.replace('-', "_");
        let password = key == "requirepass" || key == "requirepass-file";
        let overridden = on_command_line(&id) || (password && password_on_command_line);
        if !overridden {
            args.push(arg);
        }
    }
    Ok(args)
}

/// "a string", "an integer".
fn article(noun: &str) -> String {
    let an = noun.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {noun}", if an { "an" } else { "a" })
}

/// What clap says of a bad value, without its `error: ` and its closing advice to try
/// `--help`: `invalid value '0' for '--threads <N>': 0 is not in 1..=1024`.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let text = text.trim();
    let text = text.strip_prefix("error: ").unwrap_or(text);
    let text = match text.find("\n\nFor more information") {
        Some(end) => &text[..end],
        None => text,
    };
    text.trim_end().to_string()
}

fn main() -> ExitCode {
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("kvs-server: error: {e}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
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

    let metrics = match cli.metrics_addr {
        Some(addr) => {
            let cannot = |e: std::io::Error| format!("cannot listen on {addr} for metrics: {e}");
            let listener = TcpListener::bind(addr).map_err(cannot)?;
            let at = listener.local_addr().map_err(cannot)?;
            let endpoint = MetricsEndpoint::new(listener)
                .engine(store.kind().to_string())
                .data_dir(&dir);
            Some((endpoint, at))
        }
        None => None,
    };

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
    let metrics = metrics.map(|(endpoint, at)| {
        log::info!("serving metrics at http://{at}/metrics");
        endpoint
    });
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
            serve::<SharedQueueThreadPool>(store, threads, config, listener, metrics, &stop)
        }
        Pool::Rayon => serve::<RayonThreadPool>(store, threads, config, listener, metrics, &stop),
        Pool::Naive => serve::<NaiveThreadPool>(store, threads, config, listener, metrics, &stop),
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
    metrics: Option<MetricsEndpoint>,
    stop: &Stop,
) -> Result<(), String> {
    let pool = P::new(threads).map_err(|e| format!("cannot start threads: {e}"))?;
    let mut server = KvsServer::with_config(store, pool, config);
    if let Some(metrics) = metrics {
        server = server.with_metrics(metrics);
    }
    stop.attach(server.shutdown_handle());
    // The store is open and the ports are bound: a client that connects now is served (it
    // waits in the listen backlog until the first worker runs, a moment later).
    let local = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    notify_ready(&format!("serving on {local}"));
    let served = server.serve(listener).map_err(|e| e.to_string());
    // Stopped by a client's SHUTDOWN, or by an error: systemd hears it now at the latest.
    notify_stopping();
    served?;
    log::info!("kvs-server stopped");
    Ok(())
}

/// The environment variable through which systemd gives a `Type=notify` service the socket
/// to report its state on (see sd_notify(3)).
const NOTIFY_VAR: &str = "NOTIFY_SOCKET";

/// Whether `STOPPING=1` was sent (it is sent once, and `READY=1` never after it).
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Tells systemd the server is ready, unless it is already stopping.
fn notify_ready(status: &str) {
    if !STOPPING.load(Ordering::SeqCst) {
        notify(&format!("READY=1\nSTATUS={status}"));
    }
}

/// Tells systemd the server is shutting down, once.
fn notify_stopping() {
    if !STOPPING.swap(true, Ordering::SeqCst) {
        notify("STOPPING=1\nSTATUS=shutting down");
    }
}

/// Sends `message` (`NAME=value` lines) to `$NOTIFY_SOCKET`, if it is set. A failure is
/// logged, never fatal: the server serves as well without systemd hearing of it.
fn notify(message: &str) {
    let Some(target) = std::env::var_os(NOTIFY_VAR) else {
        return;
    };
    if let Err(e) = send_notification(&target, message.as_bytes()) {
        log::warn!(
            "cannot tell systemd the server's state through {NOTIFY_VAR}={}: {e}",
            target.to_string_lossy()
        );
    }
}

/// Sends one datagram to the Unix socket `target`: a path (`/run/systemd/notify`) or, on
/// Linux, an abstract name written with a leading `@`.
fn send_notification(target: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let socket = UnixDatagram::unbound()?;
    match target.as_bytes().split_first() {
        Some((b'/', _)) => socket.send_to(message, Path::new(target)).map(drop),
        #[cfg(target_os = "linux")]
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message, &addr).map(drop)
        }
        _ => Err(Error::new(
            ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract socket name (@name)",
        )),
    }
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
                        notify_stopping();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file takes exactly the options the command line has: a new flag must be
    /// given its TOML type in `FILE_OPTIONS`.
    #[test]
    fn a_config_file_takes_every_long_flag_and_nothing_else() {
        let command = Cli::command();
        let mut flags: Vec<&str> = command
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .filter(|long| !["config", "help", "version"].contains(long))
            .collect();
        let mut options: Vec<&str> = FILE_OPTIONS.iter().map(|(name, _)| *name).collect();
        flags.sort_unstable();
        options.sort_unstable();
        assert_eq!(flags, options);
    }
}
