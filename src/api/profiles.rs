use std::collections::VecDeque;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

use super::caller::caller_name;
use super::convert::{
    consent_input, identify_input, profile_lookup, proto_identifier_of, proto_profile,
    to_timestamp, track_input, unmerge_input,
};
use super::pb::{self, profile_service_server::ProfileService as ProfileRpc};
use super::to_status;
use crate::model::{
    AccessEntry, Identifier, MatchCandidate, Resolution, ReviewOutcome, WriteCall, WriteOutcome,
};
use crate::privacy::{AccessLog, PrivacyService};
use crate::segments::SegmentService;
use crate::service::{IngestCounts, ProfileService, ServiceError, candidate_id};
use crate::store::ApplyResults;

/// Items of one `Ingest` stream sent to the store together: large enough
/// to amortise the queue round trip, small enough to keep a stream's
/// memory bounded.
const INGEST_CHUNK_ITEMS: usize = 256;
/// Chunks of one stream waiting for durability while the next ones are
/// read, so that reading and committing overlap.
const INGEST_CHUNKS_IN_FLIGHT_MAX: usize = 4;

/// `sightline.v1.ProfileService` over the domain service.
pub struct ProfileApi {
    service: Arc<ProfileService>,
    /// Swept by `RunMaintenance` too, when attached.
    segments: Option<Arc<SegmentService>>,
    /// Reads of profiles are logged here, when attached.
    access_log: Option<AccessLog>,
    /// Applies access-log retention in `RunMaintenance` too, when attached.
    privacy: Option<Arc<PrivacyService>>,
    /// Turns true when the server stops: open `Ingest` streams end then.
    stopping: Option<tokio::sync::watch::Receiver<bool>>,
}

impl ProfileApi {
    pub fn new(service: Arc<ProfileService>) -> Self {
        ProfileApi {
            service,
            segments: None,
            access_log: None,
            privacy: None,
            stopping: None,
        }
    }

    pub fn with_stopping(mut self, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stopping = Some(stopping);
        self
    }

    pub fn with_access_log(mut self, access_log: AccessLog) -> Self {
        self.access_log = Some(access_log);
        self
    }

    pub fn with_privacy(mut self, privacy: Arc<PrivacyService>) -> Self {
        self.privacy = Some(privacy);
        self
    }

    pub fn with_segments(mut self, segments: Arc<SegmentService>) -> Self {
        self.segments = Some(segments);
        self
    }

    async fn write(
        &self,
        call: Result<WriteCall, ServiceError>,
    ) -> Result<pb::WriteResponse, Status> {
        let call = call.map_err(to_status)?;
        let outcome = self.service.write(call).await.map_err(to_status)?;
        Ok(write_response(outcome))
    }
}

fn write_response(outcome: WriteOutcome) -> pb::WriteResponse {
    let blocked_links = outcome
        .blocked
        .iter()
        .map(|link| pb::BlockedLink {
            profile_id: link.profile_id.map(|id| id.to_string()).unwrap_or_default(),
            identifiers: link.identifiers.iter().map(proto_identifier_of).collect(),
            reason: link.reason.clone(),
        })
        .collect();
    let ignored = |identifiers: &[Identifier], reason: &str| {
        identifiers
            .iter()
            .map(|identifier| pb::IgnoredIdentifier {
                identifier: Some(proto_identifier_of(identifier)),
                reason: reason.to_owned(),
            })
            .collect::<Vec<_>>()
    };
    let mut ignored_identifiers = ignored(&outcome.junk_ignored, "junk");
    ignored_identifiers.extend(ignored(&outcome.hubs_ignored, "hub"));
    let suppressed = outcome.resolution == Resolution::Suppressed;
    let (resolution, merged, duplicate) = match outcome.resolution {
        Resolution::Created => (pb::ResolutionOutcome::Created, Vec::new(), false),
        Resolution::Attached if !outcome.blocked.is_empty() => {
            (pb::ResolutionOutcome::Blocked, Vec::new(), false)
        }
        Resolution::Attached => (pb::ResolutionOutcome::Attached, Vec::new(), false),
        Resolution::Merged { absorbed } => (pb::ResolutionOutcome::Merged, absorbed, false),
        Resolution::Duplicate => (pb::ResolutionOutcome::Unspecified, Vec::new(), true),
        Resolution::Suppressed => (pb::ResolutionOutcome::Unspecified, Vec::new(), false),
    };
    pb::WriteResponse {
        profile_id: if suppressed {
            String::new()
        } else {
            outcome.profile_id.to_string()
        },
        outcome: resolution as i32,
        merged_profile_ids: merged.iter().map(ToString::to_string).collect(),
        duplicate,
        blocked_links,
        suppressed,
        ignored_identifiers,
    }
}

