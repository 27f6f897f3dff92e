//! Crash tests with real processes: a child process writes to a store and reports each
//! write on stdout before it starts and again once it returned; the parent kills it with
//! SIGKILL at chosen moments, reopens the store and checks every acknowledged write and remove.
//! The one write in flight at the kill may or may not be there, but nothing else may differ.
//!
//! The child is this test binary itself, re-run with `--ignored --exact <child test>` and the
//! directory in an environment variable.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use kvs::{KvStore, KvStoreOptions, KvsEngine, KvsError, SyncPolicy};
use tempfile::TempDir;

mod support;

const DIR_VAR: &str = "KVS_CRASH_TEST_DIR";
const CYCLE_VAR: &str = "KVS_CRASH_TEST_CYCLE";
const COMPACT_VAR: &str = "KVS_CRASH_TEST_COMPACT";
const SYNC_VAR: &str = "KVS_CRASH_TEST_SYNC";
/// Live records per compaction step (see `KvStoreOptions::compaction_step_records`).
const STEP_VAR: &str = "KVS_CRASH_TEST_STEP";

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
    // A small compaction threshold and small files, so that kills also land inside
    // compactions, and compactions have several files to delete.
    let mut options = KvStoreOptions::default()
        .compaction_min_stale(16 << 10)
        .max_file_size(16 << 10);
    if let Ok(step) = std::env::var(STEP_VAR) {
        options = options.compaction_step_records(step.parse().expect("step records"));
    }
    let store = KvStore::open_with(&dir, options).expect("child open");
    let explicit_compaction = std::env::var_os(COMPACT_VAR).is_some();
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
        if explicit_compaction && i % 500 == 499 {
            store.compact().expect("compact");
        }
    }
}

/// What the child reported: the acknowledged operations, and the one in flight when it died.
struct Report {
    acked: Vec<String>,
    in_flight: Option<String>,
}

fn run_child_and_kill(dir: &Path, cycle: u64, kill_after_acks: usize) -> Report {
    run_child(dir, cycle, Some(kill_after_acks), &[])
}

/// Runs the child writer; kills it after `kill_after_acks` acknowledged operations, or (with
/// `None`) waits for it to die by itself at the crash point named in `env`.
fn run_child(
    dir: &Path,
    cycle: u64,
    kill_after_acks: Option<usize>,
    env: &[(&str, &str)],
) -> Report {
    run_named_child("crash_child_writer", dir, cycle, kill_after_acks, env)
}

/// [`run_child`] for the child test named `child`.
fn run_named_child(
    child: &str,
    dir: &Path,
    cycle: u64,
    kill_after_acks: Option<usize>,
    env: &[(&str, &str)],
) -> Report {
    let mut child = support::child_test(child)
        .env(DIR_VAR, dir)
        .env(CYCLE_VAR, cycle.to_string())
        .envs(env.iter().copied())
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
        if !killed && kill_after_acks.is_some_and(|n| acked.len() >= n) {
            child.kill().expect("kill child");
            killed = true;
        }
    }
    let status = child.wait().expect("wait child");
    if kill_after_acks.is_some() {
        assert!(killed, "child finished before being killed: {status}");
    } else {
        // It must have died at its crash point (SIGABRT), not finished or failed a test.
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(6),
            "child did not abort at its crash point: {status}"
        );
    }
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
    // 20 kill-and-reopen cycles on one directory by default; the slow suite sets
    // KVS_CRASH_CYCLES (e.g. 100). Kill points spread from the first write to thousands in,
    // past several compactions.
    let cycles: u64 = std::env::var("KVS_CRASH_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let dir = TempDir::new().unwrap();
    let mut model = BTreeMap::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for cycle in 0..cycles {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = 1 + (seed % 4_000) as usize;
        let report = run_child_and_kill(dir.path(), cycle, kill_after);
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
    let mut child = support::child_test("crash_child_writer")
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

/// After a reopen, the directory holds exactly the log files its MANIFEST lists as closed or
/// active: open finished or removed whatever the crash left half done.
fn assert_only_listed_files(dir: &Path, point: &str) {
    let listed: Vec<u32> = support::manifest_entries(dir)
        .into_iter()
        .filter(|&(_, state, _, _)| state != 3)
        .map(|(id, _, _, _)| id)
        .collect();
    let present: Vec<u32> = support::log_files_with_ids(dir)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(present, listed, "{point}: files on disk vs MANIFEST");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            !name.to_string_lossy().ends_with(".compacting"),
            "{point}: leftover {name:?}"
        );
    }
}

