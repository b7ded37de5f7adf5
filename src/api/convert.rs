//! Protobuf <-> domain conversion. Shape errors that only exist on the wire
//! (an out-of-range timestamp, a NaN number) are reported here as field
//! violations, like every other validation error.

use prost_types::value::Kind;

use super::pb;
use crate::computed::ComputedTraits;
use crate::model::{
    ConsentView, EventView, Identifier, IdentifierView, JournalKind, JournalView, ProfileView,
    Provenance, TraitView, UnixMillis,
};
use crate::service::{
    ConsentInput, IdentifyInput, Json, ProfileLookup, RawIdentifier, ServiceError, TrackInput,
    UnmergeInput,
};

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the range RFC 3339 and
/// `google.protobuf.Timestamp` allow.
const TIMESTAMP_SECONDS_MIN: i64 = -62_135_596_800;
const TIMESTAMP_SECONDS_MAX: i64 = 253_402_300_799;

pub fn identify_input(request: pb::IdentifyRequest) -> Result<IdentifyInput, ServiceError> {
    Ok(IdentifyInput {
        identifiers: raw_identifiers(request.identifiers),
        traits: json_object("traits", request.traits)?,
        message_id: request.message_id,
        timestamp: timestamp("timestamp", request.timestamp)?,
        source: request.source,
    })
}

pub fn track_input(request: pb::TrackRequest) -> Result<TrackInput, ServiceError> {
    Ok(TrackInput {
        identifiers: raw_identifiers(request.identifiers),
        event: request.event,
        properties: json_object("properties", request.properties)?,
        message_id: request.message_id,
        timestamp: timestamp("timestamp", request.timestamp)?,
        source: request.source,
    })
}

/// Every request that names one profile carries the same oneof; each
/// generated copy converts here, so the rule lives in one place.
macro_rules! profile_lookup_from {
    ($($oneof:path),+) => {$(
        impl From<$oneof> for ProfileLookup {
            fn from(lookup: $oneof) -> Self {
                use $oneof as Lookup;
                match lookup {
                    Lookup::ProfileId(id) => ProfileLookup::ProfileId(id),
                    Lookup::Identifier(identifier) => {
                        ProfileLookup::Identifier(raw_identifier(identifier))
                    }
                }
            }
        }
    )+};
}

profile_lookup_from!(
    pb::get_profile_request::Lookup,
    pb::unmerge_request::Lookup,
    pb::update_consent_request::Lookup,
    pb::check_membership_request::Lookup,
    pb::export_subject_request::Lookup,
    pb::erase_subject_request::Lookup,
    pb::get_recommendations_request::Lookup
);

pub fn profile_lookup(
    lookup: Option<impl Into<ProfileLookup>>,
) -> Result<ProfileLookup, ServiceError> {
    lookup
        .map(Into::into)
        .ok_or_else(|| ServiceError::invalid("lookup", "set profile_id or identifier"))
}

pub fn unmerge_input(request: pb::UnmergeRequest) -> Result<UnmergeInput, ServiceError> {
    Ok(UnmergeInput {
        lookup: profile_lookup(request.lookup)?,
        identifiers: raw_identifiers(request.identifiers),
        message_id: request.message_id,
        reason: request.reason,
    })
}

pub fn consent_input(request: pb::UpdateConsentRequest) -> Result<ConsentInput, ServiceError> {
    let changes = request
        .changes
        .into_iter()
        .map(|change| {
            let granted = match change.state() {
                pb::ConsentState::Granted => Some(true),
                pb::ConsentState::Withdrawn => Some(false),
                pb::ConsentState::Unspecified => None,
            };
            (change.channel, change.purpose, granted)
        })
        .collect();
    Ok(ConsentInput {
        lookup: profile_lookup(request.lookup)?,
        changes,
        timestamp: timestamp("timestamp", request.timestamp)?,
        message_id: request.message_id,
        source: request.source,
    })
}

pub fn raw_identifier(identifier: pb::Identifier) -> RawIdentifier {
    RawIdentifier {
        kind: identifier.kind,
        value: identifier.value,
    }
}

fn raw_identifiers(identifiers: Vec<pb::Identifier>) -> Vec<RawIdentifier> {
    identifiers.into_iter().map(raw_identifier).collect()
}

