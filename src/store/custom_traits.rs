//! Stored definitions of user-defined computed traits. Their per-profile
//! states live in each profile's activity (`records::ActivityRecord`).

use super::StoreError;
use super::engine::{Engine, Scan};
use super::keys;
use super::overlay::CallWrites;
use crate::computed::custom::CustomTraitDefinition;

fn decode(bytes: &[u8]) -> Result<CustomTraitDefinition, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt {
        what: "computed trait definition",
        reason: error.to_string(),
    })
}

fn encode(definition: &CustomTraitDefinition) -> Vec<u8> {
    serde_json::to_vec(definition).unwrap_or_default()
}

/// Stores a definition; a changed one keeps its creation time and is not
/// ready until its backfill marks it. Returns it and whether it is new.
pub(super) fn put(
    writes: &mut CallWrites<'_, '_>,
    mut definition: CustomTraitDefinition,
) -> Result<(CustomTraitDefinition, bool), StoreError> {
    let key = keys::custom_trait(&definition.name);
    let existing = writes.get(&key)?.map(|bytes| decode(&bytes)).transpose()?;
    if let Some(existing) = &existing {
        definition.created_at = existing.created_at;
    }
    definition.ready = false;
    writes.insert(key, encode(&definition));
    Ok((definition, existing.is_none()))
}

pub(super) fn delete(
    writes: &mut CallWrites<'_, '_>,
    name: &str,
) -> Result<Option<CustomTraitDefinition>, StoreError> {
    let key = keys::custom_trait(name);
    let existing = writes.get(&key)?.map(|bytes| decode(&bytes)).transpose()?;
    if existing.is_some() {
        writes.remove(key);
    }
    Ok(existing)
}

/// Marks the version stored at `updated_at` ready; `None` when it changed
/// or went meanwhile.
pub(super) fn mark_ready(
    writes: &mut CallWrites<'_, '_>,
    name: &str,
    updated_at: crate::model::UnixMillis,
) -> Result<Option<CustomTraitDefinition>, StoreError> {
    let key = keys::custom_trait(name);
    let Some(mut definition) = writes.get(&key)?.map(|bytes| decode(&bytes)).transpose()? else {
        return Ok(None);
    };
    if definition.updated_at != updated_at {
        return Ok(None);
    }
    definition.ready = true;
    writes.insert(key, encode(&definition));
    Ok(Some(definition))
}

pub(super) fn all(tree: &dyn Engine) -> Result<Vec<CustomTraitDefinition>, StoreError> {
    all_from(tree.scan_prefix(&[keys::CUSTOM_TRAIT]))
}

/// Every definition in a scan of the computed-trait keys.
pub(super) fn all_from(scan: Scan<'_>) -> Result<Vec<CustomTraitDefinition>, StoreError> {
    let mut definitions = Vec::new();
    for entry in scan {
        let (_, value) = entry?;
        definitions.push(decode(&value)?);
    }
    Ok(definitions)
}
