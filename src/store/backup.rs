//! Backups: a consistent copy of the tree as a stream of length-prefixed
//! key/value records, and loading one into a fresh database.
//!
//! File layout (integers big-endian):
//!
//! ```text
//! magic    8 bytes  "SLBACKUP"
//! version  u32      FORMAT_VERSION
//! keys     u64      number of records
//! crc32    u32      over every record's bytes, in file order
//! records  (key length u32, key, value length u32, value) * keys
//! ```
//!
//! The header is written last (its counts are known only at the end), the
//! file is synced and only then renamed into place, so a backup file that
//! exists is complete.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::StoreError;
use super::engine::{Batch, Engine};
use super::sealing::key_store::KEY_ROW;

const MAGIC: &[u8; 8] = b"SLBACKUP";
const FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: u64 = 8 + 4 + 8 + 4;
/// The name of the backup inside its directory; one backup per directory.
pub const BACKUP_FILE_NAME: &str = "sightline.backup";
const TEMP_FILE_NAME: &str = "sightline.backup.partial";
/// Keys and values are bounded by sled itself far below this; a larger
/// length in a file means the file is damaged, and must not become an
/// allocation of that size.
const RECORD_BYTES_MAX: u32 = 256 * 1024 * 1024;
/// Records loaded per commit on restore. Smaller batches
/// kept sled's memory lower during a large load (measured at 9.3 million
/// records: 10,000 per batch grew ~10 bytes of memory per byte loaded,
/// 1,000 ~4), though it still grows with the load.
const RESTORE_BATCH_RECORDS: usize = 1_000;

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub path: PathBuf,
    pub keys: u64,
    pub bytes: u64,
    /// How long writes waited while the tree was copied.
    pub writer_blocked_ms: u64,
}

/// What a restore loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub keys: u64,
    /// Later erasures re-applied from a newer copy, when one was given.
    pub replayed: Option<super::ReplayReport>,
}

/// The temporary file a backup into `dir` is written to; fails when `dir`
/// already holds a backup (backups are kept, never replaced).
pub(super) fn prepare(dir: &Path) -> Result<PathBuf, StoreError> {
    fs::create_dir_all(dir).map_err(|error| {
        StoreError::Precondition(format!(
            "cannot create backup directory {}: {error}",
            dir.display()
        ))
    })?;
    if dir.join(BACKUP_FILE_NAME).exists() {
        return Err(StoreError::Precondition(format!(
            "{} already holds a backup; name a new directory",
            dir.display()
        )));
    }
    Ok(dir.join(TEMP_FILE_NAME))
}

/// Copies every record of `tree` into `temp`. Runs on the writer thread
/// between groups, when no write is in flight, so the copy is one
/// consistent state; it does not sync (see [`finish`]) to keep the writer
/// blocked no longer than the copy itself.
pub(super) fn copy_tree(tree: &dyn Engine, temp: &Path) -> Result<(u64, u32, u64), StoreError> {
    let started = Instant::now();
    // Readable by its owner only: the file is sealed, but not everyone on
    // the machine should get to try.
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(temp)?;
    let mut out = BufWriter::with_capacity(1024 * 1024, file);
    out.write_all(&[0; HEADER_BYTES as usize])?;
    let mut crc = crc32fast::Hasher::new();
    let mut keys = 0u64;
    for entry in tree.range(Bound::Unbounded, Bound::Unbounded) {
        let (key, value) = entry?;
        if key.first() == Some(&KEY_ROW) {
            // Data keys kept in the database stay out of its backups: a
            // backup taken before an erasure must not open the person.
            continue;
        }
        for part in [&key[..], &value[..]] {
            let length = u32::try_from(part.len()).map_err(|_| StoreError::Corrupt {
                what: "record",
                reason: format!("{} bytes do not fit a backup record", part.len()),
            })?;
            let length = length.to_be_bytes();
            crc.update(&length);
            crc.update(part);
            out.write_all(&length)?;
            out.write_all(part)?;
        }
        keys += 1;
    }
    let mut file = out.into_inner().map_err(|error| error.into_error())?;
    let checksum = crc.finalize();
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header(keys, checksum))?;
    let blocked_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok((keys, checksum, blocked_ms))
}

fn header(keys: u64, checksum: u32) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_BYTES as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    header.extend_from_slice(&keys.to_be_bytes());
    header.extend_from_slice(&checksum.to_be_bytes());
    header
}

/// Makes the copy durable and gives it its final name. Off the writer
/// thread: syncing gigabytes must not hold up writes.
pub(super) fn finish(temp: &Path) -> Result<(PathBuf, u64), StoreError> {
    let file = File::options().read(true).write(true).open(temp)?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    let dir = temp.parent().unwrap_or(Path::new("."));
    let path = dir.join(BACKUP_FILE_NAME);
    // A link fails if the name exists: the check that the directory holds
    // no backup yet and the naming are one step, with no window between.
    let linked = fs::hard_link(temp, &path);
    if linked.is_err() {
        // A partial or refused copy is of no use to anyone.
        let _ = fs::remove_file(temp);
    }
    linked.map_err(|error| match error.kind() {
        std::io::ErrorKind::AlreadyExists => StoreError::Precondition(format!(
            "{} already holds a backup; name a new directory",
            dir.display()
        )),
        _ => error.into(),
    })?;
    fs::remove_file(temp)?;
    // The rename is durable only once the directory entry is.
    File::open(dir)?.sync_all()?;
    Ok((path, bytes))
}

