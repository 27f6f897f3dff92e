//! Online checkpoints: a copy taken while writer threads go on holds exactly the writes
//! acknowledged before one point in time, opens as an ordinary store of the same engine, and
//! is independent of its source; compaction running meanwhile does not break it; a
//! destination that is not new or empty is refused untouched.
//!
//! The model: each writer thread writes one sequence of operations, and publishes, per
//! thread, how many it has *issued* (before the call) and how many were *acknowledged* (after
//! it returned). Read before the checkpoint, the acknowledged counts are lower bounds of what
//! the copy must hold; read after it returned, the issued counts are upper bounds. The copy
//! must hold, for each thread, a prefix of its operations (never a later one without an
//! earlier one) whose length lies between the two bounds.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kvs::{AnyEngine, EngineKind, KvStore, KvStoreOptions, KvsEngine, SyncPolicy};
use tempfile::TempDir;

use support::log_files_with_ids;

/// Operations counted per writer thread: the counter's, then the pair's and each appender's.
type Counts = (u64, Vec<u64>);

/// What one writer thread has issued and had acknowledged.
#[derive(Default)]
struct Progress {
    issued: AtomicU64,
    acked: AtomicU64,
    /// The longest one write took, in microseconds, since last reset (a figure to report).
    slowest_us: AtomicU64,
}

/// The writer threads of a test and their progress.
struct Writers {
    stop: Arc<AtomicBool>,
    counter: Arc<Progress>,
    /// The thread setting `a-pair` then `z-pair` to 1, 2, 3... (see `check_pair`).
    pair: Arc<Progress>,
    appenders: Vec<Arc<Progress>>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// The value the counter thread writes in its operation `n` (1-based), padded so that the log
/// moves on to new files often with a small `max_file_size`.
fn counter_value(n: u64) -> String {
    format!("{n:012}-{}", "c".repeat(100))
}

fn appender_key(thread: usize, n: u64) -> String {
    format!("t{thread}-{n:08}")
}

fn appender_value(thread: usize, n: u64) -> String {
    format!("{thread}/{n}/{}", "v".repeat((n % 50) as usize))
}

/// Starts one thread overwriting the key `counter` with 1, 2, 3... and `appenders` threads
/// each setting its own keys `t<i>-0`, `t<i>-1`... and, every third write, removing the key
/// it set just before (so that the copy also has to get removals in order).
fn start_writers<E: KvsEngine>(store: &E, appenders: usize) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(Progress::default());
    let mut threads = Vec::new();
    {
        let (store, stop, progress) = (store.clone(), Arc::clone(&stop), Arc::clone(&counter));
        threads.push(thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                progress.issued.store(n, Ordering::SeqCst);
                let start = Instant::now();
                store.set("counter".into(), counter_value(n)).unwrap();
                let took = start.elapsed().as_micros() as u64;
                progress.acked.store(n, Ordering::SeqCst);
                progress.slowest_us.fetch_max(took, Ordering::SeqCst);
            }
        }));
    }
    let pair = Arc::new(Progress::default());
    {
        let (store, stop, progress) = (store.clone(), Arc::clone(&stop), Arc::clone(&pair));
        threads.push(thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                progress.issued.store(n, Ordering::SeqCst);
                store.set("a-pair".into(), n.to_string()).unwrap();
                store.set("z-pair".into(), n.to_string()).unwrap();
                progress.acked.store(n, Ordering::SeqCst);
            }
        }));
    }
    let mut progress = Vec::new();
    for t in 0..appenders {
        let mine = Arc::new(Progress::default());
        progress.push(Arc::clone(&mine));
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        threads.push(thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                mine.issued.store(n, Ordering::SeqCst);
                if n % 3 == 0 {
                    // Operation n removes the key of operation n - 1.
                    store.remove(appender_key(t, n - 1)).unwrap();
                } else {
                    store.set(appender_key(t, n), appender_value(t, n)).unwrap();
                }
                mine.acked.store(n, Ordering::SeqCst);
            }
        }));
    }
    Writers {
        stop,
        counter,
        pair,
        appenders: progress,
        threads,
    }
}

impl Writers {
    /// Waits (boundedly) until the counter thread has had `n` writes acknowledged.
    fn wait_for(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.counter.acked.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "writers made no progress");
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn acked(&self) -> Counts {
        (
            self.counter.acked.load(Ordering::SeqCst),
            std::iter::once(&self.pair)
                .chain(&self.appenders)
                .map(|p| p.acked.load(Ordering::SeqCst))
                .collect(),
        )
    }

