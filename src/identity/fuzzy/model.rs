//! The Fellegi–Sunter model: per field and level, `m` (how often the level
//! fires between two records of one person) and `u` (how often it fires
//! between two different people). A level is worth `log2(m / u)` bits; a
//! pair's bits are the sum over its compared fields, and with the prior odds
//! that two records are one person they give the match probability.
//!
//! The parameters are estimated from the stored data ([`super::estimate`]);
//! until there is enough of it, [`MatchModel::prior`] stands in: weights of
//! the size such data usually gives, which the first estimate replaces.

use serde::{Deserialize, Serialize};

use super::compare::{Comparison, EXACT, FIELD_COUNT, Field, SWAPPED};

/// One level's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelParameters {
    pub name: String,
    /// P(level | the two are one person).
    pub m: f64,
    /// P(level | two different people).
    pub u: f64,
}

impl LevelParameters {
    pub fn bits(&self) -> f64 {
        (self.m / self.u).log2()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldParameters {
    pub field: String,
    pub levels: Vec<LevelParameters>,
}

/// The parameters every match decision is made with. Versioned, so that a
/// decision recorded with its version can be explained later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchModel {
    /// 0 for the prior; each estimate stored takes the next number.
    pub version: u64,
    /// When it was estimated (Unix ms); 0 for the prior.
    pub estimated_at_ms: i64,
    /// Profiles stored when it was estimated.
    pub population: u64,
    /// The share of new records that are another record of a person already
    /// stored: with the number of stored profiles, the prior odds that a
    /// record and one given profile are one person.
    pub duplicate_rate: f64,
    /// Random pairs `u` was counted on, and blocked pairs `m` was estimated on.
    pub random_pairs: u64,
    pub blocked_pairs: u64,
    pub fields: Vec<FieldParameters>,
}

/// Bounds on any one probability, so that no level is ever certain: a level
/// never seen among matches (or non-matches) in a sample may still occur.
pub const PROBABILITY_MIN: f64 = 1e-6;
/// The fewest profiles the prior odds assume; see [`MatchModel::prior_log2_odds`].
pub const PRIOR_POPULATION_MIN: u64 = 1_000;
/// Term-frequency weights stay within this factor of the level's average `u`:
/// one count in a small store is no reason for a name to weigh 20 bits.
const TERM_FREQUENCY_FACTOR_MAX: f64 = 64.0;
/// Profiles' worth of the average name frequency mixed into each name's
/// own, so that in a young store a name held by two of its three profiles
/// is not taken for the commonest name there is; as the store grows, the
/// counts take over.
const TERM_FREQUENCY_PRIOR_PROFILES: f64 = PRIOR_POPULATION_MIN as f64;

impl MatchModel {
    /// Weights of the size real customer data gives: names and addresses
    /// agree in 60–80 % of a person's record pairs and in well under 1 % of
    /// strangers'; a birthday is shared by about one stranger in 10,000.
    pub fn prior() -> MatchModel {
        #[rustfmt::skip]
        let table: [(Field, &[(f64, f64)]); FIELD_COUNT] = [
            (Field::FirstName, &[(0.70, 0.01), (0.05, 0.002), (0.08, 0.003), (0.01, 0.0005), (0.03, 0.01), (0.01, 0.002), (0.02, 0.0001), (0.10, 0.9724)]),
            (Field::LastName, &[(0.72, 0.005), (0.10, 0.002), (0.01, 0.0005), (0.03, 0.006), (0.02, 0.0001), (0.12, 0.9864)]),
            (Field::Birthday, &[(0.88, 0.0001), (0.04, 0.001), (0.02, 0.015), (0.06, 0.9839)]),
            (Field::PostalCode, &[(0.75, 0.002), (0.08, 0.01), (0.04, 0.03), (0.13, 0.958)]),
            (Field::StreetNumber, &[(0.75, 0.02), (0.25, 0.98)]),
            (Field::StreetName, &[(0.70, 0.002), (0.12, 0.002), (0.03, 0.05), (0.15, 0.946)]),
            (Field::Line2, &[(0.60, 0.002), (0.15, 0.002), (0.05, 0.05), (0.20, 0.946)]),
            (Field::City, &[(0.75, 0.005), (0.08, 0.002), (0.03, 0.01), (0.14, 0.983)]),
            (Field::State, &[(0.90, 0.25), (0.10, 0.75)]),
            (Field::Country, &[(0.97, 0.5), (0.03, 0.5)]),
            (Field::Email, &[(0.10, 0.000_01), (0.05, 0.0001), (0.85, 0.999_89)]),
        ];
        let fields = table
            .iter()
            .map(|(field, levels)| FieldParameters {
                field: field.name().to_owned(),
                levels: field
                    .levels()
                    .iter()
                    .zip(levels.iter())
                    .map(|(name, &(m, u))| LevelParameters {
                        name: (*name).to_owned(),
                        m,
                        u,
                    })
                    .collect(),
            })
            .collect();
        MatchModel {
            version: 0,
            estimated_at_ms: 0,
            population: 0,
            duplicate_rate: 0.2,
            random_pairs: 0,
            blocked_pairs: 0,
            fields,
        }
    }

