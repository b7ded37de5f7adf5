//! Turns a profile's facts into the CEL values rules read, building only
//! the parts the rules at hand need.

use std::collections::HashMap;
use std::sync::Arc;

use cel::extractors::Arguments;
use cel::objects::{Key, Map};
use cel::{Context, ExecutionError, Value};

use super::rule::{EVENT_COUNTS_VARIABLE, Needs};
use crate::computed::{ComputedTraits, LifecycleThresholds, RfmQuintiles, compute};
use crate::model::{Channel, ProfileFacts, Purpose, UnixMillis};

const EARTH_RADIUS_KM: f64 = 6371.0088;

/// The root scope shared by every evaluation: the standard library and
/// Sightline's functions. Each profile gets a cheap child scope.
pub struct Evaluator {
    root: Context<'static, 'static>,
}

impl Default for Evaluator {
    fn default() -> Self {
        let mut root = Context::default();
        // The name is not one of the standard library's, so this cannot
        // conflict.
        let _ = root.add_function("geo_distance_km", geo_distance_km);
        Evaluator { root }
    }
}

/// What is needed besides the facts to compute traits.
pub struct EvaluationTime<'a> {
    pub now: UnixMillis,
    pub lifecycle: &'a LifecycleThresholds,
    pub quintiles: Option<&'a RfmQuintiles>,
}

impl Evaluator {
    /// A scope holding `profile`, `now` and the event counts the rules read.
    pub fn scope(
        &self,
        facts: &ProfileFacts<'_>,
        needs: &Needs,
        time: &EvaluationTime<'_>,
    ) -> Context<'_, 'static> {
        let mut scope = self.root.new_inner_scope();
        scope.add_variable_from_value("profile", profile_value(facts, needs, time));
        scope.add_variable_from_value("now", timestamp(time.now));
        if !needs.event_windows.is_empty() {
            let counts: HashMap<Key, Value> = needs
                .event_windows
                .iter()
                .map(|window| {
                    let since = UnixMillis(time.now.0.saturating_sub(window.window_ms));
                    let count = facts.events.count_since(&window.name, since);
                    (
                        Key::from(window.key()),
                        Value::Int(i64::try_from(count).unwrap_or(i64::MAX)),
                    )
                })
                .collect();
            scope.add_variable_from_value(EVENT_COUNTS_VARIABLE, map(counts));
        }
        scope
    }
}

fn profile_value(facts: &ProfileFacts<'_>, needs: &Needs, time: &EvaluationTime<'_>) -> Value {
    let mut profile: HashMap<Key, Value> = HashMap::with_capacity(5);
    if needs.id {
        profile.insert(Key::from("id"), Value::from(facts.id.to_string()));
    }
    let traits: HashMap<Key, Value> = facts
        .traits
        .iter()
        .filter(|(name, _)| needs.traits.wants(name))
        .map(|(name, value)| (Key::from(name.clone()), json_value(value)))
        .collect();
    profile.insert(Key::from("traits"), map(traits));
    if needs.computed {
        let mut computed = compute(&facts.activity, time.now, time.lifecycle);
        computed.rfm_scores = time
            .quintiles
            .and_then(|quintiles| quintiles.scores(&computed));
        profile.insert(Key::from("computed"), computed_value(&computed));
    }
    if needs.consent {
        let consent: HashMap<Key, Value> = Purpose::ALL
            .iter()
            .map(|purpose| {
                let channels: Vec<Value> = Channel::ALL
                    .iter()
                    .filter(|channel| facts.consents.contains(&(**channel, *purpose)))
                    .map(|channel| Value::from(channel.as_str()))
                    .collect();
                (Key::from(purpose.as_str()), Value::List(Arc::new(channels)))
            })
            .collect();
        profile.insert(Key::from("consent"), map(consent));
    }
    if needs.identifiers {
        let kinds: Vec<Value> = facts
            .identifier_kinds
            .iter()
            .map(|kind| Value::from(kind.clone()))
            .collect();
        profile.insert(Key::from("identifiers"), Value::List(Arc::new(kinds)));
    }
    map(profile)
}

