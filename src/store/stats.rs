//! Counters the writer keeps about its own work, read by whoever reports
//! them (the metrics endpoint). Plain atomics: the writer must not wait on
//! a reader, and no reader needs the counters to agree with each other.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Upper bounds (inclusive) of the group-size histogram buckets, in calls.
pub const GROUP_SIZE_BOUNDS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048];

#[derive(Debug)]
pub struct WriterStats {
    /// Why writes fail now (the last failed commit's error), or `None`
    /// while they succeed.
    writes_refused: tokio::sync::watch::Sender<Option<String>>,
    groups_committed: AtomicU64,
    /// Groups run again after their transaction lost a race with another
    /// writer of the same database.
    groups_retried: AtomicU64,
    calls_committed: AtomicU64,
    profiles_merged: AtomicU64,
    /// sled's separate files for large values, synced before acknowledging.
    blob_files_synced: AtomicU64,
    /// Groups per bucket of [`GROUP_SIZE_BOUNDS`], the last one unbounded.
    group_sizes: [AtomicU64; GROUP_SIZE_BOUNDS.len() + 1],
    /// Live profile records: counted at open, then moved by every durable
    /// group by the records it created and removed.
    live_profiles: AtomicI64,
}

impl Default for WriterStats {
    fn default() -> Self {
        WriterStats {
            writes_refused: tokio::sync::watch::channel(None).0,
            groups_committed: AtomicU64::default(),
            groups_retried: AtomicU64::default(),
            calls_committed: AtomicU64::default(),
            profiles_merged: AtomicU64::default(),
            blob_files_synced: AtomicU64::default(),
            group_sizes: Default::default(),
            live_profiles: AtomicI64::default(),
        }
    }
}

impl WriterStats {
    pub fn writes_failing(&self, reason: String) {
        self.writes_refused.send_if_modified(|current| {
            let changed = current.as_deref() != Some(reason.as_str());
            *current = Some(reason);
            changed
        });
    }

    pub fn writes_resumed(&self) {
        self.writes_refused
            .send_if_modified(|current| current.take().is_some());
    }

    pub fn writes_are_failing(&self) -> bool {
        self.writes_refused.borrow().is_some()
    }

    /// Follows whether writes fail, and why.
    pub fn write_health(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.writes_refused.subscribe()
    }

    pub fn group_committed(&self, calls: u64, profiles_merged: u64) {
        self.groups_committed.fetch_add(1, Ordering::Relaxed);
        self.calls_committed.fetch_add(calls, Ordering::Relaxed);
        self.profiles_merged
            .fetch_add(profiles_merged, Ordering::Relaxed);
        let bucket = GROUP_SIZE_BOUNDS
            .iter()
            .position(|bound| calls <= *bound)
            .unwrap_or(GROUP_SIZE_BOUNDS.len());
        self.group_sizes[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn group_retried(&self) {
        self.groups_retried.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_live_profiles(&self, profiles: u64) {
        self.live_profiles.store(
            i64::try_from(profiles).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn live_profiles_changed(&self, change: i64) {
        self.live_profiles.fetch_add(change, Ordering::Relaxed);
    }

    pub fn blob_files_synced(&self, files: u64) {
        self.blob_files_synced.fetch_add(files, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> WriterCounts {
        WriterCounts {
            blob_files_synced: self.blob_files_synced.load(Ordering::Relaxed),
            groups_committed: self.groups_committed.load(Ordering::Relaxed),
            groups_retried: self.groups_retried.load(Ordering::Relaxed),
            calls_committed: self.calls_committed.load(Ordering::Relaxed),
            profiles_merged: self.profiles_merged.load(Ordering::Relaxed),
            live_profiles: u64::try_from(self.live_profiles.load(Ordering::Relaxed)).unwrap_or(0),
            group_sizes: self
                .group_sizes
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterCounts {
    pub groups_committed: u64,
    /// Groups run again after a conflict with another server's writes.
    pub groups_retried: u64,
    /// Calls and jobs made durable.
    pub calls_committed: u64,
    /// Profiles merged away by identify and track calls (including merges
    /// fuzzy matching made on them).
    pub profiles_merged: u64,
    /// Live (not merged-away, not erased) profiles.
    pub live_profiles: u64,
    /// Blob files (sled's files for values over a quarter of a segment)
    /// synced before their groups were acknowledged.
    pub blob_files_synced: u64,
    /// Groups per bucket of [`GROUP_SIZE_BOUNDS`] (not cumulative), and the
    /// groups above the last bound.
    pub group_sizes: Vec<u64>,
}

/// The store's state as reported to operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub writer: WriterCounts,
    /// Write commands waiting for the writer.
    pub write_queue_depth: u64,
    pub write_queue_capacity: u64,
    pub size_on_disk_bytes: u64,
    /// The in-memory recommendation model.
    pub recommender: crate::recommend::RecommenderStats,
}
