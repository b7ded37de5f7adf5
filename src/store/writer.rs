//! The single writer: drains queued commands, applies a group of them as one
//! atomic batch, makes the batch durable, then answers every caller of the
//! group (group commit). A group that changed product histories is answered
//! by the model thread, once it has moved the recommendation counts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::apply::{apply_call, read_ahead};
use super::counters::Counters;
use super::custom_traits;
use super::engine::{Durability, Engine, Transaction, prefix_bounds};
use super::feed::{FeedWriter, stamp_if_definitions_changed};
use super::job::{Job, JobContext};
use super::membership::{self, MembershipIndex, evaluate_profiles};
use super::overlay::{GroupWrites, SparseKeys};
use super::products::{self, SharedRecommender};
use super::stats::WriterStats;
use super::suppression::Suppressor;
use super::{ApplyResults, StoreError, keys};
use crate::identity::MergeRules;
use crate::model::{MembershipRules, ProfileId, Resolution, SegmentScope, WriteCall};

pub enum Command {
    Apply {
        calls: Vec<WriteCall>,
        reply: oneshot::Sender<Result<ApplyResults, StoreError>>,
    },
    Job(Box<dyn Job>),
    /// Finish what is queued ahead, then stop.
    Shutdown,
}

impl Command {
    fn call_count(&self) -> usize {
        match self {
            Command::Apply { calls, .. } => calls.len(),
            Command::Job(_) => 1,
            Command::Shutdown => 0,
        }
    }

    /// Answers the command's caller with the failure of its group.
    fn refuse(self, error: &StoreError) {
        match self {
            Command::Apply { reply, .. } => {
                let _ = reply.send(Err(not_committed(error)));
            }
            Command::Job(job) => job.settle(Some(error)),
            Command::Shutdown => {}
        }
    }
}

/// What a caller of a failed group is told: the write was not
/// acknowledged, and the server may take it later.
pub fn not_committed(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(reason) => StoreError::Unavailable(reason.clone()),
        StoreError::Conflict(reason) => StoreError::Conflict(reason.clone()),
        other => StoreError::Unavailable(format!(
            "the write could not be made durable and was not acknowledged: {other}"
        )),
    }
}

/// A job whose body may run several times, answering on `reply` with the
/// last run's result.
struct ReplyingJob<T, F> {
    body: F,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for ReplyingJob<T, F>
where
    T: Send + 'static,
    F: for<'c, 'g, 't> FnMut(&mut JobContext<'c, 'g, 't>) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, context: &mut JobContext<'_, '_, '_>) -> bool {
        let result = (self.body)(context);
        let succeeded = result.is_ok();
        self.result = Some(result);
        succeeded
    }

    fn settle(self: Box<Self>, commit_error: Option<&StoreError>) {
        let answer = match (commit_error, self.result) {
            (Some(error), _) => Err(not_committed(error)),
            (None, Some(result)) => result,
            (None, None) => Err(StoreError::Closed),
        };
        let _ = self.reply.send(answer);
    }
}

/// Wraps a fallible job body into a `Job` answering on `reply`.
pub fn job<T, F>(body: F, reply: oneshot::Sender<Result<T, StoreError>>) -> Box<dyn Job>
where
    T: Send + 'static,
    F: for<'c, 'g, 't> FnMut(&mut JobContext<'c, 'g, 't>) -> Result<T, StoreError> + Send + 'static,
{
    Box::new(ReplyingJob {
        body,
        result: None,
        reply,
    })
}

pub struct Writer {
    /// Every group is one commit: applied atomically, durable on return.
    pub engine: Arc<dyn Engine>,
    pub counters: Counters,
    /// Set after a failed commit: the counters are read again from the
    /// database before the next group uses them.
    pub counters_stale: bool,
    pub group_calls_max: usize,
    pub rules: MergeRules,
    /// Keys of the hub and rejection tables, asked for on every call.
    pub sparse: SparseKeys,
    pub segments: Arc<dyn MembershipRules>,
    pub memberships: Arc<MembershipIndex>,
    pub recommender: SharedRecommender,
    /// Off: no product histories, catalogue or counts are kept.
    pub recommendations: bool,
    pub suppressor: Suppressor,
    pub stats: Arc<WriterStats>,
    /// On a shared database: the entries telling other servers of this
    /// one's membership changes, and the definitions stamp in force
    /// (`store::feed`).
    pub feed: Option<FeedWriter>,
    pub definitions_stamp: Option<Vec<u8>>,
}

