//! The profile use cases between the API and the store: validate what callers
//! send against the configured limits, normalize identifiers, stamp
//! provenance and time, and drive the store. Knows neither tonic nor sled.

mod error;
pub mod validate;

use std::sync::Arc;

use crate::computed::{
    ComputedTraits, LifecycleThresholds, RfmCache, RfmQuintiles, RfmSample, compute,
};
use crate::config::Limits;
use crate::identity::fuzzy::MatchModel;
use crate::identity::{MergeRules, Normalizer};
use crate::model::{
    CandidateReview, Clock, ConsentCall, MatchCandidate, MatchPassOutcome, ProfileId, ProfileView,
    ReviewOutcome, TraitView, UnixMillis, UnmergeCall, UnmergeOutcome, WriteCall, WriteOutcome,
};
use crate::store::{ApplyResults, BackupReport, ProfileStore, StoreError, StoreStats};

pub use error::{FieldViolation, ServiceError};
pub use validate::{Json, RawIdentifier};

/// An identify call as received, not yet validated.
#[derive(Debug, Clone, Default)]
pub struct IdentifyInput {
    pub identifiers: Vec<RawIdentifier>,
    pub traits: Json,
    pub message_id: String,
    pub timestamp: Option<UnixMillis>,
    pub source: String,
}

/// A track call as received, not yet validated.
#[derive(Debug, Clone, Default)]
pub struct TrackInput {
    pub identifiers: Vec<RawIdentifier>,
    pub event: String,
    pub properties: Json,
    pub message_id: String,
    pub timestamp: Option<UnixMillis>,
    pub source: String,
}

/// How a caller names the profile it wants.
#[derive(Debug, Clone)]
pub enum ProfileLookup {
    ProfileId(String),
    Identifier(RawIdentifier),
}

/// Consent decisions as received.
#[derive(Debug, Clone)]
pub struct ConsentInput {
    pub lookup: ProfileLookup,
    /// Channel, purpose, granted.
    pub changes: Vec<(String, String, Option<bool>)>,
    pub timestamp: Option<UnixMillis>,
    pub message_id: String,
    pub source: String,
}

/// An operator's unmerge request as received.
#[derive(Debug, Clone)]
pub struct UnmergeInput {
    pub lookup: ProfileLookup,
    pub identifiers: Vec<RawIdentifier>,
    pub message_id: String,
    pub reason: String,
}

const CANDIDATES_PER_PAGE_DEFAULT: usize = 100;
const PROFILES_PER_PAGE_DEFAULT: usize = 100;
const PROFILES_PER_PAGE_MAX: usize = 1000;
const CANDIDATES_PER_PAGE_MAX: usize = 1000;
/// Profiles matched per writer job in a batch pass: small enough that
/// identify and track calls queued meanwhile wait milliseconds, not seconds.
const MATCHING_CHUNK_PROFILES: usize = 256;

/// A candidate is named by its two profile ids, lower first: `p3:p9`.
pub fn candidate_id(first: ProfileId, second: ProfileId) -> String {
    format!("{}:{}", first.min(second), first.max(second))
}

pub fn parse_candidate_id(text: &str, field: &str) -> Result<(ProfileId, ProfileId), ServiceError> {
    let malformed =
        || ServiceError::invalid(field, "a candidate id is two profile ids joined by `:`");
    let (first, second) = text.split_once(':').ok_or_else(malformed)?;
    let first = first.parse::<ProfileId>().map_err(|_| malformed())?;
    let second = second.parse::<ProfileId>().map_err(|_| malformed())?;
    Ok((first, second))
}

/// A profile with its computed traits as of the read.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRead {
    pub profile: ProfileView,
    pub computed: ComputedTraits,
}

/// What one maintenance run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Customers the RFM quintiles were taken from.
    pub customers: u64,
    pub events_removed: u64,
}

/// Profiles per retention job on the writer: small enough that ingest
/// waits milliseconds between jobs.
const RETENTION_CHUNK_PROFILES: usize = 256;
const DAY_MS: i64 = 86_400_000;

