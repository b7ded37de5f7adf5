//! The access log: which authenticated caller read which profile, and
//! when. Reads must stay cheap, so they only queue an entry; a background
//! task writes queued entries in batches. A crash can lose the entries of
//! the last moments, never a profile write.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::model::AccessEntry;
use crate::store::ProfileStore;

const QUEUE_DEPTH: usize = 65_536;
const BATCH_MAX: usize = 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct AccessLog {
    queue: mpsc::Sender<AccessEntry>,
}

impl AccessLog {
    /// Starts the writer task; it ends (after a last flush) once every
    /// handle is dropped.
    pub fn start(store: Arc<dyn ProfileStore>) -> (AccessLog, JoinHandle<()>) {
        let (queue, mut receiver) = mpsc::channel::<AccessEntry>(QUEUE_DEPTH);
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
                    if let Err(error) = store.record_access(entries).await {
                        tracing::warn!(%error, "access log entries could not be written");
                    }
                }
                if !open {
                    return;
                }
            }
        });
        (AccessLog { queue }, task)
    }

    /// Queues a read. When the queue is full the entry is dropped with a
    /// warning rather than slowing reads down.
    pub fn record(&self, entry: AccessEntry) {
        if self.queue.try_send(entry).is_err() {
            tracing::warn!("access log queue full; an entry was dropped");
        }
    }
}
