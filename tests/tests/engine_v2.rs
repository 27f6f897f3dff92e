//! The engine v2 surface over the kvs protocol, through the real `kvs-server` binary on both
//! engines: batches, get-many, deadlines, scans, checkpoints and `update_bytes`, plus the exact
//! bytes of each new reply and what a client says when the server is older than a request.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use kvs::protocol::{ErrorKind, List, Op, Request, Response, DEFAULT_MAX_FRAME_LEN};
use kvs::{
    deadline_after, now_millis, AnyEngine, KeyExpiry, KvsClient, KvsEngine, KvsError, ScanFilter,
    WriteBatch, MAX_KEY_LEN,
};
use kvs_tests::ServerProcess;
use tempfile::TempDir;

/// The engines `kvs-server --engine` accepts.
const ENGINES: [&str; 2] = ["kvs", "sled"];

/// A deadline far enough away that no test outlives it.
fn an_hour_from_now() -> u64 {
    deadline_after(Duration::from_secs(3600))
}

/// Sleeps until the clock (the server's too: same machine) is past `deadline`. No time bound
/// is asserted: this only waits for a deadline to pass.
fn wait_until_past(deadline: u64) {
    loop {
        let now = now_millis();
        if now > deadline {
            return;
        }
        thread::sleep(Duration::from_millis(deadline - now + 1));
    }
}

fn start(dir: &TempDir, engine: &str) -> (ServerProcess, KvsClient) {
    let server = ServerProcess::start(dir.path(), &["--engine", engine]);
    let client = KvsClient::connect(server.addr).unwrap();
    (server, client)
}

fn frame(request: Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    request
        .encode_frame(&mut out, DEFAULT_MAX_FRAME_LEN)
        .unwrap();
    out
}

/// Reads one frame's payload.
fn read_payload(stream: &mut TcpStream) -> Vec<u8> {
    let mut header = [0; 4];
    stream.read_exact(&mut header).unwrap();
    let mut payload = vec![0; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload).unwrap();
    payload
}

/// Every key of a full walk with pages of `count`, as a client sees them.
fn walk(client: &mut KvsClient, count: usize, filter: &ScanFilter) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    let mut cursor = 0;
    loop {
        let page = client.scan_bytes(cursor, count, filter).unwrap();
        keys.extend(page.keys);
        cursor = page.cursor;
        if cursor == 0 {
            return keys;
        }
    }
}

#[test]
fn a_batch_is_applied_whole_and_survives_kill_9() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let (mut server, mut client) = start(&dir, engine);
        client.set_bytes(b"a", b"old").unwrap();
        client.set_bytes(b"b", b"doomed").unwrap();
        let deadline = an_hour_from_now();
        let mut batch = WriteBatch::new();
        batch
            .set(b"a", b"1")
            .remove(b"b")
            .set_with_deadline(b"c", b"3", deadline)
            .remove(b"never-set")
            .set(b"d", b"first")
            .set(b"d", b"second");
        client.apply_batch(&batch).unwrap();
        let values = client
            .get_many_bytes(&[b"a", b"b", b"c", b"d", b"never-set"])
            .unwrap();
        let want: [Option<&[u8]>; 5] = [Some(b"1"), None, Some(b"3"), Some(b"second"), None];
        assert_eq!(
            values.iter().map(Option::as_deref).collect::<Vec<_>>(),
            want,
            "{engine}"
        );
        assert_eq!(
            client.expiry_bytes(b"c").unwrap(),
            KeyExpiry::At(deadline),
            "{engine}"
        );
        // An empty batch is fine and writes nothing.
        client.apply_batch(&WriteBatch::new()).unwrap();

        // Acknowledged as a set is: the whole batch is there after kill -9.
        assert!(!server.signal_and_wait("KILL").success());
        let (_server, mut client) = start(&dir, engine);
        let values = client
            .get_many_bytes(&[b"a", b"b", b"c", b"d", b"never-set"])
            .unwrap();
        assert_eq!(
            values.iter().map(Option::as_deref).collect::<Vec<_>>(),
            want,
            "{engine} after kill -9"
        );
        assert_eq!(
            client.expiry_bytes(b"c").unwrap(),
            KeyExpiry::At(deadline),
            "{engine} after kill -9"
        );
    }
}