pub(crate) fn timestamp(
    field: &str,
    timestamp: Option<prost_types::Timestamp>,
) -> Result<Option<UnixMillis>, ServiceError> {
    let Some(timestamp) = timestamp else {
        return Ok(None);
    };
    if !(TIMESTAMP_SECONDS_MIN..=TIMESTAMP_SECONDS_MAX).contains(&timestamp.seconds) {
        return Err(ServiceError::invalid(
            format!("{field}.seconds"),
            "outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59Z",
        ));
    }
    if !(0..1_000_000_000).contains(&timestamp.nanos) {
        return Err(ServiceError::invalid(
            format!("{field}.nanos"),
            "must be in 0..999999999",
        ));
    }
    Ok(Some(UnixMillis(
        timestamp.seconds * 1000 + i64::from(timestamp.nanos / 1_000_000),
    )))
}

pub fn to_timestamp(at: UnixMillis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.0.div_euclid(1000),
        nanos: (at.0.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn json_object(field: &str, object: Option<prost_types::Struct>) -> Result<Json, ServiceError> {
    let mut json = Json::new();
    for (name, value) in object.map(|o| o.fields).unwrap_or_default() {
        let converted = json_value(&value).ok_or_else(|| {
            ServiceError::invalid(
                format!("{field}.{}", name.chars().take(64).collect::<String>()),
                "numbers must be finite",
            )
        })?;
        json.insert(name, converted);
    }
    Ok(json)
}

/// `None` for a non-finite number, which JSON cannot hold.
pub(crate) fn json_value(value: &prost_types::Value) -> Option<serde_json::Value> {
    Some(match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(flag)) => serde_json::Value::Bool(*flag),
        Some(Kind::NumberValue(number)) => {
            serde_json::Value::Number(serde_json::Number::from_f64(*number)?)
        }
        Some(Kind::StringValue(text)) => serde_json::Value::String(text.clone()),
        Some(Kind::ListValue(list)) => serde_json::Value::Array(
            list.values
                .iter()
                .map(json_value)
                .collect::<Option<Vec<_>>>()?,
        ),
        Some(Kind::StructValue(object)) => serde_json::Value::Object(
            object
                .fields
                .iter()
                .map(|(name, value)| Some((name.clone(), json_value(value)?)))
                .collect::<Option<Json>>()?,
        ),
    })
}

