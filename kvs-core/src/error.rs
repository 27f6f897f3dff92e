//! The one error type of the `kvs` library, and the one place that classifies it.
//!
//! [`KvsError`] says what went wrong with the details a person needs (the file, the offset,
//! the key); [`ErrorKind`] says what kind of failure it is, which is what code acts on. Every
//! consumer that turns an error into something else maps from [`KvsError::kind`]: the wire
//! protocol's error codes, the C API's `kvs_status`, the Python exceptions.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// The kind of a [`KvsError`]: one kind per way a caller can act on an error, as
/// [`std::io::ErrorKind`] is to [`std::io::Error`]. [`KvsError::kind`] gives it.
///
/// More kinds may be added: match with a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The key does not exist ([`KvsError::KeyNotFound`]).
    KeyNotFound,
    /// The caller passed something kvs cannot accept: a key over the size limit, an unknown
    /// engine name, a value read as a string that is not UTF-8 ([`KvsError::InvalidArgument`],
    /// [`KvsError::UnknownEngine`], [`KvsError::NotUtf8`]).
    InvalidArgument,
    /// The directory holds the other engine's data ([`KvsError::EngineMismatch`]).
    EngineMismatch,
    /// Another handle or process holds the directory ([`KvsError::Locked`]): close it, or
    /// wait.
    Locked,
    /// The operating system failed an I/O operation ([`KvsError::Io`], [`KvsError::IoAt`]).
    Io,
    /// Data on disk is damaged ([`KvsError::Corruption`]). Nothing has been deleted.
    Corruption,
    /// The store refuses writes after an earlier failure; reopen it
    /// ([`KvsError::Poisoned`]).
    Poisoned,
    /// The handle was opened by the parent of this `fork()` child ([`KvsError::Forked`]).
    Forked,
    /// A peer broke the wire protocol ([`KvsError::Protocol`]).
    Protocol,
    /// No connection to the server could be made: nothing was sent
    /// ([`KvsError::Connect`]).
    Connect,
    /// The connection broke during a request, which may or may not have been carried out
    /// ([`KvsError::ConnectionLost`]).
    ConnectionLost,
    /// Anything else: a failure of an engine's own ([`KvsError::Engine`]), or a failure a
    /// server reported without a closer kind.
    Other,
}

impl ErrorKind {
    /// A short name for people, e.g. `"I/O"` or `"key not found"`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::KeyNotFound => "key not found",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::EngineMismatch => "engine mismatch",
            ErrorKind::Locked => "locked",
            ErrorKind::Io => "I/O",
            ErrorKind::Corruption => "corruption",
            ErrorKind::Poisoned => "poisoned",
            ErrorKind::Forked => "forked",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Connect => "cannot connect",
            ErrorKind::ConnectionLost => "connection lost",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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

