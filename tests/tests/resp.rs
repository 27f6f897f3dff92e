//! `kvs-server` speaking RESP2 over real TCP: every command's replies parsed frame by frame,
//! pipelining, limits and malformed streams, both engines, the kvs protocol on the same port,
//! and the real `redis-cli` and `redis-benchmark` (Debian's `redis-tools`, installed by
//! `tests/setup.sh`; the tests needing them say loudly that they skip when it is missing).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use kvs::KvsClient;
use kvs_tests::redis::RedisServer;
use kvs_tests::resp::{Conn as Resp, Frame};
use kvs_tests::ServerProcess;
use tempfile::TempDir;

const ENGINES: [&str; 2] = ["kvs", "sled"];

/// How many commands kvs-server knows (`COMMAND COUNT`).
const COMMANDS: i64 = 68;

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    Frame::request(args).encode(&mut out);
    out
}

fn ok() -> Frame {
    Frame::Simple("OK".into())
}

fn bulk(bytes: &[u8]) -> Frame {
    Frame::Bulk(Some(bytes.to_vec()))
}

fn nil() -> Frame {
    Frame::Bulk(None)
}

fn int(n: i64) -> Frame {
    Frame::Integer(n)
}

fn error(message: &str) -> Frame {
    Frame::Error(message.to_string())
}

fn start(dir: &TempDir, engine: &str) -> ServerProcess {
    ServerProcess::start(dir.path(), &["--engine", engine])
}

#[test]
fn every_command_replies_as_redis_does_on_both_engines() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        let mut c = Resp::connect(server.addr);
        let cases: Vec<(&str, Frame)> = vec![
            ("PING", Frame::Simple("PONG".into())),
            ("ping hello", bulk(b"hello")),
            ("ECHO Hello", bulk(b"Hello")),
            ("DBSIZE", int(0)),
            ("GET nonexisting", nil()),
            ("SET mykey Hello", ok()),
            ("GET mykey", bulk(b"Hello")),
            ("set mykey World NX", nil()),
            ("SET mykey World XX", ok()),
            ("SET other x XX", nil()),
            ("EXISTS other", int(0)),
            ("SET mykey Again GET", bulk(b"World")),
            ("SET fresh v NX GET", nil()),
            ("SET fresh w NX GET", bulk(b"v")),
            ("GET fresh", bulk(b"v")),
            ("SET fresh w XX GET", bulk(b"v")),
            ("SET absent w XX GET", nil()),
            ("EXISTS absent", int(0)),
            ("MSET key1 Hello key2 World", ok()),
            (
                "MGET key1 key2 nonexisting",
                Frame::Array(Some(vec![bulk(b"Hello"), bulk(b"World"), nil()])),
            ),
            ("EXISTS key1 nosuchkey key1", int(2)),
            ("DBSIZE", int(4)),
            ("DEL key1 key2 key3", int(2)),
            ("DEL key1", int(0)),
            ("DBSIZE", int(2)),
            ("COMMAND COUNT", int(COMMANDS)),
            (
                "CONFIG GET save appendonly maxmemory",
                Frame::Array(Some(vec![
                    bulk(b"save"),
                    bulk(b""),
                    bulk(b"appendonly"),
                    bulk(b"yes"),
                    bulk(b"maxmemory"),
                    bulk(b"0"),
                ])),
            ),
            ("CONFIG GET nosuch", Frame::Array(Some(vec![]))),
            // `$-1`, as redis-server 7.0 answers (tests/tests/redis_server.rs compares).
            ("COMMAND INFO nosuch", Frame::Array(Some(vec![nil()]))),
        ];
        for (line, want) in cases {
            assert_eq!(c.line(line), want, "{engine}: {line}");
        }

        let Frame::Array(Some(info)) = c.line("COMMAND INFO get") else {
            panic!("COMMAND INFO is an array");
        };
        assert_eq!(
            info[0],
            Frame::Array(Some(vec![
                bulk(b"get"),
                int(2),
                Frame::Array(Some(vec![
                    Frame::Simple("readonly".into()),
                    Frame::Simple("fast".into())
                ])),
                int(1),
                int(1),
                int(1),
            ]))
        );
        // Each of these replies parses whole, and the next reply starts right after it: a
        // reply with a wrong count or trailing bytes would throw every later one off.
        let Frame::Array(Some(all)) = c.line("COMMAND") else {
            panic!("COMMAND is an array");
        };
        assert_eq!(all.len(), COMMANDS as usize);
        assert!(all
            .iter()
            .all(|entry| matches!(entry, Frame::Array(Some(fields)) if fields.len() == 6)));
        let Frame::Array(Some(docs)) = c.line("COMMAND DOCS set") else {
            panic!("COMMAND DOCS is an array");
        };
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0], bulk(b"set"));
        assert!(
            matches!(&docs[1], Frame::Array(Some(fields)) if fields.contains(&bulk(b"summary")))
        );
        let Frame::Array(Some(docs)) = c.line("COMMAND DOCS") else {
            panic!("COMMAND DOCS is an array");
        };
        assert_eq!(
            docs.len(),
            2 * COMMANDS as usize,
            "a name and its fields for every command"
        );

        let Frame::Bulk(Some(text)) = c.line("INFO") else {
            panic!("INFO is a bulk string");
        };
        let text = String::from_utf8(text).unwrap();
        for wanted in [
            "# Server\r\n",
            "redis_version:",
            &format!("tcp_port:{}\r\n", server.addr.port()),
            "# Clients\r\nconnected_clients:1\r\n",
            "# Stats\r\n",
            "total_commands_processed:",
            "keyspace_hits:",
            "# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n",
        ] {
            assert!(text.contains(wanted), "{engine}: {wanted:?} not in {text}");
        }
        let Frame::Bulk(Some(keyspace)) = c.line("INFO keyspace") else {
            panic!("INFO keyspace is a bulk string");
        };
        assert_eq!(
            keyspace,
            b"# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n"
        );

        assert_eq!(c.line("QUIT"), ok());
        assert!(c.closed(), "{engine}: QUIT closes the connection");
    }
}

