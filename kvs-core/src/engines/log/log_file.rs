//! One open log file: a memory map for reads (and, for the active file, appends), and its
//! descriptor while one is needed.
//!
//! Reads go through the map when there is one: a get is then a lookup and a copy, with no
//! system call. Measured on the 100,000-key random-get benchmark, `pread` was a third of the
//! time of a get; that is why this file holds `unsafe` code. When the map cannot be made
//! (address-space limits, an unusual file system) reads fall back to `pread`.
//!
//! **Descriptors.** A map stays valid after its file's descriptor is closed, so only the
//! active file (written, synced, cut back) keeps one. A closed file is mapped whole and its
//! descriptor closed at once ([`LogFile::new`]), and the active file gives its descriptor up
//! when writes move on from it, after it was sealed and synced
//! ([`LogFile::release_descriptor`]). A store of any number of files therefore holds one
//! descriptor for its log, plus, during a compaction, one for the file it writes and one for
//! the file it reads (compaction reads with `pread` through a descriptor of its own, one file
//! at a time, see [`SeqReader`]). A file that could not be mapped keeps its descriptor and is
//! read with `pread`.
//!
//! What bounds the number of files instead is the number of memory maps a process may have:
//! `vm.max_map_count`, 65,530 by default on Linux, shared with everything else in the process
//! (each thread's stack, each shared library, allocator arenas). During a compaction the old
//! files and the outputs are mapped side by side. Past the limit `mmap` fails with `ENOMEM`;
//! that file is then read with `pread` and holds a descriptor, so the store keeps working and
//! is bounded by `RLIMIT_NOFILE` again. With the default 1 GiB file size a store reaches tens
//! of thousands of files only at tens of terabytes; smaller `max_file_size` settings reach it
//! sooner.
//!
//! **No read past the end.** A read through a map of a page that lies wholly past the end of
//! the file raises SIGBUS, which kills the process. The active file is mapped past its end, up
//! to the largest size a log file may reach, so the map covers records appended later without
//! remapping. Only the bytes of a record the index points to are ever read through a map, and
//! those were written (copied through the map or by `pwrite`, either of which completed before
//! the index was updated) and are never written again: the log is append-only.
//!
//! **Appends through the map.** The active file's map is writable too, and the writer copies
//! records into it ([`LogFile::write_mapped`]): a set is then a `memcpy` into the page cache.
//! A store to a page of the map past the end of the file raises SIGBUS like a read, and so
//! does a store to a page the file system cannot find space for when it is first dirtied. So
//! the writer copies only into bytes below the end of the file that `fallocate` allocated
//! beforehand ([`LogFile::allocate`]; see `writer.rs`), and writes everything else (a record
//! past the map, a file system without `fallocate`, a disk too full to allocate) with `pwrite`.
//! The bytes copied are in the OS when the copy ends, exactly as after a `pwrite`: a `kill -9`
//! loses nothing acknowledged, and `fdatasync` writes them back. When writes move on from the
//! file its map is made read-only again (`mprotect`). A child made by `fork()` inherits the
//! map, shared with the parent, but never writes through it: every operation of an inherited
//! store fails in the child before touching its files (see `process.rs`). A read of bytes below a file's length only touches
//! pages that hold at least one byte of the file, so it is safe as long as no file is cut
//! below the end of a record the index points to (or pointed to when a reader took the
//! position, under its index shard's lock). Every place kvs changes a log file's length:
//!
//! - recovery's cuts (a torn tail, a zero tail, a header rewritten) run while the store opens,
//!   before any file is mapped (the files are mapped after replay) and under the directory
//!   lock, so no map of kvs's covers the file;
//! - the writer (`writer.rs`) only ever cuts the active file to the end of its last record
//!   (`LogWriter::cut_back`): after a failed append or seal, whose bytes were never indexed, and
//!   to cut off the zeros it allocated ahead of its records (`trim`, on sealing and on close;
//!   and after an allocation that failed, which may have grown the file in part). Allocating
//!   ahead only grows the file, and no record is copied past the end of the allocation;
//! - compaction never shortens a file: it writes new files (not mapped until complete and
//!   synced) and deletes old ones, and a mapping of a deleted file stays valid;
//! - a closed file is never written, extended or cut again.
//!
//! So kvs never shrinks a file under a read of its own, and no read races a write. What the
//! map cannot guard against is another process truncating or rewriting a log file while kvs
//! has it open: a get of a record in the missing pages then kills the process with SIGBUS
//! (compaction reads the old files with `pread`, which sees the end of the file instead and
//! fails with an error naming the file, unless no descriptor was left to open them with). The directory lock keeps other kvs processes out;
//! nothing else may write to a kvs data directory while a store has it open.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

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

