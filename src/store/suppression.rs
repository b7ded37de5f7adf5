//! Suppression tags: an erased person's identifiers are kept only as
//! HMAC-SHA256 tags under a secret key, and calls carrying one are dropped.

use super::StoreError;
use super::keys;
use super::overlay::CallWrites;
use crate::model::Identifier;

/// Computes suppression tags: HMAC-SHA256 of the normalized identifier
/// under a secret key, the same tag its index key carries.
pub type Suppressor = keys::IndexKeys;

/// True when any of the identifiers belongs to an erased, suppressed
/// person.
pub fn any_suppressed(
    writes: &CallWrites<'_, '_>,
    suppressor: &Suppressor,
    identifiers: &[Identifier],
) -> Result<bool, StoreError> {
    for identifier in identifiers {
        if writes
            .get(&keys::suppression(&suppressor.tag(identifier)))?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}
