//! Erasure, privacy request records and the access log.
//!
//! An erasure is one writer job, so it is one atomic batch: after a crash
//! the person is either wholly there or wholly gone. Its identifiers are
//! suppressed as tags (`suppression.rs`), never stored as values.

use std::collections::BTreeSet;

use prost::Message;

use super::StoreError;
use super::counters::Counters;
use super::keys;
use super::matching::{drop_candidates_of, drop_rejections_of, fields_of, forget};
use super::membership::read_memberships;
use super::overlay::CallWrites;
use super::profiles::{follow_alias, load_profile};
use super::records::{
    AccessRecord, CountsRecord, PrivacyRequestRecord, ProfileRecord, SuppressionRecord, decode,
};
use super::suppression::Suppressor;
use crate::identity::fuzzy::blocking_keys;
use crate::model::{
    AccessEntry, ErasureCall, ErasureCounts, ErasureOutcome, Identifier, MembershipChange,
    PrivacyRequest, PrivacyRequestKind, PrivacyRequestStatus, ProfileId, Subject, UnixMillis,
};

/// Erases a person: their profile, aliases, identifiers and index entries,
/// events, memberships, fuzzy-match entries, candidates, access log and
/// message records, and suppresses their identifiers. Repeating a request
/// id answers with the first outcome.
pub fn erase(
    writes: &mut CallWrites<'_, '_>,
    suppressor: &Suppressor,
    now: UnixMillis,
    call: ErasureCall,
) -> Result<ErasureOutcome, StoreError> {
    if let Some(existing) = privacy_request(writes, &call.record.request_id)? {
        if existing.kind != PrivacyRequestKind::Erasure {
            return Err(StoreError::Precondition(format!(
                "request id {} was used by an export",
                call.record.request_id
            )));
        }
        let erased = existing.counts.profiles > 0;
        return Ok(ErasureOutcome {
            erased,
            record: existing,
        });
    }
    let mut counts = ErasureCounts::default();
    let mut to_suppress: BTreeSet<Identifier> = BTreeSet::new();
    let live = match &call.subject {
        Subject::Profile(id) => Some(follow_alias(writes, *id)?),
        Subject::Identifier(identifier) => {
            to_suppress.insert(identifier.clone());
            match writes.get(&keys::identifier(writes.index(), identifier))? {
                Some(bytes) => Some(super::profiles::decode_profile_id(&bytes)?),
                None => None,
            }
        }
    };
    if let Some(live) = live
        && writes.get(&keys::profile(live))?.is_some()
    {
        let record = load_profile(writes, live)?;
        to_suppress.extend(record.identifiers.iter().map(|entry| entry.to_identifier()));
        remove_profile(writes, live, &record, now, &mut counts)?;
    }
    if call.suppress {
        for identifier in &to_suppress {
            let key = keys::suppression(&suppressor.tag(identifier));
            if writes.get(&key)?.is_none() {
                let record = SuppressionRecord {
                    at_ms: now.0,
                    request_id: call.record.request_id.clone(),
                };
                writes.insert(key, record.encode_to_vec());
                counts.suppressed_identifiers += 1;
            }
        }
    }
    let record = PrivacyRequest {
        completed_at: Some(now),
        status: PrivacyRequestStatus::Completed,
        counts,
        ..call.record
    };
    put_privacy_request(writes, &record);
    Ok(ErasureOutcome {
        erased: counts.profiles > 0,
        record,
    })
}

