//! Hostile network input against the decoders and a live `kvs-server`: random, truncated,
//! oversized and mutated frames; clients trickling a byte at a time; 2,000 connections opened
//! at once; clients that never read their replies. Through all of it the server stays up,
//! its resident memory stays bounded, and a normal client is served promptly.
//!
//! The random cases come from a small seeded generator (the same idea as a property test,
//! without a dependency): `KVS_HOSTILE_CASES` scales them (default 20,000 decoder cases and
//! 300 hostile connections), `KVS_HOSTILE_SEED` replays a run. The fuzz targets in `fuzz/`
//! run the same decoders under libFuzzer.
#![cfg(target_os = "linux")]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use kvs::protocol::{frame, FrameStatus, Request};
use kvs::resp::frame::{Limits, RequestParser};
use kvs::KvsClient;
use kvs_tests::ServerProcess;
use tempfile::TempDir;

/// Resident memory the server may use through any of these tests. Generous: an idle server
/// is a few MiB; the point is that hostile clients cannot make it grow without bound.
const RSS_LIMIT_KIB: u64 = 256 << 10;

/// What "promptly" means for a normal client beside hostile ones. The target is well under a
/// second; the bound asserted is loose so that a slow, busy machine does not fail the test.
const SERVE_BOUND: Duration = Duration::from_secs(5);

/// SplitMix64: small, seedable, reproducible.
struct Rng(u64);

