//! Computed traits of one's own: an aggregation of one event property over
//! a trailing window, kept per profile as day buckets so that windowed
//! values age as time passes without new events, and so that two profiles'
//! states combine on merge into what one profile would hold had it
//! received both histories. Pure: which events count (the name and the
//! condition) is decided by the caller.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Money;
use crate::model::UnixMillis;

const DAY_MS: i64 = 86_400_000;
/// The bucket of a trait over all time.
const ALL_TIME: i64 = i64::MIN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
    MostFrequent,
    UniqueCount,
    UniqueValues,
}

impl Aggregation {
    pub const ALL: [Aggregation; 10] = [
        Aggregation::Count,
        Aggregation::Sum,
        Aggregation::Avg,
        Aggregation::Min,
        Aggregation::Max,
        Aggregation::First,
        Aggregation::Last,
        Aggregation::MostFrequent,
        Aggregation::UniqueCount,
        Aggregation::UniqueValues,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Count => "count",
            Aggregation::Sum => "sum",
            Aggregation::Avg => "avg",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::First => "first",
            Aggregation::Last => "last",
            Aggregation::MostFrequent => "most_frequent",
            Aggregation::UniqueCount => "unique_count",
            Aggregation::UniqueValues => "unique_values",
        }
    }

    /// Whether it reads a property (all but `count`, where a property is
    /// optional and only counts events that have it).
    pub fn needs_property(self) -> bool {
        self != Aggregation::Count
    }

    fn numeric(self) -> bool {
        matches!(
            self,
            Aggregation::Sum | Aggregation::Avg | Aggregation::Min | Aggregation::Max
        )
    }

    fn keeps_values(self) -> bool {
        matches!(
            self,
            Aggregation::MostFrequent | Aggregation::UniqueCount | Aggregation::UniqueValues
        )
    }

    /// What a rule reading the value compares it with.
    pub fn value_kind(self) -> &'static str {
        match self {
            Aggregation::Count | Aggregation::UniqueCount => "number",
            Aggregation::Sum | Aggregation::Avg | Aggregation::Min | Aggregation::Max => "number",
            Aggregation::First | Aggregation::Last | Aggregation::MostFrequent => "any",
            Aggregation::UniqueValues => "list",
        }
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Aggregation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Aggregation::ALL
            .into_iter()
            .find(|aggregation| aggregation.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "unknown aggregation `{text}`; known: {}",
                    Aggregation::ALL.map(Aggregation::as_str).join(", ")
                )
            })
    }
}

/// A user-defined computed trait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomTraitDefinition {
    pub name: String,
    /// The event it aggregates.
    pub event: String,
    pub aggregation: Aggregation,
    /// The property read, as a dotted path (`products.0.category` is not a
    /// path; `order.currency` is); empty for a plain count.
    pub property: String,
    /// 0 is all time.
    pub window_days: u32,
    /// A CEL condition over the event's `properties`; empty counts every
    /// event of the name.
    pub condition: String,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    /// False while stored events are being folded in after a change.
    #[serde(default)]
    pub ready: bool,
}

impl CustomTraitDefinition {
    /// The property's value in an event, if it has one (`null` counts as
    /// none).
    pub fn read<'a>(&self, properties: &'a serde_json::Map<String, Value>) -> Option<&'a Value> {
        let mut parts = self.property.split('.');
        let mut value = properties.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        (!value.is_null()).then_some(value)
    }
}

/// One day's (or, over all time, the whole history's) share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: u64,
    /// Events whose property was a number, and their exact sum.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub numbers: u64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub sum: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<(i64, Value)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<(i64, Value)>,
    /// Distinct values (as JSON text) and how often each came.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, u64>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn is_zero_i64(value: &i64) -> bool {
    *value == 0
}

impl Bucket {
    fn combine(&mut self, other: &Bucket, values_max: usize) {
        self.count += other.count;
        self.numbers += other.numbers;
        self.sum = self.sum.saturating_add(other.sum);
        self.min = lesser(self.min, other.min);
        self.max = greater(self.max, other.max);
        self.first = match (self.first.take(), &other.first) {
            (Some(ours), Some(theirs)) => Some(earliest(ours, theirs.clone())),
            (ours, theirs) => ours.or_else(|| theirs.clone()),
        };
        self.last = match (self.last.take(), &other.last) {
            (Some(ours), Some(theirs)) => Some(latest(ours, theirs.clone())),
            (ours, theirs) => ours.or_else(|| theirs.clone()),
        };
        for (value, count) in &other.values {
            *self.values.entry(value.clone()).or_default() += count;
        }
        bound_values(&mut self.values, values_max);
    }
}

