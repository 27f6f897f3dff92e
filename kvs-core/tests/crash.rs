//! Crash tests with real processes: a child process writes to a store and reports each
//! write on stdout before it starts and again once it returned; the parent kills it with
//! SIGKILL at chosen moments, reopens the store and checks every acknowledged write and remove.
//! The one write in flight at the kill may or may not be there, but nothing else may differ.
//!
//! The child is this test binary itself, re-run with `--ignored --exact <child test>` and the
//! directory in an environment variable.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kvs::{KvStore, KvStoreOptions, KvsEngine, KvsError};
use tempfile::TempDir;

const DIR_VAR: &str = "KVS_CRASH_TEST_DIR";
const CYCLE_VAR: &str = "KVS_CRASH_TEST_CYCLE";

fn value_for(cycle: u64, i: u64) -> String {
    // Sizes vary so that kills land inside records of different lengths.
    format!("c{cycle}-v{i}-{}", "p".repeat((i * 37 % 300) as usize))
}

/// The child: writes until killed. Run only by the parent test.
#[test]
#[ignore = "run as a child process by the crash tests"]
fn crash_child_writer() {
    let (Ok(dir), Ok(cycle)) = (std::env::var(DIR_VAR), std::env::var(CYCLE_VAR)) else {
        panic!("{DIR_VAR} and {CYCLE_VAR} must be set");
    };
    let cycle: u64 = cycle.parse().expect("cycle number");
    // A small compaction threshold, so that kills also land inside compactions.
    let store = KvStore::open_with(
        &dir,
        KvStoreOptions::default().compaction_min_stale(16 << 10),
    )
    .expect("child open");
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for i in 0..200_000u64 {
        let key = format!("c{cycle}-k{}", i % 500);
        if i % 7 == 3 {
            writeln!(out, "rm {key}").expect("stdout");
            out.flush().expect("stdout");
            match store.remove(key.clone()) {
                Ok(()) | Err(KvsError::KeyNotFound) => {}
                Err(e) => panic!("remove failed: {e}"),
            }
        } else {
            let value = value_for(cycle, i);
            writeln!(out, "set {key} {value}").expect("stdout");
            out.flush().expect("stdout");
            store.set(key.clone(), value.clone()).expect("set");
        }
        writeln!(out, "ok").expect("stdout");
        out.flush().expect("stdout");
    }
}

/// What the child reported: the acknowledged operations, and the one in flight when it died.
struct Report {
    acked: Vec<String>,
    in_flight: Option<String>,
}

fn run_child_and_kill(dir: &Path, cycle: u64, kill_after_acks: usize) -> Report {
    let exe = std::env::current_exe().expect("test executable");
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .env(CYCLE_VAR, cycle.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut acked = Vec::new();
    let mut in_flight = None;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let mut killed = false;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("reading child output: {e}"),
        }
        if line.starts_with("set ") || line.starts_with("rm ") {
            in_flight = Some(line.trim_end().to_string());
        } else if line.trim_end() == "ok" {
            acked.extend(in_flight.take());
        }
        if !killed && acked.len() >= kill_after_acks {
            child.kill().expect("kill child");
            killed = true;
        }
    }
    let status = child.wait().expect("wait child");
    assert!(killed, "child finished before being killed: {status}");
    Report { acked, in_flight }
}

/// Applies reported operations to the model (a remove of a missing key leaves it missing).
fn apply(model: &mut BTreeMap<String, Option<String>>, acks: &[String]) {
    for ack in acks {
        let mut parts = ack.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("set"), Some(key), Some(value)) => {
                model.insert(key.to_string(), Some(value.to_string()));
            }
            (Some("rm"), Some(key), None) => {
                model.insert(key.to_string(), None);
            }
            _ => panic!("unexpected child output {ack:?}"),
        }
    }
}

/// Checks the reopened store against the model; the in-flight operation may have happened or
/// not. Returns the store and the model as the store decided it.
fn verify(
    dir: &Path,
    model: &BTreeMap<String, Option<String>>,
    in_flight: Option<&String>,
) -> (KvStore, BTreeMap<String, Option<String>>) {
    let store = KvStore::open(dir).expect("reopen after kill");
    let mut with_in_flight = model.clone();
    apply(
        &mut with_in_flight,
        &in_flight.cloned().into_iter().collect::<Vec<_>>(),
    );
    let mut matches_without = true;
    let mut matches_with = true;
    for key in with_in_flight.keys() {
        let actual = store.get(key.clone()).expect("get after kill");
        let without = model.get(key).cloned().flatten();
        let with = with_in_flight.get(key).cloned().flatten();
        assert!(
            actual == without || actual == with,
            "key {key}: store has {actual:?}, acknowledged state is {without:?}"
        );
        matches_without &= actual == without;
        matches_with &= actual == with;
    }
    assert!(matches_without || matches_with);
    (
        store,
        if matches_without {
            model.clone()
        } else {
            with_in_flight
        },
    )
}

#[test]
fn every_acknowledged_write_survives_kill_9() {
    let dir = TempDir::new().unwrap();
    let mut model = BTreeMap::new();
    // A spread of kill points: early, mid-stream, and after compactions have happened.
    let kill_points = [1usize, 50, 700, 3_000, 9_000, 17, 2_500, 400];
    for (cycle, &kill_after) in kill_points.iter().enumerate() {
        let report = run_child_and_kill(dir.path(), cycle as u64, kill_after);
        assert!(report.acked.len() >= kill_after);
        apply(&mut model, &report.acked);
        let (store, decided) = verify(dir.path(), &model, report.in_flight.as_ref());
        model = decided;
        // The reopened store keeps working.
        store.set("after-crash".into(), cycle.to_string()).unwrap();
        model.insert("after-crash".into(), Some(cycle.to_string()));
    }
}

#[test]
fn a_second_process_gets_a_clear_lock_error() {
    let dir = TempDir::new().unwrap();
    let exe = std::env::current_exe().expect("test executable");
    let mut child = Command::new(exe)
        .args(["--ignored", "--exact", "crash_child_writer", "--nocapture"])
        .env(DIR_VAR, dir.path())
        .env(CYCLE_VAR, "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    // Wait until the child holds the store (its first acknowledged write).
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while line.trim_end() != "ok" {
        line.clear();
        let read = reader.read_line(&mut line).expect("child output");
        assert!(read > 0, "child exited before writing");
    }

    let result = KvStore::open_with(
        dir.path(),
        KvStoreOptions::default().lock_wait(Duration::from_millis(100)),
    );
    match result {
        Err(e @ KvsError::Locked { .. }) => {
            assert!(e.to_string().contains("locked"), "{e}");
        }
        Err(e) => panic!("expected a lock error, got {e}"),
        Ok(_) => panic!("two processes opened the same store"),
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    drop(reader);
    // Once the writer is gone, the directory opens and holds what it wrote.
    let store = KvStore::open(dir.path()).expect("open after the other process died");
    assert!(store.len().unwrap() >= 1);
}
