//! `kvs-client` and `kvs-server` as docs/reference/command-line.md says: every row of the client table on both
//! engines, usage errors, unreachable servers, engine recording and mismatch.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kvs_tests::redis::RedisServer;
use kvs_tests::server::PATIENCE;
use kvs_tests::{client, kvs_client, kvs_server, ServerProcess};
use tempfile::TempDir;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ok(out: &Output, stdout: &str) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), stdout);
}

fn client_table_holds(engine: &str) {
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path(), &["--engine", engine]);
    let addr = server.addr_arg();

    // set k v: prints nothing, exit 0.
    let out = client(&["set", "key1", "value1", "--addr", &addr]);
    assert_ok(&out, "");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    // get k: the value and a newline on stdout, exit 0.
    assert_ok(&client(&["get", "key1", "--addr", &addr]), "value1\n");

    // set overwrites.
    assert_ok(&client(&["set", "key1", "value2", "--addr", &addr]), "");
    assert_ok(&client(&["get", "key1", "--addr", &addr]), "value2\n");

    // get of a missing key: "Key not found" on stdout, exit 0.
    assert_ok(
        &client(&["get", "nope", "--addr", &addr]),
        "Key not found\n",
    );

    // rm k: prints nothing, exit 0; the key is gone.
    let out = client(&["rm", "key1", "--addr", &addr]);
    assert_ok(&out, "");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_ok(
        &client(&["get", "key1", "--addr", &addr]),
        "Key not found\n",
    );

    // rm of a missing key: "Key not found" on stderr, nothing on stdout, exit non-zero.
    let out = client(&["rm", "key1", "--addr", &addr]);
    assert!(!out.status.success());
    assert_eq!(text(&out.stdout), "");
    assert_eq!(text(&out.stderr), "Key not found\n");

    // Values with spaces and unicode survive.
    assert_ok(&client(&["set", "k é", "a b\tc ☃", "--addr", &addr]), "");
    assert_ok(&client(&["get", "k é", "--addr", &addr]), "a b\tc ☃\n");

    assert_eq!(
        std::fs::read_to_string(dir.path().join("engine"))
            .unwrap()
            .trim(),
        engine
    );
}

#[test]
fn client_table_holds_on_kvs_engine() {
    client_table_holds("kvs");
}

#[test]
fn client_table_holds_on_sled_engine() {
    client_table_holds("sled");
}

#[test]
fn values_outlive_the_server_process() {
    let dir = TempDir::new().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    assert_ok(
        &client(&["set", "a", "1", "--addr", &server.addr_arg()]),
        "",
    );
    assert!(server.signal_and_wait("TERM").success());
    // No --engine: the recorded one (kvs) is used.
    let server = ServerProcess::start(dir.path(), &[]);
    assert!(
        server.stderr().contains("engine kvs"),
        "{}",
        server.stderr()
    );
    assert_ok(&client(&["get", "a", "--addr", &server.addr_arg()]), "1\n");
}

#[test]
fn client_usage_errors_exit_non_zero() {
    let cases: &[&[&str]] = &[
        &[],
        &["get"],
        &["get", "a", "b"],
        &["set", "a"],
        &["set", "a", "b", "c"],
        &["rm"],
        &["frobnicate", "a"],
        &["get", "a", "--bogus"],
        &["get", "a", "--addr"],
        &["get", "a", "--addr", "not-an-address"],
        &["get", "a", "--addr", "127.0.0.1"],
        &["get", "a", "--addr", "127.0.0.1:99999"],
    ];
    for args in cases {
        let out = client(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!out.stderr.is_empty(), "{args:?} printed no error");
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    }
}

