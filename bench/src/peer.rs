//! The four stores behind one face: how each is opened, written and read in this benchmark.
//!
//! What a call promises when it returns, per engine (the table's footnotes repeat this):
//!
//! | engine | [`Durability::Os`] (workloads 1-3) | [`Durability::Disk`] (workload 4) |
//! | --- | --- | --- |
//! | kvs | `KvStore`, default options: the record is written (`write(2)`) to the log | `SyncPolicy::Always`: group commit, `fdatasync` |
//! | sled | `SledKvsEngine`: `insert` + `Db::flush` | the same |
//! | fjall | `insert`, journal flushed to the OS (fjall's default `PersistMode::Buffer`) | `insert` + `Database::persist(PersistMode::SyncData)` |
//! | lmdb | one write transaction per set, env opened with `MDB_NOSYNC` | one write transaction per set, synced commit |
//!
//! sled is measured as kvs ships it (`SledKvsEngine`, which flushes after every write): that
//! is the anchor our durability comparison uses. In workloads 1-2 it does more than the others. In workload 4 it
//! does less: sled 0.34's flush ends in `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`
//! on Linux (`pagecache/iobuf.rs`), which waits for the data to reach the device but neither
//! flushes the device's write cache nor commits file metadata, as `fdatasync` does.
//!
//! A get hands the caller an owned copy of the value, as `KvsEngine::get_bytes` does: LMDB's
//! borrowed slice is copied out of a read transaction opened for that one get.

use std::path::Path;
use std::time::{Duration, Instant};

use fjall::{KeyspaceCreateOptions, PersistMode};
use heed::types::Bytes;
use heed::{CommitOrAbort, EnvFlags, EnvOpenOptions};
use kvs::{KvStore, KvStoreOptions, KvsEngine, SledKvsEngine, SyncPolicy};

/// Any error of any engine.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result of this benchmark's calls.
pub type Result<T> = std::result::Result<T, Error>;

/// The LMDB map size: address space, not disk (the file grows as pages are written).
const LMDB_MAP_SIZE: usize = 64 << 30;

/// An engine under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Kvs,
    Sled,
    Fjall,
    Lmdb,
}

impl Engine {
    /// Every engine, in table order.
    pub const ALL: [Engine; 4] = [Engine::Kvs, Engine::Sled, Engine::Fjall, Engine::Lmdb];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Kvs => "kvs",
            Engine::Sled => "sled",
            Engine::Fjall => "fjall",
            Engine::Lmdb => "lmdb",
        }
    }

    pub fn from_name(name: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == name)
    }

    /// Opens (or creates) this engine's store in `dir`.
    pub fn open(self, dir: &Path, durability: Durability) -> Result<Store> {
        let durable = durability == Durability::Disk;
        match self {
            Engine::Kvs => {
                let sync = if durable {
                    SyncPolicy::Always
                } else {
                    SyncPolicy::Os
                };
                let options = KvStoreOptions::default().sync(sync);
                Ok(Store::Kvs {
                    store: KvStore::open_with(dir, options)?,
                    durable,
                })
            }
            Engine::Sled => {
                let db = open_sled(dir)?;
                Ok(Store::Sled {
                    engine: SledKvsEngine::new(db)?,
                })
            }
            Engine::Fjall => {
                let db = fjall::Database::builder(dir).open()?;
                let keyspace = db.keyspace("kvs", KeyspaceCreateOptions::default)?;
                Ok(Store::Fjall {
                    db,
                    keyspace,
                    durable,
                })
            }
            Engine::Lmdb => open_lmdb(dir, durable),
        }
    }
}

/// What a set promises when it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash of the process (the data is in the operating system).
    Os,
    /// Survives a power loss (fsynced).
    Disk,
}

/// An open store; clones share it and may be used from any thread.
#[derive(Clone)]
pub enum Store {
    Kvs {
        store: KvStore,
        durable: bool,
    },
    Sled {
        engine: SledKvsEngine,
    },
    Fjall {
        db: fjall::Database,
        keyspace: fjall::Keyspace,
        durable: bool,
    },
    Lmdb {
        env: heed::Env,
        db: heed::Database<'static, Bytes, Bytes>,
        durable: bool,
    },
}

impl Store {
    /// Whether a set is on disk when it returns.
    pub fn is_durable(&self) -> bool {
        match self {
            // SledKvsEngine flushes after every write, whatever was asked for.
            Store::Sled { .. } => true,
            Store::Kvs { durable, .. }
            | Store::Fjall { durable, .. }
            | Store::Lmdb { durable, .. } => *durable,
        }
    }

