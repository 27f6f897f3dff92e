//! `kvs-admin`, the real binary, on real stores of both engines, as
//! docs/reference/command-line.md describes it: `stats`, `check` of healthy and damaged
//! stores, `dump` into `restore`, into `redis-cli --pipe` against redis-server and
//! kvs-server, `compact`, `checkpoint`, and directories locked by a running kvs-server.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use kvs::{AnyEngine, EngineKind, KeyExpiry, KvStore, KvStoreOptions, KvsEngine};
use kvs_tests::redis::{installed, RedisServer};
use kvs_tests::resp::Frame;
use kvs_tests::{kvs_admin, ServerProcess};
use tempfile::TempDir;

const ENGINES: [EngineKind; 2] = [EngineKind::Kvs, EngineKind::Sled];

/// A store's keys, each with its value and deadline.
type Contents = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `kvs-admin --dir DIR <args>`, with `stdin` as its standard input.
fn admin_with(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(kvs_admin())
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kvs-admin runs");
    let mut input = child.stdin.take().expect("piped");
    // A command that does not read stdin may exit before it is all written.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("kvs-admin exits")
}

fn admin(dir: &Path, args: &[&str]) -> Output {
    admin_with(dir, args, b"")
}

/// Its stdout, after checking that it exited 0.
fn admin_ok(dir: &Path, args: &[&str]) -> String {
    let out = admin(dir, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "kvs-admin {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A deadline an hour away: no key of these tests expires while they run.
fn later() -> u64 {
    kvs::now_millis() + 3_600_000
}

/// Fills `dir` with a store of `engine` (for kvs, in log files of 4 KiB, so that there are
/// several closed ones): 200 keys, 50 overwritten and one removed (stale data), 10 with a
/// deadline, binary keys and values that look like RESP, an empty value. Returns what it holds.
fn known_store(dir: &Path, engine: EngineKind) -> Contents {
    let store = AnyEngine::open_with(
        dir,
        Some(engine),
        KvStoreOptions::default().max_file_size(4096),
    )
    .unwrap();
    for i in 0..200u32 {
        store
            .set_bytes(
                format!("key{i:04}").as_bytes(),
                &[b'a' + (i % 26) as u8; 100],
            )
            .unwrap();
    }
    for i in 0..50u32 {
        store
            .set_bytes(
                format!("key{i:04}").as_bytes(),
                format!("new{i}").as_bytes(),
            )
            .unwrap();
    }
    store.remove_bytes(b"key0199").unwrap();
    let deadline = later();
    for i in 100..110u32 {
        let key = format!("key{i:04}");
        store
            .set_with_deadline_bytes(key.as_bytes(), b"expiring", deadline + u64::from(i))
            .unwrap();
    }
    store
        .set_bytes(b"\x00\xff*3\r\n$3\r\nSET\r\n", b"$5\r\n\x00\xfe\r\n")
        .unwrap();
    store.set_bytes(b"empty", b"").unwrap();
    store
        .set_with_deadline_bytes(b"\r\n", b"\n", deadline)
        .unwrap();
    drop(store);
    let contents = contents(dir);
    assert_eq!(contents.len(), 202);
    contents
}

/// What the store in `dir` holds, read through the library (kvs: read-only).
fn contents(dir: &Path) -> Contents {
    let store = match kvs::data_dir::engine_of(dir).unwrap() {
        Some(EngineKind::Sled) => AnyEngine::open(dir, Some(EngineKind::Sled)).unwrap(),
        _ => AnyEngine::Kvs(
            KvStore::open_with(dir, KvStoreOptions::default().read_only(true)).unwrap(),
        ),
    };
    let mut contents = Contents::new();
    for key in store.keys().unwrap() {
        let value = store.get_bytes(&key).unwrap().expect("a listed key is set");
        let deadline = match store.expiry_bytes(&key).unwrap() {
            KeyExpiry::At(deadline) => Some(deadline),
            KeyExpiry::Never => None,
            KeyExpiry::Missing => panic!("a listed key is set"),
        };
        contents.insert(key, (value, deadline));
    }
    contents
}

/// The value of `name` in `stats` text output (`name  value` lines, names aligned).
fn stat<'a>(stats: &'a str, name: &str) -> &'a str {
    stats
        .lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .filter(|rest| rest.starts_with("  "))
                .map(str::trim)
        })
        .unwrap_or_else(|| panic!("no {name:?} in {stats}"))
}

