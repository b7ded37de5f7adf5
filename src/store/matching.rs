//! Fuzzy matching inside the store: keeping the blocking-key index in step
//! with profiles' traits, scoring the profiles that share a key with a
//! changed one, merging corroborated matches, and recording the rest as
//! candidates for review. The rules themselves live in `identity::fuzzy`.

use std::collections::BTreeSet;

use prost::Message;

use super::StoreError;
use super::apply::{absorb, follow_alias, live_separations, load_profile};
use super::keys;
use super::overlay::CallWrites;
use super::records::{
    CandidateRecord, EvidenceRecord, IdentifierEntry, IdentifierRef, JOURNAL_MERGE, JournalEntry,
    ProfileRecord, RejectionRecord, decode,
};
use super::writer::JobContext;
use crate::identity::fuzzy::{
    MatchDecision, MatchFields, MatchScore, NameCounts, blocking_keys, decide, name_count_keys,
    score,
};
use crate::identity::{KnownProfile, MergeRules, merge_allowed};
use crate::model::{CandidateReview, MatchPassOutcome, ProfileId, ReviewOutcome, UnixMillis};

/// Trait names that feed matching; a call touching none of them (and
/// merging nothing) leaves the index as it is.
pub const MATCHING_TRAITS: [&str; 4] = ["first_name", "last_name", "birthday", "address"];

/// Profiles scored per blocking key. A block this large is not selective
/// (a placeholder birthday, a very common name at a popular date) and
/// scoring it would make every identify touching it expensive; real
/// duplicates share several keys, so skipping one loses little.
const BLOCK_SCORED_MAX: usize = 100;
/// Review candidates recorded per matching pass, best first: a person has a
/// handful of duplicates, not hundreds, and a reviewer cannot use more.
const CANDIDATES_PER_PASS_MAX: u64 = 10;

/// Who caused a matching pass, for the journal.
pub struct Cause<'a> {
    pub at: UnixMillis,
    pub message_id: &'a str,
}

/// What a matching pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MatchReport {
    /// Profiles merged away by automatic matches.
    pub merged_away: Vec<ProfileId>,
    pub candidates_recorded: u64,
}

pub fn fields_of(record: &ProfileRecord) -> Result<MatchFields, StoreError> {
    let traits = record
        .trait_views()?
        .into_iter()
        .map(|view| (view.name, view.value))
        .collect();
    let emails = record
        .identifiers
        .iter()
        .filter(|entry| entry.kind == "email")
        .map(|entry| entry.value.as_str());
    Ok(MatchFields::from_traits(&traits).with_emails(emails))
}

/// Moves a profile's entries in the blocking index from the keys of
/// `before` to those of `after`.
pub fn reindex(
    writes: &mut CallWrites<'_, '_>,
    id: ProfileId,
    before: &MatchFields,
    after: &MatchFields,
) -> Result<(), StoreError> {
    let old: BTreeSet<String> = blocking_keys(before).into_iter().collect();
    let new: BTreeSet<String> = blocking_keys(after).into_iter().collect();
    for block in old.difference(&new) {
        let key = keys::fuzzy_block(block);
        let mut members = block_members(writes, &key)?;
        members.retain(|member| *member != id);
        if members.is_empty() {
            writes.remove(key);
        } else {
            writes.insert(key, keys::encode_ids(&members));
        }
    }
    for block in new.difference(&old) {
        let key = keys::fuzzy_block(block);
        let mut members = block_members(writes, &key)?;
        // Past the cap a block is skipped by matching anyway; growing it
        // further would only make every write to it slower.
        if !members.contains(&id) && members.len() <= BLOCK_SCORED_MAX {
            members.push(id);
            writes.insert(key, keys::encode_ids(&members));
        }
    }
    recount_names(writes, id, after)?;
    Ok(())
}

/// Moves the profile's entries in the name counts to the names of
/// `fields`. What it was counted under is read back rather than taken from
/// the profile's previous fields: those may predate the counts.
fn recount_names(
    writes: &mut CallWrites<'_, '_>,
    id: ProfileId,
    fields: &MatchFields,
) -> Result<(), StoreError> {
    let marker = keys::fuzzy_counted_names(id);
    let counted: Option<Vec<String>> = writes.get(&marker)?.map(|bytes| {
        String::from_utf8_lossy(&bytes)
            .split('\n')
            .map(str::to_owned)
            .collect()
    });
    let wanted: Option<Vec<String>> = name_count_keys(fields).map(Vec::from);
    if counted == wanted {
        return Ok(());
    }
    // The empty name counts every profile with both names.
    for name in counted
        .iter()
        .flatten()
        .map(String::as_str)
        .chain(counted.as_ref().map(|_| ""))
    {
        add_to_name_count(writes, name, -1)?;
    }
    for name in wanted
        .iter()
        .flatten()
        .map(String::as_str)
        .chain(wanted.as_ref().map(|_| ""))
    {
        add_to_name_count(writes, name, 1)?;
    }
    match wanted {
        // Names are normalized words: they hold no newline.
        Some(names) => writes.insert(marker, names.join("\n").into_bytes()),
        None => writes.remove(marker),
    }
    Ok(())
}

