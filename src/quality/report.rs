//! The harness's result: per scenario, what the server did with the records
//! and how well the profiles it built match the truth, automatically and
//! after a perfect review of the match candidates left for a human.

use std::fmt;

use super::explain::{MissedPairs, WrongJoins};
use super::generate::{Dataset, Scenario};
use super::load::LoadSummary;
use super::metrics::{ClusterScore, PairCounts, SuperProfiles};
use super::review::ReviewScore;

#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    pub people: usize,
    /// Records sent, resends included: `accepted + duplicate + rejected`.
    pub records: u64,
    pub accepted: u64,
    pub duplicate: u64,
    /// Records the server refused (e.g. an invalid junk phone), counted
    /// apart from the score: they are in no profile.
    pub rejected: u64,
    /// Rejected records whose identifiers are all well-formed: refused for
    /// another reason, e.g. merge protection finding that every identifier
    /// of the call is a hub (a shared tablet) that resolves no person.
    pub rejected_unexpected: u64,
    /// Records scored: neither rejected nor resends.
    pub records_scored: u64,
    /// Scored records none of whose identifiers finds a profile.
    pub unresolved: u64,
    /// Profiles the scored records ended in (an unresolved record counts as
    /// one of its own).
    pub profiles: usize,
    /// What automatic resolution achieved, before anyone reviews a
    /// candidate.
    pub pairs: PairCounts,
    pub super_profiles: SuperProfiles,
    /// Distinct well-formed junk identifiers the records carried that some
    /// profile holds: the blocklist's misses, 0 when it catches them all.
    pub junk_stored: u64,
    /// Pair counts once every scenario is loaded and `RunMatching` has
    /// re-estimated the model and matched every profile again.
    pub after_matching: Option<PairCounts>,
    pub super_profiles_after_matching: Option<usize>,
    /// Pending match candidates joining two profiles of this scenario
    /// (distinct live pairs): the decisions automatic resolution leaves to
    /// a human. A queue that grows with the data is an operating cost
    /// the automatic score does not show; clean data should leave none.
    pub candidates: u64,
    /// Candidates whose two profiles belong mostly to one person: the ones
    /// a reviewer should accept. The rest waste a reviewer's time, or
    /// worse, invite a wrong merge.
    pub candidates_true: u64,
    /// Pair counts after a perfect reviewer accepted every true candidate
    /// and rejected every false one: the recall the queue holds, and the
    /// best the profiles can get without changing automatic matching.
    pub pairs_reviewed: PairCounts,
    /// The missed true pairs by evidence class, when asked for.
    pub missed: Option<MissedPairs>,
    /// Profiles joining several people, online and after `RunMatching`,
    /// when asked for.
    pub merged: Option<WrongJoins>,
    pub merged_after_matching: Option<WrongJoins>,
}

impl ScenarioReport {
    pub(super) fn new(
        dataset: &Dataset,
        load: &LoadSummary,
        unresolved: u64,
        score: &ClusterScore,
        review: &ReviewScore,
        missed: Option<MissedPairs>,
    ) -> Self {
        let rejected_unexpected = dataset
            .records
            .iter()
            .zip(&load.rejected_records)
            .filter(|(record, rejected)| **rejected && !record.invalid_on_purpose)
            .count() as u64;
        ScenarioReport {
            scenario: dataset.scenario,
            people: dataset.people.len(),
            records: load.records,
            accepted: load.accepted,
            duplicate: load.duplicate,
            rejected: load.rejected,
            rejected_unexpected,
            records_scored: score.records,
            unresolved,
            profiles: score.clusters,
            pairs: score.pairs,
            super_profiles: score.super_profiles,
            junk_stored: 0,
            after_matching: None,
            super_profiles_after_matching: None,
            candidates: review.candidates,
            candidates_true: review.candidates_true,
            pairs_reviewed: review.pairs_reviewed,
            missed,
            merged: None,
            merged_after_matching: None,
        }
    }

    pub fn precision(&self) -> f64 {
        self.pairs.precision()
    }

    pub fn recall(&self) -> f64 {
        self.pairs.recall()
    }

    pub fn f1(&self) -> f64 {
        self.pairs.f1()
    }