/// An open log file: a read-only memory map for reads, and a descriptor while one is needed.
///
/// The active file keeps its descriptor (it is written, synced and cut back). A closed file
/// that could be mapped gives its descriptor up: the map stays valid after `close`, and every
/// read of it goes through the map (see the module docs).
pub struct LogFile {
    /// `None` once given up. Read-locked for each write, sync or `pread`, so that
    /// [`LogFile::release_descriptor`] cannot close it under one.
    file: RwLock<Option<File>>,
    map: Option<Mapping>,
}

impl LogFile {
    /// A closed log file of `len` bytes (it is never written again): mapped whole for reads,
    /// then its descriptor is closed. If it cannot be mapped, it keeps its descriptor and
    /// reads use `pread`.
    pub fn new(file: File, len: u64) -> LogFile {
        let log_file = LogFile::open(file, len, false);
        log_file.release_descriptor(len);
        log_file
    }

    /// The active log file (opened for reading and writing): keeps `file` for writes and
    /// syncs, and maps its first `map_len` bytes for reads and appends
    /// ([`LogFile::write_mapped`]) if the OS lets us.
    pub fn active(file: File, map_len: u64) -> LogFile {
        LogFile::open(file, map_len, true)
    }

    fn open(file: File, map_len: u64, writable: bool) -> LogFile {
        let map = match Mapping::new(&file, map_len, writable) {
            Ok(map) => Some(map),
            Err(e) => {
                log::debug!("log file not memory-mapped ({e}); reads use pread");
                None
            }
        };
        LogFile {
            file: RwLock::new(Some(file)),
            map,
        }
    }

    /// Closes the descriptor of a file of `len` bytes that will not be written again, if its
    /// map covers all of it (a file that is not mapped, or only in part, as when a record
    /// larger than the file-size limit went past the map of the active file, keeps it for
    /// `pread`). Only for a file whose every byte is on disk: a later
    /// [`LogFile::sync_data`] has nothing left to do.
    pub fn release_descriptor(&self, len: u64) {
        if let Some(map) = &self.map {
            // Never written again: a stray write through the map now faults instead of
            // changing a closed file.
            map.make_read_only();
            if map.len as u64 >= len {
                self.file.write().unwrap_or_else(|p| p.into_inner()).take();
            }
        }
    }

    fn descriptor(&self) -> RwLockReadGuard<'_, Option<File>> {
        // A panic while holding the lock (it is only ever held around one system call) leaves
        // nothing half-done.
        self.file.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `f` with the `len` bytes at `offset`: straight from the map, or read into a
    /// buffer. An `UnexpectedEof` error means the file is shorter than asked.
    ///
    /// A read of [`COLD_READ_BYTES`] or more through the map drops the pages it touched from
    /// this process once `f` returns: a large value read once would otherwise stay resident
    /// for as long as the file is open.
    pub fn with_bytes<R>(
        &self,
        offset: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> io::Result<R> {
        if let Some(map) = &self.map {
            if let Some(bytes) = map.get(offset, len) {
                let result = f(bytes);
                if len >= COLD_READ_BYTES {
                    map.drop_pages(offset, len);
                }
                return Ok(result);
            }
        }
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, offset)?;
        Ok(f(&buf))
    }

