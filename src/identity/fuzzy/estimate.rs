//! Estimating the model from stored data, the way Splink trains one:
//!
//! - `u` from random pairs of stored records: nearly all of them are two
//!   different people, so how often a level fires among them is `u`.
//! - `m` by expectation–maximisation over the pairs each blocking rule
//!   brings together, one rule at a time. A rule's pairs agree on the
//!   rule's own fields by construction, so those fields say nothing there
//!   and are left out of that rule's estimate; each field's `m` is the
//!   average over the rules that do not block on it.
//! - the duplicate rate from the final model's posterior over all sampled
//!   blocked pairs.
//!
//! Both counts are mixed with the prior (or previous) model through
//! pseudo-counts, so a small sample moves the weights only as far as it
//! can support, and a level never observed keeps a non-zero probability.

use std::collections::BTreeSet;

use super::blocking::BlockingRule;
use super::compare::{Comparison, ELSE, EXACT, FIELD_COUNT, Field};
use super::model::{LevelParameters, MatchModel, PROBABILITY_MIN, repeats_the_swap};

/// Random pairs' worth of the previous `u` mixed into the new one.
const U_PRIOR_PAIRS: f64 = 1_000.0;
/// Matching pairs' worth of the previous `m` mixed into the new one.
const M_PRIOR_PAIRS: f64 = 20.0;
/// Expectation–maximisation rounds; it settles within a few dozen.
const EM_ROUNDS_MAX: usize = 40;
const EM_CONVERGED_DELTA: f64 = 1e-5;
/// The duplicate rate stays within these bounds: outside them the prior
/// odds would either forbid all merges or allow weak ones.
const DUPLICATE_RATE_MIN: f64 = 0.01;
const DUPLICATE_RATE_MAX: f64 = 0.5;
/// Fewer sampled pairs than this under a rule make its estimate noise.
const RULE_PAIRS_MIN: usize = 20;
/// Fewer random pairs than this leave `u` as it was: a handful of stored
/// profiles say nothing about how often strangers agree.
const RANDOM_PAIRS_MIN: usize = 1_000;
/// Fewer distinct blocked pairs than this leave the duplicate rate as it was.
const DISTINCT_BLOCKED_PAIRS_MIN: usize = 50;

/// The comparisons a training run collected from the store.
#[derive(Debug, Default, Clone)]
pub struct TrainingSample {
    /// Pairs of randomly chosen stored variants.
    pub random_pairs: Vec<Comparison>,
    /// Per blocking rule, the variant pairs that share one of its keys.
    pub blocked: Vec<(BlockingRule, Vec<Comparison>)>,
    /// The blocked pairs of all rules, each pair once.
    pub distinct_blocked: Vec<Comparison>,
    /// Variants in the part of the store the blocked pairs were drawn from.
    pub variants_stored: u64,
    /// Profiles stored when the sample was taken.
    pub population: u64,
}

