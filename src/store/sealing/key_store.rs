//! Where data keys live: one key per profile id, sealed under the master
//! key, in a store whose entries can be destroyed for good.
//!
//! - [`SlotFile`], beside sled: a file of fixed-size slots, one per
//!   profile id at a fixed offset, overwritten in place and synced when a
//!   key is destroyed. sled's log keeps superseded values; this file never
//!   does, because nothing is ever appended or moved in it.
//! - [`EngineKeys`], for a shared database: rows of the engine itself,
//!   written in the transaction that first uses a key and overwritten in
//!   the erasure's own transaction. The database's old row versions and
//!   write-ahead log may keep the sealed key until vacuumed and recycled
//!   (README, Privacy).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::cipher::{KEY_BYTES, SEALED_OVERHEAD, SealError, SecretKey};
use crate::store::engine::{Batch, Engine, EngineError};

/// Tag of the key rows of [`EngineKeys`]; the header is the tag alone.
pub const KEY_ROW: u8 = b'K';
const SEALED_KEY_BYTES: usize = SEALED_OVERHEAD + KEY_BYTES;
const STATE_LIVE: u8 = 1;
const STATE_DESTROYED: u8 = 2;
/// Header: magic, check, sealed index secret.
const MAGIC: &[u8; 8] = b"SLKEYS01";
const CHECK_BYTES: usize = 32;
const HEADER_BYTES: usize = 8 + CHECK_BYTES + SEALED_KEY_BYTES;
const HEADER_SPACE: u64 = 128;
const SLOT_BYTES: u64 = 64;
/// Slots filled with fresh keys ahead of the ids that need them, so that
/// creating a profile never waits for a sync of this file.
const SLOTS_AHEAD: u64 = 4096;
/// Profile ids are allocated one by one from 1; an id far beyond the
/// filled slots means a damaged record, not a profile.
const SLOT_OWNER_MAX: u64 = 1 << 34;
/// Data keys kept open in memory; beyond this the cache starts afresh.
const CACHED_KEYS_MAX: usize = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("key store: {0}")]
    Io(#[from] std::io::Error),
    #[error("key store: {0}")]
    Engine(#[from] EngineError),
    #[error(
        "the master key does not open the key store {0}: give the master key this data was \
         created with ([privacy] master_key_file or SIGHTLINE_MASTER_KEY)"
    )]
    WrongMasterKey(String),
    #[error("key store {0} is damaged: {1}")]
    Damaged(String, String),
    #[error("the data key of profile {0} is damaged; that profile cannot be read")]
    DamagedKey(u64),
    #[error("profile {0} was erased; its data key is destroyed")]
    Destroyed(u64),
    #[error("profile id {0} is beyond what the key store holds")]
    OutOfRange(u64),
}

/// What the key store holds for one profile id.
pub enum KeyState {
    Live(SecretKey),
    Destroyed,
    /// No key was ever made for it.
    Absent,
}

pub trait KeyStore: Send + Sync {
    /// The secret behind the keyed hashes of index keys; outlives every
    /// data key and every rotation of the master key.
    fn index_secret(&self) -> &SecretKey;

    fn state(&self, owner: u64) -> Result<KeyState, KeyStoreError>;

    /// The key to seal a value of `owner` with, made when it has none.
    /// Refused for an erased owner: nothing may be written under it again.
    fn key_for_writing(&self, owner: u64) -> Result<SecretKey, KeyStoreError>;

    /// `owner` is an id just allocated: it has no key anywhere yet.
    fn note_new(&self, _owner: u64) {}

    /// A writer transaction begins: keys made for ids an earlier group
    /// allocated and did not commit are void (on a shared database another
    /// server may since have reserved those ids).
    fn begin_group(&self) {}

    /// Adds to the batch what must commit with it, where the keys live in
    /// the engine: the keys made for the owners it seals values of
    /// (`sealed`) and not stored yet, and the destruction of `destroyed`'s
    /// keys.
    fn before_commit(&self, _batch: &mut Batch, _sealed: &BTreeSet<u64>, _destroyed: &[u64]) {}

    /// The batch is durable: keys it carried are stored, and `destroyed`'s
    /// keys are destroyed for good before this returns.
    fn after_commit(&self, destroyed: &[u64]) -> Result<(), KeyStoreError>;

