//! A data directory whose `engine` file is lost is judged by the data in it: the other engine
//! is refused (touching nothing) as for a recorded mismatch, the detected engine (or none
//! asked for) opens the data and records the engine again, and a directory with data of both
//! engines is an error naming both.

use std::fs;
use std::path::{Path, PathBuf};

use kvs::data_dir::{detect_engine, ENGINE_FILE};
use kvs::{AnyEngine, EngineKind, KvStore, KvsEngine, KvsError, SledKvsEngine};
use tempfile::TempDir;

/// A directory with `engine`'s data (keys `k0..k49`) and no `engine` file.
fn data_without_engine_file(engine: EngineKind) -> TempDir {
    let dir = TempDir::new().unwrap();
    let store = AnyEngine::open(dir.path(), Some(engine)).unwrap();
    for i in 0..50 {
        store.set(format!("k{i}"), format!("v{i}")).unwrap();
    }
    drop(store);
    fs::remove_file(dir.path().join(ENGINE_FILE)).unwrap();
    dir
}

fn assert_has_data(store: &impl KvsEngine) {
    assert_eq!(store.len().unwrap(), 50);
    for i in 0..50 {
        assert_eq!(store.get(format!("k{i}")).unwrap(), Some(format!("v{i}")));
    }
}

fn recorded(dir: &Path) -> Option<String> {
    fs::read_to_string(dir.join(ENGINE_FILE))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Every file and directory under `dir` with its contents, except the lock file (opening
/// may create it).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == "LOCK") {
                continue;
            }
            if path.is_dir() {
                pending.push(path.clone());
                out.push((path, None));
            } else {
                let bytes = fs::read(&path).unwrap();
                out.push((path, Some(bytes)));
            }
        }
    }
    out.sort();
    out
}

fn assert_mismatch(result: kvs::Result<impl Sized>, found: &str, requested: &str) {
    match result {
        Err(e @ KvsError::EngineMismatch { .. }) => {
            let KvsError::EngineMismatch {
                recorded,
                requested: asked,
                ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((recorded.as_str(), asked.as_str()), (found, requested));
            let message = e.to_string();
            assert!(
                message.contains(&format!("'{found}'"))
                    && message.contains(&format!("'{requested}'")),
                "{message}"
            );
        }
        Err(e) => panic!("expected an engine mismatch, got {e:?}"),
        Ok(_) => panic!("expected an engine mismatch, the open succeeded"),
    }
}

#[test]
fn kvs_data_without_engine_file_is_refused_as_sled_and_touched_not() {
    let dir = data_without_engine_file(EngineKind::Kvs);
    assert_eq!(detect_engine(dir.path()).unwrap(), Some(EngineKind::Kvs));
    let before = snapshot(dir.path());
    assert_mismatch(
        AnyEngine::open(dir.path(), Some(EngineKind::Sled)),
        "kvs",
        "sled",
    );
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a refused open changed the directory"
    );
    assert!(!dir.path().join(kvs::SLED_SUBDIR).exists());
}

#[test]
fn kvs_data_without_engine_file_opens_as_kvs_and_is_recorded_again() {
    for requested in [None, Some(EngineKind::Kvs)] {
        let dir = data_without_engine_file(EngineKind::Kvs);
        let store = AnyEngine::open(dir.path(), requested).unwrap();
        assert_eq!(store.kind(), EngineKind::Kvs);
        assert_has_data(&store);
        assert_eq!(recorded(dir.path()).as_deref(), Some("kvs"));
    }
    // KvStore::open itself, too.
    let dir = data_without_engine_file(EngineKind::Kvs);
    let store = KvStore::open(dir.path()).unwrap();
    assert_has_data(&store);
    assert_eq!(recorded(dir.path()).as_deref(), Some("kvs"));
}

#[test]
fn sled_data_without_engine_file_is_refused_as_kvs_and_touched_not() {
    let dir = data_without_engine_file(EngineKind::Sled);
    assert_eq!(detect_engine(dir.path()).unwrap(), Some(EngineKind::Sled));
    let before = snapshot(dir.path());
    assert_mismatch(KvStore::open(dir.path()), "sled", "kvs");
    assert_mismatch(
        AnyEngine::open(dir.path(), Some(EngineKind::Kvs)),
        "sled",
        "kvs",
    );
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a refused open changed the directory"
    );
}