/// A count that reaches zero is removed, so an erased person's name does
/// not stay behind as a key.
fn add_to_name_count(
    writes: &mut CallWrites<'_, '_>,
    name_key: &str,
    delta: i64,
) -> Result<(), StoreError> {
    let key = keys::fuzzy_name_count(name_key);
    // Counts only fall for names a profile was counted under, so this
    // saturates only if the store was edited by hand.
    let count = name_count(writes, &key)?.saturating_add_signed(delta);
    if count == 0 {
        writes.remove(key);
    } else {
        writes.insert(key, count.to_be_bytes().to_vec());
    }
    Ok(())
}

fn name_count(writes: &CallWrites<'_, '_>, key: &[u8]) -> Result<u64, StoreError> {
    Ok(writes
        .get(key)?
        .and_then(|bytes| keys::decode_u64(&bytes))
        .unwrap_or(0))
}

/// How common the profile's full name is among stored profiles; infinite
/// (never rare) without both names.
fn name_holders_expected(
    writes: &CallWrites<'_, '_>,
    fields: &MatchFields,
) -> Result<f64, StoreError> {
    let Some([given, last]) = name_count_keys(fields) else {
        return Ok(f64::INFINITY);
    };
    let counts = NameCounts {
        profiles: name_count(writes, &keys::fuzzy_name_count(""))?,
        given: name_count(writes, &keys::fuzzy_name_count(&given))?,
        last: name_count(writes, &keys::fuzzy_name_count(&last))?,
    };
    Ok(counts.holders_expected())
}

fn block_members(writes: &CallWrites<'_, '_>, key: &[u8]) -> Result<Vec<ProfileId>, StoreError> {
    Ok(writes
        .get(key)?
        .map(|bytes| keys::decode_ids(&bytes))
        .unwrap_or_default())
}

/// Compares a profile with every profile sharing a blocking key: merges
/// corroborated matches (oldest survives, merge protection applies) and
/// records the others above the review threshold as candidates. Returns the
/// surviving profile and its record.
pub fn match_profile(
    writes: &mut CallWrites<'_, '_>,
    rules: &MergeRules,
    cause: &Cause<'_>,
    id: ProfileId,
    record: ProfileRecord,
    fields: &MatchFields,
) -> Result<(ProfileId, ProfileRecord, MatchReport), StoreError> {
    let mut report = MatchReport::default();
    let Some(thresholds) = rules.fuzzy_thresholds().copied() else {
        return Ok((id, record, report));
    };
    let mut others = BTreeSet::new();
    for block in blocking_keys(fields) {
        let members = block_members(writes, &keys::fuzzy_block(&block))?;
        // A huge block means the key is not selective (a default birthday,
        // a placeholder postcode); scoring it would make matching quadratic.
        if members.len() > BLOCK_SCORED_MAX {
            continue;
        }
        others.extend(members.into_iter().filter(|other| *other != id));
    }

    let mut scored = Vec::new();
    for other in others {
        if writes.get(&keys::rejection(id, other))?.is_some() {
            continue;
        }
        let Some(bytes) = writes.get(&keys::profile(other))? else {
            continue;
        };
        let other_record = ProfileRecord::for_reading(&bytes)?;
        let other_fields = fields_of(&other_record)?;
        let mut match_score = score(fields, &other_fields);
        if match_score.names_and_birthday_exact() {
            // The commoner reading of the name counts: for swapped names
            // one side's given name is really a family name.
            let holders = name_holders_expected(writes, fields)?
                .max(name_holders_expected(writes, &other_fields)?);
            match_score = match_score.with_name_frequency(holders);
        }
        if refused_weak_link(&record, id, &other_record, other) {
            match_score = match_score.with_refused_link();
        }
        let decision = decide(&match_score, &thresholds);
        if decision != MatchDecision::NoMatch {
            scored.push((other, match_score, decision));
        }
    }
    scored.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));

    let (mut current_id, mut current) = (id, record);
    for (other, match_score, decision) in scored {
        // An earlier merge in this pass may have absorbed it.
        let other = follow_alias(writes, other)?;
        if other == current_id {
            continue;
        }
        let Some(bytes) = writes.get(&keys::profile(other))? else {
            continue;
        };
        let other_record = ProfileRecord::from_bytes(&bytes)?;
        if decision == MatchDecision::AutoMerge {
            let ours = known(writes, current_id, &current)?;
            let theirs = known(writes, other, &other_record)?;
            if merge_allowed(rules, &ours, &theirs).is_ok() {
                let reason = format!("fuzzy match, score {:.3}", match_score.score);
                let (survivor, merged, gone) = merge_pair(
                    writes,
                    cause,
                    (current_id, current),
                    (other, other_record),
                    reason,
                )?;
                current_id = survivor;
                current = merged;
                report.merged_away.push(gone);
                continue;
            }
        }
        if report.candidates_recorded >= CANDIDATES_PER_PASS_MAX
            || ours_separated(writes, &current, other)?
        {
            continue;
        }
        record_candidate(writes, current_id, other, &match_score, cause.at)?;
        report.candidates_recorded += 1;
    }
    Ok((current_id, current, report))
}