    /// The share of candidates a reviewer should accept; 1.0 with no
    /// candidates, as no reviewer is misled.
    pub fn candidate_precision(&self) -> f64 {
        if self.candidates == 0 {
            1.0
        } else {
            self.candidates_true as f64 / self.candidates as f64
        }
    }

    pub fn review_precision(&self) -> f64 {
        self.pairs_reviewed.precision()
    }

    pub fn review_recall(&self) -> f64 {
        self.pairs_reviewed.recall()
    }

    pub fn review_f1(&self) -> f64 {
        self.pairs_reviewed.f1()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct QualityReport {
    pub seed: u64,
    pub people_per_scenario: usize,
    /// A profile with records of more than this many people is a
    /// super-profile.
    pub super_profile_persons_max: usize,
    /// In the order the scenarios ran.
    pub scenarios: Vec<ScenarioReport>,
}

impl QualityReport {
    pub fn scenario(&self, scenario: Scenario) -> Option<&ScenarioReport> {
        self.scenarios
            .iter()
            .find(|report| report.scenario == scenario)
    }
}

impl fmt::Display for QualityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "identity resolution quality: seed {}, {} people per scenario, \
             super-profile = records of more than {} people",
            self.seed, self.people_per_scenario, self.super_profile_persons_max
        )?;
        writeln!(
            f,
            "review queue: cands = match candidates within the scenario, \
             cand_prec = share joining one person, rev_* = after a perfect reviewer; \
             rm_* = once every scenario is loaded, after RunMatching"
        )?;
        writeln!(
            f,
            "{:<16} {:>6} {:>7} {:>8} {:>4} {:>8} {:>10} {:>10} {:>8} {:>9} {:>6} {:>6} {:>5} {:>9} {:>4} {:>5} {:>9} {:>10} {:>6} {:>7} {:>9} {:>6} {:>8}",
            "scenario",
            "people",
            "records",
            "accepted",
            "dup",
            "rejected",
            "unexpected",
            "unresolved",
            "profiles",
            "precision",
            "recall",
            "f1",
            "super",
            "swallowed",
            "junk",
            "cands",
            "cand_prec",
            "rev_recall",
            "rev_f1",
            "rm_prec",
            "rm_recall",
            "rm_f1",
            "rm_super"
        )?;
        for report in &self.scenarios {
            writeln!(
                f,
                "{:<16} {:>6} {:>7} {:>8} {:>4} {:>8} {:>10} {:>10} {:>8} {:>9.4} {:>6.4} {:>6.4} {:>5} {:>9} {:>4} {:>5} {:>9.4} {:>10.4} {:>6.4} {:>7} {:>9} {:>6} {:>8}",
                report.scenario.name(),
                report.people,
                report.records,
                report.accepted,
                report.duplicate,
                report.rejected,
                report.rejected_unexpected,
                report.unresolved,
                report.profiles,
                report.precision(),
                report.recall(),
                report.f1(),
                report.super_profiles.count,
                report.super_profiles.persons_swallowed,
                report.junk_stored,
                report.candidates,
                report.candidate_precision(),
                report.review_recall(),
                report.review_f1(),
                figure(report.after_matching.map(|pairs| pairs.precision())),
                figure(report.after_matching.map(|pairs| pairs.recall())),
                figure(report.after_matching.map(|pairs| pairs.f1())),
                report
                    .super_profiles_after_matching
                    .map_or_else(|| "-".to_owned(), |count| count.to_string()),
            )?;
        }
        for report in &self.scenarios {
            if let Some(missed) = report.missed.as_ref().filter(|m| !m.classes.is_empty()) {
                writeln!(f, "\nmissed true pairs in {}:", report.scenario.name())?;
                write!(f, "{missed}")?;
            }
            if let Some(merged) = report.merged.as_ref().filter(|m| m.profiles > 0) {
                writeln!(
                    f,
                    "\nwrong joins in {}, online: {merged}",
                    report.scenario.name()
                )?;
            }
            if let Some(merged) = report
                .merged_after_matching
                .as_ref()
                .filter(|m| m.profiles > 0)
            {
                writeln!(
                    f,
                    "\nwrong joins in {}, after RunMatching: {merged}",
                    report.scenario.name()
                )?;
            }
        }
        Ok(())
    }
}

/// A ratio to four places, or `-` when the stage did not run.
fn figure(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.4}"))
}