    /// An engine failed in a way of its own that is neither I/O nor damage (for sled: a
    /// collection that no longer exists, an unsupported use, a bug sled reports).
    #[error("{engine} error: {message}")]
    Engine {
        /// The engine's name, e.g. `"sled"`.
        engine: &'static str,
        /// What the engine said.
        message: String,
    },

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
    /// [`KvsError::KeyNotFound`]). Its [`kind`](KvsError::kind) is the kind the server
    /// reported.
    #[error("server error ({kind}): {message}")]
    Remote {
        /// What kind of failure the server reported.
        kind: ErrorKind,
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

    /// What kind of failure this is: what code acts on. For [`KvsError::Remote`], the kind
    /// the server reported.
    pub fn kind(&self) -> ErrorKind {
        match self {
            KvsError::KeyNotFound => ErrorKind::KeyNotFound,
            KvsError::InvalidArgument(_)
            | KvsError::UnknownEngine(_)
            | KvsError::NotUtf8 { .. } => ErrorKind::InvalidArgument,
            KvsError::EngineMismatch { .. } => ErrorKind::EngineMismatch,
            KvsError::Locked { .. } => ErrorKind::Locked,
            KvsError::Io(_) | KvsError::IoAt { .. } => ErrorKind::Io,
            KvsError::Corruption { .. } => ErrorKind::Corruption,
            KvsError::Poisoned(_) => ErrorKind::Poisoned,
            KvsError::Forked { .. } => ErrorKind::Forked,
            KvsError::Protocol(_) => ErrorKind::Protocol,
            KvsError::Connect { .. } => ErrorKind::Connect,
            KvsError::ConnectionLost { .. } => ErrorKind::ConnectionLost,
            KvsError::Remote { kind, .. } => *kind,
            KvsError::Engine { .. } => ErrorKind::Other,
        }
    }

    /// Whether a kvs server reported this error ([`KvsError::Remote`]) rather than this
    /// process finding it.
    pub fn is_remote(&self) -> bool {
        matches!(self, KvsError::Remote { .. })
    }

    /// The operating system's error behind this one, if any: for an I/O error, and for a
    /// connection that could not be made or was lost.
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            KvsError::Io(source)
            | KvsError::IoAt { source, .. }
            | KvsError::Connect { source, .. }
            | KvsError::ConnectionLost { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The file or directory this error is about, if it names one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            KvsError::IoAt { path, .. } | KvsError::Corruption { path, .. } => Some(path),
            KvsError::EngineMismatch { dir, .. } | KvsError::Locked { dir } => Some(dir),
            _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn io() -> io::Error {
        io::Error::other("x")
    }

    /// Every variant, with the kind its documentation gives it. A variant added to `KvsError`
    /// must be added here: `every_variant_is_listed` fails otherwise.
    fn every_variant() -> Vec<(KvsError, ErrorKind)> {
        vec![
            (KvsError::KeyNotFound, ErrorKind::KeyNotFound),
            (KvsError::Io(io()), ErrorKind::Io),
            (KvsError::io_at("f", io()), ErrorKind::Io),
            (
                KvsError::Corruption {
                    path: PathBuf::from("f"),
                    offset: 7,
                    reason: "x".into(),
                },
                ErrorKind::Corruption,
            ),
            (
                KvsError::EngineMismatch {
                    dir: PathBuf::from("d"),
                    recorded: "kvs".into(),
                    requested: "sled".into(),
                },
                ErrorKind::EngineMismatch,
            ),
            (
                KvsError::UnknownEngine("x".into()),
                ErrorKind::InvalidArgument,
            ),
            (
                KvsError::Locked {
                    dir: PathBuf::from("d"),
                },
                ErrorKind::Locked,
            ),
            (
                KvsError::NotUtf8 { key: "k".into() },
                ErrorKind::InvalidArgument,
            ),
            (
                KvsError::InvalidArgument("x".into()),
                ErrorKind::InvalidArgument,
            ),
            (KvsError::Poisoned("x".into()), ErrorKind::Poisoned),
            (
                KvsError::Forked {
                    opened_by: 1,
                    handle: crate::process::STORE,
                },
                ErrorKind::Forked,
            ),
            (
                KvsError::Engine {
                    engine: "sled",
                    message: "x".into(),
                },
                ErrorKind::Other,
            ),
            (KvsError::Protocol("x".into()), ErrorKind::Protocol),
            (
                KvsError::Connect {
                    addr: "a".into(),
                    source: io(),
                },
                ErrorKind::Connect,
            ),
            (
                KvsError::ConnectionLost {
                    addr: "a".into(),
                    source: io(),
                },
                ErrorKind::ConnectionLost,
            ),
            (
                KvsError::Remote {
                    kind: ErrorKind::Io,
                    message: "x".into(),
                },
                ErrorKind::Io,
            ),
            (
                KvsError::Remote {
                    kind: ErrorKind::Other,
                    message: "x".into(),
                },
                ErrorKind::Other,
            ),
        ]
    }

    #[test]
    fn every_variant_has_its_documented_kind() {
        for (error, kind) in every_variant() {
            assert_eq!(error.kind(), kind, "{error:?}");
        }
    }

    /// The position of `error`'s variant in the declaration. No `_` arm: a new variant does
    /// not compile until it has a number here, and then `every_variant_is_listed` fails until
    /// it is in `every_variant` with its kind.
    fn variant_number(error: &KvsError) -> usize {
        match error {
            KvsError::KeyNotFound => 0,
            KvsError::Io(_) => 1,
            KvsError::IoAt { .. } => 2,
            KvsError::Corruption { .. } => 3,
            KvsError::EngineMismatch { .. } => 4,
            KvsError::UnknownEngine(_) => 5,
            KvsError::Locked { .. } => 6,
            KvsError::NotUtf8 { .. } => 7,
            KvsError::InvalidArgument(_) => 8,
            KvsError::Poisoned(_) => 9,
            KvsError::Forked { .. } => 10,
            KvsError::Engine { .. } => 11,
            KvsError::Protocol(_) => 12,
            KvsError::Connect { .. } => 13,
            KvsError::ConnectionLost { .. } => 14,
            KvsError::Remote { .. } => 15,
        }
    }

    #[test]
    fn every_variant_is_listed() {
        let listed: std::collections::BTreeSet<usize> = every_variant()
            .iter()
            .map(|(error, _)| variant_number(error))
            .collect();
        let all: std::collections::BTreeSet<usize> = (0..=15).collect();
        assert_eq!(listed, all);
    }

    #[test]
    fn remote_errors_are_told_apart_from_local_ones() {
        let remote = KvsError::Remote {
            kind: ErrorKind::Corruption,
            message: "x".into(),
        };
        assert!(remote.is_remote());
        assert!(
            !remote.is_corruption(),
            "the damage is on the server's disk"
        );
        assert!(every_variant()
            .iter()
            .filter(|(e, _)| !matches!(e, KvsError::Remote { .. }))
            .all(|(e, _)| !e.is_remote()));
    }

    #[test]
    fn os_error_and_path_are_the_variants_own() {
        let at = KvsError::io_at("/data/1.log", io::Error::from_raw_os_error(28));
        assert_eq!(at.os_error().and_then(io::Error::raw_os_error), Some(28));
        assert_eq!(at.path(), Some(Path::new("/data/1.log")));
        let locked = KvsError::Locked {
            dir: PathBuf::from("/data"),
        };
        assert_eq!(locked.path(), Some(Path::new("/data")));
        assert!(locked.os_error().is_none());
        assert!(KvsError::KeyNotFound.path().is_none());
    }

    #[test]
    fn kind_names_are_the_ones_servers_have_always_shown() {
        // `KvsError::Remote` displays as "server error ({kind}): ...".
        let names = [
            (ErrorKind::Other, "other"),
            (ErrorKind::KeyNotFound, "key not found"),
            (ErrorKind::InvalidArgument, "invalid argument"),
            (ErrorKind::Io, "I/O"),
            (ErrorKind::Corruption, "corruption"),
            (ErrorKind::Protocol, "protocol"),
        ];
        for (kind, name) in names {
            assert_eq!(kind.to_string(), name);
        }
    }
}
