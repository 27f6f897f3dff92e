//! One open log file: its descriptor, and a read-only memory map for reads.
//!
//! Reads go through the map when there is one: a get is then a lookup and a copy, with no
//! system call. Measured on the 100,000-key random-get benchmark, `pread` was a third of the
//! time of a get; that is why this file holds `unsafe` code. When the map cannot be made
//! (address-space limits, an unusual file system) reads fall back to `pread`.
//!
//! The active file is mapped past its end, up to the largest size a log file may reach, so the
//! map covers records appended later without remapping. Only bytes below the end of a record
//! the index points to are ever read through the map, and those were written (by `pwrite`,
//! which completed before the index was updated) and are never written again: the log is
//! append-only, and a failed write only cuts the file back to the end of the last good record.
//! So no read touches a page past the end of the file (which would raise SIGBUS), and no read
//! races a write. What the map cannot guard against is another process truncating or
//! rewriting a log file while kvs has it open; the directory lock keeps other kvs processes
//! out, and nothing else should write to a kvs data directory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use super::index::Index;

/// Every open log file, by id.
pub type FileMap = BTreeMap<u32, Arc<LogFile>>;

/// The set of open log files, published to readers through the index.
///
/// A get must find the file of a position it read from the index, and that file must stay
/// open until the read is done, even if compaction deletes it meanwhile. Each index shard
/// holds its own snapshot of the file map, read under the same lock as the position, so a
/// get takes one lock and touches no shared counter (a global map behind its own lock, with
/// an `Arc` cloned per get, made two reader threads slower than one). Changes are rare
/// (a new file, a compaction): they copy the map and publish the copy to every shard.
pub struct FileSet {
    current: Mutex<Arc<FileMap>>,
}

impl FileSet {
    pub fn new(files: FileMap, index: &Index) -> FileSet {
        let files = Arc::new(files);
        index.publish_files(&files);
        FileSet {
            current: Mutex::new(files),
        }
    }

    /// The files as they are now.
    pub fn snapshot(&self) -> Arc<FileMap> {
        Arc::clone(&self.current.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes the set with `change` and publishes it to every shard of `index`. Adding a
    /// file must happen before any index entry points into it; removing one only after none
    /// does.
    pub fn update(&self, index: &Index, change: impl FnOnce(&mut FileMap)) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut files = FileMap::clone(&current);
        change(&mut files);
        let files = Arc::new(files);
        index.publish_files(&files);
        *current = files;
    }
}

/// An open log file. Derefs to the [`File`] for writes and syncs.
pub struct LogFile {
    file: File,
    map: Option<Mapping>,
}

impl LogFile {
    /// Wraps `file`, mapping its first `map_len` bytes for reads if the OS lets us.
    pub fn new(file: File, map_len: u64) -> LogFile {
        let map = match Mapping::new(&file, map_len) {
            Ok(map) => Some(map),
            Err(e) => {
                log::debug!("log file not memory-mapped ({e}); reads use pread");
                None
            }
        };
        LogFile { file, map }
    }

    /// Calls `f` with the `len` bytes at `offset`: straight from the map, or read into a
    /// buffer. An `UnexpectedEof` error means the file is shorter than asked.
    pub fn with_bytes<R>(
        &self,
        offset: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> io::Result<R> {
        if let Some(bytes) = self.map.as_ref().and_then(|m| m.get(offset, len)) {
            return Ok(f(bytes));
        }
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(f(&buf))
    }
}

impl Deref for LogFile {
    type Target = File;

    fn deref(&self) -> &File {
        &self.file
    }
}

/// A read-only, shared memory map of the start of a file.
struct Mapping {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value until it is dropped; reading it
// from several threads at once is reading shared immutable memory.
unsafe impl Send for Mapping {}
// SAFETY: as for Send: `&Mapping` only gives out shared reads of read-only memory.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(file: &File, len: u64) -> io::Result<Mapping> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad map length"))?;
        // SAFETY: the kernel picks a fresh address range (addr NULL); the map is, read-only, backed by
        // a valid open descriptor; the result is checked against MAP_FAILED before use, and
        // the range is unmapped exactly once, in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr as *const u8,
            len,
        })
    }

    /// The `len` bytes at `offset`, if they lie inside the map.
    fn get(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: `start..end` is inside the mapped range (checked above), which stays mapped
        // for as long as `self` is borrowed. The bytes are those of records the index points
        // to, which were completely written before the index pointed to them and are never
        // written again (see the module docs), so the slice does not change while it lives.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(start), len) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are exactly what mmap returned and was asked for, and no
        // slice from `get` outlives `&self`, so nothing can read the range after this.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}