fn remove_profile(
    writes: &mut CallWrites<'_, '_>,
    live: ProfileId,
    record: &ProfileRecord,
    now: UnixMillis,
    counts: &mut ErasureCounts,
) -> Result<(), StoreError> {
    for entry in &record.identifiers {
        let identifier = entry.to_identifier();
        writes.remove(keys::identifier(writes.index(), &identifier));
        writes.remove(keys::hub(writes.index(), &identifier));
    }
    counts.identifiers = record.identifiers.len() as u64;
    counts.traits = record.traits.len() as u64;
    counts.consents = record.consents.len() as u64;

    // By key alone: an event whose value cannot be opened goes too.
    for key in writes.scan_keys_prefix(&keys::events_of(live))? {
        writes.remove(key);
        counts.events += 1;
    }

    let all_ids: Vec<ProfileId> = std::iter::once(live)
        .chain(record.merged_ids.iter().copied().map(ProfileId))
        .collect();
    for &id in &all_ids {
        writes.destroy_key_of(id);
        if id != live {
            writes.remove(keys::alias(id));
        }
        for (key, _) in writes.scan_prefix(&keys::access_of(id))? {
            writes.remove(key);
            counts.access_log_entries += 1;
        }
    }

    // The profiles' own lists name every record of their calls (stores
    // written before the lists existed gain them at open).
    let mut listed: BTreeSet<Vec<u8>> = BTreeSet::new();
    for &id in &all_ids {
        listed.extend(super::messages::take_all_of(writes, id)?);
    }
    counts.message_records = listed.len() as u64;
    for key in listed {
        writes.remove(key);
    }

    let memberships = read_memberships(writes, live)?;
    counts.memberships = memberships.len() as u64;
    // Watchers see the person leave every segment.
    for membership in &memberships {
        writes.note_membership_change(MembershipChange {
            segment: membership.segment,
            profile: live,
            entered: false,
            holdout: membership.holdout,
            at: now,
        });
    }
    writes.remove(keys::membership(live));

    // Candidates and rejections are found through each side's own lists,
    // so an erasure reads nothing of unrelated pairs.
    for &id in &all_ids {
        counts.match_entries += drop_candidates_of(writes, id)?.len() as u64;
        counts.match_entries += drop_rejections_of(writes, id)?;
    }
    let fields = fields_of(writes, live, record)?;
    counts.match_entries += blocking_keys(&fields).len() as u64;
    forget(writes, live, &fields)?;

    scrub_linked_profiles(writes, live, record)?;
    super::products::forget(writes, live, record);
    writes.remove(keys::profile(live));
    // The person's profile and every profile merged into it.
    counts.profiles = all_ids.len() as u64;
    Ok(())
}

/// Profiles that shared a call with the person (a blocked link, an
/// unmerge; the journal names them) may hold the person's identifiers in
/// their journal and their keyed hashes in the provenance of their traits,
/// identifiers, consents and events: both are struck, so that nothing in
/// anyone else's records can be tied to the erased person.
fn scrub_linked_profiles(
    writes: &mut CallWrites<'_, '_>,
    live: ProfileId,
    record: &ProfileRecord,
) -> Result<(), StoreError> {
    let theirs: Vec<(String, String)> = record
        .identifiers
        .iter()
        .map(|entry| (entry.kind.clone(), entry.value.clone()))
        .collect();
    let hashes: Vec<u64> = record
        .identifiers
        .iter()
        .map(|entry| writes.index().short_tag(&entry.to_identifier()))
        .collect();
    let mut others = BTreeSet::new();
    for entry in &record.journal {
        for &other in &entry.other_profiles {
            let other = follow_alias(writes, ProfileId(other))?;
            if other != live {
                others.insert(other);
            }
        }
    }
    for other in others {
        let Some(bytes) = writes.get(&keys::profile(other))? else {
            continue;
        };
        let mut other_record = ProfileRecord::from_bytes(&bytes)?;
        let mut changed = other_record.forget_identifier_hashes(&hashes);
        for entry in &mut other_record.journal {
            let before = entry.identifiers.len();
            entry
                .identifiers
                .retain(|id| !theirs.contains(&(id.kind.clone(), id.value.clone())));
            changed |= entry.identifiers.len() != before;
        }
        if changed {
            writes.insert(keys::profile(other), other_record.into_bytes());
        }
        for (key, value) in writes.scan_prefix(&keys::events_of(other))? {
            let Ok(mut event) = super::records::EventRecord::decode(value.as_slice()) else {
                continue;
            };
            if event
                .provenance
                .as_mut()
                .is_some_and(|provenance| provenance.forget_identifier_hashes(&hashes))
            {
                writes.insert(key, event.encode_to_vec());
            }
        }
    }
    Ok(())
}

pub fn privacy_request(
    writes: &CallWrites<'_, '_>,
    request_id: &str,
) -> Result<Option<PrivacyRequest>, StoreError> {
    match writes.get(&keys::privacy_request(request_id))? {
        Some(bytes) => Ok(Some(request_of(
            request_id,
            &decode(&bytes, "privacy request")?,
        ))),
        None => Ok(None),
    }
}

