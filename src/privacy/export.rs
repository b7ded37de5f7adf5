//! The subject-access export document. Its schema is
//! `docs/subject-export.schema.json`; a change of shape bumps
//! [`EXPORT_SCHEMA_VERSION`].

use serde_json::{Map, Value, json};

use crate::computed::ComputedTraits;
use crate::config::PrivacyConfig;
use crate::model::{
    AccessEntry, ConsentView, JournalKind, PrivacyRequest, Provenance, TraitView, UnixMillis,
};
use crate::service::ProfileRead;

pub const EXPORT_SCHEMA_VERSION: &str = "sightline.subject-export/1";

/// Everything held on one person.
pub struct Subject<'a> {
    pub read: &'a ProfileRead,
    /// Every stored trait value, superseded ones included.
    pub trait_history: Vec<TraitView>,
    /// Segment id and whether in holdout.
    pub memberships: Vec<(String, bool)>,
    pub access_log: Vec<AccessEntry>,
}

pub fn document(
    subject: &Subject<'_>,
    request: &PrivacyRequest,
    config: &PrivacyConfig,
    now: UnixMillis,
) -> Value {
    let profile = &subject.read.profile;
    let traits: Map<String, Value> = profile
        .traits
        .iter()
        .map(|view| (view.name.clone(), view.value.clone()))
        .collect();
    json!({
        "schema_version": EXPORT_SCHEMA_VERSION,
        "generated_at": time(now),
        "request": {
            "request_id": request.request_id,
            "requester": request.requester,
            "received_at": time(request.received_at),
        },
        "processing": {
            "controller_contact": config.controller_contact,
            "purposes": config.purposes,
            "categories": categories(subject),
            "recipients": config.recipients,
            "retention": config.retention,
            "sources": sources(subject, config),
        },
        "profile": {
            "profile_id": profile.profile_id.to_string(),
            "merged_profile_ids": profile.merged_profile_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "created_at": time(profile.created_at),
            "updated_at": time(profile.updated_at),
            "identifiers": profile.identifiers.iter().map(|view| json!({
                "kind": view.identifier.kind().as_str(),
                "value": view.identifier.value(),
                "first_seen": time(view.first_seen),
                "last_seen": time(view.last_seen),
                "provenance": provenance(&view.provenance),
            })).collect::<Vec<_>>(),
            "traits": traits,
            "trait_history": subject.trait_history.iter().map(|view| json!({
                "name": view.name,
                "value": view.value,
                "updated_at": time(view.updated_at),
                "provenance": provenance(&view.provenance),
            })).collect::<Vec<_>>(),
            "event_count": profile.event_count,
            "events": profile.events.iter().map(|event| json!({
                "event_id": event.event_id,
                "name": event.name,
                "timestamp": time(event.timestamp),
                "properties": event.properties,
                "provenance": provenance(&event.provenance),
            })).collect::<Vec<_>>(),
            "computed": computed(&subject.read.computed),
            "consent": profile.consents.iter().map(consent).collect::<Vec<_>>(),
            "consent_history": profile.consent_history.iter().map(consent).collect::<Vec<_>>(),
            "segments": subject.memberships.iter().map(|(segment_id, holdout)| json!({
                "segment_id": segment_id,
                "holdout": holdout,
            })).collect::<Vec<_>>(),
            "merge_history": profile.journal.iter().map(|entry| json!({
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
            })).collect::<Vec<_>>(),
            "access_log": subject.access_log.iter().map(|entry| json!({
                "at": time(entry.at),
                "caller": entry.caller,
                "method": entry.method,
            })).collect::<Vec<_>>(),
        },
    })
}

/// The categories of data actually held, in words (Art. 15(1)(b)).
fn categories(subject: &Subject<'_>) -> Vec<String> {
    let profile = &subject.read.profile;
    let mut kinds: Vec<&str> = profile
        .identifiers
        .iter()
        .map(|view| view.identifier.kind().as_str())
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut categories = vec![format!("Identifiers ({})", kinds.join(", "))];
    if !profile.traits.is_empty() {
        categories.push("Profile attributes provided by or about the person".to_owned());
    }
    if profile.event_count > 0 {
        categories.push("Behavioural events (purchases, email engagement, browsing)".to_owned());
    }
    categories.push("Traits computed from the events (recency, frequency, value, engagement, lifecycle, interests)".to_owned());
    if !profile.consent_history.is_empty() {
        categories.push("Consent decisions".to_owned());
    }
    if !subject.memberships.is_empty() {
        categories.push("Audience segment memberships".to_owned());
    }
    if !subject.access_log.is_empty() {
        categories.push("Records of who read the profile".to_owned());
    }
    categories
}

/// Configured sources and every source recorded on the person's data.
fn sources(subject: &Subject<'_>, config: &PrivacyConfig) -> Vec<String> {
    let profile = &subject.read.profile;
    let mut recorded: Vec<String> = profile
        .identifiers
        .iter()
        .map(|view| &view.provenance)
        .chain(subject.trait_history.iter().map(|view| &view.provenance))
        .chain(profile.events.iter().map(|event| &event.provenance))
        .map(|provenance| provenance.source.clone())
        .filter(|source| !source.is_empty())
        .collect();
    recorded.sort();
    recorded.dedup();
    config.sources.iter().cloned().chain(recorded).collect()
}

fn provenance(provenance: &Provenance) -> Value {
    json!({
        "source": provenance.source,
        "message_id": provenance.message_id,
        "received_at": time(provenance.received_at),
    })
}

fn consent(view: &ConsentView) -> Value {
    json!({
        "channel": view.channel.as_str(),
        "purpose": view.purpose.as_str(),
        "granted": view.granted,
        "at": time(view.at),
        "provenance": provenance(&view.provenance),
    })
}

fn computed(traits: &ComputedTraits) -> Value {
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
    })
}

/// RFC 3339 in UTC, to the millisecond.
fn time(at: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(at.0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
