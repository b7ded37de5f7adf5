//! Pairwise clustering quality, from contingency counts.
//!
//! A pair of records is a *true pair* when one person sent both, and a
//! *predicted pair* when both ended in one profile. Precision is the share
//! of predicted pairs that are true, recall the share of true pairs that
//! were predicted (design §2.5). Counting pairs one by one is quadratic;
//! instead, with `n_ij` the records of person `i` in profile `j`:
//!
//! - correct pairs = Σ_ij C(n_ij, 2)
//! - true pairs = Σ_i C(a_i, 2), with `a_i` = Σ_j n_ij
//! - predicted pairs = Σ_j C(b_j, 2), with `b_j` = Σ_i n_ij
//!
//! which is linear in the number of records.

use std::collections::HashMap;
use std::hash::Hash;

/// Pair counts of one clustering against the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairCounts {
    pub true_pairs: u64,
    pub predicted_pairs: u64,
    /// Predicted pairs that are true pairs.
    pub correct_pairs: u64,
}

impl PairCounts {
    /// 1.0 when nothing was joined: no join was wrong.
    pub fn precision(&self) -> f64 {
        ratio(self.correct_pairs, self.predicted_pairs)
    }

    /// 1.0 when no two records belong together: nothing was missed.
    pub fn recall(&self) -> f64 {
        ratio(self.correct_pairs, self.true_pairs)
    }

    pub fn f1(&self) -> f64 {
        let (precision, recall) = (self.precision(), self.recall());
        if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

/// Profiles that swallowed records of many people: what merge protection
/// (design §2.3) exists to prevent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SuperProfiles {
    /// A profile holding records of more than this many people counts.
    pub persons_max: usize,
    pub count: usize,
    /// People wrongly inside super-profiles: in each, every person but the
    /// one with the most records there, who plausibly owns it.
    pub persons_swallowed: usize,
}

/// How one clustering of records compares with the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterScore {
    pub records: u64,
    pub persons: usize,
    pub clusters: usize,
    pub pairs: PairCounts,
    pub super_profiles: SuperProfiles,
}

/// Scores `(true person, resulting cluster)`, one entry per record.
pub fn score<T, C>(
    assignments: impl IntoIterator<Item = (T, C)>,
    persons_max: usize,
) -> ClusterScore
where
    T: Eq + Hash,
    C: Eq + Hash + Clone,
{
    let mut cells: HashMap<(T, C), u64> = HashMap::new();
    let mut records = 0;
    for (person, cluster) in assignments {
        *cells.entry((person, cluster)).or_default() += 1;
        records += 1;
    }
    let mut person_sizes: HashMap<&T, u64> = HashMap::new();
    let mut cluster_sizes: HashMap<&C, u64> = HashMap::new();
    // Per cluster: the people in it and the most records one of them has.
    let mut cluster_people: HashMap<&C, (usize, u64)> = HashMap::new();
    let mut correct_pairs = 0;
    for ((person, cluster), &count) in &cells {
        correct_pairs += pairs(count);
        *person_sizes.entry(person).or_default() += count;
        *cluster_sizes.entry(cluster).or_default() += count;
        let (people, largest) = cluster_people.entry(cluster).or_default();
        *people += 1;
        *largest = (*largest).max(count);
    }
    let mut super_profiles = SuperProfiles {
        persons_max,
        ..SuperProfiles::default()
    };
    for (people, _) in cluster_people.values() {
        if *people > persons_max {
            super_profiles.count += 1;
            super_profiles.persons_swallowed += people - 1;
        }
    }
    ClusterScore {
        records,
        persons: person_sizes.len(),
        clusters: cluster_sizes.len(),
        pairs: PairCounts {
            true_pairs: person_sizes.values().copied().map(pairs).sum(),
            predicted_pairs: cluster_sizes.values().copied().map(pairs).sum(),
            correct_pairs,
        },
        super_profiles,
    }
}

/// C(n, 2). `n` counts records of one run, far below 2^32, so the product
/// cannot overflow.
fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_computed_example() {
        // Person A sent r1, r2, r3; person B sent r4, r5.
        // Profile X holds r1, r2, r4; profile Y holds r3, r5.
        // True pairs: (r1,r2) (r1,r3) (r2,r3) (r4,r5) = 4.
        // Predicted: (r1,r2) (r1,r4) (r2,r4) (r3,r5) = 4, of which only
        // (r1,r2) is true: precision = recall = 1/4.
        let assignments = [("A", "X"), ("A", "X"), ("A", "Y"), ("B", "X"), ("B", "Y")];
        let score = score(assignments, 3);
        assert_eq!(
            score.pairs,
            PairCounts {
                true_pairs: 4,
                predicted_pairs: 4,
                correct_pairs: 1
            }
        );
        assert_eq!(score.pairs.precision(), 0.25);
        assert_eq!(score.pairs.recall(), 0.25);
        assert_eq!(score.pairs.f1(), 0.25);
        assert_eq!((score.records, score.persons, score.clusters), (5, 2, 2));
        assert_eq!(score.super_profiles.count, 0);
    }

    #[test]
    fn precision_and_recall_differ_when_errors_are_one_sided() {
        // Over-merging: everything in one profile. A: 2 records, B: 2.
        // True pairs 2, predicted C(4,2) = 6, correct 2.
        let merged = score([(1, 0), (1, 0), (2, 0), (2, 0)], 3);
        assert_eq!(merged.pairs.precision(), 2.0 / 6.0);
        assert_eq!(merged.pairs.recall(), 1.0);
        // Under-merging: A's three records in three profiles.
        let split = score([(1, 0), (1, 1), (1, 2)], 3);
        assert_eq!(split.pairs.precision(), 1.0);
        assert_eq!(split.pairs.recall(), 0.0);
        assert_eq!(split.pairs.f1(), 0.0);
    }

    #[test]
    fn super_profiles_count_people_beyond_the_owner() {
        // Profile 0 holds five people (person 1 owns it with most records);
        // profile 1 holds three, which is within the limit of 3.
        let assignments = [
            (1, 0),
            (1, 0),
            (2, 0),
            (3, 0),
            (4, 0),
            (5, 0),
            (6, 1),
            (7, 1),
            (8, 1),
        ];
        let score = score(assignments, 3);
        assert_eq!(
            score.super_profiles,
            SuperProfiles {
                persons_max: 3,
                count: 1,
                persons_swallowed: 4
            }
        );
    }

    #[test]
    fn agrees_with_counting_every_pair() {
        // A small pseudo-random clustering, checked against the quadratic
        // definition.
        let assignments: Vec<(u32, u32)> = (0u32..200)
            .map(|i| ((i * 7 + i / 3) % 13, (i * 11 + i / 5) % 17))
            .collect();
        let mut expected = PairCounts::default();
        for (i, a) in assignments.iter().enumerate() {
            for b in &assignments[i + 1..] {
                let same_person = a.0 == b.0;
                let same_cluster = a.1 == b.1;
                expected.true_pairs += u64::from(same_person);
                expected.predicted_pairs += u64::from(same_cluster);
                expected.correct_pairs += u64::from(same_person && same_cluster);
            }
        }
        assert_eq!(score(assignments, 3).pairs, expected);
    }

    #[test]
    fn nothing_to_compare_scores_perfectly() {
        let empty: [(u8, u8); 0] = [];
        let score = score(empty, 3);
        assert_eq!(score.pairs.precision(), 1.0);
        assert_eq!(score.pairs.recall(), 1.0);
        assert_eq!(score.pairs.f1(), 1.0);
    }
}
