//! Decisions in probability: a pair whose match probability reaches the
//! automatic threshold merges, one between the thresholds waits for a
//! reviewer, the rest are left alone.

use super::compare::{ELSE, EXACT, Field, SWAPPED, compare};
use super::fields::{MatchFields, MatchProfile};
use super::model::{MatchModel, MatchScore, NameFrequencies, probability};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchThresholds {
    /// Probability at or above which a pair merges automatically.
    pub auto_merge: f64,
    /// Probability at or above which a pair is listed for review.
    pub review: f64,
}

impl Default for MatchThresholds {
    /// Automatic merges at 0.999 keep the expected share of wrong merges
    /// under one in a thousand, whatever the data: the probability is
    /// calibrated by the estimated model, not by a hand-set score.
    fn default() -> Self {
        MatchThresholds {
            auto_merge: 0.999,
            review: 0.5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchDecision {
    AutoMerge,
    Review,
    NoMatch,
}

/// The best-scoring pair of variants between two profiles: a profile is
/// matched on every value it was known by.
pub fn score_profiles(
    model: &MatchModel,
    a: &MatchProfile,
    b: &MatchProfile,
    frequencies: &dyn Fn(&MatchFields, &MatchFields) -> NameFrequencies,
    population: u64,
) -> Option<MatchScore> {
    let mut best: Option<MatchScore> = None;
    for variant_a in a.variants() {
        for variant_b in b.variants() {
            let comparison = compare(variant_a, variant_b);
            let score = model.score(&comparison, &frequencies(variant_a, variant_b), population);
            if best
                .as_ref()
                .is_none_or(|current| score.bits > current.bits)
            {
                best = Some(score);
            }
        }
    }
    best
}

pub fn decide(score: &MatchScore, thresholds: &MatchThresholds) -> MatchDecision {
    if score.probability < thresholds.review {
        return MatchDecision::NoMatch;
    }
    if !possibly_relatives(score) {
        return if score.probability >= thresholds.auto_merge {
            MatchDecision::AutoMerge
        } else {
            MatchDecision::Review
        };
    }
    if within_household_probability(score) >= thresholds.review {
        MatchDecision::Review
    } else {
        MatchDecision::NoMatch
    }
}

/// People sharing a home without sharing a family name (flatmates, a
/// couple), whose records a shared device may also link: both names
/// disagree outright, so do the birthdays where both are known, and the
/// address agrees. The address's bits, summed over fields that move
/// together, are then no sign of one person. One person's record with
/// both names garbled still shares the birthday.
fn possibly_housemates(score: &MatchScore) -> bool {
    let level = |field| score.level_of(field);
    let names_differ = level(Field::FirstName) == Some(ELSE)
        && level(Field::LastName) == Some(ELSE)
        && !matches!(
            level(Field::Birthday),
            Some(EXACT | "one_digit_or_transposed")
        );
    let same_street = matches!(level(Field::StreetName), Some(EXACT | "jaro_winkler_0.90"));
    let same_number = level(Field::StreetNumber) == Some(EXACT);
    let shares_an_address = match level(Field::PostalCode) {
        Some(EXACT) => same_street || same_number,
        None => same_street && same_number,
        Some(_) => false,
    };
    names_differ && shares_an_address
}

/// Fields that members of one household share, and so say nothing about
/// which member a record is.
const HOUSEHOLD_FIELDS: [Field; 8] = [
    Field::LastName,
    Field::PostalCode,
    Field::StreetNumber,
    Field::StreetName,
    Field::Line2,
    Field::City,
    Field::State,
    Field::Country,
];
/// Prior log2 odds that two records of one household are one person: a
/// household holds a few people.
const HOUSEHOLD_PRIOR_LOG2_ODDS: f64 = -1.6;

/// The probability that two possible relatives are one person, judged as
/// two records of one household: by the fields that tell its members apart
/// (given name, birthday, contact details), the household's own fields
/// left out. Members whose given names, birthdays or emails disagree then
/// never reach a reviewer, who would only ever reject them.
fn within_household_probability(score: &MatchScore) -> f64 {
    let bits: f64 = score
        .evidence
        .iter()
        .filter(|item| !HOUSEHOLD_FIELDS.contains(&item.field))
        .map(|item| item.bits)
        .sum::<f64>()
        + score.adjustments.iter().map(|(_, bits)| bits).sum::<f64>();
    probability(bits + HOUSEHOLD_PRIOR_LOG2_ODDS)
}

/// Relatives look like one person in every field that describes a
/// household: family name and address. The model treats fields as
/// independent, which members of one household are not, so the many bits
/// of a shared home say nothing about whether two of its members are one
/// person. What tells them apart is the given name with the birthday:
///
/// - given names and birthdays both disagree outright: two members of a
///   family (a parent and child, siblings);
/// - twins share the birthday too, and then only contact details of their
///   own tell them apart: when both profiles hold an email and neither is a
///   mistyped copy of the other, different given names are two people;
/// - without a birthday to compare, the same holds: different given names
///   with emails of their own are two members of the household.
///
/// Such a pair is never merged automatically: it is judged as two records
/// of one household (`within_household_probability`) and left to a
/// reviewer only when the fields that tell members apart lean toward one
/// person. Records
/// without contact details (an in-store form) that differ only in the
/// given name are as often one person with a mistyped or misheard name,
/// and the model decides them like any other pair.
pub fn possibly_relatives(score: &MatchScore) -> bool {
    let family_name_agrees = matches!(
        score.level_of(Field::LastName),
        Some(EXACT | "jaro_winkler_0.92")
    );
    if !family_name_agrees {
        return possibly_housemates(score);
    }
    let given_name = score.level_of(Field::FirstName);
    let own_emails = score.level_of(Field::Email) == Some(ELSE);
    match score.level_of(Field::Birthday) {
        Some(EXACT) | None => given_name == Some(ELSE) && own_emails,
        // Siblings' names are often alike (Daniel, Danielle; Emma, Emily):
        // with different birthdays, only the same name or a nickname of it
        // is the same person's. A parent and a child named after them share
        // the given name as well; birthdays years apart with emails of
        // their own are then the two of them.
        Some(birthday @ ("same_year" | ELSE)) => {
            let named_apart = !matches!(given_name, Some(EXACT | "nickname" | SWAPPED) | None);
            named_apart || (birthday == ELSE && own_emails)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn profile(value: serde_json::Value) -> MatchProfile {
        MatchProfile::new(MatchFields::from_traits(value.as_object().unwrap()), [])
    }

    fn no_frequencies(_: &MatchFields, _: &MatchFields) -> NameFrequencies {
        NameFrequencies::default()
    }

    #[test]
    fn household_members_without_birthdays_but_with_their_own_emails_wait_for_a_reviewer() {
        let address = json!({"street": "9 Mill Lane", "city": "Leeds", "postal_code": "LS1 4AP"});
        let member = |first: &str, email: &str| {
            let fields = MatchFields::from_traits(
                json!({"first_name": first, "last_name": "Parker", "address": address})
                    .as_object()
                    .unwrap(),
            );
            MatchProfile::new(fields.with_emails([email]), [])
        };
        let model = MatchModel::prior();
        let score = score_profiles(
            &model,
            &member("Ann", "ann.p@example.com"),
            &member("Thomas", "tom.parker61@example.org"),
            &no_frequencies,
            1_000,
        )
        .unwrap();
        assert!(possibly_relatives(&score), "{score:?}");
        let thresholds = MatchThresholds::default();
        assert_ne!(decide(&score, &thresholds), MatchDecision::AutoMerge);
    }

    #[test]
    fn twins_wait_for_a_reviewer_however_much_else_agrees() {
        let address = json!({"street": "9 Mill Lane", "city": "Leeds", "postal_code": "LS1 4AP"});
        let twin = |first: &str, email: &str| {
            let fields = MatchFields::from_traits(
                json!({"first_name": first, "last_name": "Parker", "birthday": "2001-06-09", "address": address})
                    .as_object()
                    .unwrap(),
            );
            MatchProfile::new(fields.with_emails([email]), [])
        };
        let ann = twin("Ann", "ann.p@example.com");
        let tom = twin("Thomas", "tom.parker@example.org");
        let model = MatchModel::prior();
        let score = score_profiles(&model, &ann, &tom, &no_frequencies, 1_000).unwrap();
        assert!(
            score.probability > 0.999,
            "the model alone would merge them"
        );
        assert_eq!(
            decide(&score, &MatchThresholds::default()),
            MatchDecision::Review
        );
    }

    #[test]
    fn members_of_one_household_wait_for_a_reviewer() {
        let address = json!({"street": "9 Mill Lane", "city": "Leeds", "postal_code": "LS1 4AP"});
        let mother = profile(
            json!({"first_name": "Margaret", "last_name": "Okafor", "birthday": "1968-02-11", "address": address}),
        );
        let son = profile(
            json!({"first_name": "Daniel", "last_name": "Okafor", "birthday": "1995-09-30", "address": address}),
        );
        let model = MatchModel::prior();
        let score = score_profiles(&model, &mother, &son, &no_frequencies, 1_000).unwrap();
        assert_ne!(
            decide(&score, &MatchThresholds::default()),
            MatchDecision::AutoMerge
        );
    }

    #[test]
    fn a_parent_and_a_child_of_one_name_with_emails_of_their_own_wait_for_a_reviewer() {
        let address =
            json!({"street": "119 New Road", "city": "Aberdeen", "postal_code": "AB21 2LD"});
        let member = |birthday: &str, email: &str| {
            let fields = MatchFields::from_traits(
                json!({"first_name": "Jordan", "last_name": "Williamson", "birthday": birthday, "address": address})
                    .as_object()
                    .unwrap(),
            );
            MatchProfile::new(fields.with_emails([email]), [])
        };
        let model = MatchModel::prior();
        let thresholds = MatchThresholds::default();
        let father = member("1951-07-21", "jordan.williamson@example.com");
        let son = member("1969-06-09", "jwilliamson64@example.org");
        let score = score_profiles(&model, &father, &son, &no_frequencies, 1_000).unwrap();
        assert!(
            score.probability > 0.999,
            "the model alone would merge them"
        );
        assert_eq!(decide(&score, &thresholds), MatchDecision::Review);

        // One person whose birthday was mistyped in a digit is still one.
        let mistyped = member("1951-07-27", "jwilliamson64@example.org");
        let score = score_profiles(&model, &father, &mistyped, &no_frequencies, 1_000).unwrap();
        assert_eq!(decide(&score, &thresholds), MatchDecision::AutoMerge);
    }

    #[test]
    fn flatmates_linked_by_a_shared_device_are_left_apart() {
        let address =
            json!({"street": "134 Station Road", "city": "Cardiff", "postal_code": "CF1 0DZ"});
        let flatmate = |first: &str, last: &str, birthday: &str| {
            profile(
                json!({"first_name": first, "last_name": last, "birthday": birthday, "address": address}),
            )
        };
        let model = MatchModel::prior();
        let score = score_profiles(
            &model,
            &flatmate("Daniel", "Hawkins", "1978-12-23"),
            &flatmate("Archie", "Holmes", "1997-02-16"),
            &no_frequencies,
            1_000,
        )
        .unwrap()
        .with_adjustment("refused_link", 5.0);
        assert!(
            score.probability > 0.999,
            "the model alone would merge them"
        );
        assert_eq!(
            decide(&score, &MatchThresholds::default()),
            MatchDecision::NoMatch
        );
    }

    #[test]
    fn a_swap_of_the_two_names_counts_once() {
        let straight = profile(json!({"first_name": "Mason", "last_name": "Taylor"}));
        let swapped = profile(json!({"first_name": "Taylor", "last_name": "Mason"}));
        let model = MatchModel::prior();
        let copied = score_profiles(&model, &straight, &straight, &no_frequencies, 1_000).unwrap();
        let crossed = score_profiles(&model, &straight, &swapped, &no_frequencies, 1_000).unwrap();
        assert!(
            crossed.bits < copied.bits,
            "a swap ({:.1} bits) weighs less than two names copied straight ({:.1})",
            crossed.bits,
            copied.bits
        );
    }

    #[test]
    fn an_older_variant_is_matched_on() {
        let current = MatchFields::from_traits(
            json!({"first_name": "John", "last_name": "Smith", "address": {"street": "3 Low Rd", "postal_code": "M1 1AE"}})
                .as_object()
                .unwrap(),
        );
        let older = MatchFields::from_traits(
            json!({"first_name": "Jon", "last_name": "Smith", "birthday": "1980-05-06", "address": {"street": "12 High St", "postal_code": "LS2 7EW"}})
                .as_object()
                .unwrap(),
        );
        let merged = MatchProfile::new(current.clone(), [older]);
        let record = profile(
            json!({"first_name": "Jon", "last_name": "Smith", "birthday": "1980-05-06", "address": {"street": "12 High St", "postal_code": "LS2 7EW"}}),
        );
        let model = MatchModel::prior();
        let with_history =
            score_profiles(&model, &merged, &record, &no_frequencies, 1_000).unwrap();
        let latest_only = score_profiles(
            &model,
            &MatchProfile::new(current, []),
            &record,
            &no_frequencies,
            1_000,
        )
        .unwrap();
        assert!(with_history.bits > latest_only.bits + 10.0);
        assert_eq!(
            decide(&with_history, &MatchThresholds::default()),
            MatchDecision::AutoMerge
        );
    }
}
