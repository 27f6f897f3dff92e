//! kvs-server as a persistent Redis for strings, compared with a real redis-server (7.0,
//! Debian's package; `tests/setup.sh` installs it, and these tests say loudly that they skip
//! where it is missing): every request of `redis_strings/cases.txt` (valid, edge and invalid:
//! wrong arity, options that do not go together, numbers out of range, overflows, negative
//! times to live, huge ranges) is sent to both servers and the replies compared byte for byte,
//! on both engines. Then what holds without a reference: deadlines surviving `kill -9`, atomic
//! counters and `SET NX EX` under concurrent clients, and the answers kvs gives where it
//! differs from redis-server on purpose (docs/reference/redis.md lists them).

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvs_tests::redis::RedisServer;
use kvs_tests::resp::{Conn as Resp, Frame};
use kvs_tests::ServerProcess;
use tempfile::TempDir;

const ENGINES: [&str; 2] = ["kvs", "sled"];

/// The requests both servers are sent; the file says how it is read.
const CASES: &str = include_str!("redis_strings/cases.txt");

/// Walks of SCAN over a connection.
trait ScanAll {
    /// Walks `SCAN 0 <options>` to its end: every key it returned.
    fn scan_all(&mut self, options: &[String]) -> BTreeSet<Vec<u8>>;
}

impl ScanAll for Resp {
    fn scan_all(&mut self, options: &[String]) -> BTreeSet<Vec<u8>> {
        let mut cursor = b"0".to_vec();
        let mut found = BTreeSet::new();
        for _ in 0..100_000 {
            let mut args: Vec<&[u8]> = vec![b"SCAN", &cursor];
            args.extend(options.iter().map(|o| o.as_bytes()));
            let reply = self.call(&args);
            let Frame::Array(Some(parts)) = &reply else {
                panic!("SCAN {options:?}: {reply:?}");
            };
            let (Frame::Bulk(Some(next)), Frame::Array(Some(keys))) = (&parts[0], &parts[1]) else {
                panic!("SCAN {options:?}: {reply:?}");
            };
            for key in keys {
                let Frame::Bulk(Some(key)) = key else {
                    panic!("SCAN {options:?}: {reply:?}");
                };
                found.insert(key.clone());
            }
            cursor = next.clone();
            if cursor == b"0" {
                return found;
            }
        }
        panic!("SCAN {options:?} never ended");
    }
}

/// Requests written as lines of words (see [`words`]).
trait Words {
    /// `call` with the words of `line` (see [`words`]).
    fn words(&mut self, line: &str) -> Frame;
}

impl Words for Resp {
    fn words(&mut self, line: &str) -> Frame {
        let words = words(line);
        let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        self.call(&args)
    }
}

/// The words of a request line: split on spaces, `"..."` one word (possibly empty or with
/// spaces).
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').expect("a closing quote");
            words.push(quoted[..end].to_string());
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            words.push(rest[..end].to_string());
            rest = &rest[end..];
        }
        rest = rest.trim_start();
    }
    words
}

/// How a reply is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    Exact,
    /// Integers within this much (when both are times left or deadlines, not -1 or -2).
    Within(i64),
    Sorted,
    Scan,
}

/// One request of `cases.txt`.
#[derive(Debug)]
struct Case {
    group: String,
    compare: Compare,
    line: String,
}

/// The groups of `cases.txt`: each name, whether it runs in RESP3, and its requests.
fn groups() -> Vec<(String, bool, Vec<Case>)> {
    let mut groups: Vec<(String, bool, Vec<Case>)> = Vec::new();
    for raw in CASES.lines() {
        if raw.is_empty() || raw.starts_with("# ") {
            continue;
        }
        if let Some(name) = raw.strip_prefix("## ") {
            groups.push((name.to_string(), false, Vec::new()));
            continue;
        }
        let group = groups.last_mut().expect("a group before the first request");
        if raw == "resp3" {
            group.1 = true;
            continue;
        }
        let (compare, line) = [
            // Two servers answer a moment apart: 2 s (or 2000 ms) covers a slow machine.
            ("~~ ", Compare::Within(2000)),
            ("~ ", Compare::Within(2)),
            ("sort ", Compare::Sorted),
            ("scan ", Compare::Scan),
        ]
        .into_iter()
        .find_map(|(prefix, compare)| raw.strip_prefix(prefix).map(|line| (compare, line)))
        .unwrap_or((Compare::Exact, raw));
        group.2.push(Case {
            group: group.0.clone(),
            compare,
            line: line.to_string(),
        });
    }
    groups
}

