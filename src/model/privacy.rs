//! Data-subject requests: erasure and its audit records, and the access log.

use super::{Identifier, ProfileId, UnixMillis};

/// Whom an erasure is about: the profile, or an identifier that may no
/// longer resolve (a repeated request).
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    Profile(ProfileId),
    Identifier(Identifier),
}

/// A validated erasure request.
#[derive(Debug, Clone, PartialEq)]
pub struct ErasureCall {
    pub subject: Subject,
    pub suppress: bool,
    pub record: PrivacyRequest,
}

/// What an erasure removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErasureCounts {
    pub profiles: u64,
    pub identifiers: u64,
    pub traits: u64,
    pub events: u64,
    pub consents: u64,
    pub memberships: u64,
    pub match_entries: u64,
    pub access_log_entries: u64,
    pub message_records: u64,
    pub suppressed_identifiers: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivacyRequestKind {
    Export,
    Erasure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivacyRequestStatus {
    Received,
    Completed,
    Failed,
}

/// The audit record of an export or erasure: who asked, when, what came of
/// it. Never holds the subject's identifiers or data.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyRequest {
    pub request_id: String,
    pub kind: PrivacyRequestKind,
    pub requester: String,
    pub reason: String,
    /// The authenticated caller that sent it.
    pub caller: String,
    pub received_at: UnixMillis,
    pub due_at: UnixMillis,
    pub completed_at: Option<UnixMillis>,
    pub status: PrivacyRequestStatus,
    pub counts: ErasureCounts,
}

impl PrivacyRequest {
    pub fn is_overdue(&self, now: UnixMillis) -> bool {
        self.status != PrivacyRequestStatus::Completed && now > self.due_at
    }
}

/// The answer to an erasure.
#[derive(Debug, Clone, PartialEq)]
pub struct ErasureOutcome {
    /// False when nothing was left to erase.
    pub erased: bool,
    pub record: PrivacyRequest,
}

/// One read of a profile by an authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    pub profile: ProfileId,
    pub at: UnixMillis,
    pub caller: String,
    /// The gRPC method, e.g. `GetProfile`.
    pub method: String,
}