/// Merges two whole profiles (the older survives), keeps the blocking index
/// right, and journals it. Returns the survivor, its record and the id that
/// became an alias.
pub fn merge_pair(
    writes: &mut CallWrites<'_, '_>,
    cause: &Cause<'_>,
    first: (ProfileId, ProfileRecord),
    second: (ProfileId, ProfileRecord),
    reason: String,
) -> Result<(ProfileId, ProfileRecord, ProfileId), StoreError> {
    let ((keep, mut kept), (gone, gone_record)) = if first.0 < second.0 {
        (first, second)
    } else {
        (second, first)
    };
    let kept_before = fields_of(&kept)?;
    let gone_fields = fields_of(&gone_record)?;
    let identifiers: Vec<IdentifierRef> = kept
        .identifiers
        .iter()
        .chain(&gone_record.identifiers)
        .map(|entry| IdentifierRef::of(&entry.to_identifier()))
        .collect();
    absorb(writes, keep, &mut kept, gone, gone_record)?;
    kept.journal.push(JournalEntry {
        at_ms: cause.at.0,
        message_id: cause.message_id.to_owned(),
        other_profiles: vec![gone.0],
        kind: JOURNAL_MERGE,
        identifiers,
        reason,
        weak_link: false,
    });
    reindex(writes, gone, &gone_fields, &MatchFields::default())?;
    reindex(writes, keep, &kept_before, &fields_of(&kept)?)?;
    writes.remove(keys::candidate(keep, gone));
    Ok((keep, kept, gone))
}

pub fn record_rejection(
    writes: &mut CallWrites<'_, '_>,
    first: ProfileId,
    second: ProfileId,
    cause: &Cause<'_>,
) {
    let rejection = RejectionRecord {
        at_ms: cause.at.0,
        message_id: cause.message_id.to_owned(),
    };
    writes.insert(keys::rejection(first, second), rejection.encode_to_vec());
    writes.remove(keys::candidate(first, second));
}

fn record_candidate(
    writes: &mut CallWrites<'_, '_>,
    first: ProfileId,
    second: ProfileId,
    match_score: &MatchScore,
    found_at: UnixMillis,
) -> Result<(), StoreError> {
    let key = keys::candidate(first, second);
    let found_at_ms = match writes.get(&key)? {
        Some(bytes) => decode::<CandidateRecord>(&bytes, "candidate")?.found_at_ms,
        None => found_at.0,
    };
    let candidate = CandidateRecord {
        score: match_score.score,
        evidence: match_score
            .evidence
            .iter()
            .map(|evidence| EvidenceRecord {
                field: evidence.field.to_owned(),
                similarity: evidence.similarity,
                weight: evidence.weight,
            })
            .collect(),
        found_at_ms,
    };
    writes.insert(key, candidate.encode_to_vec());
    Ok(())
}