    fn issued(&self) -> Counts {
        (
            self.counter.issued.load(Ordering::SeqCst),
            std::iter::once(&self.pair)
                .chain(&self.appenders)
                .map(|p| p.issued.load(Ordering::SeqCst))
                .collect(),
        )
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().unwrap();
        }
    }
}

/// The keys appender operations `1..=n` leave: operation `i` sets key `i` when `i % 3 != 0`
/// and removes key `i - 1` when `i % 3 == 0`.
fn appender_state(n: u64) -> Vec<u64> {
    (1..=n)
        .filter(|&i| i % 3 == 1 || (i % 3 == 2 && i == n))
        .collect()
}

/// The numbers of operations of appender `t` whose state the store `copy` holds (two
/// numbers can leave the same keys: `3j + 1` and `3j + 3`). Fails if it holds no prefix of
/// the appender's operations, or a wrong value.
fn appender_prefixes(copy: &impl KvsEngine, t: usize, keys: &[String]) -> Vec<u64> {
    let prefix = format!("t{t}-");
    let mut present: Vec<u64> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(&prefix)?.parse().ok())
        .collect();
    present.sort();
    let candidates = match present.last() {
        None => vec![0],
        Some(&newest) => vec![newest, newest + 2],
    };
    let found: Vec<u64> = candidates
        .into_iter()
        .filter(|&n| appender_state(n) == present)
        .collect();
    assert!(
        !found.is_empty(),
        "appender {t}: keys {present:?} are no prefix of its writes"
    );
    for &i in &present {
        assert_eq!(
            copy.get(appender_key(t, i)).unwrap(),
            Some(appender_value(t, i)),
            "appender {t}, key {i}"
        );
    }
    found
}

/// Checks that `copy` holds a state between `lower` (acknowledged before the checkpoint) and
/// `upper` (issued before it returned): the counter's value, and each appender's prefix.
/// Returns the counter's value in the copy.
fn check_copy(copy: &impl KvsEngine, lower: &Counts, upper: &Counts) -> u64 {
    let value = copy.get("counter".into()).unwrap().expect("the counter");
    let counter: u64 = value[..12].parse().unwrap();
    assert_eq!(value, counter_value(counter));
    assert!(
        lower.0 <= counter && counter <= upper.0,
        "counter {counter} outside [{}, {}]",
        lower.0,
        upper.0
    );
    let keys: Vec<String> = copy
        .keys()
        .unwrap()
        .into_iter()
        .map(|k| String::from_utf8(k).unwrap())
        .collect();
    // The pair: `a-pair` is written before `z-pair`, so a prefix of the writes holds both at
    // n, or `a-pair` one ahead. A copy read key by key while the thread writes (a sled
    // iteration is not a snapshot) reads `a-pair` first and `z-pair` later, ahead of it.
    let pair = |key: &str| {
        copy.get(key.into())
            .unwrap()
            .map_or(0, |v| v.parse::<u64>().unwrap())
    };
    let (a, z) = (pair("a-pair"), pair("z-pair"));
    assert!(
        a == z || a == z + 1,
        "a-pair {a} and z-pair {z}: no prefix of the writes"
    );
    assert!(
        lower.1[0] <= z && a <= upper.1[0],
        "pair {a}/{z} outside [{}, {}]",
        lower.1[0],
        upper.1[0]
    );
    for t in 0..lower.1.len() - 1 {
        let (lower, upper) = (&lower.1[1..], &upper.1[1..]);
        let found = appender_prefixes(copy, t, &keys);
        assert!(
            found.iter().any(|&n| lower[t] <= n && n <= upper[t]),
            "appender {t}: copy holds the state of {found:?} operations, outside [{}, {}]",
            lower[t],
            upper[t]
        );
    }
    counter
}

/// A checkpoint taken mid-stream; returns (lower, upper) bounds, the time the call took and
/// the slowest counter write meanwhile (figures to look at, not asserted).
fn checkpoint_mid_stream<E: KvsEngine>(
    store: &E,
    writers: &Writers,
    dest: &Path,
) -> (Counts, Counts, Duration, Duration) {
    writers.counter.slowest_us.store(0, Ordering::SeqCst);
    let lower = writers.acked();
    let start = Instant::now();
    store.checkpoint(dest).unwrap();
    let took = start.elapsed();
    let upper = writers.issued();
    // A write that was waiting when the call returned finishes just after.
    writers.wait_for(upper.0 + 1);
    let slowest = Duration::from_micros(writers.counter.slowest_us.load(Ordering::SeqCst));
    (lower, upper, took, slowest)
}

