//! Data-subject requests (design 5): subject-access exports, erasure with
//! suppression, their audit records, and the access log of profile reads.
//! Knows neither tonic nor sled.

mod access_log;
mod export;

use std::sync::Arc;

use crate::config::PrivacyConfig;
use crate::model::{
    ErasureCall, ErasureOutcome, PrivacyRequest, PrivacyRequestKind, PrivacyRequestStatus,
    ProfileId, Subject, UnixMillis,
};
use crate::segments::SegmentService;
use crate::service::{ProfileLookup, ProfileService, ServiceError};
use crate::store::ProfileStore;

pub use access_log::{AccessLog, AccessLogCounts};

/// An answered subject-access request.
pub struct SubjectExport {
    /// The JSON document, in pieces of the size asked for.
    pub document: Vec<Vec<u8>>,
    pub record: PrivacyRequest,
    /// The profile it describes.
    pub profile: ProfileId,
}
pub use export::EXPORT_SCHEMA_VERSION;

/// Art. 12(3): a request is answered within one month.
const DUE_AFTER_MS: i64 = 30 * 86_400_000;
const REQUEST_ID_CHARS_MAX: usize = 128;
const TEXT_CHARS_MAX: usize = 1000;
/// Profiles per access-log retention job on the writer.
const RETENTION_CHUNK_PROFILES: usize = 1024;

/// Who asked, as received.
#[derive(Debug, Clone, Default)]
pub struct RequestInput {
    pub request_id: String,
    pub requester: String,
    pub reason: String,
    /// The authenticated caller.
    pub caller: String,
}

/// Filters of a request listing.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFilter {
    pub kind: Option<PrivacyRequestKind>,
    pub status: Option<PrivacyRequestStatus>,
    pub overdue_only: bool,
}

pub struct PrivacyService {
    store: Arc<dyn ProfileStore>,
    profiles: Arc<ProfileService>,
    segments: Arc<SegmentService>,
    config: PrivacyConfig,
}

impl PrivacyService {
    pub fn new(
        store: Arc<dyn ProfileStore>,
        profiles: Arc<ProfileService>,
        segments: Arc<SegmentService>,
        config: PrivacyConfig,
    ) -> Self {
        PrivacyService {
            store,
            profiles,
            segments,
            config,
        }
    }

    fn now(&self) -> UnixMillis {
        self.profiles.clock().now()
    }

    fn new_record(
        &self,
        kind: PrivacyRequestKind,
        input: RequestInput,
    ) -> Result<PrivacyRequest, ServiceError> {
        let request_id = if input.request_id.is_empty() {
            generated_request_id()
        } else {
            validate_request_id(&input.request_id)?;
            input.request_id
        };
        check_length(&input.requester, "requester")?;
        check_length(&input.reason, "reason")?;
        let received_at = self.now();
        Ok(PrivacyRequest {
            request_id,
            kind,
            requester: input.requester,
            reason: input.reason,
            caller: input.caller,
            received_at,
            due_at: UnixMillis(received_at.0 + DUE_AFTER_MS),
            completed_at: None,
            status: PrivacyRequestStatus::Received,
            counts: Default::default(),
        })
    }

    /// The JSON document of everything held on the person, in pieces of at
    /// most `piece_bytes`, and the request record it was answered under.
    pub async fn export(
        &self,
        lookup: ProfileLookup,
        input: RequestInput,
        piece_bytes: usize,
    ) -> Result<SubjectExport, ServiceError> {
        let record = self.new_record(PrivacyRequestKind::Export, input)?;
        if let Some(existing) = self.store.privacy_request(&record.request_id)?
            && existing.kind != PrivacyRequestKind::Export
        {
            return Err(ServiceError::FailedPrecondition(format!(
                "request id {} was used by an erasure",
                record.request_id
            )));
        }
        let profile_id = self.profiles.profile_id(lookup).await?;
        let read = self.profiles.get_complete_profile(profile_id).await?;
        let live = read.profile.profile_id;
        let ids: Vec<ProfileId> = std::iter::once(live)
            .chain(read.profile.merged_profile_ids.iter().copied())
            .collect();
        let memberships = self
            .segments
            .check(ProfileLookup::ProfileId(live.to_string()))
            .await?;
        let subject = export::Subject {
            read: &read,
            trait_history: self.store.trait_history(live)?,
            memberships: memberships.memberships,
            access_log: self.store.access_log(&ids)?,
            shopper: crate::personalisation::shopper_export(self.store.as_ref(), live)?,
        };
        // Everything is read: the request is answered. Its record becomes
        // durable while the document is serialized.
        let mut completed = record.clone();
        completed.status = PrivacyRequestStatus::Completed;
        completed.completed_at = Some(self.now());
        let recorded = self.store.put_privacy_request(completed.clone());
        let document = export::document(&subject, &record, &self.config, self.now());
        // The record's job is queued first, so the writer makes it durable
        // while this thread serializes.
        let (recorded, pieces) = tokio::join!(recorded, async {
            export::pretty_pieces(&document, piece_bytes)
                .map_err(|error| ServiceError::Internal(error.to_string()))
        });
        recorded?;
        Ok(SubjectExport {
            document: pieces?,
            record: completed,
            profile: live,
        })
    }