/// Estimates a new model from `sample`, starting from (and shrunk toward)
/// `previous`.
pub fn estimate(sample: &TrainingSample, previous: &MatchModel, at_ms: i64) -> MatchModel {
    let mut model = previous.clone();
    if sample.random_pairs.len() >= RANDOM_PAIRS_MIN {
        estimate_u(&mut model, previous, &sample.random_pairs);
    }

    let mut m_sums = vec![Vec::<f64>::new(); FIELD_COUNT];
    let mut m_weights = [0.0f64; FIELD_COUNT];
    for field in Field::ALL {
        m_sums[field.index()] = vec![0.0; field.level_count()];
    }
    for (rule, pairs) in &sample.blocked {
        if pairs.len() < RULE_PAIRS_MIN {
            continue;
        }
        let skipped: BTreeSet<Field> = rule.fields().iter().copied().collect();
        let m = expectation_maximisation(&model, pairs, &skipped);
        if describes_households(&m, &skipped) {
            continue;
        }
        for field in Field::ALL {
            if skipped.contains(&field) {
                continue;
            }
            let observed: f64 = m[field.index()].iter().sum();
            if observed <= 0.0 {
                continue;
            }
            // Weighted by the matches that compared the field, so a rule
            // whose pairs rarely carry it says little about it.
            for (sum, count) in m_sums[field.index()].iter_mut().zip(&m[field.index()]) {
                *sum += count;
            }
            m_weights[field.index()] += observed;
        }
    }
    for field in Field::ALL {
        let index = field.index();
        let total = m_weights[index] + M_PRIOR_PAIRS;
        for (level, previous_level) in model.fields[index]
            .levels
            .iter_mut()
            .zip(&previous.fields[index].levels)
        {
            let level_index = field
                .level_index(&level.name)
                .map(usize::from)
                .unwrap_or_default();
            let observed = m_sums[index].get(level_index).copied().unwrap_or(0.0);
            level.m = ((observed + M_PRIOR_PAIRS * previous_level.m) / total).max(PROBABILITY_MIN);
        }
        normalise(&mut model.fields[index].levels, |level| &mut level.m);
    }

    let union = &sample.distinct_blocked;
    if sample.variants_stored > 0 && union.len() >= DISTINCT_BLOCKED_PAIRS_MIN {
        let expected_matches = match_share(&model, union) * union.len() as f64;
        model.duplicate_rate = (expected_matches / sample.variants_stored as f64)
            .clamp(DUPLICATE_RATE_MIN, DUPLICATE_RATE_MAX);
    }
    model.version = previous.version + 1;
    model.estimated_at_ms = at_ms;
    model.population = sample.population;
    model.random_pairs = sample.random_pairs.len() as u64;
    model.blocked_pairs = union.len() as u64;
    model
}

/// Whether the class EM found agrees on a person's given name or birthday
/// less often than it disagrees. A rule blocking on what a household
/// shares (family name and address) brings its members together by the
/// hundred, and EM can settle on "same household" rather than "same
/// person": then the given name and the birthday, which tell family
/// members apart, look like mere noise and relatives merge. One person's
/// records agree on both far more often than not, typos and all, so such
/// an estimate is left out.
fn describes_households(m: &[Vec<f64>], skipped: &BTreeSet<Field>) -> bool {
    [Field::FirstName, Field::Birthday]
        .into_iter()
        .filter(|field| !skipped.contains(field))
        .any(|field| {
            let count = |level: &str| {
                field
                    .level_index(level)
                    .and_then(|index| m[field.index()].get(usize::from(index)))
                    .copied()
                    .unwrap_or(0.0)
            };
            count(ELSE) > count(EXACT)
        })
}

fn estimate_u(model: &mut MatchModel, previous: &MatchModel, pairs: &[Comparison]) {
    for field in Field::ALL {
        let index = field.index();
        let mut counts = vec![0.0f64; field.level_count()];
        for comparison in pairs {
            if let Some(level) = comparison[index] {
                if let Some(count) = counts.get_mut(usize::from(level)) {
                    *count += 1.0;
                }
            }
        }
        let compared: f64 = counts.iter().sum();
        let total = compared + U_PRIOR_PAIRS;
        for ((level, previous_level), count) in model.fields[index]
            .levels
            .iter_mut()
            .zip(&previous.fields[index].levels)
            .zip(&counts)
        {
            level.u = ((count + U_PRIOR_PAIRS * previous_level.u) / total).max(PROBABILITY_MIN);
        }
        normalise(&mut model.fields[index].levels, |level| &mut level.u);
    }
}

/// The share of matches among `pairs` under `model`'s `m` and `u`: EM over
/// the share alone.
fn match_share(model: &MatchModel, pairs: &[Comparison]) -> f64 {
    let mut share: f64 = 0.5;
    for _ in 0..EM_ROUNDS_MAX {
        let next = pairs
            .iter()
            .map(|comparison| posterior(model, comparison, &BTreeSet::new(), share))
            .sum::<f64>()
            / pairs.len() as f64;
        let next = next.clamp(1e-6, 1.0 - 1e-6);
        let converged = (next - share).abs() < EM_CONVERGED_DELTA;
        share = next;
        if converged {
            break;
        }
    }
    share
}

