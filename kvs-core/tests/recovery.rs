//! What open does with damaged log files: torn tails are cut off, corruption elsewhere is an
//! error naming the file and offset, and a value never comes back wrong.

mod support;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use kvs::{KvStore, KvStoreOptions, KvsEngine, KvsError, RecoveryMode};
use tempfile::TempDir;

use support::{log_files, record_len_at, v2_record};

/// Size of a log file's header and of a record's header (see `format.rs`: the store writes
/// format version 2).
const FILE_HEADER: u64 = 8;
const RECORD_HEADER: u64 = support::V2_HEADER as u64;

fn newest_log(dir: &Path) -> PathBuf {
    log_files(dir).pop().expect("a log file")
}

/// Writes key{i} = value{i} for i in 0..n and returns the size of the log after each record
/// (where its last record ends: while the store is open its file is longer, allocated ahead,
/// and it is cut back to that on close).
fn fill(dir: &Path, n: usize) -> Vec<u64> {
    let store = KvStore::open(dir).unwrap();
    let mut ends = Vec::new();
    for i in 0..n {
        store.set(format!("key{i}"), format!("value{i}")).unwrap();
        ends.push(log_end(&store));
    }
    ends
}

/// Where the last record of a store of one log file ends.
fn log_end(store: &KvStore) -> u64 {
    let stats = store.disk_stats();
    assert_eq!(stats.files, 1);
    stats.total_bytes
}

fn assert_keys(store: &KvStore, present: usize, absent_from: usize) {
    for i in 0..present {
        assert_eq!(
            store.get(format!("key{i}")).unwrap(),
            Some(format!("value{i}")),
            "key{i}"
        );
    }
    assert_eq!(store.get(format!("key{absent_from}")).unwrap(), None);
}

#[test]
fn recovers_from_torn_tail_at_every_byte_of_the_last_record() {
    let template = TempDir::new().unwrap();
    let ends = fill(template.path(), 5);
    let log = newest_log(template.path());
    let full = fs::read(&log).unwrap();
    let last_start = ends[3];
    for cut in last_start..ends[4] {
        let dir = TempDir::new().unwrap();
        fs::copy(template.path().join("engine"), dir.path().join("engine")).unwrap();
        let copy = dir.path().join(log.file_name().unwrap());
        fs::write(&copy, &full[..cut as usize]).unwrap();

        let store = KvStore::open(dir.path()).unwrap();
        assert_keys(&store, 4, 4);
        assert_eq!(
            fs::metadata(&copy).unwrap().len(),
            last_start,
            "cut at {cut}"
        );
        // The store takes new writes after the cut, and they survive a reopen.
        store.set("after".into(), "cut".into()).unwrap();
        drop(store);
        let store = KvStore::open(dir.path()).unwrap();
        assert_keys(&store, 4, 4);
        assert_eq!(store.get("after".into()).unwrap(), Some("cut".into()));
    }
}

#[test]
fn recovers_from_garbage_and_zero_tails() {
    for tail in [
        vec![0u8; 4096],
        (0..1000u32).map(|i| (i * 7 + 3) as u8).collect(),
    ] {
        let dir = TempDir::new().unwrap();
        let ends = fill(dir.path(), 10);
        let log = newest_log(dir.path());
        OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(&tail)
            .unwrap();
        let store = KvStore::open(dir.path()).unwrap();
        assert_keys(&store, 10, 10);
        assert_eq!(fs::metadata(&log).unwrap().len(), ends[9]);
    }
}

#[test]
fn strict_recovery_refuses_a_torn_tail_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let ends = fill(dir.path(), 3);
    let log = newest_log(dir.path());
    let torn_len = ends[2] - 3;
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(torn_len)
        .unwrap();
    let result = KvStore::open_with(
        dir.path(),
        KvStoreOptions::default().recovery(RecoveryMode::Strict),
    );
    match result {
        Err(KvsError::Corruption { path, offset, .. }) => {
            assert_eq!(path, log);
            assert_eq!(offset, ends[1]);
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("strict open accepted a torn tail"),
    }
    assert_eq!(fs::metadata(&log).unwrap().len(), torn_len);
}

