//! kvs: an embeddable key/value store.
//!
//! ```
//! use kvs::{KvStore, KvsEngine};
//!
//! # fn main() -> kvs::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let store = KvStore::open(dir.path())?;
//! store.set("greeting".to_owned(), "hello".to_owned())?;
//! assert_eq!(store.get("greeting".to_owned())?, Some("hello".to_owned()));
//! store.remove("greeting".to_owned())?;
//! assert!(matches!(store.remove("greeting".to_owned()), Err(kvs::KvsError::KeyNotFound)));
//!
//! // Keys and values are bytes underneath.
//! store.set_bytes(b"\x00bin", &[0xff, 0x00])?;
//! assert_eq!(store.get_bytes(b"\x00bin")?, Some(vec![0xff, 0x00]));
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`KvsEngine`] (`engine.rs`): the interface of a store; cloneable, thread-safe handles.
//!   What its operations take and give: [`WriteBatch`] (`batch.rs`), deadlines and
//!   [`KeyExpiry`] (`expiry.rs`), [`ScanFilter`], [`ScanPage`] and [`glob_match`] (`scan.rs`).
//! - `engines/`: [`KvStore`], kvs's log-structured engine (`engines/log/`: format, writer,
//!   index, recovery, compaction; [`verify_dir`] checks a store's files), [`SledKvsEngine`] over sled, and [`AnyEngine`] to open a
//!   directory by engine name.
//! - `data_dir.rs`: the engine recorded in a data directory and its lock.
//! - [`thread_pool`]: the pools the server runs connections on.
//! - [`protocol`]: the wire format between client and server (frames and messages).
//! - [`resp`]: RESP2 and RESP3, the Redis protocol, which the server also speaks (same port):
//!   the wire format and its request parser (the public part), the command table, a
//!   connection's session, the text of `INFO`.
//! - [`KvsServer`] (`server/`): serves an engine over TCP: the workers and their connections,
//!   which protocol a connection speaks (`sniff.rs`, by its first byte), and the state all
//!   connections of a server share (`state.rs`: `INFO` counters, client ids).
//! - [`KvsClient`] (`client.rs`): one connection to a server.
//! - [`KvsError`] (`error.rs`): the one error type, and its [`ErrorKind`], which the wire
//!   protocol, the C API and the Python exceptions all map from.
//! - `process.rs`: the fork guard: a handle is refused in a child of the process that opened it.
//!
//! # Features
//! - `net` (on by default): the network half, [`protocol`], [`resp`], [`KvsServer`],
//!   [`ServerConfig`], [`ShutdownHandle`] and [`KvsClient`], and the crates only they use
//!   (mio, serde, bincode). A program that only opens local stores can leave it out
//!   (`kvs = { version = "...", default-features = false }`), as libkvs, the C library, does.
//!   Everything else, [`KvsError`] included (its network variants too, so that the type does
//!   not change with the feature), is there either way.
#![deny(missing_docs)]
// These docs link the network half, which is not there without `net`; they are read (and
// published) with the default features.
#![cfg_attr(not(feature = "net"), allow(rustdoc::broken_intra_doc_links))]

mod batch;
#[cfg(feature = "net")]
mod client;
pub mod data_dir;
mod engine;
mod engines;
mod error;
mod expiry;
mod process;
#[cfg(feature = "net")]
pub mod protocol;
#[cfg(feature = "net")]
pub mod resp;
mod scan;
#[cfg(feature = "net")]
mod server;
pub mod thread_pool;
mod transaction;

pub use batch::{BatchOp, WriteBatch};
#[cfg(feature = "net")]
pub use client::KvsClient;
pub use data_dir::EngineKind;
pub use engine::{KvsEngine, Transaction};
pub use engines::{
    log_file_versions, verify_dir, verify_dir_with_progress, AnyEngine, DiskStats, FileCheck,
    FileDamage, KvStore, KvStoreOptions, RecoveryMode, SledKvsEngine, SyncPolicy, VerifyReport,
    MAX_BATCH_BYTES, MAX_KEY_LEN, MAX_VALUE_LEN, SLED_SUBDIR,
};
pub use error::{ErrorKind, KvsError, Result};

/// What `benches/index_memory.rs` measures directly: `KvStore`'s index. Not part of the API
/// (hidden, and it may change in any release).
#[doc(hidden)]
pub mod bench_internals {
    pub use crate::engines::{Index, RecordPos};
}
pub use expiry::{deadline_after, is_expired, now_millis, KeyExpiry};
pub use scan::{glob_match, ScanFilter, ScanPage};
#[cfg(feature = "net")]
pub use server::{ClusterMode, KvsServer, MetricsEndpoint, ServerConfig, ShutdownHandle};

/// The version of kvs, the same for every crate of the workspace.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