fn lesser(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn greater(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Ties in time go to the smaller value text, so that the outcome does
/// not depend on which event arrived first.
fn earliest(a: (i64, Value), b: (i64, Value)) -> (i64, Value) {
    if (b.0, b.1.to_string()) < (a.0, a.1.to_string()) {
        b
    } else {
        a
    }
}

fn latest(a: (i64, Value), b: (i64, Value)) -> (i64, Value) {
    if (b.0, b.1.to_string()) > (a.0, a.1.to_string()) {
        b
    } else {
        a
    }
}

/// Keeps the most frequent values (then the smallest text) when there are
/// too many.
fn bound_values(values: &mut BTreeMap<String, u64>, values_max: usize) {
    if values.len() <= values_max {
        return;
    }
    let mut ranked: Vec<(String, u64)> = std::mem::take(values).into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(values_max);
    *values = ranked.into_iter().collect();
}

/// One custom trait's state on one profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomState {
    /// Day number → bucket; one bucket at `i64::MIN` over all time.
    pub buckets: BTreeMap<i64, Bucket>,
}

impl CustomState {
    /// Folds in one event that the trait counts; `value` is its property.
    pub fn fold(
        &mut self,
        definition: &CustomTraitDefinition,
        value: Option<&Value>,
        at: UnixMillis,
        values_max: usize,
    ) {
        let aggregation = definition.aggregation;
        if aggregation.needs_property() && value.is_none() {
            return;
        }
        if aggregation == Aggregation::Count && !definition.property.is_empty() && value.is_none() {
            return;
        }
        let number = value.and_then(Value::as_f64);
        if aggregation.numeric() && number.is_none() {
            return;
        }
        let key = match definition.window_days {
            0 => ALL_TIME,
            _ => at.0.div_euclid(DAY_MS),
        };
        let bucket = self.buckets.entry(key).or_default();
        bucket.count += 1;
        if let Some(number) = number.filter(|_| aggregation.numeric()) {
            bucket.numbers += 1;
            bucket.sum = bucket
                .sum
                .saturating_add(Money::from_amount(number).unwrap_or_default().0);
            bucket.min = lesser(bucket.min, Some(number));
            bucket.max = greater(bucket.max, Some(number));
        }
        if let Some(value) = value {
            match aggregation {
                Aggregation::First => {
                    let seen = (at.0, value.clone());
                    bucket.first = Some(match bucket.first.take() {
                        Some(ours) => earliest(ours, seen),
                        None => seen,
                    });
                }
                Aggregation::Last => {
                    let seen = (at.0, value.clone());
                    bucket.last = Some(match bucket.last.take() {
                        Some(ours) => latest(ours, seen),
                        None => seen,
                    });
                }
                _ if aggregation.keeps_values() => {
                    *bucket.values.entry(value.to_string()).or_default() += 1;
                    bound_values(&mut bucket.values, values_max);
                }
                _ => {}
            }
        }
        self.prune(definition);
    }

    /// The state of two profiles that became one.
    pub fn merge(&mut self, other: &CustomState, values_max: usize) {
        for (day, bucket) in &other.buckets {
            self.buckets
                .entry(*day)
                .or_default()
                .combine(bucket, values_max);
        }
    }

    /// Drops day buckets that no window reading from the newest can reach.
    fn prune(&mut self, definition: &CustomTraitDefinition) {
        if definition.window_days == 0 {
            return;
        }
        if let Some(&newest) = self.buckets.keys().next_back() {
            let oldest_kept = newest - i64::from(definition.window_days);
            self.buckets = self.buckets.split_off(&oldest_kept);
        }
    }

    /// The trait's value as of `now`: `null` when no event counts.
    pub fn value(&self, definition: &CustomTraitDefinition, now: UnixMillis) -> Value {
        let today = now.0.div_euclid(DAY_MS);
        let mut total = Bucket::default();
        let buckets: Box<dyn Iterator<Item = &Bucket>> = match definition.window_days {
            0 => Box::new(self.buckets.get(&ALL_TIME).into_iter()),
            days => Box::new(
                self.buckets
                    .range(today - i64::from(days) + 1..)
                    .map(|(_, bucket)| bucket),
            ),
        };
        for bucket in buckets {
            total.combine(bucket, usize::MAX);
        }
        let number =
            |value: f64| serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        match definition.aggregation {
            Aggregation::Count => Value::from(total.count),
            Aggregation::Sum => number(Money(total.sum).amount()),
            Aggregation::Avg if total.numbers == 0 => Value::Null,
            Aggregation::Avg => number(Money(total.sum).amount() / total.numbers as f64),
            Aggregation::Min => total.min.map_or(Value::Null, number),
            Aggregation::Max => total.max.map_or(Value::Null, number),
            Aggregation::First => total.first.map_or(Value::Null, |(_, value)| value),
            Aggregation::Last => total.last.map_or(Value::Null, |(_, value)| value),
            Aggregation::MostFrequent => total
                .values
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .and_then(|(text, _)| serde_json::from_str(text).ok())
                .unwrap_or(Value::Null),
            Aggregation::UniqueCount => Value::from(total.values.len() as u64),
            Aggregation::UniqueValues => Value::Array(
                total
                    .values
                    .keys()
                    .filter_map(|text| serde_json::from_str(text).ok())
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definition(
        aggregation: Aggregation,
        property: &str,
        window_days: u32,
    ) -> CustomTraitDefinition {
        CustomTraitDefinition {
            name: "t".to_owned(),
            event: "E".to_owned(),
            aggregation,
            property: property.to_owned(),
            window_days,
            condition: String::new(),
            created_at: UnixMillis(0),
            updated_at: UnixMillis(0),
            ready: true,
        }
    }

    fn day(n: i64) -> UnixMillis {
        UnixMillis(n * DAY_MS + 3_600_000)
    }

    #[test]
    fn windowed_counts_age_without_new_events() {
        let clicks = definition(Aggregation::Count, "", 7);
        let mut state = CustomState::default();
        for _ in 0..3 {
            state.fold(&clicks, None, day(10), 100);
        }
        assert_eq!(state.value(&clicks, day(10)), json!(3));
        assert_eq!(state.value(&clicks, day(16)), json!(3));
        assert_eq!(state.value(&clicks, day(18)), json!(0));
    }

    #[test]
    fn merged_states_equal_one_state_with_every_event() {
        let events = [
            (json!("shoes"), 1),
            (json!("bags"), 2),
            (json!("shoes"), 3),
            (json!("hats"), 3),
        ];
        for aggregation in Aggregation::ALL {
            let trait_ = definition(aggregation, "category", 30);
            let (mut one, mut other, mut single) = (
                CustomState::default(),
                CustomState::default(),
                CustomState::default(),
            );
            for (index, (value, at)) in events.iter().enumerate() {
                let target = if index % 2 == 0 { &mut one } else { &mut other };
                target.fold(&trait_, Some(value), day(*at), 100);
                single.fold(&trait_, Some(value), day(*at), 100);
            }
            one.merge(&other, 100);
            assert_eq!(
                one.value(&trait_, day(4)),
                single.value(&trait_, day(4)),
                "{aggregation}"
            );
        }
        let frequent = definition(Aggregation::MostFrequent, "category", 0);
        let mut state = CustomState::default();
        for (value, at) in &events {
            state.fold(&frequent, Some(value), day(*at), 100);
        }
        assert_eq!(state.value(&frequent, day(4)), json!("shoes"));
    }

    #[test]
    fn sums_are_exact_and_non_numbers_do_not_count() {
        let revenue = definition(Aggregation::Sum, "revenue", 0);
        let mut state = CustomState::default();
        for value in [json!(0.1), json!(0.2), json!("n/a")] {
            state.fold(&revenue, Some(&value), day(1), 100);
        }
        assert_eq!(state.value(&revenue, day(1)), json!(0.3));
        let average = definition(Aggregation::Avg, "revenue", 0);
        let mut state = CustomState::default();
        assert_eq!(state.value(&average, day(1)), Value::Null);
        state.fold(&average, Some(&json!(3)), day(1), 100);
        state.fold(&average, Some(&json!(4)), day(1), 100);
        assert_eq!(state.value(&average, day(1)), json!(3.5));
    }
}
