//! The one interface the store's domain logic is written against: ordered
//! byte keys and values, read directly, written in atomic batches that are
//! durable when `commit` returns; the writer reads and commits through a
//! transaction. Only `engine::sled` knows sled and only `engine::postgres`
//! knows SQL; the rest of the store speaks of keys, ranges and batches.

pub mod postgres;
mod postgres_tls;
pub mod sled;

use std::ops::Bound;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("storage engine: {0}")]
    Backend(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "another server (or a backup or restore) holds the data directory {}; stop it or choose another --data",
        .0.display()
    )]
    Locked(PathBuf),
    /// The database cannot be reached now; it may be later.
    #[error("{0}")]
    Unavailable(String),
    /// The engine's configuration or the database's layout is wrong.
    #[error("{0}")]
    Config(String),
    /// A transaction lost a race with another writer of the same database
    /// and was rolled back: nothing of it was applied, and running it again
    /// from its first read may succeed.
    #[error("the transaction conflicted with another writer: {0}")]
    Conflict(String),
    /// A stored value cannot be opened: its data key is damaged, or it
    /// was sealed under another key store.
    #[error("{0}")]
    Unreadable(String),
}

pub type KeyValue = (Vec<u8>, Vec<u8>);
/// A key and its new value, or `None` for a removal.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// One read of [`Engine::read`].
#[derive(Debug, Clone)]
pub enum Read {
    /// What the key holds.
    Get(Vec<u8>),
    /// Up to `limit` pairs whose key starts with the prefix, highest key
    /// first.
    Newest { prefix: Vec<u8>, limit: usize },
}

/// What one [`Read`] found, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Value(Option<Vec<u8>>),
    Pairs(Vec<KeyValue>),
}

impl Found {
    pub fn into_value(self) -> Option<Vec<u8>> {
        match self {
            Found::Value(value) => value,
            Found::Pairs(_) => None,
        }
    }

    pub fn into_pairs(self) -> Vec<KeyValue> {
        match self {
            Found::Pairs(pairs) => pairs,
            Found::Value(_) => Vec::new(),
        }
    }
}

/// The answers of [`Engine::read`], awaited by the caller.
pub type Reading = futures::future::BoxFuture<'static, Result<Vec<Found>, EngineError>>;

/// Key-value pairs in key order (or reverse key order).
pub type Scan<'e> = Box<dyn Iterator<Item = Result<KeyValue, EngineError>> + 'e>;
pub type KeyScan<'e> = Box<dyn Iterator<Item = Result<Vec<u8>, EngineError>> + 'e>;

/// Writes applied together or not at all.
#[derive(Debug, Default)]
pub struct Batch {
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Profiles whose data keys are destroyed once the batch is durable.
    destroyed_keys: Vec<u64>,
}