#[test]
fn a_batch_with_one_invalid_op_writes_nothing() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let (_server, mut client) = start(&dir, engine);
        client.set_bytes(b"kept", b"before").unwrap();
        let huge_key = vec![b'k'; MAX_KEY_LEN + 1];
        let mut batch = WriteBatch::new();
        batch
            .set(b"first", b"1")
            .remove(b"kept")
            .set(&huge_key, b"v")
            .set(b"last", b"2");
        let result = client.apply_batch(&batch);
        let values = client
            .get_many_bytes(&[b"first", b"kept", b"last"])
            .unwrap();
        match (engine, result) {
            (_, Err(KvsError::Remote { kind, message })) => {
                assert_eq!(kind, ErrorKind::InvalidArgument, "{engine}: {message}");
                assert_eq!(
                    values,
                    [None, Some(b"before".to_vec()), None],
                    "{engine}: a refused batch wrote part of itself"
                );
                assert_eq!(client.get_bytes(&huge_key).unwrap(), None);
            }
            // sled takes keys of any length: there the batch is valid and lands whole.
            ("sled", Ok(())) => assert_eq!(
                values,
                [Some(b"1".to_vec()), None, Some(b"2".to_vec())],
                "{engine}"
            ),
            (_, other) => panic!("{engine}: expected a refusal, got {other:?}"),
        }
        // The connection goes on.
        client.set_bytes(b"after", b"ok").unwrap();
    }
}

/// A batch over the server's frame limit is refused from its length alone, before the
/// server reads any of it: none of its ops is written, on either engine.
#[test]
fn a_batch_over_the_servers_frame_limit_writes_nothing() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = ServerProcess::start(
            dir.path(),
            &["--engine", engine, "--max-frame-bytes", "1000000"],
        );
        let mut client = KvsClient::connect(server.addr).unwrap();
        client.set_bytes(b"kept", b"before").unwrap();
        let large = vec![7u8; 2_000_000];
        let mut batch = WriteBatch::new();
        batch
            .set(b"first", b"1")
            .remove(b"kept")
            .set(b"large", &large)
            .set(b"last", b"2");
        match client.apply_batch(&batch) {
            // The server says why and closes; or it closes while the client still sends.
            Err(KvsError::Remote {
                kind: ErrorKind::Protocol,
                message,
            }) => assert!(message.contains("over the limit"), "{engine}: {message}"),
            Err(KvsError::ConnectionLost { .. }) => {}
            other => panic!("{engine}: expected a refusal, got {other:?}"),
        }
        let mut client = KvsClient::connect(server.addr).unwrap();
        assert_eq!(
            client
                .get_many_bytes(&[b"first", b"kept", b"large", b"last"])
                .unwrap(),
            [None, Some(b"before".to_vec()), None, None],
            "{engine}"
        );
    }
}

#[test]
fn get_many_reads_in_order_and_refuses_a_reply_over_the_frame_limit() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let (mut server, mut client) = start(&dir, engine);
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        client.set_bytes(b"big1", &big).unwrap();
        client.set_bytes(b"big2", &big).unwrap();
        client.set_bytes(b"", b"empty key").unwrap();
        client.set_bytes(b"empty value", b"").unwrap();
        let values = client
            .get_many_bytes(&[b"big2", b"missing", b"", b"empty value", b"big1"])
            .unwrap();
        assert_eq!(
            values,
            [
                Some(big.clone()),
                None,
                Some(b"empty key".to_vec()),
                Some(Vec::new()),
                Some(big.clone()),
            ],
            "{engine}"
        );
        assert_eq!(
            client.get_many_bytes(&[]).unwrap(),
            Vec::<Option<Vec<u8>>>::new()
        );
        assert!(server.signal_and_wait("TERM").success());

        // Under a 1 MB frame limit each value still comes back alone, but not both at once:
        // the client is told why, and the connection goes on.
        let server = ServerProcess::start(
            dir.path(),
            &["--engine", engine, "--max-frame-bytes", "1000000"],
        );
        let mut client = KvsClient::connect(server.addr).unwrap();
        assert_eq!(
            client.get_many_bytes(&[b"big1"]).unwrap(),
            [Some(big.clone())]
        );
        match client.get_many_bytes(&[b"big1", b"big2"]) {
            Err(KvsError::Remote {
                kind: ErrorKind::InvalidArgument,
                message,
            }) => assert!(
                message.contains("too large") && message.contains("fewer keys"),
                "{message}"
            ),
            other => panic!("{engine}: expected a refusal, got {other:?}"),
        }
        assert_eq!(client.get_bytes(b"").unwrap(), Some(b"empty key".to_vec()));
    }
}

