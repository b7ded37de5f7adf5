//! The embedded default engine: one sled tree. Durability is explicit: a
//! commit applies its batch, flushes sled's log, `fdatasync`s it and syncs
//! any blob files sled wrote for large values.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Batch, Durability, Engine, EngineError, KeyValue, Scan, SoleWriter, Transaction};

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
    db: sled::Db,
    tree: sled::Tree,
    /// sled's log file; `sled::Db::flush` only issues `sync_file_range`,
    /// which neither persists file metadata nor flushes the device cache,
    /// so every commit is followed by an `fdatasync` of this file.
    log_file: File,
    blobs: Mutex<BlobFiles>,
}

impl SledEngine {
    pub fn open(data_dir: &Path, cache_capacity_bytes: u64) -> Result<SledEngine, EngineError> {
        std::fs::create_dir_all(data_dir)?;
        let deadline = Instant::now() + LOCK_RELEASE_WAIT;
        let db = loop {
            match open_sled(data_dir, cache_capacity_bytes) {
                Err(EngineError::Locked(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                opened => break opened?,
            }
        };
        let tree = db.open_tree(TREE_NAME)?;
        let log_file = File::open(log_file_path(data_dir))?;
        Ok(SledEngine {
            db,
            tree,
            log_file,
            blobs: Mutex::new(BlobFiles::new(data_dir)),
        })
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
        let tree = db.open_tree(TREE_NAME)?;
        let log_file = File::open(log_file_path(&dir))?;
        Ok(SledEngine {
            db,
            tree,
            log_file,
            blobs: Mutex::new(BlobFiles::new(&dir)),
        })
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

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.tree.get(key)?.map(|value| value.to_vec()))
    }

    fn contains(&self, key: &[u8]) -> Result<bool, EngineError> {
        Ok(self.tree.contains_key(key)?)
    }

    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_> {
        pairs(self.tree.range::<Vec<u8>, _>((from, to)))
    }

    fn range_back(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Scan<'_> {
        pairs(self.tree.range::<Vec<u8>, _>((from, to)).rev())
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
        Ok(self.tree.apply_batch(writes)?)
    }

    fn sync(&self) -> Result<Durability, EngineError> {
        self.db.flush()?;
        self.log_file.sync_data()?;
        let mut blobs = self
            .blobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(Durability {
            extra_files_synced: blobs.sync_new()?,
        })
    }

    fn put_now(&self, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        self.tree.insert(key, value)?;
        Ok(())
    }

    /// The writer thread is sled's only writer: its reads cannot go stale
    /// before its batch commits.
    fn begin(&self) -> Result<Box<dyn Transaction + '_>, EngineError> {
        Ok(Box::new(SoleWriter::new(self)))
    }

    fn size_on_disk(&self) -> Result<u64, EngineError> {
        Ok(self.db.size_on_disk()?)
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