/// Runs EM with `u` fixed over one rule's pairs. Returns the expected
/// matching count per field and level.
fn expectation_maximisation(
    model: &MatchModel,
    pairs: &[Comparison],
    skipped: &BTreeSet<Field>,
) -> Vec<Vec<f64>> {
    let mut current = model.clone();
    let mut match_share = 0.5;
    let mut counts = vec![Vec::new(); FIELD_COUNT];
    for _ in 0..EM_ROUNDS_MAX {
        for field in Field::ALL {
            counts[field.index()] = vec![0.0; field.level_count()];
        }
        let mut matches = 0.0;
        for comparison in pairs {
            let weight = posterior(&current, comparison, skipped, match_share);
            matches += weight;
            for field in Field::ALL {
                if let Some(level) = comparison[field.index()] {
                    if let Some(count) = counts[field.index()].get_mut(usize::from(level)) {
                        *count += weight;
                    }
                }
            }
        }
        let mut delta: f64 = 0.0;
        for field in Field::ALL {
            if skipped.contains(&field) {
                continue;
            }
            let index = field.index();
            let compared: f64 = counts[index].iter().sum();
            if compared <= 0.0 {
                continue;
            }
            for (level, count) in current.fields[index].levels.iter_mut().zip(&counts[index]) {
                let m = (count / compared).max(PROBABILITY_MIN);
                delta = delta.max((m - level.m).abs());
                level.m = m;
            }
        }
        let share = (matches / pairs.len() as f64).clamp(1e-6, 1.0 - 1e-6);
        delta = delta.max((share - match_share).abs());
        match_share = share;
        if delta < EM_CONVERGED_DELTA {
            break;
        }
    }
    counts
}

/// P(match | comparison) with prior share `match_share` of matches among
/// the pairs, ignoring `skipped` fields.
fn posterior(
    model: &MatchModel,
    comparison: &Comparison,
    skipped: &BTreeSet<Field>,
    match_share: f64,
) -> f64 {
    let mut log2_odds = (match_share / (1.0 - match_share)).log2();
    for field in Field::ALL {
        if skipped.contains(&field) {
            continue;
        }
        if repeats_the_swap(comparison, field) {
            continue;
        }
        if let Some(parameters) =
            comparison[field.index()].and_then(|level| model.level(field, level))
        {
            log2_odds += parameters.bits();
        }
    }
    1.0 / (1.0 + (-log2_odds.clamp(-60.0, 60.0)).exp2())
}

