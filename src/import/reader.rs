//! Reads the CSV file on a thread of its own (parsing and mapping are CPU
//! work that must not hold up the async runtime) and hands mapped rows to
//! the sender through a bounded channel, so memory stays bounded however
//! long the file is.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::ImportError;
use super::mapping::Mapping;
use crate::api::pb;

/// Rows read ahead of the sender.
const READ_AHEAD_ROWS: usize = 4096;

/// One data row: the original fields (for the rejects file) and what it
/// became.
pub struct Row {
    /// Line in the file where the row starts (the header is line 1).
    pub line: u64,
    pub raw: csv::ByteRecord,
    pub item: Result<pb::IngestRequest, String>,
    /// Bytes of the file read so far, for progress.
    pub offset_bytes: u64,
}

pub enum Message {
    Row(Row),
    Failed(ImportError),
}

pub struct Source {
    pub headers: csv::ByteRecord,
    pub mapping: Mapping,
    pub total_bytes: u64,
    reader: csv::Reader<Box<dyn Read + Send>>,
    path: PathBuf,
}

/// Bytes read ahead to find the header line's separator.
const SNIFF_BYTES: u64 = 64 * 1024;
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// The separator the header line uses most, of `,` `;` tab and `|`
/// (spreadsheets export `;` where `,` is the decimal mark).
fn sniff_delimiter(start: &[u8]) -> u8 {
    let header = start.split(|byte| *byte == b'\n').next().unwrap_or(start);
    [b',', b';', b'\t', b'|']
        .into_iter()
        .max_by_key(|candidate| header.iter().filter(|byte| *byte == candidate).count())
        .filter(|candidate| header.contains(candidate))
        .unwrap_or(b',')
}

/// Opens the file and builds the column mapping from its header row. A
/// UTF-8 byte order mark is skipped; the separator is `delimiter` or the
/// one the header line uses.
pub fn open(
    path: &Path,
    delimiter: Option<u8>,
    mapping: impl FnOnce(&[String]) -> Result<Mapping, ImportError>,
) -> Result<Source, ImportError> {
    let read_error = |source: csv::Error| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(|error| read_error(error.into()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut start = Vec::new();
    (&mut file)
        .take(SNIFF_BYTES)
        .read_to_end(&mut start)
        .map_err(|error| read_error(error.into()))?;
    if start.starts_with(UTF8_BOM) {
        start.drain(..UTF8_BOM.len());
    }
    let delimiter = delimiter.unwrap_or_else(|| sniff_delimiter(&start));
    let whole: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(start).chain(file));
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        // A row with the wrong number of fields is rejected on its own,
        // not the whole file.
        .flexible(true)
        .from_reader(whole);
    let headers = reader.byte_headers().map_err(read_error)?.clone();
    let names: Vec<String> = headers
        .iter()
        .map(|field| String::from_utf8_lossy(field).into_owned())
        .collect();
    Ok(Source {
        mapping: mapping(&names)?,
        headers,
        total_bytes,
        reader,
        path: path.to_owned(),
    })
}

/// Starts the reading thread. It stops at the end of the file, on a read
/// error (sent as the last message), or when the receiver is dropped.
pub fn spawn(
    mut source: Source,
    source_name: String,
    now: prost_types::Timestamp,
) -> mpsc::Receiver<Message> {
    let (rows, receiver) = mpsc::channel(READ_AHEAD_ROWS);
    let mapping = source.mapping.clone();
    std::thread::spawn(move || {
        let mut record = csv::ByteRecord::new();
        loop {
            match source.reader.read_byte_record(&mut record) {
                Ok(false) => return,
                Ok(true) => {}
                Err(error) => {
                    let _ = rows.blocking_send(Message::Failed(ImportError::Read {
                        path: source.path.clone(),
                        source: error,
                    }));
                    return;
                }
            }
            let position = record
                .position()
                .cloned()
                .unwrap_or_else(csv::Position::new);
            let fields: Result<Vec<&str>, _> = record.iter().map(std::str::from_utf8).collect();
            let item = match fields {
                Ok(fields) => mapping
                    .to_item(&fields, &source_name, now)
                    .map_err(|error| error.0),
                Err(_) => Err("the row is not valid UTF-8".to_owned()),
            };
            let row = Row {
                line: position.line(),
                raw: record.clone(),
                item,
                offset_bytes: position.byte() + record.as_slice().len() as u64,
            };
            if rows.blocking_send(Message::Row(row)).is_err() {
                return;
            }
        }
    });
    receiver
}
