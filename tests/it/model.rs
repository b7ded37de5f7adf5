//! Model-based test: random sequences of identify, track, unmerge, consent,
//! erasure (with and without suppression) and restart run against the real service and sled store, and after every
//! step the store must agree with a small in-memory model of identity
//! resolution, written from the README's rules rather than from the store's
//! code: merge into the oldest, kind priority, identifiers per kind, junk
//! values and shapes, hub detection and operator separations, with the
//! provenance of every identifier and event compared. Fuzzy matching is
//! left off on purpose: its decisions are probabilities from a model
//! estimated over the stored data, checked against labelled data
//! (`sightline quality`, `scripts/eval-febrl`), not against a second
//! implementation.
//!
//! 64 cases run in the suite; a long run is
//! `PROPTEST_CASES=5000 cargo test --release --test it model`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use sightline::config::{BlockedPattern, FuzzyConfig, IdentityConfig, Limits, MergeConfig};
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
const POOL: [(&str, &str, &str); 15] = [
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
    ("email", "TEST@example.com", "test@example.com"),
    ("device_id", "0000-0000", "0000-0000"),
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
        // Late deliveries are mostly withdrawals: one dated before the
        // current grant must still take effect.
        // Decisions name the commoner identifiers, so that several land on
        // one person.
        3 => (0..6_usize, 0..CHANNELS.len(), prop_oneof![
            3 => (any::<bool>(), Just(false)),
            2 => (proptest::bool::weighted(0.2), Just(true)),
        ])
            .prop_map(|(lookup, channel, (granted, late))| Op::UpdateConsent {
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

/// A call's identifiers after normalization, each once, in call order.
fn call_identifiers(indexes: &[usize]) -> Vec<Id> {
    let mut ids: Vec<Id> = Vec::new();
    for id in indexes.iter().map(|&index| normalized(index)) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
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
    /// Per refused link: the profile left apart (or made for the new
    /// identifiers that could not join), `None` for identifiers dropped.
    blocked: Vec<Option<u64>>,
    hubs_ignored: BTreeSet<Id>,
    junk_ignored: BTreeSet<Id>,
}

impl ExpectedWrite {
    /// A call answered without resolving anything.
    fn answered(profile_id: u64, resolution: Resolution) -> ExpectedWrite {
        ExpectedWrite {
            profile_id,
            resolution,
            blocked: Vec::new(),
            hubs_ignored: BTreeSet::new(),
            junk_ignored: BTreeSet::new(),
        }
    }
}

/// The merge protection the test configures, applied by the model with
/// its own code: kind priority (strongest first), identifiers per kind per
/// profile, one junk value and one junk shape, and the hub threshold.
const PRIORITY: [&str; 5] = ["user_id", "email", "phone", "device_id", "anonymous_id"];
const KIND_LIMITS: [(&str, usize); 5] = [
    ("user_id", 1),
    ("email", 2),
    ("phone", 1),
    ("device_id", 1),
    ("anonymous_id", 2),
];
const HUB_PROFILES_MIN: usize = 3;
const JUNK_VALUE: &str = "email:test@example.com";

fn kind(id: &Id) -> &str {
    id.split_once(':').map_or("", |(kind, _)| kind)
}

/// The rank of an identifier's kind: the strongest kind ranks highest.
fn strength(id: &Id) -> usize {
    PRIORITY
        .iter()
        .position(|listed| *listed == kind(id))
        .map_or(0, |position| PRIORITY.len() - position)
}

fn limit(kind: &str) -> usize {
    KIND_LIMITS
        .iter()
        .find(|(listed, _)| *listed == kind)
        .map_or(10, |(_, max)| *max)
}

/// The listed junk value, or a device id made only of zeros and dashes.
fn is_junk(id: &Id) -> bool {
    id == JUNK_VALUE
        || id
            .strip_prefix("device_id:")
            .is_some_and(|value| value.chars().all(|c| c == '0' || c == '-'))
}

/// One side of the links a call asks for: a profile holding some of its
/// identifiers, or its new identifiers. As a fold's accumulator, what has
/// joined so far.
#[derive(Debug)]
struct Side {
    profile: Option<u64>,
    /// The call's identifiers on this side.
    evidence: Vec<Id>,
    /// Every identifier the side holds.
    holds: BTreeSet<Id>,
    separated: BTreeSet<u64>,
}

impl Side {
    fn strength(&self) -> usize {
        self.evidence.iter().map(strength).max().unwrap_or(0)
    }

    fn of_kind(&self, wanted: &str) -> BTreeSet<&Id> {
        self.holds.iter().filter(|id| kind(id) == wanted).collect()
    }

    /// Why `side` may not join: the rank of the strongest kind in
    /// conflict (`usize::MAX` for an operator's separation), whose weaker
    /// identifiers glued the two together.
    fn refuses(&self, profiles: &BTreeSet<u64>, side: &Side) -> Option<usize> {
        let separated = side.profile.is_some_and(|p| self.separated.contains(&p))
            || side.separated.iter().any(|p| profiles.contains(p));
        if separated {
            return Some(usize::MAX);
        }
        PRIORITY.iter().find_map(|&kind_name| {
            let ours = self.of_kind(kind_name);
            let theirs = side.of_kind(kind_name);
            if ours.is_empty() || theirs.is_empty() {
                return None;
            }
            let union = ours.union(&theirs).count();
            let rank = PRIORITY.len() - PRIORITY.iter().position(|k| *k == kind_name)?;
            let both_bring_one = union > ours.len() && union > theirs.len();
            let weak = self.strength().min(side.strength()) < rank;
            (union > limit(kind_name) || both_bring_one && weak).then_some(rank)
        })
    }
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
    /// The message number of the call that first brought an identifier
    /// (`None` for a call without one): the identifier's provenance names it.
    introduced_by: BTreeMap<Id, Option<u8>>,
    /// Identifier → the distinct profiles it tried to glue together, up to
    /// the hub threshold.
    hubs: BTreeMap<Id, BTreeSet<u64>>,
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
            hubs: BTreeMap::new(),
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

    /// Identify (`event` is `None`) or track, under merge protection as
    /// the README states it: junk identifiers are ignored, and so are hubs;
    /// the call's identifiers fall into one side per profile holding some
    /// of them plus one of new identifiers (the strongest first, within the
    /// per-kind limits). Sides are taken strongest evidence first (existing
    /// profiles before new identifiers, older before younger) and each
    /// joins unless an operator separated it from what has joined, the
    /// union would exceed a kind's limit, or both sides would bring a value
    /// of a kind that one of them does not hold on evidence weaker than
    /// that kind. The oldest joined profile survives.
    fn write(
        &mut self,
        call: &[Id],
        event: Option<u64>,
        message: Option<u8>,
    ) -> Result<ExpectedWrite, Refusal> {
        let (junk, call): (Vec<Id>, Vec<Id>) = call.iter().cloned().partition(is_junk);
        if call.is_empty() {
            return Err(Refusal::InvalidArgument);
        }
        if let Some(original) = message.and_then(|m| self.messages.get(&m)) {
            return Ok(ExpectedWrite::answered(
                self.live(*original),
                Resolution::Duplicate,
            ));
        }
        if call.iter().any(|id| self.suppressed.contains(id)) {
            return Ok(ExpectedWrite::answered(0, Resolution::Suppressed));
        }
        let (hubs, usable): (Vec<Id>, Vec<Id>) = call.into_iter().partition(|id| {
            self.hubs
                .get(id)
                .is_some_and(|profiles| profiles.len() >= HUB_PROFILES_MIN)
        });
        if usable.is_empty() {
            return Err(Refusal::FailedPrecondition);
        }

        let owners: BTreeSet<u64> = usable
            .iter()
            .filter_map(|id| self.owner.get(id).copied())
            .collect();
        if let Some(message) = message {
            for owner in &owners {
                self.person_mut(*owner).named.insert(message);
            }
        }
        let mut sides: Vec<Side> = owners
            .iter()
            .map(|&owner| {
                let person = self.person(owner);
                Side {
                    profile: Some(owner),
                    evidence: usable
                        .iter()
                        .filter(|id| self.owner.get(*id) == Some(&owner))
                        .cloned()
                        .collect(),
                    holds: person.identifiers.clone(),
                    separated: person.separated.clone(),
                }
            })
            .collect();
        let mut unknown: Vec<Id> = usable
            .iter()
            .filter(|id| !self.owner.contains_key(*id))
            .cloned()
            .collect();
        unknown.sort_by_key(|id| std::cmp::Reverse(strength(id)));
        let mut admitted: Vec<Id> = Vec::new();
        let mut dropped = false;
        for id in unknown {
            let same_kind = admitted.iter().filter(|a| kind(a) == kind(&id)).count();
            if same_kind < limit(kind(&id)) {
                admitted.push(id);
            } else {
                dropped = true;
            }
        }
        if !admitted.is_empty() {
            sides.push(Side {
                profile: None,
                evidence: admitted.clone(),
                holds: admitted.iter().cloned().collect(),
                separated: BTreeSet::new(),
            });
        }
        sides.sort_by_key(|side| {
            (
                std::cmp::Reverse(side.strength()),
                side.profile.is_none(),
                side.profile,
            )
        });

        // (the refused side's profile, or `None` for the new identifiers;
        // the call's identifiers counted as glue towards hub detection)
        let mut refused: Vec<(Option<u64>, Vec<Id>)> = Vec::new();
        let mut sides = sides.into_iter();
        let mut joined = sides.next().expect("a usable identifier makes a side");
        let mut joined_profiles: BTreeSet<u64> = joined.profile.into_iter().collect();
        let mut has_new = joined.profile.is_none();
        for side in sides {
            match joined.refuses(&joined_profiles, &side) {
                None => {
                    joined_profiles.extend(side.profile);
                    has_new |= side.profile.is_none();
                    joined.evidence.extend(side.evidence);
                    joined.holds.extend(side.holds);
                    joined.separated.extend(side.separated);
                }
                Some(needed) => {
                    let glue = joined
                        .evidence
                        .iter()
                        .chain(&side.evidence)
                        .filter(|id| strength(id) < needed)
                        .cloned()
                        .collect();
                    refused.push((side.profile, glue));
                }
            }
        }

        let mut joined_profiles = joined_profiles.into_iter();
        let (survivor, mut resolution) = match joined_profiles.next() {
            Some(survivor) => (survivor, Resolution::Attached),
            None => (self.new_person(), Resolution::Created),
        };
        let absorbed: Vec<u64> = joined_profiles.collect();
        for &gone in &absorbed {
            self.absorb(survivor, gone);
        }
        if !absorbed.is_empty() {
            resolution = Resolution::Merged {
                absorbed: absorbed.iter().copied().map(ProfileId).collect(),
            };
        }
        if has_new {
            self.take_identifiers(survivor, &admitted, message);
        }
        let mut blocked = Vec::new();
        if dropped {
            blocked.push(None);
        }
        let mut glue_counts = Vec::new();
        for (profile, glue) in refused {
            let other = match profile {
                Some(profile) => profile,
                None => {
                    let detached = self.new_person();
                    self.take_identifiers(detached, &admitted, message);
                    self.person_mut(detached).named.extend(message);
                    detached
                }
            };
            blocked.push(Some(other));
            glue_counts.push((glue, other));
        }
        for (glue, other) in glue_counts {
            for id in glue {
                let profiles = self.hubs.entry(id).or_default();
                for profile in [survivor, other] {
                    if profiles.len() < HUB_PROFILES_MIN {
                        profiles.insert(profile);
                    }
                }
            }
        }

        if let Some(seq) = event {
            self.person_mut(survivor).events.push(ModelEvent {
                seq,
                message,
                identifiers: usable.iter().cloned().collect(),
            });
        }
        if let Some(message) = message {
            self.messages.insert(message, survivor);
        }
        Ok(ExpectedWrite {
            profile_id: survivor,
            resolution,
            blocked,
            hubs_ignored: hubs.into_iter().collect(),
            junk_ignored: junk.into_iter().collect(),
        })
    }

    fn new_person(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.persons.insert(id, Person::default());
        id
    }

    /// Gives `person` those of `identifiers` nobody holds yet.
    fn take_identifiers(&mut self, person: u64, identifiers: &[Id], message: Option<u8>) {
        for id in identifiers {
            if !self.owner.contains_key(id) {
                self.owner.insert(id.clone(), person);
                self.person_mut(person).identifiers.insert(id.clone());
                self.introduced_by.insert(id.clone(), message);
            }
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
                    retired.extend(self.introduced_by.remove(id).flatten());
                    self.hubs.remove(id);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NotFound,
    InvalidArgument,
    FailedPrecondition,
}

fn refusal(error: &ServiceError) -> Option<Refusal> {
    match error {
        ServiceError::NotFound(_) => Some(Refusal::NotFound),
        ServiceError::InvalidArgument(_) => Some(Refusal::InvalidArgument),
        ServiceError::FailedPrecondition(_) => Some(Refusal::FailedPrecondition),
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
            priority: PRIORITY.iter().map(|kind| (*kind).to_owned()).collect(),
            identifiers_per_kind_max: KIND_LIMITS
                .iter()
                .map(|(kind, max)| ((*kind).to_owned(), *max))
                .collect(),
            identifiers_per_kind_default: 10,
            hub_profiles_min: HUB_PROFILES_MIN,
            blocked_values: vec![JUNK_VALUE.to_owned()],
            blocked_patterns: vec![BlockedPattern {
                kind: "device_id".to_owned(),
                regex: "^[0-]+$".to_owned(),
            }],
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
            database: crate::support::database_url(data_dir.path()).map(|url| {
                sightline::store::PostgresOptions {
                    url,
                    read_connections: 2,
                    statement_timeout: std::time::Duration::from_secs(30),
                    connect_timeout: std::time::Duration::from_secs(10),
                    ca_file: None,
                }
            }),
            write_queue_depth: 64,
            group_commit_calls_max: 64,
            merge_rules: rules.clone(),
            suppression_key: None,
            recommendations: true,
            sealing: crate::support::sealing_options(data_dir.path()),
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

/// The message id a call with this message number carried.
fn message_name(message: Option<u8>) -> String {
    message.map(|m| format!("m{m}")).unwrap_or_default()
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
            let message_id = message_name(message);
            let raw_ids: Vec<RawIdentifier> = identifiers.iter().map(|&i| raw(i)).collect();
            let call_ids = call_identifiers(identifiers);
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
            let actual = match call {
                Ok(call) => system.service.write(call).await,
                Err(error) => Err(error),
            };
            let expected = model.write(&call_ids, seq, message);
            match (actual, expected) {
                (Ok(outcome), Ok(expected)) => {
                    let names = |ids: &[sightline::model::Identifier]| -> BTreeSet<Id> {
                        ids.iter()
                            .map(|id| format!("{}:{}", id.kind(), id.value()))
                            .collect()
                    };
                    let actual = ExpectedWrite {
                        profile_id: outcome.profile_id.0,
                        resolution: outcome.resolution,
                        blocked: outcome
                            .blocked
                            .iter()
                            .map(|link| link.profile_id.map(|p| p.0))
                            .collect(),
                        hubs_ignored: names(&outcome.hubs_ignored),
                        junk_ignored: names(&outcome.junk_ignored),
                    };
                    ensure(actual == expected, || {
                        format!("{op:?}: store answered {actual:?}, model expects {expected:?}")
                    })
                }
                (Err(error), Err(expected)) => ensure(refusal(&error) == Some(expected), || {
                    format!("{op:?}: store refused with {error}, model expects {expected:?}")
                }),
                (actual, expected) => Err(format!(
                    "{op:?}: store answered {:?}, model expects {expected:?}",
                    actual.map(|outcome| outcome.profile_id)
                )),
            }
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
async fn check(system: &System, model: &Model) -> Result<(), String> {
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
            .await
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
        for view in &read.identifiers {
            let id = format!("{}:{}", view.identifier.kind(), view.identifier.value());
            let expected = message_name(model.introduced_by.get(&id).copied().flatten());
            ensure(view.provenance.message_id == expected, || {
                format!(
                    "{id} came with {:?}, model has {expected:?}",
                    view.provenance.message_id
                )
            })?;
        }
        for view in &read.events {
            let seq = view.properties.get("seq").and_then(|v| v.as_u64());
            let expected = person
                .events
                .iter()
                .find(|event| Some(event.seq) == seq)
                .map(|event| message_name(event.message));
            ensure(
                expected.as_deref() == Some(view.provenance.message_id.as_str()),
                || {
                    format!(
                        "event {seq:?} on p{id} came with {:?}, model has {expected:?}",
                        view.provenance.message_id
                    )
                },
            )?;
        }
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
            .get_profile(ProfileLookup::Identifier(raw(index)), 1)
            .await;
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
            .await
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
        runtime
            .block_on(check(&system, &model))
            .map_err(|e| format!("after step {index} ({op:?}): {e}"))?;
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

/// The generated scenarios reach every rule the model states: without
/// this, a comparison that never sees a hub or a refused link passes for
/// the wrong reason.
#[test]
fn generated_scenarios_reach_every_merge_protection_rule() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = proptest::collection::vec(op_strategy(), 1..40);
    let mut reached: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..cases() {
        let ops = strategy
            .new_tree(&mut runner)
            .expect("scenario generated")
            .current();
        let mut model = Model::new();
        for (index, op) in ops.iter().enumerate() {
            let (identifiers, event, message) = match op {
                Op::Identify {
                    identifiers,
                    message,
                } => (identifiers, None, *message),
                Op::Track {
                    identifiers,
                    message,
                } => (identifiers, Some(0), *message),
                Op::Unmerge { lookup, split_mask } => {
                    model.unmerge(&normalized(*lookup), *split_mask).ok();
                    continue;
                }
                Op::Erase { lookup, suppress } => {
                    model.erase(&normalized(*lookup), *suppress);
                    continue;
                }
                Op::UpdateConsent {
                    lookup,
                    channel,
                    granted,
                    late,
                } => {
                    let at_ms = if *late {
                        LATE_MS
                    } else {
                        START_MS + (index as i64 + 1) * STEP_MS
                    };
                    let lookup = normalized(*lookup);
                    let over_a_later_grant = model.owner.get(&lookup).is_some_and(|owner| {
                        model
                            .person(*owner)
                            .consents
                            .get(CHANNELS[*channel])
                            .is_some_and(|current| {
                                current.granted && current.at_ms > at_ms && !*granted
                            })
                    });
                    if over_a_later_grant {
                        *reached.entry("an earlier-dated withdrawal").or_default() += 1;
                    }
                    let decision = Decision {
                        granted: *granted,
                        at_ms,
                    };
                    model.update_consent(&lookup, CHANNELS[*channel], decision);
                    continue;
                }
                Op::Restart => continue,
            };
            let message = message.filter(|m| !model.retired.contains(m));
            let call = call_identifiers(identifiers);
            let names: &[&str] = match model.write(&call, event, message) {
                Err(Refusal::FailedPrecondition) => &["every identifier a hub"],
                Err(_) => &["every identifier junk"],
                Ok(write) => {
                    let mut names = Vec::new();
                    if matches!(write.resolution, Resolution::Merged { .. }) {
                        names.push("merged");
                    }
                    if write.blocked.contains(&None) {
                        names.push("dropped over a limit");
                    }
                    if write.blocked.iter().any(Option::is_some) {
                        names.push("link refused");
                    }
                    if !write.hubs_ignored.is_empty() {
                        names.push("hub ignored");
                    }
                    if !write.junk_ignored.is_empty() {
                        names.push("junk ignored");
                    }
                    for name in names {
                        *reached.entry(name).or_default() += 1;
                    }
                    continue;
                }
            };
            for name in names {
                *reached.entry(name).or_default() += 1;
            }
        }
    }
    eprintln!("rules reached: {reached:?}");
    for rule in [
        "merged",
        "dropped over a limit",
        "link refused",
        "hub ignored",
        "junk ignored",
        "every identifier a hub",
        "every identifier junk",
        "an earlier-dated withdrawal",
    ] {
        assert!(
            reached.get(rule).copied().unwrap_or(0) > 0,
            "no generated scenario reached {rule:?}: {reached:?}"
        );
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