#[test]
fn hello_switches_between_resp2_and_resp3() {
    let dir = TempDir::new().unwrap();
    let server = start(&dir, "kvs");
    let mut c = Resp::connect(server.addr);
    let Frame::Array(Some(hello)) = c.line("HELLO") else {
        panic!("HELLO in RESP2 is a flat array");
    };
    assert_eq!(hello.len(), 14);
    assert_eq!(&hello[4..6], &[bulk(b"proto"), int(2)]);

    let Frame::Map(hello) = c.line("HELLO 3 AUTH default secret SETNAME app") else {
        panic!("HELLO 3 is a map");
    };
    assert!(hello.contains(&(bulk(b"proto"), int(3))), "{hello:?}");
    assert!(
        hello.contains(&(bulk(b"server"), bulk(b"redis"))),
        "{hello:?}"
    );
    assert_eq!(c.line("GET missing"), Frame::Null);
    assert_eq!(c.line("SET k v"), ok());
    assert_eq!(
        c.line("MGET k missing"),
        Frame::Array(Some(vec![bulk(b"v"), Frame::Null]))
    );
    assert_eq!(
        c.line("CONFIG GET save"),
        Frame::Map(vec![(bulk(b"save"), bulk(b""))])
    );
    assert!(matches!(c.line("COMMAND DOCS get"), Frame::Map(docs) if docs.len() == 1));
    assert_eq!(
        c.line("HELLO 4"),
        error("NOPROTO unsupported protocol version")
    );
    assert_eq!(
        c.line("HELLO 3 BOGUS"),
        error("ERR Syntax error in HELLO option 'BOGUS'")
    );
    // Still RESP3 after the refusals; HELLO 2 goes back.
    assert_eq!(c.line("GET missing"), Frame::Null);
    assert!(matches!(c.line("HELLO 2"), Frame::Array(Some(_))));
    assert_eq!(c.line("GET missing"), nil());
}

