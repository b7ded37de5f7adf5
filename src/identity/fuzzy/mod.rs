//! Fuzzy matching: finding profiles that share no identifier but are likely
//! the same person (design §2.5). Pure: no I/O, not async.
//!
//! A Fellegi–Sunter model. Two records are compared field by field
//! ([`compare`]); each field's outcome is a comparison level, worth
//! `log2(m / u)` bits, where `m` is how often the level fires between two
//! records of one person and `u` how often between two different people.
//! The bits of a pair and the prior odds that two records are one person
//! give a match probability, and [`decide`] acts on it: merge, review, or
//! leave alone.
//!
//! Nothing here is tuned to one dataset. `m`, `u` and the share of
//! duplicates are estimated from the stored data ([`estimate`]): `u` from
//! random pairs, `m` by expectation–maximisation over the pairs blocking
//! brings together, and common names weigh less than rare ones by their
//! counted frequency. Until the store holds enough data,
//! [`MatchModel::prior`] stands in.
//!
//! The store indexes every profile by its [`blocking_keys`], scores the
//! profiles that share a key with a changed one ([`score_profiles`], over
//! every variant each holds) and persists the model and the variants; it
//! decides nothing itself.
//!
//! Module map: `fields` (normalized values and variants), `names`
//! (nicknames and phonetic codes), `compare` (levels), `blocking` (keys),
//! `model` (weights and scores), `estimate` (training), `decide`.

mod blocking;
mod compare;
mod decide;
mod estimate;
mod fields;
mod model;
mod names;

pub use blocking::{BlockingRule, blocking_keys, variant_keys};
pub use compare::{Comparison, FIELD_COUNT, Field, compare};
pub use decide::{MatchDecision, MatchThresholds, decide, possibly_relatives, score_profiles};
pub use estimate::{TrainingSample, estimate};
pub use fields::{MatchFields, MatchProfile, VARIANTS_MAX};
pub use model::{
    FieldEvidence, FieldParameters, LevelParameters, MatchModel, MatchScore, NameFrequencies,
    NameFrequency,
};

/// The keys under which a variant's names are counted (`g:<given name>`,
/// with nicknames folded to one name, and `l:<last name>`), for the
/// term-frequency weights. Like blocking keys, they hold personal data.
pub fn name_count_keys(fields: &MatchFields) -> Option<[String; 2]> {
    let given = names::canonical_name(fields.first_name()?);
    let last = fields.last_name()?;
    Some([format!("g:{given}"), format!("l:{last}")])
}

/// The count key of a first name, as [`name_count_keys`] writes it.
pub fn first_name_count_key(name: &str) -> String {
    format!("g:{}", names::canonical_name(name))
}

/// The count key of a last name, as [`name_count_keys`] writes it.
pub fn last_name_count_key(name: &str) -> String {
    format!("l:{name}")
}
