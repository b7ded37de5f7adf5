//! The embedded default engine: one sled tree. Durability is explicit: a
//! commit applies its batch, flushes sled's log, `fdatasync`s it and syncs
//! any blob files sled wrote for large values.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::{
    Batch, Durability, Engine, EngineError, KeyScan, KeyValue, Scan, SoleWriter, Transaction,
};

const TREE_NAME: &str = "sightline";
/// sled's background threads let go of the directory lock moments after a
/// close; an open right after one (a restart, a restore's reopen) waits.
const LOCK_RELEASE_WAIT: Duration = Duration::from_secs(5);

impl From<sled::Error> for EngineError {
    fn from(error: sled::Error) -> Self {
        match error {
            sled::Error::Io(io) => EngineError::Io(io),
            other => EngineError::Backend(other.to_string()),
        }
    }
}

pub struct SledEngine {
    data_dir: PathBuf,
    cache_capacity_bytes: u64,
    /// `None` only while being reopened (or when a reopen failed).
    opened: RwLock<Option<Arc<Opened>>>,
    /// After a failed write sled refuses every later one (it keeps the
    /// first I/O error for good), so the next transaction reopens the
    /// database from what is durable, which is all that was acknowledged.
    write_failed: AtomicBool,
    blobs: Mutex<BlobFiles>,
}

struct Opened {
    db: sled::Db,
    tree: sled::Tree,
    /// sled's log file; `sled::Db::flush` only issues `sync_file_range`,
    /// which neither persists file metadata nor flushes the device cache,
    /// so every commit is followed by an `fdatasync` of this file.
    log_file: File,
}

