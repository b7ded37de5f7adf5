//! Model-based test: random sequences of identify, track, unmerge, consent,
//! erasure (with and without suppression) and restart run against the real service and sled store, and after every
//! step the store must agree with a small in-memory model of identity
//! resolution. Merge limits, kind priority, junk lists, hub detection and
//! fuzzy matching are switched off in the configuration, so the model only
//! has to know "merge into the oldest unless an operator separated them".
//!
//! 64 cases run in the suite; a long run is
//! `PROPTEST_CASES=5000 cargo test --release --test it model`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use sightline::config::{FuzzyConfig, IdentityConfig, Limits, MergeConfig};
use sightline::identity::{MergeRules, Normalizer};
use sightline::model::{
    ErasureCall, ManualClock, PrivacyRequest, PrivacyRequestKind, PrivacyRequestStatus, ProfileId,
    Resolution, Subject, UnixMillis,
};
use sightline::service::{
    ConsentInput, IdentifyInput, Json, ProfileLookup, ProfileService, RawIdentifier, ServiceError,
    TrackInput, UnmergeInput,
};
use sightline::store::{ProfileStore, SledStore, SledStoreOptions};

/// Identifiers as a caller sends them and as they are stored. Some raw
/// spellings differ and normalize to one identifier, so normalization is
/// part of what the model checks.
const POOL: [(&str, &str, &str); 13] = [
    ("email", "ann@example.com", "ann@example.com"),
    ("email", " Ann@Example.COM ", "ann@example.com"),
    ("email", "bob@example.org", "bob@example.org"),
    ("email", "cy@example.net", "cy@example.net"),
    ("phone", "+442079460958", "+442079460958"),
    ("phone", "020 7946 0958", "+442079460958"),
    ("phone", "+442079460959", "+442079460959"),
    ("device_id", "ABC-1", "abc-1"),
    ("device_id", "def-2", "def-2"),
    ("user_id", "u-1", "u-1"),
    ("user_id", "u-2", "u-2"),
    ("anonymous_id", "c-1", "c-1"),
    ("anonymous_id", "c-2", "c-2"),
];

const CHANNELS: [&str; 2] = ["email", "sms"];
const PURPOSE: &str = "marketing";
/// Message ids are drawn from a small set so that repeats (duplicates)
/// happen often.
const MESSAGE_IDS: u8 = 6;
const START_MS: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 1_000;
/// A consent decision dated before every other one: a late delivery.
const LATE_MS: i64 = START_MS - 86_400_000;

