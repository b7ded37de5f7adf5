//! Collecting the sample the match model is estimated from: random pairs
//! of stored variants (for `u`) and, rule by rule, the variant pairs that
//! share a blocking key (for `m`). Reads the tree directly, off the writer
//! thread; the estimate is then stored by a writer job. Every part of it is
//! bounded, so a run costs about the same at ten thousand profiles and at
//! ten million.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::StoreError;
use super::engine::Engine;
use super::keys::{self, IndexKeys};
use super::matching::{BLOCK_SCORED_MAX, current_fields, decode_profile};
use super::records::ProfileRecord;
use crate::identity::fuzzy::{
    BlockingRule, Comparison, MatchFields, MatchProfile, TrainingSample, compare, variant_keys,
};
use crate::model::ProfileId;

/// Profiles drawn at random for `u`.
const RANDOM_PROFILES_MAX: usize = 2_000;
/// Draws of a random profile id; ids of merged or erased profiles miss.
const RANDOM_DRAWS_MAX: usize = 8 * RANDOM_PROFILES_MAX;
const RANDOM_PAIRS_MAX: usize = 20_000;
/// Pairs and blocks read per blocking rule.
const RULE_PAIRS_MAX: usize = 10_000;
const RULE_BLOCKS_MAX: usize = 5_000;
/// Variant pairs taken from one block: a block near the scoring cap holds
/// thousands of pairs of mostly strangers, which would swamp a rule's
/// sample.
const BLOCK_PAIRS_MAX: usize = 200;

/// A stored variant: the profile, and the variant's place in it.
type Unit = (ProfileId, usize);

struct Loader<'t> {
    tree: &'t dyn Engine,
    index: &'t IndexKeys,
    profiles: HashMap<ProfileId, Option<MatchProfile>>,
}

impl Loader<'_> {
    fn profile(&mut self, id: ProfileId) -> Result<Option<&MatchProfile>, StoreError> {
        if !self.profiles.contains_key(&id) {
            let loaded = self.load(id)?;
            self.profiles.insert(id, loaded);
        }
        Ok(self.profiles.get(&id).and_then(Option::as_ref))
    }

    fn load(&self, id: ProfileId) -> Result<Option<MatchProfile>, StoreError> {
        if let Some(bytes) = self.tree.get(&keys::fuzzy_variants(id))? {
            return Ok(Some(decode_profile(&bytes)?));
        }
        // Indexed before its fields were kept beside it, or never matched.
        let Some(bytes) = self.tree.get(&keys::profile(id))? else {
            return Ok(None);
        };
        let record = ProfileRecord::for_reading(&bytes)?;
        let profile = MatchProfile::new(current_fields(&record)?, []);
        Ok((!profile.is_empty()).then_some(profile))
    }

    fn variant(&self, (id, index): Unit) -> Option<&MatchFields> {
        self.profiles.get(&id)?.as_ref()?.variants().get(index)
    }
}