#[test]
fn stats_of_a_known_store_on_both_engines() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        known_store(dir.path(), engine);
        let stats = admin_ok(dir.path(), &["stats"]);
        assert_eq!(stat(&stats, "engine"), engine.name(), "{stats}");
        assert_eq!(stat(&stats, "keys"), "202", "{stats}");
        assert_eq!(stat(&stats, "keys with deadline"), "11", "{stats}");
        // The values line up in one column.
        let column = |line: &str| line.len() - line.split_whitespace().last().unwrap().len();
        let columns: Vec<usize> = stats
            .lines()
            .filter(|l| !l.contains("n/a"))
            .map(column)
            .collect();
        assert!(columns.windows(2).all(|w| w[0] == w[1]), "{stats}");

        let json = admin_ok(dir.path(), &["stats", "--json"]);
        assert!(json.starts_with('{') && json.ends_with("}\n"), "{json}");
        assert!(json.contains(&format!("\"engine\":\"{engine}\"")), "{json}");
        assert!(json.contains("\"keys\":202,"), "{json}");
        assert!(json.contains("\"keys_with_deadline\":11,"), "{json}");

        match engine {
            EngineKind::Kvs => {
                assert_eq!(stat(&stats, "format versions"), "2", "{stats}");
                let store =
                    KvStore::open_with(dir.path(), KvStoreOptions::default().read_only(true))
                        .unwrap();
                let disk = store.disk_stats();
                drop(store);
                assert!(disk.files >= 3, "{disk:?}");
                assert!(disk.stale_bytes > 0, "{disk:?}");
                assert_eq!(stat(&stats, "files"), disk.files.to_string());
                assert_eq!(stat(&stats, "total bytes"), disk.total_bytes.to_string());
                assert_eq!(stat(&stats, "stale bytes"), disk.stale_bytes.to_string());
                assert_eq!(
                    stat(&stats, "live bytes"),
                    (disk.total_bytes - disk.stale_bytes).to_string()
                );
                assert!(json.contains("\"format_versions\":[2],"), "{json}");
                assert!(
                    json.contains(&format!(
                        "\"files\":{},\"total_bytes\":{},\"live_bytes\":{},\"stale_bytes\":{}}}",
                        disk.files,
                        disk.total_bytes,
                        disk.total_bytes - disk.stale_bytes,
                        disk.stale_bytes
                    )),
                    "{json}"
                );
            }
            EngineKind::Sled => {
                assert_eq!(stat(&stats, "files"), "n/a (sled)", "{stats}");
                assert!(json.contains("\"files\":null,"), "{json}");
            }
        }
    }
}

#[test]
fn check_passes_a_healthy_store_on_both_engines() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        known_store(dir.path(), engine);
        let out = admin_ok(dir.path(), &["check"]);
        assert!(
            out.contains(&format!("{engine} store, no damage; 202 keys read")),
            "{out}"
        );
        if engine == EngineKind::Kvs {
            assert!(out.contains("1.log (format v2): "), "{out}");
            assert!(!out.contains("DAMAGED"), "{out}");
        }
    }
}

