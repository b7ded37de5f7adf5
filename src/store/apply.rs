//! Applies one call to the pending writes of a group: identity resolution
//! under merge protection (create, attach, merge, blocked links), traits,
//! events, idempotency, and operator unmerges. Runs only on the writer
//! thread, so calls never interleave.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;

use super::StoreError;
use super::consent::consents_for_split;
use super::counters::Counters;
use super::engine::Transaction;
use super::keys;
use super::matching::{
    self, Cause, MATCHING_TRAITS, current_fields, drop_candidates_of, fields_after_change,
    fields_of, forget, known, match_profile, reindex,
};
use super::merge::{absorb, corrupt_event_key, insert_trait_entry};
use super::messages;
use super::overlay::CallWrites;
use super::products::{self, HistoryBuilder};
use super::profiles::{decode_profile_id, follow_alias, load_profile};
use super::records::{
    EventRecord, HubRecord, IdentifierEntry, IdentifierRef, JOURNAL_BLOCKED_MERGE, JOURNAL_MERGE,
    JOURNAL_UNMERGE, JournalEntry, ProfileRecord, ProvenanceRecord, TraitEntry, decode,
};
use super::suppression::{Suppressor, any_suppressed};
use crate::computed::Activity;
use crate::identity::fuzzy::{MatchFields, MatchProfile};
use crate::identity::{BlockReason, MergeRules, incoming_trait_wins, plan_resolution};
use crate::model::{
    CustomTraitRules, Identifier, IdentifierKind, LinkBlocked, ProfileId, Resolution, UnixMillis,
    UnmergeCall, UnmergeOutcome, WriteCall, WriteOutcome, WritePayload,
};
use crate::recommend::Recommender;

/// The keys [`apply_call`] reads for this call whatever the database
/// holds, and then those it reads of the profiles its identifiers point
/// at (their records, aliases, memberships and matching state): where
/// each read is a trip to the database, the writer reads them for a whole
/// group ahead, in two round trips (three when calls merge or match).
pub fn read_ahead(
    reads: &dyn Transaction,
    suppressor: &Suppressor,
    catalogue: Option<&Recommender>,
    calls: &[&WriteCall],
) -> Result<(), StoreError> {
    // How many profiles matching sees, read by every call that matches.
    // And whether definitions moved (`store::feed`).
    let mut first = vec![
        keys::FUZZY_POPULATION.to_vec(),
        keys::DEFINITIONS_STAMP.to_vec(),
    ];
    for call in calls {
        if let Some(message_id) = call.message_id() {
            first.push(keys::message(suppressor, message_id));
        }
        if let (Some(catalogue), WritePayload::Track { event, properties }) =
            (catalogue, &call.payload)
        {
            first.extend(products::keys_read(catalogue, event, properties));
        }
        for identifier in &call.identifiers {
            first.push(keys::suppression(&suppressor.tag(identifier)).to_vec());
            first.push(keys::hub(suppressor, identifier));
            first.push(keys::identifier(suppressor, identifier));
        }
    }
    reads.read_ahead(&first, &[])?;
    let mut owners = BTreeSet::new();
    let mut merging = BTreeSet::new();
    let mut matched = BTreeMap::<ProfileId, Vec<&str>>::new();
    for call in calls {
        let mut of_call = BTreeSet::new();
        for identifier in &call.identifiers {
            if let Some(bytes) = reads.get(&keys::identifier(suppressor, identifier))? {
                of_call.insert(decode_profile_id(&bytes)?);
            }
        }
        // Profiles of one call are merged, unless protection refuses: the
        // events of those absorbed move to the survivor.
        if of_call.len() > 1 {
            merging.extend(of_call.iter().copied());
        }
        if of_call.len() > 1 || changes_matching_traits(call) {
            let emails = call
                .identifiers
                .iter()
                .filter(|identifier| *identifier.kind() == IdentifierKind::Email)
                .map(Identifier::value);
            for &id in &of_call {
                matched.entry(id).or_default().extend(emails.clone());
            }
        }
        owners.append(&mut of_call);
    }
    let owned: Vec<Vec<u8>> = owners
        .into_iter()
        .flat_map(keys::profile_point_keys)
        .collect();
    let moving: Vec<Vec<u8>> = merging
        .into_iter()
        .map(|id| keys::events_of(id).to_vec())
        .collect();
    reads.read_ahead(&owned, &moving)?;
    let mut indexed = Vec::new();
    for (id, emails) in matched {
        indexed.extend(matching::keys_read(reads, suppressor, id, &emails)?);
    }
    reads.read_ahead(&indexed, &[])?;
    Ok(())
}

