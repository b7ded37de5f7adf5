//! Persistence. Everything above this module speaks the domain interface
//! [`ProfileStore`]; only this module knows sled, keys and record formats.
//!
//! Writes go through one writer thread that applies a group of calls as one
//! atomic batch, makes it durable once (flush, then `fdatasync` of the log
//! file), and only then answers every caller in the group. Reads go straight
//! to the database.

mod apply;
mod backup;
mod consent;
mod counters;
mod custom_traits;
pub mod engine;
mod feed;
mod job;
mod keys;
mod ledger;
mod match_training;
mod matching;
mod membership;
mod merge;
mod messages;
mod overlay;
mod privacy;
mod products;
mod profiles;
mod recheck;
mod records;
pub mod sealing;
mod sled_store;
mod stats;
mod suppression;
mod writer;

use std::path::PathBuf;

use engine::EngineError;

use futures::future::BoxFuture;

use crate::computed::{Activity, RfmQuintiles};
use crate::identity::fuzzy::MatchModel;

use crate::model::{
    AccessEntry, CandidateReview, ConsentCall, ErasureCall, ErasureOutcome, Identifier,
    MatchCandidate, MatchPassOutcome, Membership, MembershipChange, PrivacyRequest, ProfileFacts,
    ProfileId, ProfileView, ReviewOutcome, SegmentDefinition, SegmentNumber, SegmentScope,
    TraitView, UnixMillis, UnmergeCall, UnmergeOutcome, WriteCall, WriteOutcome,
};

pub use backup::{BACKUP_FILE_NAME, BackupReport, RestoreReport};
pub use engine::postgres::PostgresOptions;
pub use ledger::ReplayReport;
pub use membership::{NoSegments, SegmentDraft, SegmentMembers};
pub use products::{ProductUpload, SharedRecommender};
pub use sled_store::{KEY_STORE_FILE, PrivacySource, SealingOptions, SledStore, SledStoreOptions};
pub use stats::{GROUP_SIZE_BOUNDS, StoreStats, WriterCounts};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(EngineError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored {what} cannot be read: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error("a group commit failed; the store accepts no more writes: {0}")]
    CommitFailed(String),
    #[error("the store is closed")]
    Closed,
    /// The write lost a race with another server's writes to the same
    /// database and was not applied; sent again, it may succeed.
    #[error("the write conflicted with other writers and was not applied; send it again ({0})")]
    Conflict(String),
    /// The database cannot take the call now; the same call may succeed
    /// later.
    #[error("{0}")]
    Unavailable(String),
    #[error(
        "another server (or a backup or restore) holds the data directory {}; stop it or choose another --data",
        .0.display()
    )]
    Locked(std::path::PathBuf),
    /// The engine's settings, or the database's layout, do not fit.
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{field}: {description}")]
    Invalid { field: String, description: String },
    #[error("{0}")]
    Precondition(String),
}

impl StoreError {
    /// Stored data that cannot be opened: a damaged data key, or a value
    /// sealed under another key store.
    pub fn is_unreadable(&self) -> bool {
        matches!(self, StoreError::Database(EngineError::Unreadable(_)))
    }
}

impl From<EngineError> for StoreError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Io(io) => StoreError::Io(io),
            EngineError::Locked(dir) => StoreError::Locked(dir),
            EngineError::Unavailable(reason) => StoreError::Unavailable(reason),
            EngineError::Conflict(reason) => StoreError::Conflict(reason),
            EngineError::Config(reason) => StoreError::Config(reason),
            other => StoreError::Database(other),
        }
    }
}

/// What recommendations read of one person.
#[derive(Debug, Clone, PartialEq)]
pub struct Shopper {
    /// The live profile.
    pub profile_id: ProfileId,
    pub history: crate::recommend::ShopperHistory,
    pub activity: Activity,
    pub consents: Vec<crate::model::ConsentView>,
}

/// The outcome of each call of one `apply`, in order. A call fails alone
/// (its writes are discarded) when its own data cannot be read.
pub type ApplyResults = Vec<Result<WriteOutcome, StoreError>>;

/// The domain-level storage interface. Its one implementation is sled's;
/// the integration tests, which drive it through the server, are the suite
/// a second one must pass.
/// The live profile an id names, and its memberships.
pub type LiveMemberships = (ProfileId, Vec<Membership>);

