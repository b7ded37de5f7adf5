//! Request validation: every limit and shape rule a call must pass before
//! anything is stored. Errors name the offending field and never echo its
//! value, which may be personal data.

use std::collections::BTreeSet;

use super::{IdentifyInput, ServiceError, TrackInput};
use crate::config::Limits;
use crate::identity::{NormalizeError, Normalizer};
use crate::model::{
    Channel, Identifier, Provenance, Purpose, UnixMillis, UnknownConsentTerm, WriteCall,
    WritePayload,
};

/// Decisions per consent call: every channel times every purpose.
const CONSENT_CHANGES_MAX: usize = 15;

/// A JSON object: traits or event properties.
pub type Json = serde_json::Map<String, serde_json::Value>;

/// An identifier as a caller sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawIdentifier {
    pub kind: String,
    pub value: String,
}

pub fn identify(
    normalizer: &Normalizer,
    limits: &Limits,
    now: UnixMillis,
    input: IdentifyInput,
) -> Result<WriteCall, ServiceError> {
    let identifiers = identifiers(normalizer, limits, &input.identifiers)?;
    for name in input.traits.keys() {
        if name.is_empty() || name.len() > limits.trait_name_bytes_max {
            return Err(ServiceError::invalid(
                "traits",
                format!(
                    "trait names must be 1 to {} bytes",
                    limits.trait_name_bytes_max
                ),
            ));
        }
    }
    json_object(limits, "traits", &input.traits, limits.traits_bytes_max)?;
    let provenance = provenance(limits, now, input.message_id, input.source)?;
    Ok(WriteCall {
        identifiers,
        timestamp: event_time(limits, now, input.timestamp)?,
        provenance,
        payload: WritePayload::Identify {
            traits: input.traits,
        },
        junk_ignored: Vec::new(),
    })
}

pub fn track(
    normalizer: &Normalizer,
    limits: &Limits,
    now: UnixMillis,
    input: TrackInput,
) -> Result<WriteCall, ServiceError> {
    let identifiers = identifiers(normalizer, limits, &input.identifiers)?;
    let event = input.event.trim();
    if event.is_empty() {
        return Err(ServiceError::invalid("event", "an event name is required"));
    }
    bounded_text(&input.event, "event", limits.event_name_bytes_max)?;
    json_object(
        limits,
        "properties",
        &input.properties,
        limits.properties_bytes_max,
    )?;
    event_conventions(event, &input.properties)?;
    let provenance = provenance(limits, now, input.message_id, input.source)?;
    Ok(WriteCall {
        identifiers,
        timestamp: event_time(limits, now, input.timestamp)?,
        provenance,
        payload: WritePayload::Track {
            event: event.to_owned(),
            properties: input.properties,
        },
        junk_ignored: Vec::new(),
    })
}

