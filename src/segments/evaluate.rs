//! Turns a profile's facts into the CEL values rules read, building only
//! the parts the rules at hand need.

use std::collections::HashMap;

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp,
};
use cel::common::value::Val;
use cel::extractors::Arguments;
use cel::{Context, ExecutionError, Value};

use super::rule::{EVENT_COUNTS_VARIABLE, NameNeeds, Needs};
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

impl Evaluator {
    /// A scope holding one event's `properties`, for a computed trait's
    /// condition.
    pub fn properties_scope(
        &self,
        properties: &serde_json::Map<String, serde_json::Value>,
    ) -> Context<'_, 'static> {
        let mut scope = self.root.new_inner_scope();
        let fields: HashMap<CelMapKey<'static>, Boxed> = properties
            .iter()
            .map(|(name, value)| (CelMapKey::from(name.clone()), json_value(value)))
            .collect();
        scope.add_variable_as_val("properties", map(fields));
        scope
    }
}

/// What is needed besides the facts to compute traits.
pub struct EvaluationTime<'a> {
    pub now: UnixMillis,
    pub lifecycle: &'a LifecycleThresholds,
    pub quintiles: Option<&'a RfmQuintiles>,
    pub custom: Option<&'a super::custom::CustomTraitRegistry>,
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
        scope.add_variable_as_val("profile", profile_value(facts, needs, time));
        scope.add_variable_as_val("now", timestamp(time.now));
        if !needs.event_windows.is_empty() {
            let counts: HashMap<CelMapKey<'static>, Boxed> = needs
                .event_windows
                .iter()
                .map(|window| {
                    let since = UnixMillis(time.now.0.saturating_sub(window.window_ms));
                    let count = facts.events.count_since(&window.name, since);
                    (
                        CelMapKey::from(window.key()),
                        int(i64::try_from(count).unwrap_or(i64::MAX)),
                    )
                })
                .collect();
            scope.add_variable_as_val(EVENT_COUNTS_VARIABLE, map(counts));
        }
        scope
    }
}

/// Values are built directly as the interpreter's own types: going through
/// `cel::Value` would build every tree twice.
type Boxed = Box<dyn Val>;

fn profile_value(facts: &ProfileFacts<'_>, needs: &Needs, time: &EvaluationTime<'_>) -> Boxed {
    let mut profile: HashMap<CelMapKey<'static>, Boxed> = HashMap::with_capacity(5);
    if needs.id {
        profile.insert(CelMapKey::from("id"), string(facts.id.to_string()));
    }
    let traits: HashMap<CelMapKey<'static>, Boxed> = facts
        .traits
        .iter()
        .filter(|(name, _)| needs.traits.wants(name))
        .map(|(name, value)| (CelMapKey::from(name.clone()), json_value(value)))
        .collect();
    profile.insert(CelMapKey::from("traits"), map(traits));
    if needs.computed != NameNeeds::None {
        let mut computed = compute(&facts.activity, time.now, time.lifecycle);
        computed.rfm_scores = time
            .quintiles
            .and_then(|quintiles| quintiles.scores(&facts.activity));
        if needs.computed.wants(super::rule::CUSTOM)
            && let Some(custom) = time.custom
        {
            computed.custom = custom.values_of(&facts.activity, time.now);
        }
        profile.insert(
            CelMapKey::from("computed"),
            computed_value(&computed, &needs.computed),
        );
    }
    if needs.consent {
        let consent: HashMap<CelMapKey<'static>, Boxed> = Purpose::ALL
            .iter()
            .map(|purpose| {
                let channels: Vec<Boxed> = Channel::ALL
                    .iter()
                    .filter(|channel| facts.consents.contains(&(**channel, *purpose)))
                    .map(|channel| static_string(channel.as_str()))
                    .collect();
                (CelMapKey::from(purpose.as_str()), list(channels))
            })
            .collect();
        profile.insert(CelMapKey::from("consent"), map(consent));
    }
    if needs.identifiers {
        let kinds: Vec<Boxed> = facts
            .identifier_kinds
            .iter()
            .map(|kind| string(kind.clone()))
            .collect();
        profile.insert(CelMapKey::from("identifiers"), list(kinds));
    }
    map(profile)
}

