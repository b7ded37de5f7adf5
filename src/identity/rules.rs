use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use regex::Regex;

use super::fuzzy::{MatchModel, MatchThresholds};
use crate::config::{FuzzyConfig, MergeConfig};
use crate::model::{Identifier, IdentifierKind};

/// Review candidates after which the model is estimated again, however
/// little the population grew.
const CANDIDATES_PER_ESTIMATE_MAX: u64 = 100;

/// The configured merge-protection rules, compiled once.
#[derive(Debug, Clone)]
pub struct MergeRules {
    /// Higher is stronger evidence; unlisted kinds rank 0.
    priority: HashMap<String, u8>,
    per_kind_max: HashMap<String, usize>,
    per_kind_default: usize,
    hub_profiles_min: usize,
    blocked_values: HashSet<String>,
    blocked_patterns: Vec<(String, Regex)>,
    /// `None` when fuzzy matching is off.
    fuzzy: Option<MatchThresholds>,
    /// The model matching decides with, shared by every clone: the store
    /// replaces it when it re-estimates one, and the writer reads it.
    model: Arc<SharedModel>,
    estimate_profiles_min: u64,
}

/// The current match model, and whether a re-estimate is wanted.
#[derive(Debug)]
struct SharedModel {
    current: RwLock<Arc<MatchModel>>,
    estimate_wanted: AtomicBool,
    /// Review candidates recorded since the model was last replaced.
    candidates_since_estimate: AtomicU64,
}

impl MergeRules {
    /// `config` must have passed `Config::validate`; invalid patterns are
    /// skipped with a warning rather than taking the server down.
    pub fn new(config: &MergeConfig, fuzzy: &FuzzyConfig) -> MergeRules {
        let listed = config.priority.len();
        let priority = config
            .priority
            .iter()
            .enumerate()
            .map(|(rank, kind)| (kind.clone(), u8::try_from(listed - rank).unwrap_or(u8::MAX)))
            .collect();
        let blocked_patterns = config
            .blocked_patterns
            .iter()
            .filter_map(|pattern| match Regex::new(&pattern.regex) {
                Ok(regex) => Some((pattern.kind.clone(), regex)),
                Err(error) => {
                    tracing::warn!(%error, "ignoring an invalid blocked pattern");
                    None
                }
            })
            .collect();
        MergeRules {
            priority,
            per_kind_max: config
                .identifiers_per_kind_max
                .clone()
                .into_iter()
                .collect(),
            per_kind_default: config.identifiers_per_kind_default,
            hub_profiles_min: config.hub_profiles_min,
            blocked_values: config.blocked_values.iter().cloned().collect(),
            blocked_patterns,
            fuzzy: fuzzy.enabled.then_some(MatchThresholds {
                auto_merge: fuzzy.auto_merge_probability_min,
                review: fuzzy.review_probability_min,
            }),
            model: Arc::new(SharedModel {
                current: RwLock::new(Arc::new(MatchModel::prior())),
                estimate_wanted: AtomicBool::new(false),
                candidates_since_estimate: AtomicU64::new(0),
            }),
            estimate_profiles_min: fuzzy.estimate_profiles_min,
        }
    }

    pub fn fuzzy_thresholds(&self) -> Option<&MatchThresholds> {
        self.fuzzy.as_ref()
    }

