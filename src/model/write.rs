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
}

/// The store's answer to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    pub profile_id: ProfileId,
    pub resolution: Resolution,
}
