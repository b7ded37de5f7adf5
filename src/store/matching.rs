//! Fuzzy matching inside the store: keeping the blocking-key index, the
//! profiles' older variants and the name counts in step with profiles'
//! traits; scoring the profiles that share a key with a changed one;
//! merging what the model says is one person; and keeping the review
//! queue to one fresh candidate per live pair. The rules themselves live
//! in `identity::fuzzy`; the model is estimated in `match_training`.

use std::collections::{BTreeSet, HashMap};

use prost::Message;

use super::StoreError;
use super::engine::Transaction;
use super::job::JobContext;
use super::keys::{self, IndexKeys};
use super::merge::absorb;
use super::overlay::CallWrites;
use super::profiles::{follow_alias, live_separations, load_profile};
use super::recheck::NearMisses;
use super::records::{
    CandidateRecord, EvidenceRecord, IdentifierEntry, IdentifierRef, JOURNAL_MERGE, JournalEntry,
    ProfileRecord, RejectionRecord, decode,
};
use crate::identity::fuzzy::{
    MatchDecision, MatchFields, MatchProfile, MatchScore, NameFrequencies, NameFrequency,
    blocking_keys, decide, first_name_count_key, last_name_count_key, name_count_keys,
    score_profiles,
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
pub const BLOCK_SCORED_MAX: usize = 100;
/// Profiles scored per matching round. Beyond it, those whose shared
/// blocking keys tell the most are scored (`block_selectivity`): a
/// duplicate shares every key its records agree on (a typo or a move
/// breaks a few of seven rules), a stranger usually one (a birthday, a
/// surname in a city), and a key few profiles hold says more than one
/// shared by a hundred. This keeps the work per identify flat as blocks
/// fill with a growing population, while a small store, where blocks hold
/// a few profiles, scores everything.
const SCORED_PER_ROUND_MAX: usize = 8;
/// Review candidates recorded per matching pass, best first: a person has a
/// handful of duplicates, not hundreds, and a reviewer cannot use more.
const CANDIDATES_PER_PASS_MAX: u64 = 10;
/// Rounds of matching per pass: a merge changes the survivor's fields, so
/// it is matched again, and a chain of duplicates joins in one pass.
const MATCH_ROUNDS_MAX: usize = 3;
/// Evidence, in bits, that a weak link the call asked for and merge
/// protection refused adds: a device the two shared is something strangers
/// rarely have in common, but it may be a shared family tablet.
const REFUSED_LINK_BITS: f64 = 5.0;
/// How the refused link shows in a candidate's evidence.
const REFUSED_LINK_FIELD: &str = "refused_link";

/// What sharing a block of `members` profiles says about a pair, in bits:
/// how much rarer the shared key is than the largest block scored. Two
/// profiles alone in a block share something nearly nobody else has; a
/// stranger in a full birthday block shares what a hundred do.
fn block_selectivity(members: usize) -> f64 {
    ((BLOCK_SCORED_MAX + 1) as f64 / members.max(1) as f64).log2()
}

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

/// The fields a profile's traits and emails hold now.
pub fn current_fields(record: &ProfileRecord) -> Result<MatchFields, StoreError> {
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

/// The index keys matching reads when a stored profile is merged or
/// matched again, also once it holds `new_emails`: its blocks and the
/// counts of its names. Read from the transaction, for a read ahead; a
/// profile that cannot be read yields none (the call itself reports it).
pub fn keys_read(
    reads: &dyn Transaction,
    index: &IndexKeys,
    id: ProfileId,
    new_emails: &[&str],
) -> Result<Vec<Vec<u8>>, StoreError> {
    let Some(bytes) = reads.get(&keys::profile(id))? else {
        return Ok(Vec::new());
    };
    let Ok(record) = ProfileRecord::for_reading(&bytes) else {
        return Ok(Vec::new());
    };
    let stored = match reads.get(&keys::fuzzy_variants(id))? {
        Some(bytes) => decode_profile(&bytes).unwrap_or_default(),
        None => MatchProfile::default(),
    };
    let Ok(current) = current_fields(&record) else {
        return Ok(Vec::new());
    };
    let names = name_count_keys(&current)
        .into_iter()
        .flatten()
        .map(|name| keys::fuzzy_name_count(index, &name));
    let mut blocks = Vec::new();
    if !new_emails.is_empty() {
        let emails = current.emails().iter().map(String::as_str);
        let with_new = current
            .clone()
            .with_emails(emails.chain(new_emails.iter().copied()));
        blocks.extend(blocking_keys(&MatchProfile::new(with_new, [])));
    }
    blocks.extend(blocking_keys(&MatchProfile::new(
        current,
        stored.variants().iter().cloned(),
    )));
    Ok(blocks
        .iter()
        .map(|block| keys::fuzzy_block(index, block))
        .chain(names)
        .collect())
}

/// Every variant a stored profile is matched on: its current fields, then
/// the older ones it was known by.
pub fn fields_of(
    writes: &CallWrites<'_, '_>,
    id: ProfileId,
    record: &ProfileRecord,
) -> Result<MatchProfile, StoreError> {
    let stored = stored_profile(writes, id)?.unwrap_or_default();
    Ok(MatchProfile::new(
        current_fields(record)?,
        stored.variants().iter().cloned(),
    ))
}

/// The matching fields kept beside a profile, if matching has indexed it.
fn stored_profile(
    writes: &CallWrites<'_, '_>,
    id: ProfileId,
) -> Result<Option<MatchProfile>, StoreError> {
    writes
        .get(&keys::fuzzy_variants(id))?
        .map(|bytes| decode_profile(&bytes))
        .transpose()
}

pub fn decode_profile(bytes: &[u8]) -> Result<MatchProfile, StoreError> {
    MatchProfile::decode(bytes).map_err(|error| StoreError::Corrupt {
        what: "match variants",
        reason: error.to_string(),
    })
}

/// The variants of a profile after a call changed it: its new current
/// fields, then what it was known by before (the previous current fields
/// first), then the variants of profiles it absorbed.
pub fn fields_after_change(
    before: &MatchProfile,
    record: &ProfileRecord,
    absorbed: Vec<MatchFields>,
) -> Result<MatchProfile, StoreError> {
    Ok(MatchProfile::new(
        current_fields(record)?,
        before.variants().iter().cloned().chain(absorbed),
    ))
}

/// Moves a profile's entries in the blocking index from the keys of
/// `before` to those of `after`, and stores `after`'s older variants.
pub fn reindex(
    writes: &mut CallWrites<'_, '_>,
    id: ProfileId,
    before: &MatchProfile,
    after: &MatchProfile,
) -> Result<(), StoreError> {
    let old: BTreeSet<String> = blocking_keys(before).into_iter().collect();
    let new: BTreeSet<String> = blocking_keys(after).into_iter().collect();
    let moved: Vec<Vec<u8>> = old
        .symmetric_difference(&new)
        .map(|block| keys::fuzzy_block(writes.index(), block))
        .chain(
            after
                .current()
                .and_then(name_count_keys)
                .into_iter()
                .flatten()
                .map(|name| keys::fuzzy_name_count(writes.index(), &name)),
        )
        .collect();
    writes.read_ahead(&moved)?;
    for block in old.difference(&new) {
        let key = keys::fuzzy_block(writes.index(), block);
        let mut members = block_members(writes, &key)?;
        members.retain(|member| *member != id);
        if members.is_empty() {
            writes.remove(key);
        } else {
            writes.insert(key, keys::encode_ids(&members));
        }
    }
    for block in new.difference(&old) {
        let key = keys::fuzzy_block(writes.index(), block);
        let mut members = block_members(writes, &key)?;
        // Past the cap a block is skipped by matching anyway; growing it
        // further would only make every write to it slower.
        if !members.contains(&id) && members.len() <= BLOCK_SCORED_MAX {
            members.push(id);
            writes.insert(key, keys::encode_ids(&members));
        }
    }
    if after.is_empty() {
        writes.remove(keys::fuzzy_variants(id));
    } else if *before != *after || writes.get(&keys::fuzzy_variants(id))?.is_none() {
        writes.insert(keys::fuzzy_variants(id), after.encode());
    }
    recount_names(writes, id, after.current())?;
    Ok(())
}

/// Removes every trace of a profile from matching: index entries, older
/// variants, name counts and its pending candidates. For a profile merged
/// away or erased.
pub fn forget(
    writes: &mut CallWrites<'_, '_>,
    id: ProfileId,
    fields: &MatchProfile,
) -> Result<(), StoreError> {
    reindex(writes, id, fields, &MatchProfile::default())?;
    drop_candidates_of(writes, id)?;
    writes.remove(keys::fuzzy_recheck(id));
    Ok(())
}

/// Moves the profile's entries in the name counts to the names of
/// `fields`. What it was counted under is read back rather than taken from
/// the profile's previous fields: those may predate the counts.
fn recount_names(
    writes: &mut CallWrites<'_, '_>,
    id: ProfileId,
    fields: Option<&MatchFields>,
) -> Result<(), StoreError> {
    let marker = keys::fuzzy_counted_names(id);
    let counted: Option<Vec<String>> = writes.get(&marker)?.map(|bytes| {
        String::from_utf8_lossy(&bytes)
            .split('\n')
            .map(str::to_owned)
            .collect()
    });
    let wanted: Option<Vec<String>> = fields.and_then(name_count_keys).map(Vec::from);
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
    let key = keys::fuzzy_name_count(writes.index(), name_key);
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

/// Profiles counted with both names: the population matching sees.
pub fn population(writes: &CallWrites<'_, '_>) -> Result<u64, StoreError> {
    name_count(writes, keys::FUZZY_POPULATION)
}

/// Name counts read during one matching round: the profiles of a block
/// mostly share the names that brought them together, so each is read once.
type NameCounts = std::cell::RefCell<HashMap<String, u64>>;

/// How common the names are that two variants share exactly.
fn name_frequencies(
    writes: &CallWrites<'_, '_>,
    counts: &NameCounts,
    population: u64,
    a: &MatchFields,
    b: &MatchFields,
) -> Result<NameFrequencies, StoreError> {
    let frequency = |key: String| -> Result<NameFrequency, StoreError> {
        let known = counts.borrow().get(&key).copied();
        let holders = match known {
            Some(holders) => holders,
            None => {
                let holders = name_count(writes, &keys::fuzzy_name_count(writes.index(), &key))?;
                counts.borrow_mut().insert(key, holders);
                holders
            }
        };
        Ok(NameFrequency {
            holders,
            profiles: population,
        })
    };
    fn shared<'a>(x: Option<&'a str>, y: Option<&str>) -> Option<&'a str> {
        x.filter(|x| Some(*x) == y)
    }
    Ok(NameFrequencies {
        first_name: shared(a.first_name(), b.first_name())
            .map(|name| frequency(first_name_count_key(name)))
            .transpose()?,
        last_name: shared(a.last_name(), b.last_name())
            .map(|name| frequency(last_name_count_key(name)))
            .transpose()?,
    })
}

fn block_members(writes: &CallWrites<'_, '_>, key: &[u8]) -> Result<Vec<ProfileId>, StoreError> {
    Ok(writes
        .get(key)?
        .map(|bytes| keys::decode_ids(&bytes))
        .unwrap_or_default())
}

/// Compares a profile with every profile sharing a blocking key (and every
/// profile it has a pending candidate with): merges those the model says
/// are one person (oldest survives, merge protection applies) and records
/// the others above the review threshold as candidates, replacing the
/// profile's earlier candidates. Returns the surviving profile and its
/// record.
pub fn match_profile(
    writes: &mut CallWrites<'_, '_>,
    rules: &MergeRules,
    cause: &Cause<'_>,
    id: ProfileId,
    record: ProfileRecord,
    fields: &MatchProfile,
) -> Result<(ProfileId, ProfileRecord, MatchReport), StoreError> {
    let mut report = MatchReport::default();
    let (mut current_id, mut current) = (id, record);
    let mut current_fields = fields.clone();
    for _ in 0..MATCH_ROUNDS_MAX {
        let merged_before = report.merged_away.len();
        (current_id, current) = match_round(
            writes,
            rules,
            cause,
            (current_id, current),
            &current_fields,
            &mut report,
        )?;
        if report.merged_away.len() == merged_before {
            break;
        }
        current_fields = fields_of(writes, current_id, &current)?;
    }
    Ok((current_id, current, report))
}

fn match_round(
    writes: &mut CallWrites<'_, '_>,
    rules: &MergeRules,
    cause: &Cause<'_>,
    (id, record): (ProfileId, ProfileRecord),
    fields: &MatchProfile,
    report: &mut MatchReport,
) -> Result<(ProfileId, ProfileRecord), StoreError> {
    // Earlier candidates are re-scored below, or dropped.
    let partners = drop_candidates_of(writes, id)?;
    let Some(thresholds) = rules.fuzzy_thresholds().copied() else {
        return Ok((id, record));
    };
    let model = rules.match_model();
    let population = population(writes)?;
    if rules.estimate_due(population, model.population) {
        rules.request_estimate();
    }

    // Earlier candidates are always re-scored.
    let mut shared_keys: HashMap<ProfileId, f64> = HashMap::new();
    let mut earlier_partners = BTreeSet::new();
    for partner in partners {
        let partner = follow_alias(writes, partner)?;
        shared_keys.insert(partner, f64::INFINITY);
        earlier_partners.insert(partner);
    }
    let blocks: Vec<Vec<u8>> = blocking_keys(fields)
        .iter()
        .map(|block| keys::fuzzy_block(writes.index(), block))
        .collect();
    writes.read_ahead(&blocks)?;
    for block in &blocks {
        let members = block_members(writes, block)?;
        // A huge block means the key is not selective (a default birthday,
        // a placeholder postcode); scoring it would make matching quadratic.
        if members.len() > BLOCK_SCORED_MAX {
            continue;
        }
        let selectivity = block_selectivity(members.len());
        for member in members {
            *shared_keys.entry(member).or_default() += selectivity;
        }
    }
    shared_keys.remove(&id);
    let mut others: Vec<(ProfileId, f64)> = shared_keys.into_iter().collect();
    // Most telling shared keys first; between equals the older profile, so
    // the choice does not depend on hashing.
    others.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    others.truncate(SCORED_PER_ROUND_MAX);
    let others: BTreeSet<ProfileId> = others.into_iter().map(|(other, _)| other).collect();

    let about_others: Vec<Vec<u8>> = others
        .iter()
        .flat_map(|&other| {
            [
                keys::rejection(id, other).to_vec(),
                keys::fuzzy_variants(other),
            ]
        })
        .collect();
    writes.read_ahead(&about_others)?;
    let name_counts = NameCounts::default();
    let mut scored = Vec::new();
    let mut near_misses = NearMisses::default();
    for other in others {
        if writes.get(&keys::rejection(id, other))?.is_some() {
            continue;
        }
        let other_fields = match stored_profile(writes, other)? {
            Some(fields) => fields,
            // Indexed before its fields were kept beside it.
            None => match writes.get(&keys::profile(other))? {
                Some(bytes) => {
                    let other_record = ProfileRecord::for_reading(&bytes)?;
                    fields_of(writes, other, &other_record)?
                }
                None => continue,
            },
        };
        let frequencies = |a: &MatchFields, b: &MatchFields| {
            // An unreadable count only costs the pair its frequency weight.
            name_frequencies(writes, &name_counts, population, a, b).unwrap_or_default()
        };
        let Some(mut match_score) =
            score_profiles(&model, fields, &other_fields, &frequencies, population)
        else {
            continue;
        };
        // The journals are read only where a refused link could change the
        // decision: most pairs in a block are strangers.
        let with_link = match_score
            .clone()
            .with_adjustment(REFUSED_LINK_FIELD, REFUSED_LINK_BITS);
        if decide(&with_link, &thresholds) != decide(&match_score, &thresholds) {
            let Some(bytes) = writes.get(&keys::profile(other))? else {
                continue;
            };
            let other_record = ProfileRecord::for_reading(&bytes)?;
            if refused_weak_link(&record, id, &other_record, other) {
                match_score = with_link;
            }
        }
        let decision = decide(&match_score, &thresholds);
        if decision != MatchDecision::NoMatch {
            scored.push((other, match_score, decision));
        } else {
            near_misses.offer(other, &match_score);
        }
    }
    scored.sort_by(|a, b| b.1.bits.total_cmp(&a.1.bits));
    near_misses.store(writes, id)?;

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
                let reason = format!(
                    "fuzzy match, probability {:.4}, {:.1} bits, model {}",
                    match_score.probability, match_score.bits, match_score.model_version
                );
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
        // Only a pair newly left undecided says the model lags the data.
        if !earlier_partners.contains(&other) {
            rules.note_candidates(1);
        }
        report.candidates_recorded += 1;
    }
    Ok((current_id, current))
}

