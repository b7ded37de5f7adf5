//! The fuzzy-matching review queue: the match candidates automatic
//! resolution leaves for a human, judged against the truth.
//!
//! Fuzzy matching merges a pair of profiles only when it is sure; a pair it
//! finds likely but not sure enough becomes a candidate that an operator
//! accepts or rejects (design §2.5). The automatic score says nothing about
//! that queue, yet it is where the remaining recall is and what it costs in
//! human time. So, per scenario, the harness counts the candidates, how
//! many of them join one person (a reviewer should accept those), and what
//! the profiles would score after a perfect reviewer: the best the queue
//! can do.
//!
//! A candidate's profile is judged by its *majority person*: the true
//! person with the most scored records in it. A profile is rarely pure on
//! dirty data, and the majority person is who a reviewer reading its
//! identifiers and traits would take it for.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use super::generate::PersonId;
use super::metrics::{PairCounts, score};
use super::{Cluster, QualityError};
use crate::api::pb;
use crate::cli::ProfileClient;

/// Candidates asked for per `ListMatchCandidates` page: the server's cap,
/// so a big queue takes as few calls as possible.
pub const CANDIDATES_PER_PAGE: u32 = 1_000;

/// Most candidates listed before the harness gives up: several per person
/// of the largest run (six scenarios of [`super::PEOPLE_PER_SCENARIO_MAX`]
/// people), and a bound on memory and time should the server's paging
/// misbehave.
pub const CANDIDATES_MAX: usize = 2_000_000;

/// A pending candidate, reduced to what the harness judges: its two live
/// profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidatePair {
    pub profile_ids: [String; 2],
}

/// The review queue of one scenario against the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReviewScore {
    /// Distinct pairs of live profiles, both holding scored records of the
    /// scenario, that some candidate names. Pairs rather than candidates:
    /// after merges two stored candidates can name the same live pair, and
    /// one decision settles both (accepting merges the pair; a rejection is
    /// recorded for the live pair), so pairs are the human work left.
    pub candidates: u64,
    /// Candidates whose two profiles have the same majority person: the
    /// ones a reviewer should accept.
    pub candidates_true: u64,
    /// Pair counts after a perfect reviewer accepted every true candidate
    /// and rejected every false one.
    pub pairs_reviewed: PairCounts,
}

/// Lists every pending candidate on the server, page by page.
pub async fn list_candidates(
    client: &mut ProfileClient,
) -> Result<Vec<CandidatePair>, QualityError> {
    let mut candidates = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = pb::ListMatchCandidatesRequest {
            page_size: CANDIDATES_PER_PAGE,
            page_token: page_token.clone(),
        };
        let page = client
            .list_match_candidates(request)
            .await
            .map_err(QualityError::ListCandidates)?
            .into_inner();
        for candidate in page.candidates {
            // The contract promises two profiles; anything else is a server
            // bug the report must not hide by guessing.
            let profile_ids = match <[String; 2]>::try_from(candidate.profile_ids) {
                Ok(profile_ids) => profile_ids,
                Err(profile_ids) => {
                    return Err(QualityError::MalformedCandidate {
                        candidate_id: candidate.candidate_id,
                        profile_ids: profile_ids.len(),
                    });
                }
            };
            candidates.push(CandidatePair { profile_ids });
        }
        if candidates.len() > CANDIDATES_MAX {
            return Err(QualityError::TooManyCandidates {
                max: CANDIDATES_MAX,
            });
        }
        if page.next_page_token.is_empty() {
            return Ok(candidates);
        }
        // A token that does not move on would page forever.
        if page.next_page_token == page_token {
            return Err(QualityError::CandidatePaging(page_token));
        }
        page_token = page.next_page_token;
    }
}