#[tonic::async_trait]
impl ProfileRpc for ProfileApi {
    async fn identify(
        &self,
        request: Request<pb::IdentifyRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let call = identify_input(request.into_inner()).and_then(|i| self.service.identify_call(i));
        self.write(call).await.map(Response::new)
    }

    async fn track(
        &self,
        request: Request<pb::TrackRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let call = track_input(request.into_inner()).and_then(|i| self.service.track_call(i));
        self.write(call).await.map(Response::new)
    }

    async fn ingest(
        &self,
        request: Request<Streaming<pb::IngestRequest>>,
    ) -> Result<Response<pb::IngestResponse>, Status> {
        let mut items = request.into_inner();
        let mut summary = IngestSummary::new(self.service.limits().ingest_errors_max);
        let mut chunk = Chunk::default();
        let mut in_flight: VecDeque<PendingChunk> = VecDeque::new();
        let mut index: u64 = 0;
        let mut stopping = self.stopping.clone();
        let mut stopped = false;
        loop {
            let next = match &mut stopping {
                Some(stop) => tokio::select! {
                    biased;
                    _ = stop.wait_for(|stopping| *stopping) => {
                        stopped = true;
                        None
                    }
                    item = items.message() => item?,
                },
                None => items.message().await?,
            };
            let Some(item) = next else {
                break;
            };
            let message_id = item_message_id(&item);
            match self.ingest_call(item) {
                Ok(call) => chunk.push(index, call),
                Err(error) => summary.reject(index, message_id, error),
            }
            index += 1;
            if chunk.calls.len() >= INGEST_CHUNK_ITEMS {
                in_flight.push_back(self.send_chunk(std::mem::take(&mut chunk)));
                if in_flight.len() >= INGEST_CHUNKS_IN_FLIGHT_MAX {
                    if let Some(pending) = in_flight.pop_front() {
                        summary.settle(pending).await?;
                    }
                }
            }
        }
        if !chunk.calls.is_empty() {
            in_flight.push_back(self.send_chunk(chunk));
        }
        while let Some(pending) = in_flight.pop_front() {
            summary.settle(pending).await?;
        }
        self.service.record_ingest(IngestCounts {
            accepted: summary.response.accepted,
            duplicate: summary.response.duplicate,
            rejected: summary.response.rejected,
        });
        if stopped {
            // What was received is durable; the client resends the rest
            // (message ids make resending what was stored harmless).
            return Err(Status::unavailable(format!(
                "the server is shutting down: the first {index} items were handled \
                 ({} accepted, {} duplicate, {} rejected) and are durable; send the rest again",
                summary.response.accepted, summary.response.duplicate, summary.response.rejected
            )));
        }
        Ok(Response::new(summary.response))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let caller = caller_name(&request);
        let request = request.into_inner();
        let lookup = profile_lookup(request.lookup).map_err(to_status)?;
        let events_limit = usize::try_from(request.events_limit).unwrap_or(usize::MAX);
        let profile = self
            .service
            .get_profile(lookup, events_limit)
            .await
            .map_err(to_status)?;
        if let Some(access_log) = &self.access_log {
            access_log
                .record(AccessEntry {
                    profile: profile.profile.profile_id,
                    at: self.service.clock().now(),
                    caller,
                    method: "GetProfile".to_owned(),
                })
                .await;
        }
        Ok(Response::new(pb::GetProfileResponse {
            profile: Some(proto_profile(&profile.profile, &profile.computed)),
        }))
    }

    async fn unmerge(
        &self,
        request: Request<pb::UnmergeRequest>,
    ) -> Result<Response<pb::UnmergeResponse>, Status> {
        let input = unmerge_input(request.into_inner()).map_err(to_status)?;
        let outcome = self.service.unmerge(input).await.map_err(to_status)?;
        Ok(Response::new(pb::UnmergeResponse {
            profile_id: outcome.profile_id.to_string(),
            new_profile_id: outcome.new_profile_id.to_string(),
            moved_events: outcome.moved_events,
            moved_trait_values: outcome.moved_trait_values,
        }))
    }

