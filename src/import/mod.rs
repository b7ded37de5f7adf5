//! `sightline import`: streams the rows of a CSV file through `Ingest` as
//! identify items, without holding the file in memory.
//!
//! - `mapping.rs`: which column becomes an identifier, a trait or the event
//!   time; one row to one item; the content-derived message id that makes a
//!   rerun report duplicates instead of adding data.
//! - `reader.rs`: a thread that reads and maps rows into a bounded channel.
//! - `client.rs`: sends rows in `Ingest` streams of bounded length, so a
//!   failure loses at most one stream; writes rejected rows with their
//!   reason; shows progress.

mod client;
mod mapping;
mod reader;

use std::path::PathBuf;

pub use client::run;
pub use mapping::{Mapping, Override, RowError, Target, TypeOverride, ValueType};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: csv::Error },
    #[error("cannot write rejected rows to {path}: {source}")]
    Rejects { path: PathBuf, source: csv::Error },
    #[error("cannot connect to {server}: {source}")]
    Connect {
        server: String,
        source: tonic::transport::Error,
    },
    #[error(
        "ingest failed after {rows_done} rows ({code}: {message}); rerun the same command to resume: rows already imported count as duplicates"
    )]
    Ingest {
        rows_done: u64,
        code: tonic::Code,
        message: String,
    },
}

/// What to import and how.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub server: String,
    /// Sent as `authorization: Bearer <token>` when set.
    pub token: Option<String>,
    pub file: PathBuf,
    pub overrides: Vec<Override>,
    /// Column types, `HEADER=number|bool|date|text|auto`.
    pub types: Vec<TypeOverride>,
    /// The field separator; sniffed from the header line when not set.
    pub delimiter: Option<u8>,
    pub timestamp_column: Option<String>,
    /// Where rejected rows go; `<file>.rejects.csv` when not set.
    pub rejects: Option<PathBuf>,
    /// Provenance recorded with every row.
    pub source: String,
    /// Rows per `Ingest` stream.
    pub stream_rows: usize,
    /// Print the summary only: no progress bar or progress lines.
    pub quiet: bool,
}

impl ImportOptions {
    pub fn rejects_path(&self) -> PathBuf {
        self.rejects.clone().unwrap_or_else(|| {
            let mut name = self.file.clone().into_os_string();
            name.push(".rejects.csv");
            PathBuf::from(name)
        })
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Data rows read from the file.
    pub rows: u64,
    pub accepted: u64,
    pub duplicate: u64,
    /// Refused by the server or before sending (no identifier, wrong field
    /// count, bad timestamp).
    pub rejected: u64,
    /// Rejected rows the server counted but did not list (it lists at most
    /// `limits.ingest_errors_max` per stream); not in the rejects file.
    pub rejected_unlisted: u64,
    /// Malformed identifiers left out of rows that were stored with their
    /// other identifiers (each listed in the rejects file).
    pub identifiers_dropped: u64,
    /// Set when any row was rejected.
    pub rejects_file: Option<PathBuf>,
    pub streams: u64,
    pub elapsed_ms: u64,
}
