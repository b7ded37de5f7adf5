//! Domain types shared by every layer. Pure: no I/O, no async, no generated
//! protobuf types.

mod identifier;
mod profile;
mod time;
mod write;

pub use identifier::{Identifier, IdentifierKind};
pub use profile::{
    EventView, IdentifierView, JournalKind, JournalView, ProfileId, ProfileView, Provenance,
    TraitView,
};
pub use time::{Clock, SystemClock, UnixMillis};
pub use write::{
    LinkBlocked, Resolution, UnmergeCall, UnmergeOutcome, WriteCall, WriteOutcome, WritePayload,
};
