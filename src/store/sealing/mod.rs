//! Encryption at rest with crypto-shredding: every value stored under a
//! profile id (its record, alias, events, memberships, access log and
//! matching state) is sealed under that profile's own data key, and erasing
//! the profile destroys the key. Superseded copies that the engine still
//! holds (sled's log, a database's old row versions) or that a backup took
//! earlier then open to nobody.
//!
//! [`SealedEngine`] wraps any [`Engine`]: the domain above reads and writes
//! plain values, the engine below only ever sees sealed ones. Which values
//! belong to whom follows from the key layout alone ([`owner_of`]).

pub mod cipher;
pub mod key_store;
pub mod master;

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use cipher::SecretKey;
use key_store::{KeyState, KeyStore, KeyStoreError};

use super::engine::{
    Batch, Durability, Engine, EngineError, Found, KeyScan, KeyValue, Read, Reading, Scan,
    Transaction,
};
use super::keys;

/// A key destroyed by an erasure whose batch is durable; kept so that a
/// crash between the commit and the destruction is finished at the next
/// open.
pub const SHREDDED: u8 = b'z';

pub fn shredded(owner: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = SHREDDED;
    key[1..].copy_from_slice(&owner.to_be_bytes());
    key
}

/// The profile id whose data key seals the value stored under `key`, or
/// `None` for values that name no person (index entries hold ids only,
/// under keyed hashes).
pub fn owner_of(key: &[u8]) -> Option<u64> {
    match *key.first()? {
        keys::PROFILE | keys::ALIAS | keys::EVENT | keys::MEMBERSHIP | keys::ACCESS => {
            keys::decode_u64(key.get(1..9)?)
        }
        keys::FUZZY
            if key.get(1) == Some(&b'#')
                && matches!(key.get(2), Some(b'@' | b'%' | b'&' | b'^' | b'*')) =>
        {
            keys::decode_u64(key.get(3..11)?)
        }
        _ => None,
    }
}

fn unreadable(error: KeyStoreError) -> EngineError {
    EngineError::Unreadable(error.to_string())
}

/// Seals and opens values on their way to and from the engine.
#[derive(Clone)]
pub struct Sealer {
    keys: Arc<dyn KeyStore>,
}

impl Sealer {
    pub fn new(keys: Arc<dyn KeyStore>) -> Sealer {
        Sealer { keys }
    }