fn changes_matching_traits(call: &WriteCall) -> bool {
    match &call.payload {
        WritePayload::Identify { traits } => traits
            .keys()
            .any(|name| MATCHING_TRAITS.contains(&name.as_str())),
        WritePayload::Track { .. } => false,
    }
}

pub fn apply_call(
    writes: &mut CallWrites<'_, '_>,
    counters: &mut Counters,
    rules: &MergeRules,
    suppressor: &Suppressor,
    custom: &dyn CustomTraitRules,
    catalogue: Option<&Recommender>,
    call: &WriteCall,
) -> Result<WriteOutcome, StoreError> {
    if let Some(message_id) = call.message_id()
        && let Some(profile_id) = messages::replayed(writes, message_id)?
    {
        return Ok(WriteOutcome::duplicate(profile_id));
    }
    // An erased person's identifiers must not bring them back: the call is
    // dropped whole, since its other identifiers and data are theirs too.
    if any_suppressed(writes, suppressor, &call.identifiers)? {
        return Ok(WriteOutcome::suppressed());
    }

    let mut usable = Vec::with_capacity(call.identifiers.len());
    let mut hubs_ignored = Vec::new();
    for identifier in &call.identifiers {
        if is_hub(writes, rules, identifier)? {
            hubs_ignored.push(identifier.clone());
        } else {
            usable.push(identifier.clone());
        }
    }
    if usable.is_empty() {
        return Err(StoreError::Precondition(
            "every identifier of the call links too many profiles to resolve a person".to_owned(),
        ));
    }
    let mut owners = Vec::with_capacity(usable.len());
    let mut records: BTreeMap<ProfileId, ProfileRecord> = BTreeMap::new();
    for identifier in &usable {
        let owner = match writes.get(&keys::identifier(writes.index(), identifier))? {
            Some(bytes) => Some(decode_profile_id(&bytes)?),
            None => None,
        };
        if let Some(id) = owner {
            if let std::collections::btree_map::Entry::Vacant(slot) = records.entry(id) {
                slot.insert(load_profile(writes, id)?);
            }
        }
        owners.push(owner);
    }
    let mut known_profiles = Vec::with_capacity(records.len());
    for (id, record) in &records {
        known_profiles.push(known(writes, *id, record)?);
    }
    let plan = plan_resolution(rules, &usable, &owners, &known_profiles);

    let received_at = call.provenance.received_at;
    let provenance = ProvenanceRecord {
        identifier_hashes: usable.iter().map(|id| suppressor.short_tag(id)).collect(),
        ..ProvenanceRecord::from(&call.provenance)
    };
    let touches_matching = changes_matching_traits(call)
        || !plan.absorbed.is_empty()
        // Emails are matching evidence and blocking keys too.
        || plan
            .attach
            .iter()
            .any(|identifier| *identifier.kind() == IdentifierKind::Email)
        // A refused weak link is new evidence that the two may be one person.
        || plan.blocked.iter().any(|link| {
            link.profile.is_some() && matches!(link.reason, BlockReason::WeakLink { .. })
        });
    let mut fields_before = MatchProfile::default();
    let mut absorbed_variants: Vec<MatchFields> = Vec::new();
    let (profile_id, mut record, mut resolution) = match plan.survivor {
        None => {
            let id = counters.new_profile_id(writes)?;
            (id, new_record(received_at), Resolution::Created)
        }
        Some(survivor) => {
            let mut record = take_record(&mut records, survivor)?;
            if touches_matching {
                fields_before = fields_of(writes, survivor, &record)?;
            }
            for &absorbed in &plan.absorbed {
                let absorbed_record = take_record(&mut records, absorbed)?;
                let absorbed_fields = fields_of(writes, absorbed, &absorbed_record)?;
                forget(writes, absorbed, &absorbed_fields)?;
                absorbed_variants.extend(absorbed_fields.variants().iter().cloned());
                absorb(writes, survivor, &mut record, absorbed, absorbed_record)?;
            }
            if plan.absorbed.is_empty() {
                (survivor, record, Resolution::Attached)
            } else {
                record.journal.push(JournalEntry {
                    at_ms: received_at.0,
                    message_id: call.provenance.message_id.clone(),
                    other_profiles: plan.absorbed.iter().map(|id| id.0).collect(),
                    kind: JOURNAL_MERGE,
                    identifiers: usable.iter().map(IdentifierRef::of).collect(),
                    reason: "a call carried identifiers of several profiles".to_owned(),
                    weak_link: false,
                });
                let absorbed = plan.absorbed.clone();
                (survivor, record, Resolution::Merged { absorbed })
            }
        }
    };

    attach_identifiers(
        writes,
        profile_id,
        &mut record,
        &plan.attach,
        call.timestamp,
        &provenance,
    );
    touch_identifiers(&mut record, &usable, call.timestamp);

    let mut blocked = Vec::with_capacity(plan.blocked.len());
    for link in &plan.blocked {
        let reason = link.reason.to_string();
        let other = match link.profile {
            Some(id) => Some(id),
            None if !link.identifiers.is_empty() && link.identifiers == plan.detached => {
                let id = counters.new_profile_id(writes)?;
                let mut detached = new_record(received_at);
                attach_identifiers(
                    writes,
                    id,
                    &mut detached,
                    &plan.detached,
                    call.timestamp,
                    &provenance,
                );
                records.insert(id, detached);
                Some(id)
            }
            None => None,
        };
        let entry = JournalEntry {
            at_ms: received_at.0,
            message_id: call.provenance.message_id.clone(),
            other_profiles: other.map(|id| id.0).into_iter().collect(),
            kind: JOURNAL_BLOCKED_MERGE,
            identifiers: link.identifiers.iter().map(IdentifierRef::of).collect(),
            reason: reason.clone(),
            weak_link: matches!(link.reason, BlockReason::WeakLink { .. }),
        };
        if let Some(other_record) = other.and_then(|id| records.get_mut(&id)) {
            let mirrored = JournalEntry {
                other_profiles: vec![profile_id.0],
                ..entry.clone()
            };
            record_journal_once(other_record, mirrored);
        }
        record_journal_once(&mut record, entry);
        for weak in &link.weak_identifiers {
            count_towards_hub(writes, rules, weak, [Some(profile_id), other])?;
        }
        blocked.push(LinkBlocked {
            profile_id: other,
            identifiers: link.identifiers.clone(),
            reason,
        });
    }

    match &call.payload {
        WritePayload::Identify { traits } => {
            for (name, value) in traits {
                set_trait(&mut record, name, value, call.timestamp, &provenance);
            }
        }
        WritePayload::Track { event, properties } => {
            let event_name = event.as_str();
            let sequence = counters.next_sequence(writes)?;
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
            let mut activity = record.activity();
            activity.record_event(event_name, properties, call.timestamp);
            custom.fold(&mut activity, event_name, properties, call.timestamp);
            record.set_activity(&activity);
            if let Some(catalogue) = catalogue {
                products::record_event(
                    writes,
                    catalogue,
                    profile_id,
                    &mut record,
                    event_name,
                    properties,
                    call.timestamp,
                )?;
            }
        }
    }

    record.updated_at_ms = record.updated_at_ms.max(received_at.0);
    // Profiles on the refused side of a link keep their data; only their
    // journal (and a detached profile's identifiers) changed.
    for (id, other_record) in records {
        writes.insert(keys::profile(id), other_record.into_bytes());
    }
    let (profile_id, record) = if touches_matching {
        let fields_after = fields_after_change(&fields_before, &record, absorbed_variants)?;
        reindex(writes, profile_id, &fields_before, &fields_after)?;
        let cause = Cause {
            at: received_at,
            message_id: &call.provenance.message_id,
        };
        let (survivor, record, report) =
            match_profile(writes, rules, &cause, profile_id, record, &fields_after)?;
        if !report.merged_away.is_empty() {
            let mut absorbed = match resolution {
                Resolution::Merged { absorbed } => absorbed,
                _ => Vec::new(),
            };
            absorbed.extend(report.merged_away);
            absorbed.retain(|id| *id != survivor);
            resolution = Resolution::Merged { absorbed };
        }
        (survivor, record)
    } else {
        (profile_id, record)
    };
    writes.insert(keys::profile(profile_id), record.into_bytes());
    if let Some(message_id) = call.message_id() {
        messages::remember(writes, message_id, profile_id, received_at);
    }
    counters.persist(writes);

    Ok(WriteOutcome {
        profile_id,
        resolution,
        blocked,
        hubs_ignored,
        junk_ignored: call.junk_ignored.clone(),
    })
}

