//! Consent per channel and purpose: recording decisions, and combining two
//! profiles' decisions so that a merge never widens what a person agreed to.

use super::StoreError;
use super::keys;
use super::messages;
use super::overlay::CallWrites;
use super::profiles::follow_alias;
use super::records::{ConsentEntry, ProfileRecord, ProvenanceRecord};
use crate::model::{ConsentCall, ProfileId};

/// Decisions kept in a profile's history; the oldest go first.
const CONSENT_HISTORY_MAX: usize = 500;

/// Records the decisions of one call. A grant older than the current
/// decision for its channel and purpose (a late delivery) joins the history
/// but does not change the state. A withdrawal always takes effect when it
/// is received, whatever time it carries: a decision dated later (a client
/// clock set wrong) must never keep a person from withdrawing. A call whose
/// `message_id` was seen before changes nothing, as every write.
pub fn apply_consent(
    writes: &mut CallWrites<'_, '_>,
    call: &ConsentCall,
) -> Result<ProfileId, StoreError> {
    let message_id = Some(call.provenance.message_id.as_str()).filter(|id| !id.is_empty());
    if let Some(message_id) = message_id
        && let Some(profile_id) = messages::replayed(writes, message_id)?
    {
        return Ok(profile_id);
    }
    let profile_id = follow_alias(writes, call.profile_id)?;
    let bytes = writes.get(&keys::profile(profile_id))?.ok_or_else(|| {
        StoreError::NotFound(format!("profile {} does not exist", call.profile_id))
    })?;
    let mut record = ProfileRecord::from_bytes(&bytes)?;
    let provenance = ProvenanceRecord::from(&call.provenance);
    for (channel, purpose, granted) in &call.changes {
        let entry = ConsentEntry {
            channel: channel.as_str().to_owned(),
            purpose: purpose.as_str().to_owned(),
            granted: *granted,
            at_ms: call.at.0,
            provenance: Some(provenance.clone()),
            provenance_ref: 0,
        };
        push_history(&mut record, entry.clone());
        match record
            .consents
            .iter_mut()
            .find(|current| current.same_subject(&entry))
        {
            Some(current) if current.at_ms > entry.at_ms && entry.granted => {}
            Some(current) => *current = entry,
            None => record.consents.push(entry),
        }
    }
    record.updated_at_ms = record.updated_at_ms.max(call.provenance.received_at.0);
    writes.insert(keys::profile(profile_id), record.into_bytes());
    if let Some(message_id) = message_id {
        messages::remember(writes, message_id, profile_id, call.provenance.received_at);
    }
    Ok(profile_id)
}

/// Most restrictive wins: a withdrawal on either side stands, whatever its
/// time; between two grants (or two withdrawals) the later one is kept.
pub fn merge_consents(record: &mut ProfileRecord, absorbed: &ProfileRecord) {
    for theirs in &absorbed.consents {
        match record
            .consents
            .iter_mut()
            .find(|ours| ours.same_subject(theirs))
        {
            None => record.consents.push(theirs.clone()),
            Some(ours) => {
                let keep_theirs = match (ours.granted, theirs.granted) {
                    (true, false) => true,
                    (false, true) => false,
                    _ => theirs.at_ms > ours.at_ms,
                };
                if keep_theirs {
                    *ours = theirs.clone();
                }
            }
        }
    }
    for entry in &absorbed.consent_history {
        push_history(record, entry.clone());
    }
    record.consent_history.sort_by_key(|entry| entry.at_ms);
}

/// The consents a profile split off by an unmerge starts with: only the
/// withdrawals. A grant given on the merged profile may have come from the
/// other person, and consent must never be assumed.
pub fn consents_for_split(record: &ProfileRecord) -> Vec<ConsentEntry> {
    record
        .consents
        .iter()
        .filter(|entry| !entry.granted)
        .cloned()
        .collect()
}

fn push_history(record: &mut ProfileRecord, entry: ConsentEntry) {
    record.consent_history.push(entry);
    if record.consent_history.len() > CONSENT_HISTORY_MAX {
        let excess = record.consent_history.len() - CONSENT_HISTORY_MAX;
        record.consent_history.drain(..excess);
    }
}