#[test]
fn server_usage_errors_exit_non_zero() {
    let dir = TempDir::new().unwrap();
    let cases: &[&[&str]] = &[
        &["--addr", "nowhere"],
        &["--addr", "127.0.0.1"],
        &["--engine", "rocks"],
        &["--bogus"],
        &["extra"],
    ];
    for args in cases {
        let out = Command::new(kvs_server())
            .args(*args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!out.stderr.is_empty(), "{args:?} printed no error");
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    }
    // A usage error touches nothing.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Runs `kvs-server --addr 127.0.0.1:0 <args>` in `dir`, expecting it to exit on its own. A
/// server that accepted `args` and started serving is killed and fails the test.
fn refused_start(dir: &std::path::Path, args: &[&str]) -> Output {
    let mut child = Command::new(kvs_server())
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Refusing an argument takes milliseconds; the patience is for a loaded machine.
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "kvs-server {args:?} was accepted and served:\n{}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn server_refuses_nonsense_limits_at_start_up() {
    let dir = TempDir::new().unwrap();
    // Each of these used to be accepted (or to crash the server) instead of being refused
    // by the argument parser; the flag at fault must be named.
    let cases: &[&[&str]] = &[
        &["--max-frame-bytes", "0"],
        &["--max-frame-bytes", "1023"],
        &["--max-frame-bytes", "150994944"],
        &["--max-frame-bytes", "99999999999999999999"],
        &["--max-connections", "0"],
        &["--max-connections", "1000001"],
        &["--threads", "0"],
        &["--threads", "1025"],
        &["--client-timeout", "0"],
        &["--client-timeout", "-1"],
        &["--client-timeout", "0.0001"],
        &["--client-timeout", "86401"],
        &["--client-timeout", "1e30"],
        &["--client-timeout", "NaN"],
        &["--client-timeout", "inf"],
        &["--client-timeout", "soon"],
        &["--drain-timeout", "0"],
        &["--drain-timeout", "-2"],
        &["--drain-timeout", "1e9"],
        &["--log-level", "loud"],
    ];
    for args in cases {
        let out = refused_start(dir.path(), args);
        let err = text(&out.stderr);
        // Exit code 2 is clap's "usage error": refused before anything started.
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("invalid value '{}' for '{}", args[1], args[0])),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // The bounds themselves are fine, and --help states them.
    let help = Command::new(kvs_server()).arg("--help").output().unwrap();
    let help = text(&help.stdout);
    for range in [
        "From 1024 (room for an error reply) to 150994943",
        "From 0.001 to 86400",
        "before closing their connections, from 0.001 to 86400",
        "from 1 to 1000000",
        "from 1 to 1024",
    ] {
        assert!(
            help.contains(range),
            "--help does not say {range:?}:\n{help}"
        );
    }
    let mut server = ServerProcess::start(
        dir.path(),
        &[
            "--max-frame-bytes",
            "1024",
            "--max-connections",
            "1",
            "--threads",
            "1",
            "--client-timeout",
            "0.001",
        ],
    );
    assert_ok(
        &client(&["set", "k", "v", "--addr", &server.addr_arg()]),
        "",
    );
    assert_ok(&client(&["get", "k", "--addr", &server.addr_arg()]), "v\n");
    assert!(server.signal_and_wait("TERM").success());
}

#[test]
fn both_binaries_print_the_version() {
    let version = env!("CARGO_PKG_VERSION");
    for (exe, name) in [(kvs_server(), "kvs-server"), (kvs_client(), "kvs-client")] {
        let out = Command::new(&exe).arg("-V").output().unwrap();
        assert!(out.status.success());
        assert_eq!(text(&out.stdout), format!("{name} {version}\n"));
        let help = Command::new(&exe).arg("--help").output().unwrap();
        assert!(help.status.success());
        assert!(text(&help.stdout).contains("Usage:"));
    }
}

#[test]
fn unreachable_server_is_an_error_naming_the_address() {
    // A port that was free a moment ago: bind, note it, close.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    for args in [
        vec!["get", "a", "--addr", &addr],
        vec!["set", "a", "b", "--addr", &addr],
        vec!["rm", "a", "--addr", &addr],
    ] {
        let out = client(&args);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        let err = text(&out.stderr);
        assert!(err.contains(&addr), "{err}");
    }
}

#[test]
fn server_fails_when_the_port_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new().unwrap();
    let out = Command::new(kvs_server())
        .args(["--addr", &addr])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(&addr), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

#[test]
fn server_start_up_line_says_how_long_the_open_took_and_how_many_keys() {
    let dir = TempDir::new().unwrap();
    {
        use kvs::KvsEngine;
        let store = kvs::KvStore::open(dir.path()).unwrap();
        for key in ["a", "b", "c"] {
            store.set(key.to_owned(), "v".to_owned()).unwrap();
        }
    }
    let server = ServerProcess::start(dir.path(), &["--engine", "kvs"]);
    let line = server.wait_for_log("listening on");
    assert!(line.contains("store opened in "), "{line}");
    assert!(line.contains(" ms, 3 keys"), "{line}");
    drop(server);
    // sled counts its keys by reading them all: the line says the time only.
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path(), &["--engine", "sled"]);
    let line = server.wait_for_log("listening on");
    assert!(line.contains("store opened in "), "{line}");
    assert!(!line.contains(" keys"), "{line}");
}