pub struct ProfileService {
    store: Arc<dyn ProfileStore>,
    lifecycle: LifecycleThresholds,
    /// 0 keeps events forever.
    event_retention_days: i64,
    /// The latest quintiles, read on every profile read; replaced by each
    /// maintenance run.
    rfm: RfmCache,
    normalizer: Normalizer,
    merge_rules: MergeRules,
    limits: Limits,
    clock: Arc<dyn Clock>,
    /// `Ingest` items by outcome since start, for the metrics endpoint.
    ingest_counts: IngestCounters,
    /// User-defined computed traits, valued on every read.
    custom_traits: Arc<dyn crate::model::CustomTraitRules>,
    /// Where backups may be written (anywhere when `None`).
    backup_root: Option<std::path::PathBuf>,
}

/// `Ingest` items by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestCounts {
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
}

#[derive(Debug, Default)]
struct IngestCounters {
    accepted: std::sync::atomic::AtomicU64,
    duplicate: std::sync::atomic::AtomicU64,
    rejected: std::sync::atomic::AtomicU64,
}

impl ProfileService {
    pub fn new(
        store: Arc<dyn ProfileStore>,
        normalizer: Normalizer,
        merge_rules: MergeRules,
        limits: Limits,
        clock: Arc<dyn Clock>,
    ) -> Self {
        ProfileService {
            store,
            lifecycle: LifecycleThresholds::default(),
            event_retention_days: 0,
            rfm: RfmCache::default(),
            normalizer,
            merge_rules,
            limits,
            clock,
            ingest_counts: IngestCounters::default(),
            custom_traits: Arc::new(crate::model::NoCustomTraits),
            backup_root: None,
        }
    }

    /// Values the user-defined computed traits on every read.
    pub fn with_custom_traits(mut self, custom: Arc<dyn crate::model::CustomTraitRules>) -> Self {
        self.custom_traits = custom;
        self
    }

    /// Adds the outcomes of one `Ingest` stream to the running totals.
    pub fn record_ingest(&self, counts: IngestCounts) {
        use std::sync::atomic::Ordering::Relaxed;
        self.ingest_counts
            .accepted
            .fetch_add(counts.accepted, Relaxed);
        self.ingest_counts
            .duplicate
            .fetch_add(counts.duplicate, Relaxed);
        self.ingest_counts
            .rejected
            .fetch_add(counts.rejected, Relaxed);
    }

    pub fn ingest_counts(&self) -> IngestCounts {
        use std::sync::atomic::Ordering::Relaxed;
        IngestCounts {
            accepted: self.ingest_counts.accepted.load(Relaxed),
            duplicate: self.ingest_counts.duplicate.load(Relaxed),
            rejected: self.ingest_counts.rejected.load(Relaxed),
        }
    }

    pub fn store_stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// Writes a consistent copy of the store into `dir` on the server's
    /// machine. The path must be absolute: the server's working directory
    /// means nothing to the caller.
    /// The match model in use.
    pub fn match_model(&self) -> MatchModel {
        self.store.match_model()
    }

    /// Re-estimates the match model from the stored data now.
    pub async fn estimate_match_model(&self) -> Result<MatchModel, ServiceError> {
        Ok(self.store.estimate_match_model(self.clock.now()).await?)
    }

    pub async fn backup(&self, dir: &str) -> Result<BackupReport, ServiceError> {
        let path = std::path::PathBuf::from(dir);
        if dir.is_empty() || !path.is_absolute() {
            return Err(ServiceError::invalid(
                "directory",
                "must be an absolute path",
            ));
        }
        if let Some(root) = &self.backup_root {
            let escapes = path
                .components()
                .any(|part| matches!(part, std::path::Component::ParentDir));
            if escapes || !path.starts_with(root) || path == *root {
                return Err(ServiceError::invalid(
                    "directory",
                    format!("must be a directory under {}", root.display()),
                ));
            }
        }
        Ok(self.store.backup(path).await?)
    }