fn live_store_checkpoint(engine: EngineKind) {
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    let dest = out.path().join("copy");
    let options = KvStoreOptions::default()
        .max_file_size(16 << 10)
        .compaction_min_stale(16 << 10);
    let store = AnyEngine::open_with(src.path(), Some(engine), options.clone()).unwrap();
    // Keys between `a-pair` and `z-pair`, so that a copy made key by key takes a while to
    // get from one to the other.
    let filler = "f".repeat(4096);
    for i in 0..2000 {
        store.set(format!("m-{i:05}"), filler.clone()).unwrap();
    }
    let writers = start_writers(&store, 2);
    writers.wait_for(300);
    let (lower, upper, took, slowest) = checkpoint_mid_stream(&store, &writers, &dest);
    // The writers go on after the checkpoint returned.
    let after = writers.acked().0;
    writers.wait_for(after + 100);
    writers.stop();
    eprintln!(
        "{engine}: checkpoint took {took:?}, slowest counter write meanwhile {slowest:?}, \
         {} files, bounds {lower:?} .. {upper:?}",
        fs::read_dir(&dest).unwrap().count()
    );

    let copy = AnyEngine::open_with(&dest, None, options.clone()).unwrap();
    assert_eq!(
        copy.kind(),
        engine,
        "the copy is a store of the same engine"
    );
    let counter = check_copy(&copy, &lower, &upper);

    // Independent: writes to the copy do not reach the source, and the source goes on.
    copy.set("only-in-copy".into(), "yes".into()).unwrap();
    copy.set("counter".into(), "copy's".into()).unwrap();
    if let AnyEngine::Kvs(copy) = &copy {
        // Compacting the copy deletes its links to the shared closed files.
        copy.compact().unwrap();
    }
    drop(copy);
    let source_counter = store.get("counter".into()).unwrap().unwrap();
    assert!(source_counter[..12].parse::<u64>().unwrap() > counter);
    assert_eq!(store.get("only-in-copy".into()).unwrap(), None);
    let source_len = store.len().unwrap();
    drop(store);

    // Both reopen whole.
    let source = AnyEngine::open_with(src.path(), None, options.clone()).unwrap();
    assert_eq!(source.get("counter".into()).unwrap(), Some(source_counter));
    assert_eq!(source.len().unwrap(), source_len);
    assert_eq!(source.get("only-in-copy".into()).unwrap(), None);
    for key in source.keys().unwrap() {
        source.get_bytes(&key).unwrap().unwrap();
    }
    let copy = AnyEngine::open_with(&dest, None, options).unwrap();
    assert_eq!(
        copy.get("only-in-copy".into()).unwrap().as_deref(),
        Some("yes")
    );
    assert_eq!(
        copy.get("counter".into()).unwrap().as_deref(),
        Some("copy's")
    );
}

#[test]
fn kvs_checkpoint_of_a_live_store_holds_what_was_acknowledged_at_one_point() {
    live_store_checkpoint(EngineKind::Kvs);
}

#[test]
fn sled_checkpoint_of_a_live_store_holds_what_was_acknowledged_at_one_point() {
    live_store_checkpoint(EngineKind::Sled);
}

#[test]
fn checkpoints_during_compaction_are_consistent() {
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    // Small files and a low threshold: the overwrites keep the background compactor busy,
    // and a thread compacts on top of it.
    let options = KvStoreOptions::default()
        .max_file_size(4096)
        .compaction_min_stale(4096);
    let store = KvStore::open_with(src.path(), options.clone()).unwrap();
    let writers = start_writers(&store, 1);
    let compacting = Arc::new(AtomicBool::new(true));
    let compactor = {
        let (store, compacting) = (store.clone(), Arc::clone(&compacting));
        thread::spawn(move || {
            let mut runs = 0u64;
            while compacting.load(Ordering::SeqCst) {
                store.compact().unwrap();
                runs += 1;
            }
            runs
        })
    };
    let mut last_counter = 0;
    let mut first_copied = Vec::new();
    for round in 0..20 {
        writers.wait_for(writers.acked().0 + 50);
        let dest = out.path().join(format!("copy{round}"));
        let (lower, upper, took, slowest) = checkpoint_mid_stream(&store, &writers, &dest);
        eprintln!("checkpoint {round}: took {took:?}, slowest counter write {slowest:?}");
        let copy = KvStore::open_with(&dest, options.clone()).unwrap();
        let counter = check_copy(&copy, &lower, &upper);
        assert!(counter >= last_counter);
        last_counter = counter;
        let copied = log_files_with_ids(&dest);
        assert!(copied.len() >= 2, "several files copied");
        if round == 0 {
            first_copied = copied.into_iter().map(|(id, _)| id).collect();
        }
    }
    // Writers first: while they run, the compaction in progress has more and more to copy
    // (an appender's keys accumulate), and on a loaded machine joining it could take minutes.
    compacting.store(false, Ordering::SeqCst);
    writers.stop();
    let runs = compactor.join().unwrap();
    assert!(runs > 0);
    // Compaction did replace files while the checkpoints ran: the files of the first copy
    // are gone from the source (the copy keeps its own links to them).
    let now: Vec<u32> = log_files_with_ids(src.path())
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(
        first_copied.iter().all(|id| !now.contains(id)),
        "{first_copied:?} still in {now:?}"
    );
    let first = KvStore::open_with(out.path().join("copy0"), options).unwrap();
    first.get("counter".into()).unwrap().unwrap();
    eprintln!("{runs} compactions ran during the checkpoints");
}

