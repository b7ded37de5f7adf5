use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::caller::caller_name;
use super::convert::{profile_lookup, to_timestamp};
use super::pb::{self, privacy_service_server::PrivacyService as PrivacyRpc};
use super::to_status;
use crate::model::{
    AccessEntry, ErasureCounts, PrivacyRequest, PrivacyRequestKind, PrivacyRequestStatus,
};
use crate::privacy::{AccessLog, PrivacyService, RequestFilter, RequestInput};
use crate::service::{ProfileLookup, ServiceError};

/// Export documents are sent in pieces of this size, well under message
/// size limits.
const EXPORT_CHUNK_BYTES: usize = 256 * 1024;

/// `sightline.v1.PrivacyService` over the domain service.
pub struct PrivacyApi {
    service: Arc<PrivacyService>,
    access_log: Option<AccessLog>,
}

impl PrivacyApi {
    pub fn new(service: Arc<PrivacyService>) -> Self {
        PrivacyApi {
            service,
            access_log: None,
        }
    }

    /// Logs every export as a read of the person's data.
    pub fn with_access_log(mut self, access_log: AccessLog) -> Self {
        self.access_log = Some(access_log);
        self
    }
}

fn lookup(lookup: Option<impl Into<ProfileLookup>>) -> Result<ProfileLookup, Status> {
    profile_lookup(lookup).map_err(to_status)
}

fn proto_counts(counts: &ErasureCounts) -> pb::ErasureCounts {
    pb::ErasureCounts {
        profiles: counts.profiles,
        identifiers: counts.identifiers,
        traits: counts.traits,
        events: counts.events,
        consents: counts.consents,
        memberships: counts.memberships,
        match_entries: counts.match_entries,
        access_log_entries: counts.access_log_entries,
        message_records: counts.message_records,
        suppressed_identifiers: counts.suppressed_identifiers,
    }
}

fn proto_kind(kind: PrivacyRequestKind) -> pb::PrivacyRequestKind {
    match kind {
        PrivacyRequestKind::Export => pb::PrivacyRequestKind::Export,
        PrivacyRequestKind::Erasure => pb::PrivacyRequestKind::Erasure,
    }
}

fn proto_status(status: PrivacyRequestStatus) -> pb::PrivacyRequestStatus {
    match status {
        PrivacyRequestStatus::Received => pb::PrivacyRequestStatus::Received,
        PrivacyRequestStatus::Completed => pb::PrivacyRequestStatus::Completed,
        PrivacyRequestStatus::Failed => pb::PrivacyRequestStatus::Failed,
    }
}

fn proto_request(request: &PrivacyRequest, overdue: bool) -> pb::PrivacyRequest {
    pb::PrivacyRequest {
        request_id: request.request_id.clone(),
        kind: proto_kind(request.kind) as i32,
        requester: request.requester.clone(),
        reason: request.reason.clone(),
        received_at: Some(to_timestamp(request.received_at)),
        due_at: Some(to_timestamp(request.due_at)),
        completed_at: request.completed_at.map(to_timestamp),
        status: proto_status(request.status) as i32,
        overdue,
        counts: Some(proto_counts(&request.counts)),
        caller: request.caller.clone(),
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl PrivacyRpc for PrivacyApi {
    type ExportSubjectStream = ResponseStream<pb::ExportChunk>;

    async fn export_subject(
        &self,
        request: Request<pb::ExportSubjectRequest>,
    ) -> Result<Response<Self::ExportSubjectStream>, Status> {
        let caller = caller_name(&request);
        let request = request.into_inner();
        let input = RequestInput {
            request_id: request.request_id,
            requester: request.requester,
            reason: String::new(),
            caller: caller.clone(),
        };
        let export = self
            .service
            .export(lookup(request.lookup)?, input, EXPORT_CHUNK_BYTES)
            .await
            .map_err(to_status)?;
        if let Some(access_log) = &self.access_log {
            access_log
                .record(AccessEntry {
                    profile: export.profile,
                    at: export
                        .record
                        .completed_at
                        .unwrap_or(export.record.received_at),
                    caller,
                    method: "ExportSubject".to_owned(),
                })
                .await;
        }
        let chunks: Vec<Result<pb::ExportChunk, Status>> = export
            .document
            .into_iter()
            .map(|data| Ok(pb::ExportChunk { data }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn erase_subject(
        &self,
        request: Request<pb::EraseSubjectRequest>,
    ) -> Result<Response<pb::EraseSubjectResponse>, Status> {
        let caller = caller_name(&request);
        let request = request.into_inner();
        let input = RequestInput {
            request_id: request.request_id,
            requester: request.requester,
            reason: request.reason,
            caller,
        };
        let outcome = self
            .service
            .erase(lookup(request.lookup)?, !request.skip_suppression, input)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::EraseSubjectResponse {
            request_id: outcome.record.request_id.clone(),
            erased: outcome.erased,
            counts: Some(proto_counts(&outcome.record.counts)),
        }))
    }

    async fn list_privacy_requests(
        &self,
        request: Request<pb::ListPrivacyRequestsRequest>,
    ) -> Result<Response<pb::ListPrivacyRequestsResponse>, Status> {
        let request = request.into_inner();
        let kind = match pb::PrivacyRequestKind::try_from(request.kind) {
            Ok(pb::PrivacyRequestKind::Export) => Some(PrivacyRequestKind::Export),
            Ok(pb::PrivacyRequestKind::Erasure) => Some(PrivacyRequestKind::Erasure),
            Ok(pb::PrivacyRequestKind::Unspecified) => None,
            Err(_) => {
                return Err(to_status(ServiceError::invalid(
                    "kind",
                    "unknown request kind",
                )));
            }
        };
        let status = match pb::PrivacyRequestStatus::try_from(request.status) {
            Ok(pb::PrivacyRequestStatus::Received) => Some(PrivacyRequestStatus::Received),
            Ok(pb::PrivacyRequestStatus::Completed) => Some(PrivacyRequestStatus::Completed),
            Ok(pb::PrivacyRequestStatus::Failed) => Some(PrivacyRequestStatus::Failed),
            Ok(pb::PrivacyRequestStatus::Unspecified) => None,
            Err(_) => {
                return Err(to_status(ServiceError::invalid(
                    "status",
                    "unknown request status",
                )));
            }
        };
        let requests = self
            .service
            .requests(RequestFilter {
                kind,
                status,
                overdue_only: request.overdue_only,
            })
            .map_err(to_status)?;
        Ok(Response::new(pb::ListPrivacyRequestsResponse {
            requests: requests
                .iter()
                .map(|(request, overdue)| proto_request(request, *overdue))
                .collect(),
        }))
    }
}
