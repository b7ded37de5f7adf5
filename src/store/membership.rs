//! Segment definitions and memberships.
//!
//! Each live profile's memberships are one record (`g` + profile id, segment
//! numbers only), rewritten in the same atomic batch as the change that
//! caused it, so a read right after an acknowledgement sees the new state.
//! Per segment, the members are kept in memory as compressed bitmaps, built
//! from those records at start-up and updated once a group is durable; they
//! answer counts and listings without touching the database.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, RwLock};

use prost::Message;
use roaring::RoaringTreemap;
use tokio::sync::broadcast;

use super::StoreError;
use super::engine::{Engine, Scan};
use super::keys;
use super::overlay::CallWrites;
use super::records::{EventRecord, MembershipRecord, ProfileRecord, SegmentRecord, decode};
use crate::model::{
    EventCounter, Membership, MembershipChange, MembershipRules, ProfileFacts, ProfileId,
    SegmentDefinition, SegmentNumber, SegmentScope, UnixMillis,
};

/// How many changes a watcher may fall behind before it is dropped.
const WATCH_BUFFER: usize = 16_384;

/// One segment's members, split by whether they are held out.
#[derive(Debug, Clone, Default)]
pub struct SegmentMembers {
    pub members: RoaringTreemap,
    pub holdout: RoaringTreemap,
}

/// The in-memory side of memberships: bitmaps per segment and the stream of
/// changes watchers subscribe to.
pub struct MembershipIndex {
    segments: RwLock<HashMap<SegmentNumber, SegmentMembers>>,
    changes: broadcast::Sender<MembershipChange>,
    /// On a shared database only: which profiles this server's own groups
    /// published and when, so that news of another server's change, read
    /// before a later local one was published, does not undo it.
    published: Option<Mutex<Published>>,
}

#[derive(Default)]
struct Published {
    sequence: u64,
    by_profile: HashMap<u64, u64>,
}

impl MembershipIndex {
    pub fn load(tree: &dyn Engine) -> Result<MembershipIndex, StoreError> {
        let shared = tree.shared();
        let mut segments: HashMap<SegmentNumber, SegmentMembers> = HashMap::new();
        for entry in tree.scan_prefix(&[keys::MEMBERSHIP]) {
            let (key, value) = entry?;
            let Some(profile) = keys::decode_u64(&key[1..]) else {
                continue;
            };
            let record: MembershipRecord = decode(&value, "membership")?;
            for number in record.members {
                segments.entry(number).or_default().members.insert(profile);
            }
            for number in record.holdout {
                segments.entry(number).or_default().holdout.insert(profile);
            }
        }
        let (changes, _) = broadcast::channel(WATCH_BUFFER);
        Ok(MembershipIndex {
            segments: RwLock::new(segments),
            changes,
            published: shared.then(Mutex::default),
        })
    }

    /// Applies the changes of a durable group and tells watchers.
    pub fn publish(&self, changes: Vec<MembershipChange>) {
        if changes.is_empty() {
            return;
        }
        if let Some(published) = &self.published
            && let Ok(mut published) = published.lock()
        {
            published.sequence += 1;
            let sequence = published.sequence;
            for change in &changes {
                published.by_profile.insert(change.profile.0, sequence);
            }
        }
        if let Ok(mut segments) = self.segments.write() {
            for change in &changes {
                let sets = segments.entry(change.segment).or_default();
                let set = if change.holdout {
                    &mut sets.holdout
                } else {
                    &mut sets.members
                };
                if change.entered {
                    set.insert(change.profile.0);
                } else {
                    set.remove(change.profile.0);
                }
            }
        }
        for change in changes {
            // No watcher is not an error.
            let _ = self.changes.send(change);
        }
    }

    /// Where local publishing stands: what [`MembershipIndex::reconcile`]
    /// compares against.
    pub fn mark(&self) -> u64 {
        self.published
            .as_ref()
            .and_then(|published| published.lock().ok().map(|p| p.sequence))
            .unwrap_or_default()
    }