/// One step of a scenario. Steps name pool entries, not profiles, so any
/// sequence is meaningful whatever state the earlier steps left; a step the
/// model says must fail (an unknown identifier, an unmerge of every
/// identifier) checks that the store refuses it too.
#[derive(Debug, Clone)]
enum Op {
    Identify {
        identifiers: Vec<usize>,
        message: Option<u8>,
    },
    Track {
        identifiers: Vec<usize>,
        message: Option<u8>,
    },
    Unmerge {
        lookup: usize,
        split_mask: u8,
    },
    UpdateConsent {
        lookup: usize,
        channel: usize,
        granted: bool,
        late: bool,
    },
    Restart,
    /// Erase the person holding this identifier (or nobody), suppressing
    /// their identifiers or not.
    Erase {
        lookup: usize,
        suppress: bool,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let identifiers = || proptest::collection::vec(0..POOL.len(), 1..=3);
    let message = || proptest::option::weighted(0.3, 0..MESSAGE_IDS);
    prop_oneof![
        4 => (identifiers(), message())
            .prop_map(|(identifiers, message)| Op::Identify { identifiers, message }),
        4 => (identifiers(), message())
            .prop_map(|(identifiers, message)| Op::Track { identifiers, message }),
        2 => (0..POOL.len(), any::<u8>())
            .prop_map(|(lookup, split_mask)| Op::Unmerge { lookup, split_mask }),
        1 => (0..POOL.len(), 0..CHANNELS.len(), any::<bool>(), proptest::bool::weighted(0.2))
            .prop_map(|(lookup, channel, granted, late)| Op::UpdateConsent {
                lookup,
                channel,
                granted,
                late,
            }),
        1 => Just(Op::Restart),
        1 => (0..POOL.len(), any::<bool>())
            .prop_map(|(lookup, suppress)| Op::Erase { lookup, suppress }),
    ]
}

/// `kind:value` after normalization.
type Id = String;

fn normalized(index: usize) -> Id {
    let (kind, _, value) = POOL[index];
    format!("{kind}:{value}")
}

fn raw(index: usize) -> RawIdentifier {
    let (kind, value, _) = POOL[index];
    RawIdentifier {
        kind: kind.to_owned(),
        value: value.to_owned(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decision {
    granted: bool,
    at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelEvent {
    /// Unique per scenario; carried in the event's properties.
    seq: u64,
    /// The call's message number: the event's provenance names it.
    message: Option<u8>,
    /// The identifiers of the call that brought it: an unmerge moves the
    /// events that came with the split-off identifiers alone.
    identifiers: BTreeSet<Id>,
}

#[derive(Debug, Clone, Default)]
struct Person {
    identifiers: BTreeSet<Id>,
    events: Vec<ModelEvent>,
    /// Channel → current decision.
    consents: BTreeMap<String, Decision>,
    merged: BTreeSet<u64>,
    /// Live profiles an operator split from this one.
    separated: BTreeSet<u64>,
    /// Message numbers of calls that touched this person, e.g. a link
    /// refused and journaled here: an erasure removes those idempotency
    /// records too.
    named: BTreeSet<u8>,
}

/// What the store must answer for one write.
#[derive(Debug, PartialEq, Eq)]
struct ExpectedWrite {
    profile_id: u64,
    resolution: Resolution,
}

#[derive(Debug, Clone)]
struct Model {
    next_id: u64,
    persons: BTreeMap<u64, Person>,
    owner: BTreeMap<Id, u64>,
    /// Merged-away id → live survivor.
    aliases: BTreeMap<u64, u64>,
    /// Message id → the profile its call resolved to.
    messages: BTreeMap<u8, u64>,
    next_seq: u64,
    /// Identifiers of erased persons: calls carrying one are dropped.
    suppressed: BTreeSet<Id>,
    /// Message numbers of an erased person's calls. An erasure removes the
    /// idempotency records its data names, not every one, so these are
    /// not sent again rather than modelled.
    retired: BTreeSet<u8>,
    /// The message number of the call that first brought an identifier:
    /// the identifier's provenance names it.
    introduced_by: BTreeMap<Id, u8>,
    next_request: u64,
}

impl Model {
    fn new() -> Model {
        Model {
            next_id: 1,
            persons: BTreeMap::new(),
            owner: BTreeMap::new(),
            aliases: BTreeMap::new(),
            messages: BTreeMap::new(),
            next_seq: 0,
            suppressed: BTreeSet::new(),
            retired: BTreeSet::new(),
            introduced_by: BTreeMap::new(),
            next_request: 0,
        }
    }

    fn live(&self, id: u64) -> u64 {
        self.aliases.get(&id).copied().unwrap_or(id)
    }

    fn person(&self, id: u64) -> &Person {
        self.persons
            .get(&id)
            .expect("the model only refers to live persons")
    }

    fn person_mut(&mut self, id: u64) -> &mut Person {
        self.persons
            .get_mut(&id)
            .expect("the model only refers to live persons")
    }

    /// Identify (`event` is `None`) or track, under the rules left on by
    /// the test configuration: every profile the call touches merges into
    /// the oldest, except profiles an operator separated from the ones
    /// already joined, considered oldest first.
    fn write(&mut self, call: &[Id], event: Option<u64>, message: Option<u8>) -> ExpectedWrite {
        if let Some(original) = message.and_then(|m| self.messages.get(&m)) {
            return ExpectedWrite {
                profile_id: self.live(*original),
                resolution: Resolution::Duplicate,
            };
        }
        if call.iter().any(|id| self.suppressed.contains(id)) {
            return ExpectedWrite {
                profile_id: 0,
                resolution: Resolution::Suppressed,
            };
        }
        let owners: BTreeSet<u64> = call
            .iter()
            .filter_map(|id| self.owner.get(id).copied())
            .collect();
        if let Some(message) = message {
            for owner in &owners {
                self.person_mut(*owner).named.insert(message);
            }
        }
        let mut joined: BTreeSet<u64> = BTreeSet::new();
        let mut separated: BTreeSet<u64> = BTreeSet::new();
        for owner in owners {
            let theirs = &self.person(owner).separated;
            if separated.contains(&owner) || theirs.iter().any(|id| joined.contains(id)) {
                continue;
            }
            joined.insert(owner);
            separated.extend(theirs.iter().copied());
        }
        let mut joined = joined.into_iter();
        let (survivor, mut resolution) = match joined.next() {
            Some(survivor) => (survivor, Resolution::Attached),
            None => {
                let id = self.next_id;
                self.next_id += 1;
                self.persons.insert(id, Person::default());
                (id, Resolution::Created)
            }
        };
        let absorbed: Vec<u64> = joined.collect();
        for &gone in &absorbed {
            self.absorb(survivor, gone);
        }
        if !absorbed.is_empty() {
            resolution = Resolution::Merged {
                absorbed: absorbed.iter().copied().map(ProfileId).collect(),
            };
        }
        for id in call {
            if !self.owner.contains_key(id) {
                self.owner.insert(id.clone(), survivor);
                self.person_mut(survivor).identifiers.insert(id.clone());
                if let Some(message) = message {
                    self.introduced_by.insert(id.clone(), message);
                }
            }
        }
        if let Some(seq) = event {
            let identifiers = call.iter().cloned().collect();
            self.person_mut(survivor).events.push(ModelEvent {
                seq,
                message,
                identifiers,
            });
        }
        if let Some(message) = message {
            self.messages.insert(message, survivor);
        }
        ExpectedWrite {
            profile_id: survivor,
            resolution,
        }
    }

    /// Whether a person was erased.
    fn erase(&mut self, lookup: &Id, suppress: bool) -> bool {
        let mut identifiers = BTreeSet::from([lookup.clone()]);
        let erased = match self.owner.get(lookup).copied() {
            Some(person) => {
                let removed = self
                    .persons
                    .remove(&person)
                    .expect("owners are live persons");
                // Whatever the erased data's provenance names goes too: the
                // calls that resolved to the person, that brought their
                // events, and that first brought their identifiers.
                let mut retired: BTreeSet<u8> = removed
                    .events
                    .iter()
                    .filter_map(|event| event.message)
                    .chain(removed.named.iter().copied())
                    .collect();
                for id in &removed.identifiers {
                    self.owner.remove(id);
                    retired.extend(self.introduced_by.remove(id));
                }
                identifiers.extend(removed.identifiers);
                let aliases = &self.aliases;
                let live = |id: u64| aliases.get(&id).copied().unwrap_or(id);
                retired.extend(
                    self.messages
                        .iter()
                        .filter(|(_, target)| live(**target) == person)
                        .map(|(message, _)| *message),
                );
                for message in retired {
                    self.messages.remove(&message);
                    self.retired.insert(message);
                }
                self.aliases.retain(|_, survivor| *survivor != person);
                for other in self.persons.values_mut() {
                    other.separated.remove(&person);
                }
                true
            }
            None => false,
        };
        if suppress {
            self.suppressed.extend(identifiers);
        }
        erased
    }

    fn absorb(&mut self, survivor: u64, gone: u64) {
        let absorbed = self
            .persons
            .remove(&gone)
            .expect("absorbed persons are live");
        for id in &absorbed.identifiers {
            self.owner.insert(id.clone(), survivor);
        }
        let mut former = absorbed.merged.clone();
        former.insert(gone);
        for &id in &former {
            self.aliases.insert(id, survivor);
        }
        for person in self.persons.values_mut() {
            if person.separated.remove(&gone) {
                person.separated.insert(survivor);
            }
        }
        let record = self.person_mut(survivor);
        record.identifiers.extend(absorbed.identifiers);
        record.events.extend(absorbed.events);
        record.merged.extend(former);
        record.separated.extend(absorbed.separated);
        record.named.extend(absorbed.named);
        // Most restrictive wins; between equals the later decision.
        for (channel, theirs) in absorbed.consents {
            match record.consents.get(&channel) {
                None => {
                    record.consents.insert(channel, theirs);
                }
                Some(ours) => {
                    let keep_theirs = match (ours.granted, theirs.granted) {
                        (true, false) => true,
                        (false, true) => false,
                        _ => theirs.at_ms > ours.at_ms,
                    };
                    if keep_theirs {
                        record.consents.insert(channel, theirs);
                    }
                }
            }
        }
    }

    /// `Ok((from, new, moved_events))`, or `Err` when the store must refuse.
    fn unmerge(&mut self, lookup: &Id, split_mask: u8) -> Result<(u64, u64, u64), Refusal> {
        let from = *self.owner.get(lookup).ok_or(Refusal::NotFound)?;
        let all: Vec<Id> = self.person(from).identifiers.iter().cloned().collect();
        let split: BTreeSet<Id> = all
            .iter()
            .enumerate()
            .filter(|(index, _)| split_mask & (1 << (index % 8)) != 0)
            .map(|(_, id)| id.clone())
            .collect();
        if split.is_empty() || split.len() == all.len() {
            return Err(Refusal::InvalidArgument);
        }
        let new = self.next_id;
        self.next_id += 1;
        let person = self.person_mut(from);
        person.identifiers.retain(|id| !split.contains(id));
        let (moved, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut person.events)
            .into_iter()
            .partition(|event| event.identifiers.is_subset(&split));
        person.events = kept;
        person.separated.insert(new);
        // A grant may have come from the other person; withdrawals stand.
        let consents = person
            .consents
            .iter()
            .filter(|(_, decision)| !decision.granted)
            .map(|(channel, decision)| (channel.clone(), *decision))
            .collect();
        let named = person.named.clone();
        let moved_events = moved.len() as u64;
        for id in &split {
            self.owner.insert(id.clone(), new);
        }
        self.persons.insert(
            new,
            Person {
                identifiers: split,
                events: moved,
                consents,
                merged: BTreeSet::new(),
                separated: BTreeSet::from([from]),
                named,
            },
        );
        Ok((from, new, moved_events))
    }

    fn update_consent(&mut self, lookup: &Id, channel: &str, decision: Decision) -> Option<u64> {
        let id = *self.owner.get(lookup)?;
        let consents = &mut self.person_mut(id).consents;
        // A grant older than the current decision joins the history only;
        // a withdrawal always takes effect.
        let stale = decision.granted
            && consents
                .get(channel)
                .is_some_and(|current| current.at_ms > decision.at_ms);
        if !stale {
            consents.insert(channel.to_owned(), decision);
        }
        Some(id)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    NotFound,
    InvalidArgument,
}

fn refusal(error: &ServiceError) -> Option<Refusal> {
    match error {
        ServiceError::NotFound(_) => Some(Refusal::NotFound),
        ServiceError::InvalidArgument(_) => Some(Refusal::InvalidArgument),
        _ => None,
    }
}

/// The system under test: the service over a sled store in a temporary
/// directory, reopened on `Restart`.
struct System {
    data_dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    store: Arc<SledStore>,
    service: ProfileService,
}

fn identity_config() -> IdentityConfig {
    IdentityConfig {
        default_region: "GB".to_owned(),
        merge: MergeConfig {
            priority: Vec::new(),
            identifiers_per_kind_max: BTreeMap::new(),
            identifiers_per_kind_default: 1_000,
            hub_profiles_min: 1_000_000,
            blocked_values: Vec::new(),
            blocked_patterns: Vec::new(),
        },
        fuzzy: FuzzyConfig {
            enabled: false,
            ..FuzzyConfig::default()
        },
        ..IdentityConfig::default()
    }
}

/// sled lets go of its directory lock only once its background threads
/// have dropped their last handle, which can trail the close by moments on
/// a busy machine; a restart waits for that rather than failing.
fn open_when_released(options: &SledStoreOptions) -> Result<SledStore, String> {
    let mut attempts = 0;
    loop {
        match SledStore::open(options) {
            Ok(store) => return Ok(store),
            Err(sightline::store::StoreError::Locked(_)) if attempts < 250 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => return Err(format!("open: {error}")),
        }
    }
}

impl System {
    fn open(data_dir: tempfile::TempDir, clock: Arc<ManualClock>) -> Result<System, String> {
        let config = identity_config();
        let rules = MergeRules::new(&config.merge, &config.fuzzy);
        let limits = Limits::default();
        let options = SledStoreOptions {
            data_dir: data_dir.path().to_owned(),
            cache_capacity_bytes: 16 * 1024 * 1024,
            write_queue_depth: 64,
            group_commit_calls_max: 64,
            merge_rules: rules.clone(),
            suppression_key: None,
        };
        let store = Arc::new(open_when_released(&options)?);
        let normalizer = Normalizer::new(&config, limits.identifier_value_bytes_max);
        let service = ProfileService::new(store.clone(), normalizer, rules, limits, clock.clone());
        Ok(System {
            data_dir,
            clock,
            store,
            service,
        })
    }

    fn restart(self) -> Result<System, String> {
        let System {
            data_dir,
            clock,
            store,
            service,
        } = self;
        drop(service);
        store.close().map_err(|e| format!("close: {e}"))?;
        drop(store);
        System::open(data_dir, clock)
    }
}

fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(message()) }
}

async fn step(system: &System, model: &mut Model, op: &Op, now_ms: i64) -> Result<(), String> {
    match op {
        Op::Identify {
            identifiers,
            message,
        }
        | Op::Track {
            identifiers,
            message,
        } => {
            let message = message.filter(|m| !model.retired.contains(m));
            let message_id = message.map(|m| format!("m{m}")).unwrap_or_default();
            let raw_ids: Vec<RawIdentifier> = identifiers.iter().map(|&i| raw(i)).collect();
            let mut call_ids: Vec<Id> = Vec::new();
            for &index in identifiers {
                let id = normalized(index);
                if !call_ids.contains(&id) {
                    call_ids.push(id);
                }
            }
            let (call, seq) = if let Op::Track { .. } = op {
                let seq = model.next_seq;
                model.next_seq += 1;
                let mut properties = Json::new();
                properties.insert("seq".to_owned(), seq.into());
                let input = TrackInput {
                    identifiers: raw_ids,
                    event: "Page Viewed".to_owned(),
                    properties,
                    message_id,
                    ..TrackInput::default()
                };
                (system.service.track_call(input), Some(seq))
            } else {
                let input = IdentifyInput {
                    identifiers: raw_ids,
                    message_id,
                    ..IdentifyInput::default()
                };
                (system.service.identify_call(input), None)
            };
            let call = call.map_err(|e| format!("{op:?} rejected: {e}"))?;
            let outcome = system
                .service
                .write(call)
                .await
                .map_err(|e| format!("{op:?} failed: {e}"))?;
            let expected = model.write(&call_ids, seq, message);
            let actual = ExpectedWrite {
                profile_id: outcome.profile_id.0,
                resolution: outcome.resolution,
            };
            ensure(actual == expected, || {
                format!("{op:?}: store answered {actual:?}, model expects {expected:?}")
            })
        }
        Op::Unmerge { lookup, split_mask } => {
            let expected = model.clone().unmerge(&normalized(*lookup), *split_mask);
            // The store is asked for the same identifiers the model split.
            let split: Vec<RawIdentifier> = match model.owner.get(&normalized(*lookup)) {
                Some(owner) => model
                    .person(*owner)
                    .identifiers
                    .iter()
                    .enumerate()
                    .filter(|(index, _)| split_mask & (1 << (index % 8)) != 0)
                    .map(|(_, id)| {
                        let (kind, value) = id.split_once(':').expect("kind:value");
                        RawIdentifier {
                            kind: kind.to_owned(),
                            value: value.to_owned(),
                        }
                    })
                    .collect(),
                None => vec![raw(*lookup)],
            };
            let input = UnmergeInput {
                lookup: ProfileLookup::Identifier(raw(*lookup)),
                identifiers: split,
                message_id: String::new(),
                reason: "model".to_owned(),
            };
            let actual = system.service.unmerge(input).await;
            match (actual, expected) {
                (Ok(outcome), Ok(expected)) => {
                    model.unmerge(&normalized(*lookup), *split_mask).ok();
                    let actual = (
                        outcome.profile_id.0,
                        outcome.new_profile_id.0,
                        outcome.moved_events,
                    );
                    ensure(actual == expected, || {
                        format!("{op:?}: store split {actual:?}, model expects {expected:?}")
                    })
                }
                (Err(error), Err(expected)) => ensure(refusal(&error) == Some(expected), || {
                    format!("{op:?}: store refused with {error}, model expects a refusal")
                }),
                (actual, expected) => Err(format!(
                    "{op:?}: store answered {actual:?}, model expects {expected:?}"
                )),
            }
        }
        Op::UpdateConsent {
            lookup,
            channel,
            granted,
            late,
        } => {
            let at_ms = if *late { LATE_MS } else { now_ms };
            let input = ConsentInput {
                lookup: ProfileLookup::Identifier(raw(*lookup)),
                changes: vec![(
                    CHANNELS[*channel].to_owned(),
                    PURPOSE.to_owned(),
                    Some(*granted),
                )],
                timestamp: Some(UnixMillis(at_ms)),
                message_id: String::new(),
                source: "model".to_owned(),
            };
            let actual = system.service.update_consent(input).await;
            let decision = Decision {
                granted: *granted,
                at_ms,
            };
            let expected = model.update_consent(&normalized(*lookup), CHANNELS[*channel], decision);
            match (actual, expected) {
                (Ok(id), Some(expected)) => ensure(id.0 == expected, || {
                    format!("{op:?}: recorded on p{}, model expects p{expected}", id.0)
                }),
                (Err(ServiceError::NotFound(_)), None) => Ok(()),
                (actual, expected) => Err(format!(
                    "{op:?}: store answered {actual:?}, model expects {expected:?}"
                )),
            }
        }
        Op::Erase { lookup, suppress } => {
            let identifier = system
                .service
                .normalize_identifier("identifier", &raw(*lookup))
                .map_err(|e| format!("{op:?}: {e}"))?;
            model.next_request += 1;
            let record = PrivacyRequest {
                request_id: format!("erasure-{}", model.next_request),
                kind: PrivacyRequestKind::Erasure,
                requester: "model".to_owned(),
                reason: String::new(),
                caller: String::new(),
                received_at: UnixMillis(now_ms),
                due_at: UnixMillis(now_ms),
                completed_at: None,
                status: PrivacyRequestStatus::Received,
                counts: Default::default(),
            };
            let outcome = system
                .store
                .erase_subject(ErasureCall {
                    subject: Subject::Identifier(identifier),
                    suppress: *suppress,
                    record,
                })
                .await
                .map_err(|e| format!("{op:?} failed: {e}"))?;
            let expected = model.erase(&normalized(*lookup), *suppress);
            ensure(outcome.erased == expected, || {
                format!(
                    "{op:?}: store erased: {}, model expects {expected}",
                    outcome.erased
                )
            })
        }
        Op::Restart => Ok(()),
    }
}

/// The invariants, read back through the service.
fn check(system: &System, model: &Model) -> Result<(), String> {
    let events_max = Limits::default().events_per_read_max;
    let live_ids = system
        .store
        .profile_ids_after(None, 100_000)
        .map_err(|e| format!("listing profiles: {e}"))?;
    let live_ids: Vec<u64> = live_ids.into_iter().map(|id| id.0).collect();
    let expected_ids: Vec<u64> = model.persons.keys().copied().collect();
    ensure(live_ids == expected_ids, || {
        format!("live profiles {live_ids:?}, model has {expected_ids:?}")
    })?;

    for (&id, person) in &model.persons {
        let read = system
            .service
            .get_profile(ProfileLookup::ProfileId(format!("p{id}")), events_max)
            .map_err(|e| format!("reading p{id}: {e}"))?
            .profile;
        ensure(read.profile_id.0 == id, || {
            format!("p{id} read as {}", read.profile_id)
        })?;
        let identifiers: BTreeSet<Id> = read
            .identifiers
            .iter()
            .map(|view| {
                let identifier = &view.identifier;
                format!("{}:{}", identifier.kind(), identifier.value())
            })
            .collect();
        ensure(identifiers == person.identifiers, || {
            format!(
                "p{id} lists {identifiers:?}, model has {:?}",
                person.identifiers
            )
        })?;
        let mut seqs: Vec<u64> = read
            .events
            .iter()
            .filter_map(|event| event.properties.get("seq").and_then(|v| v.as_u64()))
            .collect();
        seqs.sort_unstable();
        let mut expected_seqs: Vec<u64> = person.events.iter().map(|e| e.seq).collect();
        expected_seqs.sort_unstable();
        ensure(
            seqs == expected_seqs && read.event_count == expected_seqs.len() as u64,
            || {
                format!(
                    "p{id} holds events {seqs:?} (count {}), model has {expected_seqs:?}",
                    read.event_count
                )
            },
        )?;
        let merged: BTreeSet<u64> = read.merged_profile_ids.iter().map(|m| m.0).collect();
        ensure(merged == person.merged, || {
            format!("p{id} merged {merged:?}, model has {:?}", person.merged)
        })?;
        let consents: BTreeMap<String, Decision> = read
            .consents
            .iter()
            .map(|view| {
                (
                    view.channel.as_str().to_owned(),
                    Decision {
                        granted: view.granted,
                        at_ms: view.at.0,
                    },
                )
            })
            .collect();
        ensure(consents == person.consents, || {
            format!(
                "p{id} consents {consents:?}, model has {:?}",
                person.consents
            )
        })?;
    }

    for index in 0..POOL.len() {
        let id = normalized(index);
        let read = system
            .service
            .get_profile(ProfileLookup::Identifier(raw(index)), 1);
        match (model.owner.get(&id), read) {
            (Some(&owner), Ok(read)) => ensure(read.profile.profile_id.0 == owner, || {
                format!(
                    "{id} resolves to {}, model has p{owner}",
                    read.profile.profile_id
                )
            })?,
            (None, Err(ServiceError::NotFound(_))) => {}
            (owner, read) => {
                return Err(format!(
                    "{id} resolves to {:?}, model has {owner:?}",
                    read.map(|r| r.profile.profile_id)
                ));
            }
        }
    }

    for (&alias, &survivor) in &model.aliases {
        let read = system
            .service
            .get_profile(ProfileLookup::ProfileId(format!("p{alias}")), 1)
            .map_err(|e| format!("reading merged-away p{alias}: {e}"))?;
        ensure(read.profile.profile_id.0 == survivor, || {
            format!(
                "merged-away p{alias} reads as {}, model has p{survivor}",
                read.profile.profile_id
            )
        })?;
    }
    Ok(())
}

fn run(ops: &[Op]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let data_dir = tempfile::tempdir().map_err(|e| format!("data dir: {e}"))?;
    let clock = Arc::new(ManualClock::new(UnixMillis(START_MS)));
    let mut system = System::open(data_dir, clock)?;
    let mut model = Model::new();
    for (index, op) in ops.iter().enumerate() {
        let now_ms = START_MS + (index as i64 + 1) * STEP_MS;
        system.clock.set(UnixMillis(now_ms));
        if let Op::Restart = op {
            system = system.restart()?;
        }
        runtime
            .block_on(step(&system, &mut model, op, now_ms))
            .map_err(|e| format!("step {index}: {e}"))?;
        check(&system, &model).map_err(|e| format!("after step {index} ({op:?}): {e}"))?;
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64)
}

#[test]
fn pool_values_normalize_as_the_model_assumes() {
    let config = identity_config();
    let normalizer = Normalizer::new(&config, 256);
    for (kind, raw, stored) in POOL {
        let identifier = normalizer
            .normalize(kind, raw)
            .expect("pool value is valid");
        assert_eq!(identifier.value(), stored, "{kind} {raw:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn store_agrees_with_the_identity_model(
        ops in proptest::collection::vec(op_strategy(), 1..40)
    ) {
        let result = run(&ops);
        prop_assert!(result.is_ok(), "{}", result.err().unwrap_or_default());
    }
}