#[test]
fn check_names_the_file_and_offset_of_a_flipped_byte_and_exits_1() {
    let dir = TempDir::new().unwrap();
    known_store(dir.path(), EngineKind::Kvs);
    // 1.log is closed (the store has several files). Its first record starts right after
    // the 8-byte file header and holds a 100-byte value: byte 60 is inside it.
    let path = dir.path().join("1.log");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[60] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let out = admin(dir.path(), &["check"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let damaged: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("DAMAGED"))
        .collect();
    assert_eq!(damaged.len(), 1, "{stdout}");
    assert!(
        damaged[0].starts_with(&format!(
            "DAMAGED {} (format v2) at offset 8: ",
            path.display()
        )),
        "{stdout}"
    );
    assert!(damaged[0].contains("checksum"), "{stdout}");
    assert!(
        damaged[0].contains("valid records follow at offset"),
        "{stdout}"
    );
    // The healthy files are said to be healthy.
    assert!(
        stdout.contains(&format!("ok      {}", dir.path().join("2.log").display())),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("damage found"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn dump_then_restore_gives_the_same_keys_values_and_deadlines() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let source = dir.path().join("source");
        let expected = known_store(&source, engine);
        let dump = admin(&source, &["dump"]);
        assert_eq!(dump.status.code(), Some(0), "{}", text(&dump.stderr));
        // Into a fresh directory of each engine.
        for target_engine in ENGINES {
            let target = dir.path().join(format!("into-{target_engine}"));
            let out = admin_with(
                &target,
                &["restore", "--engine", target_engine.name()],
                &dump.stdout,
            );
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            assert_eq!(
                text(&out.stdout),
                format!("restored 202 keys into {}\n", target.display())
            );
            assert_eq!(
                kvs::data_dir::engine_of(&target).unwrap(),
                Some(target_engine)
            );
            assert_eq!(contents(&target), expected, "{engine} into {target_engine}");
        }
        // From a file too; into a store already there, which keeps its engine.
        let file = dir.path().join("dump.resp");
        std::fs::write(&file, &dump.stdout).unwrap();
        let again = dir.path().join(format!("into-{engine}"));
        admin_ok(&again, &["restore", file.to_str().unwrap()]);
        assert_eq!(contents(&again), expected);
    }
}

#[test]
fn restore_refuses_what_dump_does_not_write_naming_the_byte_offset() {
    let dir = TempDir::new().unwrap();
    let mut stream = b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n".to_vec();
    let at = stream.len();
    stream.extend_from_slice(b"*2\r\n$3\r\nDEL\r\n$1\r\na\r\n");
    let out = admin_with(dir.path(), &["restore"], &stream);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("bad restore stream at byte offset {at}: ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("(1 keys before it were restored)"),
        "{stderr}"
    );
    // They were.
    let mut expected = Contents::new();
    expected.insert(b"a".to_vec(), (b"1".to_vec(), None));
    assert_eq!(contents(dir.path()), expected);
}

/// A RESP connection to `addr`: sends `args`, returns the reply.
fn call(conn: &mut TcpStream, args: &[&[u8]]) -> Frame {
    let mut out = Vec::new();
    Frame::request(args).encode(&mut out);
    conn.write_all(&out).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((frame, _)) = Frame::parse(&buf, 1 << 20).unwrap() {
            return frame;
        }
        let n = conn.read(&mut chunk).unwrap();
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Pipes `dump` into `redis-cli --pipe` against port `port` of 127.0.0.1; checks that it
/// reports every command sent and no error.
fn redis_cli_pipe(port: u16, dump: &[u8], commands: usize) {
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli runs");
    let mut input = child.stdin.take().expect("piped");
    input.write_all(dump).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("errors: 0, replies: {commands}")),
        "{stdout}"
    );
}

#[test]
fn dump_loads_into_redis_server_and_kvs_server_through_redis_cli_pipe() {
    if !installed("redis-cli") {
        eprintln!(
            "\n*** SKIPPED: redis-cli is not installed (`bash tests/setup.sh` installs \
             Debian's redis-tools), so dump is not loaded through redis-cli --pipe. ***\n"
        );
        return;
    }
    let dir = TempDir::new().unwrap();
    let source = dir.path().join("source");
    let expected = known_store(&source, EngineKind::Kvs);
    let dump = admin(&source, &["dump"]);
    assert_eq!(dump.status.code(), Some(0), "{}", text(&dump.stderr));
    // One SET per key, one PEXPIREAT per deadline.
    let commands = expected.len() + expected.values().filter(|(_, d)| d.is_some()).count();

    // Into a kvs-server of each engine: every key, value and deadline, as the store holds
    // them once the server is stopped.
    for engine in ENGINES {
        let server_dir = dir.path().join(format!("server-{engine}"));
        std::fs::create_dir(&server_dir).unwrap();
        let mut server = ServerProcess::start(&server_dir, &["--engine", engine.name()]);
        redis_cli_pipe(server.addr.port(), &dump.stdout, commands);
        assert!(server.signal_and_wait("TERM").success());
        assert_eq!(
            contents(&server_dir),
            expected,
            "kvs-server --engine {engine}"
        );
    }

    // Into redis-server: every key, value and deadline, as Redis answers for them.
    let redis_dir = dir.path().join("redis");
    std::fs::create_dir(&redis_dir).unwrap();
    let Some(redis) = RedisServer::start(&redis_dir) else {
        return;
    };
    let port: u16 = redis.addr.rsplit(':').next().unwrap().parse().unwrap();
    redis_cli_pipe(port, &dump.stdout, commands);
    let mut conn = TcpStream::connect(&redis.addr).unwrap();
    assert_eq!(
        call(&mut conn, &[b"DBSIZE"]),
        Frame::Integer(expected.len() as i64)
    );
    for (key, (value, deadline)) in &expected {
        assert_eq!(
            call(&mut conn, &[b"GET", key]),
            Frame::Bulk(Some(value.clone())),
            "{key:?}"
        );
        let want = deadline.map_or(-1, |d| d as i64);
        assert_eq!(
            call(&mut conn, &[b"PEXPIRETIME", key]),
            Frame::Integer(want),
            "{key:?}"
        );
    }
}

#[test]
fn compact_shrinks_a_kvs_store_with_stale_data_and_does_not_apply_to_sled() {
    let dir = TempDir::new().unwrap();
    let expected = known_store(dir.path(), EngineKind::Kvs);
    let disk = |dir: &Path| {
        KvStore::open_with(dir, KvStoreOptions::default().read_only(true))
            .unwrap()
            .disk_stats()
    };
    let before = disk(dir.path());
    assert!(before.stale_bytes > before.total_bytes / 5, "{before:?}");
    let out = admin_ok(dir.path(), &["compact"]);
    assert!(out.starts_with("compacted "), "{out}");
    let after = disk(dir.path());
    assert!(
        after.total_bytes < before.total_bytes - before.stale_bytes / 2,
        "{before:?} -> {after:?}"
    );
    assert_eq!(contents(dir.path()), expected);

    let sled = TempDir::new().unwrap();
    known_store(sled.path(), EngineKind::Sled);
    let out = admin(sled.path(), &["compact"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("compact does not apply to"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn checkpoint_opens_as_a_store_of_the_same_engine_and_contents() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let source = dir.path().join("source");
        let expected = known_store(&source, engine);
        let dest = dir.path().join("checkpoint");
        let out = admin_ok(&source, &["checkpoint", dest.to_str().unwrap()]);
        assert!(out.starts_with("checkpoint of "), "{out}");
        assert_eq!(kvs::data_dir::engine_of(&dest).unwrap(), Some(engine));
        assert_eq!(contents(&dest), expected, "{engine}");
        // And it is a store kvs-admin checks as sound.
        admin_ok(&dest, &["check"]);
    }
}

#[test]
fn a_directory_locked_by_a_running_kvs_server_is_refused() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        known_store(dir.path(), engine);
        let mut server = ServerProcess::start(dir.path(), &["--engine", engine.name()]);
        let restore_input = b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n";
        let elsewhere = TempDir::new().unwrap();
        let checkpoint = elsewhere.path().join("checkpoint");
        for args in [
            &["check"][..],
            &["stats"],
            &["dump"],
            &["compact"],
            &["checkpoint", checkpoint.to_str().unwrap()],
            &["restore"],
        ] {
            if engine == EngineKind::Sled && args == ["compact"] {
                continue;
            }
            let out = admin_with(dir.path(), args, restore_input);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(3), "{engine} {args:?}: {stderr}");
            assert!(
                stderr.contains(&format!(
                    "{} is locked: another kvs process (or handle) has it open",
                    dir.path().display()
                )),
                "{engine} {args:?}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{engine} {args:?}");
        }
        assert!(!checkpoint.exists());
        assert!(server.signal_and_wait("TERM").success());
    }
}