pub fn put_privacy_request(writes: &mut CallWrites<'_, '_>, request: &PrivacyRequest) {
    let record = PrivacyRequestRecord {
        kind: match request.kind {
            PrivacyRequestKind::Export => 1,
            PrivacyRequestKind::Erasure => 2,
        },
        requester: request.requester.clone(),
        reason: request.reason.clone(),
        caller: request.caller.clone(),
        received_at_ms: request.received_at.0,
        due_at_ms: request.due_at.0,
        completed_at_ms: request.completed_at.map(|at| at.0),
        status: match request.status {
            PrivacyRequestStatus::Received => 1,
            PrivacyRequestStatus::Completed => 2,
            PrivacyRequestStatus::Failed => 3,
        },
        counts: Some(CountsRecord::from(&request.counts)),
    };
    writes.insert(
        keys::privacy_request(&request.request_id),
        record.encode_to_vec(),
    );
}

pub fn request_of(request_id: &str, record: &PrivacyRequestRecord) -> PrivacyRequest {
    let counts = record.counts.clone().unwrap_or_default();
    PrivacyRequest {
        request_id: request_id.to_owned(),
        kind: if record.kind == 1 {
            PrivacyRequestKind::Export
        } else {
            PrivacyRequestKind::Erasure
        },
        requester: record.requester.clone(),
        reason: record.reason.clone(),
        caller: record.caller.clone(),
        received_at: UnixMillis(record.received_at_ms),
        due_at: UnixMillis(record.due_at_ms),
        completed_at: record.completed_at_ms.map(UnixMillis),
        status: match record.status {
            2 => PrivacyRequestStatus::Completed,
            3 => PrivacyRequestStatus::Failed,
            _ => PrivacyRequestStatus::Received,
        },
        counts: ErasureCounts::from(&counts),
    }
}

/// Appends reads to the access log, each under the profile it read (its
/// live id at the time). Entries go straight to the tree, not into the
/// group's batch: a read-heavy load queues thousands of them, and a batch
/// that size would stall every reader while it applies. The writer runs
/// jobs one at a time, so an erasure sees every entry written before it,
/// and entries read before an erasure but written after it are dropped
/// here rather than left behind.
pub fn append_access(
    writes: &mut CallWrites<'_, '_>,
    counters: &mut Counters,
    entries: Vec<AccessEntry>,
) -> Result<(), StoreError> {
    let mut profiles: Vec<ProfileId> = entries.iter().map(|entry| entry.profile).collect();
    profiles.sort_unstable();
    profiles.dedup();
    let held_keys: Vec<Vec<u8>> = profiles
        .iter()
        .flat_map(|&id| [keys::profile(id).to_vec(), keys::alias(id).to_vec()])
        .collect();
    writes.read_ahead(&held_keys)?;
    let mut still_held = std::collections::HashMap::new();
    for entry in entries {
        let held = match still_held.get(&entry.profile) {
            Some(&held) => held,
            None => {
                let held = writes.get(&keys::profile(entry.profile))?.is_some()
                    || writes.get(&keys::alias(entry.profile))?.is_some();
                still_held.insert(entry.profile, held);
                held
            }
        };
        if !held {
            continue;
        }
        let sequence = counters.next_sequence(writes)?;
        let record = AccessRecord {
            caller: entry.caller,
            method: entry.method,
        };
        writes.write_through(
            &keys::access(entry.profile, entry.at, sequence),
            record.encode_to_vec(),
        )?;
    }
    counters.persist(writes);
    Ok(())
}

/// Removes access-log entries older than `cutoff` under these profiles.
pub fn expire_access(
    writes: &mut CallWrites<'_, '_>,
    ids: &[ProfileId],
    cutoff: UnixMillis,
) -> Result<u64, StoreError> {
    let mut removed = 0;
    for &id in ids {
        for (key, _) in writes.scan_prefix(&keys::access_of(id))? {
            if keys::decode_event(&key).is_some_and(|(at, _)| at < cutoff) {
                writes.remove(key);
                removed += 1;
            }
        }
    }
    Ok(removed)
}
