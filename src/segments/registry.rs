//! The compiled segments in force. The store's writer asks it to evaluate
//! profiles (as [`MembershipRules`]); the segment service installs and
//! removes definitions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use super::custom::CustomTraitRegistry;
use super::evaluate::{EvaluationTime, Evaluator};
use super::holdout::is_held_out;
use super::rule::{Needs, Rule};
use crate::computed::custom::CustomTraitDefinition;
use crate::computed::{LifecycleThresholds, RfmCache, RfmQuintiles};
use crate::model::{
    Clock, CustomTraitRules, Membership, MembershipRules, ProfileFacts, SegmentDefinition,
    SegmentNumber, SegmentScope, UnixMillis,
};

/// A definition with its checked rule.
#[derive(Debug, Clone)]
pub struct CompiledSegment {
    pub definition: SegmentDefinition,
    pub rule: Rule,
}

pub struct SegmentRegistry {
    segments: RwLock<BTreeMap<SegmentNumber, Arc<CompiledSegment>>>,
    /// Evaluation runs on the store's writer thread (and in tests); the
    /// lock is uncontended.
    evaluator: Mutex<Evaluator>,
    clock: Arc<dyn Clock>,
    lifecycle: LifecycleThresholds,
    rfm: RfmCache,
    custom: Arc<CustomTraitRegistry>,
}

impl SegmentRegistry {
    pub fn new(clock: Arc<dyn Clock>, lifecycle: LifecycleThresholds, rfm: RfmCache) -> Self {
        SegmentRegistry {
            segments: RwLock::new(BTreeMap::new()),
            evaluator: Mutex::new(Evaluator::default()),
            clock,
            lifecycle,
            rfm,
            custom: Arc::default(),
        }
    }

    /// The user-defined computed traits, which rules can read.
    pub fn custom_traits(&self) -> &Arc<CustomTraitRegistry> {
        &self.custom
    }

    /// Whether `rule` holds for each profile it is asked about, as of now;
    /// on an evaluator of its own, so that the writer's is never held.
    pub fn matcher(&self, rule: Rule) -> RuleMatcher {
        RuleMatcher {
            evaluator: Evaluator::default(),
            rule,
            now: self.clock.now(),
            lifecycle: self.lifecycle,
            quintiles: self.rfm.read().ok().and_then(|cached| cached.clone()),
            custom: Arc::clone(&self.custom),
        }
    }

    pub fn install(&self, segment: CompiledSegment) {
        if let Ok(mut segments) = self.segments.write() {
            segments.insert(segment.definition.number, Arc::new(segment));
        }
    }

    pub fn remove(&self, number: SegmentNumber) {
        if let Ok(mut segments) = self.segments.write() {
            segments.remove(&number);
        }
    }

    /// Records that a definition's members are computed.
    pub fn update_definition(&self, definition: SegmentDefinition) {
        if let Ok(mut segments) = self.segments.write()
            && let Some(current) = segments.get_mut(&definition.number)
            && current.definition.version == definition.version
        {
            *current = Arc::new(CompiledSegment {
                definition,
                rule: current.rule.clone(),
            });
        }
    }

    pub fn by_id(&self, id: &str) -> Option<Arc<CompiledSegment>> {
        self.segments
            .read()
            .ok()?
            .values()
            .find(|segment| segment.definition.id == id)
            .cloned()
    }

    pub fn by_number(&self, number: SegmentNumber) -> Option<Arc<CompiledSegment>> {
        self.segments.read().ok()?.get(&number).cloned()
    }

    /// Every segment, ordered by id.
    pub fn all(&self) -> Vec<Arc<CompiledSegment>> {
        let mut all: Vec<_> = self
            .segments
            .read()
            .map(|segments| segments.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.definition.id.cmp(&b.definition.id));
        all
    }

    pub fn len(&self) -> usize {
        self.segments.read().map_or(0, |segments| segments.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn selected(&self, numbers: &[SegmentNumber]) -> Vec<Arc<CompiledSegment>> {
        let Ok(segments) = self.segments.read() else {
            return Vec::new();
        };
        numbers
            .iter()
            .filter_map(|number| segments.get(number).cloned())
            .collect()
    }
}

/// One rule, not installed, evaluated against profiles (a preview).
pub struct RuleMatcher {
    evaluator: Evaluator,
    rule: Rule,
    now: UnixMillis,
    lifecycle: LifecycleThresholds,
    quintiles: Option<RfmQuintiles>,
    custom: Arc<CustomTraitRegistry>,
}

impl RuleMatcher {
    pub fn matches(&self, facts: &ProfileFacts<'_>) -> bool {
        let time = EvaluationTime {
            now: self.now,
            lifecycle: &self.lifecycle,
            quintiles: self.quintiles.as_ref(),
            custom: Some(&self.custom),
        };
        let scope = self.evaluator.scope(facts, self.rule.needs(), &time);
        self.rule.matches(&scope)
    }
}

impl MembershipRules for SegmentRegistry {
    fn segments_in(&self, scope: SegmentScope) -> Vec<SegmentNumber> {
        let Ok(segments) = self.segments.read() else {
            return Vec::new();
        };
        segments
            .values()
            .filter(|segment| match scope {
                SegmentScope::All => true,
                SegmentScope::One(number) => segment.definition.number == number,
                SegmentScope::TimeDependent => segment.rule.depends_on_time(),
            })
            .map(|segment| segment.definition.number)
            .collect()
    }

    fn evaluate(&self, facts: &ProfileFacts<'_>, numbers: &[SegmentNumber]) -> Vec<Membership> {
        let segments = self.selected(numbers);
        if segments.is_empty() {
            return Vec::new();
        }
        let mut needs = Needs::default();
        for segment in &segments {
            needs.union(segment.rule.needs());
        }
        let quintiles = self.rfm.read().ok().and_then(|cached| cached.clone());
        let time = EvaluationTime {
            now: self.clock.now(),
            lifecycle: &self.lifecycle,
            quintiles: quintiles.as_ref(),
            custom: Some(&self.custom),
        };
        let Ok(evaluator) = self.evaluator.lock() else {
            return Vec::new();
        };
        let scope = evaluator.scope(facts, &needs, &time);
        segments
            .iter()
            .filter(|segment| segment.rule.matches(&scope))
            .map(|segment| Membership {
                segment: segment.definition.number,
                holdout: is_held_out(
                    &segment.definition.id,
                    facts.id,
                    segment.definition.holdout_percent,
                ),
            })
            .collect()
    }

    fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    fn custom_traits(&self) -> &dyn CustomTraitRules {
        self.custom.as_ref()
    }

    /// A stored definition that no longer compiles stays out of force, as
    /// at start-up.
    fn replace_definitions(
        &self,
        segments: Vec<SegmentDefinition>,
        custom_traits: Vec<CustomTraitDefinition>,
    ) {
        let compiled: BTreeMap<SegmentNumber, Arc<CompiledSegment>> = segments
            .into_iter()
            .filter_map(|definition| match Rule::compile(&definition.rule) {
                Ok(rule) => Some((definition.number, Arc::new(CompiledSegment { definition, rule }))),
                Err(error) => {
                    tracing::error!(segment = %definition.id, %error, "a stored segment rule does not compile; the segment is inactive");
                    None
                }
            })
            .collect();
        if let Ok(mut installed) = self.segments.write() {
            *installed = compiled;
        }
        self.custom.replace_all(custom_traits);
    }
}