pub(crate) fn proto_value(value: &serde_json::Value) -> prost_types::Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(flag) => Kind::BoolValue(*flag),
        serde_json::Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(text) => Kind::StringValue(text.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(proto_value).collect(),
        }),
        serde_json::Value::Object(fields) => Kind::StructValue(proto_struct(fields)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn proto_struct(fields: &Json) -> prost_types::Struct {
    prost_types::Struct {
        fields: fields
            .iter()
            .map(|(name, value)| (name.clone(), proto_value(value)))
            .collect(),
    }
}

fn proto_provenance(provenance: &Provenance) -> pb::Provenance {
    pb::Provenance {
        message_id: provenance.message_id.clone(),
        source: provenance.source.clone(),
        received_at: Some(to_timestamp(provenance.received_at)),
    }
}

fn proto_identifier(view: &IdentifierView) -> pb::IdentifierRecord {
    pb::IdentifierRecord {
        identifier: Some(proto_identifier_of(&view.identifier)),
        first_seen: Some(to_timestamp(view.first_seen)),
        last_seen: Some(to_timestamp(view.last_seen)),
        provenance: Some(proto_provenance(&view.provenance)),
    }
}

fn proto_trait(view: &TraitView) -> pb::TraitRecord {
    pb::TraitRecord {
        name: view.name.clone(),
        value: Some(proto_value(&view.value)),
        updated_at: Some(to_timestamp(view.updated_at)),
        provenance: Some(proto_provenance(&view.provenance)),
    }
}

fn proto_event(view: &EventView) -> pb::Event {
    pb::Event {
        event_id: view.event_id.clone(),
        name: view.name.clone(),
        properties: Some(proto_struct(&view.properties)),
        timestamp: Some(to_timestamp(view.timestamp)),
        provenance: Some(proto_provenance(&view.provenance)),
    }
}

pub fn proto_identifier_of(identifier: &Identifier) -> pb::Identifier {
    pb::Identifier {
        kind: identifier.kind().as_str().to_owned(),
        value: identifier.value().to_owned(),
    }
}

fn proto_journal(view: &JournalView) -> pb::JournalEntry {
    let kind = match view.kind {
        JournalKind::Merge => pb::journal_entry::Kind::Merge,
        JournalKind::BlockedMerge => pb::journal_entry::Kind::BlockedMerge,
        JournalKind::Unmerge => pb::journal_entry::Kind::Unmerge,
    };
    pb::JournalEntry {
        kind: kind as i32,
        at: Some(to_timestamp(view.at)),
        message_id: view.message_id.clone(),
        other_profile_ids: view
            .other_profiles
            .iter()
            .map(ToString::to_string)
            .collect(),
        identifiers: view.identifiers.iter().map(proto_identifier_of).collect(),
        reason: view.reason.clone(),
    }
}

fn proto_computed(traits: &ComputedTraits) -> pb::ComputedTraits {
    pb::ComputedTraits {
        recency_days: traits.recency_days,
        frequency: traits.frequency,
        monetary: traits.monetary,
        lifetime_value: traits.lifetime_value,
        average_order_value: traits.average_order_value,
        first_order_at: traits.first_order_at.map(to_timestamp),
        last_order_at: traits.last_order_at.map(to_timestamp),
        email_opens_30d: traits.email_opens_30d,
        email_opens_90d: traits.email_opens_90d,
        email_clicks_30d: traits.email_clicks_30d,
        email_clicks_90d: traits.email_clicks_90d,
        conversions_30d: traits.conversions_30d,
        conversions_90d: traits.conversions_90d,
        engagement_group: traits.engagement_group.to_owned(),
        lifecycle_stage: traits.lifecycle_stage.to_owned(),
        last_seen_at: traits.last_seen_at.map(to_timestamp),
        interests: traits.interests.iter().cloned().collect(),
        r_score: traits.rfm_scores.map(|scores| u32::from(scores.0)),
        f_score: traits.rfm_scores.map(|scores| u32::from(scores.1)),
        m_score: traits.rfm_scores.map(|scores| u32::from(scores.2)),
        custom: Some(proto_struct(&traits.custom.iter().cloned().collect())),
    }
}

fn proto_consent(view: &ConsentView) -> pb::Consent {
    let state = if view.granted {
        pb::ConsentState::Granted
    } else {
        pb::ConsentState::Withdrawn
    };
    pb::Consent {
        channel: view.channel.as_str().to_owned(),
        purpose: view.purpose.as_str().to_owned(),
        state: state as i32,
        at: Some(to_timestamp(view.at)),
        provenance: Some(proto_provenance(&view.provenance)),
    }
}

pub fn proto_profile(view: &ProfileView, computed: &ComputedTraits) -> pb::Profile {
    pb::Profile {
        profile_id: view.profile_id.to_string(),
        merged_profile_ids: view
            .merged_profile_ids
            .iter()
            .map(ToString::to_string)
            .collect(),
        identifiers: view.identifiers.iter().map(proto_identifier).collect(),
        traits: Some(prost_types::Struct {
            fields: view
                .traits
                .iter()
                .map(|t| (t.name.clone(), proto_value(&t.value)))
                .collect(),
        }),
        trait_records: view.traits.iter().map(proto_trait).collect(),
        events: view.events.iter().map(proto_event).collect(),
        event_count: view.event_count,
        created_at: Some(to_timestamp(view.created_at)),
        updated_at: Some(to_timestamp(view.updated_at)),
        journal: view.journal.iter().map(proto_journal).collect(),
        computed: Some(proto_computed(computed)),
        consents: view.consents.iter().map(proto_consent).collect(),
        consent_history: view.consent_history.iter().map(proto_consent).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_millisecond_precision() {
        let at = UnixMillis(-1_500);
        let proto = to_timestamp(at);
        assert_eq!((proto.seconds, proto.nanos), (-2, 500_000_000));
        assert_eq!(timestamp("t", Some(proto)).unwrap(), Some(at));
    }

    #[test]
    fn malformed_timestamps_name_their_field() {
        let bad_nanos = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        let error = timestamp("timestamp", Some(bad_nanos)).unwrap_err();
        assert!(error.to_string().starts_with("timestamp.nanos"));
        let too_late = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(timestamp("timestamp", Some(too_late)).is_err());
    }

    #[test]
    fn non_finite_numbers_are_rejected() {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert(
            "revenue".to_owned(),
            prost_types::Value {
                kind: Some(Kind::NumberValue(f64::NAN)),
            },
        );
        let error = json_object("properties", Some(prost_types::Struct { fields })).unwrap_err();
        assert!(error.to_string().starts_with("properties.revenue"));
    }
}