impl Rng {
    fn new(test: u64) -> Rng {
        let seed = std::env::var("KVS_HOSTILE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x686f_7374);
        println!("seed {seed} (set KVS_HOSTILE_SEED to replay)");
        Rng(seed ^ test.wrapping_mul(0x1000_0001))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn scale() -> usize {
    std::env::var("KVS_HOSTILE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000)
}

/// A valid request frame with random key and value sizes.
fn valid_frame(rng: &mut Rng, max: usize) -> Vec<u8> {
    let key = {
        let n = rng.below(40);
        rng.bytes(n)
    };
    let value_len = if rng.below(8) == 0 {
        rng.below(3000)
    } else {
        rng.below(60)
    };
    let value = rng.bytes(value_len);
    let request = match rng.below(3) {
        0 => Request::Get { key: &key },
        1 => Request::Set {
            key: &key,
            value: &value,
        },
        _ => Request::Remove { key: &key },
    };
    let mut out = Vec::new();
    request.encode_frame(&mut out, max).unwrap();
    out
}

/// A hostile byte stream: valid frames, then damage of one kind or another.
fn hostile_stream(rng: &mut Rng, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(4) {
        out.extend(valid_frame(rng, max));
    }
    let mut last = valid_frame(rng, max);
    match rng.below(7) {
        // Truncated.
        0 => last.truncate(rng.below(last.len())),
        // Bytes flipped anywhere, length prefix included.
        1 => {
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(last.len());
                last[at] ^= 1 << rng.below(8);
            }
        }
        // Oversized, or just over the limit.
        2 => {
            let len = if rng.below(2) == 0 {
                u32::MAX
            } else {
                max as u32 + 1
            };
            last[..4].copy_from_slice(&len.to_be_bytes());
        }
        // Random bytes inside, or after, a frame.
        3 => {
            let at = rng.below(last.len());
            let junk = {
                let n = 1 + rng.below(50);
                rng.bytes(n)
            };
            last.splice(at..at, junk);
        }
        // Length prefix larger than the payload that follows.
        4 => {
            let len = (last.len() - 4 + 1 + rng.below(100)) as u32;
            last[..4].copy_from_slice(&len.to_be_bytes());
        }
        // Pure noise (may look like RESP).
        5 => {
            last = {
                let n = rng.below(200);
                rng.bytes(n)
            }
        }
        // Valid: nothing wrong with this one.
        _ => {}
    }
    out.extend(last);
    out
}

/// Runs the server's kvs-protocol reading path on `input`: frames cut from it one after
/// another, each payload decoded. Checks the properties every answer must have.
fn decode_stream(input: &[u8], max: usize) -> (usize, bool) {
    let mut rest = input;
    let mut decoded = 0;
    loop {
        match frame::check(rest, max) {
            Ok(FrameStatus::Incomplete { needed }) => {
                assert!(needed > rest.len() && needed <= frame::HEADER_LEN + max);
                return (decoded, false);
            }
            Ok(FrameStatus::Complete { payload }) => {
                assert!(payload.end <= rest.len() && payload.len() <= max);
                let bytes = &rest[payload.clone()];
                match Request::decode(bytes) {
                    Ok(request) => {
                        // It re-encodes to what decodes the same (not always the same bytes:
                        // a length may be written longer than needed, `251 0 0` for 0).
                        let mut again = Vec::new();
                        request.encode_frame(&mut again, max).unwrap();
                        assert!(again.len() <= frame::HEADER_LEN + bytes.len());
                        let back = Request::decode(&again[frame::HEADER_LEN..]).unwrap();
                        assert_eq!(back, request);
                        decoded += 1;
                    }
                    Err(e) => {
                        assert!(matches!(e, kvs::KvsError::Protocol(_)), "{e}");
                        return (decoded, true);
                    }
                }
                rest = &rest[payload.end..];
            }
            Err(e) => {
                assert!(matches!(e, kvs::KvsError::Protocol(_)), "{e}");
                return (decoded, true);
            }
        }
    }
}

#[test]
fn decoders_survive_random_truncated_oversized_and_mutated_input() {
    let mut rng = Rng::new(1);
    let max = 4096;
    let cases = scale();
    let (mut requests, mut refused) = (0, 0);
    for _ in 0..cases {
        let stream = hostile_stream(&mut rng, max);
        let (decoded, bad) = decode_stream(&stream, max);
        requests += decoded;
        refused += bad as usize;
    }
    // Valid frames, cut anywhere: never an error, only "incomplete" at the cut.
    for _ in 0..cases / 10 {
        let whole = valid_frame(&mut rng, max);
        let cut = rng.below(whole.len());
        assert_eq!(decode_stream(&whole[..cut], max), (0, false));
        assert_eq!(decode_stream(&whole, max), (1, false));
    }
    // The RESP parser: the same answer whether the bytes come at once or a piece at a time.
    let limits = Limits::for_frame_len(max);
    for _ in 0..cases {
        let mut input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n".to_vec();
        match rng.below(4) {
            0 => {
                input = {
                    let n = rng.below(100);
                    rng.bytes(n)
                }
            }
            1 => input.truncate(rng.below(input.len())),
            2 => {
                let at = rng.below(input.len());
                input[at] = rng.next() as u8;
            }
            _ => {
                let at = rng.below(input.len());
                let junk = {
                    let n = 1 + rng.below(8);
                    rng.bytes(n)
                };
                input.splice(at..at, junk);
            }
        }
        let whole = RequestParser::new(limits).parse(&input);
        let mut pieces = RequestParser::new(limits);
        let step = 1 + rng.below(7);
        let mut end = 0;
        let mut last = pieces.parse(&[]);
        while end < input.len() {
            end = (end + step).min(input.len());
            last = pieces.parse(&input[..end]);
            if !matches!(last, Ok(kvs::resp::frame::RequestStatus::Incomplete { .. })) {
                break;
            }
        }
        if end == input.len() {
            assert_eq!(format!("{whole:?}"), format!("{last:?}"), "{input:?}");
        }
    }
    println!(
        "decoders: {cases} hostile kvs streams ({requests} requests decoded, {refused} refused), \
         {} cut frames, {cases} RESP inputs; no panic",
        cases / 10
    );
}

/// The server's resident memory, from /proc/<pid>/status.
fn rss_kib(server: &ServerProcess) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS: the server exited; stderr:\n{}", server.stderr()))
}

/// A normal client is served, within [`SERVE_BOUND`]; returns how long it took.
fn serve_normal_client(server: &ServerProcess, key: &str) -> Duration {
    let started = Instant::now();
    let mut client = KvsClient::connect(server.addr).unwrap();
    client.set(key.to_owned(), "ok".to_owned()).unwrap();
    assert_eq!(client.get(key.to_owned()).unwrap().as_deref(), Some("ok"));
    let took = started.elapsed();
    assert!(took < SERVE_BOUND, "a normal client took {took:?}");
    took
}

/// Checks the server is alive, within its memory bound, and serving; prints the figures.
fn assert_healthy(server: &ServerProcess, what: &str) {
    let took = serve_normal_client(server, what);
    // Also says the process is alive: an exited one (a zombie) has no VmRSS.
    let rss = rss_kib(server);
    assert!(rss < RSS_LIMIT_KIB, "{what}: server RSS {rss} KiB");
    println!("{what}: server RSS {rss} KiB, a normal client served in {took:?}");
}

/// Raises this process's soft descriptor limit to its hard limit (servers started afterwards
/// inherit it); returns the new limit.
fn raise_fd_limit() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass, for the call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    limit.rlim_cur
}

#[test]
fn live_server_survives_hostile_streams() {
    let dir = TempDir::new().unwrap();
    let max = 64 << 10;
    let server = ServerProcess::start(
        dir.path(),
        &[
            "--max-frame-bytes",
            &max.to_string(),
            "--client-timeout",
            "2",
        ],
    );
    let mut bystander = KvsClient::connect(server.addr).unwrap();
    let addr = server.addr;
    let connections = (scale() / 60).max(50);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                let mut rng = Rng::new(100 + t);
                for _ in 0..connections / 4 {
                    let stream = hostile_stream(&mut rng, max);
                    let mut conn = TcpStream::connect(addr).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    // The server may close on the damage before reading everything.
                    let _ = conn.write_all(&stream);
                    let _ = conn.shutdown(Shutdown::Write);
                    // Replies to the valid frames, then the server closes: never a hang.
                    let mut sink = Vec::new();
                    match conn.read_to_end(&mut sink) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                        Err(e) => panic!("the server neither answered nor closed: {e}"),
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    bystander
        .set("bystander".into(), "still here".into())
        .unwrap();
    assert_healthy(&server, &format!("after {connections} hostile streams"));
}

#[test]
fn oversized_announcements_do_not_grow_memory() {
    // 200 clients each announce a frame of the largest allowed size (32 MiB) and send 1 KiB
    // of it: the server must not hold 6 GiB for them.
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path(), &["--client-timeout", "60"]);
    let len = kvs::protocol::DEFAULT_MAX_FRAME_LEN as u32;
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut conn = TcpStream::connect(server.addr).unwrap();
        conn.write_all(&len.to_be_bytes()).unwrap();
        conn.write_all(&[0x01; 1024]).unwrap();
        conns.push(conn);
    }
    thread::sleep(Duration::from_millis(500));
    assert_healthy(&server, "200 clients announcing 32 MiB frames");
}

