//! Domain types shared by every layer. Pure: no I/O, no async, no generated
//! protobuf types.

mod consent;
mod identifier;
mod matching;
mod privacy;
mod profile;
mod segment;
mod time;
mod write;

pub use consent::{Channel, ConsentCall, ConsentView, Purpose, UnknownConsentTerm};
pub use identifier::{Identifier, IdentifierKind};
pub use matching::{
    CandidateReview, MatchCandidate, MatchEvidence, MatchPassOutcome, ReviewOutcome,
};
pub use privacy::{
    AccessEntry, ErasureCall, ErasureCounts, ErasureOutcome, PrivacyRequest, PrivacyRequestKind,
    PrivacyRequestStatus, Subject,
};
pub use profile::{
    EventView, IdentifierView, JournalKind, JournalView, ProfileId, ProfileView, Provenance,
    TraitView,
};
pub use segment::{
    CustomTraitRules, EventCounter, Membership, MembershipChange, MembershipRules, NoCustomTraits,
    ProfileFacts, SegmentDefinition, SegmentNumber, SegmentScope,
};
pub use time::{Clock, ManualClock, SystemClock, UnixMillis};
pub use write::{
    LinkBlocked, Resolution, UnmergeCall, UnmergeOutcome, WriteCall, WriteOutcome, WritePayload,
};
