//! Segments (design 4): definitions with CEL rules, memberships kept up to
//! date by the store's writer, backfills when a rule changes, sweeps for
//! rules that depend on time, and the reads (members, checks, watches).
//! Knows neither tonic nor sled.

mod computed_traits;
pub mod custom;
mod evaluate;
mod holdout;
mod registry;
pub mod rule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::config::SegmentsConfig;
use crate::model::{
    Clock, MembershipChange, ProfileId, SegmentDefinition, SegmentNumber, SegmentScope,
};
use crate::service::{ProfileLookup, ProfileService, ServiceError};
use crate::store::{ProfileStore, SegmentDraft, StoreError};

pub use computed_traits::ComputedTraitInput;
pub use registry::{CompiledSegment, SegmentRegistry};
pub use rule::{Rule, RuleError};

/// Profiles evaluated per writer job by backfills and sweeps: small enough
/// that identify and track calls queued meanwhile wait milliseconds.
const EVALUATION_CHUNK_PROFILES: usize = 1024;
const SEGMENT_ID_CHARS_MAX: usize = 64;
const NAME_CHARS_MAX: usize = 200;
const DESCRIPTION_CHARS_MAX: usize = 2000;

/// A segment definition as received.
#[derive(Debug, Clone, Default)]
pub struct SegmentInput {
    pub id: String,
    pub name: String,
    pub description: String,
    pub rule: String,
    pub holdout_percent: f64,
}

/// A definition with its current counts.
#[derive(Debug, Clone)]
pub struct SegmentSummary {
    pub definition: SegmentDefinition,
    pub member_count: u64,
    pub holdout_count: u64,
}

/// A member of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub profile: ProfileId,
    pub holdout: bool,
}

/// A profile's memberships, by segment id.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipCheck {
    pub profile: ProfileId,
    /// Segment id and whether in holdout, ordered by segment id.
    pub memberships: Vec<(String, bool)>,
}

/// A membership change with the segment named by id.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedChange {
    pub segment_id: String,
    pub change: MembershipChange,
}

/// Matching profile ids a preview answers, by default and at most.
const PREVIEW_PAGE_DEFAULT: usize = 100;
const PREVIEW_PAGE_MAX: usize = 1000;

pub struct SegmentService {
    store: Arc<dyn ProfileStore>,
    registry: Arc<SegmentRegistry>,
    profiles: Arc<ProfileService>,
    config: SegmentsConfig,
    clock: Arc<dyn Clock>,
    /// The running backfill per segment number; a newer definition aborts
    /// the older one.
    backfills: Mutex<HashMap<SegmentNumber, JoinHandle<()>>>,
    /// Turned true when the server stops: watches never end by themselves
    /// and would otherwise hold up a graceful stop.
    closing: tokio::sync::watch::Sender<bool>,
}