struct Header {
    keys: u64,
    checksum: u32,
}

fn read_header(reader: &mut impl Read) -> Result<Header, StoreError> {
    let mut bytes = [0u8; HEADER_BYTES as usize];
    reader
        .read_exact(&mut bytes)
        .map_err(|_| corrupt("too short for a backup header"))?;
    let (magic, rest) = bytes.split_at(8);
    if magic != MAGIC {
        return Err(corrupt("not a sightline backup"));
    }
    let (version, rest) = rest.split_at(4);
    let (keys, checksum) = rest.split_at(8);
    let version = u32::from_be_bytes(version.try_into().map_err(|_| corrupt("header"))?);
    if version != FORMAT_VERSION {
        return Err(corrupt(&format!(
            "format version {version}; this build reads {FORMAT_VERSION}"
        )));
    }
    Ok(Header {
        keys: u64::from_be_bytes(keys.try_into().map_err(|_| corrupt("header"))?),
        checksum: u32::from_be_bytes(checksum.try_into().map_err(|_| corrupt("header"))?),
    })
}

fn corrupt(reason: &str) -> StoreError {
    StoreError::Corrupt {
        what: "backup",
        reason: reason.to_owned(),
    }
}

/// Reads one length-prefixed part into `buffer`, feeding the checksum.
/// `Ok(false)` at a clean end of file.
fn read_part(
    reader: &mut impl Read,
    crc: &mut crc32fast::Hasher,
    buffer: &mut Vec<u8>,
) -> Result<bool, StoreError> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(error) => return Err(error.into()),
    }
    let size = u32::from_be_bytes(length);
    if size > RECORD_BYTES_MAX {
        return Err(corrupt("record length out of range"));
    }
    buffer.resize(size as usize, 0);
    reader
        .read_exact(buffer)
        .map_err(|_| corrupt("truncated record"))?;
    crc.update(&length);
    crc.update(buffer);
    Ok(true)
}

/// Visits every record of a backup file after checking its header; fails
/// on a count or checksum that does not match.
pub(super) fn each_record(
    path: &Path,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let mut reader = BufReader::with_capacity(1024 * 1024, File::open(path)?);
    let header = read_header(&mut reader)?;
    let mut crc = crc32fast::Hasher::new();
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut keys = 0u64;
    while read_part(&mut reader, &mut crc, &mut key)? {
        if !read_part(&mut reader, &mut crc, &mut value)? {
            return Err(corrupt("truncated record"));
        }
        visit(&key, &value)?;
        keys += 1;
    }
    if keys != header.keys || crc.finalize() != header.checksum {
        return Err(corrupt(
            "record count or checksum does not match the header",
        ));
    }
    Ok(keys)
}

/// Loads the backup in `backup_dir` into `engine`, durably. The file is
/// verified in full before anything is written, so a damaged backup leaves
/// the target untouched.
pub(super) fn load(backup_dir: &Path, engine: &dyn Engine) -> Result<RestoreReport, StoreError> {
    let path = backup_dir.join(BACKUP_FILE_NAME);
    if !path.is_file() {
        return Err(StoreError::Precondition(format!(
            "{} holds no backup ({BACKUP_FILE_NAME})",
            backup_dir.display()
        )));
    }
    each_record(&path, |_, _| Ok(()))?;
    let mut batch = Batch::default();
    let keys = each_record(&path, |key, value| {
        batch.insert(key, value);
        if batch.len() >= RESTORE_BATCH_RECORDS {
            // The engine holds unsynced writes in memory.
            engine.commit(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    engine.commit(batch)?;
    Ok(RestoreReport {
        keys,
        replayed: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::engine::sled::SledEngine;

    #[test]
    fn a_copy_loads_back_identically_and_damage_is_detected() -> Result<(), StoreError> {
        let source_dir = tempfile::tempdir()?;
        let source = SledEngine::temporary()?;
        for i in 0u32..1000 {
            source.put_now(&i.to_be_bytes(), &vec![i as u8; (i % 50) as usize])?;
        }
        let backup_dir = source_dir.path().join("backup");
        let temp = prepare(&backup_dir)?;
        let (keys, _, _) = copy_tree(&source, &temp)?;
        let (path, _) = finish(&temp)?;
        assert_eq!(keys, 1000);
        assert!(prepare(&backup_dir).is_err(), "an existing backup is kept");

        let target = SledEngine::temporary()?;
        let report = load(&backup_dir, &target)?;
        assert_eq!(report.keys, 1000);
        let everything = |engine: &SledEngine| -> Vec<_> {
            engine
                .range(Bound::Unbounded, Bound::Unbounded)
                .filter_map(Result::ok)
                .collect()
        };
        assert_eq!(everything(&target), everything(&source));

        let mut bytes = fs::read(&path)?;
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes)?;
        let empty = SledEngine::temporary()?;
        assert!(matches!(
            load(&backup_dir, &empty),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(
            crate::store::engine::count_all(&empty),
            0,
            "nothing is loaded from a damaged backup"
        );
        Ok(())
    }
}
