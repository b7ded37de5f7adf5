use super::{ProfileId, Provenance, UnixMillis};

/// How one field compared in a fuzzy match.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchEvidence {
    pub field: String,
    /// 0..1.
    pub similarity: f64,
    /// Bits of evidence: positive agrees, negative disagrees.
    pub weight: f64,
    /// The comparison level that fired.
    pub level: String,
}

/// Two profiles that are likely one person, waiting for review.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchCandidate {
    /// The pair as found, lower id first; names the candidate.
    pub first: ProfileId,
    pub second: ProfileId,
    /// The live profiles the pair resolves to now (either side may have
    /// been merged into another profile since).
    pub live: [ProfileId; 2],
    pub score: f64,
    pub evidence: Vec<MatchEvidence>,
    pub found_at: UnixMillis,
    /// The match model version that scored the pair.
    pub model_version: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CandidateReview {
    pub first: ProfileId,
    pub second: ProfileId,
    pub accept: bool,
    /// `source` names the reviewer.
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewOutcome {
    Merged {
        survivor: ProfileId,
        absorbed: ProfileId,
    },
    Rejected,
}

/// What a matching pass over stored profiles did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchPassOutcome {
    pub profiles_checked: u64,
    pub merges: u64,
    /// Candidates recorded by a pass over some profiles; for a whole pass,
    /// the candidates pending once it is done.
    pub candidates: u64,
    /// The match model the pass decided with.
    pub model_version: u64,
}