/// Splits identifiers off a profile into a new one. Events and trait values
/// that came with those identifiers alone move with them; what came with a
/// linking call (identifiers from both sides) stays. The two profiles are
/// marked as separated so that resolution does not merge them back.
pub fn apply_unmerge(
    writes: &mut CallWrites<'_, '_>,
    counters: &mut Counters,
    custom: &dyn CustomTraitRules,
    call: &UnmergeCall,
) -> Result<UnmergeOutcome, StoreError> {
    let profile_id = follow_alias(writes, call.profile_id)?;
    let bytes = writes.get(&keys::profile(profile_id))?.ok_or_else(|| {
        StoreError::NotFound(format!("profile {} does not exist", call.profile_id))
    })?;
    let mut record = ProfileRecord::from_bytes(&bytes)?;
    for (index, identifier) in call.identifiers.iter().enumerate() {
        if !record
            .identifiers
            .iter()
            .any(|entry| entry.matches(identifier))
        {
            return Err(StoreError::Invalid {
                field: format!("identifiers[{index}]"),
                description: format!("not on profile {profile_id}"),
            });
        }
    }
    if call.identifiers.is_empty() || record.identifiers.len() <= call.identifiers.len() {
        return Err(StoreError::Invalid {
            field: "identifiers".to_owned(),
            description: "name some, but not all, of the profile's identifiers".to_owned(),
        });
    }

    let fields_before = fields_of(writes, profile_id, &record)?;
    let new_id = counters.new_profile_id(writes)?;
    let received_at = call.provenance.received_at;
    let mut split = new_record(received_at);
    let hashes: Vec<u64> = call
        .identifiers
        .iter()
        .map(|identifier| writes.index().short_tag(identifier))
        .collect();

    let (moved, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut record.identifiers)
        .into_iter()
        .partition(|entry| {
            call.identifiers
                .iter()
                .any(|identifier| entry.matches(identifier))
        });
    record.identifiers = kept;
    for entry in &moved {
        writes.insert(
            keys::identifier(writes.index(), &entry.to_identifier()),
            keys::encode_u64(new_id.0),
        );
    }
    split.identifiers = moved;

    let came_with_split = |provenance: &Option<ProvenanceRecord>| {
        provenance
            .as_ref()
            .is_some_and(|p| p.came_only_with(&hashes))
    };
    let (moved_traits, kept_traits): (Vec<_>, Vec<_>) = std::mem::take(&mut record.traits)
        .into_iter()
        .partition(|entry| came_with_split(&entry.provenance));
    record.traits = kept_traits;
    let moved_trait_values = moved_traits.len() as u64;
    split.traits = moved_traits;

    // Whatever is derived from the events is recomputed for both sides.
    let mut moved_events = 0;
    let (mut kept_activity, mut split_activity) = (Activity::default(), Activity::default());
    let (mut kept_history, mut split_history) =
        (HistoryBuilder::default(), HistoryBuilder::default());
    for (key, value) in writes.scan_prefix(&keys::events_of(profile_id))? {
        let event: EventRecord = decode(&value, "event")?;
        let (timestamp, _) = keys::decode_event(&key).ok_or_else(|| corrupt_event_key(&key))?;
        let properties = match serde_json::from_str(&event.properties_json) {
            Ok(serde_json::Value::Object(properties)) => properties,
            _ => serde_json::Map::new(),
        };
        if !came_with_split(&event.provenance) {
            kept_activity.record_event(&event.name, &properties, timestamp);
            custom.fold(&mut kept_activity, &event.name, &properties, timestamp);
            kept_history.add(&event.name, &properties, timestamp);
            continue;
        }
        split_activity.record_event(&event.name, &properties, timestamp);
        custom.fold(&mut split_activity, &event.name, &properties, timestamp);
        split_history.add(&event.name, &properties, timestamp);
        let suffix = keys::event_suffix(&key).ok_or_else(|| corrupt_event_key(&key))?;
        writes.insert(keys::event_with_suffix(new_id, suffix), value.clone());
        writes.remove(key);
        moved_events += 1;
    }
    record.event_count = record.event_count.saturating_sub(moved_events);
    split.event_count = moved_events;
    record.set_activity(&kept_activity);
    split.set_activity(&split_activity);
    kept_history.store(writes, profile_id, &mut record);
    split_history.store(writes, new_id, &mut split);
    split.consents = consents_for_split(&record);

    record.separated_from.push(new_id.0);
    split.separated_from.push(profile_id.0);
    let entry = JournalEntry {
        at_ms: received_at.0,
        message_id: call.provenance.message_id.clone(),
        other_profiles: vec![new_id.0],
        kind: JOURNAL_UNMERGE,
        identifiers: call.identifiers.iter().map(IdentifierRef::of).collect(),
        reason: call.reason.clone(),
        weak_link: false,
    };
    split.journal.push(JournalEntry {
        other_profiles: vec![profile_id.0],
        ..entry.clone()
    });
    record.journal.push(entry);
    record.updated_at_ms = record.updated_at_ms.max(received_at.0);

    // Which older variants came with the split-off identifiers is not
    // recorded, so both sides start again from what their traits hold; the
    // profile's candidates were scored against the whole it was.
    let kept_fields = MatchProfile::new(current_fields(&record)?, []);
    reindex(writes, profile_id, &fields_before, &kept_fields)?;
    drop_candidates_of(writes, profile_id)?;
    let split_fields = MatchProfile::new(current_fields(&split)?, []);
    reindex(writes, new_id, &MatchProfile::default(), &split_fields)?;
    writes.insert(keys::profile(profile_id), record.into_bytes());
    writes.insert(keys::profile(new_id), split.into_bytes());
    counters.persist(writes);
    Ok(UnmergeOutcome {
        profile_id,
        new_profile_id: new_id,
        moved_events,
        moved_trait_values,
    })
}

