//! The master key that seals every data key: given by the operator (a file
//! or the environment), or generated at the first start of a new store.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::cipher::SecretKey;
use super::key_store::{create_private, sync_parent};

/// The environment variable that may hold the master key (64 hex digits).
pub const MASTER_KEY_VARIABLE: &str = "SIGHTLINE_MASTER_KEY";
/// Where a generated master key is written, in the data directory, when
/// the operator names none.
pub const GENERATED_MASTER_KEY_FILE: &str = "master.key";

#[derive(Debug, Clone)]
pub enum MasterKeySource {
    /// The key itself, from the environment.
    Given(SecretKey),
    /// A file the operator named; it must exist.
    File(PathBuf),
    /// Not named: the file in the data directory, generated with the store.
    Generated(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key file {0}: {1}")]
    Unreadable(String, std::io::Error),
    #[error("master key file {0} does not hold 64 hex digits")]
    Malformed(String),
    #[error(
        "this store holds encrypted data, but no master key was given and {0} does not exist: \
         give the key it was created with ([privacy] master_key_file or {MASTER_KEY_VARIABLE})"
    )]
    Missing(String),
    #[error("cannot write the generated master key to {0}: {1}")]
    Write(String, std::io::Error),
}

impl MasterKeySource {
    /// The key; a new one is generated (and written) only for a store that
    /// does not exist yet, never over existing data.
    pub fn load(&self, store_exists: bool) -> Result<SecretKey, MasterKeyError> {
        match self {
            MasterKeySource::Given(key) => Ok(key.clone()),
            MasterKeySource::File(path) => read(path),
            MasterKeySource::Generated(path) if path.exists() => read(path),
            MasterKeySource::Generated(path) if store_exists => {
                Err(MasterKeyError::Missing(path.display().to_string()))
            }
            MasterKeySource::Generated(path) => {
                let key = SecretKey::random();
                write(path, &key)
                    .map_err(|error| MasterKeyError::Write(path.display().to_string(), error))?;
                tracing::warn!(
                    path = %path.display(),
                    "generated a master key beside the data; keep a copy apart from the data \
                     and its backups, and name it with [privacy] master_key_file"
                );
                Ok(key)
            }
        }
    }

    /// The generated key file a restore copies along with the key store.
    pub fn generated_path(&self) -> Option<&Path> {
        match self {
            MasterKeySource::Generated(path) => Some(path),
            _ => None,
        }
    }
}

fn read(path: &Path) -> Result<SecretKey, MasterKeyError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|error| MasterKeyError::Unreadable(name.clone(), error))?;
    SecretKey::from_hex(&text).ok_or(MasterKeyError::Malformed(name))
}

/// Writes a key file readable by its owner only, durably.
pub fn write(path: &Path, key: &SecretKey) -> std::io::Result<()> {
    let mut file = create_private(path)?;
    writeln!(file, "{}", key.to_hex())?;
    file.sync_all()?;
    sync_parent(path)
}
