use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::caller::caller_name;
use super::convert::{profile_lookup, to_timestamp};
use super::pb::{self, segment_service_server::SegmentService as SegmentRpc};
use super::to_status;
use crate::computed::custom::CustomTraitDefinition;
use crate::model::{AccessEntry, Clock, ProfileId};
use crate::privacy::AccessLog;
use crate::segments::{ComputedTraitInput, SegmentInput, SegmentService, SegmentSummary};
use crate::service::ServiceError;

/// Members sent per message batch of `ListMembers` before yielding.
const MEMBERS_STREAM_BUFFER: usize = 256;
const WATCH_STREAM_BUFFER: usize = 64;

/// `sightline.v1.SegmentService` over the domain service.
pub struct SegmentApi {
    service: Arc<SegmentService>,
    access_log: Option<(AccessLog, Arc<dyn Clock>)>,
}

impl SegmentApi {
    pub fn new(service: Arc<SegmentService>) -> Self {
        SegmentApi {
            service,
            access_log: None,
        }
    }

    /// Logs every answer that names a profile (`CheckMembership`, each
    /// member `ListMembers` sends) as a read of that person's data.
    pub fn with_access_log(mut self, access_log: AccessLog, clock: Arc<dyn Clock>) -> Self {
        self.access_log = Some((access_log, clock));
        self
    }

    async fn log_read(&self, profile: ProfileId, caller: &str, method: &str) {
        if let Some((access_log, clock)) = &self.access_log {
            access_log
                .record(AccessEntry {
                    profile,
                    at: clock.now(),
                    caller: caller.to_owned(),
                    method: method.to_owned(),
                })
                .await;
        }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn proto_segment(summary: SegmentSummary) -> pb::Segment {
    let definition = summary.definition;
    pb::Segment {
        ready: definition.is_ready(),
        id: definition.id,
        name: definition.name,
        description: definition.description,
        rule: definition.rule,
        holdout_percent: definition.holdout_percent,
        created_at: Some(to_timestamp(definition.created_at)),
        updated_at: Some(to_timestamp(definition.updated_at)),
        member_count: summary.member_count,
        holdout_count: summary.holdout_count,
    }
}

fn proto_computed_trait(definition: CustomTraitDefinition) -> pb::ComputedTrait {
    pb::ComputedTrait {
        name: definition.name,
        event: definition.event,
        aggregation: definition.aggregation.as_str().to_owned(),
        property: definition.property,
        window_days: definition.window_days,
        r#where: definition.condition,
        created_at: Some(to_timestamp(definition.created_at)),
        updated_at: Some(to_timestamp(definition.updated_at)),
        ready: definition.ready,
    }
}

#[tonic::async_trait]
impl SegmentRpc for SegmentApi {
    async fn put_computed_trait(
        &self,
        request: Request<pb::PutComputedTraitRequest>,
    ) -> Result<Response<pb::PutComputedTraitResponse>, Status> {
        let definition = request
            .into_inner()
            .computed_trait
            .ok_or_else(|| to_status(ServiceError::invalid("computed_trait", "is required")))?;
        let input = ComputedTraitInput {
            name: definition.name,
            event: definition.event,
            aggregation: definition.aggregation,
            property: definition.property,
            window_days: definition.window_days,
            condition: definition.r#where,
        };
        let (definition, created) = self
            .service
            .put_computed_trait(input)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::PutComputedTraitResponse {
            computed_trait: Some(proto_computed_trait(definition)),
            created,
        }))
    }

    async fn get_computed_trait(
        &self,
        request: Request<pb::GetComputedTraitRequest>,
    ) -> Result<Response<pb::GetComputedTraitResponse>, Status> {
        let definition = self
            .service
            .get_computed_trait(&request.into_inner().name)
            .map_err(to_status)?;
        Ok(Response::new(pb::GetComputedTraitResponse {
            computed_trait: Some(proto_computed_trait(definition)),
        }))
    }

    async fn list_computed_traits(
        &self,
        _request: Request<pb::ListComputedTraitsRequest>,
    ) -> Result<Response<pb::ListComputedTraitsResponse>, Status> {
        Ok(Response::new(pb::ListComputedTraitsResponse {
            computed_traits: self
                .service
                .list_computed_traits()
                .into_iter()
                .map(proto_computed_trait)
                .collect(),
        }))
    }