/// Merges two whole profiles (the older survives), keeps the blocking index
/// and the review queue right, and journals it. Returns the survivor, its
/// record and the id that became an alias.
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
    let kept_before = fields_of(writes, keep, &kept)?;
    let gone_fields = fields_of(writes, gone, &gone_record)?;
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
    forget(writes, gone, &gone_fields)?;
    // The survivor's candidates were scored against what it was; the
    // next matching of it proposes them again if they still hold.
    drop_candidates_of(writes, keep)?;
    let kept_after = fields_after_change(&kept_before, &kept, gone_fields.variants().to_vec())?;
    reindex(writes, keep, &kept_before, &kept_after)?;
    Ok((keep, kept, gone))
}

pub fn record_rejection(
    writes: &mut CallWrites<'_, '_>,
    first: ProfileId,
    second: ProfileId,
    cause: &Cause<'_>,
) -> Result<(), StoreError> {
    let rejection = RejectionRecord {
        at_ms: cause.at.0,
        message_id: cause.message_id.to_owned(),
    };
    writes.insert(keys::rejection(first, second), rejection.encode_to_vec());
    for (id, other) in [(first, second), (second, first)] {
        let list = keys::fuzzy_rejections_of(id);
        let mut rejected = ids_under(writes, &list)?;
        if !rejected.contains(&other) {
            rejected.push(other);
            set_ids_under(writes, list, &rejected);
        }
    }
    remove_candidate(writes, first, second)
}

