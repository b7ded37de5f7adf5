//! The operator's commands beyond writing and reading one profile:
//! segments, consent, unmerge, match candidates and passes, maintenance,
//! privacy requests and finding profiles. Each is one or a few calls to a
//! running server, answered as JSON.

use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::{Value, json};

use super::{
    BearerToken, CliError, Target, channel, parse_identifier, profile_client, timestamp_json,
};
use crate::api::pb::{
    self, privacy_service_client::PrivacyServiceClient,
    segment_service_client::SegmentServiceClient,
};

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Product recommendations for a person.
    Recommend(super::personalisation::RecommendArgs),
    /// Upload catalogue entries; products bought together.
    Products {
        #[command(subcommand)]
        command: super::personalisation::ProductCommand,
    },
    /// Computed traits of one's own (aggregations of event properties).
    Traits {
        #[command(subcommand)]
        command: super::personalisation::TraitCommand,
    },
    /// Define, inspect and watch segments.
    Segments {
        #[command(subcommand)]
        command: SegmentCommand,
    },
    /// Record consent decisions for a person.
    Consent {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        profile: ProfileArgs,
        /// A channel and purpose granted, as channel:purpose (repeatable),
        /// e.g. email:marketing.
        #[arg(long)]
        grant: Vec<String>,
        /// A channel and purpose withdrawn, as channel:purpose (repeatable).
        #[arg(long)]
        withdraw: Vec<String>,
        /// When the person decided (RFC 3339) [default: now].
        #[arg(long)]
        timestamp: Option<String>,
        /// Idempotency key: a repeated message id is recorded once.
        #[arg(long, default_value = "")]
        message_id: String,
        /// Provenance: where the decision was made.
        #[arg(long, default_value = "cli")]
        source: String,
    },
    /// Split identifiers off a profile into a new one, with the events and
    /// trait values they brought.
    Unmerge {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        profile: ProfileArgs,
        /// An identifier to split off, as kind:value (repeatable).
        #[arg(long = "split", required = true)]
        split: Vec<String>,
        /// Why, recorded in the journal.
        #[arg(long)]
        reason: String,
        /// Idempotency key.
        #[arg(long, default_value = "")]
        message_id: String,
    },
    /// Review fuzzy-match candidates.
    Candidates {
        #[command(subcommand)]
        command: CandidateCommand,
    },
    /// Run fuzzy matching over every stored profile.
    Matching {
        #[command(subcommand)]
        command: MatchingCommand,
    },
    /// Refresh the RFM quintiles, apply retention and re-evaluate
    /// time-dependent segments now.
    Maintenance {
        #[command(flatten)]
        target: Target,
    },
    /// List subject-access and erasure requests (no personal data).
    PrivacyRequests {
        #[command(flatten)]
        target: Target,
        /// Only the overdue ones.
        #[arg(long)]
        overdue: bool,
    },
    /// Find profiles.
    Profiles {
        #[command(subcommand)]
        command: ProfilesCommand,
    },
}

/// A person, by identifier or by profile id.
#[derive(Args)]
pub struct ProfileArgs {
    /// Identifier as kind:value, e.g. email:jane@example.com.
    #[arg(
        long = "id",
        conflicts_with = "profile_id",
        required_unless_present = "profile_id"
    )]
    identifier: Option<String>,
    /// Profile id, e.g. p42 (a merged-away id finds the survivor).
    #[arg(long)]
    profile_id: Option<String>,
}

