//! The subject-access export document. Its schema is
//! `docs/subject-export.schema.json`; a change of shape bumps
//! [`EXPORT_SCHEMA_VERSION`].

use serde_json::{Value, json};

use crate::config::PrivacyConfig;
use crate::model::{AccessEntry, PrivacyRequest, TraitView, UnixMillis};
use crate::personalisation::ShopperExport;
use crate::service::ProfileRead;
use crate::views::{self, provenance, time};

pub const EXPORT_SCHEMA_VERSION: &str = "sightline.subject-export/2";

/// Everything held on one person.
pub struct Subject<'a> {
    pub read: &'a ProfileRead,
    /// Every stored trait value, superseded ones included.
    pub trait_history: Vec<TraitView>,
    /// Segment id and whether in holdout.
    pub memberships: Vec<(String, bool)>,
    pub access_log: Vec<AccessEntry>,
    pub shopper: ShopperExport,
}

pub fn document(
    subject: &Subject<'_>,
    request: &PrivacyRequest,
    config: &PrivacyConfig,
    now: UnixMillis,
) -> Value {
    let profile = &subject.read.profile;
    let traits = views::traits(&profile.traits);
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
            "identifiers": profile.identifiers.iter().map(views::identifier).collect::<Vec<_>>(),
            "traits": traits,
            "trait_history": subject.trait_history.iter().map(|view| json!({
                "name": view.name,
                "value": view.value,
                "updated_at": time(view.updated_at),
                "provenance": provenance(&view.provenance),
            })).collect::<Vec<_>>(),
            "event_count": profile.event_count,
            "events": profile.events.iter().map(views::event).collect::<Vec<_>>(),
            "computed": views::computed(&subject.read.computed),
            "consent": profile.consents.iter().map(views::consent).collect::<Vec<_>>(),
            "consent_history": profile.consent_history.iter().map(views::consent).collect::<Vec<_>>(),
            "segments": views::memberships(&subject.memberships),
            "merge_history": profile.journal.iter().map(views::journal_entry).collect::<Vec<_>>(),
            "access_log": subject.access_log.iter().map(|entry| json!({
                "at": time(entry.at),
                "caller": entry.caller,
                "method": entry.method,
            })).collect::<Vec<_>>(),
            "recommendations": {
                "products": subject.shopper.products.iter().map(|product| json!({
                    "product_id": product.product_id,
                    "name": product.name,
                    "purchases": product.purchases,
                    "last_purchased_on": product.last_purchase_day.map(views::day),
                    "last_viewed_on": product.last_view_day.map(views::day),
                })).collect::<Vec<_>>(),
                "logic": subject.shopper.logic,
            },
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
    if !subject.shopper.products.is_empty() {
        categories.push("Products bought and viewed, for recommendations".to_owned());
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