    /// One set, with the engine's promise described in the module docs.
    pub fn set(&self, key: &[u8], value: &[u8]) -> Result<()> {
        match self {
            Store::Kvs { store, .. } => store.set_bytes(key, value)?,
            Store::Sled { engine, .. } => engine.set_bytes(key, value)?,
            Store::Fjall {
                db,
                keyspace,
                durable,
            } => {
                keyspace.insert(key, value)?;
                if *durable {
                    db.persist(PersistMode::SyncData)?;
                }
            }
            Store::Lmdb { env, db, .. } => {
                let mut txn = env.write_txn()?;
                db.put(&mut txn, key, value)?;
                txn.commit()?;
            }
        }
        Ok(())
    }

    /// One get, returning an owned copy of the value.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(match self {
            Store::Kvs { store, .. } => store.get_bytes(key)?,
            Store::Sled { engine, .. } => engine.get_bytes(key)?,
            Store::Fjall { keyspace, .. } => keyspace.get(key)?.map(|v| v.to_vec()),
            Store::Lmdb { env, db, .. } => {
                let txn = env.read_txn()?;
                db.get(&txn, key)?.map(<[u8]>::to_vec)
            }
        })
    }

    /// Writes many keys at once, as fast as the engine allows, then makes them durable. Used
    /// to build the stores that gets and opens are measured on; not itself measured.
    pub fn load(&self, keys: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<()> {
        match self {
            Store::Kvs { store, .. } => {
                for (k, v) in keys {
                    store.set_bytes(&k, &v)?;
                }
                store.flush()?;
            }
            Store::Sled { engine, .. } => {
                // The engine's own layout (values with their deadline flag): batches of
                // 10,000 keys, each one sled batch and one flush.
                let mut keys = keys.peekable();
                while keys.peek().is_some() {
                    let chunk: Vec<(Vec<u8>, Vec<u8>)> = keys.by_ref().take(10_000).collect();
                    let pairs: Vec<(&[u8], &[u8])> =
                        chunk.iter().map(|(k, v)| (&k[..], &v[..])).collect();
                    engine.set_many_bytes(&pairs)?;
                }
            }
            Store::Fjall { db, keyspace, .. } => {
                for (k, v) in keys {
                    keyspace.insert(k, v)?;
                }
                db.persist(PersistMode::SyncAll)?;
            }
            Store::Lmdb { env, db, .. } => {
                let mut keys = keys.peekable();
                while keys.peek().is_some() {
                    let mut txn = env.write_txn()?;
                    for (k, v) in keys.by_ref().take(10_000) {
                        db.put(&mut txn, &k, &v)?;
                    }
                    txn.commit()?;
                }
                env.force_sync()?;
            }
        }
        Ok(())
    }
}

/// Opens a sled database, waiting up to 2 s for sled's file lock: a sled handle that was just
/// dropped lets go of it a moment later, from sled's flusher thread (kvs's `AnyEngine` does
/// the same).
fn open_sled(dir: &Path) -> Result<sled::Db> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match sled::open(dir) {
            // sled 0.34 reports its lock as an `Other` I/O error with this message.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return Ok(result?),
        }
    }
}

fn open_lmdb(dir: &Path, durable: bool) -> Result<Store> {
    std::fs::create_dir_all(dir)?;
    let mut options = EnvOpenOptions::new();
    options.map_size(LMDB_MAP_SIZE);
    if !durable {
        // SAFETY: NO_SYNC only skips the fsync at commit: a commit still writes its pages to
        // the file (the OS has them, as with kvs's default policy). A crash of the machine may
        // lose or corrupt the last commits, which this benchmark never relies on.
        unsafe {
            options.flags(EnvFlags::NO_SYNC);
        }
    }
    // SAFETY: the directory is this benchmark's own, opened once per process at a time, and
    // nothing else maps or truncates its files while the environment lives.
    let env = unsafe { options.open(dir)? };
    let existing = {
        let rtxn = env.read_txn()?;
        env.open_databases_and_commit(rtxn, |opener, rtxn| {
            opener
                .open_database::<Bytes, Bytes>(rtxn, None)
                .map(CommitOrAbort::<_, ()>::Commit)
        })?
        .commit()
        .flatten()
    };
    let db = match existing {
        Some(db) => db,
        None => {
            let wtxn = env.write_txn()?;
            env.create_databases_and_commit(wtxn, |opener, wtxn| {
                opener
                    .create_database::<Bytes, Bytes>(wtxn, None)
                    .map(CommitOrAbort::<_, ()>::Commit)
            })?
            .commit()
            .ok_or("LMDB refused to create its main database")?
        }
    };
    Ok(Store::Lmdb { env, db, durable })
}
