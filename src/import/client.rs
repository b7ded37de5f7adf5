//! Sends mapped rows through `Ingest`, a bounded number per stream, and
//! accounts for every row: accepted, duplicate or rejected (with the
//! original row and the reason in the rejects file).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::mapping::Mapping;
use super::reader::{self, Message, Row};
use super::{ImportError, ImportOptions, ImportSummary};
use crate::api::pb::{self, profile_service_client::ProfileServiceClient};

/// Items queued between this side and the gRPC stream.
const STREAM_QUEUE_ITEMS: usize = 1024;
/// Progress lines when stderr is not a terminal.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

type IngestCall = JoinHandle<Result<pb::IngestResponse, tonic::Status>>;

/// Imports the file; the summary also when some rows were rejected. An
/// `Ingest` failure stops the import; rerunning resumes it.
pub async fn run(options: &ImportOptions) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let source = reader::open(&options.file, options.delimiter, |headers| {
        Mapping::new(
            headers,
            &options.overrides,
            &options.types,
            options.timestamp_column.as_deref(),
        )
    })?;
    let authorization = match &options.token {
        Some(token) => Some(
            MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| ImportError::Usage("the token is not valid header text".to_owned()))?,
        ),
        None => None,
    };
    if !options.quiet {
        for line in source.mapping.describe() {
            eprintln!("  {line}");
        }
    }
    let client = ProfileServiceClient::connect(crate::cli::server_url(&options.server))
        .await
        .map_err(|source| ImportError::Connect {
            server: options.server.clone(),
            source,
        })?;
    let mut rejects = Rejects::new(options.rejects_path(), &source.headers)?;
    let mut progress = Progress::new(source.total_bytes, options.quiet);
    let now = prost_types::Timestamp::from(SystemTime::now());
    let mut rows = reader::spawn(source, options.source.clone(), now);

    let mut summary = ImportSummary::default();
    let stream_rows = options.stream_rows.max(1);
    let mut finished = false;
    while !finished {
        // One Ingest stream: started with its first item, fed until it
        // holds `stream_rows` rows or the file ends.
        let mut sent: Vec<Row> = Vec::new();
        let mut sent_items: Vec<pb::IngestRequest> = Vec::new();
        let mut stream: Option<(mpsc::Sender<pb::IngestRequest>, IngestCall)> = None;
        while sent.len() < stream_rows {
            let mut row = match rows.recv().await {
                None => {
                    finished = true;
                    break;
                }
                Some(Message::Failed(error)) => return Err(error),
                Some(Message::Row(row)) => row,
            };
            summary.rows += 1;
            progress.update(summary.rows, row.offset_bytes);
            let item = match std::mem::replace(&mut row.item, Err(String::new())) {
                Ok(item) => item,
                Err(reason) => {
                    summary.rejected += 1;
                    rejects.write(&row, &reason)?;
                    continue;
                }
            };
            let (items, _) =
                stream.get_or_insert_with(|| start_stream(client.clone(), authorization.clone()));
            // Kept until the stream's answer, which names rejected rows by
            // their position in the stream.
            sent.push(row);
            sent_items.push(item.clone());
            if items.send(item).await.is_err() {
                // The call ended early; its answer says why.
                break;
            }
        }
        let Some((items, call)) = stream else {
            continue;
        };
        drop(items);
        let failed = |status: tonic::Status| ImportError::Ingest {
            rows_done: summary.rows - sent.len() as u64,
            code: status.code(),
            message: status.message().to_owned(),
        };
        let response = call
            .await
            .map_err(|error| failed(tonic::Status::internal(error.to_string())))?
            .map_err(failed)?;
        let mut response = response;
        let mut pending: Vec<(usize, pb::IngestRequest)> =
            sent_items.into_iter().enumerate().collect();
        loop {
            summary.streams += 1;
            summary.accepted += response.accepted;
            summary.duplicate += response.duplicate;
            let unlisted = response
                .rejected
                .saturating_sub(response.errors.len() as u64);
            summary.rejected_unlisted += unlisted;
            summary.rejected += unlisted;
            let mut retries = Vec::new();
            for error in &response.errors {
                let Some((row_index, item)) = usize::try_from(error.index)
                    .ok()
                    .and_then(|i| pending.get(i))
                else {
                    continue;
                };
                let Some(row) = sent.get(*row_index) else {
                    continue;
                };
                let reason = if error.field.is_empty() {
                    error.description.clone()
                } else {
                    format!("{}: {}", error.field, error.description)
                };
                // A bad identifier does not cost the row its good ones: it
                // is sent again without it, and the drop is reported.
                if let Some(reduced) = without_identifier(item, &error.field) {
                    summary.identifiers_dropped += 1;
                    rejects.write(row, &format!("stored without {reason}"))?;
                    retries.push((*row_index, reduced));
                } else {
                    summary.rejected += 1;
                    rejects.write(row, &reason)?;
                }
            }
            if retries.is_empty() {
                break;
            }
            let items: Vec<pb::IngestRequest> =
                retries.iter().map(|(_, item)| item.clone()).collect();
            response = send_all(client.clone(), authorization.clone(), items)
                .await
                .map_err(failed)?;
            pending = retries;
        }
    }
    progress.finish(summary.rows);
    summary.rejects_file = rejects.finish()?;
    summary.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(summary)
}

