//! JSON views of profile parts, one shape wherever a profile is written as
//! JSON: the subject-access export and the HTTP API's profile reads.

use serde_json::{Map, Value, json};

use crate::computed::ComputedTraits;
use crate::model::{
    ConsentView, EventView, IdentifierView, JournalKind, JournalView, Provenance, TraitView,
    UnixMillis,
};

/// RFC 3339 in UTC, to the millisecond.
pub fn time(at: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(at.0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A UTC day (days since the epoch) as `YYYY-MM-DD`.
pub fn day(days: i64) -> String {
    time(UnixMillis(days.saturating_mul(86_400_000)))[..10].to_owned()
}

pub fn provenance(provenance: &Provenance) -> Value {
    json!({
        "source": provenance.source,
        "message_id": provenance.message_id,
        "received_at": time(provenance.received_at),
    })
}

pub fn identifier(view: &IdentifierView) -> Value {
    json!({
        "kind": view.identifier.kind().as_str(),
        "value": view.identifier.value(),
        "first_seen": time(view.first_seen),
        "last_seen": time(view.last_seen),
        "provenance": provenance(&view.provenance),
    })
}

/// The live traits as one object, as a caller wrote them.
pub fn traits(views: &[TraitView]) -> Map<String, Value> {
    views
        .iter()
        .map(|view| (view.name.clone(), view.value.clone()))
        .collect()
}

pub fn event(event: &EventView) -> Value {
    json!({
        "event_id": event.event_id,
        "name": event.name,
        "timestamp": time(event.timestamp),
        "properties": event.properties,
        "provenance": provenance(&event.provenance),
    })
}

pub fn consent(view: &ConsentView) -> Value {
    json!({
        "channel": view.channel.as_str(),
        "purpose": view.purpose.as_str(),
        "granted": view.granted,
        "at": time(view.at),
        "provenance": provenance(&view.provenance),
    })
}

pub fn computed(traits: &ComputedTraits) -> Value {
    let optional_time = |at: Option<UnixMillis>| at.map(time);
    json!({
        "recency_days": traits.recency_days,
        "frequency": traits.frequency,
        "monetary": traits.monetary,
        "lifetime_value": traits.lifetime_value,
        "average_order_value": traits.average_order_value,
        "first_order_at": optional_time(traits.first_order_at),
        "last_order_at": optional_time(traits.last_order_at),
        "last_seen_at": optional_time(traits.last_seen_at),
        "email_opens_30d": traits.email_opens_30d,
        "email_opens_90d": traits.email_opens_90d,
        "email_clicks_30d": traits.email_clicks_30d,
        "email_clicks_90d": traits.email_clicks_90d,
        "conversions_30d": traits.conversions_30d,
        "conversions_90d": traits.conversions_90d,
        "engagement_group": traits.engagement_group,
        "lifecycle_stage": traits.lifecycle_stage,
        "interests": traits.interests.iter().map(|(category, score)| json!({
            "category": category,
            "score": score,
        })).collect::<Vec<_>>(),
        "rfm_scores": traits.rfm_scores.map(|(r, f, m)| json!({"r": r, "f": f, "m": m})),
        "custom": traits.custom.iter().cloned().collect::<Map<String, Value>>(),
    })
}

/// Segment id and whether the profile is in its holdout.
pub fn memberships(memberships: &[(String, bool)]) -> Value {
    memberships
        .iter()
        .map(|(segment_id, holdout)| json!({"segment_id": segment_id, "holdout": holdout}))
        .collect()
}

/// A merge, blocked merge or unmerge.
pub fn journal_entry(entry: &JournalView) -> Value {
    json!({
        "kind": match entry.kind {
            JournalKind::Merge => "merge",
            JournalKind::BlockedMerge => "blocked_merge",
            JournalKind::Unmerge => "unmerge",
        },
        "at": time(entry.at),
        "message_id": entry.message_id,
        "other_profile_ids": entry.other_profiles.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "identifiers": entry.identifiers.iter().map(|identifier| json!({
            "kind": identifier.kind().as_str(),
            "value": identifier.value(),
        })).collect::<Vec<_>>(),
        "reason": entry.reason,
    })
}
