//! The subject-access export document. Its schema is
//! `docs/subject-export.schema.json`; a change of shape bumps
//! [`EXPORT_SCHEMA_VERSION`].

use serde::Serialize;
use serde_json::{Value, json};

use crate::config::PrivacyConfig;
use crate::model::{AccessEntry, PrivacyRequest, Provenance, TraitView, UnixMillis};
use crate::personalisation::ShopperExport;
use crate::service::ProfileRead;
use crate::views::{self, time};

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

/// The document, serialized straight from the stored views: the events
/// and histories, which make up nearly all of it, are never copied into an
/// intermediate JSON tree.
#[derive(Serialize)]
pub struct Document<'a> {
    schema_version: &'static str,
    generated_at: Time,
    request: Value,
    processing: Value,
    profile: ProfileSection<'a>,
}

#[derive(Serialize)]
struct ProfileSection<'a> {
    profile_id: String,
    merged_profile_ids: Vec<String>,
    created_at: Time,
    updated_at: Time,
    identifiers: Vec<Value>,
    traits: serde_json::Map<String, Value>,
    trait_history: Vec<TraitEntry<'a>>,
    event_count: u64,
    events: Vec<EventEntry<'a>>,
    computed: Value,
    consent: Vec<Value>,
    consent_history: Vec<Value>,
    segments: Value,
    merge_history: Vec<Value>,
    access_log: Vec<AccessLogEntry<'a>>,
    recommendations: Value,
}

#[derive(Serialize)]
struct TraitEntry<'a> {
    name: &'a str,
    value: &'a Value,
    updated_at: Time,
    provenance: ProvenanceEntry<'a>,
}

#[derive(Serialize)]
struct EventEntry<'a> {
    event_id: &'a str,
    name: &'a str,
    timestamp: Time,
    properties: &'a serde_json::Map<String, Value>,
    provenance: ProvenanceEntry<'a>,
}

/// The same shape as [`views::provenance`].
#[derive(Serialize)]
struct ProvenanceEntry<'a> {
    source: &'a str,
    message_id: &'a str,
    received_at: Time,
}

impl<'a> From<&'a Provenance> for ProvenanceEntry<'a> {
    fn from(provenance: &'a Provenance) -> Self {
        ProvenanceEntry {
            source: &provenance.source,
            message_id: &provenance.message_id,
            received_at: Time(provenance.received_at),
        }
    }
}

#[derive(Serialize)]
struct AccessLogEntry<'a> {
    at: Time,
    caller: &'a str,
    method: &'a str,
}

/// A time as [`views::time`] writes it.
struct Time(UnixMillis);

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&time(self.0))
    }
}

pub fn document<'a>(
    subject: &'a Subject<'a>,
    request: &PrivacyRequest,
    config: &PrivacyConfig,
    now: UnixMillis,
) -> Document<'a> {
    let profile = &subject.read.profile;
    Document {
        schema_version: EXPORT_SCHEMA_VERSION,
        generated_at: Time(now),
        request: json!({
            "request_id": request.request_id,
            "requester": request.requester,
            "received_at": time(request.received_at),
        }),
        processing: json!({
            "controller_contact": config.controller_contact,
            "purposes": config.purposes,
            "categories": categories(subject),
            "recipients": config.recipients,
            "retention": config.retention,
            "sources": sources(subject, config),
        }),
        profile: ProfileSection {
            profile_id: profile.profile_id.to_string(),
            merged_profile_ids: profile
                .merged_profile_ids
                .iter()
                .map(ToString::to_string)
                .collect(),
            created_at: Time(profile.created_at),
            updated_at: Time(profile.updated_at),
            identifiers: profile.identifiers.iter().map(views::identifier).collect(),
            traits: views::traits(&profile.traits),
            trait_history: subject
                .trait_history
                .iter()
                .map(|view| TraitEntry {
                    name: &view.name,
                    value: &view.value,
                    updated_at: Time(view.updated_at),
                    provenance: (&view.provenance).into(),
                })
                .collect(),
            event_count: profile.event_count,
            events: profile
                .events
                .iter()
                .map(|event| EventEntry {
                    event_id: &event.event_id,
                    name: &event.name,
                    timestamp: Time(event.timestamp),
                    properties: &event.properties,
                    provenance: (&event.provenance).into(),
                })
                .collect(),
            computed: views::computed(&subject.read.computed),
            consent: profile.consents.iter().map(views::consent).collect(),
            consent_history: profile.consent_history.iter().map(views::consent).collect(),
            segments: views::memberships(&subject.memberships),
            merge_history: profile.journal.iter().map(views::journal_entry).collect(),
            access_log: subject
                .access_log
                .iter()
                .map(|entry| AccessLogEntry {
                    at: Time(entry.at),
                    caller: &entry.caller,
                    method: &entry.method,
                })
                .collect(),
            recommendations: json!({
                "products": subject.shopper.products.iter().map(|product| json!({
                    "product_id": product.product_id,
                    "name": product.name,
                    "purchases": product.purchases,
                    "last_purchased_on": product.last_purchase_day.map(views::day),
                    "last_viewed_on": product.last_view_day.map(views::day),
                })).collect::<Vec<_>>(),
                "logic": subject.shopper.logic,
            }),
        },
    }
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

/// The document pretty-printed in pieces of at most `piece_bytes`, each
/// allocated once at its full size: a document of a person with thousands
/// of events is neither reallocated as it grows nor copied into messages.
pub fn pretty_pieces(
    document: &Document<'_>,
    piece_bytes: usize,
) -> Result<Vec<Vec<u8>>, serde_json::Error> {
    let mut pieces = Pieces {
        pieces: Vec::new(),
        piece_bytes: piece_bytes.max(1),
    };
    serde_json::to_writer_pretty(&mut pieces, document)?;
    Ok(pieces.pieces)
}

struct Pieces {
    pieces: Vec<Vec<u8>>,
    piece_bytes: usize,
}

impl std::io::Write for Pieces {
    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<usize> {
        let written = bytes.len();
        while !bytes.is_empty() {
            if self
                .pieces
                .last()
                .is_none_or(|piece| piece.len() >= self.piece_bytes)
            {
                self.pieces.push(Vec::with_capacity(self.piece_bytes));
            }
            if let Some(piece) = self.pieces.last_mut() {
                let room = self.piece_bytes - piece.len();
                let (now, later) = bytes.split_at(room.min(bytes.len()));
                piece.extend_from_slice(now);
                bytes = later;
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::Pieces;

    #[test]
    fn pieces_hold_every_byte_in_order_and_none_is_over_size() {
        let mut pieces = Pieces {
            pieces: Vec::new(),
            piece_bytes: 4,
        };
        for part in [&b"ab"[..], b"", b"cdefghi", b"j"] {
            assert_eq!(pieces.write(part).ok(), Some(part.len()));
        }
        assert_eq!(
            pieces.pieces,
            vec![b"abcd".to_vec(), b"efgh".to_vec(), b"ij".to_vec()]
        );
    }
}
