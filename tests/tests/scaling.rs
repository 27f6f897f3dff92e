//! kvs-servers as shards on three hosts behind twemproxy (Debian's `nutcracker`), with the
//! repository's `deploy/nutcracker.yml`: the real `kvs-server` binary, each on a host of its
//! own (a network namespace with its own address, see `kvs_tests::hosts`), and the real
//! clients, `redis-cli` and redis-py, through the proxy. docs/SCALING.md describes the setup.
//!
//! - 100,000 keys written and read back through the proxy, half with each client, pipelined
//!   (redis-py) and batched (redis-cli sends `MSET` and `MGET` of 1,000 keys: it cannot
//!   pipeline through twemproxy, whose missing `ECHO` ends `redis-cli --pipe`);
//! - each shard asked directly: every key is on exactly one, and each holds within 10% of a
//!   third;
//! - one shard killed with SIGKILL: with `auto_eject_hosts: false` (the file's), exactly its
//!   keys fail and every other key is served; restarted on the same data directory, it serves
//!   every key it acknowledged; with `auto_eject_hosts: true`, its keys move to the two others
//!   (writes to them succeed there) while the others' keys stay where they are;
//! - `kvs-server --cluster-mode emulated` on a host of its own: redis-py's `RedisCluster` and
//!   `redis-cli -c` use it unchanged, told the address they connected to;
//! - the hosts' namespaces are gone once the test ends, panic or not.
//!
//! The tests skip, saying so loudly, where nutcracker, redis-cli or redis-py is missing
//! (`bash tests/setup.sh` installs them).

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use kvs_tests::hosts::{Hosts, Place};
use kvs_tests::nutcracker::{self, Nutcracker};
use kvs_tests::redis::installed;
use kvs_tests::server::PATIENCE;
use kvs_tests::{kvs_server, python, ServerProcess};
use tempfile::TempDir;

/// Keys written through the proxy.
const KEYS: usize = 100_000;
/// Shards, each on a host of its own.
const SHARDS: usize = 3;
/// Keys per `MSET` or `MGET` line redis-cli sends.
const CLI_BATCH: usize = 1000;

/// The shards, the proxy, and the clients' tools.
struct Cluster {
    // Fields drop in order: the processes end before their namespaces are deleted.
    proxy: Option<Nutcracker>,
    servers: Vec<Option<ServerProcess>>,
    shard_addrs: Vec<SocketAddr>,
    dirs: Vec<TempDir>,
    work: TempDir,
    hosts: Hosts,
    nutcracker: PathBuf,
    python: PathBuf,
}

impl Cluster {
    /// Three kvs-servers on their hosts, or `None` if a tool is missing (said loudly).
    fn start() -> Option<Cluster> {
        if !installed("redis-cli") {
            eprintln!(
                "\n*** SKIPPED: redis-cli is not installed (Debian's redis-tools; `bash \
                 tests/setup.sh` installs it). ***\n"
            );
            return None;
        }
        let nutcracker = nutcracker::program()?;
        let python = python::with_redis()?;
        let hosts = Hosts::new(SHARDS);
        eprintln!(
            "hosts: {} ({})",
            (0..SHARDS)
                .map(|i| hosts.addr(i).to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if hosts.isolated() {
                "one network namespace each"
            } else {
                "loopback addresses"
            }
        );
        let shard_addrs = (0..SHARDS)
            .map(|i| SocketAddr::new(hosts.addr(i), hosts.port(Place::Host(i), 6379)))
            .collect();
        let mut cluster = Cluster {
            proxy: None,
            servers: (0..SHARDS).map(|_| None).collect(),
            shard_addrs,
            dirs: (0..SHARDS).map(|_| TempDir::new().unwrap()).collect(),
            work: TempDir::new().unwrap(),
            hosts,
            nutcracker,
            python,
        };
        for i in 0..SHARDS {
            cluster.start_shard(i);
        }
        Some(cluster)
    }

    /// Starts kvs-server `i` on its host, address and data directory.
    fn start_shard(&mut self, i: usize) {
        let mut command = self.hosts.command(Place::Host(i), kvs_server());
        command.arg("--addr").arg(self.shard_addrs[i].to_string());
        let server = ServerProcess::start_command(command, self.dirs[i].path());
        assert_eq!(server.addr, self.shard_addrs[i]);
        self.servers[i] = Some(server);
    }

    /// Kills kvs-server `i` with SIGKILL: no shutdown, no flush.
    fn kill_shard(&mut self, i: usize) {
        let mut server = self.servers[i].take().expect("shard is running");
        let status = server.signal_and_wait("KILL");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "shard {i} died of SIGKILL"
        );
    }

