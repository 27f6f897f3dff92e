//! Load and chaos: 64 clients doing mixed set/get/rm against a real `kvs-server` while it is
//! killed with SIGKILL and restarted, again and again. Afterwards (after one last kill) every
//! key is read back and checked against what its client was told.
//!
//! Each client owns its keys, so it alone knows what each may hold: after an acknowledged
//! write exactly that value; after a request whose connection broke, either the old or the
//! new state (the server may or may not have carried it out). A get must always return one
//! of the possible states, and then the key is known again.
//!
//! The run lasts `KVS_CHAOS_SECS` seconds (default 10) with a kill every
//! `KVS_CHAOS_SECS / 5` seconds; the counts are printed (run with `--nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use kvs::{KvsClient, KvsError};
use kvs_tests::ServerProcess;
use tempfile::TempDir;

const CLIENTS: usize = 64;
const KEYS_PER_CLIENT: u64 = 40;

/// What a client saw.
#[derive(Default)]
struct Tally {
    requests: u64,
    acknowledged: u64,
    errors: u64,
    /// For each key, every state it may be in (`None`: not set).
    possible: BTreeMap<String, BTreeSet<Option<String>>>,
}

/// A small xorshift generator: each client its own, reproducible sequence.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

enum Op {
    Set(String),
    Get,
    Remove,
}

fn client_loop(id: usize, addr: Arc<RwLock<SocketAddr>>, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ ((id as u64 + 1) * 0x9e37_79b9));
    let mut client: Option<KvsClient> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = client.as_mut() else {
            let current = *addr.read().unwrap();
            match KvsClient::connect_timeout(current, Duration::from_secs(5)) {
                Ok(mut c) => {
                    c.set_timeout(Some(Duration::from_secs(30))).unwrap();
                    client = Some(c);
                }
                Err(_) => {
                    // The server is down or restarting.
                    tally.errors += 1;
                    thread::sleep(Duration::from_millis(20));
                }
            }
            continue;
        };
        n += 1;
        let key = format!("c{id}-k{}", rng.below(KEYS_PER_CLIENT));
        let op = match rng.below(10) {
            0..=4 => Op::Set(format!("c{id}-v{n}")),
            5..=7 => Op::Get,
            _ => Op::Remove,
        };
        let possible = tally
            .possible
            .entry(key.clone())
            .or_insert_with(|| BTreeSet::from([None]));
        tally.requests += 1;
        let result = match &op {
            Op::Set(value) => c.set(key.clone(), value.clone()).map(|()| None),
            Op::Get => c.get(key.clone()).map(Some),
            Op::Remove => c.remove(key.clone()).map(|()| None),
        };
        match (op, result) {
            (Op::Set(value), Ok(_)) => *possible = BTreeSet::from([Some(value)]),
            (Op::Get, Ok(got)) => {
                let got = got.flatten();
                assert!(
                    possible.contains(&got),
                    "client {id}: {key} read {got:?}, possible: {possible:?}"
                );
                *possible = BTreeSet::from([got]);
            }
            (Op::Remove, Ok(_)) => {
                assert!(
                    possible.iter().any(Option::is_some),
                    "client {id}: removed {key}, which cannot be set: {possible:?}"
                );
                *possible = BTreeSet::from([None]);
            }
            (Op::Remove, Err(KvsError::KeyNotFound)) => {
                assert!(
                    possible.contains(&None),
                    "client {id}: {key} not found, but it must be one of {possible:?}"
                );
                *possible = BTreeSet::from([None]);
            }
            (op, Err(KvsError::ConnectionLost { .. } | KvsError::Connect { .. })) => {
                // Carried out or not: both states are possible from now on.
                match op {
                    Op::Set(value) => {
                        possible.insert(Some(value));
                    }
                    Op::Remove => {
                        possible.insert(None);
                    }
                    Op::Get => {}
                }
                tally.errors += 1;
                client = None;
                continue;
            }
            (_, Err(e)) => panic!("client {id}: {key}: unexpected error {e}"),
        }
        tally.acknowledged += 1;
    }
    tally
}

#[test]
fn acknowledged_writes_survive_repeated_kill_9_under_load() {
    let secs: u64 = std::env::var("KVS_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let kills = 5;
    let dir = TempDir::new().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[]);
    let addr = Arc::new(RwLock::new(server.addr));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (addr, stop) = (addr.clone(), stop.clone());
            thread::spawn(move || client_loop(id, addr, stop))
        })
        .collect();

    let started = Instant::now();
    let period = Duration::from_secs(secs) / (kills + 1);
    for _ in 0..kills {
        thread::sleep(period);
        assert!(!server.signal_and_wait("KILL").success());
        server = ServerProcess::start(dir.path(), &[]);
        *addr.write().unwrap() = server.addr;
    }
    thread::sleep(period);
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    for client in clients {
        let tally = client.join().expect("a client thread failed");
        total.requests += tally.requests;
        total.acknowledged += tally.acknowledged;
        total.errors += tally.errors;
        total.possible.extend(tally.possible);
    }
    let elapsed = started.elapsed();

    // One more kill, so that nothing below is answered from a process that saw the writes.
    assert!(!server.signal_and_wait("KILL").success());
    let server = ServerProcess::start(dir.path(), &[]);
    let mut client = KvsClient::connect(server.addr).unwrap();
    let mut verified = 0;
    let mut uncertain = 0;
    for (key, possible) in &total.possible {
        let got = client.get(key.clone()).unwrap();
        assert!(
            possible.contains(&got),
            "{key} reads {got:?} after the last restart; acknowledged: {possible:?}"
        );
        verified += 1;
        if possible.len() > 1 {
            uncertain += 1;
        }
    }
    println!(
        "chaos: {CLIENTS} clients, {:.1} s, {} kill -9 + restarts: {} requests, {} acknowledged \
         ({:.0}/s), {} errors (connections lost or refused), {verified} keys verified ({uncertain} \
         with an unacknowledged write in flight at a kill)",
        elapsed.as_secs_f64(),
        kills + 1,
        total.requests,
        total.acknowledged,
        total.acknowledged as f64 / elapsed.as_secs_f64(),
        total.errors,
    );
    assert!(total.acknowledged > 0);
    assert_eq!(verified, total.possible.len());
}
