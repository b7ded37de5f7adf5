//! Streams generated records through `Ingest`, one call per chunk, and
//! keeps which records the server rejected: they are no part of any
//! profile, so the evaluator leaves them out.

use super::QualityError;
use super::generate::Record;
use crate::cli::ProfileClient;

/// What the server said about a scenario's records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Records sent (resends included).
    pub records: u64,
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
    /// Per record, in sending order: whether the server rejected it.
    pub rejected_records: Vec<bool>,
}

/// Sends `records` in `Ingest` calls of `chunk_items` items. Each call's
/// summary lists its rejected items by position; `chunk_items` must not
/// exceed the server's `limits.ingest_errors_max`, or the list is cut short
/// and the rejected records cannot be told apart (an error, rather than a
/// silently wrong score).
pub async fn load(
    client: &mut ProfileClient,
    records: &[Record],
    chunk_items: usize,
) -> Result<LoadSummary, QualityError> {
    // A zero chunk size would send nothing; treat it as one item per call.
    let chunk_items = chunk_items.max(1);
    let mut summary = LoadSummary {
        rejected_records: vec![false; records.len()],
        ..LoadSummary::default()
    };
    for (chunk_index, chunk) in records.chunks(chunk_items).enumerate() {
        let offset = chunk_index * chunk_items;
        let items: Vec<_> = chunk.iter().map(|record| record.request.clone()).collect();
        let response = client
            .ingest(futures::stream::iter(items))
            .await
            .map_err(QualityError::Ingest)?
            .into_inner();
        if response.errors.len() as u64 != response.rejected {
            return Err(QualityError::RejectionsNotListed {
                rejected: response.rejected,
                listed: response.errors.len(),
            });
        }
        for error in &response.errors {
            let position = usize::try_from(error.index)
                .ok()
                .filter(|position| *position < chunk.len())
                .ok_or(QualityError::UnknownItem {
                    index: error.index,
                    items: chunk.len(),
                })?;
            summary.rejected_records[offset + position] = true;
        }
        summary.records += chunk.len() as u64;
        summary.accepted += response.accepted;
        summary.duplicate += response.duplicate;
        summary.rejected += response.rejected;
    }
    Ok(summary)
}