/// Removes every rejection naming `id`; returns how many there were.
pub fn drop_rejections_of(
    writes: &mut CallWrites<'_, '_>,
    id: ProfileId,
) -> Result<u64, StoreError> {
    let list = keys::fuzzy_rejections_of(id);
    let rejected = ids_under(writes, &list)?;
    for &other in &rejected {
        writes.remove(keys::rejection(id, other).to_vec());
        let theirs = keys::fuzzy_rejections_of(other);
        let mut their_list = ids_under(writes, &theirs)?;
        their_list.retain(|partner| *partner != id);
        set_ids_under(writes, theirs, &their_list);
    }
    writes.remove(list);
    Ok(rejected.len() as u64)
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
    let mut evidence: Vec<EvidenceRecord> = match_score
        .evidence
        .iter()
        .map(|evidence| EvidenceRecord {
            field: evidence.field.name().to_owned(),
            similarity: level_strength(evidence.field, evidence.level),
            weight: evidence.bits,
            level: evidence.level.to_owned(),
        })
        .collect();
    for &(name, bits) in &match_score.adjustments {
        evidence.push(EvidenceRecord {
            field: name.to_owned(),
            similarity: 0.0,
            weight: bits,
            level: String::new(),
        });
    }
    let candidate = CandidateRecord {
        score: match_score.probability,
        evidence,
        found_at_ms,
        model_version: match_score.model_version,
    };
    writes.insert(key, candidate.encode_to_vec());
    add_partner(writes, first, second)?;
    add_partner(writes, second, first)?;
    Ok(())
}