fn normalise(levels: &mut [LevelParameters], value: impl Fn(&mut LevelParameters) -> &mut f64) {
    let total: f64 = levels.iter_mut().map(|level| *value(level)).sum();
    if total > 0.0 {
        for level in levels {
            *value(level) /= total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::fuzzy::compare::compare;
    use crate::identity::fuzzy::fields::MatchFields;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    /// A population of people whose records agree on each field with a
    /// known probability, compared as the store would sample them.
    fn sample_of(people: usize, agreement: f64, seed: u64) -> (TrainingSample, Vec<MatchFields>) {
        let mut rng = SmallRng::seed_from_u64(seed);
        // Names of random letters: digits are not part of a name.
        let word = |rng: &mut SmallRng, letters: usize| -> String {
            (0..letters)
                .map(|_| char::from(rng.random_range(b'a'..=b'z')))
                .collect()
        };
        let person = |rng: &mut SmallRng, index: usize| {
            let street = format!(
                "{} {} street",
                rng.random_range(1..200),
                ["oak", "elm", "high", "mill"][index % 4]
            );
            json!({
                "first_name": word(rng, 6),
                "last_name": word(rng, 8),
                "birthday": format!("19{:02}-{:02}-{:02}", rng.random_range(30..99), rng.random_range(1..13), rng.random_range(1..29)),
                "address": {"street": street, "postal_code": format!("{}", rng.random_range(2000..8000))},
            })
        };
        let mut records = Vec::new();
        let mut pairs = Vec::new();
        for index in 0..people {
            let original = person(&mut rng, index);
            let mut copy = original.clone();
            for field in ["first_name", "last_name", "birthday"] {
                if rng.random_bool(1.0 - agreement) {
                    copy[field] = person(&mut rng, index)[field].clone();
                }
            }
            let a = MatchFields::from_traits(original.as_object().unwrap());
            let b = MatchFields::from_traits(copy.as_object().unwrap());
            pairs.push(compare(&a, &b));
            records.push(a);
            records.push(b);
        }
        let random_pairs = (0..5_000)
            .map(|_| {
                let a = &records[rng.random_range(0..records.len())];
                let b = &records[rng.random_range(0..records.len())];
                compare(a, b)
            })
            .collect();
        // Each rule sees the true pairs plus as many strangers' pairs.
        let blocked = [BlockingRule::PostalCodeStreetNumber, BlockingRule::Birthday]
            .into_iter()
            .map(|rule| {
                let mut rule_pairs = pairs.clone();
                for _ in 0..pairs.len() {
                    let a = &records[rng.random_range(0..records.len())];
                    let b = &records[rng.random_range(0..records.len())];
                    rule_pairs.push(compare(a, b));
                }
                (rule, rule_pairs)
            })
            .collect();
        let distinct_blocked = pairs.clone();
        let sample = TrainingSample {
            random_pairs,
            blocked,
            distinct_blocked,
            variants_stored: records.len() as u64,
            population: records.len() as u64,
        };
        (sample, records)
    }

    #[test]
    fn m_is_recovered_from_unlabelled_pairs() {
        let (sample, _) = sample_of(2_000, 0.8, 7);
        let model = estimate(&sample, &MatchModel::prior(), 1);
        let exact = |field: Field| model.level(field, 0).expect("an exact level").m;
        for field in [Field::FirstName, Field::LastName] {
            let m = exact(field);
            assert!((m - 0.8).abs() < 0.05, "{}: m(exact) {m}", field.name());
        }
        assert_eq!(model.version, 1);
        assert!(model.fits_layout());
    }

    #[test]
    fn a_class_that_disagrees_on_given_names_is_taken_for_households() {
        let counts = |field: Field, exact: f64, other: f64| {
            let mut levels = vec![0.0; field.level_count()];
            levels[usize::from(field.level_index(EXACT).expect("exact"))] = exact;
            levels[usize::from(field.level_index(ELSE).expect("else"))] = other;
            levels
        };
        let m_of = |first: (f64, f64), birthday: (f64, f64)| -> Vec<Vec<f64>> {
            Field::ALL
                .iter()
                .map(|&field| match field {
                    Field::FirstName => counts(field, first.0, first.1),
                    Field::Birthday => counts(field, birthday.0, birthday.1),
                    _ => vec![0.0; field.level_count()],
                })
                .collect()
        };
        let none = BTreeSet::new();
        assert!(!describes_households(
            &m_of((80.0, 5.0), (70.0, 10.0)),
            &none
        ));
        assert!(describes_households(
            &m_of((13.0, 70.0), (70.0, 10.0)),
            &none
        ));
        assert!(describes_households(
            &m_of((80.0, 5.0), (18.0, 80.0)),
            &none
        ));
        // A rule blocking on the birthday says nothing about it.
        let birthday = BTreeSet::from([Field::Birthday]);
        assert!(!describes_households(
            &m_of((80.0, 5.0), (18.0, 80.0)),
            &birthday
        ));
    }

    #[test]
    fn an_empty_sample_keeps_the_previous_weights() {
        let prior = MatchModel::prior();
        let model = estimate(&TrainingSample::default(), &prior, 1);
        for (new, old) in model.fields.iter().zip(&prior.fields) {
            for (a, b) in new.levels.iter().zip(&old.levels) {
                assert!((a.m - b.m).abs() < 1e-9 && (a.u - b.u).abs() < 1e-9);
            }
        }
    }
}