/// Collects a training sample. `next_profile_id` bounds the ids drawn;
/// `population` is the number of profiles with names.
pub fn collect_sample(
    tree: &dyn Engine,
    index: &IndexKeys,
    next_profile_id: u64,
    population: u64,
    seed: u64,
) -> Result<TrainingSample, StoreError> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut loader = Loader {
        tree,
        index,
        profiles: HashMap::new(),
    };

    let mut random_units: Vec<Unit> = Vec::new();
    let mut drawn = BTreeSet::new();
    for _ in 0..RANDOM_DRAWS_MAX {
        if drawn.len() >= RANDOM_PROFILES_MAX || next_profile_id <= 1 {
            break;
        }
        let id = ProfileId(rng.random_range(1..next_profile_id));
        if !drawn.insert(id) {
            continue;
        }
        if let Some(profile) = loader.profile(id)? {
            random_units.extend((0..profile.variants().len()).map(|index| (id, index)));
        }
    }
    let mut random_pairs = Vec::new();
    let units = random_units.len();
    if units * units.saturating_sub(1) / 2 <= RANDOM_PAIRS_MAX {
        // Few enough for every pair once: drawing would repeat pairs and
        // weigh a few strangers as if they were many.
        for (i, a) in random_units.iter().enumerate() {
            for b in &random_units[i + 1..] {
                if let (false, Some(x), Some(y)) =
                    (a.0 == b.0, loader.variant(*a), loader.variant(*b))
                {
                    random_pairs.push(compare(x, y));
                }
            }
        }
    } else {
        for _ in 0..RANDOM_PAIRS_MAX {
            let a = random_units[rng.random_range(0..units)];
            let b = random_units[rng.random_range(0..units)];
            // Variants of one profile are one person's: not a random pair.
            if a.0 == b.0 {
                continue;
            }
            if let (Some(x), Some(y)) = (loader.variant(a), loader.variant(b)) {
                random_pairs.push(compare(x, y));
            }
        }
    }

    let mut blocked = Vec::new();
    let mut distinct: HashMap<(Unit, Unit), Comparison> = HashMap::new();
    let mut units_seen: BTreeSet<Unit> = BTreeSet::new();
    let mut whole_index = true;
    for rule in BlockingRule::ALL {
        let (pairs, complete) = rule_pairs(&mut loader, rule, &mut rng)?;
        whole_index &= complete;
        let mut comparisons = Vec::with_capacity(pairs.len());
        for (a, b) in pairs {
            let (Some(x), Some(y)) = (loader.variant(a), loader.variant(b)) else {
                continue;
            };
            let comparison = compare(x, y);
            units_seen.insert(a);
            units_seen.insert(b);
            distinct.insert((a.min(b), a.max(b)), comparison);
            comparisons.push(comparison);
        }
        blocked.push((rule, comparisons));
    }
    let variants_stored = if whole_index {
        variants_stored(tree)?.max(population)
    } else {
        // Only part of the index was read: the duplicate share is taken
        // over the variants that part holds.
        units_seen.len() as u64
    };
    Ok(TrainingSample {
        random_pairs,
        blocked,
        distinct_blocked: distinct.into_values().collect(),
        variants_stored,
        population,
    })
}

/// The variant pairs under one rule's keys, read from a random place in
/// the rule's part of the index onwards (wrapping round), and whether the
/// whole of that part was read.
fn rule_pairs(
    loader: &mut Loader<'_>,
    rule: BlockingRule,
    rng: &mut SmallRng,
) -> Result<(Vec<(Unit, Unit)>, bool), StoreError> {
    let prefix = keys::fuzzy_rule_blocks(rule.prefix());
    let mut start = prefix.clone();
    // Keys continue with a keyed hash: uniform bytes.
    start.push(rng.random::<u8>());
    let tree = loader.tree;
    let from_start = tree
        .range(Bound::Included(start.clone()), Bound::Unbounded)
        .take_while(|entry| {
            entry
                .as_ref()
                .map(|(key, _)| key.starts_with(&prefix))
                .unwrap_or(true)
        });
    let wrapped = tree.range(Bound::Included(prefix.clone()), Bound::Excluded(start));
    let mut pairs = Vec::new();
    let mut blocks = 0;
    for entry in from_start.chain(wrapped) {
        if pairs.len() >= RULE_PAIRS_MAX || blocks >= RULE_BLOCKS_MAX {
            return Ok((pairs, false));
        }
        let (key, value) = entry?;
        let members = keys::decode_ids(&value);
        if members.len() < 2 || members.len() > BLOCK_SCORED_MAX {
            continue;
        }
        blocks += 1;
        let index_keys = loader.index;
        let mut units = Vec::new();
        for member in members {
            let Some(profile) = loader.profile(member)? else {
                continue;
            };
            for (index, variant) in profile.variants().iter().enumerate() {
                if variant_keys(variant)
                    .iter()
                    .any(|block| keys::fuzzy_block(index_keys, block) == key)
                {
                    units.push((member, index));
                }
            }
        }
        let mut taken = 0;
        'block: for (i, a) in units.iter().enumerate() {
            for b in &units[i + 1..] {
                if taken >= BLOCK_PAIRS_MAX {
                    break 'block;
                }
                pairs.push((*a, *b));
                taken += 1;
            }
        }
    }
    Ok((pairs, true))
}

fn variants_stored(tree: &dyn Engine) -> Result<u64, StoreError> {
    let mut count = 0u64;
    for entry in tree.scan_prefix(keys::FUZZY_VARIANTS) {
        let (_, value) = entry?;
        count += decode_profile(&value)?.variants().len() as u64;
    }
    Ok(count)
}