    /// Brings one profile's bits to `held`, the memberships its record
    /// held when read after `mark`, and tells watchers what moved. `false`
    /// when this server published a change of the profile since `mark`:
    /// the record read may be older than that change, so the caller reads
    /// it again later.
    pub fn reconcile(
        &self,
        profile: ProfileId,
        held: &BTreeSet<Membership>,
        mark: u64,
        at: UnixMillis,
    ) -> bool {
        let Ok(mut segments) = self.segments.write() else {
            return true;
        };
        if let Some(published) = &self.published
            && let Ok(published) = published.lock()
            && published
                .by_profile
                .get(&profile.0)
                .is_some_and(|&sequence| sequence > mark)
        {
            return false;
        }
        let mut numbers: BTreeSet<SegmentNumber> = segments.keys().copied().collect();
        numbers.extend(held.iter().map(|membership| membership.segment));
        let mut changes = Vec::new();
        for number in numbers {
            let wanted = held
                .iter()
                .find(|membership| membership.segment == number)
                .map(|membership| membership.holdout);
            let sets = segments.entry(number).or_default();
            for (holdout, set) in [(false, &mut sets.members), (true, &mut sets.holdout)] {
                let want = wanted == Some(holdout);
                let has = set.contains(profile.0);
                if want == has {
                    continue;
                }
                if want {
                    set.insert(profile.0);
                } else {
                    set.remove(profile.0);
                }
                changes.push(MembershipChange {
                    segment: number,
                    profile,
                    entered: want,
                    holdout,
                    at,
                });
            }
        }
        drop(segments);
        for change in changes {
            let _ = self.changes.send(change);
        }
        true
    }

    /// Local publishing up to `mark` can no longer race a reconcile.
    pub fn forget_published_up_to(&self, mark: u64) {
        if let Some(published) = &self.published
            && let Ok(mut published) = published.lock()
        {
            published.by_profile.retain(|_, sequence| *sequence > mark);
        }
    }

    pub fn drop_segment(&self, number: SegmentNumber) {
        if let Ok(mut segments) = self.segments.write() {
            segments.remove(&number);
        }
    }

    /// A copy of a segment's members as of now (cheap: bitmaps compress).
    pub fn members(&self, number: SegmentNumber) -> SegmentMembers {
        self.segments
            .read()
            .ok()
            .and_then(|segments| segments.get(&number).cloned())
            .unwrap_or_default()
    }