#[test]
fn slow_clients_trickling_a_byte_at_a_time_are_served() {
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path(), &["--client-timeout", "5"]);
    let addr = server.addr;
    // 20 clients send a set one byte per second for 4 seconds (progress each time, so they
    // are not timed out), then the rest at once, and get their reply.
    let barrier = Arc::new(Barrier::new(21));
    let slow: Vec<_> = (0..20)
        .map(|i| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let key = format!("slow{i}");
                let mut request = Vec::new();
                Request::Set {
                    key: key.as_bytes(),
                    value: b"trickled",
                }
                .encode_frame(&mut request, 1 << 20)
                .unwrap();
                let mut conn = TcpStream::connect(addr).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                barrier.wait();
                for byte in &request[..4] {
                    conn.write_all(&[*byte]).unwrap();
                    thread::sleep(Duration::from_secs(1));
                }
                conn.write_all(&request[4..]).unwrap();
                let mut reply = [0u8; 5];
                conn.read_exact(&mut reply).unwrap();
                assert_eq!(reply, [0, 0, 0, 1, 0], "Response::Ok");
            })
        })
        .collect();
    barrier.wait();
    thread::sleep(Duration::from_millis(1500));
    assert_healthy(&server, "20 clients trickling a byte per second");
    for thread in slow {
        thread.join().unwrap();
    }
    let mut client = KvsClient::connect(addr).unwrap();
    assert_eq!(
        client.get("slow19".into()).unwrap().as_deref(),
        Some("trickled")
    );
}