fn sorted(frame: Frame) -> Frame {
    match frame {
        Frame::Array(Some(mut items)) => {
            items.sort_by_key(|item| format!("{item:?}"));
            Frame::Array(Some(items))
        }
        other => other,
    }
}

/// Whether `kvs` answered as `redis` did, under `compare`.
fn same(compare: Compare, redis: &Frame, kvs: &Frame) -> bool {
    match (compare, redis, kvs) {
        (Compare::Within(tolerance), Frame::Integer(r), Frame::Integer(k))
            if *r >= 0 && *k >= 0 =>
        {
            (r - k).abs() <= tolerance
        }
        _ => redis == kvs,
    }
}

fn start(dir: &TempDir, engine: &str) -> ServerProcess {
    ServerProcess::start(dir.path(), &["--engine", engine])
}

#[test]
fn every_case_replies_as_redis_server_does_on_both_engines() {
    let dir = TempDir::new().unwrap();
    let Some(redis) = RedisServer::start(dir.path()) else {
        return;
    };
    let groups = groups();
    assert!(groups.len() >= 20, "cases.txt has {} groups", groups.len());
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for engine in ENGINES {
        let data = TempDir::new().unwrap();
        let server = start(&data, engine);
        let kvs_addr = server.addr.to_string();
        for (name, resp3, cases) in &groups {
            let mut r = Resp::connect(&redis.addr);
            let mut k = Resp::connect(&kvs_addr);
            for c in [&mut r, &mut k] {
                assert_eq!(
                    c.words("FLUSHALL"),
                    Frame::Simple("OK".into()),
                    "{engine}: {name}"
                );
                if *resp3 {
                    assert!(
                        matches!(c.words("HELLO 3"), Frame::Map(_)),
                        "{engine}: {name}"
                    );
                }
            }
            for case in cases {
                compared += 1;
                let (want, got) = if case.compare == Compare::Scan {
                    let options = words(&case.line)[2..].to_vec();
                    let keys = |found: BTreeSet<Vec<u8>>| {
                        Frame::Array(Some(
                            found.into_iter().map(|k| Frame::Bulk(Some(k))).collect(),
                        ))
                    };
                    (keys(r.scan_all(&options)), keys(k.scan_all(&options)))
                } else {
                    let (want, got) = (r.words(&case.line), k.words(&case.line));
                    if case.compare == Compare::Sorted {
                        (sorted(want), sorted(got))
                    } else {
                        (want, got)
                    }
                };
                if !same(case.compare, &want, &got) {
                    mismatches.push(format!(
                        "{engine} [{}] {}\n    redis-server: {want:?}\n    kvs-server:   {got:?}",
                        case.group, case.line
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

fn int(n: i64) -> Frame {
    Frame::Integer(n)
}

fn ok() -> Frame {
    Frame::Simple("OK".into())
}

fn error(message: &str) -> Frame {
    Frame::Error(message.to_string())
}

fn integer(frame: Frame) -> i64 {
    match frame {
        Frame::Integer(n) => n,
        other => panic!("not an integer: {other:?}"),
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The deadlines are on disk: after `kill -9` and a restart, a key keeps its exact deadline
/// (its time to live goes on counting down), a key whose deadline passed while the server was
/// down is gone from every read, and a key without one still has none.
#[test]
fn deadlines_survive_kill_9_and_restart() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let mut server = start(&dir, engine);
        let mut c = Resp::connect(server.addr);
        assert_eq!(c.words("SET long v EX 1000"), ok());
        assert_eq!(c.words("SET short v PX 1500"), ok());
        assert_eq!(c.words("SET forever v"), ok());
        assert_eq!(c.words("SET later v"), ok());
        assert_eq!(c.words("PEXPIREAT later 4102444800123"), int(1));
        assert_eq!(c.words("INCR counter"), int(1));
        assert_eq!(c.words("EXPIRE counter 1000"), int(1));
        assert_eq!(c.words("INCR counter"), int(2));
        let long_deadline = integer(c.words("PEXPIRETIME long"));
        let short_deadline = integer(c.words("PEXPIRETIME short"));
        let counter_deadline = integer(c.words("PEXPIRETIME counter"));
        assert!(long_deadline > now_millis(), "{engine}");
        drop(c);
        server.signal_and_wait("KILL");

        // Down until the short key's deadline has passed.
        while now_millis() <= short_deadline + 50 {
            thread::sleep(Duration::from_millis(50));
        }
        let server = start(&dir, engine);
        let mut c = Resp::connect(server.addr);
        assert_eq!(c.words("PEXPIRETIME long"), int(long_deadline), "{engine}");
        assert_eq!(
            c.words("PEXPIRETIME counter"),
            int(counter_deadline),
            "{engine}"
        );
        assert_eq!(c.words("PEXPIRETIME later"), int(4102444800123), "{engine}");
        assert_eq!(c.words("GET counter"), Frame::Bulk(Some(b"2".to_vec())));
        let left = integer(c.words("PTTL long"));
        assert!(left > 0 && left < 1_000_000, "{engine}: PTTL {left}");
        // Not a time bound: 20 ms of wall clock later, the time left is smaller, whatever the
        // speed of the machine.
        thread::sleep(Duration::from_millis(20));
        let later = integer(c.words("PTTL long"));
        assert!(
            later < left,
            "{engine}: the time to live counts down ({left}, then {later})"
        );
        assert_eq!(c.words("TTL forever"), int(-1), "{engine}");
        for line in ["EXISTS short", "TTL short", "STRLEN short"] {
            let want = if line.starts_with("TTL") { -2 } else { 0 };
            assert_eq!(c.words(line), int(want), "{engine}: {line}");
        }
        assert_eq!(c.words("GET short"), Frame::Bulk(None), "{engine}");
        assert_eq!(c.words("DBSIZE"), int(4), "{engine}");
        let Frame::Array(Some(keys)) = sorted(c.words("KEYS *")) else {
            panic!("KEYS is an array");
        };
        assert_eq!(keys.len(), 4, "{engine}: {keys:?}");
        assert_eq!(
            c.scan_all(&[]).len(),
            4,
            "{engine}: SCAN does not return the expired key"
        );
    }
}

/// `INCR` is one atomic step of the engine: clients incrementing one key at once lose no step,
/// and the key keeps its deadline.
#[test]
fn concurrent_incr_loses_no_step_and_keeps_the_deadline() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        let addr = server.addr.to_string();
        assert_eq!(Resp::connect(&addr).words("SET n 0 EX 1000"), ok());
        let (clients, steps) = (4, 250);
        let barrier = Arc::new(Barrier::new(clients));
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let (addr, barrier) = (addr.clone(), barrier.clone());
                thread::spawn(move || {
                    let mut c = Resp::connect(&addr);
                    barrier.wait();
                    for _ in 0..steps {
                        let line = if i % 2 == 0 { "INCR n" } else { "INCRBY n 2" };
                        assert!(matches!(c.words(line), Frame::Integer(_)));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut c = Resp::connect(&addr);
        let want = (clients / 2 * steps + clients / 2 * steps * 2).to_string();
        assert_eq!(
            c.words("GET n"),
            Frame::Bulk(Some(want.into_bytes())),
            "{engine}"
        );
        let ttl = integer(c.words("TTL n"));
        assert!(ttl > 0 && ttl <= 1000, "{engine}: TTL {ttl}");
    }
}

/// `SET NX EX` from many clients on one key: exactly one wins, and the key has the winner's
/// value and a deadline.
#[test]
fn concurrent_set_nx_ex_has_one_winner_with_a_deadline() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        let addr = server.addr.to_string();
        let clients = 6;
        for round in 0..10 {
            let key = format!("lock{round}");
            let barrier = Arc::new(Barrier::new(clients));
            let handles: Vec<_> = (0..clients)
                .map(|i| {
                    let (addr, barrier, key) = (addr.clone(), barrier.clone(), key.clone());
                    thread::spawn(move || {
                        let mut c = Resp::connect(&addr);
                        barrier.wait();
                        let value = format!("client{i}");
                        let reply = c.call(&[
                            b"SET",
                            key.as_bytes(),
                            value.as_bytes(),
                            b"NX",
                            b"EX",
                            b"100",
                        ]);
                        (reply, value)
                    })
                })
                .collect();
            let results: Vec<(Frame, String)> =
                handles.into_iter().map(|h| h.join().unwrap()).collect();
            let winners: Vec<&String> = results
                .iter()
                .filter(|(reply, _)| *reply == ok())
                .map(|(_, value)| value)
                .collect();
            assert_eq!(winners.len(), 1, "{engine} round {round}: {results:?}");
            let mut c = Resp::connect(&addr);
            assert_eq!(
                c.call(&[b"GET", key.as_bytes()]),
                Frame::Bulk(Some(winners[0].clone().into_bytes()))
            );
            let ttl = integer(c.call(&[b"TTL", key.as_bytes()]));
            assert!(ttl > 0 && ttl <= 100, "{engine} round {round}: TTL {ttl}");
        }
    }
}

/// Where kvs answers differently from redis-server on purpose (docs/reference/redis.md says
/// why), it answers this; and the commands of Redis's other data types are unknown.
#[test]
fn deliberate_differences_and_other_data_types() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        let mut c = Resp::connect(server.addr);
        assert_eq!(c.words("SET a 1"), ok());
        // One database: any other is out of range.
        assert_eq!(
            c.words("COPY a b DB 1"),
            error("ERR DB index is out of range")
        );
        assert_eq!(c.words("EXISTS b"), int(0));
        // Accesses are not tracked.
        assert_eq!(c.words("OBJECT IDLETIME a"), int(0));
        // 64-bit floats, printed in their shortest form.
        assert_eq!(
            c.words("INCRBYFLOAT f 5.6"),
            Frame::Bulk(Some(b"5.6".to_vec()))
        );
        assert_eq!(
            c.words("INCRBYFLOAT f 5.0e3"),
            Frame::Bulk(Some(b"5005.6".to_vec()))
        );
        assert_eq!(
            c.words("INCRBYFLOAT f 1e400"),
            error("ERR value is not a valid float")
        );
        for line in [
            "LPUSH l a",
            "HSET h f v",
            "SADD s m",
            "ZADD z 1 m",
            "XADD x * f v",
            "SUBSCRIBE c",
            "EVAL x 0",
        ] {
            let name = line.split(' ').next().unwrap();
            let Frame::Error(message) = c.words(line) else {
                panic!("{engine}: {line} is refused");
            };
            assert!(
                message.starts_with(&format!(
                    "ERR unknown command '{name}', with args beginning with: "
                )),
                "{engine}: {line}: {message}"
            );
        }
        assert_eq!(c.words("DBSIZE"), int(2), "{engine}");
    }
}

/// `MSET` is one atomic batch and `MGET` reads at one instant: a reader never sees the keys of
/// one `MSET` from two different ones. `RENAME` is one transaction: `EXISTS` of both names
/// (read at one instant) always finds exactly one of them.
#[test]
fn mset_mget_and_rename_are_atomic_against_concurrent_readers() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        let addr = server.addr.to_string();
        let mut c = Resp::connect(&addr);
        assert_eq!(c.words("MSET a 0 b 0 c 0"), ok());
        assert_eq!(c.words("SET from x"), ok());
        let rounds = 300;
        let writer = {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut c = Resp::connect(&addr);
                for i in 1..=rounds {
                    let n = i.to_string();
                    let n = n.as_bytes();
                    assert_eq!(c.call(&[b"MSET", b"a", n, b"b", n, b"c", n]), ok());
                    let (from, to) = if i % 2 == 1 {
                        ("from", "to")
                    } else {
                        ("to", "from")
                    };
                    assert_eq!(c.words(&format!("RENAME {from} {to}")), ok());
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() || reads == 0 {
            let Frame::Array(Some(values)) = c.words("MGET a b c") else {
                panic!("MGET is an array");
            };
            assert!(
                values.windows(2).all(|w| w[0] == w[1]),
                "{engine}: MGET saw parts of two MSETs: {values:?}"
            );
            assert_eq!(c.words("EXISTS from to"), int(1), "{engine}: mid-RENAME");
            reads += 1;
        }
        writer.join().unwrap();
        let n = Frame::Bulk(Some(rounds.to_string().into_bytes()));
        assert_eq!(
            c.words("MGET a b c"),
            Frame::Array(Some(vec![n.clone(), n.clone(), n]))
        );
        eprintln!("{engine}: {reads} consistent reads during {rounds} MSETs and RENAMEs");
    }
}

/// `FLUSHALL` and `FLUSHDB` remove every key of a store larger than one page of their walk,
/// deadlines or not, and leave a store that takes writes.
#[test]
fn flush_removes_every_key_of_a_large_store() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        let mut c = Resp::connect(server.addr);
        for command in ["FLUSHALL", "FLUSHDB ASYNC"] {
            for chunk in 0..10 {
                let keys: Vec<String> = (0..500).map(|i| format!("key:{chunk}:{i}")).collect();
                let mut args: Vec<&[u8]> = vec![b"MSET"];
                for key in &keys {
                    args.push(key.as_bytes());
                    args.push(b"value");
                }
                assert_eq!(c.call(&args), ok());
            }
            assert_eq!(c.words("SET expiring v EX 1000"), ok());
            assert_eq!(c.words("DBSIZE"), int(5001), "{engine}");
            assert_eq!(c.words(command), ok(), "{engine}");
            assert_eq!(c.words("DBSIZE"), int(0), "{engine}: after {command}");
            assert_eq!(c.words("KEYS *"), Frame::Array(Some(vec![])), "{engine}");
            assert_eq!(c.words("SET after v"), ok());
            assert_eq!(c.words("DBSIZE"), int(1), "{engine}");
            assert_eq!(c.words("DEL after"), int(1));
        }
    }
}