    pub fn counts(&self, number: SegmentNumber) -> (u64, u64) {
        self.segments
            .read()
            .ok()
            .and_then(|segments| {
                segments
                    .get(&number)
                    .map(|sets| (sets.members.len(), sets.holdout.len()))
            })
            .unwrap_or_default()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<MembershipChange> {
        self.changes.subscribe()
    }
}

/// Re-evaluates the segments in `scope` for these profiles and rewrites
/// their membership records; changes are noted on `writes` for publishing
/// once durable. A profile that no longer exists (merged away, erased)
/// leaves every segment.
pub fn evaluate_profiles(
    writes: &mut CallWrites<'_, '_>,
    rules: &dyn MembershipRules,
    ids: &[ProfileId],
    scope: SegmentScope,
) -> Result<(), StoreError> {
    let known: BTreeSet<SegmentNumber> = rules.segments_in(SegmentScope::All).into_iter().collect();
    let considered: BTreeSet<SegmentNumber> = match scope {
        SegmentScope::All => known.clone(),
        other => rules.segments_in(other).into_iter().collect(),
    };
    let considered_list: Vec<SegmentNumber> = considered.iter().copied().collect();
    let at = rules.now();
    for &id in ids {
        let old = read_memberships(writes, id)?;
        let new: BTreeSet<Membership> = match writes.get(&keys::profile(id))? {
            None => BTreeSet::new(),
            Some(bytes) => {
                let record = ProfileRecord::for_reading(&bytes)?;
                let events = OverlayEvents { writes, id };
                let facts = profile_facts(id, &record, &events)?;
                let evaluated = rules.evaluate(&facts, &considered_list);
                old.iter()
                    .copied()
                    .filter(|m| known.contains(&m.segment) && !considered.contains(&m.segment))
                    .chain(evaluated)
                    .collect()
            }
        };
        if new == old {
            continue;
        }
        for left in old.difference(&new) {
            writes.note_membership_change(change(left, id, false, at));
        }
        for entered in new.difference(&old) {
            writes.note_membership_change(change(entered, id, true, at));
        }
        write_memberships(writes, id, &new);
    }
    Ok(())
}

fn change(
    membership: &Membership,
    profile: ProfileId,
    entered: bool,
    at: UnixMillis,
) -> MembershipChange {
    MembershipChange {
        segment: membership.segment,
        profile,
        entered,
        holdout: membership.holdout,
        at,
    }
}

pub fn read_memberships(
    writes: &CallWrites<'_, '_>,
    id: ProfileId,
) -> Result<BTreeSet<Membership>, StoreError> {
    match writes.get(&keys::membership(id))? {
        Some(bytes) => Ok(memberships_of_record(&decode(&bytes, "membership")?)),
        None => Ok(BTreeSet::new()),
    }
}

/// A profile's memberships as its record holds them, read outside the
/// writer (none when it has no record: merged away or erased).
pub fn read_memberships_in(
    tree: &dyn Engine,
    profile: ProfileId,
) -> Result<BTreeSet<Membership>, StoreError> {
    match tree.get(&keys::membership(profile))? {
        Some(bytes) => Ok(memberships_of_record(&decode(&bytes, "membership")?)),
        None => Ok(BTreeSet::new()),
    }
}

/// Every stored definition in a scan of the segment keys.
pub fn definitions_from(scan: Scan<'_>) -> Result<Vec<SegmentDefinition>, StoreError> {
    let mut definitions = Vec::new();
    for entry in scan {
        let (key, value) = entry?;
        let id = String::from_utf8_lossy(&key[1..]).into_owned();
        definitions.push(definition_of(&id, &decode(&value, "segment")?));
    }
    Ok(definitions)
}

pub fn memberships_of_record(record: &MembershipRecord) -> BTreeSet<Membership> {
    let members = record.members.iter().map(|&segment| Membership {
        segment,
        holdout: false,
    });
    let holdout = record.holdout.iter().map(|&segment| Membership {
        segment,
        holdout: true,
    });
    members.chain(holdout).collect()
}

fn write_memberships(
    writes: &mut CallWrites<'_, '_>,
    id: ProfileId,
    memberships: &BTreeSet<Membership>,
) {
    if memberships.is_empty() {
        writes.remove(keys::membership(id));
        return;
    }
    let record = MembershipRecord {
        members: memberships
            .iter()
            .filter(|m| !m.holdout)
            .map(|m| m.segment)
            .collect(),
        holdout: memberships
            .iter()
            .filter(|m| m.holdout)
            .map(|m| m.segment)
            .collect(),
    };
    writes.insert(keys::membership(id), record.encode_to_vec());
}

fn profile_facts<'a>(
    id: ProfileId,
    record: &ProfileRecord,
    events: &'a dyn EventCounter,
) -> Result<ProfileFacts<'a>, StoreError> {
    let traits = record
        .trait_views()?
        .into_iter()
        .map(|view| (view.name, view.value))
        .collect();
    let consents = record
        .consents
        .iter()
        .filter_map(|entry| entry.to_view())
        .filter(|view| view.granted)
        .map(|view| (view.channel, view.purpose))
        .collect();
    let mut identifier_kinds: Vec<String> = record
        .identifiers
        .iter()
        .map(|entry| entry.kind.clone())
        .collect();
    identifier_kinds.sort();
    identifier_kinds.dedup();
    Ok(ProfileFacts {
        id,
        traits,
        activity: record.activity(),
        consents,
        identifier_kinds,
        events,
    })
}

