//! Applies one call to the pending writes of a group: identity resolution
//! (create, attach, merge), traits, events and idempotency. Runs only on
//! the writer thread, so calls never interleave.

use prost::Message;

use super::StoreError;
use super::keys;
use super::overlay::CallWrites;
use super::records::{
    DedupRecord, EventRecord, IdentifierEntry, MergeEntry, ProfileRecord, ProvenanceRecord,
    TraitEntry, decode,
};
use crate::identity::{ResolutionPlan, incoming_trait_wins, plan_resolution};
use crate::model::{
    Identifier, ProfileId, Resolution, UnixMillis, WriteCall, WriteOutcome, WritePayload,
};

/// Sequence counters, owned by the writer and persisted with every group
/// that advances them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub next_profile_id: u64,
    pub next_event_sequence: u64,
}

impl Counters {
    pub fn persist(&self, writes: &mut CallWrites<'_, '_>) {
        writes.insert(
            keys::NEXT_PROFILE_ID,
            keys::encode_u64(self.next_profile_id),
        );
        writes.insert(
            keys::NEXT_EVENT_SEQUENCE,
            keys::encode_u64(self.next_event_sequence),
        );
    }
}

pub fn apply_call(
    writes: &mut CallWrites<'_, '_>,
    counters: &mut Counters,
    call: &WriteCall,
) -> Result<WriteOutcome, StoreError> {
    if let Some(message_id) = call.message_id() {
        if let Some(bytes) = writes.get(&keys::message(message_id))? {
            let original: DedupRecord = decode(&bytes, "message record")?;
            let profile_id = follow_alias(writes, ProfileId(original.profile_id))?;
            return Ok(WriteOutcome {
                profile_id,
                resolution: Resolution::Duplicate,
            });
        }
    }

    let mut known = Vec::with_capacity(call.identifiers.len());
    for identifier in &call.identifiers {
        if let Some(bytes) = writes.get(&keys::identifier(identifier))? {
            known.push(decode_profile_id(&bytes)?);
        }
    }

    let provenance = ProvenanceRecord::from(&call.provenance);
    let received_at = call.provenance.received_at;
    let (profile_id, mut record, resolution) = match plan_resolution(known) {
        ResolutionPlan::Create => {
            let id = ProfileId(counters.next_profile_id);
            counters.next_profile_id += 1;
            let record = ProfileRecord {
                created_at_ms: received_at.0,
                updated_at_ms: received_at.0,
                ..ProfileRecord::default()
            };
            (id, record, Resolution::Created)
        }
        ResolutionPlan::Attach(id) => (id, load_profile(writes, id)?, Resolution::Attached),
        ResolutionPlan::Merge { survivor, absorbed } => {
            let mut record = load_profile(writes, survivor)?;
            for &absorbed_id in &absorbed {
                absorb(writes, survivor, &mut record, absorbed_id)?;
            }
            record.merges.push(MergeEntry {
                at_ms: received_at.0,
                message_id: call.provenance.message_id.clone(),
                absorbed: absorbed.iter().map(|id| id.0).collect(),
            });
            (survivor, record, Resolution::Merged { absorbed })
        }
    };

    attach_identifiers(
        writes,
        profile_id,
        &mut record,
        &call.identifiers,
        call.timestamp,
        &provenance,
    );

    match &call.payload {
        WritePayload::Identify { traits } => {
            for (name, value) in traits {
                set_trait(&mut record, name, value, call.timestamp, &provenance);
            }
        }
        WritePayload::Track { event, properties } => {
            let sequence = counters.next_event_sequence;
            counters.next_event_sequence += 1;
            let event = EventRecord {
                name: event.clone(),
                properties_json: serde_json::Value::Object(properties.clone()).to_string(),
                provenance: Some(provenance.clone()),
            };
            writes.insert(
                keys::event(profile_id, call.timestamp, sequence),
                event.encode_to_vec(),
            );
            record.event_count += 1;
        }
    }

    record.updated_at_ms = record.updated_at_ms.max(received_at.0);
    writes.insert(keys::profile(profile_id), record.encode_to_vec());
    if let Some(message_id) = call.message_id() {
        let dedup = DedupRecord {
            profile_id: profile_id.0,
            received_at_ms: received_at.0,
        };
        writes.insert(keys::message(message_id), dedup.encode_to_vec());
    }
    counters.persist(writes);

    Ok(WriteOutcome {
        profile_id,
        resolution,
    })
}

