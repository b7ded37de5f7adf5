//! What servers sharing one database learn of each other's writes. The
//! engines offer no notifications that CockroachDB and YugabyteDB share,
//! so each server writes what the others must learn into the database and
//! reads what they wrote.
//!
//! - Definitions: a group that changes a segment or computed-trait
//!   definition rewrites one stamp in its transaction. The writer reads the stamp in
//!   every group's transaction and loads the definitions again when it
//!   moved, so no group evaluates rules older than the ones it can see (a
//!   definition committed meanwhile conflicts with the group, which then
//!   runs again and sees it).
//! - Memberships: a group that changed memberships writes one feed entry
//!   naming the profiles. Every [`POLL_INTERVAL`], each server reads the
//!   entries of the others and brings its bitmaps (and so `ListMembers`
//!   and its watchers) to what those profiles' membership records hold.
//!   `CheckMembership` reads the record itself and needs none of this.

use std::collections::{BTreeSet, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use super::StoreError;
use super::engine::{Batch, Engine};
use super::keys;
use super::membership::{MembershipIndex, read_memberships_in};
use super::overlay::GroupWrites;
use crate::model::{Clock, MembershipChange, ProfileId, SystemClock, UnixMillis};

/// How often a server reads what the others wrote: the bound, with a
/// round trip, on how stale its bitmaps and watchers are.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Entries are read again for this long after the newest one seen: an
/// entry carries the time its group was built on its server's clock, and
/// a slower transaction, or a server whose clock is behind, may commit an
/// older time after a newer one. Servers' clocks are to agree within it.
const OVERLAP_MS: i64 = 3_000;
/// Entries older than this are removed, by whichever server comes first.
const RETENTION_MS: i64 = 600_000;
const PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// Tells the other servers when the group changed a definition.
pub fn stamp_if_definitions_changed(group: &mut GroupWrites<'_>) {
    if [keys::SEGMENT, keys::CUSTOM_TRAIT]
        .iter()
        .all(|&prefix| group.changed_keys(&[prefix]).is_empty())
    {
        return;
    }
    let mut writes = group.call();
    writes.insert(
        keys::DEFINITIONS_STAMP,
        rand::random::<u64>().to_be_bytes().to_vec(),
    );
    writes.commit();
}

/// The wall clock: feed entries are ordered across servers by it, so a
/// test's manual clock has no say.
pub fn wall_clock() -> UnixMillis {
    SystemClock.now()
}

/// The writer's side: one entry per group that changed memberships.
pub struct FeedWriter {
    instance: u64,
    sequence: u64,
}

impl FeedWriter {
    pub fn new(instance: u64) -> FeedWriter {
        FeedWriter {
            instance,
            sequence: 0,
        }
    }

    /// Adds the entry naming the profiles these changes moved to the
    /// group's batch.
    pub fn note(&mut self, group: &mut GroupWrites<'_>, changes: &[MembershipChange]) {
        let profiles: BTreeSet<u64> = changes.iter().map(|change| change.profile.0).collect();
        if profiles.is_empty() {
            return;
        }
        self.sequence += 1;
        let value: Vec<u8> = profiles.iter().flat_map(|id| id.to_be_bytes()).collect();
        let mut writes = group.call();
        writes.insert(
            keys::feed_entry(wall_clock(), self.instance, self.sequence),
            value,
        );
        writes.commit();
    }
}

/// Asks the writer to run a group and waits for it; `false` when it could
/// not be asked now.
pub type WakeWriter = Box<dyn Fn() -> bool + Send>;

/// The reading side: a thread of its own per server on a shared database.
pub struct Follower {
    engine: Arc<dyn Engine>,
    memberships: Arc<MembershipIndex>,
    wake_writer: WakeWriter,
    instance: u64,
    definitions_seen: Option<Vec<u8>>,
    /// Entries already read, within the overlap.
    seen: HashSet<[u8; 25]>,
    newest: UnixMillis,
    /// Profiles to bring up to date, kept until that succeeds.
    pending: BTreeSet<u64>,
    pruned: Instant,
}

impl Follower {
    /// Starts from `opened`, the time the bitmaps were loaded.
    pub fn new(
        engine: Arc<dyn Engine>,
        memberships: Arc<MembershipIndex>,
        wake_writer: WakeWriter,
        instance: u64,
        opened: UnixMillis,
    ) -> Follower {
        let definitions_seen = engine.get(keys::DEFINITIONS_STAMP).ok().flatten();
        Follower {
            engine,
            memberships,
            wake_writer,
            instance,
            definitions_seen,
            seen: HashSet::new(),
            newest: opened,
            pending: BTreeSet::new(),
            pruned: Instant::now(),
        }
    }

    pub fn run(mut self, stop: std_mpsc::Receiver<()>) {
        loop {
            match stop.recv_timeout(POLL_INTERVAL) {
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(error) = self.poll() {
                        tracing::warn!(%error, "reading what other servers changed failed");
                    }
                }
                Ok(()) | Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn poll(&mut self) -> Result<(), StoreError> {
        self.follow_definitions()?;
        self.read_feed()?;
        self.reconcile_pending()?;
        if self.pruned.elapsed() >= PRUNE_INTERVAL {
            self.prune()?;
            self.pruned = Instant::now();
        }
        Ok(())
    }

    /// The writer loads moved definitions at its next group; waking it
    /// makes sure there is one, so reads see them without waiting for a
    /// write. Waiting for it keeps this thread from reading the feed
    /// before the writer knows the segments its entries name.
    fn follow_definitions(&mut self) -> Result<(), StoreError> {
        let stamp = self.engine.get(keys::DEFINITIONS_STAMP)?;
        if stamp != self.definitions_seen && (self.wake_writer)() {
            self.definitions_seen = stamp;
        }
        Ok(())
    }

    fn read_feed(&mut self) -> Result<(), StoreError> {
        let from = keys::feed_entry(UnixMillis(self.newest.0 - OVERLAP_MS), 0, 0);
        let to = [keys::FEED + 1];
        for entry in self
            .engine
            .range(Bound::Included(from.to_vec()), Bound::Excluded(to.to_vec()))
        {
            let (key, value) = entry?;
            let Ok(fixed) = <[u8; 25]>::try_from(key.as_slice()) else {
                continue;
            };
            let Some((at, instance)) = keys::decode_feed_entry(&fixed) else {
                continue;
            };
            if !self.seen.insert(fixed) {
                continue;
            }
            self.newest = self.newest.max(at);
            if instance == self.instance {
                continue;
            }
            self.pending.extend(
                value
                    .chunks_exact(8)
                    .filter_map(|bytes| Some(u64::from_be_bytes(bytes.try_into().ok()?))),
            );
        }
        let horizon = self.newest.0 - OVERLAP_MS;
        self.seen
            .retain(|key| keys::decode_feed_entry(key).is_some_and(|(at, _)| at.0 >= horizon));
        Ok(())
    }

    fn reconcile_pending(&mut self) -> Result<(), StoreError> {
        let mark = self.memberships.mark();
        if self.pending.is_empty() {
            self.memberships.forget_published_up_to(mark);
            return Ok(());
        }
        let now = wall_clock();
        let mut again = BTreeSet::new();
        for &profile in &self.pending {
            let held = read_memberships_in(self.engine.as_ref(), ProfileId(profile))?;
            if !self
                .memberships
                .reconcile(ProfileId(profile), &held, mark, now)
            {
                again.insert(profile);
            }
        }
        self.pending = again;
        self.memberships.forget_published_up_to(mark);
        Ok(())
    }

    fn prune(&self) -> Result<(), StoreError> {
        let before = keys::feed_entry(UnixMillis(wall_clock().0 - RETENTION_MS), 0, 0);
        let mut batch = Batch::default();
        for entry in self.engine.range(
            Bound::Included(vec![keys::FEED]),
            Bound::Excluded(before.to_vec()),
        ) {
            let (key, _) = entry?;
            batch.remove(key);
            if batch.len() >= 1000 {
                self.engine.apply(std::mem::take(&mut batch))?;
            }
        }
        self.engine.apply(batch)?;
        Ok(())
    }
}