    async fn delete_computed_trait(
        &self,
        request: Request<pb::DeleteComputedTraitRequest>,
    ) -> Result<Response<pb::DeleteComputedTraitResponse>, Status> {
        self.service
            .delete_computed_trait(&request.into_inner().name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteComputedTraitResponse {}))
    }

    async fn preview_segment(
        &self,
        request: Request<pb::PreviewSegmentRequest>,
    ) -> Result<Response<pb::PreviewSegmentResponse>, Status> {
        let request = request.into_inner();
        let page_size = usize::try_from(request.page_size).unwrap_or(usize::MAX);
        let (count, ids) = self
            .service
            .preview(&request.rule, page_size)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::PreviewSegmentResponse {
            count,
            profile_ids: ids.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn put_segment(
        &self,
        request: Request<pb::PutSegmentRequest>,
    ) -> Result<Response<pb::PutSegmentResponse>, Status> {
        let segment = request
            .into_inner()
            .segment
            .ok_or_else(|| to_status(ServiceError::invalid("segment", "required")))?;
        let input = SegmentInput {
            id: segment.id,
            name: segment.name,
            description: segment.description,
            rule: segment.rule,
            holdout_percent: segment.holdout_percent,
        };
        let (summary, created) = self.service.put(input).await.map_err(to_status)?;
        Ok(Response::new(pb::PutSegmentResponse {
            segment: Some(proto_segment(summary)),
            created,
        }))
    }

    async fn get_segment(
        &self,
        request: Request<pb::GetSegmentRequest>,
    ) -> Result<Response<pb::GetSegmentResponse>, Status> {
        let summary = self
            .service
            .get(&request.into_inner().id)
            .map_err(to_status)?;
        Ok(Response::new(pb::GetSegmentResponse {
            segment: Some(proto_segment(summary)),
        }))
    }

    async fn list_segments(
        &self,
        _request: Request<pb::ListSegmentsRequest>,
    ) -> Result<Response<pb::ListSegmentsResponse>, Status> {
        Ok(Response::new(pb::ListSegmentsResponse {
            segments: self.service.list().into_iter().map(proto_segment).collect(),
        }))
    }

    async fn delete_segment(
        &self,
        request: Request<pb::DeleteSegmentRequest>,
    ) -> Result<Response<pb::DeleteSegmentResponse>, Status> {
        self.service
            .delete(&request.into_inner().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteSegmentResponse {}))
    }

    type ListMembersStream = ResponseStream<pb::SegmentMember>;

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<Self::ListMembersStream>, Status> {
        let caller = caller_name(&request);
        let request = request.into_inner();
        let after = match request.after_profile_id.as_str() {
            "" => None,
            text => Some(text.parse::<ProfileId>().map_err(|error| {
                to_status(ServiceError::invalid("after_profile_id", error.to_string()))
            })?),
        };
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let members = self
            .service
            .members(&request.segment_id, request.include_holdout, after, limit)
            .map_err(to_status)?;
        // A bounded channel: a slow reader holds a snapshot of the bitmap,
        // never the writer.
        let (sender, receiver) = tokio::sync::mpsc::channel(MEMBERS_STREAM_BUFFER);
        let access_log = self.access_log.clone();
        tokio::spawn(async move {
            for member in members {
                if let Some((access_log, clock)) = &access_log {
                    access_log
                        .record(AccessEntry {
                            profile: member.profile,
                            at: clock.now(),
                            caller: caller.clone(),
                            method: "ListMembers".to_owned(),
                        })
                        .await;
                }
                let message = pb::SegmentMember {
                    profile_id: member.profile.to_string(),
                    holdout: member.holdout,
                };
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn check_membership(
        &self,
        request: Request<pb::CheckMembershipRequest>,
    ) -> Result<Response<pb::CheckMembershipResponse>, Status> {
        let caller = caller_name(&request);
        let lookup = profile_lookup(request.into_inner().lookup).map_err(to_status)?;
        let check = self.service.check(lookup).await.map_err(to_status)?;
        self.log_read(check.profile, &caller, "CheckMembership")
            .await;
        Ok(Response::new(pb::CheckMembershipResponse {
            profile_id: check.profile.to_string(),
            memberships: check
                .memberships
                .into_iter()
                .map(|(segment_id, holdout)| pb::Membership {
                    segment_id,
                    holdout,
                })
                .collect(),
        }))
    }

    type WatchMembershipStream = ResponseStream<pb::MembershipChange>;

    async fn watch_membership(
        &self,
        request: Request<pb::WatchMembershipRequest>,
    ) -> Result<Response<Self::WatchMembershipStream>, Status> {
        let mut watch = self
            .service
            .watch(&request.into_inner().segment_ids)
            .map_err(to_status)?;
        let (sender, receiver) = tokio::sync::mpsc::channel(WATCH_STREAM_BUFFER);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    () = sender.closed() => return,
                    next = watch.next() => next,
                };
                let message = match next {
                    Ok(named) => Ok(pb::MembershipChange {
                        segment_id: named.segment_id,
                        profile_id: named.change.profile.to_string(),
                        kind: if named.change.entered {
                            pb::membership_change::Kind::Entered
                        } else {
                            pb::membership_change::Kind::Exited
                        } as i32,
                        holdout: named.change.holdout,
                        at: Some(to_timestamp(named.change.at)),
                    }),
                    Err(error) => Err(to_status(error)),
                };
                let ended = message.is_err();
                // The client went away, or the stream ends with the error.
                if sender.send(message).await.is_err() || ended {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}