impl SegmentService {
    pub fn new(
        store: Arc<dyn ProfileStore>,
        registry: Arc<SegmentRegistry>,
        profiles: Arc<ProfileService>,
        config: SegmentsConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        SegmentService {
            store,
            registry,
            profiles,
            config,
            clock,
            backfills: Mutex::new(HashMap::new()),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Ends every open watch with UNAVAILABLE, as the server stops.
    pub fn close_watches(&self) {
        self.closing.send_replace(true);
    }

    /// Installs the stored definitions and resumes backfills that did not
    /// finish. A stored rule that no longer compiles is skipped and logged.
    pub fn load(self: &Arc<Self>) -> Result<(), ServiceError> {
        for definition in self.store.segments()? {
            match Rule::compile(&definition.rule) {
                Ok(rule) => {
                    let ready = definition.is_ready();
                    let (number, version, id) =
                        (definition.number, definition.version, definition.id.clone());
                    self.registry.install(CompiledSegment { definition, rule });
                    if !ready {
                        self.start_backfill(id, number, version);
                    }
                }
                Err(error) => tracing::error!(
                    segment = %definition.id,
                    %error,
                    "a stored segment rule does not compile; the segment is inactive"
                ),
            }
        }
        Ok(())
    }

    pub async fn put(
        self: &Arc<Self>,
        input: SegmentInput,
    ) -> Result<(SegmentSummary, bool), ServiceError> {
        validate_id(&input.id, "segment.id")?;
        check_length(&input.name, NAME_CHARS_MAX, "segment.name")?;
        check_length(
            &input.description,
            DESCRIPTION_CHARS_MAX,
            "segment.description",
        )?;
        if !(0.0..=100.0).contains(&input.holdout_percent) {
            return Err(ServiceError::invalid(
                "segment.holdout_percent",
                "must be between 0 and 100",
            ));
        }
        let rule = self.checked_rule(&input.rule, "segment.rule")?;
        if self.registry.by_id(&input.id).is_none()
            && self.registry.len() >= self.config.segments_max
        {
            return Err(ServiceError::FailedPrecondition(format!(
                "at most {} segments may be defined; delete one first",
                self.config.segments_max
            )));
        }
        let draft = SegmentDraft {
            id: input.id.clone(),
            name: input.name,
            description: input.description,
            rule: input.rule,
            holdout_percent: input.holdout_percent,
            at: self.clock.now(),
        };
        let (definition, created, needs_backfill) = self.store.put_segment(draft).await?;
        let (number, version) = (definition.number, definition.version);
        self.registry.install(CompiledSegment {
            definition: definition.clone(),
            rule,
        });
        if needs_backfill {
            self.start_backfill(input.id, number, version);
        }
        Ok((self.summary(definition), created))
    }

    /// How many profiles `rule` matches now, and the first `page_size` of
    /// them in id order, without defining a segment. The rule is checked as
    /// [`SegmentService::put`] checks it; the scan runs off the writer.
    pub async fn preview(
        &self,
        rule: &str,
        page_size: usize,
    ) -> Result<(u64, Vec<ProfileId>), ServiceError> {
        let rule = self.checked_rule(rule, "rule")?;
        let page_size = match page_size {
            0 => PREVIEW_PAGE_DEFAULT,
            asked => asked.min(PREVIEW_PAGE_MAX),
        };
        let matcher = self.registry.matcher(rule);
        let store = Arc::clone(&self.store);
        let scan = tokio::task::spawn_blocking(move || {
            let (mut count, mut first) = (0u64, Vec::new());
            store.for_each_profile_facts(&mut |facts| {
                if matcher.matches(facts) {
                    count += 1;
                    if first.len() < page_size {
                        first.push(facts.id);
                    }
                }
            })?;
            Ok::<_, StoreError>((count, first))
        });
        let found = scan
            .await
            .map_err(|error| ServiceError::Internal(format!("preview task: {error}")))??;
        Ok(found)
    }

    fn checked_rule(&self, rule: &str, field: &str) -> Result<Rule, ServiceError> {
        if rule.len() > self.config.rule_bytes_max {
            return Err(ServiceError::invalid(
                field,
                format!("longer than {} bytes", self.config.rule_bytes_max),
            ));
        }
        Rule::compile(rule).map_err(|error| ServiceError::invalid(field, error.to_string()))
    }

    pub fn get(&self, id: &str) -> Result<SegmentSummary, ServiceError> {
        let segment = self.segment(id)?;
        Ok(self.summary(segment.definition.clone()))
    }

    pub fn list(&self) -> Vec<SegmentSummary> {
        self.registry
            .all()
            .into_iter()
            .map(|segment| self.summary(segment.definition.clone()))
            .collect()
    }

    pub async fn delete(&self, id: &str) -> Result<(), ServiceError> {
        validate_id(id, "id")?;
        let Some(definition) = self.store.delete_segment(id.to_owned()).await? else {
            return Err(not_found(id));
        };
        if let Ok(mut backfills) = self.backfills.lock()
            && let Some(running) = backfills.remove(&definition.number)
        {
            running.abort();
        }
        self.registry.remove(definition.number);
        Ok(())
    }

    /// Members in profile id order after `after`, at most `limit` (0: all).
    pub fn members(
        &self,
        id: &str,
        include_holdout: bool,
        after: Option<ProfileId>,
        limit: usize,
    ) -> Result<impl Iterator<Item = Member> + Send + 'static, ServiceError> {
        let segment = self.segment(id)?;
        let sets = self.store.segment_members(segment.definition.number);
        let mut all = sets.members;
        let holdout = sets.holdout;
        if include_holdout {
            all |= &holdout;
        }
        let start = after.map_or(0, |after| after.0.saturating_add(1));
        let limit = if limit == 0 { usize::MAX } else { limit };
        Ok(all
            .into_iter()
            .skip_while(move |profile| *profile < start)
            .take(limit)
            .map(move |profile| Member {
                profile: ProfileId(profile),
                holdout: holdout.contains(profile),
            }))
    }

    pub async fn check(&self, lookup: ProfileLookup) -> Result<MembershipCheck, ServiceError> {
        let id = self.profiles.profile_id(lookup).await?;
        let (profile, memberships) = self
            .store
            .memberships_of(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("profile {id} does not exist")))?;
        let mut named: Vec<(String, bool)> = memberships
            .into_iter()
            .filter_map(|membership| {
                let segment = self.registry.by_number(membership.segment)?;
                Some((segment.definition.id.clone(), membership.holdout))
            })
            .collect();
        named.sort();
        Ok(MembershipCheck {
            profile,
            memberships: named,
        })
    }

