//! The writer's view of the database while it builds a group commit: writes
//! of earlier calls in the group are visible to later ones, but nothing
//! reaches the engine (and so no reader) until the whole group is committed
//! as one atomic batch of the transaction it read through.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use super::StoreError;
use super::engine::{Batch, Engine, Transaction, prefix_bounds};
use super::keys::IndexKeys;
use crate::model::{MembershipChange, ProfileId};
use crate::recommend::ShopperHistory;

/// `None` marks a deletion.
type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// Every key of the tables that are sparse (a few records among millions of
/// profiles) and asked for on every call, kept in memory so that the common
/// answer, "no such record", costs no read of the tree. A key stays listed
/// after its record is removed: that only costs a read.
#[derive(Debug, Default)]
pub struct SparseKeys {
    tags: Vec<u8>,
    keys: HashSet<Vec<u8>>,
}

impl SparseKeys {
    /// Lists every existing key of the tables with these tags.
    pub fn load(tree: &dyn Engine, tags: &[u8]) -> Result<SparseKeys, StoreError> {
        let mut keys = HashSet::new();
        for tag in tags {
            for entry in tree.scan_prefix(&[*tag]) {
                let (key, _) = entry?;
                keys.insert(key.to_vec());
            }
        }
        Ok(SparseKeys {
            tags: tags.to_vec(),
            keys,
        })
    }

    fn certainly_absent(&self, key: &[u8]) -> bool {
        key.first().is_some_and(|tag| self.tags.contains(tag)) && !self.keys.contains(key)
    }

    fn note(&mut self, key: &[u8]) {
        if key.first().is_some_and(|tag| self.tags.contains(tag)) {
            self.keys.insert(key.to_vec());
        }
    }
}

/// Pending writes of one group commit, on top of the tree.
pub struct GroupWrites<'t> {
    /// Every read of the group goes through its transaction.
    reads: &'t dyn Transaction,
    /// For writes made at once, outside the transaction.
    engine: &'t dyn Engine,
    sparse: &'t mut SparseKeys,
    /// How index keys made of personal values are hashed.
    index: &'t IndexKeys,
    changes: Changes,
    /// Membership changes of the group, published once it is durable.
    membership_changes: Vec<MembershipChange>,
    history_changes: HistoryChanges,
    /// Profiles whose data keys the group's commit destroys.
    destroyed_keys: Vec<ProfileId>,
}

/// Per profile: its product history before the group (or call) and now.
type HistoryChanges = BTreeMap<ProfileId, (ShopperHistory, ShopperHistory)>;

/// Adds a later change of histories to an earlier one: the earlier before,
/// the later after.
fn fold_history_changes(into: &mut HistoryChanges, later: HistoryChanges) {
    for (id, (before, after)) in later {
        match into.get_mut(&id) {
            Some(change) => change.1 = after,
            None => {
                into.insert(id, (before, after));
            }
        }
    }
}

impl<'t> GroupWrites<'t> {
    pub fn new(
        reads: &'t dyn Transaction,
        engine: &'t dyn Engine,
        sparse: &'t mut SparseKeys,
        index: &'t IndexKeys,
    ) -> Self {
        GroupWrites {
            reads,
            engine,
            sparse,
            index,
            changes: Changes::new(),
            membership_changes: Vec::new(),
            history_changes: HistoryChanges::new(),
            destroyed_keys: Vec::new(),
        }
    }

    /// How many more records with this table tag the tree holds once the
    /// group is applied (negative when it removes more than it adds).
    pub fn count_change(&self, tag: u8) -> Result<i64, StoreError> {
        let mut change = 0i64;
        let prefix = [tag];
        for (key, value) in self
            .changes
            .range::<[u8], _>((Bound::Included(&prefix[..]), Bound::Unbounded))
            .take_while(|(key, _)| key.first() == Some(&tag))
        {
            let existed = self.reads.contains(key)?;
            change += i64::from(value.is_some()) - i64::from(existed);
        }
        Ok(change)
    }

