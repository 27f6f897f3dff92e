//! Redis transactions (`MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`) on a real kvs-server,
//! on both engines: replies compared byte for byte with a real redis-server 7.0; `EXEC`
//! atomic and isolated from other clients and from embedded users of the same engine, and
//! all or nothing across `kill -9`; and the real clients: redis-py (`pipeline()`,
//! `transaction()` with WATCH retries, RESP2 and RESP3), Django's Redis cache, Node's
//! ioredis, `redis-cli` and `redis-benchmark`. `tests/setup.sh` installs what they need;
//! each test says loudly when it skips because something is missing.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kvs::thread_pool::{SharedQueueThreadPool, ThreadPool};
use kvs::{KvStore, KvsEngine, KvsServer, ServerConfig, SledKvsEngine};
use kvs_tests::redis::{installed, RedisServer};
use kvs_tests::resp::{Conn as Resp, Frame};
use kvs_tests::server::PATIENCE;
use kvs_tests::{python, ServerProcess};
use tempfile::TempDir;

const ENGINES: [&str; 2] = ["kvs", "sled"];

fn start(dir: &TempDir, engine: &str) -> ServerProcess {
    ServerProcess::start(dir.path(), &["--engine", engine])
}

fn ok() -> Frame {
    Frame::Simple("OK".into())
}

fn queued() -> Frame {
    Frame::Simple("QUEUED".into())
}

fn bulk(text: &str) -> Frame {
    Frame::Bulk(Some(text.as_bytes().to_vec()))
}

/// The requests compared with redis-server: each group on a fresh connection after
/// `FLUSHALL`; a group whose name ends in `resp3` says `HELLO 3` first. `WATCH` tests in which
/// another connection writes are `other: ...` lines, sent on a second connection.
const SCRIPT: &[(&str, &[&str])] = &[
    (
        "errors",
        &[
            "EXEC",
            "DISCARD",
            "MULTI",
            "MULTI",
            "WATCH a",
            "SET a 1",
            "EXEC",
            "WATCH",
            "UNWATCH x",
            "MULTI x",
            "EXEC x",
            "DISCARD x",
            "GET a",
            "MULTI",
            "SET a 2",
            "EXEC x",
            "EXEC",
            "GET a",
        ],
    ),
    (
        "queuing errors abort",
        &[
            "MULTI",
            "SET a 1",
            "NOPE x y",
            "GET",
            "SET b 2",
            "EXEC",
            "EXISTS a b",
            "MULTI",
            "SET a",
            "EXEC",
        ],
    ),
    (
        "run-time errors do not",
        &[
            "SET s text",
            "MULTI",
            "INCR s",
            "SET n 1",
            "SET n 2 BOGUS",
            "INCRBY n 10",
            "RENAME nokey x",
            "GETSET s other",
            "EXPIRE n 100 NX",
            "TTL n",
            "PERSIST n",
            "MGET s n",
            "DEL s",
            "UNWATCH",
            "EXEC",
            "MGET s n",
        ],
    ),
    (
        "discard",
        &[
            "MULTI", "SET a 1", "INCR a", "DISCARD", "EXISTS a", "MULTI", "EXEC",
        ],
    ),
    (
        "watch",
        &[
            "SET w 1",
            "WATCH w missing",
            "MULTI",
            "INCR w",
            "EXEC",
            "WATCH w",
            "other: SET w 5",
            "MULTI",
            "INCR w",
            "EXEC",
            "GET w",
            "WATCH missing",
            "other: SET missing 1",
            "MULTI",
            "SET x 1",
            "EXEC",
            "WATCH w",
            "other: DEL w",
            "MULTI",
            "SET x 2",
            "EXEC",
            "WATCH x",
            "UNWATCH",
            "other: SET x 3",
            "MULTI",
            "GET x",
            "EXEC",
            "WATCH x",
            "MULTI",
            "DISCARD",
            "other: SET x 4",
            "MULTI",
            "GET x",
            "EXEC",
        ],
    ),
    (
        "watch resp3",
        &[
            "SET w 1",
            "WATCH w",
            "other: SET w 2",
            "MULTI",
            "GET w",
            "EXEC",
            "MULTI",
            "GET w",
            "GET nokey",
            "EXEC",
        ],
    ),
];

