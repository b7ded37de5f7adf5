//! Identity resolution rules: how identifiers are normalized and how the
//! profiles they point at are combined, protected against over-merging.
//! Pure: no I/O, not async; the store applies the decisions made here.

pub mod fuzzy;
mod normalize;
mod resolve;
mod rules;

pub use normalize::{NormalizeError, Normalizer};
pub use resolve::{
    BlockReason, BlockedLink, KnownProfile, ResolutionPlan, incoming_trait_wins, merge_allowed,
    plan_resolution,
};
pub use rules::MergeRules;
