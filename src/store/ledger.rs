//! Re-applying later erasures to a restored backup. A backup is the
//! database as it was; erasures made after it survive in the suppression
//! tags and privacy request records of the installation's newer state (its
//! data directory, or a newer backup). Restore replays them: every profile
//! that holds an identifier suppressed there is erased again, and the tags
//! and request records are copied over, so an erased person neither comes
//! back nor can be recreated by later events.

use std::collections::BTreeMap;
use std::path::Path;

use super::StoreError;
use super::backup::{BACKUP_FILE_NAME, each_record};
use super::engine::{Batch, Engine};
use super::keys;
use super::overlay::CallWrites;
use super::privacy::erase;
use super::records::{SuppressionRecord, decode};
use super::sealing::key_store::{KeyState, KeyStore};
use super::suppression::Suppressor;
use crate::model::{
    ErasureCall, ErasureCounts, PrivacyRequest, PrivacyRequestKind, PrivacyRequestStatus,
    ProfileId, Subject, UnixMillis,
};
use prost::Message;

/// The privacy state of a newer copy of an installation.
#[derive(Debug, Default)]
pub struct PrivacyLedger {
    /// The suppression secret that copy generated, if any.
    generated_key: Option<Vec<u8>>,
    /// Suppression records, by full key.
    suppressions: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Privacy request records, by full key.
    requests: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// What a replay changed in the restored database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Profiles of the backup erased again.
    pub profiles_erased: u64,
    /// Suppression tags the backup did not have yet.
    pub suppressions_added: u64,
    /// Privacy request records the backup did not have yet.
    pub requests_added: u64,
}

impl PrivacyLedger {
    /// Reads the ledger of a backup directory or of a stopped server's data
    /// directory.
    pub fn read(
        source: &Path,
        open_data_dir: impl FnOnce(&Path) -> Result<Box<dyn Engine>, StoreError>,
    ) -> Result<PrivacyLedger, StoreError> {
        let mut ledger = PrivacyLedger::default();
        if source.join(BACKUP_FILE_NAME).is_file() {
            each_record(&source.join(BACKUP_FILE_NAME), |key, value| {
                ledger.note(key, value);
                Ok(())
            })?;
            return Ok(ledger);
        }
        if !source.join("conf").is_file() {
            return Err(StoreError::Precondition(format!(
                "{} holds neither a backup nor a data directory",
                source.display()
            )));
        }
        PrivacyLedger::read_engine(open_data_dir(source)?.as_ref())
    }

    /// Reads the ledger of a store's engine.
    pub fn read_engine(tree: &dyn Engine) -> Result<PrivacyLedger, StoreError> {
        let mut ledger = PrivacyLedger::default();
        for prefix in [
            &[keys::SUPPRESSION][..],
            &[keys::PRIVACY_REQUEST][..],
            keys::SUPPRESSION_KEY,
            keys::INDEX_KEY_ID,
        ] {
            for entry in tree.scan_prefix(prefix) {
                let (key, value) = entry?;
                ledger.note(&key, &value);
            }
        }
        Ok(ledger)
    }

    fn note(&mut self, key: &[u8], value: &[u8]) {
        if key == keys::SUPPRESSION_KEY || key == keys::INDEX_KEY_ID {
            self.generated_key = Some(value.to_vec());
        } else if key.first() == Some(&keys::SUPPRESSION) {
            self.suppressions.insert(key.to_vec(), value.to_vec());
        } else if key.first() == Some(&keys::PRIVACY_REQUEST) {
            self.requests.insert(key.to_vec(), value.to_vec());
        }
    }