/// The time a call says it happened, or now. More than
/// `limits.future_skew_secs` ahead of the server's clock is refused.
pub fn event_time(
    limits: &Limits,
    now: UnixMillis,
    timestamp: Option<UnixMillis>,
) -> Result<UnixMillis, ServiceError> {
    let Some(at) = timestamp else {
        return Ok(now);
    };
    let skew_ms = i64::try_from(limits.future_skew_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    if at.0 > now.0.saturating_add(skew_ms) {
        return Err(ServiceError::invalid(
            "timestamp",
            format!(
                "more than {} s ahead of the server's clock",
                limits.future_skew_secs
            ),
        ));
    }
    Ok(at)
}

/// Standard events feed computed traits, so their properties must have the
/// documented types (design 3.1); other events are free-form.
fn event_conventions(event: &str, properties: &Json) -> Result<(), ServiceError> {
    let non_negative_number = |value: &serde_json::Value, field: String| match value.as_f64() {
        Some(number) if number >= 0.0 => Ok(()),
        _ => Err(ServiceError::invalid(
            field,
            "must be a non-negative number",
        )),
    };
    match event {
        crate::computed::ORDER_COMPLETED => {
            if let Some(revenue) = properties.get("revenue") {
                if !revenue.is_number() {
                    return Err(ServiceError::invalid(
                        "properties.revenue",
                        "must be a number",
                    ));
                }
            }
            let Some(products) = properties.get("products") else {
                return Ok(());
            };
            let products = products.as_array().ok_or_else(|| {
                ServiceError::invalid("properties.products", "must be a list of products")
            })?;
            for (index, product) in products.iter().enumerate() {
                let product = product.as_object().ok_or_else(|| {
                    ServiceError::invalid(
                        format!("properties.products[{index}]"),
                        "must be an object",
                    )
                })?;
                for field in ["price", "quantity"] {
                    if let Some(value) = product.get(field) {
                        non_negative_number(
                            value,
                            format!("properties.products[{index}].{field}"),
                        )?;
                    }
                }
                if let Some(category) = product.get("category") {
                    if !category.is_string() {
                        return Err(ServiceError::invalid(
                            format!("properties.products[{index}].category"),
                            "must be text",
                        ));
                    }
                }
            }
        }
        crate::computed::PRODUCT_VIEWED | crate::computed::PAGE_VIEWED => {
            if let Some(category) = properties.get("category") {
                if !category.is_string() {
                    return Err(ServiceError::invalid("properties.category", "must be text"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

pub fn identifier(
    normalizer: &Normalizer,
    field: &str,
    raw: &RawIdentifier,
) -> Result<Identifier, ServiceError> {
    normalizer
        .normalize(&raw.kind, &raw.value)
        .map_err(|error| {
            let part = match error {
                NormalizeError::UnknownKind(_) => "kind",
                _ => "value",
            };
            ServiceError::invalid(format!("{field}.{part}"), error.to_string())
        })
}

/// Normalized and without repeats (`Jane@x.com` and `jane@x.com` are one).
pub fn identifiers(
    normalizer: &Normalizer,
    limits: &Limits,
    raw: &[RawIdentifier],
) -> Result<Vec<Identifier>, ServiceError> {
    if raw.is_empty() {
        return Err(ServiceError::invalid(
            "identifiers",
            "at least one identifier is required",
        ));
    }
    if raw.len() > limits.identifiers_per_call_max {
        return Err(ServiceError::invalid(
            "identifiers",
            format!(
                "at most {} identifiers per call",
                limits.identifiers_per_call_max
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut normalized = Vec::with_capacity(raw.len());
    for (index, raw) in raw.iter().enumerate() {
        let identifier = identifier(normalizer, &format!("identifiers[{index}]"), raw)?;
        if seen.insert(identifier.clone()) {
            normalized.push(identifier);
        }
    }
    Ok(normalized)
}

/// Consent decisions as sent (channel, purpose, granted) checked against
/// the known channels and purposes.
pub fn consent_changes(
    changes: &[(String, String, Option<bool>)],
) -> Result<Vec<(Channel, Purpose, bool)>, ServiceError> {
    if changes.is_empty() || changes.len() > CONSENT_CHANGES_MAX {
        return Err(ServiceError::invalid(
            "changes",
            format!("between 1 and {CONSENT_CHANGES_MAX} changes"),
        ));
    }
    let mut checked = Vec::with_capacity(changes.len());
    for (index, (channel, purpose, granted)) in changes.iter().enumerate() {
        let channel: Channel = channel.parse().map_err(|error: UnknownConsentTerm| {
            ServiceError::invalid(format!("changes[{index}].channel"), error.to_string())
        })?;
        let purpose: Purpose = purpose.parse().map_err(|error: UnknownConsentTerm| {
            ServiceError::invalid(format!("changes[{index}].purpose"), error.to_string())
        })?;
        let granted = granted.ok_or_else(|| {
            ServiceError::invalid(
                format!("changes[{index}].state"),
                "set GRANTED or WITHDRAWN",
            )
        })?;
        checked.push((channel, purpose, granted));
    }
    Ok(checked)
}

pub fn provenance(
    limits: &Limits,
    now: UnixMillis,
    message_id: String,
    source: String,
) -> Result<Provenance, ServiceError> {
    bounded_text(&message_id, "message_id", limits.message_id_bytes_max)?;
    bounded_text(&source, "source", limits.source_bytes_max)?;
    Ok(Provenance {
        message_id,
        source,
        received_at: now,
    })
}

fn bounded_text(text: &str, field: &str, bytes_max: usize) -> Result<(), ServiceError> {
    if text.len() > bytes_max {
        return Err(ServiceError::invalid(
            field,
            format!("longer than {bytes_max} bytes"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(ServiceError::invalid(field, "contains control characters"));
    }
    Ok(())
}

fn json_object(
    limits: &Limits,
    field: &str,
    object: &Json,
    bytes_max: usize,
) -> Result<(), ServiceError> {
    for (name, value) in object {
        if depth(value) > limits.value_depth_max {
            return Err(ServiceError::invalid(
                format!("{field}.{}", truncated(name)),
                format!("nested deeper than {} levels", limits.value_depth_max),
            ));
        }
    }
    let encoded_len = serde_json::to_vec(object)
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX);
    if encoded_len > bytes_max {
        return Err(ServiceError::invalid(
            field,
            format!("{encoded_len} bytes as JSON; at most {bytes_max}"),
        ));
    }
    Ok(())
}

fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Field names are caller-controlled; keep error messages bounded.
fn truncated(name: &str) -> String {
    name.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdentityConfig;

    fn raw(kind: &str, value: &str) -> RawIdentifier {
        RawIdentifier {
            kind: kind.to_owned(),
            value: value.to_owned(),
        }
    }

    fn normalizer() -> Normalizer {
        Normalizer::new(&IdentityConfig::default(), 256)
    }

    #[test]
    fn violations_name_the_offending_field() {
        let limits = Limits::default();
        let input = IdentifyInput {
            identifiers: vec![raw("email", "a@example.com"), raw("phone", "nope")],
            ..IdentifyInput::default()
        };
        let error = identify(&normalizer(), &limits, UnixMillis(1), input).unwrap_err();
        let ServiceError::InvalidArgument(violation) = error else {
            panic!("expected invalid argument");
        };
        assert_eq!(violation.field, "identifiers[1].value");
        assert!(!violation.description.contains("nope"));
    }

    #[test]
    fn repeated_identifiers_collapse_after_normalization() {
        let input = TrackInput {
            identifiers: vec![
                raw("email", "A@Example.com"),
                raw("email", " a@example.com"),
            ],
            event: "Signed Up".to_owned(),
            ..TrackInput::default()
        };
        let call = track(&normalizer(), &Limits::default(), UnixMillis(5), input).unwrap();
        assert_eq!(call.identifiers.len(), 1);
        assert_eq!(call.timestamp, UnixMillis(5));
    }

    #[test]
    fn deep_and_large_values_are_rejected() {
        let limits = Limits {
            value_depth_max: 2,
            traits_bytes_max: 32,
            ..Limits::default()
        };
        let mut traits = Json::new();
        traits.insert("deep".to_owned(), serde_json::json!({"a": {"b": {"c": 1}}}));
        let input = IdentifyInput {
            identifiers: vec![raw("user_id", "u1")],
            traits,
            ..IdentifyInput::default()
        };
        assert!(identify(&normalizer(), &limits, UnixMillis(1), input).is_err());
        let mut traits = Json::new();
        traits.insert("long".to_owned(), serde_json::json!("x".repeat(40)));
        let input = IdentifyInput {
            identifiers: vec![raw("user_id", "u1")],
            traits,
            ..IdentifyInput::default()
        };
        assert!(identify(&normalizer(), &limits, UnixMillis(1), input).is_err());
    }
}