/// Recomputes user-defined computed traits from the profile's stored
/// events: every trait (after retention removed events), or the one named
/// (a backfill of a new or changed definition).
pub(super) fn recompute_custom_traits(
    writes: &CallWrites<'_, '_>,
    id: ProfileId,
    record: &mut ProfileRecord,
    custom: &dyn CustomTraitRules,
    only: Option<&str>,
) -> Result<(), StoreError> {
    let mut activity = record.activity();
    match only {
        Some(name) => {
            activity.custom.remove(name);
        }
        None => activity.custom.clear(),
    }
    for (key, value) in writes.scan_prefix(&keys::events_of(id))? {
        let event: EventRecord = decode(&value, "event")?;
        let (timestamp, _) = keys::decode_event(&key).ok_or_else(|| corrupt_event_key(&key))?;
        let properties = match serde_json::from_str(&event.properties_json) {
            Ok(serde_json::Value::Object(properties)) => properties,
            _ => serde_json::Map::new(),
        };
        match only {
            Some(name) => custom.fold_one(name, &mut activity, &event.name, &properties, timestamp),
            None => custom.fold(&mut activity, &event.name, &properties, timestamp),
        }
    }
    record.set_activity(&activity);
    Ok(())
}

fn new_record(created_at: UnixMillis) -> ProfileRecord {
    ProfileRecord {
        created_at_ms: created_at.0,
        updated_at_ms: created_at.0,
        ..ProfileRecord::default()
    }
}