/// The facts of every live profile, read from the tree in id order.
pub fn for_each_profile_facts(
    tree: &dyn Engine,
    visit: &mut dyn FnMut(&ProfileFacts<'_>),
) -> Result<(), StoreError> {
    for entry in tree.scan_prefix(&[keys::PROFILE]) {
        let (key, value) = entry?;
        let Some(id) = keys::decode_u64(&key[1..]) else {
            continue;
        };
        let id = ProfileId(id);
        let record = ProfileRecord::for_reading(&value)?;
        let events = TreeEvents { tree, id };
        visit(&profile_facts(id, &record, &events)?);
    }
    Ok(())
}

/// Counts a profile's events in the tree as it is.
struct TreeEvents<'t> {
    tree: &'t dyn Engine,
    id: ProfileId,
}

impl EventCounter for TreeEvents<'_> {
    fn count_since(&self, name: &str, since: UnixMillis) -> u64 {
        let prefix = keys::events_of(self.id);
        let start = keys::event(self.id, since, 0);
        self.tree
            .range(Bound::Included(start.to_vec()), Bound::Unbounded)
            .take_while(|entry| {
                entry
                    .as_ref()
                    .is_ok_and(|(key, _)| key.starts_with(&prefix))
            })
            .filter_map(Result::ok)
            .filter(|(_, value)| {
                EventRecord::decode(value.as_ref()).is_ok_and(|event| event.name == name)
            })
            .count() as u64
    }
}

/// Counts events through the pending writes, so that events of the same
/// group are seen.
struct OverlayEvents<'a, 'g, 't> {
    writes: &'a CallWrites<'g, 't>,
    id: ProfileId,
}

impl EventCounter for OverlayEvents<'_, '_, '_> {
    fn count_since(&self, name: &str, since: UnixMillis) -> u64 {
        let prefix = keys::events_of(self.id);
        let start = keys::event(self.id, since, 0);
        let Ok(events) = self.writes.scan_prefix_from(&prefix, &start) else {
            return 0;
        };
        events
            .iter()
            .filter(|(_, value)| {
                EventRecord::decode(value.as_slice()).is_ok_and(|event| event.name == name)
            })
            .count() as u64
    }
}

/// What a segment change asks of the store.
#[derive(Debug, Clone)]
pub struct SegmentDraft {
    pub id: String,
    pub name: String,
    pub description: String,
    pub rule: String,
    pub holdout_percent: f64,
    pub at: UnixMillis,
}

/// Stores a definition; returns it, whether it is new, and whether its
/// members must be (re)computed.
pub fn put_segment(
    writes: &mut CallWrites<'_, '_>,
    draft: SegmentDraft,
) -> Result<(SegmentDefinition, bool, bool), StoreError> {
    let key = keys::segment(&draft.id);
    let existing: Option<SegmentRecord> = match writes.get(&key)? {
        Some(bytes) => Some(decode(&bytes, "segment")?),
        None => None,
    };
    let created = existing.is_none();
    let record = match existing {
        Some(old) => {
            let same_members =
                old.rule == draft.rule && old.holdout_percent == draft.holdout_percent;
            let version = if same_members {
                old.version
            } else {
                old.version + 1
            };
            SegmentRecord {
                number: old.number,
                name: draft.name,
                description: draft.description,
                rule: draft.rule,
                holdout_percent: draft.holdout_percent,
                created_at_ms: old.created_at_ms,
                updated_at_ms: draft.at.0,
                version,
                ready_version: old.ready_version,
            }
        }
        None => {
            let number = match writes.get(keys::NEXT_SEGMENT_NUMBER)? {
                Some(bytes) => keys::decode_u64(&bytes).unwrap_or(1),
                None => 1,
            };
            writes.insert(
                keys::NEXT_SEGMENT_NUMBER,
                keys::encode_u64(number + 1).to_vec(),
            );
            SegmentRecord {
                number: u32::try_from(number).map_err(|_| {
                    StoreError::Precondition("segment numbers are exhausted".to_owned())
                })?,
                name: draft.name,
                description: draft.description,
                rule: draft.rule,
                holdout_percent: draft.holdout_percent,
                created_at_ms: draft.at.0,
                updated_at_ms: draft.at.0,
                version: 1,
                ready_version: 0,
            }
        }
    };
    writes.insert(key, record.encode_to_vec());
    let definition = definition_of(&draft.id, &record);
    let needs_backfill = !definition.is_ready();
    Ok((definition, created, needs_backfill))
}