    /// Whether the stored parameters fit the fields and levels this build
    /// compares; a model from another layout is replaced by the prior.
    pub fn fits_layout(&self) -> bool {
        self.fields.len() == FIELD_COUNT
            && Field::ALL.iter().zip(&self.fields).all(|(field, stored)| {
                stored.field == field.name()
                    && stored.levels.len() == field.level_count()
                    && stored
                        .levels
                        .iter()
                        .zip(field.levels())
                        .all(|(level, name)| level.name == *name && valid(level))
            })
            && (0.0..1.0).contains(&self.duplicate_rate)
    }

    pub fn level(&self, field: Field, level: u8) -> Option<&LevelParameters> {
        self.fields
            .get(field.index())?
            .levels
            .get(usize::from(level))
    }

    /// Prior log2-odds that a new record and one given stored profile are
    /// one person, among `population` stored profiles. A young store is
    /// taken to hold at least [`PRIOR_POPULATION_MIN`] profiles: its first
    /// records come from a customer base far larger than what it has seen
    /// so far, and odds of one in three that a record is the only other
    /// Jane Doe stored would merge namesakes.
    pub fn prior_log2_odds(&self, population: u64) -> f64 {
        let population = population.max(PRIOR_POPULATION_MIN) as f64;
        let per_profile = (self.duplicate_rate / population).clamp(1e-12, 0.5);
        (per_profile / (1.0 - per_profile)).log2()
    }

    /// Scores a comparison. `name_frequencies` gives, for an exact name,
    /// the share of profiles holding it, so a shared `Smith` weighs less
    /// than a shared `Oduya`.
    pub fn score(
        &self,
        comparison: &Comparison,
        name_frequencies: &NameFrequencies,
        population: u64,
    ) -> MatchScore {
        let prior_log2_odds = self.prior_log2_odds(population);
        let mut evidence = Vec::new();
        for field in Field::ALL {
            let Some(level) = comparison[field.index()] else {
                continue;
            };
            let Some(parameters) = self.level(field, level) else {
                continue;
            };
            let mut bits = if repeats_the_swap(comparison, field) {
                0.0
            } else {
                parameters.bits()
            };
            let term_frequency = match field {
                Field::FirstName => name_frequencies.first_name,
                Field::LastName => name_frequencies.last_name,
                _ => None,
            };
            if let Some(frequency) = term_frequency.filter(|_| parameters.name == EXACT) {
                let u = adjusted_u(parameters.u, frequency);
                bits = (parameters.m / u).log2();
            }
            evidence.push(FieldEvidence {
                field,
                level: field.levels()[usize::from(level)],
                bits,
            });
        }
        let adjustments = Vec::new();
        let bits = evidence.iter().map(|item| item.bits).sum::<f64>()
            + adjustments.iter().map(|(_, bits)| bits).sum::<f64>();
        MatchScore {
            bits,
            probability: probability(bits + prior_log2_odds),
            evidence,
            adjustments,
            prior_log2_odds,
            model_version: self.version,
        }
    }
}

/// A swap of given and family name is one event seen from both fields:
/// both crossings must agree for either field to fire `swapped`, so the
/// level's `u` (from random pairs) and `m` (from matches) already describe
/// the pair of names. The given name carries the evidence; the family
/// name's level repeats it and counts nothing, else a swap would weigh
/// twice what two names copied straight do.
pub(crate) fn repeats_the_swap(comparison: &Comparison, field: Field) -> bool {
    let swapped_in = |field: Field| {
        comparison[field.index()].is_some()
            && comparison[field.index()] == field.level_index(SWAPPED)
    };
    field == Field::LastName && swapped_in(Field::LastName) && swapped_in(Field::FirstName)
}

fn valid(level: &LevelParameters) -> bool {
    (PROBABILITY_MIN..=1.0).contains(&level.m) && (PROBABILITY_MIN..=1.0).contains(&level.u)
}

/// The `u` of an exact name agreement for a name held by `frequency` of
/// profiles (observed in a store of `profiles`), shrunk toward the level's
/// average `u` and kept within a bounded factor of it.
fn adjusted_u(average_u: f64, frequency: NameFrequency) -> f64 {
    let observed = frequency.holders as f64 + TERM_FREQUENCY_PRIOR_PROFILES * average_u;
    let share = observed / (frequency.profiles as f64 + TERM_FREQUENCY_PRIOR_PROFILES);
    share.clamp(
        average_u / TERM_FREQUENCY_FACTOR_MAX,
        (average_u * TERM_FREQUENCY_FACTOR_MAX).min(1.0),
    )
}

pub(crate) fn probability(log2_odds: f64) -> f64 {
    1.0 / (1.0 + (-log2_odds).exp2())
}

/// How many stored profiles hold a name, out of how many with names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameFrequency {
    pub holders: u64,
    pub profiles: u64,
}