#[test]
fn transactions_reply_as_redis_server_does_on_both_engines() {
    let dir = TempDir::new().unwrap();
    let Some(redis) = RedisServer::start(dir.path()) else {
        return;
    };
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for engine in ENGINES {
        let data = TempDir::new().unwrap();
        let server = start(&data, engine);
        let kvs_addr = server.addr.to_string();
        for (group, lines) in SCRIPT {
            let mut sides = [redis.addr.as_str(), kvs_addr.as_str()].map(|addr| {
                let mut main = Resp::connect(addr);
                assert_eq!(main.line("FLUSHALL"), ok(), "{engine}: {group}");
                if group.ends_with("resp3") {
                    assert!(matches!(main.line("HELLO 3"), Frame::Map(_)), "{group}");
                }
                (main, Resp::connect(addr))
            });
            for line in *lines {
                compared += 1;
                let [want, got] =
                    sides
                        .each_mut()
                        .map(|(main, other)| match line.strip_prefix("other: ") {
                            Some(line) => other.line(line),
                            None => main.line(line),
                        });
                if want != got {
                    mismatches.push(format!(
                        "{engine} [{group}] {line}\n    redis-server: {want:?}\n    kvs-server:   {got:?}"
                    ));
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {compared} replies differ from redis-server's:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    eprintln!("{compared} replies compared with redis-server, all the same");
}

/// Writers run `MULTI; INCR x; INCR y; EXEC` (and `DECR z` ... to mix in a run-time error)
/// while readers check that `MGET x y` (one instant) never sees one increment without the
/// other, nor does a `MULTI; GET x; GET y; EXEC` of theirs; the totals are exact. On the real
/// binary, both engines.
#[test]
fn exec_is_isolated_from_other_clients() {
    const WRITERS: usize = 3;
    const ROUNDS: usize = 300;
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        let addr = server.addr.to_string();
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|n| {
                let (addr, done) = (addr.clone(), done.clone());
                thread::spawn(move || {
                    let mut c = Resp::connect(&addr);
                    let mut reads = 0;
                    while !done.load(Ordering::SeqCst) || reads == 0 {
                        let pair = if n == 0 {
                            c.line("MGET x y")
                        } else {
                            assert_eq!(c.line("MULTI"), ok());
                            assert_eq!(c.line("GET x"), queued());
                            assert_eq!(c.line("GET y"), queued());
                            c.line("EXEC")
                        };
                        let Frame::Array(Some(pair)) = pair else {
                            panic!("{pair:?}");
                        };
                        assert_eq!(pair[0], pair[1], "a transaction seen half done");
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let writers: Vec<_> = (0..WRITERS)
            .map(|_| {
                let addr = addr.clone();
                thread::spawn(move || {
                    let mut c = Resp::connect(&addr);
                    for _ in 0..ROUNDS {
                        for line in ["MULTI", "INCR x", "SET z notanumber", "INCR z", "INCR y"] {
                            c.send(&line.split(' ').map(str::as_bytes).collect::<Vec<_>>());
                        }
                        c.send(&[b"EXEC"]);
                        assert_eq!(c.reply(), Some(ok()));
                        for _ in 0..4 {
                            assert_eq!(c.reply(), Some(queued()));
                        }
                        let Some(Frame::Array(Some(replies))) = c.reply() else {
                            panic!("EXEC did not answer an array");
                        };
                        assert_eq!(replies.len(), 4, "{replies:?}");
                        assert!(
                            matches!(&replies[2], Frame::Error(e) if e.contains("not an integer"))
                        );
                    }
                })
            })
            .collect();
        // The readers stop once the writers are done, even when one of them failed.
        let written: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
        done.store(true, Ordering::SeqCst);
        let reads: Vec<_> = readers.into_iter().map(|r| r.join()).collect();
        for w in written {
            w.unwrap();
        }
        let reads: usize = reads.into_iter().map(|r| r.unwrap()).sum();
        let total = (WRITERS * ROUNDS).to_string();
        let mut c = Resp::connect(&addr);
        assert_eq!(
            c.line("MGET x y"),
            Frame::Array(Some(vec![bulk(&total), bulk(&total)])),
            "{engine}"
        );
        eprintln!("{engine}: {reads} consistent reads during {total} transactions");
    }
}

/// An in-process server on an engine that the test also uses directly, as an embedded user
/// would: the engine's own transactions and reads never see half an `EXEC`, and `EXEC`
/// never sees half of theirs; a `WATCH`ed key written by the embedded user aborts `EXEC`.
fn embedded_users_and_exec<E: KvsEngine>(engine: E) {
    const ROUNDS: usize = 300;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let pool = SharedQueueThreadPool::new(4).unwrap();
    let server = KvsServer::with_config(engine.clone(), pool, ServerConfig::default().workers(4));
    let stop = server.shutdown_handle();
    let running = thread::spawn(move || server.serve(listener));

    let client = {
        let addr = addr.clone();
        thread::spawn(move || {
            let mut c = Resp::connect(&addr);
            for _ in 0..ROUNDS {
                for line in ["MULTI", "INCR x", "INCR y"] {
                    c.line(line);
                }
                let Frame::Array(Some(pair)) = c.line("EXEC") else {
                    panic!("EXEC did not answer an array");
                };
                // EXEC's INCRs see the embedded user's transactions whole.
                assert_eq!(pair[0], pair[1], "EXEC saw half an embedded transaction");
            }
        })
    };
    for _ in 0..ROUNDS {
        // The embedded user's transaction: both keys, or neither.
        engine
            .transaction(|tx| {
                for key in [&b"x"[..], b"y"] {
                    let n: u64 = match tx.get(key)? {
                        None => 0,
                        Some(v) => String::from_utf8(v).unwrap().parse().unwrap(),
                    };
                    tx.set(key, (n + 1).to_string().as_bytes(), None)?;
                }
                Ok(())
            })
            .unwrap();
        let pair = engine.get_many_bytes(&[b"x", b"y"]).unwrap();
        assert_eq!(pair[0], pair[1], "an embedded read saw half an EXEC");
    }
    client.join().unwrap();
    let total = (2 * ROUNDS).to_string().into_bytes();
    assert_eq!(
        engine.get_many_bytes(&[b"x", b"y"]).unwrap(),
        vec![Some(total.clone()), Some(total)]
    );

    // WATCH sees a write of the embedded user.
    let mut c = Resp::connect(&addr);
    assert_eq!(c.line("WATCH x"), ok());
    engine.set_bytes(b"x", b"embedded").unwrap();
    assert_eq!(c.line("MULTI"), ok());
    assert_eq!(c.line("SET x client"), queued());
    assert_eq!(c.line("EXEC"), Frame::Array(None));
    assert_eq!(engine.get_bytes(b"x").unwrap(), Some(b"embedded".to_vec()));

    stop.shutdown();
    running.join().unwrap().unwrap();
}

#[test]
fn exec_is_isolated_from_embedded_users_of_the_engine() {
    let dir = TempDir::new().unwrap();
    embedded_users_and_exec(KvStore::open(dir.path()).unwrap());
    let dir = TempDir::new().unwrap();
    embedded_users_and_exec(SledKvsEngine::new(sled::open(dir.path()).unwrap()).unwrap());
}

/// `kill -9` while clients run `EXEC`s of 50 `SET`s each: after a restart every
/// transaction is there whole or not at all, and every one acknowledged is there.
#[test]
fn exec_is_all_or_nothing_across_kill_9() {
    const KEYS: usize = 50;
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let mut server = start(&dir, engine);
        let addr = server.addr.to_string();
        let clients: Vec<_> = (0..2)
            .map(|id| {
                let addr = addr.clone();
                thread::spawn(move || {
                    let mut c = Resp::connect(&addr);
                    let mut acknowledged = Vec::new();
                    for round in 0.. {
                        let tx = format!("{id}.{round}");
                        let mut request = vec![(b"MULTI".to_vec(), Vec::new())];
                        for i in 0..KEYS {
                            request
                                .push((format!("t{tx}:{i}").into_bytes(), tx.clone().into_bytes()));
                        }
                        let mut sent = c.try_send(&[b"MULTI"]);
                        for (key, value) in &request[1..] {
                            sent = sent.and_then(|()| c.try_send(&[b"SET", key, value]));
                        }
                        // The server is killed at some point: a send then fails.
                        if sent.and_then(|()| c.try_send(&[b"EXEC"])).is_err() {
                            return acknowledged;
                        }
                        for _ in 0..KEYS + 1 {
                            if c.reply().is_none() {
                                return acknowledged;
                            }
                        }
                        match c.reply() {
                            Some(Frame::Array(Some(_))) => acknowledged.push(tx),
                            _ => return acknowledged,
                        }
                    }
                    acknowledged
                })
            })
            .collect();
        // Let some transactions complete, then kill the server in the middle of others.
        let mut watcher = Resp::connect(&addr);
        // Not a time bound on kvs: only a test that fails (the clients stopped early) waits
        // this long, instead of for ever.
        let patience = Instant::now() + PATIENCE;
        loop {
            let Frame::Integer(n) = watcher.line("DBSIZE") else {
                panic!("DBSIZE");
            };
            if n >= (20 * KEYS) as i64 {
                break;
            }
            assert!(
                Instant::now() < patience,
                "{engine}: the transactions stopped at {n} keys"
            );
            thread::sleep(Duration::from_millis(5));
        }
        let status = server.signal_and_wait("KILL");
        assert!(!status.success(), "{engine}: {status:?}");
        let acknowledged: Vec<String> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        let server = start(&dir, engine);
        let mut c = Resp::connect(server.addr);
        let Frame::Array(Some(keys)) = c.line("KEYS *") else {
            panic!("KEYS");
        };
        let mut per_tx = std::collections::BTreeMap::<String, usize>::new();
        for key in keys {
            let Frame::Bulk(Some(key)) = key else {
                panic!("{key:?}");
            };
            let key = String::from_utf8(key).unwrap();
            let tx = key[1..].split(':').next().unwrap().to_string();
            *per_tx.entry(tx).or_default() += 1;
        }
        for (tx, n) in &per_tx {
            assert_eq!(*n, KEYS, "{engine}: transaction {tx} is there in part");
        }
        for tx in &acknowledged {
            assert!(per_tx.contains_key(tx), "{engine}: acknowledged {tx} lost");
        }
        eprintln!(
            "{engine}: {} transactions whole after kill -9 ({} acknowledged)",
            per_tx.len(),
            acknowledged.len()
        );
    }
}

/// `SCAN`, `KEYS`, `DBSIZE` and `FLUSHALL` queued in a transaction answer (sled's engine
/// cannot walk its keys from inside its own transaction: kvs reads them outside it), as of
/// before the transaction (docs/reference/redis.md), on both engines.
#[test]
fn walks_of_the_store_inside_exec_on_both_engines() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        let mut c = Resp::connect(server.addr);
        for i in 0..500 {
            assert_eq!(c.line(&format!("SET k{i} {i}")), ok());
        }
        for line in [
            "MULTI",
            "SET new 1",
            "DBSIZE",
            "KEYS k1*",
            "SCAN 0 COUNT 1000",
            "FLUSHALL",
        ] {
            c.line(line);
        }
        let Frame::Array(Some(replies)) = c.line("EXEC") else {
            panic!("{engine}: EXEC did not answer an array");
        };
        assert_eq!(replies[1], Frame::Integer(500), "{engine}");
        let Frame::Array(Some(keys)) = &replies[2] else {
            panic!("{engine}: {:?}", replies[2]);
        };
        // k1, k10-k19, k100-k199.
        assert_eq!(keys.len(), 111, "{engine}");
        assert_eq!(replies[4], ok(), "{engine}");
        assert_eq!(
            c.line("KEYS *"),
            Frame::Array(Some(vec![bulk("new")])),
            "{engine}"
        );
    }
}

/// Runs `program args...`; panics with its output if it fails.
fn run(mut command: Command, what: &str) -> Output {
    let output = command.stdin(Stdio::null()).output().expect("it runs");
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/redis_multi")
        .join(name)
}

#[test]
fn redis_py_pipelines_and_transactions_on_both_engines() {
    let Some(python) = python::with_redis() else {
        return;
    };
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        let port = server.addr.port().to_string();
        for protocol in ["2", "3"] {
            let mut command = Command::new(&python);
            command
                .arg(script("redis_py.py"))
                .args(["127.0.0.1", &port, protocol]);
            let output = run(command, &format!("redis_py.py on {engine}, RESP{protocol}"));
            let printed = String::from_utf8_lossy(&output.stdout);
            // WORKERS * ROUNDS + 2 * PLAIN increments, every one counted once.
            assert_eq!(printed.trim_end(), format!("ok {protocol} 600"), "{engine}");
        }
    }
}

#[test]
fn django_redis_cache_on_both_engines() {
    let Some(python) = python::with_redis() else {
        return;
    };
    let has_django = Command::new(&python)
        .args(["-c", "import django"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_django {
        eprintln!("\n*** SKIPPED: no Django beside redis-py (`bash tests/setup.sh`). ***\n");
        return;
    }
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        let mut command = Command::new(&python);
        command
            .arg(script("django_cache.py"))
            .args(["127.0.0.1", &server.addr.port().to_string()]);
        let output = run(command, &format!("django_cache.py on {engine}"));
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim_end(), "ok");
    }
}

/// Where `tests/setup.sh` installed ioredis (`KVS_NODE_DIR`, default `target/node`).
fn node_modules() -> Option<PathBuf> {
    let dir = match std::env::var_os("KVS_NODE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("CARGO_TARGET_DIR") {
            Some(target) => PathBuf::from(target).join("node"),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("tests/ is inside the workspace")
                .join("target/node"),
        },
    };
    let modules = dir.join("node_modules");
    if modules.join("ioredis/package.json").is_file() && installed_node() {
        return Some(modules);
    }
    eprintln!(
        "\n*** SKIPPED: no node, or no ioredis in {} (`bash tests/setup.sh` installs it). ***\n",
        modules.display()
    );
    None
}

fn installed_node() -> bool {
    Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn ioredis_pipelines_multi_and_scan_stream_on_both_engines() {
    let Some(modules) = node_modules() else {
        return;
    };
    // Each engine without a password, and with one: ioredis gives it (`password`), and a
    // connection without it is refused with NOAUTH.
    for engine in ENGINES {
        for password in [None, Some("s3cret-ioredis")] {
            let dir = TempDir::new().unwrap();
            let mut args = vec!["--engine", engine];
            args.extend(password.iter().flat_map(|p| ["--requirepass", p]));
            let server = ServerProcess::start(dir.path(), &args);
            let mut command = Command::new("node");
            command
                .env("NODE_PATH", &modules)
                .arg(script("ioredis.js"))
                .args(["127.0.0.1", &server.addr.port().to_string()])
                .args(password);
            let output = run(
                command,
                &format!("ioredis.js on {engine}, password {password:?}"),
            );
            assert_eq!(String::from_utf8_lossy(&output.stdout).trim_end(), "ok");
        }
    }
}

fn redis_cli(server: &ServerProcess, args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &server.addr.port().to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli runs");
    let mut input = child.stdin.take().expect("piped");
    input.write_all(stdin).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    assert!(output.stderr.is_empty(), "redis-cli {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn redis_cli_transactions_and_scan() {
    if !installed("redis-cli") {
        eprintln!("\n*** SKIPPED: redis-cli is not installed (`bash tests/setup.sh`). ***\n");
        return;
    }
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        // A transaction typed into redis-cli, one command a line.
        let out = redis_cli(
            &server,
            &["--no-raw"],
            b"MULTI\nSET a 1\nINCR a\nINCR nope x\nGET a\nEXEC\nMULTI\nSET b 1\nINCR b\nEXEC\n",
        );
        assert_eq!(
            out,
            "OK\nQUEUED\nQUEUED\n(error) ERR wrong number of arguments for 'incr' command\n\
             QUEUED\n(error) EXECABORT Transaction discarded because of previous errors.\n\
             OK\nQUEUED\nQUEUED\n1) OK\n2) (integer) 2\n",
            "{engine}"
        );
        let mut load = String::new();
        for i in 0..300 {
            load += &format!("SET user:{i} {i}\nSET other:{i} {i}\n");
        }
        redis_cli(&server, &[], load.as_bytes());
        let mut want: Vec<String> = (0..300).map(|i| format!("user:{i}")).collect();
        want.sort();
        let scanned = redis_cli(&server, &["--scan", "--pattern", "user:*"], b"");
        let mut got: Vec<&str> = scanned.lines().collect();
        got.sort();
        got.dedup();
        assert_eq!(got, want, "{engine}");
        let all = redis_cli(&server, &["--scan"], b"");
        let mut all: Vec<&str> = all.lines().collect();
        all.sort();
        all.dedup();
        // And `b`, from the transaction that ran (`a`'s was discarded).
        assert_eq!(all.len(), 601, "{engine}");
    }
}

#[test]
fn redis_benchmark_runs_every_test_without_an_error() {
    if !installed("redis-benchmark") {
        eprintln!("\n*** SKIPPED: redis-benchmark is not installed (`bash tests/setup.sh`). ***\n");
        return;
    }
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        let mut command = Command::new("redis-benchmark");
        command
            .args(["-h", "127.0.0.1", "-p", &server.addr.port().to_string()])
            .args(["-t", "ping,set,get,incr,mset", "-n", "20000", "-q"]);
        let output = run(command, &format!("redis-benchmark on {engine}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.trim().is_empty(), "{engine}: {stderr}");
        for test in [
            "PING_INLINE",
            "PING_MBULK",
            "SET",
            "GET",
            "INCR",
            "MSET (10 keys)",
        ] {
            assert!(
                stdout.contains(&format!("{test}: ")),
                "{engine}: no {test} in\n{stdout}"
            );
        }
        assert!(!stdout.contains("ERR"), "{engine}:\n{stdout}");
        // redis-benchmark's INCR test increments one key, `counter:__rand_int__`, 20,000
        // times.
        let mut c = Resp::connect(server.addr);
        assert_eq!(c.line("GET counter:__rand_int__"), bulk("20000"));
    }
}
