//! The single writer: drains queued commands, applies a group of them as one
//! atomic batch, makes the batch durable, then answers every caller of the
//! group (group commit). A group that changed product histories is answered
//! by the model thread, once it has moved the recommendation counts.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::apply::{Counters, apply_call};
use super::engine::{Durability, Engine};
use super::membership::{MembershipIndex, evaluate_profiles};
use super::overlay::{CallWrites, GroupWrites, SparseKeys};
use super::privacy::Suppressor;
use super::products::{self, SharedRecommender};
use super::stats::WriterStats;
use super::{ApplyResults, StoreError, keys};
use crate::identity::MergeRules;
use crate::model::{MembershipRules, ProfileId, Resolution, SegmentScope, WriteCall};

/// What a job may touch: the pending writes of its own (dropped unless it
/// succeeds), the sequence counters and the identity rules.
pub struct JobContext<'c, 'g, 't> {
    pub writes: &'c mut CallWrites<'g, 't>,
    pub counters: &'c mut Counters,
    pub rules: &'c MergeRules,
    pub segments: &'c dyn MembershipRules,
    pub suppressor: &'c Suppressor,
}

/// Answers a job's caller once its group is durable (`None`) or failed.
pub type Settle = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A write other than identify/track (unmerge, review, matching pass): runs
/// on the writer thread, reports whether its writes should be kept, and
/// hands back how to answer its caller.
pub type Job =
    Box<dyn for<'c, 'g, 't> FnOnce(&mut JobContext<'c, 'g, 't>) -> (bool, Settle) + Send>;

pub enum Command {
    Apply {
        calls: Vec<WriteCall>,
        reply: oneshot::Sender<Result<ApplyResults, StoreError>>,
    },
    Job(Job),
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

    fn refuse(self, error: &StoreError) {
        match self {
            Command::Apply { reply, .. } => {
                let _ = reply.send(Err(StoreError::CommitFailed(error.to_string())));
            }
            // A job never run has nothing to answer with but the failure;
            // dropping it closes its reply channel, which callers see as
            // the store being closed.
            Command::Job(_) | Command::Shutdown => {}
        }
    }
}

/// Wraps a fallible job body into a `Job` answering on `reply`.
pub fn job<T, F>(body: F, reply: oneshot::Sender<Result<T, StoreError>>) -> Job
where
    T: Send + 'static,
    F: for<'c, 'g, 't> FnOnce(&mut JobContext<'c, 'g, 't>) -> Result<T, StoreError>
        + Send
        + 'static,
{
    Box::new(move |context| {
        let result = body(context);
        let succeeded = result.is_ok();
        let settle: Settle = Box::new(move |commit_error| {
            let answer = match commit_error {
                Some(error) => Err(StoreError::CommitFailed(error.to_string())),
                None => result,
            };
            let _ = reply.send(answer);
        });
        (succeeded, settle)
    })
}

pub struct Writer {
    /// Every group is one commit: applied atomically, durable on return.
    pub engine: Arc<dyn Engine>,
    pub counters: Counters,
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
}

/// Answers computed for a group, sent once the group is durable.
enum Pending {
    Apply {
        results: ApplyResults,
        reply: oneshot::Sender<Result<ApplyResults, StoreError>>,
    },
    Job(Settle),
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
                let _ = reply.send(Err(StoreError::CommitFailed(error.to_string())));
            }
            (Pending::Job(settle), commit_error) => settle(commit_error),
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
            let Some(first) = queue.blocking_recv() else {
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
            if let Err(error) = self.commit_group(commands, &mut stopping, to_model.as_ref()) {
                tracing::error!(%error, "group commit failed; refusing further writes");
                // The database state is unknown: answer everyone still
                // queued with an error rather than risk acknowledging
                // writes that are not durable.
                queue.close();
                while let Ok(command) = queue.try_recv() {
                    command.refuse(&error);
                }
                return;
            }
        }
        if let Err(error) = self.make_durable() {
            tracing::error!(%error, "final flush failed");
        }
    }

    fn commit_group(
        &mut self,
        commands: Vec<Command>,
        stopping: &mut bool,
        to_model: Option<&std::sync::mpsc::SyncSender<CountsThenAnswer>>,
    ) -> Result<(), StoreError> {
        let counters_before = self.counters;
        let mut group = GroupWrites::new(self.engine.as_ref(), &mut self.sparse);
        let mut pending = Vec::with_capacity(commands.len());
        let mut calls_in_group = 0u64;
        let mut profiles_merged = 0u64;
        for command in commands {
            calls_in_group += command.call_count() as u64;
            match command {
                Command::Apply { calls, reply } => {
                    let mut results = Vec::with_capacity(calls.len());
                    for call in &calls {
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
                                profiles_merged += absorbed.len() as u64;
                            }
                        }
                        results.push(result);
                    }
                    pending.push(Pending::Apply { results, reply });
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
                    let (succeeded, settle) = job(&mut context);
                    if succeeded {
                        writes.commit();
                        self.counters = counters;
                    }
                    pending.push(Pending::Job(settle));
                }
                Command::Shutdown => *stopping = true,
            }
        }
        reevaluate_changed_profiles(&mut group, self.segments.as_ref());
        let membership_changes = group.take_membership_changes();
        // The histories stand either way; one that cannot be read is a
        // damaged record, and refusing every later write would not mend it.
        let mut model_changes = products::model_changes(&mut group).unwrap_or_else(|error| {
            tracing::error!(%error, "recommendation model not updated for a group");
            Default::default()
        });

        let mut profiles_change = 0;
        let committed = if group.is_empty() {
            Ok(())
        } else {
            group
                .count_change(keys::PROFILE)
                .and_then(|change| {
                    profiles_change = change;
                    self.engine
                        .commit(group.into_batch())
                        .map_err(StoreError::from)
                })
                .map(|durability| self.count_durability(durability))
        };
        match committed {
            Ok(()) => {
                // Before answering: a caller that reads memberships right
                // after its acknowledgement sees them.
                self.memberships.publish(membership_changes);
                model_changes.apply_catalogue(&self.recommender);
                self.stats.live_profiles_changed(profiles_change);
                if calls_in_group > 0 {
                    self.stats.group_committed(calls_in_group, profiles_merged);
                }
                let work = CountsThenAnswer {
                    changes: model_changes,
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
                Ok(())
            }
            Err(error) => {
                self.counters = counters_before;
                for answer in pending {
                    answer.answer(Some(&error));
                }
                Err(error)
            }
        }
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
