//! The tracking endpoints: `POST /v1/{identify,track,page,screen,alias,group}`
//! with one message, `POST /v1/batch` and `/v1/import` with many. A call is
//! answered only once what it stored is durable; in a batch, a bad message
//! is reported and the others are stored.

use std::collections::HashMap;
use std::io::Read;

use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::HttpApi;
use super::reply::HttpError;
use super::segment_spec::{Action, MessageType, Translated, translate};
use crate::model::{Resolution, WriteCall};
use crate::service::{
    FieldViolation, IdentifyInput, IngestCounts, Json, ProfileLookup, RawIdentifier, ServiceError,
    TrackInput,
};

/// Rejected messages listed in a batch's answer; the count covers them all.
const REJECTIONS_LISTED_MAX: usize = 100;

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(default, rename = "sentAt")]
    sent_at: Option<Value>,
}

/// A trait identifier that was dropped because it is malformed.
struct Dropped {
    field: String,
    description: String,
}

impl HttpApi {
    pub(super) async fn one_message(
        &self,
        kind: MessageType,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Value, HttpError> {
        let body = decoded_body(headers, body, self.config.message_bytes_max, "message")?;
        let message: Value = serde_json::from_slice(&body)
            .map_err(|error| HttpError::invalid("", format!("not JSON: {error}")))?;
        let translated = translate(&message, Some(kind), None, self.service.clock().now())
            .map_err(HttpError::Invalid)?;
        let mut groups = GroupsSeen::default();
        let (call, dropped) = self
            .write_call(translated, &mut groups)
            .await
            .map_err(HttpError::from)?;
        let outcome = self.service.write(call).await?;
        self.service.record_ingest(IngestCounts {
            accepted: u64::from(!matches!(
                outcome.resolution,
                Resolution::Duplicate | Resolution::Suppressed
            )),
            duplicate: u64::from(outcome.resolution == Resolution::Duplicate),
            rejected: 0,
        });
        let mut answer = json!({"success": true});
        if outcome.resolution == Resolution::Duplicate {
            answer["duplicate"] = json!(true);
        }
        if !dropped.is_empty() {
            answer["ignored"] = dropped_json(&dropped);
        }
        Ok(answer)
    }

    pub(super) async fn batch(&self, headers: &HeaderMap, body: Bytes) -> Result<Value, HttpError> {
        let body = decoded_body(headers, body, self.config.batch_bytes_max, "batch")?;
        let batch: BatchBody<'_> = serde_json::from_slice(&body).map_err(|error| {
            HttpError::invalid(
                "batch",
                format!("expected {{\"batch\": [messages…]}}: {error}"),
            )
        })?;
        let received_at = self.service.clock().now();
        let mut report = BatchReport::default();
        let mut calls = Vec::with_capacity(batch.batch.len());
        let mut positions = Vec::with_capacity(batch.batch.len());
        let mut groups = GroupsSeen::default();
        for (index, raw) in batch.batch.iter().enumerate() {
            let message = match self.batch_message(raw) {
                Ok(message) => message,
                Err(error) => {
                    report.reject(index, "", error);
                    continue;
                }
            };
            let translated = translate(&message, None, batch.sent_at.as_ref(), received_at);
            let message_id = message
                .get("messageId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let call = match translated {
                Ok(translated) => self.write_call(translated, &mut groups).await,
                Err(error) => Err(error),
            };
            match call {
                Ok((call, dropped)) => {
                    report.note_dropped(index, &message_id, dropped);
                    calls.push(call);
                    positions.push((index, message_id));
                }
                Err(error) => report.reject(index, &message_id, error),
            }
        }
        if !calls.is_empty() {
            let results = self.service.write_many(calls).await?;
            for ((index, message_id), result) in positions.into_iter().zip(results) {
                match result {
                    Ok(outcome) => match outcome.resolution {
                        Resolution::Duplicate => report.duplicate += 1,
                        Resolution::Suppressed => report.suppressed += 1,
                        _ => report.accepted += 1,
                    },
                    Err(error) => report.reject(index, &message_id, error.into()),
                }
            }
        }
        self.service.record_ingest(IngestCounts {
            accepted: report.accepted,
            duplicate: report.duplicate,
            rejected: report.rejected,
        });
        Ok(report.into_json())
    }

    fn batch_message(&self, raw: &RawValue) -> Result<Value, ServiceError> {
        if raw.get().len() > self.config.message_bytes_max {
            return Err(ServiceError::invalid(
                "",
                format!(
                    "a message may be at most {} bytes",
                    self.config.message_bytes_max
                ),
            ));
        }
        serde_json::from_str(raw.get())
            .map_err(|error| ServiceError::invalid("", format!("not JSON: {error}")))
    }

    /// The validated call for one translated message, and the trait
    /// identifiers dropped because they are malformed.
    async fn write_call(
        &self,
        translated: Translated,
        groups: &mut GroupsSeen,
    ) -> Result<(WriteCall, Vec<Dropped>), ServiceError> {
        let Translated {
            message_id,
            timestamp,
            source,
            mut identifiers,
            trait_identifiers,
            action,
        } = translated;
        let mut dropped = Vec::new();
        for (field, raw) in trait_identifiers {
            match self.service.normalize_identifier(&field, &raw) {
                Ok(_) => identifiers.push(raw),
                Err(ServiceError::InvalidArgument(FieldViolation { description, .. })) => {
                    dropped.push(Dropped { field, description });
                }
                Err(other) => return Err(other),
            }
        }
        if identifiers.is_empty() {
            return Err(ServiceError::invalid(
                "userId",
                "a message needs a userId or an anonymousId",
            ));
        }
        let identify = |identifiers, traits| IdentifyInput {
            identifiers,
            traits,
            message_id: message_id.clone(),
            timestamp,
            source: source.clone(),
        };
        let call = match action {
            Action::Identify { traits } => {
                self.service.identify_call(identify(identifiers, traits))
            }
            Action::Track { event, properties } => self.service.track_call(TrackInput {
                identifiers,
                event,
                properties,
                message_id: message_id.clone(),
                timestamp,
                source: source.clone(),
            }),
            Action::Alias { previous_id } => {
                let kind = self.previous_id_kind(&identifiers, &previous_id).await;
                identifiers.push(RawIdentifier {
                    kind: kind.to_owned(),
                    value: previous_id,
                });
                self.service
                    .identify_call(identify(identifiers, Json::new()))
            }
            Action::Group { group_id, traits } => {
                let mut all = match groups.take(&identifiers) {
                    Some(all) => all,
                    None => self.groups_of(&identifiers).await,
                };
                all.insert(group_id, Value::Object(traits));
                groups.remember(&identifiers, all.clone());
                let mut traits = Json::new();
                traits.insert("groups".to_owned(), Value::Object(all));
                self.service.identify_call(identify(identifiers, traits))
            }
        }?;
        Ok((call, dropped))
    }

    /// `previousId` is the anonymous id a visitor had before signing in, or
    /// an earlier user id: a user id when a profile holds it as one.
    async fn previous_id_kind(
        &self,
        identifiers: &[RawIdentifier],
        previous_id: &str,
    ) -> &'static str {
        let named_anonymous = identifiers
            .iter()
            .any(|id| id.kind == "anonymous_id" && id.value == previous_id);
        if named_anonymous {
            return "anonymous_id";
        }
        let as_user_id = RawIdentifier {
            kind: "user_id".to_owned(),
            value: previous_id.to_owned(),
        };
        match self
            .service
            .profile_id(ProfileLookup::Identifier(as_user_id))
            .await
        {
            Ok(_) => "user_id",
            Err(_) => "anonymous_id",
        }
    }

    /// The groups trait the person's profile holds now, if any.
    async fn groups_of(&self, identifiers: &[RawIdentifier]) -> Json {
        let mut traits = None;
        for identifier in identifiers {
            let lookup = ProfileLookup::Identifier(identifier.clone());
            if let Ok(profile) = self.service.profile_id(lookup).await {
                traits = self.service.traits(profile).await.ok();
                break;
            }
        }
        traits
            .and_then(|traits| traits.into_iter().find(|view| view.name == "groups"))
            .and_then(|view| match view.value {
                Value::Object(groups) => Some(groups),
                _ => None,
            })
            .unwrap_or_default()
    }
}