    async fn list_match_candidates(
        &self,
        request: Request<pb::ListMatchCandidatesRequest>,
    ) -> Result<Response<pb::ListMatchCandidatesResponse>, Status> {
        let request = request.into_inner();
        let page_size = usize::try_from(request.page_size).unwrap_or(usize::MAX);
        let (candidates, next_page_token) = self
            .service
            .list_match_candidates(page_size, &request.page_token)
            .map_err(to_status)?;
        Ok(Response::new(pb::ListMatchCandidatesResponse {
            candidates: candidates.iter().map(proto_candidate).collect(),
            next_page_token,
        }))
    }

    async fn review_match_candidate(
        &self,
        request: Request<pb::ReviewMatchCandidateRequest>,
    ) -> Result<Response<pb::ReviewMatchCandidateResponse>, Status> {
        let request = request.into_inner();
        let accept = match request.decision() {
            pb::ReviewDecision::Accept => true,
            pb::ReviewDecision::Reject => false,
            pb::ReviewDecision::Unspecified => {
                return Err(to_status(ServiceError::invalid(
                    "decision",
                    "set REVIEW_DECISION_ACCEPT or REVIEW_DECISION_REJECT",
                )));
            }
        };
        let outcome = self
            .service
            .review_match_candidate(
                &request.candidate_id,
                accept,
                request.message_id,
                request.reviewer,
            )
            .await
            .map_err(to_status)?;
        let response = match outcome {
            ReviewOutcome::Merged { survivor, absorbed } => pb::ReviewMatchCandidateResponse {
                decision: pb::ReviewDecision::Accept as i32,
                profile_id: survivor.to_string(),
                merged_profile_ids: vec![absorbed.to_string()],
            },
            ReviewOutcome::Rejected => pb::ReviewMatchCandidateResponse {
                decision: pb::ReviewDecision::Reject as i32,
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn update_consent(
        &self,
        request: Request<pb::UpdateConsentRequest>,
    ) -> Result<Response<pb::UpdateConsentResponse>, Status> {
        let input = consent_input(request.into_inner()).map_err(to_status)?;
        let profile_id = self
            .service
            .update_consent(input)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::UpdateConsentResponse {
            profile_id: profile_id.to_string(),
        }))
    }

    async fn run_maintenance(
        &self,
        _request: Request<pb::RunMaintenanceRequest>,
    ) -> Result<Response<pb::RunMaintenanceResponse>, Status> {
        let report = self.service.run_maintenance().await.map_err(to_status)?;
        let segment_profiles_evaluated = match &self.segments {
            Some(segments) => segments.sweep().await.map_err(to_status)?,
            None => 0,
        };
        let access_entries_removed = match &self.privacy {
            Some(privacy) => privacy.expire_access_log().await.map_err(to_status)?,
            None => 0,
        };
        Ok(Response::new(pb::RunMaintenanceResponse {
            customers: report.customers,
            events_removed: report.events_removed,
            segment_profiles_evaluated,
            access_entries_removed,
        }))
    }

    async fn list_profiles(
        &self,
        request: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        let request = request.into_inner();
        let page_size = usize::try_from(request.page_size).unwrap_or(usize::MAX);
        let (ids, next_page_token) = self
            .service
            .list_profiles(page_size, &request.page_token)
            .map_err(to_status)?;
        Ok(Response::new(pb::ListProfilesResponse {
            profile_ids: ids.iter().map(ToString::to_string).collect(),
            next_page_token,
        }))
    }

    async fn count_profiles(
        &self,
        _request: Request<pb::CountProfilesRequest>,
    ) -> Result<Response<pb::CountProfilesResponse>, Status> {
        Ok(Response::new(pb::CountProfilesResponse {
            profiles: self.service.count_profiles(),
        }))
    }

    async fn run_matching(
        &self,
        _request: Request<pb::RunMatchingRequest>,
    ) -> Result<Response<pb::RunMatchingResponse>, Status> {
        let outcome = self.service.run_matching().await.map_err(to_status)?;
        Ok(Response::new(pb::RunMatchingResponse {
            profiles_checked: outcome.profiles_checked,
            merges: outcome.merges,
            candidates: outcome.candidates,
            model_version: outcome.model_version,
        }))
    }
}

fn proto_candidate(candidate: &MatchCandidate) -> pb::MatchCandidate {
    pb::MatchCandidate {
        candidate_id: candidate_id(candidate.first, candidate.second),
        profile_ids: candidate.live.iter().map(ToString::to_string).collect(),
        score: candidate.score,
        evidence: candidate
            .evidence
            .iter()
            .map(|evidence| pb::FieldEvidence {
                field: evidence.field.clone(),
                similarity: evidence.similarity,
                weight: evidence.weight,
                level: evidence.level.clone(),
            })
            .collect(),
        found_at: Some(to_timestamp(candidate.found_at)),
        model_version: candidate.model_version,
    }
}

impl ProfileApi {
    fn ingest_call(&self, item: pb::IngestRequest) -> Result<WriteCall, ServiceError> {
        match item.item {
            Some(pb::ingest_request::Item::Identify(identify)) => identify_input(identify)
                .and_then(|input| self.service.identify_call(input))
                .map_err(|error| error.within("identify.")),
            Some(pb::ingest_request::Item::Track(track)) => track_input(track)
                .and_then(|input| self.service.track_call(input))
                .map_err(|error| error.within("track.")),
            None => Err(ServiceError::invalid("item", "set identify or track")),
        }
    }

