use super::{Identifier, ProfileId, Provenance, UnixMillis};

/// One validated identify or track call, ready for the store: identifiers
/// normalized and deduplicated, sizes within limits.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteCall {
    pub identifiers: Vec<Identifier>,
    /// When the call happened at its source (the caller's timestamp, or the
    /// time of receipt when it sent none).
    pub timestamp: UnixMillis,
    pub provenance: Provenance,
    pub payload: WritePayload,
    /// Identifiers the caller sent that are junk (blocklisted): not used and
    /// not stored, only reported back.
    pub junk_ignored: Vec<Identifier>,
}

impl WriteCall {
    /// The idempotency key, if the caller sent one.
    pub fn message_id(&self) -> Option<&str> {
        Some(self.provenance.message_id.as_str()).filter(|id| !id.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum WritePayload {
    /// Top-level trait name to value; `Null` removes the trait.
    Identify {
        traits: serde_json::Map<String, serde_json::Value>,
    },
    Track {
        event: String,
        properties: serde_json::Map<String, serde_json::Value>,
    },
}

/// What resolution did with a call's identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Created,
    Attached,
    Merged {
        absorbed: Vec<ProfileId>,
    },
    /// The message id was seen before; nothing was applied.
    Duplicate,
    /// The call carried an identifier of an erased person; nothing was
    /// applied.
    Suppressed,
}

/// A link a call asked for that merge protection refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkBlocked {
    /// The profile that was not merged, or the profile created for
    /// identifiers that could not join; `None` when they were dropped.
    pub profile_id: Option<ProfileId>,
    pub identifiers: Vec<Identifier>,
    pub reason: String,
}

/// The store's answer to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    pub profile_id: ProfileId,
    pub resolution: Resolution,
    pub blocked: Vec<LinkBlocked>,
    /// Identifiers not used because they link too many people (hubs).
    pub hubs_ignored: Vec<Identifier>,
    /// Identifiers not used because they are junk (blocklisted).
    pub junk_ignored: Vec<Identifier>,
}

impl WriteOutcome {
    /// A dropped call names no profile.
    pub fn suppressed() -> Self {
        WriteOutcome {
            resolution: Resolution::Suppressed,
            ..WriteOutcome::duplicate(ProfileId(0))
        }
    }

    pub fn duplicate(profile_id: ProfileId) -> Self {
        WriteOutcome {
            profile_id,
            resolution: Resolution::Duplicate,
            blocked: Vec::new(),
            hubs_ignored: Vec::new(),
            junk_ignored: Vec::new(),
        }
    }
}

/// An operator's request to split identifiers off a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct UnmergeCall {
    /// The profile (or an id merged into it).
    pub profile_id: ProfileId,
    pub identifiers: Vec<Identifier>,
    pub provenance: Provenance,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmergeOutcome {
    /// The profile the identifiers were split from.
    pub profile_id: ProfileId,
    /// The new profile holding them.
    pub new_profile_id: ProfileId,
    pub moved_events: u64,
    pub moved_trait_values: u64,
}
