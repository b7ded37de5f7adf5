//! Idempotency records: the profile each message id resolved to, and, per
//! profile, the message ids it received, so that erasure finds every
//! record of a person's calls without reading anyone else's.

use prost::Message;

use super::StoreError;
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