#[test]
fn deadlines_over_the_wire() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let (mut server, mut client) = start(&dir, engine);
        let later = an_hour_from_now();

        client.set_with_deadline_bytes(b"t", b"v", later).unwrap();
        assert_eq!(client.expiry_bytes(b"t").unwrap(), KeyExpiry::At(later));
        assert_eq!(client.get_bytes(b"t").unwrap(), Some(b"v".to_vec()));
        // Persist: true once, then false (no deadline left).
        assert!(client.persist_bytes(b"t").unwrap(), "{engine}");
        assert_eq!(client.expiry_bytes(b"t").unwrap(), KeyExpiry::Never);
        assert!(!client.persist_bytes(b"t").unwrap(), "{engine}");
        assert!(!client.persist_bytes(b"missing").unwrap(), "{engine}");
        assert_eq!(client.expiry_bytes(b"missing").unwrap(), KeyExpiry::Missing);

        // ExpireAt gives an existing key a deadline; a key that is not set stays unset.
        assert!(client.expire_at_bytes(b"t", later).unwrap(), "{engine}");
        assert_eq!(client.expiry_bytes(b"t").unwrap(), KeyExpiry::At(later));
        assert!(!client.expire_at_bytes(b"missing", later).unwrap());
        assert_eq!(client.get_bytes(b"missing").unwrap(), None);

        // Compare-and-set keeps the deadline; a plain set clears it.
        assert!(client
            .compare_and_set_bytes(b"t", Some(b"v"), Some(b"w"))
            .unwrap());
        assert_eq!(client.expiry_bytes(b"t").unwrap(), KeyExpiry::At(later));
        client.set_bytes(b"t", b"x").unwrap();
        assert_eq!(client.expiry_bytes(b"t").unwrap(), KeyExpiry::Never);

        // A deadline that has passed removes the key, through either request.
        client.set_bytes(b"p", b"v").unwrap();
        assert!(client.expire_at_bytes(b"p", 1).unwrap(), "{engine}");
        assert_eq!(client.get_bytes(b"p").unwrap(), None);
        client.set_with_deadline_bytes(b"q", b"v", 1).unwrap();
        assert_eq!(client.get_bytes(b"q").unwrap(), None);
        assert_eq!(client.expiry_bytes(b"q").unwrap(), KeyExpiry::Missing);

        // Deadlines survive kill -9.
        client
            .set_with_deadline_bytes(b"kept", b"v", later)
            .unwrap();
        assert!(!server.signal_and_wait("KILL").success());
        let (_server, mut client) = start(&dir, engine);
        assert_eq!(
            client.expiry_bytes(b"kept").unwrap(),
            KeyExpiry::At(later),
            "{engine} after kill -9"
        );
    }
}

#[test]
fn expired_keys_are_gone_for_every_read_over_the_wire() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let (_server, mut client) = start(&dir, engine);
        let soon = deadline_after(Duration::from_millis(300));
        client
            .set_with_deadline_bytes(b"x:soon", b"v", soon)
            .unwrap();
        let mut batch = WriteBatch::new();
        batch.set_with_deadline(b"x:batch", b"v", soon);
        client.apply_batch(&batch).unwrap();
        client.set_bytes(b"x:stays", b"v").unwrap();
        // Before the deadline they are there.
        assert_eq!(client.get_bytes(b"x:soon").unwrap(), Some(b"v".to_vec()));

        wait_until_past(soon);
        assert_eq!(client.get_bytes(b"x:soon").unwrap(), None, "{engine}");
        assert_eq!(
            client
                .get_many_bytes(&[b"x:soon", b"x:batch", b"x:stays"])
                .unwrap(),
            [None, None, Some(b"v".to_vec())],
            "{engine}"
        );
        assert_eq!(client.expiry_bytes(b"x:batch").unwrap(), KeyExpiry::Missing);
        assert!(!client.persist_bytes(b"x:soon").unwrap());
        assert!(!client
            .expire_at_bytes(b"x:soon", an_hour_from_now())
            .unwrap());
        assert_eq!(
            walk(&mut client, 10, &ScanFilter::prefix(b"x:")),
            [b"x:stays".to_vec()],
            "{engine}"
        );
        // Compare-and-set sees an expired key as not set.
        assert!(!client
            .compare_and_set_bytes(b"x:soon", Some(b"v"), Some(b"w"))
            .unwrap());
        assert!(client
            .compare_and_set_bytes(b"x:soon", None, Some(b"new"))
            .unwrap());
        assert_eq!(client.expiry_bytes(b"x:soon").unwrap(), KeyExpiry::Never);
        // Removing an expired key: it is not set.
        assert!(matches!(
            client.remove_bytes(b"x:batch"),
            Err(KvsError::KeyNotFound)
        ));
    }
}