/// Whether either profile's journal holds a weak link refused between them
/// (by their current ids or ids merged into them since).
fn refused_weak_link(
    first: &ProfileRecord,
    first_id: ProfileId,
    second: &ProfileRecord,
    second_id: ProfileId,
) -> bool {
    let names = |record: &ProfileRecord, id: ProfileId| {
        let mut ids: BTreeSet<u64> = record.merged_ids.iter().copied().collect();
        ids.insert(id.0);
        ids
    };
    let (first_ids, second_ids) = (names(first, first_id), names(second, second_id));
    let refers_to = |record: &ProfileRecord, others: &BTreeSet<u64>| {
        record.journal.iter().any(|entry| {
            entry.weak_link && entry.other_profiles.iter().any(|id| others.contains(id))
        })
    };
    refers_to(first, &second_ids) || refers_to(second, &first_ids)
}

fn ours_separated(
    writes: &CallWrites<'_, '_>,
    record: &ProfileRecord,
    other: ProfileId,
) -> Result<bool, StoreError> {
    Ok(live_separations(writes, record)?.contains(&other))
}

pub fn known(
    writes: &CallWrites<'_, '_>,
    id: ProfileId,
    record: &ProfileRecord,
) -> Result<KnownProfile, StoreError> {
    Ok(KnownProfile {
        id,
        identifiers: record
            .identifiers
            .iter()
            .map(IdentifierEntry::to_identifier)
            .collect(),
        separated_from: live_separations(writes, record)?,
    })
}

/// Loads a live profile for review, following aliases.
pub fn load_live(
    writes: &CallWrites<'_, '_>,
    id: ProfileId,
) -> Result<(ProfileId, ProfileRecord), StoreError> {
    let live = follow_alias(writes, id)?;
    if writes.get(&keys::profile(live))?.is_none() {
        return Err(StoreError::NotFound(format!("profile {id} does not exist")));
    }
    Ok((live, load_profile(writes, live)?))
}

/// A reviewer's verdict on a pending candidate.
pub fn review(
    context: &mut JobContext<'_, '_, '_>,
    review: &CandidateReview,
) -> Result<ReviewOutcome, StoreError> {
    let writes = &mut *context.writes;
    let candidate_key = keys::candidate(review.first, review.second);
    if writes.get(&candidate_key)?.is_none() {
        return Err(StoreError::NotFound(format!(
            "no pending match candidate {}:{}",
            review.first.min(review.second),
            review.first.max(review.second)
        )));
    }
    let (first, first_record) = load_live(writes, review.first)?;
    let (second, second_record) = load_live(writes, review.second)?;
    let cause = Cause {
        at: review.provenance.received_at,
        message_id: &review.provenance.message_id,
    };
    writes.remove(candidate_key);
    if first == second {
        return Err(StoreError::Precondition(
            "the two profiles have been merged already".to_owned(),
        ));
    }
    if !review.accept {
        record_rejection(writes, first, second, &cause);
        return Ok(ReviewOutcome::Rejected);
    }
    let ours = known(writes, first, &first_record)?;
    let theirs = known(writes, second, &second_record)?;
    merge_allowed(context.rules, &ours, &theirs)
        .map_err(|reason| StoreError::Precondition(format!("merge protection: {reason}")))?;
    let reason = format!("match candidate accepted by {}", review.provenance.source);
    let (survivor, record, absorbed) = merge_pair(
        writes,
        &cause,
        (first, first_record),
        (second, second_record),
        reason,
    )?;
    writes.insert(keys::profile(survivor), record.into_bytes());
    Ok(ReviewOutcome::Merged { survivor, absorbed })
}

/// The batch pass: matches each live, matchable profile of `ids`.
pub fn match_stored(
    context: &mut JobContext<'_, '_, '_>,
    ids: &[ProfileId],
    at: UnixMillis,
) -> Result<MatchPassOutcome, StoreError> {
    let mut outcome = MatchPassOutcome::default();
    let cause = Cause { at, message_id: "" };
    for &id in ids {
        let writes = &mut *context.writes;
        let Some(bytes) = writes.get(&keys::profile(id))? else {
            continue;
        };
        let record = ProfileRecord::from_bytes(&bytes)?;
        let fields = fields_of(&record)?;
        outcome.profiles_checked += 1;
        if !fields.is_matchable() {
            continue;
        }
        // Profiles stored before matching was enabled have no index entries yet.
        reindex(writes, id, &MatchFields::default(), &fields)?;
        let (survivor, record, report) =
            match_profile(writes, context.rules, &cause, id, record, &fields)?;
        outcome.candidates += report.candidates_recorded;
        if !report.merged_away.is_empty() {
            outcome.merges += report.merged_away.len() as u64;
            writes.insert(keys::profile(survivor), record.into_bytes());
        }
    }
    Ok(outcome)
}