#[test]
fn wrong_arity_unknown_commands_and_bad_options_get_redis_errors() {
    let dir = TempDir::new().unwrap();
    let server = start(&dir, "kvs");
    let mut c = Resp::connect(server.addr);
    let cases = [
        ("GET", "ERR wrong number of arguments for 'get' command"),
        ("get a b", "ERR wrong number of arguments for 'get' command"),
        ("SET k", "ERR wrong number of arguments for 'set' command"),
        (
            "MSET a b c",
            "ERR wrong number of arguments for 'mset' command",
        ),
        ("DEL", "ERR wrong number of arguments for 'del' command"),
        ("ECHO", "ERR wrong number of arguments for 'echo' command"),
        (
            "foo a b",
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' ",
        ),
        (
            "LPUSH",
            "ERR unknown command 'LPUSH', with args beginning with: ",
        ),
        ("SET k v NX XX", "ERR syntax error"),
        ("SET k v PERHAPS", "ERR syntax error"),
        (
            "COMMAND FROB",
            "ERR unknown subcommand 'FROB'. Try COMMAND HELP.",
        ),
    ];
    for (line, want) in cases {
        assert_eq!(c.line(line), error(want), "{line}");
    }
    assert_eq!(
        c.line("SET k v EX 0"),
        error("ERR invalid expire time in 'set' command")
    );
    // None of that changed anything, and the connection still works.
    assert_eq!(c.line("DBSIZE"), int(0));
}

#[test]
fn binary_keys_and_values_round_trip_and_are_shared_with_the_kvs_protocol() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        let mut c = Resp::connect(server.addr);
        let key: &[u8] = b"k\r\n\x00\xff*$";
        let value: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        assert_eq!(c.call(&[b"SET", key, &value]), ok());
        assert_eq!(c.call(&[b"GET", key]), Frame::Bulk(Some(value.clone())));
        assert_eq!(c.call(&[b"SET", b"", b""]), ok());
        assert_eq!(c.call(&[b"GET", b""]), bulk(b""));

        // The same port, the same store, through the kvs protocol.
        let mut kvs = KvsClient::connect(server.addr).unwrap();
        assert_eq!(kvs.get_bytes(key).unwrap(), Some(value));
        kvs.set_bytes(b"from-kvs", b"\x00\x01").unwrap();
        assert_eq!(c.call(&[b"GET", b"from-kvs"]), bulk(b"\x00\x01"));
        assert_eq!(c.call(&[b"DEL", key, b"from-kvs"]), int(2));
        assert_eq!(kvs.get_bytes(key).unwrap(), None);
    }
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let dir = TempDir::new().unwrap();
    let server = start(&dir, "kvs");
    let mut c = Resp::connect(server.addr);
    let mut batch = Vec::new();
    for i in 0..2000 {
        let key = format!("k{i}");
        let value = format!("v{i}");
        batch.extend(encode(&[b"SET", key.as_bytes(), value.as_bytes()]));
        batch.extend(encode(&[b"GET", key.as_bytes()]));
    }
    batch.extend(b"PING\r\n");
    batch.extend(encode(&[b"DBSIZE"]));
    // Written from another thread: replies must be read while requests still go out.
    let mut writer = c.stream.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&batch).unwrap());
    for i in 0..2000 {
        assert_eq!(c.reply(), Some(ok()), "{i}");
        assert_eq!(c.reply(), Some(bulk(format!("v{i}").as_bytes())), "{i}");
    }
    assert_eq!(c.reply(), Some(Frame::Simple("PONG".into())));
    assert_eq!(c.reply(), Some(int(2000)));
    sender.join().unwrap();
}

#[test]
fn inline_commands_and_empty_requests_are_served() {
    let dir = TempDir::new().unwrap();
    let server = start(&dir, "kvs");
    let mut c = Resp::connect(server.addr);
    c.stream
        .write_all(b"set  greeting\thello\r\n\r\n*0\r\nget greeting\nPING\r\n")
        .unwrap();
    assert_eq!(c.reply(), Some(ok()));
    assert_eq!(c.reply(), Some(bulk(b"hello")));
    assert_eq!(c.reply(), Some(Frame::Simple("PONG".into())));
}

