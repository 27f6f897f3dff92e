//! kvs-server's connection handshake, passwords and server commands over RESP, compared with a
//! real redis-server (7.0, Debian's package; `tests/setup.sh` installs it, and these tests say
//! loudly that they skip where it is missing), on both engines: `AUTH`, `HELLO`, `SELECT`,
//! `CLIENT`, `RESET`, `PING`, `ECHO`, `QUIT`, `INFO`, `CONFIG`, `COMMAND`, `TIME`, `SAVE`,
//! `BGSAVE`, `LASTSAVE`, `SHUTDOWN`. Replies that are the same by nature are compared byte for
//! byte; those that cannot be (an id, a time, a version) by their shape. Then, against the
//! real binary: a password given to redis-py (`password=`) and `redis-cli -a`, never in the
//! server's log nor its command line, an empty one refused, the warning when listening beyond
//! loopback without one, `SHUTDOWN` as a clean stop and `CLIENT KILL` closing a connection.

use std::io::Write;
use std::process::{Command, Stdio};

use kvs_tests::binaries::kvs_server;
use kvs_tests::redis::{installed, RedisServer};
use kvs_tests::resp::{Conn as Resp, Frame};
use kvs_tests::ServerProcess;
use tempfile::TempDir;

const ENGINES: [&str; 2] = ["kvs", "sled"];

/// The password of the servers started here: distinctive, so that finding it in a log
/// cannot be a coincidence.
const PASSWORD: &str = "Zq7-not-in-any-log-81f3";

/// Requests written as lines of words (see [`words`]).
trait Words {
    /// `call` with the words of `line`: split on spaces, `""` an empty argument and `_` a
    /// space inside one.
    fn words(&mut self, line: &str) -> Frame;
}

impl Words for Resp {
    fn words(&mut self, line: &str) -> Frame {
        let words = words(line);
        let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        self.call(&args)
    }
}

fn words(line: &str) -> Vec<String> {
    line.split(' ')
        .map(|w| {
            if w == "\"\"" {
                String::new()
            } else {
                w.replace('_', " ")
            }
        })
        .collect()
}

fn simple(text: &str) -> Frame {
    Frame::Simple(text.to_string())
}

fn error(text: &str) -> Frame {
    Frame::Error(text.to_string())
}

/// Requests whose replies must be byte for byte redis-server's, on a connection that has
/// given the password or needs none. Commands that change the connection are undone by the
/// ones after them.
const SAME: &[&str] = &[
    "PING",
    "PING hello",
    "PING a b",
    "ECHO x",
    "ECHO",
    "ECHO a b",
    "SELECT 0",
    "SELECT 16",
    "SELECT -1",
    "SELECT x",
    "SELECT 2147483648",
    "SELECT 0 1",
    "AUTH a b c",
    "AUTH bob x",
    "HELLO 4",
    "HELLO 1",
    "HELLO -1",
    "HELLO x",
    "HELLO 2.5",
    "HELLO 2 FOO",
    "HELLO 2 AUTH default",
    "HELLO 2 SETNAME a_b",
    "HELLO 3 AUTH bob x",
    "CLIENT",
    "CLIENT FOO",
    "CLIENT GETNAME",
    "CLIENT SETNAME conn-1",
    "CLIENT GETNAME",
    "CLIENT SETNAME a_b",
    "CLIENT SETNAME a b",
    "CLIENT SETNAME",
    "CLIENT GETNAME",
    "CLIENT SETNAME \"\"",
    "CLIENT GETNAME",
    "CLIENT GETNAME x",
    "CLIENT ID x",
    "CLIENT INFO x",
    "CLIENT NO-EVICT on",
    "CLIENT NO-EVICT off",
    "CLIENT NO-EVICT x",
    "CLIENT REPLY",
    "CLIENT REPLY x",
    "CLIENT KILL",
    "CLIENT KILL 1.2.3.4:5",
    "CLIENT KILL ID 999999",
    "CLIENT KILL ID 0",
    "CLIENT KILL ID x",
    "CLIENT KILL ADDR 1.2.3.4:5",
    "CLIENT KILL ID 5 SKIPME maybe",
    "CLIENT KILL ID 5 ADDR",
    "CLIENT KILL MAXAGE 1",
    "CLIENT LIST ID 999999",
    "CLIENT LIST ID x",
    "CLIENT LIST TYPE foo",
    "CLIENT LIST TYPE master",
    "CLIENT LIST foo",
    "CONFIG",
    "CONFIG FOO",
    "CONFIG GET",
    "CONFIG GET save",
    "CONFIG GET nope",
    "CONFIG GET timeout",
    "CONFIG GET maxclients",
    "CONFIG GET maxmemory",
    "CONFIG GET maxmemory-policy",
    "CONFIG GET SAVE",
    "CONFIG SET",
    "CONFIG SET a",
    "CONFIG SET nope 1",
    "CONFIG SET timeout 0 maxclients",
    "CONFIG SET save \"\"",
    "CONFIG SET timeout 0",
    "COMMAND FOO",
    "COMMAND COUNT x",
    "COMMAND INFO nope",
    "COMMAND DOCS nope",
    "TIME x",
    "LASTSAVE x",
    "SAVE",
    "SAVE x",
    "BGSAVE x",
    "BGSAVE a b",
    "SHUTDOWN FOO",
    "SHUTDOWN NOSAVE SAVE",
    "SHUTDOWN ABORT",
    "SHUTDOWN NOW FORCE ABORT",
    "RESET x",
    "RESET",
    "CLIENT GETNAME",
];