    /// The batch failed: nothing it carried is stored.
    fn after_failure(&self) {}
}

/// The check value a master key must reproduce to open a key store.
fn check_of(master: &SecretKey) -> [u8; CHECK_BYTES] {
    master.keyed_hash(&[b"sightline key store check"])
}

fn seal_key(master: &SecretKey, owner: u64, key: &SecretKey) -> Vec<u8> {
    master.seal(&slot_context(owner), key.expose())
}

fn open_key(master: &SecretKey, owner: u64, sealed: &[u8]) -> Result<SecretKey, SealError> {
    let plain = master.open(&slot_context(owner), sealed)?;
    SecretKey::from_slice(&plain).ok_or(SealError::Malformed)
}

fn slot_context(owner: u64) -> [u8; 16] {
    let mut context = [0u8; 16];
    context[..8].copy_from_slice(b"data key");
    context[8..].copy_from_slice(&owner.to_be_bytes());
    context
}

/// The index secret's slot context: no profile id is `u64::MAX`.
const INDEX_OWNER: u64 = u64::MAX;

fn header_bytes(master: &SecretKey, index: &SecretKey) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&check_of(master));
    header.extend_from_slice(&seal_key(master, INDEX_OWNER, index));
    header
}

fn parse_header(master: &SecretKey, bytes: &[u8], name: &str) -> Result<SecretKey, KeyStoreError> {
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err(KeyStoreError::Damaged(
            name.to_owned(),
            "not a sightline key store".to_owned(),
        ));
    }
    let check = &bytes[8..8 + CHECK_BYTES];
    if !bool::from(subtle::ConstantTimeEq::ct_eq(check, &check_of(master)[..])) {
        return Err(KeyStoreError::WrongMasterKey(name.to_owned()));
    }
    open_key(master, INDEX_OWNER, &bytes[8 + CHECK_BYTES..HEADER_BYTES])
        .map_err(|error| KeyStoreError::Damaged(name.to_owned(), error.to_string()))
}

/// Decodes one stored slot or row: state byte, then the sealed key.
fn parse_slot(master: &SecretKey, owner: u64, slot: &[u8]) -> Result<KeyState, KeyStoreError> {
    match slot.first() {
        None | Some(0) => Ok(KeyState::Absent),
        Some(&STATE_DESTROYED) => Ok(KeyState::Destroyed),
        Some(&STATE_LIVE) if slot.len() > SEALED_KEY_BYTES => {
            open_key(master, owner, &slot[1..1 + SEALED_KEY_BYTES])
                .map(KeyState::Live)
                .map_err(|_| KeyStoreError::DamagedKey(owner))
        }
        Some(_) => Err(KeyStoreError::DamagedKey(owner)),
    }
}

fn live_slot(master: &SecretKey, owner: u64, key: &SecretKey) -> Vec<u8> {
    let mut slot = Vec::with_capacity(SLOT_BYTES as usize);
    slot.push(STATE_LIVE);
    slot.extend_from_slice(&seal_key(master, owner, key));
    slot
}

/// Keys in memory, bounded. Every value read opens through it, from every
/// thread at once, so hits share a read lock and take no other.
#[derive(Default)]
struct Cache(RwLock<HashMap<u64, SecretKey>>);

impl Cache {
    fn get(&self, owner: u64) -> Option<SecretKey> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&owner)
            .cloned()
    }

    fn put(&self, owner: u64, key: SecretKey) {
        let mut keys = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if keys.len() >= CACHED_KEYS_MAX {
            keys.clear();
        }
        keys.insert(owner, key);
    }

    fn remove(&self, owner: u64) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&owner);
    }
}

/// Data keys in a file of fixed-size slots (see the module comment).
pub struct SlotFile {
    path: PathBuf,
    master: SecretKey,
    index: SecretKey,
    inner: Mutex<SlotFileState>,
    /// Filled from slots only while `inner` is held, and emptied of a
    /// destroyed key while it is held too, so that a read racing an
    /// erasure never caches the key the erasure wipes.
    cache: Cache,
}

struct SlotFileState {
    file: File,
    /// Slots below this owner are written (live or destroyed).
    filled: u64,
}

impl SlotFile {
    pub fn exists(path: &Path) -> bool {
        path.is_file()
    }