/// The item without the identifier `field` names
/// (`identify.identifiers[N].…`), when it has others left to stand on.
fn without_identifier(item: &pb::IngestRequest, field: &str) -> Option<pb::IngestRequest> {
    let position: usize = field
        .strip_prefix("identify.identifiers[")?
        .split(']')
        .next()?
        .parse()
        .ok()?;
    let Some(pb::ingest_request::Item::Identify(identify)) = &item.item else {
        return None;
    };
    if identify.identifiers.len() < 2 || position >= identify.identifiers.len() {
        return None;
    }
    let mut reduced = identify.clone();
    reduced.identifiers.remove(position);
    Some(pb::IngestRequest {
        item: Some(pb::ingest_request::Item::Identify(reduced)),
    })
}

/// One short stream of the given items, answered once they are durable.
async fn send_all(
    mut client: ProfileServiceClient<Channel>,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    items: Vec<pb::IngestRequest>,
) -> Result<pb::IngestResponse, tonic::Status> {
    let mut request = tonic::Request::new(futures::stream::iter(items));
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value);
    }
    Ok(client.ingest(request).await?.into_inner())
}

fn start_stream(
    mut client: ProfileServiceClient<Channel>,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
) -> (mpsc::Sender<pb::IngestRequest>, IngestCall) {
    let (items, receiver) = mpsc::channel(STREAM_QUEUE_ITEMS);
    let mut request = tonic::Request::new(ReceiverStream::new(receiver));
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value);
    }
    let call = tokio::spawn(async move { client.ingest(request).await.map(|r| r.into_inner()) });
    (items, call)
}

/// The rejects file: the original columns, then the line and the reason.
/// Created on the first rejected row; a file left by an earlier run at the
/// same path is removed first, so it never lists rows of another run.
struct Rejects {
    path: PathBuf,
    headers: csv::ByteRecord,
    writer: Option<csv::Writer<std::fs::File>>,
}

impl Rejects {
    fn new(path: PathBuf, headers: &csv::ByteRecord) -> Result<Rejects, ImportError> {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(ImportError::Rejects {
                    path,
                    source: error.into(),
                });
            }
        }
        Ok(Rejects {
            path,
            headers: headers.clone(),
            writer: None,
        })
    }

    fn write(&mut self, row: &Row, reason: &str) -> Result<(), ImportError> {
        let error = |path: &PathBuf, source: csv::Error| ImportError::Rejects {
            path: path.clone(),
            source,
        };
        if self.writer.is_none() {
            let mut writer = csv::WriterBuilder::new()
                .flexible(true)
                .from_path(&self.path)
                .map_err(|source| error(&self.path, source))?;
            let mut header = self.headers.clone();
            header.push_field(b"reject_line");
            header.push_field(b"reject_reason");
            writer
                .write_byte_record(&header)
                .map_err(|source| error(&self.path, source))?;
            self.writer = Some(writer);
        }
        let mut record = row.raw.clone();
        record.push_field(row.line.to_string().as_bytes());
        record.push_field(reason.as_bytes());
        if let Some(writer) = &mut self.writer {
            writer
                .write_byte_record(&record)
                .map_err(|source| error(&self.path, source))?;
        }
        Ok(())
    }

    fn finish(self) -> Result<Option<PathBuf>, ImportError> {
        let Some(mut writer) = self.writer else {
            return Ok(None);
        };
        writer.flush().map_err(|source| ImportError::Rejects {
            path: self.path.clone(),
            source: source.into(),
        })?;
        Ok(Some(self.path))
    }
}

/// A progress bar over the file's bytes with the row rate and an ETA on a
/// terminal; a line every `LOG_INTERVAL` otherwise.
struct Progress {
    bar: ProgressBar,
    log_lines: bool,
    started: Instant,
    last_line: Instant,
    total_bytes: u64,
}

impl Progress {
    fn new(total_bytes: u64, quiet: bool) -> Progress {
        let terminal = !quiet && std::io::stderr().is_terminal();
        let bar = if terminal {
            ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let style = ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {percent}% {msg} eta {eta}",
        );
        if let Ok(style) = style {
            bar.set_style(style.progress_chars("=> "));
        }
        let now = Instant::now();
        Progress {
            bar,
            log_lines: !quiet && !terminal,
            started: now,
            last_line: now,
            total_bytes,
        }
    }

    fn rate(&self, rows: u64) -> f64 {
        rows as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    fn update(&mut self, rows: u64, offset_bytes: u64) {
        // Redrawing per row would cost more than the row.
        if rows % 512 != 0 {
            return;
        }
        self.bar.set_position(offset_bytes);
        self.bar
            .set_message(format!("{rows} rows, {:.0} rows/s", self.rate(rows)));
        if self.log_lines && self.last_line.elapsed() >= LOG_INTERVAL {
            self.last_line = Instant::now();
            let percent = offset_bytes as f64 * 100.0 / self.total_bytes.max(1) as f64;
            eprintln!(
                "import: {rows} rows read ({percent:.0}% of the file), {:.0} rows/s",
                self.rate(rows)
            );
        }
    }

    fn finish(&self, rows: u64) {
        self.bar.finish_and_clear();
        if self.log_lines {
            eprintln!("import: {rows} rows read, {:.0} rows/s", self.rate(rows));
        }
    }
}