/// Only the computed traits the rules name.
fn computed_value(traits: &ComputedTraits, wanted: &NameNeeds) -> Boxed {
    let optional_time = |at: Option<UnixMillis>| at.map_or_else(null, timestamp);
    let count = |value: u64| int(i64::try_from(value).unwrap_or(i64::MAX));
    let score = |pick: fn((u8, u8, u8)) -> u8| {
        traits
            .rfm_scores
            .map_or_else(null, |scores| int(pick(scores).into()))
    };
    let mut fields: HashMap<CelMapKey<'static>, Boxed> = HashMap::new();
    let mut put = |name: &'static str, value: &dyn Fn() -> Boxed| {
        if wanted.wants(name) {
            fields.insert(CelMapKey::from(name), value());
        }
    };
    put("recency_days", &|| {
        traits.recency_days.map_or_else(null, int)
    });
    put("frequency", &|| count(traits.frequency));
    put("monetary", &|| double(traits.monetary));
    put("lifetime_value", &|| double(traits.lifetime_value));
    put("average_order_value", &|| {
        traits.average_order_value.map_or_else(null, double)
    });
    put("first_order_at", &|| optional_time(traits.first_order_at));
    put("last_order_at", &|| optional_time(traits.last_order_at));
    put("last_seen_at", &|| optional_time(traits.last_seen_at));
    put("email_opens_30d", &|| count(traits.email_opens_30d));
    put("email_opens_90d", &|| count(traits.email_opens_90d));
    put("email_clicks_30d", &|| count(traits.email_clicks_30d));
    put("email_clicks_90d", &|| count(traits.email_clicks_90d));
    put("conversions_30d", &|| count(traits.conversions_30d));
    put("conversions_90d", &|| count(traits.conversions_90d));
    put("engagement_group", &|| {
        static_string(traits.engagement_group)
    });
    put("lifecycle_stage", &|| static_string(traits.lifecycle_stage));
    put("interests", &|| {
        list(
            traits
                .interests
                .iter()
                .map(|(category, _)| string(category.clone()))
                .collect(),
        )
    });
    put("interest_scores", &|| {
        map(traits
            .interests
            .iter()
            .map(|(category, score)| (CelMapKey::from(category.clone()), double(*score)))
            .collect())
    });
    put("r_score", &|| score(|(r, _, _)| r));
    put("f_score", &|| score(|(_, f, _)| f));
    put("m_score", &|| score(|(_, _, m)| m));
    put(super::rule::CUSTOM, &|| {
        map(traits
            .custom
            .iter()
            .map(|(name, value)| (CelMapKey::from(name.clone()), json_value(value)))
            .collect())
    });
    map(fields)
}

fn map(entries: HashMap<CelMapKey<'static>, Boxed>) -> Boxed {
    Box::new(CelMap::from(entries))
}

fn list(items: Vec<Boxed>) -> Boxed {
    Box::new(CelList::from(items))
}

fn string(text: String) -> Boxed {
    Box::new(CelString::from(text))
}

fn static_string(text: &'static str) -> Boxed {
    Box::new(CelString::from(text))
}

fn int(value: i64) -> Boxed {
    Box::new(CelInt::from(value))
}

fn double(value: f64) -> Boxed {
    Box::new(CelDouble::from(value))
}

fn null() -> Boxed {
    Box::new(CelNull)
}

fn timestamp(at: UnixMillis) -> Boxed {
    let utc = chrono::DateTime::from_timestamp_millis(at.0).unwrap_or_default();
    Box::new(CelTimestamp::from(utc.fixed_offset()))
}

/// JSON numbers that are whole become ints, others doubles; CEL compares
/// the two with each other.
pub fn json_value(value: &serde_json::Value) -> Boxed {
    match value {
        serde_json::Value::Null => null(),
        serde_json::Value::Bool(flag) => Box::new(CelBool::from(*flag)),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(whole) => int(whole),
            None => double(number.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(text) => string(text.clone()),
        serde_json::Value::Array(items) => list(items.iter().map(json_value).collect()),
        serde_json::Value::Object(fields) => map(fields
            .iter()
            .map(|(name, value)| (CelMapKey::from(name.clone()), json_value(value)))
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
