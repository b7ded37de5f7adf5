//! The access log: which authenticated caller read which profile, and
//! when. Reads only queue an entry; a background task writes queued
//! entries in batches. A full queue makes readers wait rather than lose an
//! entry; entries the store refuses even after a retry are counted as lost
//! and reported in the metrics. A crash can lose the entries of the last
//! moments, never a profile write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::model::AccessEntry;
use crate::store::ProfileStore;

const QUEUE_DEPTH: usize = 65_536;
const BATCH_MAX: usize = 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// What became of the entries since start.
#[derive(Debug, Default)]
pub struct AccessLogCounts {
    written: AtomicU64,
    /// Reads that waited for room in a full queue.
    waited: AtomicU64,
    lost: AtomicU64,
}

impl AccessLogCounts {
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub fn waited(&self) -> u64 {
        self.waited.load(Ordering::Relaxed)
    }

    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct AccessLog {
    queue: mpsc::Sender<AccessEntry>,
    counts: Arc<AccessLogCounts>,
}

impl AccessLog {
    /// Starts the writer task; it ends (after a last flush) once every
    /// handle is dropped.
    pub fn start(store: Arc<dyn ProfileStore>) -> (AccessLog, JoinHandle<()>) {
        let (queue, mut receiver) = mpsc::channel::<AccessEntry>(QUEUE_DEPTH);
        let counts = Arc::new(AccessLogCounts::default());
        let task_counts = Arc::clone(&counts);
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH_MAX);
            loop {
                let open = tokio::time::timeout(FLUSH_EVERY, async {
                    while batch.len() < BATCH_MAX {
                        match receiver.recv().await {
                            Some(entry) => batch.push(entry),
                            None => return false,
                        }
                    }
                    true
                })
                .await
                .unwrap_or(true);
                if !batch.is_empty() {
                    let entries = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_MAX));
                    write(store.as_ref(), entries, &task_counts).await;
                }
                if !open {
                    return;
                }
            }
        });
        (AccessLog { queue, counts }, task)
    }

    /// Queues a read, waiting for room when the queue is full.
    pub async fn record(&self, entry: AccessEntry) {
        let entry = match self.queue.try_send(entry) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(entry)) => entry,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.counts.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.counts.waited.fetch_add(1, Ordering::Relaxed);
        if self.queue.send(entry).await.is_err() {
            self.counts.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> Arc<AccessLogCounts> {
        Arc::clone(&self.counts)
    }
}

/// Writes one batch, retrying once: a write refused twice (a full disk, a
/// lost database) is counted, never silently dropped.
async fn write(store: &dyn ProfileStore, entries: Vec<AccessEntry>, counts: &AccessLogCounts) {
    let count = entries.len() as u64;
    let retry = entries.clone();
    let Err(first) = store.record_access(entries).await else {
        counts.written.fetch_add(count, Ordering::Relaxed);
        return;
    };
    tracing::warn!(error = %first, "access log entries could not be written; retrying");
    tokio::time::sleep(RETRY_AFTER).await;
    match store.record_access(retry).await {
        Ok(()) => {
            counts.written.fetch_add(count, Ordering::Relaxed);
        }
        Err(error) => {
            counts.lost.fetch_add(count, Ordering::Relaxed);
            tracing::error!(%error, entries = count, "access log entries lost");
        }
    }
}