#[test]
fn concurrent_clients_count_exactly_with_update_bytes() {
    const THREADS: usize = 4;
    const INCREMENTS: usize = 50;
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let (_server, mut client) = start(&dir, engine);
        let later = an_hour_from_now();
        client
            .set_with_deadline_bytes(b"counter", b"0", later)
            .unwrap();
        let addr = client.addr().to_owned();
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let addr = addr.clone();
                thread::spawn(move || {
                    let mut client = KvsClient::connect(addr.as_str()).unwrap();
                    let mut calls = 0;
                    for _ in 0..INCREMENTS {
                        client
                            .update_bytes(b"counter", |old| {
                                calls += 1;
                                let n: usize = old.map_or(0, |v| {
                                    std::str::from_utf8(v).unwrap().parse().unwrap()
                                });
                                Some((n + 1).to_string().into_bytes())
                            })
                            .unwrap();
                    }
                    calls
                })
            })
            .collect();
        let calls: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(
            client.get("counter".to_owned()).unwrap(),
            Some((THREADS * INCREMENTS).to_string()),
            "{engine} ({calls} calls of f)"
        );
        // update keeps the deadline, as compare-and-set does.
        assert_eq!(
            client.expiry_bytes(b"counter").unwrap(),
            KeyExpiry::At(later)
        );
        // None out removes; a missing key left missing writes nothing and answers None.
        assert_eq!(client.update_bytes(b"counter", |_| None).unwrap(), None);
        assert_eq!(client.get_bytes(b"counter").unwrap(), None);
        assert_eq!(client.update_bytes(b"counter", |_| None).unwrap(), None);
        assert_eq!(
            client
                .update_bytes(b"fresh", |old| {
                    assert_eq!(old, None);
                    Some(b"made".to_vec())
                })
                .unwrap(),
            Some(b"made".to_vec())
        );
        assert_eq!(client.expiry_bytes(b"fresh").unwrap(), KeyExpiry::Never);
    }
}

#[test]
fn a_scan_walk_while_another_client_writes_returns_every_key_present_throughout() {
    const STABLE: usize = 1000;
    const CHURN: usize = 2000;
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let (_server, mut client) = start(&dir, engine);
        let stable: Vec<Vec<u8>> = (0..STABLE)
            .map(|i| format!("stable:{i:04}").into_bytes())
            .collect();
        for chunk in stable.chunks(100) {
            let mut batch = WriteBatch::new();
            for key in chunk {
                batch.set(key, b"v");
            }
            client.apply_batch(&batch).unwrap();
        }
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let addr = client.addr().to_owned();
            let done = done.clone();
            thread::spawn(move || {
                let mut client = KvsClient::connect(addr.as_str()).unwrap();
                for i in 0..CHURN {
                    client
                        .set_bytes(format!("churn:{i}").as_bytes(), b"v")
                        .unwrap();
                    if i >= 10 {
                        client
                            .remove_bytes(format!("churn:{}", i - 10).as_bytes())
                            .unwrap();
                    }
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut walks = 0;
        loop {
            let writer_done = done.load(Ordering::SeqCst);
            let seen: HashSet<Vec<u8>> = walk(&mut client, 10, &ScanFilter::all())
                .into_iter()
                .collect();
            walks += 1;
            for key in &stable {
                assert!(
                    seen.contains(key),
                    "{engine}: walk {walks} missed {:?}",
                    String::from_utf8_lossy(key)
                );
            }
            if writer_done {
                break;
            }
        }
        writer.join().unwrap();

        // Filters travel too: a prefix, a pattern, both.
        let mut under_prefix = walk(&mut client, 7, &ScanFilter::prefix(b"stable:00"));
        under_prefix.sort();
        assert_eq!(under_prefix, stable[..100], "{engine}");
        let mut matching = walk(&mut client, 50, &ScanFilter::pattern(b"stable:*9"));
        matching.sort();
        let want: Vec<Vec<u8>> = stable
            .iter()
            .filter(|k| k.ends_with(b"9"))
            .cloned()
            .collect();
        assert_eq!(matching, want, "{engine}");
        let both = ScanFilter {
            prefix: b"stable:01".to_vec(),
            pattern: Some(b"*[05]".to_vec()),
        };
        let mut found = walk(&mut client, 1000, &both);
        found.sort();
        let want: Vec<Vec<u8>> = stable[100..200]
            .iter()
            .filter(|k| k.ends_with(b"0") || k.ends_with(b"5"))
            .cloned()
            .collect();
        assert_eq!(found, want, "{engine}");
    }
}

#[test]
fn scan_pages_shrink_to_fit_the_frame_limit() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        // 20 keys of 20 kB each are 400 kB: no page of more than 4 of them fits in 100 kB.
        let server = ServerProcess::start(
            dir.path(),
            &["--engine", engine, "--max-frame-bytes", "100000"],
        );
        let mut client = KvsClient::connect(server.addr).unwrap();
        let keys: Vec<Vec<u8>> = (0..20u8)
            .map(|i| {
                let mut key = vec![b'k'; 20_000];
                key[0] = i;
                key
            })
            .collect();
        for key in &keys {
            client.set_bytes(key, b"v").unwrap();
        }
        let mut pages = 0;
        let mut seen = HashSet::new();
        let mut cursor = 0;
        loop {
            let page = client.scan_bytes(cursor, 1000, &ScanFilter::all()).unwrap();
            assert!(page.keys.len() <= 4, "{engine}: {} keys", page.keys.len());
            seen.extend(page.keys);
            pages += 1;
            cursor = page.cursor;
            if cursor == 0 {
                break;
            }
        }
        assert!(pages >= 5, "{engine}: {pages} pages");
        assert_eq!(seen, keys.into_iter().collect(), "{engine}");
    }
}