#[test]
fn closed_files_are_linked_and_the_active_file_copied_up_to_the_cut() {
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    let dest = out.path().join("copy");
    // SyncPolicy::Always extends the active file ahead of its records with zeros.
    let options = KvStoreOptions::default()
        .max_file_size(4096)
        .sync(SyncPolicy::Always);
    let store = KvStore::open_with(src.path(), options.clone()).unwrap();
    for i in 0..100 {
        store.set(format!("k{i}"), "x".repeat(100)).unwrap();
    }
    store.checkpoint(&dest).unwrap();
    // Written after the cut: not in the copy.
    store.set("late".into(), "1".into()).unwrap();

    let source_files = log_files_with_ids(src.path());
    let copied = log_files_with_ids(&dest);
    let (active_id, active) = copied.last().unwrap().clone();
    assert!(copied.len() > 2, "{copied:?}");
    for (id, path) in &copied[..copied.len() - 1] {
        let source = src.path().join(format!("{id}.log"));
        assert_eq!(
            fs::metadata(path).unwrap().ino(),
            fs::metadata(&source).unwrap().ino(),
            "closed file {id} is a hard link"
        );
    }
    let source_active = src.path().join(format!("{active_id}.log"));
    assert!(source_files.iter().any(|(id, _)| *id == active_id));
    assert_ne!(
        fs::metadata(&active).unwrap().ino(),
        fs::metadata(&source_active).unwrap().ino(),
        "the active file is a copy"
    );
    let copied_len = fs::metadata(&active).unwrap().len();
    let source_len = fs::metadata(&source_active).unwrap().len();
    assert!(
        copied_len < source_len,
        "the copy ends at the cut ({copied_len} bytes), not at the source's extended end \
         ({source_len})"
    );
    let source_bytes = fs::read(&source_active).unwrap();
    assert_eq!(
        fs::read(&active).unwrap(),
        &source_bytes[..copied_len as usize]
    );
    // The copy's MANIFEST lists its files: the closed ones as the source lists them, the
    // copied one as active.
    let entries = support::manifest_entries(&dest);
    assert_eq!(entries.len(), copied.len());
    assert_eq!(entries.last().unwrap().0, active_id);
    assert_eq!(entries.last().unwrap().1, 2);
    let source_entries = support::manifest_entries(src.path());
    for entry in &entries[..entries.len() - 1] {
        assert_eq!(entry.1, 1);
        assert!(source_entries.contains(entry), "{entry:?}");
    }
    assert_eq!(
        fs::read_to_string(dest.join("engine")).unwrap().trim(),
        "kvs"
    );

    let copy = KvStore::open_with(&dest, options).unwrap();
    assert_eq!(copy.len().unwrap(), 100);
    assert_eq!(copy.get("late".into()).unwrap(), None);
    for i in 0..100 {
        assert_eq!(copy.get(format!("k{i}")).unwrap(), Some("x".repeat(100)));
    }
}

