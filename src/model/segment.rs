//! Segments as the store sees them: numbered definitions, memberships and
//! the facts about a profile that rules are evaluated over. The rules
//! themselves (CEL) live in `crate::segments`; the store only asks them.

use crate::computed::Activity;

use super::{Channel, ProfileId, Purpose, UnixMillis};

/// A segment's dense number, assigned by the store when it is created;
/// memberships refer to it rather than to the (longer) segment id.
pub type SegmentNumber = u32;

/// A stored segment definition.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentDefinition {
    pub id: String,
    pub number: SegmentNumber,
    pub name: String,
    pub description: String,
    pub rule: String,
    pub holdout_percent: f64,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    /// Bumped by every change of the definition; a backfill reports the
    /// version it computed so that a stale one is not taken as current.
    pub version: u64,
    /// The version whose members have been computed over every profile.
    pub ready_version: u64,
}

impl SegmentDefinition {
    pub fn is_ready(&self) -> bool {
        self.ready_version == self.version
    }
}

/// One profile's membership of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Membership {
    pub segment: SegmentNumber,
    /// In the control group: satisfies the rule but is held out.
    pub holdout: bool,
}

/// Which segments an evaluation considers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentScope {
    /// Every segment: the profile changed.
    All,
    /// One segment: it was created or its rule changed.
    One(SegmentNumber),
    /// Segments whose rules read the clock: time passed.
    TimeDependent,
}

/// A profile entering or leaving a segment.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipChange {
    pub segment: SegmentNumber,
    pub profile: ProfileId,
    pub entered: bool,
    pub holdout: bool,
    pub at: UnixMillis,
}

/// Counts a profile's events by name since a time, for windowed rules.
pub trait EventCounter {
    fn count_since(&self, name: &str, since: UnixMillis) -> u64;
}

/// What rules may read about a profile.
pub struct ProfileFacts<'a> {
    pub id: ProfileId,
    /// Current trait values.
    pub traits: Vec<(String, serde_json::Value)>,
    pub activity: Activity,
    /// Channel and purpose pairs currently granted.
    pub consents: Vec<(Channel, Purpose)>,
    /// Kinds of the identifiers the profile holds, without repeats.
    pub identifier_kinds: Vec<String>,
    pub events: &'a dyn EventCounter,
}

/// The evaluation the store asks for whenever a profile changes, a segment
/// is (re)defined, or time passes.
pub trait MembershipRules: Send + Sync {
    /// The segments in `scope` right now.
    fn segments_in(&self, scope: SegmentScope) -> Vec<SegmentNumber>;

    /// The memberships among `segments` that the profile holds now.
    fn evaluate(&self, facts: &ProfileFacts<'_>, segments: &[SegmentNumber]) -> Vec<Membership>;

    /// The time membership changes are stamped with.
    fn now(&self) -> UnixMillis;

    /// The user-defined computed traits the store folds events into.
    fn custom_traits(&self) -> &dyn CustomTraitRules {
        &NO_CUSTOM_TRAITS
    }

    /// Puts these stored definitions in force in place of the present
    /// ones: another server sharing the database changed them.
    fn replace_definitions(
        &self,
        _segments: Vec<SegmentDefinition>,
        _custom_traits: Vec<crate::computed::custom::CustomTraitDefinition>,
    ) {
    }
}

/// User-defined computed traits, as the store applies them: which events
/// each counts (name and condition) and which property it reads.
pub trait CustomTraitRules: Send + Sync {
    /// Folds one event into every trait that counts it.
    fn fold(
        &self,
        activity: &mut crate::computed::Activity,
        event: &str,
        properties: &serde_json::Map<String, serde_json::Value>,
        at: UnixMillis,
    );

    /// Folds one event into the named trait only (a backfill).
    fn fold_one(
        &self,
        name: &str,
        activity: &mut crate::computed::Activity,
        event: &str,
        properties: &serde_json::Map<String, serde_json::Value>,
        at: UnixMillis,
    );

    /// Whether any trait is defined.
    fn any(&self) -> bool;

    /// Every defined trait's value as of `now`, by name.
    fn values(
        &self,
        activity: &crate::computed::Activity,
        now: UnixMillis,
    ) -> Vec<(String, serde_json::Value)>;
}

/// No user-defined computed traits.
pub struct NoCustomTraits;

static NO_CUSTOM_TRAITS: NoCustomTraits = NoCustomTraits;

impl CustomTraitRules for NoCustomTraits {
    fn fold(
        &self,
        _: &mut crate::computed::Activity,
        _: &str,
        _: &serde_json::Map<String, serde_json::Value>,
        _: UnixMillis,
    ) {
    }

    fn fold_one(
        &self,
        _: &str,
        _: &mut crate::computed::Activity,
        _: &str,
        _: &serde_json::Map<String, serde_json::Value>,
        _: UnixMillis,
    ) {
    }

    fn any(&self) -> bool {
        false
    }

    fn values(
        &self,
        _: &crate::computed::Activity,
        _: UnixMillis,
    ) -> Vec<(String, serde_json::Value)> {
        Vec::new()
    }
}