#[test]
fn a_checkpoint_over_the_wire_opens_as_a_store() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let (_server, mut client) = start(&dir, engine);
        let later = an_hour_from_now();
        client.set_bytes(b"a", b"1").unwrap();
        client.set_with_deadline_bytes(b"t", b"2", later).unwrap();
        let elsewhere = TempDir::new().unwrap();
        let dest = elsewhere.path().join("checkpoint");
        client.checkpoint(&dest).unwrap();
        // Writes after the checkpoint are not in it.
        client.set_bytes(b"after", b"3").unwrap();

        // The same destination again: refused, and the copy is left as it is.
        match client.checkpoint(&dest) {
            Err(KvsError::Remote { kind, message }) => {
                assert_ne!(kind, ErrorKind::Protocol, "{message}");
            }
            other => panic!("{engine}: a second checkpoint into {dest:?} gave {other:?}"),
        }

        let copy = AnyEngine::open(&dest, None).unwrap();
        assert_eq!(
            copy.get_bytes(b"a").unwrap(),
            Some(b"1".to_vec()),
            "{engine}"
        );
        assert_eq!(
            copy.expiry_bytes(b"t").unwrap(),
            KeyExpiry::At(later),
            "{engine}"
        );
        assert_eq!(copy.get_bytes(b"after").unwrap(), None, "{engine}");
        assert_eq!(copy.len().unwrap(), 2, "{engine}");
    }
}