/// Answers computed for a group, sent once the group is durable.
enum Pending {
    Apply {
        results: ApplyResults,
        reply: oneshot::Sender<Result<ApplyResults, StoreError>>,
    },
    Job(Box<dyn Job>),
}

impl Pending {
    /// `None` when the group is durable. A caller that gave up waiting
    /// still had its write applied; nothing to undo.
    fn answer(self, commit_error: Option<&StoreError>) {
        match (self, commit_error) {
            (Pending::Apply { results, reply }, None) => {
                let _ = reply.send(Ok(results));
            }
            (Pending::Apply { reply, .. }, Some(error)) => {
                let _ = reply.send(Err(not_committed(error)));
            }
            (Pending::Job(job), commit_error) => job.settle(commit_error),
        }
    }
}

/// Moves the counts by a durable group's histories, then answers its
/// callers: once acknowledged, a write shows in recommendations.
struct CountsThenAnswer {
    changes: products::ModelChanges,
    pending: Vec<Pending>,
}

impl CountsThenAnswer {
    fn finish(self, recommender: &SharedRecommender) {
        self.changes.apply_counts(recommender);
        self.pending
            .into_iter()
            .for_each(|answer| answer.answer(None));
    }
}

/// Groups whose counts wait for the model thread; a full queue holds the
/// writer back.
const MODEL_QUEUE_DEPTH: usize = 16;

/// While writes fail: how often the engine is probed, and how often the
/// queue is looked at meanwhile.
const PROBE_INTERVAL_FIRST: Duration = Duration::from_millis(250);
const PROBE_INTERVAL_MAX: Duration = Duration::from_secs(15);
const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Runs of one group before its conflicts with other servers' writes are
/// reported to its callers.
const GROUP_ATTEMPTS_MAX: u32 = 10;
const GROUP_RETRY_BACKOFF_FIRST: Duration = Duration::from_millis(2);
const GROUP_RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// What one successful run of a group computed, for after its commit.
#[derive(Default)]
struct GroupDone {
    calls: u64,
    profiles_merged: u64,
    /// Per `Apply` command, in order.
    results: Vec<ApplyResults>,
    membership_changes: Vec<crate::model::MembershipChange>,
    model_changes: products::ModelChanges,
    profiles_change: i64,
}

impl Writer {
    /// Moving the recommendation counts runs on a thread of its own, so
    /// that the writer goes on with the next group meanwhile.
    pub fn run(self, queue: mpsc::Receiver<Command>) {
        let recommender = self.recommender.clone();
        std::thread::scope(|scope| {
            let (to_model, from_writer) =
                std::sync::mpsc::sync_channel::<CountsThenAnswer>(MODEL_QUEUE_DEPTH);
            let model_thread = std::thread::Builder::new()
                .name("sightline-model".to_owned())
                .spawn_scoped(scope, move || {
                    for work in from_writer {
                        work.finish(&recommender);
                    }
                });
            let to_model = match model_thread {
                Ok(_) => Some(to_model),
                Err(error) => {
                    tracing::warn!(%error, "no model thread; the writer moves the counts itself");
                    None
                }
            };
            self.run_groups(queue, to_model);
        });
    }