pub trait ProfileStore: Send + Sync + 'static {
    /// Applies the calls in order, each atomically, and resolves once all of
    /// them are durable. Calls from concurrent `apply`s are serialised as if
    /// they had run one after another.
    fn apply(&self, calls: Vec<WriteCall>) -> BoxFuture<'static, Result<ApplyResults, StoreError>>;

    /// Splits identifiers off a profile into a new profile, durably.
    fn unmerge(&self, call: UnmergeCall) -> BoxFuture<'static, Result<UnmergeOutcome, StoreError>>;

    /// Accepts (merges, subject to merge protection) or rejects (never
    /// proposed again) a pending match candidate.
    fn review_match_candidate(
        &self,
        review: CandidateReview,
    ) -> BoxFuture<'static, Result<ReviewOutcome, StoreError>>;

    /// Runs fuzzy matching for these profiles as if their traits had just
    /// changed.
    fn match_profiles(
        &self,
        ids: Vec<ProfileId>,
        at: UnixMillis,
    ) -> BoxFuture<'static, Result<MatchPassOutcome, StoreError>>;

    /// Estimates the match model afresh from the stored data, stores it
    /// and makes it the one matching decides with.
    fn estimate_match_model(
        &self,
        at: UnixMillis,
    ) -> BoxFuture<'static, Result<MatchModel, StoreError>>;

    /// The match model in use.
    fn match_model(&self) -> MatchModel;

    /// How many match candidates are pending.
    fn count_match_candidates(&self) -> Result<u64, StoreError>;

    /// Pending match candidates in key order, after the given pair.
    fn list_match_candidates(
        &self,
        after: Option<(ProfileId, ProfileId)>,
        limit: usize,
    ) -> Result<Vec<MatchCandidate>, StoreError>;

    /// Live profile ids in order, after the given one.
    fn profile_ids_after(
        &self,
        after: Option<ProfileId>,
        limit: usize,
    ) -> Result<Vec<ProfileId>, StoreError>;

    /// Records consent decisions for a profile, durably; returns the live
    /// profile they were recorded on.
    fn update_consent(
        &self,
        call: ConsentCall,
    ) -> BoxFuture<'static, Result<ProfileId, StoreError>>;

    /// Calls `visit` with the facts segment rules read of every live
    /// profile, in profile id order (a full scan, for previews). Blocking.
    fn for_each_profile_facts(
        &self,
        visit: &mut dyn FnMut(&ProfileFacts<'_>),
    ) -> Result<(), StoreError>;

    /// Calls `visit` with the aggregates of every live profile (a full scan,
    /// for population statistics). Blocking.
    fn for_each_activity(&self, visit: &mut dyn FnMut(&Activity)) -> Result<(), StoreError>;

    /// Stores the population quintiles, durably.
    fn save_rfm_quintiles(
        &self,
        quintiles: RfmQuintiles,
    ) -> BoxFuture<'static, Result<(), StoreError>>;

    fn load_rfm_quintiles(&self) -> Result<Option<RfmQuintiles>, StoreError>;

    /// Removes these profiles' events older than `cutoff`; lifetime
    /// aggregates stay. Returns how many were removed.
    fn expire_events(
        &self,
        ids: Vec<ProfileId>,
        cutoff: UnixMillis,
    ) -> BoxFuture<'static, Result<u64, StoreError>>;

    /// The live profile holding this identifier.
    fn find_profile_id(
        &self,
        identifier: &Identifier,
    ) -> BoxFuture<'static, Result<Option<ProfileId>, StoreError>>;

    /// Reads a profile by its id or by the id of a profile merged into it,
    /// with at most `events_max` of its newest events.
    fn read_profile(
        &self,
        id: ProfileId,
        events_max: usize,
    ) -> BoxFuture<'static, Result<Option<ProfileView>, StoreError>>;

    /// Creates or replaces a segment definition, durably. Returns it,
    /// whether it is new, and whether its members must be computed.
    fn put_segment(
        &self,
        draft: SegmentDraft,
    ) -> BoxFuture<'static, Result<(SegmentDefinition, bool, bool), StoreError>>;

    /// Removes a definition; `None` when there was none.
    fn delete_segment(
        &self,
        id: String,
    ) -> BoxFuture<'static, Result<Option<SegmentDefinition>, StoreError>>;

    /// Records that a version's members are computed over every profile;
    /// `None` when the definition changed or went meanwhile.
    fn mark_segment_ready(
        &self,
        id: String,
        version: u64,
    ) -> BoxFuture<'static, Result<Option<SegmentDefinition>, StoreError>>;

    fn segments(&self) -> Result<Vec<SegmentDefinition>, StoreError>;

    /// Re-evaluates the segments in `scope` for these profiles, durably.
    fn evaluate_memberships(
        &self,
        ids: Vec<ProfileId>,
        scope: SegmentScope,
    ) -> BoxFuture<'static, Result<(), StoreError>>;

    /// The live profile an id names (itself, or the profile it was merged
    /// into) and its memberships; `None` when there is no such profile.
    fn memberships_of(
        &self,
        id: ProfileId,
    ) -> BoxFuture<'static, Result<Option<LiveMemberships>, StoreError>>;

    /// A segment's members and holdout members as of now.
    fn segment_members(&self, number: SegmentNumber) -> SegmentMembers;

    /// Members and holdout members of a segment.
    fn segment_counts(&self, number: SegmentNumber) -> (u64, u64);

    /// Every membership change from now on, as groups become durable.
    fn watch_memberships(&self) -> tokio::sync::broadcast::Receiver<MembershipChange>;

    /// Erases a person atomically and records the request; see
    /// `privacy::erase`.
    fn erase_subject(
        &self,
        call: ErasureCall,
    ) -> BoxFuture<'static, Result<ErasureOutcome, StoreError>>;

    /// Stores (or replaces) a privacy request record, durably.
    fn put_privacy_request(
        &self,
        request: PrivacyRequest,
    ) -> BoxFuture<'static, Result<(), StoreError>>;

    fn privacy_request(&self, request_id: &str) -> Result<Option<PrivacyRequest>, StoreError>;

    /// Every privacy request record, by request id.
    fn privacy_requests(&self) -> Result<Vec<PrivacyRequest>, StoreError>;

    /// Appends reads to the access log. Not atomic with other writes;
    /// durable once the call returns. Reads of profiles erased meanwhile
    /// are not logged.
    fn record_access(
        &self,
        entries: Vec<AccessEntry>,
    ) -> BoxFuture<'static, Result<(), StoreError>>;

    /// Access-log entries kept under these profile ids, oldest first.
    fn access_log(&self, ids: &[ProfileId]) -> Result<Vec<AccessEntry>, StoreError>;

    /// Removes access-log entries older than `cutoff` under these ids.
    fn expire_access_log(
        &self,
        ids: Vec<ProfileId>,
        cutoff: UnixMillis,
    ) -> BoxFuture<'static, Result<u64, StoreError>>;

    /// Every stored trait value of a profile, superseded ones included.
    fn trait_history(&self, id: ProfileId) -> Result<Vec<TraitView>, StoreError>;

    /// Writes a consistent copy of the whole store into `dir` (created if
    /// missing; refused if it already holds a backup) while writes go on.
    /// The copy holds every write acknowledged before the call.
    fn backup(&self, dir: PathBuf) -> BoxFuture<'static, Result<BackupReport, StoreError>>;

    /// Counters and sizes for operators.
    fn stats(&self) -> StoreStats;

    /// Why writes fail now (`None` while they succeed): a full disk, a
    /// database that went away. Writes resume by themselves once the cause
    /// is gone; the writer probes meanwhile.
    fn write_health(&self) -> tokio::sync::watch::Receiver<Option<String>>;

    /// A person's product history with what decides how to recommend to
    /// them; `None` when there is no such profile.
    fn shopper(&self, id: ProfileId) -> Result<Option<Shopper>, StoreError>;

    /// Stores a computed trait definition, durably, not ready until
    /// `mark_custom_trait_ready`; returns it and whether it is new.
    fn put_custom_trait(
        &self,
        definition: crate::computed::custom::CustomTraitDefinition,
    ) -> BoxFuture<
        'static,
        Result<(crate::computed::custom::CustomTraitDefinition, bool), StoreError>,
    >;

    fn delete_custom_trait(
        &self,
        name: String,
    ) -> BoxFuture<
        'static,
        Result<Option<crate::computed::custom::CustomTraitDefinition>, StoreError>,
    >;

    /// Records that the version stored at `updated_at` is computed over
    /// every profile.
    fn mark_custom_trait_ready(
        &self,
        name: String,
        updated_at: UnixMillis,
    ) -> BoxFuture<
        'static,
        Result<Option<crate::computed::custom::CustomTraitDefinition>, StoreError>,
    >;

    fn custom_traits(
        &self,
    ) -> Result<Vec<crate::computed::custom::CustomTraitDefinition>, StoreError>;

    /// Recomputes one user-defined computed trait of these profiles from
    /// their stored events, durably (a backfill).
    fn recompute_custom_trait(
        &self,
        ids: Vec<ProfileId>,
        name: String,
    ) -> BoxFuture<'static, Result<(), StoreError>>;

    /// The recommendation model, kept current as groups become durable.
    fn recommender(&self) -> SharedRecommender;

    /// Adds or replaces catalogue entries, durably; returns how many were
    /// (created, updated).
    fn put_products(
        &self,
        uploads: Vec<ProductUpload>,
    ) -> BoxFuture<'static, Result<(u32, u32), StoreError>>;

    /// Stops accepting writes, finishes the queued ones and makes them
    /// durable. Blocking.
    fn close(&self) -> Result<(), StoreError>;
}