#[derive(Subcommand)]
pub enum SegmentCommand {
    /// Create a segment or replace its definition.
    Put {
        #[command(flatten)]
        target: Target,
        /// Segment id: letters, digits, `-` and `_`.
        #[arg(long)]
        segment: String,
        /// CEL rule over `profile`, e.g. 'profile.computed.frequency > 2'.
        #[arg(long)]
        rule: String,
        /// Display name [default: the id].
        #[arg(long)]
        name: Option<String>,
        /// What the segment is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Percent of would-be members held out as a control group.
        #[arg(long, default_value_t = 0.0)]
        holdout: f64,
    },
    /// Show one segment with its member counts.
    Get {
        #[command(flatten)]
        target: Target,
        /// Segment id.
        #[arg(long)]
        segment: String,
    },
    /// List every segment.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Delete a segment and its memberships.
    Delete {
        #[command(flatten)]
        target: Target,
        /// Segment id.
        #[arg(long)]
        segment: String,
    },
    /// List a segment's members in profile id order.
    Members {
        #[command(flatten)]
        target: Target,
        /// Segment id.
        #[arg(long)]
        segment: String,
        /// Also list holdout members.
        #[arg(long)]
        include_holdout: bool,
        /// At most this many (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u64,
    },
    /// Which segments a person is in.
    Check {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// Print enter and exit changes as they happen, one JSON line each.
    Watch {
        #[command(flatten)]
        target: Target,
        /// Segment id to watch (repeatable) [default: all].
        #[arg(long)]
        segment: Vec<String>,
        /// Stop after this many changes (0: run until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Count the profiles a rule matches now, without defining a segment.
    Preview {
        #[command(flatten)]
        target: Target,
        /// CEL rule, as for `put`.
        #[arg(long)]
        rule: String,
        /// Matching profile ids to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Subcommand)]
pub enum CandidateCommand {
    /// Pending candidates with the evidence per field.
    List {
        #[command(flatten)]
        target: Target,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Merge a candidate's two profiles (under merge protection).
    Accept {
        #[command(flatten)]
        target: Target,
        /// Candidate id, as `list` shows it (e.g. p3:p9).
        #[arg(long)]
        candidate: String,
        /// Who decided, recorded with the decision.
        #[arg(long, default_value = "cli")]
        reviewer: String,
    },
    /// Keep a candidate's profiles apart; the pair is not proposed again.
    Reject {
        #[command(flatten)]
        target: Target,
        /// Candidate id, as `list` shows it.
        #[arg(long)]
        candidate: String,
        /// Who decided, recorded with the decision.
        #[arg(long, default_value = "cli")]
        reviewer: String,
    },
}

#[derive(Subcommand)]
pub enum MatchingCommand {
    /// Match every stored profile now.
    Run {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
pub enum ProfilesCommand {
    /// Live profile ids in id order.
    List {
        #[command(flatten)]
        target: Target,
        /// At most this many per page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue after a page: its `next_page_token`.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// How many live profiles there are.
    Count {
        #[command(flatten)]
        target: Target,
    },
}

type Segments = SegmentServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerToken>,
>;

async fn segments(target: &Target) -> Result<Segments, CliError> {
    Ok(SegmentServiceClient::with_interceptor(
        channel(&target.server).await?,
        target.bearer()?,
    ))
}

impl ProfileArgs {
    pub(super) fn lookup<L>(
        &self,
        by_profile_id: fn(String) -> L,
        by_identifier: fn(pb::Identifier) -> L,
    ) -> Result<L, CliError> {
        match (&self.identifier, &self.profile_id) {
            (Some(identifier), _) => Ok(by_identifier(parse_identifier(identifier)?)),
            (None, Some(profile_id)) => Ok(by_profile_id(profile_id.clone())),
            (None, None) => Err(CliError::Usage("give --id or --profile-id".to_owned())),
        }
    }
}

/// Runs one operator command; `watch` prints its changes as they come and
/// answers `null`.
pub async fn run(command: OperatorCommand) -> Result<Value, CliError> {
    match command {
        OperatorCommand::Recommend(args) => super::personalisation::recommend(args).await,
        OperatorCommand::Products { command } => super::personalisation::products(command).await,
        OperatorCommand::Traits { command } => super::personalisation::traits(command).await,
        OperatorCommand::Segments { command } => run_segments(command).await,
        OperatorCommand::Consent {
            target,
            profile,
            grant,
            withdraw,
            timestamp,
            message_id,
            source,
        } => {
            use pb::update_consent_request::Lookup;
            let mut changes = Vec::new();
            for (pairs, state) in [
                (&grant, pb::ConsentState::Granted),
                (&withdraw, pb::ConsentState::Withdrawn),
            ] {
                for pair in pairs {
                    let (channel, purpose) = pair.split_once(':').ok_or_else(|| {
                        CliError::Usage(format!("`{pair}` is not channel:purpose"))
                    })?;
                    changes.push(pb::ConsentChange {
                        channel: channel.to_owned(),
                        purpose: purpose.to_owned(),
                        state: state as i32,
                    });
                }
            }
            if changes.is_empty() {
                return Err(CliError::Usage("give --grant or --withdraw".to_owned()));
            }
            let request = pb::UpdateConsentRequest {
                lookup: Some(profile.lookup(Lookup::ProfileId, Lookup::Identifier)?),
                changes,
                timestamp: timestamp.as_deref().map(parse_timestamp).transpose()?,
                message_id,
                source,
            };
            let response = profile_client(channel(&target.server).await?, target.bearer()?)
                .update_consent(request)
                .await?
                .into_inner();
            Ok(json!({"profile_id": response.profile_id}))
        }
        OperatorCommand::Unmerge {
            target,
            profile,
            split,
            reason,
            message_id,
        } => {
            use pb::unmerge_request::Lookup;
            let request = pb::UnmergeRequest {
                lookup: Some(profile.lookup(Lookup::ProfileId, Lookup::Identifier)?),
                identifiers: split
                    .iter()
                    .map(|text| parse_identifier(text))
                    .collect::<Result<_, _>>()?,
                message_id,
                reason,
            };
            let response = profile_client(channel(&target.server).await?, target.bearer()?)
                .unmerge(request)
                .await?
                .into_inner();
            Ok(json!({
                "profile_id": response.profile_id,
                "new_profile_id": response.new_profile_id,
                "moved_events": response.moved_events,
                "moved_trait_values": response.moved_trait_values,
            }))
        }
        OperatorCommand::Candidates { command } => run_candidates(command).await,
        OperatorCommand::Matching {
            command: MatchingCommand::Run { target },
        } => {
            let response = profile_client(channel(&target.server).await?, target.bearer()?)
                .run_matching(pb::RunMatchingRequest {})
                .await?
                .into_inner();
            Ok(json!({
                "profiles_checked": response.profiles_checked,
                "merges": response.merges,
                "candidates": response.candidates,
                "model_version": response.model_version,
            }))
        }
        OperatorCommand::Maintenance { target } => {
            let response = profile_client(channel(&target.server).await?, target.bearer()?)
                .run_maintenance(pb::RunMaintenanceRequest {})
                .await?
                .into_inner();
            Ok(json!({
                "customers": response.customers,
                "events_removed": response.events_removed,
                "segment_profiles_evaluated": response.segment_profiles_evaluated,
                "access_entries_removed": response.access_entries_removed,
            }))
        }
        OperatorCommand::PrivacyRequests { target, overdue } => {
            let mut client = PrivacyServiceClient::with_interceptor(
                channel(&target.server).await?,
                target.bearer()?,
            );
            let response = client
                .list_privacy_requests(pb::ListPrivacyRequestsRequest {
                    overdue_only: overdue,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let requests: Vec<Value> = response
                .requests
                .iter()
                .map(|request| {
                    json!({
                        "request_id": request.request_id,
                        "kind": request.kind().as_str_name(),
                        "status": request.status().as_str_name(),
                        "requester": request.requester,
                        "reason": request.reason,
                        "received_at": timestamp_json(request.received_at.as_ref()),
                        "due_at": timestamp_json(request.due_at.as_ref()),
                        "completed_at": timestamp_json(request.completed_at.as_ref()),
                        "overdue": request.overdue,
                    })
                })
                .collect();
            Ok(json!({"requests": requests}))
        }
        OperatorCommand::Profiles { command } => match command {
            ProfilesCommand::List {
                target,
                limit,
                page_token,
            } => {
                let response = profile_client(channel(&target.server).await?, target.bearer()?)
                    .list_profiles(pb::ListProfilesRequest {
                        page_size: limit,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok(json!({
                    "profile_ids": response.profile_ids,
                    "next_page_token": response.next_page_token,
                }))
            }
            ProfilesCommand::Count { target } => {
                let response = profile_client(channel(&target.server).await?, target.bearer()?)
                    .count_profiles(pb::CountProfilesRequest {})
                    .await?
                    .into_inner();
                Ok(json!({"profiles": response.profiles}))
            }
        },
    }
}

fn segment_json(segment: &pb::Segment) -> Value {
    json!({
        "id": segment.id,
        "name": segment.name,
        "description": segment.description,
        "rule": segment.rule,
        "holdout_percent": segment.holdout_percent,
        "member_count": segment.member_count,
        "holdout_count": segment.holdout_count,
        "ready": segment.ready,
        "created_at": timestamp_json(segment.created_at.as_ref()),
        "updated_at": timestamp_json(segment.updated_at.as_ref()),
    })
}

async fn run_segments(command: SegmentCommand) -> Result<Value, CliError> {
    match command {
        SegmentCommand::Put {
            target,
            segment,
            rule,
            name,
            description,
            holdout,
        } => {
            let request = pb::PutSegmentRequest {
                segment: Some(pb::Segment {
                    name: name.unwrap_or_else(|| segment.clone()),
                    id: segment,
                    description,
                    rule,
                    holdout_percent: holdout,
                    ..Default::default()
                }),
            };
            let response = segments(&target)
                .await?
                .put_segment(request)
                .await?
                .into_inner();
            Ok(json!({
                "created": response.created,
                "segment": response.segment.as_ref().map(segment_json),
            }))
        }
        SegmentCommand::Get { target, segment } => {
            let response = segments(&target)
                .await?
                .get_segment(pb::GetSegmentRequest { id: segment })
                .await?
                .into_inner();
            Ok(response
                .segment
                .as_ref()
                .map(segment_json)
                .unwrap_or(Value::Null))
        }
        SegmentCommand::List { target } => {
            let response = segments(&target)
                .await?
                .list_segments(pb::ListSegmentsRequest {})
                .await?
                .into_inner();
            let listed: Vec<Value> = response.segments.iter().map(segment_json).collect();
            Ok(json!({"segments": listed}))
        }
        SegmentCommand::Delete { target, segment } => {
            segments(&target)
                .await?
                .delete_segment(pb::DeleteSegmentRequest {
                    id: segment.clone(),
                })
                .await?;
            Ok(json!({"deleted": segment}))
        }
        SegmentCommand::Members {
            target,
            segment,
            include_holdout,
            limit,
        } => {
            let mut stream = segments(&target)
                .await?
                .list_members(pb::ListMembersRequest {
                    segment_id: segment,
                    include_holdout,
                    after_profile_id: String::new(),
                    limit,
                })
                .await?
                .into_inner();
            let mut members = Vec::new();
            while let Some(member) = stream.message().await? {
                members.push(json!({"profile_id": member.profile_id, "holdout": member.holdout}));
            }
            Ok(json!({"members": members}))
        }
        SegmentCommand::Check { target, profile } => {
            use pb::check_membership_request::Lookup;
            let response = segments(&target)
                .await?
                .check_membership(pb::CheckMembershipRequest {
                    lookup: Some(profile.lookup(Lookup::ProfileId, Lookup::Identifier)?),
                })
                .await?
                .into_inner();
            let memberships: Vec<Value> = response
                .memberships
                .iter()
                .map(|m| json!({"segment_id": m.segment_id, "holdout": m.holdout}))
                .collect();
            Ok(json!({"profile_id": response.profile_id, "memberships": memberships}))
        }
        SegmentCommand::Watch {
            target,
            segment,
            count,
        } => {
            let stream = segments(&target)
                .await?
                .watch_membership(pb::WatchMembershipRequest {
                    segment_ids: segment,
                })
                .await?
                .into_inner();
            let limit = if count == 0 {
                usize::MAX
            } else {
                count as usize
            };
            let mut changes = stream.take(limit);
            while let Some(change) = changes.next().await {
                let change = change?;
                let line = json!({
                    "segment_id": change.segment_id,
                    "profile_id": change.profile_id,
                    "kind": change.kind().as_str_name(),
                    "holdout": change.holdout,
                    "at": timestamp_json(change.at.as_ref()),
                });
                super::print_line(&line.to_string())?;
            }
            Ok(Value::Null)
        }
        SegmentCommand::Preview {
            target,
            rule,
            limit,
        } => {
            let response = segments(&target)
                .await?
                .preview_segment(pb::PreviewSegmentRequest {
                    rule,
                    page_size: limit,
                })
                .await?
                .into_inner();
            Ok(json!({"count": response.count, "profile_ids": response.profile_ids}))
        }
    }
}

async fn run_candidates(command: CandidateCommand) -> Result<Value, CliError> {
    let (target, candidate, reviewer, decision) = match command {
        CandidateCommand::List { target, limit } => {
            let response = profile_client(channel(&target.server).await?, target.bearer()?)
                .list_match_candidates(pb::ListMatchCandidatesRequest {
                    page_size: limit,
                    page_token: String::new(),
                })
                .await?
                .into_inner();
            let candidates: Vec<Value> = response
                .candidates
                .iter()
                .map(|candidate| {
                    json!({
                        "candidate_id": candidate.candidate_id,
                        "profile_ids": candidate.profile_ids,
                        "score": candidate.score,
                        "evidence": candidate.evidence.iter().map(|evidence| json!({
                            "field": evidence.field,
                            "level": evidence.level,
                            "similarity": evidence.similarity,
                            "weight": evidence.weight,
                        })).collect::<Vec<_>>(),
                        "found_at": timestamp_json(candidate.found_at.as_ref()),
                    })
                })
                .collect();
            return Ok(json!({
                "candidates": candidates,
                "next_page_token": response.next_page_token,
            }));
        }
        CandidateCommand::Accept {
            target,
            candidate,
            reviewer,
        } => (target, candidate, reviewer, pb::ReviewDecision::Accept),
        CandidateCommand::Reject {
            target,
            candidate,
            reviewer,
        } => (target, candidate, reviewer, pb::ReviewDecision::Reject),
    };
    let response = profile_client(channel(&target.server).await?, target.bearer()?)
        .review_match_candidate(pb::ReviewMatchCandidateRequest {
            candidate_id: candidate,
            decision: decision as i32,
            message_id: String::new(),
            reviewer,
        })
        .await?
        .into_inner();
    Ok(json!({
        "decision": response.decision().as_str_name(),
        "profile_id": response.profile_id,
        "merged_profile_ids": response.merged_profile_ids,
    }))
}

/// An RFC 3339 time, e.g. 2024-05-01T12:00:00Z.
pub fn parse_timestamp(text: &str) -> Result<prost_types::Timestamp, CliError> {
    let at = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|_| {
        CliError::Usage(format!(
            "`{text}` is not an RFC 3339 time, e.g. 2024-05-01T12:00:00Z"
        ))
    })?;
    Ok(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    })
}