    /// Starts committing a chunk at once, so the stream keeps being read
    /// while the store works.
    fn send_chunk(&self, chunk: Chunk) -> PendingChunk {
        let service = Arc::clone(&self.service);
        let Chunk { indices, calls } = chunk;
        let message_ids = calls
            .iter()
            .map(|c| c.provenance.message_id.clone())
            .collect();
        PendingChunk {
            indices,
            message_ids,
            results: tokio::spawn(async move { service.write_many(calls).await }),
        }
    }
}

#[derive(Default)]
struct Chunk {
    indices: Vec<u64>,
    calls: Vec<WriteCall>,
}

impl Chunk {
    fn push(&mut self, index: u64, call: WriteCall) {
        self.indices.push(index);
        self.calls.push(call);
    }
}

struct PendingChunk {
    indices: Vec<u64>,
    message_ids: Vec<String>,
    results: JoinHandle<Result<ApplyResults, ServiceError>>,
}

struct IngestSummary {
    response: pb::IngestResponse,
    errors_max: usize,
}

impl IngestSummary {
    fn new(errors_max: usize) -> Self {
        IngestSummary {
            response: pb::IngestResponse::default(),
            errors_max,
        }
    }

    fn reject(&mut self, index: u64, message_id: String, error: ServiceError) {
        self.response.rejected += 1;
        if self.response.errors.len() >= self.errors_max {
            return;
        }
        let (field, description) = match error {
            ServiceError::InvalidArgument(violation) => (violation.field, violation.description),
            other => (String::new(), to_status(other).message().to_owned()),
        };
        self.response.errors.push(pb::IngestItemError {
            index,
            message_id,
            field,
            description,
        });
    }

    /// Waits until a chunk is durable and counts its outcomes. A chunk that
    /// cannot be committed fails the whole stream: the caller must retry,
    /// and message ids make the retry safe.
    async fn settle(&mut self, pending: PendingChunk) -> Result<(), Status> {
        let results = pending
            .results
            .await
            .map_err(|_| Status::internal("internal error"))?
            .map_err(to_status)?;
        let items = pending.indices.into_iter().zip(pending.message_ids);
        for ((index, message_id), result) in items.zip(results) {
            match result {
                Ok(outcome) if outcome.resolution == Resolution::Duplicate => {
                    self.response.duplicate += 1;
                }
                Ok(outcome) if outcome.resolution == Resolution::Suppressed => {
                    self.response.suppressed += 1;
                }
                Ok(_) => self.response.accepted += 1,
                Err(error) => self.reject(index, message_id, error.into()),
            }
        }
        Ok(())
    }
}

fn item_message_id(item: &pb::IngestRequest) -> String {
    match &item.item {
        Some(pb::ingest_request::Item::Identify(identify)) => identify.message_id.clone(),
        Some(pb::ingest_request::Item::Track(track)) => track.message_id.clone(),
        None => String::new(),
    }
}