fn take_record(
    records: &mut BTreeMap<ProfileId, ProfileRecord>,
    id: ProfileId,
) -> Result<ProfileRecord, StoreError> {
    records.remove(&id).ok_or_else(|| StoreError::Corrupt {
        what: "resolution plan",
        reason: format!("planned profile {id} was not loaded"),
    })
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
        if record
            .identifiers
            .iter()
            .any(|entry| entry.matches(identifier))
        {
            continue;
        }
        writes.insert(
            keys::identifier(writes.index(), identifier),
            keys::encode_u64(profile_id.0),
        );
        record.identifiers.push(IdentifierEntry {
            kind: identifier.kind().as_str().to_owned(),
            value: identifier.value().to_owned(),
            first_seen_ms: seen_at.0,
            last_seen_ms: seen_at.0,
            provenance: Some(provenance.clone()),
            provenance_ref: 0,
        });
    }
}

/// Widens first/last seen of the call's identifiers this profile holds.
fn touch_identifiers(record: &mut ProfileRecord, identifiers: &[Identifier], seen_at: UnixMillis) {
    for entry in &mut record.identifiers {
        if identifiers
            .iter()
            .any(|identifier| entry.matches(identifier))
        {
            entry.first_seen_ms = entry.first_seen_ms.min(seen_at.0);
            entry.last_seen_ms = entry.last_seen_ms.max(seen_at.0);
        }
    }
}