/// Requests sent on a new connection to a server with the password, before and after it is
/// given; every reply byte for byte redis-server's.
const PASSWORD_CASES: &[&str] = &[
    "GET a",
    "PING",
    "SET a 1",
    "INFO",
    "CLIENT ID",
    "SELECT 0",
    "NOPE x",
    "GET",
    "AUTH",
    "AUTH wrong",
    "AUTH default wrong",
    "AUTH bob PASSWORD",
    "AUTH a b c",
    "HELLO",
    "HELLO 3",
    "HELLO 2 SETNAME x",
    "HELLO 3 AUTH default wrong",
    "HELLO 3 AUTH bob PASSWORD",
    "GET a",
    "AUTH PASSWORD",
    "GET a",
    "RESET",
    "GET a",
    "AUTH default PASSWORD",
    "GET a",
    "RESET",
    "HELLO 2 AUTH default PASSWORD SETNAME named",
    "CLIENT GETNAME",
    "GET a",
    "QUIT",
];

/// The first six fields of `COMMAND INFO name` (name, arity, flags, keys): what kvs gives, and
/// what redis-server gives before its later fields.
fn command_info_head(reply: Frame) -> Frame {
    match reply {
        Frame::Array(Some(mut entries)) if entries.len() == 1 => match entries.remove(0) {
            Frame::Array(Some(fields)) => Frame::Array(Some(fields.into_iter().take(6).collect())),
            other => other,
        },
        other => other,
    }
}

/// The keys of a map reply (a RESP3 map, or a RESP2 flat array of pairs).
fn map_keys(reply: &Frame) -> Vec<Frame> {
    match reply {
        Frame::Map(pairs) => pairs.iter().map(|(k, _)| k.clone()).collect(),
        Frame::Array(Some(items)) => items.iter().step_by(2).cloned().collect(),
        other => panic!("not a map: {other:?}"),
    }
}

fn text(reply: &Frame) -> String {
    match reply {
        Frame::Bulk(Some(bytes)) => String::from_utf8(bytes.clone()).unwrap(),
        other => panic!("not a bulk string: {other:?}"),
    }
}

/// The `field:value` lines of an `INFO` text, and its `# Section` headers.
fn info_fields(info: &str) -> (Vec<String>, Vec<(String, String)>) {
    let mut headers = Vec::new();
    let mut fields = Vec::new();
    for line in info.split("\r\n") {
        if let Some(header) = line.strip_prefix("# ") {
            headers.push(header.to_string());
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.to_string(), value.to_string()));
        }
    }
    (headers, fields)
}

fn start(dir: &TempDir, engine: &str, args: &[&str]) -> ServerProcess {
    let mut all = vec!["--engine", engine];
    all.extend_from_slice(args);
    ServerProcess::start(dir.path(), &all)
}

