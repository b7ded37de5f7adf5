//! Near misses kept for the next model. A pair that matching left alone
//! was judged with the weights of its day; as the data shows new kinds of
//! variation (nicknames, moves, new addresses) an estimate can move a
//! field's weight by ten bits or more, and the pair may then be one
//! person. Each profile keeps the comparisons of its closest pairs left
//! alone (levels only, no values); once a new model is in use they are
//! re-scored in memory, off the writer thread, and only the profiles
//! whose pairs now reach review are matched again. Pending candidates are
//! matched again too, so each is re-scored, merged or dropped under the
//! new weights.

use std::collections::BTreeSet;

use super::StoreError;
use super::engine::{Engine, prefix_bounds};
use super::keys;
use super::overlay::CallWrites;
use crate::identity::fuzzy::{Comparison, FIELD_COUNT, MatchModel, MatchScore, NameFrequencies};
use crate::model::ProfileId;

/// Log2 odds above which a pair left alone is kept: strangers sharing a
/// block sit 40 bits or more below even odds once two of their fields
/// disagree outright.
pub const KEPT_LOG2_ODDS_MIN: f64 = -40.0;
/// Pairs kept per profile, closest first.
pub const KEPT_PER_PROFILE_MAX: usize = 2;
/// Bits a kept pair may fall short of review and still be matched again:
/// the kept comparison is re-scored without the names' frequency weights,
/// which can add a few bits.
const RESCORED_MARGIN_BITS: f64 = 4.0;
/// A level that was not compared (either side lacked the field).
const NOT_COMPARED: u8 = u8::MAX;
const PAIR_BYTES: usize = 8 + FIELD_COUNT;

/// The closest pairs a matching round left alone, best first.
#[derive(Debug, Default)]
pub struct NearMisses {
    pairs: Vec<(f64, ProfileId, Comparison)>,
}

impl NearMisses {
    pub fn offer(&mut self, other: ProfileId, score: &MatchScore) {
        let log2_odds = score.bits + score.prior_log2_odds;
        if log2_odds < KEPT_LOG2_ODDS_MIN {
            return;
        }
        self.pairs.push((log2_odds, other, score.comparison()));
        self.pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        self.pairs.truncate(KEPT_PER_PROFILE_MAX);
    }

    /// Stores them under `id`, replacing what an earlier round kept; a
    /// write only when they changed.
    pub fn store(self, writes: &mut CallWrites<'_, '_>, id: ProfileId) -> Result<(), StoreError> {
        let key = keys::fuzzy_recheck(id);
        let stored = writes.get(&key)?;
        if self.pairs.is_empty() {
            if stored.is_some() {
                writes.remove(key);
            }
            return Ok(());
        }
        let bytes = self.encode();
        if stored.as_deref() != Some(bytes.as_slice()) {
            writes.insert(key, bytes);
        }
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.pairs.len() * PAIR_BYTES);
        for (_, other, comparison) in &self.pairs {
            bytes.extend_from_slice(&other.0.to_be_bytes());
            bytes.extend(comparison.iter().map(|level| level.unwrap_or(NOT_COMPARED)));
        }
        bytes
    }
}

fn decode(bytes: &[u8]) -> Vec<(ProfileId, Comparison)> {
    bytes
        .chunks_exact(PAIR_BYTES)
        .map(|pair| {
            let (id, levels) = pair.split_at(8);
            let mut id_bytes = [0u8; 8];
            id_bytes.copy_from_slice(id);
            let mut comparison: Comparison = [None; FIELD_COUNT];
            for (slot, &level) in comparison.iter_mut().zip(levels) {
                *slot = (level != NOT_COMPARED).then_some(level);
            }
            (ProfileId(u64::from_be_bytes(id_bytes)), comparison)
        })
        .collect()
}

/// The profiles to match again under `model`: those with a kept pair
/// that now scores within reach of `review_probability`, and both sides of
/// every pending candidate. At most `max`; the rest wait for the next model.
pub fn due(
    engine: &dyn Engine,
    model: &MatchModel,
    population: u64,
    review_probability: f64,
    max: usize,
) -> Result<Vec<ProfileId>, StoreError> {
    let review_log2_odds = (review_probability / (1.0 - review_probability)).log2();
    let mut ids = BTreeSet::new();
    let (from, to) = prefix_bounds(keys::FUZZY_RECHECK);
    for entry in engine.range(from, to) {
        if ids.len() >= max {
            return Ok(ids.into_iter().collect());
        }
        let (key, value) = entry?;
        let Some(id) = keys::decode_fuzzy_recheck(&key) else {
            continue;
        };
        let within_reach = decode(&value).iter().any(|(_, comparison)| {
            let score = model.score(comparison, &NameFrequencies::default(), population);
            score.bits + score.prior_log2_odds + RESCORED_MARGIN_BITS >= review_log2_odds
        });
        if within_reach {
            ids.insert(id);
        }
    }
    for entry in engine.scan_prefix(&[keys::CANDIDATE]) {
        if ids.len() >= max {
            break;
        }
        let (key, _) = entry?;
        if let Some((first, second)) = keys::decode_pair(&key) {
            ids.insert(first);
            ids.insert(second);
        }
    }
    Ok(ids.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::fuzzy::{MatchFields, MatchProfile, score_profiles};
    use serde_json::json;

    #[test]
    fn kept_pairs_read_back_as_compared() {
        let a = MatchFields::from_traits(
            json!({"first_name": "Ann", "last_name": "Lee", "birthday": "1980-01-02"})
                .as_object()
                .unwrap(),
        );
        let b = MatchFields::from_traits(
            json!({"first_name": "Anne", "last_name": "Lee"})
                .as_object()
                .unwrap(),
        );
        let model = MatchModel::prior();
        let no_frequencies = |_: &MatchFields, _: &MatchFields| NameFrequencies::default();
        let score = score_profiles(
            &model,
            &MatchProfile::new(a.clone(), []),
            &MatchProfile::new(b.clone(), []),
            &no_frequencies,
            1_000,
        )
        .unwrap();
        let mut kept = NearMisses::default();
        kept.offer(ProfileId(7), &score);
        assert_eq!(
            decode(&kept.encode()),
            vec![(ProfileId(7), crate::identity::fuzzy::compare(&a, &b))]
        );
    }
}
