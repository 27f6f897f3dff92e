//! The status codes of the C API, and the one mapping from a kvs error's kind to them.

use kvs::{ErrorKind, KvsError};

/// The result of a kvs call.
///
/// The numbers are part of the ABI: they never change and are never reused; new codes are only
/// ever appended. Any status other than `KVS_OK` also sets the calling thread's error message,
/// which `kvs_last_error()` returns.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kvs_status {
    /// Success.
    KVS_OK = 0,
    /// The key is not in the store: `kvs_get` of a missing key (which also sets `*value_out` to
    /// NULL and `*value_len_out` to 0), or `kvs_remove` of a missing key.
    KVS_NOT_FOUND = 1,
    /// The caller passed something kvs cannot accept: a NULL pointer where one is required, a
    /// NULL data pointer with a non-zero length, an empty path, an engine name other than
    /// `"kvs"` or `"sled"`, a key or value over the size limits (1 MiB keys, 512 MiB values
    /// with the kvs engine), or an engine that differs from the one recorded in the directory
    /// by an earlier open (the directory is left untouched).
    KVS_INVALID_ARGUMENT = 2,
    /// The operating system refused an operation: the path is not a directory or cannot be
    /// created, a permission is missing, the disk is full, ... Also returned when the store
    /// directory is locked by another open handle (in this process or another one): kvs waits
    /// about two seconds for the lock before giving up.
    KVS_IO_ERROR = 3,
    /// Data on disk is damaged (a checksum failed or a record is malformed anywhere but at the
    /// torn tail of the log). The message names the file and offset. Nothing has been deleted.
    KVS_CORRUPTION = 4,
    /// Any other failure, including an internal error (a Rust panic, which never crosses into C)
    /// and a store that refuses writes after an earlier failed write (close and reopen it).
    KVS_ERROR = 5,
    /// The handle was opened by another process, of which this one is a child made by
    /// `fork()`: a handle belongs to the process that opened it. Nothing was read or written,
    /// and the parent's handle is unharmed. `kvs_close()` of the inherited handle is safe in
    /// the child (it releases nothing of the parent's). To use the store in the child, open it
    /// there after the parent has closed it (the directory lock admits one process), or in a
    /// fresh process; with the `sled` engine, only a fresh (not forked) process can open a
    /// store once its parent has used sled, and `kvs_open*()` in such a child returns this
    /// status too.
    KVS_FORKED = 6,
}

impl kvs_status {
    /// The status that reports `error` to C: decided by its kind alone
    /// ([`KvsError::kind`]). The only place that decides this.
    pub(crate) fn of(error: &KvsError) -> kvs_status {
        match error.kind() {
            ErrorKind::KeyNotFound => kvs_status::KVS_NOT_FOUND,
            ErrorKind::InvalidArgument | ErrorKind::EngineMismatch => {
                kvs_status::KVS_INVALID_ARGUMENT
            }
            // A locked directory is an environment condition like EBUSY, not a bug of the
            // caller's arguments and not damage: it goes with the other operating-system errors.
            ErrorKind::Io | ErrorKind::Locked => kvs_status::KVS_IO_ERROR,
            ErrorKind::Corruption => kvs_status::KVS_CORRUPTION,
            ErrorKind::Forked => kvs_status::KVS_FORKED,
            // Poisoned, an engine's own failure, and the network's kinds (libkvs opens local
            // stores only), and any kind added later.
            _ => kvs_status::KVS_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::kvs_status;
    use kvs::KvsError;
    use std::io;
    use std::path::PathBuf;

    #[test]
    fn status_numbers_are_fixed() {
        assert_eq!(kvs_status::KVS_OK as i32, 0);
        assert_eq!(kvs_status::KVS_NOT_FOUND as i32, 1);
        assert_eq!(kvs_status::KVS_INVALID_ARGUMENT as i32, 2);
        assert_eq!(kvs_status::KVS_IO_ERROR as i32, 3);
        assert_eq!(kvs_status::KVS_CORRUPTION as i32, 4);
        assert_eq!(kvs_status::KVS_ERROR as i32, 5);
        assert_eq!(kvs_status::KVS_FORKED as i32, 6);
    }

    #[test]
    fn each_error_maps_to_its_documented_status() {
        let cases = [
            (KvsError::KeyNotFound, kvs_status::KVS_NOT_FOUND),
            (
                KvsError::InvalidArgument("x".into()),
                kvs_status::KVS_INVALID_ARGUMENT,
            ),
            (
                KvsError::UnknownEngine("x".into()),
                kvs_status::KVS_INVALID_ARGUMENT,
            ),
            (
                KvsError::EngineMismatch {
                    dir: PathBuf::from("d"),
                    recorded: "kvs".into(),
                    requested: "sled".into(),
                },
                kvs_status::KVS_INVALID_ARGUMENT,
            ),
            (
                KvsError::Io(io::Error::other("x")),
                kvs_status::KVS_IO_ERROR,
            ),
            (
                KvsError::Locked {
                    dir: PathBuf::from("d"),
                },
                kvs_status::KVS_IO_ERROR,
            ),
            (
                KvsError::Corruption {
                    path: PathBuf::from("f"),
                    offset: 7,
                    reason: "x".into(),
                },
                kvs_status::KVS_CORRUPTION,
            ),
            (
                KvsError::IoAt {
                    path: PathBuf::from("d/sled"),
                    source: io::Error::other("x"),
                },
                kvs_status::KVS_IO_ERROR,
            ),
            (
                KvsError::Engine {
                    engine: "sled",
                    message: "x".into(),
                },
                kvs_status::KVS_ERROR,
            ),
            (KvsError::Poisoned("x".into()), kvs_status::KVS_ERROR),
            (
                KvsError::Forked {
                    opened_by: 1234,
                    handle: "store",
                },
                kvs_status::KVS_FORKED,
            ),
            (KvsError::Protocol("x".into()), kvs_status::KVS_ERROR),
        ];
        for (error, status) in cases {
            assert_eq!(kvs_status::of(&error), status, "{error}");
        }
    }
}
