//! Merging one profile into another: identifiers, trait values, events,
//! consents, product history, aliases and journal move to the survivor.

use super::StoreError;
use super::consent::merge_consents;
use super::keys;
use super::overlay::CallWrites;
use super::products;
use super::records::{ProfileRecord, TraitEntry};
use crate::model::ProfileId;

/// Values kept per trait name, one per origin; the oldest go first. Bounds
/// the record of a profile that many sources write to.
const TRAIT_ORIGINS_MAX: usize = 8;

/// Moves everything of `absorbed_id` into the survivor's record and keys:
/// identifiers (and their index entries), trait values, events, aliases,
/// separations and journal. The absorbed profile becomes an alias.
pub fn absorb(
    writes: &mut CallWrites<'_, '_>,
    survivor: ProfileId,
    record: &mut ProfileRecord,
    absorbed_id: ProfileId,
    absorbed: ProfileRecord,
) -> Result<(), StoreError> {
    merge_consents(record, &absorbed);
    let absorbed_activity = absorbed.activity();
    let absorbed_history = products::history_in(&absorbed);
    for entry in absorbed.identifiers {
        writes.insert(
            keys::identifier(writes.index(), &entry.to_identifier()),
            keys::encode_u64(survivor.0),
        );
        record.identifiers.push(entry);
    }
    for entry in absorbed.traits {
        insert_trait_entry(record, entry);
    }
    for (key, value) in writes.scan_prefix(&keys::events_of(absorbed_id))? {
        let suffix = keys::event_suffix(&key).ok_or_else(|| corrupt_event_key(&key))?;
        writes.insert(keys::event_with_suffix(survivor, suffix), value);
        writes.remove(key);
    }
    record.event_count += absorbed.event_count;
    products::absorb(writes, survivor, record, absorbed_id, absorbed_history);
    let mut activity = record.activity();
    activity.merge(&absorbed_activity);
    record.set_activity(&activity);
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
    record.separated_from.extend(absorbed.separated_from);
    record.journal.extend(absorbed.journal);
    record.journal.sort_by_key(|entry| entry.at_ms);
    writes.remove(keys::profile(absorbed_id));
    Ok(())
}

/// Inserts after the entries of the same name (arrival order breaks ties),
/// then drops the oldest values of that name beyond the cap.
pub fn insert_trait_entry(record: &mut ProfileRecord, entry: TraitEntry) {
    let position = record.traits.partition_point(|t| t.name <= entry.name);
    let name = entry.name.clone();
    record.traits.insert(position, entry);
    let same_name: Vec<usize> = (0..record.traits.len())
        .filter(|&i| record.traits[i].name == name)
        .collect();
    if same_name.len() > TRAIT_ORIGINS_MAX {
        if let Some(&oldest) = same_name
            .iter()
            .min_by_key(|&&i| record.traits[i].updated_at_ms)
        {
            record.traits.remove(oldest);
        }
    }
}

pub fn corrupt_event_key(key: &[u8]) -> StoreError {
    StoreError::Corrupt {
        what: "event key",
        reason: format!("unexpected length {}", key.len()),
    }
}
