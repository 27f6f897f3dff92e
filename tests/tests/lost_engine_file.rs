//! `kvs-server` in a data directory whose `engine` file is lost: the data files tell the
//! engine, so `--engine` of the other one exits non-zero with the mismatch error and touches
//! nothing, and a plain start serves the data and records the engine again.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvs_tests::{client, kvs_server, ServerProcess};
use tempfile::TempDir;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every file under `dir` with its contents, except the lock file (opening may create it).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().is_some_and(|n| n != "LOCK") {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

fn lost_engine_file_is_detected(written_by: &str, other: &str) {
    let dir = TempDir::new().unwrap();
    let mut server = ServerProcess::start(dir.path(), &["--engine", written_by]);
    let out = client(&["set", "a", "1", "--addr", &server.addr_arg()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(server.signal_and_wait("TERM").success());
    std::fs::remove_file(dir.path().join("engine")).unwrap();
    let before = snapshot(dir.path());

    let mut refused = Command::new(kvs_server())
        .args(["--addr", "127.0.0.1:0", "--engine", other])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A refused start exits at once; a server that started runs until stopped. 60 s is far
    // above the milliseconds a refusal takes even on a loaded 2-core machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = refused.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            refused.kill().unwrap();
            refused.wait().unwrap();
            panic!("kvs-server --engine {other} started over {written_by} data");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "started {other} over {written_by} data");
    let mut err = String::new();
    refused
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("engine mismatch")
            && err.contains(&format!("'{written_by}'"))
            && err.contains(&format!("'{other}'")),
        "{err}"
    );
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a refused start changed the directory"
    );

    // Without --engine, the detected engine serves the data and is recorded again.
    let server = ServerProcess::start(dir.path(), &[]);
    let out = client(&["get", "a", "--addr", &server.addr_arg()]);
    assert_eq!(text(&out.stdout), "1\n", "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("engine"))
            .unwrap()
            .trim(),
        written_by
    );
}

#[test]
fn sled_is_refused_over_kvs_data_without_engine_file() {
    lost_engine_file_is_detected("kvs", "sled");
}

#[test]
fn kvs_is_refused_over_sled_data_without_engine_file() {
    lost_engine_file_is_detected("sled", "kvs");
}