    /// Refuses a ledger whose tags were made under another generated
    /// secret: they could not be matched, so nothing would be re-applied.
    pub fn check_key(&self, restored_key: Option<&[u8]>) -> Result<(), StoreError> {
        match (&self.generated_key, restored_key) {
            (Some(ledger), Some(restored)) if ledger.as_slice() != restored => {
                Err(StoreError::Precondition(
                    "the privacy source holds another suppression key than the backup; \
                     it is not a copy of the same installation"
                        .to_owned(),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The profiles of `tree` holding an identifier suppressed in `ledger` but
/// not in `tree`, each with the request that suppressed it. Reads `tree`
/// directly: restore runs offline, nothing else writes.
pub fn profiles_to_erase(
    tree: &dyn Engine,
    ledger: &PrivacyLedger,
) -> Result<BTreeMap<ProfileId, String>, StoreError> {
    let mut new_tags = BTreeMap::new();
    for (key, value) in &ledger.suppressions {
        if tree.get(key)?.is_none() {
            let record: SuppressionRecord = decode(value, "suppression record")?;
            new_tags.insert(key[1..].to_vec(), record.request_id);
        }
    }
    let mut profiles = BTreeMap::new();
    if new_tags.is_empty() {
        return Ok(profiles);
    }
    for entry in tree.scan_prefix(&[keys::IDENTIFIER]) {
        let (key, value) = entry?;
        let Some(tag) = keys::tag_of_identifier_key(&key) else {
            continue;
        };
        if let Some(request_id) = new_tags.get(tag) {
            let id = super::profiles::decode_profile_id(&value)?;
            profiles.entry(id).or_insert_with(|| request_id.clone());
        }
    }
    Ok(profiles)
}

/// Erases one profile of the restored backup again, under a request record
/// of its own that names the erasure it re-applies.
pub fn erase_again(
    writes: &mut CallWrites<'_, '_>,
    suppressor: &Suppressor,
    now: UnixMillis,
    profile: ProfileId,
    original_request_id: &str,
) -> Result<bool, StoreError> {
    let record = PrivacyRequest {
        request_id: format!("restore-{}-{}", now.0, profile.0),
        kind: PrivacyRequestKind::Erasure,
        requester: "sightline restore".to_owned(),
        reason: format!("re-applies erasure {original_request_id} to a restored backup"),
        caller: "restore".to_owned(),
        received_at: now,
        due_at: now,
        completed_at: None,
        status: PrivacyRequestStatus::Received,
        counts: ErasureCounts::default(),
    };
    let outcome = erase(
        writes,
        suppressor,
        now,
        ErasureCall {
            subject: Subject::Profile(profile),
            suppress: true,
            record,
        },
    )?;
    Ok(outcome.erased)
}

/// Copies the ledger's tags and request records the database lacks.
pub fn copy_missing(
    writes: &mut CallWrites<'_, '_>,
    ledger: &PrivacyLedger,
    report: &mut ReplayReport,
) -> Result<(), StoreError> {
    for (records, added) in [
        (&ledger.suppressions, &mut report.suppressions_added),
        (&ledger.requests, &mut report.requests_added),
    ] {
        for (key, value) in records {
            if writes.get(key)?.is_none() {
                writes.insert(key.clone(), value.clone());
                *added += 1;
            }
        }
    }
    Ok(())
}

/// What a restore found of people erased after its backup, from the key
/// store alone.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShreddedReport {
    /// Profiles whose data keys are destroyed.
    pub profiles: u64,
    /// Their identifiers, now suppression tags.
    pub identifiers_suppressed: u64,
    /// Records of their calls' message ids.
    pub message_records: u64,
}

/// Finishes, in a restored backup, the erasures the installation made
/// after it: every profile whose data key is destroyed loses its record,
/// and each identifier indexed to it becomes a suppression tag (its index
/// key is that tag), so that the person is neither readable nor recreated
/// by a later call. Offline, on the raw engine.
pub fn drop_shredded(
    raw: &dyn Engine,
    key_store: &dyn KeyStore,
    now: UnixMillis,
) -> Result<ShreddedReport, StoreError> {
    // A backup from before the per-profile lists names its message records
    // only once they are listed.
    super::messages::list_all(raw)?;
    let mut report = ShreddedReport::default();
    let mut batch = Batch::default();
    let destroyed = |owner: u64| matches!(key_store.state(owner), Ok(KeyState::Destroyed));
    for entry in raw.scan_prefix(&[keys::PROFILE]) {
        let (key, _) = entry?;
        if keys::decode_u64(&key[1..]).is_some_and(destroyed) {
            batch.remove(key);
            report.profiles += 1;
        }
    }
    for entry in raw.scan_prefix(&[keys::IDENTIFIER]) {
        let (key, value) = entry?;
        let Some(tag) = keys::tag_of_identifier_key(&key) else {
            continue;
        };
        let owner = super::profiles::decode_profile_id(&value)?;
        if destroyed(owner.0) {
            let record = SuppressionRecord {
                at_ms: now.0,
                request_id: "erased after the backup".to_owned(),
            };
            let mut suppression = vec![keys::SUPPRESSION];
            suppression.extend_from_slice(tag);
            batch.insert(suppression, record.encode_to_vec());
            batch.remove(key);
            report.identifiers_suppressed += 1;
        }
    }
    for entry in raw.scan_prefix(&[keys::MESSAGE_OF]) {
        let (key, _) = entry?;
        if keys::decode_u64(key.get(1..9).unwrap_or_default()).is_some_and(destroyed) {
            if let Some(message) = keys::message_of_entry(&key) {
                batch.remove(message.to_vec());
                report.message_records += 1;
            }
            batch.remove(key);
        }
    }
    raw.commit(batch)?;
    Ok(report)
}
