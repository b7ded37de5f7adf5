//! Reading profile records and following aliases inside a group.

use std::collections::BTreeSet;

use super::StoreError;
use super::keys;
use super::overlay::CallWrites;
use super::records::ProfileRecord;
use crate::model::ProfileId;

/// The live profiles this record was separated from (they may have been
/// merged into others since).
pub fn live_separations(
    writes: &CallWrites<'_, '_>,
    record: &ProfileRecord,
) -> Result<BTreeSet<ProfileId>, StoreError> {
    let mut live = BTreeSet::new();
    for &id in &record.separated_from {
        live.insert(follow_alias(writes, ProfileId(id))?);
    }
    Ok(live)
}

pub fn load_profile(
    writes: &CallWrites<'_, '_>,
    id: ProfileId,
) -> Result<ProfileRecord, StoreError> {
    let bytes = writes
        .get(&keys::profile(id))?
        .ok_or_else(|| StoreError::Corrupt {
            what: "profile",
            reason: format!("identifier index points at missing profile {id}"),
        })?;
    ProfileRecord::from_bytes(&bytes)
}

pub fn follow_alias(writes: &CallWrites<'_, '_>, id: ProfileId) -> Result<ProfileId, StoreError> {
    match writes.get(&keys::alias(id))? {
        Some(bytes) => decode_profile_id(&bytes),
        None => Ok(id),
    }
}

pub fn decode_profile_id(bytes: &[u8]) -> Result<ProfileId, StoreError> {
    keys::decode_u64(bytes)
        .map(ProfileId)
        .ok_or_else(|| StoreError::Corrupt {
            what: "profile id",
            reason: format!("expected 8 bytes, found {}", bytes.len()),
        })
}