    /// The model in use now.
    pub fn match_model(&self) -> Arc<MatchModel> {
        // A poisoned lock still holds a whole model: it is only ever
        // replaced by one assignment.
        match self.model.current.read() {
            Ok(model) => Arc::clone(&model),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn set_match_model(&self, model: MatchModel) {
        self.model
            .candidates_since_estimate
            .store(0, Ordering::Relaxed);
        let model = Arc::new(model);
        match self.model.current.write() {
            Ok(mut current) => *current = model,
            Err(poisoned) => *poisoned.into_inner() = model,
        }
    }

    /// Whether `population` profiles with names call for a new estimate
    /// of a model estimated at `estimated_population`: at the first
    /// threshold, then whenever the population has grown by a tenth, so
    /// every profile is matched with a model estimated on at least nine
    /// tenths of what it meets. A run costs the same at any size (its
    /// sample is bounded), so that is about a hundred runs up to millions.
    ///
    /// A burst of review candidates calls for one sooner: pairs the model
    /// cannot decide pile up when the data shows a kind of variation it
    /// has not weighed yet (people moving, new email addresses), and the
    /// next estimate, with the recheck after it, settles them.
    pub fn estimate_due(&self, population: u64, estimated_population: u64) -> bool {
        if population < self.estimate_profiles_min {
            return false;
        }
        let grown = population >= estimated_population.saturating_add(estimated_population / 10);
        let undecided = self.model.candidates_since_estimate.load(Ordering::Relaxed)
            >= CANDIDATES_PER_ESTIMATE_MAX
            && population > estimated_population;
        grown || undecided
    }

    /// Counts review candidates toward [`Self::estimate_due`].
    pub fn note_candidates(&self, recorded: u64) {
        self.model
            .candidates_since_estimate
            .fetch_add(recorded, Ordering::Relaxed);
    }

    /// Asks for the model to be re-estimated; see [`Self::take_estimate_request`].
    pub fn request_estimate(&self) {
        self.model.estimate_wanted.store(true, Ordering::Relaxed);
    }

    /// Whether a re-estimate was asked for since the last call.
    pub fn take_estimate_request(&self) -> bool {
        self.model.estimate_wanted.swap(false, Ordering::Relaxed)
    }

    pub fn priority(&self, kind: &IdentifierKind) -> u8 {
        self.priority.get(kind.as_str()).copied().unwrap_or(0)
    }

    pub fn per_profile_max(&self, kind: &IdentifierKind) -> usize {
        self.per_kind_max
            .get(kind.as_str())
            .copied()
            .unwrap_or(self.per_kind_default)
    }

    pub fn hub_profiles_min(&self) -> usize {
        self.hub_profiles_min
    }

    /// Junk identifiers (placeholders, QA addresses, all-zero device ids)
    /// are never used for matching.
    pub fn is_junk(&self, identifier: &Identifier) -> bool {
        let kind = identifier.kind().as_str();
        let value = identifier.value();
        if self.blocked_values.contains(&format!("{kind}:{value}")) {
            return true;
        }
        self.blocked_patterns
            .iter()
            .any(|(pattern_kind, regex)| pattern_kind == kind && regex.is_match(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FuzzyConfig, IdentityConfig};
    use crate::identity::Normalizer;

    fn identifier(kind: &str, value: &str) -> Identifier {
        Normalizer::new(&IdentityConfig::default(), 256)
            .normalize(kind, value)
            .expect("valid identifier")
    }

    #[test]
    fn default_blocklist_catches_placeholders_but_not_real_addresses() {
        let rules = MergeRules::new(&MergeConfig::default(), &FuzzyConfig::default());
        for junk in [
            identifier("email", "TEST@example.com"),
            identifier("email", "noreply@shop.co.uk"),
            identifier("device_id", "00000000-0000-0000-0000-000000000000"),
            identifier("user_id", "undefined"),
        ] {
            assert!(rules.is_junk(&junk), "{junk:?}");
        }
        for real in [
            identifier("email", "jane@example.com"),
            identifier("email", "tester.jones@gmail.com"),
            identifier("device_id", "a1b2c3"),
            identifier("phone", "+16502530000"),
        ] {
            assert!(!rules.is_junk(&real), "{real:?}");
        }
    }

    #[test]
    fn priorities_follow_the_configured_order() {
        let rules = MergeRules::new(&MergeConfig::default(), &FuzzyConfig::default());
        let order = [
            IdentifierKind::UserId,
            IdentifierKind::Email,
            IdentifierKind::Phone,
            IdentifierKind::DeviceId,
            IdentifierKind::AnonymousId,
            IdentifierKind::Custom("loyalty_id".to_owned()),
        ];
        for pair in order.windows(2) {
            assert!(rules.priority(&pair[0]) > rules.priority(&pair[1]));
        }
        assert_eq!(rules.per_profile_max(&IdentifierKind::UserId), 1);
    }
}