/// Group calls of one batch for the same person build on one another
/// before any of them is stored.
#[derive(Default)]
struct GroupsSeen {
    by_identifier: HashMap<(String, String), Json>,
}

impl GroupsSeen {
    fn take(&self, identifiers: &[RawIdentifier]) -> Option<Json> {
        identifiers
            .iter()
            .find_map(|id| self.by_identifier.get(&(id.kind.clone(), id.value.clone())))
            .cloned()
    }

    fn remember(&mut self, identifiers: &[RawIdentifier], groups: Json) {
        for id in identifiers {
            self.by_identifier
                .insert((id.kind.clone(), id.value.clone()), groups.clone());
        }
    }
}

#[derive(Default)]
struct BatchReport {
    accepted: u64,
    duplicate: u64,
    suppressed: u64,
    rejected: u64,
    rejections: Vec<Value>,
    ignored: Vec<Value>,
}

impl BatchReport {
    fn reject(&mut self, index: usize, message_id: &str, error: ServiceError) {
        self.rejected += 1;
        if self.rejections.len() >= REJECTIONS_LISTED_MAX {
            return;
        }
        let (field, message) = match error {
            ServiceError::InvalidArgument(violation) => (violation.field, violation.description),
            other => (String::new(), HttpError::from(other).to_string()),
        };
        self.rejections.push(json!({
            "index": index,
            "messageId": message_id,
            "field": field,
            "message": message,
        }));
    }