/// Per profile holding scored records: the person with the most records
/// in it. A tie goes to the lowest person id, so a run's report does not
/// depend on hash order.
pub fn majority_persons<'a, T>(
    assignments: impl IntoIterator<Item = (T, &'a str)>,
) -> HashMap<&'a str, T>
where
    T: Copy + Ord + Hash,
{
    let mut cells: HashMap<(&'a str, T), u64> = HashMap::new();
    for (person, profile_id) in assignments {
        *cells.entry((profile_id, person)).or_default() += 1;
    }
    let mut best: HashMap<&'a str, (u64, T)> = HashMap::new();
    for ((profile_id, person), count) in cells {
        best.entry(profile_id)
            .and_modify(|(best_count, best_person)| {
                if count > *best_count || (count == *best_count && person < *best_person) {
                    (*best_count, *best_person) = (count, person);
                }
            })
            .or_insert((count, person));
    }
    best.into_iter()
        .map(|(profile_id, (_, person))| (profile_id, person))
        .collect()
}

/// Judges `candidates` against one scenario's scored records
/// (`assignments`: true person and cluster, one entry per record) and
/// rescores the records as a perfect reviewer would leave them.
///
/// A candidate counts for the scenario only when both its profiles hold
/// scored records of it: the harness loads every scenario into one server,
/// so the queue also holds other scenarios' candidates, and a candidate
/// joining two scenarios' profiles (which use disjoint identifiers and
/// people) is no part of either's truth.
pub(super) fn review(
    assignments: &[(PersonId, Cluster<'_>)],
    candidates: &[CandidatePair],
) -> ReviewScore {
    let majority = majority_persons(assignments.iter().filter_map(
        |(person, cluster)| match cluster {
            Cluster::Profile(profile_id) => Some((*person, *profile_id)),
            Cluster::Alone(_) => None,
        },
    ));
    // Union-find over the scenario's profiles, by position in `profile_ids`.
    let profile_ids: Vec<&str> = majority.keys().copied().collect();
    let positions: HashMap<&str, usize> = profile_ids
        .iter()
        .enumerate()
        .map(|(position, profile_id)| (*profile_id, position))
        .collect();
    let mut joined = UnionFind::new(profile_ids.len());
    let mut decided = HashSet::new();
    let mut result = ReviewScore::default();
    for candidate in candidates {
        let [first, second] = &candidate.profile_ids;
        let (Some(&first), Some(&second)) = (
            positions.get(first.as_str()),
            positions.get(second.as_str()),
        ) else {
            continue;
        };
        // The server never proposes a profile with itself; should it, there
        // is nothing to decide.
        if first == second || !decided.insert((first.min(second), first.max(second))) {
            continue;
        }
        result.candidates += 1;
        if majority.get(profile_ids[first]) == majority.get(profile_ids[second]) {
            result.candidates_true += 1;
            joined.union(first, second);
        }
    }
    // Each profile is renamed to the one its set is rooted at, so joined
    // profiles become one cluster for the existing scoring.
    let representatives: HashMap<&str, &str> = (0..profile_ids.len())
        .map(|position| (profile_ids[position], profile_ids[joined.find(position)]))
        .collect();
    let reviewed = assignments.iter().map(|(person, cluster)| {
        let cluster = match cluster {
            Cluster::Profile(profile_id) => Cluster::Profile(
                representatives
                    .get(profile_id)
                    .copied()
                    .unwrap_or(profile_id),
            ),
            Cluster::Alone(position) => Cluster::Alone(*position),
        };
        (*person, cluster)
    });
    // Only the pair counts are kept, so the super-profile limit is moot.
    result.pairs_reviewed = score(reviewed, usize::MAX).pairs;
    result
}

/// Disjoint sets over `0..n`, with path halving and union by size, so a
/// whole queue is joined in near-linear time.
struct UnionFind {
    parent: Vec<usize>,
    size: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n).collect(),
            size: vec![1; n],
        }
    }

    fn find(&mut self, mut element: usize) -> usize {
        while self.parent[element] != element {
            self.parent[element] = self.parent[self.parent[element]];
            element = self.parent[element];
        }
        element
    }

    fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a;
        self.size[a] += self.size[b];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(first: &str, second: &str) -> CandidatePair {
        CandidatePair {
            profile_ids: [first.to_owned(), second.to_owned()],
        }
    }

    #[test]
    fn the_majority_person_holds_the_most_records_and_ties_go_to_the_lowest_id() {
        let majority = majority_persons([
            (PersonId(2), "X"),
            (PersonId(1), "X"),
            (PersonId(2), "X"),
            // A tie in Y: the lowest id wins whatever the order.
            (PersonId(5), "Y"),
            (PersonId(4), "Y"),
            (PersonId(3), "Z"),
        ]);
        assert_eq!(
            majority,
            HashMap::from([("X", PersonId(2)), ("Y", PersonId(4)), ("Z", PersonId(3))])
        );
    }

    #[test]
    fn a_perfect_reviewer_accepts_true_candidates_only() {
        // Person A sent r1..r4, person B r5..r7.
        // Automatic profiles: P = {r1, r2}, Q = {r3, r5}, R = {r4},
        // S = {r6, r7}; r8 (person A) is unresolved.
        // Majority persons: P = A, Q = A (tie of one each, lowest id),
        // R = A, S = B.
        let (a, b) = (PersonId(1), PersonId(2));
        let assignments = [
            (a, Cluster::Profile("P")),
            (a, Cluster::Profile("P")),
            (a, Cluster::Profile("Q")),
            (a, Cluster::Profile("R")),
            (b, Cluster::Profile("Q")),
            (b, Cluster::Profile("S")),
            (b, Cluster::Profile("S")),
            (a, Cluster::Alone(7)),
        ];
        let candidates = [
            // True (A, A): accepted.
            pair("P", "R"),
            // The same live pair again, reversed: one decision.
            pair("R", "P"),
            // False (A, B): rejected.
            pair("R", "S"),
            // True (A, A): accepted, joining P, Q and R.
            pair("Q", "P"),
            // Another scenario's profile: not this scenario's.
            pair("P", "elsewhere"),
        ];
        let review = review(&assignments, &candidates);
        assert_eq!((review.candidates, review.candidates_true), (3, 2));
        // After review: {r1, r2, r3, r4, r5} in one profile, S = {r6, r7},
        // r8 alone.
        // True pairs: C(5 of A, 2) + C(3 of B, 2) = 10 + 3 = 13.
        // Predicted: C(5, 2) + C(2, 2) = 10 + 1 = 11.
        // Correct: C(4 of A together, 2) + C(2 of B in S, 2) = 6 + 1 = 7.
        assert_eq!(
            review.pairs_reviewed,
            PairCounts {
                true_pairs: 13,
                predicted_pairs: 11,
                correct_pairs: 7
            }
        );
        // Automatically: predicted C(2,2) + C(2,2) + C(2,2) = 3, correct
        // 1 (r1, r2) + 1 (r6, r7) = 2: review gains recall, costs precision
        // because Q was already impure.
        let automatic = score(assignments.iter().cloned(), usize::MAX).pairs;
        assert_eq!(automatic.correct_pairs, 2);
        assert!(review.pairs_reviewed.recall() > automatic.recall());
    }

    #[test]
    fn no_candidates_leave_the_score_unchanged() {
        let assignments = [
            (PersonId(1), Cluster::Profile("P")),
            (PersonId(1), Cluster::Profile("Q")),
            (PersonId(2), Cluster::Profile("Q")),
        ];
        let review = review(&assignments, &[]);
        assert_eq!((review.candidates, review.candidates_true), (0, 0));
        assert_eq!(
            review.pairs_reviewed,
            score(assignments.iter().cloned(), usize::MAX).pairs
        );
    }

    #[test]
    fn union_find_joins_transitively() {
        let mut sets = UnionFind::new(5);
        sets.union(0, 1);
        sets.union(3, 4);
        sets.union(1, 4);
        let root = sets.find(0);
        assert!([1, 3, 4].iter().all(|&element| sets.find(element) == root));
        assert_ne!(sets.find(2), root);
    }
}