#[test]
fn two_thousand_connections_opened_at_once() {
    let limit = raise_fd_limit();
    if limit < 4_200 {
        println!("SKIPPED: the descriptor limit is {limit}; 2,000 connections need ~4,200");
        return;
    }
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let addr = server.addr;
    let per_thread = 250;
    let barrier = Arc::new(Barrier::new(8));
    let started = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let conns: Vec<TcpStream> = (0..per_thread)
                    .map(|_| TcpStream::connect(addr).unwrap())
                    .collect();
                // Every one of them is served, while all are open.
                let mut served = 0;
                for (i, conn) in conns.iter().enumerate() {
                    let mut conn = conn;
                    conn.set_read_timeout(Some(Duration::from_secs(60)))
                        .unwrap();
                    let key = format!("t{t}-c{i}");
                    let mut request = Vec::new();
                    Request::Set {
                        key: key.as_bytes(),
                        value: b"v",
                    }
                    .encode_frame(&mut request, 1 << 20)
                    .unwrap();
                    conn.write_all(&request).unwrap();
                    let mut reply = [0u8; 5];
                    conn.read_exact(&mut reply).unwrap();
                    assert_eq!(reply, [0, 0, 0, 1, 0]);
                    served += 1;
                }
                (served, conns)
            })
        })
        .collect();
    let mut open = Vec::new();
    let mut served = 0;
    for thread in threads {
        let (n, conns) = thread.join().unwrap();
        served += n;
        open.extend(conns);
    }
    let took = started.elapsed();
    assert_eq!(served, 2_000);
    println!("2,000 connections opened at once, each served once, in {took:?}");
    assert_healthy(&server, "with 2,000 connections open");
    drop(open);
}

#[test]
fn clients_that_never_read_replies_do_not_grow_memory() {
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path(), &["--client-timeout", "3"]);
    let mut client = KvsClient::connect(server.addr).unwrap();
    client.set_bytes(b"big", &vec![b'x'; 64 << 10]).unwrap();
    let mut get = Vec::new();
    Request::Get { key: b"big" }
        .encode_frame(&mut get, 1 << 20)
        .unwrap();
    let batch: Vec<u8> = get.iter().copied().cycle().take(get.len() * 200).collect();
    // 50 clients pipeline gets of a 64 KiB value and never read: 640 MiB of replies if the
    // server queued them all.
    let greedy: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut conn = TcpStream::connect(server.addr).unwrap();
            conn.set_write_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            for _ in 0..10 {
                if conn.write_all(&batch).is_err() {
                    break; // the server stopped reading, as it should
                }
            }
            conn
        })
        .collect();
    // Right away the workers are still filling those clients' socket buffers (megabytes
    // each on loopback); once they are full, the greedy clients cost nothing.
    assert_healthy(&server, "50 clients never reading 64 KiB replies, at once");
    thread::sleep(Duration::from_secs(1));
    assert_healthy(
        &server,
        "50 clients never reading 64 KiB replies, 1 s later",
    );
    // After the client timeout they are disconnected.
    server.wait_for_log("no progress");
    drop(greedy);
}
