//! Suppression tags: an erased person's identifiers are kept only as
//! HMAC-SHA256 tags under a secret key, and calls carrying one are dropped.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::StoreError;
use super::keys;
use super::overlay::CallWrites;
use crate::model::Identifier;

/// Computes suppression tags: HMAC-SHA256 of the normalized identifier
/// under a secret key.
#[derive(Clone)]
pub struct Suppressor {
    key: Vec<u8>,
}

impl std::fmt::Debug for Suppressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Suppressor { key: <secret> }")
    }
}

impl Suppressor {
    pub fn new(key: Vec<u8>) -> Self {
        Suppressor { key }
    }

    pub fn tag(&self, identifier: &Identifier) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(identifier.kind().as_str().as_bytes());
        mac.update(&[0]);
        mac.update(identifier.value().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The tag of an identifier as the identifier index stores it (kind,
    /// 0x00, value): the same bytes [`Suppressor::tag`] authenticates.
    pub fn tag_of_indexed(&self, kind_and_value: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(kind_and_value);
        mac.finalize().into_bytes().into()
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }
}

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