    /// Lifecycle thresholds and event retention other than the defaults.
    pub fn with_computed(
        mut self,
        lifecycle: LifecycleThresholds,
        event_retention_days: i64,
    ) -> Self {
        self.lifecycle = lifecycle;
        self.event_retention_days = event_retention_days;
        self
    }

    /// Backups only into directories under `root`, when set.
    pub fn with_backup_root(mut self, root: Option<std::path::PathBuf>) -> Self {
        self.backup_root = root;
        self
    }

    /// Shares a quintiles cache with other readers of computed traits.
    pub fn with_rfm_cache(mut self, cache: RfmCache) -> Self {
        self.rfm = cache;
        self
    }

    /// Picks up the quintiles a previous run stored.
    pub fn load_rfm(&self) -> Result<(), ServiceError> {
        let stored = self.store.load_rfm_quintiles()?;
        if let Ok(mut cached) = self.rfm.write() {
            *cached = stored;
        }
        Ok(())
    }

    /// Refreshes the RFM quintiles over the whole population and applies
    /// event retention.
    pub async fn run_maintenance(&self) -> Result<MaintenanceReport, ServiceError> {
        let now = self.clock.now();
        let store = Arc::clone(&self.store);
        let quintiles = tokio::task::spawn_blocking(move || {
            let mut samples = Vec::new();
            store.for_each_activity(&mut |activity| {
                samples.extend(RfmSample::of(activity));
            })?;
            Ok::<_, StoreError>(RfmQuintiles::from_population(&samples, now))
        })
        .await
        .map_err(|error| ServiceError::Internal(error.to_string()))??;
        let customers = quintiles.customers;
        self.store.save_rfm_quintiles(quintiles.clone()).await?;
        if let Ok(mut cached) = self.rfm.write() {
            *cached = Some(quintiles);
        }

        let mut events_removed = 0;
        if self.event_retention_days > 0 {
            let cutoff = UnixMillis(now.0 - self.event_retention_days * DAY_MS);
            let mut after = None;
            loop {
                let ids = self
                    .store
                    .profile_ids_after(after, RETENTION_CHUNK_PROFILES)?;
                let Some(last) = ids.last().copied() else {
                    break;
                };
                events_removed += self.store.expire_events(ids, cutoff).await?;
                after = Some(last);
            }
        }
        Ok(MaintenanceReport {
            customers,
            events_removed,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn identify_call(&self, input: IdentifyInput) -> Result<WriteCall, ServiceError> {
        let call = validate::identify(&self.normalizer, &self.limits, self.clock.now(), input)?;
        self.without_junk(call)
    }

    pub fn track_call(&self, input: TrackInput) -> Result<WriteCall, ServiceError> {
        let call = validate::track(&self.normalizer, &self.limits, self.clock.now(), input)?;
        self.without_junk(call)
    }

    /// Junk identifiers are never used for matching; a call with nothing
    /// else cannot be attributed to anyone.
    fn without_junk(&self, mut call: WriteCall) -> Result<WriteCall, ServiceError> {
        let (junk, usable): (Vec<_>, Vec<_>) = std::mem::take(&mut call.identifiers)
            .into_iter()
            .partition(|identifier| self.merge_rules.is_junk(identifier));
        if usable.is_empty() {
            return Err(ServiceError::invalid(
                "identifiers",
                "every identifier is on the junk blocklist; nothing identifies a person",
            ));
        }
        call.identifiers = usable;
        call.junk_ignored = junk;
        Ok(call)
    }

    /// Records consent decisions; returns the profile they were recorded on.
    pub async fn update_consent(&self, input: ConsentInput) -> Result<ProfileId, ServiceError> {
        let changes = validate::consent_changes(&input.changes)?;
        let profile_id = self.profile_id(input.lookup).await?;
        let now = self.clock.now();
        let provenance = validate::provenance(&self.limits, now, input.message_id, input.source)?;
        let call = ConsentCall {
            profile_id,
            changes,
            at: validate::event_time(&self.limits, now, input.timestamp)?,
            provenance,
        };
        Ok(self.store.update_consent(call).await?)
    }

    /// Splits identifiers off a profile into a new one, with the events and
    /// trait values that came with them.
    pub async fn unmerge(&self, input: UnmergeInput) -> Result<UnmergeOutcome, ServiceError> {
        let profile_id = self.profile_id(input.lookup).await?;
        let identifiers =
            validate::identifiers(&self.normalizer, &self.limits, &input.identifiers)?;
        let provenance = validate::provenance(
            &self.limits,
            self.clock.now(),
            input.message_id,
            "unmerge".to_owned(),
        )?;
        if input.reason.len() > self.limits.source_bytes_max * 4 {
            return Err(ServiceError::invalid("reason", "too long"));
        }
        let call = UnmergeCall {
            profile_id,
            identifiers,
            provenance,
            reason: input.reason,
        };
        Ok(self.store.unmerge(call).await?)
    }

    /// One page of pending match candidates and the token of the next.
    /// Live profile ids in order, a page at a time; the token is the last
    /// id of the previous page.
    pub fn list_profiles(
        &self,
        page_size: usize,
        page_token: &str,
    ) -> Result<(Vec<ProfileId>, String), ServiceError> {
        let limit = match page_size {
            0 => PROFILES_PER_PAGE_DEFAULT,
            asked => asked.min(PROFILES_PER_PAGE_MAX),
        };
        let after = match page_token {
            "" => None,
            token => Some(token.parse::<ProfileId>().map_err(|_| {
                ServiceError::invalid("page_token", "not a token this server gave out")
            })?),
        };
        let ids = self.store.profile_ids_after(after, limit)?;
        let next = match ids.last() {
            Some(last) if ids.len() == limit => last.to_string(),
            _ => String::new(),
        };
        Ok((ids, next))
    }

    /// Live profiles now.
    pub fn count_profiles(&self) -> u64 {
        self.store.stats().writer.live_profiles
    }

    pub fn list_match_candidates(
        &self,
        page_size: usize,
        page_token: &str,
    ) -> Result<(Vec<MatchCandidate>, String), ServiceError> {
        let limit = match page_size {
            0 => CANDIDATES_PER_PAGE_DEFAULT,
            asked => asked.min(CANDIDATES_PER_PAGE_MAX),
        };
        let after = match page_token {
            "" => None,
            token => Some(parse_candidate_id(token, "page_token")?),
        };
        let candidates = self.store.list_match_candidates(after, limit)?;
        let next = match candidates.last() {
            Some(last) if candidates.len() == limit => candidate_id(last.first, last.second),
            _ => String::new(),
        };
        Ok((candidates, next))
    }

    pub async fn review_match_candidate(
        &self,
        candidate: &str,
        accept: bool,
        message_id: String,
        reviewer: String,
    ) -> Result<ReviewOutcome, ServiceError> {
        let (first, second) = parse_candidate_id(candidate, "candidate_id")?;
        let provenance =
            validate::provenance(&self.limits, self.clock.now(), message_id, reviewer)?;
        let review = CandidateReview {
            first,
            second,
            accept,
            provenance,
        };
        Ok(self.store.review_match_candidate(review).await?)
    }

    /// Matches every stored profile, a chunk at a time so that ingest keeps
    /// flowing between chunks.
    /// Re-estimates the match model, then matches every live profile with
    /// it; reports the candidates pending at the end.
    pub async fn run_matching(&self) -> Result<MatchPassOutcome, ServiceError> {
        let model = self.store.estimate_match_model(self.clock.now()).await?;
        let mut total = MatchPassOutcome {
            model_version: model.version,
            ..MatchPassOutcome::default()
        };
        let mut after = None;
        loop {
            let ids = self
                .store
                .profile_ids_after(after, MATCHING_CHUNK_PROFILES)?;
            let Some(last) = ids.last().copied() else {
                total.candidates = self.store.count_match_candidates()?;
                return Ok(total);
            };
            let outcome = self.store.match_profiles(ids, self.clock.now()).await?;
            total.profiles_checked += outcome.profiles_checked;
            total.merges += outcome.merges;
            after = Some(last);
        }
    }

    /// Validates and normalizes one identifier of a request.
    pub fn normalize_identifier(
        &self,
        field: &str,
        raw: &RawIdentifier,
    ) -> Result<crate::model::Identifier, ServiceError> {
        validate::identifier(&self.normalizer, field, raw)
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The profile id a lookup names; by identifier, the live profile
    /// holding it.
    pub async fn profile_id(&self, lookup: ProfileLookup) -> Result<ProfileId, ServiceError> {
        match lookup {
            ProfileLookup::ProfileId(text) => text
                .parse::<ProfileId>()
                .map_err(|error| ServiceError::invalid("profile_id", error.to_string())),
            ProfileLookup::Identifier(raw) => {
                let identifier = validate::identifier(&self.normalizer, "identifier", &raw)?;
                self.store
                    .find_profile_id(&identifier)
                    .await?
                    .ok_or_else(|| {
                        ServiceError::NotFound("no profile holds this identifier".to_owned())
                    })
            }
        }
    }

    /// Applies one validated call and returns once it is durable.
    pub async fn write(&self, call: WriteCall) -> Result<WriteOutcome, ServiceError> {
        let mut results = self.store.apply(vec![call]).await?;
        match results.pop() {
            Some(result) => Ok(result?),
            None => Err(ServiceError::Internal(
                "the store answered no result for one call".to_owned(),
            )),
        }
    }

    /// Applies validated calls in order, each on its own, and returns once
    /// all are durable.
    pub async fn write_many(&self, calls: Vec<WriteCall>) -> Result<ApplyResults, ServiceError> {
        Ok(self.store.apply(calls).await?)
    }

    pub async fn get_profile(
        &self,
        lookup: ProfileLookup,
        events_limit: usize,
    ) -> Result<ProfileRead, ServiceError> {
        let events_max = match events_limit {
            0 => self.limits.events_per_read_default,
            asked => asked.min(self.limits.events_per_read_max),
        };
        let profile_id = self.profile_id(lookup).await?;
        self.read(profile_id, events_max).await
    }

    /// A profile's live traits, without reading its events.
    pub async fn traits(&self, profile_id: ProfileId) -> Result<Vec<TraitView>, ServiceError> {
        Ok(self.read(profile_id, 0).await?.profile.traits)
    }

    /// A profile with every one of its events, for a subject-access export.
    pub async fn get_complete_profile(
        &self,
        profile_id: ProfileId,
    ) -> Result<ProfileRead, ServiceError> {
        self.read(profile_id, usize::MAX).await
    }

    /// Computed traits of these aggregates as of now.
    pub fn computed_traits(&self, activity: &crate::computed::Activity) -> ComputedTraits {
        compute(activity, self.clock.now(), &self.lifecycle)
    }

    /// Recomputes one user-defined trait of every live profile from its
    /// stored events, a chunk of profiles per writer job.
    pub async fn backfill_custom_trait(&self, name: &str) -> Result<u64, ServiceError> {
        let mut after = None;
        let mut profiles = 0u64;
        loop {
            let ids = self
                .store
                .profile_ids_after(after, RETENTION_CHUNK_PROFILES)?;
            let Some(&last) = ids.last() else {
                return Ok(profiles);
            };
            profiles += ids.len() as u64;
            after = Some(last);
            self.store
                .recompute_custom_trait(ids, name.to_owned())
                .await?;
        }
    }

    async fn read(
        &self,
        profile_id: ProfileId,
        events_max: usize,
    ) -> Result<ProfileRead, ServiceError> {
        let profile = self
            .store
            .read_profile(profile_id, events_max)
            .await?
            .ok_or_else(|| {
                ServiceError::NotFound(format!("profile {profile_id} does not exist"))
            })?;
        let now = self.clock.now();
        let mut computed = compute(&profile.activity, now, &self.lifecycle);
        computed.custom = self.custom_traits.values(&profile.activity, now);
        if let Ok(rfm) = self.rfm.read() {
            computed.rfm_scores = rfm
                .as_ref()
                .and_then(|quintiles| quintiles.scores(&profile.activity));
        }
        Ok(ProfileRead { profile, computed })
    }
}