#[test]
fn sled_data_without_engine_file_opens_as_sled_and_is_recorded_again() {
    for requested in [None, Some(EngineKind::Sled)] {
        let dir = data_without_engine_file(EngineKind::Sled);
        let store = AnyEngine::open(dir.path(), requested).unwrap();
        assert_eq!(store.kind(), EngineKind::Sled);
        assert_has_data(&store);
        assert_eq!(recorded(dir.path()).as_deref(), Some("sled"));
    }
}

#[test]
fn data_of_both_engines_without_engine_file_is_an_error_naming_both() {
    let dir = data_without_engine_file(EngineKind::Kvs);
    let sled_dir = dir.path().join(kvs::SLED_SUBDIR);
    let sled = SledKvsEngine::new(sled::open(&sled_dir).unwrap()).unwrap();
    sled.set("other".into(), "data".into()).unwrap();
    drop(sled);
    let before = snapshot(dir.path());
    let opens: [kvs::Result<()>; 4] = [
        AnyEngine::open(dir.path(), None).map(drop),
        AnyEngine::open(dir.path(), Some(EngineKind::Kvs)).map(drop),
        AnyEngine::open(dir.path(), Some(EngineKind::Sled)).map(drop),
        KvStore::open(dir.path()).map(drop),
    ];
    for result in opens {
        let Err(e) = result else {
            panic!("a directory with both engines' data opened")
        };
        let message = e.to_string();
        assert!(
            matches!(&e, KvsError::Corruption { path, .. } if path.ends_with(ENGINE_FILE)),
            "{e:?}"
        );
        assert!(
            message.contains("both engines")
                && message.contains(".log")
                && message.contains(&sled_dir.display().to_string()),
            "{message}"
        );
    }
    assert_eq!(snapshot(dir.path()), before);
    // Writing the engine file settles it.
    fs::write(dir.path().join(ENGINE_FILE), "kvs\n").unwrap();
    assert_has_data(&AnyEngine::open(dir.path(), None).unwrap());
}

#[test]
fn a_manifest_alone_is_kvs_data() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.path().join("MANIFEST"), b"anything").unwrap();
    assert_eq!(detect_engine(dir.path()).unwrap(), Some(EngineKind::Kvs));
    assert_mismatch(
        AnyEngine::open(dir.path(), Some(EngineKind::Sled)),
        "kvs",
        "sled",
    );
}

#[test]
fn files_that_are_not_kvs_logs_are_no_evidence() {
    let dir = TempDir::new().unwrap();
    let real = data_without_engine_file(EngineKind::Kvs);
    let log = fs::read(real.path().join("1.log")).unwrap();
    // A kvs log under a name kvs never writes, an application log, a log file too short to
    // hold the magic, a directory named like a log, an empty sled directory.
    fs::write(dir.path().join("01.log"), &log).unwrap();
    fs::write(dir.path().join("app.log"), b"kvs-log but not ours").unwrap();
    fs::write(dir.path().join("2.log"), b"kvs").unwrap();
    fs::create_dir(dir.path().join("3.log")).unwrap();
    fs::create_dir(dir.path().join(kvs::SLED_SUBDIR)).unwrap();
    assert_eq!(detect_engine(dir.path()).unwrap(), None);
    // The same directory with one canonical log that starts with the magic is kvs data.
    fs::write(dir.path().join("4.log"), &log).unwrap();
    assert_eq!(detect_engine(dir.path()).unwrap(), Some(EngineKind::Kvs));
}

#[test]
fn the_v0_1_0_fixtures_without_engine_file_are_detected() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0.1.0");
    for (name, kind) in [("kvs", EngineKind::Kvs), ("sled", EngineKind::Sled)] {
        let dir = TempDir::new().unwrap();
        copy_dir(&fixtures.join(name), dir.path());
        fs::remove_file(dir.path().join(ENGINE_FILE)).unwrap();
        assert_eq!(detect_engine(dir.path()).unwrap(), Some(kind), "{name}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            fs::copy(&path, &target).unwrap();
        }
    }
}