    /// (Re)starts the proxy with `deploy/nutcracker.yml`, its addresses replaced by the
    /// shards' and `auto_eject_hosts` set to `eject`.
    fn start_proxy(&mut self, eject: bool) {
        self.proxy = None;
        let listen = SocketAddr::new(self.hosts.front(), self.hosts.port(Place::Front, 22121));
        let config = nutcracker::config(
            &nutcracker::deploy_config(),
            listen,
            &self.shard_addrs,
            eject,
        );
        self.proxy = Some(Nutcracker::start(
            &self.nutcracker,
            &self.hosts,
            self.work.path(),
            &config,
        ));
    }

    fn proxy_addr(&self) -> SocketAddr {
        self.proxy.as_ref().expect("proxy is running").addr
    }

    fn shards_arg(&self) -> String {
        self.shard_addrs
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn owners_file(&self) -> PathBuf {
        self.work.path().join("owners")
    }

    /// Runs `tests/src/shards.py args` with redis-py at the front; its findings.
    fn py(&self, args: &[&str]) -> Findings {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/shards.py");
        let out = self
            .hosts
            .command(Place::Front, &self.python)
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("python runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "shards.py {args:?} failed:\n{stdout}\n{}\nnutcracker's log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.proxy.as_ref().map(Nutcracker::log).unwrap_or_default()
        );
        Findings(
            stdout
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Runs redis-cli against the proxy with `input` as its standard input (one command a
    /// line, each answered before the next is sent); its standard output.
    fn cli(&self, args: &[&str], input: &str) -> String {
        let proxy = self.proxy_addr();
        let mut child = self
            .hosts
            .command(Place::Front, "redis-cli")
            .args([
                "-h",
                &proxy.ip().to_string(),
                "-p",
                &proxy.port().to_string(),
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-cli runs");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = input.to_string();
        let writer = thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child.wait_with_output().expect("redis-cli runs");
        writer.join().unwrap().expect("redis-cli reads its input");
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("redis-cli prints text")
    }

    /// Reads `key` through the proxy with redis-cli until it answers `want` ("" for no value).
    fn wait_for(&self, key: &str, want: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.cli(&["GET", key], "");
            if got.trim_end_matches('\n') == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "GET {key} through the proxy never answered {want:?}; last: {got:?}; \
                 nutcracker's log:\n{}",
                self.proxy.as_ref().map(Nutcracker::log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What shards.py printed: `name=value` lines.
struct Findings(HashMap<String, String>);

impl Findings {
    /// The number named `name`; 0 if absent (a count nothing was counted in).
    fn n(&self, name: &str) -> usize {
        self.0.get(name).map_or(0, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a count"))
        })
    }

    fn text(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }

    /// Everything, for failure messages.
    fn dump(&self) -> String {
        let mut lines: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        lines.sort();
        lines.join("\n")
    }
}

fn key(i: usize) -> String {
    format!("key:{i}")
}

/// The value key `i` holds: written by redis-cli (first half) or redis-py (second half), as
/// shards.py expects.
fn value(i: usize) -> String {
    if i < KEYS / 2 {
        format!("cli-{i}")
    } else {
        format!("py-{i}")
    }
}

#[test]
fn shards_behind_nutcracker_serve_and_survive_a_killed_host() {
    let started = Instant::now();
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    cluster.start_proxy(false);
    let keys = KEYS.to_string();

    // redis-cli writes the first half, MSET by MSET; the proxy splits each by shard.
    let mut input = String::new();
    for batch in (0..KEYS / 2).collect::<Vec<_>>().chunks(CLI_BATCH) {
        input += "MSET";
        for &i in batch {
            input += &format!(" {} {}", key(i), value(i));
        }
        input += "\n";
    }
    let replies = cluster.cli(&[], &input);
    assert_eq!(replies, "OK\n".repeat(KEYS / 2 / CLI_BATCH));
    // redis-py writes the second half, pipelined.
    let half = (KEYS / 2).to_string();
    let set = cluster.py(&["set", &cluster.proxy_addr().to_string(), &half, &keys]);
    assert_eq!(set.n("acked"), KEYS / 2, "{}", set.dump());

    // Both read everything back through the proxy.
    let read = cluster.py(&["read", &cluster.proxy_addr().to_string(), &keys, "-"]);
    assert_eq!(read.n("by_owner.all.right"), KEYS, "{}", read.dump());
    let mut input = String::new();
    for batch in (0..KEYS).collect::<Vec<_>>().chunks(CLI_BATCH) {
        input += "MGET";
        for &i in batch {
            input += &format!(" {}", key(i));
        }
        input += "\n";
    }
    let values = cluster.cli(&[], &input);
    let expected: String = (0..KEYS).map(|i| value(i) + "\n").collect();
    assert!(values == expected, "redis-cli read back other values");
    eprintln!(
        "{KEYS} keys written and read through the proxy in {:.1?}",
        started.elapsed()
    );

    // Each shard, asked directly: every key is on exactly one, with its value, and each
    // holds within 10% of an even share.
    let owners_file = cluster.owners_file();
    let owners_arg = owners_file.to_str().unwrap();
    let owners = cluster.py(&["owners", &cluster.shards_arg(), &keys, owners_arg]);
    assert_eq!(owners.n("none"), 0, "{}", owners.dump());
    assert_eq!(owners.n("multiple"), 0, "{}", owners.dump());
    assert_eq!(owners.n("wrong"), 0, "{}", owners.dump());
    let counts: Vec<usize> = (0..SHARDS)
        .map(|s| owners.n(&format!("counts.{s}")))
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), KEYS);
    for (s, &count) in counts.iter().enumerate() {
        assert_eq!(
            owners.n(&format!("dbsize.{s}")),
            count,
            "DBSIZE of shard {s} is the number of keys found on it"
        );
    }
    let even = KEYS / SHARDS;
    for (s, &count) in counts.iter().enumerate() {
        assert!(
            count.abs_diff(even) * 10 <= even,
            "shard {s} holds {count} keys, more than 10% away from {even}: {counts:?}"
        );
    }
    eprintln!("keys per shard: {counts:?} (even: {even})");
    let owner_of: Vec<String> = std::fs::read_to_string(&owners_file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let sample = owner_of
        .iter()
        .position(|o| o == "1")
        .expect("shard 1 owns keys");

    // Shard 1 killed, ejection off: exactly its keys fail, every other key is served.
    cluster.kill_shard(1);
    let read = cluster.py(&["read", &cluster.proxy_addr().to_string(), &keys, owners_arg]);
    for s in [0, 2] {
        assert_eq!(
            read.n(&format!("by_owner.{s}.right")),
            counts[s],
            "shard {s}'s keys are all served while shard 1 is down: {}",
            read.dump()
        );
    }
    assert_eq!(
        read.n("by_owner.1.error"),
        counts[1],
        "every key of the killed shard fails (none is served from elsewhere): {}",
        read.dump()
    );
    eprintln!("with shard 1 down: {}", read.text("examples.error"));

    // Restarted on its data directory, it serves every key it acknowledged.
    cluster.start_shard(1);
    cluster.wait_for(&key(sample), &value(sample));
    let read = cluster.py(&["read", &cluster.proxy_addr().to_string(), &keys, owners_arg]);
    assert_eq!(
        (0..SHARDS)
            .map(|s| read.n(&format!("by_owner.{s}.right")))
            .sum::<usize>(),
        KEYS,
        "{}",
        read.dump()
    );

    // Ejection on: once the proxy ejects the killed shard, its keys map to the others (reads
    // miss, writes land there) and the others' keys stay where they were.
    cluster.start_proxy(true);
    cluster.kill_shard(1);
    cluster.wait_for(&key(sample), "");
    let read = cluster.py(&["read", &cluster.proxy_addr().to_string(), &keys, owners_arg]);
    for s in [0, 2] {
        assert_eq!(
            read.n(&format!("by_owner.{s}.right")),
            counts[s],
            "shard {s}'s keys stay served while shard 1 is ejected: {}",
            read.dump()
        );
    }
    assert_eq!(read.n("by_owner.1.right") + read.n("by_owner.1.wrong"), 0);
    assert_eq!(
        read.n("by_owner.1.nil") + read.n("by_owner.1.error"),
        counts[1]
    );
    assert!(read.n("by_owner.1.nil") > 0, "{}", read.dump());
    let moved = cluster.py(&[
        "move",
        &cluster.proxy_addr().to_string(),
        &keys,
        owners_arg,
        "1",
    ]);
    assert_eq!(moved.n("left"), 0, "{}", moved.dump());
    let found = cluster.py(&["moved", &cluster.shards_arg(), &keys, owners_arg, "1"]);
    assert_eq!(found.text("bad"), "[]", "{}", found.dump());
    let (on0, on2) = (found.n("where.0"), found.n("where.2"));
    assert_eq!(on0 + on2, counts[1], "{}", found.dump());
    assert!(on0 > 0 && on2 > 0, "{}", found.dump());
    eprintln!(
        "shard 1 ejected: its {} keys now on shard 0 ({on0}) and shard 2 ({on2}); \
         whole test {:.1?}",
        counts[1],
        started.elapsed()
    );
}

/// The substitution of `deploy/nutcracker.yml` replaces what the test needs, and nothing else.
#[test]
fn the_deploy_config_is_what_the_test_runs() {
    let template = nutcracker::deploy_config();
    let listen: SocketAddr = "10.1.2.3:4567".parse().unwrap();
    let servers: Vec<SocketAddr> = ["10.9.0.1:1", "10.9.0.2:2", "10.9.0.3:3"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let config = nutcracker::config(&template, listen, &servers, true);
    assert!(config.contains("  listen: 10.1.2.3:4567\n"), "{config}");
    assert!(config.contains("  auto_eject_hosts: true\n"), "{config}");
    for (i, server) in servers.iter().enumerate() {
        assert!(
            config.contains(&format!("    - {server}:1 kvs{}\n", i + 1)),
            "{config}"
        );
    }
    // Every other line is the file's own.
    let kept = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| {
                let t = l.trim();
                !t.starts_with("listen:")
                    && !t.starts_with("auto_eject_hosts:")
                    && !t.starts_with("- ")
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(kept(&config), kept(&template));
    assert!(template.contains("auto_eject_hosts: false"));
    assert!(template.contains("distribution: ketama"));
    // And nutcracker itself accepts the file as committed.
    if let Some(program) = nutcracker::program() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nutcracker.yml");
        let out = Command::new(program)
            .arg("--test-conf")
            .arg("--conf-file")
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What redis-py's `RedisCluster` does against an emulated cluster node at `HOST PORT`: writes
/// and reads 1,000 keys (spread over many slots) singly, in a pipeline and with MGET, and says
/// which nodes it found. A server without the mode is refused by redis-py itself.
const CLUSTER_CLIENT: &str = r#"
import sys
from redis.cluster import RedisCluster
rc = RedisCluster(host=sys.argv[1], port=int(sys.argv[2]), decode_responses=True)
for i in range(1000):
    assert rc.set(f"c:{i}", f"v{i}") is True
assert all(rc.get(f"c:{i}") == f"v{i}" for i in range(1000))
p = rc.pipeline()
for i in range(1000):
    p.set(f"{{tag}}:{i}", f"t{i}")
assert p.execute() == [True] * 1000
assert rc.mget_nonatomic([f"c:{i}" for i in range(1000)]) == [f"v{i}" for i in range(1000)]
slots = {rc.keyslot(f"c:{i}") for i in range(1000)}
print("slots_used=%d" % len(slots))
print("nodes=%s" % ",".join(sorted(n.name for n in rc.get_nodes())))
"#;

/// redis-py's `RedisCluster` and `redis-cli -c` use `kvs-server --cluster-mode emulated`
/// unchanged, on a host of its own reached at its own address (the server listens on every
/// address, and tells each client the one it connected to); without the mode, `CLUSTER` is
/// refused as by a non-cluster Redis, and so is `RedisCluster`.
#[test]
fn cluster_clients_use_an_emulated_cluster_node() {
    if !installed("redis-cli") {
        eprintln!("\n*** SKIPPED: redis-cli is not installed (`bash tests/setup.sh`). ***\n");
        return;
    }
    let Some(python) = python::with_redis() else {
        return;
    };
    let hosts = Hosts::new(1);
    let port = hosts.port(Place::Host(0), 6379);
    // In a namespace of its own the server listens on every address (0.0.0.0), so only the
    // connection says which one the client used; on the shared loopback, on its own.
    let listen = if hosts.isolated() {
        SocketAddr::from(([0, 0, 0, 0], port))
    } else {
        SocketAddr::new(hosts.addr(0), port)
    };
    let reached = SocketAddr::new(hosts.addr(0), port);
    let (host, port) = (reached.ip().to_string(), reached.port().to_string());
    for emulated in [false, true] {
        let dir = TempDir::new().unwrap();
        let mut command = hosts.command(Place::Host(0), kvs_server());
        command.arg("--addr").arg(listen.to_string());
        if emulated {
            command.args(["--cluster-mode", "emulated"]);
        }
        let server = ServerProcess::start_command(command, dir.path());
        let cli = |args: &[&str]| {
            let out = hosts
                .command(Place::Front, "redis-cli")
                .args(["-h", &host, "-p", &port])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("redis-cli runs");
            String::from_utf8_lossy(&out.stdout).trim_end().to_string()
        };
        let client = hosts
            .command(Place::Front, &python)
            .args(["-c", CLUSTER_CLIENT, &host, &port])
            .stdin(Stdio::null())
            .output()
            .expect("python runs");
        let printed = String::from_utf8_lossy(&client.stdout);
        let errors = String::from_utf8_lossy(&client.stderr);
        if !emulated {
            assert_eq!(
                cli(&["CLUSTER", "SLOTS"]),
                "ERR This instance has cluster support disabled"
            );
            assert!(
                !client.status.success() && errors.contains("Cluster mode is not enabled"),
                "RedisCluster without the mode: {printed}\n{errors}"
            );
            continue;
        }
        assert!(
            client.status.success(),
            "RedisCluster failed: {printed}\n{errors}\nkvs-server:\n{}",
            server.stderr()
        );
        // One node, at the address the client used, and keys in many slots.
        assert!(printed.contains(&format!("nodes={reached}\n")), "{printed}");
        let used: usize = printed
            .lines()
            .find_map(|l| l.strip_prefix("slots_used="))
            .and_then(|n| n.parse().ok())
            .expect("slots_used printed");
        assert!(used > 900, "{printed}");
        assert_eq!(
            cli(&["CLUSTER", "SLOTS"]).lines().collect::<Vec<_>>()[..4],
            ["0", "16383", host.as_str(), port.as_str()]
        );
        assert_eq!(cli(&["CLUSTER", "KEYSLOT", "{user1000}.following"]), "3443");
        // redis-cli in cluster mode, and the keys RedisCluster wrote.
        assert_eq!(cli(&["-c", "SET", "cli-key", "cli-value"]), "OK");
        assert_eq!(cli(&["-c", "GET", "cli-key"]), "cli-value");
        assert_eq!(cli(&["-c", "GET", "c:999"]), "v999");
        assert_eq!(cli(&["-c", "GET", "{tag}:7"]), "t7");
        assert_eq!(cli(&["DBSIZE"]), "2001");
    }
}

/// The network namespaces of [`Hosts`] are deleted when it is dropped, also when the test that
/// made them panics.
#[test]
fn hosts_leave_no_namespace_behind() {
    let listed = || -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };
    let hosts = Hosts::new(2);
    let names = hosts.namespaces();
    if names.is_empty() {
        eprintln!("no network namespaces here (loopback addresses): nothing to remove");
        return;
    }
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| listed().contains(n)), "{names:?}");
    drop(hosts);
    assert!(names.iter().all(|n| !listed().contains(n)), "{names:?}");

    let panicked = std::panic::catch_unwind(|| {
        let hosts = Hosts::new(1);
        std::panic::panic_any(hosts.namespaces());
    });
    let names = *panicked
        .expect_err("the closure panics")
        .downcast::<Vec<String>>()
        .expect("it panics with the names");
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| !listed().contains(n)), "{names:?}");
}