#[test]
fn every_crash_point_leaves_a_store_that_keeps_every_acknowledged_write() {
    // Each named point (see crash_point.rs), reached mid-stream after a few hundred writes
    // and a few compactions. The child aborts there; the parent reopens and checks.
    let points = [
        ("write:mid-record", "700"),
        ("write:before-return", "700"),
        // The 3rd rotation: file-size rotations and compactions' own rotations both count.
        ("rotate:sealed", "3"),
        ("rotate:created", "3"),
        ("rotate:manifest-written", "3"),
        ("compaction:output-written", "2"),
        ("compaction:output-synced", "2"),
        ("compaction:manifest-written", "2"),
        ("compaction:committed", "2"),
        ("compaction:deleted-one", "3"),
        ("compaction:done", "2"),
    ];
    for (point, nth) in points {
        let dir = TempDir::new().unwrap();
        let mut model = BTreeMap::new();
        let spec = format!("{point}:{nth}");
        let report = run_child(
            dir.path(),
            0,
            None,
            &[("KVS_CRASH_AT", &spec), (COMPACT_VAR, "1")],
        );
        assert!(
            report.acked.len() >= 100,
            "{point}: only {} acks",
            report.acked.len()
        );
        apply(&mut model, &report.acked);
        let (store, decided) = verify(dir.path(), &model, report.in_flight.as_ref());
        drop(store);
        assert_only_listed_files(dir.path(), point);
        // And the store keeps working from there: another child run, killed mid-stream.
        model = decided;
        let report = run_child_and_kill(dir.path(), 1, 1_000);
        apply(&mut model, &report.acked);
        verify(dir.path(), &model, report.in_flight.as_ref());
    }
}

#[test]
fn a_crash_inside_a_middle_compaction_step_keeps_every_acknowledged_write() {
    // Steps of 40 live records: a compaction of the child's ~500 keys takes a dozen steps,
    // each with its own commit, and the 3rd commit (or the 2nd step done, ...) falls in the
    // middle of the first compaction, with writes going on in another file meanwhile.
    let points = [
        ("compaction:output-written", "4"),
        ("compaction:output-synced", "3"),
        ("compaction:manifest-written", "3"),
        ("compaction:committed", "3"),
        ("compaction:deleted-one", "3"),
        ("compaction:step-done", "2"),
    ];
    for (point, nth) in points {
        let dir = TempDir::new().unwrap();
        let spec = format!("{point}:{nth}");
        let report = run_child(
            dir.path(),
            0,
            None,
            &[
                ("KVS_CRASH_AT", &spec),
                (COMPACT_VAR, "1"),
                (STEP_VAR, "40"),
            ],
        );
        assert!(
            report.acked.len() >= 100,
            "{point}: only {} acks",
            report.acked.len()
        );
        if point == "compaction:manifest-written" {
            // Died right after the commit of a middle step: the MANIFEST lists outputs of
            // this compaction (still `.compacting`) beside old files no step has read to
            // the end yet, which sort before them. (Had the compaction been one step, every
            // old file would be obsolete here.)
            let entries = support::manifest_entries(dir.path());
            let compacting: Vec<u32> = entries
                .iter()
                .map(|&(id, _, _, _)| id)
                .filter(|id| dir.path().join(format!("{id}.log.compacting")).exists())
                .collect();
            let first_output = *compacting
                .iter()
                .min()
                .expect("outputs of the crashed step");
            let old_still_closed = entries
                .iter()
                .filter(|&&(id, state, _, _)| state == 1 && id < first_output)
                .count();
            assert!(
                old_still_closed > 0,
                "{point}: no old file left behind the step's outputs: {entries:?}"
            );
        }
        let mut model = BTreeMap::new();
        apply(&mut model, &report.acked);
        let (store, decided) = verify(dir.path(), &model, report.in_flight.as_ref());
        drop(store);
        assert_only_listed_files(dir.path(), point);
        // And the store keeps working from there, compacting in steps again.
        model = decided;
        let report = run_child(
            dir.path(),
            1,
            Some(1_000),
            &[(COMPACT_VAR, "1"), (STEP_VAR, "40")],
        );
        apply(&mut model, &report.acked);
        verify(dir.path(), &model, report.in_flight.as_ref());
    }
}

