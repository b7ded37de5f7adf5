//! The Sightline calls the loops of [`super::measure`] time.

use sightline::api::pb::{
    self, check_membership_request, get_profile_request,
    profile_service_client::ProfileServiceClient, segment_service_client::SegmentServiceClient,
};
use tonic::transport::Channel;

use super::measure::Caller;
use super::population::{email_of, mix, pair_email, pair_phone};

/// `GetProfile` by the email of a random person of `people`, with the
/// server's default number of events.
#[derive(Clone)]
pub struct GetProfile {
    client: ProfileServiceClient<Channel>,
    people: u64,
}

impl GetProfile {
    pub fn new(channel: Channel, people: u64) -> Self {
        Self {
            client: ProfileServiceClient::new(channel),
            people,
        }
    }
}

impl Caller for GetProfile {
    async fn call(&mut self, sequence: u64) {
        let request = pb::GetProfileRequest {
            lookup: Some(get_profile_request::Lookup::Identifier(email_of(
                mix(sequence) % self.people,
            ))),
            events_limit: 0,
        };
        self.client.get_profile(request).await.expect("get profile");
    }
}

/// `CheckMembership` by the email of a random person of `people`.
#[derive(Clone)]
pub struct CheckMembership {
    client: SegmentServiceClient<Channel>,
    people: u64,
}

impl CheckMembership {
    pub fn new(channel: Channel, people: u64) -> Self {
        Self {
            client: SegmentServiceClient::new(channel),
            people,
        }
    }
}

impl Caller for CheckMembership {
    async fn call(&mut self, sequence: u64) {
        let request = pb::CheckMembershipRequest {
            lookup: Some(check_membership_request::Lookup::Identifier(email_of(
                mix(sequence) % self.people,
            ))),
        };
        self.client
            .check_membership(request)
            .await
            .expect("check membership");
    }
}

/// `Identify` with the email of one half of pair `first_pair + sequence`
/// and the phone of the other: one merge of two existing profiles.
#[derive(Clone)]
pub struct IdentifyMerge {
    client: ProfileServiceClient<Channel>,
    first_pair: u64,
    /// Where refusals (an overloaded server) are counted; `None`: a
    /// refusal ends the benchmark.
    refused: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl IdentifyMerge {
    pub fn new(channel: Channel, first_pair: u64) -> Self {
        Self {
            client: ProfileServiceClient::new(channel),
            first_pair,
            refused: None,
        }
    }

    /// Counts calls the server refused instead of failing on them.
    pub fn counting_refusals(
        channel: Channel,
        first_pair: u64,
        refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        Self {
            refused: Some(refused),
            ..Self::new(channel, first_pair)
        }
    }
}

impl Caller for IdentifyMerge {
    async fn call(&mut self, sequence: u64) {
        let pair = self.first_pair + sequence;
        let response = self
            .client
            .identify(pb::IdentifyRequest {
                identifiers: vec![pair_email(pair), pair_phone(pair)],
                traits: None,
                message_id: format!("merge-{pair}"),
                timestamp: None,
                source: "bench".to_owned(),
            })
            .await;
        let response = match (response, &self.refused) {
            (Ok(response), _) => response.into_inner(),
            (Err(_), Some(refused)) => {
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            (Err(status), None) => panic!("identify: {status:?}"),
        };
        assert_eq!(
            response.merged_profile_ids.len(),
            1,
            "pair {pair} should merge two profiles: {response:?}"
        );
    }
}