/// Last write wins per trait, kept per origin: a value replaces the values
/// that came with the same or fewer identifiers (unless one of them is
/// newer, which makes the incoming value stale); values that came with
/// other identifiers stay beside it for a later unmerge.
fn set_trait(
    record: &mut ProfileRecord,
    name: &str,
    value: &serde_json::Value,
    set_at: UnixMillis,
    provenance: &ProvenanceRecord,
) {
    let superseded = |entry: &TraitEntry| {
        entry.name == name
            && entry.provenance.as_ref().is_none_or(|p| {
                p.identifier_hashes
                    .iter()
                    .all(|h| provenance.identifier_hashes.contains(h))
            })
    };
    let stale = record
        .traits
        .iter()
        .filter(|entry| superseded(entry))
        .any(|entry| !incoming_trait_wins(UnixMillis(entry.updated_at_ms), set_at));
    if stale {
        return;
    }
    record.traits.retain(|entry| !superseded(entry));
    insert_trait_entry(
        record,
        TraitEntry {
            name: name.to_owned(),
            value_json: value.to_string(),
            updated_at_ms: set_at.0,
            provenance: Some(provenance.clone()),
            provenance_ref: 0,
        },
    );
}

/// Adds a journal entry unless the same refusal is already recorded: a
/// link that keeps being asked for is one fact, not one per call.
fn record_journal_once(record: &mut ProfileRecord, entry: JournalEntry) {
    let already = record.journal.iter().any(|existing| {
        existing.kind == entry.kind
            && existing.other_profiles == entry.other_profiles
            && existing.identifiers == entry.identifiers
            && existing.reason == entry.reason
    });
    if entry.kind != JOURNAL_BLOCKED_MERGE || !already {
        record.journal.push(entry);
    }
}

fn is_hub(
    writes: &CallWrites<'_, '_>,
    rules: &MergeRules,
    identifier: &Identifier,
) -> Result<bool, StoreError> {
    Ok(match writes.get(&keys::hub(writes.index(), identifier))? {
        Some(bytes) => {
            let hub: HubRecord = decode(&bytes, "hub record")?;
            hub.profiles.len() >= rules.hub_profiles_min()
        }
        None => false,
    })
}

/// Remembers the distinct profiles an identifier tried to glue together;
/// at `hub_profiles_min` it stops being used for resolution.
fn count_towards_hub(
    writes: &mut CallWrites<'_, '_>,
    rules: &MergeRules,
    identifier: &Identifier,
    profiles: [Option<ProfileId>; 2],
) -> Result<(), StoreError> {
    let key = keys::hub(writes.index(), identifier);
    let mut hub: HubRecord = match writes.get(&key)? {
        Some(bytes) => decode(&bytes, "hub record")?,
        None => HubRecord::default(),
    };
    let before = hub.profiles.len();
    for id in profiles.into_iter().flatten() {
        if hub.profiles.len() < rules.hub_profiles_min() && !hub.profiles.contains(&id.0) {
            hub.profiles.push(id.0);
        }
    }
    if hub.profiles.len() != before {
        writes.insert(key, hub.encode_to_vec());
    }
    Ok(())
}