    /// `pread` into `buf`, through the descriptor, or copied from the map if the descriptor
    /// was given up. An `UnexpectedEof` error means the file is shorter than asked.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if let Some(file) = &*self.descriptor() {
            return file.read_exact_at(buf, offset);
        }
        match self.map.as_ref().and_then(|m| m.get(offset, buf.len())) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of a closed log file",
            )),
        }
    }

    /// `pwrite` of all of `buf` at `offset` (the active file only).
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with_descriptor(|file| file.write_all_at(buf, offset))
    }

    /// Copies `buf` into the file at `offset` through its writable map (the active file
    /// only): the bytes are then in the page cache, as after a `pwrite`, with no system call.
    /// The first `head` bytes (a record's header, or a batch's whole frame record) are copied
    /// first, and only then the rest, so that a process killed in the middle leaves the header
    /// whole with part of the body (what recovery judges by the header's extent, see
    /// `recovery.rs`), never a body without its header. Returns `false`, writing nothing, if
    /// the file has no writable map or `buf` does not lie inside it: the caller then writes
    /// with [`LogFile::write_all_at`].
    ///
    /// # Safety
    ///
    /// Every byte of `offset..offset + buf.len()` must lie below the file's end and in blocks
    /// the file system has already allocated (`fallocate`, [`LogFile::allocate`]): a store
    /// to a page past the end of the file raises SIGBUS, and so would a page the file system
    /// cannot find room for when it is first written. And nothing may read or write those
    /// bytes meanwhile: the caller is the single writer, and the index points to no record
    /// there yet (see the module docs).
    pub unsafe fn write_mapped(&self, buf: &[u8], offset: u64, head: usize) -> bool {
        match &self.map {
            // SAFETY: passed on from the caller (see above).
            Some(map) => unsafe { map.write(buf, offset, head) },
            None => false,
        }
    }

    /// Drops the pages of `offset..offset + len` from this process's memory, if the file is
    /// mapped (see `Mapping::drop_pages`): for the writer, once records were copied through
    /// the map, which makes their pages resident in the process as a read does. Their bytes
    /// stay in the file and the page cache, dirty until written back.
    pub fn drop_pages(&self, offset: u64, len: usize) {
        if let Some(map) = &self.map {
            map.drop_pages(offset, len);
        }
    }

    /// Allocates blocks for `offset..offset + len` (`fallocate(2)`, growing the file if it is
    /// shorter; the new bytes read as zeros), so that writes there through the map can never
    /// fail for want of space: a full disk is this call's error instead. An `Unsupported`
    /// error means the file system cannot allocate ahead.
    pub fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.with_descriptor(|file| allocate(file, offset, len))?;
        if let Some(map) = &self.map {
            map.allow_writes_below(offset.saturating_add(len));
        }
        Ok(())
    }

    /// Sets the file's length (the active file only; see the module docs for why no read
    /// can then touch a page past the end).
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        if let Some(map) = &self.map {
            map.forbid_writes_from(len);
        }
        self.with_descriptor(|file| file.set_len(len))
    }

    /// `fdatasync`. A file that gave up its descriptor was synced whole before (see
    /// [`LogFile::release_descriptor`]): there is nothing to do.
    pub fn sync_data(&self) -> io::Result<()> {
        match &*self.descriptor() {
            Some(file) => file.sync_data(),
            None => Ok(()),
        }
    }

    fn with_descriptor<R>(&self, f: impl FnOnce(&File) -> io::Result<R>) -> io::Result<R> {
        match &*self.descriptor() {
            Some(file) => f(file),
            None => Err(io::Error::other(
                "log file is closed for writes (its descriptor was given up)",
            )),
        }
    }
}

/// Reads records of one log file in increasing offset order, through a descriptor of its own
/// and chunked `pread`, for compaction: reading a whole file through its map would make all
/// of its pages resident in this process (page cache pages count towards a process's memory
/// once it maps them), while `pread` leaves them in the page cache only. A read also cannot
/// raise SIGBUS if the file was cut short behind kvs's back: it reports the end of the file.
///
/// If the file cannot be opened again (no descriptor to spare), reads go through the
/// [`LogFile`] instead, one record at a time.
pub struct SeqReader<'a> {
    log_file: &'a LogFile,
    own: Option<File>,
    buf: Vec<u8>,
    /// `buf[..filled]` holds the file's bytes from `buf_at` on.
    buf_at: u64,
    filled: usize,
}

/// How much a [`SeqReader`] reads at a time.
const SEQ_CHUNK: usize = 4 << 20;