#[test]
fn empty_lines_before_and_between_commands_are_skipped_as_redis_does() {
    // redis-server skips lines with no words in its inline parser: these streams get exactly
    // two PONGs and one value from it, whatever the blank lines or spaces in front.
    let dir = TempDir::new().unwrap();
    let server = start(&dir, "kvs");
    Resp::connect(server.addr).call(&[b"SET", b"k", b"v"]);
    for prefix in [
        "\r\n",
        "\n",
        "\r\n\n\r\n",
        "\r",
        " ",
        "\t",
        "\x0b\x0c\r\n",
        "  \t\r\r\n",
    ] {
        let mut c = Resp::connect(server.addr);
        let stream = format!("{prefix}PING\r\n\r\n\n*1\r\n$4\r\nPING\r\n\n \r\nGET k\n");
        c.stream.write_all(stream.as_bytes()).unwrap();
        for want in [
            Frame::Simple("PONG".into()),
            Frame::Simple("PONG".into()),
            bulk(b"v"),
        ] {
            assert_eq!(c.reply(), Some(want), "after {prefix:?}");
        }
    }
    // The first empty line may come in a packet of its own.
    let mut c = Resp::connect(server.addr);
    c.stream.write_all(b"\r\n").unwrap();
    thread::sleep(Duration::from_millis(50));
    assert_eq!(c.line("PING"), Frame::Simple("PONG".into()));
    // The kvs protocol on the same port is unaffected.
    let mut kvs = KvsClient::connect(server.addr).unwrap();
    assert_eq!(kvs.get("k".to_owned()).unwrap().as_deref(), Some("v"));
}

#[test]
fn empty_lines_and_blanks_get_the_same_replies_as_from_redis_server() {
    let dir = TempDir::new().unwrap();
    let Some(redis) = RedisServer::start(dir.path()) else {
        return;
    };
    let server = start(&dir, "kvs");
    let kvs = server.addr.to_string();
    let streams: &[&[u8]] = &[
        b"\r\n\n\r\nPING\r\n\r\n\n*1\r\n$4\r\nPING\r\n\nGET k\n",
        b"\rPING\x0bk\r\r\n\n \t\r\nGET k\r\nSET  k\tv\r\n",
        b" \x0c\r\n*1\r\n$4\r\nPING\r\n\r\nECHO hi\r\nGET k\r\n",
        b"\t\nGET k\r\n\r\n\n\n\nDEL k\r\nPING\r\n",
    ];
    for stream in streams {
        let replies: Vec<Vec<Frame>> = [&redis.addr, &kvs]
            .iter()
            .map(|addr| {
                let mut c = Resp::connect(addr);
                c.call(&[b"SET", b"k", b"v"]);
                c.stream.write_all(stream).unwrap();
                (0..3).map(|_| c.reply().expect("a reply")).collect()
            })
            .collect();
        assert_eq!(replies[1], replies[0], "kvs vs redis-server for {stream:?}");
    }
}

#[test]
fn malformed_or_oversized_requests_close_only_that_connection() {
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path(), &["--max-frame-bytes", "1024"]);
    let mut bystander = Resp::connect(server.addr);
    assert_eq!(bystander.line("SET b 1"), ok());

    let hostile: &[(&[u8], &str)] = &[
        (b"*1\r\n$x\r\n", "ERR Protocol error: invalid bulk length"),
        // Refused from the header alone: the kilobyte never has to arrive.
        (
            b"*2\r\n$3\r\nGET\r\n$1025\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*2000000\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (b"*1\r\n:1\r\n", "ERR Protocol error: expected '$', got ':'"),
        (
            b"*1\r\n$4\r\nPINGxx",
            "ERR Protocol error: bulk string not followed by CRLF",
        ),
        (
            b"POST / HTTP/1.1\r\n",
            "ERR Protocol error: an HTTP request",
        ),
    ];
    // Two bulk strings, each under the limit, adding up to more than it.
    let mut two_halves = b"*3\r\n$3\r\nSET\r\n$600\r\n".to_vec();
    two_halves.extend([b'a'; 600]);
    two_halves.extend(b"\r\n$600\r\n");
    let hostile: Vec<(&[u8], &str)> = hostile
        .iter()
        .copied()
        .chain([(
            &two_halves[..],
            "ERR Protocol error: request over the limit of 1024 bytes",
        )])
        .collect();
    for (bytes, want) in hostile {
        let mut c = Resp::connect(server.addr);
        c.stream.write_all(bytes).unwrap();
        let reply = c.reply();
        if let Some(Frame::Error(message)) = &reply {
            assert!(message.starts_with(want), "{bytes:?}: {message}");
        } else {
            panic!("{bytes:?}: no protocol error but {reply:?}");
        }
        assert!(c.closed(), "{bytes:?}: connection left open");
    }
    // A line with no end, longer than an inline command may be.
    let mut c = Resp::connect(server.addr);
    let _ = c.stream.write_all(&vec![b'a'; 70_000]);
    assert!(matches!(c.reply(), Some(Frame::Error(m)) if m.contains("too big inline request")));
    assert!(c.closed());

    assert_eq!(bystander.line("GET b"), bulk(b"1"));
    assert_eq!(
        Resp::connect(server.addr).line("PING"),
        Frame::Simple("PONG".into())
    );
}