    pub fn key_store(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    pub fn index_secret(&self) -> &SecretKey {
        self.keys.index_secret()
    }

    fn seal(&self, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, EngineError> {
        let Some(owner) = owner_of(key) else {
            return Ok(value);
        };
        let data_key = self.keys.key_for_writing(owner).map_err(unreadable)?;
        Ok(data_key.seal(key, &value))
    }

    /// The plain value, or `None` when its owner was erased: a copy an
    /// earlier backup brought back reads as absent.
    pub fn open(&self, key: &[u8], value: Vec<u8>) -> Result<Option<Vec<u8>>, EngineError> {
        let Some(owner) = owner_of(key) else {
            return Ok(Some(value));
        };
        match self.keys.state(owner).map_err(unreadable)? {
            KeyState::Live(data_key) => {
                data_key.open_owned(key, value).map(Some).map_err(|error| {
                    EngineError::Unreadable(format!("a value of profile {owner}: {error}"))
                })
            }
            KeyState::Destroyed => Ok(None),
            KeyState::Absent => Err(EngineError::Unreadable(format!(
                "a value of profile {owner} has no data key (written before encryption, or \
                 with another key store)"
            ))),
        }
    }

    fn open_pairs(&self, pairs: Vec<KeyValue>) -> Result<Vec<KeyValue>, EngineError> {
        let mut opened = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            if let Some(value) = self.open(&key, value)? {
                opened.push((key, value));
            }
        }
        Ok(opened)
    }

    /// Scans pass over values that cannot be opened (a damaged data key)
    /// with a warning, so that one damaged person fails their own reads,
    /// not every scan of the store; point reads still report it.
    fn open_scan<'s>(&'s self, scan: Scan<'s>) -> Scan<'s> {
        Box::new(scan.filter_map(move |entry| match entry {
            Ok((key, value)) => match self.open(&key, value) {
                Ok(Some(value)) => Some(Ok((key, value))),
                Ok(None) => None,
                Err(EngineError::Unreadable(reason)) => {
                    tracing::warn!(%reason, "a scan passed over a value it cannot open");
                    None
                }
                Err(error) => Some(Err(error)),
            },
            Err(error) => Some(Err(error)),
        }))
    }

    /// Seals the batch's values and adds what the key store must commit
    /// with it; returns the owners whose keys it destroys.
    fn seal_batch(&self, batch: Batch) -> Result<(Batch, Vec<u64>), EngineError> {
        let (writes, destroyed) = batch.into_parts();
        let mut sealed = Batch::default();
        let mut owners = BTreeSet::new();
        for (key, value) in writes {
            match value {
                Some(value) => {
                    owners.extend(owner_of(&key));
                    let value = self.seal(&key, value)?;
                    sealed.insert(key, value);
                }
                None => sealed.remove(key),
            }
        }
        for owner in &destroyed {
            sealed.insert(shredded(*owner), Vec::new());
        }
        self.keys.before_commit(&mut sealed, &owners, &destroyed);
        Ok((sealed, destroyed))
    }

    fn finish(
        &self,
        committed: Result<Durability, EngineError>,
        destroyed: &[u64],
    ) -> Result<Durability, EngineError> {
        match committed {
            Ok(durability) => {
                self.keys.after_commit(destroyed).map_err(unreadable)?;
                Ok(durability)
            }
            Err(error) => {
                self.keys.after_failure();
                Err(error)
            }
        }
    }

    /// Finishes destructions a crash interrupted: every shredded marker's
    /// key is destroyed (again; destroying twice is harmless).
    pub fn finish_shredding(&self, engine: &dyn Engine) -> Result<u64, EngineError> {
        let mut owners = Vec::new();
        for entry in engine.scan_prefix(&[SHREDDED]) {
            let (key, _) = entry?;
            if let Some(owner) = keys::decode_u64(key.get(1..9).unwrap_or_default())
                && !matches!(self.keys.state(owner), Ok(KeyState::Destroyed))
            {
                owners.push(owner);
            }
        }
        self.keys.after_commit(&owners).map_err(unreadable)?;
        Ok(owners.len() as u64)
    }
}

/// An engine whose values are sealed at rest (see the module comment).
pub struct SealedEngine {
    inner: Arc<dyn Engine>,
    sealer: Sealer,
}

impl SealedEngine {
    pub fn new(inner: Arc<dyn Engine>, sealer: Sealer) -> SealedEngine {
        SealedEngine { inner, sealer }
    }
}

impl Engine for SealedEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        match self.inner.get(key)? {
            Some(value) => self.sealer.open(key, value),
            None => Ok(None),
        }
    }

    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_> {
        self.sealer.open_scan(self.inner.range(from, to))
    }

    fn range_back(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_> {
        self.sealer.open_scan(self.inner.range_back(from, to))
    }

    fn range_keys(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> KeyScan<'_> {
        self.inner.range_keys(from, to)
    }

    fn read(&self, reads: Vec<Read>) -> Reading {
        let keys: Vec<Option<Vec<u8>>> = reads
            .iter()
            .map(|read| match read {
                Read::Get(key) => Some(key.clone()),
                Read::Newest { .. } => None,
            })
            .collect();
        let reading = self.inner.read(reads);
        let sealer = self.sealer.clone();
        Box::pin(async move {
            let found = reading.await?;
            found
                .into_iter()
                .zip(keys)
                .map(|(found, key)| match (found, key) {
                    (Found::Value(Some(value)), Some(key)) => {
                        sealer.open(&key, value).map(Found::Value)
                    }
                    (Found::Pairs(pairs), _) => sealer.open_pairs(pairs).map(Found::Pairs),
                    (found, _) => Ok(found),
                })
                .collect()
        })
    }

    fn apply(&self, batch: Batch) -> Result<(), EngineError> {
        let (sealed, destroyed) = self.sealer.seal_batch(batch)?;
        debug_assert!(destroyed.is_empty(), "keys are destroyed only by a commit");
        self.inner.apply(sealed)
    }

    fn sync(&self) -> Result<Durability, EngineError> {
        self.inner.sync()
    }

    fn commit(&self, batch: Batch) -> Result<Durability, EngineError> {
        let (sealed, destroyed) = self.sealer.seal_batch(batch)?;
        let committed = self.inner.commit(sealed);
        self.sealer.finish(committed, &destroyed)
    }

    fn put_now(&self, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        let sealed = self.sealer.seal(key, value.to_vec())?;
        self.inner.put_now(key, &sealed)
    }

    fn size_on_disk(&self) -> Result<u64, EngineError> {
        self.inner.size_on_disk()
    }

    fn begin(&self) -> Result<Box<dyn Transaction + '_>, EngineError> {
        self.sealer.keys.begin_group();
        Ok(Box::new(SealedTransaction {
            inner: self.inner.begin()?,
            sealer: &self.sealer,
        }))
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }
}

struct SealedTransaction<'e> {
    inner: Box<dyn Transaction + 'e>,
    sealer: &'e Sealer,
}

impl Transaction for SealedTransaction<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        match self.inner.get(key)? {
            Some(value) => self.sealer.open(key, value),
            None => Ok(None),
        }
    }

    fn contains(&self, key: &[u8]) -> Result<bool, EngineError> {
        Ok(self.get(key)?.is_some())
    }

    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_> {
        self.sealer.open_scan(self.inner.range(from, to))
    }

    /// Keys are not sealed: nothing to open, and a value that cannot be
    /// opened is still found, so that erasure removes it too.
    fn range_keys(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> KeyScan<'_> {
        self.inner.range_keys(from, to)
    }

    fn read_ahead(&self, keys: &[Vec<u8>], prefixes: &[Vec<u8>]) -> Result<(), EngineError> {
        self.inner.read_ahead(keys, prefixes)
    }

    fn known_absent(&self, keys: &[Vec<u8>]) {
        for key in keys {
            if key.first() == Some(&keys::PROFILE)
                && let Some(owner) = owner_of(key)
            {
                self.sealer.keys.note_new(owner);
            }
        }
        self.inner.known_absent(keys);
    }

    fn reads_ahead(&self) -> bool {
        self.inner.reads_ahead()
    }

    fn commit(self: Box<Self>, batch: Batch) -> Result<Durability, EngineError> {
        let (sealed, destroyed) = self.sealer.seal_batch(batch)?;
        let committed = self.inner.commit(sealed);
        self.sealer.finish(committed, &destroyed)
    }
}