#[test]
fn a_checkpoint_path_that_is_not_utf8_is_refused_before_sending() {
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new().unwrap();
    let (_server, mut client) = start(&dir, "kvs");
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/tmp/not-\xff-utf8"));
    match client.checkpoint(path) {
        Err(KvsError::InvalidArgument(message)) => assert!(message.contains("UTF-8"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    client.set_bytes(b"still", b"served").unwrap();
}

/// The exact reply bytes of each new request, as a client in another language would read
/// them off the socket.
#[test]
fn engine_v2_replies_have_the_documented_bytes() {
    for engine in ENGINES {
        let dir = TempDir::new().unwrap();
        let server = ServerProcess::start(dir.path(), &["--engine", engine]);
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let ops = [
            Op::Set {
                key: b"k",
                value: b"v",
                deadline: None,
            },
            Op::Remove { key: b"j" },
        ];
        let keys: [&[u8]; 2] = [b"k", b"j"];
        let deadline: u64 = 1 << 50;
        let elsewhere = TempDir::new().unwrap();
        let checkpoint = elsewhere.path().join("copy");
        let checkpoint = checkpoint.to_str().unwrap();
        let cases: Vec<(Request<'_>, Vec<u8>)> = vec![
            (
                Request::ApplyBatch {
                    ops: List::new(&ops),
                },
                vec![0x00],
            ),
            (
                Request::GetMany {
                    keys: List::new(&keys),
                },
                vec![0x04, 4, 0x01, 1, b'v', 0x00],
            ),
            (
                Request::SetWithDeadline {
                    key: b"t",
                    value: b"w",
                    deadline,
                },
                vec![0x00],
            ),
            (Request::Expiry { key: b"k" }, vec![0x05, 0x01]),
            (
                Request::Expiry { key: b"t" },
                vec![0x05, 0x02, 253, 0, 0, 0, 0, 0, 0, 4, 0],
            ),
            (Request::Expiry { key: b"j" }, vec![0x05, 0x00]),
            (Request::Persist { key: b"t" }, vec![0x07, 0x01]),
            (Request::Persist { key: b"t" }, vec![0x07, 0x00]),
            (
                Request::ExpireAt {
                    key: b"nope",
                    deadline,
                },
                vec![0x07, 0x00],
            ),
            (Request::Remove { key: b"t" }, vec![0x00]),
            (
                Request::Scan {
                    cursor: 0,
                    count: 100,
                    prefix: b"",
                    pattern: None,
                },
                vec![0x06, 0x00, 2, 1, b'k'],
            ),
            (Request::Checkpoint { path: checkpoint }, vec![0x00]),
        ];
        for (request, want) in cases {
            stream.write_all(&frame(request)).unwrap();
            assert_eq!(
                read_payload(&mut stream),
                want,
                "{engine}: reply to {request:?}"
            );
        }
    }
}

/// A server older than a request answers it as the current one answers a tag it does not
/// know: an `Error` of kind `Protocol`, then a close. A stand-in server replays that answer
/// to each newer request, and the client names the request the server does not know.
#[test]
fn a_client_asking_an_older_server_is_told_which_request_it_does_not_know() {
    // What a real kvs-server answers to a tag it does not know.
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(&[0, 0, 0, 1, 0xfe]).unwrap();
    let payload = read_payload(&mut stream);
    let Response::Error { kind, message } = Response::decode(&payload).unwrap() else {
        panic!("not an error: {payload:?}");
    };
    assert_eq!(kind, ErrorKind::Protocol, "{message}");
    let mut answer = (payload.len() as u32).to_be_bytes().to_vec();
    answer.extend_from_slice(&payload);

    // A stand-in for an older server: reads one request per connection, replays the answer
    // and closes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    const REQUESTS: usize = 8;
    let old_server = thread::spawn(move || {
        for _ in 0..REQUESTS {
            let (mut conn, _) = listener.accept().unwrap();
            let mut header = [0; 4];
            conn.read_exact(&mut header).unwrap();
            let mut request = vec![0; u32::from_be_bytes(header) as usize];
            conn.read_exact(&mut request).unwrap();
            conn.write_all(&answer).unwrap();
        }
    });
    let mut client = KvsClient::connect(addr).unwrap();
    let mut batch = WriteBatch::new();
    batch.set(b"k", b"v");
    let elsewhere = TempDir::new().unwrap();
    let outcomes: [(&str, kvs::Result<()>); REQUESTS] = [
        ("ApplyBatch", client.apply_batch(&batch)),
        ("GetMany", client.get_many_bytes(&[b"k"]).map(drop)),
        (
            "SetWithDeadline",
            client.set_with_deadline_bytes(b"k", b"v", 1),
        ),
        ("ExpireAt", client.expire_at_bytes(b"k", 1).map(drop)),
        ("Persist", client.persist_bytes(b"k").map(drop)),
        ("Expiry", client.expiry_bytes(b"k").map(drop)),
        (
            "Scan",
            client.scan_bytes(0, 10, &ScanFilter::all()).map(drop),
        ),
        ("Checkpoint", client.checkpoint(elsewhere.path())),
    ];
    for (name, outcome) in outcomes {
        match outcome {
            Err(KvsError::Remote {
                kind: ErrorKind::Protocol,
                message,
            }) => assert!(
                message.contains(&format!("does not know the {name} request"))
                    && message.contains(&addr.to_string()),
                "{message}"
            ),
            other => panic!("{name}: {other:?}"),
        }
    }
    old_server.join().unwrap();
}