#[test]
fn concurrent_set_nx_has_exactly_one_winner() {
    let dir = TempDir::new().unwrap();
    let server = start(&dir, "kvs");
    let clients = 8;
    for round in 0..20 {
        let key = format!("race{round}");
        let barrier = Arc::new(Barrier::new(clients));
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let mut c = Resp::connect(server.addr);
                let barrier = barrier.clone();
                let key = key.clone();
                thread::spawn(move || {
                    barrier.wait();
                    let value = format!("client{i}");
                    (
                        c.call(&[b"SET", key.as_bytes(), value.as_bytes(), b"NX"]),
                        value,
                    )
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
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert!(results.iter().all(|(r, _)| *r == ok() || *r == nil()));
        let mut c = Resp::connect(server.addr);
        assert_eq!(c.line(&format!("GET {key}")), bulk(winners[0].as_bytes()));
    }
}

/// `SET NX` is atomic against kvs-protocol writes too, not only against other RESP clients:
/// a RESP client's `SET k resp NX` races a kvs client's `set k kvs` on a fresh key, round
/// after round. Both may succeed only in the order NX, then set: an `OK` from NX with `resp`
/// left in the key means the set landed between NX's check and its write.
#[test]
fn set_nx_is_atomic_against_kvs_protocol_writes() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        let mut resp = Resp::connect(server.addr);
        let mut kvs = KvsClient::connect(server.addr).unwrap();
        let mut check = Resp::connect(server.addr);
        let (mut nx_won, mut set_won) = (0, 0);
        for round in 0..300 {
            let key = format!("race{round}");
            let barrier = Arc::new(Barrier::new(2));
            let racer = {
                let (barrier, key) = (Arc::clone(&barrier), key.clone());
                thread::spawn(move || {
                    barrier.wait();
                    let reply = resp.call(&[b"SET", key.as_bytes(), b"resp", b"NX"]);
                    (resp, reply)
                })
            };
            barrier.wait();
            kvs.set(key.clone(), "kvs".to_owned()).unwrap();
            let (back, reply) = racer.join().unwrap();
            resp = back;
            let value = check.line(&format!("GET {key}"));
            if reply == ok() {
                assert_eq!(value, bulk(b"kvs"), "{engine} round {round}: NX said OK");
                nx_won += 1;
            } else {
                assert_eq!(reply, nil(), "{engine} round {round}");
                assert_eq!(value, bulk(b"kvs"), "{engine} round {round}");
                set_won += 1;
            }
        }
        eprintln!("{engine}: NX first {nx_won} times, set first {set_won} times");
    }
}

/// The real `redis-cli`, or `None` after saying loudly why the test skips.
fn redis_tool(program: &str) -> Option<&str> {
    if !kvs_tests::redis::installed(program) {
        eprintln!(
            "\n*** SKIPPED: {program} is not installed. Run `bash tests/setup.sh` (installs \
             Debian's redis-tools) to test kvs-server with the real Redis tools. ***\n"
        );
        return None;
    }
    Some(program)
}