/// The frequencies of the names two records share exactly, where known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NameFrequencies {
    pub first_name: Option<NameFrequency>,
    pub last_name: Option<NameFrequency>,
}

/// What one field contributed.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldEvidence {
    pub field: Field,
    /// The comparison level that fired.
    pub level: &'static str,
    /// Bits of evidence: positive for agreement, negative against.
    pub bits: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MatchScore {
    /// Sum of the fields' bits (the match weight).
    pub bits: f64,
    /// Probability that the two are one person, given the prior odds.
    pub probability: f64,
    pub evidence: Vec<FieldEvidence>,
    /// Evidence from beyond single fields, in bits: the address cap, a
    /// refused link.
    pub adjustments: Vec<(&'static str, f64)>,
    /// The prior odds the probability was computed with.
    pub prior_log2_odds: f64,
    /// The model version the score was computed with.
    pub model_version: u64,
}

impl MatchScore {
    /// The score with evidence from outside the compared fields added.
    pub fn with_adjustment(mut self, name: &'static str, bits: f64) -> MatchScore {
        self.bits += bits;
        self.adjustments.push((name, bits));
        self.probability = probability(self.bits + self.prior_log2_odds);
        self
    }

    /// The level each field fired at, as compared.
    pub fn comparison(&self) -> Comparison {
        let mut comparison: Comparison = [None; FIELD_COUNT];
        for item in &self.evidence {
            comparison[item.field.index()] = item.field.level_index(item.level);
        }
        comparison
    }

    pub fn level_of(&self, field: Field) -> Option<&'static str> {
        self.evidence
            .iter()
            .find(|item| item.field == field)
            .map(|item| item.level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::fuzzy::compare::compare;
    use crate::identity::fuzzy::fields::MatchFields;
    use serde_json::json;

    #[test]
    fn the_prior_fits_the_layout_and_every_level_weighs_something() {
        let model = MatchModel::prior();
        assert!(model.fits_layout());
        for field in &model.fields {
            let total_m: f64 = field.levels.iter().map(|level| level.m).sum();
            let total_u: f64 = field.levels.iter().map(|level| level.u).sum();
            assert!(
                (total_m - 1.0).abs() < 1e-6,
                "{}: m sums to {total_m}",
                field.field
            );
            assert!(
                (total_u - 1.0).abs() < 1e-6,
                "{}: u sums to {total_u}",
                field.field
            );
        }
    }

    #[test]
    fn a_common_name_weighs_less_than_a_rare_one() {
        let model = MatchModel::prior();
        let a = MatchFields::from_traits(json!({"last_name": "Smith"}).as_object().unwrap());
        let comparison = compare(&a, &a);
        let frequencies = |holders| NameFrequencies {
            first_name: None,
            last_name: Some(NameFrequency {
                holders,
                profiles: 100_000,
            }),
        };
        let common = model.score(&comparison, &frequencies(2_000), 100_000);
        let rare = model.score(&comparison, &frequencies(2), 100_000);
        assert!(
            rare.bits > common.bits + 4.0,
            "{} vs {}",
            rare.bits,
            common.bits
        );
    }

    #[test]
    fn missing_fields_add_nothing() {
        let model = MatchModel::prior();
        let score = model.score(&[None; FIELD_COUNT], &NameFrequencies::default(), 1_000);
        assert_eq!(score.bits, 0.0);
        assert!(score.probability < 0.001);
    }
}