#[test]
fn handshake_and_server_commands_reply_as_redis_server_does_on_both_engines() {
    let dir = TempDir::new().unwrap();
    let Some(redis) = RedisServer::start(dir.path()) else {
        return;
    };
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for engine in ENGINES {
        let data = TempDir::new().unwrap();
        let server = start(&data, engine, &[]);
        let kvs_addr = server.addr.to_string();
        let mut r = Resp::connect(&redis.addr);
        let mut k = Resp::connect(&kvs_addr);
        // Without a password, `AUTH password` is refused and `AUTH default anything` taken.
        for line in ["AUTH x", "AUTH default x"].iter().chain(SAME) {
            let (want, got) = (r.words(line), k.words(line));
            compared += 1;
            if want != got {
                mismatches.push(format!(
                    "{engine}: {line}\n    redis-server: {want:?}\n    kvs-server:   {got:?}"
                ));
            }
        }
        // COMMAND INFO of every command added here: the fields kvs gives are redis-server's.
        for name in [
            "auth", "hello", "select", "client", "reset", "quit", "ping", "echo", "time", "save",
            "bgsave", "lastsave", "shutdown", "config", "info", "command",
        ] {
            compared += 1;
            let args: [&[u8]; 3] = [b"COMMAND", b"INFO", name.as_bytes()];
            let (want, got) = (
                command_info_head(r.call(&args)),
                command_info_head(k.call(&args)),
            );
            if want != got {
                mismatches.push(format!(
                    "{engine}: COMMAND INFO {name}\n    redis-server: {want:?}\n    \
                     kvs-server:   {got:?}"
                ));
            }
        }
        // CLIENT REPLY OFF and SKIP: the replies that are not sent, on both.
        for c in [&mut r, &mut k] {
            for line in [
                "CLIENT REPLY OFF",
                "SET quiet 1",
                "CLIENT REPLY ON",
                "CLIENT REPLY SKIP",
                "GET quiet",
            ] {
                c.send(&words(line).iter().map(|w| w.as_bytes()).collect::<Vec<_>>());
            }
            // Only `CLIENT REPLY ON` is answered, then the ECHO after the skipped GET.
            assert_eq!(c.reply(), Some(simple("OK")));
            assert_eq!(c.words("ECHO after"), Frame::Bulk(Some(b"after".to_vec())));
        }
        // Other data types than strings: Redis's unknown-command error on kvs.
        for line in [
            "HGET h f",
            "LPUSH l a",
            "SADD s a",
            "ZADD z 1 a",
            "PUBLISH c m",
        ] {
            let name = line.split(' ').next().unwrap();
            let Frame::Error(message) = k.words(line) else {
                panic!("{engine}: {line}");
            };
            assert!(
                message.starts_with(&format!("ERR unknown command '{name}'")),
                "{engine}: {message}"
            );
        }
        drop((r, k));

        // Replies that differ by nature (an id, a time, the version): compared by shape.
        let mut r = Resp::connect(&redis.addr);
        let mut k = Resp::connect(&kvs_addr);
        for line in ["HELLO 2", "HELLO 3", "HELLO", "HELLO 2 SETNAME n"] {
            let (want, got) = (r.words(line), k.words(line));
            assert_eq!(map_keys(&want), map_keys(&got), "{engine}: {line}");
            assert_eq!(
                std::mem::discriminant(&want),
                std::mem::discriminant(&got),
                "{engine}: {line}"
            );
        }
        for line in ["CLIENT ID", "LASTSAVE"] {
            assert!(
                matches!(k.words(line), Frame::Integer(n) if n > 0),
                "{engine}: {line}"
            );
        }
        // BGSAVE on kvs only: redis-server's runs in the background, and a SAVE or BGSAVE
        // while it does gets another answer.
        for line in ["BGSAVE", "BGSAVE SCHEDULE"] {
            assert_eq!(
                k.words(line),
                simple("Background saving started"),
                "{engine}"
            );
        }
        // TIME: two bulk strings of digits, the seconds near redis-server's (the two clocks
        // are the same machine's; 60 s covers any pause between the two requests).
        let (Frame::Array(Some(rt)), Frame::Array(Some(kt))) = (r.words("TIME"), k.words("TIME"))
        else {
            panic!("{engine}: TIME is not an array");
        };
        assert_eq!(kt.len(), 2, "{engine}: {kt:?}");
        let secs = |t: &[Frame]| text(&t[0]).parse::<i64>().unwrap();
        let micros = text(&kt[1]).parse::<i64>().unwrap();
        assert!((0..1_000_000).contains(&micros), "{engine}: {kt:?}");
        assert!(
            (secs(&rt) - secs(&kt)).abs() < 60,
            "{engine}: {rt:?} {kt:?}"
        );
        // CLIENT INFO and LIST: this connection's line, with its id, name and addresses.
        let id = match k.words("CLIENT ID") {
            Frame::Integer(id) => id,
            other => panic!("{engine}: {other:?}"),
        };
        let local = k.stream.local_addr().unwrap();
        assert_eq!(k.words("CLIENT SETNAME lister"), simple("OK"));
        let info = text(&k.words("CLIENT INFO"));
        assert!(
            info.starts_with(&format!(
                "id={id} addr={local} laddr={kvs_addr} fd=-1 name=lister "
            )) && info.ends_with('\n'),
            "{engine}: {info:?}"
        );
        let mut other = Resp::connect(&kvs_addr);
        assert_eq!(other.words("CLIENT SETNAME other"), simple("OK"));
        let list = text(&k.words("CLIENT LIST"));
        assert!(list.lines().any(|l| l.contains(" name=lister ")), "{list}");
        assert!(list.lines().any(|l| l.contains(" name=other ")), "{list}");
        let only = text(&k.words(&format!("CLIENT LIST ID {id}")));
        assert_eq!(only.lines().count(), 1, "{engine}: {only}");
        assert!(only.contains(" name=lister "), "{engine}: {only}");
        // CONFIG GET with a pattern, as Redis matches it (in no particular order).
        let keys = |reply: Frame| {
            let mut keys: Vec<String> = map_keys(&reply).iter().map(text).collect();
            keys.sort();
            keys
        };
        assert_eq!(
            keys(k.words("CONFIG GET maxmemory*")),
            ["maxmemory", "maxmemory-policy"],
            "{engine}"
        );
        assert_eq!(
            keys(k.words("CONFIG GET port bind")),
            ["bind", "port"],
            "{engine}"
        );
        assert_eq!(
            k.words("CONFIG GET port"),
            Frame::Array(Some(vec![
                Frame::Bulk(Some(b"port".to_vec())),
                Frame::Bulk(Some(server.addr.port().to_string().into_bytes())),
            ])),
            "{engine}"
        );
        assert_eq!(
            k.words("CONFIG SET maxclients 5"),
            error(
                "ERR CONFIG SET failed (possibly related to argument 'maxclients') - can't set \
                 immutable config"
            ),
            "{engine}"
        );

        // INFO: every section clients and exporters read, alone and together.
        assert_eq!(k.words("FLUSHALL"), simple("OK"));
        assert_eq!(r.words("FLUSHALL"), simple("OK"));
        for c in [&mut r, &mut k] {
            assert_eq!(c.words("SET plain v"), simple("OK"));
            assert_eq!(c.words("SET other v"), simple("OK"));
            assert_eq!(c.words("SET timed v EX 1000"), simple("OK"));
        }
        let sections = [
            ("server", "Server", "redis_version"),
            ("clients", "Clients", "connected_clients"),
            ("memory", "Memory", "used_memory"),
            ("persistence", "Persistence", "rdb_last_save_time"),
            ("stats", "Stats", "total_commands_processed"),
            ("replication", "Replication", "role"),
            ("keyspace", "Keyspace", "db0"),
        ];
        for (section, header, field) in sections {
            for c in [&mut r, &mut k] {
                let (headers, fields) = info_fields(&text(&c.words(&format!("INFO {section}"))));
                assert_eq!(headers, [header], "{engine}: INFO {section}");
                assert!(
                    fields.iter().any(|(name, _)| name == field),
                    "{engine}: INFO {section}: {fields:?}"
                );
            }
        }
        for which in ["", " default", " all", " everything", " server keyspace"] {
            let (kh, kf) = info_fields(&text(&k.words(&format!("INFO{which}"))));
            let (rh, _) = info_fields(&text(&r.words(&format!("INFO{which}"))));
            // kvs has a subset of Redis's sections, in Redis's order.
            let in_redis: Vec<&String> = rh.iter().filter(|h| kh.contains(h)).collect();
            assert_eq!(
                kh.iter().collect::<Vec<_>>(),
                in_redis,
                "{engine}: INFO{which}"
            );
            if which.is_empty() || which == " all" {
                assert_eq!(
                    kh,
                    sections.map(|(_, h, _)| h.to_string()),
                    "{engine}: INFO{which}"
                );
                let field = |name: &str| {
                    kf.iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_else(|| panic!("{engine}: no {name} in INFO{which}"))
                };
                assert_eq!(field("role"), "master");
                assert_eq!(field("redis_mode"), "standalone");
                assert_eq!(field("tcp_port"), server.addr.port().to_string());
                assert!(field("used_memory").parse::<u64>().unwrap() > 0);
            }
        }
        assert_eq!(k.words("INFO nope"), r.words("INFO nope"), "{engine}");
        // db0: the keys and the one with a deadline, exactly as redis-server counts them;
        // avg_ttl in milliseconds, near 1,000 s on both.
        let db0 = |c: &mut Resp| {
            let (_, fields) = info_fields(&text(&c.words("INFO keyspace")));
            fields
                .into_iter()
                .find(|(name, _)| name == "db0")
                .map(|(_, value)| value)
                .unwrap_or_default()
        };
        let (want, got) = (db0(&mut r), db0(&mut k));
        let (want_head, want_ttl) = want.rsplit_once(",avg_ttl=").unwrap();
        let (got_head, got_ttl) = got.rsplit_once(",avg_ttl=").unwrap();
        assert_eq!(got_head, want_head, "{engine}: {got} / {want}");
        assert_eq!(got_head, "keys=3,expires=1", "{engine}");
        let ttl: u64 = got_ttl.parse().unwrap();
        let _: u64 = want_ttl.parse().unwrap();
        // Within 60 s of the 1,000 s set: nothing here takes a minute.
        assert!((940_000..=1_000_000).contains(&ttl), "{engine}: {got}");
        assert_eq!(k.words("FLUSHALL"), simple("OK"));
        assert_eq!(
            k.words("INFO keyspace"),
            Frame::Bulk(Some(b"# Keyspace\r\n".to_vec()))
        );

        // QUIT: +OK, then the connection is closed.
        for c in [&mut r, &mut k] {
            assert_eq!(c.words("QUIT"), simple("OK"));
            assert_eq!(c.reply(), None, "{engine}");
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {compared} replies differ from redis-server's:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn a_password_is_required_as_redis_server_requires_it_on_both_engines() {
    let dir = TempDir::new().unwrap();
    let Some(redis) = RedisServer::start(dir.path()) else {
        return;
    };
    // redis-server takes its password at run time; connections made after it need it.
    let mut admin = Resp::connect(&redis.addr);
    assert_eq!(
        admin.call(&[b"CONFIG", b"SET", b"requirepass", PASSWORD.as_bytes()]),
        simple("OK")
    );
    let mut mismatches = Vec::new();
    for engine in ENGINES {
        let data = TempDir::new().unwrap();
        let server = start(&data, engine, &["--requirepass", PASSWORD]);
        let mut r = Resp::connect(&redis.addr);
        let mut k = Resp::connect(server.addr);
        for line in PASSWORD_CASES {
            let line = line.replace("PASSWORD", PASSWORD);
            let (want, got) = (r.words(&line), k.words(&line));
            // HELLO's map holds the server's version and the connection's id: its keys and
            // type are compared; every other reply byte for byte.
            let same = if matches!(want, Frame::Array(Some(_)) | Frame::Map(_))
                && line.starts_with("HELLO")
            {
                map_keys(&want) == map_keys(&got)
            } else {
                want == got
            };
            if !same {
                mismatches.push(format!(
                    "{engine}: {line}\n    redis-server: {want:?}\n    kvs-server:   {got:?}"
                ));
            }
        }
        assert_eq!(k.reply(), None, "{engine}: QUIT closes");
        // Before the password, Redis's limits for unauthenticated clients: more than 10
        // arguments, or one over 16 KiB, is a protocol error and the connection is closed.
        let big = vec![b'x'; 20_000];
        let eleven: Vec<&[u8]> = vec![b"x"; 11];
        let ten: Vec<&[u8]> = vec![b"x"; 10];
        // Only the headers are sent: both servers refuse as soon as they read the length,
        // and a body left unread could turn the close into a reset that loses the reply.
        for (what, header) in [
            (
                "a long value",
                &b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20000\r\n"[..],
            ),
            ("11 arguments", b"*11\r\n"),
        ] {
            let mut r = Resp::connect(&redis.addr);
            let mut k = Resp::connect(server.addr);
            for c in [&mut r, &mut k] {
                c.stream.write_all(header).unwrap();
            }
            let (want, got) = (r.reply().unwrap(), k.reply().unwrap());
            assert_eq!(got, want, "{engine}: {what}");
            assert!(matches!(got, Frame::Error(_)), "{engine}: {what}");
            assert_eq!(r.reply(), None, "{engine}: {what}");
            assert_eq!(k.reply(), None, "{engine}: {what}");
        }
        // Ten arguments, or 16 KiB, are still taken (and refused for the missing password);
        // after AUTH, the server's own limits apply.
        let mut k = Resp::connect(server.addr);
        let mut r = Resp::connect(&redis.addr);
        let at_limit = vec![b'y'; 16 << 10];
        for args in [ten.clone(), vec![&b"SET"[..], b"k", &at_limit]] {
            assert_eq!(k.call(&args), r.call(&args), "{engine}");
        }
        for c in [&mut k, &mut r] {
            assert_eq!(c.call(&[b"AUTH", PASSWORD.as_bytes()]), simple("OK"));
            assert_eq!(c.call(&[b"SET", b"big", &big]), simple("OK"), "{engine}");
            assert_eq!(c.call(&eleven), k_unknown(&eleven), "{engine}");
        }
        // The password never reached the log, whatever was tried.
        assert!(
            !server.stderr().contains(PASSWORD),
            "{engine}: {}",
            server.stderr()
        );
    }
    assert!(
        mismatches.is_empty(),
        "{} replies differ from redis-server's:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// Redis's reply to the unknown command `args`.
fn k_unknown(args: &[&[u8]]) -> Frame {
    let shown: String = args[1..]
        .iter()
        .map(|a| format!("'{}' ", String::from_utf8_lossy(a)))
        .collect();
    error(&format!(
        "ERR unknown command '{}', with args beginning with: {shown}",
        String::from_utf8_lossy(args[0])
    ))
}

/// `redis-cli` with `args`, its stdout and whether it succeeded.
fn redis_cli(args: &[&str]) -> (String, bool) {
    let output = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli runs");
    (
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        output.status.success(),
    )
}

#[test]
fn redis_cli_and_redis_py_give_the_password_from_a_file_that_ps_does_not_show() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{PASSWORD}\nignored second line\n")).unwrap();
    let data = TempDir::new().unwrap();
    let file_arg = file.to_str().unwrap();
    let server = start(&data, "kvs", &["--requirepass-file", file_arg]);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid())).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(PASSWORD),
        "the password is on the command line"
    );
    let port = server.addr.port().to_string();
    let host = ["-h", "127.0.0.1", "-p", &port];
    if installed("redis-cli") {
        let with = |extra: &[&str], command: &[&str]| {
            let mut args = host.to_vec();
            args.extend_from_slice(extra);
            args.extend_from_slice(command);
            redis_cli(&args)
        };
        assert_eq!(
            with(&["-a", PASSWORD, "--no-auth-warning"], &["SET", "k", "v"]).0,
            "OK"
        );
        assert_eq!(
            with(&["-a", PASSWORD, "--no-auth-warning"], &["GET", "k"]).0,
            "v"
        );
        assert_eq!(
            with(
                &["--user", "default", "--pass", PASSWORD, "--no-auth-warning"],
                &["GET", "k"]
            )
            .0,
            "v"
        );
        // Without it, or with a wrong one: Redis's errors, as redis-cli prints them.
        assert_eq!(
            with(&[], &["GET", "k"]).0,
            "NOAUTH Authentication required."
        );
        let (out, _) = with(&["-a", "wrong", "--no-auth-warning"], &["GET", "k"]);
        assert!(out.contains("NOAUTH Authentication required."), "{out}");
        // redis-cli -a with RESP3 authenticates in HELLO.
        assert_eq!(
            with(&["-3", "-a", PASSWORD, "--no-auth-warning"], &["GET", "k"]).0,
            "v"
        );
    } else {
        eprintln!("\n*** SKIPPED: redis-cli is not installed (redis-tools). ***\n");
    }
    if let Some(python) = kvs_tests::python::with_redis() {
        let script = r#"
import sys, redis
host, port, password = "127.0.0.1", int(sys.argv[1]), sys.argv[2]
for protocol in (2, 3):
    r = redis.Redis(host=host, port=port, password=password, protocol=protocol)
    assert r.set("py", "1") is True
    assert r.get("py") == b"1", r.get("py")
    assert r.client_setname("py-client") is True
    # redis-py decodes the name in RESP2 only.
    assert r.client_getname() in (b"py-client", "py-client"), r.client_getname()
    assert r.info("replication")["role"] == "master"
    r.close()
for kwargs in ({}, {"password": "wrong"}, {"username": "bob", "password": password}):
    try:
        redis.Redis(host=host, port=port, **kwargs).get("py")
    except redis.exceptions.AuthenticationError as e:
        continue
    except redis.exceptions.ResponseError as e:
        assert "NOAUTH" in str(e) or "WRONGPASS" in str(e), e
        continue
    raise AssertionError("no password error for %r" % kwargs)
print("ok")
"#;
        let output = Command::new(python)
            .args(["-c", script, &port, PASSWORD])
            .output()
            .unwrap();
        assert!(
            output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "ok",
            "{output:?}"
        );
    }
    assert!(!server.stderr().contains(PASSWORD), "{}", server.stderr());
}