impl Batch {
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.push((key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.push((key.into(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// In the order written; a later write of a key wins.
    pub fn into_writes(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.writes
    }

    /// Asks that the profile's data key be destroyed with this batch: an
    /// erasure's records and keys go in one acknowledged step.
    pub fn destroy_key_of(&mut self, owner: u64) {
        self.destroyed_keys.push(owner);
    }

    pub fn into_parts(self) -> (Vec<Write>, Vec<u64>) {
        (self.writes, self.destroyed_keys)
    }
}

/// What a commit did to become durable, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Durability {
    /// Files beside the engine's log that had to be synced too.
    pub extra_files_synced: u64,
}

pub trait Engine: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    fn contains(&self, key: &[u8]) -> Result<bool, EngineError> {
        Ok(self.get(key)?.is_some())
    }

    /// Pairs with keys between the bounds, in key order.
    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_>;

    /// Pairs with keys between the bounds, highest key first.
    fn range_back(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_>;

    /// The keys between the bounds, in key order: for callers that only
    /// remove what they find, so that no value is copied or opened.
    fn range_keys(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> KeyScan<'_> {
        only_keys(self.range(from, to))
    }

    /// Pairs whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Scan<'_> {
        let (from, to) = prefix_bounds(prefix);
        self.range(from, to)
    }

    /// Several reads that do not depend on each other, answered together:
    /// a remote engine sends them at once and the caller awaits them
    /// without holding a thread, so a request costs one round trip, not
    /// one per read. Engines that read in process answer at once.
    fn read(&self, reads: Vec<Read>) -> Reading {
        let found = reads
            .into_iter()
            .map(|read| match read {
                Read::Get(key) => self.get(&key).map(Found::Value),
                Read::Newest { prefix, limit } => {
                    let (from, to) = prefix_bounds(&prefix);
                    self.range_back(from, to)
                        .take(limit)
                        .collect::<Result<Vec<_>, _>>()
                        .map(Found::Pairs)
                }
            })
            .collect::<Result<Vec<_>, _>>();
        Box::pin(std::future::ready(found))
    }

    /// Applies the batch atomically; it is durable once a later `sync`
    /// (or `commit`) returns.
    fn apply(&self, batch: Batch) -> Result<(), EngineError>;

    /// Makes everything applied so far durable.
    fn sync(&self) -> Result<Durability, EngineError>;

    /// Applies the batch atomically and returns once it is durable.
    fn commit(&self, batch: Batch) -> Result<Durability, EngineError> {
        self.apply(batch)?;
        self.sync()
    }

    /// Writes one pair at once, outside any group's batch: kept even if a
    /// later batch fails, durable with the next sync.
    fn put_now(&self, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        let mut batch = Batch::default();
        batch.insert(key, value);
        self.apply(batch)
    }

    /// Bytes the engine takes on disk.
    fn size_on_disk(&self) -> Result<u64, EngineError>;

    /// Starts a transaction for the writer: what it reads and the batch it
    /// commits are one serializable step, even with other processes
    /// writing the same database.
    fn begin(&self) -> Result<Box<dyn Transaction + '_>, EngineError>;

    /// Whether other processes may write the same database meanwhile, so
    /// that nothing read earlier may be trusted in a later transaction
    /// (caches of stored keys, counters held in memory).
    fn shared(&self) -> bool {
        false
    }
}

/// Reads of one transaction and its commit. Dropped without a commit, it
/// is rolled back. After any error, every later read and the commit fail
/// too: a transaction is either whole or not applied.
pub trait Transaction {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    fn contains(&self, key: &[u8]) -> Result<bool, EngineError> {
        Ok(self.get(key)?.is_some())
    }

    /// Pairs with keys between the bounds, in key order.
    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_>;

    /// The keys between the bounds, in key order.
    fn range_keys(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> KeyScan<'_> {
        only_keys(self.range(from, to))
    }

    /// Reads these keys, and every pair under these prefixes, ahead and
    /// together, so that later `get`s of the keys and scans of exactly one
    /// of the prefixes need no trip to the database of their own. A hint:
    /// engines that read in process have nothing to gain and ignore it.
    fn read_ahead(&self, _keys: &[Vec<u8>], _prefixes: &[Vec<u8>]) -> Result<(), EngineError> {
        Ok(())
    }

    /// Tells the transaction that these keys hold nothing (keys under an
    /// id it has just allocated, which nothing can have written), so that
    /// reading them needs no trip to the database. A hint, like
    /// [`Transaction::read_ahead`].
    fn known_absent(&self, _keys: &[Vec<u8>]) {}

    /// Whether [`Transaction::read_ahead`] saves anything.
    fn reads_ahead(&self) -> bool {
        false
    }

    /// Applies the batch atomically, if no other writer's transaction
    /// conflicts with this one ([`EngineError::Conflict`] otherwise), and
    /// returns once it is durable.
    fn commit(self: Box<Self>, batch: Batch) -> Result<Durability, EngineError>;
}

/// The transaction of an engine with one writer in one process: reads go
/// straight to the engine, which nobody else writes meanwhile, and the
/// commit is the engine's.
pub struct SoleWriter<'e> {
    engine: &'e dyn Engine,
}

impl<'e> SoleWriter<'e> {
    pub fn new(engine: &'e dyn Engine) -> Self {
        SoleWriter { engine }
    }
}

impl Transaction for SoleWriter<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.engine.get(key)
    }

    fn contains(&self, key: &[u8]) -> Result<bool, EngineError> {
        self.engine.contains(key)
    }

    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_> {
        self.engine.range(from, to)
    }

    fn range_keys(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> KeyScan<'_> {
        self.engine.range_keys(from, to)
    }

    fn commit(self: Box<Self>, batch: Batch) -> Result<Durability, EngineError> {
        self.engine.commit(batch)
    }
}

fn only_keys(scan: Scan<'_>) -> KeyScan<'_> {
    Box::new(scan.map(|entry| entry.map(|(key, _)| key)))
}

/// The bounds of the keys starting with `prefix`.
pub fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let to = match prefix_end(prefix) {
        Some(end) => Bound::Excluded(end),
        None => Bound::Unbounded,
    };
    (Bound::Included(prefix.to_vec()), to)
}

/// How many pairs an engine holds, by a full scan.
#[cfg(test)]
pub fn count_all(engine: &dyn Engine) -> usize {
    engine.range(Bound::Unbounded, Bound::Unbounded).count()
}

/// The first key after every key starting with `prefix` (`None` when all
/// its bytes are 0xff: nothing comes after).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
