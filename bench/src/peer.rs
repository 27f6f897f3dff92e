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
use redb::{ReadableDatabase, TableDefinition};

/// Any error of any engine.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result of this benchmark's calls.
pub type Result<T> = std::result::Result<T, Error>;

/// The LMDB map size: address space, not disk (the file grows as pages are written).
const LMDB_MAP_SIZE: usize = 64 << 30;

/// redb's one table, of byte-string keys and values.
const REDB_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kvs");

/// An engine under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Kvs,
    Sled,
    Fjall,
    Lmdb,
    /// Only in the scale benchmark (`--bin scale`).
    Redb,
}

impl Engine {
    /// Every engine of the comparison benchmark, in table order.
    pub const ALL: [Engine; 4] = [Engine::Kvs, Engine::Sled, Engine::Fjall, Engine::Lmdb];
    /// Every engine of the scale benchmark, in table order.
    pub const SCALE: [Engine; 5] = [
        Engine::Kvs,
        Engine::Sled,
        Engine::Fjall,
        Engine::Redb,
        Engine::Lmdb,
    ];
    /// How many engines there are (the length of per-engine arrays).
    pub const COUNT: usize = 5;

    pub fn name(self) -> &'static str {
        match self {
            Engine::Kvs => "kvs",
            Engine::Sled => "sled",
            Engine::Fjall => "fjall",
            Engine::Lmdb => "lmdb",
            Engine::Redb => "redb",
        }
    }

    pub fn from_name(name: &str) -> Option<Engine> {
        Engine::SCALE.into_iter().find(|e| e.name() == name)
    }

    /// Opens (or creates) this engine's store in `dir` as the scale benchmark uses it: sets
    /// reach the OS when they return, not the disk, and sled is a plain `sled::Db` (no flush
    /// per set, unlike `SledKvsEngine`). Every other engine is opened as [`Engine::open`]
    /// with [`Durability::Os`] opens it.
    pub fn open_plain(self, dir: &Path) -> Result<Store> {
        match self {
            Engine::Sled => Ok(Store::SledDb {
                db: open_sled(dir)?,
            }),
            _ => self.open(dir, Durability::Os),
        }
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
            Engine::Redb => {
                std::fs::create_dir_all(dir)?;
                let path = dir.join("data.redb");
                let db = redb::Database::create(&path)?;
                let txn = db.begin_write()?;
                // Creates the table in a new database, so that a get never meets "no table".
                txn.open_table(REDB_TABLE)?;
                txn.commit()?;
                Ok(Store::Redb {
                    db: std::sync::Arc::new(db),
                    durable,
                })
            }
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
    /// A plain `sled::Db` (scale benchmark): batches without a flush each.
    SledDb {
        db: sled::Db,
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
    Redb {
        db: std::sync::Arc<redb::Database>,
        durable: bool,
    },
}

impl Store {
    /// Whether a set is on disk when it returns.
    pub fn is_durable(&self) -> bool {
        match self {
            // SledKvsEngine flushes after every write, whatever was asked for.
            Store::Sled { .. } => true,
            Store::SledDb { .. } => false,
            Store::Kvs { durable, .. }
            | Store::Fjall { durable, .. }
            | Store::Lmdb { durable, .. }
            | Store::Redb { durable, .. } => *durable,
        }
    }

    /// One set, with the engine's promise described in the module docs.
    pub fn set(&self, key: &[u8], value: &[u8]) -> Result<()> {
        match self {
            Store::Kvs { store, .. } => store.set_bytes(key, value)?,
            Store::Sled { engine, .. } => engine.set_bytes(key, value)?,
            Store::SledDb { .. } | Store::Redb { .. } => self.set_batch(&[(key, value)])?,
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
            Store::SledDb { db } => db.get(key)?.map(|v| v.to_vec()),
            Store::Fjall { keyspace, .. } => keyspace.get(key)?.map(|v| v.to_vec()),
            Store::Redb { db, .. } => {
                let txn = db.begin_read()?;
                let table = txn.open_table(REDB_TABLE)?;
                let value = table.get(key)?.map(|v| v.value().to_vec());
                value
            }
            Store::Lmdb { env, db, .. } => {
                let txn = env.read_txn()?;
                db.get(&txn, key)?.map(<[u8]>::to_vec)
            }
        })
    }

    /// Writes `pairs` as one batch: one atomic batch (`KvsEngine::set_many_bytes`) for kvs,
    /// one `sled::Batch`, one fjall `WriteBatch`, one write transaction for redb and LMDB.
    /// The promise on return is that of [`Store::set`] (for redb, a durable store commits with
    /// `Durability::Immediate`, the other with `Durability::None`).
    pub fn set_batch(&self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        match self {
            Store::Kvs { store, .. } => store.set_many_bytes(pairs)?,
            Store::Sled { engine } => engine.set_many_bytes(pairs)?,
            Store::SledDb { db } => {
                let mut batch = sled::Batch::default();
                for &(k, v) in pairs {
                    batch.insert(k, v);
                }
                db.apply_batch(batch)?;
            }
            Store::Fjall {
                db,
                keyspace,
                durable,
            } => {
                let mut batch = db.batch();
                for &(k, v) in pairs {
                    batch.insert(keyspace, k, v);
                }
                batch.commit()?;
                if *durable {
                    db.persist(PersistMode::SyncData)?;
                }
            }
            Store::Lmdb { env, db, .. } => {
                let mut txn = env.write_txn()?;
                for &(k, v) in pairs {
                    db.put(&mut txn, k, v)?;
                }
                txn.commit()?;
            }
            Store::Redb { db, durable } => {
                let mut txn = db.begin_write()?;
                if !*durable {
                    txn.set_durability(redb::Durability::None)?;
                }
                {
                    let mut table = txn.open_table(REDB_TABLE)?;
                    for &(k, v) in pairs {
                        table.insert(k, v)?;
                    }
                }
                txn.commit()?;
            }
        }
        Ok(())
    }

    /// Makes everything written so far durable (the end of a load).
    pub fn sync(&self) -> Result<()> {
        match self {
            Store::Kvs { store, .. } => store.flush()?,
            Store::Sled { engine } => engine.flush()?,
            Store::SledDb { db } => {
                db.flush()?;
            }
            Store::Fjall { db, .. } => db.persist(PersistMode::SyncAll)?,
            Store::Lmdb { env, .. } => env.force_sync()?,
            Store::Redb { db, .. } => {
                // An empty durable commit makes the earlier non-durable ones durable.
                let txn = db.begin_write()?;
                txn.commit()?;
            }
        }
        Ok(())
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
            Store::SledDb { .. } | Store::Redb { .. } => {
                let mut keys = keys.peekable();
                while keys.peek().is_some() {
                    let chunk: Vec<(Vec<u8>, Vec<u8>)> = keys.by_ref().take(10_000).collect();
                    let pairs: Vec<(&[u8], &[u8])> =
                        chunk.iter().map(|(k, v)| (&k[..], &v[..])).collect();
                    self.set_batch(&pairs)?;
                }
                self.sync()?;
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