/// kvs-server with `args` and the environment variable `KVS_REQUIREPASS` at `env`, run to its
/// end: it must fail at once, as it refuses its password.
fn refused(args: &[&str], env: Option<&str>) -> String {
    let data = TempDir::new().unwrap();
    let mut command = Command::new(kvs_server());
    command
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .current_dir(data.path())
        .stdin(Stdio::null())
        .env_remove("KVS_REQUIREPASS");
    if let Some(env) = env {
        command.env("KVS_REQUIREPASS", env);
    }
    let output = command.output().unwrap();
    assert!(!output.status.success(), "{args:?} {env:?}: {output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_empty_password_is_refused_wherever_it_comes_from() {
    let dir = TempDir::new().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\nsecond line\n").unwrap();
    let empty_arg = empty.to_str().unwrap();
    assert!(refused(&["--requirepass", ""], None).contains("--requirepass) is empty"));
    let message = refused(&["--requirepass-file", empty_arg], None);
    assert!(
        message.contains(&format!("the first line of {empty_arg}")) && message.contains("empty"),
        "{message}"
    );
    assert!(refused(&[], Some("")).contains("KVS_REQUIREPASS) is empty"));
    let missing = dir.path().join("missing");
    let message = refused(&["--requirepass-file", missing.to_str().unwrap()], None);
    assert!(
        message.contains(&format!(
            "cannot read the password file {}",
            missing.display()
        )),
        "{message}"
    );
    // Both flags at once: refused by the parser, before anything else.
    let message = refused(
        &["--requirepass", "a", "--requirepass-file", empty_arg],
        None,
    );
    assert!(message.contains("cannot be used with"), "{message}");
}

#[test]
fn the_environment_variable_gives_the_password_and_a_flag_overrides_it() {
    let data = TempDir::new().unwrap();
    let mut command = Command::new(kvs_server());
    command
        .args(["--addr", "127.0.0.1:0"])
        .env("KVS_REQUIREPASS", PASSWORD);
    let server = ServerProcess::start_command(command, data.path());
    let mut c = Resp::connect(server.addr);
    assert_eq!(c.words("GET a"), error("NOAUTH Authentication required."));
    assert_eq!(c.call(&[b"AUTH", PASSWORD.as_bytes()]), simple("OK"));
    assert_eq!(c.words("GET a"), Frame::Bulk(None));
    drop(server);

    let mut command = Command::new(kvs_server());
    command
        .args(["--addr", "127.0.0.1:0", "--requirepass", "from-the-flag"])
        .env("KVS_REQUIREPASS", PASSWORD);
    let server = ServerProcess::start_command(command, data.path());
    let mut c = Resp::connect(server.addr);
    assert_eq!(
        c.call(&[b"AUTH", PASSWORD.as_bytes()]),
        error("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(c.words("AUTH from-the-flag"), simple("OK"));
}

#[test]
fn listening_beyond_loopback_without_a_password_is_warned_about() {
    const WARNING: &str = "beyond this machine, without a password";
    // Listening on every address (nothing is sent to any but 127.0.0.1: the test only reads
    // the log). The server is stopped as soon as it has logged where it listens.
    let data = TempDir::new().unwrap();
    let mut command = Command::new(kvs_server());
    command
        .args(["--addr", "0.0.0.0:0"])
        .env_remove("KVS_REQUIREPASS");
    let mut server = ServerProcess::start_command(command, data.path());
    server.wait_for_log(WARNING);
    assert!(server.signal_and_wait("TERM").success());

    let mut command = Command::new(kvs_server());
    command.args(["--addr", "0.0.0.0:0", "--requirepass", PASSWORD]);
    let mut server = ServerProcess::start_command(command, data.path());
    server.wait_for_log("must give the password");
    assert!(server.signal_and_wait("TERM").success());
    assert!(!server.stderr().contains(WARNING), "{}", server.stderr());

    // On 127.0.0.1, no warning either.
    let mut server = start(&data, "kvs", &[]);
    assert!(server.signal_and_wait("TERM").success());
    assert!(!server.stderr().contains(WARNING), "{}", server.stderr());
}

#[test]
fn shutdown_stops_the_server_cleanly_and_keeps_every_write() {
    for engine in ENGINES {
        for how in ["SHUTDOWN", "SHUTDOWN NOSAVE", "SHUTDOWN SAVE"] {
            let data = TempDir::new().unwrap();
            let mut server = start(&data, engine, &[]);
            let mut c = Resp::connect(server.addr);
            let mut bystander = Resp::connect(server.addr);
            assert_eq!(bystander.words("PING"), simple("PONG"));
            assert_eq!(c.words("SET kept v"), simple("OK"));
            // No reply: the connection is closed, as redis-server closes it.
            c.send(&words(how).iter().map(|w| w.as_bytes()).collect::<Vec<_>>());
            assert_eq!(c.reply(), None, "{engine}: {how}");
            let status = server.wait();
            assert!(status.success(), "{engine}: {how}: {status:?}");
            assert!(server.stderr().contains("SHUTDOWN from"), "{engine}");
            assert_eq!(bystander.reply(), None, "{engine}: {how}");
            drop(server);
            let server = start(&data, engine, &[]);
            let mut c = Resp::connect(server.addr);
            assert_eq!(c.words("GET kept"), Frame::Bulk(Some(b"v".to_vec())));
        }
    }
}

#[test]
fn client_kill_closes_the_connections_it_names() {
    for engine in ENGINES {
        let data = TempDir::new().unwrap();
        let server = start(&data, engine, &[]);
        let addr = server.addr.to_string();
        let mut killer = Resp::connect(&addr);
        let mut victim = Resp::connect(&addr);
        let mut by_addr = Resp::connect(&addr);
        let Frame::Integer(id) = victim.words("CLIENT ID") else {
            panic!("CLIENT ID");
        };
        assert_eq!(by_addr.words("PING"), simple("PONG"));
        assert_eq!(
            killer.words(&format!("CLIENT KILL ID {id}")),
            Frame::Integer(1)
        );
        // The victim's worker closes it (on its next sweep: at most a second; the read
        // waits up to PATIENCE).
        assert_eq!(victim.reply(), None, "{engine}");
        let peer = by_addr.stream.local_addr().unwrap().to_string();
        assert_eq!(killer.words(&format!("CLIENT KILL {peer}")), simple("OK"));
        assert_eq!(by_addr.reply(), None, "{engine}");
        assert_eq!(
            killer.words(&format!("CLIENT KILL {peer}")),
            error("ERR No such client")
        );
        // SKIPME yes (the default) spares the connection that asks; no spares it not.
        let me = killer.stream.local_addr().unwrap().to_string();
        assert_eq!(
            killer.words(&format!("CLIENT KILL ADDR {me}")),
            Frame::Integer(0)
        );
        assert_eq!(killer.words("PING"), simple("PONG"));
        assert_eq!(
            killer.words(&format!("CLIENT KILL ADDR {me} SKIPME no")),
            Frame::Integer(1)
        );
        assert_eq!(killer.reply(), None, "{engine}");
        // The others are gone from CLIENT LIST.
        let mut last = Resp::connect(&addr);
        let list = text(&last.words("CLIENT LIST"));
        assert_eq!(list.lines().count(), 1, "{engine}: {list}");
    }
}
