//! For the unit tests of the commands: [`MemEngine`], an engine in memory that keeps the
//! [`Engine`] contracts the commands rely on (deadlines, batches, transactions, scans), and
//! [`Server`], which dispatches requests to it as a session does.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::transactions::Multi;
use super::{dispatch, Context, Engine, TransactionFn, UpdateFn};
use crate::resp::frame::Version;
use crate::resp::request::{Args, Client};
use crate::resp::session::Batch;
use crate::server::state::ServerState;
use crate::{
    is_expired, now_millis, BatchOp, KeyExpiry, KvsError, Result, ScanFilter, ScanPage,
    Transaction, WriteBatch,
};

/// Keys, each with its value and deadline.
type Map = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

/// An engine in memory. Expired keys are dropped on every access.
#[derive(Debug, Default)]
pub(crate) struct MemEngine {
    map: Mutex<Map>,
    /// Runs the functions given to `update_bytes` and `transaction` twice, keeping the last
    /// run, as sled may when a write interleaves: commands must not count on one run.
    retry: bool,
}

impl MemEngine {
    /// The map, with the keys whose deadline has passed removed.
    fn live(&self) -> std::sync::MutexGuard<'_, Map> {
        let mut map = self.map.lock().unwrap();
        let now = now_millis();
        map.retain(|_, (_, deadline)| !deadline.is_some_and(|d| is_expired(d, now)));
        map
    }
}

fn put(map: &mut Map, key: &[u8], value: &[u8], deadline: Option<u64>) {
    if deadline.is_some_and(|d| is_expired(d, now_millis())) {
        map.remove(key);
    } else {
        map.insert(key.to_vec(), (value.to_vec(), deadline));
    }
}

struct MemTransaction<'m> {
    map: &'m mut Map,
}

impl Transaction for MemTransaction<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.get(key).map(|(v, _)| v.clone()))
    }
    fn expiry(&mut self, key: &[u8]) -> Result<KeyExpiry> {
        Ok(match self.map.get(key) {
            None => KeyExpiry::Missing,
            Some((_, None)) => KeyExpiry::Never,
            Some((_, Some(d))) => KeyExpiry::At(*d),
        })
    }
    fn set(&mut self, key: &[u8], value: &[u8], deadline: Option<u64>) -> Result<()> {
        put(self.map, key, value, deadline);
        Ok(())
    }
    fn remove(&mut self, key: &[u8]) -> Result<bool> {
        Ok(self.map.remove(key).is_some())
    }
}