/// 1 for a field's strongest level down to 0 for `else`.
fn level_strength(field: crate::identity::fuzzy::Field, level: &str) -> f64 {
    let levels = field.levels();
    let last = levels.len().saturating_sub(1).max(1);
    let index = levels
        .iter()
        .position(|name| *name == level)
        .unwrap_or(last);
    1.0 - index as f64 / last as f64
}

fn partners_of(writes: &CallWrites<'_, '_>, id: ProfileId) -> Result<Vec<ProfileId>, StoreError> {
    ids_under(writes, &keys::fuzzy_candidates_of(id))
}

fn set_partners(writes: &mut CallWrites<'_, '_>, id: ProfileId, partners: &[ProfileId]) {
    set_ids_under(writes, keys::fuzzy_candidates_of(id), partners);
}

fn ids_under(writes: &CallWrites<'_, '_>, key: &[u8]) -> Result<Vec<ProfileId>, StoreError> {
    Ok(writes
        .get(key)?
        .map(|bytes| keys::decode_ids(&bytes))
        .unwrap_or_default())
}

fn set_ids_under(writes: &mut CallWrites<'_, '_>, key: Vec<u8>, ids: &[ProfileId]) {
    if ids.is_empty() {
        writes.remove(key);
    } else {
        writes.insert(key, keys::encode_ids(ids));
    }
}