    fn run_groups(
        mut self,
        mut queue: mpsc::Receiver<Command>,
        to_model: Option<std::sync::mpsc::SyncSender<CountsThenAnswer>>,
    ) {
        let mut stopping = false;
        while !stopping {
            let Some(first) = self.next_command(&mut queue) else {
                break;
            };
            let mut calls_in_group = first.call_count();
            let mut commands = vec![first];
            while calls_in_group < self.group_calls_max
                && !matches!(commands.last(), Some(Command::Shutdown))
            {
                match queue.try_recv() {
                    Ok(command) => {
                        calls_in_group += command.call_count();
                        commands.push(command);
                    }
                    Err(_) => break,
                }
            }
            if self
                .commit_group(commands, &mut stopping, to_model.as_ref())
                .is_ok()
            {
                self.stats.writes_resumed();
            }
        }
        if let Err(error) = self.release_blocks() {
            tracing::warn!(%error, "reserved ids not handed back at the stop");
        }
        if let Err(error) = self.make_durable() {
            tracing::error!(%error, "final flush failed");
        }
    }

    /// The next command; while writes fail, the writer probes the engine
    /// between commands, so that health turns back by itself once the
    /// cause (a full disk, a database away) is gone.
    fn next_command(&mut self, queue: &mut mpsc::Receiver<Command>) -> Option<Command> {
        if !self.stats.writes_are_failing() {
            return queue.blocking_recv();
        }
        let mut last_probe = std::time::Instant::now();
        let mut interval = PROBE_INTERVAL_FIRST;
        loop {
            match queue.try_recv() {
                Ok(command) => return Some(command),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if last_probe.elapsed() >= interval {
                // A probe may reopen the database (sled, after an I/O
                // error), which takes longer the larger it is: probes
                // space out while the cause lasts.
                interval = (interval * 2).min(PROBE_INTERVAL_MAX);
                match self.probe() {
                    Ok(()) => {
                        tracing::info!("writes succeed again");
                        self.stats.writes_resumed();
                        return queue.blocking_recv();
                    }
                    Err(error) => self.group_failed(&error),
                }
                last_probe = std::time::Instant::now();
            }
            std::thread::sleep(IDLE_POLL_INTERVAL);
        }
    }

    /// A durable write of one small record, to see whether writes succeed.
    fn probe(&mut self) -> Result<(), StoreError> {
        let engine = Arc::clone(&self.engine);
        let transaction = engine.begin()?;
        let mut batch = super::engine::Batch::default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        batch.insert(keys::WRITE_PROBE, now.to_be_bytes());
        let durability = transaction.commit(batch)?;
        self.count_durability(durability);
        Ok(())
    }

    /// The group's callers were told; the writer goes on. What it holds in
    /// memory of the database may no longer match it (a batch applied but
    /// not made durable, a commit whose outcome is unknown), so counters
    /// are read again before the next group.
    fn group_failed(&mut self, error: &StoreError) {
        if !self.stats.writes_are_failing() {
            tracing::error!(%error, "a group commit failed; writes are refused until one succeeds");
        }
        self.stats.writes_failing(error.to_string());
        self.counters_stale = true;
    }

    /// Runs the group in one transaction and commits it; a group that lost
    /// a race with another writer of the database is run again, whole, a
    /// bounded number of times.
    fn commit_group(
        &mut self,
        mut commands: Vec<Command>,
        stopping: &mut bool,
        to_model: Option<&std::sync::mpsc::SyncSender<CountsThenAnswer>>,
    ) -> Result<(), StoreError> {
        let mut backoff = GROUP_RETRY_BACKOFF_FIRST;
        let mut attempt = 1;
        loop {
            let counters_before = self.counters;
            match self.run_group(&mut commands, stopping) {
                Ok(done) => {
                    self.counters_stale = false;
                    self.finish_group(done, commands, to_model);
                    return Ok(());
                }
                Err(StoreError::Conflict(_)) if attempt < GROUP_ATTEMPTS_MAX => {
                    self.counters = counters_before;
                    self.stats.group_retried();
                    std::thread::sleep(backoff.mul_f64(rand::random_range(0.5..1.5)));
                    backoff = (backoff * 2).min(GROUP_RETRY_BACKOFF_MAX);
                    attempt += 1;
                }
                Err(error) => {
                    self.counters = counters_before;
                    // A stop asked for stops even when the group failed.
                    if commands
                        .iter()
                        .any(|command| matches!(command, Command::Shutdown))
                    {
                        *stopping = true;
                    }
                    // Before the answers: a caller told of the failure finds
                    // health saying so.
                    self.group_failed(&error);
                    for command in commands {
                        command.refuse(&error);
                    }
                    return Err(error);
                }
            }
        }
    }

    /// One run of the group: every command against one transaction, then
    /// its commit.
    fn run_group(
        &mut self,
        commands: &mut [Command],
        stopping: &mut bool,
    ) -> Result<GroupDone, StoreError> {
        let engine = Arc::clone(&self.engine);
        let transaction = engine.begin()?;
        if self.counters_stale {
            self.counters = Counters::load(transaction.as_ref(), engine.shared())?;
        }
        if transaction.reads_ahead() {
            let calls: Vec<&WriteCall> = commands
                .iter()
                .filter_map(|command| match command {
                    Command::Apply { calls, .. } => Some(calls.iter()),
                    _ => None,
                })
                .flatten()
                .collect();
            let catalogue = self.recommendations.then(|| {
                self.recommender
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
            });
            read_ahead(
                transaction.as_ref(),
                &self.suppressor,
                catalogue.as_deref(),
                &calls,
            )?;
        }
        if self.feed.is_some() {
            self.follow_definitions(transaction.as_ref())?;
        }
        let mut group = GroupWrites::new(
            transaction.as_ref(),
            engine.as_ref(),
            &mut self.sparse,
            &self.suppressor,
        );
        let mut done = GroupDone::default();
        for command in commands.iter_mut() {
            done.calls += command.call_count() as u64;
            match command {
                Command::Apply { calls, .. } => {
                    let mut results = Vec::with_capacity(calls.len());
                    for call in calls.iter() {
                        let mut writes = group.call();
                        let mut counters = self.counters;
                        let catalogue = self.recommendations.then(|| {
                            self.recommender
                                .read()
                                .unwrap_or_else(|poisoned| poisoned.into_inner())
                        });
                        let result = apply_call(
                            &mut writes,
                            &mut counters,
                            &self.rules,
                            &self.suppressor,
                            self.segments.custom_traits(),
                            catalogue.as_deref(),
                            call,
                        );
                        drop(catalogue);
                        if let Ok(outcome) = &result {
                            writes.commit();
                            self.counters = counters;
                            if let Resolution::Merged { absorbed } = &outcome.resolution {
                                done.profiles_merged += absorbed.len() as u64;
                            }
                        }
                        results.push(result);
                    }
                    done.results.push(results);
                }
                Command::Job(job) => {
                    let mut writes = group.call();
                    let mut counters = self.counters;
                    let mut context = JobContext {
                        writes: &mut writes,
                        counters: &mut counters,
                        rules: &self.rules,
                        segments: self.segments.as_ref(),
                        suppressor: &self.suppressor,
                    };
                    if job.run(&mut context) {
                        writes.commit();
                        self.counters = counters;
                    }
                }
                Command::Shutdown => *stopping = true,
            }
        }
        reevaluate_changed_profiles(&mut group, self.segments.as_ref());
        done.membership_changes = group.take_membership_changes();
        if let Some(feed) = &mut self.feed {
            feed.note(&mut group, &done.membership_changes);
        }
        stamp_if_definitions_changed(&mut group);
        // The histories stand either way; one that cannot be read is a
        // damaged record, and refusing every later write would not mend it.
        done.model_changes = products::model_changes(&mut group).unwrap_or_else(|error| {
            tracing::error!(%error, "recommendation model not updated for a group");
            Default::default()
        });
        if group.is_empty() {
            // Nothing to write; the transaction rolls back when dropped.
            return Ok(done);
        }
        done.profiles_change = group.count_change(keys::PROFILE)?;
        let batch = group.into_batch();
        let durability = transaction.commit(batch)?;
        self.count_durability(durability);
        Ok(done)
    }

    /// After the commit: memberships and counts move, callers are answered.
    fn finish_group(
        &mut self,
        mut done: GroupDone,
        commands: Vec<Command>,
        to_model: Option<&std::sync::mpsc::SyncSender<CountsThenAnswer>>,
    ) {
        // Before answering: a caller that reads memberships right after its
        // acknowledgement sees them.
        self.memberships.publish(done.membership_changes);
        done.model_changes.apply_catalogue(&self.recommender);
        self.stats.live_profiles_changed(done.profiles_change);
        if done.calls > 0 {
            self.stats.group_committed(done.calls, done.profiles_merged);
        }
        let mut results = done.results.into_iter();
        let pending = commands
            .into_iter()
            .filter_map(|command| match command {
                Command::Apply { reply, .. } => Some(Pending::Apply {
                    results: results.next().unwrap_or_default(),
                    reply,
                }),
                Command::Job(job) => Some(Pending::Job(job)),
                Command::Shutdown => None,
            })
            .collect();
        let work = CountsThenAnswer {
            changes: done.model_changes,
            pending,
        };
        if !work.changes.moves_counts() {
            work.pending
                .into_iter()
                .for_each(|answer| answer.answer(None));
        } else if let Some(to_model) = to_model {
            if let Err(std::sync::mpsc::SendError(work)) = to_model.send(work) {
                work.finish(&self.recommender);
            }
        } else {
            work.finish(&self.recommender);
        }
    }

    /// Loads the definitions again when another server changed them: the
    /// stamp is read in the group's own transaction (see `store::feed`).
    fn follow_definitions(&mut self, reads: &dyn Transaction) -> Result<(), StoreError> {
        let stamp = reads.get(keys::DEFINITIONS_STAMP)?;
        if stamp == self.definitions_stamp {
            return Ok(());
        }
        let (from, to) = prefix_bounds(&[keys::SEGMENT]);
        let segments = membership::definitions_from(reads.range(from, to))?;
        let (from, to) = prefix_bounds(&[keys::CUSTOM_TRAIT]);
        let custom = custom_traits::all_from(reads.range(from, to))?;
        self.segments.replace_definitions(segments, custom);
        self.definitions_stamp = stamp;
        Ok(())
    }

    fn release_blocks(&mut self) -> Result<(), StoreError> {
        if !self.engine.shared() {
            return Ok(());
        }
        let engine = Arc::clone(&self.engine);
        let transaction = engine.begin()?;
        let mut group = GroupWrites::new(
            transaction.as_ref(),
            engine.as_ref(),
            &mut self.sparse,
            &self.suppressor,
        );
        let mut writes = group.call();
        self.counters.release_unused(&mut writes)?;
        writes.commit();
        let batch = group.into_batch();
        transaction.commit(batch)?;
        Ok(())
    }

    fn make_durable(&mut self) -> Result<(), StoreError> {
        let durability = self.engine.sync()?;
        self.count_durability(durability);
        Ok(())
    }

    fn count_durability(&self, durability: Durability) {
        if durability.extra_files_synced > 0 {
            self.stats.blob_files_synced(durability.extra_files_synced);
        }
    }
}

/// Every profile whose record the group changed (created, updated, merged
/// away, split) is evaluated once against every segment, in the same batch.
fn reevaluate_changed_profiles(group: &mut GroupWrites<'_>, segments: &dyn MembershipRules) {
    if segments.segments_in(SegmentScope::All).is_empty() {
        return;
    }
    let changed: Vec<ProfileId> = group
        .changed_keys(&[keys::PROFILE])
        .iter()
        .filter_map(|key| keys::decode_u64(key.get(1..)?))
        .map(ProfileId)
        .collect();
    if changed.is_empty() {
        return;
    }
    let mut writes = group.call();
    match evaluate_profiles(&mut writes, segments, &changed, SegmentScope::All) {
        Ok(()) => writes.commit(),
        // The profile changes stand; memberships catch up at the next
        // change or sweep.
        Err(error) => tracing::error!(%error, "segment evaluation failed for a group"),
    }
}