    fn note_dropped(&mut self, index: usize, message_id: &str, dropped: Vec<Dropped>) {
        for dropped in dropped {
            if self.ignored.len() >= REJECTIONS_LISTED_MAX {
                return;
            }
            self.ignored.push(json!({
                "index": index,
                "messageId": message_id,
                "field": dropped.field,
                "message": dropped.description,
            }));
        }
    }

    fn into_json(self) -> Value {
        let mut answer = json!({
            "success": self.rejected == 0,
            "accepted": self.accepted,
            "duplicate": self.duplicate,
            "suppressed": self.suppressed,
            "rejected": self.rejected,
        });
        if !self.rejections.is_empty() {
            answer["rejections"] = Value::Array(self.rejections);
        }
        if !self.ignored.is_empty() {
            answer["ignored"] = Value::Array(self.ignored);
        }
        answer
    }
}

fn dropped_json(dropped: &[Dropped]) -> Value {
    dropped
        .iter()
        .map(|dropped| json!({"field": dropped.field, "message": dropped.description}))
        .collect()
}

/// The request body, gunzipped when the client compressed it, refused when
/// larger than `bytes_max` once decompressed.
fn decoded_body(
    headers: &HeaderMap,
    body: Bytes,
    bytes_max: usize,
    what: &str,
) -> Result<Bytes, HttpError> {
    let too_large = || HttpError::invalid("", format!("a {what} may be at most {bytes_max} bytes"));
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_ascii_lowercase());
    let body = match encoding.as_deref() {
        None | Some("identity") => body,
        Some("gzip") => {
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(body.as_ref())
                .take(bytes_max as u64 + 1)
                .read_to_end(&mut decoded)
                .map_err(|_| HttpError::invalid("", "the body is not valid gzip"))?;
            Bytes::from(decoded)
        }
        Some(_) => {
            return Err(HttpError::invalid(
                "",
                "unsupported Content-Encoding; send identity or gzip",
            ));
        }
    };
    if body.len() > bytes_max {
        return Err(too_large());
    }
    Ok(body)
}
