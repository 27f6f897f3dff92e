//! The one error type of the `kvs` library.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in kvs.
///
/// Variants carry what a user needs to act on the error: which file and offset is corrupt, which
/// engine a directory holds, which limit was exceeded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvsError {
    /// The key does not exist (returned by `remove`; `get` returns `Ok(None)` instead).
    #[error("Key not found")]
    KeyNotFound,

    /// An I/O error from the operating system.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// An I/O error on a specific file.
    #[error("I/O error on {}: {source}", path.display())]
    IoAt {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Data on disk failed its checksum or is malformed. Nothing has been deleted.
    #[error("corruption in {} at offset {offset}: {reason}", path.display())]
    Corruption {
        /// The file holding the bad bytes.
        path: PathBuf,
        /// Byte offset of the bad record in that file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },

    /// The directory was created by another engine than the one asked for.
    #[error(
        "engine mismatch in {}: the data was written by the '{recorded}' engine, not '{requested}'",
        dir.display()
    )]
    EngineMismatch {
        /// The data directory.
        dir: PathBuf,
        /// The engine recorded in the directory.
        recorded: String,
        /// The engine that was asked for.
        requested: String,
    },

    /// An engine name other than `kvs` or `sled`.
    #[error("unknown engine '{0}': expected 'kvs' or 'sled'")]
    UnknownEngine(String),

    /// Another handle (in this or another process) holds the directory open for writing.
    #[error("{} is locked: another kvs process (or handle) has it open", dir.display())]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },

    /// A value stored as bytes is not valid UTF-8 and was read through the `String` API.
    #[error("the value of key {key:?} is not valid UTF-8; read it with get_bytes")]
    NotUtf8 {
        /// The key whose value could not be decoded (lossily shown).
        key: String,
    },

    /// A caller passed an argument kvs cannot accept (e.g. a key over the size limit).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A previous write failed in a way that left the store unable to accept more writes;
    /// reopen it. Reads still work, and nothing acknowledged is lost.
    #[error("the store refuses writes after an earlier failure ({0}); reopen it")]
    Poisoned(String),

    /// The handle was opened (or the client connected) by another process, of which this one
    /// is a child made by `fork()`. A handle belongs to the process that opened it: in the
    /// child, open the store again (once the parent has closed it: the directory lock admits
    /// one process), or connect again. Nothing was read or written; the parent's handle is
    /// unharmed.
    #[error("{}", forked_message(*opened_by, handle))]
    Forked {
        /// The pid of the process that opened the handle.
        opened_by: u32,
        /// What the handle is: `"store"`, `"client"`, or `"sled engine"` when a sled store
        /// cannot be opened at all in a child of a process that runs sled (sled's background
        /// threads do not survive `fork()`; use a fresh process).
        handle: &'static str,
    },

    /// An error from the sled engine.
    #[error("sled error: {0}")]
    Sled(#[from] sled::Error),

    /// The network peer violated the protocol (malformed or oversized frame).
    #[error("protocol error: {0}")]
    Protocol(String),

    /// A client could not connect to a kvs server (refused, unreachable, timed out, or the
    /// address did not resolve).
    #[error("cannot connect to kvs server at {addr}: {source}")]
    Connect {
        /// The address as given to `connect`.
        addr: String,
        /// Why the connection failed.
        #[source]
        source: io::Error,
    },

    /// An established connection to a kvs server broke during a request: closed by the server,
    /// reset, or timed out. The request may or may not have been carried out.
    #[error("connection to kvs server at {addr} lost: {source}")]
    ConnectionLost {
        /// The server's address.
        addr: String,
        /// What happened to the connection.
        #[source]
        source: io::Error,
    },

    /// A kvs server answered a request with an error (other than a missing key, which is
    /// [`KvsError::KeyNotFound`]).
    #[error("server error ({kind}): {message}")]
    Remote {
        /// What kind of failure the server reported.
        kind: crate::protocol::ErrorKind,
        /// The server's message.
        message: String,
    },
}

fn forked_message(opened_by: u32, handle: &str) -> String {
    if handle == crate::process::CLIENT {
        format!(
            "this client was connected by process {opened_by}; a client connection does not \
             survive fork(): connect again in this process"
        )
    } else if handle == crate::process::SLED_ENGINE {
        format!(
            "this process is a fork() child of process {opened_by}, which runs the sled \
             engine: sled's background threads do not survive fork(), so no sled store can \
             be opened here; open it in a fresh process instead"
        )
    } else {
        format!(
            "this {handle} was opened by process {opened_by}; a {handle} handle does not \
             survive fork(): open the {handle} again in this process"
        )
    }
}

/// `Result` with [`KvsError`].
pub type Result<T> = std::result::Result<T, KvsError>;

impl KvsError {
    pub(crate) fn io_at(path: impl Into<PathBuf>, source: io::Error) -> KvsError {
        KvsError::IoAt {
            path: path.into(),
            source,
        }
    }

    /// Whether this error means that data on disk is damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(self, KvsError::Corruption { .. })
    }

    /// Whether this error means the handle was inherited through `fork()`
    /// ([`KvsError::Forked`]).
    pub fn is_forked(&self) -> bool {
        matches!(self, KvsError::Forked { .. })
    }

    /// Whether this error comes from the operating system's I/O.
    pub fn is_io(&self) -> bool {
        matches!(self, KvsError::Io(_) | KvsError::IoAt { .. })
    }
}