    /// Keys under `prefix` written (or removed) by the group so far.
    pub fn changed_keys(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        self.changes
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Keys under `prefix` the group wrote, with their new values (`None`
    /// for a removal).
    pub fn changes_under(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.changes
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    pub fn take_membership_changes(&mut self) -> Vec<MembershipChange> {
        std::mem::take(&mut self.membership_changes)
    }

    /// Every product history the group changed, before and after; those
    /// that came back to where they were are left out.
    pub fn take_history_changes(&mut self) -> Vec<(ShopperHistory, ShopperHistory)> {
        std::mem::take(&mut self.history_changes)
            .into_values()
            .filter(|(before, after)| before != after)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Starts the writes of one call; they join the group only on `commit`.
    pub fn call(&mut self) -> CallWrites<'_, 't> {
        CallWrites {
            group: self,
            changes: Changes::new(),
            membership_changes: Vec::new(),
            history_changes: HistoryChanges::new(),
            destroyed_keys: Vec::new(),
        }
    }

    pub fn into_batch(self) -> Batch {
        let mut batch = Batch::default();
        for (key, change) in self.changes {
            match change {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        for id in self.destroyed_keys {
            batch.destroy_key_of(id.0);
        }
        batch
    }
}

/// Pending writes of one call, on top of its group. Dropped without
/// `commit`, they vanish: a call that fails leaves nothing behind.
pub struct CallWrites<'g, 't> {
    group: &'g mut GroupWrites<'t>,
    changes: Changes,
    membership_changes: Vec<MembershipChange>,
    history_changes: HistoryChanges,
    destroyed_keys: Vec<ProfileId>,
}

impl<'t> CallWrites<'_, 't> {
    /// How index keys made of personal values are hashed.
    pub fn index(&self) -> &'t IndexKeys {
        self.group.index
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(change) = self.changes.get(key) {
            return Ok(change.clone());
        }
        if let Some(change) = self.group.changes.get(key) {
            return Ok(change.clone());
        }
        if self.group.sparse.certainly_absent(key) {
            return Ok(None);
        }
        Ok(self.group.reads.get(key)?)
    }

    /// Reads these keys ahead where the engine gains by it (see
    /// [`Transaction::read_ahead`]); later `get`s answer from what was read.
    pub fn read_ahead(&self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        if self.group.reads.reads_ahead() {
            self.group.reads.read_ahead(keys, &[])?;
        }
        Ok(())
    }

    /// See [`Transaction::known_absent`].
    pub fn known_absent(&self, keys: &[Vec<u8>]) {
        self.group.reads.known_absent(keys);
    }

    /// Whether this call or an earlier one of the group wrote the key.
    pub fn is_written(&self, key: &[u8]) -> bool {
        self.changes.contains_key(key) || self.group.changes.contains_key(key)
    }

    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.changes.insert(key.into(), Some(value.into()));
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.changes.insert(key.into(), None);
    }

    /// Writes straight to the tree, outside the group's batch: not atomic
    /// with it and kept even if the call or the group fails, but durable
    /// with the group's flush. For data that may be lost yet must not hold
    /// readers up, since sled excludes every reader while a batch applies.
    ///
    /// On a shared database readers are never held up and a write beside
    /// the group's transaction would only make it conflict with itself:
    /// there the write joins the call's writes.
    pub fn write_through(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        if self.group.engine.shared() {
            self.insert(key, value);
            return Ok(());
        }
        self.group.engine.put_now(key, &value)?;
        Ok(())
    }

    /// Destroys the profile's data key once the group is durable, so that
    /// no copy of its values (old versions, earlier backups) opens again.
    pub fn destroy_key_of(&mut self, id: ProfileId) {
        self.destroyed_keys.push(id);
    }

    pub fn note_membership_change(&mut self, change: MembershipChange) {
        self.membership_changes.push(change);
    }

    /// A profile's product history changed (its record holds the new one).
    pub fn note_history_change(
        &mut self,
        id: ProfileId,
        before: ShopperHistory,
        after: ShopperHistory,
    ) {
        fold_history_changes(
            &mut self.history_changes,
            BTreeMap::from([(id, (before, after))]),
        );
    }

    /// Every live key-value pair under `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<KeyValues, StoreError> {
        self.scan_prefix_from(prefix, prefix)
    }

    /// Every live key-value pair under `prefix` from `start` on, in key
    /// order.
    pub fn scan_prefix_from(&self, prefix: &[u8], start: &[u8]) -> Result<KeyValues, StoreError> {
        let mut merged = BTreeMap::new();
        let (_, end) = prefix_bounds(prefix);
        for entry in self.group.reads.range(Bound::Included(start.to_vec()), end) {
            let (key, value) = entry?;
            if !key.starts_with(prefix) {
                break;
            }
            merged.insert(key, Some(value));
        }
        for (key, change) in self.changes_from(prefix, start) {
            merged.insert(key.clone(), change.clone());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .collect())
    }

    /// The group's and this call's changes under `prefix` from `start` on,
    /// the call's after the group's, so that the later of two wins.
    fn changes_from<'s>(
        &'s self,
        prefix: &'s [u8],
        start: &'s [u8],
    ) -> impl Iterator<Item = (&'s Vec<u8>, &'s Option<Vec<u8>>)> + 's {
        [&self.group.changes, &self.changes]
            .into_iter()
            .flat_map(move |layer| {
                layer
                    .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
                    .take_while(move |(key, _)| key.starts_with(prefix))
            })
    }

