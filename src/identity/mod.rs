//! Identity resolution rules: how identifiers are normalized and how the
//! profiles they point at are combined. Pure: no I/O, not async; the store
//! applies the decisions made here.

mod normalize;
mod resolve;

pub use normalize::{NormalizeError, Normalizer};
pub use resolve::{ResolutionPlan, incoming_trait_wins, plan_resolution};
