//! The user-defined computed traits in force: definitions with their
//! checked conditions. The store's writer folds events through it (as
//! [`CustomTraitRules`]); reads and segment rules take values from it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Map, Value};

use super::evaluate::Evaluator;
use super::rule::{Condition, RuleError};
use crate::computed::custom::{Aggregation, CustomTraitDefinition};
use crate::computed::{Activity, CUSTOM_VALUES_MAX};
use crate::model::{CustomTraitRules, UnixMillis};

/// A definition with its checked condition.
#[derive(Debug, Clone)]
pub struct CompiledCustomTrait {
    pub definition: CustomTraitDefinition,
    pub condition: Option<Condition>,
}

/// The longest window a custom trait may have.
pub const WINDOW_DAYS_MAX: u32 = 366;
const NAME_CHARS_MAX: usize = 64;
const EVENT_CHARS_MAX: usize = 200;
const PROPERTY_CHARS_MAX: usize = 200;

/// Where a definition is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    pub field: &'static str,
    pub message: String,
}

impl CompiledCustomTrait {
    /// Checks a definition; nothing about it is stored until it passes.
    pub fn compile(definition: CustomTraitDefinition) -> Result<Self, DefinitionError> {
        let error = |field, message: String| DefinitionError { field, message };
        let name = &definition.name;
        if name.is_empty()
            || name.chars().count() > NAME_CHARS_MAX
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(error(
                "name",
                format!(
                    "a name is 1 to {NAME_CHARS_MAX} letters, digits and `_`, not starting with a digit (rules read it as profile.computed.custom.<name>)"
                ),
            ));
        }
        if definition.event.trim().is_empty() || definition.event.chars().count() > EVENT_CHARS_MAX
        {
            return Err(error(
                "event",
                format!("name the event, at most {EVENT_CHARS_MAX} characters"),
            ));
        }
        let property = &definition.property;
        let is_path = property.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '$')
        });
        if !property.is_empty() && (!is_path || property.chars().count() > PROPERTY_CHARS_MAX) {
            return Err(error(
                "property",
                format!(
                    "`{property}` is not a property path: names of letters, digits, `_`, `-` or `$`, joined by `.`"
                ),
            ));
        }
        if property.is_empty() && definition.aggregation.needs_property() {
            return Err(error(
                "property",
                format!(
                    "{} needs the property it aggregates",
                    definition.aggregation
                ),
            ));
        }
        if definition.window_days > WINDOW_DAYS_MAX {
            return Err(error(
                "window_days",
                format!("at most {WINDOW_DAYS_MAX} days (0 is all time)"),
            ));
        }
        let condition = match definition.condition.trim() {
            "" => None,
            // Positions are reported in the text as sent.
            _ => Some(
                Condition::compile(&definition.condition)
                    .map_err(|rule: RuleError| error("where", rule.to_string()))?,
            ),
        };
        Ok(CompiledCustomTrait {
            definition,
            condition,
        })
    }
}

#[derive(Default)]
pub struct CustomTraitRegistry {
    traits: RwLock<BTreeMap<String, Arc<CompiledCustomTrait>>>,
    /// Conditions run on the writer thread; the lock is uncontended.
    evaluator: Mutex<Evaluator>,
}

impl CustomTraitRegistry {
    pub fn install(&self, compiled: CompiledCustomTrait) {
        if let Ok(mut traits) = self.traits.write() {
            traits.insert(compiled.definition.name.clone(), Arc::new(compiled));
        }
    }

    /// These definitions, and only these, in force; one that no longer
    /// compiles stays out, as at start-up.
    pub fn replace_all(&self, definitions: Vec<CustomTraitDefinition>) {
        let compiled: BTreeMap<String, Arc<CompiledCustomTrait>> = definitions
            .into_iter()
            .filter_map(|definition| {
                let name = definition.name.clone();
                match CompiledCustomTrait::compile(definition) {
                    Ok(compiled) => Some((name, Arc::new(compiled))),
                    Err(error) => {
                        tracing::error!(computed_trait = %name, field = error.field, message = %error.message, "a stored computed trait does not compile; it is inactive");
                        None
                    }
                }
            })
            .collect();
        if let Ok(mut traits) = self.traits.write() {
            *traits = compiled;
        }
    }

    pub fn remove(&self, name: &str) -> Option<Arc<CompiledCustomTrait>> {
        self.traits.write().ok()?.remove(name)
    }

    pub fn get(&self, name: &str) -> Option<Arc<CompiledCustomTrait>> {
        self.traits.read().ok()?.get(name).cloned()
    }

    /// Every definition, by name.
    pub fn all(&self) -> Vec<Arc<CompiledCustomTrait>> {
        self.traits
            .read()
            .map(|traits| traits.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.traits.read().map_or(0, |traits| traits.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every defined trait's value on a profile as of `now`, by name.
    pub fn values_of(&self, activity: &Activity, now: UnixMillis) -> Vec<(String, Value)> {
        self.all()
            .iter()
            .map(|compiled| {
                let definition = &compiled.definition;
                let value = activity.custom.get(&definition.name).map_or_else(
                    || empty_value(definition.aggregation),
                    |state| state.value(definition, now),
                );
                (definition.name.clone(), value)
            })
            .collect()
    }

    fn fold_into(
        &self,
        compiled: &CompiledCustomTrait,
        activity: &mut Activity,
        properties: &Map<String, Value>,
        at: UnixMillis,
    ) {
        if let Some(condition) = &compiled.condition {
            let Ok(evaluator) = self.evaluator.lock() else {
                return;
            };
            let scope = evaluator.properties_scope(properties);
            if !condition.holds(&scope) {
                return;
            }
        }
        let definition = &compiled.definition;
        let value = definition.read(properties);
        activity
            .custom
            .entry(definition.name.clone())
            .or_default()
            .fold(definition, value, at, CUSTOM_VALUES_MAX);
    }
}

/// What a trait reads before any event counts: 0 for counts, nothing
/// otherwise (an empty list for unique values).
fn empty_value(aggregation: Aggregation) -> Value {
    match aggregation {
        Aggregation::Count | Aggregation::UniqueCount => Value::from(0),
        Aggregation::Sum => Value::from(0.0),
        Aggregation::UniqueValues => Value::Array(Vec::new()),
        _ => Value::Null,
    }
}

impl CustomTraitRules for CustomTraitRegistry {
    fn fold(
        &self,
        activity: &mut Activity,
        event: &str,
        properties: &Map<String, Value>,
        at: UnixMillis,
    ) {
        // Traits deleted since are dropped as the profile next changes.
        let counting: Vec<Arc<CompiledCustomTrait>> = match self.traits.read() {
            Ok(traits) => {
                activity.custom.retain(|name, _| traits.contains_key(name));
                traits
                    .values()
                    .filter(|compiled| compiled.definition.event == event)
                    .cloned()
                    .collect()
            }
            Err(_) => return,
        };
        for compiled in counting {
            self.fold_into(&compiled, activity, properties, at);
        }
    }

    fn fold_one(
        &self,
        name: &str,
        activity: &mut Activity,
        event: &str,
        properties: &Map<String, Value>,
        at: UnixMillis,
    ) {
        if let Some(compiled) = self.get(name)
            && compiled.definition.event == event
        {
            self.fold_into(&compiled, activity, properties, at);
        }
    }

    fn any(&self) -> bool {
        !self.is_empty()
    }

    fn values(&self, activity: &Activity, now: UnixMillis) -> Vec<(String, Value)> {
        self.values_of(activity, now)
    }
}