    /// Changes of these segments (all when empty) from now on.
    pub fn watch(&self, ids: &[String]) -> Result<MembershipWatch, ServiceError> {
        let mut numbers = Vec::with_capacity(ids.len());
        for (index, id) in ids.iter().enumerate() {
            let segment = self.registry.by_id(id).ok_or_else(|| {
                ServiceError::invalid(
                    format!("segment_ids[{index}]"),
                    format!("no segment `{id}`"),
                )
            })?;
            numbers.push(segment.definition.number);
        }
        Ok(MembershipWatch {
            receiver: self.store.watch_memberships(),
            numbers,
            registry: Arc::clone(&self.registry),
            closing: self.closing.subscribe(),
        })
    }

    /// Re-evaluates rules that depend on time over every profile. Returns
    /// the number of profiles evaluated.
    pub async fn sweep(&self) -> Result<u64, ServiceError> {
        if self
            .registry
            .all()
            .iter()
            .all(|segment| !segment.rule.depends_on_time())
        {
            return Ok(0);
        }
        Ok(evaluate_everyone(self.store.as_ref(), SegmentScope::TimeDependent).await?)
    }

    fn start_backfill(self: &Arc<Self>, id: String, number: SegmentNumber, version: u64) {
        let store = Arc::clone(&self.store);
        let registry = Arc::clone(&self.registry);
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let outcome = async {
                let profiles = evaluate_everyone(store.as_ref(), SegmentScope::One(number)).await?;
                let ready = store.mark_segment_ready(id.clone(), version).await?;
                Ok::<_, StoreError>((profiles, ready))
            }
            .await;
            match outcome {
                Ok((profiles, Some(definition))) => {
                    registry.update_definition(definition);
                    tracing::info!(
                        segment = %id,
                        profiles,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "segment members computed"
                    );
                }
                Ok((_, None)) => {}
                Err(error) => tracing::error!(segment = %id, %error, "segment backfill failed"),
            }
        });
        if let Ok(mut backfills) = self.backfills.lock() {
            backfills.retain(|_, running| !running.is_finished());
            if let Some(previous) = backfills.insert(number, task) {
                previous.abort();
            }
        }
    }

    fn segment(&self, id: &str) -> Result<Arc<CompiledSegment>, ServiceError> {
        self.registry.by_id(id).ok_or_else(|| not_found(id))
    }

    fn summary(&self, definition: SegmentDefinition) -> SegmentSummary {
        let (member_count, holdout_count) = self.store.segment_counts(definition.number);
        SegmentSummary {
            definition,
            member_count,
            holdout_count,
        }
    }
}

/// Evaluates every live profile in chunks, each its own writer job, so
/// that writes keep flowing in between.
async fn evaluate_everyone(
    store: &dyn ProfileStore,
    scope: SegmentScope,
) -> Result<u64, StoreError> {
    let mut after = None;
    let mut evaluated = 0u64;
    loop {
        let ids = store.profile_ids_after(after, EVALUATION_CHUNK_PROFILES)?;
        let Some(last) = ids.last().copied() else {
            return Ok(evaluated);
        };
        evaluated += ids.len() as u64;
        store.evaluate_memberships(ids, scope).await?;
        after = Some(last);
    }
}

/// A subscription to membership changes.
pub struct MembershipWatch {
    receiver: broadcast::Receiver<MembershipChange>,
    /// Empty: every segment.
    numbers: Vec<SegmentNumber>,
    registry: Arc<SegmentRegistry>,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl MembershipWatch {
    /// The next change of a watched segment; an error once the watcher fell
    /// so far behind that changes were lost, or the store closed.
    pub async fn next(&mut self) -> Result<NamedChange, ServiceError> {
        let shutting_down = || ServiceError::Unavailable("the server is shutting down".to_owned());
        loop {
            let received = tokio::select! {
                received = self.receiver.recv() => received,
                _ = self.closing.wait_for(|closing| *closing) => return Err(shutting_down()),
            };
            let change = match received {
                Ok(change) => change,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Err(ServiceError::ResourceExhausted(format!(
                        "the watcher fell behind and {missed} changes were dropped; watch again and re-list members to resynchronise"
                    )));
                }
                Err(broadcast::error::RecvError::Closed) => return Err(shutting_down()),
            };
            if !self.numbers.is_empty() && !self.numbers.contains(&change.segment) {
                continue;
            }
            let Some(segment) = self.registry.by_number(change.segment) else {
                continue;
            };
            return Ok(NamedChange {
                segment_id: segment.definition.id.clone(),
                change,
            });
        }
    }
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("no segment `{id}`"))
}

fn validate_id(id: &str, field: &str) -> Result<(), ServiceError> {
    let well_formed = !id.is_empty()
        && id.chars().count() <= SEGMENT_ID_CHARS_MAX
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if well_formed {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            field,
            format!("must be 1 to {SEGMENT_ID_CHARS_MAX} letters, digits, `-` or `_`"),
        ))
    }
}

fn check_length(text: &str, max: usize, field: &str) -> Result<(), ServiceError> {
    if text.chars().count() > max {
        return Err(ServiceError::invalid(
            field,
            format!("longer than {max} characters"),
        ));
    }
    Ok(())
}
