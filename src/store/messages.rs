//! Idempotency records: the profile each message id resolved to, and, per
//! profile, the message ids it received, so that erasure finds every
//! record of a person's calls without reading anyone else's.

use prost::Message;

use super::StoreError;
use super::engine::{Batch, Engine};
use super::keys;
use super::overlay::CallWrites;
use super::profiles::follow_alias;
use super::records::{DedupRecord, decode};
use crate::model::{ProfileId, UnixMillis};

/// The live profile a replayed message id resolved to, or `None` for a
/// new call. A record whose profile is gone (erased, or restored from a
/// backup taken before the erasure) is no reason to answer `duplicate`:
/// the call goes on to the suppression check like any other.
pub fn replayed(
    writes: &CallWrites<'_, '_>,
    message_id: &str,
) -> Result<Option<ProfileId>, StoreError> {
    let Some(bytes) = writes.get(&keys::message(writes.index(), message_id))? else {
        return Ok(None);
    };
    let original: DedupRecord = decode(&bytes, "message record")?;
    let live = follow_alias(writes, ProfileId(original.profile_id))?;
    Ok(writes.get(&keys::profile(live))?.map(|_| live))
}

pub fn remember(
    writes: &mut CallWrites<'_, '_>,
    message_id: &str,
    profile_id: ProfileId,
    received_at: UnixMillis,
) {
    let key = keys::message(writes.index(), message_id);
    writes.insert(keys::message_of(profile_id, &key), Vec::new());
    let dedup = DedupRecord {
        profile_id: profile_id.0,
        received_at_ms: received_at.0,
    };
    writes.insert(key, dedup.encode_to_vec());
}

/// The message records (`m` keys) of calls that resolved to `id`; their
/// per-profile entries are removed on the way.
pub fn take_all_of(
    writes: &mut CallWrites<'_, '_>,
    id: ProfileId,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut records = Vec::new();
    for (key, _) in writes.scan_prefix(&keys::messages_of(id))? {
        if let Some(message) = keys::message_of_entry(&key) {
            records.push(message.to_vec());
        }
        writes.remove(key);
    }
    Ok(records)
}

/// Lists every message record under its profile, once: stores written
/// before the lists existed would otherwise keep, after an erasure, the
/// records of the person's earlier calls. Returns the records listed.
pub fn list_all(tree: &dyn Engine) -> Result<u64, StoreError> {
    if tree.get(keys::MESSAGES_LISTED)?.is_some() {
        return Ok(0);
    }
    let mut batch = Batch::default();
    let mut listed = 0;
    for entry in tree.scan_prefix(&[keys::MESSAGE]) {
        let (key, value) = entry?;
        // A damaged record names no profile; replays treat it as new.
        let Ok(record) = decode::<DedupRecord>(&value, "message record") else {
            tracing::warn!("a message record that cannot be read was left unlisted");
            continue;
        };
        batch.insert(
            keys::message_of(ProfileId(record.profile_id), &key),
            Vec::new(),
        );
        listed += 1;
        if batch.len() >= 1000 {
            tree.commit(std::mem::take(&mut batch))?;
        }
    }
    batch.insert(keys::MESSAGES_LISTED, Vec::new());
    tree.commit(batch)?;
    Ok(listed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::engine::sled::SledEngine;

    #[test]
    fn records_of_stores_without_lists_are_listed_once() -> Result<(), StoreError> {
        let tree = SledEngine::temporary()?;
        let record = DedupRecord {
            profile_id: 7,
            received_at_ms: 1,
        };
        let message_key = [keys::MESSAGE, 1, 2, 3];
        tree.put_now(&message_key, &record.encode_to_vec())?;
        tree.put_now(&[keys::MESSAGE, 9], b"not a record")?;

        assert_eq!(list_all(&tree)?, 1);
        let listed: Vec<Vec<u8>> = tree
            .scan_prefix(&keys::messages_of(ProfileId(7)))
            .map(|entry| entry.map(|(key, _)| key))
            .collect::<Result<_, _>>()?;
        assert_eq!(listed, vec![keys::message_of(ProfileId(7), &message_key)]);
        assert!(tree.get(keys::MESSAGES_LISTED)?.is_some());

        tree.put_now(&[keys::MESSAGE, 4], &record.encode_to_vec())?;
        assert_eq!(list_all(&tree)?, 0, "a listed store is not scanned again");
        Ok(())
    }
}