/// Small writes the huge-value child acknowledges before its huge write.
const SMALL_WRITES: usize = 100;
/// The huge value: half its record (what `write:mid-record` leaves) is over 64 MiB.
const HUGE_VALUE: usize = 136 << 20;

/// The child for huge values: acknowledges `SMALL_WRITES` small writes, then writes one huge
/// value, in the middle of which the crash point kills it. Run only by the parent test.
#[test]
#[ignore = "run as a child process by the crash tests"]
fn crash_child_huge_value_writer() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        panic!("{DIR_VAR} must be set");
    };
    let sync = match std::env::var(SYNC_VAR).as_deref() {
        Ok("always") => SyncPolicy::Always,
        _ => SyncPolicy::Os,
    };
    let store = KvStore::open_with(&dir, KvStoreOptions::default().sync(sync)).expect("child open");
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // The test harness printed "test <name> ... " with no newline: end that line, so that the
    // first write is reported on a line of its own.
    writeln!(out).expect("stdout");
    for i in 0..SMALL_WRITES {
        writeln!(out, "set k{i} v{i}").expect("stdout");
        out.flush().expect("stdout");
        store.set(format!("k{i}"), format!("v{i}")).expect("set");
        writeln!(out, "ok").expect("stdout");
        out.flush().expect("stdout");
    }
    let huge = vec![0x5a; HUGE_VALUE];
    writeln!(out, "set huge {HUGE_VALUE}-bytes").expect("stdout");
    out.flush().expect("stdout");
    store.set_bytes(b"huge", &huge).expect("set huge");
    writeln!(out, "ok").expect("stdout");
}

#[test]
fn a_kill_in_the_middle_of_a_huge_value_keeps_every_acknowledged_write() {
    // The child dies with half of a 136 MiB record in the log: a torn tail of 68 MiB, followed
    // (syncing every write) by the zeros the file was extended with ahead of its records.
    for sync in ["os", "always"] {
        let dir = TempDir::new().unwrap();
        let crash_at = format!("write:mid-record:{}", SMALL_WRITES + 1);
        let report = run_named_child(
            "crash_child_huge_value_writer",
            dir.path(),
            0,
            None,
            &[("KVS_CRASH_AT", &crash_at), (SYNC_VAR, sync)],
        );
        assert_eq!(report.acked.len(), SMALL_WRITES, "{sync}");
        assert_eq!(
            report.in_flight.as_deref(),
            Some(format!("set huge {HUGE_VALUE}-bytes").as_str())
        );
        let log_len: u64 = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .max()
            .unwrap();
        assert!(
            log_len > 64 << 20,
            "{sync}: the log is only {log_len} bytes"
        );

        let mut model = BTreeMap::new();
        apply(&mut model, &report.acked);
        let store = KvStore::open(dir.path()).unwrap_or_else(|e| panic!("{sync}: {e}"));
        for (key, value) in &model {
            assert_eq!(&store.get(key.clone()).unwrap(), value, "{sync}: {key}");
        }
        assert_eq!(store.get_bytes(b"huge").unwrap(), None, "{sync}");
        // The torn record is gone from the file, and the store keeps working.
        store.set("after".into(), "crash".into()).unwrap();
        drop(store);
        let store = KvStore::open(dir.path()).unwrap();
        assert_eq!(store.len().unwrap(), SMALL_WRITES + 1, "{sync}");
        assert_eq!(store.get("after".into()).unwrap(), Some("crash".into()));
    }
}