    pub async fn erase(
        &self,
        lookup: ProfileLookup,
        suppress: bool,
        input: RequestInput,
    ) -> Result<ErasureOutcome, ServiceError> {
        let record = self.new_record(PrivacyRequestKind::Erasure, input)?;
        let subject = match lookup {
            ProfileLookup::ProfileId(text) => Subject::Profile(
                text.parse::<ProfileId>()
                    .map_err(|error| ServiceError::invalid("profile_id", error.to_string()))?,
            ),
            ProfileLookup::Identifier(raw) => {
                Subject::Identifier(self.profiles.normalize_identifier("identifier", &raw)?)
            }
        };
        let outcome = self
            .store
            .erase_subject(ErasureCall {
                subject,
                suppress,
                record,
            })
            .await?;
        tracing::info!(
            request_id = %outcome.record.request_id,
            erased = outcome.erased,
            events = outcome.record.counts.events,
            "erasure request completed"
        );
        Ok(outcome)
    }

    /// Requests newest first.
    pub fn requests(
        &self,
        filter: RequestFilter,
    ) -> Result<Vec<(PrivacyRequest, bool)>, ServiceError> {
        let now = self.now();
        let mut requests: Vec<(PrivacyRequest, bool)> = self
            .store
            .privacy_requests()?
            .into_iter()
            .filter(|request| filter.kind.is_none_or(|kind| request.kind == kind))
            .filter(|request| filter.status.is_none_or(|status| request.status == status))
            .map(|request| {
                let overdue = request.is_overdue(now);
                (request, overdue)
            })
            .filter(|(_, overdue)| !filter.overdue_only || *overdue)
            .collect();
        requests.sort_by_key(|(request, _)| std::cmp::Reverse(request.received_at));
        Ok(requests)
    }

    /// Removes access-log entries past their retention. Returns how many.
    pub async fn expire_access_log(&self) -> Result<u64, ServiceError> {
        if self.config.access_log_retention_days == 0 {
            return Ok(0);
        }
        let cutoff = UnixMillis(self.now().0 - self.config.access_log_retention_days * 86_400_000);
        let mut after = None;
        let mut removed = 0;
        loop {
            let ids = self
                .store
                .profile_ids_after(after, RETENTION_CHUNK_PROFILES)?;
            let Some(last) = ids.last().copied() else {
                return Ok(removed);
            };
            removed += self.store.expire_access_log(ids, cutoff).await?;
            after = Some(last);
        }
    }
}

fn generated_request_id() -> String {
    let mut bytes = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("req-{hex}")
}

fn validate_request_id(id: &str) -> Result<(), ServiceError> {
    let well_formed = id.chars().count() <= REQUEST_ID_CHARS_MAX
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if well_formed {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "request_id",
            format!("at most {REQUEST_ID_CHARS_MAX} letters, digits, `-`, `_`, `.` or `:`"),
        ))
    }
}

fn check_length(text: &str, field: &str) -> Result<(), ServiceError> {
    if text.chars().count() > TEXT_CHARS_MAX {
        return Err(ServiceError::invalid(
            field,
            format!("longer than {TEXT_CHARS_MAX} characters"),
        ));
    }
    Ok(())
}