fn computed_value(traits: &ComputedTraits) -> Value {
    let optional_time = |at: Option<UnixMillis>| at.map_or(Value::Null, timestamp);
    let count = |value: u64| Value::Int(i64::try_from(value).unwrap_or(i64::MAX));
    let (r, f, m) = match traits.rfm_scores {
        Some((r, f, m)) => (
            Value::Int(r.into()),
            Value::Int(f.into()),
            Value::Int(m.into()),
        ),
        None => (Value::Null, Value::Null, Value::Null),
    };
    let fields: [(&str, Value); 21] = [
        (
            "recency_days",
            traits.recency_days.map_or(Value::Null, Value::Int),
        ),
        ("frequency", count(traits.frequency)),
        ("monetary", Value::Float(traits.monetary)),
        ("lifetime_value", Value::Float(traits.lifetime_value)),
        (
            "average_order_value",
            traits.average_order_value.map_or(Value::Null, Value::Float),
        ),
        ("first_order_at", optional_time(traits.first_order_at)),
        ("last_order_at", optional_time(traits.last_order_at)),
        ("last_seen_at", optional_time(traits.last_seen_at)),
        ("email_opens_30d", count(traits.email_opens_30d)),
        ("email_opens_90d", count(traits.email_opens_90d)),
        ("email_clicks_30d", count(traits.email_clicks_30d)),
        ("email_clicks_90d", count(traits.email_clicks_90d)),
        ("conversions_30d", count(traits.conversions_30d)),
        ("conversions_90d", count(traits.conversions_90d)),
        ("engagement_group", Value::from(traits.engagement_group)),
        ("lifecycle_stage", Value::from(traits.lifecycle_stage)),
        (
            "interests",
            Value::List(Arc::new(
                traits
                    .interests
                    .iter()
                    .map(|(category, _)| Value::from(category.clone()))
                    .collect(),
            )),
        ),
        (
            "interest_scores",
            map(traits
                .interests
                .iter()
                .map(|(category, score)| (Key::from(category.clone()), Value::Float(*score)))
                .collect()),
        ),
        ("r_score", r),
        ("f_score", f),
        ("m_score", m),
    ];
    map(fields
        .into_iter()
        .map(|(name, value)| (Key::from(name), value))
        .collect())
}

fn map(entries: HashMap<Key, Value>) -> Value {
    Value::Map(Map {
        map: Arc::new(entries),
    })
}

fn timestamp(at: UnixMillis) -> Value {
    let utc = chrono::DateTime::from_timestamp_millis(at.0).unwrap_or_default();
    Value::Timestamp(utc.fixed_offset())
}

/// JSON numbers that are whole become ints, others doubles; CEL compares
/// the two with each other.
pub fn json_value(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(flag) => Value::Bool(*flag),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(int) => Value::Int(int),
            None => Value::Float(number.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(text) => Value::from(text.clone()),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(json_value).collect()))
        }
        serde_json::Value::Object(fields) => map(fields
            .iter()
            .map(|(name, value)| (Key::from(name.clone()), json_value(value)))
            .collect()),
    }
}

/// Great-circle distance in kilometres between two points given in degrees.
fn geo_distance_km(Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    let number = |index: usize| -> Result<f64, ExecutionError> {
        match args.get(index) {
            Some(Value::Float(value)) => Ok(*value),
            Some(Value::Int(value)) => Ok(*value as f64),
            Some(Value::UInt(value)) => Ok(*value as f64),
            _ => Err(ExecutionError::function_error(
                "geo_distance_km",
                "takes four numbers: lat1, lon1, lat2, lon2",
            )),
        }
    };
    let (lat1, lon1, lat2, lon2) = (number(0)?, number(1)?, number(2)?, number(3)?);
    Ok(Value::Float(haversine_km(lat1, lon1, lat2, lon2)))
}

fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let delta_phi = (lat2 - lat1).to_radians();
    let delta_lambda = (lon2 - lon1).to_radians();
    let a = (delta_phi / 2.0).sin().powi(2)
        + phi1.cos() * phi2.cos() * (delta_lambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn london_to_paris_is_about_344_km() {
        let distance = haversine_km(51.5072, -0.1276, 48.8566, 2.3522);
        assert!((distance - 343.9).abs() < 2.0, "{distance}");
        assert!(haversine_km(10.0, 10.0, 10.0, 10.0).abs() < 1e-9);
    }
}