    /// Opens the key store at `path`, or creates it when `create` and none
    /// is there.
    pub fn open(path: &Path, master: SecretKey, create: bool) -> Result<SlotFile, KeyStoreError> {
        let name = path.display().to_string();
        let (file, index) = if path.exists() {
            let file = OpenOptions::new().read(true).write(true).open(path)?;
            let mut header = vec![0u8; HEADER_BYTES];
            file.read_exact_at(&mut header, 0)
                .map_err(|_| KeyStoreError::Damaged(name.clone(), "too short".to_owned()))?;
            let index = parse_header(&master, &header, &name)?;
            (file, index)
        } else if create {
            let index = SecretKey::random();
            let file = create_private(path)?;
            file.write_all_at(&header_bytes(&master, &index), 0)?;
            file.sync_all()?;
            sync_parent(path)?;
            (file, index)
        } else {
            return Err(KeyStoreError::Damaged(name, "missing".to_owned()));
        };
        let length = file.metadata()?.len();
        let filled = length.saturating_sub(HEADER_SPACE) / SLOT_BYTES;
        Ok(SlotFile {
            path: path.to_owned(),
            master,
            index,
            inner: Mutex::new(SlotFileState { file, filled }),
            cache: Cache::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotFileState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn offset(owner: u64) -> u64 {
        HEADER_SPACE + owner * SLOT_BYTES
    }

    fn read_slot(
        state: &SlotFileState,
        owner: u64,
    ) -> Result<[u8; SLOT_BYTES as usize], KeyStoreError> {
        let mut slot = [0u8; SLOT_BYTES as usize];
        state
            .file
            .read_exact_at(&mut slot, SlotFile::offset(owner))?;
        Ok(slot)
    }

    /// Fills the slots up to and past `owner` with fresh keys, in one write
    /// and one sync.
    fn fill_past(&self, state: &mut SlotFileState, owner: u64) -> Result<(), KeyStoreError> {
        if owner >= SLOT_OWNER_MAX {
            return Err(KeyStoreError::OutOfRange(owner));
        }
        let until = (owner + 1).max(state.filled + SLOTS_AHEAD);
        let mut slots = Vec::with_capacity(((until - state.filled) * SLOT_BYTES) as usize);
        for slot_owner in state.filled..until {
            let mut slot = live_slot(&self.master, slot_owner, &SecretKey::random());
            slot.resize(SLOT_BYTES as usize, 0);
            slots.extend_from_slice(&slot);
        }
        state
            .file
            .write_all_at(&slots, SlotFile::offset(state.filled))?;
        state.file.sync_data()?;
        state.filled = until;
        Ok(())
    }
}

impl KeyStore for SlotFile {
    fn index_secret(&self) -> &SecretKey {
        &self.index
    }

    fn state(&self, owner: u64) -> Result<KeyState, KeyStoreError> {
        if let Some(key) = self.cache.get(owner) {
            return Ok(KeyState::Live(key));
        }
        let state = self.lock();
        if owner >= state.filled {
            return Ok(KeyState::Absent);
        }
        let slot = SlotFile::read_slot(&state, owner)?;
        let parsed = parse_slot(&self.master, owner, &slot)?;
        if let KeyState::Live(key) = &parsed {
            self.cache.put(owner, key.clone());
        }
        Ok(parsed)
    }

    fn key_for_writing(&self, owner: u64) -> Result<SecretKey, KeyStoreError> {
        {
            let mut state = self.lock();
            if owner >= state.filled {
                self.fill_past(&mut state, owner)?;
            }
        }
        match self.state(owner)? {
            KeyState::Live(key) => Ok(key),
            KeyState::Destroyed => Err(KeyStoreError::Destroyed(owner)),
            KeyState::Absent => Err(KeyStoreError::DamagedKey(owner)),
        }
    }

    fn after_commit(&self, destroyed: &[u64]) -> Result<(), KeyStoreError> {
        if destroyed.is_empty() {
            return Ok(());
        }
        let state = self.lock();
        let mut wiped = [0u8; SLOT_BYTES as usize];
        wiped[0] = STATE_DESTROYED;
        for &owner in destroyed {
            self.cache.remove(owner);
            if owner < state.filled {
                state.file.write_all_at(&wiped, SlotFile::offset(owner))?;
            }
        }
        state.file.sync_data()?;
        Ok(())
    }
}

/// Creates a file only its owner can read, failing if one exists.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Data keys as rows of a shared engine (see the module comment).
pub struct EngineKeys {
    engine: Arc<dyn Engine>,
    master: SecretKey,
    index: SecretKey,
    state: Mutex<EngineKeysState>,
}

#[derive(Default)]
struct EngineKeysState {
    cache: Cache,
    /// Keys made but not yet known committed: added to every batch until
    /// one commits.
    pending: HashMap<u64, SecretKey>,
    /// Keys the batch being committed carries.
    in_flight: Vec<u64>,
    /// The owners in `pending` that are ids allocated by the writer's
    /// current group, rather than profiles found without a key.
    allocated: HashSet<u64>,
}

pub fn key_row(owner: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = KEY_ROW;
    key[1..].copy_from_slice(&owner.to_be_bytes());
    key
}

impl EngineKeys {
    pub fn exists(engine: &dyn Engine) -> Result<bool, EngineError> {
        engine.contains(&[KEY_ROW])
    }

    pub fn open(
        engine: Arc<dyn Engine>,
        master: SecretKey,
        create: bool,
    ) -> Result<EngineKeys, KeyStoreError> {
        const NAME: &str = "of the database";
        // Servers starting together on a new database race to write the
        // header; the losers conflict and read the winner's.
        let mut attempts_left = 10;
        let index = loop {
            let transaction = engine.begin()?;
            if let Some(header) = transaction.get(&[KEY_ROW])? {
                break parse_header(&master, &header, NAME)?;
            }
            if !create {
                return Err(KeyStoreError::Damaged(
                    NAME.to_owned(),
                    "missing".to_owned(),
                ));
            }
            let index = SecretKey::random();
            let mut batch = Batch::default();
            batch.insert(vec![KEY_ROW], header_bytes(&master, &index));
            match transaction.commit(batch) {
                Ok(_) => break index,
                Err(EngineError::Conflict(_)) if attempts_left > 0 => {
                    attempts_left -= 1;
                    std::thread::sleep(std::time::Duration::from_millis(rand::random_range(1..20)));
                }
                Err(error) => return Err(error.into()),
            }
        };
        Ok(EngineKeys {
            engine,
            master,
            index,
            state: Mutex::new(EngineKeysState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EngineKeysState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl KeyStore for EngineKeys {
    fn index_secret(&self) -> &SecretKey {
        &self.index
    }

    fn state(&self, owner: u64) -> Result<KeyState, KeyStoreError> {
        if let Some(key) = self.lock().cache.get(owner) {
            return Ok(KeyState::Live(key));
        }
        let Some(row) = self.engine.get(&key_row(owner))? else {
            return Ok(KeyState::Absent);
        };
        let parsed = parse_slot(&self.master, owner, &row)?;
        if let KeyState::Live(key) = &parsed {
            self.lock().cache.put(owner, key.clone());
        }
        Ok(parsed)
    }

    fn key_for_writing(&self, owner: u64) -> Result<SecretKey, KeyStoreError> {
        if let Some(key) = self.lock().pending.get(&owner) {
            return Ok(key.clone());
        }
        match self.state(owner)? {
            KeyState::Live(key) => Ok(key),
            KeyState::Destroyed => Err(KeyStoreError::Destroyed(owner)),
            KeyState::Absent => Ok(self.make(owner)),
        }
    }

    fn note_new(&self, owner: u64) {
        let mut state = self.lock();
        if !state.pending.contains_key(&owner) && state.cache.get(owner).is_none() {
            state.pending.insert(owner, SecretKey::random());
            state.allocated.insert(owner);
        }
    }

    fn begin_group(&self) {
        let mut state = self.lock();
        let EngineKeysState {
            pending, allocated, ..
        } = &mut *state;
        for owner in allocated.drain() {
            pending.remove(&owner);
        }
    }

    /// Only the keys of owners whose values the batch seals: a key made
    /// for an id that a failed group reserved, and that another server may
    /// have reserved since, must never overwrite that server's row.
    fn before_commit(&self, batch: &mut Batch, sealed: &BTreeSet<u64>, destroyed: &[u64]) {
        let mut state = self.lock();
        let mut in_flight = Vec::new();
        for owner in sealed {
            if let Some(key) = state.pending.get(owner) {
                batch.insert(key_row(*owner), live_slot(&self.master, *owner, key));
                in_flight.push(*owner);
            }
        }
        state.in_flight = in_flight;
        for owner in destroyed {
            batch.insert(key_row(*owner), vec![STATE_DESTROYED]);
        }
    }

    fn after_commit(&self, destroyed: &[u64]) -> Result<(), KeyStoreError> {
        let mut state = self.lock();
        for owner in std::mem::take(&mut state.in_flight) {
            state.allocated.remove(&owner);
            if let Some(key) = state.pending.remove(&owner) {
                state.cache.put(owner, key);
            }
        }
        for owner in destroyed {
            state.pending.remove(owner);
            state.cache.remove(*owner);
        }
        Ok(())
    }

    /// Keys made for the failed group's new ids are dropped: its retry may
    /// be handed other ids, and makes keys again for those it uses.
    fn after_failure(&self) {
        let mut state = self.lock();
        state.in_flight.clear();
        let EngineKeysState {
            pending, allocated, ..
        } = &mut *state;
        for owner in allocated.drain() {
            pending.remove(&owner);
        }
    }
}

impl EngineKeys {
    fn make(&self, owner: u64) -> SecretKey {
        let mut state = self.lock();
        state
            .pending
            .entry(owner)
            .or_insert_with(SecretKey::random)
            .clone()
    }
}

/// Re-seals the header and every live slot under `new`, in a copy that
/// replaces the file only once it is complete and synced. Data keys, and
/// so every stored value and index key, stay as they are. Returns the
/// number of live keys re-sealed.
pub fn rotate_slot_file(
    path: &Path,
    old: &SecretKey,
    new: &SecretKey,
) -> Result<u64, KeyStoreError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path)?;
    let index = parse_header(old, &bytes, &name)?;
    let mut out = header_bytes(new, &index);
    out.resize(HEADER_SPACE as usize, 0);
    let mut live = 0;
    let slots = bytes.get(HEADER_SPACE as usize..).unwrap_or_default();
    for (owner, slot) in slots.chunks(SLOT_BYTES as usize).enumerate() {
        let owner = owner as u64;
        let mut rewritten = match parse_slot(old, owner, slot)? {
            KeyState::Live(key) => {
                live += 1;
                live_slot(new, owner, &key)
            }
            KeyState::Destroyed => vec![STATE_DESTROYED],
            KeyState::Absent => Vec::new(),
        };
        rewritten.resize(SLOT_BYTES as usize, 0);
        out.extend_from_slice(&rewritten);
    }
    let temp = path.with_extension("rotating");
    let _ = std::fs::remove_file(&temp);
    let file = create_private(&temp)?;
    file.write_all_at(&out, 0)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    sync_parent(path)?;
    Ok(live)
}

/// [`rotate_slot_file`] for key rows, in one transaction.
pub fn rotate_engine_keys(
    engine: &dyn Engine,
    old: &SecretKey,
    new: &SecretKey,
) -> Result<u64, KeyStoreError> {
    const NAME: &str = "of the database";
    let transaction = engine.begin()?;
    let header = transaction
        .get(&[KEY_ROW])?
        .ok_or_else(|| KeyStoreError::Damaged(NAME.to_owned(), "missing".to_owned()))?;
    let index = parse_header(old, &header, NAME)?;
    let mut batch = Batch::default();
    batch.insert(vec![KEY_ROW], header_bytes(new, &index));
    let mut live = 0;
    let rows: Vec<_> = transaction
        .range(
            std::ops::Bound::Excluded(vec![KEY_ROW]),
            std::ops::Bound::Excluded(vec![KEY_ROW + 1]),
        )
        .collect::<Result<_, _>>()?;
    for (key, row) in rows {
        let Some(owner) = key
            .get(1..9)
            .and_then(|id| id.try_into().ok())
            .map(u64::from_be_bytes)
        else {
            continue;
        };
        if let KeyState::Live(data_key) = parse_slot(old, owner, &row)? {
            batch.insert(key, live_slot(new, owner, &data_key));
            live += 1;
        }
    }
    transaction.commit(batch)?;
    Ok(live)
}