    /// Every live key under `prefix`, in key order, without reading a
    /// value.
    pub fn scan_keys_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut merged = BTreeMap::new();
        let (from, to) = prefix_bounds(prefix);
        for key in self.group.reads.range_keys(from, to) {
            merged.insert(key?, true);
        }
        for (key, change) in self.changes_from(prefix, prefix) {
            merged.insert(key.clone(), change.is_some());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(key, live)| live.then_some(key))
            .collect())
    }

    pub fn commit(self) {
        for (key, change) in &self.changes {
            if change.is_some() {
                self.group.sparse.note(key);
            }
        }
        self.group.changes.extend(self.changes);
        self.group
            .membership_changes
            .extend(self.membership_changes);
        fold_history_changes(&mut self.group.history_changes, self.history_changes);
        self.group.destroyed_keys.extend(self.destroyed_keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::engine::sled::SledEngine;

    fn tree() -> SledEngine {
        SledEngine::temporary().expect("temporary engine")
    }

    fn put(tree: &SledEngine, key: &[u8], value: &[u8]) {
        tree.put_now(key, value).expect("put");
    }

    #[test]
    fn later_calls_see_earlier_commits_and_dropped_calls_vanish() {
        let tree = tree();
        put(&tree, b"a1", b"tree");
        put(&tree, b"a2", b"tree");
        let mut sparse = SparseKeys::default();
        let transaction = tree.begin().expect("begin");
        let index = IndexKeys::new(vec![7; 32]);
        let mut group = GroupWrites::new(transaction.as_ref(), &tree, &mut sparse, &index);

        let mut first = group.call();
        first.remove(b"a1".as_slice());
        first.insert(b"a3".as_slice(), b"first".as_slice());
        first.commit();

        let mut abandoned = group.call();
        abandoned.insert(b"a4".as_slice(), b"lost".as_slice());
        drop(abandoned);

        let mut second = group.call();
        second.insert(b"a2".as_slice(), b"second".as_slice());
        assert_eq!(second.get(b"a1").expect("get"), None);
        let scanned = second.scan_prefix(b"a").expect("scan");
        let expected: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"a2".to_vec(), b"second".to_vec()),
            (b"a3".to_vec(), b"first".to_vec()),
        ];
        assert_eq!(scanned, expected);
        second.commit();

        let batch = group.into_batch();
        transaction.commit(batch).expect("commit");
        assert_eq!(tree.get(b"a1").expect("get"), None);
        assert_eq!(tree.get(b"a4").expect("get"), None);
        assert_eq!(
            tree.get(b"a3").expect("get").as_deref(),
            Some(b"first".as_slice())
        );
    }

    #[test]
    fn sparse_tables_answer_absent_keys_from_memory_and_see_new_ones() {
        let tree = tree();
        put(&tree, b"h-known", b"1");
        let mut sparse = SparseKeys::load(&tree, b"h").expect("load");
        let transaction = tree.begin().expect("begin");
        let index = IndexKeys::new(vec![7; 32]);
        let mut group = GroupWrites::new(transaction.as_ref(), &tree, &mut sparse, &index);
        let mut writes = group.call();
        assert_eq!(
            writes.get(b"h-known").expect("get").as_deref(),
            Some(b"1".as_slice())
        );
        assert_eq!(writes.get(b"h-missing").expect("get"), None);
        writes.insert(b"h-new".as_slice(), b"2".as_slice());
        writes.commit();
        let batch = group.into_batch();
        transaction.commit(batch).expect("commit");
        let transaction = tree.begin().expect("begin");
        let index = IndexKeys::new(vec![7; 32]);
        let mut group = GroupWrites::new(transaction.as_ref(), &tree, &mut sparse, &index);
        let writes = group.call();
        assert_eq!(
            writes.get(b"h-new").expect("get").as_deref(),
            Some(b"2".as_slice())
        );
    }
}
