use std::{fmt, str::FromStr};

use super::{Identifier, UnixMillis};

/// A profile's stable id. Ids are dense and increase with creation time, so
/// "the oldest profile survives a merge" is "the smallest id survives", and
/// later membership bitmaps can index profiles directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProfileId(pub u64);

const PROFILE_ID_PREFIX: &str = "p";

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PROFILE_ID_PREFIX}{}", self.0)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a profile id is `p` followed by a positive decimal number")]
pub struct MalformedProfileId;

impl FromStr for ProfileId {
    type Err = MalformedProfileId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = text
            .trim()
            .strip_prefix(PROFILE_ID_PREFIX)
            .ok_or(MalformedProfileId)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MalformedProfileId);
        }
        match digits.parse::<u64>() {
            Ok(0) | Err(_) => Err(MalformedProfileId),
            Ok(number) => Ok(ProfileId(number)),
        }
    }
}

/// Which call brought a piece of data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Provenance {
    /// Empty when the caller sent no message id.
    pub message_id: String,
    pub source: String,
    pub received_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdentifierView {
    pub identifier: Identifier,
    pub first_seen: UnixMillis,
    pub last_seen: UnixMillis,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TraitView {
    pub name: String,
    pub value: serde_json::Value,
    pub updated_at: UnixMillis,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventView {
    pub event_id: String,
    pub name: String,
    pub properties: serde_json::Map<String, serde_json::Value>,
    pub timestamp: UnixMillis,
    pub provenance: Provenance,
}

/// What happened to a profile's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalKind {
    /// Other profiles were merged into this one.
    Merge,
    /// A link a call asked for was refused by merge protection.
    BlockedMerge,
    /// Identifiers were split off into another profile (or, on the new
    /// profile, split off from one).
    Unmerge,
}

/// One entry of a profile's merge journal: enough to audit a merge and to
/// undo it.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalView {
    pub kind: JournalKind,
    pub at: UnixMillis,
    /// The call (or operator request) that caused it.
    pub message_id: String,
    /// The other profiles involved: absorbed, refused, or split off.
    pub other_profiles: Vec<ProfileId>,
    /// The identifiers involved.
    pub identifiers: Vec<Identifier>,
    pub reason: String,
}

/// A profile as read from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileView {
    pub profile_id: ProfileId,
    pub merged_profile_ids: Vec<ProfileId>,
    pub identifiers: Vec<IdentifierView>,
    /// Live traits only (removed traits are not shown).
    pub traits: Vec<TraitView>,
    /// The newest events asked for, oldest first.
    pub events: Vec<EventView>,
    pub event_count: u64,
    /// Merges, blocked merges and unmerges, oldest first.
    pub journal: Vec<JournalView>,
    /// Aggregates behind the computed traits.
    pub activity: crate::computed::Activity,
    /// The current decision per channel and purpose.
    pub consents: Vec<super::ConsentView>,
    /// Every decision recorded, oldest first.
    pub consent_history: Vec<super::ConsentView>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_ids_round_trip_and_reject_malformed_text() {
        assert_eq!("p42".parse::<ProfileId>(), Ok(ProfileId(42)));
        assert_eq!(ProfileId(42).to_string(), "p42");
        for bad in [
            "",
            "p",
            "42",
            "p0",
            "p-1",
            "px",
            "p99999999999999999999",
            "q1",
        ] {
            assert_eq!(bad.parse::<ProfileId>(), Err(MalformedProfileId), "{bad}");
        }
    }
}