impl<'a> SeqReader<'a> {
    /// A reader of `log_file`, which is at `path`.
    pub fn new(log_file: &'a LogFile, path: &Path) -> SeqReader<'a> {
        let own = match File::open(path) {
            Ok(file) => Some(file),
            Err(e) => {
                log::debug!(
                    "{}: reading through the store's own map ({e})",
                    path.display()
                );
                None
            }
        };
        SeqReader {
            log_file,
            own,
            buf: Vec::new(),
            buf_at: 0,
            filled: 0,
        }
    }

    /// The `len` bytes at `offset`. Reads are cheapest in increasing offset order. An
    /// `UnexpectedEof` error means the file is shorter than asked.
    pub fn read(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let end = offset
            .checked_add(len as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read past 2^64"))?;
        let held = offset >= self.buf_at && end <= self.buf_at + self.filled as u64;
        if !held {
            self.fill(offset, len)?;
        }
        let start = (offset - self.buf_at) as usize;
        Ok(&self.buf[start..start + len])
    }

    fn fill(&mut self, offset: u64, len: usize) -> io::Result<()> {
        let want = len.max(SEQ_CHUNK);
        if self.buf.len() < want || self.buf.len() > 2 * want {
            // Grown for one large record: back to the usual size after it.
            self.buf = vec![0; want];
        }
        self.buf_at = offset;
        self.filled = 0;
        let Some(file) = &self.own else {
            self.log_file.read_exact_at(&mut self.buf[..len], offset)?;
            self.filled = len;
            return Ok(());
        };
        while self.filled < len {
            match file.read_at(
                &mut self.buf[self.filled..want],
                offset + self.filled as u64,
            ) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file ends before the record",
                    ))
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Reads through the map of at least this many bytes do not stay resident (see
/// [`LogFile::with_bytes`]).
pub const COLD_READ_BYTES: usize = 1 << 20;

/// `fallocate(2)` of `offset..offset + len` in `file`, mode 0: blocks allocated, the file grown
/// to cover them if it is shorter.
#[cfg(target_os = "linux")]
fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "allocation past 2^63",
        ));
    };
    loop {
        // SAFETY: fallocate only reads its integer arguments; the descriptor is open for
        // writing for as long as `file` is borrowed.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                return Err(io::Error::new(io::ErrorKind::Unsupported, e))
            }
            _ => return Err(e),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no fallocate on this system",
    ))
}

/// A shared memory map of the start of a file: read-only, or (the active file) writable too.
struct Mapping {
    ptr: *mut u8,
    len: usize,
    /// Whether the map may be written: set for the active file's map, cleared for good by
    /// [`Mapping::make_read_only`].
    writable: std::sync::atomic::AtomicBool,
    /// How far from the start the map is writable (`PROT_WRITE`, a whole number of pages):
    /// only over blocks `fallocate` allocated below the file's end, never over pages past it.
    /// A map writable past the end of its file would be a trap for anything that reads every
    /// writable page of the process: valgrind's leak check at exit (in a forked child too)
    /// touches each word of such pages and takes a SIGBUS for every one.
    writable_end: std::sync::atomic::AtomicUsize,
}