/// Removes a definition; its numbers left in membership records are
/// dropped at each profile's next evaluation and ignored until then.
pub fn delete_segment(
    writes: &mut CallWrites<'_, '_>,
    id: &str,
) -> Result<Option<SegmentDefinition>, StoreError> {
    let key = keys::segment(id);
    let Some(bytes) = writes.get(&key)? else {
        return Ok(None);
    };
    let record: SegmentRecord = decode(&bytes, "segment")?;
    writes.remove(key);
    Ok(Some(definition_of(id, &record)))
}

/// Marks a version's members as computed, unless the definition changed
/// meanwhile.
pub fn mark_ready(
    writes: &mut CallWrites<'_, '_>,
    id: &str,
    version: u64,
) -> Result<Option<SegmentDefinition>, StoreError> {
    let key = keys::segment(id);
    let Some(bytes) = writes.get(&key)? else {
        return Ok(None);
    };
    let mut record: SegmentRecord = decode(&bytes, "segment")?;
    if record.version != version {
        return Ok(None);
    }
    record.ready_version = version;
    writes.insert(key, record.encode_to_vec());
    Ok(Some(definition_of(id, &record)))
}

pub fn definition_of(id: &str, record: &SegmentRecord) -> SegmentDefinition {
    SegmentDefinition {
        id: id.to_owned(),
        number: record.number,
        name: record.name.clone(),
        description: record.description.clone(),
        rule: record.rule.clone(),
        holdout_percent: record.holdout_percent,
        created_at: UnixMillis(record.created_at_ms),
        updated_at: UnixMillis(record.updated_at_ms),
        version: record.version,
        ready_version: record.ready_version,
    }
}

/// The rules used when no segment service is attached: there are none.
pub struct NoSegments;

impl MembershipRules for NoSegments {
    fn segments_in(&self, _scope: SegmentScope) -> Vec<SegmentNumber> {
        Vec::new()
    }

    fn evaluate(&self, _facts: &ProfileFacts<'_>, _segments: &[SegmentNumber]) -> Vec<Membership> {
        Vec::new()
    }

    fn now(&self) -> UnixMillis {
        UnixMillis(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(shared: bool) -> MembershipIndex {
        let (changes, _) = broadcast::channel(16);
        MembershipIndex {
            segments: RwLock::default(),
            changes,
            published: shared.then(Mutex::default),
        }
    }

    fn change(profile: u64, entered: bool, holdout: bool) -> MembershipChange {
        MembershipChange {
            segment: 1,
            profile: ProfileId(profile),
            entered,
            holdout,
            at: UnixMillis(0),
        }
    }

    #[test]
    fn another_servers_change_is_reconciled_unless_a_local_one_is_newer() {
        let index = index(true);
        let mut watcher = index.subscribe();
        let in_holdout = BTreeSet::from([Membership {
            segment: 1,
            holdout: true,
        }]);

        let mark = index.mark();
        assert!(index.reconcile(ProfileId(7), &in_holdout, mark, UnixMillis(5)));
        assert_eq!(index.members(1).holdout.iter().collect::<Vec<_>>(), [7]);
        let told = MembershipChange {
            at: UnixMillis(5),
            ..change(7, true, true)
        };
        assert_eq!(watcher.try_recv().ok(), Some(told));
        // Reconciling the same state again tells nobody anything.
        assert!(index.reconcile(ProfileId(7), &in_holdout, index.mark(), UnixMillis(6)));
        assert!(watcher.try_recv().is_err());

        // A record read before this server's own later change is not
        // applied over it: the caller reads again.
        let mark = index.mark();
        index.publish(vec![change(8, true, false)]);
        assert!(!index.reconcile(ProfileId(8), &BTreeSet::new(), mark, UnixMillis(7)));
        assert_eq!(index.members(1).members.iter().collect::<Vec<_>>(), [8]);
        let mark = index.mark();
        index.forget_published_up_to(mark);
        assert!(index.reconcile(ProfileId(8), &BTreeSet::new(), mark, UnixMillis(8)));
        assert!(index.members(1).members.is_empty());
    }
}