/// Moves everything of `absorbed_id` into the survivor's record and keys:
/// identifiers (and their index entries), traits (newer value wins), events,
/// aliases and merge history. The absorbed profile becomes an alias.
fn absorb(
    writes: &mut CallWrites<'_, '_>,
    survivor: ProfileId,
    record: &mut ProfileRecord,
    absorbed_id: ProfileId,
) -> Result<(), StoreError> {
    let absorbed = load_profile(writes, absorbed_id)?;
    for entry in absorbed.identifiers {
        writes.insert(
            keys::identifier(&entry.to_identifier()),
            keys::encode_u64(survivor.0),
        );
        record.identifiers.push(entry);
    }
    for incoming in absorbed.traits {
        match record
            .traits
            .binary_search_by(|t| t.name.cmp(&incoming.name))
        {
            // On equal timestamps the survivor's value stays, so that the
            // result does not depend on which profile happened to be absorbed.
            Ok(index) if incoming.updated_at_ms > record.traits[index].updated_at_ms => {
                record.traits[index] = incoming;
            }
            Ok(_) => {}
            Err(index) => record.traits.insert(index, incoming),
        }
    }
    for (key, value) in writes.scan_prefix(&keys::events_of(absorbed_id))? {
        let suffix = keys::event_suffix(&key).ok_or(StoreError::Corrupt {
            what: "event key",
            reason: format!("unexpected length {}", key.len()),
        })?;
        writes.insert(keys::event_with_suffix(survivor, suffix), value);
        writes.remove(key);
    }
    record.event_count += absorbed.event_count;
    record.created_at_ms = record.created_at_ms.min(absorbed.created_at_ms);
    record.updated_at_ms = record.updated_at_ms.max(absorbed.updated_at_ms);

    // Aliases always point at the live survivor, so that resolving an old id
    // is one lookup however many merges followed.
    let mut former_ids = absorbed.merged_ids;
    former_ids.push(absorbed_id.0);
    for &former in &former_ids {
        writes.insert(keys::alias(ProfileId(former)), keys::encode_u64(survivor.0));
    }
    record.merged_ids.extend(former_ids);
    record.merged_ids.sort_unstable();
    record.merges.extend(absorbed.merges);
    record.merges.sort_by_key(|merge| merge.at_ms);
    writes.remove(keys::profile(absorbed_id));
    Ok(())
}

fn attach_identifiers(
    writes: &mut CallWrites<'_, '_>,
    profile_id: ProfileId,
    record: &mut ProfileRecord,
    identifiers: &[Identifier],
    seen_at: UnixMillis,
    provenance: &ProvenanceRecord,
) {
    for identifier in identifiers {
        match record
            .identifiers
            .iter_mut()
            .find(|entry| entry.matches(identifier))
        {
            Some(entry) => {
                entry.first_seen_ms = entry.first_seen_ms.min(seen_at.0);
                entry.last_seen_ms = entry.last_seen_ms.max(seen_at.0);
            }
            None => {
                writes.insert(keys::identifier(identifier), keys::encode_u64(profile_id.0));
                record.identifiers.push(IdentifierEntry {
                    kind: identifier.kind().as_str().to_owned(),
                    value: identifier.value().to_owned(),
                    first_seen_ms: seen_at.0,
                    last_seen_ms: seen_at.0,
                    provenance: Some(provenance.clone()),
                });
            }
        }
    }
}

fn set_trait(
    record: &mut ProfileRecord,
    name: &str,
    value: &serde_json::Value,
    set_at: UnixMillis,
    provenance: &ProvenanceRecord,
) {
    let entry = TraitEntry {
        name: name.to_owned(),
        value_json: value.to_string(),
        updated_at_ms: set_at.0,
        provenance: Some(provenance.clone()),
    };
    match record
        .traits
        .binary_search_by(|t| t.name.as_str().cmp(name))
    {
        Ok(index) => {
            if incoming_trait_wins(UnixMillis(record.traits[index].updated_at_ms), set_at) {
                record.traits[index] = entry;
            }
        }
        Err(index) => record.traits.insert(index, entry),
    }
}

fn load_profile(writes: &CallWrites<'_, '_>, id: ProfileId) -> Result<ProfileRecord, StoreError> {
    let bytes = writes
        .get(&keys::profile(id))?
        .ok_or_else(|| StoreError::Corrupt {
            what: "profile",
            reason: format!("identifier index points at missing profile {id}"),
        })?;
    decode(&bytes, "profile")
}

fn follow_alias(writes: &CallWrites<'_, '_>, id: ProfileId) -> Result<ProfileId, StoreError> {
    match writes.get(&keys::alias(id))? {
        Some(bytes) => decode_profile_id(&bytes),
        None => Ok(id),
    }
}

pub fn decode_profile_id(bytes: &[u8]) -> Result<ProfileId, StoreError> {
    keys::decode_u64(bytes)
        .map(ProfileId)
        .ok_or_else(|| StoreError::Corrupt {
            what: "profile id",
            reason: format!("expected 8 bytes, found {}", bytes.len()),
        })
}