/// A checkpoint into a directory on another file system copies the closed files (a hard link
/// fails with EXDEV there). Runs where `/dev/shm` is another file system than the temporary
/// directory, as on most Linux systems; elsewhere it still checks the checkpoint there.
#[test]
fn a_checkpoint_on_another_file_system_copies_the_closed_files() {
    let src = TempDir::new().unwrap();
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm: nothing to check here");
        return;
    }
    let out = TempDir::new_in(shm).unwrap();
    let dest = out.path().join("copy");
    let other_fs = fs::metadata(shm).unwrap().dev() != fs::metadata(src.path()).unwrap().dev();
    let options = KvStoreOptions::default().max_file_size(4096);
    let store = KvStore::open_with(src.path(), options.clone()).unwrap();
    for i in 0..100 {
        store.set(format!("k{i}"), "y".repeat(100)).unwrap();
    }
    store.checkpoint(&dest).unwrap();
    let copied = log_files_with_ids(&dest);
    assert!(copied.len() > 2);
    if other_fs {
        for (id, path) in &copied {
            let source = src.path().join(format!("{id}.log"));
            assert_eq!(
                fs::read(path).unwrap(),
                fs::read(&source).unwrap()[..fs::metadata(path).unwrap().len() as usize]
            );
        }
    }
    drop(store);
    let copy = KvStore::open_with(&dest, options).unwrap();
    assert_eq!(copy.len().unwrap(), 100);
    assert_eq!(copy.get("k7".into()).unwrap(), Some("y".repeat(100)));
}

/// Lists `dir` recursively: (relative path, contents of files), to compare before and after.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.push((path.clone(), None));
            out.extend(snapshot(&path));
        } else {
            out.push((path.clone(), Some(fs::read(&path).unwrap())));
        }
    }
    out.sort();
    out
}

fn refuses_unusable_destinations(engine: EngineKind) {
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    let store = AnyEngine::open(src.path(), Some(engine)).unwrap();
    store.set("a".into(), "1".into()).unwrap();

    // Not empty: refused, nothing touched.
    let full = out.path().join("full");
    fs::create_dir_all(full.join("sub")).unwrap();
    fs::write(full.join("precious"), b"keep me").unwrap();
    let before = snapshot(&full);
    let err = store.checkpoint(&full).unwrap_err().to_string();
    assert!(err.contains("not empty") && err.contains("full"), "{err}");
    assert_eq!(snapshot(&full), before);

    // A file: refused, untouched.
    let file = out.path().join("file");
    fs::write(&file, b"a file").unwrap();
    let err = store.checkpoint(&file).unwrap_err().to_string();
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"a file");

    // The source itself (not empty either).
    assert!(store.checkpoint(src.path()).is_err());

    // An existing empty directory is taken.
    let empty = out.path().join("empty");
    fs::create_dir(&empty).unwrap();
    store.checkpoint(&empty).unwrap();
    // ... and, written, is no longer empty.
    assert!(store.checkpoint(&empty).is_err());
    let copy = AnyEngine::open(&empty, None).unwrap();
    assert_eq!(copy.kind(), engine);
    assert_eq!(copy.get("a".into()).unwrap().as_deref(), Some("1"));
}

#[test]
fn kvs_checkpoint_refuses_a_destination_that_is_not_new_or_empty() {
    refuses_unusable_destinations(EngineKind::Kvs);
}

#[test]
fn sled_checkpoint_refuses_a_destination_that_is_not_new_or_empty() {
    refuses_unusable_destinations(EngineKind::Sled);
}

/// A checkpoint that fails half-way (here: a closed log file of the source was deleted behind
/// the store's back) names the file, and removes what it wrote: a directory it created is gone,
/// an empty one it was given is empty again.
#[test]
fn a_failed_checkpoint_names_the_file_and_removes_what_it_wrote() {
    let src = TempDir::new().unwrap();
    let out = TempDir::new().unwrap();
    let options = KvStoreOptions::default().max_file_size(4096);
    let store = KvStore::open_with(src.path(), options).unwrap();
    for i in 0..400 {
        store.set(format!("k{i}"), "z".repeat(100)).unwrap();
    }
    let files = log_files_with_ids(src.path());
    assert!(files.len() > 3);
    // Linked before the failure: the copy then has something to remove.
    let (lost_id, lost) = files[files.len() / 2].clone();
    fs::remove_file(&lost).unwrap();

    let created = out.path().join("new");
    let err = store.checkpoint(&created).unwrap_err().to_string();
    assert!(err.contains(&format!("{lost_id}.log")), "{err}");
    assert!(!created.exists(), "the directory it created is removed");

    let given = out.path().join("given");
    fs::create_dir(&given).unwrap();
    let err = store.checkpoint(&given).unwrap_err().to_string();
    assert!(err.contains(&format!("{lost_id}.log")), "{err}");
    assert_eq!(fs::read_dir(&given).unwrap().count(), 0, "emptied again");
}