impl Opened {
    fn open(data_dir: &Path, cache_capacity_bytes: u64) -> Result<Opened, EngineError> {
        let deadline = Instant::now() + LOCK_RELEASE_WAIT;
        let db = loop {
            match open_sled(data_dir, cache_capacity_bytes) {
                Err(EngineError::Locked(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                opened => break opened?,
            }
        };
        Opened::of(db, data_dir)
    }

    fn of(db: sled::Db, data_dir: &Path) -> Result<Opened, EngineError> {
        let tree = db.open_tree(TREE_NAME)?;
        let log_file = File::open(log_file_path(data_dir))?;
        Ok(Opened { db, tree, log_file })
    }
}

impl SledEngine {
    pub fn open(data_dir: &Path, cache_capacity_bytes: u64) -> Result<SledEngine, EngineError> {
        std::fs::create_dir_all(data_dir)?;
        let opened = Opened::open(data_dir, cache_capacity_bytes)?;
        Ok(SledEngine::over(opened, data_dir, cache_capacity_bytes))
    }

    fn over(opened: Opened, data_dir: &Path, cache_capacity_bytes: u64) -> SledEngine {
        SledEngine {
            data_dir: data_dir.to_owned(),
            cache_capacity_bytes,
            opened: RwLock::new(Some(Arc::new(opened))),
            write_failed: AtomicBool::new(false),
            blobs: Mutex::new(BlobFiles::new(data_dir)),
        }
    }

    fn current(&self) -> Result<Arc<Opened>, EngineError> {
        self.opened
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| {
                EngineError::Unavailable(
                    "the database is being reopened after a failed write".to_owned(),
                )
            })
    }

    /// Notes a failed write, to be mended by the next transaction.
    fn writing<T>(&self, result: Result<T, EngineError>) -> Result<T, EngineError> {
        if result.is_err() {
            self.write_failed.store(true, Ordering::SeqCst);
        }
        result
    }

    /// Whether the file system takes a write of the size sled needs to
    /// open (a log segment), by writing and syncing a file of that size.
    fn room_to_reopen(&self) -> Result<(), EngineError> {
        use std::io::Write;
        const PROBE_BYTES: usize = 1 << 20;
        let path = self.data_dir.join("reopen-probe");
        let written = File::create(&path).and_then(|mut file| {
            file.write_all(&vec![0u8; PROBE_BYTES])?;
            file.sync_all()
        });
        let _ = std::fs::remove_file(&path);
        written.map_err(|error| {
            EngineError::Unavailable(format!(
                "the database cannot take writes: {error}; it reopens once there is room"
            ))
        })
    }

    /// A read, tried once more on a reopened database when it failed after
    /// a failed write: sled may write while it reads (merging a page's
    /// fragments), and refuses to after an I/O error.
    fn reading<T>(
        &self,
        read: impl Fn(&sled::Tree) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        // Bound first: the handle must be gone before a reopen.
        let first = read(&self.current()?.tree);
        match first {
            Err(_) if self.write_failed.load(Ordering::SeqCst) => {
                self.reopen_if_failed()?;
                read(&self.current()?.tree)
            }
            result => result,
        }
        .map_err(|error| match error {
            // sled can fail a read after a failed write (it merges page
            // fragments as it reads): the cause is the same.
            EngineError::Io(io) => {
                EngineError::Unavailable(format!("the database cannot be read now: {io}"))
            }
            other => other,
        })
    }

    /// Reopens the database after a failed write: what sled kept in memory
    /// of the failed batch goes, what was durable stays.
    fn reopen_if_failed(&self) -> Result<(), EngineError> {
        if !self.write_failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Opening writes too: while the disk has no room, the old handle
        // stays, so that reads sled can serve from it go on.
        self.room_to_reopen()?;
        let mut slot = self
            .opened
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // sled lets go of its directory lock once the last handle is gone;
        // `Opened::open` waits for readers still holding one.
        drop(slot.take());
        let opened = Opened::open(&self.data_dir, self.cache_capacity_bytes).map_err(|error| {
            EngineError::Unavailable(format!(
                "the database could not be reopened after a failed write: {error}"
            ))
        })?;
        *slot = Some(Arc::new(opened));
        self.write_failed.store(false, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
impl SledEngine {
    /// An engine in a directory of its own, removed when it is dropped.
    pub fn temporary() -> Result<SledEngine, EngineError> {
        let dir = std::env::temp_dir().join(format!(
            "sightline-engine-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let db = sled::Config::new().path(&dir).temporary(true).open()?;
        Ok(SledEngine::over(Opened::of(db, &dir)?, &dir, 0))
    }
}

fn open_sled(data_dir: &Path, cache_capacity_bytes: u64) -> Result<sled::Db, EngineError> {
    sled::Config::new()
        .path(data_dir)
        .cache_capacity(cache_capacity_bytes)
        // Durability comes from an explicit flush and fdatasync per commit;
        // a background flush thread would only add I/O.
        .flush_every_ms(None)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(|error| match error {
            // sled 0.34.7 reports a lock held elsewhere only in the text
            // of an `Other` error.
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                EngineError::Locked(data_dir.to_owned())
            }
            other => other.into(),
        })
}

/// sled 0.34 writes its log to `<data>/db` (older layouts: `<data>/conf`
/// beside `<data>/snap.*` and the log in `<data>/db`).
fn log_file_path(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

fn pairs<'e>(iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'e) -> Scan<'e> {
    Box::new(iter.map(|entry| {
        entry
            .map(|(key, value)| -> KeyValue { (key.to_vec(), value.to_vec()) })
            .map_err(EngineError::from)
    }))
}

fn failed_scan<'e>(error: EngineError) -> Scan<'e> {
    Box::new(std::iter::once(Err(error)))
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.reading(|tree| Ok(tree.get(key)?.map(|value| value.to_vec())))
    }

    fn contains(&self, key: &[u8]) -> Result<bool, EngineError> {
        self.reading(|tree| Ok(tree.contains_key(key)?))
    }

    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_> {
        match self.current() {
            // The iterator holds a tree handle of its own.
            Ok(opened) => pairs(opened.tree.range::<Vec<u8>, _>((from, to))),
            Err(error) => failed_scan(error),
        }
    }

    fn range_back(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_> {
        match self.current() {
            Ok(opened) => pairs(opened.tree.range::<Vec<u8>, _>((from, to)).rev()),
            Err(error) => failed_scan(error),
        }
    }

    fn range_keys(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> KeyScan<'_> {
        match self.current() {
            Ok(opened) => Box::new(
                opened
                    .tree
                    .range::<Vec<u8>, _>((from, to))
                    .keys()
                    .map(|key| key.map(|key| key.to_vec()).map_err(EngineError::from)),
            ),
            Err(error) => Box::new(std::iter::once(Err(error))),
        }
    }

    fn apply(&self, batch: Batch) -> Result<(), EngineError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut writes = sled::Batch::default();
        for (key, value) in batch.into_writes() {
            match value {
                Some(value) => writes.insert(key, value),
                None => writes.remove(key),
            }
        }
        let opened = self.current()?;
        self.writing(opened.tree.apply_batch(writes).map_err(EngineError::from))
    }

    fn sync(&self) -> Result<Durability, EngineError> {
        let opened = self.current()?;
        self.writing(
            opened
                .db
                .flush()
                .map_err(EngineError::from)
                .and_then(|_| Ok(opened.log_file.sync_data()?)),
        )?;
        let mut blobs = self
            .blobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(Durability {
            extra_files_synced: self.writing(blobs.sync_new())?,
        })
    }

    fn put_now(&self, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        let opened = self.current()?;
        self.writing(opened.tree.insert(key, value).map_err(EngineError::from))?;
        Ok(())
    }

    /// The writer thread is sled's only writer: its reads cannot go stale
    /// before its batch commits.
    fn begin(&self) -> Result<Box<dyn Transaction + '_>, EngineError> {
        self.reopen_if_failed()?;
        Ok(Box::new(SoleWriter::new(self)))
    }

    fn size_on_disk(&self) -> Result<u64, EngineError> {
        Ok(self.current()?.db.size_on_disk()?)
    }
}

/// sled's blob directory and the blob files already synced. sled writes
/// each value larger than a quarter of a segment to a file of its own
/// (`write_all`, never synced, nor is the directory): without syncing them
/// here, a large record would survive a process kill but not a power loss.
struct BlobFiles {
    dir: PathBuf,
    data_dir: PathBuf,
    synced: HashSet<OsString>,
    dir_seen: bool,
}

impl BlobFiles {
    fn new(data_dir: &Path) -> BlobFiles {
        BlobFiles {
            dir: data_dir.join("blobs"),
            data_dir: data_dir.to_owned(),
            synced: HashSet::new(),
            dir_seen: false,
        }
    }

    /// Syncs every blob file not synced yet, then the directory holding
    /// them (and, the first time, the directory holding that). Returns the
    /// files synced. Blob names are never reused, so a name once synced
    /// needs no second sync; names sled has removed are forgotten.
    fn sync_new(&mut self) -> Result<u64, EngineError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(error.into()),
        };
        let mut present = HashSet::new();
        let mut synced = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !self.synced.contains(&name) {
                File::open(entry.path())?.sync_all()?;
                synced += 1;
            }
            present.insert(name);
        }
        self.synced = present;
        if synced > 0 || !self.dir_seen {
            File::open(&self.dir)?.sync_all()?;
            if !self.dir_seen {
                File::open(&self.data_dir)?.sync_all()?;
                self.dir_seen = true;
            }
        }
        Ok(synced)
    }
}