impl Engine for MemEngine {
    fn set_bytes(&self, key: &[u8], value: &[u8]) -> Result<()> {
        put(&mut self.live(), key, value, None);
        Ok(())
    }
    fn get_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.live().get(key).map(|(v, _)| v.clone()))
    }
    fn set_many_bytes(&self, pairs: &[(&[u8], &[u8])]) -> Result<()> {
        let mut map = self.live();
        for (key, value) in pairs {
            put(&mut map, key, value, None);
        }
        Ok(())
    }
    fn remove_bytes(&self, key: &[u8]) -> Result<()> {
        match self.live().remove(key) {
            Some(_) => Ok(()),
            None => Err(KvsError::KeyNotFound),
        }
    }
    fn contains_key(&self, key: &[u8]) -> Result<bool> {
        Ok(self.live().contains_key(key))
    }
    fn len(&self) -> Result<usize> {
        Ok(self.live().len())
    }
    fn compare_and_set_bytes(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        let mut map = self.live();
        let entry = map.get(key).cloned();
        if entry.as_ref().map(|(v, _)| v.as_slice()) != expected {
            return Ok(false);
        }
        let deadline = entry.and_then(|(_, d)| d);
        match new {
            Some(value) => put(&mut map, key, value, deadline),
            None => {
                map.remove(key);
            }
        }
        Ok(true)
    }
    fn update_bytes(&self, key: &[u8], f: &mut UpdateFn<'_>) -> Result<Option<Vec<u8>>> {
        let mut map = self.live();
        let entry = map.get(key).cloned();
        if self.retry {
            f(entry.as_ref().map(|(v, _)| v.as_slice()));
        }
        let new = f(entry.as_ref().map(|(v, _)| v.as_slice()));
        match &new {
            Some(value) => put(&mut map, key, value, entry.and_then(|(_, d)| d)),
            None => {
                map.remove(key);
            }
        }
        Ok(new)
    }
    fn keys(&self) -> Result<Vec<Vec<u8>>> {
        Ok(self.live().keys().cloned().collect())
    }
    fn apply_batch(&self, batch: &WriteBatch) -> Result<()> {
        let mut map = self.live();
        for op in batch.ops() {
            match op {
                BatchOp::Set {
                    key,
                    value,
                    deadline,
                } => put(&mut map, key, value, *deadline),
                BatchOp::Remove { key } => {
                    map.remove(key);
                }
            }
        }
        Ok(())
    }
    fn get_many_bytes(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let map = self.live();
        Ok(keys
            .iter()
            .map(|k| map.get(*k).map(|(v, _)| v.clone()))
            .collect())
    }
    fn set_with_deadline_bytes(&self, key: &[u8], value: &[u8], deadline: u64) -> Result<()> {
        put(&mut self.live(), key, value, Some(deadline));
        Ok(())
    }
    fn expire_at_bytes(&self, key: &[u8], deadline: u64) -> Result<bool> {
        let mut map = self.live();
        let Some((value, _)) = map.get(key).cloned() else {
            return Ok(false);
        };
        put(&mut map, key, &value, Some(deadline));
        Ok(true)
    }
    fn persist_bytes(&self, key: &[u8]) -> Result<bool> {
        match self.live().get_mut(key) {
            Some((_, deadline)) => Ok(deadline.take().is_some()),
            None => Ok(false),
        }
    }
    fn expiry_bytes(&self, key: &[u8]) -> Result<KeyExpiry> {
        MemTransaction {
            map: &mut self.live(),
        }
        .expiry(key)
    }
    /// The cursor is the number of keys walked (in key order) so far.
    fn scan_bytes(&self, cursor: u64, count: usize, filter: &ScanFilter) -> Result<ScanPage> {
        let map = self.live();
        let start = usize::try_from(cursor).unwrap_or(usize::MAX);
        if start > map.len() {
            return Err(KvsError::InvalidArgument("not a cursor".to_string()));
        }
        let keys: Vec<Vec<u8>> = map
            .keys()
            .skip(start)
            .take(count)
            .filter(|k| filter.matches(k))
            .cloned()
            .collect();
        let next = start + count;
        Ok(ScanPage {
            cursor: if next >= map.len() { 0 } else { next as u64 },
            keys,
        })
    }
    /// Nothing to flush: the map is in memory.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn transaction(&self, f: &mut TransactionFn<'_>) -> Result<()> {
        let mut map = self.live();
        if self.retry {
            // A first run whose writes are thrown away.
            f(&mut MemTransaction {
                map: &mut map.clone(),
            })?;
        }
        let mut copy = map.clone();
        f(&mut MemTransaction { map: &mut copy })?;
        *map = copy;
        Ok(())
    }
}

/// A [`MemEngine`] and a RESP2 client of it.
pub(crate) struct Server {
    pub(crate) engine: MemEngine,
    state: ServerState,
    client: Client,
    /// The client's transaction state, kept between requests as a session keeps it.
    multi: Multi,
}

impl Server {
    pub(crate) fn new() -> Server {
        Server::with(MemEngine::default())
    }

    /// Both kinds of server: one whose engine runs each function once, one whose engine runs
    /// them twice (see [`MemEngine`]).
    pub(crate) fn both() -> [Server; 2] {
        [
            Server::new(),
            Server::with(MemEngine {
                retry: true,
                ..MemEngine::default()
            }),
        ]
    }

    fn with(engine: MemEngine) -> Server {
        Server {
            engine,
            state: ServerState::new(0),
            client: Client::new(1),
            multi: Multi::default(),
        }
    }

    /// Switches the client to RESP3.
    pub(crate) fn resp3(&mut self) {
        self.client.version = Version::Resp3;
    }

    /// The reply to one request.
    pub(crate) fn request(&mut self, args: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut ranges = Vec::new();
        for arg in args {
            ranges.push(buf.len()..buf.len() + arg.len());
            buf.extend_from_slice(arg);
        }
        let mut out = Vec::new();
        let mut cx = Context {
            engine: &self.engine,
            state: &self.state,
            client: &mut self.client,
            out: &mut out,
            multi: &mut self.multi,
        };
        let mut batch = Batch::default();
        dispatch(Args::new(&buf, &ranges), &mut cx, &mut batch);
        batch.write(&mut cx);
        out
    }

    /// The reply to `line`, split on spaces, as text.
    pub(crate) fn line(&mut self, line: &str) -> String {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        String::from_utf8_lossy(&self.request(&args)).into_owned()
    }

    /// Sends each `(request, reply)` of `script` and checks the reply.
    pub(crate) fn check(&mut self, script: &[(&str, &str)]) {
        for (line, want) in script {
            assert_eq!(self.line(line), *want, "{line}");
        }
    }
}