#[test]
fn server_logs_version_engine_and_address_on_stderr() {
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path(), &["--engine", "sled"]);
    let line = server.wait_for_log("listening on");
    assert!(line.contains(env!("CARGO_PKG_VERSION")), "{line}");
    assert!(line.contains("engine sled"), "{line}");
    assert!(line.contains(&server.addr_arg()), "{line}");
    // Recorded before any request.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("engine"))
            .unwrap()
            .trim(),
        "sled"
    );
}

fn mismatch_is_refused(first: &str, second: &str) {
    let dir = TempDir::new().unwrap();
    let mut server = ServerProcess::start(dir.path(), &["--engine", first]);
    assert_ok(
        &client(&["set", "a", "1", "--addr", &server.addr_arg()]),
        "",
    );
    assert!(server.signal_and_wait("TERM").success());
    let before = snapshot(dir.path());

    let out = Command::new(kvs_server())
        .args(["--addr", "127.0.0.1:0", "--engine", second])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(first) && err.contains(second), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a refused start changed the directory"
    );

    // The recorded engine still serves the data.
    let server = ServerProcess::start(dir.path(), &["--engine", first]);
    assert_ok(&client(&["get", "a", "--addr", &server.addr_arg()]), "1\n");
}

/// Every file under `dir` with its contents, except the lock file (opening may create it).
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if entry.file_name() != "LOCK" {
                files.push((
                    path.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn sled_directory_refuses_kvs_engine() {
    mismatch_is_refused("sled", "kvs");
}

#[test]
fn kvs_directory_refuses_sled_engine() {
    mismatch_is_refused("kvs", "sled");
}

/// A one-connection server on 127.0.0.1 that is not a kvs server: it says `greeting` on
/// accepting, then `answer` once the client's request has arrived, then reads until the
/// client closes (so that no unread byte turns its close into a reset).
fn foreign_server(greeting: &'static [u8], answer: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let _ = stream.write_all(greeting);
        let mut buf = [0; 4096];
        if matches!(stream.read(&mut buf), Ok(n) if n > 0) {
            let _ = stream.write_all(answer);
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    });
    addr
}

/// `kvs-client <args> --addr <addr>`, which must fail saying that `addr` is not a kvs server
/// and quoting `quoted`.
fn assert_not_kvs(addr: &str, args: &[&str], quoted: &str) {
    let command = args[0];
    let mut args = args.to_vec();
    args.extend(["--addr", addr]);
    let out = client(&args);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{command}: {err}");
    assert!(out.stdout.is_empty(), "{command}: {}", text(&out.stdout));
    let said = format!("the server at {addr} is not a kvs server: it answered {quoted}");
    assert!(
        err.contains(&said),
        "{command}: wanted {said:?}, got {err:?}"
    );
    assert!(!err.contains("over the limit"), "{err}");
}

#[test]
fn client_says_when_the_server_is_not_a_kvs_server() {
    // An HTTP server answers the request it cannot parse.
    let http = foreign_server(
        b"",
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_not_kvs(&http, &["get", "k"], "\"HTTP/1.1 400 Bad Request\"");
    // An SMTP (or FTP) server greets first.
    let smtp = foreign_server(b"220 mail.test ESMTP ready\r\n", b"500 5.5.2 what?\r\n");
    assert_not_kvs(&smtp, &["set", "k", "v"], "\"220 mail.test ESMTP ready\"");
    // A RESP server that refuses the bytes; and one that says a word and hangs up.
    let resp = foreign_server(b"", b"-ERR unknown command\r\n");
    assert_not_kvs(&resp, &["rm", "k"], "\"-ERR unknown command\"");
    let short = foreign_server(b"", b"OK\n");
    assert_not_kvs(&short, &["get", "k"], "\"OK\"");
    // Binary that no kvs server sends is shown in hex.
    let binary = foreign_server(b"", b"\xff\x00\x01\x02\x03");
    assert_not_kvs(&binary, &["get", "k"], "the bytes ff 00 01 02 03");
}

#[test]
fn client_says_when_the_server_is_redis() {
    let dir = TempDir::new().unwrap();
    let Some(redis) = RedisServer::start(dir.path()) else {
        return;
    };
    // Redis reads a kvs frame (first byte 0) as an inline command, and an inline command
    // holding a NUL byte never ends for it: it answers only once more than 64 KiB have come
    // without a line break. So the request is just over that; the rest would wait forever,
    // as with any server that stays silent, until the client's timeout.
    let value = "v".repeat(65_600);
    assert_not_kvs(
        &redis.addr,
        &["set", "k", &value],
        "\"-ERR Protocol error: too big inline request\"",
    );
}