fn redis_cli(server: &ServerProcess, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &server.addr.port().to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli runs");
    let mut input = child.stdin.take().expect("piped");
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// `redis-cli` with `args`; its stdout, after checking that it succeeded quietly.
fn cli(server: &ServerProcess, args: &[&str]) -> String {
    let output = redis_cli(server, args, None);
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    assert!(output.stderr.is_empty(), "redis-cli {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn redis_cli_works_against_both_engines() {
    if redis_tool("redis-cli").is_none() {
        return;
    }
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = start(&dir, engine);
        assert_eq!(cli(&server, &["PING"]), "PONG\n");
        assert_eq!(cli(&server, &["SET", "greeting", "hello world"]), "OK\n");
        assert_eq!(cli(&server, &["GET", "greeting"]), "hello world\n");
        assert_eq!(cli(&server, &["--no-raw", "GET", "missing"]), "(nil)\n");
        assert_eq!(cli(&server, &["SET", "greeting", "x", "NX"]), "\n");
        assert_eq!(cli(&server, &["MSET", "a", "1", "b", "2"]), "OK\n");
        assert_eq!(cli(&server, &["MGET", "a", "b", "c"]), "1\n2\n\n");
        assert_eq!(cli(&server, &["EXISTS", "a", "b", "c"]), "2\n");
        assert_eq!(cli(&server, &["DBSIZE"]), "3\n");
        assert_eq!(cli(&server, &["DEL", "a", "b", "c"]), "2\n");
        assert!(cli(&server, &["INFO", "keyspace"]).contains("db0:keys=1"));
        assert!(cli(&server, &["COMMAND", "DOCS", "get"]).contains("Get the value of a key"));

        // Binary values through `-x` (the last argument read from stdin), shown escaped.
        let output = redis_cli(&server, &["-x", "SET", "bin"], Some(b"a\x00b\r\n\xff"));
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            cli(&server, &["--no-raw", "GET", "bin"]),
            "\"a\\x00b\\r\\n\\xff\"\n"
        );

        // Errors come back as errors.
        let output = redis_cli(&server, &["GET"], None);
        assert!(
            String::from_utf8_lossy(&output.stdout)
                .contains("ERR wrong number of arguments for 'get' command"),
            "{output:?}"
        );

        // Commands on stdin, one per line, as in `redis-cli < script`.
        let output = redis_cli(
            &server,
            &[],
            Some(b"SET k1 v1\nGET k1\nDEL k1\nEXISTS k1\n"),
        );
        assert!(output.status.success(), "{output:?}");
        assert_eq!(String::from_utf8(output.stdout).unwrap(), "OK\nv1\n1\n0\n");
    }
}

#[test]
fn redis_cli_pipe_mode_loads_many_keys() {
    if redis_tool("redis-cli").is_none() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let server = start(&dir, "kvs");
    let mut script = Vec::new();
    for i in 0..10_000 {
        script.extend(encode(&[
            b"SET",
            format!("key:{i}").as_bytes(),
            &[b'v'; 100],
        ]));
    }
    let output = redis_cli(&server, &["--pipe"], Some(&script));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("errors: 0, replies: 10000"), "{stdout}");
    assert_eq!(cli(&server, &["DBSIZE"]), "10000\n");
}

#[test]
fn redis_benchmark_runs_against_the_server() {
    if redis_tool("redis-benchmark").is_none() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let server = start(&dir, "kvs");
    for pipeline in ["1", "16"] {
        let output = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &server.addr.port().to_string()])
            .args([
                "-t", "set,get", "-n", "2000", "-c", "10", "-P", pipeline, "--csv",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{output:?}");
        // It asks for CONFIG GET save and appendonly first, and warns if that fails.
        assert!(output.stderr.is_empty(), "{output:?}");
        assert!(
            stdout.contains("\"SET\"") && stdout.contains("\"GET\""),
            "-P {pipeline}: {output:?}"
        );
    }
    // redis-benchmark writes to key:__rand_int__ without -r.
    assert_eq!(
        Resp::connect(server.addr).call(&[b"EXISTS", b"key:__rand_int__"]),
        int(1)
    );
}