#[test]
fn corruption_before_the_tail_fails_open_naming_file_and_offset() {
    let dir = TempDir::new().unwrap();
    let ends = fill(dir.path(), 10);
    let log = newest_log(dir.path());
    let mut bytes = fs::read(&log).unwrap();
    // Flip a bit in the value of record 4 (it starts where record 3 ends).
    let victim = ends[3] as usize + RECORD_HEADER as usize + 5;
    bytes[victim] ^= 0x10;
    fs::write(&log, &bytes).unwrap();

    match KvStore::open(dir.path()) {
        Err(e @ KvsError::Corruption { .. }) => {
            let KvsError::Corruption { path, offset, .. } = &e else {
                unreachable!()
            };
            assert_eq!(path, &log);
            assert_eq!(*offset, ends[3]);
            let message = e.to_string();
            assert!(message.contains(&log.display().to_string()), "{message}");
            assert!(message.contains(&ends[3].to_string()), "{message}");
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("open skipped corruption silently"),
    }
    // Nothing was deleted or cut.
    assert_eq!(fs::read(&log).unwrap(), bytes);
}

#[test]
fn corruption_in_an_older_file_is_never_treated_as_a_tail() {
    let dir = TempDir::new().unwrap();
    {
        let store = KvStore::open(dir.path()).unwrap();
        for i in 0..10 {
            store.set(format!("key{i}"), format!("value{i}")).unwrap();
        }
        // Compaction moves the data into a new file and opens another for writes.
        store.compact().unwrap();
        store.set("newer".into(), "x".into()).unwrap();
    }
    let files = log_files(dir.path());
    assert!(files.len() >= 2, "{files:?}");
    let older = &files[files.len() - 2];
    let len = fs::metadata(older).unwrap().len();
    // Cut the older file's last record short: in the newest file this would be a torn tail.
    OpenOptions::new()
        .write(true)
        .open(older)
        .unwrap()
        .set_len(len - 2)
        .unwrap();
    match KvStore::open(dir.path()) {
        Err(KvsError::Corruption { path, .. }) => assert_eq!(&path, older),
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a damaged older file was accepted"),
    }
    assert_eq!(fs::metadata(older).unwrap().len(), len - 2);
}

/// Flips bits in every byte of the records of `log` (in `template`, a store of key{i} =
/// value{i} for i in 0..n, whose records start at `starts`) and checks that each flip either
/// fails the open or leaves every value that can be read correct. A flip in the last record is
/// a torn tail and loses only that record. With `length_flip_may_cut` (format version 1, with
/// no checksum over the header), a flip in a length field may also declare a record that runs
/// past the end of the file (or over every record after it), indistinguishable from a torn
/// write of that record, which is then cut off with the records its extent covers (see
/// `recovery.rs`). Open may append `grows_by` bytes to the file (the seal of a version-1 file,
/// left for a version-2 one).
fn check_bit_flips(
    template: &Path,
    log: &Path,
    starts: &[u64],
    n: usize,
    length_flip_may_cut: bool,
    grows_by: u64,
) {
    let original = fs::read(log).unwrap();
    for byte in FILE_HEADER as usize..original.len() {
        let record = starts.iter().rposition(|&s| s <= byte as u64).unwrap();
        // key_len and value_len are bytes 5..13 of a record of either version.
        let in_length = (5..13).contains(&(byte as u64 - starts[record]));
        for bit in [0, 3, 7] {
            let dir = TempDir::new().unwrap();
            fs::copy(template.join("engine"), dir.path().join("engine")).unwrap();
            let mut bytes = original.clone();
            bytes[byte] ^= 1 << bit;
            let copy = dir.path().join(log.file_name().unwrap());
            fs::write(&copy, &bytes).unwrap();
            let Ok(store) = KvStore::open(dir.path()) else {
                continue;
            };
            let mut lost = Vec::new();
            for i in 0..n {
                match store.get(format!("key{i}")) {
                    Ok(Some(v)) => assert_eq!(v, format!("value{i}"), "flip {byte}:{bit}"),
                    Ok(None) => lost.push(i),
                    Err(e) => assert!(e.is_corruption(), "flip {byte}:{bit}: {e}"),
                }
            }
            let cut_from = lost.first().copied().unwrap_or(n);
            assert!(
                lost.is_empty()
                    || lost == [n - 1]
                    || (length_flip_may_cut
                        && in_length
                        && lost == (record..n).collect::<Vec<_>>()),
                "flip {byte}:{bit} (record {record}) lost {lost:?}"
            );
            // What was lost was cut off the end of the file, and nothing else.
            let kept_len = if cut_from == n {
                original.len() as u64
            } else {
                starts[cut_from]
            };
            assert_eq!(
                fs::metadata(&copy).unwrap().len(),
                kept_len + grows_by,
                "flip {byte}:{bit}"
            );
        }
    }
}

#[test]
fn bit_flips_never_return_a_wrong_value() {
    // Format version 2: a damaged length fails its header's checksum, so it never cuts off
    // the records after it.
    let template = TempDir::new().unwrap();
    let n = 6;
    let ends = fill(template.path(), n);
    let starts: Vec<u64> = std::iter::once(FILE_HEADER)
        .chain(ends[..n - 1].iter().copied())
        .collect();
    let log = newest_log(template.path());
    check_bit_flips(template.path(), &log, &starts, n, false, 0);
}

#[test]
fn bit_flips_in_a_version_1_file_never_return_a_wrong_value() {
    // A store of release 0.1.0 (no MANIFEST, one version-1 file), built by hand.
    let template = TempDir::new().unwrap();
    let n = 6;
    let mut bytes = b"kvs-log\x01".to_vec();
    let mut starts = Vec::new();
    for i in 0..n {
        starts.push(bytes.len() as u64);
        bytes.extend(support::v1_record(
            1,
            format!("key{i}").as_bytes(),
            format!("value{i}").as_bytes(),
        ));
    }
    let log = template.path().join("1.log");
    fs::write(&log, &bytes).unwrap();
    fs::write(template.path().join("engine"), "kvs\n").unwrap();
    {
        // The hand-built store opens whole.
        let dir = TempDir::new().unwrap();
        copy_store(template.path(), dir.path());
        assert_keys(&KvStore::open(dir.path()).unwrap(), n, n);
    }
    // Open seals the version-1 file (a 21-byte version-1 seal) and moves on to a new one.
    check_bit_flips(template.path(), &log, &starts, n, true, 21);
}

#[test]
fn a_value_damaged_after_open_fails_to_read_instead_of_coming_back_wrong() {
    let dir = TempDir::new().unwrap();
    let ends = fill(dir.path(), 3);
    let store = KvStore::open(dir.path()).unwrap();
    let log = newest_log(dir.path());
    let mut bytes = fs::read(&log).unwrap();
    let victim = ends[0] as usize + RECORD_HEADER as usize + 5;
    bytes[victim] ^= 0x01;
    fs::write(&log, &bytes).unwrap();
    match store.get("key1".into()) {
        Err(KvsError::Corruption { path, offset, .. }) => {
            assert_eq!(path, log);
            assert_eq!(offset, ends[0]);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(store.get("key0".into()).unwrap(), Some("value0".into()));
}

#[test]
fn unfinished_compaction_output_is_removed_on_open() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 3);
    let leftover = dir.path().join("7.log.compacting");
    fs::write(&leftover, b"half-written compaction output").unwrap();
    let store = KvStore::open(dir.path()).unwrap();
    assert!(!leftover.exists());
    assert_keys(&store, 3, 3);
}

#[test]
fn a_file_that_is_not_a_log_is_reported_not_replayed() {
    // In a store without a MANIFEST (as release 0.1.0 wrote them), every `<id>.log` is one of
    // its files, so a foreign one is reported. (A store with a MANIFEST ignores the files it
    // does not list: see tests/manifest.rs.)
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 2);
    fs::remove_file(dir.path().join("MANIFEST")).unwrap();
    let first = log_files(dir.path())[0].clone();
    let stranger = dir.path().join("0.log");
    fs::write(&stranger, b"hello, I am not a kvs log at all").unwrap();
    match KvStore::open(dir.path()) {
        Err(KvsError::Corruption { path, offset, .. }) => {
            assert_eq!(path, stranger);
            assert_eq!(offset, 0);
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a foreign file was accepted"),
    }
    assert!(first.exists());
}

#[test]
fn a_torn_batch_is_dropped_whole() {
    let dir = TempDir::new().unwrap();
    let (before, after) = {
        let store = KvStore::open(dir.path()).unwrap();
        store.set("first".into(), "1".into()).unwrap();
        let before = log_end(&store);
        let values: Vec<String> = (0..10).map(|i| format!("value{i}")).collect();
        let keys: Vec<String> = (0..10).map(|i| format!("batch{i}")).collect();
        let pairs: Vec<(&[u8], &[u8])> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        store.set_many_bytes(&pairs).unwrap();
        (before, log_end(&store))
    };
    // Cut the batch in its frame, in the middle of its 4th record (records here are
    // 17 + 6 + 6 bytes, after a 29-byte frame), and right after its 9th: nothing of it
    // survives, the record before it does.
    let template = TempDir::new().unwrap();
    copy_store(dir.path(), template.path());
    for cut in [before + 10, before + 29 + 3 * 29 + 10, before + 29 + 9 * 29] {
        assert!(cut < after);
        let dir = TempDir::new().unwrap();
        copy_store(template.path(), dir.path());
        set_len(&newest_log(dir.path()), cut);
        let store = KvStore::open(dir.path()).unwrap();
        assert_eq!(store.get("first".into()).unwrap(), Some("1".into()));
        for i in 0..10 {
            assert_eq!(
                store.get(format!("batch{i}")).unwrap(),
                None,
                "batch{i}, cut at {cut}"
            );
        }
        assert_eq!(fs::metadata(newest_log(dir.path())).unwrap().len(), before);
    }
}

/// A store with at least two closed log files and an active one; returns the closed files,
/// oldest first.
fn store_with_closed_files(dir: &Path) -> Vec<PathBuf> {
    let options = kvs::KvStoreOptions::default().max_file_size(4096);
    let store = KvStore::open_with(dir, options).unwrap();
    for i in 0..500 {
        store.set(format!("key{i}"), format!("value{i}")).unwrap();
    }
    let files = log_files(dir);
    assert!(files.len() >= 3, "{files:?}");
    files[..files.len() - 1].to_vec()
}

#[test]
fn a_closed_file_cut_at_a_record_boundary_fails_open() {
    // Without the seal at the end of every closed file, these cuts would lose the last
    // records of the file silently: what is left parses cleanly.
    let template = TempDir::new().unwrap();
    let closed = store_with_closed_files(template.path());
    let victim_name = closed[0].file_name().unwrap().to_owned();
    let bytes = fs::read(&closed[0]).unwrap();
    // The seal is the last 25 bytes (17-byte header, 8-byte value); records before it are
    // key{i} = value{i}: cut off the seal alone, then the seal and the record before it, and
    // finally everything but the file header.
    let seal_len = 25;
    let last_record_len = {
        // Walk the records to find where the last one before the seal starts.
        let mut at = 8usize;
        let mut last = at;
        while at < bytes.len() - seal_len {
            last = at;
            at += record_len_at(&bytes, at);
        }
        bytes.len() - seal_len - last
    };
    for cut in [
        bytes.len() - seal_len,
        bytes.len() - seal_len - last_record_len,
        8,
    ] {
        let dir = TempDir::new().unwrap();
        for entry in fs::read_dir(template.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() && path.file_name() != Some(std::ffi::OsStr::new("LOCK")) {
                fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        let victim = dir.path().join(&victim_name);
        fs::write(&victim, &bytes[..cut]).unwrap();
        match KvStore::open(dir.path()) {
            Err(KvsError::Corruption {
                path,
                offset,
                reason,
            }) => {
                assert_eq!(path, victim, "cut at {cut}");
                assert_eq!(offset, cut as u64, "cut at {cut}");
                assert!(reason.contains("seal"), "{reason}");
            }
            Err(e) => panic!("cut at {cut}: expected corruption, got {e}"),
            Ok(_) => panic!("cut at {cut}: a closed file cut short was accepted"),
        }
        assert_eq!(
            fs::read(&victim).unwrap(),
            &bytes[..cut],
            "open changed the file"
        );
    }
}

#[test]
fn a_seal_away_from_where_it_was_written_fails_open() {
    // Cutting a whole record out of the middle of a closed file and keeping the seal: every
    // record still checks, but the seal no longer sits at the offset it records.
    let template = TempDir::new().unwrap();
    let closed = store_with_closed_files(template.path());
    let bytes = fs::read(&closed[0]).unwrap();
    let first_len = record_len_at(&bytes, 8);
    let mut spliced = bytes[..8].to_vec();
    spliced.extend_from_slice(&bytes[8 + first_len..]);
    fs::write(&closed[0], &spliced).unwrap();
    match KvStore::open(template.path()) {
        Err(KvsError::Corruption { path, reason, .. }) => {
            assert_eq!(path, closed[0]);
            assert!(reason.contains("seal record written at offset"), "{reason}");
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("a spliced file was accepted"),
    }
}

/// Copies every file of the store in `from` (but its lock file) into `to`.
fn copy_store(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.file_name() != Some(std::ffi::OsStr::new("LOCK")) {
            fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// The start of a version-2 set record of `key` to `value_len` zero bytes, built by hand as
/// `format.rs` documents it: header and key. The zeros are left to a sparse extension of the
/// file (see [`append_zero_value_record`]), so a record of hundreds of MiB costs neither disk
/// nor memory.
fn zero_value_record_head(key: &[u8], value_len: u64) -> Vec<u8> {
    let mut body_crc = crc32fast::Hasher::new();
    body_crc.update(key);
    let zeros = vec![0u8; 1 << 20];
    let mut left = value_len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        body_crc.update(&zeros[..n]);
        left -= n as u64;
    }
    let mut header = vec![0x11u8];
    header.extend_from_slice(&(key.len() as u32).to_le_bytes());
    header.extend_from_slice(&(value_len as u32).to_le_bytes());
    header.extend_from_slice(&body_crc.finalize().to_le_bytes());
    let mut head = crc32fast::hash(&header).to_le_bytes().to_vec();
    head.extend_from_slice(&header);
    head.extend_from_slice(key);
    head
}

/// Appends the record that `head` (from [`zero_value_record_head`]) starts to `log`: writes
/// `head` and extends the file with `value_len` zeros. Returns the record's offset.
fn append_zero_value_record(log: &Path, head: &[u8], value_len: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new().write(true).open(log).unwrap();
    let start = file.metadata().unwrap().len();
    file.write_all_at(head, start).unwrap();
    file.set_len(start + head.len() as u64 + value_len).unwrap();
    start
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn a_torn_huge_record_is_cut_off_whatever_its_size() {
    // A crash while writing a value of hundreds of MiB leaves any prefix of its record at the
    // end of the newest file. Its header declares an extent past the end of the file: a record
    // being written, whatever the number of bytes that made it to the file.
    const BIG: u64 = 300 << 20;
    let template = TempDir::new().unwrap();
    fill(template.path(), 5);
    let log_name = newest_log(template.path()).file_name().unwrap().to_owned();

    // The hand-built record is a valid one: whole, it opens and reads back (small), or is
    // indexed after its checksum was checked (huge).
    assert_eq!(
        [zero_value_record_head(b"k", 3), vec![0; 3]].concat(),
        v2_record(0x11, b"", b"k", &[0; 3])
    );
    let big_head = zero_value_record_head(b"big", BIG);
    for (head, value_len) in [
        (zero_value_record_head(b"big", 1000), 1000),
        (big_head.clone(), BIG),
    ] {
        let dir = TempDir::new().unwrap();
        copy_store(template.path(), dir.path());
        append_zero_value_record(&dir.path().join(&log_name), &head, value_len);
        let store = KvStore::open(dir.path()).unwrap();
        assert_keys(&store, 5, 5);
        assert!(store.contains_key(b"big").unwrap(), "{value_len}");
        if value_len == 1000 {
            assert_eq!(store.get_bytes(b"big").unwrap(), Some(vec![0; 1000]));
        }
    }

    for torn in [1 << 20, (64 << 20) + 1, 200 << 20] {
        let dir = TempDir::new().unwrap();
        copy_store(template.path(), dir.path());
        let log = dir.path().join(&log_name);
        let start = append_zero_value_record(&log, &big_head, BIG);
        set_len(&log, start + torn);

        // Strict recovery refuses it, naming where the torn record starts, and changes nothing.
        match KvStore::open_with(
            dir.path(),
            KvStoreOptions::default().recovery(RecoveryMode::Strict),
        ) {
            Err(KvsError::Corruption { path, offset, .. }) => {
                assert_eq!((path, offset), (log.clone(), start), "torn at {torn}");
            }
            Err(e) => panic!("torn at {torn}: expected corruption, got {e}"),
            Ok(_) => panic!("torn at {torn}: strict open accepted a torn tail"),
        }
        assert_eq!(fs::metadata(&log).unwrap().len(), start + torn);

        let store = KvStore::open(dir.path()).unwrap_or_else(|e| panic!("torn at {torn}: {e}"));
        assert_keys(&store, 5, 5);
        assert_eq!(store.get_bytes(b"big").unwrap(), None, "torn at {torn}");
        assert_eq!(fs::metadata(&log).unwrap().len(), start, "torn at {torn}");
        store.set("after".into(), "tear".into()).unwrap();
        drop(store);
        let store = KvStore::open(dir.path()).unwrap();
        assert_keys(&store, 5, 5);
        assert_eq!(store.get("after".into()).unwrap(), Some("tear".into()));
    }
}

/// [`zero_value_record_head`] in format version 1 (release 0.1.0): crc over everything after
/// it, kind 1, lengths, key.
fn zero_value_record_head_v1(key: &[u8], value_len: u64) -> Vec<u8> {
    let mut header = vec![1u8];
    header.extend_from_slice(&(key.len() as u32).to_le_bytes());
    header.extend_from_slice(&(value_len as u32).to_le_bytes());
    header.extend_from_slice(key);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    let zeros = vec![0u8; 1 << 20];
    let mut left = value_len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        crc.update(&zeros[..n]);
        left -= n as u64;
    }
    let mut head = crc.finalize().to_le_bytes().to_vec();
    head.extend_from_slice(&header);
    head
}

#[test]
fn a_torn_huge_record_in_a_version_1_file_is_cut_off() {
    // A store of release 0.1.0 (built by hand): its newest file, of version 1, ends with a
    // torn 300 MiB record. Open cuts it off, then seals the file (a 21-byte version-1 seal)
    // and writes on in a version-2 file.
    const BIG: u64 = 300 << 20;
    let dir = TempDir::new().unwrap();
    let mut bytes = b"kvs-log\x01".to_vec();
    for i in 0..5 {
        bytes.extend(support::v1_record(
            1,
            format!("key{i}").as_bytes(),
            format!("value{i}").as_bytes(),
        ));
    }
    let log = dir.path().join("1.log");
    fs::write(&log, &bytes).unwrap();
    fs::write(dir.path().join("engine"), "kvs\n").unwrap();
    let head = zero_value_record_head_v1(b"big", 3);
    assert_eq!(
        [head, vec![0; 3]].concat(),
        support::v1_record(1, b"big", &[0; 3])
    );
    let start = append_zero_value_record(&log, &zero_value_record_head_v1(b"big", BIG), BIG);
    assert_eq!(start, bytes.len() as u64);
    set_len(&log, start + (64 << 20) + 1);
    let store = KvStore::open(dir.path()).unwrap();
    assert_keys(&store, 5, 5);
    assert_eq!(store.get_bytes(b"big").unwrap(), None);
    assert_eq!(fs::metadata(&log).unwrap().len(), start + 21);
    store.set("after".into(), "tear".into()).unwrap();
    drop(store);
    let store = KvStore::open(dir.path()).unwrap();
    assert_keys(&store, 5, 5);
    assert_eq!(store.get("after".into()).unwrap(), Some("tear".into()));
    assert_eq!(log_files(dir.path()).len(), 2);
}

#[test]
fn a_torn_huge_record_in_a_file_extended_ahead_is_cut_off() {
    // With `SyncPolicy::Always` the file is extended with zeros ahead of its records, so a
    // record torn after a few MiB lies wholly inside the file, its checksum failing, with
    // zeros after it. No valid record starts after its extent: a torn tail.
    const BIG: u64 = 100 << 20;
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 5);
    let log = newest_log(dir.path());
    let start = append_zero_value_record(&log, &zero_value_record_head(b"big", BIG), BIG);
    let end = start + RECORD_HEADER + 3 + BIG;
    // What a crash leaves: the first MiB of a value that is not all zeros, then zeros up to
    // and past the end of the record.
    {
        use std::os::unix::fs::FileExt;
        let file = OpenOptions::new().write(true).open(&log).unwrap();
        file.write_all_at(&vec![0x5a; 1 << 20], start + RECORD_HEADER + 3)
            .unwrap();
        file.set_len(end + (8 << 20)).unwrap();
    }
    let store = KvStore::open(dir.path()).unwrap();
    assert_keys(&store, 5, 5);
    assert_eq!(store.get_bytes(b"big").unwrap(), None);
    assert_eq!(fs::metadata(&log).unwrap().len(), start);
}

/// The bytes of a log file a store wrote (key{i} = value{i}, then some removes): valid
/// records, which a user may well store as a value.
fn log_file_bytes() -> Vec<u8> {
    let dir = TempDir::new().unwrap();
    {
        let store = KvStore::open(dir.path()).unwrap();
        for i in 0..40 {
            store.set(format!("inner{i}"), format!("value{i}")).unwrap();
        }
        for i in (0..40).step_by(5) {
            store.remove(format!("inner{i}")).unwrap();
        }
    }
    fs::read(newest_log(dir.path())).unwrap()
}

#[test]
fn a_torn_value_that_holds_kvs_records_is_cut_off() {
    // The bytes of a record's value are its payload: records inside a torn value do not make
    // it corruption, however the tear falls.
    let inner = log_file_bytes();
    let template = TempDir::new().unwrap();
    fill(template.path(), 5);
    let log_name = newest_log(template.path()).file_name().unwrap().to_owned();
    let (start, end) = {
        let store = KvStore::open(template.path()).unwrap();
        let start = log_end(&store);
        store.set_bytes(b"copy", &inner).unwrap();
        (start, log_end(&store))
    };
    let full = fs::read(template.path().join(&log_name)).unwrap();
    // Whole, the value reads back.
    {
        let store = KvStore::open(template.path()).unwrap();
        assert_eq!(store.get_bytes(b"copy").unwrap(), Some(inner.clone()));
    }
    // Tears everywhere in the record: in steps, and at every record boundary of the copy
    // (where what is left of the value ends with whole records).
    let value_at = start + RECORD_HEADER + 4;
    let mut cuts: Vec<u64> = (start + 1..end).step_by(41).collect();
    let mut at = 8usize;
    while at + RECORD_HEADER as usize <= inner.len() {
        at += record_len_at(&inner, at);
        cuts.push(value_at + at as u64);
    }
    cuts.retain(|&cut| cut > start && cut < end);
    for cut in cuts {
        // Cut there, and (`SyncPolicy::Always`) cut there in a file extended with zeros.
        for zeros_after in [0, 4096] {
            let dir = TempDir::new().unwrap();
            copy_store(template.path(), dir.path());
            let log = dir.path().join(&log_name);
            fs::write(&log, &full[..cut as usize]).unwrap();
            if zeros_after > 0 {
                set_len(&log, end + zeros_after);
            }
            let store = KvStore::open(dir.path())
                .unwrap_or_else(|e| panic!("cut at {cut} (+{zeros_after} zeros): {e}"));
            assert_keys(&store, 5, 5);
            assert_eq!(store.get_bytes(b"copy").unwrap(), None, "cut at {cut}");
            assert_eq!(fs::metadata(&log).unwrap().len(), start, "cut at {cut}");
        }
    }
}

#[test]
fn damage_in_the_middle_of_the_log_is_refused_in_every_mode() {
    // A bad record followed by valid ones is corruption, whatever the recovery mode, and
    // records inside a value do not hide the ones after it.
    let inner = log_file_bytes();
    let template = TempDir::new().unwrap();
    let ends = fill(template.path(), 5);
    let log_name = newest_log(template.path()).file_name().unwrap().to_owned();
    let copy_at = ends[4];
    {
        let store = KvStore::open(template.path()).unwrap();
        store.set_bytes(b"copy", &inner).unwrap();
        store.set_bytes(b"big", &vec![7u8; 5 << 20]).unwrap();
        for i in 0..3 {
            store.set(format!("later{i}"), "v".into()).unwrap();
        }
    }
    let big_at = copy_at + RECORD_HEADER + 4 + inner.len() as u64;
    let full = fs::read(template.path().join(&log_name)).unwrap();
    // A flipped byte: in an early small record, in the middle of the value holding records,
    // in the middle of a 5 MiB value.
    for (victim, record_at) in [
        (ends[1] + RECORD_HEADER + 5, ends[1]),
        (
            copy_at + RECORD_HEADER + 4 + inner.len() as u64 / 2,
            copy_at,
        ),
        (big_at + (3 << 20), big_at),
    ] {
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            let dir = TempDir::new().unwrap();
            copy_store(template.path(), dir.path());
            let log = dir.path().join(&log_name);
            let mut bytes = full.clone();
            bytes[victim as usize] ^= 0x20;
            fs::write(&log, &bytes).unwrap();
            match KvStore::open_with(dir.path(), KvStoreOptions::default().recovery(mode)) {
                Err(KvsError::Corruption { path, offset, .. }) => {
                    assert_eq!((path, offset), (log.clone(), record_at), "{mode:?}");
                }
                Err(e) => panic!("flip at {victim}, {mode:?}: expected corruption, got {e}"),
                Ok(_) => panic!("flip at {victim}, {mode:?}: damage was accepted"),
            }
            assert!(fs::read(&log).unwrap() == bytes, "open changed the file");
        }
    }
}