// SAFETY: the mapping is owned by this value until it is dropped. Threads read it at once only
// through `get`, of bytes no one writes any more; the one write path, `write`, is unsafe and
// its callers guarantee that no one else touches the bytes it writes (the single writer, under
// the store's writer lock, writing bytes the index does not point to yet).
unsafe impl Send for Mapping {}
// SAFETY: as for Send.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(file: &File, len: u64, writable: bool) -> io::Result<Mapping> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad map length"))?;
        // Writable maps start read-only too: pages become writable as blocks are allocated
        // under them (see `writable_end`).
        let prot = libc::PROT_READ;
        // SAFETY: the kernel picks a fresh address range (addr NULL); the map is backed by a
        // valid open descriptor (open for writing when the map is writable); the result is
        // checked against MAP_FAILED before use, and the range is unmapped exactly once, in
        // Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr as *mut u8,
            len,
            writable: std::sync::atomic::AtomicBool::new(writable),
            writable_end: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Copies `buf` to `offset`, its first `head` bytes first; `false` (nothing written) if
    /// the map is not writable or does not cover the range.
    ///
    /// # Safety
    ///
    /// As for [`LogFile::write_mapped`]: the range lies in allocated blocks below the file's
    /// end, and no one else reads or writes it meanwhile.
    unsafe fn write(&self, buf: &[u8], offset: u64, head: usize) -> bool {
        use std::sync::atomic::{compiler_fence, Ordering};
        let Ok(start) = usize::try_from(offset) else {
            return false;
        };
        // Relaxed: only the writer thread (under the writer lock) changes `writable_end`.
        let inside = start
            .checked_add(buf.len())
            .is_some_and(|end| end <= self.writable_end.load(Ordering::Relaxed));
        // Relaxed: only the writer thread (under the writer lock) reads or changes the flag.
        if !inside || !self.writable.load(Ordering::Relaxed) {
            return false;
        }
        let head = head.min(buf.len());
        // SAFETY: `start..start + buf.len()` lies inside the map (checked above), which is
        // writable; the caller guarantees that the pages are backed by allocated blocks below
        // the file's end (so the stores cannot fault) and that no one else uses the range, so
        // nothing aliases the bytes written. `buf` is ordinary memory of the caller's, which
        // cannot overlap a range no one else uses.
        unsafe {
            std::ptr::copy_nonoverlapping(buf.as_ptr(), self.ptr.add(start), head);
            // The header's stores come before the body's in program order, and so before any
            // point where the process can be killed in the body's copy (the kernel stops a
            // thread between instructions): the compiler must not merge or reorder the copies.
            compiler_fence(Ordering::SeqCst);
            std::ptr::copy_nonoverlapping(
                buf.as_ptr().add(head),
                self.ptr.add(start + head),
                buf.len() - head,
            );
        }
        true
    }

    /// Makes the pages below `end` (rounded up to a page: the page holding `end` is backed by
    /// the file) writable, if the map is a writable one and they are not yet. For the writer,
    /// once `fallocate` allocated the file up to `end`.
    fn allow_writes_below(&self, end: u64) {
        use std::sync::atomic::Ordering;
        let Some(end) = page_ceil(end).map(|end| end.min(self.len)) else {
            return;
        };
        // Relaxed: only the writer thread (under the writer lock) reads or changes these.
        let from = self.writable_end.load(Ordering::Relaxed);
        if !self.writable.load(Ordering::Relaxed) || end <= from {
            return;
        }
        // SAFETY: `from..end` lies inside the mapped range (`end` is capped at its length,
        // `from` is a page boundary below it) and is backed by the file up to `end`'s page;
        // adding write permission invalidates no slice `get` gave out.
        let rc = unsafe {
            libc::mprotect(
                self.ptr.add(from) as *mut libc::c_void,
                end - from,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rc == 0 {
            self.writable_end.store(end, Ordering::Relaxed);
        }
    }

    /// Takes write permission from the pages wholly at or past `len`, before the file is cut
    /// to `len`, so that no writable page lies past its end.
    fn forbid_writes_from(&self, len: u64) {
        use std::sync::atomic::Ordering;
        let Some(keep) = page_ceil(len) else {
            return;
        };
        let end = self.writable_end.load(Ordering::Relaxed);
        if keep >= end {
            return;
        }
        // SAFETY: `keep..end` lies inside the mapped range (`end` never exceeds its length);
        // removing write permission invalidates no slice (every slice `get` gives out is a
        // read), and the writer, the only thread that writes through the map, is the caller.
        unsafe {
            libc::mprotect(
                self.ptr.add(keep) as *mut libc::c_void,
                end - keep,
                libc::PROT_READ,
            );
        }
        self.writable_end.store(keep, Ordering::Relaxed);
    }

    /// Takes write permission from the map (`mprotect`), for a file that is never written
    /// again. Best effort: the flag alone already stops [`Mapping::write`].
    fn make_read_only(&self) {
        use std::sync::atomic::Ordering;
        if self.writable.swap(false, Ordering::Relaxed) {
            self.writable_end.store(0, Ordering::Relaxed);
            // SAFETY: `ptr` and `len` are exactly the range mmap returned; changing its
            // protection to read-only invalidates no slice (every slice `get` gives out is a
            // read).
            unsafe {
                libc::mprotect(self.ptr as *mut libc::c_void, self.len, libc::PROT_READ);
            }
        }
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

impl Mapping {
    /// Drops the pages holding the `len` bytes at `offset` from this process's memory
    /// (`MADV_DONTNEED`). The data stays in the file and the page cache: a later read of
    /// the range faults the pages back in with the same bytes (for a shared file mapping,
    /// `MADV_DONTNEED` only unmaps pages, it never discards their contents). Best effort.
    fn drop_pages(&self, offset: u64, len: usize) {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let Ok(page) = usize::try_from(page) else {
            return;
        };
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if page == 0 || start >= self.len {
            return;
        }
        let first = start - start % page;
        let end = start.saturating_add(len).min(self.len);
        // SAFETY: `first..end` lies inside the mapped range (`first` is `start` rounded down
        // to a page, `end` is capped at the map's length; the kernel rounds the length up to a
        // page, which the mapping covers). Slices from `get` over these pages may be in use by
        // other threads: they go on reading the same bytes, faulted back in from the file,
        // whose records are never rewritten (see the module docs).
        unsafe {
            libc::madvise(
                self.ptr.add(first) as *mut libc::c_void,
                end - first,
                libc::MADV_DONTNEED,
            );
        }
    }
}

/// `offset` rounded up to a whole page, as a `usize`.
fn page_ceil(offset: u64) -> Option<usize> {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    let offset = usize::try_from(offset).ok()?;
    if page == 0 {
        return None;
    }
    offset.checked_next_multiple_of(page)
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
