//! Writes other than identify/track that run on the writer thread, and what
//! they may touch.

use super::StoreError;
use super::counters::Counters;
use super::overlay::CallWrites;
use super::suppression::Suppressor;
use crate::identity::MergeRules;
use crate::model::MembershipRules;

/// What a job may touch: the pending writes of its own (dropped unless it
/// succeeds), the sequence counters and the identity rules.
pub struct JobContext<'c, 'g, 't> {
    pub writes: &'c mut CallWrites<'g, 't>,
    pub counters: &'c mut Counters,
    pub rules: &'c MergeRules,
    pub segments: &'c dyn MembershipRules,
    pub suppressor: &'c Suppressor,
}

/// A write other than identify/track (unmerge, review, matching pass),
/// run on the writer thread. A group that lost a race with another server
/// is run again from the start, so `run` may be called more than once;
/// only the last run's writes are committed. `settle` answers the caller
/// once the group is durable (`None`) or has failed.
pub trait Job: Send {
    /// Whether the writes of this run should be kept.
    fn run(&mut self, context: &mut JobContext<'_, '_, '_>) -> bool;

    fn settle(self: Box<Self>, commit_error: Option<&StoreError>);
}