fn add_partner(
    writes: &mut CallWrites<'_, '_>,
    id: ProfileId,
    partner: ProfileId,
) -> Result<(), StoreError> {
    let mut partners = partners_of(writes, id)?;
    if !partners.contains(&partner) {
        partners.push(partner);
        set_partners(writes, id, &partners);
    }
    Ok(())
}

/// Removes one pending candidate, if there is one.
pub fn remove_candidate(
    writes: &mut CallWrites<'_, '_>,
    first: ProfileId,
    second: ProfileId,
) -> Result<(), StoreError> {
    writes.remove(keys::candidate(first, second));
    for (id, partner) in [(first, second), (second, first)] {
        let mut partners = partners_of(writes, id)?;
        let before = partners.len();
        partners.retain(|other| *other != partner);
        if partners.len() != before {
            set_partners(writes, id, &partners);
        }
    }
    Ok(())
}

/// Removes every pending candidate naming `id`; returns the other sides.
pub fn drop_candidates_of(
    writes: &mut CallWrites<'_, '_>,
    id: ProfileId,
) -> Result<Vec<ProfileId>, StoreError> {
    let partners = partners_of(writes, id)?;
    for &partner in &partners {
        remove_candidate(writes, id, partner)?;
    }
    writes.remove(keys::fuzzy_candidates_of(id));
    Ok(partners)
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

/// A reviewer's verdict on a pending candidate. An accepted pair merges,
/// and the merged profile is matched again: with both sides' values it may
/// now meet more of the person's records.
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
    remove_candidate(writes, review.first, review.second)?;
    if first == second {
        return Err(StoreError::Precondition(
            "the two profiles have been merged already".to_owned(),
        ));
    }
    if !review.accept {
        record_rejection(writes, first, second, &cause)?;
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
    let fields = fields_of(writes, survivor, &record)?;
    let (survivor, record, _) =
        match_profile(writes, context.rules, &cause, survivor, record, &fields)?;
    writes.insert(keys::profile(survivor), record.into_bytes());
    Ok(ReviewOutcome::Merged { survivor, absorbed })
}

/// The batch pass: matches each live, matchable profile of `ids` with the
/// current model, re-scoring its pending candidates.
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
        let fields = fields_of(writes, id, &record)?;
        outcome.profiles_checked += 1;
        if fields.is_empty() {
            continue;
        }
        // Profiles stored before matching was enabled have no index entries yet.
        reindex(writes, id, &MatchProfile::default(), &fields)?;
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
