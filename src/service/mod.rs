//! The profile use cases between the API and the store: validate what callers
//! send against the configured limits, normalize identifiers, stamp
//! provenance and time, and drive the store. Knows neither tonic nor sled.

mod error;
mod validate;

use std::sync::Arc;

use crate::config::Limits;
use crate::identity::Normalizer;
use crate::model::{Clock, ProfileId, ProfileView, UnixMillis, WriteCall, WriteOutcome};
use crate::store::{ApplyResults, ProfileStore};

pub use error::{FieldViolation, ServiceError};
pub use validate::{Json, RawIdentifier};

/// An identify call as received, not yet validated.
#[derive(Debug, Clone, Default)]
pub struct IdentifyInput {
    pub identifiers: Vec<RawIdentifier>,
    pub traits: Json,
    pub message_id: String,
    pub timestamp: Option<UnixMillis>,
    pub source: String,
}

/// A track call as received, not yet validated.
#[derive(Debug, Clone, Default)]
pub struct TrackInput {
    pub identifiers: Vec<RawIdentifier>,
    pub event: String,
    pub properties: Json,
    pub message_id: String,
    pub timestamp: Option<UnixMillis>,
    pub source: String,
}

/// How a caller names the profile it wants.
#[derive(Debug, Clone)]
pub enum ProfileLookup {
    ProfileId(String),
    Identifier(RawIdentifier),
}

pub struct ProfileService {
    store: Arc<dyn ProfileStore>,
    normalizer: Normalizer,
    limits: Limits,
    clock: Arc<dyn Clock>,
}

impl ProfileService {
    pub fn new(
        store: Arc<dyn ProfileStore>,
        normalizer: Normalizer,
        limits: Limits,
        clock: Arc<dyn Clock>,
    ) -> Self {
        ProfileService {
            store,
            normalizer,
            limits,
            clock,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn identify_call(&self, input: IdentifyInput) -> Result<WriteCall, ServiceError> {
        validate::identify(&self.normalizer, &self.limits, self.clock.now(), input)
    }

    pub fn track_call(&self, input: TrackInput) -> Result<WriteCall, ServiceError> {
        validate::track(&self.normalizer, &self.limits, self.clock.now(), input)
    }

    /// Applies one validated call and returns once it is durable.
    pub async fn write(&self, call: WriteCall) -> Result<WriteOutcome, ServiceError> {
        let mut results = self.store.apply(vec![call]).await?;
        match results.pop() {
            Some(result) => Ok(result?),
            None => Err(ServiceError::Internal(
                "the store answered no result for one call".to_owned(),
            )),
        }
    }

    /// Applies validated calls in order, each on its own, and returns once
    /// all are durable.
    pub async fn write_many(&self, calls: Vec<WriteCall>) -> Result<ApplyResults, ServiceError> {
        Ok(self.store.apply(calls).await?)
    }

    pub fn get_profile(
        &self,
        lookup: ProfileLookup,
        events_limit: usize,
    ) -> Result<ProfileView, ServiceError> {
        let events_max = match events_limit {
            0 => self.limits.events_per_read_default,
            asked => asked.min(self.limits.events_per_read_max),
        };
        let profile_id = match lookup {
            ProfileLookup::ProfileId(text) => text
                .parse::<ProfileId>()
                .map_err(|error| ServiceError::invalid("profile_id", error.to_string()))?,
            ProfileLookup::Identifier(raw) => {
                let identifier = validate::identifier(&self.normalizer, "identifier", &raw)?;
                self.store.find_profile_id(&identifier)?.ok_or_else(|| {
                    ServiceError::NotFound("no profile holds this identifier".to_owned())
                })?
            }
        };
        self.store
            .read_profile(profile_id, events_max)?
            .ok_or_else(|| ServiceError::NotFound(format!("profile {profile_id} does not exist")))
    }
}
